//! `blktapd`: serves one blktap ring from a null, RAM or file backend.

/// Logs one line to stderr, prefixed with the program name and pid.
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("blktapd[{}]: {}", std::process::id(), format_args!($($arg)*))
    };
}

mod event;
mod oxt;
mod serve;

use blktap::node::{self, disk_name};
use blktap::ring::Ring;
use blktap::sysfs;
use blktap::uapi::{DeviceInfo, FEAT_DEEP, FEAT_LARGE, SECTOR_SIZE};
use blktapd::backend::{self, BackendSpec, IoMode};
use blktapd::cli::{Abi, Args};
use clap::Parser;
use serve::Server;
use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) type AnyResult<T> = Result<T, Box<dyn Error>>;

/// Takes ownership of an inherited descriptor given on the command line.
fn take_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setting FD_CLOEXEC on a valid descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open (checked above) and was handed to this process for
    // this purpose only; nothing else in the program owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn redirect(fd: RawFd, file: &File) -> io::Result<()> {
    // SAFETY: dup2 between two valid descriptors.
    if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forks. The parent waits until the child reports readiness through a pipe and exits with
/// 0 (ready) or 1 (the child failed); it never returns. The child starts a new session,
/// moves to `/`, points stdin/stdout at /dev/null and returns the pipe's write end.
fn daemonize() -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process is single-threaded at this point (no thread has been spawned), so
    // the child can safely keep running ordinary Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(r);
            // SAFETY: plain system calls without pointer arguments (chdir gets a C literal).
            unsafe {
                libc::setsid();
                libc::chdir(c"/".as_ptr());
            }
            let null = File::options().read(true).write(true).open("/dev/null")?;
            redirect(0, &null)?;
            redirect(1, &null)?;
            Ok(w)
        }
        _ => {
            drop(w);
            let mut msg = String::new();
            let _ = File::from(r).read_to_string(&mut msg);
            std::process::exit(if msg.starts_with("ready") { 0 } else { 1 });
        }
    }
}

/// SIGTERM and SIGINT, blocked and delivered through a signalfd.
struct Signals {
    fd: OwnedFd,
}

impl Signals {
    fn new() -> io::Result<Self> {
        // SAFETY: an all-zero sigset_t is a valid value; sigemptyset initialises it properly.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: the set is a valid sigset_t; blocking signals in this (single) thread before
        // creating the signalfd so that they queue instead of killing the process.
        let fd = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }
}

impl event::SignalSource for Signals {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn read(&self) -> io::Result<Option<i32>> {
        // SAFETY: signalfd_siginfo is a plain C struct; all-zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading at most `size` bytes into `info`.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok((n as usize == size).then_some(info.ssi_signo as i32))
    }
}

fn ring_path(args: &Args) -> AnyResult<PathBuf> {
    if let Some(p) = &args.ring {
        return Ok(p.clone());
    }
    let minor = args.minor.ok_or("--ring or --minor is required")?;
    let candidates = [
        node::ring_path(&args.dev_dir, minor),
        node::ring_path(Path::new(node::DEVTMPFS_RING_DIR), minor),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no ring node for minor {minor} ({} or {})",
                candidates[0].display(),
                candidates[1].display()
            )
            .into()
        })
}

/// Makes relative paths absolute before the daemon changes to `/`.
fn absolutize(args: &mut Args) -> io::Result<()> {
    if let Some(p) = &mut args.ring {
        *p = std::path::absolute(&*p)?;
    }
    args.dev_dir = std::path::absolute(&args.dev_dir)?;
    if let BackendSpec::File(p) = &mut args.backend {
        *p = std::path::absolute(&*p)?;
    }
    Ok(())
}

/// The I/O path for a tap whose requests may be held for a new daemon (`--recover`, or the
/// tap's `recovery` already set): synchronous only. When a process is killed, the writes its
/// io_uring has in flight are not waited for before its ring mapping goes, so a write the
/// kernel reissued to the next daemon could be overtaken by the old copy landing late
/// (`Documentation/userspace-api.rst`, "Recovery and asynchronous I/O"); a system call in
/// progress is always finished first.
fn io_mode_with_recovery(args: &Args, minor: u32) -> AnyResult<IoMode> {
    let mode = args.io_mode()?;
    let class = Path::new(sysfs::CLASS_DIR);
    let window = args.recover.unwrap_or_else(|| {
        std::fs::read_to_string(sysfs::tap_dir(class, minor).join("recovery"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    });
    if window == 0 || mode == IoMode::Sync {
        return Ok(mode);
    }
    if mode == IoMode::Uring {
        return Err(format!(
            "--io uring cannot serve a tap with a recovery window ({window} s): a killed \
             daemon's io_uring writes could land after their reissued copies"
        )
        .into());
    }
    log!("I/O path: synchronous: the tap has a recovery window ({window} s), which io_uring's writes in flight at a kill would break");
    Ok(IoMode::Sync)
}

fn run(args: &Args, mut ready: Vec<OwnedFd>) -> AnyResult<()> {
    let signals = Signals::new()?;
    let path = ring_path(args)?;
    let mut ring = Ring::open(&path)?;
    let minor = ring.minor()?;
    if let Some(m) = args.minor {
        if m != minor {
            return Err(format!("{} has minor {minor}, not {m}", path.display()).into());
        }
    }
    let io = io_mode_with_recovery(args, minor)?;
    let backend = backend::open_with(&args.backend, args.size, args.read_only, io)?;
    let bytes = backend.size();
    if bytes % u64::from(args.sector_size) != 0 {
        log!(
            "warning: size {bytes} is not a multiple of the sector size {}",
            args.sector_size
        );
    }
    let mut server = Server::new(backend, args.read_only);

    let mut wanted = args.features;
    map_ring(&mut ring, args, &mut wanted)?;
    // Ask for the level-triggered poll from the start: the event loop keeps req_event the Xen
    // way (`BackRing::final_check_for_requests`). V-XS drivers ignore req_event.
    ring.memory().ok_or("ring is not mapped")?.set_req_event(0);
    // The io_uring path registers the data pages (until `release` below).
    server
        .backend_mut()
        .prepare(ring.memory().ok_or("ring is not mapped")?);
    let disk = disk_name(minor);
    let class = Path::new(sysfs::CLASS_DIR);
    match sysfs::write_tap_attr(class, minor, "timeout", &args.timeout.to_string()) {
        Ok(()) if args.timeout == 0 => log!("{disk}: requests never time out"),
        Ok(()) => log!(
            "{disk}: requests fail after {} s without an answer",
            args.timeout
        ),
        // The V-XS driver has no request timeout.
        Err(e) if e.is_errno(libc::ENOENT) => {
            log!("warning: this driver has no request timeout ({e})")
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(secs) = args.recover {
        sysfs::write_tap_attr(class, minor, "recovery", &secs.to_string())?;
        log!("{disk}: requests are held for {secs} s for a new daemon if this one dies");
    }
    if let Some(wanted) = wanted {
        negotiate(&mut ring, args, wanted, &mut server, &disk)?;
    }
    let info = DeviceInfo::new(bytes / SECTOR_SIZE, args.sector_size, args.read_only);
    let method = match args.abi {
        Abi::Oxt => oxt::create_device(&ring, args, bytes, &mut server)?,
        Abi::Xs => match ring.create_device(&info) {
            Ok(m) => format!("{m:?}"),
            // As tapdisk does: a disk left by an earlier daemon on this tap is served as it is.
            Err(e) if e.is_errno(libc::EEXIST) => {
                log!("warning: {disk} exists already; serving it with its existing geometry");
                "existing disk".to_string()
            }
            Err(e) => return Err(e.into()),
        },
    };
    log!(
        "{disk}: {} sectors of 512 bytes, sector size {}{}, via {method}; backend {}",
        info.capacity,
        args.sector_size,
        if args.read_only { ", read-only" } else { "" },
        server.backend().describe(),
    );
    for fd in ready.drain(..) {
        let mut f = File::from(fd);
        if let Err(e) = f.write_all(b"ready\n") {
            log!("warning: cannot report readiness: {e}");
        }
    }

    let mut messages = oxt::Messages::new(args);
    let mut on_message = |msg: u8, server: &mut Server| messages.handle(&ring, server, msg);
    let handler: Option<event::OnMessage<'_>> = match args.abi {
        Abi::Oxt => Some(&mut on_message),
        Abi::Xs => None,
    };
    let result = event::run(&ring, &signals, &mut server, &disk, handler);
    // Unmap before closing (the Ring drop order), which fails anything still in flight; the
    // backend lets go of the ring's pages first.
    server.backend_mut().release();
    drop(ring);
    let s = server.stats();
    log!(
        "{disk}: {} reads, {} writes, {} flushes, {} FUA writes, {} discards, {} write-zeroes, \
         {} errors, {} malformed, {} batches ({} found by watching the ring)",
        s.reads,
        s.writes,
        s.flushes,
        s.fua_writes,
        s.discards,
        s.write_zeroes,
        s.errors,
        s.invalid,
        s.batches,
        s.spun
    );
    if let Some(report) = server.backend().io_report() {
        log!("{disk}: {report}");
    }
    result.map(|()| log!("{disk} removed, exiting"))
}

/// Maps `ring` in the layout the features `wanted` need. A driver that refuses that size
/// (`EINVAL`) lacks the feature: it is dropped from `wanted`, with a warning, deep rings
/// first and large requests next, down to V-XS's 353 pages.
fn map_ring(ring: &mut Ring, args: &Args, wanted: &mut Option<u64>) -> AnyResult<()> {
    loop {
        let features = wanted.unwrap_or(0);
        let (dropped, what, without) = if features & FEAT_DEEP != 0 {
            (FEAT_DEEP, "a deep ring", "32 entries")
        } else if features & FEAT_LARGE != 0 {
            (FEAT_LARGE, "a ring for large requests", "44 KiB requests")
        } else {
            return Ok(ring.map()?);
        };
        let (slots, segments) = ring_layout(args, features);
        match ring.map_layout(slots, segments) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_errno(libc::EINVAL) => {
                log!("warning: the driver refuses {what} ({e}): {without}");
                *wanted = wanted.map(|f| f & !dropped);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The ring's entries and data pages per request for the features `wanted`: `--ring-slots`
/// with `deep` (else 32), `--max-segments` with `large` (else 11), the latter lowered so that
/// a deep ring's data pages stay within `DEEP_DATA_PAGES_MAX` (1024 entries get 32).
fn ring_layout(args: &Args, wanted: u64) -> (u32, u32) {
    use blktap::uapi::{DEEP_DATA_PAGES_MAX, RING_SIZE, SEGMENT_MAX};
    let slots = if wanted & FEAT_DEEP != 0 {
        args.ring_slots
    } else {
        RING_SIZE
    };
    let segments = if wanted & FEAT_LARGE == 0 {
        SEGMENT_MAX
    } else if wanted & FEAT_DEEP != 0 {
        args.max_segments.min(DEEP_DATA_PAGES_MAX / slots)
    } else {
        args.max_segments
    };
    (slots, segments)
}

/// `NEGOTIATE`s `wanted` (`FEAT_*`) with the limits of the command line, and lets `server`
/// accept the agreed operations. A driver without the negotiation gives a V-XS disk.
fn negotiate(
    ring: &mut Ring,
    args: &Args,
    wanted: u64,
    server: &mut Server,
    disk: &str,
) -> AnyResult<()> {
    use blktap::uapi::{Features, FEAT_DISCARD, FEAT_WRITE_ZEROES};
    let mut want = Features::request(wanted);
    let (slots, segments) = ring_layout(args, wanted);
    if wanted & FEAT_LARGE != 0 {
        want.max_segments = segments;
    }
    if wanted & FEAT_DEEP != 0 {
        want.ring_slots = slots;
    }
    if wanted & FEAT_DISCARD != 0 {
        want.discard_granularity = args.discard_granularity;
        want.max_discard_sectors = args.max_discard_sectors;
    }
    if wanted & FEAT_WRITE_ZEROES != 0 {
        want.max_write_zeroes_sectors = args.max_write_zeroes_sectors;
    }
    match ring.negotiate(&want) {
        Ok(got) => {
            if got.features & blktap::uapi::FEAT_LOW_LATENCY != 0 {
                server.set_spin(Some(std::time::Duration::from_micros(args.spin_us)));
                log!(
                    "{disk}: low latency: the ring is watched for {} us after each batch",
                    args.spin_us
                );
            }
            let slots = if got.features & FEAT_DEEP != 0 {
                got.ring_slots
            } else {
                blktap::uapi::RING_SIZE
            };
            let segments = if got.features & FEAT_LARGE != 0 {
                got.max_segments
            } else {
                blktap::uapi::SEGMENT_MAX
            };
            ring.set_layout(slots, segments)?;
            if got.features & FEAT_LARGE != 0 {
                log!(
                    "{disk}: large requests: up to {} KiB each",
                    got.max_segments * 4
                );
            }
            if got.features & FEAT_DEEP != 0 {
                log!("{disk}: deep ring: {slots} entries (the disk's queue depth)");
            }
            server.set_features(got.features);
            log!(
                "{disk}: negotiated features {:#x} (asked {wanted:#x}, the tap supports {:#x})",
                got.features,
                got.supported
            );
            Ok(())
        }
        Err(e) if blktap::control::is_not_implemented(&e) => {
            log!("warning: this driver has no feature negotiation ({e}): a V-XS disk");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(path) = &args.log {
        match File::options().create(true).append(true).open(path) {
            Ok(f) => {
                if let Err(e) = redirect(2, &f) {
                    log!("cannot log to {}: {e}", path.display());
                }
            }
            Err(e) => log!("cannot open {}: {e}", path.display()),
        }
    }
    let mut ready = Vec::new();
    if let Some(fd) = args.ready_fd {
        match take_fd(fd) {
            Ok(fd) => ready.push(fd),
            Err(e) => {
                log!("--ready-fd {fd}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if !args.foreground {
        if let Err(e) = absolutize(&mut args) {
            log!("{e}");
            return ExitCode::FAILURE;
        }
        match daemonize() {
            Ok(fd) => ready.push(fd),
            Err(e) => {
                log!("cannot daemonize: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run(&args, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn cli_parsing() {
        let a =
            Args::try_parse_from(["blktapd", "--minor", "3", "--backend", "mem:1M", "-R", "-f"])
                .unwrap();
        assert_eq!(a.minor, Some(3));
        assert_eq!(a.backend, BackendSpec::Mem(Some(1 << 20)));
        assert!(a.read_only && a.foreground);
        assert_eq!(a.sector_size, 512);
        let a = Args::try_parse_from([
            "blktapd",
            "--ring",
            "/x",
            "--backend",
            "null",
            "--size",
            "2G",
        ])
        .unwrap();
        assert_eq!(a.size, Some(2 << 30));
        assert!(Args::try_parse_from(["blktapd", "--backend", "null:1M"]).is_err());
        assert!(Args::try_parse_from([
            "blktapd",
            "--minor",
            "1",
            "--ring",
            "/x",
            "--backend",
            "null:1M"
        ])
        .is_err());
        // Sector sizes: powers of two from 512 to 4096 only.
        for (size, ok) in [("1000", false), ("8192", false), ("4096", true)] {
            let r = Args::try_parse_from([
                "blktapd",
                "--minor",
                "1",
                "--backend",
                "null:1M",
                "--sector-size",
                size,
            ]);
            assert_eq!(r.is_ok(), ok, "--sector-size {size}");
        }
    }

    #[test]
    fn ring_path_resolution() {
        let a = Args::try_parse_from([
            "blktapd",
            "--minor",
            "7",
            "--dev-dir",
            "/",
            "--backend",
            "null:1M",
        ])
        .unwrap();
        let e = ring_path(&a).unwrap_err().to_string();
        assert!(e.contains("/blktap7"), "{e}");
        let a = Args::try_parse_from(["blktapd", "--ring", "r", "--backend", "null:1M"]).unwrap();
        assert_eq!(ring_path(&a).unwrap(), PathBuf::from("r"));
    }
}
