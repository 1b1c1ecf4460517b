// SPDX-License-Identifier: GPL-2.0

//! Memory shared with the ring daemon, and the VMA that maps it.
//!
//! The ring page and all data pages are one zeroed vmalloc area: the kernel reaches it through
//! a stable address, and every page is inserted into the daemon's VMA once, at `mmap` time, so
//! the data path never touches page tables.
//!
//! The daemon can write anything at any time into this memory, so nothing here forms a Rust
//! reference into it: all accesses are raw volatile or atomic operations at offsets computed
//! from bounded values, and every value read is returned by copy for the caller to validate.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h)

use core::mem::ManuallyDrop;

use kernel::{
    bindings,
    mm::virt::{
        VmaNew,
        VmaRef, //
    },
    page::{
        AsPageIter,
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        atomic::{
            atomic_load,
            atomic_store,
            Acquire,
            Relaxed,
            Release, //
        },
        Arc,
        ArcBorrow, //
    },
};

use crate::uapi::{
    Layout,
    RingRangeRequest,
    RingRequest,
    RingResponse,
    RING_ENTRY_SIZE,
    RING_HEADER_SIZE, //
};

const REQ_PROD_OFFSET: usize = 0;
const REQ_EVENT_OFFSET: usize = 4;
const RSP_PROD_OFFSET: usize = 8;
const RSP_EVENT_OFFSET: usize = 12;
/// The ring message byte (V-OXT): written only by the kernel, read by the daemon.
const MESSAGE_OFFSET: usize = 16;

/// The ring pages and the data pages of one ring mapping, in the [`Layout`] its size gives
/// (V-XS's 353 pages; more for `FEAT_LARGE` and `FEAT_DEEP`).
///
/// Which layout the entries and data pages are used in is the caller's (the daemon may agree
/// on less than the mapping has room for); every access is bounds-checked against the area.
///
/// # Invariants
///
/// `area` is a zeroed vmalloc allocation (so page aligned) of `bytes` bytes, at least one page,
/// in `layout`, and `base` its first byte; `area` is only taken out of the `ManuallyDrop` by
/// `drop`. No element of `area` is ever initialised as far as the `VVec` knows (its length
/// stays 0): the bytes are reached through `base` only.
///
/// A `SharedRing` may be dropped in atomic context (the data path holds a reference while it
/// copies write data in `queue_rq`, and may turn out to hold the last one if the daemon unmaps
/// the ring meanwhile): `drop` frees the area with `kvfree_atomic`, which defers the `vfree`.
pub(crate) struct SharedRing {
    area: ManuallyDrop<VVec<u8>>,
    base: *mut u8,
    bytes: usize,
    layout: Layout,
}

// SAFETY: `SharedRing` owns its area exclusively (no thread-local state); moving it to another
// thread and dropping it there is fine.
unsafe impl Send for SharedRing {}

// SAFETY: the area is only accessed through raw volatile, atomic or page-copy operations,
// never through references, so concurrent use from several threads is no more than the
// concurrency userspace already has on the same memory.
unsafe impl Sync for SharedRing {}

impl Drop for SharedRing {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once and `area` is not used afterwards.
        let area = unsafe { ManuallyDrop::take(&mut self.area) };
        let (ptr, _, _) = area.into_raw_parts();
        // SAFETY: `ptr` is the vmalloc allocation that `area` owned (type invariant), released
        // by `into_raw_parts` and used by nobody else: a daemon mapping that may still exist holds
        // references of its own on the pages (`vm_insert_page`). `kvfree_atomic` may be called
        // from any context but NMI.
        unsafe { bindings::kvfree_atomic(ptr.cast()) };
    }
}

impl SharedRing {
    /// Allocates a zeroed area in `layout` (which must be [valid](Layout::is_valid), else
    /// `EINVAL`), with the ring header initialised (both event indices 1).
    pub(crate) fn new(layout: Layout) -> Result<Self> {
        if !layout.is_valid() {
            return Err(EINVAL);
        }
        let bytes = layout.mmap_pages() * PAGE_SIZE;
        let mut area = VVec::<u8>::with_capacity(bytes, GFP_KERNEL | __GFP_ZERO)?;
        let base = area.as_mut_ptr();
        // INVARIANT: a zeroed vmalloc allocation of `bytes`, at least one page (a valid
        // layout has its ring page).
        let ring = Self {
            area: ManuallyDrop::new(area),
            base,
            bytes,
            layout,
        };
        ring.store_u32(REQ_EVENT_OFFSET, 1);
        ring.store_u32(RSP_EVENT_OFFSET, 1);
        Ok(ring)
    }

    fn base(&self) -> *mut u8 {
        self.base
    }

    /// Size of the area (and of the only mapping accepted), in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The layout the area was made for (the mapping's).
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// Where `len` bytes at byte `offset` of the area are, if they are all within it.
    fn at(&self, offset: usize, len: usize) -> Result<*mut u8> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes => {
                // SAFETY: `offset + len <= bytes`, the area's size (type invariant).
                Ok(unsafe { self.base().add(offset) })
            }
            _ => Err(EINVAL),
        }
    }

    fn store_u32(&self, offset: usize, value: u32) {
        debug_assert!(offset % 4 == 0 && offset < PAGE_SIZE);
        // SAFETY: `offset` is a 4-aligned offset within the ring page, part of the live area.
        unsafe { atomic_store(self.base().add(offset).cast::<u32>(), value, Release) };
    }

    /// Makes requests up to (not including) index `req_prod` visible to the daemon.
    ///
    /// The entries must have been written before: the store has release semantics.
    pub(crate) fn publish_requests(&self, req_prod: u32) {
        self.store_u32(REQ_PROD_OFFSET, req_prod);
    }

    /// The daemon's response producer index, read once with acquire semantics.
    pub(crate) fn responses_produced(&self) -> u32 {
        // SAFETY: the offset is 4-aligned within the live ring page.
        unsafe { atomic_load(self.base().add(RSP_PROD_OFFSET).cast::<u32>(), Acquire) }
    }

    /// The daemon's `req_event` (the Xen ring's "notify me from this request index on"), read
    /// once. Any value may be there: it only decides what `poll` reports.
    pub(crate) fn request_event(&self) -> u32 {
        // SAFETY: the offset is 4-aligned within the live ring page.
        unsafe { atomic_load(self.base().add(REQ_EVENT_OFFSET).cast::<u32>(), Relaxed) }
    }

    /// Writes the ring message byte (V-OXT `BLKTAP2_RING_MESSAGE_*`, or 0 for none).
    ///
    /// The daemon reads it after `poll` reported the ring readable; the wake-up that follows
    /// orders this store before that read.
    pub(crate) fn set_message(&self, message: u8) {
        // SAFETY: the offset is within the live ring page; a byte store is never torn.
        unsafe { core::ptr::write_volatile(self.base().add(MESSAGE_OFFSET), message) };
    }

    /// The ring message byte, read once. The daemon may have written anything there: it only
    /// decides what this daemon's own `poll` reports.
    pub(crate) fn message(&self) -> u8 {
        // SAFETY: as in `set_message`.
        unsafe { core::ptr::read_volatile(self.base().add(MESSAGE_OFFSET)) }
    }

    /// The entry of ring index `index` in a ring of `layout.slots` entries (a power of two),
    /// if it lies within the area.
    fn entry(&self, layout: Layout, index: u32) -> Result<*mut u8> {
        let slots = layout.slots.max(1);
        let slot = index as usize % slots;
        self.at(RING_HEADER_SIZE + slot * RING_ENTRY_SIZE, RING_ENTRY_SIZE)
    }

    /// Writes `req` into the entry of ring index `index`, in `layout`.
    pub(crate) fn write_request(&self, layout: Layout, index: u32, req: &RingRequest) -> Result {
        let entry = self.entry(layout, index)?;
        // SAFETY: `entry` is valid for `RING_ENTRY_SIZE` bytes of the area and 8-aligned
        // (64 + k * 112 from a page-aligned base); `RingRequest` is plain data of
        // `RING_ENTRY_SIZE` bytes.
        unsafe { core::ptr::write_volatile(entry.cast::<RingRequest>(), *req) };
        Ok(())
    }

    /// Writes the range request `req` at ring index `index`, in `layout`; the rest of the
    /// entry is zero.
    pub(crate) fn write_range_request(
        &self,
        layout: Layout,
        index: u32,
        req: &RingRangeRequest,
    ) -> Result {
        self.write_request(layout, index, &RingRequest::default())?;
        let entry = self.entry(layout, index)?;
        // SAFETY: as in `write_request`; `RingRangeRequest` is plain data of 32 bytes, less
        // than `RING_ENTRY_SIZE`, with the same (8-byte) alignment.
        unsafe { core::ptr::write_volatile(entry.cast::<RingRangeRequest>(), *req) };
        Ok(())
    }

    /// Copies the response at ring index `index`, in `layout`, out of the shared pages (a
    /// zeroed response, which names no request, if the entry were outside the area).
    pub(crate) fn read_response(&self, layout: Layout, index: u32) -> RingResponse {
        let Ok(entry) = self.entry(layout, index) else {
            return RingResponse {
                id: u64::MAX,
                ..RingResponse::default()
            };
        };
        // SAFETY: as in `write_request`; every bit pattern is a valid `RingResponse`.
        unsafe { core::ptr::read_volatile(entry.cast::<RingResponse>()) }
    }

    /// Where `len` bytes at `offset` of data page `seg` of request `id` are, in `layout`,
    /// which must fit the area.
    fn data(
        &self,
        layout: Layout,
        id: usize,
        seg: usize,
        offset: usize,
        len: usize,
    ) -> Result<*mut u8> {
        if id >= layout.slots
            || seg >= layout.segments
            || offset > PAGE_SIZE
            || len > PAGE_SIZE - offset
        {
            return Err(EINVAL);
        }
        let page = layout.data_page(id, seg);
        self.at(page * PAGE_SIZE + offset, len)
    }

    /// Copies `len` bytes at `src_offset` of `src` into data page `seg` of request `id` at
    /// `offset`, in `layout`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_to_data(
        &self,
        layout: Layout,
        id: usize,
        seg: usize,
        offset: usize,
        src: &Page,
        src_offset: usize,
        len: usize,
    ) -> Result {
        let dst = self.data(layout, id, seg, offset, len)?;
        // SAFETY: `dst` is valid for `len` bytes of the area; the daemon may write them
        // concurrently, which only affects the data copied, as with any user buffer.
        unsafe { src.read_raw(dst, src_offset, len) }
    }

    /// Copies `len` bytes of data page `seg` of request `id` at `offset` into `dst` at
    /// `dst_offset`, in `layout`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_from_data(
        &self,
        layout: Layout,
        id: usize,
        seg: usize,
        offset: usize,
        dst: &Page,
        dst_offset: usize,
        len: usize,
    ) -> Result {
        let src = self.data(layout, id, seg, offset, len)?;
        // SAFETY: as in `copy_to_data`.
        unsafe { dst.write_raw(src, dst_offset, len) }
    }

    /// Maps the whole area into `vma`, which must cover exactly [`Self::bytes`] from file
    /// offset zero with `MAP_SHARED`, and makes `owner` learn about the mapping's end.
    ///
    /// The VMA cannot be copied on fork, expanded, moved, split or made executable, and faults
    /// anywhere in it (there are none while it is intact) raise `SIGBUS`.
    pub(crate) fn map<T: MappingOwner>(
        &mut self,
        vma: &VmaNew,
        owner: Arc<T>,
    ) -> Result<MappingId> {
        let start = vma.start();
        if vma.end() - start != self.bytes() {
            return Err(EINVAL);
        }
        // SAFETY: `vma` is a valid VMA being set up under the mmap lock; reading is fine.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        if pgoff != 0 || vma.flags() & kernel::mm::virt::flags::SHARED == 0 {
            return Err(EINVAL);
        }
        if vma.executable() {
            return Err(EPERM);
        }
        vma.try_clear_mayexec()?;
        vma.set_dontcopy();
        vma.set_dontexpand();
        vma.set_dontdump();
        let mixed = vma.set_mixedmap();
        for (i, page) in self.area.page_iter().enumerate() {
            mixed.vm_insert_page(start + i * PAGE_SIZE, &page)?;
        }
        let id = MappingId::of(vma);
        // Only now, when nothing can fail any more: a failed `mmap` does not call `close`.
        // SAFETY: the VMA is being set up under the mmap write lock; `VmaOps::<T>::OPS` is
        // static; the owner reference is released by `close`.
        unsafe {
            (*vma.as_ptr()).vm_private_data = Arc::into_raw(owner).cast_mut().cast();
            (*vma.as_ptr()).vm_ops = &VmaOps::<T>::OPS;
        }
        Ok(id)
    }
}

/// Identifies one ring mapping: its address space and start address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MappingId {
    mm: usize,
    start: usize,
}

impl MappingId {
    fn of(vma: &VmaRef) -> Self {
        Self {
            mm: core::ptr::from_ref(vma.mm()).addr(),
            start: vma.start(),
        }
    }

    /// The identity of the mapping's address space, comparable with
    /// [`super::task::current_mm_id`].
    pub(crate) fn mm(&self) -> usize {
        self.mm
    }
}

/// The owner of a ring mapping, told when a VMA of it goes away.
pub(crate) trait MappingOwner: Send + Sync + Sized + 'static {
    /// A VMA created by [`SharedRing::map`] (identified by `id`), or a transient copy of it
    /// (with another `id`), is being unmapped. Runs under the mmap write lock.
    fn unmapped(this: ArcBorrow<'_, Self>, id: MappingId);
}

struct VmaOps<T: MappingOwner>(core::marker::PhantomData<T>);

impl<T: MappingOwner> VmaOps<T> {
    /// # Safety
    ///
    /// Called by the mm core for a copy of a VMA set up by [`SharedRing::map`].
    unsafe extern "C" fn open(vma: *mut bindings::vm_area_struct) {
        // SAFETY: the copied `vm_private_data` holds a reference from `Arc::into_raw`; the
        // original VMA keeps it alive while we take one more for the copy.
        let owner = unsafe { ArcBorrow::<T>::from_raw((*vma).vm_private_data.cast()) };
        core::mem::forget(Arc::<T>::from(owner));
    }

    /// # Safety
    ///
    /// Called by the mm core, once, when a VMA set up by [`SharedRing::map`] (or a copy made
    /// through `open`) is unmapped.
    unsafe extern "C" fn close(vma: *mut bindings::vm_area_struct) {
        // SAFETY: `vm_private_data` holds a reference taken in `map` or `open` that this VMA
        // owns and releases now.
        let owner = unsafe { Arc::<T>::from_raw((*vma).vm_private_data.cast()) };
        // SAFETY: the VMA is valid for the duration of the callback.
        let id = MappingId::of(unsafe { VmaRef::from_raw(vma) });
        T::unmapped(owner.as_arc_borrow(), id);
    }

    /// Refuses to split the VMA (partial `munmap`/`mprotect`): the ring is all or nothing.
    ///
    /// # Safety
    ///
    /// Called by the mm core; the arguments are not used.
    unsafe extern "C" fn may_split(_vma: *mut bindings::vm_area_struct, _addr: c_ulong) -> c_int {
        EINVAL.to_errno()
    }

    /// Refuses to move the VMA.
    ///
    /// # Safety
    ///
    /// Called by the mm core; the argument is not used.
    unsafe extern "C" fn mremap(_vma: *mut bindings::vm_area_struct) -> c_int {
        EINVAL.to_errno()
    }

    /// Every page is inserted at `mmap` time; any fault is outside the ring.
    ///
    /// # Safety
    ///
    /// Called by the mm core; the argument is not used.
    unsafe extern "C" fn fault(_vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t
    }

    const OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        open: Some(Self::open),
        close: Some(Self::close),
        may_split: Some(Self::may_split),
        mremap: Some(Self::mremap),
        fault: Some(Self::fault),
        ..pin_init::zeroed()
    };
}
