//! The file backend's I/O on io_uring, and the choice between it and the synchronous path.
//!
//! [`UringFile`] wraps a [`FileBackend`] and serves each batch taken from the blktap ring with
//! one `io_uring_enter`: every read and write of the batch (sequential runs merged, as the
//! synchronous path does) becomes one SQE, a FLUSH an `fsync(DATASYNC)` SQE, a FUA write a
//! write SQE linked to an `fsync(DATASYNC)` one; the same call waits for all their
//! completions, and the batch is answered with one `RESPOND`, as before. DISCARD and
//! WRITE_ZEROES stay on the synchronous code (`fallocate`, `BLKDISCARD`, `BLKZEROOUT`). A batch
//! of a single operation (one request, or one sequential run) has nothing to overlap and goes
//! to the synchronous path directly.
//!
//! A FLUSH runs beside the writes of its own batch, not after them: the block layer sends a
//! flush only for writes it has seen completed, which were answered in earlier batches (and
//! REQ_PREFLUSH data is sequenced by blk-flush), so the `fsync` covers them as `fdatasync` did.
//!
//! The ring's data pages are registered as one fixed buffer where the kernel allows it (blktap-rs
//! inserts all of them at `mmap` time and keeps them for the mapping's life, so a registration
//! stays valid); a request whose buffers form one extent then uses `READ_FIXED`/`WRITE_FIXED`,
//! others `READV`/`WRITEV`. Any SQE that fails or completes short has its requests served again
//! on the synchronous path, which also gives up `O_DIRECT` on `EINVAL` as tapdisk does; so every
//! request gets the outcome the synchronous path would give it.
//!
//! Where io_uring is unavailable (`io_uring_setup` fails: `ENOSYS` on a kernel without it,
//! `EPERM` with `kernel.io_uring_disabled=2`, or either from a seccomp filter), `--io auto` (the
//! default) serves the file with the synchronous `preadv`/`pwritev` path and says so in the log.
//! It does the same for an image whose file system cannot start I/O without blocking (tmpfs:
//! `preadv2(RWF_NOWAIT)` fails with `EOPNOTSUPP`), where io_uring hands every SQE to a worker
//! thread and loses to the synchronous path (4 KiB random writes at depth 32 were 4 times
//! slower); `--io uring` forces io_uring there.

use crate::backend::{push_iovecs, Backend, FileBackend, Io, EMPTY_IOVEC, RUN_MAX};
use blktap::ring::{Op, RingMemory};
use blktap::uapi::{DEEP_RING_SLOTS_MAX, PAGE_SIZE, SEGMENT_MAX};
use io_uring::{opcode, squeue, types, IoUring};
use std::fmt;
use std::io;
use std::str::FromStr;

/// Environment variable read for the I/O path when `--io` is not given (`sync`, `uring` or
/// `auto`), so that tests can run unchanged scripts with either path.
pub const IO_ENV: &str = "BLKTAPD_IO";

/// How the file backend does its I/O (`--io`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// Synchronous `preadv`/`pwritev`, one system call per request or sequential run.
    Sync,
    /// io_uring; the daemon fails to start if the kernel refuses it.
    Uring,
    /// io_uring where the kernel allows it, else the synchronous path.
    #[default]
    Auto,
}

impl FromStr for IoMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "sync" => Ok(Self::Sync),
            "uring" | "io_uring" | "io-uring" => Ok(Self::Uring),
            "auto" => Ok(Self::Auto),
            _ => Err(format!("unknown I/O path {s:?} (sync, uring or auto)")),
        }
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Uring => "uring",
            Self::Auto => "auto",
        })
    }
}

fn log(msg: fmt::Arguments<'_>) {
    eprintln!("blktapd[{}]: {msg}", std::process::id());
}

/// Requests of a batch: a deep ring's whole batch goes in one `io_uring_enter`.
const BATCH_MAX: usize = DEEP_RING_SLOTS_MAX as usize;

/// Entries of the submission queue: a batch has at most [`BATCH_MAX`] requests, each at most
/// two SQEs (a FUA write and its fsync).
const SQ_ENTRIES: u32 = 2 * BATCH_MAX as u32;

/// iovecs of a batch: every segment of every request.
const BATCH_IOVECS: usize = BATCH_MAX * SEGMENT_MAX as usize;

/// io_uring failures logged before the daemon goes quiet about them.
const MAX_LOGGED: u64 = 10;

/// Wraps `file` for the I/O path `mode`, logging which path serves it. `--io uring` fails if
/// io_uring cannot be set up; `auto` then falls back to the synchronous path.
pub fn file_backend(file: FileBackend, mode: IoMode) -> Result<Box<dyn Backend>, String> {
    if mode == IoMode::Sync {
        log(format_args!(
            "I/O path: synchronous preadv/pwritev (--io sync)"
        ));
        return Ok(Box::new(file));
    }
    let ring = match UringFile::setup() {
        Ok(ring) => ring,
        Err(e) if mode == IoMode::Auto => {
            log(format_args!(
                "I/O path: synchronous preadv/pwritev: io_uring is unavailable ({})",
                explain(&e)
            ));
            return Ok(Box::new(file));
        }
        Err(e) => {
            return Err(format!(
                "--io uring: io_uring is unavailable ({})",
                explain(&e)
            ))
        }
    };
    let blocking = !issues_without_blocking(&file);
    if blocking && mode == IoMode::Auto {
        log(format_args!(
            "I/O path: synchronous preadv/pwritev: the image's file system cannot start I/O \
             without blocking (RWF_NOWAIT is not supported: tmpfs, for one), so io_uring would \
             hand every request to a worker thread (--io uring forces it)"
        ));
        return Ok(Box::new(file));
    }
    log(format_args!(
        "I/O path: io_uring ({SQ_ENTRIES} entries; one io_uring_enter per ring batch){}",
        if blocking {
            "; the image's file system does not support RWF_NOWAIT: every request goes \
             through an io_uring worker thread"
        } else {
            ""
        }
    ));
    Ok(Box::new(UringFile::new(file, ring)))
}

/// Whether the image's file system can start a read without blocking (`preadv2` with
/// `RWF_NOWAIT` does not fail with `EOPNOTSUPP`): io_uring then issues its SQEs inline; otherwise
/// it passes each one to a worker thread, which costs more than the synchronous path gains.
fn issues_without_blocking(file: &FileBackend) -> bool {
    let Ok(buf) = blktap::ring::Mapping::anonymous(PAGE_SIZE) else {
        return true;
    };
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast(),
        iov_len: PAGE_SIZE.min(file.size() as usize),
    };
    // SAFETY: one iovec over the page-aligned anonymous mapping owned by `buf`.
    let ret = unsafe { libc::preadv2(file.raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    ret >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EOPNOTSUPP)
}

/// The usual reasons for an `io_uring_setup` failure.
fn explain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "{e}: kernel.io_uring_disabled, or a seccomp filter, forbids it to this process"
        ),
        Some(libc::ENOSYS) => {
            format!("{e}: the kernel has no io_uring, or a seccomp filter hides it")
        }
        _ => e.to_string(),
    }
}

/// Counters of the io_uring path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringStats {
    /// `io_uring_enter` calls (one per batch with I/O, more only if one was interrupted).
    pub enters: u64,
    /// Batches that had at least one SQE.
    pub batches: u64,
    /// SQEs submitted.
    pub sqes: u64,
    /// Of those, `READ_FIXED`/`WRITE_FIXED` ones.
    pub fixed: u64,
    /// Requests served again on the synchronous path after an SQE failed or came back short.
    pub redone: u64,
    /// Batches of a single operation, served on the synchronous path.
    pub single: u64,
}

/// The end of the run of requests starting at `ios[start]`: reads (or writes) continuing one
/// another on the disk, which one SQE serves; a flush, a FUA write, a discard or a
/// write-zeroes is a run of its own.
fn run_end(ios: &[Io], start: usize) -> usize {
    let op = ios[start].req.op;
    let mut end = start + 1;
    if !matches!(op, Op::Read | Op::Write) || ios[start].req.fua() {
        return end;
    }
    let mut next = ios[start].offset + ios[start].req.len_bytes();
    while end < ios.len()
        && end - start < RUN_MAX
        && ios[end].req.op == op
        && !ios[end].req.fua()
        && ios[end].offset == next
    {
        next += ios[end].req.len_bytes();
        end += 1;
    }
    end
}

/// Whether the ring's data pages are registered as fixed buffer 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fixed {
    /// Not tried yet.
    Untried,
    /// Registered: the buffer covers `start..end` (addresses).
    Registered { start: usize, end: usize },
    /// Refused (or given up) for the memory starting at `start`.
    Refused { start: usize },
}

/// What one SQE of a batch does.
#[derive(Clone, Copy, Debug)]
struct Sqe {
    /// The requests it serves: `ios[first..last]`.
    first: usize,
    last: usize,
    /// Bytes a read or write must transfer; `None` for an fsync.
    bytes: Option<u64>,
    /// The opcode, for logs.
    what: &'static str,
}

/// The file backend with its reads, writes and flushes on io_uring.
pub struct UringFile {
    file: FileBackend,
    ring: IoUring,
    /// The iovecs of the batch in flight ([`BATCH_IOVECS`]); never reallocated while SQEs
    /// point into it.
    iov: Box<[libc::iovec]>,
    /// The SQEs of the batch in flight, indexed by `user_data`.
    sqes: Vec<Sqe>,
    /// Per request of the batch: serve it again synchronously.
    redo: Vec<bool>,
    fixed: Fixed,
    /// After an unrecoverable `io_uring_enter` error: the synchronous path only.
    broken: bool,
    failures: u64,
    stats: UringStats,
}

// SAFETY: the raw pointers in `iov` only point into ring memory while a batch is served (within
// one `serve` call on one thread); between calls they are stale values that are never
// dereferenced. Everything else is `Send`.
unsafe impl Send for UringFile {}

impl fmt::Debug for UringFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringFile")
            .field("file", &self.file)
            .field("fixed", &self.fixed)
            .field("stats", &self.stats)
            .finish()
    }
}

impl UringFile {
    /// Sets up an io_uring that can read, write and fsync (`IORING_SETUP_COOP_TASKRUN` where
    /// the kernel has it).
    pub fn setup() -> io::Result<IoUring> {
        let ring = match IoUring::builder().setup_coop_taskrun().build(SQ_ENTRIES) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(SQ_ENTRIES)?,
            r => r?,
        };
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for code in [
            opcode::Readv::CODE,
            opcode::Writev::CODE,
            opcode::Fsync::CODE,
            opcode::ReadFixed::CODE,
            opcode::WriteFixed::CODE,
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring lacks opcode {code}"),
                ));
            }
        }
        Ok(ring)
    }

    /// Serves `file` through `ring` (from [`setup`](Self::setup)).
    pub fn new(file: FileBackend, ring: IoUring) -> Self {
        Self {
            file,
            ring,
            iov: vec![EMPTY_IOVEC; BATCH_IOVECS].into_boxed_slice(),
            sqes: Vec::with_capacity(SQ_ENTRIES as usize),
            redo: Vec::with_capacity(BATCH_MAX),
            fixed: Fixed::Untried,
            broken: false,
            failures: 0,
            stats: UringStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> UringStats {
        self.stats
    }

    /// Whether the ring's data pages are registered as a fixed buffer.
    pub fn fixed_buffers(&self) -> bool {
        matches!(self.fixed, Fixed::Registered { .. })
    }

    /// Registers the data pages of `mem` (every page after the ring page) as fixed buffer 0,
    /// once per ring memory; logs the outcome.
    fn register(&mut self, mem: RingMemory<'_>) {
        let (data, len) = mem.data_area();
        let start = data as usize;
        match self.fixed {
            Fixed::Registered { start: s, .. } | Fixed::Refused { start: s } if s == start => {
                return
            }
            Fixed::Registered { .. } => self.unregister(),
            _ => {}
        }
        let iov = libc::iovec {
            iov_base: start as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: the data pages stay mapped while they are registered: `release` (called
        // before the ring is unmapped) and a registration for other memory unregister them
        // first; the kernel pins the pages for as long as they are registered.
        match unsafe { self.ring.submitter().register_buffers(&[iov]) } {
            Ok(()) => {
                self.fixed = Fixed::Registered {
                    start,
                    end: start + len,
                };
                log(format_args!(
                    "io_uring: the ring's {} data pages are registered as a fixed buffer \
                     (READ_FIXED/WRITE_FIXED for single-extent requests)",
                    len / PAGE_SIZE
                ));
            }
            Err(e) => {
                self.fixed = Fixed::Refused { start };
                log(format_args!(
                    "io_uring: registering the ring's data pages as a fixed buffer failed \
                     ({e}): READV/WRITEV only"
                ));
            }
        }
    }

    fn unregister(&mut self) {
        if let Fixed::Registered { start, .. } = self.fixed {
            if let Err(e) = self.ring.submitter().unregister_buffers() {
                log(format_args!(
                    "io_uring: unregistering the fixed buffer: {e}"
                ));
            }
            self.fixed = Fixed::Refused { start };
        }
    }

    /// Whether `[ptr, ptr + len)` lies in the registered buffer.
    fn in_fixed(&self, ptr: usize, len: usize) -> bool {
        matches!(self.fixed, Fixed::Registered { start, end } if ptr >= start && ptr + len <= end)
    }

    fn note_failure(&mut self, what: fmt::Arguments<'_>) {
        self.failures += 1;
        if self.failures <= MAX_LOGGED {
            log(format_args!(
                "io_uring: {what}: served again synchronously{}",
                if self.failures == MAX_LOGGED {
                    " (further io_uring failures not logged)"
                } else {
                    ""
                }
            ));
        }
    }

    /// Whether the batch is a single read, write or flush (sequential runs count as one):
    /// nothing to overlap, so the synchronous path serves it at less cost (an SQE a file
    /// system cannot issue without blocking goes through an io_uring worker thread: on tmpfs
    /// that made 4 KiB reads at depth 1 2.4 times slower).
    fn single_operation(ios: &[Io]) -> bool {
        ios.is_empty() || run_end(ios, 0) == ios.len()
    }

    /// Queues the SQEs of the batch; returns how many. Serves DISCARD and WRITE_ZEROES at once
    /// (synchronously).
    fn queue(&mut self, ios: &mut [Io], mem: RingMemory<'_>) -> usize {
        self.sqes.clear();
        let fd = types::Fd(self.file.raw_fd());
        let mut niov = 0;
        let mut start = 0;
        while start < ios.len() {
            let (op, first) = (ios[start].req.op, ios[start].offset);
            let fua = ios[start].req.fua();
            let mut end = start + 1;
            if matches!(op, Op::Discard | Op::WriteZeroes) {
                ios[start].result = self.file.serve_one(&ios[start], mem);
                start = end;
                continue;
            }
            let mut entries = [None, None];
            if op == Op::Flush {
                entries[0] = Some((
                    opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build(),
                    Sqe {
                        first: start,
                        last: end,
                        bytes: None,
                        what: "FSYNC",
                    },
                ));
            } else {
                end = run_end(ios, start);
                let next = ios[end - 1].offset + ios[end - 1].req.len_bytes();
                let n0 = niov;
                for io in &ios[start..end] {
                    niov = n0 + push_iovecs(&io.req, mem, &mut self.iov[n0..], niov - n0);
                }
                let bytes = next - first;
                let (ptr, len) = (self.iov[n0].iov_base as usize, self.iov[n0].iov_len);
                let write = op == Op::Write;
                let single = niov - n0 == 1 && self.in_fixed(ptr, len);
                let (entry, what) = match (write, single) {
                    (false, true) => (
                        opcode::ReadFixed::new(fd, ptr as *mut u8, len as u32, 0)
                            .offset(first)
                            .build(),
                        "READ_FIXED",
                    ),
                    (true, true) => (
                        opcode::WriteFixed::new(fd, ptr as *const u8, len as u32, 0)
                            .offset(first)
                            .build(),
                        "WRITE_FIXED",
                    ),
                    (false, false) => (
                        opcode::Readv::new(fd, self.iov[n0..].as_ptr(), (niov - n0) as u32)
                            .offset(first)
                            .build(),
                        "READV",
                    ),
                    (true, false) => (
                        opcode::Writev::new(fd, self.iov[n0..].as_ptr(), (niov - n0) as u32)
                            .offset(first)
                            .build(),
                        "WRITEV",
                    ),
                };
                self.stats.fixed += u64::from(single);
                let sqe = Sqe {
                    first: start,
                    last: end,
                    bytes: Some(bytes),
                    what,
                };
                if fua {
                    entries[0] = Some((entry.flags(squeue::Flags::IO_LINK), sqe));
                    entries[1] = Some((
                        opcode::Fsync::new(fd)
                            .flags(types::FsyncFlags::DATASYNC)
                            .build(),
                        Sqe {
                            bytes: None,
                            what: "FSYNC after a FUA write",
                            ..sqe
                        },
                    ));
                } else {
                    entries[0] = Some((entry, sqe));
                }
            }
            for (entry, sqe) in entries.into_iter().flatten() {
                let entry = entry.user_data(self.sqes.len() as u64);
                // SAFETY: the SQE points at ring data pages of validated requests in `mem` (live
                // for this call) and at `self.iov`, which is not touched again until every
                // completion of the batch has been reaped in `serve`.
                let pushed = unsafe { self.ring.submission().push(&entry) };
                // The queue has room for two SQEs per request of a batch of `BATCH_MAX`
                // (`batch_max`).
                assert!(pushed.is_ok(), "io_uring submission queue full");
                self.sqes.push(sqe);
            }
            start = end;
        }
        self.sqes.len()
    }

    /// Submits the queued SQEs and reaps all `want` completions, marking the requests of
    /// failed or short ones for a synchronous redo.
    fn submit_and_reap(&mut self, want: usize) {
        let mut done = 0;
        let mut hard_errors = 0;
        while done < want {
            self.stats.enters += 1;
            match self.ring.submit_and_wait(want - done) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => {
                    hard_errors += 1;
                    log(format_args!("io_uring: io_uring_enter: {e}"));
                    if hard_errors >= 100 {
                        // Whatever was not reaped is served synchronously, and so is every
                        // later batch.
                        log(format_args!(
                            "io_uring: giving up; the synchronous path serves from now on"
                        ));
                        self.broken = true;
                        for s in &self.sqes {
                            self.redo[s.first..s.last].fill(true);
                        }
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (user_data, res) in cqes {
                let Some(&s) = self.sqes.get(user_data as usize) else {
                    continue;
                };
                done += 1;
                let ok = match s.bytes {
                    Some(bytes) => res >= 0 && res as u64 == bytes,
                    None => res >= 0,
                };
                if !ok && !self.redo[s.first] {
                    self.redo[s.first..s.last].fill(true);
                    if res < 0 {
                        let e = io::Error::from_raw_os_error(-res);
                        self.note_failure(format_args!("{} failed ({e})", s.what));
                    } else {
                        self.note_failure(format_args!(
                            "{} transferred {res} of {} bytes",
                            s.what,
                            s.bytes.unwrap_or(0)
                        ));
                    }
                }
            }
        }
    }
}

impl Backend for UringFile {
    fn size(&self) -> u64 {
        self.file.size()
    }
    fn read(
        &mut self,
        offset: u64,
        req: &blktap::ring::Request,
        mem: RingMemory<'_>,
    ) -> io::Result<()> {
        self.file.read(offset, req, mem)
    }
    fn write(
        &mut self,
        offset: u64,
        req: &blktap::ring::Request,
        mem: RingMemory<'_>,
    ) -> io::Result<()> {
        self.file.write(offset, req, mem)
    }
    fn describe(&self) -> String {
        format!(
            "{}, io_uring{}",
            self.file.describe(),
            if self.fixed_buffers() {
                " with fixed buffers"
            } else {
                ""
            }
        )
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.file.discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, keep_allocated: bool) -> io::Result<()> {
        self.file.write_zeroes(offset, len, keep_allocated)
    }
    fn batch_max(&self) -> usize {
        BATCH_MAX
    }
    /// One `io_uring_enter` submits the batch's SQEs and waits for all their completions;
    /// requests of failed or short SQEs are then served again synchronously.
    fn serve(&mut self, ios: &mut [Io], mem: RingMemory<'_>) {
        if self.broken {
            return self.file.serve(ios, mem);
        }
        if Self::single_operation(ios) {
            self.stats.single += 1;
            return self.file.serve(ios, mem);
        }
        self.register(mem);
        self.redo.clear();
        self.redo.resize(ios.len(), false);
        let want = self.queue(ios, mem);
        if want > 0 {
            self.stats.batches += 1;
            self.stats.sqes += want as u64;
            self.submit_and_reap(want);
        }
        for (io, redo) in ios.iter_mut().zip(self.redo.iter()) {
            if *redo {
                self.stats.redone += 1;
                io.result = self.file.serve_one(io, mem);
            }
        }
    }
    fn prepare(&mut self, mem: RingMemory<'_>) {
        self.register(mem);
    }
    fn release(&mut self) {
        self.unregister();
    }
    fn io_report(&self) -> Option<String> {
        let s = self.stats;
        Some(format!(
            "io_uring: {} io_uring_enter for {} batches, {} SQEs ({} fixed-buffer), {} requests \
             served again synchronously; {} single-operation batches served synchronously",
            s.enters, s.batches, s.sqes, s.fixed, s.redone, s.single
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blktap::ring::{Mapping, Request};
    use blktap::uapi::{
        RingRangeRequest, RingRequest, MMAP_SIZE, OP_DISCARD, OP_FLUSH, OP_READ, OP_WRITE, REQ_FUA,
        SEGMENT_MAX,
    };
    use std::path::PathBuf;

    /// Deterministic xorshift generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn scratch(name: &str, len: usize) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("blktapd-uring-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![0u8; len]).unwrap();
        (dir, path)
    }

    /// A UringFile on `path`, or `None` (the test is skipped) where io_uring is unavailable.
    fn uring_file(path: &std::path::Path) -> Option<UringFile> {
        match UringFile::setup() {
            Ok(ring) => Some(UringFile::new(
                FileBackend::open(path, false).unwrap(),
                ring,
            )),
            Err(e) => {
                eprintln!("io_uring unavailable ({e}): skipped");
                None
            }
        }
    }

    fn fill(req: &Request, mem: RingMemory<'_>, data: &[u8]) {
        let mut pos = 0;
        for b in req.buffers(mem) {
            b.copy_from_slice(&data[pos..pos + b.len()]);
            pos += b.len();
        }
    }

    fn data(req: &Request, mem: RingMemory<'_>) -> Vec<u8> {
        req.buffers(mem).flat_map(|b| b.to_vec()).collect()
    }

    /// Fills each write's pages with random bytes and records them in `model` (the disk).
    fn fill_random(reqs: &[Request], mem: RingMemory<'_>, rng: &mut Rng, model: &mut [u8]) {
        for req in reqs {
            let d: Vec<u8> = (0..req.len_bytes()).map(|_| rng.next() as u8).collect();
            fill(req, mem, &d);
            let off = req.byte_range().unwrap().start as usize;
            model[off..off + d.len()].copy_from_slice(&d);
        }
    }

    fn ios_of(reqs: &[Request]) -> Vec<Io> {
        reqs.iter()
            .enumerate()
            .map(|(i, r)| Io::new(i, r.byte_range().unwrap().start, *r))
            .collect()
    }

    #[test]
    fn modes() {
        assert_eq!("sync".parse(), Ok(IoMode::Sync));
        assert_eq!("uring".parse(), Ok(IoMode::Uring));
        assert_eq!("io_uring".parse(), Ok(IoMode::Uring));
        assert_eq!("auto".parse(), Ok(IoMode::Auto));
        assert!("aio".parse::<IoMode>().is_err());
        assert_eq!(IoMode::default(), IoMode::Auto);
        assert_eq!(IoMode::Uring.to_string(), "uring");
    }

    /// A deep ring's batch (1024 requests: a sequential run of 100 full writes, cut into runs
    /// of `RUN_MAX`, and 924 scattered ones) is one io_uring_enter, and reads it back.
    #[test]
    fn deep_batch_is_one_enter() {
        const DISK: usize = 64 << 20;
        const SLOTS: u32 = 1024;
        let (dir, path) = scratch("deep", DISK);
        let Some(mut b) = uring_file(&path) else {
            return;
        };
        assert_eq!(b.batch_max(), SLOTS as usize);
        let pages = blktap::uapi::deep_mmap_pages(SLOTS, SEGMENT_MAX);
        let mut mapping = Mapping::anonymous(pages * PAGE_SIZE).unwrap();
        mapping.set_layout(SLOTS, SEGMENT_MAX).unwrap();
        let mem = mapping.memory().unwrap();
        mem.init();
        b.prepare(mem);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let full = [(0u8, 7u8); SEGMENT_MAX as usize];
        let mut raws = Vec::new();
        for id in 0..100u64 {
            raws.push(RingRequest::new(OP_WRITE, id, id * 88, &full));
        }
        for id in 100..u64::from(SLOTS) {
            raws.push(RingRequest::new(OP_WRITE, id, 20_000 + id * 64, &[(0, 7)]));
        }
        let parse = |r: &RingRequest| Request::parse_in(r, &mem).unwrap();
        let reqs: Vec<Request> = raws.iter().map(parse).collect();
        let mut model = vec![0u8; DISK];
        fill_random(&reqs, mem, &mut rng, &mut model);
        let before = b.stats();
        let mut ios = ios_of(&reqs);
        b.serve(&mut ios, mem);
        assert!(ios.iter().all(|io| io.result.is_ok()));
        let after = b.stats();
        assert_eq!(
            after.enters - before.enters,
            1,
            "one io_uring_enter for 1024"
        );
        // 100 sequential writes in runs of 32: 4 SQEs; then 924.
        assert_eq!(after.sqes - before.sqes, 4 + 924);
        assert_eq!(std::fs::read(&path).unwrap(), model);
        // Read everything back into cleared pages.
        for req in &reqs {
            fill(req, mem, &vec![0u8; req.len_bytes() as usize]);
        }
        let reads: Vec<Request> = raws
            .iter()
            .map(|r| {
                let mut r = *r;
                r.operation = OP_READ;
                parse(&r)
            })
            .collect();
        let mut ios = ios_of(&reads);
        b.serve(&mut ios, mem);
        assert!(ios.iter().all(|io| io.result.is_ok()));
        for req in &reads {
            let off = req.byte_range().unwrap().start as usize;
            assert_eq!(data(req, mem), model[off..off + req.len_bytes() as usize]);
        }
        b.release();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Full batches of random writes (sequential runs, single and partial pages, FUA) and a
    /// flush, then reads of the same ranges through other slots: one io_uring_enter per batch,
    /// the file equals the model, and every read returns it.
    #[test]
    fn batches_round_trip_with_one_enter_each() {
        const DISK: usize = 4 << 20;
        let (dir, path) = scratch("batches", DISK);
        let Some(mut b) = uring_file(&path) else {
            return;
        };
        let mapping = Mapping::anonymous(MMAP_SIZE).unwrap();
        let mem = mapping.memory().unwrap();
        mem.init();
        b.prepare(mem);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let full = [(0u8, 7u8); SEGMENT_MAX as usize];
        let mut model = vec![0u8; DISK];
        for round in 0..20u64 {
            // 32 requests: a run of 4 full 44 KiB writes, FUA writes, partial pages, a flush.
            let base = (round % 2) * 4000 + round;
            let mut raws = Vec::new();
            for k in 0..4 {
                raws.push(RingRequest::new(OP_WRITE, k, base + k * 88, &full));
            }
            let mut fua = RingRequest::new(OP_WRITE, 4, base + 500, &[(0, 7), (0, 7)]);
            fua.flags = REQ_FUA;
            raws.push(fua);
            raws.push(RingRequest::new(OP_FLUSH, 5, 0, &[]));
            for id in 6..32u64 {
                let sector = base + 600 + id * 100 + rng.next() % 50;
                let first = (rng.next() % 8) as u8;
                raws.push(RingRequest::new(
                    OP_WRITE,
                    id,
                    sector,
                    &[(first, 7), (0, 7), (0, 2)],
                ));
            }
            let reqs: Vec<Request> = raws.iter().map(|r| Request::parse(r).unwrap()).collect();
            fill_random(&reqs, mem, &mut rng, &mut model);
            let before = b.stats();
            let mut ios = ios_of(&reqs);
            b.serve(&mut ios, mem);
            assert!(ios.iter().all(|io| io.result.is_ok()), "round {round}");
            let after = b.stats();
            assert_eq!(
                after.enters - before.enters,
                1,
                "one io_uring_enter per batch"
            );
            // 4 merged into 1, the FUA write and its fsync, the flush, 26 others.
            assert_eq!(after.sqes - before.sqes, 1 + 2 + 1 + 26);
            assert_eq!(after.redone, 0);

            // Read back through the other slots, stale data in the pages.
            let reads: Vec<Request> = reqs
                .iter()
                .filter(|r| r.op == Op::Write)
                .map(|w| {
                    let segs: Vec<(u8, u8)> = w
                        .segments()
                        .iter()
                        .map(|s| (s.first_sect, s.last_sect))
                        .collect();
                    Request::parse(&RingRequest::new(
                        OP_READ,
                        u64::from(31 - w.id),
                        w.sector,
                        &segs,
                    ))
                    .unwrap()
                })
                .collect();
            reads
                .iter()
                .for_each(|r| r.buffers(mem).for_each(|x| x.fill(0xee)));
            let mut ios = ios_of(&reads);
            b.serve(&mut ios, mem);
            assert!(ios.iter().all(|io| io.result.is_ok()));
            for r in &reads {
                let off = r.byte_range().unwrap().start as usize;
                assert!(
                    data(r, mem) == model[off..off + r.len_bytes() as usize],
                    "round {round}: read id {} sector {} returned wrong data",
                    r.id,
                    r.sector
                );
            }
        }
        assert!(
            std::fs::read(&path).unwrap() == model,
            "file differs from the model"
        );
        let s = b.stats();
        assert_eq!(s.enters, s.batches);
        if b.fixed_buffers() {
            assert!(s.fixed > 0, "{s:?}");
        }
        eprintln!("{}", b.io_report().unwrap());
        b.release();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that shrank behind the daemon's back: the io_uring read comes back short, the
    /// request is served again synchronously and fails as the synchronous path fails; requests
    /// before the end still succeed, and a discard in the same batch is served.
    #[test]
    fn short_reads_are_served_again_synchronously() {
        let (dir, path) = scratch("short", 1 << 20);
        let Some(mut b) = uring_file(&path) else {
            return;
        };
        let mapping = Mapping::anonymous(MMAP_SIZE).unwrap();
        let mem = mapping.memory().unwrap();
        mem.init();
        std::fs::write(&path, vec![0x33u8; 64 << 10]).unwrap();
        let raws = [
            RingRequest::new(OP_READ, 0, 0, &[(0, 7)]),
            RingRequest::new(OP_READ, 1, 1000, &[(0, 7)]),
            RingRangeRequest::new(OP_DISCARD, 0, 2, 8, 8).to_request(),
        ];
        let reqs: Vec<Request> = raws.iter().map(|r| Request::parse(r).unwrap()).collect();
        let mut ios = ios_of(&reqs);
        b.serve(&mut ios, mem);
        assert!(ios[0].result.is_ok());
        assert!(data(&reqs[0], mem).iter().all(|&x| x == 0x33));
        assert!(
            ios[1].result.is_err(),
            "a read past the end of the file succeeded"
        );
        assert!(ios[2].result.is_ok());
        assert_eq!(b.stats().redone, 1);
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[4096..8192].iter().all(|&x| x == 0));
        assert!(on_disk[8192..].iter().all(|&x| x == 0x33));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sync_mode_is_the_plain_file_backend() {
        let (dir, path) = scratch("sync", 8192);
        let b = file_backend(FileBackend::open(&path, false).unwrap(), IoMode::Sync).unwrap();
        assert!(!b.describe().contains("io_uring"));
        assert!(b.io_report().is_none());
        if UringFile::setup().is_ok() {
            let b = file_backend(FileBackend::open(&path, false).unwrap(), IoMode::Auto).unwrap();
            assert!(b.describe().contains("io_uring"), "{}", b.describe());
            // tmpfs cannot start I/O without blocking: auto keeps the synchronous path there,
            // --io uring is obeyed.
            let shm = std::path::Path::new("/dev/shm");
            if shm.is_dir() {
                let p = shm.join(format!("blktapd-uring-{}", std::process::id()));
                std::fs::write(&p, vec![0u8; 8192]).unwrap();
                let open = |m| file_backend(FileBackend::open(&p, false).unwrap(), m).unwrap();
                assert!(!open(IoMode::Auto).describe().contains("io_uring"));
                assert!(open(IoMode::Uring).describe().contains("io_uring"));
                std::fs::remove_file(&p).unwrap();
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
