//! Storage backends: `null`, `mem` (RAM disk) and `file` (image file or block device).

use blktap::ring::{Op, Request, RingMemory};
use blktap::uapi::{RING_SIZE, SEGMENT_MAX};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use crate::uring::IoMode;

/// Parses a size in bytes: a number with an optional binary suffix `K`, `M`, `G` or `T`
/// (case-insensitive, optionally followed by `iB` or `B`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("invalid size suffix in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// What to serve, as given by `--backend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// Answer every request at once without touching data; the size is required.
    Null(Option<u64>),
    /// A RAM disk of the given size.
    Mem(Option<u64>),
    /// An image file or block device.
    File(PathBuf),
}

impl FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("null", a) => Ok(Self::Null(a.map(parse_size).transpose()?)),
            ("mem", a) => Ok(Self::Mem(a.map(parse_size).transpose()?)),
            ("file", Some(p)) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
            ("file", _) => Err("file backend needs a path: file:PATH".into()),
            _ => Err(format!(
                "unknown backend {s:?} (expected null:SIZE, mem:SIZE or file:PATH)"
            )),
        }
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null(Some(n)) => write!(f, "null:{n}"),
            Self::Null(None) => f.write_str("null"),
            Self::Mem(Some(n)) => write!(f, "mem:{n}"),
            Self::Mem(None) => f.write_str("mem"),
            Self::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// One checked request of a batch, and the outcome of serving it.
#[derive(Debug)]
pub struct Io {
    /// Position of the request in its batch.
    pub index: usize,
    /// Byte offset of the request on the device.
    pub offset: u64,
    /// The request.
    pub req: Request,
    /// The outcome: `Ok` until the backend says otherwise.
    pub result: io::Result<()>,
}

impl Io {
    /// Request `req`, at position `index` of its batch, to be served at byte `offset`.
    pub fn new(index: usize, offset: u64, req: Request) -> Self {
        Self {
            index,
            offset,
            req,
            result: Ok(()),
        }
    }
}

/// A storage backend. `offset` is the request's byte offset; the caller checks that the
/// request lies within [`size`](Backend::size) and that writes are allowed.
pub trait Backend: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads the request's range (starting at byte `offset`) into its data buffers.
    fn read(&mut self, offset: u64, req: &Request, mem: RingMemory<'_>) -> io::Result<()>;
    /// Writes the request's data buffers to its range (starting at byte `offset`).
    fn write(&mut self, offset: u64, req: &Request, mem: RingMemory<'_>) -> io::Result<()>;
    /// Short description for logs.
    fn describe(&self) -> String;
    /// Makes every write completed so far durable (FLUSH, and after a FUA write). The default
    /// has nothing to do: the backend has no volatile cache of its own.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Discards `len` bytes at `offset`: later reads may return anything (here: zeroes).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Zeroes `len` bytes at `offset`; `keep_allocated` for `REQ_NOUNMAP`.
    fn write_zeroes(&mut self, offset: u64, len: u64, keep_allocated: bool) -> io::Result<()>;
    /// Serves one request (the default [`serve`](Backend::serve) does each in turn).
    fn serve_one(&mut self, io: &Io, mem: RingMemory<'_>) -> io::Result<()> {
        let len = io.req.len_bytes();
        match io.req.op {
            Op::Read => self.read(io.offset, &io.req, mem),
            Op::Write => {
                self.write(io.offset, &io.req, mem)?;
                if io.req.fua() {
                    self.flush()?;
                }
                Ok(())
            }
            Op::Flush => self.flush(),
            Op::Discard => self.discard(io.offset, len),
            Op::WriteZeroes => {
                self.write_zeroes(io.offset, len, io.req.no_unmap())?;
                if io.req.fua() {
                    self.flush()?;
                }
                Ok(())
            }
        }
    }
    /// Most requests [`serve`](Backend::serve) takes at once: a deep ring's batch is handed
    /// over in pieces of this many. V-XS's ring size unless a backend sizes its buffers for
    /// more.
    fn batch_max(&self) -> usize {
        RING_SIZE as usize
    }
    /// Serves the checked requests of one batch (at most [`batch_max`](Backend::batch_max)),
    /// setting each one's `result`. The default serves them one at a time, in order.
    fn serve(&mut self, ios: &mut [Io], mem: RingMemory<'_>) {
        for io in ios {
            io.result = self.serve_one(io, mem);
        }
    }
    /// Called once the ring is mapped, before the disk exists, with the memory every batch
    /// will come from (the io_uring backend registers its data pages). Nothing by default.
    fn prepare(&mut self, _mem: RingMemory<'_>) {}
    /// Called before the ring is unmapped: drop whatever refers to its memory. Nothing by
    /// default.
    fn release(&mut self) {}
    /// What the I/O path did, for the daemon's last log line (`None`: nothing to say).
    fn io_report(&self) -> Option<String> {
        None
    }
}

/// Opens the backend described by `spec` with the synchronous I/O path (see [`open_with`]).
pub fn open(
    spec: &BackendSpec,
    size: Option<u64>,
    read_only: bool,
) -> Result<Box<dyn Backend>, String> {
    open_with(spec, size, read_only, IoMode::Sync)
}

/// Opens the backend described by `spec`. `size` is the `--size` option, used when the
/// spec carries no size (and refused for files). `io` (`--io`) chooses how a file backend
/// does its I/O ([`crate::uring`]); the other backends have none.
pub fn open_with(
    spec: &BackendSpec,
    size: Option<u64>,
    read_only: bool,
    io: IoMode,
) -> Result<Box<dyn Backend>, String> {
    let need_size = |s: Option<u64>, kind: &str| -> Result<u64, String> {
        let n = s.or(size).ok_or_else(|| {
            format!("the {kind} backend needs a size: {kind}:SIZE or --size SIZE")
        })?;
        if n == 0 || n % 512 != 0 {
            return Err(format!("size {n} is not a non-zero multiple of 512"));
        }
        Ok(n)
    };
    Ok(match spec {
        BackendSpec::Null(s) => Box::new(NullBackend::new(need_size(*s, "null")?)),
        BackendSpec::Mem(s) => Box::new(MemBackend::new(need_size(*s, "mem")?)?),
        BackendSpec::File(p) => {
            if size.is_some() {
                return Err("--size does not apply to the file backend".into());
            }
            let file =
                FileBackend::open(p, read_only).map_err(|e| format!("{}: {e}", p.display()))?;
            crate::uring::file_backend(file, io)?
        }
    })
}

/// Completes every request successfully without touching data.
#[derive(Debug)]
pub struct NullBackend {
    size: u64,
}

impl NullBackend {
    /// A null device of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self { size }
    }
}

impl Backend for NullBackend {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&mut self, _: u64, _: &Request, _: RingMemory<'_>) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: u64, _: &Request, _: RingMemory<'_>) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        format!("null, {} bytes", self.size)
    }
    fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&mut self, _: u64, _: u64, _: bool) -> io::Result<()> {
        Ok(())
    }
}

/// A RAM disk.
#[derive(Debug)]
pub struct MemBackend {
    data: Vec<u8>,
}

impl MemBackend {
    /// A zero-filled RAM disk of `size` bytes.
    pub fn new(size: u64) -> Result<Self, String> {
        let len =
            usize::try_from(size).map_err(|_| format!("size {size} does not fit in memory"))?;
        let mut data = Vec::new();
        data.try_reserve_exact(len)
            .map_err(|_| format!("cannot allocate {size} bytes"))?;
        data.resize(len, 0);
        Ok(Self { data })
    }
}

impl Backend for MemBackend {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, req: &Request, mem: RingMemory<'_>) -> io::Result<()> {
        let mut off = offset as usize;
        for buf in req.buffers(mem) {
            buf.copy_from_slice(&self.data[off..off + buf.len()]);
            off += buf.len();
        }
        Ok(())
    }
    fn write(&mut self, offset: u64, req: &Request, mem: RingMemory<'_>) -> io::Result<()> {
        let mut off = offset as usize;
        for buf in req.buffers(mem) {
            buf.copy_to_slice(&mut self.data[off..off + buf.len()]);
            off += buf.len();
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("mem, {} bytes", self.data.len())
    }
    /// Discarded data reads back as zeroes.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, false)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, _: bool) -> io::Result<()> {
        let (off, len) = (offset as usize, len as usize);
        self.data[off..off + len].fill(0);
        Ok(())
    }
}

/// An image file or block device, accessed with `preadv`/`pwritev` straight from/to the
/// data pages. Uses `O_DIRECT` when the file system allows it and falls back to buffered
/// I/O if the open or an I/O fails with `EINVAL` (e.g. tmpfs, or alignment the device
/// does not accept).
#[derive(Debug)]
pub struct FileBackend {
    path: PathBuf,
    fd: OwnedFd,
    direct: bool,
    read_only: bool,
    size: u64,
    block_device: bool,
}

/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `BLKDISCARD` = `_IO(0x12, 119)`; argument: `u64 [start, len]`.
const BLKDISCARD: libc::c_ulong = 0x1277;
/// `BLKZEROOUT` = `_IO(0x12, 127)`; argument: `u64 [start, len]`.
const BLKZEROOUT: libc::c_ulong = 0x127f;

fn cvt_io(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_raw(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated path; open does not retain it.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl FileBackend {
    /// Opens `path` (`O_RDONLY` if `read_only`, else `O_RDWR`), preferring `O_DIRECT`.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let mode = if read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        let (fd, direct) = match open_raw(path, mode | libc::O_DIRECT) {
            Ok(fd) => (fd, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open_raw(path, mode)?, false),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        let meta = file.metadata()?;
        let block_device = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
        let size = if block_device {
            let mut bytes: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 to the valid pointer.
            let ret = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut bytes) };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
            bytes
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        };
        Ok(Self {
            path: path.to_path_buf(),
            fd: OwnedFd::from(file),
            direct,
            read_only,
            size: size / 512 * 512,
            block_device,
        })
    }

    /// The image's descriptor (it changes when `O_DIRECT` is given up).
    pub(crate) fn raw_fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Whether the image is open with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: plain system call on an open descriptor.
        cvt_io(unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        })
    }

    fn block_range_ioctl(&self, cmd: libc::c_ulong, offset: u64, len: u64) -> io::Result<()> {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD and BLKZEROOUT read two u64 from the valid pointer.
        cvt_io(unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as _, range.as_ptr()) })
    }

    /// Writes zeroes with `pwrite` (buffered through a zeroed buffer; `O_DIRECT` needs it
    /// aligned: a page-aligned allocation of whole pages).
    fn write_zero_bytes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: usize = 1 << 20;
        let mut buf =
            blktap::ring::Mapping::anonymous(CHUNK).map_err(|e| io::Error::other(e.to_string()))?;
        let _ = &mut buf;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            // SAFETY: the anonymous mapping is `CHUNK` zeroed, readable bytes.
            let ret = unsafe {
                libc::pwrite(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    n,
                    (offset + done) as libc::off_t,
                )
            };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
            if ret == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            done += ret as u64;
        }
        Ok(())
    }

    fn fall_back_to_buffered(&mut self) -> io::Result<()> {
        let mode = if self.read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        self.fd = open_raw(&self.path, mode)?;
        self.direct = false;
        eprintln!(
            "blktapd[{}]: {}: O_DIRECT I/O refused, using buffered I/O",
            std::process::id(),
            self.path.display()
        );
        Ok(())
    }

    fn transfer(
        &mut self,
        offset: u64,
        req: &Request,
        mem: RingMemory<'_>,
        write: bool,
    ) -> io::Result<()> {
        match rw_request(self.fd.as_raw_fd(), offset, req, mem, write) {
            Err(e)
                if self.direct
                    && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EFAULT)) =>
            {
                self.fall_back_to_buffered()?;
                rw_request(self.fd.as_raw_fd(), offset, req, mem, write)
            }
            r => r,
        }
    }
}

impl Backend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&mut self, offset: u64, req: &Request, mem: RingMemory<'_>) -> io::Result<()> {
        self.transfer(offset, req, mem, false)
    }
    fn write(&mut self, offset: u64, req: &Request, mem: RingMemory<'_>) -> io::Result<()> {
        self.transfer(offset, req, mem, true)
    }
    /// `fdatasync`: the image's data (and the metadata needed to read it) reach stable storage.
    fn flush(&mut self) -> io::Result<()> {
        // SAFETY: plain system call on an open descriptor.
        cvt_io(unsafe { libc::fdatasync(self.fd.as_raw_fd()) })
    }
    /// Punches a hole (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`) in an image file, so
    /// its blocks are freed and the range reads as zeroes; `BLKDISCARD` on a block device.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.block_device {
            return self.block_range_ioctl(BLKDISCARD, offset, len);
        }
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }
    /// `FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE` (the range stays allocated); where the file
    /// system lacks it, a punched hole unless `keep_allocated`, else written zeroes.
    /// `BLKZEROOUT` on a block device.
    fn write_zeroes(&mut self, offset: u64, len: u64, keep_allocated: bool) -> io::Result<()> {
        if self.block_device {
            return self.block_range_ioctl(BLKZEROOUT, offset, len);
        }
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                if !keep_allocated {
                    if let Ok(()) = self.discard(offset, len) {
                        return Ok(());
                    }
                }
                self.write_zero_bytes(offset, len)
            }
            r => r,
        }
    }
    /// Serves each run of requests that continue one another on the disk (same operation,
    /// each starting where the previous ends: sequential I/O split into ring requests; at most
    /// [`RUN_MAX`] of them) with one vectored system call, and the other requests one by one.
    /// A run that fails is served again request by request, so each request gets its own
    /// outcome.
    fn serve(&mut self, ios: &mut [Io], mem: RingMemory<'_>) {
        let mut start = 0;
        while start < ios.len() {
            let (op, first) = (ios[start].req.op, ios[start].offset);
            let mut end = start + 1;
            let mut next = first + ios[start].req.len_bytes();
            while end < ios.len()
                && end - start < RUN_MAX
                && ios[end].req.op == op
                && ios[end].offset == next
            {
                next += ios[end].req.len_bytes();
                end += 1;
            }
            let run = &mut ios[start..end];
            start = end;
            let write = op == Op::Write;
            if !matches!(op, Op::Read | Op::Write) || run.iter().any(|io| io.req.fua()) {
                for io in run {
                    io.result = self.serve_one(io, mem);
                }
                continue;
            }
            if run.len() > 1 {
                let mut iov = [EMPTY_IOVEC; MAX_IOVECS];
                let mut n = 0;
                for io in run.iter() {
                    n = push_iovecs(&io.req, mem, &mut iov, n);
                }
                // SAFETY: `push_iovecs` made the iovecs from the buffers of the run's
                // validated requests in `mem`, the live ring mapping.
                let merged = unsafe { rw_iovecs(self.fd.as_raw_fd(), first, &mut iov[..n], write) };
                if merged.is_ok() {
                    continue;
                }
            }
            for io in run {
                io.result = self.transfer(io.offset, &io.req, mem, write);
            }
        }
    }
    fn describe(&self) -> String {
        format!(
            "file {}, {} bytes, {}{}",
            self.path.display(),
            self.size,
            if self.direct { "O_DIRECT" } else { "buffered" },
            if self.read_only { ", read-only" } else { "" }
        )
    }
}

pub(crate) const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// Most requests merged into one vectored call: their iovecs (at most [`MAX_IOVECS`]) stay
/// well under `IOV_MAX` (1024).
pub(crate) const RUN_MAX: usize = RING_SIZE as usize;

/// Most iovecs of a run: every segment of [`RUN_MAX`] requests.
pub(crate) const MAX_IOVECS: usize = RUN_MAX * SEGMENT_MAX as usize;

/// Appends the request's buffers to the `n` iovecs in `iov`, merging buffers that are
/// adjacent in memory (a segment ending a page followed by one starting the next page, also
/// across requests). Returns the new iovec count.
pub(crate) fn push_iovecs(
    req: &Request,
    mem: RingMemory<'_>,
    iov: &mut [libc::iovec],
    mut n: usize,
) -> usize {
    for buf in req.buffers(mem) {
        if n > 0 {
            let last = &mut iov[n - 1];
            if (last.iov_base as usize) + last.iov_len == buf.as_ptr() as usize {
                last.iov_len += buf.len();
                continue;
            }
        }
        iov[n] = libc::iovec {
            iov_base: buf.as_ptr().cast(),
            iov_len: buf.len(),
        };
        n += 1;
    }
    n
}

/// Reads or writes the request's buffers at byte `offset` of `fd`.
fn rw_request(
    fd: libc::c_int,
    offset: u64,
    req: &Request,
    mem: RingMemory<'_>,
    write: bool,
) -> io::Result<()> {
    let mut iov = [EMPTY_IOVEC; SEGMENT_MAX as usize];
    let n = push_iovecs(req, mem, &mut iov, 0);
    // SAFETY: `push_iovecs` made the iovecs from the request's buffers in `mem`.
    unsafe { rw_iovecs(fd, offset, &mut iov[..n], write) }
}

/// Reads or writes all of `iov` at byte `offset` of `fd`, resuming after short transfers.
///
/// # Safety
///
/// Every iovec must designate memory that may be read (for `write`) or written (otherwise)
/// for the duration of the call: here, data pages of validated requests in the live ring
/// mapping.
unsafe fn rw_iovecs(
    fd: libc::c_int,
    offset: u64,
    iov: &mut [libc::iovec],
    write: bool,
) -> io::Result<()> {
    let mut cur = iov;
    let mut offset = offset;
    while !cur.is_empty() {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: the caller guarantees the iovecs designate memory the kernel may read or
        // write; advancing below stays within them.
        let ret = unsafe {
            if write {
                libc::pwritev(fd, cur.as_ptr(), cur.len() as libc::c_int, off)
            } else {
                libc::preadv(fd, cur.as_ptr(), cur.len() as libc::c_int, off)
            }
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ret == 0 {
            return Err(io::Error::new(
                if write {
                    io::ErrorKind::WriteZero
                } else {
                    io::ErrorKind::UnexpectedEof
                },
                "short transfer",
            ));
        }
        let mut done = ret as usize;
        offset += done as u64;
        while done > 0 {
            let first = &mut cur[0];
            if done >= first.iov_len {
                done -= first.iov_len;
                cur = &mut cur[1..];
            } else {
                // SAFETY: advancing within the same iovec buffer (done < iov_len).
                first.iov_base = unsafe { first.iov_base.cast::<u8>().add(done).cast() };
                first.iov_len -= done;
                done = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use blktap::ring::Mapping;
    use blktap::uapi::{RingRequest, MMAP_SIZE, OP_READ};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn specs() {
        assert_eq!("null".parse(), Ok(BackendSpec::Null(None)));
        assert_eq!("null:1M".parse(), Ok(BackendSpec::Null(Some(1 << 20))));
        assert_eq!("mem:64K".parse(), Ok(BackendSpec::Mem(Some(65536))));
        assert_eq!(
            "file:/tmp/a:b".parse(),
            Ok(BackendSpec::File(PathBuf::from("/tmp/a:b")))
        );
        assert!("file".parse::<BackendSpec>().is_err());
        assert!("file:".parse::<BackendSpec>().is_err());
        assert!("nbd:x".parse::<BackendSpec>().is_err());
        assert!("mem:abc".parse::<BackendSpec>().is_err());
    }

    #[test]
    fn open_checks_sizes() {
        assert!(open(&BackendSpec::Null(None), None, false).is_err());
        assert_eq!(
            open(&BackendSpec::Null(None), Some(4096), false)
                .unwrap()
                .size(),
            4096
        );
        assert_eq!(
            open(&BackendSpec::Mem(Some(8192)), Some(4096), false)
                .unwrap()
                .size(),
            8192
        );
        assert!(open(&BackendSpec::Mem(Some(1000)), None, false).is_err());
        assert!(open(&BackendSpec::Mem(Some(0)), None, false).is_err());
        assert!(open(&BackendSpec::File("/nonexistent".into()), None, false).is_err());
        assert!(open(&BackendSpec::File("/dev/null".into()), Some(512), false).is_err());
        assert!(open(&BackendSpec::File("/proc".into()), None, true).is_err());
    }

    #[test]
    fn iovecs_merge_adjacent_pages() {
        let m = Mapping::anonymous(MMAP_SIZE).unwrap();
        let mem = m.memory().unwrap();
        let mut iov = [EMPTY_IOVEC; SEGMENT_MAX as usize];
        // (4..7) ends page 0, (0..7) fills page 1, (0..3) starts page 2: one iovec;
        // (5..7) of page 3 does not follow (0..3) of page 2: a second one.
        let raw = RingRequest::new(OP_READ, 3, 0, &[(4, 7), (0, 7), (0, 3), (5, 7)]);
        let req = Request::parse(&raw).unwrap();
        let n = push_iovecs(&req, mem, &mut iov, 0);
        assert_eq!(n, 2);
        assert_eq!(iov[0].iov_base as usize, mem.data_ptr(3, 0) as usize + 2048);
        assert_eq!(iov[0].iov_len, 2048 + 4096 + 2048);
        assert_eq!(iov[1].iov_base as usize, mem.data_ptr(3, 3) as usize + 2560);
        assert_eq!(iov[1].iov_len, 1536);
    }
}
