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
        Blktap2Params,
        DeviceInfo,
        Features,
        OxtDeviceInfo,
        RingResponse,
        DEVICE_FLUSH,
        DEVICE_PSZ,
        DEVICE_RO,
        DEVICE_TRIM,
        FEATURES_SIZE_V1,
        FEATURES_VERSION,
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
pub(crate) const FEATURES_KNOWN: u64 =
    FEAT_FLUSH | FEAT_DISCARD | FEAT_FUA | FEAT_WRITE_ZEROES | FEAT_LARGE | FEAT_LOW_LATENCY;

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
            reserved32: 0,
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
        if req.reserved32 != 0 || req.reserved != [0; 2] {
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
        let agreed = Self {
            features: wanted,
            discard_granularity: req.discard_granularity,
            discard_alignment: req.discard_alignment,
            max_discard_sectors: req.max_discard_sectors,
            max_write_zeroes_sectors: req.max_write_zeroes_sectors,
            max_segments: req.max_segments,
        };
        Ok(agreed.without(!supported))
    }
}

/// The data pages per request of a ring mapping of `bytes` bytes: V-XS's
/// `MMAP_PAGES` gives `SEGMENT_MAX`, and `mmap_pages(n)` gives `n` for
/// `SEGMENT_MAX < n <= LARGE_SEGMENT_MAX` (for `FEAT_LARGE`); `None` for any other size.
pub(crate) fn mapping_segments(bytes: usize) -> Option<usize> {
    if bytes % PAGE_SIZE != 0 || bytes / PAGE_SIZE <= 1 {
        return None;
    }
    let data = bytes / PAGE_SIZE - 1;
    let n = data / RING_SIZE;
    (data % RING_SIZE == 0 && (SEGMENT_MAX..=LARGE_SEGMENT_MAX).contains(&n)).then_some(n)
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
    /// The data layout it was last sent in: data pages per request (`SEGMENT_MAX`, V-XS's
    /// segments; more: `FEAT_LARGE`'s contiguous data). Read data is copied back by it.
    pub(crate) stride: usize,
}

impl<R> Pending<R> {
    /// A request arriving now, queued by no known user task.
    pub(crate) fn new(rq: R, operation: u8) -> Self {
        Self {
            rq,
            operation,
            since: Instant::now(),
            submitter: None,
            stride: SEGMENT_MAX,
        }
    }
}

/// The ring's request ids: id `i` owns data pages `1 + i * stride ..` (`stride`: `SEGMENT_MAX`,
/// or the `max_segments` of `FEAT_LARGE`).
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
/// Bit `i` of `used` is set whenever `slots[i]` is `Some` (and also while id `i` completes, is
/// being sent or is abandoned). Bit `i` of `queued` is set only if `slots[i]` is `Some`. Bit `i`
/// of `abandoned` is set only if `slots[i]` is `None` and bit `i` of `used` is set.
pub(crate) struct Slots<R> {
    slots: [Option<Pending<R>>; RING_SIZE],
    used: u32,
    queued: u32,
    abandoned: u32,
}

impl<R> Slots<R> {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self {
            slots: [const { None }; RING_SIZE],
            used: 0,
            queued: 0,
            abandoned: 0,
        }
    }

    /// The lowest free id, if any.
    pub(crate) fn free_id(&self) -> Option<usize> {
        let id = self.used.trailing_ones() as usize;
        (id < RING_SIZE).then_some(id)
    }

    /// Queues `pending`, not sent yet, under the free id `id`.
    pub(crate) fn queue(&mut self, id: usize, pending: Pending<R>) {
        self.insert(id, pending);
        // INVARIANT: the slot was just filled.
        self.queued |= 1 << id;
    }

    /// Ids of queued requests, as a bit mask.
    pub(crate) fn queued(&self) -> u32 {
        self.queued
    }

    /// Takes the queued request `id` out for sending; the id stays reserved.
    pub(crate) fn take_queued(&mut self, id: usize) -> Option<Pending<R>> {
        if id >= RING_SIZE || self.queued & (1 << id) == 0 {
            return None;
        }
        // INVARIANT: the bit of `queued` goes with the request; `used` stays set.
        self.queued &= !(1 << id);
        self.slots[id].take()
    }

    /// Records `pending`, sent, under the free (or reserved) id `id`.
    pub(crate) fn insert(&mut self, id: usize, pending: Pending<R>) {
        debug_assert!(id < RING_SIZE && self.slots[id].is_none());
        self.slots[id] = Some(pending);
        // INVARIANT: bit and slot set together.
        self.used |= 1 << id;
    }

    /// The operation of the request sent under `id`, if one is.
    pub(crate) fn operation(&self, id: usize) -> Option<u8> {
        if id < RING_SIZE && self.queued & (1 << id) != 0 {
            return None;
        }
        self.slots.get(id)?.as_ref().map(|p| p.operation)
    }

    /// Removes and returns the request (sent or queued) under `id`, freeing the id.
    pub(crate) fn take(&mut self, id: usize) -> Option<Pending<R>> {
        let pending = self.slots.get_mut(id)?.take()?;
        // INVARIANT: bits and slot cleared together.
        self.used &= !(1 << id);
        self.queued &= !(1 << id);
        Some(pending)
    }

    /// Removes and returns the request sent under `id`, keeping the id reserved until
    /// [`Slots::end_complete`]. A second response for `id` meanwhile finds no request.
    pub(crate) fn begin_complete(&mut self, id: usize) -> Option<Pending<R>> {
        self.operation(id)?;
        // INVARIANT: the bit stays set; the request was not queued.
        self.slots.get_mut(id)?.take()
    }

    /// Frees id `id` after [`Slots::begin_complete`] or [`Slots::take_queued`].
    pub(crate) fn end_complete(&mut self, id: usize) {
        if id < RING_SIZE && self.slots[id].is_none() {
            self.used &= !(1 << id);
        }
    }

    /// Number of reserved ids (pending requests, and abandoned ones the daemon still owes).
    /// Only the KUnit tests ask.
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn count(&self) -> u32 {
        self.used.count_ones()
    }

    /// Number of ids that still hold, or are completing, a block request (not abandoned).
    pub(crate) fn live(&self) -> u32 {
        (self.used & !self.abandoned).count_ones()
    }

    /// Number of abandoned ids.
    pub(crate) fn abandoned(&self) -> u32 {
        self.abandoned.count_ones()
    }

    /// The id of the request (sent or queued) for which `pred` holds, if any.
    pub(crate) fn find(&self, pred: impl Fn(&R) -> bool) -> Option<usize> {
        (0..RING_SIZE).find(|&i| self.slots[i].as_ref().is_some_and(|p| pred(&p.rq)))
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
        if id >= RING_SIZE || self.slots[id].is_none() {
            return None;
        }
        if self.queued & (1 << id) != 0 {
            return self.take(id);
        }
        // INVARIANT: the slot is emptied, `used` stays set, `abandoned` is set.
        self.abandoned |= 1 << id;
        self.slots[id].take()
    }

    /// Whether `id` is abandoned.
    pub(crate) fn is_abandoned(&self, id: usize) -> bool {
        id < RING_SIZE && self.abandoned & (1 << id) != 0
    }

    /// Frees the abandoned id `id` (the daemon answered it late).
    pub(crate) fn release(&mut self, id: usize) {
        if self.is_abandoned(id) {
            // INVARIANT: both bits cleared; the slot is already `None`.
            self.abandoned &= !(1 << id);
            self.used &= !(1 << id);
        }
    }

    /// Ids of pending requests, lowest first.
    pub(crate) fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        (0..RING_SIZE).filter(|&i| self.slots[i].is_some())
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
/// A correct daemon never has more than `RING_SIZE` unconsumed responses; a larger distance
/// (including a `rsp_prod` behind `rsp_cons`) is a corrupt index and yields `None`.
pub(crate) fn responses_to_consume(rsp_cons: u32, rsp_prod: u32) -> Option<u32> {
    let n = rsp_prod.wrapping_sub(rsp_cons);
    (n as usize <= RING_SIZE).then_some(n)
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
        let mut slots: Slots<u32> = Slots::new();
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
        let mut s = Slots::<u32>::new();
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
        let mut s = Slots::<u32>::new();
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
        let mut s = Slots::<u32>::new();
        s.queue(0, Pending::new(9, OP_WRITE));
        // Not sent yet: responses find nothing.
        assert_eq!(s.queued(), 1);
        assert!(s.operation(0).is_none());
        assert!(s.begin_complete(0).is_none());
        assert_eq!(s.free_id(), Some(1));
        let p = s.take_queued(0).unwrap();
        assert_eq!(p.rq, 9);
        assert!(s.take_queued(0).is_none());
        assert_eq!(s.queued(), 0);
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
        assert_eq!((s.queued(), s.count()), (0, 0));
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
        assert_eq!(responses_to_consume(0, 0), Some(0));
        assert_eq!(responses_to_consume(10, 42), Some(32));
        assert_eq!(responses_to_consume(10, 43), None);
        assert_eq!(responses_to_consume(u32::MAX - 1, 3), Some(5));
        assert_eq!(responses_to_consume(5, 4), None);
    }

    #[test]
    fn response_judgement() {
        let mut s = Slots::<()>::new();
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
            ..Default::default()
        };
        let a = Agreement::negotiate(&want, all).unwrap();
        assert_eq!(a.features, all);
        assert_eq!(a.max_discard_sectors, 8192);
        assert_eq!((a.max_segments, a.segments()), (64, 64));
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
            FEAT_DISCARD | FEAT_WRITE_ZEROES | FEAT_LARGE | FEAT_LOW_LATENCY
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
            ..want
        };
        assert_eq!(Agreement::negotiate(&none, all), Ok(Agreement::default()));
        assert_eq!(
            Agreement::negotiate(
                &Features {
                    features: all | 0x200,
                    ..want
                },
                all
            ),
            Err(Refusal::Unknown(0x200))
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
                reserved32: 1,
                ..want
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
        let pages = |n: usize| mapping_segments(n * PAGE_SIZE);
        assert_eq!(pages(353), Some(SEGMENT_MAX));
        assert_eq!(pages(1 + 32 * 12), Some(12));
        assert_eq!(pages(8193), Some(LARGE_SEGMENT_MAX));
        for bad in [0, 1, 2, 352, 354, 1 + 32 * 10, 1 + 32 * 257, 8194] {
            assert_eq!(pages(bad), None);
        }
        assert_eq!(mapping_segments(353 * PAGE_SIZE - 1), None);
        assert_eq!(mapping_segments(usize::MAX), None);
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
