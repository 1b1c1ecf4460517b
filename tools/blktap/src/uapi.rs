//! `#[repr(C)]` mirrors of `include/uapi/linux/blktap.h` (the V-XS ABI, x86-64 layout, and the
//! opt-in feature negotiation of blktap-rs).
//!
//! The header is authoritative; the `layout_matches_c_header` unit test compiles a C program
//! against it and compares every size, offset and constant with the Rust definitions below
//! (`every_header_item_is_compared` makes sure nothing the header declares is left out).
//! `scripts/check-uapi.sh` does the same for the driver's copy.

use std::fmt;

/// Control ioctl: allocate a tap; the argument points to a [`BlktapInfo`] (out).
pub const IOCTL_ALLOC_TAP: u32 = 200;
/// Control ioctl: free the tap whose minor is passed by value.
pub const IOCTL_FREE_TAP: u32 = 201;
/// Ring ioctl: consume the responses published up to `rsp_prod`; the argument is ignored.
pub const IOCTL_RESPOND: u32 = 1;
/// Ring ioctl: create the block device from a [`Blktap2Params`] (legacy form).
pub const IOCTL_CREATE_DEVICE_COMPAT: u32 = 202;
/// Ring ioctl: remove the block device; fails with `EBUSY` while the disk is open.
pub const IOCTL_REMOVE_DEVICE: u32 = 207;
/// Ring ioctl: create the block device from a [`DeviceInfo`].
pub const IOCTL_CREATE_DEVICE: u32 = 208;
/// Ring ioctl: negotiate features beyond V-XS before `CREATE_DEVICE`; the argument points to a
/// [`Features`] (in/out).
pub const IOCTL_NEGOTIATE: u32 = 209;
/// Ring ioctl (V-OXT): new capacity and name while paused; the argument points to a
/// [`Blktap2Params`] (in).
pub const IOCTL_SET_PARAMS: u32 = 203;
/// Ring ioctl (V-OXT): the daemon has paused, answering [`RING_MESSAGE_PAUSE`].
pub const IOCTL_PAUSE: u32 = 204;
/// Ring ioctl (V-OXT): the tap's name (`type:path`) is copied into the
/// [`MAX_MESSAGE_LEN`]-byte buffer the argument points to; paused only.
pub const IOCTL_REOPEN: u32 = 205;
/// Ring ioctl (V-OXT): ends a resume with the result passed by value (0 or `-errno`).
pub const IOCTL_RESUME: u32 = 206;
/// Ring message byte value (V-OXT): pause (drain, then [`IOCTL_PAUSE`]).
pub const RING_MESSAGE_PAUSE: u8 = 1;
/// Ring message byte value (V-OXT): resume ([`IOCTL_REOPEN`], [`IOCTL_SET_PARAMS`],
/// [`IOCTL_RESUME`]).
pub const RING_MESSAGE_RESUME: u8 = 2;
/// Ring message byte value (V-OXT): close the ring (the tap is being removed).
pub const RING_MESSAGE_CLOSE: u8 = 3;

/// Kernel-internal `ENOIOCTLCMD`; tapdisk treats it like `ENOTTY` when probing ioctl 208.
pub const ENOIOCTLCMD: i32 = 515;

/// Number of taps (and minors) the driver supports.
pub const MAX_DEVICES: u32 = 16384;

/// [`DeviceInfo::flags`] bit: the disk is read-only.
pub const DEVICE_RO: u64 = 0x1;

/// [`OxtDeviceInfo::flags`] bit: `phys_block_size` and `phys_block_offset` are given.
pub const DEVICE_PSZ: u64 = 0x2;
/// [`OxtDeviceInfo::flags`] bit: a volatile write cache ([`OP_FLUSH`]).
pub const DEVICE_FLUSH: u64 = 0x4;
/// [`OxtDeviceInfo::flags`] bit: discard ([`OP_DISCARD`], V-OXT's TRIM); `trim_block_size`
/// and `trim_block_offset` are given.
pub const DEVICE_TRIM: u64 = 0x8;

/// Size of [`Blktap2Params::name`].
pub const MAX_MESSAGE_LEN: usize = 256;

/// Entries in the shared ring; indices are free-running `u32` counters.
pub const RING_SIZE: u32 = 32;
/// Data pages (segments) per request.
pub const SEGMENT_MAX: u32 = 11;
/// Pages of the ring mapping: the ring page plus `RING_SIZE * SEGMENT_MAX` data pages.
pub const MMAP_PAGES: usize = mmap_pages_large(SEGMENT_MAX);
/// Page size the ABI is defined for (x86-64).
pub const PAGE_SIZE: usize = 4096;
/// Length in bytes of the ring mapping.
pub const MMAP_SIZE: usize = MMAP_PAGES * PAGE_SIZE;
/// Sector unit of `capacity`, `sector_number`, `first_sect` and `last_sect`.
pub const SECTOR_SIZE: u64 = 512;
/// Sectors per data page.
pub const SECTORS_PER_PAGE: u8 = (PAGE_SIZE as u64 / SECTOR_SIZE) as u8;

/// Request operation: read from the backend into the data pages.
pub const OP_READ: u8 = 0;
/// Request operation: write the data pages to the backend.
pub const OP_WRITE: u8 = 1;
/// Request operation (negotiated [`FEAT_FLUSH`]): make completed writes durable; no segments.
pub const OP_FLUSH: u8 = 2;
/// Request operation (negotiated [`FEAT_DISCARD`]): discard a range ([`RingRangeRequest`]).
pub const OP_DISCARD: u8 = 3;
/// Request operation (negotiated [`FEAT_WRITE_ZEROES`]): zero a range ([`RingRangeRequest`]).
pub const OP_WRITE_ZEROES: u8 = 5;

/// Request flag (negotiated [`FEAT_FUA`]): the write is durable before its response.
pub const REQ_FUA: u32 = 0x1;
/// Request flag of [`OP_WRITE_ZEROES`]: keep the range allocated.
pub const REQ_NOUNMAP: u32 = 0x2;

/// [`Features::version`] of this header.
pub const FEATURES_VERSION: u32 = 1;
/// Size of [`Features`] in version 1.
pub const FEATURES_SIZE_V1: u32 = 64;
/// Feature: a volatile write cache; [`OP_FLUSH`] requests.
pub const FEAT_FLUSH: u64 = 0x4;
/// Feature: [`OP_DISCARD`] requests.
pub const FEAT_DISCARD: u64 = 0x8;
/// Feature: [`REQ_FUA`] on writes (needs [`FEAT_FLUSH`]).
pub const FEAT_FUA: u64 = 0x20;
/// Feature: [`OP_WRITE_ZEROES`] requests.
pub const FEAT_WRITE_ZEROES: u64 = 0x40;
/// Feature: large requests, up to [`Features::max_segments`] data pages each, their data
/// contiguous ([`RingRangeRequest`] form for READ and WRITE); the ring is mapped with that
/// many data pages per request ([`mmap_pages_large`]).
pub const FEAT_LARGE: u64 = 0x80;
/// Feature: the kernel publishes each request as it is submitted, not when the daemon polls,
/// for a daemon that watches `req_prod` for a while after each batch (busy-polling).
pub const FEAT_LOW_LATENCY: u64 = 0x100;
/// Feature: a deep ring of [`Features::ring_slots`] entries (a power of two in
/// [`DEEP_RING_SLOTS_MIN`]..=[`DEEP_RING_SLOTS_MAX`]) over [`ring_pages`] pages, the data
/// pages after it ([`deep_mmap_pages`]); the disk gets that many tags.
pub const FEAT_DEEP: u64 = 0x200;
/// Fewest entries of a deep ring.
pub const DEEP_RING_SLOTS_MIN: u32 = 64;
/// Most entries of a deep ring.
pub const DEEP_RING_SLOTS_MAX: u32 = 1024;
/// Most data pages of a deep ring's mapping (entries times data pages per request; 128 MiB).
pub const DEEP_DATA_PAGES_MAX: u32 = 32768;
/// The operation and flag features of version 1 (not [`FEAT_LARGE`] and [`FEAT_DEEP`], which
/// need a mapping of their own, nor [`FEAT_LOW_LATENCY`], which is a daemon's way of working).
pub const FEATURES_ALL: u64 = FEAT_FLUSH | FEAT_DISCARD | FEAT_FUA | FEAT_WRITE_ZEROES;
/// Every feature this version of the ABI knows (what a module offers when nothing is
/// switched off).
pub const FEATURES_KNOWN: u64 = FEATURES_ALL | FEAT_LARGE | FEAT_LOW_LATENCY | FEAT_DEEP;
/// Most data pages per request with [`FEAT_LARGE`] (1 MiB).
pub const LARGE_SEGMENT_MAX: u32 = 256;
/// Largest `max_discard_sectors` / `max_write_zeroes_sectors`.
pub const MAX_RANGE_SECTORS: u32 = 0x7f_ffff;
/// Largest `discard_granularity`, in bytes.
pub const MAX_DISCARD_GRANULARITY: u32 = 0x4000_0000;

/// Response status: success.
pub const RSP_OKAY: i16 = 0;
/// Response status: I/O error.
pub const RSP_ERROR: i16 = -1;
/// Response status: operation not supported (the kernel fails the I/O like `RSP_ERROR`).
pub const RSP_EOPNOTSUPP: i16 = -2;

/// Page index within the ring mapping of segment `seg` of the request with ring id `id`.
pub const fn data_page(id: u32, seg: u32) -> usize {
    large_data_page(SEGMENT_MAX, id, seg)
}

/// Pages of a ring mapping with `segments` data pages per request ([`FEAT_LARGE`]).
pub const fn mmap_pages_large(segments: u32) -> usize {
    deep_mmap_pages(RING_SIZE, segments)
}

/// Page index of data page `seg` of request `id` with `segments` data pages per request.
pub const fn large_data_page(segments: u32, id: u32, seg: u32) -> usize {
    deep_data_page(RING_SIZE, segments, id, seg)
}

/// Pages of a ring of `slots` entries, its header included (1 for [`RING_SIZE`]).
pub const fn ring_pages(slots: u32) -> usize {
    (SRING_HEADER_SIZE + slots as usize * RING_ENTRY_SIZE).div_ceil(PAGE_SIZE)
}

/// Pages of a ring mapping of `slots` entries and `segments` data pages per request
/// ([`FEAT_DEEP`]; with [`RING_SIZE`] entries, the other layouts).
pub const fn deep_mmap_pages(slots: u32, segments: u32) -> usize {
    ring_pages(slots) + slots as usize * segments as usize
}

/// Page index of data page `seg` of request `id` in a ring mapping of `slots` entries and
/// `segments` data pages per request.
pub const fn deep_data_page(slots: u32, segments: u32, id: u32, seg: u32) -> usize {
    ring_pages(slots) + id as usize * segments as usize + seg as usize
}

/// Offset of ring entry `slot` (0..[`RING_SIZE`]) from the start of the ring page.
pub const fn entry_offset(slot: u32) -> usize {
    SRING_HEADER_SIZE + slot as usize * RING_ENTRY_SIZE
}

/// Size of the shared ring header (indices, message byte and padding).
pub const SRING_HEADER_SIZE: usize = 64;
/// Size of one ring entry (the request/response union).
pub const RING_ENTRY_SIZE: usize = 112;

/// Reply of `ALLOC_TAP` (`struct blktap_info`, 12 bytes; tap-ctl's `blktap2_handle`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlktapInfo {
    /// Major of the `blktap2` ring character devices.
    pub ring_major: u32,
    /// Major of the `tapdev` block devices.
    pub bdev_major: u32,
    /// The allocated tap minor.
    pub ring_minor: u32,
}

/// Argument of `CREATE_DEVICE` (`struct blktap_device_info`, 56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Size in 512-byte sectors; must be non-zero.
    pub capacity: u64,
    /// Logical block size: a power of two in 512..=4096.
    pub sector_size: u32,
    /// Physical block size: a power of two, at least 512.
    pub physical_sector_size: u32,
    /// [`DEVICE_RO`]; other bits are ignored.
    pub flags: u64,
    rsvd: [u64; 4],
}

impl DeviceInfo {
    /// Device info with the same logical and physical sector size.
    pub fn new(capacity: u64, sector_size: u32, read_only: bool) -> Self {
        Self {
            capacity,
            sector_size,
            physical_sector_size: sector_size,
            flags: if read_only { DEVICE_RO } else { 0 },
            rsvd: [0; 4],
        }
    }
}

/// V-OXT's argument of `CREATE_DEVICE` (`struct blktap_device_info_oxt`, 40 bytes): the word
/// at offset 12, V-XS's `physical_sector_size`, is 0, which tells the kernel this layout. The
/// kernel writes `flags` back, masked with what it serves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OxtDeviceInfo {
    /// Size in 512-byte sectors; must be non-zero.
    pub capacity: u64,
    /// Logical block size: a power of two in 512..=4096.
    pub sector_size: u32,
    /// Zero.
    pub pad: u32,
    /// [`DEVICE_RO`], [`DEVICE_PSZ`], [`DEVICE_FLUSH`], [`DEVICE_TRIM`].
    pub flags: u64,
    /// With [`DEVICE_PSZ`]: physical block size (a power of two, at least `sector_size`).
    pub phys_block_size: u32,
    /// With [`DEVICE_PSZ`]: offset of the first physical block, in bytes.
    pub phys_block_offset: u32,
    /// With [`DEVICE_TRIM`]: discard granularity in bytes.
    pub trim_block_size: u32,
    /// With [`DEVICE_TRIM`]: offset of the first discard granule, in bytes.
    pub trim_block_offset: u32,
}

impl OxtDeviceInfo {
    /// Device info with `flags` and no physical or trim geometry.
    pub fn new(capacity: u64, sector_size: u32, flags: u64) -> Self {
        Self {
            capacity,
            sector_size,
            flags,
            ..Self::default()
        }
    }
}

/// Argument of `CREATE_DEVICE_COMPAT` (`struct blktap2_params`, 272 bytes).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Blktap2Params {
    /// NUL-terminated tap name; may be empty.
    pub name: [u8; MAX_MESSAGE_LEN],
    /// Size in 512-byte sectors.
    pub capacity: u64,
    /// Logical and physical block size.
    pub sector_size: u64,
}

impl Blktap2Params {
    /// Parameters with an empty name, as tapdisk sends them.
    pub fn new(capacity: u64, sector_size: u64) -> Self {
        Self {
            name: [0; MAX_MESSAGE_LEN],
            capacity,
            sector_size,
        }
    }

    /// Sets the name, truncated so that a terminating NUL always fits.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = [0; MAX_MESSAGE_LEN];
        let len = name.len().min(MAX_MESSAGE_LEN - 1);
        self.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        self
    }

    /// Same parameters as `info` minus what the legacy call cannot express (flags and a
    /// distinct physical sector size).
    pub fn from_info(info: &DeviceInfo) -> Self {
        Self::new(info.capacity, u64::from(info.sector_size))
    }
}

impl Default for Blktap2Params {
    fn default() -> Self {
        Self::new(0, 0)
    }
}

impl fmt::Debug for Blktap2Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        f.debug_struct("Blktap2Params")
            .field("name", &String::from_utf8_lossy(&self.name[..end]))
            .field("capacity", &self.capacity)
            .field("sector_size", &self.sector_size)
            .finish()
    }
}

/// One data segment (`struct blktap_segment`, 8 bytes): sectors `first_sect..=last_sect`
/// of its page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pad: u32,
    /// First 512-byte sector of the page that holds data.
    pub first_sect: u8,
    /// Last 512-byte sector of the page that holds data (inclusive).
    pub last_sect: u8,
    pad2: [u8; 2],
}

impl Segment {
    /// An all-zero segment.
    pub const ZERO: Self = Self {
        pad: 0,
        first_sect: 0,
        last_sect: 0,
        pad2: [0; 2],
    };

    /// Segment covering sectors `first..=last` of its page.
    pub fn new(first_sect: u8, last_sect: u8) -> Self {
        Self {
            first_sect,
            last_sect,
            ..Self::default()
        }
    }
}

/// A request as the kernel writes it (`struct blktap_ring_request`, 112 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingRequest {
    /// [`OP_READ`] or [`OP_WRITE`].
    pub operation: u8,
    /// Number of valid entries of `seg`, 1..=[`SEGMENT_MAX`] (0 for [`OP_FLUSH`]).
    pub nr_segments: u8,
    pad: u16,
    /// [`REQ_FUA`] if negotiated; 0 for a V-XS daemon.
    pub flags: u32,
    /// Ring slot 0..[`RING_SIZE`]; selects the data pages.
    pub id: u64,
    /// Start in 512-byte sectors.
    pub sector_number: u64,
    /// The data segments.
    pub seg: [Segment; SEGMENT_MAX as usize],
}

impl RingRequest {
    /// Builds a request (as the kernel would) from `(first_sect, last_sect)` pairs; pairs
    /// beyond [`SEGMENT_MAX`] are ignored.
    pub fn new(operation: u8, id: u64, sector_number: u64, segs: &[(u8, u8)]) -> Self {
        let mut req = Self {
            operation,
            nr_segments: segs.len().min(SEGMENT_MAX as usize) as u8,
            id,
            sector_number,
            ..Self::default()
        };
        for (dst, &(first, last)) in req.seg.iter_mut().zip(segs) {
            *dst = Segment::new(first, last);
        }
        req
    }
}

/// A discard or write-zeroes request (`struct blktap_ring_range_request`, 32 bytes at the
/// start of its slot; the rest of the slot is zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingRangeRequest {
    /// [`OP_DISCARD`] or [`OP_WRITE_ZEROES`].
    pub operation: u8,
    /// Zero.
    pub nr_segments: u8,
    pad: u16,
    /// [`REQ_FUA`], [`REQ_NOUNMAP`].
    pub flags: u32,
    /// Ring slot 0..[`RING_SIZE`].
    pub id: u64,
    /// Start in 512-byte sectors.
    pub sector_number: u64,
    /// Length in 512-byte sectors.
    pub nr_sectors: u64,
}

impl RingRangeRequest {
    /// A range request (as the kernel would write it).
    pub fn new(operation: u8, flags: u32, id: u64, sector_number: u64, nr_sectors: u64) -> Self {
        Self {
            operation,
            flags,
            id,
            sector_number,
            nr_sectors,
            ..Self::default()
        }
    }

    /// The same bytes seen as a [`RingRequest`] (the slot as a whole).
    pub fn to_request(&self) -> RingRequest {
        let mut seg0 = [0u8; 8];
        seg0.copy_from_slice(&self.nr_sectors.to_ne_bytes());
        RingRequest {
            operation: self.operation,
            nr_segments: self.nr_segments,
            pad: 0,
            flags: self.flags,
            id: self.id,
            sector_number: self.sector_number,
            seg: {
                let mut seg = [Segment::ZERO; SEGMENT_MAX as usize];
                seg[0] = Segment {
                    pad: u32::from_ne_bytes([seg0[0], seg0[1], seg0[2], seg0[3]]),
                    first_sect: seg0[4],
                    last_sect: seg0[5],
                    pad2: [seg0[6], seg0[7]],
                };
                seg
            },
        }
    }

    /// A [`RingRequest`] (the slot as read) seen as a range request.
    pub fn from_request(req: &RingRequest) -> Self {
        let s = req.seg[0];
        let p = s.pad.to_ne_bytes();
        let bytes = [
            p[0],
            p[1],
            p[2],
            p[3],
            s.first_sect,
            s.last_sect,
            s.pad2[0],
            s.pad2[1],
        ];
        Self {
            operation: req.operation,
            nr_segments: req.nr_segments,
            pad: req.pad,
            flags: req.flags,
            id: req.id,
            sector_number: req.sector_number,
            nr_sectors: u64::from_ne_bytes(bytes),
        }
    }
}

/// Argument of `NEGOTIATE` (`struct blktap_features`, 64 bytes in version 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// In: the size of this struct as the caller knows it; out: the module's.
    pub size: u32,
    /// [`FEATURES_VERSION`].
    pub version: u32,
    /// In: `FEAT_*` wanted; out: agreed (wanted and supported).
    pub features: u64,
    /// Out: the `FEAT_*` this tap supports.
    pub supported: u64,
    /// Bytes: a power of two in 512..=[`MAX_DISCARD_GRANULARITY`] (with [`FEAT_DISCARD`]).
    pub discard_granularity: u32,
    /// Bytes: a multiple of 512 below the granularity.
    pub discard_alignment: u32,
    /// 512-byte sectors per discard, 1..=[`MAX_RANGE_SECTORS`].
    pub max_discard_sectors: u32,
    /// 512-byte sectors per write-zeroes, 1..=[`MAX_RANGE_SECTORS`].
    pub max_write_zeroes_sectors: u32,
    /// Data pages per request with [`FEAT_LARGE`]: above [`SEGMENT_MAX`], at most
    /// [`LARGE_SEGMENT_MAX`], and the ring's mapping (0 without the feature).
    pub max_segments: u32,
    /// Ring entries with [`FEAT_DEEP`]: a power of two in
    /// [`DEEP_RING_SLOTS_MIN`]..=[`DEEP_RING_SLOTS_MAX`], and the ring's mapping (0 without
    /// the feature).
    pub ring_slots: u32,
    /// Zero.
    pub rsvd: [u64; 2],
}

impl Features {
    /// A request for `features`, with no limits (set those of discard and write-zeroes).
    pub fn request(features: u64) -> Self {
        Self {
            size: FEATURES_SIZE_V1,
            version: FEATURES_VERSION,
            features,
            ..Self::default()
        }
    }
}

/// A response as the daemon writes it (`struct blktap_ring_response`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingResponse {
    /// Id of the request answered.
    pub id: u64,
    /// Operation of the request answered.
    pub operation: u8,
    pad: u8,
    /// [`RSP_OKAY`], [`RSP_ERROR`] or [`RSP_EOPNOTSUPP`].
    pub status: i16,
    pad2: u32,
}

impl RingResponse {
    /// Response to request `id` with operation `operation`.
    pub fn new(id: u64, operation: u8, status: i16) -> Self {
        Self {
            id,
            operation,
            status,
            ..Self::default()
        }
    }
}

/// One ring slot (`union blktap_ring_entry`, 112 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub union RingEntry {
    /// The request view.
    pub req: RingRequest,
    /// The discard / write-zeroes request view.
    pub range: RingRangeRequest,
    /// The response view.
    pub rsp: RingResponse,
}

/// The first 64 bytes of the ring page: indices and message byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SringHeader {
    /// Request producer index (kernel).
    pub req_prod: u32,
    /// Initialised to 1; unused by V-XS. A daemon that stores `req_cons + 1` here after
    /// taking requests gets a level-triggered `poll` from blktap-rs (userspace-api.rst).
    pub req_event: u32,
    /// Response producer index (daemon).
    pub rsp_prod: u32,
    /// Initialised to 1; unused.
    pub rsp_event: u32,
    /// Message byte, unused by this ABI variant.
    pub msg: u8,
    /// Reserved, zero.
    pub pad: [u8; 47],
}

impl SringHeader {
    /// The state of a freshly initialised ring (`SHARED_RING_INIT`).
    pub const INITIAL: Self = Self {
        req_prod: 0,
        req_event: 1,
        rsp_prod: 0,
        rsp_event: 1,
        msg: 0,
        pad: [0; 47],
    };
}

/// The whole shared ring (`struct blktap_sring`); only used for layout, the page itself is
/// accessed through [`crate::ring::RingMemory`].
#[repr(C)]
pub struct Sring {
    /// Indices and message byte.
    pub hdr: SringHeader,
    /// The ring slots.
    pub ring: [RingEntry; RING_SIZE as usize],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::path::PathBuf;
    use std::process::Command;

    /// (C expression, Rust value) pairs; the C program prints each expression as `%lld`.
    fn expectations() -> Vec<(&'static str, i64)> {
        macro_rules! size {
            ($c:literal, $t:ty) => {
                (concat!("sizeof(", $c, ")"), size_of::<$t>() as i64)
            };
        }
        macro_rules! off {
            ($c:literal, $t:ty, $cf:literal, $($rf:tt)+) => {
                (concat!("offsetof(", $c, ", ", $cf, ")"), offset_of!($t, $($rf)+) as i64)
            };
        }
        macro_rules! konst {
            ($c:literal, $v:expr) => {
                ($c, $v as i64)
            };
        }
        vec![
            size!("struct blktap_info", BlktapInfo),
            off!("struct blktap_info", BlktapInfo, "ring_major", ring_major),
            off!("struct blktap_info", BlktapInfo, "bdev_major", bdev_major),
            off!("struct blktap_info", BlktapInfo, "ring_minor", ring_minor),
            size!("struct blktap_device_info", DeviceInfo),
            off!(
                "struct blktap_device_info",
                DeviceInfo,
                "capacity",
                capacity
            ),
            off!(
                "struct blktap_device_info",
                DeviceInfo,
                "sector_size",
                sector_size
            ),
            off!(
                "struct blktap_device_info",
                DeviceInfo,
                "physical_sector_size",
                physical_sector_size
            ),
            off!("struct blktap_device_info", DeviceInfo, "flags", flags),
            off!("struct blktap_device_info", DeviceInfo, "__rsvd", rsvd),
            size!("struct blktap_device_info_oxt", OxtDeviceInfo),
            off!(
                "struct blktap_device_info_oxt",
                OxtDeviceInfo,
                "capacity",
                capacity
            ),
            off!(
                "struct blktap_device_info_oxt",
                OxtDeviceInfo,
                "sector_size",
                sector_size
            ),
            off!("struct blktap_device_info_oxt", OxtDeviceInfo, "__pad", pad),
            off!(
                "struct blktap_device_info_oxt",
                OxtDeviceInfo,
                "flags",
                flags
            ),
            off!(
                "struct blktap_device_info_oxt",
                OxtDeviceInfo,
                "phys_block_size",
                phys_block_size
            ),
            off!(
                "struct blktap_device_info_oxt",
                OxtDeviceInfo,
                "phys_block_offset",
                phys_block_offset
            ),
            off!(
                "struct blktap_device_info_oxt",
                OxtDeviceInfo,
                "trim_block_size",
                trim_block_size
            ),
            off!(
                "struct blktap_device_info_oxt",
                OxtDeviceInfo,
                "trim_block_offset",
                trim_block_offset
            ),
            size!("struct blktap2_params", Blktap2Params),
            off!("struct blktap2_params", Blktap2Params, "name", name),
            off!("struct blktap2_params", Blktap2Params, "capacity", capacity),
            off!(
                "struct blktap2_params",
                Blktap2Params,
                "sector_size",
                sector_size
            ),
            size!("struct blktap_segment", Segment),
            off!("struct blktap_segment", Segment, "__pad", pad),
            off!("struct blktap_segment", Segment, "first_sect", first_sect),
            off!("struct blktap_segment", Segment, "last_sect", last_sect),
            off!("struct blktap_segment", Segment, "__pad2", pad2),
            size!("struct blktap_ring_request", RingRequest),
            off!(
                "struct blktap_ring_request",
                RingRequest,
                "operation",
                operation
            ),
            off!(
                "struct blktap_ring_request",
                RingRequest,
                "nr_segments",
                nr_segments
            ),
            off!("struct blktap_ring_request", RingRequest, "__pad", pad),
            off!("struct blktap_ring_request", RingRequest, "flags", flags),
            size!("struct blktap_ring_range_request", RingRangeRequest),
            off!(
                "struct blktap_ring_range_request",
                RingRangeRequest,
                "operation",
                operation
            ),
            off!(
                "struct blktap_ring_range_request",
                RingRangeRequest,
                "nr_segments",
                nr_segments
            ),
            off!(
                "struct blktap_ring_range_request",
                RingRangeRequest,
                "__pad",
                pad
            ),
            off!(
                "struct blktap_ring_range_request",
                RingRangeRequest,
                "flags",
                flags
            ),
            off!(
                "struct blktap_ring_range_request",
                RingRangeRequest,
                "id",
                id
            ),
            off!(
                "struct blktap_ring_range_request",
                RingRangeRequest,
                "sector_number",
                sector_number
            ),
            off!(
                "struct blktap_ring_range_request",
                RingRangeRequest,
                "nr_sectors",
                nr_sectors
            ),
            size!("struct blktap_features", Features),
            off!("struct blktap_features", Features, "size", size),
            off!("struct blktap_features", Features, "version", version),
            off!("struct blktap_features", Features, "features", features),
            off!("struct blktap_features", Features, "supported", supported),
            off!(
                "struct blktap_features",
                Features,
                "discard_granularity",
                discard_granularity
            ),
            off!(
                "struct blktap_features",
                Features,
                "discard_alignment",
                discard_alignment
            ),
            off!(
                "struct blktap_features",
                Features,
                "max_discard_sectors",
                max_discard_sectors
            ),
            off!(
                "struct blktap_features",
                Features,
                "max_write_zeroes_sectors",
                max_write_zeroes_sectors
            ),
            off!(
                "struct blktap_features",
                Features,
                "max_segments",
                max_segments
            ),
            off!("struct blktap_features", Features, "ring_slots", ring_slots),
            off!("struct blktap_features", Features, "__rsvd", rsvd),
            off!("struct blktap_ring_request", RingRequest, "id", id),
            off!(
                "struct blktap_ring_request",
                RingRequest,
                "sector_number",
                sector_number
            ),
            off!("struct blktap_ring_request", RingRequest, "seg", seg),
            size!("struct blktap_ring_response", RingResponse),
            off!("struct blktap_ring_response", RingResponse, "id", id),
            off!(
                "struct blktap_ring_response",
                RingResponse,
                "operation",
                operation
            ),
            off!("struct blktap_ring_response", RingResponse, "__pad", pad),
            off!(
                "struct blktap_ring_response",
                RingResponse,
                "status",
                status
            ),
            off!("struct blktap_ring_response", RingResponse, "__pad2", pad2),
            size!("union blktap_ring_entry", RingEntry),
            off!("union blktap_ring_entry", RingEntry, "req", req),
            off!("union blktap_ring_entry", RingEntry, "range", range),
            off!("union blktap_ring_entry", RingEntry, "rsp", rsp),
            size!("struct blktap_sring", Sring),
            off!("struct blktap_sring", Sring, "req_prod", hdr.req_prod),
            off!("struct blktap_sring", Sring, "req_event", hdr.req_event),
            off!("struct blktap_sring", Sring, "rsp_prod", hdr.rsp_prod),
            off!("struct blktap_sring", Sring, "rsp_event", hdr.rsp_event),
            off!("struct blktap_sring", Sring, "msg", hdr.msg),
            off!("struct blktap_sring", Sring, "__pad", hdr.pad),
            off!("struct blktap_sring", Sring, "ring", ring),
            konst!(
                "sizeof(((struct blktap_sring *)0)->ring[0])",
                RING_ENTRY_SIZE
            ),
            konst!("offsetof(struct blktap_sring, ring)", SRING_HEADER_SIZE),
            konst!("offsetof(struct blktap_sring, ring[31])", entry_offset(31)),
            konst!("BLKTAP_IOCTL_ALLOC_TAP", IOCTL_ALLOC_TAP),
            konst!("BLKTAP_IOCTL_FREE_TAP", IOCTL_FREE_TAP),
            konst!("BLKTAP_IOCTL_RESPOND", IOCTL_RESPOND),
            konst!(
                "BLKTAP_IOCTL_CREATE_DEVICE_COMPAT",
                IOCTL_CREATE_DEVICE_COMPAT
            ),
            konst!("BLKTAP_IOCTL_REMOVE_DEVICE", IOCTL_REMOVE_DEVICE),
            konst!("BLKTAP_IOCTL_CREATE_DEVICE", IOCTL_CREATE_DEVICE),
            konst!("BLKTAP_IOCTL_NEGOTIATE", IOCTL_NEGOTIATE),
            konst!("BLKTAP2_IOCTL_SET_PARAMS", IOCTL_SET_PARAMS),
            konst!("BLKTAP2_IOCTL_PAUSE", IOCTL_PAUSE),
            konst!("BLKTAP2_IOCTL_REOPEN", IOCTL_REOPEN),
            konst!("BLKTAP2_IOCTL_RESUME", IOCTL_RESUME),
            konst!("BLKTAP2_RING_MESSAGE_PAUSE", RING_MESSAGE_PAUSE),
            konst!("BLKTAP2_RING_MESSAGE_RESUME", RING_MESSAGE_RESUME),
            konst!("BLKTAP2_RING_MESSAGE_CLOSE", RING_MESSAGE_CLOSE),
            konst!("BLKTAP_OP_FLUSH", OP_FLUSH),
            konst!("BLKTAP_OP_DISCARD", OP_DISCARD),
            konst!("BLKTAP_OP_WRITE_ZEROES", OP_WRITE_ZEROES),
            konst!("BLKTAP_REQ_FUA", REQ_FUA),
            konst!("BLKTAP_REQ_NOUNMAP", REQ_NOUNMAP),
            konst!("BLKTAP_FEATURES_VERSION", FEATURES_VERSION),
            konst!("BLKTAP_FEATURES_SIZE_V1", FEATURES_SIZE_V1),
            konst!("BLKTAP_FEAT_FLUSH", FEAT_FLUSH),
            konst!("BLKTAP_FEAT_DISCARD", FEAT_DISCARD),
            konst!("BLKTAP_FEAT_FUA", FEAT_FUA),
            konst!("BLKTAP_FEAT_WRITE_ZEROES", FEAT_WRITE_ZEROES),
            konst!("BLKTAP_FEAT_LARGE", FEAT_LARGE),
            konst!("BLKTAP_FEAT_LOW_LATENCY", FEAT_LOW_LATENCY),
            konst!("BLKTAP_LARGE_SEGMENT_MAX", LARGE_SEGMENT_MAX),
            konst!("BLKTAP_FEAT_DEEP", FEAT_DEEP),
            konst!("BLKTAP_DEEP_RING_SLOTS_MIN", DEEP_RING_SLOTS_MIN),
            konst!("BLKTAP_DEEP_RING_SLOTS_MAX", DEEP_RING_SLOTS_MAX),
            konst!("BLKTAP_DEEP_DATA_PAGES_MAX", DEEP_DATA_PAGES_MAX),
            konst!("BLKTAP_RING_PAGES(32)", ring_pages(32)),
            konst!("BLKTAP_RING_PAGES(128)", ring_pages(128)),
            konst!("BLKTAP_RING_PAGES(1024)", ring_pages(1024)),
            konst!(
                "BLKTAP_DEEP_MMAP_PAGES(128, 256)",
                deep_mmap_pages(128, 256)
            ),
            konst!(
                "BLKTAP_DEEP_MMAP_PAGES(1024, 11)",
                deep_mmap_pages(1024, 11)
            ),
            konst!(
                "BLKTAP_DEEP_DATA_PAGE(128, 256, 127, 255)",
                deep_data_page(128, 256, 127, 255)
            ),
            konst!("BLKTAP_MMAP_PAGES_LARGE(256)", mmap_pages_large(256)),
            konst!(
                "BLKTAP_LARGE_DATA_PAGE(64, 31, 63)",
                large_data_page(64, 31, 63)
            ),
            konst!("BLKTAP_MAX_RANGE_SECTORS", MAX_RANGE_SECTORS),
            konst!("BLKTAP_MAX_DISCARD_GRANULARITY", MAX_DISCARD_GRANULARITY),
            konst!("BLKTAP_MAX_DEVICES", MAX_DEVICES),
            konst!("BLKTAP_DEVICE_RO", DEVICE_RO),
            konst!("BLKTAP_DEVICE_PSZ", DEVICE_PSZ),
            konst!("BLKTAP_DEVICE_FLUSH", DEVICE_FLUSH),
            konst!("BLKTAP_DEVICE_TRIM", DEVICE_TRIM),
            konst!("BLKTAP2_MAX_MESSAGE_LEN", MAX_MESSAGE_LEN),
            konst!("BLKTAP_RING_SIZE", RING_SIZE),
            konst!("BLKTAP_SEGMENT_MAX", SEGMENT_MAX),
            konst!("BLKTAP_MMAP_PAGES", MMAP_PAGES),
            konst!("BLKTAP_DATA_PAGE(0, 0)", data_page(0, 0)),
            konst!("BLKTAP_DATA_PAGE(31, 10)", data_page(31, 10)),
            konst!("BLKTAP_DATA_PAGE(7, 3)", data_page(7, 3)),
            konst!("BLKTAP_OP_READ", OP_READ),
            konst!("BLKTAP_OP_WRITE", OP_WRITE),
            konst!("BLKTAP_RSP_OKAY", RSP_OKAY),
            konst!("BLKTAP_RSP_ERROR", RSP_ERROR),
            konst!("BLKTAP_RSP_EOPNOTSUPP", RSP_EOPNOTSUPP),
        ]
    }

    /// What the header declares, spelled as in [`expectations`]: each `BLKTAP*` macro's name,
    /// `sizeof(struct x)` for each struct and union, `offsetof(struct x, member)` for each
    /// member.
    fn header_items(header: &str) -> Vec<String> {
        let mut items = Vec::new();
        let mut aggregate: Option<&str> = None;
        for line in header.lines() {
            let text = line.trim_start();
            if let Some(rest) = line.strip_prefix("#define ") {
                let name = rest.split(['(', ' ', '\t']).next().unwrap_or_default();
                if name.starts_with("BLKTAP") {
                    items.push(name.to_string());
                }
            } else if let Some(name) = line
                .strip_suffix(" {")
                .filter(|l| l.starts_with("struct ") || l.starts_with("union "))
            {
                items.push(format!("sizeof({name})"));
                aggregate = Some(name);
            } else if line.starts_with("};") {
                aggregate = None;
            } else if let (Some(name), Some((decl, _))) = (aggregate, text.split_once(';')) {
                if text.starts_with("/*") || text.starts_with('*') {
                    continue;
                }
                let decl = decl.split('[').next().unwrap_or_default();
                let member = decl.split_whitespace().last().unwrap_or_default();
                items.push(format!("offsetof({name}, {member})"));
            }
        }
        items
    }

    /// Every macro, struct, union and member of the header is compared: an addition to the
    /// ABI fails here until the library has it and `expectations` compares it.
    #[test]
    fn every_header_item_is_compared() {
        let header =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/uapi/linux/blktap.h");
        let header = std::fs::read_to_string(&header)
            .unwrap_or_else(|e| panic!("{}: {e}", header.display()));
        let items = header_items(&header);
        assert!(items.len() > 50, "header parse found only {items:?}");
        let checks = expectations();
        let missing: Vec<&String> = items
            .iter()
            .filter(|item| {
                !checks
                    .iter()
                    .any(|(expr, _)| expr == item || expr.starts_with(&format!("{item}(")))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "not compared with the header: {missing:?}"
        );
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(size_of::<BlktapInfo>(), 12);
        assert_eq!(size_of::<DeviceInfo>(), 56);
        assert_eq!(size_of::<Blktap2Params>(), 272);
        assert_eq!(size_of::<Segment>(), 8);
        assert_eq!(size_of::<RingRequest>(), 112);
        assert_eq!(size_of::<RingResponse>(), 16);
        assert_eq!(size_of::<RingEntry>(), RING_ENTRY_SIZE);
        assert_eq!(size_of::<SringHeader>(), SRING_HEADER_SIZE);
        assert_eq!(entry_offset(1), 64 + 112);
        assert_eq!(MMAP_PAGES, 353);
        assert!(size_of::<Sring>() <= PAGE_SIZE);
    }

    #[test]
    fn layout_matches_c_header() {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let include = manifest.join("../../include");
        let header = include.join("uapi/linux/blktap.h");
        assert!(header.exists(), "{} not found", header.display());

        let checks = expectations();
        let mut src = String::from(
            "#include <stddef.h>\n#include <stdio.h>\n#include <uapi/linux/blktap.h>\nint main(void)\n{\n",
        );
        for (expr, _) in &checks {
            src.push_str(&format!("\tprintf(\"%lld\\n\", (long long)({expr}));\n"));
        }
        src.push_str("\treturn 0;\n}\n");

        let dir = std::env::temp_dir().join(format!("blktap-uapi-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c_file = dir.join("layout.c");
        let exe = dir.join("layout");
        std::fs::write(&c_file, &src).unwrap();
        let out = Command::new("cc")
            .arg("-std=gnu11")
            .arg("-Wall")
            .arg("-Werror")
            .arg("-I")
            .arg(&include)
            .arg("-o")
            .arg(&exe)
            .arg(&c_file)
            .output()
            .expect("running the system C compiler `cc`");
        assert!(
            out.status.success(),
            "cc failed:\n{}\n{src}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = Command::new(&exe)
            .output()
            .expect("running the layout program");
        assert!(run.status.success());
        let _ = std::fs::remove_dir_all(&dir);

        let stdout = String::from_utf8(run.stdout).unwrap();
        let values: Vec<i64> = stdout.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(values.len(), checks.len());
        let mismatches: Vec<String> = checks
            .iter()
            .zip(&values)
            .filter(|((_, rust), c)| rust != *c)
            .map(|((expr, rust), c)| format!("{expr}: C {c}, Rust {rust}"))
            .collect();
        assert!(
            mismatches.is_empty(),
            "layout mismatches:\n{}",
            mismatches.join("\n")
        );
    }

    #[test]
    fn params_name_is_truncated_and_terminated() {
        let long = "x".repeat(400);
        let p = Blktap2Params::new(8, 512).with_name(&long);
        assert_eq!(p.name[MAX_MESSAGE_LEN - 2], b'x');
        assert_eq!(p.name[MAX_MESSAGE_LEN - 1], 0);
        let p = Blktap2Params::new(8, 512).with_name("vbd");
        assert_eq!(&p.name[..4], b"vbd\0");
    }

    #[test]
    fn range_request_round_trip() {
        let r = RingRangeRequest::new(OP_DISCARD, REQ_FUA, 4, 100, 0x1_2345_6789);
        let raw = r.to_request();
        assert_eq!(raw.operation, OP_DISCARD);
        assert_eq!(raw.nr_segments, 0);
        assert_eq!(RingRangeRequest::from_request(&raw), r);
        // The same bytes as the C layout: nr_sectors at offset 24.
        let entry = RingEntry { req: raw };
        // SAFETY: both views are plain data of the same slot.
        assert_eq!(unsafe { entry.range }, r);
        assert_eq!(size_of::<Features>(), FEATURES_SIZE_V1 as usize);
    }

    #[test]
    fn request_builder() {
        let r = RingRequest::new(OP_WRITE, 3, 100, &[(0, 7), (2, 3)]);
        assert_eq!(r.nr_segments, 2);
        assert_eq!(r.seg[1], Segment::new(2, 3));
        assert_eq!(r.seg[2], Segment::default());
    }
}
