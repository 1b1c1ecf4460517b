// SPDX-License-Identifier: GPL-2.0

//! Protocol logic of the shared ring, independent of any kernel object so KUnit can test it:
//! slot allocation, segment encoding, response validation, device parameters and disk names.

use core::fmt;

use kernel::{
    page::PAGE_SIZE,
    prelude::*,
    time::{
        Instant,
        Monotonic, //
    }, //
};

use crate::{
    kernel_ext::compat,
    uapi::{
        ring_pages,
        Blktap2Params,
        DeviceInfo,
        Features,
        Layout,
        OxtDeviceInfo,
        RingResponse,
        DEEP_DATA_PAGES_MAX,
        DEEP_RING_SLOTS_MAX,
        DEEP_RING_SLOTS_MIN,
        DEVICE_FLUSH,
        DEVICE_PSZ,
        DEVICE_RO,
        DEVICE_TRIM,
        FEATURES_SIZE_V1,
        FEATURES_VERSION,
        FEAT_DEEP,
        FEAT_DISCARD,
        FEAT_FLUSH,
        FEAT_FUA,
        FEAT_LARGE,
        FEAT_LOW_LATENCY,
        FEAT_WRITE_ZEROES,
        LARGE_SEGMENT_MAX,
        MAX_DISCARD_GRANULARITY,
        MAX_RANGE_SECTORS,
        NAME_MAX,
        OP_DISCARD,
        OP_FLUSH,
        OP_WRITE_ZEROES,
        RING_SIZE,
        RSP_OKAY,
        SEGMENT_MAX, //
    }, //
};

/// Every feature this module implements.
pub(crate) const FEATURES_KNOWN: u64 = FEAT_FLUSH
    | FEAT_DISCARD
    | FEAT_FUA
    | FEAT_WRITE_ZEROES
    | FEAT_LARGE
    | FEAT_LOW_LATENCY
    | FEAT_DEEP;

/// Largest `Features::size` accepted (bytes past ours must be zero).
pub(crate) const FEATURES_SIZE_MAX: u32 = 4096;

/// What a daemon and the module agreed on (`IOCTL_NEGOTIATE`); all zero for a V-XS daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Agreement {
    /// `FEAT_*` bits agreed.
    pub(crate) features: u64,
    /// Discard granularity in bytes (0 without `FEAT_DISCARD`).
    pub(crate) discard_granularity: u32,
    /// Discard alignment in bytes.
    pub(crate) discard_alignment: u32,
    /// Largest discard in 512-byte sectors (0 without `FEAT_DISCARD`).
    pub(crate) max_discard_sectors: u32,
    /// Largest write-zeroes in 512-byte sectors (0 without `FEAT_WRITE_ZEROES`).
    pub(crate) max_write_zeroes_sectors: u32,
    /// Data pages per request (0 without `FEAT_LARGE`).
    pub(crate) max_segments: u32,
    /// Ring entries (0 without `FEAT_DEEP`).
    pub(crate) ring_slots: u32,
}

/// Why a negotiation is refused (always `EINVAL` for the daemon, with this in the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Feature bits this module does not know: the daemon may retry without them.
    Unknown(u64),
    /// Any other bad value, described.
    Bad(&'static str),
}

impl Agreement {
    /// Whether `feature` was agreed.
    pub(crate) fn has(&self, feature: u64) -> bool {
        self.features & feature != 0
    }

    /// Data pages per request: `max_segments` with `FEAT_LARGE`, else V-XS's.
    pub(crate) fn segments(&self) -> usize {
        if self.has(FEAT_LARGE) {
            self.max_segments as usize
        } else {
            SEGMENT_MAX
        }
    }

    /// Ring entries, and so request ids and the disk's tags: `ring_slots` with `FEAT_DEEP`,
    /// else V-XS's.
    pub(crate) fn slots(&self) -> usize {
        if self.has(FEAT_DEEP) {
            self.ring_slots as usize
        } else {
            RING_SIZE
        }
    }

    /// The ring mapping's layout this agreement makes.
    pub(crate) fn layout(&self) -> Layout {
        Layout::new(self.slots(), self.segments())
    }

    /// The agreement as written back to the daemon, with `supported`.
    pub(crate) fn to_features(self, supported: u64) -> Features {
        Features {
            size: FEATURES_SIZE_V1,
            version: FEATURES_VERSION,
            features: self.features,
            supported,
            discard_granularity: self.discard_granularity,
            discard_alignment: self.discard_alignment,
            max_discard_sectors: self.max_discard_sectors,
            max_write_zeroes_sectors: self.max_write_zeroes_sectors,
            max_segments: self.max_segments,
            ring_slots: self.ring_slots,
            reserved: [0; 2],
        }
    }

    /// Removes `features` (switched off by the administrator), with their limits.
    pub(crate) fn without(mut self, features: u64) -> Self {
        self.features &= !features;
        if features & FEAT_FLUSH != 0 {
            self.features &= !FEAT_FUA;
        }
        if !self.has(FEAT_DISCARD) {
            self.discard_granularity = 0;
            self.discard_alignment = 0;
            self.max_discard_sectors = 0;
        }
        if !self.has(FEAT_WRITE_ZEROES) {
            self.max_write_zeroes_sectors = 0;
        }
        if !self.has(FEAT_LARGE) {
            self.max_segments = 0;
        }
        if !self.has(FEAT_DEEP) {
            self.ring_slots = 0;
        }
        self
    }

    /// Checks a negotiation request (whose `size` the caller checked, and whose bytes past ours
    /// it found zero) and agrees on `wanted & supported`.
    pub(crate) fn negotiate(req: &Features, supported: u64) -> Result<Self, Refusal> {
        if req.version != FEATURES_VERSION {
            return Err(Refusal::Bad("unknown version"));
        }
        let unknown = req.features & !FEATURES_KNOWN;
        if unknown != 0 {
            return Err(Refusal::Unknown(unknown));
        }
        let wanted = req.features;
        if wanted & FEAT_FUA != 0 && wanted & FEAT_FLUSH == 0 {
            return Err(Refusal::Bad("FUA without FLUSH"));
        }
        if req.reserved != [0; 2] {
            return Err(Refusal::Bad("reserved words are not zero"));
        }
        let range = |n: u32| (1..=MAX_RANGE_SECTORS).contains(&n);
        if wanted & FEAT_DISCARD != 0 {
            let g = req.discard_granularity;
            if !g.is_power_of_two() || !(512..=MAX_DISCARD_GRANULARITY).contains(&g) {
                return Err(Refusal::Bad("discard granularity"));
            }
            if req.discard_alignment % 512 != 0 || req.discard_alignment >= g {
                return Err(Refusal::Bad("discard alignment"));
            }
            if !range(req.max_discard_sectors)
                || u64::from(req.max_discard_sectors) * 512 < u64::from(g)
            {
                return Err(Refusal::Bad("max discard sectors"));
            }
        } else if req.discard_granularity != 0
            || req.discard_alignment != 0
            || req.max_discard_sectors != 0
        {
            return Err(Refusal::Bad("discard limits without DISCARD"));
        }
        if wanted & FEAT_WRITE_ZEROES != 0 {
            if !range(req.max_write_zeroes_sectors) {
                return Err(Refusal::Bad("max write-zeroes sectors"));
            }
        } else if req.max_write_zeroes_sectors != 0 {
            return Err(Refusal::Bad("write-zeroes limit without WRITE_ZEROES"));
        }
        if wanted & FEAT_LARGE != 0 {
            let n = req.max_segments as usize;
            if n <= SEGMENT_MAX || n > LARGE_SEGMENT_MAX {
                return Err(Refusal::Bad("max segments"));
            }
        } else if req.max_segments != 0 {
            return Err(Refusal::Bad("max segments without LARGE"));
        }
        if wanted & FEAT_DEEP != 0 {
            let n = req.ring_slots as usize;
            if !n.is_power_of_two() || !(DEEP_RING_SLOTS_MIN..=DEEP_RING_SLOTS_MAX).contains(&n) {
                return Err(Refusal::Bad("ring slots"));
            }
            let segments = if wanted & FEAT_LARGE != 0 {
                req.max_segments as usize
            } else {
                SEGMENT_MAX
            };
            if n * segments > DEEP_DATA_PAGES_MAX {
                return Err(Refusal::Bad(
                    "ring slots times segments: too many data pages",
                ));
            }
        } else if req.ring_slots != 0 {
            return Err(Refusal::Bad("ring slots without DEEP"));
        }
        let agreed = Self {
            features: wanted,
            discard_granularity: req.discard_granularity,
            discard_alignment: req.discard_alignment,
            max_discard_sectors: req.max_discard_sectors,
            max_write_zeroes_sectors: req.max_write_zeroes_sectors,
            max_segments: req.max_segments,
            ring_slots: req.ring_slots,
        };
        Ok(agreed.without(!supported))
    }
}

/// The layout of a ring mapping of `bytes` bytes (see [`Layout::is_valid`]); `None` for a
/// size no valid layout has.
///
/// No size has two layouts: a ring of `n` entries takes `ring_pages(n)` pages, and for the
/// slot counts allowed (powers of two from `RING_SIZE` up) `ring_pages(n) mod m` differs from
/// `ring_pages(m) mod m` whenever `m < n` (checked by KUnit), so `mmap_pages` cannot agree.
pub(crate) fn mapping_layout(bytes: usize) -> Option<Layout> {
    if bytes % PAGE_SIZE != 0 {
        return None;
    }
    let pages = bytes / PAGE_SIZE;
    let mut slots = RING_SIZE;
    while slots <= DEEP_RING_SLOTS_MAX {
        let data = pages.checked_sub(ring_pages(slots))?;
        if data % slots == 0 {
            let layout = Layout::new(slots, data / slots);
            if layout.is_valid() {
                return Some(layout);
            }
        }
        slots *= 2;
    }
    None
}

/// The feature an operation needs (`0` for READ and WRITE).
pub(crate) fn feature_of(operation: u8) -> u64 {
    match operation {
        OP_FLUSH => FEAT_FLUSH,
        OP_DISCARD => FEAT_DISCARD,
        OP_WRITE_ZEROES => FEAT_WRITE_ZEROES,
        _ => 0,
    }
}

/// Sector size of the ring protocol: segments and sector numbers count 512-byte units.
pub(crate) const SECTOR_SIZE: usize = 512;

/// A request in the driver's hands: queued for the daemon, sent to it, or held for the next one.
pub(crate) struct Pending<R> {
    /// The block request (or, in tests, a stand-in).
    pub(crate) rq: R,
    /// The operation sent (`OP_READ` or `OP_WRITE`).
    pub(crate) operation: u8,
    /// When the request reached the driver: its age for the request timeout, which bounds
    /// the whole wait (held and reissued included); held requests are reissued oldest first.
    pub(crate) since: Instant<Monotonic>,
    /// The address space of the task that queued it, if that was a user task (see
    /// [`crate::kernel_ext::task::current_mm_id`]): a dying daemon's own I/O is never held for
    /// its successor, since the daemon cannot finish exiting while it waits for it.
    pub(crate) submitter: Option<usize>,
    /// The data layout it was last sent in (V-XS's segments; `FEAT_LARGE`'s packed data; the
    /// pages of `FEAT_DEEP`'s ids). Read data is copied back by it.
    pub(crate) layout: Layout,
}

impl<R> Pending<R> {
    /// A request arriving now, queued by no known user task.
    pub(crate) fn new(rq: R, operation: u8) -> Self {
        Self {
            rq,
            operation,
            since: Instant::now(),
            submitter: None,
            layout: Layout::VXS,
        }
    }
}

/// A table of `n` empty places (`kvmalloc`: a deep ring's is too big for `kmalloc` to be
/// sure of), allocated where sleeping is allowed.
pub(crate) fn empty_table<T>(n: usize) -> Result<KVVec<Option<T>>> {
    let mut table = KVVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        table.push(None, GFP_KERNEL)?;
    }
    Ok(table)
}

/// A set of ids below a bound fixed at allocation.
struct IdSet {
    words: KVec<u64>,
}

impl IdSet {
    /// An empty set of ids below `n`.
    fn new(n: usize) -> Result<Self> {
        Ok(Self {
            words: KVec::from_elem(0, n.div_ceil(64), GFP_KERNEL)?,
        })
    }

    fn contains(&self, id: usize) -> bool {
        self.words
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn insert(&mut self, id: usize) {
        if let Some(w) = self.words.get_mut(id / 64) {
            *w |= 1 << (id % 64);
        }
    }

    fn remove(&mut self, id: usize) {
        if let Some(w) = self.words.get_mut(id / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// The lowest id not in the set, if it is below `limit`.
    fn first_absent(&self, limit: usize) -> Option<usize> {
        for (k, w) in self.words.iter().enumerate() {
            if *w != u64::MAX {
                let id = k * 64 + w.trailing_ones() as usize;
                return (id < limit).then_some(id);
            }
        }
        None
    }

    /// The lowest id in the set, if any.
    fn first(&self) -> Option<usize> {
        let (k, w) = self.words.iter().enumerate().find(|(_, w)| **w != 0)?;
        Some(k * 64 + w.trailing_zeros() as usize)
    }
}

/// The ring's request ids: id `i` owns the data pages [`Layout::data_page`] gives.
///
/// The table has room for the ids of the ring's mapping (`capacity`, allocated at `mmap`) and
/// hands out those below `limit`: the ring size its daemon agreed on (V-XS's 32 until then).
///
/// An id stays reserved from [`Slots::insert`] until [`Slots::take`], or from
/// [`Slots::insert`] through [`Slots::begin_complete`] until [`Slots::end_complete`]: while a
/// completion copies data out of its pages, the id cannot be given to a new request.
///
/// A request is first [queued](Slots::queue): it holds its id but the daemon has not been sent
/// it, so responses naming it find nothing. [`Slots::take_queued`] takes it out for sending,
/// keeping the id reserved while its write data is copied into its pages, until
/// [`Slots::insert`] records it as sent or [`Slots::end_complete`] gives the id up.
///
/// A sent request failed by the kernel before the daemon answered it (timeout, abort, dying
/// daemon) is [abandoned](Slots::abandon): its id stays reserved, so that a late response can
/// never complete a new request under the same id, until the daemon answers it
/// ([`Verdict::Late`], [`Slots::release`]) or the ring goes.
///
/// # Invariants
///
/// `used`, `queued` and `abandoned` hold ids below `slots.len()`, and `limit <= slots.len()`.
/// `used` holds `i` whenever `slots[i]` is `Some` (and also while id `i` completes, is being
/// sent or is abandoned). `queued` holds `i` only if `slots[i]` is `Some`. `abandoned` holds `i`
/// only if `slots[i]` is `None` and `used` holds `i`.
pub(crate) struct Slots<R> {
    slots: KVVec<Option<Pending<R>>>,
    limit: usize,
    used: IdSet,
    queued: IdSet,
    abandoned: IdSet,
}

impl<R> Slots<R> {
    /// An empty table with room for `capacity` ids, handing out V-XS's 32 (or fewer).
    pub(crate) fn new(capacity: usize) -> Result<Self> {
        Ok(Self {
            slots: empty_table(capacity)?,
            limit: capacity.min(RING_SIZE),
            used: IdSet::new(capacity)?,
            queued: IdSet::new(capacity)?,
            abandoned: IdSet::new(capacity)?,
        })
    }

    /// Hands out ids below `limit` from now on (at most the table's room).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        // INVARIANT: clamped to the room.
        self.limit = limit.min(self.slots.len());
    }

    /// The ids handed out: the ring size the daemon agreed on. Only the KUnit tests ask.
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The lowest free id, if any.
    pub(crate) fn free_id(&self) -> Option<usize> {
        self.used.first_absent(self.limit)
    }

    /// Queues `pending`, not sent yet, under the free id `id`.
    pub(crate) fn queue(&mut self, id: usize, pending: Pending<R>) {
        if id >= self.slots.len() {
            return;
        }
        self.insert(id, pending);
        // INVARIANT: the slot was just filled.
        self.queued.insert(id);
    }

    /// Whether any request is queued.
    pub(crate) fn has_queued(&self) -> bool {
        self.queued.first().is_some()
    }

    /// Number of queued requests.
    pub(crate) fn queued_count(&self) -> u32 {
        self.queued.count()
    }

    /// Takes the queued request with the lowest id out for sending, with its id; the id stays
    /// reserved.
    pub(crate) fn take_first_queued(&mut self) -> Option<(usize, Pending<R>)> {
        let id = self.queued.first()?;
        Some((id, self.take_queued(id)?))
    }

    /// Takes the queued request `id` out for sending; the id stays reserved.
    pub(crate) fn take_queued(&mut self, id: usize) -> Option<Pending<R>> {
        if !self.queued.contains(id) {
            return None;
        }
        // INVARIANT: the id leaves `queued` with the request; `used` keeps it.
        self.queued.remove(id);
        self.slots.get_mut(id)?.take()
    }

    /// Records `pending`, sent, under the free (or reserved) id `id`.
    pub(crate) fn insert(&mut self, id: usize, pending: Pending<R>) {
        debug_assert!(self.slots.get(id).is_some_and(|s| s.is_none()));
        if let Some(slot) = self.slots.get_mut(id) {
            *slot = Some(pending);
            // INVARIANT: id and slot set together.
            self.used.insert(id);
        }
    }

    /// The operation of the request sent under `id`, if one is.
    pub(crate) fn operation(&self, id: usize) -> Option<u8> {
        if self.queued.contains(id) {
            return None;
        }
        self.slots.get(id)?.as_ref().map(|p| p.operation)
    }

    /// Removes and returns the request (sent or queued) under `id`, freeing the id.
    pub(crate) fn take(&mut self, id: usize) -> Option<Pending<R>> {
        let pending = self.slots.get_mut(id)?.take()?;
        // INVARIANT: ids and slot cleared together.
        self.used.remove(id);
        self.queued.remove(id);
        Some(pending)
    }

    /// Removes and returns the request sent under `id`, keeping the id reserved until
    /// [`Slots::end_complete`]. A second response for `id` meanwhile finds no request.
    pub(crate) fn begin_complete(&mut self, id: usize) -> Option<Pending<R>> {
        self.operation(id)?;
        // INVARIANT: `used` keeps the id; the request was not queued.
        self.slots.get_mut(id)?.take()
    }

    /// Frees id `id` after [`Slots::begin_complete`] or [`Slots::take_queued`].
    pub(crate) fn end_complete(&mut self, id: usize) {
        if self.slots.get(id).is_some_and(|s| s.is_none()) {
            self.used.remove(id);
        }
    }

    /// Number of reserved ids (pending requests, and abandoned ones the daemon still owes).
    /// Only the KUnit tests ask.
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn count(&self) -> u32 {
        self.used.count()
    }

    /// Number of ids that still hold, or are completing, a block request (not abandoned).
    pub(crate) fn live(&self) -> u32 {
        self.used.count() - self.abandoned.count()
    }

    /// Number of abandoned ids.
    pub(crate) fn abandoned(&self) -> u32 {
        self.abandoned.count()
    }

    /// The id of the request (sent or queued) for which `pred` holds, if any.
    pub(crate) fn find(&self, pred: impl Fn(&R) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|p| pred(&p.rq)))
    }

    /// The request (sent or queued) under `id`, if any.
    pub(crate) fn get(&self, id: usize) -> Option<&Pending<R>> {
        self.slots.get(id)?.as_ref()
    }

    /// Whether the request under `id` was sent to the daemon (not only queued).
    pub(crate) fn is_sent(&self, id: usize) -> bool {
        self.operation(id).is_some()
    }

    /// Takes the request under `id` out to fail it: a queued one frees its id (the daemon never
    /// saw it); a sent one leaves the id reserved and abandoned until the daemon answers it.
    pub(crate) fn abandon(&mut self, id: usize) -> Option<Pending<R>> {
        self.get(id)?;
        if self.queued.contains(id) {
            return self.take(id);
        }
        // INVARIANT: the slot is emptied, `used` keeps the id, `abandoned` gets it.
        self.abandoned.insert(id);
        self.slots.get_mut(id)?.take()
    }

    /// Whether `id` is abandoned.
    pub(crate) fn is_abandoned(&self, id: usize) -> bool {
        self.abandoned.contains(id)
    }

    /// Frees the abandoned id `id` (the daemon answered it late).
    pub(crate) fn release(&mut self, id: usize) {
        if self.is_abandoned(id) {
            // INVARIANT: both sets lose the id; the slot is already `None`.
            self.abandoned.remove(id);
            self.used.remove(id);
        }
    }

    /// Ids of pending requests, lowest first.
    pub(crate) fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.is_some().then_some(i))
    }

    /// Room of the table: every id that may hold a request.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// Encodes a segment at `offset` of length `len` within a page as `(first_sect, last_sect)`.
///
/// The queue limits make every segment 512-byte aligned and within one page; anything else is
/// refused rather than sent.
pub(crate) fn segment_sectors(offset: usize, len: usize) -> Result<(u8, u8)> {
    if len == 0 || offset % SECTOR_SIZE != 0 || len % SECTOR_SIZE != 0 || offset + len > PAGE_SIZE {
        return Err(EINVAL);
    }
    let first = offset / SECTOR_SIZE;
    let last = first + len / SECTOR_SIZE - 1;
    Ok((first as u8, last as u8))
}

/// Number of responses to consume, from the kernel's `rsp_cons` and the daemon's `rsp_prod`.
///
/// A correct daemon never has more unconsumed responses than the ring has entries (`slots`);
/// a larger distance (including a `rsp_prod` behind `rsp_cons`) is a corrupt index and yields
/// `None`.
pub(crate) fn responses_to_consume(rsp_cons: u32, rsp_prod: u32, slots: usize) -> Option<u32> {
    let n = rsp_prod.wrapping_sub(rsp_cons);
    (n as usize <= slots).then_some(n)
}

/// What a response from the daemon means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Completes request `id`, successfully or not.
    Complete {
        /// The request id.
        id: usize,
        /// Whether the daemon reported success.
        ok: bool,
    },
    /// Completes request `id` with an error: the operation does not match the request's.
    OpMismatch {
        /// The request id.
        id: usize,
    },
    /// Answers request `id`, which the kernel failed already (abandoned): frees the id.
    Late {
        /// The request id.
        id: usize,
    },
    /// Refers to no pending request: ignored.
    Invalid,
}

/// Judges `rsp` against the pending requests.
pub(crate) fn judge_response<R>(slots: &Slots<R>, rsp: &RingResponse) -> Verdict {
    let Ok(id) = usize::try_from(rsp.id) else {
        return Verdict::Invalid;
    };
    if slots.is_abandoned(id) {
        return Verdict::Late { id };
    }
    match slots.operation(id) {
        None => Verdict::Invalid,
        Some(op) if op != rsp.operation => Verdict::OpMismatch { id },
        Some(_) => Verdict::Complete {
            id,
            ok: rsp.status == RSP_OKAY,
        },
    }
}

/// Validated parameters of a block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceConfig {
    /// Size in 512-byte sectors.
    pub(crate) capacity: u64,
    /// Logical block size.
    pub(crate) logical_block_size: u32,
    /// Physical block size.
    pub(crate) physical_block_size: u32,
    /// Offset of the first physical block, in bytes (V-OXT's `phys_block_offset`; else 0).
    pub(crate) alignment_offset: u32,
    /// Read-only disk.
    pub(crate) read_only: bool,
    /// Features beyond V-XS agreed by the daemon that made the disk.
    pub(crate) agreement: Agreement,
}

impl DeviceConfig {
    /// Validates a `CREATE_DEVICE` argument as the V-XS driver does.
    pub(crate) fn from_info(info: &DeviceInfo) -> Result<Self> {
        let lbs = info.sector_size;
        let pbs = info.physical_sector_size;
        if info.capacity == 0
            || !lbs.is_power_of_two()
            || !(512..=4096).contains(&lbs)
            || !pbs.is_power_of_two()
            || pbs < 512
            || info.capacity > u64::MAX >> lbs.trailing_zeros()
        {
            return Err(EINVAL);
        }
        Ok(Self {
            capacity: info.capacity,
            logical_block_size: lbs,
            // The block layer requires physical >= logical; V-XS does not check it.
            physical_block_size: pbs.max(lbs),
            alignment_offset: 0,
            read_only: info.flags & DEVICE_RO != 0,
            agreement: Agreement::default(),
        })
    }

    /// Validates a V-OXT `CREATE_DEVICE` argument (the fields its flags do not select are
    /// ignored) as V-OXT does, with V-XS's bounds on the logical block size and the capacity.
    /// Its features become the disk's agreement: `DEVICE_FLUSH` is `FEAT_FLUSH` (no FUA),
    /// `DEVICE_TRIM` is `FEAT_DISCARD` with the trim size and offset as granularity and
    /// alignment. On refusal (`EINVAL` for the daemon), what is wrong, for the log.
    pub(crate) fn from_oxt(info: &OxtDeviceInfo) -> Result<Self, &'static str> {
        let lbs = info.sector_size;
        if !lbs.is_power_of_two() || !(512..=4096).contains(&lbs) {
            return Err("logical block size");
        }
        if info.capacity == 0 || info.capacity > u64::MAX >> lbs.trailing_zeros() {
            return Err("capacity");
        }
        // A block size at least the logical one, and an offset of whole logical blocks inside
        // one block.
        let geometry = |size: u32, offset: u32| {
            size.is_power_of_two() && size >= lbs && offset % lbs == 0 && offset < size
        };
        let (pbs, offset) = if info.flags & DEVICE_PSZ != 0 {
            if !geometry(info.phys_block_size, info.phys_block_offset) {
                return Err("physical block size or offset");
            }
            (info.phys_block_size, info.phys_block_offset)
        } else {
            (lbs, 0)
        };
        let mut agreement = Agreement::default();
        if info.flags & DEVICE_FLUSH != 0 {
            agreement.features |= FEAT_FLUSH;
        }
        if info.flags & DEVICE_TRIM != 0 {
            let (g, a) = (info.trim_block_size, info.trim_block_offset);
            if !geometry(g, a) || g > MAX_DISCARD_GRANULARITY {
                return Err("trim block size or offset");
            }
            agreement.features |= FEAT_DISCARD;
            agreement.discard_granularity = g;
            agreement.discard_alignment = a;
            agreement.max_discard_sectors = MAX_RANGE_SECTORS;
        }
        Ok(Self {
            capacity: info.capacity,
            logical_block_size: lbs,
            physical_block_size: pbs,
            alignment_offset: offset,
            read_only: info.flags & DEVICE_RO != 0,
            agreement,
        })
    }

    /// Validates a `CREATE_DEVICE_COMPAT` argument: one size for logical and physical blocks.
    pub(crate) fn from_params(params: &Blktap2Params) -> Result<Self> {
        let size = u32::try_from(params.sector_size).map_err(|_| EINVAL)?;
        Self::from_info(&DeviceInfo {
            capacity: params.capacity,
            sector_size: size,
            physical_sector_size: size,
            ..DeviceInfo::default()
        })
    }
}

/// The `OxtDeviceInfo::flags` this module serves, written back to the daemon masked with this.
pub(crate) const OXT_FLAGS_KNOWN: u64 = DEVICE_RO | DEVICE_PSZ | DEVICE_FLUSH | DEVICE_TRIM;

/// Bytes of a `CREATE_DEVICE` argument read first: up to and including the flags, which both
/// layouts have at offset 16.
pub(crate) const CREATE_HEAD_SIZE: usize = 24;

/// Whether a `CREATE_DEVICE` argument whose first [`CREATE_HEAD_SIZE`] bytes are `head` is in
/// V-OXT's 40-byte layout: the word at offset 12, V-XS's `physical_sector_size`, which V-XS
/// requires to be a power of two of at least 512, is V-OXT's zero padding.
pub(crate) fn is_oxt_layout(head: &[u8; CREATE_HEAD_SIZE]) -> bool {
    head[12..16] == [0; 4]
}

/// Bytes of a V-OXT `CREATE_DEVICE` argument the module reads, for `flags`: the physical
/// block fields only with `DEVICE_PSZ`, the trim fields (after them) only with `DEVICE_TRIM`.
pub(crate) fn oxt_len(flags: u64) -> usize {
    if flags & DEVICE_TRIM != 0 {
        40
    } else if flags & DEVICE_PSZ != 0 {
        32
    } else {
        CREATE_HEAD_SIZE
    }
}

/// A V-OXT `CREATE_DEVICE` argument from the bytes read (`oxt_len` of them; the rest zero).
pub(crate) fn oxt_info(bytes: &[u8; 40]) -> OxtDeviceInfo {
    let u32_at = |o: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[o..o + 4]);
        u32::from_ne_bytes(b)
    };
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_ne_bytes(b)
    };
    OxtDeviceInfo {
        capacity: u64_at(0),
        sector_size: u32_at(8),
        pad: u32_at(12),
        flags: u64_at(16),
        phys_block_size: u32_at(24),
        phys_block_offset: u32_at(28),
        trim_block_size: u32_at(32),
        trim_block_offset: u32_at(36),
    }
}

/// The name carried by a `CREATE_DEVICE_COMPAT` argument: up to the first NUL, at most
/// `NAME_MAX - 1` bytes.
pub(crate) fn params_name(params: &Blktap2Params) -> &[u8] {
    let len = params
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(NAME_MAX - 1);
    &params.name[..len.min(NAME_MAX - 1)]
}

/// Checks a tap name (sysfs `name` store, `CREATE_DEVICE_COMPAT`) and returns the bytes to
/// store: one trailing newline (what `echo` writes) is dropped; any other control character
/// (below 0x20, or 0x7f, NUL included) is `EINVAL`, because the name is printed as one line of
/// the class `devices` attribute, which tap-ctl and the storage manager parse as "minor name"
/// lines; `ENAMETOOLONG` from `NAME_MAX` bytes on.
pub(crate) fn checked_name(name: &[u8]) -> Result<&[u8]> {
    let name = name.strip_suffix(b"\n").unwrap_or(name);
    if name.len() >= NAME_MAX {
        return Err(compat::enametoolong());
    }
    if name.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(EINVAL);
    }
    Ok(name)
}

/// The name of the disk of tap `minor`: `td` and base-26 letters (`tda`, `tdz`, `tdaa`, ...).
#[derive(Clone, Copy)]
pub(crate) struct DiskName {
    buf: [u8; 5],
    len: usize,
}

impl DiskName {
    /// The disk name of `minor` (at most three letters, enough for 18278 minors).
    pub(crate) fn new(minor: u32) -> Self {
        let m = minor as usize;
        let mut buf = *b"td\0\0\0";
        let len = if m < 26 {
            buf[2] = b'a' + m as u8;
            3
        } else if m < 26 * 27 {
            buf[2] = b'a' + (m / 26 - 1) as u8;
            buf[3] = b'a' + (m % 26) as u8;
            4
        } else {
            let hi = m / 26 - 1;
            buf[2] = b'a' + (hi / 26 - 1) as u8;
            buf[3] = b'a' + (hi % 26) as u8;
            buf[4] = b'a' + (m % 26) as u8;
            5
        };
        Self { buf, len }
    }

    /// The name's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl kernel::fmt::Display for DiskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DiskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            fmt::Write::write_char(f, char::from(b))?;
        }
        Ok(())
    }
}

#[kunit_tests(blktap_ring)]
mod tests {
    use super::*;
    use crate::uapi::{
        OP_READ,
        OP_WRITE, //
    };

    #[test]
    fn abandoned_ids_stay_reserved_until_answered() {
        let mut slots: Slots<u32> = Slots::new(RING_SIZE).unwrap();
        slots.insert(0, Pending::new(10, OP_READ));
        slots.queue(1, Pending::new(11, OP_READ));
        assert_eq!(slots.find(|&r| r == 11), Some(1));
        assert!(slots.is_sent(0) && !slots.is_sent(1));
        // A queued request frees its id; a sent one keeps it, abandoned.
        assert_eq!(slots.abandon(1).map(|p| p.rq), Some(11));
        assert_eq!(slots.abandon(0).map(|p| p.rq), Some(10));
        assert_eq!(slots.abandon(0).map(|p| p.rq), None);
        assert_eq!((slots.count(), slots.live(), slots.abandoned()), (1, 0, 1));
        assert_eq!(slots.free_id(), Some(1));
        let rsp = RingResponse {
            id: 0,
            operation: OP_READ,
            status: RSP_OKAY,
            ..RingResponse::default()
        };
        assert_eq!(judge_response(&slots, &rsp), Verdict::Late { id: 0 });
        slots.release(0);
        assert_eq!((slots.count(), slots.abandoned()), (0, 0));
        assert_eq!(judge_response(&slots, &rsp), Verdict::Invalid);
        assert_eq!(slots.free_id(), Some(0));
    }

    #[test]
    fn names_with_control_characters_are_refused() {
        assert_eq!(checked_name(b"vbd-3-51712"), Ok(&b"vbd-3-51712"[..]));
        assert_eq!(checked_name(b"vbd\n"), Ok(&b"vbd"[..]));
        assert_eq!(checked_name(b""), Ok(&b""[..]));
        assert_eq!(checked_name(b"a b/c:d"), Ok(&b"a b/c:d"[..]));
        assert_eq!(checked_name(b"1 x\n2 forged"), Err(EINVAL));
        assert_eq!(checked_name(b"x\n\n"), Err(EINVAL));
        assert_eq!(checked_name(b"tab\there"), Err(EINVAL));
        assert_eq!(checked_name(b"cr\r"), Err(EINVAL));
        assert_eq!(checked_name(b"del\x7f"), Err(EINVAL));
        assert_eq!(checked_name(b"nul\0x"), Err(EINVAL));
        assert_eq!(
            checked_name(&[b'a'; NAME_MAX - 1]).map(<[u8]>::len),
            Ok(NAME_MAX - 1)
        );
        assert_eq!(checked_name(&[b'a'; NAME_MAX]), Err(compat::enametoolong()));
    }

    #[test]
    fn slots_lowest_free_first() {
        let mut s = Slots::<u32>::new(RING_SIZE).unwrap();
        for i in 0..RING_SIZE {
            assert_eq!(s.free_id(), Some(i));
            s.insert(i, Pending::new(i as u32, OP_READ));
        }
        assert_eq!(s.free_id(), None);
        assert_eq!(s.count(), 32);
        assert_eq!(s.take(5).map(|p| p.rq), Some(5));
        assert!(s.take(5).is_none());
        assert_eq!(s.free_id(), Some(5));
        assert_eq!(s.ids().count(), 31);
        assert!(s.take(RING_SIZE).is_none());
    }

    #[test]
    fn slots_reserved_while_completing() {
        let mut s = Slots::<u32>::new(RING_SIZE).unwrap();
        s.insert(0, Pending::new(7, OP_READ));
        assert_eq!(s.begin_complete(0).map(|p| p.rq), Some(7));
        // A duplicate response finds nothing, and the id is not reused yet.
        assert!(s.operation(0).is_none());
        assert!(s.begin_complete(0).is_none());
        assert_eq!(s.free_id(), Some(1));
        assert_eq!(s.count(), 1);
        s.end_complete(0);
        assert_eq!(s.free_id(), Some(0));
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn slots_queued_then_sent() {
        let mut s = Slots::<u32>::new(RING_SIZE).unwrap();
        s.queue(0, Pending::new(9, OP_WRITE));
        // Not sent yet: responses find nothing.
        assert_eq!(s.queued_count(), 1);
        assert!(s.operation(0).is_none());
        assert!(s.begin_complete(0).is_none());
        assert_eq!(s.free_id(), Some(1));
        let p = s.take_queued(0).unwrap();
        assert_eq!(p.rq, 9);
        assert!(s.take_queued(0).is_none());
        assert_eq!(s.queued_count(), 0);
        // Reserved while its data is copied.
        assert_eq!(s.free_id(), Some(1));
        assert_eq!(s.count(), 1);
        s.insert(0, Pending::new(9, OP_WRITE));
        assert_eq!(s.operation(0), Some(OP_WRITE));
        assert_eq!(s.take(0).map(|p| p.rq), Some(9));
        s.queue(0, Pending::new(10, OP_READ));
        assert!(s.take_queued(0).is_some());
        s.end_complete(0);
        assert_eq!(s.free_id(), Some(0));
        assert_eq!(s.count(), 0);
        // Teardown takes queued requests too.
        s.queue(3, Pending::new(11, OP_READ));
        assert_eq!(s.take(3).map(|p| p.rq), Some(11));
        assert_eq!((s.queued_count(), s.count()), (0, 0));
    }

    #[test]
    fn deep_slots() {
        // Room for 1024 ids, handing out 32 until the limit is raised.
        let mut s = Slots::<u32>::new(1024).unwrap();
        assert_eq!((s.capacity(), s.limit()), (1024, RING_SIZE));
        for i in 0..RING_SIZE {
            s.queue(i, Pending::new(i as u32, OP_READ));
        }
        assert_eq!(s.free_id(), None);
        s.set_limit(2048);
        assert_eq!(s.limit(), 1024);
        for i in RING_SIZE..1024 {
            assert_eq!(s.free_id(), Some(i));
            s.queue(i, Pending::new(i as u32, OP_READ));
        }
        assert_eq!(
            (s.free_id(), s.queued_count(), s.count()),
            (None, 1024, 1024)
        );
        // Lowest queued first, across the 64-bit words.
        for i in 0..1024 {
            let (id, p) = s.take_first_queued().unwrap();
            assert_eq!((id, p.rq), (i, i as u32));
            s.insert(id, p);
        }
        assert!(!s.has_queued());
        assert_eq!(s.abandon(700).map(|p| p.rq), Some(700));
        assert!(s.is_abandoned(700));
        assert_eq!((s.live(), s.abandoned()), (1023, 1));
        assert_eq!(s.take(64).map(|p| p.rq), Some(64));
        assert_eq!(s.free_id(), Some(64));
        assert_eq!(s.find(|rq| *rq == 999), Some(999));
        // Ids past the room are refused everywhere.
        assert!(s.take(1024).is_none() && s.abandon(5000).is_none());
        assert!(!s.is_abandoned(1024) && s.operation(1024).is_none());
        s.queue(1024, Pending::new(0, OP_READ));
        assert_eq!(s.count(), 1023);
    }

    #[test]
    fn segment_encoding() {
        assert_eq!(segment_sectors(0, 4096), Ok((0, 7)));
        assert_eq!(segment_sectors(512, 512), Ok((1, 1)));
        assert_eq!(segment_sectors(3584, 512), Ok((7, 7)));
        assert!(segment_sectors(0, 0).is_err());
        assert!(segment_sectors(256, 512).is_err());
        assert!(segment_sectors(512, 4096).is_err());
        assert!(segment_sectors(0, 1000).is_err());
    }

    #[test]
    fn response_index_arithmetic() {
        assert_eq!(responses_to_consume(0, 0, RING_SIZE), Some(0));
        assert_eq!(responses_to_consume(10, 42, RING_SIZE), Some(32));
        assert_eq!(responses_to_consume(10, 43, RING_SIZE), None);
        assert_eq!(responses_to_consume(10, 43, 64), Some(33));
        assert_eq!(responses_to_consume(0, 1025, 1024), None);
        assert_eq!(responses_to_consume(u32::MAX - 1, 3, RING_SIZE), Some(5));
        assert_eq!(responses_to_consume(5, 4, 1024), None);
    }

    #[test]
    fn response_judgement() {
        let mut s = Slots::<()>::new(RING_SIZE).unwrap();
        s.insert(3, Pending::new((), OP_WRITE));
        let mut rsp = RingResponse {
            id: 3,
            operation: OP_WRITE,
            ..Default::default()
        };
        assert_eq!(
            judge_response(&s, &rsp),
            Verdict::Complete { id: 3, ok: true }
        );
        rsp.status = -1;
        assert_eq!(
            judge_response(&s, &rsp),
            Verdict::Complete { id: 3, ok: false }
        );
        rsp.operation = OP_READ;
        assert_eq!(judge_response(&s, &rsp), Verdict::OpMismatch { id: 3 });
        rsp.id = 4;
        assert_eq!(judge_response(&s, &rsp), Verdict::Invalid);
        rsp.id = 32;
        assert_eq!(judge_response(&s, &rsp), Verdict::Invalid);
        rsp.id = u64::MAX;
        assert_eq!(judge_response(&s, &rsp), Verdict::Invalid);
    }

    #[test]
    fn device_info_validation() {
        let ok = DeviceInfo {
            capacity: 2048,
            sector_size: 512,
            physical_sector_size: 4096,
            ..Default::default()
        };
        assert!(DeviceConfig::from_info(&ok).is_ok());
        for bad in [
            DeviceInfo { capacity: 0, ..ok },
            DeviceInfo {
                sector_size: 1000,
                ..ok
            },
            DeviceInfo {
                sector_size: 8192,
                ..ok
            },
            DeviceInfo {
                sector_size: 256,
                ..ok
            },
            DeviceInfo {
                physical_sector_size: 100,
                ..ok
            },
            DeviceInfo {
                physical_sector_size: 0,
                ..ok
            },
            DeviceInfo {
                capacity: u64::MAX,
                sector_size: 4096,
                ..ok
            },
        ] {
            assert!(DeviceConfig::from_info(&bad).is_err());
        }
        let ro = DeviceConfig::from_info(&DeviceInfo {
            flags: DEVICE_RO | 0x100,
            ..ok
        });
        assert_eq!(ro.map(|c| c.read_only), Ok(true));
    }

    #[test]
    fn oxt_device_info() {
        // Layout detection: the V-XS physical size at offset 12 is never 0.
        let mut head = [0u8; CREATE_HEAD_SIZE];
        assert!(is_oxt_layout(&head));
        head[13] = 2; // 512
        assert!(!is_oxt_layout(&head));
        assert_eq!(oxt_len(0), 24);
        assert_eq!(oxt_len(DEVICE_PSZ), 32);
        assert_eq!(oxt_len(DEVICE_TRIM), 40);
        assert_eq!(oxt_len(DEVICE_PSZ | DEVICE_TRIM | 0x10), 40);
        let mut bytes = [0u8; 40];
        bytes[0..8].copy_from_slice(&2048u64.to_ne_bytes());
        bytes[8..12].copy_from_slice(&512u32.to_ne_bytes());
        bytes[16..24].copy_from_slice(&(DEVICE_FLUSH | DEVICE_TRIM).to_ne_bytes());
        bytes[32..36].copy_from_slice(&4096u32.to_ne_bytes());
        let info = oxt_info(&bytes);
        assert_eq!(info.capacity, 2048);
        assert_eq!(info.trim_block_size, 4096);
        let c = DeviceConfig::from_oxt(&info).unwrap();
        assert_eq!(c.physical_block_size, 512);
        assert_eq!(c.agreement.features, FEAT_FLUSH | FEAT_DISCARD);
        assert_eq!(c.agreement.discard_granularity, 4096);
        assert_eq!(c.agreement.max_discard_sectors, MAX_RANGE_SECTORS);
        // No flags: nothing beyond V-XS, whatever the other fields say.
        let plain = OxtDeviceInfo {
            flags: 0,
            phys_block_size: 3,
            ..info
        };
        assert_eq!(
            DeviceConfig::from_oxt(&plain).map(|c| c.agreement),
            Ok(Agreement::default())
        );
        let psz = OxtDeviceInfo {
            flags: DEVICE_PSZ,
            phys_block_size: 4096,
            phys_block_offset: 1024,
            ..info
        };
        let c = DeviceConfig::from_oxt(&psz).unwrap();
        assert_eq!((c.physical_block_size, c.alignment_offset), (4096, 1024));
        for bad in [
            OxtDeviceInfo { capacity: 0, ..psz },
            OxtDeviceInfo {
                sector_size: 768,
                ..psz
            },
            OxtDeviceInfo {
                sector_size: 8192,
                ..psz
            },
            OxtDeviceInfo {
                phys_block_size: 256,
                ..psz
            },
            OxtDeviceInfo {
                phys_block_offset: 4096,
                ..psz
            },
            OxtDeviceInfo {
                phys_block_offset: 100,
                ..psz
            },
            OxtDeviceInfo {
                flags: DEVICE_TRIM,
                trim_block_size: 0,
                ..psz
            },
            OxtDeviceInfo {
                flags: DEVICE_TRIM,
                trim_block_size: 4096,
                trim_block_offset: 4096,
                ..psz
            },
            OxtDeviceInfo {
                flags: DEVICE_TRIM,
                trim_block_size: MAX_DISCARD_GRANULARITY * 2,
                ..psz
            },
        ] {
            assert!(DeviceConfig::from_oxt(&bad).is_err());
        }
    }

    #[test]
    fn negotiation() {
        let all = FEATURES_KNOWN;
        let want = Features {
            size: FEATURES_SIZE_V1,
            version: FEATURES_VERSION,
            features: all,
            discard_granularity: 4096,
            discard_alignment: 0,
            max_discard_sectors: 8192,
            max_write_zeroes_sectors: 8192,
            max_segments: 64,
            ring_slots: 128,
            ..Default::default()
        };
        let a = Agreement::negotiate(&want, all).unwrap();
        assert_eq!(a.features, all);
        assert_eq!(a.max_discard_sectors, 8192);
        assert_eq!((a.max_segments, a.segments()), (64, 64));
        assert_eq!((a.ring_slots, a.slots()), (128, 128));
        assert_eq!(Agreement::default().segments(), SEGMENT_MAX);
        // The intersection, with the limits of what is left out cleared.
        let a = Agreement::negotiate(&want, FEAT_FLUSH | FEAT_FUA).unwrap();
        assert_eq!(
            a,
            Agreement {
                features: FEAT_FLUSH | FEAT_FUA,
                ..Default::default()
            }
        );
        let a = Agreement::negotiate(&want, all & !FEAT_FLUSH).unwrap();
        assert_eq!(
            a.features,
            FEAT_DISCARD | FEAT_WRITE_ZEROES | FEAT_LARGE | FEAT_LOW_LATENCY | FEAT_DEEP
        );
        let a = Agreement::negotiate(&want, all & !FEAT_LARGE).unwrap();
        assert_eq!((a.max_segments, a.segments()), (0, SEGMENT_MAX));
        // Nothing asked: V-XS.
        let none = Features {
            features: 0,
            discard_granularity: 0,
            max_discard_sectors: 0,
            max_write_zeroes_sectors: 0,
            max_segments: 0,
            ring_slots: 0,
            ..want
        };
        assert_eq!(Agreement::negotiate(&none, all), Ok(Agreement::default()));
        assert_eq!(
            Agreement::negotiate(
                &Features {
                    features: all | 0x400,
                    ..want
                },
                all
            ),
            Err(Refusal::Unknown(0x400))
        );
        for bad in [
            Features { version: 2, ..want },
            Features {
                features: FEAT_FUA,
                ..none
            },
            Features {
                reserved: [0, 1],
                ..want
            },
            Features {
                ring_slots: 64,
                ..none
            },
            Features {
                max_segments: SEGMENT_MAX as u32,
                ..want
            },
            Features {
                max_segments: LARGE_SEGMENT_MAX as u32 + 1,
                ..want
            },
            Features {
                max_segments: 0,
                ..want
            },
            Features {
                max_segments: 12,
                ..none
            },
            Features {
                discard_granularity: 0,
                ..want
            },
            Features {
                discard_granularity: 3000,
                ..want
            },
            Features {
                discard_granularity: 256,
                ..want
            },
            Features {
                discard_granularity: 1 << 31,
                ..want
            },
            Features {
                discard_alignment: 4096,
                ..want
            },
            Features {
                discard_alignment: 100,
                ..want
            },
            Features {
                max_discard_sectors: 0,
                ..want
            },
            Features {
                max_discard_sectors: 4,
                ..want
            },
            Features {
                max_discard_sectors: u32::MAX,
                ..want
            },
            Features {
                max_write_zeroes_sectors: 0,
                ..want
            },
            Features {
                max_write_zeroes_sectors: MAX_RANGE_SECTORS + 1,
                ..want
            },
            Features {
                max_discard_sectors: 8,
                ..none
            },
            Features {
                max_write_zeroes_sectors: 8,
                ..none
            },
        ] {
            assert!(matches!(
                Agreement::negotiate(&bad, all),
                Err(Refusal::Bad(_))
            ));
        }
        assert_eq!(feature_of(OP_FLUSH), FEAT_FLUSH);
        assert_eq!(feature_of(crate::uapi::OP_WRITE), 0);
    }

    #[test]
    fn mapping_sizes() {
        let pages = |n: usize| mapping_layout(n * PAGE_SIZE).map(|l| (l.slots, l.segments));
        assert_eq!(pages(353), Some((RING_SIZE, SEGMENT_MAX)));
        assert_eq!(pages(1 + 32 * 12), Some((RING_SIZE, 12)));
        assert_eq!(pages(8193), Some((RING_SIZE, LARGE_SEGMENT_MAX)));
        // Deep rings: 64 entries take 2 pages, 128 take 4, 1024 take 29.
        assert_eq!(pages(2 + 64 * 11), Some((64, SEGMENT_MAX)));
        assert_eq!(pages(4 + 128 * 256), Some((128, LARGE_SEGMENT_MAX)));
        assert_eq!(pages(29 + 1024 * 32), Some((1024, 32)));
        for bad in [
            0,
            1,
            2,
            352,
            354,
            1 + 32 * 10,
            1 + 32 * 257,
            8194 + 1,
            2 + 64 * 10,
            29 + 1024 * 33,
            8 + 256 * 256,
        ] {
            assert_eq!(pages(bad), None);
        }
        assert_eq!(mapping_layout(353 * PAGE_SIZE - 1), None);
        assert_eq!(mapping_layout(usize::MAX), None);
        // No size has two layouts (as `mapping_layout` argues), and every layout's own size
        // gives it back.
        let mut n = RING_SIZE;
        while n <= DEEP_RING_SLOTS_MAX {
            let mut m = RING_SIZE;
            while m < n {
                assert_ne!(ring_pages(n) % m, ring_pages(m) % m);
                m *= 2;
            }
            for segments in SEGMENT_MAX..=LARGE_SEGMENT_MAX {
                let layout = Layout::new(n, segments);
                if layout.is_valid() {
                    assert_eq!(
                        mapping_layout(layout.mmap_pages() * PAGE_SIZE),
                        Some(layout)
                    );
                }
            }
            n *= 2;
        }
    }

    #[test]
    fn deep_negotiation() {
        let deep = |slots: u32, features: u64, max_segments: u32| Features {
            size: FEATURES_SIZE_V1,
            version: FEATURES_VERSION,
            features,
            max_segments,
            ring_slots: slots,
            ..Features::default()
        };
        let a = Agreement::negotiate(&deep(128, FEAT_DEEP, 0), FEATURES_KNOWN).unwrap();
        assert_eq!(
            (a.slots(), a.layout()),
            (128, Layout::new(128, SEGMENT_MAX))
        );
        let a = Agreement::negotiate(&deep(128, FEAT_DEEP | FEAT_LARGE, 256), FEATURES_KNOWN);
        assert_eq!(a.map(|a| a.layout()), Ok(Layout::new(128, 256)));
        // Not supported: V-XS's ring, and no slot count.
        let a = Agreement::negotiate(&deep(128, FEAT_DEEP, 0), FEATURES_KNOWN & !FEAT_DEEP);
        assert_eq!(a.map(|a| (a.slots(), a.ring_slots)), Ok((RING_SIZE, 0)));
        assert_eq!(Agreement::default().slots(), RING_SIZE);
        for (slots, features, segments) in [
            (0, FEAT_DEEP, 0),
            (32, FEAT_DEEP, 0),
            (96, FEAT_DEEP, 0),
            (2048, FEAT_DEEP, 0),
            (u32::MAX, FEAT_DEEP, 0),
            (64, 0, 0),
            (256, FEAT_DEEP | FEAT_LARGE, 256),
            (1024, FEAT_DEEP | FEAT_LARGE, 33),
        ] {
            assert!(
                Agreement::negotiate(&deep(slots, features, segments), FEATURES_KNOWN).is_err()
            );
        }
        assert!(
            Agreement::negotiate(&deep(1024, FEAT_DEEP | FEAT_LARGE, 32), FEATURES_KNOWN).is_ok()
        );
    }

    #[test]
    fn disk_names() {
        let name = |m| DiskName::new(m);
        assert_eq!(name(0).as_bytes(), b"tda");
        assert_eq!(name(25).as_bytes(), b"tdz");
        assert_eq!(name(26).as_bytes(), b"tdaa");
        assert_eq!(name(701).as_bytes(), b"tdzz");
        assert_eq!(name(702).as_bytes(), b"tdaaa");
        assert_eq!(name(16383).as_bytes(), b"tdxfd");
    }
}
