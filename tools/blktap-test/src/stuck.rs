//! Daemons that are alive but misbehave in ways a kernel must survive: one that never polls,
//! one that takes requests and never answers, ones that do I/O on their own disk (and so wait
//! for themselves: from their only thread, from a second thread, or through Linux AIO), and one
//! that learns of requests only through Linux AIO `IOCB_CMD_POLL`.
//!
//! Each maps the ring of an allocated tap, creates its disk (all but `map-only`) and then
//! behaves as its mode says until it is killed. The tests (`tests/test_hang_*.sh`) judge what the kernel does about it.

use crate::daemon::{set_req_event, Backend};
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
    /// fd (never poll(2)): the kernel re-polls the fd from a worker thread. It keeps req_event
    /// the Xen ring way (a poll level): AIO poll calls the driver's poll twice when a wake-up
    /// races with the submit-time poll, and drops what the first call reported, so an edge
    /// (each publish reported to one poll) can be lost.
    AioPoll,
    /// Two threads: the one that mapped the ring (its owner) then only sleeps and serves
    /// nothing; the other reads the disk with O_DIRECT and so waits for the owner forever. On
    /// kill -9 the owner acts on SIGKILL at once; the process can only exit once the other
    /// thread's read ends.
    ThreadedSelfIo,
    /// One thread: submits an O_DIRECT read of its own disk with Linux AIO (io_submit) and
    /// waits for its completion in io_getevents, never polling the ring. On kill -9 the thread
    /// acts on SIGKILL at once, and its exit then waits for the AIO read (exit_aio) with the
    /// ring still mapped.
    AioSelfIo,
    /// Maps the ring and then only sleeps: never calls CREATE_DEVICE (so a disk left by an
    /// earlier daemon is never taken over and the ring never becomes ready) and never polls.
    /// The state of a tapdisk between `attach` and `open`.
    MapOnly,
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

    /// Disk node of the tap, for the modes that read it (self-io, threaded-self-io,
    /// aio-self-io; e.g. /dev/tda).
    #[arg(long, value_name = "PATH")]
    disk: Option<PathBuf>,
}

/// Runs the daemon; returns only on an error (or, in self-io mode, if the read ends).
pub fn run(args: &StuckArgs) -> Result<(), String> {
    let mut ring = Ring::open(&args.ring).map_err(|e| e.to_string())?;
    ring.map().map_err(|e| e.to_string())?;
    let bytes = args.size_mib << 20;
    if args.mode != Mode::MapOnly {
        ring.create_device(&DeviceInfo::new(bytes / 512, 512, false))
            .map_err(|e| e.to_string())?;
    }
    eprintln!(
        "stuck: serving {} in mode {:?}",
        args.ring.display(),
        args.mode
    );
    match args.mode {
        Mode::NeverPoll | Mode::MapOnly => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Mode::NeverRespond => loop {
            // Each poll sends what is queued; nothing is ever answered.
            ring.poll(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
        },
        Mode::SelfIo => Err(read_own_disk(own_disk(args)?)),
        Mode::ThreadedSelfIo => {
            let disk = own_disk(args)?.clone();
            let reader = std::thread::spawn(move || read_own_disk(&disk));
            // The owner: alive, serving nothing, until killed (or the read ends).
            while !reader.is_finished() {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(reader
                .join()
                .unwrap_or_else(|_| "the reader panicked".into()))
        }
        Mode::AioSelfIo => {
            let f = open_direct(own_disk(args)?)?;
            let aio = Aio::new(1)?;
            let mut buf = crate::util::AlignedBuf::new(4096);
            let mut cb = Iocb {
                aio_lio_opcode: IOCB_CMD_PREAD,
                aio_fildes: f.as_raw_fd() as u32,
                aio_buf: buf.slice_mut(4096).as_mut_ptr() as u64,
                aio_nbytes: 4096,
                ..Iocb::default()
            };
            // SAFETY: `cb` and `buf` live until the event is reaped (or the process dies).
            unsafe { aio.submit(&mut cb)? };
            eprintln!("stuck: AIO read of its own disk submitted");
            let ev = aio.wait()?;
            Err(format!(
                "the AIO read of its own disk ended: res {}",
                ev.res
            ))
        }
        Mode::AioPoll => aio_poll_serve(&ring, Backend::new(bytes as usize)),
    }
}

/// The `--disk` of a mode that reads its own disk.
fn own_disk(args: &StuckArgs) -> Result<&PathBuf, String> {
    args.disk
        .as_ref()
        .ok_or_else(|| format!("--mode {:?} needs --disk", args.mode))
}

/// Opens `disk` for O_DIRECT reads.
fn open_direct(disk: &PathBuf) -> Result<std::fs::File, String> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(disk)
        .map_err(|e| format!("open {}: {e}", disk.display()))
}

/// Reads the first 4 KiB of `disk` with O_DIRECT; returns how it ended (it should not).
fn read_own_disk(disk: &PathBuf) -> String {
    let f = match open_direct(disk) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut buf = crate::util::AlignedBuf::new(4096);
    let r = f.read_at(buf.slice_mut(4096), 0);
    format!("the read of its own disk ended: {r:?}")
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

/// `IOCB_CMD_PREAD`.
const IOCB_CMD_PREAD: u16 = 0;
/// `IOCB_CMD_POLL`: `aio_buf` holds the poll events to wait for.
const IOCB_CMD_POLL: u16 = 5;

/// A Linux AIO context (never destroyed: its owner runs until it is killed).
struct Aio {
    ctx: libc::c_ulong,
}

impl Aio {
    /// `io_setup` for `nr` requests.
    fn new(nr: libc::c_long) -> Result<Self, String> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context id into `ctx`.
        if unsafe { libc::syscall(libc::SYS_io_setup, nr, &mut ctx) } != 0 {
            return Err(format!("io_setup: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { ctx })
    }

    /// `io_submit` of one request.
    ///
    /// # Safety
    ///
    /// `cb`, and any buffer it points to, must stay valid until its event is reaped by
    /// [`Aio::wait`].
    unsafe fn submit(&self, cb: &mut Iocb) -> Result<(), String> {
        let mut cbs = [cb as *mut Iocb];
        // SAFETY: one valid iocb pointer, kept valid by the caller.
        let n = unsafe { libc::syscall(libc::SYS_io_submit, self.ctx, 1, cbs.as_mut_ptr()) };
        if n != 1 {
            return Err(format!(
                "io_submit (opcode {}): {}",
                cb.aio_lio_opcode,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// `io_getevents` of one event, waiting as long as it takes.
    fn wait(&self) -> Result<IoEvent, String> {
        let mut ev = [IoEvent::default()];
        loop {
            // SAFETY: room for one event; a NULL timeout waits until one completes.
            let got = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    1,
                    1,
                    ev.as_mut_ptr(),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if got == 1 {
                return Ok(ev[0]);
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(format!("io_getevents: {err}"));
            }
        }
    }
}

/// Serves `ring` with `backend`, learning of requests only from AIO poll completions, keeping
/// req_event (0 at first, then req_cons + 1).
fn aio_poll_serve(ring: &Ring, mut backend: Backend) -> Result<(), String> {
    let aio = Aio::new(1)?;
    set_req_event(ring.memory().ok_or("ring not mapped")?, 0);
    loop {
        let mut cb = Iocb {
            aio_lio_opcode: IOCB_CMD_POLL,
            aio_fildes: ring.as_fd().as_raw_fd() as u32,
            aio_buf: libc::POLLIN as u64,
            ..Iocb::default()
        };
        // SAFETY: `cb` outlives the request, which completes (and is reaped by `wait`) before
        // `cb` is reused.
        unsafe { aio.submit(&mut cb)? };
        let ev = aio.wait()?;
        if ev.res < 0 {
            return Err(format!("AIO poll failed: errno {}", -ev.res));
        }
        backend.serve_final_check(ring)?;
    }
}
