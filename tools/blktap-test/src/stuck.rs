//! Daemons that are alive but misbehave in ways a kernel must survive: one that never polls,
//! one that takes requests and never answers, one that does I/O on its own disk (and so waits
//! for itself), and one that learns of requests only through Linux AIO `IOCB_CMD_POLL`.
//!
//! Each maps the ring of an allocated tap, creates its disk and then behaves as its mode says
//! until it is killed. The tests (`tests/test_hang_*.sh`) judge what the kernel does about it.

use crate::daemon::Backend;
use blktap::ring::Ring;
use blktap::uapi::DeviceInfo;
use clap::{Args, ValueEnum};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

/// How the daemon misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Creates the disk, then never polls the ring: requests are never even sent.
    NeverPoll,
    /// Polls (so requests are sent) but never responds.
    NeverRespond,
    /// Reads its own disk with O_DIRECT from its only thread, before ever polling: the read
    /// waits for the daemon, which waits for the read.
    SelfIo,
    /// Serves correctly, but waits for requests only with io_submit(IOCB_CMD_POLL) on the ring
    /// fd (never poll(2)): the kernel re-polls the fd from a worker thread.
    AioPoll,
}

/// Options of `stuck`.
#[derive(Debug, Args)]
pub struct StuckArgs {
    /// Ring node of an allocated tap (e.g. /dev/blktap/blktap0).
    #[arg(long, value_name = "PATH")]
    ring: PathBuf,

    /// What the daemon does once the disk exists.
    #[arg(long, value_enum)]
    mode: Mode,

    /// Disk size in MiB.
    #[arg(long, default_value_t = 16)]
    size_mib: u64,

    /// Disk node of the tap, for --mode self-io (e.g. /dev/tda).
    #[arg(long, value_name = "PATH")]
    disk: Option<PathBuf>,
}

/// Runs the daemon; returns only on an error (or, in self-io mode, if the read ends).
pub fn run(args: &StuckArgs) -> Result<(), String> {
    let mut ring = Ring::open(&args.ring).map_err(|e| e.to_string())?;
    ring.map().map_err(|e| e.to_string())?;
    let bytes = args.size_mib << 20;
    ring.create_device(&DeviceInfo::new(bytes / 512, 512, false))
        .map_err(|e| e.to_string())?;
    eprintln!(
        "stuck: serving {} in mode {:?}",
        args.ring.display(),
        args.mode
    );
    match args.mode {
        Mode::NeverPoll => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Mode::NeverRespond => loop {
            // Each poll sends what is queued; nothing is ever answered.
            ring.poll(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
        },
        Mode::SelfIo => {
            let disk = args.disk.as_ref().ok_or("--mode self-io needs --disk")?;
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(disk)
                .map_err(|e| format!("open {}: {e}", disk.display()))?;
            let mut buf = crate::util::AlignedBuf::new(4096);
            let r = f.read_at(buf.slice_mut(4096), 0);
            Err(format!("the read of its own disk ended: {r:?}"))
        }
        Mode::AioPoll => aio_poll_serve(&ring, Backend::new(bytes as usize)),
    }
}

/// `struct iocb` of the Linux AIO ABI (x86-64, little endian).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` of the Linux AIO ABI.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// `IOCB_CMD_POLL`: `aio_buf` holds the poll events to wait for.
const IOCB_CMD_POLL: u16 = 5;

/// Serves `ring` with `backend`, learning of requests only from AIO poll completions.
fn aio_poll_serve(ring: &Ring, mut backend: Backend) -> Result<(), String> {
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the new context id into `ctx`.
    if unsafe { libc::syscall(libc::SYS_io_setup, 1, &mut ctx) } != 0 {
        return Err(format!("io_setup: {}", std::io::Error::last_os_error()));
    }
    loop {
        let mut cb = Iocb {
            aio_lio_opcode: IOCB_CMD_POLL,
            aio_fildes: ring.as_fd().as_raw_fd() as u32,
            aio_buf: libc::POLLIN as u64,
            ..Iocb::default()
        };
        let mut cbs = [&mut cb as *mut Iocb];
        // SAFETY: one valid iocb pointer; `cb` outlives the request, which completes (and is
        // reaped by io_getevents below) before `cb` is reused.
        let n = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, cbs.as_mut_ptr()) };
        if n != 1 {
            return Err(format!(
                "io_submit(IOCB_CMD_POLL): {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut ev = [IoEvent::default()];
        loop {
            // SAFETY: room for one event; a NULL timeout waits until one completes.
            let got = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    ctx,
                    1,
                    1,
                    ev.as_mut_ptr(),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if got == 1 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(format!("io_getevents: {err}"));
            }
        }
        if ev[0].res < 0 {
            return Err(format!("AIO poll failed: errno {}", -ev[0].res));
        }
        backend.serve(ring)?;
    }
}
