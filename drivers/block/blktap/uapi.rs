// SPDX-License-Identifier: GPL-2.0

//! The blktap2 userspace ABI ("V-XS" variant), mirroring `include/uapi/linux/blktap.h`.
//!
//! Layouts are checked at build time below and by the `blktap_uapi` KUnit suite.

use core::mem::{
    offset_of,
    size_of, //
};

use kernel::{
    page::PAGE_SIZE,
    prelude::*,
    transmute::{
        AsBytes,
        FromBytes, //
    }, //
};

/// Control ioctl: allocate a tap; argument: `*mut BlktapInfo` (out).
pub(crate) const IOCTL_ALLOC_TAP: u32 = 200;
/// Control ioctl: free a tap; argument: the minor, by value.
pub(crate) const IOCTL_FREE_TAP: u32 = 201;
/// Ring ioctl: consume responses up to `rsp_prod`.
pub(crate) const IOCTL_RESPOND: u32 = 1;
/// Ring ioctl: create the block device from a `Blktap2Params`.
pub(crate) const IOCTL_CREATE_DEVICE_COMPAT: u32 = 202;
/// Ring ioctl: remove the block device.
pub(crate) const IOCTL_REMOVE_DEVICE: u32 = 207;
/// Ring ioctl: create the block device from a `DeviceInfo`.
pub(crate) const IOCTL_CREATE_DEVICE: u32 = 208;

/// Number of taps (minors) supported.
pub(crate) const MAX_DEVICES: u32 = 16384;
/// Entries of the shared ring.
pub(crate) const RING_SIZE: usize = 32;
/// Data pages (segments) per request.
pub(crate) const SEGMENT_MAX: usize = 11;
/// Pages of the ring mapping: the ring page, then `RING_SIZE * SEGMENT_MAX` data pages.
pub(crate) const MMAP_PAGES: usize = 1 + RING_SIZE * SEGMENT_MAX;
/// Bytes of the ring page before the first entry.
pub(crate) const RING_HEADER_SIZE: usize = 64;
/// Bytes of one ring entry (request or response).
pub(crate) const RING_ENTRY_SIZE: usize = 112;

/// Request operation: read.
pub(crate) const OP_READ: u8 = 0;
/// Request operation: write.
pub(crate) const OP_WRITE: u8 = 1;
/// Response status: success (any other value fails the request).
pub(crate) const RSP_OKAY: i16 = 0;

/// `DeviceInfo::flags`: the disk is read-only.
pub(crate) const DEVICE_RO: u64 = 0x1;
/// Length of `Blktap2Params::name`, NUL included.
pub(crate) const NAME_MAX: usize = 256;

/// Reply of `IOCTL_ALLOC_TAP`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct BlktapInfo {
    /// Major of the ring char devices.
    pub(crate) ring_major: u32,
    /// Major of the block devices.
    pub(crate) bdev_major: u32,
    /// The allocated minor.
    pub(crate) ring_minor: u32,
}

// SAFETY: three `u32`, no padding.
unsafe impl AsBytes for BlktapInfo {}

/// Argument of `IOCTL_CREATE_DEVICE` (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct DeviceInfo {
    /// Size in 512-byte sectors.
    pub(crate) capacity: u64,
    /// Logical block size.
    pub(crate) sector_size: u32,
    /// Physical block size.
    pub(crate) physical_sector_size: u32,
    /// `DEVICE_RO`; other bits ignored.
    pub(crate) flags: u64,
    /// Ignored.
    pub(crate) reserved: [u64; 4],
}

// SAFETY: integers only, no padding; any bit pattern is valid.
unsafe impl FromBytes for DeviceInfo {}

/// Argument of `IOCTL_CREATE_DEVICE_COMPAT` (272 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Blktap2Params {
    /// Tap name, NUL-terminated or full.
    pub(crate) name: [u8; NAME_MAX],
    /// Size in 512-byte sectors.
    pub(crate) capacity: u64,
    /// Logical and physical block size.
    pub(crate) sector_size: u64,
}

// SAFETY: bytes and integers, no padding; any bit pattern is valid.
unsafe impl FromBytes for Blktap2Params {}

/// One data segment of a request: sectors `first_sect..=last_sect` of its page.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Unused (grant reference slot of Xen's blkif).
    pub(crate) pad: u32,
    /// First 512-byte sector of the page used.
    pub(crate) first_sect: u8,
    /// Last 512-byte sector of the page used.
    pub(crate) last_sect: u8,
    /// Padding.
    pub(crate) pad2: [u8; 2],
}

/// A request entry, as the kernel writes it (112 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct RingRequest {
    /// `OP_READ` or `OP_WRITE`.
    pub(crate) operation: u8,
    /// Segments used, `1..=SEGMENT_MAX`.
    pub(crate) nr_segments: u8,
    /// Padding.
    pub(crate) pad: u16,
    /// Padding.
    pub(crate) pad2: u32,
    /// Slot index in `0..RING_SIZE`, selecting the data pages.
    pub(crate) id: u64,
    /// First sector, in 512-byte units.
    pub(crate) sector_number: u64,
    /// The segments.
    pub(crate) seg: [Segment; SEGMENT_MAX],
}

/// A response entry, as the daemon writes it (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct RingResponse {
    /// Id of the request answered.
    pub(crate) id: u64,
    /// Operation of the request answered.
    pub(crate) operation: u8,
    /// Padding.
    pub(crate) pad: u8,
    /// `RSP_OKAY` or an error.
    pub(crate) status: i16,
    /// Padding.
    pub(crate) pad2: u32,
}

// Build-time layout checks against the C header's documented offsets.
const _: () = {
    assert!(size_of::<BlktapInfo>() == 12);
    assert!(size_of::<DeviceInfo>() == 56);
    assert!(offset_of!(DeviceInfo, sector_size) == 8);
    assert!(offset_of!(DeviceInfo, physical_sector_size) == 12);
    assert!(offset_of!(DeviceInfo, flags) == 16);
    assert!(size_of::<Blktap2Params>() == 272);
    assert!(offset_of!(Blktap2Params, capacity) == 256);
    assert!(offset_of!(Blktap2Params, sector_size) == 264);
    assert!(size_of::<Segment>() == 8);
    assert!(offset_of!(Segment, first_sect) == 4);
    assert!(offset_of!(Segment, last_sect) == 5);
    assert!(size_of::<RingRequest>() == RING_ENTRY_SIZE);
    assert!(offset_of!(RingRequest, id) == 8);
    assert!(offset_of!(RingRequest, sector_number) == 16);
    assert!(offset_of!(RingRequest, seg) == 24);
    assert!(size_of::<RingResponse>() == 16);
    assert!(offset_of!(RingResponse, operation) == 8);
    assert!(offset_of!(RingResponse, status) == 10);
    assert!(RING_HEADER_SIZE + RING_SIZE * RING_ENTRY_SIZE <= PAGE_SIZE);
    assert!(MMAP_PAGES == 353);
};

#[kunit_tests(blktap_uapi)]
mod tests {
    use super::*;

    #[test]
    fn control_layout() {
        assert_eq!(size_of::<BlktapInfo>(), 12);
        assert_eq!(offset_of!(BlktapInfo, bdev_major), 4);
        assert_eq!(offset_of!(BlktapInfo, ring_minor), 8);
    }

    #[test]
    fn device_info_layout() {
        assert_eq!(size_of::<DeviceInfo>(), 56);
        assert_eq!(offset_of!(DeviceInfo, flags), 16);
        assert_eq!(offset_of!(DeviceInfo, reserved), 24);
        assert_eq!(size_of::<Blktap2Params>(), 272);
    }

    #[test]
    fn ring_layout() {
        assert_eq!(size_of::<RingRequest>(), 112);
        assert_eq!(size_of::<RingResponse>(), 16);
        assert_eq!(RING_HEADER_SIZE + RING_SIZE * RING_ENTRY_SIZE, 3648);
        assert_eq!(MMAP_PAGES, 353);
    }

    #[test]
    fn ioctl_numbers_are_plain() {
        assert_eq!(IOCTL_RESPOND, 1);
        assert_eq!(IOCTL_ALLOC_TAP, 200);
        assert_eq!(IOCTL_FREE_TAP, 201);
        assert_eq!(IOCTL_CREATE_DEVICE_COMPAT, 202);
        assert_eq!(IOCTL_REMOVE_DEVICE, 207);
        assert_eq!(IOCTL_CREATE_DEVICE, 208);
    }
}
