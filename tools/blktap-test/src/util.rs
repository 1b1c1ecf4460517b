//! Helpers shared by the stress, fault and fuzz subcommands: the tap's `debug` attribute,
//! O_DIRECT disk I/O, the data pattern that verified I/O writes, and forked children.

use crate::rng::Rng;
use blktap::ring::Mapping;
use blktap::uapi::{MMAP_SIZE, PAGE_SIZE};
use blktap::{sysfs, Errno};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes per verified block.
pub const BLOCK: usize = 4096;

/// What the `debug` attribute of a tap says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapDebug {
    /// The ring is mapped.
    pub mapped: bool,
    /// Openers of the disk.
    pub openers: u32,
    /// The disk accepts I/O.
    pub live: bool,
    /// Requests sent to the daemon.
    pub sent: u64,
    /// Requests failed.
    pub failed: u64,
    /// Malformed responses ignored or failed.
    pub bad_responses: u64,
    /// Times the ring was full.
    pub ring_full: u64,
    /// Kernel's next request index, while mapped.
    pub req_prod_pvt: Option<u32>,
    /// Kernel's next response index, while mapped.
    pub rsp_cons: Option<u32>,
    /// Pending request ids with their operation (0 read, 1 write).
    pub pending: Vec<(u32, u8)>,
}

/// The value after `key` (e.g. `"sent:"`) up to the next whitespace.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    Some(rest.split_whitespace().next().unwrap_or(""))
}

fn num<T: std::str::FromStr>(text: &str, key: &str) -> Result<T, String> {
    field(text, key)
        .ok_or_else(|| format!("no {key:?} in the debug attribute"))?
        .parse()
        .map_err(|_| format!("bad {key:?} in the debug attribute"))
}

impl TapDebug {
    /// Parses the text of the `debug` attribute.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut d = TapDebug {
            mapped: field(text, "mapped:") == Some("true"),
            openers: num(text, "openers:")?,
            live: field(text, "live:") == Some("true"),
            sent: num(text, "sent:")?,
            failed: num(text, "failed:")?,
            bad_responses: num(text, "bad responses:")?,
            ring_full: num(text, "ring full:")?,
            req_prod_pvt: num(text, "req_prod_pvt:").ok(),
            rsp_cons: num(text, "rsp_cons:").ok(),
            pending: Vec::new(),
        };
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("begin pending") {
                inside = true;
            } else if line.starts_with("end pending") {
                inside = false;
            } else if inside {
                let (id, rest) = line
                    .split_once(':')
                    .ok_or_else(|| format!("bad pending line {line:?}"))?;
                let id = id
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad pending line {line:?}"))?;
                let op = u8::from(rest.contains("op:W"));
                d.pending.push((id, op));
            }
        }
        Ok(d)
    }

    /// Reads and parses the `debug` attribute of tap `minor`.
    pub fn read(class_dir: &Path, minor: u32) -> Result<Self, String> {
        let p = sysfs::tap_dir(class_dir, minor).join("debug");
        let text = fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        Self::parse(&text)
    }
}

/// `open(2)` of `path` with `flags` (`O_CLOEXEC` added); the errno on failure.
pub fn open_raw(path: &Path, flags: i32) -> Result<OwnedFd, i32> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: `c` is a valid C string; open does not keep the pointer.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last().0);
    }
    // SAFETY: a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a disk node for O_DIRECT reads and writes.
pub fn open_disk(path: &Path) -> Result<OwnedFd, i32> {
    open_raw(path, libc::O_RDWR | libc::O_DIRECT)
}

/// `mmap(2)` of the whole ring area of `fd` (`MMAP_SIZE` bytes at offset 0), shared and
/// read-write as a daemon maps it, at an address the kernel picks; the errno on failure. The
/// caller unmaps it.
pub fn mmap_ring(fd: RawFd) -> Result<*mut libc::c_void, i32> {
    // SAFETY: a new mapping at an address the kernel chooses, so no existing memory changes.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MMAP_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(last_errno())
    } else {
        Ok(p)
    }
}

/// One random I/O on a [`BlockModel`]'s region, from [`BlockModel::plan_io`].
#[derive(Debug)]
pub struct PlannedIo {
    /// First block.
    pub first: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// A write (else a read).
    pub write: bool,
    /// For a write, the generation it writes to each block, in block order.
    pub gens: Vec<u64>,
}

impl PlannedIo {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.blocks as usize * BLOCK
    }
}

/// Does the O_DIRECT transfer of `io` on `fd`: a write of the first `io.len()` bytes of
/// `buf`, or a read into them. While it runs, `in_flight` holds its start in ms since `start`
/// plus one (0 = idle), so that a watchdog can spot an I/O that hangs.
pub fn tracked_io(
    fd: RawFd,
    buf: &mut AlignedBuf,
    io: &PlannedIo,
    in_flight: &AtomicU64,
    start: Instant,
) -> Result<usize, i32> {
    in_flight.store(start.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
    let (len, offset) = (io.len(), io.first * BLOCK as u64);
    let r = if io.write {
        pwrite(fd, buf.slice(len), offset)
    } else {
        pread(fd, buf.slice_mut(len), offset)
    };
    in_flight.store(0, Ordering::SeqCst);
    r
}

/// A page-aligned buffer for O_DIRECT I/O.
pub struct AlignedBuf {
    map: Mapping,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (rounded up to pages).
    pub fn new(len: usize) -> Self {
        let len = len.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
        Self {
            map: Mapping::anonymous(len).expect("anonymous mapping for an I/O buffer"),
        }
    }

    /// The first `len` bytes.
    pub fn slice(&self, len: usize) -> &[u8] {
        assert!(len <= self.map.len());
        // SAFETY: the mapping is ours, readable, and at least `len` bytes long; only this
        // object hands out views of it and the kernel writes it only during our own syscalls.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), len) }
    }

    /// The first `len` bytes, writable.
    pub fn slice_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.map.len());
        // SAFETY: as in `slice`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), len) }
    }
}

/// `pread(2)`; the errno on failure.
pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset as i64) };
    if n < 0 {
        Err(Errno::last().0)
    } else {
        Ok(n as usize)
    }
}

/// `pwrite(2)`; the errno on failure.
pub fn pwrite(fd: RawFd, buf: &[u8], offset: u64) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of reads.
    let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), offset as i64) };
    if n < 0 {
        Err(Errno::last().0)
    } else {
        Ok(n as usize)
    }
}

/// Writes the content of `block` at generation `gen` into `buf` (4096 bytes). Generation 0
/// is all zeros (a fresh backend); others carry a header and a pseudo-random fill.
pub fn fill_block(buf: &mut [u8], tag: u64, block: u64, gen: u64) {
    assert_eq!(buf.len(), BLOCK);
    if gen == 0 {
        buf.fill(0);
        return;
    }
    buf[0..8].copy_from_slice(&(0xb1c7_a9e5_0000_0000u64 ^ block).to_le_bytes());
    buf[8..16].copy_from_slice(&gen.to_le_bytes());
    buf[16..24].copy_from_slice(&tag.to_le_bytes());
    let mut x = (tag ^ block.rotate_left(20) ^ gen.rotate_left(40)) | 1;
    for chunk in buf[24..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The generation that `buf` holds for `block`, or a description of why it holds none.
pub fn block_generation(buf: &[u8], tag: u64, block: u64) -> Result<u64, String> {
    assert_eq!(buf.len(), BLOCK);
    if buf.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let word = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    let got_block = word(0) ^ 0xb1c7_a9e5_0000_0000;
    if got_block != block || word(16) != tag {
        return Err(format!(
            "no valid header (first words {:#x} {:#x} {:#x})",
            word(0),
            word(8),
            word(16)
        ));
    }
    let gen = word(8);
    let mut expect = vec![0u8; BLOCK];
    fill_block(&mut expect, tag, block, gen);
    match expect.iter().zip(buf).position(|(a, b)| a != b) {
        None => Ok(gen),
        Some(i) => Err(format!("generation {gen} header, data differs at byte {i}")),
    }
}

/// What a block may contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// One of these generations (more than one after a failed write).
    Known(BTreeSet<u64>),
    /// Anything (written while a hostile daemon was answering).
    Unknown,
}

/// Model of a region of the disk: what each block may contain.
pub struct BlockModel {
    /// Tag mixed into the pattern (distinguishes writers and runs).
    pub tag: u64,
    /// First block of the region on the disk.
    pub first: u64,
    blocks: Vec<BlockState>,
    next_gen: u64,
}

impl BlockModel {
    /// A region of `count` blocks starting at block `first`, all zero.
    pub fn new(tag: u64, first: u64, count: u64) -> Self {
        Self {
            tag,
            first,
            blocks: vec![BlockState::Known(BTreeSet::from([0])); count as usize],
            next_gen: 1,
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// A fresh generation number.
    pub fn new_gen(&mut self) -> u64 {
        let g = self.next_gen;
        self.next_gen += 1;
        g
    }

    fn state(&mut self, block: u64) -> &mut BlockState {
        &mut self.blocks[(block - self.first) as usize]
    }

    /// A write of `gen` to `block` completed successfully.
    pub fn written(&mut self, block: u64, gen: u64) {
        *self.state(block) = BlockState::Known(BTreeSet::from([gen]));
    }

    /// A write of `gen` to `block` failed: the block holds the old or the new content.
    pub fn maybe_written(&mut self, block: u64, gen: u64) {
        if let BlockState::Known(set) = self.state(block) {
            set.insert(gen);
        }
    }

    /// Anything may have been written to `block`.
    pub fn clobbered(&mut self, block: u64) {
        *self.state(block) = BlockState::Unknown;
    }

    /// Plans a random I/O of 1 to `max` blocks inside the region, a write with a chance of
    /// `write_percent` %; fills `buf` with the data of a write ([`Self::fill_write`]).
    pub fn plan_io(
        &mut self,
        rng: &mut Rng,
        max: u64,
        write_percent: u64,
        buf: &mut AlignedBuf,
    ) -> PlannedIo {
        let blocks = rng.range(1, max);
        let first = self.first + rng.below(self.len() - blocks + 1);
        let write = rng.chance(write_percent);
        let mut io = PlannedIo {
            first,
            blocks,
            write,
            gens: Vec::new(),
        };
        if write {
            io.gens = self.fill_write(first, buf.slice_mut(io.len()));
        }
        io
    }

    /// Fills `data` (whole blocks) for a write of the blocks from `first` on, each with a
    /// fresh generation; returns the generations in block order.
    pub fn fill_write(&mut self, first: u64, data: &mut [u8]) -> Vec<u64> {
        data.chunks_exact_mut(BLOCK)
            .zip(first..)
            .map(|(buf, block)| {
                let gen = self.new_gen();
                fill_block(buf, self.tag, block, gen);
                gen
            })
            .collect()
    }

    /// [`Self::check_read`] of each block of `data`, read from the blocks from `first` on;
    /// the errors in block order.
    pub fn check_reads(&mut self, first: u64, data: &[u8]) -> Vec<String> {
        data.chunks_exact(BLOCK)
            .zip(first..)
            .filter_map(|(buf, block)| self.check_read(block, buf).err())
            .collect()
    }

    /// Checks data read from `block`; narrows an ambiguous block to what was read.
    pub fn check_read(&mut self, block: u64, buf: &[u8]) -> Result<(), String> {
        let tag = self.tag;
        match self.state(block) {
            BlockState::Unknown => Ok(()),
            BlockState::Known(set) => {
                let got = block_generation(buf, tag, block)
                    .map_err(|e| format!("block {block}: {e}; expected generation {set:?}"))?;
                if set.contains(&got) {
                    *set = BTreeSet::from([got]);
                    Ok(())
                } else {
                    Err(format!(
                        "block {block}: generation {got}, expected one of {set:?}"
                    ))
                }
            }
        }
    }
}

/// How a forked child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// `_exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

/// Runs `f` in a forked child, which `_exit`s with its return value, and waits for it.
///
/// The caller must have no other threads (the child runs ordinary Rust code). `f` should
/// only make system calls.
pub fn in_child(f: impl FnOnce() -> i32) -> Result<ChildEnd, String> {
    // SAFETY: the caller guarantees a single-threaded process, so the child may run Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", Errno::last()));
    }
    if pid == 0 {
        let code = f();
        // SAFETY: _exit never returns and skips the parent's atexit handlers and buffers.
        unsafe { libc::_exit(code) };
    }
    wait_child(pid)
}

/// Waits for child `pid`.
pub fn wait_child(pid: libc::pid_t) -> Result<ChildEnd, String> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            break;
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(format!("waitpid: {e}"));
        }
    }
    if libc::WIFEXITED(status) {
        Ok(ChildEnd::Exited(libc::WEXITSTATUS(status)))
    } else {
        Ok(ChildEnd::Signaled(libc::WTERMSIG(status)))
    }
}

/// The errno of the last failed call, for children reporting through their exit status.
pub fn last_errno() -> i32 {
    Errno::last().0
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; the final value of `f`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return f();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls `f` every 20 ms while it fails with EBUSY, until `timeout` passes; its last result.
/// For FREE_TAP, which is EBUSY until the disk's removal work has run.
pub fn retry_busy<T>(
    timeout: Duration,
    mut f: impl FnMut() -> blktap::Result<T>,
) -> blktap::Result<T> {
    let t0 = Instant::now();
    let mut r = f();
    while r.as_ref().is_err_and(|e| e.is_errno(libc::EBUSY)) && t0.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
        r = f();
    }
    r
}

/// Name of an errno value, or "ok".
pub fn errno_name(e: i32) -> String {
    if e == 0 {
        "ok".into()
    } else {
        Errno(e).name()
    }
}

/// Result of a call as an errno (0 = success).
pub fn rc<T>(r: &blktap::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno().unwrap_or(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "tap 254:1 disk:tdb mapped:true task:88\n\
        disk capacity:16384 sector size:512/512\n\
        bdev openers:2 live:true busy:false\n\
        sent:10 failed:3 bad responses:7 ring full:1\n\
        req_prod_pvt:10 rsp_cons:9\n\
        begin pending:2\n3: op:R\n17: op:W\nend pending\n";

    #[test]
    fn debug_attribute_parsing() {
        let d = TapDebug::parse(SAMPLE).unwrap();
        assert!(d.mapped && d.live);
        assert_eq!((d.openers, d.sent, d.failed), (2, 10, 3));
        assert_eq!((d.bad_responses, d.ring_full), (7, 1));
        assert_eq!((d.req_prod_pvt, d.rsp_cons), (Some(10), Some(9)));
        assert_eq!(d.pending, vec![(3, 0), (17, 1)]);
        let unmapped = "tap 254:0 disk:tda mapped:false task:0\n\
            bdev openers:0 live:false busy:false\n\
            sent:0 failed:0 bad responses:0 ring full:0\nbegin pending:0\nend pending\n";
        let d = TapDebug::parse(unmapped).unwrap();
        assert!(!d.mapped && d.req_prod_pvt.is_none() && d.pending.is_empty());
        assert!(TapDebug::parse("garbage").is_err());
    }

    #[test]
    fn pattern_round_trip() {
        let mut b = vec![0u8; BLOCK];
        assert_eq!(block_generation(&b, 5, 9), Ok(0));
        fill_block(&mut b, 5, 9, 42);
        assert_eq!(block_generation(&b, 5, 9), Ok(42));
        assert!(block_generation(&b, 5, 10).is_err());
        assert!(block_generation(&b, 6, 9).is_err());
        b[100] ^= 1;
        assert!(block_generation(&b, 5, 9).is_err());
    }

    #[test]
    fn block_model_ambiguity() {
        let mut m = BlockModel::new(1, 100, 4);
        let mut b = vec![0u8; BLOCK];
        assert!(m.check_read(101, &b).is_ok());
        let g = m.new_gen();
        m.maybe_written(101, g);
        assert!(m.check_read(101, &b).is_ok());
        // Now narrowed to 0: the new generation is no longer acceptable.
        fill_block(&mut b, 1, 101, g);
        assert!(m.check_read(101, &b).is_err());
        m.written(101, g);
        assert!(m.check_read(101, &b).is_ok());
        m.clobbered(102);
        b.fill(0xee);
        assert!(m.check_read(102, &b).is_ok());
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn planned_io_round_trip() {
        let mut m = BlockModel::new(3, 10, 8);
        let mut rng = Rng::new(7);
        let mut buf = AlignedBuf::new(4 * BLOCK);
        for _ in 0..50 {
            let io = m.plan_io(&mut rng, 4, 50, &mut buf);
            assert!((1..=4).contains(&io.blocks));
            assert!(io.first >= 10 && io.first + io.blocks <= 18);
            assert_eq!(io.gens.len(), if io.write { io.blocks as usize } else { 0 });
            if io.write {
                // As if the write completed: a read of the same blocks must check out.
                for (b, g) in (io.first..).zip(&io.gens) {
                    m.written(b, *g);
                }
                assert!(m.check_reads(io.first, buf.slice(io.len())).is_empty());
            }
        }
        let zeros = vec![0u8; 2 * BLOCK];
        let mut fresh = BlockModel::new(3, 10, 8);
        let gens = fresh.fill_write(12, &mut vec![0u8; 2 * BLOCK]);
        fresh.written(12, gens[0]);
        fresh.written(13, gens[1]);
        assert_eq!(fresh.check_reads(11, &zeros).len(), 1);
    }

    #[test]
    fn retry_busy_stops_at_success_or_timeout() {
        let mut calls = 0;
        let r = retry_busy(Duration::from_secs(5), || {
            calls += 1;
            if calls < 3 {
                Err(blktap::Error::Sys {
                    context: "test".into(),
                    errno: Errno(libc::EBUSY),
                })
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 3);
        let r: blktap::Result<()> = retry_busy(Duration::from_millis(50), || {
            Err(blktap::Error::Sys {
                context: "test".into(),
                errno: Errno(libc::EBUSY),
            })
        });
        assert!(r.is_err());
    }

    #[test]
    fn child_exit_codes() {
        assert_eq!(in_child(|| 7).unwrap(), ChildEnd::Exited(7));
        let end = in_child(|| {
            // SAFETY: raising a signal in the child only.
            unsafe { libc::raise(libc::SIGKILL) };
            0
        })
        .unwrap();
        assert_eq!(end, ChildEnd::Signaled(libc::SIGKILL));
    }
}
