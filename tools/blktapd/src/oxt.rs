//! `--abi oxt`: the V-OXT flavour of the ABI. The disk is made with the 40-byte device info
//! (FLUSH, TRIM, PSZ), and the kernel's ring messages are answered: PAUSE (close the image,
//! ioctl 204), RESUME (ioctl 205 for the image's name, reopen it, ioctls 203 and 206), CLOSE
//! (unmap and exit).

use crate::serve::Server;
use crate::AnyResult;
use blktap::ring::{Request, Ring, RingMemory};
use blktap::uapi::{
    Blktap2Params, OxtDeviceInfo, DEVICE_FLUSH, DEVICE_PSZ, DEVICE_RO, DEVICE_TRIM, FEAT_DISCARD,
    FEAT_FLUSH, IOCTL_PAUSE, IOCTL_REOPEN, IOCTL_RESUME, IOCTL_SET_PARAMS, MAX_MESSAGE_LEN,
    RING_MESSAGE_CLOSE, RING_MESSAGE_PAUSE, RING_MESSAGE_RESUME, SECTOR_SIZE,
};
use blktapd::backend::{self, Backend, BackendSpec, IoMode};
use blktapd::cli::Args;
use std::io;
use std::path::PathBuf;

/// Creates the disk with the 40-byte device info: FLUSH and TRIM (granularity
/// `--discard-granularity`), PSZ with the sector size, RO as asked. Lets `server` accept what
/// the kernel wrote back. Returns how the disk was made, for the log.
pub fn create_device(
    ring: &Ring,
    args: &Args,
    bytes: u64,
    server: &mut Server,
) -> AnyResult<String> {
    let mut flags = DEVICE_FLUSH | DEVICE_TRIM | DEVICE_PSZ;
    if args.read_only {
        flags |= DEVICE_RO;
    }
    let mut info = OxtDeviceInfo::new(bytes / SECTOR_SIZE, args.sector_size, flags);
    info.phys_block_size = args.sector_size;
    info.trim_block_size = args.discard_granularity;
    let method = match ring.create_device_oxt(&mut info) {
        Ok(()) => "CREATE_DEVICE (V-OXT layout)".to_string(),
        // The flags were written back before the kernel found the disk.
        Err(e) if e.is_errno(libc::EEXIST) => {
            log!("warning: the disk exists already; serving it with its existing geometry");
            "existing disk".to_string()
        }
        Err(e) => return Err(e.into()),
    };
    let mut features = 0;
    if info.flags & DEVICE_FLUSH != 0 {
        features |= FEAT_FLUSH;
    }
    if info.flags & DEVICE_TRIM != 0 {
        features |= FEAT_DISCARD;
    }
    server.set_features(features);
    log!(
        "V-OXT device info: asked flags {flags:#x}, the kernel serves {:#x}",
        info.flags
    );
    Ok(method)
}

/// What the event loop does after a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on serving.
    Continue,
    /// Leave the loop and exit (CLOSE).
    Exit,
}

/// The image of a paused daemon: closed; nothing is sent to it until the resume.
struct Closed {
    size: u64,
}

impl Backend for Closed {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&mut self, _: u64, _: &Request, _: RingMemory<'_>) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn write(&mut self, _: u64, _: &Request, _: RingMemory<'_>) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn describe(&self) -> String {
        "closed (paused)".into()
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn write_zeroes(&mut self, _: u64, _: u64, _: bool) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
}

/// Answers the ring messages of a V-OXT kernel.
pub struct Messages {
    spec: BackendSpec,
    size: Option<u64>,
    read_only: bool,
    sector_size: u32,
    /// The file backend's I/O path (`--io`), for the reopened image.
    io: IoMode,
    /// A RAM or null image kept across a pause (closing it would lose it).
    kept: Option<Box<dyn Backend>>,
}

impl Messages {
    /// Messages for the image of `args`.
    pub fn new(args: &Args) -> Self {
        Self {
            spec: args.backend.clone(),
            size: args.size,
            read_only: args.read_only,
            sector_size: args.sector_size,
            // `run` has already refused an invalid mode.
            io: args.io_mode().unwrap_or_default(),
            kept: None,
        }
    }

    fn ioctl(ring: &Ring, cmd: u32, arg: libc::c_ulong) -> blktap::Result<libc::c_int> {
        // SAFETY: 204 and 206 take no pointer; 205 and 203 get pointers to live buffers of the
        // sizes the V-OXT kernel reads or writes (256 bytes, a 272-byte `blktap2_params`).
        unsafe { ring.ioctl_raw(cmd, arg) }
    }

    /// Handles message `msg` (the event loop has served every published request first, so
    /// nothing of this daemon is in flight).
    pub fn handle(&mut self, ring: &Ring, server: &mut Server, msg: u8) -> AnyResult<Flow> {
        match msg {
            RING_MESSAGE_PAUSE => {
                let size = server.backend().size();
                let old = server.replace_backend(Box::new(Closed { size }));
                if matches!(self.spec, BackendSpec::File(_)) {
                    drop(old);
                } else {
                    self.kept = Some(old);
                }
                Self::ioctl(ring, IOCTL_PAUSE, 0)?;
                log!("PAUSE: image closed, paused");
                Ok(Flow::Continue)
            }
            RING_MESSAGE_RESUME => {
                let status = match self.reopen(ring, server) {
                    Ok(()) => 0,
                    Err(e) => {
                        log!("RESUME: cannot reopen the image: {e}");
                        -e.raw_os_error().unwrap_or(libc::EIO)
                    }
                };
                Self::ioctl(ring, IOCTL_RESUME, status as libc::c_ulong)?;
                log!("RESUME: answered {status}");
                Ok(Flow::Continue)
            }
            RING_MESSAGE_CLOSE => {
                log!("CLOSE: closing the ring and exiting");
                Ok(Flow::Exit)
            }
            other => {
                log!("warning: unknown ring message {other}; ignored");
                Ok(Flow::Continue)
            }
        }
    }

    /// RESUME's work: asks the kernel for the image (205), opens it, sends its parameters
    /// (203).
    fn reopen(&mut self, ring: &Ring, server: &mut Server) -> io::Result<()> {
        let mut name = [0u8; MAX_MESSAGE_LEN];
        Self::ioctl(ring, IOCTL_REOPEN, name.as_mut_ptr() as libc::c_ulong).map_err(to_io)?;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = String::from_utf8_lossy(&name[..end]).into_owned();
        let image = match (image_path(&name), &self.spec) {
            (Some(path), _) => Some(path),
            (None, BackendSpec::File(p)) => Some(p.clone()),
            (None, _) => None,
        };
        let backend = match (image, self.kept.take()) {
            (Some(path), _) => {
                log!("RESUME: reopening {}", path.display());
                self.spec = BackendSpec::File(path.clone());
                backend::open_with(&self.spec, None, self.read_only, self.io)
                    .map_err(|e| io::Error::other(e.to_string()))?
            }
            (None, Some(kept)) => kept,
            (None, None) => backend::open_with(&self.spec, self.size, self.read_only, self.io)
                .map_err(|e| io::Error::other(e.to_string()))?,
        };
        let mut params =
            Blktap2Params::new(backend.size() / SECTOR_SIZE, u64::from(self.sector_size));
        let end = name.len().min(MAX_MESSAGE_LEN - 1);
        params.name[..end].copy_from_slice(&name.as_bytes()[..end]);
        Self::ioctl(
            ring,
            IOCTL_SET_PARAMS,
            &params as *const Blktap2Params as libc::c_ulong,
        )
        .map_err(to_io)?;
        server.replace_backend(backend);
        Ok(())
    }
}

/// The image path in a tap name: `type:path` (V-OXT's `aio:`, tap-ctl's spelling) or a plain
/// absolute path; `None` for an empty name or a name of another kind.
pub fn image_path(name: &str) -> Option<PathBuf> {
    let name = name.trim();
    if name.starts_with('/') {
        return Some(PathBuf::from(name));
    }
    match name.split_once(':') {
        Some(("aio" | "file" | "raw" | "sync", p)) if p.starts_with('/') => Some(PathBuf::from(p)),
        _ => None,
    }
}

fn to_io(e: blktap::Error) -> io::Error {
    match e.errno() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths() {
        assert_eq!(image_path("aio:/a/b"), Some(PathBuf::from("/a/b")));
        assert_eq!(image_path("/x.img\n"), Some(PathBuf::from("/x.img")));
        assert_eq!(image_path(""), None);
        assert_eq!(image_path("vhd:/x.vhd"), None);
        assert_eq!(image_path("aio:rel"), None);
    }
}
