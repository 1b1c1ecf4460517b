// SPDX-License-Identifier: GPL-2.0

//! Block multi-queue support for a driver that owns its requests.
//!
//! Based on the design of the kernel's `kernel::block::mq` (7.3), and extended with what that
//! abstraction lacks for this driver: ending a request with an error, the request's sector, op
//! and single-page segments, queue limits, a fixed major and first minor, no partition scan, a
//! read-only flag, and block device `open`/`release` callbacks.
//!
//! Ownership model: `queue_rq` hands the driver a [`Request`] it owns. The driver ends it exactly
//! once with [`Request::end`]; a [`Request`] dropped without being ended is failed with an I/O
//! error, so no request can be lost. Handing the request back from `queue_rq` tells blk-mq the
//! device is busy and the request will be dispatched again later.
//!
//! C headers: [`include/linux/blk-mq.h`](srctree/include/linux/blk-mq.h),
//! [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h),
//! [`include/linux/bvec.h`](srctree/include/linux/bvec.h)

use core::{
    fmt,
    marker::PhantomData,
    mem::ManuallyDrop,
    pin::Pin,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    error::to_result,
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
    str::CString,
    types::{
        ForeignOwnable,
        Opaque, //
    }, //
};

use super::compat;

/// The status a request is ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// The request succeeded.
    Ok,
    /// The request failed with an I/O error (`EIO` for the submitter).
    IoError,
    /// The operation is not supported (`EOPNOTSUPP` for the submitter).
    NotSupported,
}

impl Status {
    fn to_raw(self) -> bindings::blk_status_t {
        let errno = match self {
            Status::Ok => return bindings::BLK_STS_OK as bindings::blk_status_t,
            Status::IoError => EIO,
            Status::NotSupported => compat::eopnotsupp(),
        };
        // SAFETY: `errno_to_blk_status` is a pure table lookup.
        unsafe { bindings::errno_to_blk_status(errno.to_errno()) }
    }
}

/// The operation of a request, as far as this driver distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read data from the device.
    Read,
    /// Write data to the device.
    Write,
    /// Make completed writes durable (only with [`DiskParams::write_cache`]).
    Flush,
    /// Discard a range (only with [`DiskParams::max_discard_sectors`]).
    Discard,
    /// Write zeroes to a range (only with [`DiskParams::max_write_zeroes_sectors`]).
    WriteZeroes,
    /// Anything else (passthrough, ...), with its `REQ_OP_*` number.
    Other(u32),
}

/// `BLK_FEAT_WRITE_CACHE` of `include/linux/blkdev.h` (a macro with a cast: not in bindings).
const BLK_FEAT_WRITE_CACHE: u32 = 1 << 0;
/// `BLK_FEAT_FUA`, likewise.
const BLK_FEAT_FUA: u32 = 1 << 1;

/// A block request owned by the driver, from `queue_rq` until it is ended.
///
/// # Invariants
///
/// `ptr` points to a started request that the block layer handed to this driver and that has
/// not been ended; this object is its only owner.
pub(crate) struct Request {
    ptr: NonNull<bindings::request>,
}

// SAFETY: a started request may be inspected and ended from any thread.
unsafe impl Send for Request {}
// SAFETY: `&Request` only allows reading immutable request fields.
unsafe impl Sync for Request {}

impl Request {
    fn raw(&self) -> *mut bindings::request {
        self.ptr.as_ptr()
    }

    /// The first sector of the request, in 512-byte units.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: by the type invariant the request is live; `__sector` is not changed by the
        // block layer while the driver owns the request.
        unsafe { (*self.raw()).__sector }
    }

    /// The number of data bytes of the request.
    pub(crate) fn bytes(&self) -> u32 {
        // SAFETY: as in `sector`.
        unsafe { (*self.raw()).__data_len }
    }

    /// The request's operation.
    pub(crate) fn op(&self) -> Op {
        // SAFETY: as in `sector`.
        let flags = unsafe { (*self.raw()).cmd_flags };
        let op = flags & ((1 << bindings::REQ_OP_BITS) - 1);
        match op {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            other => Op::Other(other),
        }
    }

    fn has_flag(&self, bit: bindings::req_flag_bits) -> bool {
        // SAFETY: as in `sector`.
        let flags = unsafe { (*self.raw()).cmd_flags };
        flags & (1 << bit) != 0
    }

    /// Whether the request must be durable before it completes (`REQ_FUA`). The block layer
    /// leaves it set only on a queue with [`DiskParams::fua`].
    pub(crate) fn fua(&self) -> bool {
        self.has_flag(bindings::req_flag_bits___REQ_FUA)
    }

    /// Whether a write-zeroes request must keep the range allocated (`REQ_NOUNMAP`).
    pub(crate) fn no_unmap(&self) -> bool {
        self.has_flag(bindings::req_flag_bits___REQ_NOUNMAP)
    }

    /// The request's data, one page-bounded segment at a time.
    pub(crate) fn segments(&self) -> Segments<'_> {
        // SAFETY: as in `sector`; `bio` is NULL or the first bio of the request.
        let bio = unsafe { (*self.raw()).bio };
        let iter = if bio.is_null() {
            bindings::bvec_iter::default()
        } else {
            // SAFETY: `bio` is a valid bio of the request; its iterator is copied by value.
            unsafe { (*bio).bi_iter }
        };
        Segments {
            bio,
            iter,
            _request: PhantomData,
        }
    }

    /// The identity of the request, as [`Operations::timeout`] names it.
    pub(crate) fn id(&self) -> RequestId {
        RequestId(self.raw().addr())
    }

    /// Ends the request with `status`.
    pub(crate) fn end(self, status: Status) {
        let this = ManuallyDrop::new(self);
        // SAFETY: by the type invariant the request is started and not yet ended; `this` is
        // never used again, so it is ended exactly once.
        unsafe { bindings::blk_mq_end_request(this.raw(), status.to_raw()) };
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // A request must never be lost: one the driver forgot to end fails.
        // SAFETY: by the type invariant the request is started and not yet ended.
        unsafe { bindings::blk_mq_end_request(self.raw(), Status::IoError.to_raw()) };
    }
}

/// Requests owned by the driver, chained through their own `rq_next` field (the block layer's
/// singly linked request list), to be ended once a lock is released: keeping one needs no
/// allocation and has no bound. Dropping the list ends what it still holds with `EIO`.
///
/// # Invariants
///
/// `head` is null, or the first of `len` requests chained through `rq_next` in push order,
/// the last being `tail`, whose `rq_next` is null. Each is a request owned by the driver as
/// [`Request`] describes, and this list is its only owner.
pub(crate) struct RequestList {
    head: *mut bindings::request,
    tail: *mut bindings::request,
    len: usize,
}

// SAFETY: the list owns its requests, which may be ended from any thread (see `Request`).
unsafe impl Send for RequestList {}

impl RequestList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
            len: 0,
        }
    }

    /// Adds `rq` at the end of the list.
    pub(crate) fn push(&mut self, rq: Request) {
        let rq = ManuallyDrop::new(rq);
        let raw = rq.raw();
        // SAFETY: the driver owns the started request `raw` (type invariant of `Request`); the
        // block layer uses `rq_next` only for requests on a plug or a completion batch, never
        // for one the driver holds, so the field is ours until the request is ended.
        unsafe { (*raw).__bindgen_anon_1.rq_next = core::ptr::null_mut() };
        if self.tail.is_null() {
            self.head = raw;
        } else {
            // SAFETY: `tail` is the last request of the list, owned by it (type invariant).
            unsafe { (*self.tail).__bindgen_anon_1.rq_next = raw };
        }
        // INVARIANT: `raw` is chained last, its `rq_next` null; ownership moved from `rq`.
        self.tail = raw;
        self.len += 1;
    }

    /// Takes the first request out of the list.
    pub(crate) fn pop(&mut self) -> Option<Request> {
        let ptr = NonNull::new(self.head)?;
        // SAFETY: `head` is the first request of the list, owned by it (type invariant).
        let next = unsafe { (*ptr.as_ptr()).__bindgen_anon_1.rq_next };
        // INVARIANT: the rest of the chain stays as it was; an emptied list has no tail.
        self.head = next;
        if next.is_null() {
            self.tail = core::ptr::null_mut();
        }
        self.len -= 1;
        // INVARIANT: the request is started, not ended, and now owned by the `Request` alone.
        Some(Request { ptr })
    }

    /// Number of requests in the list.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Ends every request in the list with `status`, first pushed first.
    pub(crate) fn end_all(mut self, status: Status) {
        self.end_each(status);
    }

    fn end_each(&mut self, status: Status) {
        while let Some(rq) = self.pop() {
            rq.end(status);
        }
    }
}

impl Drop for RequestList {
    fn drop(&mut self) {
        self.end_each(Status::IoError);
    }
}

/// The identity of a request handed to the driver, to find the [`Request`] it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestId(usize);

/// What blk-mq does with a request whose timer expired ([`Operations::timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeoutAction {
    /// Keep waiting: the timer is armed again for one more interval.
    ResetTimer,
    /// The driver has ended the request (or is ending it).
    Done,
}

/// One piece of a request's data, contained in a single page.
pub(crate) struct Segment<'a> {
    /// The page holding the data.
    pub(crate) page: BorrowedPage<'a>,
    /// Offset of the data within `page`.
    pub(crate) offset: usize,
    /// Length of the data; `offset + len <= PAGE_SIZE`.
    pub(crate) len: usize,
}

/// Iterator over the single-page segments of a request (`rq_for_each_segment`).
pub(crate) struct Segments<'a> {
    bio: *mut bindings::bio,
    iter: bindings::bvec_iter,
    _request: PhantomData<&'a Request>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        loop {
            if self.bio.is_null() {
                return None;
            }
            if self.iter.bi_size == 0 {
                // SAFETY: `bio` is a live bio of the request, owned by the driver with it.
                self.bio = unsafe { (*self.bio).bi_next };
                if !self.bio.is_null() {
                    // SAFETY: as above.
                    self.iter = unsafe { (*self.bio).bi_iter };
                }
                continue;
            }
            let idx = self.iter.bi_idx as usize;
            // SAFETY: while `bi_size` is non-zero, `bi_idx` indexes a valid entry of the bio's
            // vector (the invariant `bvec_iter` maintains).
            let bv = unsafe { *(*self.bio).bi_io_vec.add(idx) };
            let done = compat::bvec_done(&self.iter);
            let in_bvec = (bv.bv_offset + done) as usize;
            let page_offset = in_bvec % PAGE_SIZE;
            let len =
                ((bv.bv_len - done).min(self.iter.bi_size) as usize).min(PAGE_SIZE - page_offset);
            // SAFETY: a bio vector's pages are contiguous `struct page`s covering
            // `bv_offset + bv_len` bytes, so this is within that range.
            let page = unsafe { bv.bv_page.add(in_bvec / PAGE_SIZE) };

            // Advance as `bvec_iter_advance_single` does.
            let len_u32 = len as u32;
            if done + len_u32 == bv.bv_len {
                self.iter.bi_idx += 1;
                compat::set_bvec_done(&mut self.iter, 0);
            } else {
                compat::set_bvec_done(&mut self.iter, done + len_u32);
            }
            self.iter.bi_size -= len_u32;

            return Some(Segment {
                // SAFETY: the page holds the request's data, live while the request is owned,
                // which the lifetime `'a` ties to.
                page: unsafe { BorrowedPage::from_raw(NonNull::new(page)?) },
                offset: page_offset,
                len,
            });
        }
    }
}

/// The callbacks of a disk.
pub(crate) trait Operations: Sized + 'static {
    /// Data shared by the queue and the disk callbacks.
    type QueueData: ForeignOwnable + Send + Sync;

    /// Queues `rq`. Returning it back means the device is busy: blk-mq dispatches it again
    /// later, once the driver has run the queue ([`GenDisk::run_queue`]).
    ///
    /// Runs in atomic context: it must not sleep.
    fn queue_rq(
        data: <Self::QueueData as ForeignOwnable>::Borrowed<'_>,
        rq: Request,
        is_last: bool,
    ) -> Result<(), Request>;

    /// Makes requests queued without `is_last` visible to the device.
    fn commit_rqs(data: <Self::QueueData as ForeignOwnable>::Borrowed<'_>);

    /// The request `id` has been with the driver for another [`DiskParams::timer_interval_ms`].
    /// The driver either ends the [`Request`] it holds for it and returns
    /// [`TimeoutAction::Done`], or returns [`TimeoutAction::ResetTimer`] (also when it does not
    /// hold the request any more: it is being completed). Runs in process context (kblockd).
    fn timeout(
        data: <Self::QueueData as ForeignOwnable>::Borrowed<'_>,
        id: RequestId,
    ) -> TimeoutAction;

    /// The block device is being opened. Called with the disk's open mutex held.
    fn open(data: <Self::QueueData as ForeignOwnable>::Borrowed<'_>) -> Result;

    /// The block device is being closed. Called with the disk's open mutex held.
    fn release(data: <Self::QueueData as ForeignOwnable>::Borrowed<'_>);
}

struct VTable<T: Operations>(PhantomData<T>);

impl<T: Operations> VTable<T> {
    /// # Safety
    ///
    /// Called by blk-mq with a live hardware context of a queue created by [`GenDisk::new`].
    unsafe extern "C" fn queue_rq(
        hctx: *mut bindings::blk_mq_hw_ctx,
        bd: *const bindings::blk_mq_queue_data,
    ) -> bindings::blk_status_t {
        // SAFETY: blk-mq passes a valid `bd` whose `rq` is a request of this queue.
        let (rq, last) = unsafe { ((*bd).rq, (*bd).last) };
        // SAFETY: `rq` is a valid request about to be handed to the driver.
        unsafe { bindings::blk_mq_start_request(rq) };
        // SAFETY: `hctx` is valid; `queuedata` was set by `GenDisk::new` from `into_foreign`
        // and is only released in `free_disk`, after the queue is gone.
        let data = unsafe { T::QueueData::borrow((*(*hctx).queue).queuedata) };
        // SAFETY: blk-mq never passes a NULL request.
        let ptr = unsafe { NonNull::new_unchecked(rq) };
        // INVARIANT: the request is started and owned by the driver from here on.
        let rq = Request { ptr };
        match T::queue_rq(data, rq, last) {
            Ok(()) => bindings::BLK_STS_OK as bindings::blk_status_t,
            Err(busy) => {
                // Hand the request back without ending it; blk-mq keeps and re-dispatches it.
                core::mem::forget(busy);
                // SAFETY: a pure table lookup.
                unsafe { bindings::errno_to_blk_status(ENOMEM.to_errno()) }
            }
        }
    }

    /// # Safety
    ///
    /// As for `queue_rq`.
    unsafe extern "C" fn commit_rqs(hctx: *mut bindings::blk_mq_hw_ctx) {
        // SAFETY: as in `queue_rq`.
        let data = unsafe { T::QueueData::borrow((*(*hctx).queue).queuedata) };
        T::commit_rqs(data);
    }

    /// # Safety
    ///
    /// Called by blk-mq's timeout work with a live, started request of a queue created by
    /// [`GenDisk::new`], on which it holds a reference for the duration of the call.
    unsafe extern "C" fn timeout(rq: *mut bindings::request) -> bindings::blk_eh_timer_return {
        // SAFETY: `rq` is a live request of our queue; `queuedata` is valid as in `queue_rq`
        // (the timeout work is stopped before the queue and its data go).
        let data = unsafe { T::QueueData::borrow((*(*rq).q).queuedata) };
        match T::timeout(data, RequestId(rq.addr())) {
            TimeoutAction::ResetTimer => bindings::blk_eh_timer_return_BLK_EH_RESET_TIMER,
            TimeoutAction::Done => bindings::blk_eh_timer_return_BLK_EH_DONE,
        }
    }

    const MQ_OPS: bindings::blk_mq_ops = bindings::blk_mq_ops {
        queue_rq: Some(Self::queue_rq),
        commit_rqs: Some(Self::commit_rqs),
        timeout: Some(Self::timeout),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// Called by the block layer for a disk created by [`GenDisk::new`].
    unsafe extern "C" fn open(disk: *mut bindings::gendisk, _mode: bindings::blk_mode_t) -> c_int {
        // SAFETY: `private_data` holds the foreign queue data until `free_disk`, which runs
        // only after the last release.
        let data = unsafe { T::QueueData::borrow((*disk).private_data) };
        match T::open(data) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for `open`.
    unsafe extern "C" fn release(disk: *mut bindings::gendisk) {
        // SAFETY: as in `open`.
        let data = unsafe { T::QueueData::borrow((*disk).private_data) };
        T::release(data);
    }

    /// # Safety
    ///
    /// Called once, when the last reference to a disk created by [`GenDisk::new`] is dropped.
    unsafe extern "C" fn free_disk(disk: *mut bindings::gendisk) {
        // SAFETY: `private_data` came from `into_foreign` in `GenDisk::new`; the disk is going
        // away, so no callback can borrow it any more.
        drop(unsafe { T::QueueData::from_foreign((*disk).private_data) });
    }

    const BLOCK_OPS: bindings::block_device_operations = bindings::block_device_operations {
        owner: compat::this_module(),
        open: Some(Self::open),
        release: Some(Self::release),
        free_disk: Some(Self::free_disk),
        ..pin_init::zeroed()
    };
}

/// Parameters of a new disk.
pub(crate) struct DiskParams {
    /// Block major number.
    pub(crate) major: u32,
    /// The disk's only minor number.
    pub(crate) first_minor: u32,
    /// Size in 512-byte sectors.
    pub(crate) capacity_sectors: u64,
    /// Logical block size in bytes.
    pub(crate) logical_block_size: u32,
    /// Physical block size in bytes.
    pub(crate) physical_block_size: u32,
    /// Offset of the first physical block, in bytes.
    pub(crate) alignment_offset: u32,
    /// Most segments in one request.
    pub(crate) max_segments: u16,
    /// Largest segment, in bytes.
    pub(crate) max_segment_size: u32,
    /// Segments may not cross a boundary of this mask plus one.
    pub(crate) seg_boundary_mask: u64,
    /// Buffers must be aligned to this mask plus one.
    pub(crate) dma_alignment: u32,
    /// Largest request, in 512-byte sectors.
    pub(crate) max_hw_sectors: u32,
    /// Tags (requests in flight) of the single hardware queue.
    pub(crate) queue_depth: u32,
    /// `queue_rq` may sleep (`BLK_MQ_F_BLOCKING`): it runs in process context.
    pub(crate) blocking: bool,
    /// Whether the disk is read-only.
    pub(crate) read_only: bool,
    /// A volatile write cache: flush requests reach the driver.
    pub(crate) write_cache: bool,
    /// Forced unit access: writes with `REQ_FUA` reach the driver (needs `write_cache`; without
    /// it the block layer follows each such write with a flush).
    pub(crate) fua: bool,
    /// Largest discard, in 512-byte sectors (`0`: no discard).
    pub(crate) max_discard_sectors: u32,
    /// Discard granularity in bytes.
    pub(crate) discard_granularity: u32,
    /// Offset of the first discard granule, in bytes.
    pub(crate) discard_alignment: u32,
    /// Largest write-zeroes request, in 512-byte sectors (`0`: none).
    pub(crate) max_write_zeroes_sectors: u32,
    /// How often [`Operations::timeout`] is asked about a request still with the driver.
    pub(crate) timer_interval_ms: u32,
}

/// A blk-mq tag set.
#[pin_data(PinnedDrop)]
struct TagSet {
    #[pin]
    inner: Opaque<bindings::blk_mq_tag_set>,
}

impl TagSet {
    fn new(
        ops: &'static bindings::blk_mq_ops,
        depth: u32,
        timeout_jiffies: u32,
        blocking: bool,
    ) -> impl PinInit<Self, Error> {
        let flags = if blocking {
            bindings::BLK_MQ_F_BLOCKING
        } else {
            0
        };
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(|slot: *mut bindings::blk_mq_tag_set| {
                // SAFETY: `slot` is valid for writes; the tag set is fully initialised here
                // before `blk_mq_alloc_tag_set` reads it.
                unsafe {
                    slot.write(bindings::blk_mq_tag_set {
                        ops,
                        nr_hw_queues: 1,
                        nr_maps: 1,
                        queue_depth: depth,
                        timeout: timeout_jiffies,
                        flags,
                        numa_node: bindings::NUMA_NO_NODE,
                        ..pin_init::zeroed()
                    });
                    to_result(bindings::blk_mq_alloc_tag_set(slot))
                }
            }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for TagSet {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: the tag set was allocated by `blk_mq_alloc_tag_set` in `new`, and every queue
        // using it has been torn down (`GenDisk` frees it after `del_gendisk`).
        unsafe { bindings::blk_mq_free_tag_set(self.inner.get()) };
    }
}

/// A live disk with its own tag set and single hardware queue.
///
/// Dropping it deletes the disk (`del_gendisk`), which waits for requests in flight: the driver
/// must have ended or failed all of them first and must fail new ones at once.
///
/// # Invariants
///
/// `disk` points to a gendisk added with `device_add_disk` and not yet deleted, whose queue
/// uses `tag_set` and whose `private_data` and `queuedata` hold one foreign `T::QueueData`.
pub(crate) struct GenDisk<T: Operations> {
    disk: NonNull<bindings::gendisk>,
    tag_set: Pin<KBox<TagSet>>,
    _p: PhantomData<fn(T)>,
}

// SAFETY: a gendisk may be used and deleted from any thread.
unsafe impl<T: Operations> Send for GenDisk<T> {}
// SAFETY: the methods taking `&self` call thread-safe block layer functions.
unsafe impl<T: Operations> Sync for GenDisk<T> {}

impl<T: Operations> GenDisk<T> {
    /// Creates and adds a disk named `name` (no partition scan).
    pub(crate) fn new(
        name: fmt::Arguments<'_>,
        params: &DiskParams,
        data: T::QueueData,
    ) -> Result<Self> {
        let name = CString::try_from_fmt(name)?;
        if name.to_bytes_with_nul().len() > bindings::DISK_NAME_LEN as usize {
            return Err(EINVAL);
        }
        let tag_set = KBox::pin_init(
            TagSet::new(
                &VTable::<T>::MQ_OPS,
                params.queue_depth,
                kernel::time::msecs_to_jiffies(params.timer_interval_ms).max(1) as u32,
                params.blocking,
            ),
            GFP_KERNEL,
        )?;
        let mut lim: bindings::queue_limits = pin_init::zeroed();
        lim.logical_block_size = params.logical_block_size;
        lim.physical_block_size = params.physical_block_size;
        lim.alignment_offset = params.alignment_offset;
        lim.max_hw_sectors = params.max_hw_sectors;
        lim.max_segments = params.max_segments;
        lim.max_segment_size = params.max_segment_size;
        lim.seg_boundary_mask = params.seg_boundary_mask as c_ulong;
        lim.dma_alignment = params.dma_alignment;
        if params.write_cache {
            lim.features |= BLK_FEAT_WRITE_CACHE;
            if params.fua {
                lim.features |= BLK_FEAT_FUA;
            }
        }
        lim.max_hw_discard_sectors = params.max_discard_sectors;
        if params.max_discard_sectors > 0 {
            // One range per request: the ring carries one.
            lim.max_discard_segments = 1;
            lim.discard_granularity = params.discard_granularity;
            lim.discard_alignment = params.discard_alignment;
        }
        lim.max_write_zeroes_sectors = params.max_write_zeroes_sectors;

        let data = data.into_foreign();
        // SAFETY: the tag set is allocated and pinned; `lim` is a valid limits structure; the
        // lock class key is static.
        let disk = unsafe {
            bindings::__blk_mq_alloc_disk(
                tag_set.inner.get(),
                &mut lim,
                data,
                kernel::static_lock_class!().as_ptr(),
            )
        };
        let disk = match kernel::error::from_err_ptr(disk) {
            Ok(disk) => disk,
            Err(e) => {
                // SAFETY: `data` came from `into_foreign` above and was not stored anywhere.
                drop(unsafe { T::QueueData::from_foreign(data) });
                return Err(e);
            }
        };
        // SAFETY: `disk` was just allocated and is not visible to anyone else yet.
        unsafe {
            (*disk).major = params.major as c_int;
            (*disk).first_minor = params.first_minor as c_int;
            (*disk).minors = 1;
            (*disk).fops = &VTable::<T>::BLOCK_OPS;
            (*disk).private_data = data;
            (*disk).flags |= bindings::GENHD_FL_NO_PART as c_int;
            let dst = (*disk).disk_name.as_mut_ptr().cast::<u8>();
            let bytes = name.to_bytes_with_nul();
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
            bindings::set_capacity(disk, params.capacity_sectors);
            bindings::set_disk_ro(disk, params.read_only);
        }
        // SAFETY: the disk is fully set up; NULL parent and groups are allowed.
        let ret = unsafe {
            bindings::device_add_disk(core::ptr::null_mut(), disk, core::ptr::null_mut())
        };
        if ret != 0 {
            // `free_disk` is only called for added disks, so release the data here.
            // SAFETY: the disk was never added; `put_disk` frees it; `data` is ours again.
            unsafe {
                bindings::put_disk(disk);
                drop(T::QueueData::from_foreign(data));
            }
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: the disk was added, with `data` in `private_data` and `queuedata`.
        Ok(Self {
            // SAFETY: `from_err_ptr` succeeded, so `disk` is not NULL.
            disk: unsafe { NonNull::new_unchecked(disk) },
            tag_set,
            _p: PhantomData,
        })
    }

    /// A counted reference to the disk, usable without whatever lock guards `self`.
    pub(crate) fn handle(&self) -> DiskRef {
        // SAFETY: by the type invariant the disk is live; `part0` is its whole-disk block
        // device, whose device is the disk's (`disk_to_dev`). `put_disk` drops the reference.
        unsafe { bindings::get_device(&raw mut (*(*self.disk.as_ptr()).part0).bd_device) };
        DiskRef(self.disk)
    }

    /// Runs the hardware queue, asynchronously: dispatches requests handed back as busy.
    pub(crate) fn run_queue(&self) {
        // SAFETY: by the type invariant the disk and its queue are live.
        unsafe { bindings::blk_mq_run_hw_queues((*self.disk.as_ptr()).queue, true) };
    }
}

impl<T: Operations> Drop for GenDisk<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the disk was added and not deleted. After
        // `del_gendisk` no request reaches the driver; the disk's memory (and the queue data,
        // via `free_disk`) lives until its last opener closes it; the tag set is freed after
        // this function (field drop), once the queue no longer uses it.
        unsafe {
            bindings::del_gendisk(self.disk.as_ptr());
            bindings::put_disk(self.disk.as_ptr());
        }
        let _ = &self.tag_set;
    }
}

/// A counted reference to a disk made by [`GenDisk::new`] ([`GenDisk::handle`]).
///
/// # Invariants
///
/// Holds a reference to the disk's device (so to its queue), dropped with `put_disk`.
pub(crate) struct DiskRef(NonNull<bindings::gendisk>);

// SAFETY: a disk reference may be used and dropped from any thread.
unsafe impl Send for DiskRef {}

impl DiskRef {
    /// Stops advertising discard and/or write-zeroes on the disk's queue. Freezes the queue,
    /// so waits for the requests in flight: call with no lock their completion needs. Harmless
    /// on a disk deleted meanwhile (the reference keeps its queue).
    pub(crate) fn clear_limits(&self, discard: bool, write_zeroes: bool) -> Result {
        // SAFETY: by the type invariant the disk and its queue are live. As
        // `queue_limits_start_update` does: the limits are copied under `limits_lock`, which
        // `queue_limits_commit_update_frozen` releases.
        unsafe {
            let q = (*self.0.as_ptr()).queue;
            bindings::mutex_lock(&raw mut (*q).limits_lock);
            let mut lim = (*q).limits;
            if discard {
                lim.max_hw_discard_sectors = 0;
            }
            if write_zeroes {
                lim.max_write_zeroes_sectors = 0;
            }
            to_result(bindings::queue_limits_commit_update_frozen(q, &mut lim))
        }
    }
}

impl DiskRef {
    /// Sets the disk's size to `sectors` (512-byte units) and, if it changed, tells userspace
    /// (a `RESIZE=1` change uevent). Sleeps (the uevent allocates): call with no spinlock, and
    /// with no lock that reclaim of this disk's dirty pages could need.
    pub(crate) fn set_capacity(&self, sectors: u64) -> bool {
        // SAFETY: by the type invariant the disk is live (or deleted, with its memory kept by
        // the reference); `set_capacity_and_notify` takes the size lock itself and only sends
        // the uevent for a disk still added.
        unsafe { bindings::set_capacity_and_notify(self.0.as_ptr(), sectors) }
    }
}

impl Drop for DiskRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant this object holds a reference to the disk.
        unsafe { bindings::put_disk(self.0.as_ptr()) };
    }
}

/// A dynamically allocated block major number, registered under a name (`/proc/devices`).
///
/// # Invariants
///
/// `major` is registered under `name` with `__register_blkdev`.
pub(crate) struct BlockMajor {
    major: u32,
    name: &'static CStr,
}

impl BlockMajor {
    /// Registers a block major named `name`.
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is static; major 0 asks for a dynamic number; no probe callback.
        let ret = unsafe { bindings::__register_blkdev(0, name.as_char_ptr(), None) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: registered just above.
        Ok(Self {
            major: ret as u32,
            name,
        })
    }

    /// The major number.
    pub(crate) fn major(&self) -> u32 {
        self.major
    }
}

impl Drop for BlockMajor {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the major is registered under `name`.
        unsafe { bindings::unregister_blkdev(self.major, self.name.as_char_ptr()) };
    }
}
