//! `level`: a correct daemon that keeps the shared ring's `req_event` the Xen ring way (it
//! stores 0 right after mmap, and `req_cons + 1` after taking requests) and so may rely on a
//! poll *level*, not an edge: it learns of requests only from epoll, used in the ways that
//! call the driver's `poll` more than once per event (see `Documentation/userspace-api.rst`):
//!
//! - `late-queued`: the ring fd is added to epoll only after requests were queued (it waits
//!   for `--go` first, without polling);
//! - `late-published`: as `late-queued`, but one poll with a zero timeout, whose answer it
//!   ignores, publishes the requests before the fd is added;
//! - `oneshot`: `EPOLLONESHOT`, re-armed with `EPOLL_CTL_MOD` after each batch (after
//!   `--rearm-delay-ms`, so that requests arrive while it is disarmed);
//! - `nested`: the ring fd in an inner epoll, the inner epoll in an outer one, which it waits on;
//! - `before-mmap`: the ring fd is added to epoll before the ring is mapped, so the daemon waits
//!   for its first request without the driver's `poll` having run on its mapping (a disk left
//!   by an earlier daemon is taken over: `CREATE_DEVICE` `EEXIST` is fine).
//!
//! It serves a RAM disk (zeroed, or the content of `--image`) until killed. The tests
//! (`tests/test_poll_01_level.sh`) judge whether reads complete.

use crate::daemon::{set_req_event, Backend};
use blktap::ring::Ring;
use blktap::uapi::DeviceInfo;
use clap::{Args, ValueEnum};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

/// How the daemon waits for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// epoll, the ring fd added after requests were queued (after --go appears).
    LateQueued,
    /// epoll, the ring fd added after a poll(0) published the queued requests.
    LatePublished,
    /// epoll with EPOLLONESHOT, re-armed by EPOLL_CTL_MOD after every batch.
    Oneshot,
    /// The ring fd in an epoll inside the epoll waited on.
    Nested,
    /// epoll, the ring fd added before mmap.
    BeforeMmap,
}

/// Options of `level`.
#[derive(Debug, Args)]
pub struct LevelArgs {
    /// Ring node of an allocated tap (e.g. /dev/blktap/blktap0).
    #[arg(long, value_name = "PATH")]
    ring: PathBuf,

    /// How to wait for requests.
    #[arg(long, value_enum)]
    mode: Wait,

    /// Disk content (its size is the disk size) [default: --size-mib MiB of zeros].
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,

    /// Disk size in MiB, without --image.
    #[arg(long, default_value_t = 16)]
    size_mib: u64,

    /// late-*: add the ring fd to epoll only once this file exists.
    #[arg(long, value_name = "FILE")]
    go: Option<PathBuf>,

    /// oneshot: pause after each batch before re-arming, in milliseconds.
    #[arg(long, default_value_t = 300)]
    rearm_delay_ms: u64,
}

/// An epoll instance.
struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> Result<Self, String> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a fresh descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32) -> Result<(), String> {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: a valid epoll fd and event.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(format!(
                "epoll_ctl({op}, fd {fd}): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    fn add(&self, fd: RawFd, events: u32) -> Result<(), String> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events)
    }

    fn modify(&self, fd: RawFd, events: u32) -> Result<(), String> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events)
    }

    /// Waits up to `ms` (-1: forever) for one event; the fd it names, if any.
    fn wait(&self, ms: libc::c_int) -> Result<Option<RawFd>, String> {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        // SAFETY: room for one event.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), ev.as_mut_ptr(), 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(None);
            }
            return Err(format!("epoll_wait: {e}"));
        }
        Ok((n == 1).then_some(ev[0].u64 as RawFd))
    }
}

const IN: u32 = libc::EPOLLIN as u32;

/// Runs the daemon until it is killed; returns only on an error.
pub fn run(args: &LevelArgs) -> Result<(), String> {
    let mut backend = match &args.image {
        Some(p) => {
            let data = std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            let mut b = Backend::new(data.len());
            b.disk = data;
            b
        }
        None => Backend::new((args.size_mib << 20) as usize),
    };
    let bytes = backend.disk.len() as u64;
    let mut ring = Ring::open(&args.ring).map_err(|e| e.to_string())?;
    let rfd = ring.as_fd().as_raw_fd();
    let ep = Epoll::new()?;
    if args.mode == Wait::BeforeMmap {
        ep.add(rfd, IN)?;
        // Whatever this reported (say, a disk closed before) concerns no mapping of ours.
        for _ in 0..10 {
            if ep.wait(0)?.is_none() {
                break;
            }
        }
    }
    ring.map().map_err(|e| e.to_string())?;
    let mem = ring.memory().ok_or("ring not mapped")?;
    set_req_event(mem, 0);
    match ring.create_device(&DeviceInfo::new(bytes / 512, 512, false)) {
        Ok(_) => {}
        Err(e) if args.mode == Wait::BeforeMmap && e.is_errno(libc::EEXIST) => {
            eprintln!("level: taking over the existing disk")
        }
        Err(e) => return Err(e.to_string()),
    }
    eprintln!("level: serving {} ({:?})", args.ring.display(), args.mode);
    let served = |backend: &mut Backend| -> Result<(), String> {
        let n = backend.serve_final_check(&ring)?;
        eprintln!("level: answered {n} request(s), {} in all", backend.served);
        Ok(())
    };
    match args.mode {
        Wait::LateQueued | Wait::LatePublished => {
            let go = args.go.as_ref().ok_or("--mode late-* needs --go")?;
            while !go.exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
            if args.mode == Wait::LatePublished {
                let ready = ring.poll(Some(Duration::ZERO)).map_err(|e| e.to_string())?;
                eprintln!("level: poll(0) before the epoll ADD said ready={ready} (ignored)");
            }
            ep.add(rfd, IN)?;
            loop {
                if ep.wait(-1)? == Some(rfd) {
                    served(&mut backend)?;
                }
            }
        }
        Wait::BeforeMmap => loop {
            if ep.wait(-1)? == Some(rfd) {
                served(&mut backend)?;
            }
        },
        Wait::Oneshot => {
            let oneshot = IN | libc::EPOLLONESHOT as u32;
            ep.add(rfd, oneshot)?;
            loop {
                if ep.wait(-1)? == Some(rfd) {
                    served(&mut backend)?;
                    std::thread::sleep(Duration::from_millis(args.rearm_delay_ms));
                    ep.modify(rfd, oneshot)?;
                }
            }
        }
        Wait::Nested => {
            let inner = Epoll::new()?;
            inner.add(rfd, IN)?;
            let ifd = inner.fd.as_raw_fd();
            ep.add(ifd, IN)?;
            loop {
                if ep.wait(-1)? == Some(ifd) && inner.wait(0)? == Some(rfd) {
                    served(&mut backend)?;
                }
            }
        }
    }
}
