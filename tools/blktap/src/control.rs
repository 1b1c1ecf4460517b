//! The control device: allocation and release of taps (`ALLOC_TAP`, `FREE_TAP`).

use crate::error::{cvt, Error, Result};
use crate::node;
use crate::sys;
use crate::uapi::{BlktapInfo, IOCTL_ALLOC_TAP, IOCTL_FREE_TAP};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Control node paths tried by [`Control::open_default`], in order: tap-ctl's node, the
/// legacy misc name, and the devtmpfs node of the misc device `blktap/control`.
pub const CONTROL_PATHS: [&str; 3] = [
    "/dev/xen/blktap-2/control",
    "/dev/blktap-control",
    "/dev/blktap/control",
];

/// Name of the control misc device as listed in `/proc/misc`.
pub const MISC_NAME: &str = "blktap/control";

/// Major number of misc devices.
pub const MISC_MAJOR: u32 = 10;

/// An open control device.
#[derive(Debug)]
pub struct Control {
    fd: OwnedFd,
    path: PathBuf,
}

impl Control {
    /// Opens the control node at `path` (read-only, as tap-ctl does).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fd = sys::open(path, libc::O_RDONLY)?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens the first existing node of [`CONTROL_PATHS`]. If none exists but the driver is
    /// loaded (its minor is in `/proc/misc`), creates `/dev/xen/blktap-2/control` like tap-ctl.
    pub fn open_default() -> Result<Self> {
        if let Some(p) = CONTROL_PATHS.iter().map(Path::new).find(|p| p.exists()) {
            return Self::open(p);
        }
        let path = Path::new(CONTROL_PATHS[0]);
        ensure_control_node(path, Path::new("/proc/misc"))?;
        Self::open(path)
    }

    /// The path this control device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ALLOC_TAP`: allocates the lowest free minor.
    pub fn alloc(&self) -> Result<BlktapInfo> {
        let mut info = BlktapInfo::default();
        // SAFETY: `info` is a valid, writable 12-byte `struct blktap_info`.
        unsafe { self.alloc_raw(&mut info) }?;
        Ok(info)
    }

    /// `ALLOC_TAP` with an arbitrary reply pointer (tests use an invalid one to get `EFAULT`).
    ///
    /// # Safety
    ///
    /// `arg` must either point to writable memory for a [`BlktapInfo`] or to memory that is
    /// certainly not mapped (so that the kernel fails with `EFAULT` instead of writing).
    pub unsafe fn alloc_raw(&self, arg: *mut BlktapInfo) -> Result<()> {
        // SAFETY: the caller guarantees `arg` is valid or unmapped; the kernel checks it.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), IOCTL_ALLOC_TAP as _, arg) };
        cvt(ret, || {
            format!("ioctl ALLOC_TAP on {}", self.path.display())
        })
        .map(drop)
    }

    /// `FREE_TAP` of `minor`. Fails with `EBUSY` while the ring is open or mapped, `ENODEV`
    /// if no such tap exists.
    pub fn free(&self, minor: u32) -> Result<()> {
        self.free_raw(libc::c_ulong::from(minor))
    }

    /// `FREE_TAP` with an arbitrary argument value (for range checks).
    pub fn free_raw(&self, arg: libc::c_ulong) -> Result<()> {
        // SAFETY: FREE_TAP takes its argument by value; no memory is passed.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), IOCTL_FREE_TAP as _, arg) };
        cvt(ret, || {
            format!(
                "ioctl FREE_TAP({}) on {}",
                arg as libc::c_long,
                self.path.display()
            )
        })
        .map(drop)
    }

    /// Any ioctl on the control device.
    ///
    /// # Safety
    ///
    /// If the kernel interprets `arg` as a pointer for `cmd`, it must be valid for that use.
    pub unsafe fn ioctl_raw(&self, cmd: u32, arg: libc::c_ulong) -> Result<libc::c_int> {
        // SAFETY: delegated to the caller.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as _, arg) };
        cvt(ret, || format!("ioctl {cmd} on {}", self.path.display()))
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Finds the minor of misc device `name` in the text of `/proc/misc` (`"<minor> <name>"`
/// lines; the name must match exactly).
pub fn parse_proc_misc(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        let minor = it.next()?.parse().ok()?;
        (it.next()? == name).then_some(minor)
    })
}

/// Reads `proc_misc` (normally `/proc/misc`) and returns the minor of [`MISC_NAME`].
pub fn find_misc_minor(proc_misc: &Path) -> Result<u32> {
    let mut text = String::new();
    fs::File::open(proc_misc)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| Error::from_io(format!("read {}", proc_misc.display()), &e))?;
    parse_proc_misc(&text, MISC_NAME).ok_or_else(|| {
        Error::NotFound(format!(
            "{MISC_NAME} in {} (is the blktap module loaded?)",
            proc_misc.display()
        ))
    })
}

/// Makes sure `path` is a usable control node, as tap-ctl does: if it is not read/write
/// accessible, looks up the misc minor in `proc_misc` (holding `flock` on it to serialise
/// concurrent callers) and creates the node (char 10:minor, mode 0600, parent dirs 0755).
pub fn ensure_control_node(path: &Path, proc_misc: &Path) -> Result<()> {
    let c = sys::cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) } == 0 {
        return Ok(());
    }
    let lock = sys::open(proc_misc, libc::O_RDONLY)?;
    // SAFETY: plain flock on a file descriptor we own; released when `lock` is closed.
    let ret = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    cvt(ret, || format!("flock {}", proc_misc.display()))?;
    let minor = find_misc_minor(proc_misc)?;
    if let Some(dir) = path.parent() {
        node::mkdir_p(dir, 0o755)?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::from_io(format!("unlink {}", path.display()), &e))
        }
        _ => {}
    }
    node::mknod(path, node::NodeKind::Char, MISC_MAJOR, minor, 0o600)?;
    drop(lock);
    Ok(())
}

/// True if `err` means "the driver does not implement this ioctl".
pub fn is_not_implemented(err: &Error) -> bool {
    matches!(err.errno(), Some(e) if e == libc::ENOTTY || e == crate::uapi::ENOIOCTLCMD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_misc_parsing() {
        let text = " 58 blktap/control2\n 57 blktap/control\n229 fuse\n";
        assert_eq!(parse_proc_misc(text, MISC_NAME), Some(57));
        assert_eq!(parse_proc_misc(text, "fuse"), Some(229));
        assert_eq!(parse_proc_misc(text, "blktap-control"), None);
        assert_eq!(parse_proc_misc("", MISC_NAME), None);
        assert_eq!(parse_proc_misc("x blktap/control\n", MISC_NAME), None);
    }

    #[test]
    fn find_misc_minor_from_file() {
        let dir = std::env::temp_dir().join(format!("blktap-misc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("misc");
        fs::write(&f, "130 watchdog\n 61 blktap/control\n").unwrap();
        assert_eq!(find_misc_minor(&f).unwrap(), 61);
        fs::write(&f, "130 watchdog\n").unwrap();
        assert!(matches!(find_misc_minor(&f), Err(Error::NotFound(_))));
        assert!(find_misc_minor(&dir.join("missing"))
            .unwrap_err()
            .is_errno(libc::ENOENT));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_missing_control_node() {
        let e = Control::open("/nonexistent/blktap/control").unwrap_err();
        assert!(e.is_errno(libc::ENOENT), "{e}");
    }
}
