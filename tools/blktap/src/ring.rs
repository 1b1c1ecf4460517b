//! The ring device: mapping, request parsing, responses and the ring ioctls.
//!
//! The shared page is written concurrently by the kernel, so it is never accessed through
//! Rust references: indices use atomic loads/stores on raw pointers ([`AtomicU32::from_ptr`])
//! and ring entries are copied in and out with volatile reads/writes. The memory-level logic
//! ([`RingMemory`], [`BackRing`]) works on any 353-page buffer, so it can be exercised against
//! an anonymous mapping with a simulated kernel (see [`Mapping::anonymous`]).

use crate::error::{cvt, Error, Result};
use crate::sys;
use crate::uapi::{
    self, Blktap2Params, DeviceInfo, Features, OxtDeviceInfo, RingRangeRequest, RingRequest,
    RingResponse, Segment, SringHeader, FEAT_DISCARD, FEAT_FLUSH, FEAT_WRITE_ZEROES, MMAP_SIZE,
    OP_DISCARD, OP_FLUSH, OP_READ, OP_WRITE, OP_WRITE_ZEROES, PAGE_SIZE, REQ_FUA, REQ_NOUNMAP,
    RING_SIZE, RSP_ERROR, SECTORS_PER_PAGE, SECTOR_SIZE, SEGMENT_MAX,
};
use std::fmt;
use std::marker::PhantomData;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

/// An owned memory mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// Data pages per request in the layout agreed for this mapping ([`SEGMENT_MAX`] unless
    /// [`FEAT_LARGE`](uapi::FEAT_LARGE) was negotiated: [`Mapping::set_layout`]).
    stride: u32,
    /// Ring entries in the layout agreed for this mapping ([`RING_SIZE`] unless
    /// [`FEAT_DEEP`](uapi::FEAT_DEEP) was negotiated).
    slots: u32,
}

// SAFETY: the mapping is plain memory owned by this value; all access to it goes through raw
// pointers (atomics/volatile for the ring page), so sharing or moving the owner across threads
// is sound.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; `&Mapping` only hands out raw pointers and `RingMemory` handles.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A zero-filled private anonymous mapping of `len` bytes (for simulations and tests).
    pub fn anonymous(len: usize) -> Result<Self> {
        // SAFETY: anonymous mapping at an address chosen by the kernel; no existing memory is
        // affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::from_mmap(p, len, || format!("mmap anonymous {len} bytes"))
    }

    /// A shared read/write mapping of `len` bytes of `fd` at byte `offset`.
    pub fn map_fd(fd: BorrowedFd<'_>, len: usize, offset: i64) -> Result<Self> {
        // SAFETY: a new mapping at an address chosen by the kernel; no existing memory is
        // affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_mmap(p, len, || format!("mmap {len} bytes at offset {offset}"))
    }

    fn from_mmap(
        p: *mut libc::c_void,
        len: usize,
        context: impl FnOnce() -> String,
    ) -> Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(Error::last_os(context()));
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| Error::Invalid("mmap returned NULL".into()))?;
        Ok(Self {
            base,
            len,
            stride: SEGMENT_MAX,
            slots: RING_SIZE,
        })
    }

    /// Uses the [`FEAT_LARGE`](uapi::FEAT_LARGE) layout with `segments` data pages per
    /// request from now on (and the ring size it has). Fails (and changes nothing) if
    /// `segments` is out of range or the mapping is too small for it.
    pub fn set_large(&mut self, segments: u32) -> Result<()> {
        if segments <= SEGMENT_MAX {
            return Err(Error::Invalid(format!(
                "{segments} data pages per request are not a large layout"
            )));
        }
        self.set_layout(self.slots, segments)
    }

    /// Uses the layout of a ring of `slots` entries ([`RING_SIZE`], or a power of two in
    /// [`DEEP_RING_SLOTS_MIN`](uapi::DEEP_RING_SLOTS_MIN)..=[`DEEP_RING_SLOTS_MAX`](uapi::DEEP_RING_SLOTS_MAX)
    /// for [`FEAT_DEEP`](uapi::FEAT_DEEP)) with `segments` data pages per request
    /// ([`SEGMENT_MAX`], or more for [`FEAT_LARGE`](uapi::FEAT_LARGE)) from now on. Fails (and
    /// changes nothing) if either is out of range or the mapping is too small for them.
    pub fn set_layout(&mut self, slots: u32, segments: u32) -> Result<()> {
        let deep = (uapi::DEEP_RING_SLOTS_MIN..=uapi::DEEP_RING_SLOTS_MAX).contains(&slots)
            && slots.is_power_of_two();
        if !(SEGMENT_MAX..=uapi::LARGE_SEGMENT_MAX).contains(&segments)
            || !(slots == RING_SIZE || deep)
            || self.len < uapi::deep_mmap_pages(slots, segments) * PAGE_SIZE
        {
            return Err(Error::Invalid(format!(
                "{slots} entries of {segments} data pages do not fit a mapping of {} bytes",
                self.len
            )));
        }
        self.stride = segments;
        self.slots = slots;
        Ok(())
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the mapping is empty (never, for a successful mmap).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping as ring memory (in its agreed layout), if it is large enough for the
    /// ring layout.
    pub fn memory(&self) -> Option<RingMemory<'_>> {
        if self.len < MMAP_SIZE {
            return None;
        }
        // SAFETY: the mapping is page aligned, `len` bytes long, at least MMAP_SIZE (checked)
        // and lives as long as the returned borrow; `stride` fits it (`set_large`).
        let mem = unsafe { RingMemory::from_raw(self.base.as_ptr()) };
        Some(RingMemory {
            pages: self.len / PAGE_SIZE,
            stride: self.stride,
            slots: self.slots,
            ..mem
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len describe a mapping created by mmap and owned by this value; no
        // RingMemory can outlive it (they borrow `self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A handle to the pages of a ring mapping: the shared ring page and the data pages (353 for
/// V-XS, more for [`FEAT_LARGE`](uapi::FEAT_LARGE)), with the layout of the data pages.
///
/// It is `Copy` and hands out only raw pointers and copies; it is valid for lifetime `'a`.
#[derive(Clone, Copy)]
pub struct RingMemory<'a> {
    base: NonNull<u8>,
    /// Pages of the memory.
    pages: usize,
    /// Data pages per request: [`SEGMENT_MAX`], or more for `FEAT_LARGE`.
    stride: u32,
    /// Ring entries: [`RING_SIZE`], or more (a power of two) for `FEAT_DEEP`.
    slots: u32,
    _mapping: PhantomData<&'a Mapping>,
}

// SAFETY: RingMemory only gives access through atomics, volatile copies and raw pointers;
// the memory it designates is valid for 'a regardless of the thread.
unsafe impl Send for RingMemory<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for RingMemory<'_> {}

impl fmt::Debug for RingMemory<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingMemory")
            .field("base", &self.base)
            .finish()
    }
}

impl<'a> RingMemory<'a> {
    /// Wraps raw ring memory.
    ///
    /// # Safety
    ///
    /// `base` must be aligned to 8 bytes (a page in practice) and valid for reads and writes
    /// of [`MMAP_SIZE`] bytes for the whole lifetime `'a`.
    pub unsafe fn from_raw(base: *mut u8) -> Self {
        Self {
            base: NonNull::new(base).expect("ring memory base is NULL"),
            pages: uapi::MMAP_PAGES,
            stride: SEGMENT_MAX,
            slots: RING_SIZE,
            _mapping: PhantomData,
        }
    }

    /// Ring entries in this memory's layout ([`RING_SIZE`] for V-XS): request ids are below.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Data pages per request in this memory's layout ([`SEGMENT_MAX`] for V-XS).
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// The `max_segments` of the [`FEAT_LARGE`](uapi::FEAT_LARGE) layout, or 0 for V-XS's.
    pub fn large_segments(&self) -> u32 {
        if self.stride > SEGMENT_MAX {
            self.stride
        } else {
            0
        }
    }

    /// The data pages (all pages after the ring's), as one range of bytes.
    pub fn data_area(&self) -> (*mut u8, usize) {
        let first = uapi::ring_pages(self.slots);
        (self.page_ptr(first), (self.pages - first) * PAGE_SIZE)
    }

    /// Start of the ring page.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn index(&self, offset: usize) -> &'a AtomicU32 {
        debug_assert!(offset % 4 == 0 && offset < uapi::SRING_HEADER_SIZE);
        // SAFETY: `offset` is one of the 4-byte aligned u32 index fields of the header inside
        // the valid ring page; the index fields are only ever accessed atomically here.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// `req_prod` (acquire): requests up to this index are visible.
    pub fn req_prod(&self) -> u32 {
        self.index(offset_of!(SringHeader, req_prod))
            .load(Ordering::Acquire)
    }

    /// Publishes requests up to `value` (release). Kernel side; for simulations.
    pub fn set_req_prod(&self, value: u32) {
        self.index(offset_of!(SringHeader, req_prod))
            .store(value, Ordering::Release);
    }

    /// `req_event`: V-XS daemons leave it at its initial 1; a daemon that keeps it the Xen way
    /// (see [`BackRing::final_check_for_requests`]) asks the kernel for a level-triggered
    /// `poll`: ready while `req_prod != req_event - 1`.
    pub fn req_event(&self) -> u32 {
        self.index(offset_of!(SringHeader, req_event))
            .load(Ordering::Acquire)
    }

    /// Stores `req_event` (release). `0`, stored right after `mmap`, asks for the level from
    /// the start (the kernel switches a mapping to it the first time it reads a value other
    /// than the initial 1, and never back).
    pub fn set_req_event(&self, value: u32) {
        self.index(offset_of!(SringHeader, req_event))
            .store(value, Ordering::Release);
    }

    /// Whether a kernel that keeps the level (R5) reports the ring readable: some request is
    /// published that the daemon has not marked taken (`req_prod != req_event - 1`). Kernel
    /// side; for simulations.
    pub fn level_ready(&self) -> bool {
        self.req_prod() != self.req_event().wrapping_sub(1)
    }

    /// `rsp_prod` (acquire). Kernel side; for simulations.
    pub fn rsp_prod(&self) -> u32 {
        self.index(offset_of!(SringHeader, rsp_prod))
            .load(Ordering::Acquire)
    }

    /// Publishes responses up to `value` (release).
    pub fn set_rsp_prod(&self, value: u32) {
        self.index(offset_of!(SringHeader, rsp_prod))
            .store(value, Ordering::Release);
    }

    /// The message byte (offset 16): a V-OXT kernel's PAUSE, RESUME or CLOSE for the daemon,
    /// 0 when none (acquire: what the kernel wrote before it is visible after).
    pub fn msg(&self) -> u8 {
        // SAFETY: the message byte lies inside the valid ring page; it is only accessed
        // atomically here (the kernel writes it with a single store).
        let byte =
            unsafe { AtomicU8::from_ptr(self.base.as_ptr().add(offset_of!(SringHeader, msg))) };
        byte.load(Ordering::Acquire)
    }

    /// A copy of the ring header.
    pub fn header(&self) -> SringHeader {
        // SAFETY: the header lies at the start of the valid, aligned ring page; read by value.
        unsafe { ptr::read_volatile(self.base.as_ptr().cast::<SringHeader>()) }
    }

    /// Initialises the header like the kernel's `SHARED_RING_INIT` (indices 0, events 1).
    /// Kernel side; for simulations.
    pub fn init(&self) {
        // SAFETY: the header lies at the start of the valid, aligned ring page.
        unsafe {
            ptr::write_volatile(
                self.base.as_ptr().cast::<SringHeader>(),
                SringHeader::INITIAL,
            )
        }
    }

    fn entry(&self, index: u32) -> *mut u8 {
        let slot = index % self.slots;
        // `set_layout` made the ring's pages fit the memory.
        assert!(uapi::entry_offset(slot) + uapi::RING_ENTRY_SIZE <= self.pages * PAGE_SIZE);
        // SAFETY: the entry lies inside the memory (asserted above).
        unsafe { self.base.as_ptr().add(uapi::entry_offset(slot)) }
    }

    /// Copies the request in the slot of ring index `index` (`index % slots`).
    pub fn read_request(&self, index: u32) -> RingRequest {
        // SAFETY: the entry is inside the ring page and 8-byte aligned (64 + n * 112); it is
        // copied out by value.
        unsafe { ptr::read_volatile(self.entry(index).cast::<RingRequest>()) }
    }

    /// Writes a request into the slot of ring index `index`. Kernel side; for simulations.
    pub fn write_request(&self, index: u32, req: &RingRequest) {
        // SAFETY: the entry is inside the ring page and aligned; written by value.
        unsafe { ptr::write_volatile(self.entry(index).cast::<RingRequest>(), *req) }
    }

    /// Copies the response in the slot of ring index `index`. Kernel side; for simulations.
    pub fn read_response(&self, index: u32) -> RingResponse {
        // SAFETY: the entry is inside the ring page and aligned; copied out by value.
        unsafe { ptr::read_volatile(self.entry(index).cast::<RingResponse>()) }
    }

    /// Writes a response into the slot of ring index `index`.
    pub fn write_response(&self, index: u32, rsp: &RingResponse) {
        // SAFETY: the entry is inside the ring page and aligned; written by value.
        unsafe { ptr::write_volatile(self.entry(index).cast::<RingResponse>(), *rsp) }
    }

    /// Start of mapping page `page` (0 is the ring page).
    ///
    /// # Panics
    ///
    /// If `page` is beyond the memory.
    pub fn page_ptr(&self, page: usize) -> *mut u8 {
        assert!(page < self.pages, "page {page} outside the ring mapping");
        // SAFETY: page < pages, so the offset stays inside the memory.
        unsafe { self.base.as_ptr().add(page * PAGE_SIZE) }
    }

    /// Start of the data page of segment `seg` of request `id`:
    /// `base + (ring_pages + id * stride + seg) * 4096` (one ring page and stride 11 for V-XS).
    ///
    /// # Panics
    ///
    /// If `id >= slots` or `seg >= stride`.
    pub fn data_ptr(&self, id: u32, seg: u32) -> *mut u8 {
        assert!(
            id < self.slots && seg < self.stride,
            "bad data page ({id}, {seg})"
        );
        self.page_ptr(uapi::deep_data_page(self.slots, self.stride, id, seg))
    }

    /// The contiguous data of a [`FEAT_LARGE`](uapi::FEAT_LARGE) request `id` of
    /// `nr_sectors` sectors.
    ///
    /// # Panics
    ///
    /// If the data does not fit the request's data pages (use a validated [`Request`]).
    pub fn large_buf(&self, id: u32, nr_sectors: u64) -> SegmentBuf<'a> {
        let len = nr_sectors * SECTOR_SIZE;
        assert!(
            len > 0 && len <= u64::from(self.stride) * PAGE_SIZE as u64,
            "{nr_sectors} sectors do not fit {} data pages",
            self.stride
        );
        SegmentBuf {
            ptr: self.data_ptr(id, 0),
            len: len as usize,
            _memory: PhantomData,
        }
    }

    /// The bytes of segment number `index` of request `id` described by `seg`.
    ///
    /// # Panics
    ///
    /// If the arguments are out of range (use a validated [`Request`]).
    pub fn segment_buf(&self, id: u32, index: u32, seg: &Segment) -> SegmentBuf<'a> {
        assert!(seg.first_sect <= seg.last_sect && seg.last_sect < SECTORS_PER_PAGE);
        let first = usize::from(seg.first_sect) * SECTOR_SIZE as usize;
        let len = (usize::from(seg.last_sect - seg.first_sect) + 1) * SECTOR_SIZE as usize;
        // SAFETY: first + len <= PAGE_SIZE, so the range stays inside the data page.
        let ptr = unsafe { self.data_ptr(id, index).add(first) };
        SegmentBuf {
            ptr,
            len,
            _memory: PhantomData,
        }
    }
}

/// The bytes of one request segment inside a data page.
///
/// The memory is shared with the kernel; it is accessed only through raw copies.
#[derive(Clone, Copy, Debug)]
pub struct SegmentBuf<'a> {
    ptr: *mut u8,
    len: usize,
    _memory: PhantomData<RingMemory<'a>>,
}

impl SegmentBuf<'_> {
    /// Start of the segment data.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes (a multiple of 512, at most 4096).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: segments cover at least one sector.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` (exactly [`len`](Self::len) bytes) into the segment.
    pub fn copy_from_slice(&self, src: &[u8]) {
        assert_eq!(src.len(), self.len, "segment length mismatch");
        // SAFETY: `ptr` is valid for `len` bytes of writes (RingMemory invariant) and cannot
        // overlap `src`, which is ordinary Rust memory.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.ptr, self.len) }
    }

    /// Copies the segment into `dst` (exactly [`len`](Self::len) bytes).
    pub fn copy_to_slice(&self, dst: &mut [u8]) {
        assert_eq!(dst.len(), self.len, "segment length mismatch");
        // SAFETY: `ptr` is valid for `len` bytes of reads; `dst` is a distinct Rust buffer.
        unsafe { ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr(), self.len) }
    }

    /// Fills the segment with `byte`.
    pub fn fill(&self, byte: u8) {
        // SAFETY: `ptr` is valid for `len` bytes of writes.
        unsafe { ptr::write_bytes(self.ptr, byte, self.len) }
    }

    /// Copies the segment into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.copy_to_slice(&mut v);
        v
    }
}

/// Operation of a validated request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read from the backend into the data pages.
    Read,
    /// Write the data pages to the backend.
    Write,
    /// Make completed writes durable (negotiated `FEAT_FLUSH`); no data.
    Flush,
    /// Discard a range (negotiated `FEAT_DISCARD`); no data.
    Discard,
    /// Write zeroes to a range (negotiated `FEAT_WRITE_ZEROES`); no data.
    WriteZeroes,
}

impl Op {
    /// The ABI value.
    pub fn raw(self) -> u8 {
        match self {
            Op::Read => OP_READ,
            Op::Write => OP_WRITE,
            Op::Flush => OP_FLUSH,
            Op::Discard => OP_DISCARD,
            Op::WriteZeroes => OP_WRITE_ZEROES,
        }
    }

    /// The feature (`FEAT_*`) the daemon must have negotiated to be sent this; 0 for READ and
    /// WRITE.
    pub fn feature(self) -> u64 {
        match self {
            Op::Read | Op::Write => 0,
            Op::Flush => FEAT_FLUSH,
            Op::Discard => FEAT_DISCARD,
            Op::WriteZeroes => FEAT_WRITE_ZEROES,
        }
    }

    /// Whether the operation changes the disk.
    pub fn writes(self) -> bool {
        matches!(self, Op::Write | Op::Discard | Op::WriteZeroes)
    }
}

/// Why a request was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// `id` is not a ring slot.
    BadId(u64),
    /// `operation` is not one of the ABI's.
    BadOperation(u8),
    /// `nr_segments` is 0 or above 11 (READ, WRITE), or not 0 (FLUSH, DISCARD, WRITE_ZEROES).
    BadSegmentCount(u8),
    /// A DISCARD or WRITE_ZEROES of 0 sectors.
    EmptyRange,
    /// A large READ or WRITE ([`FEAT_LARGE`](uapi::FEAT_LARGE)) of 0 sectors or more than
    /// its data pages hold.
    BadLargeLength(u64),
    /// A segment's sector range is not within one page.
    BadSegment {
        /// Segment index.
        index: u8,
        /// Its `first_sect`.
        first_sect: u8,
        /// Its `last_sect`.
        last_sect: u8,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadId(id) => write!(f, "request id {id} outside 0..{RING_SIZE}"),
            Self::BadOperation(op) => write!(f, "unsupported operation {op}"),
            Self::BadSegmentCount(n) => write!(f, "segment count {n} wrong for the operation"),
            Self::EmptyRange => write!(f, "range of 0 sectors"),
            Self::BadLargeLength(n) => write!(f, "large request of {n} sectors"),
            Self::BadSegment {
                index,
                first_sect,
                last_sect,
            } => write!(
                f,
                "segment {index}: sectors {first_sect}..={last_sect} not within a page"
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// A validated request, copied out of the shared page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Read or write.
    pub op: Op,
    /// Ring id (0..32), which selects the data pages.
    pub id: u32,
    /// Start in 512-byte sectors (0 for FLUSH).
    pub sector: u64,
    /// `REQ_FUA`, `REQ_NOUNMAP` (0 from a kernel the daemon did not negotiate with).
    pub flags: u32,
    /// Sectors of a DISCARD or WRITE_ZEROES, or of a large READ or WRITE (0 for the others).
    range_sectors: u64,
    /// A READ or WRITE of the `FEAT_LARGE` layout: its data is contiguous.
    large: bool,
    nr_segments: u8,
    segs: [Segment; SEGMENT_MAX as usize],
}

impl Request {
    /// Placeholder for unused entries of fixed-size arrays (never handed out).
    const IDLE: Self = Self {
        op: Op::Read,
        id: 0,
        sector: 0,
        flags: 0,
        range_sectors: 0,
        large: false,
        nr_segments: 0,
        segs: [Segment::ZERO; SEGMENT_MAX as usize],
    };

    /// Validates a raw request: id < 32; READ or WRITE with 1..=11 segments,
    /// `first_sect <= last_sect <= 7` for every segment; FLUSH with none; DISCARD or
    /// WRITE_ZEROES with none and a non-zero sector count. Whether the operation was negotiated
    /// is for the caller to check ([`Op::feature`]).
    pub fn parse(raw: &RingRequest) -> Result<Self, RequestError> {
        Self::parse_with(raw, 0)
    }

    /// As [`parse_with`](Self::parse_with), in the layout of `mem` (its data pages per request
    /// and its ring size: ids below [`RingMemory::slots`]).
    pub fn parse_in(raw: &RingRequest, mem: &RingMemory<'_>) -> Result<Self, RequestError> {
        Self::parse_layout(raw, mem.large_segments(), mem.slots())
    }

    /// As [`parse`](Self::parse), in the layout of `large_segments` data pages per request
    /// ([`FEAT_LARGE`](uapi::FEAT_LARGE); 0: V-XS): READ and WRITE then come with no segments
    /// and a sector count of 1..=8 * `large_segments` (their data contiguous).
    pub fn parse_with(raw: &RingRequest, large_segments: u32) -> Result<Self, RequestError> {
        Self::parse_layout(raw, large_segments, RING_SIZE)
    }

    fn parse_layout(
        raw: &RingRequest,
        large_segments: u32,
        slots: u32,
    ) -> Result<Self, RequestError> {
        let op = match raw.operation {
            OP_READ => Op::Read,
            OP_WRITE => Op::Write,
            OP_FLUSH => Op::Flush,
            OP_DISCARD => Op::Discard,
            OP_WRITE_ZEROES => Op::WriteZeroes,
            op => return Err(RequestError::BadOperation(op)),
        };
        if raw.id >= u64::from(slots) {
            return Err(RequestError::BadId(raw.id));
        }
        let n = raw.nr_segments;
        if large_segments != 0 && matches!(op, Op::Read | Op::Write) {
            if n != 0 {
                return Err(RequestError::BadSegmentCount(n));
            }
            let sectors = RingRangeRequest::from_request(raw).nr_sectors;
            let max = u64::from(large_segments) * u64::from(SECTORS_PER_PAGE);
            if sectors == 0 || sectors > max {
                return Err(RequestError::BadLargeLength(sectors));
            }
            return Ok(Self {
                op,
                id: raw.id as u32,
                sector: raw.sector_number,
                flags: raw.flags,
                range_sectors: sectors,
                large: true,
                nr_segments: 0,
                segs: [Segment::ZERO; SEGMENT_MAX as usize],
            });
        }
        if matches!(op, Op::Flush | Op::Discard | Op::WriteZeroes) {
            if n != 0 {
                return Err(RequestError::BadSegmentCount(n));
            }
            let range_sectors = match op {
                Op::Flush => 0,
                _ => match RingRangeRequest::from_request(raw).nr_sectors {
                    0 => return Err(RequestError::EmptyRange),
                    n => n,
                },
            };
            return Ok(Self {
                op,
                id: raw.id as u32,
                sector: raw.sector_number,
                flags: raw.flags,
                range_sectors,
                large: false,
                nr_segments: 0,
                segs: [Segment::ZERO; SEGMENT_MAX as usize],
            });
        }
        if n == 0 || u32::from(n) > SEGMENT_MAX {
            return Err(RequestError::BadSegmentCount(n));
        }
        for (index, s) in raw.seg[..usize::from(n)].iter().enumerate() {
            if s.first_sect > s.last_sect || s.last_sect >= SECTORS_PER_PAGE {
                return Err(RequestError::BadSegment {
                    index: index as u8,
                    first_sect: s.first_sect,
                    last_sect: s.last_sect,
                });
            }
        }
        Ok(Self {
            op,
            id: raw.id as u32,
            sector: raw.sector_number,
            flags: raw.flags,
            range_sectors: 0,
            large: false,
            nr_segments: n,
            segs: raw.seg,
        })
    }

    /// Whether the request carries `REQ_FUA`: durable before its response.
    pub fn fua(&self) -> bool {
        self.flags & REQ_FUA != 0
    }

    /// Whether a WRITE_ZEROES must keep the range allocated (`REQ_NOUNMAP`).
    pub fn no_unmap(&self) -> bool {
        self.flags & REQ_NOUNMAP != 0
    }

    /// The segments (1..=11; none for FLUSH, DISCARD and WRITE_ZEROES).
    pub fn segments(&self) -> &[Segment] {
        &self.segs[..usize::from(self.nr_segments)]
    }

    /// Total length in 512-byte sectors (the range of a DISCARD or WRITE_ZEROES, 0 for FLUSH).
    pub fn nr_sectors(&self) -> u64 {
        if self.range_sectors != 0 {
            return self.range_sectors;
        }
        self.segments()
            .iter()
            .map(|s| u64::from(s.last_sect - s.first_sect) + 1)
            .sum()
    }

    /// Byte range on the disk, `None` if it does not fit in 64 bits (the sector number comes
    /// from the kernel and is not range-checked by [`parse`](Self::parse)).
    pub fn byte_range(&self) -> Option<std::ops::Range<u64>> {
        let start = self.sector.checked_mul(SECTOR_SIZE)?;
        Some(start..start.checked_add(self.len_bytes())?)
    }

    /// Total length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.nr_sectors().saturating_mul(SECTOR_SIZE)
    }

    /// Whether this is a READ or WRITE of the `FEAT_LARGE` layout (one contiguous buffer).
    pub fn is_large(&self) -> bool {
        self.large
    }

    /// The data buffers of the segments, in disk order (they are contiguous on the disk); a
    /// large request has one. `mem` must be in the layout the request was parsed for.
    pub fn buffers<'a>(&self, mem: RingMemory<'a>) -> impl Iterator<Item = SegmentBuf<'a>> {
        let req = *self;
        let large = req.large.then(|| mem.large_buf(req.id, req.range_sectors));
        large.into_iter().chain(
            (0..usize::from(req.nr_segments))
                .map(move |i| mem.segment_buf(req.id, i as u32, &req.segs[i])),
        )
    }
}

/// Counts of one pass over the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Responses written (one per request consumed).
    pub responses: u32,
    /// Requests that failed validation (answered with `RSP_ERROR`, not given to the handler).
    pub invalid: u32,
    /// Requests the handler answered with a non-zero status.
    pub failed: u32,
    /// The last validation error seen.
    pub last_invalid: Option<RequestError>,
}

/// The daemon's private ring state (Xen's "back ring"): the next request to consume and the
/// next response to produce. Reset (create a new one) whenever the ring is mapped afresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackRing {
    req_cons: u32,
    rsp_prod_pvt: u32,
}

impl BackRing {
    /// State of a freshly mapped ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Index of the next request to consume.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Index of the next response to write (not yet published beyond `rsp_prod`).
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Consumes every request published up to `req_prod` (read once, acquire) and writes one
    /// response per request, without publishing them.
    ///
    /// Each entry is copied out of the shared page and validated; valid requests go to
    /// `handler`, which returns the response status; invalid ones are answered with
    /// `RSP_ERROR` (echoing id and operation, as tapdisk does). Fails without consuming
    /// anything if the producer claims more unconsumed requests than the ring has entries.
    pub fn process<F>(&mut self, mem: RingMemory<'_>, mut handler: F) -> Result<Batch>
    where
        F: FnMut(&Request) -> i16,
    {
        self.process_all(mem, |reqs, status| {
            for (req, st) in reqs.iter().zip(status) {
                *st = handler(req);
            }
        })
    }

    /// As [`process`](Self::process), but hands every valid request of the pass to `handler`
    /// at once (in ring order), so that a backend can serve them together: `handler` sets
    /// `status[i]` for `reqs[i]` (each starts as `RSP_OKAY`).
    pub fn process_all<F>(&mut self, mem: RingMemory<'_>, handler: F) -> Result<Batch>
    where
        F: FnOnce(&[Request], &mut [i16]),
    {
        let prod = mem.req_prod();
        let pending = prod.wrapping_sub(self.req_cons);
        if pending > mem.slots() {
            return Err(Error::Invalid(format!(
                "ring overflow: req_prod {prod}, req_cons {} ({pending} requests pending)",
                self.req_cons
            )));
        }
        // A V-XS pass fits arrays on the stack; only a deep ring's needs the heap.
        const N: usize = RING_SIZE as usize;
        let n = pending as usize;
        if n <= N {
            let mut entries = [(0u64, 0u8, None::<usize>); N];
            let mut reqs = [Request::IDLE; N];
            let mut status = [uapi::RSP_OKAY; N];
            Ok(self.pass(mem, &mut entries[..n], &mut reqs, &mut status, handler))
        } else {
            let mut entries = vec![(0u64, 0u8, None::<usize>); n];
            let mut reqs = vec![Request::IDLE; n];
            let mut status = vec![uapi::RSP_OKAY; n];
            Ok(self.pass(mem, &mut entries, &mut reqs, &mut status, handler))
        }
    }

    /// The pass of [`process_all`](Self::process_all) over `entries.len()` published requests,
    /// with room for each in `reqs` and `status`.
    fn pass<F>(
        &mut self,
        mem: RingMemory<'_>,
        entries: &mut [(u64, u8, Option<usize>)],
        reqs: &mut [Request],
        status: &mut [i16],
        handler: F,
    ) -> Batch
    where
        F: FnOnce(&[Request], &mut [i16]),
    {
        let mut batch = Batch::default();
        // Per ring entry of the pass: the id and operation to echo, and the index of the
        // request in `reqs` if it is valid.
        let mut nvalid = 0;
        for entry in entries.iter_mut() {
            let raw = mem.read_request(self.req_cons);
            self.req_cons = self.req_cons.wrapping_add(1);
            let valid = match Request::parse_in(&raw, &mem) {
                Ok(req) => {
                    reqs[nvalid] = req;
                    nvalid += 1;
                    Some(nvalid - 1)
                }
                Err(e) => {
                    batch.invalid += 1;
                    batch.last_invalid = Some(e);
                    None
                }
            };
            *entry = (raw.id, raw.operation, valid);
        }
        if nvalid > 0 {
            handler(&reqs[..nvalid], &mut status[..nvalid]);
        }
        for &(id, operation, valid) in entries.iter() {
            let st = valid.map_or(RSP_ERROR, |i| status[i]);
            batch.failed += u32::from(valid.is_some() && st != uapi::RSP_OKAY);
            mem.write_response(self.rsp_prod_pvt, &RingResponse::new(id, operation, st));
            self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
            batch.responses += 1;
        }
        batch
    }

    /// Marks every request up to `req_cons` taken, as Xen's `RING_FINAL_CHECK_FOR_REQUESTS`
    /// does: stores `req_event = req_cons + 1`, then (after a full barrier) reads `req_prod`
    /// again. Returns true if requests were published meanwhile (they are not consumed).
    ///
    /// Call it after every pass over the ring. The kernel then reports the ring readable
    /// while any request lies beyond `req_cons` (a level), not once per publish (the V-XS
    /// edge): a daemon using epoll, `EPOLLONESHOT` re-arming or nested epoll sees requests
    /// published before it (re-)armed.
    pub fn final_check_for_requests(&self, mem: RingMemory<'_>) -> bool {
        mem.set_req_event(self.req_cons.wrapping_add(1));
        // Orders the store above before the load below, paired with the kernel's barrier
        // between storing `req_prod` and reading `req_event`: either it sees the new
        // `req_event`, or we see its new `req_prod`.
        std::sync::atomic::fence(Ordering::SeqCst);
        mem.req_prod() != self.req_cons
    }

    /// Publishes all written responses (`rsp_prod = rsp_prod_pvt`, release).
    pub fn publish(&self, mem: RingMemory<'_>) {
        mem.set_rsp_prod(self.rsp_prod_pvt);
    }

    /// [`process`](Self::process), then, if any response was written, one
    /// [`publish`](Self::publish) and one call of `kick` (the `RESPOND` ioctl).
    pub fn serve<F, K>(&mut self, mem: RingMemory<'_>, handler: F, kick: K) -> Result<Batch>
    where
        F: FnMut(&Request) -> i16,
        K: FnOnce() -> Result<()>,
    {
        let batch = self.process(mem, handler)?;
        self.finish(mem, batch, kick)
    }

    /// [`process_all`](Self::process_all), then publishes and kicks as
    /// [`serve`](Self::serve) does.
    pub fn serve_all<F, K>(&mut self, mem: RingMemory<'_>, handler: F, kick: K) -> Result<Batch>
    where
        F: FnOnce(&[Request], &mut [i16]),
        K: FnOnce() -> Result<()>,
    {
        let batch = self.process_all(mem, handler)?;
        self.finish(mem, batch, kick)
    }

    fn finish<K>(&self, mem: RingMemory<'_>, batch: Batch, kick: K) -> Result<Batch>
    where
        K: FnOnce() -> Result<()>,
    {
        if batch.responses > 0 {
            self.publish(mem);
            kick()?;
        }
        Ok(batch)
    }
}

/// How [`Ring::create_device`] created the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMethod {
    /// `CREATE_DEVICE` (208).
    DeviceInfo,
    /// The legacy `CREATE_DEVICE_COMPAT` (202), because 208 is not implemented.
    Compat,
}

/// An open ring device, optionally mapped.
#[derive(Debug)]
pub struct Ring {
    // Declared before `fd` so that the mapping is removed before the file is closed.
    mapping: Option<Mapping>,
    fd: OwnedFd,
    path: PathBuf,
}

impl Ring {
    /// Opens the ring node `path` read/write. Fails with `EBUSY` if the ring is already open
    /// and `ENXIO` if no tap has that minor.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Ok(Self {
            mapping: None,
            fd: sys::open(path, libc::O_RDWR)?,
            path: path.to_path_buf(),
        })
    }

    /// The node path this ring was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The minor of the node (`minor(st_rdev)`), as tapdisk determines it.
    pub fn minor(&self) -> Result<u32> {
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out-pointer and the fd is open.
        let ret = unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) };
        cvt(ret, || format!("fstat {}", self.path.display()))?;
        Ok(libc::minor(st.st_rdev))
    }

    /// Maps the ring: 353 pages, shared, read/write, offset 0. Fails with `EBUSY` if the
    /// ring is mapped already (by anyone).
    pub fn map(&mut self) -> Result<()> {
        let m = self.map_with(MMAP_SIZE, 0)?;
        self.mapping = Some(m);
        Ok(())
    }

    /// Maps the ring with room for `segments` data pages per request, for a daemon that will
    /// negotiate [`FEAT_LARGE`](uapi::FEAT_LARGE) with `max_segments = segments`; the layout
    /// stays V-XS's until [`set_large`](Self::set_large). A driver without large requests
    /// refuses the size (`EINVAL`).
    pub fn map_large(&mut self, segments: u32) -> Result<()> {
        self.map_layout(RING_SIZE, segments)
    }

    /// Maps the ring with `slots` entries and `segments` data pages per request
    /// ([`uapi::deep_mmap_pages`]), for a daemon that will negotiate
    /// [`FEAT_DEEP`](uapi::FEAT_DEEP) (and [`FEAT_LARGE`](uapi::FEAT_LARGE) if `segments` is
    /// above [`SEGMENT_MAX`]) with those values; the layout stays V-XS's until
    /// [`set_layout`](Self::set_layout). A driver without them refuses the size (`EINVAL`).
    pub fn map_layout(&mut self, slots: u32, segments: u32) -> Result<()> {
        let m = self.map_with(uapi::deep_mmap_pages(slots, segments) * PAGE_SIZE, 0)?;
        self.mapping = Some(m);
        Ok(())
    }

    /// Switches the mapping to the layout agreed on (`slots` entries, `segments` data pages
    /// per request).
    pub fn set_layout(&mut self, slots: u32, segments: u32) -> Result<()> {
        self.mapping
            .as_mut()
            .ok_or_else(|| Error::Invalid("the ring is not mapped".into()))?
            .set_layout(slots, segments)
    }

    /// Switches the mapping to the `FEAT_LARGE` layout agreed on (`segments` data pages per
    /// request).
    pub fn set_large(&mut self, segments: u32) -> Result<()> {
        self.mapping
            .as_mut()
            .ok_or_else(|| Error::Invalid("the ring is not mapped".into()))?
            .set_large(segments)
    }

    /// A mapping of `len` bytes at byte `offset` that is not recorded as the ring mapping
    /// (for probing the driver's checks).
    pub fn map_with(&self, len: usize, offset: i64) -> Result<Mapping> {
        Mapping::map_fd(self.fd.as_fd(), len, offset).map_err(|e| match e {
            Error::Sys { errno, context } => Error::Sys {
                context: format!("{context} of {}", self.path.display()),
                errno,
            },
            e => e,
        })
    }

    /// Removes the ring mapping (the kernel fails any in-flight request).
    pub fn unmap(&mut self) {
        self.mapping = None;
    }

    /// True while the ring is mapped through [`map`](Self::map).
    pub fn is_mapped(&self) -> bool {
        self.mapping.is_some()
    }

    /// The ring memory, if mapped.
    pub fn memory(&self) -> Option<RingMemory<'_>> {
        self.mapping.as_ref().and_then(Mapping::memory)
    }

    /// Closes the file but keeps the mapping (which keeps the file referenced in the kernel).
    pub fn into_mapping(self) -> Option<Mapping> {
        self.mapping
    }

    fn ioctl(&self, name: &str, cmd: u32, arg: libc::c_ulong) -> Result<libc::c_int> {
        // SAFETY: only called with the ring ioctls and arguments matching their ABI (pointers
        // to live, correctly sized structs, or no argument).
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as _, arg) };
        cvt(ret, || format!("ioctl {name} on {}", self.path.display()))
    }

    /// `NEGOTIATE` (209) with `req` as given; on success `req` holds the module's answer
    /// (the agreed features and the supported ones). The kernel also writes the answer when it
    /// refuses unknown feature bits (`EINVAL`).
    pub fn negotiate_raw(&self, req: &mut Features) -> Result<()> {
        let arg = req as *mut Features as libc::c_ulong;
        self.ioctl("NEGOTIATE", uapi::IOCTL_NEGOTIATE, arg)
            .map(drop)
    }

    /// Negotiates `want` (its `features` and limits; size and version are set here) before
    /// [`create_device`](Self::create_device), and returns the agreement. A module built
    /// against a newer header that does not know some wanted bits answers `EINVAL` with what
    /// it supports: the request is then repeated without those bits. `ENOTTY` means a driver
    /// without the negotiation (any older variant): the disk will be V-XS.
    pub fn negotiate(&self, want: &Features) -> Result<Features> {
        let mut req = Features {
            size: uapi::FEATURES_SIZE_V1,
            version: uapi::FEATURES_VERSION,
            supported: 0,
            ..*want
        };
        match self.negotiate_raw(&mut req) {
            Ok(()) => Ok(req),
            Err(e) if e.errno() == Some(libc::EINVAL) && req.supported != 0 => {
                let keep = want.features & req.supported;
                let mut retry = Features {
                    features: keep,
                    supported: 0,
                    ..*want
                };
                if keep & uapi::FEAT_DISCARD == 0 {
                    retry.discard_granularity = 0;
                    retry.discard_alignment = 0;
                    retry.max_discard_sectors = 0;
                }
                if keep & uapi::FEAT_WRITE_ZEROES == 0 {
                    retry.max_write_zeroes_sectors = 0;
                }
                if keep & uapi::FEAT_LARGE == 0 {
                    retry.max_segments = 0;
                }
                retry.size = uapi::FEATURES_SIZE_V1;
                retry.version = uapi::FEATURES_VERSION;
                self.negotiate_raw(&mut retry)?;
                Ok(retry)
            }
            Err(e) => Err(e),
        }
    }

    /// `CREATE_DEVICE` (208) only.
    pub fn create_device_info(&self, info: &DeviceInfo) -> Result<()> {
        let arg = info as *const DeviceInfo as libc::c_ulong;
        self.ioctl("CREATE_DEVICE", uapi::IOCTL_CREATE_DEVICE, arg)
            .map(drop)
    }

    /// `CREATE_DEVICE` (208) in V-OXT's 40-byte layout; the kernel writes the flags it
    /// serves back into `info.flags` (before it creates the disk, so also on `EEXIST`).
    pub fn create_device_oxt(&self, info: &mut OxtDeviceInfo) -> Result<()> {
        let arg = info as *mut OxtDeviceInfo as libc::c_ulong;
        self.ioctl("CREATE_DEVICE (V-OXT)", uapi::IOCTL_CREATE_DEVICE, arg)
            .map(drop)
    }

    /// `CREATE_DEVICE_COMPAT` (202) only.
    pub fn create_device_compat(&self, params: &Blktap2Params) -> Result<()> {
        let arg = params as *const Blktap2Params as libc::c_ulong;
        self.ioctl(
            "CREATE_DEVICE_COMPAT",
            uapi::IOCTL_CREATE_DEVICE_COMPAT,
            arg,
        )
        .map(drop)
    }

    /// Creates the block device like tapdisk: `CREATE_DEVICE` (208), and if that is not
    /// implemented (`ENOTTY` or `ENOIOCTLCMD`) `CREATE_DEVICE_COMPAT` (202), which cannot
    /// carry the flags or a distinct physical sector size.
    pub fn create_device(&self, info: &DeviceInfo) -> Result<CreateMethod> {
        match self.create_device_info(info) {
            Ok(()) => Ok(CreateMethod::DeviceInfo),
            Err(e) if crate::control::is_not_implemented(&e) => {
                self.create_device_compat(&Blktap2Params::from_info(info))?;
                Ok(CreateMethod::Compat)
            }
            Err(e) => Err(e),
        }
    }

    /// `REMOVE_DEVICE` (207): `EBUSY` while the disk is open; succeeds if there is no disk.
    pub fn remove_device(&self) -> Result<()> {
        self.ioctl("REMOVE_DEVICE", uapi::IOCTL_REMOVE_DEVICE, 0)
            .map(drop)
    }

    /// `RESPOND` (1): makes the kernel consume the responses published up to `rsp_prod`.
    pub fn respond(&self) -> Result<()> {
        self.ioctl("RESPOND", uapi::IOCTL_RESPOND, 0).map(drop)
    }

    /// Any ioctl on the ring.
    ///
    /// # Safety
    ///
    /// If the kernel interprets `arg` as a pointer for `cmd`, it must be valid for that use.
    pub unsafe fn ioctl_raw(&self, cmd: u32, arg: libc::c_ulong) -> Result<libc::c_int> {
        // SAFETY: delegated to the caller.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as _, arg) };
        cvt(ret, || format!("ioctl {cmd} on {}", self.path.display()))
    }

    /// Polls the ring for `POLLIN` (which also makes the kernel dispatch queued I/O and
    /// publish `req_prod`). `None` waits forever. Returns false on timeout or `EINTR`.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: one valid pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
        match cvt(ret, || format!("poll {}", self.path.display())) {
            Ok(_) => Ok(pfd.revents & libc::POLLIN != 0),
            Err(e) if e.is_errno(libc::EINTR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Serves one batch: [`BackRing::serve`] on this ring's memory with `RESPOND` as kick.
    /// Fails with [`Error::Invalid`] if the ring is not mapped.
    pub fn serve<F>(&self, back: &mut BackRing, handler: F) -> Result<Batch>
    where
        F: FnMut(&Request) -> i16,
    {
        let mem = self
            .memory()
            .ok_or_else(|| Error::Invalid(format!("{} is not mapped", self.path.display())))?;
        back.serve(mem, handler, || self.respond())
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Size check: a full ring entry is the request size.
const _: () = assert!(size_of::<RingRequest>() == uapi::RING_ENTRY_SIZE);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::{SringHeader, RSP_OKAY};

    fn ring() -> Mapping {
        let m = Mapping::anonymous(MMAP_SIZE).unwrap();
        m.memory().unwrap().init();
        m
    }

    #[test]
    fn process_all_hands_valid_requests_over_at_once() {
        let m = ring();
        let mem = m.memory().unwrap();
        let mut back = BackRing::new();
        let raws = [
            RingRequest::new(OP_READ, 3, 8, &[(0, 7)]),
            RingRequest::new(9, 4, 0, &[(0, 7)]),
            RingRequest::new(OP_WRITE, 5, 16, &[(0, 7), (0, 3)]),
            RingRequest::new(OP_WRITE, 6, 24, &[(1, 1)]),
        ];
        for (i, r) in raws.iter().enumerate() {
            mem.write_request(i as u32, r);
        }
        mem.set_req_prod(raws.len() as u32);
        let mut calls = 0;
        let batch = back
            .process_all(mem, |reqs, status| {
                calls += 1;
                assert_eq!(reqs.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 5, 6]);
                assert_eq!(status, [RSP_OKAY; 3]);
                status[1] = -5;
            })
            .unwrap();
        assert_eq!(calls, 1);
        assert_eq!((batch.responses, batch.invalid, batch.failed), (4, 1, 1));
        assert_eq!(back.req_cons(), 4);
        assert_eq!(back.rsp_prod_pvt(), 4);
        let rsps: Vec<_> = (0..4).map(|i| mem.read_response(i)).collect();
        assert_eq!(rsps[0], RingResponse::new(3, OP_READ, RSP_OKAY));
        assert_eq!(rsps[1], RingResponse::new(4, 9, RSP_ERROR));
        assert_eq!(rsps[2], RingResponse::new(5, OP_WRITE, -5));
        assert_eq!(rsps[3], RingResponse::new(6, OP_WRITE, RSP_OKAY));
        // Nothing new: the handler is not called.
        let batch = back.process_all(mem, |_, _| panic!("no requests")).unwrap();
        assert_eq!(batch.responses, 0);
    }

    #[test]
    fn header_init_and_indices() {
        let m = ring();
        let mem = m.memory().unwrap();
        assert_eq!(mem.header(), SringHeader::INITIAL);
        mem.set_req_prod(5);
        mem.set_rsp_prod(3);
        assert_eq!(mem.req_prod(), 5);
        assert_eq!(mem.rsp_prod(), 3);
        // SAFETY: test-only raw read of the header's first word inside the mapping.
        let raw = unsafe { ptr::read_volatile(m.as_ptr().cast::<u32>()) };
        assert_eq!(raw, 5);
    }

    #[test]
    fn req_event_gives_the_level() {
        let m = ring();
        let mem = m.memory().unwrap();
        let mut back = BackRing::new();
        // Initial 1 (V-XS): nothing published, not ready. The daemon asks for the level.
        assert_eq!(mem.req_event(), 1);
        assert!(!mem.level_ready());
        mem.set_req_event(0);
        assert_eq!(mem.header().req_event, 0);
        // 0: ready at once (a spurious wake-up that finds nothing), until the first pass.
        assert!(mem.level_ready());
        assert_eq!(back.process(mem, |_| RSP_OKAY).unwrap().responses, 0);
        assert!(!back.final_check_for_requests(mem));
        assert_eq!(mem.req_event(), 1);
        assert!(!mem.level_ready());
        // Published: ready, and it stays so (however often polled) until taken and marked.
        for i in 0..3u32 {
            mem.write_request(i, &RingRequest::new(OP_READ, u64::from(i), 0, &[(0, 7)]));
        }
        mem.set_req_prod(3);
        assert!(mem.level_ready() && mem.level_ready());
        assert_eq!(back.process(mem, |_| RSP_OKAY).unwrap().responses, 3);
        // Taken but not yet marked: still ready (the level is what the daemon marked).
        assert!(mem.level_ready());
        assert!(!back.final_check_for_requests(mem));
        assert_eq!(mem.req_event(), 4);
        assert!(!mem.level_ready());
        // A publish between the pass and the mark: the final check reports it, and so does
        // the level.
        mem.write_request(3, &RingRequest::new(OP_READ, 3, 0, &[(0, 7)]));
        mem.set_req_prod(4);
        assert!(back.final_check_for_requests(mem));
        assert!(mem.level_ready());
        assert_eq!(back.process(mem, |_| RSP_OKAY).unwrap().responses, 1);
        assert!(!back.final_check_for_requests(mem));
        assert!(!mem.level_ready());
    }

    #[test]
    fn req_event_wraps() {
        let m = ring();
        let mem = m.memory().unwrap();
        let mut back = BackRing {
            req_cons: u32::MAX,
            rsp_prod_pvt: u32::MAX,
        };
        mem.set_req_prod(u32::MAX);
        assert!(!back.final_check_for_requests(mem));
        assert_eq!(mem.req_event(), 0);
        assert!(!mem.level_ready());
        mem.write_request(u32::MAX, &RingRequest::new(OP_READ, 0, 0, &[(0, 7)]));
        mem.set_req_prod(0);
        assert!(mem.level_ready());
        assert_eq!(back.process(mem, |_| RSP_OKAY).unwrap().responses, 1);
        assert!(!back.final_check_for_requests(mem));
        assert_eq!((back.req_cons(), mem.req_event()), (0, 1));
        assert!(!mem.level_ready());
    }

    #[test]
    fn data_pointer_layout() {
        let m = ring();
        let mem = m.memory().unwrap();
        let base = m.as_ptr() as usize;
        assert_eq!(mem.data_ptr(0, 0) as usize - base, PAGE_SIZE);
        assert_eq!(mem.data_ptr(1, 0) as usize - base, 12 * PAGE_SIZE);
        assert_eq!(mem.data_ptr(31, 10) as usize - base, 352 * PAGE_SIZE);
        let b = mem.segment_buf(2, 3, &Segment::new(2, 5));
        assert_eq!(
            b.as_ptr() as usize - base,
            (1 + 2 * 11 + 3) * PAGE_SIZE + 1024
        );
        assert_eq!(b.len(), 2048);
        assert_eq!(mem.entry(33) as usize - base, 64 + 112);
    }

    #[test]
    fn deep_layout() {
        let (slots, segments) = (128, SEGMENT_MAX);
        let pages = uapi::deep_mmap_pages(slots, segments);
        assert_eq!(pages, 4 + 128 * 11);
        let mut m = Mapping::anonymous(pages * PAGE_SIZE).unwrap();
        assert!(m.set_layout(96, 11).is_err() && m.set_layout(2048, 11).is_err());
        assert!(m.set_layout(256, 11).is_err(), "larger than the mapping");
        m.set_layout(slots, segments).unwrap();
        let mem = m.memory().unwrap();
        mem.init();
        let base = m.as_ptr() as usize;
        assert_eq!(
            (mem.slots(), mem.stride(), mem.large_segments()),
            (128, 11, 0)
        );
        assert_eq!(mem.data_ptr(0, 0) as usize - base, 4 * PAGE_SIZE);
        assert_eq!(
            mem.data_ptr(127, 10) as usize - base,
            (pages - 1) * PAGE_SIZE
        );
        assert_eq!(mem.data_area(), (mem.page_ptr(4), 128 * 11 * PAGE_SIZE));
        // Entries wrap at 128, across the ring's pages.
        assert_eq!(mem.entry(127) as usize - base, 64 + 127 * 112);
        assert_eq!(mem.entry(128) as usize - base, 64);
        // A request id up to 127 is valid, 128 is not; a batch may hold 128 requests.
        let mut back = BackRing::new();
        for i in 0..128u32 {
            let req = RingRequest::new(OP_READ, u64::from(i), 8 * u64::from(i), &[(0, 7)]);
            mem.write_request(i, &req);
        }
        mem.set_req_prod(128);
        let mut seen = 0;
        let batch = back
            .process(mem, |r| {
                seen += 1;
                assert!(r.id < 128);
                RSP_OKAY
            })
            .unwrap();
        assert_eq!((batch.responses, batch.invalid, seen), (128, 0, 128));
        let bad = RingRequest::new(OP_READ, 128, 0, &[(0, 7)]);
        assert!(matches!(
            Request::parse_in(&bad, &mem),
            Err(RequestError::BadId(128))
        ));
        mem.set_req_prod(128 + 129);
        assert!(
            back.process(mem, |_| RSP_OKAY).is_err(),
            "more pending than entries"
        );
    }

    #[test]
    fn large_requests() {
        let segments = 64;
        let mut m = Mapping::anonymous(uapi::mmap_pages_large(segments) * PAGE_SIZE).unwrap();
        m.memory().unwrap().init();
        assert_eq!(m.memory().unwrap().large_segments(), 0);
        assert!(m.set_large(11).is_err() && m.set_large(257).is_err());
        m.set_large(segments).unwrap();
        let mem = m.memory().unwrap();
        let base = m.as_ptr() as usize;
        assert_eq!((mem.stride(), mem.large_segments()), (64, 64));
        assert_eq!(mem.data_ptr(1, 0) as usize - base, 65 * PAGE_SIZE);
        assert_eq!(mem.data_area(), (mem.page_ptr(1), 32 * 64 * PAGE_SIZE));
        let range = |op, id, sectors| RingRangeRequest::new(op, 0, id, 80, sectors).to_request();
        let req = Request::parse_with(&range(OP_WRITE, 2, 512), segments).unwrap();
        assert!(req.is_large());
        assert_eq!((req.nr_sectors(), req.len_bytes()), (512, 256 * 1024));
        let bufs: Vec<_> = req.buffers(mem).collect();
        assert_eq!(bufs.len(), 1);
        assert_eq!(bufs[0].as_ptr() as usize - base, (1 + 2 * 64) * PAGE_SIZE);
        assert_eq!(bufs[0].len(), 256 * 1024);
        // Every sector of the request's 64 pages, and no more.
        assert!(Request::parse_with(&range(OP_READ, 31, 512), segments).is_ok());
        assert_eq!(
            Request::parse_with(&range(OP_READ, 0, 513), segments),
            Err(RequestError::BadLargeLength(513))
        );
        assert_eq!(
            Request::parse_with(&range(OP_READ, 0, 0), segments),
            Err(RequestError::BadLargeLength(0))
        );
        // The V-XS form is not the large layout's, and the large form is not V-XS's.
        let vxs = RingRequest::new(OP_READ, 3, 8, &[(0, 7)]);
        assert_eq!(
            Request::parse_with(&vxs, segments),
            Err(RequestError::BadSegmentCount(1))
        );
        assert_eq!(
            Request::parse(&range(OP_READ, 0, 8)),
            Err(RequestError::BadSegmentCount(0))
        );
        // A pass over the ring parses in the memory's layout.
        mem.write_request(0, &range(OP_WRITE, 4, 16));
        mem.set_req_prod(1);
        let mut back = BackRing::new();
        let batch = back
            .process_all(mem, |reqs, _| assert!(reqs[0].is_large()))
            .unwrap();
        assert_eq!((batch.responses, batch.invalid), (1, 0));
    }

    #[test]
    #[should_panic]
    fn data_pointer_out_of_range() {
        let m = ring();
        m.memory().unwrap().data_ptr(32, 0);
    }

    #[test]
    fn request_validation() {
        let ok = RingRequest::new(OP_WRITE, 31, 8, &[(0, 7), (0, 0)]);
        let r = Request::parse(&ok).unwrap();
        assert_eq!(
            (r.op, r.id, r.sector, r.nr_sectors()),
            (Op::Write, 31, 8, 9)
        );
        assert_eq!(r.byte_range(), Some(4096..4096 + 9 * 512));
        let far = RingRequest::new(OP_READ, 0, u64::MAX / 512, &[(0, 7)]);
        assert_eq!(Request::parse(&far).unwrap().byte_range(), None);
        assert_eq!(r.len_bytes(), 9 * 512);

        let bad_id = RingRequest::new(OP_READ, 32, 0, &[(0, 7)]);
        assert_eq!(Request::parse(&bad_id), Err(RequestError::BadId(32)));
        let bad_op = RingRequest::new(4, 0, 0, &[(0, 7)]);
        assert_eq!(Request::parse(&bad_op), Err(RequestError::BadOperation(4)));
        // FLUSH has no segments; DISCARD and WRITE_ZEROES a non-empty range and no segments.
        let flush = Request::parse(&RingRequest::new(OP_FLUSH, 3, 0, &[])).unwrap();
        assert_eq!(
            (flush.op, flush.nr_sectors(), flush.byte_range()),
            (Op::Flush, 0, Some(0..0))
        );
        assert_eq!(
            Request::parse(&RingRequest::new(OP_FLUSH, 3, 0, &[(0, 7)])),
            Err(RequestError::BadSegmentCount(1))
        );
        let trim = RingRangeRequest::new(OP_DISCARD, 0, 5, 16, 1 << 20).to_request();
        let t = Request::parse(&trim).unwrap();
        assert_eq!(
            (t.op, t.nr_sectors(), t.segments().len()),
            (Op::Discard, 1 << 20, 0)
        );
        assert_eq!(t.byte_range(), Some(16 * 512..(16 + (1 << 20)) * 512));
        let wz = RingRangeRequest::new(OP_WRITE_ZEROES, REQ_NOUNMAP | REQ_FUA, 5, 16, 8);
        let w = Request::parse(&wz.to_request()).unwrap();
        assert!(w.no_unmap() && w.fua() && w.op.writes());
        assert_eq!(w.op.feature(), uapi::FEAT_WRITE_ZEROES);
        let empty = RingRangeRequest::new(OP_DISCARD, 0, 5, 16, 0).to_request();
        assert_eq!(Request::parse(&empty), Err(RequestError::EmptyRange));
        let no_seg = RingRequest::new(OP_READ, 0, 0, &[]);
        assert_eq!(
            Request::parse(&no_seg),
            Err(RequestError::BadSegmentCount(0))
        );
        let mut many = RingRequest::new(OP_READ, 0, 0, &[(0, 7)]);
        many.nr_segments = 12;
        assert_eq!(
            Request::parse(&many),
            Err(RequestError::BadSegmentCount(12))
        );
        let full = RingRequest::new(OP_READ, 0, 0, &[(0, 7); 11]);
        assert_eq!(Request::parse(&full).unwrap().nr_sectors(), 88);
        let reversed = RingRequest::new(OP_READ, 0, 0, &[(0, 7), (3, 2)]);
        assert!(matches!(
            Request::parse(&reversed),
            Err(RequestError::BadSegment {
                index: 1,
                first_sect: 3,
                last_sect: 2
            })
        ));
        let past_page = RingRequest::new(OP_READ, 0, 0, &[(0, 8)]);
        assert!(matches!(
            Request::parse(&past_page),
            Err(RequestError::BadSegment { .. })
        ));
        // Segments beyond nr_segments are not looked at.
        let mut junk = RingRequest::new(OP_READ, 0, 0, &[(0, 7)]);
        junk.seg[5] = Segment::new(9, 1);
        assert!(Request::parse(&junk).is_ok());
    }

    #[test]
    fn batch_consumes_all_and_publishes_once() {
        let m = ring();
        let mem = m.memory().unwrap();
        let mut back = BackRing::new();
        for i in 0..5u32 {
            mem.write_request(
                i,
                &RingRequest::new(OP_READ, u64::from(i), u64::from(i) * 8, &[(0, 7)]),
            );
        }
        mem.write_request(5, &RingRequest::new(9, 5, 0, &[(0, 7)]));
        mem.set_req_prod(6);
        let mut seen = Vec::new();
        let mut kicks = 0;
        let batch = back
            .serve(
                mem,
                |r| {
                    seen.push(r.id);
                    if r.id == 4 {
                        RSP_ERROR
                    } else {
                        RSP_OKAY
                    }
                },
                || {
                    kicks += 1;
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(batch.responses, 6);
        assert_eq!(batch.invalid, 1);
        assert_eq!(batch.failed, 1);
        assert_eq!(batch.last_invalid, Some(RequestError::BadOperation(9)));
        assert_eq!(kicks, 1);
        assert_eq!(mem.rsp_prod(), 6);
        assert_eq!(
            mem.read_response(4),
            RingResponse::new(4, OP_READ, RSP_ERROR)
        );
        assert_eq!(mem.read_response(5), RingResponse::new(5, 9, RSP_ERROR));
        assert_eq!(
            mem.read_response(0),
            RingResponse::new(0, OP_READ, RSP_OKAY)
        );
        // Nothing new: no publish, no kick.
        let batch = back
            .serve(mem, |_| RSP_OKAY, || panic!("kick without responses"))
            .unwrap();
        assert_eq!(batch.responses, 0);
    }

    #[test]
    fn indices_wrap_around() {
        let m = ring();
        let mem = m.memory().unwrap();
        let start = u32::MAX - 2;
        let mut back = BackRing {
            req_cons: start,
            rsp_prod_pvt: start,
        };
        mem.set_rsp_prod(start);
        for k in 0..6u32 {
            let idx = start.wrapping_add(k);
            mem.write_request(
                idx,
                &RingRequest::new(OP_WRITE, u64::from(idx % RING_SIZE), 0, &[(0, 0)]),
            );
        }
        mem.set_req_prod(start.wrapping_add(6));
        let b = back.process(mem, |_| RSP_OKAY).unwrap();
        assert_eq!(b.responses, 6);
        back.publish(mem);
        assert_eq!(mem.rsp_prod(), 3);
        assert_eq!(back.req_cons(), 3);
    }

    #[test]
    fn overflow_is_rejected() {
        let m = ring();
        let mem = m.memory().unwrap();
        mem.set_req_prod(RING_SIZE + 1);
        let mut back = BackRing::new();
        assert!(matches!(
            back.process(mem, |_| RSP_OKAY),
            Err(Error::Invalid(_))
        ));
        assert_eq!(back.req_cons(), 0);
        mem.set_req_prod(RING_SIZE);
        for i in 0..RING_SIZE {
            mem.write_request(i, &RingRequest::new(OP_READ, u64::from(i), 0, &[(0, 7)]));
        }
        assert_eq!(
            back.process(mem, |_| RSP_OKAY).unwrap().responses,
            RING_SIZE
        );
    }

    #[test]
    fn segment_buffers_copy() {
        let m = ring();
        let mem = m.memory().unwrap();
        let req = Request::parse(&RingRequest::new(OP_WRITE, 7, 0, &[(1, 1), (0, 7)])).unwrap();
        let bufs: Vec<_> = req.buffers(mem).collect();
        assert_eq!(bufs.len(), 2);
        assert_eq!(bufs[0].len(), 512);
        assert_eq!(bufs[1].len(), 4096);
        bufs[0].copy_from_slice(&[0xab; 512]);
        bufs[1].fill(0xcd);
        // SAFETY: test-only raw reads inside the mapping.
        unsafe {
            assert_eq!(*mem.data_ptr(7, 0), 0);
            assert_eq!(*mem.data_ptr(7, 0).add(512), 0xab);
            assert_eq!(*mem.data_ptr(7, 0).add(1024), 0);
            assert_eq!(*mem.data_ptr(7, 1).add(4095), 0xcd);
        }
        assert!(bufs[0].to_vec().iter().all(|&b| b == 0xab));
    }

    #[test]
    fn open_missing_ring() {
        let e = Ring::open("/nonexistent/blktap0").unwrap_err();
        assert!(e.is_errno(libc::ENOENT));
    }

    #[test]
    fn ring_on_a_regular_file() {
        // A regular file stands in for the ring node: mapping and memory access work, the
        // ring ioctls do not.
        let path = std::env::temp_dir().join(format!("blktap-ringfile-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; MMAP_SIZE]).unwrap();
        let mut r = Ring::open(&path).unwrap();
        assert!(r.memory().is_none());
        r.map().unwrap();
        assert!(r.is_mapped());
        let mem = r.memory().unwrap();
        mem.init();
        assert_eq!(mem.header(), SringHeader::INITIAL);
        assert!(r.remove_device().unwrap_err().is_errno(libc::ENOTTY));
        r.minor().unwrap();
        r.poll(Some(Duration::ZERO)).unwrap();
        let m = r.into_mapping().unwrap();
        assert_eq!(m.len(), MMAP_SIZE);
        drop(m);
        std::fs::remove_file(&path).unwrap();
    }
}
