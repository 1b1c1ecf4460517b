//! `fuzz`: ioctl and mmap fuzzing of the control and ring devices.
//!
//! Part one probes every argument class once and asserts the documented errno: bad, kernel,
//! non-canonical, read-only and truncated pointers (a struct ending in an unmapped page),
//! out-of-range and truncated minors, unknown commands, every `blktap_device_info` field at
//! and beyond its limits, `NEGOTIATE` with every pointer class and 400 `blktap_features` with
//! fields at and beyond their limits, mmap with wrong lengths, offsets, `MAP_PRIVATE` and `PROT_EXEC`,
//! partial munmap, mprotect, mremap and madvise on the ring, `fork` of the mapping process,
//! and processes racing to open and to map one ring.
//!
//! Part two is a seeded random walk over a model of a few taps: allocate, free, open, close,
//! map (with good and bad arguments), unmap (whole or partial), the ring ioctls with random
//! arguments (`NEGOTIATE` included: the session's agreement, the disk's, and who made it are in
//! the model), opening, reading and closing the disk, and ioctls from a forked child. The model
//! predicts the result of every step from the design; any difference stops the walk and is
//! reported with the seed and the steps that led to it.

use crate::daemon::Backend;
use crate::ktap::Ktap;
use crate::rng::Rng;
use crate::util::{self, AlignedBuf, ChildEnd, TapDebug, BLOCK};
use crate::{maps_lookup, Env};
use blktap::node::{self, NodeKind};
use blktap::ring::RingMemory;
use blktap::uapi::{self, BlktapInfo, MAX_DEVICES, MMAP_SIZE, PAGE_SIZE};
use blktap::{sysfs, Control, Errno};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of the `fuzz` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct FuzzArgs {
    /// Random seed [default: from the clock]; printed so that a failure can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Steps of the random walk.
    #[arg(long, default_value_t = 300)]
    pub iterations: u32,
    /// Taps the random walk juggles.
    #[arg(long, default_value_t = 3)]
    pub taps: usize,
    /// Skip part one (the fixed probes).
    #[arg(long)]
    pub walk_only: bool,
}

// ---------------------------------------------------------------------------------------------
// Raw system calls returning an errno (0 = success).

fn ioctl(fd: RawFd, cmd: u32, arg: u64) -> i32 {
    // SAFETY: the callers pass either values or pointers that are valid or deliberately
    // invalid (never pointing at live Rust objects the kernel could corrupt, except buffers
    // made for the purpose).
    let r = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg as libc::c_ulong) };
    if r < 0 {
        util::last_errno()
    } else {
        0
    }
}

/// A raw mapping, unmapped on drop (unless a partial munmap already changed it).
struct RawMap {
    addr: *mut u8,
    len: usize,
}

impl RawMap {
    fn new(fd: RawFd, len: usize, prot: i32, flags: i32, off: i64) -> Result<Self, i32> {
        // SAFETY: a new mapping at an address the kernel chooses.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(util::last_errno());
        }
        Ok(Self {
            addr: p.cast(),
            len,
        })
    }

    fn anon(pages: usize) -> Self {
        Self::new(
            -1,
            pages * PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            0,
        )
        .expect("anonymous mapping")
    }

    /// A page shared with the children forked after this, for counters they all update.
    fn shared_page() -> Self {
        Self::new(
            -1,
            PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            0,
        )
        .expect("shared page")
    }

    /// The `i`th 32-bit counter of a [`Self::shared_page`].
    fn counter(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        assert!((i + 1) * 4 <= self.len);
        // SAFETY: inside the mapping and aligned; the page is only ever used atomically (by
        // every process sharing it) and the borrow keeps it mapped.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.addr.add(i * 4).cast()) }
    }

    /// The ring memory of a full-size ring mapping.
    fn memory(&self) -> RingMemory<'_> {
        assert!(self.len > MMAP_SIZE - PAGE_SIZE);
        // SAFETY: the mapping covers MMAP_SIZE bytes (a ring mapping rounded up to pages)
        // and lives as long as the borrow.
        unsafe { RingMemory::from_raw(self.addr) }
    }

    fn page(&self, i: usize) -> *mut u8 {
        // SAFETY: callers stay inside the mapping.
        unsafe { self.addr.add(i * PAGE_SIZE) }
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

fn mprotect(addr: *mut u8, len: usize, prot: i32) -> i32 {
    // SAFETY: only changes protections of our own mappings.
    if unsafe { libc::mprotect(addr.cast(), len, prot) } < 0 {
        util::last_errno()
    } else {
        0
    }
}

fn munmap(addr: *mut u8, len: usize) -> i32 {
    // SAFETY: used on (parts of) the ring mapping, which nothing else references while the
    // call is expected to be refused; a successful call is accounted for by the caller.
    if unsafe { libc::munmap(addr.cast(), len) } < 0 {
        util::last_errno()
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Pointer arguments.

/// A pointer class for ioctl arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    Valid,
    Null,
    Low,
    Kernel,
    NonCanonical,
    ProtNone,
    ReadOnly,
    /// The struct ends in an unmapped page.
    Truncated,
}

const PTRS: [Ptr; 8] = [
    Ptr::Valid,
    Ptr::Null,
    Ptr::Low,
    Ptr::Kernel,
    Ptr::NonCanonical,
    Ptr::ProtNone,
    Ptr::ReadOnly,
    Ptr::Truncated,
];

/// Three pages: read/write, inaccessible, read-only.
struct Arena {
    map: RawMap,
}

impl Arena {
    fn new() -> Self {
        let map = RawMap::anon(3);
        assert_eq!(mprotect(map.page(1), PAGE_SIZE, libc::PROT_NONE), 0);
        assert_eq!(mprotect(map.page(2), PAGE_SIZE, libc::PROT_READ), 0);
        Self { map }
    }

    /// A pointer of class `p` to `size` bytes holding `content` where the class allows.
    fn ptr(&self, p: Ptr, content: &[u8]) -> u64 {
        let size = content.len();
        match p {
            Ptr::Valid => {
                // SAFETY: page 0 is ours and writable; content fits in a page.
                unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), self.map.page(0), size) };
                self.map.page(0) as u64
            }
            Ptr::Null => 0,
            Ptr::Low => 0x10,
            Ptr::Kernel => 0xffff_8880_0000_0000,
            Ptr::NonCanonical => 0x8000_0000_0000_0000,
            Ptr::ProtNone => self.map.page(1) as u64,
            Ptr::ReadOnly => {
                assert_eq!(
                    mprotect(
                        self.map.page(2),
                        PAGE_SIZE,
                        libc::PROT_READ | libc::PROT_WRITE
                    ),
                    0
                );
                // SAFETY: page 2 is ours and writable for the moment.
                unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), self.map.page(2), size) };
                assert_eq!(mprotect(self.map.page(2), PAGE_SIZE, libc::PROT_READ), 0);
                self.map.page(2) as u64
            }
            Ptr::Truncated => {
                // All but the last 4 bytes fit before the inaccessible page.
                let keep = size - 4;
                // SAFETY: `page(1) - keep` .. `page(1)` is inside writable page 0.
                let start = unsafe { self.map.page(1).sub(keep) };
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), start, keep) };
                start as u64
            }
        }
    }
}

/// Whether the kernel can read a struct through a pointer of class `p`.
fn readable(p: Ptr) -> bool {
    matches!(p, Ptr::Valid | Ptr::ReadOnly)
}

/// What CREATE_DEVICE or CREATE_DEVICE_COMPAT with its argument at `p` returns, by the model,
/// which has the driver read the argument first, then check the mapping, an existing disk and
/// the parameters (`valid`). Both commands share it so that their order cannot drift apart.
fn create_want(p: Ptr, mapped: bool, has_disk: bool, valid: bool) -> i32 {
    if !readable(p) {
        libc::EFAULT
    } else if !mapped {
        libc::EACCES
    } else if has_disk {
        libc::EEXIST
    } else if !valid {
        libc::EINVAL
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Device parameters.

/// A raw `blktap_device_info` (56 bytes).
#[derive(Clone, Copy, Debug)]
struct Info {
    capacity: u64,
    lbs: u32,
    pbs: u32,
    flags: u64,
    rsvd: [u64; 4],
}

impl Info {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(56);
        b.extend_from_slice(&self.capacity.to_ne_bytes());
        b.extend_from_slice(&self.lbs.to_ne_bytes());
        b.extend_from_slice(&self.pbs.to_ne_bytes());
        b.extend_from_slice(&self.flags.to_ne_bytes());
        for r in self.rsvd {
            b.extend_from_slice(&r.to_ne_bytes());
        }
        b
    }

    /// V-OXT's reading of these bytes (issue 21), if the word at offset 12 (`pbs`) is 0: the
    /// 40-byte layout, whose physical fields are the two halves of `rsvd[0]` (read only with
    /// PSZ) and trim fields those of `rsvd[1]` (only with TRIM).
    fn oxt(&self) -> Option<Oxt> {
        if self.pbs != 0 {
            return None;
        }
        let lbs = self.lbs;
        let lo = |w: u64| w as u32;
        let hi = |w: u64| (w >> 32) as u32;
        let geometry = |size: u32, offset: u32| {
            size.is_power_of_two() && size >= lbs && offset % lbs == 0 && offset < size
        };
        let mut valid = self.capacity != 0
            && lbs.is_power_of_two()
            && (512..=4096).contains(&lbs)
            && self.capacity <= u64::MAX >> lbs.trailing_zeros();
        if self.flags & uapi::DEVICE_PSZ != 0 {
            valid &= geometry(lo(self.rsvd[0]), hi(self.rsvd[0]));
        }
        let flush = self.flags & uapi::DEVICE_FLUSH != 0;
        // The agreement, as a key of the walk's model (see `Tap::session`): 0 V-XS, 1 FLUSH
        // (what NEGOTIATE FLUSH agrees on, too); with TRIM one of its own per geometry.
        let agreement = if self.flags & uapi::DEVICE_TRIM != 0 {
            let (g, a) = (lo(self.rsvd[1]), hi(self.rsvd[1]));
            valid &= geometry(g, a) && g <= uapi::MAX_DISCARD_GRANULARITY;
            ((1 << 63) * usize::from(flush)) | ((g as usize) << 32) | a as usize
        } else {
            usize::from(flush)
        };
        Some(Oxt { valid, agreement })
    }

    /// What CREATE_DEVICE with these bytes at `p` returns, by the model: [`create_want`] for
    /// the V-XS layout; for V-OXT's, the argument (at most 40 bytes, so a truncated pointer
    /// still reads), the mapping, the geometry, the flags written back, then the agreement
    /// against the session's negotiation and an existing disk's.
    fn want(&self, p: Ptr, mapped: bool, disk: Option<usize>, session: Option<usize>) -> i32 {
        let Some(oxt) = self.oxt() else {
            let want = create_want(p, mapped, disk.is_some(), self.valid());
            return match disk {
                Some(d) if want == libc::EEXIST && session.unwrap_or(0) != d => libc::EINVAL,
                _ => want,
            };
        };
        if !(readable(p) || p == Ptr::Truncated) {
            libc::EFAULT
        } else if !mapped {
            libc::EACCES
        } else if !oxt.valid {
            libc::EINVAL
        } else if p == Ptr::ReadOnly {
            libc::EFAULT
        } else if session.is_some_and(|s| s != oxt.agreement) {
            libc::EINVAL
        } else if let Some(d) = disk {
            if d == oxt.agreement {
                libc::EEXIST
            } else {
                libc::EINVAL
            }
        } else {
            0
        }
    }

    /// The validation the design documents (V-XS rules).
    fn valid(&self) -> bool {
        let (lbs, pbs) = (self.lbs, self.pbs);
        self.capacity != 0
            && lbs.is_power_of_two()
            && (512..=4096).contains(&lbs)
            && pbs.is_power_of_two()
            && pbs >= 512
            && self.capacity <= u64::MAX >> lbs.trailing_zeros()
    }

    /// A V-OXT 40-byte info (zero at offset 12), mostly valid: FLUSH, TRIM and PSZ in any
    /// mix, physical 4096 at offset 0 or 1024, trim granularity 4096 or 8192, sometimes a bad
    /// value.
    fn random_oxt(rng: &mut Rng) -> Self {
        let flags = *rng.pick(&[
            0,
            uapi::DEVICE_FLUSH,
            uapi::DEVICE_TRIM,
            uapi::DEVICE_FLUSH | uapi::DEVICE_TRIM,
            uapi::DEVICE_FLUSH | uapi::DEVICE_TRIM | uapi::DEVICE_PSZ,
            uapi::DEVICE_RO | uapi::DEVICE_PSZ | 0x10,
        ]);
        let phys = u64::from(*rng.pick(&[4096u32, 4096, 512, 3000]));
        let offset = u64::from(*rng.pick(&[0u32, 0, 1024, 4096]));
        let gran = u64::from(*rng.pick(&[4096u32, 4096, 8192, 0]));
        Self {
            capacity: 2048 * rng.range(1, 8),
            lbs: 512,
            pbs: 0,
            flags,
            rsvd: [phys | offset << 32, gran, 0, 0],
        }
    }

    fn random(rng: &mut Rng) -> Self {
        let lbs = *rng.pick(&[512, 512, 4096, 1024, 2048, 0, 256, 511, 513, 8192, u32::MAX]);
        let shift = if lbs.is_power_of_two() && lbs >= 512 {
            lbs.trailing_zeros()
        } else {
            9
        };
        let capacity = *rng.pick(&[
            2048,
            2048,
            16,
            1,
            1 << 21,
            0,
            u64::MAX >> shift,
            (u64::MAX >> shift) + 1,
            u64::MAX,
        ]);
        let pbs = if rng.chance(50) {
            lbs
        } else {
            *rng.pick(&[0, 256, 512, 1000, 4096, 65536, 1 << 31, u32::MAX])
        };
        let flags = *rng.pick(&[0, 0, 1, 2, u64::MAX]);
        let rsvd = if rng.chance(70) {
            [0; 4]
        } else {
            [
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
            ]
        };
        Self {
            capacity,
            lbs,
            pbs,
            flags,
            rsvd,
        }
    }
}

/// The model of a V-OXT `CREATE_DEVICE` (see [`Info::oxt`]).
struct Oxt {
    /// The geometry passes V-OXT's checks.
    valid: bool,
    /// The agreement the flags claim, as a key comparable with the negotiated ones.
    agreement: usize,
}

/// A raw `blktap2_params` (272 bytes).
fn params_bytes(name: &[u8], capacity: u64, sector_size: u64) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    b[..name.len().min(256)].copy_from_slice(&name[..name.len().min(256)]);
    b.extend_from_slice(&capacity.to_ne_bytes());
    b.extend_from_slice(&sector_size.to_ne_bytes());
    b
}

fn params_valid(capacity: u64, sector_size: u64) -> bool {
    u32::try_from(sector_size).is_ok_and(|s| {
        Info {
            capacity,
            lbs: s,
            pbs: s,
            flags: 0,
            rsvd: [0; 4],
        }
        .valid()
    })
}

/// An ioctl number that neither driver nor the VFS implements: random, avoiding the
/// blktap numbers and the ioctl types the VFS handles itself for every file (FIOCLEX and
/// friends, FIFREEZE, FS_IOC_*, FICLONE, FIGETBSZ).
fn unknown_cmd(rng: &mut Rng) -> u32 {
    loop {
        let cmd = match rng.below(3) {
            0 => rng.below(1024) as u32,
            1 => rng.range(210, 215) as u32,
            _ => rng.next_u32(),
        };
        let ty = (cmd >> 8) & 0xff;
        let known = [
            uapi::IOCTL_RESPOND,
            uapi::IOCTL_ALLOC_TAP,
            uapi::IOCTL_FREE_TAP,
            uapi::IOCTL_CREATE_DEVICE_COMPAT,
            uapi::IOCTL_REMOVE_DEVICE,
            uapi::IOCTL_CREATE_DEVICE,
            uapi::IOCTL_NEGOTIATE,
            uapi::IOCTL_SET_PARAMS,
            uapi::IOCTL_PAUSE,
            uapi::IOCTL_REOPEN,
            uapi::IOCTL_RESUME,
            2, // FIGETBSZ
        ];
        if !known.contains(&cmd) && ![0x54, 0x58, 0x66, 0x94, 0x15].contains(&ty) {
            return cmd;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part one: fixed probes.

/// Checks that 64 random unknown ioctls on `fd` (the `what` node) are all ENOTTY.
fn unknown_ioctls(t: &mut Ktap, what: &str, fd: RawFd, arena: &Arena, rng: &mut Rng) {
    let mut bad = Vec::new();
    for _ in 0..64 {
        let cmd = unknown_cmd(rng);
        let r = ioctl(fd, cmd, arena.ptr(Ptr::Valid, &[0u8; 64]));
        if r != libc::ENOTTY {
            bad.push(format!("{cmd:#x}: {}", util::errno_name(r)));
        }
    }
    t.check(
        &format!("fuzz: 64 unknown {what} ioctls are ENOTTY"),
        bad.is_empty(),
        || bad.join(", "),
    );
}

fn errno_check(t: &mut Ktap, name: &str, got: i32, want: i32) -> bool {
    t.check(name, got == want, || {
        format!(
            "got {}, expected {}",
            util::errno_name(got),
            util::errno_name(want)
        )
    })
}

fn probes_control(env: &Env, t: &mut Ktap, ctl: &Control, arena: &Arena, rng: &mut Rng) {
    let fd = ctl.as_fd().as_raw_fd();
    let before = env.allocated().unwrap_or_default();
    for p in PTRS.iter().filter(|&&p| p != Ptr::Valid) {
        let arg = arena.ptr(*p, &[0u8; 12]);
        let r = ioctl(fd, uapi::IOCTL_ALLOC_TAP, arg);
        errno_check(
            t,
            &format!("fuzz: ALLOC_TAP with a {p:?} pointer is EFAULT"),
            r,
            libc::EFAULT,
        );
    }
    let after = env.allocated().unwrap_or_default();
    t.check(
        "fuzz: refused ALLOC_TAPs leave no tap behind",
        before == after,
        || format!("before {before:?}, after {after:?}"),
    );
    let tap = match ctl.alloc() {
        Ok(i) => i.ring_minor,
        Err(e) => return t.fail("fuzz: ALLOC_TAP", &e),
    };
    for (what, v) in [
        ("-1", u64::MAX),
        ("i64::MIN", i64::MIN as u64),
        ("16384", 16384),
        ("u32::MAX", u64::from(u32::MAX)),
        ("1<<32 | minor", (1 << 32) | u64::from(tap)),
        ("1<<63 | minor", (1 << 63) | u64::from(tap)),
    ] {
        let r = ioctl(fd, uapi::IOCTL_FREE_TAP, v);
        errno_check(
            t,
            &format!("fuzz: FREE_TAP({what}) is EINVAL"),
            r,
            libc::EINVAL,
        );
    }
    t.check(
        "fuzz: the tap survives out-of-range FREE_TAPs",
        env.allocated().unwrap_or_default().contains(&tap),
        || format!("minor {tap} is gone"),
    );
    let unused = (0..MAX_DEVICES)
        .rev()
        .find(|m| !after.contains(m) && *m != tap);
    if let Some(m) = unused {
        let r = ioctl(fd, uapi::IOCTL_FREE_TAP, u64::from(m));
        errno_check(
            t,
            &format!("fuzz: FREE_TAP({m}) of an unused minor is ENODEV"),
            r,
            libc::ENODEV,
        );
    }
    unknown_ioctls(t, "control", fd, arena, rng);
    let r = ctl.free(tap);
    t.expect_ok("fuzz: FREE_TAP", r);
}

/// The probes on one tap's ring. `path` is its node.
fn probes_ring(
    env: &Env,
    t: &mut Ktap,
    info: &BlktapInfo,
    path: &Path,
    arena: &Arena,
    rng: &mut Rng,
) {
    let fd = match util::open_raw(path, libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => return t.fail("fuzz: open ring", &util::errno_name(e)),
    };
    let raw = fd.as_raw_fd();
    let good_info = Info {
        capacity: 2048,
        lbs: 512,
        pbs: 512,
        flags: 0,
        rsvd: [0; 4],
    }
    .bytes();
    // Before mmap.
    errno_check(
        t,
        "fuzz: RESPOND before mmap is EACCES",
        ioctl(raw, uapi::IOCTL_RESPOND, 0),
        libc::EACCES,
    );
    let arg = arena.ptr(Ptr::Valid, &good_info);
    errno_check(
        t,
        "fuzz: CREATE_DEVICE before mmap is EACCES",
        ioctl(raw, uapi::IOCTL_CREATE_DEVICE, arg),
        libc::EACCES,
    );
    for p in PTRS.iter().filter(|&&p| !readable(p)) {
        let arg = arena.ptr(*p, &good_info);
        errno_check(
            t,
            &format!("fuzz: CREATE_DEVICE with a {p:?} pointer is EFAULT"),
            ioctl(raw, uapi::IOCTL_CREATE_DEVICE, arg),
            libc::EFAULT,
        );
        let params = params_bytes(b"x", 2048, 512);
        let arg = arena.ptr(*p, &params);
        errno_check(
            t,
            &format!("fuzz: CREATE_DEVICE_COMPAT with a {p:?} pointer is EFAULT"),
            ioctl(raw, uapi::IOCTL_CREATE_DEVICE_COMPAT, arg),
            libc::EFAULT,
        );
    }
    // mmap arguments.
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let shared = libc::MAP_SHARED;
    let cases: [MmapCase; 10] = [
        ("length 0", 0, rw, shared, 0, &[libc::EINVAL]),
        ("1 page", PAGE_SIZE, rw, shared, 0, &[libc::EINVAL]),
        (
            "352 pages",
            MMAP_SIZE - PAGE_SIZE,
            rw,
            shared,
            0,
            &[libc::EINVAL],
        ),
        (
            "354 pages",
            MMAP_SIZE + PAGE_SIZE,
            rw,
            shared,
            0,
            &[libc::EINVAL],
        ),
        (
            "353 pages + 1 byte",
            MMAP_SIZE + 1,
            rw,
            shared,
            0,
            &[libc::EINVAL],
        ),
        (
            "offset 1 page",
            MMAP_SIZE,
            rw,
            shared,
            PAGE_SIZE as i64,
            &[libc::EINVAL],
        ),
        ("offset 1 byte", MMAP_SIZE, rw, shared, 1, &[libc::EINVAL]),
        (
            "MAP_PRIVATE",
            MMAP_SIZE,
            rw,
            libc::MAP_PRIVATE,
            0,
            &[libc::EINVAL],
        ),
        (
            "PROT_EXEC",
            MMAP_SIZE,
            rw | libc::PROT_EXEC,
            shared,
            0,
            &[libc::EPERM],
        ),
        (
            "64 TiB",
            1 << 46,
            rw,
            shared,
            0,
            &[libc::ENOMEM, libc::EINVAL],
        ),
    ];
    for (what, len, prot, flags, off, want) in cases {
        let r = RawMap::new(raw, len, prot, flags, off).map(drop);
        let e = r.err().unwrap_or(0);
        t.check(
            &format!("fuzz: mmap with {what} is refused"),
            want.contains(&e),
            || {
                format!(
                    "got {}, expected {:?}",
                    util::errno_name(e),
                    want.iter()
                        .map(|&x| util::errno_name(x))
                        .collect::<Vec<_>>()
                )
            },
        );
    }
    // A length that rounds up to 353 pages is a 353-page mapping.
    match RawMap::new(raw, MMAP_SIZE - 100, rw, shared, 0) {
        Ok(m) => {
            t.check(
                "fuzz: mmap of 353 pages minus 100 bytes (rounds up) is accepted",
                true,
                String::new,
            );
            drop(m);
        }
        Err(e) => t.fail(
            "fuzz: mmap of 353 pages minus 100 bytes (rounds up) is accepted",
            &util::errno_name(e),
        ),
    }
    let map = match RawMap::new(raw, MMAP_SIZE, rw, shared, 0) {
        Ok(m) => m,
        Err(e) => return t.fail("fuzz: mmap of the ring", &util::errno_name(e)),
    };
    let e = RawMap::new(raw, MMAP_SIZE, rw, shared, 0)
        .err()
        .unwrap_or(0);
    errno_check(t, "fuzz: second mmap is EBUSY", e, libc::EBUSY);
    let e = RawMap::new(raw, PAGE_SIZE, rw, libc::MAP_PRIVATE, 0)
        .err()
        .unwrap_or(0);
    errno_check(
        t,
        "fuzz: second mmap with bad arguments is still refused",
        e,
        libc::EBUSY,
    );
    probes_negotiate(t, raw, arena, rng);
    let intact = |t: &mut Ktap, after: &str| {
        let hdr = map.memory().header();
        let maps = maps_lookup(map.addr as usize, map.addr as usize + MMAP_SIZE);
        let vma_ok = matches!(maps, Ok((Some((s, e)), _)) if e - s == MMAP_SIZE);
        let resp = ioctl(raw, uapi::IOCTL_RESPOND, 0);
        t.check(
            &format!("fuzz: the ring is intact after {after}"),
            vma_ok && resp == 0 && hdr.req_event == 1,
            || {
                format!(
                    "vma {maps:?}, RESPOND {}, header {hdr:?}",
                    util::errno_name(resp)
                )
            },
        );
    };
    for (what, off, len) in [
        ("the first page", 0, PAGE_SIZE),
        ("the last page", MMAP_SIZE - PAGE_SIZE, PAGE_SIZE),
        ("a middle page", 100 * PAGE_SIZE, PAGE_SIZE),
    ] {
        // SAFETY: inside the mapping.
        let r = munmap(unsafe { map.addr.add(off) }, len);
        errno_check(
            t,
            &format!("fuzz: munmap of {what} is EINVAL"),
            r,
            libc::EINVAL,
        );
    }
    intact(t, "partial munmaps");
    // SAFETY: inside the mapping.
    let r = mprotect(
        unsafe { map.addr.add(PAGE_SIZE) },
        PAGE_SIZE,
        libc::PROT_READ,
    );
    errno_check(t, "fuzz: mprotect of one page is EINVAL", r, libc::EINVAL);
    let r = mprotect(map.addr, MMAP_SIZE, rw | libc::PROT_EXEC);
    errno_check(
        t,
        "fuzz: mprotect PROT_EXEC of the ring is EACCES",
        r,
        libc::EACCES,
    );
    let r = mprotect(map.addr, MMAP_SIZE, libc::PROT_READ);
    let r2 = mprotect(map.addr, MMAP_SIZE, rw);
    t.check(
        "fuzz: mprotect of the whole ring to read-only and back works",
        r == 0 && r2 == 0,
        || format!("{} / {}", util::errno_name(r), util::errno_name(r2)),
    );
    intact(t, "mprotect");
    // mremap: grow, shrink, move.
    // SAFETY: mremap of our own mapping; on success the old address would be invalid, which
    // the checks below report (and the mapping is then leaked rather than reused).
    let grow = unsafe { libc::mremap(map.addr.cast(), MMAP_SIZE, MMAP_SIZE + PAGE_SIZE, 0) };
    t.check(
        "fuzz: mremap growing the ring is refused",
        grow == libc::MAP_FAILED,
        || "it succeeded".to_string(),
    );
    // SAFETY: as above.
    let shrink = unsafe { libc::mremap(map.addr.cast(), MMAP_SIZE, PAGE_SIZE, 0) };
    t.check(
        "fuzz: mremap shrinking the ring is refused",
        shrink == libc::MAP_FAILED,
        || "it succeeded".to_string(),
    );
    let hole = RawMap::anon(MMAP_PAGES_USIZE + 1);
    // SAFETY: moving onto our own placeholder mapping, which MREMAP_FIXED replaces.
    let moved = unsafe {
        libc::mremap(
            map.addr.cast(),
            MMAP_SIZE,
            MMAP_SIZE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            hole.addr,
        )
    };
    let e = util::last_errno();
    t.check(
        "fuzz: mremap moving the ring is refused",
        moved == libc::MAP_FAILED,
        || format!("moved to {moved:?} ({})", util::errno_name(e)),
    );
    if moved != libc::MAP_FAILED {
        // The ring now lives at `hole.addr`; do not touch `map` again.
        std::mem::forget(map);
        std::mem::forget(hole);
        return;
    }
    drop(hole);
    intact(t, "mremap");
    // fork: the child has no copy of the mapping (DONTCOPY) and cannot use the ring.
    let addr = map.addr as usize;
    let end = util::in_child(|| {
        let r = ioctl(raw, uapi::IOCTL_RESPOND, 0);
        if r != libc::EACCES {
            return 10;
        }
        // A mapping made here would die with the child.
        if util::mmap_ring(raw) != Err(libc::EBUSY) {
            return 11;
        }
        // SAFETY: reading the parent's ring address, which must not be mapped here: the
        // child dies of SIGSEGV.
        unsafe { std::ptr::read_volatile(addr as *const u8) };
        12
    });
    t.check(
        "fuzz: a forked child gets EACCES/EBUSY and has no copy of the ring",
        end == Ok(ChildEnd::Signaled(libc::SIGSEGV)),
        || format!("child ended {end:?} (10: RESPOND not EACCES, 11: mmap not EBUSY, 12: ring readable)"),
    );
    intact(t, "the child exited");
    // Unknown ioctls on the ring.
    unknown_ioctls(t, "ring", raw, arena, rng);
    // Every device info field at and beyond its limits.
    let mut wrong = Vec::new();
    let mut n = 0;
    for lbs in [0u32, 256, 511, 512, 513, 1024, 4096, 8192, u32::MAX] {
        for pbs in [0u32, 256, 512, 1000, 4096, 1 << 31, u32::MAX] {
            let shift = if lbs.is_power_of_two() && lbs >= 512 {
                lbs.trailing_zeros()
            } else {
                9
            };
            for capacity in [
                0u64,
                1,
                2048,
                u64::MAX >> shift,
                (u64::MAX >> shift) + 1,
                u64::MAX,
            ] {
                for flags in [0u64, u64::MAX] {
                    let info = Info {
                        capacity,
                        lbs,
                        pbs,
                        flags,
                        rsvd: [u64::MAX; 4],
                    };
                    let p = if n % 2 == 0 {
                        Ptr::Valid
                    } else {
                        Ptr::ReadOnly
                    };
                    n += 1;
                    let r = ioctl(raw, uapi::IOCTL_CREATE_DEVICE, arena.ptr(p, &info.bytes()));
                    let want = info.want(p, true, None, None);
                    if r != want {
                        wrong.push(format!("{info:?}: {}", util::errno_name(r)));
                    }
                    if r == 0 {
                        let rm = ioctl(raw, uapi::IOCTL_REMOVE_DEVICE, 0);
                        if rm != 0 {
                            wrong.push(format!(
                                "REMOVE_DEVICE after {info:?}: {}",
                                util::errno_name(rm)
                            ));
                        }
                    }
                }
            }
        }
    }
    t.check(
        &format!("fuzz: {n} CREATE_DEVICE parameter sets give 0 or EINVAL as documented"),
        wrong.is_empty(),
        || wrong.iter().take(6).cloned().collect::<Vec<_>>().join("; "),
    );
    let mut wrong = Vec::new();
    for ss in [0u64, 512, 4096, 8192, (1 << 32) | 512, u64::MAX] {
        for capacity in [0u64, 2048, u64::MAX] {
            let name: Vec<u8> = if rng.chance(50) {
                vec![b'n'; 256]
            } else {
                b"fuzz".to_vec()
            };
            let r = ioctl(
                raw,
                uapi::IOCTL_CREATE_DEVICE_COMPAT,
                arena.ptr(Ptr::Valid, &params_bytes(&name, capacity, ss)),
            );
            let want = if params_valid(capacity, ss) {
                0
            } else {
                libc::EINVAL
            };
            if r != want {
                wrong.push(format!(
                    "capacity {capacity} sector size {ss}: {}",
                    util::errno_name(r)
                ));
            }
            if r == 0 {
                let _ = ioctl(raw, uapi::IOCTL_REMOVE_DEVICE, 0);
            }
        }
    }
    t.check(
        "fuzz: CREATE_DEVICE_COMPAT parameters give 0 or EINVAL as documented",
        wrong.is_empty(),
        || wrong.join("; "),
    );
    // madvise on the ring; afterwards the daemon remaps (the pages may be gone).
    for (what, advice) in [
        ("MADV_DONTNEED", libc::MADV_DONTNEED),
        ("MADV_REMOVE", libc::MADV_REMOVE),
        ("MADV_DONTFORK", libc::MADV_DONTFORK),
        ("MADV_WIPEONFORK", libc::MADV_WIPEONFORK),
        ("MADV_HUGEPAGE", libc::MADV_HUGEPAGE),
        ("MADV_PAGEOUT", libc::MADV_PAGEOUT),
    ] {
        // SAFETY: advice on our own mapping; we do not touch its memory afterwards.
        let r = unsafe { libc::madvise(map.addr.cast(), MMAP_SIZE, advice) };
        let e = if r < 0 { util::last_errno() } else { 0 };
        t.diag(&format!(
            "fuzz: madvise {what} on the ring: {}",
            util::errno_name(e)
        ));
        let resp = ioctl(raw, uapi::IOCTL_RESPOND, 0);
        t.check(
            &format!("fuzz: the ring still answers RESPOND after {what}"),
            resp == 0,
            || util::errno_name(resp),
        );
    }
    drop(map);
    let _ = env;
    let _ = info;
    drop(fd);
}

const MMAP_PAGES_USIZE: usize = uapi::MMAP_PAGES;

/// An mmap probe: what, length, prot, flags, offset, acceptable errnos.
type MmapCase = (&'static str, usize, i32, i32, i64, &'static [i32]);

/// Processes racing to open one ring: at no time do two hold it.
fn probe_open_race(t: &mut Ktap, path: &Path) {
    let shared = RawMap::shared_page();
    let (holders, wins) = (shared.counter(0), shared.counter(1));
    let mut pids = Vec::new();
    for _ in 0..4 {
        // SAFETY: single-threaded here; the child only makes system calls and atomics.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut code = 0;
            for _ in 0..100 {
                if let Ok(fd) = util::open_raw(path, libc::O_RDWR) {
                    if holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst) != 0 {
                        code = 1;
                    }
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(200));
                    holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(fd);
                } else if util::last_errno() != libc::EBUSY {
                    code = 2;
                }
            }
            // SAFETY: leave the child.
            unsafe { libc::_exit(code) };
        }
        pids.push(pid);
    }
    let ends: Vec<_> = pids.iter().map(|&p| util::wait_child(p)).collect();
    let w = wins.load(std::sync::atomic::Ordering::SeqCst);
    t.check(
        "fuzz: processes racing to open a ring: one holder at a time, others EBUSY",
        ends.iter().all(|e| *e == Ok(ChildEnd::Exited(0))) && w > 0,
        || format!("children {ends:?} (1: two holders, 2: not EBUSY), {w} opens"),
    );
}

/// Processes sharing one ring fd racing to map it: exactly one mapping per round.
fn probe_map_race(t: &mut Ktap, path: &Path) {
    let fd = match util::open_raw(path, libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => return t.fail("fuzz: open ring for the mmap race", &util::errno_name(e)),
    };
    let raw = fd.as_raw_fd();
    let mut problems = Vec::new();
    for round in 0..5 {
        let shared = RawMap::shared_page();
        let (go, won, done) = (shared.counter(0), shared.counter(1), shared.counter(2));
        let mut pids = Vec::new();
        for _ in 0..4 {
            // SAFETY: single-threaded; the child only makes system calls and atomics.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                while go.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                let code = match RawMap::new(
                    raw,
                    MMAP_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    0,
                ) {
                    Ok(m) => {
                        won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Hold the mapping until everyone has tried.
                        while done.load(std::sync::atomic::Ordering::SeqCst)
                            + won.load(std::sync::atomic::Ordering::SeqCst)
                            < 4
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        drop(m);
                        0
                    }
                    Err(e) => {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if e == libc::EBUSY {
                            0
                        } else {
                            2
                        }
                    }
                };
                // SAFETY: leave the child.
                unsafe { libc::_exit(code) };
            }
            pids.push(pid);
        }
        go.store(1, std::sync::atomic::Ordering::SeqCst);
        let ends: Vec<_> = pids.iter().map(|&p| util::wait_child(p)).collect();
        let w = won.load(std::sync::atomic::Ordering::SeqCst);
        if w != 1 || !ends.iter().all(|e| *e == Ok(ChildEnd::Exited(0))) {
            problems.push(format!("round {round}: {w} mappings, children {ends:?}"));
        }
    }
    t.check(
        "fuzz: processes racing to map one ring: exactly one wins, the others get EBUSY",
        problems.is_empty(),
        || problems.join("; "),
    );
}

/// The bytes of a `struct blktap_features` followed by `extra` zero bytes (the last one `1`
/// if `dirty`), cut to at most a page.
fn features_bytes(f: &uapi::Features, extra: usize, dirty: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + extra);
    b.extend_from_slice(&f.size.to_ne_bytes());
    b.extend_from_slice(&f.version.to_ne_bytes());
    b.extend_from_slice(&f.features.to_ne_bytes());
    b.extend_from_slice(&f.supported.to_ne_bytes());
    for v in [
        f.discard_granularity,
        f.discard_alignment,
        f.max_discard_sectors,
        f.max_write_zeroes_sectors,
        f.max_segments,
        f.ring_slots,
    ] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    for r in f.rsvd {
        b.extend_from_slice(&r.to_ne_bytes());
    }
    b.resize((64 + extra).min(PAGE_SIZE), 0);
    if dirty && extra > 0 {
        *b.last_mut().unwrap() = 1;
    }
    b
}

/// What NEGOTIATE returns for `f` on a mapped ring without a disk, by the documented rules
/// (`dirty`: a non-zero byte past the first 64).
fn negotiate_want(f: &uapi::Features, dirty: bool) -> i32 {
    use uapi::{FEAT_DISCARD, FEAT_FLUSH, FEAT_FUA, FEAT_WRITE_ZEROES};
    let max = uapi::MAX_RANGE_SECTORS;
    let ok = (64..=4096).contains(&f.size)
        && !(dirty && f.size > 64)
        && f.version == 1
        && f.features & !uapi::FEATURES_KNOWN == 0
        && (f.features & FEAT_FUA == 0 || f.features & FEAT_FLUSH != 0)
        && f.rsvd == [0; 2]
        // The ring is mapped with 353 pages: LARGE needs 12..=256 data pages per request and
        // the mapping's count (11), DEEP 64..=1024 entries and the mapping's (32), so neither
        // is ever agreed here.
        && f.features & uapi::FEAT_LARGE == 0
        && f.max_segments == 0
        && f.features & uapi::FEAT_DEEP == 0
        && f.ring_slots == 0
        && if f.features & FEAT_DISCARD != 0 {
            let g = f.discard_granularity;
            g.is_power_of_two()
                && (512..=uapi::MAX_DISCARD_GRANULARITY).contains(&g)
                && f.discard_alignment % 512 == 0
                && f.discard_alignment < g
                && (1..=max).contains(&f.max_discard_sectors)
                && u64::from(f.max_discard_sectors) * 512 >= u64::from(g)
        } else {
            f.discard_granularity == 0 && f.discard_alignment == 0 && f.max_discard_sectors == 0
        }
        && if f.features & FEAT_WRITE_ZEROES != 0 {
            (1..=max).contains(&f.max_write_zeroes_sectors)
        } else {
            f.max_write_zeroes_sectors == 0
        };
    if ok {
        0
    } else {
        libc::EINVAL
    }
}

/// NEGOTIATE on the mapped ring `raw` (no disk): every unreadable pointer is EFAULT, so is an
/// answer that cannot be written back; then 400 requests with fields at and beyond their limits
/// give what the documented rules predict; a last one agrees on nothing (V-XS again).
fn probes_negotiate(t: &mut Ktap, raw: RawFd, arena: &Arena, rng: &mut Rng) {
    use uapi::{Features, FEATURES_ALL};
    let good = Features {
        discard_granularity: 4096,
        max_discard_sectors: 8192,
        max_write_zeroes_sectors: 8192,
        ..Features::request(FEATURES_ALL)
    };
    for p in PTRS.iter().filter(|&&p| !readable(p) || p == Ptr::ReadOnly) {
        let arg = arena.ptr(*p, &features_bytes(&good, 0, false));
        errno_check(
            t,
            &format!("fuzz: NEGOTIATE with a {p:?} pointer is EFAULT"),
            ioctl(raw, uapi::IOCTL_NEGOTIATE, arg),
            libc::EFAULT,
        );
    }
    let mut bad = Vec::new();
    let n = 400;
    for _ in 0..n {
        let pick32 = |rng: &mut Rng, v: &[u32]| *rng.pick(v);
        let mut f = good;
        f.size = pick32(
            rng,
            &[64, 64, 64, 64, 0, 8, 63, 65, 72, 128, 4096, 4097, u32::MAX],
        );
        f.version = pick32(rng, &[1, 1, 1, 1, 1, 0, 2, u32::MAX]);
        f.features = match rng.below(6) {
            0 => rng.next_u64(),
            1 => rng.next_u64() & FEATURES_ALL,
            2 => FEATURES_ALL,
            3 => 0,
            4 => 1u64 << rng.below(64),
            _ => FEATURES_ALL & !uapi::FEAT_FLUSH,
        };
        let limit = |rng: &mut Rng| -> u32 {
            *rng.pick(&[
                0,
                1,
                8,
                8192,
                uapi::MAX_RANGE_SECTORS,
                uapi::MAX_RANGE_SECTORS + 1,
                u32::MAX,
            ])
        };
        if rng.chance(50) {
            f.discard_granularity =
                pick32(rng, &[0, 256, 512, 3000, 4096, 1 << 20, 1 << 30, 1 << 31]);
            f.discard_alignment = pick32(rng, &[0, 0, 100, 512, 4096, 1 << 20]);
            f.max_discard_sectors = limit(rng);
            f.max_write_zeroes_sectors = limit(rng);
        }
        if rng.chance(10) {
            let i = rng.below(2) as usize;
            f.rsvd[i] = rng.next_u64() | 1;
        }
        if rng.chance(15) {
            f.ring_slots = *rng.pick(&[0, 1, 32, 64, 96, 128, 1024, 2048, u32::MAX]);
            if rng.chance(50) {
                f.features |= uapi::FEAT_DEEP;
            }
        }
        if rng.chance(15) {
            f.max_segments = *rng.pick(&[0, 1, 11, 12, 64, 256, 257, u32::MAX]);
            if rng.chance(50) {
                f.features |= uapi::FEAT_LARGE;
            }
        }
        if f.features & uapi::FEAT_DISCARD == 0 && rng.chance(70) {
            f.discard_granularity = 0;
            f.discard_alignment = 0;
            f.max_discard_sectors = 0;
        }
        if f.features & uapi::FEAT_WRITE_ZEROES == 0 && rng.chance(70) {
            f.max_write_zeroes_sectors = 0;
        }
        let dirty = rng.chance(30);
        let extra = (f.size as usize).saturating_sub(64).min(PAGE_SIZE - 64);
        let arg = arena.ptr(Ptr::Valid, &features_bytes(&f, extra, dirty));
        let got = ioctl(raw, uapi::IOCTL_NEGOTIATE, arg);
        let want = negotiate_want(&f, dirty && extra > 0);
        if got != want {
            bad.push(format!(
                "{f:?} dirty {dirty}: {}, expected {}",
                util::errno_name(got),
                util::errno_name(want)
            ));
        }
    }
    t.check(
        &format!("fuzz: {n} NEGOTIATE requests give 0 or EINVAL as documented"),
        bad.is_empty(),
        || bad.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
    );
    let arg = arena.ptr(Ptr::Valid, &features_bytes(&Features::request(0), 0, false));
    errno_check(
        t,
        "fuzz: NEGOTIATE of nothing (back to V-XS)",
        ioctl(raw, uapi::IOCTL_NEGOTIATE, arg),
        0,
    );
}

// ---------------------------------------------------------------------------------------------
// Part two: the model walk.

/// One tap in the model.
struct TapM {
    info: BlktapInfo,
    allocated: bool,
    ring_node: PathBuf,
    disk_node: PathBuf,
    fd: Option<OwnedFd>,
    map: Option<RawMap>,
    disk: Option<Info>,
    disk_fd: Option<OwnedFd>,
    back: Backend,
    /// What the current mapping's daemon negotiated (an index of [`AGREEMENTS`]), if it did.
    session: Option<usize>,
    /// The agreement the disk was made with (an index of [`AGREEMENTS`]; 0: V-XS).
    disk_agreement: usize,
    /// The disk was made by the current mapping (a second NEGOTIATE is refused).
    disk_by_session: bool,
}

/// The agreements the walk negotiates: V-XS, flush, everything (with fixed limits).
const AGREEMENTS: [(u64, u32, u32); 3] = [
    (0, 0, 0),
    (uapi::FEAT_FLUSH, 0, 0),
    (uapi::FEATURES_ALL, 4096, 8192),
];

/// The `Features` request for agreement `k` of [`AGREEMENTS`].
fn agreement_request(k: usize) -> uapi::Features {
    let (features, gran, max) = AGREEMENTS[k];
    uapi::Features {
        discard_granularity: gran,
        max_discard_sectors: max,
        max_write_zeroes_sectors: max,
        ..uapi::Features::request(features)
    }
}

impl TapM {
    fn file_alive(&self) -> bool {
        self.fd.is_some() || self.map.is_some()
    }
}

struct Walk<'a> {
    env: &'a Env,
    ctl: &'a Control,
    arena: Arena,
    rng: Rng,
    taps: Vec<TapM>,
    /// Minors allocated by others when the walk started.
    others: Vec<u32>,
    log: Vec<String>,
    divergence: Option<String>,
    steps: u64,
    max_taps: usize,
}

impl Walk<'_> {
    fn note(&mut self, s: String) {
        self.log.push(s);
        if self.log.len() > 40 {
            self.log.remove(0);
        }
    }

    fn diverge(&mut self, what: String) {
        if self.divergence.is_none() {
            self.divergence = Some(what);
        }
    }

    fn expect(&mut self, what: &str, got: i32, want: i32) -> bool {
        self.note(format!("{what} -> {}", util::errno_name(got)));
        if got != want {
            self.diverge(format!(
                "{what}: got {}, model says {}",
                util::errno_name(got),
                util::errno_name(want)
            ));
            return false;
        }
        true
    }

    /// Opens `path` with `flags` and checks the result (as [`Self::expect`]) against `want`;
    /// the new fd if the open succeeded as the model expected.
    fn expect_open(&mut self, what: &str, path: &Path, flags: i32, want: i32) -> Option<OwnedFd> {
        let r = util::open_raw(path, flags);
        let e = r.as_ref().err().copied().unwrap_or(0);
        if self.expect(what, e, want) {
            r.ok()
        } else {
            None
        }
    }

    fn lowest_free(&self) -> u32 {
        let used: Vec<u32> = self
            .others
            .iter()
            .copied()
            .chain(
                self.taps
                    .iter()
                    .filter(|t| t.allocated)
                    .map(|t| t.info.ring_minor),
            )
            .collect();
        (0..MAX_DEVICES)
            .find(|m| !used.contains(m))
            .unwrap_or(MAX_DEVICES)
    }

    fn release_effects(&mut self, i: usize) {
        // The last reference to the ring file went: the disk goes unless it is open.
        let t = &mut self.taps[i];
        if !t.file_alive() && t.disk.is_some() && t.disk_fd.is_none() {
            t.disk = None;
        }
    }

    fn op_alloc(&mut self) {
        if self.taps.iter().filter(|t| t.allocated).count() >= self.max_taps {
            return;
        }
        let p = if self.rng.chance(75) {
            Ptr::Valid
        } else {
            *self.rng.pick(&PTRS[1..])
        };
        let arg = self.arena.ptr(p, &[0u8; 12]);
        let want_minor = self.lowest_free();
        let r = ioctl(self.ctl.as_fd().as_raw_fd(), uapi::IOCTL_ALLOC_TAP, arg);
        let want = if p == Ptr::Valid { 0 } else { libc::EFAULT };
        if !self.expect(&format!("ALLOC_TAP({p:?})"), r, want) || r != 0 {
            return;
        }
        // SAFETY: the kernel wrote the 12-byte reply to page 0 of the arena.
        let info: BlktapInfo = unsafe { std::ptr::read(arg as *const BlktapInfo) };
        if info.ring_minor != want_minor {
            self.diverge(format!(
                "ALLOC_TAP gave minor {}, model says {want_minor}",
                info.ring_minor
            ));
        }
        let dir = self.env.tmp.join("fuzz");
        let _ = node::mkdir_p(&dir, 0o700);
        let ring_node = dir.join(format!("ring{}", info.ring_minor));
        let disk_node = dir.join(format!("disk{}", info.ring_minor));
        for (p, kind, major) in [
            (&ring_node, NodeKind::Char, info.ring_major),
            (&disk_node, NodeKind::Block, info.bdev_major),
        ] {
            let _ = std::fs::remove_file(p);
            if let Err(e) = node::mknod(p, kind, major, info.ring_minor, 0o600) {
                self.diverge(format!("mknod: {e}"));
            }
        }
        // Reuse the slot of a freed tap with this minor, else add one.
        self.taps
            .retain(|t| t.allocated || t.info.ring_minor != info.ring_minor);
        self.taps.push(TapM {
            info,
            allocated: true,
            ring_node,
            disk_node,
            fd: None,
            map: None,
            disk: None,
            disk_fd: None,
            back: Backend::new(1 << 20),
            session: None,
            disk_agreement: 0,
            disk_by_session: false,
        });
    }

    fn pick(&mut self) -> Option<usize> {
        (!self.taps.is_empty()).then(|| self.rng.below(self.taps.len() as u64) as usize)
    }

    fn op_free(&mut self) {
        if self.rng.chance(10) {
            let v = *self.rng.pick(&[u64::MAX, 16384, 1 << 32, i64::MIN as u64]);
            let r = ioctl(self.ctl.as_fd().as_raw_fd(), uapi::IOCTL_FREE_TAP, v);
            self.expect(&format!("FREE_TAP({v:#x})"), r, libc::EINVAL);
            return;
        }
        let Some(i) = self.pick() else { return };
        let t = &self.taps[i];
        let want = if !t.allocated {
            libc::ENODEV
        } else if t.file_alive() || t.disk_fd.is_some() {
            libc::EBUSY
        } else {
            0
        };
        let minor = t.info.ring_minor;
        let r = util::rc(&self.ctl.free(minor));
        if self.expect(&format!("FREE_TAP({minor})"), r, want) && r == 0 {
            let t = &mut self.taps[i];
            t.allocated = false;
            t.disk = None;
        }
    }

    fn op_open(&mut self) {
        let Some(i) = self.pick() else { return };
        let t = &self.taps[i];
        let want = if !t.allocated {
            libc::ENXIO
        } else if t.file_alive() {
            libc::EBUSY
        } else {
            0
        };
        let what = format!("open ring {}", t.info.ring_minor);
        let node = t.ring_node.clone();
        if let Some(fd) = self.expect_open(&what, &node, libc::O_RDWR, want) {
            self.taps[i].fd = Some(fd);
        }
    }

    fn op_close(&mut self) {
        let Some(i) = self.pick() else { return };
        if self.taps[i].fd.take().is_some() {
            self.note(format!("close ring {}", self.taps[i].info.ring_minor));
            self.release_effects(i);
        }
    }

    fn op_mmap(&mut self) {
        let Some(i) = self.pick() else { return };
        let Some(raw) = self.taps[i].fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let (what, len, prot, flags, off, mm_err) = *self.rng.pick(&[
            ("valid", MMAP_SIZE, rw, libc::MAP_SHARED, 0i64, 0),
            ("valid", MMAP_SIZE, rw, libc::MAP_SHARED, 0, 0),
            ("valid-rounded", MMAP_SIZE - 7, rw, libc::MAP_SHARED, 0, 0),
            ("short", MMAP_SIZE - PAGE_SIZE, rw, libc::MAP_SHARED, 0, 0),
            ("long", MMAP_SIZE + PAGE_SIZE, rw, libc::MAP_SHARED, 0, 0),
            // FEAT_LARGE's sizes: 1 + 32 * S pages for S in 12..=256.
            (
                "large",
                uapi::mmap_pages_large(64) * PAGE_SIZE,
                rw,
                libc::MAP_SHARED,
                0,
                0,
            ),
            (
                "large-odd",
                (uapi::mmap_pages_large(12) + 1) * PAGE_SIZE,
                rw,
                libc::MAP_SHARED,
                0,
                0,
            ),
            (
                "large-huge",
                uapi::mmap_pages_large(257) * PAGE_SIZE,
                rw,
                libc::MAP_SHARED,
                0,
                0,
            ),
            // FEAT_DEEP's: ring_pages(N) + N * S pages, N a power of two in 64..=1024, S in
            // 11..=256, N * S at most 32768. A V-XS session uses the first 353 pages.
            (
                "deep",
                uapi::deep_mmap_pages(128, 11) * PAGE_SIZE,
                rw,
                libc::MAP_SHARED,
                0,
                0,
            ),
            (
                "deep-large",
                uapi::deep_mmap_pages(64, 64) * PAGE_SIZE,
                rw,
                libc::MAP_SHARED,
                0,
                0,
            ),
            (
                "deep-odd",
                (uapi::deep_mmap_pages(128, 11) + 64) * PAGE_SIZE,
                rw,
                libc::MAP_SHARED,
                0,
                0,
            ),
            (
                "deep-huge",
                uapi::deep_mmap_pages(1024, 33) * PAGE_SIZE,
                rw,
                libc::MAP_SHARED,
                0,
                0,
            ),
            (
                "offset",
                MMAP_SIZE,
                rw,
                libc::MAP_SHARED,
                PAGE_SIZE as i64,
                0,
            ),
            (
                "unaligned",
                MMAP_SIZE,
                rw,
                libc::MAP_SHARED,
                7,
                libc::EINVAL,
            ),
            ("private", MMAP_SIZE, rw, libc::MAP_PRIVATE, 0, 0),
            (
                "exec",
                MMAP_SIZE,
                rw | libc::PROT_EXEC,
                libc::MAP_SHARED,
                0,
                0,
            ),
            ("empty", 0, rw, libc::MAP_SHARED, 0, libc::EINVAL),
        ]);
        let t = &self.taps[i];
        let want = if mm_err != 0 {
            mm_err
        } else if t.map.is_some() {
            libc::EBUSY
        } else {
            match what {
                "valid" | "valid-rounded" | "large" | "deep" | "deep-large" => 0,
                "exec" => libc::EPERM,
                _ => libc::EINVAL,
            }
        };
        let minor = t.info.ring_minor;
        let r = RawMap::new(raw, len, prot, flags, off);
        let e = r.as_ref().err().copied().unwrap_or(0);
        if self.expect(&format!("mmap ring {minor} ({what})"), e, want) {
            if let Ok(m) = r {
                let t = &mut self.taps[i];
                t.map = Some(m);
                t.back.reset();
                // A new session: nothing negotiated, and not the disk's maker.
                t.session = None;
                t.disk_by_session = false;
            }
        }
    }

    fn op_munmap(&mut self) {
        let Some(i) = self.pick() else { return };
        let Some(addr) = self.taps[i].map.as_ref().map(|m| m.addr) else {
            return;
        };
        let minor = self.taps[i].info.ring_minor;
        match self.rng.below(5) {
            0 => {
                // SAFETY: inside the mapping (refused).
                let r = munmap(
                    unsafe { addr.add(PAGE_SIZE * self.rng.range(0, 352) as usize) },
                    PAGE_SIZE,
                );
                self.expect(&format!("partial munmap ring {minor}"), r, libc::EINVAL);
            }
            1 => {
                // SAFETY: inside the mapping (refused).
                let r = mprotect(
                    unsafe { addr.add(PAGE_SIZE * self.rng.range(1, 352) as usize) },
                    PAGE_SIZE,
                    libc::PROT_READ,
                );
                self.expect(&format!("partial mprotect ring {minor}"), r, libc::EINVAL);
            }
            _ => {
                self.taps[i].map = None;
                self.note(format!("munmap ring {minor}"));
                self.release_effects(i);
            }
        }
    }

    fn op_ioctl(&mut self) {
        let Some(i) = self.pick() else { return };
        let Some(raw) = self.taps[i].fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let minor = self.taps[i].info.ring_minor;
        let mapped = self.taps[i].map.is_some();
        match self.rng.below(7) {
            6 => self.op_negotiate(i, raw),
            0 => {
                let r = ioctl(raw, uapi::IOCTL_RESPOND, self.rng.next_u64());
                self.expect(
                    &format!("RESPOND {minor}"),
                    r,
                    if mapped { 0 } else { libc::EACCES },
                );
            }
            1 | 2 => {
                let p = if self.rng.chance(70) {
                    Ptr::Valid
                } else {
                    *self.rng.pick(&PTRS)
                };
                let info = if self.rng.chance(50) {
                    Info {
                        capacity: 2048 * self.rng.range(1, 8),
                        lbs: 512,
                        pbs: 512,
                        flags: 0,
                        rsvd: [0; 4],
                    }
                } else if self.rng.chance(30) {
                    Info::random_oxt(&mut self.rng)
                } else {
                    Info::random(&mut self.rng)
                };
                let t = &self.taps[i];
                let disk = t.disk.is_some().then_some(t.disk_agreement);
                let want = info.want(p, mapped, disk, t.session);
                let arg = self.arena.ptr(p, &info.bytes());
                let r = ioctl(raw, uapi::IOCTL_CREATE_DEVICE, arg);
                if self.expect(&format!("CREATE_DEVICE {minor} {p:?} {info:?}"), r, want) && r == 0
                {
                    self.disk_made(i, info);
                    if let Some(oxt) = info.oxt() {
                        self.taps[i].disk_agreement = oxt.agreement;
                    }
                }
            }
            3 => {
                let p = if self.rng.chance(80) {
                    Ptr::Valid
                } else {
                    *self.rng.pick(&PTRS)
                };
                let ss = *self.rng.pick(&[512u64, 4096, 1000, (1 << 32) | 512]);
                let cap = *self.rng.pick(&[2048u64, 0, 4096]);
                let has_disk = self.taps[i].disk.is_some();
                let want =
                    self.agreed_create(i, create_want(p, mapped, has_disk, params_valid(cap, ss)));
                let arg = self.arena.ptr(p, &params_bytes(b"walk", cap, ss));
                let r = ioctl(raw, uapi::IOCTL_CREATE_DEVICE_COMPAT, arg);
                if self.expect(
                    &format!("CREATE_DEVICE_COMPAT {minor} {p:?} {cap} {ss}"),
                    r,
                    want,
                ) && r == 0
                {
                    self.disk_made(
                        i,
                        Info {
                            capacity: cap,
                            lbs: ss as u32,
                            pbs: ss as u32,
                            flags: 0,
                            rsvd: [0; 4],
                        },
                    );
                }
            }
            4 => {
                let t = &self.taps[i];
                let want = if !mapped {
                    libc::EACCES
                } else if t.disk.is_some() && t.disk_fd.is_some() {
                    libc::EBUSY
                } else {
                    0
                };
                let r = ioctl(raw, uapi::IOCTL_REMOVE_DEVICE, 0);
                if self.expect(&format!("REMOVE_DEVICE {minor}"), r, want) && r == 0 {
                    self.taps[i].disk = None;
                }
            }
            5 if self.rng.chance(50) => {
                // V-OXT's answers to ring messages (203-206): the walk never writes a tap's
                // pause or resume, so none is ever expected: EINVAL for the owner, whatever
                // the argument (203 with any parameters, 206 with any result), else EACCES.
                let cmd = *self.rng.pick(&[
                    uapi::IOCTL_SET_PARAMS,
                    uapi::IOCTL_PAUSE,
                    uapi::IOCTL_REOPEN,
                    uapi::IOCTL_RESUME,
                ]);
                let arg = match cmd {
                    uapi::IOCTL_SET_PARAMS => {
                        let cap = self.rng.below(1 << 20);
                        let ss = *self.rng.pick(&[0, 511, 512, 4096, 8192]);
                        self.arena
                            .ptr(Ptr::Valid, &params_bytes(b"aio:/x", cap, ss))
                    }
                    uapi::IOCTL_REOPEN => self.arena.ptr(Ptr::Valid, &[0u8; 256]),
                    _ => self.rng.next_u64(),
                };
                let r = ioctl(raw, cmd, arg);
                let want = if mapped { libc::EINVAL } else { libc::EACCES };
                self.expect(&format!("V-OXT ioctl {cmd} on ring {minor}"), r, want);
            }
            _ => {
                let cmd = unknown_cmd(&mut self.rng);
                let arg = self.arena.ptr(Ptr::Valid, &[0u8; 64]);
                let r = ioctl(raw, cmd, arg);
                self.expect(&format!("ioctl {cmd:#x} on ring {minor}"), r, libc::ENOTTY);
            }
        }
    }

    /// CREATE_DEVICE's result `want` (from [`create_want`]) corrected for the negotiation: a
    /// daemon finding a disk made with another agreement than its own gets EINVAL, not EEXIST.
    fn agreed_create(&self, i: usize, want: i32) -> i32 {
        let t = &self.taps[i];
        if want == libc::EEXIST && t.session.unwrap_or(0) != t.disk_agreement {
            libc::EINVAL
        } else {
            want
        }
    }

    /// The current session made a disk.
    fn disk_made(&mut self, i: usize, info: Info) {
        let t = &mut self.taps[i];
        t.disk = Some(info);
        t.disk_agreement = t.session.unwrap_or(0);
        t.disk_by_session = true;
    }

    /// NEGOTIATE one of [`AGREEMENTS`], or a hostile request, through a pointer of any class.
    fn op_negotiate(&mut self, i: usize, raw: RawFd) {
        let minor = self.taps[i].info.ring_minor;
        let mapped = self.taps[i].map.is_some();
        let p = if self.rng.chance(75) {
            Ptr::Valid
        } else {
            *self.rng.pick(&PTRS)
        };
        let k = self.rng.below(AGREEMENTS.len() as u64 + 2) as usize;
        let (f, valid, unknown) = match k {
            k if k < AGREEMENTS.len() => (agreement_request(k), true, false),
            3 => (
                uapi::Features {
                    features: uapi::FEATURES_ALL | 0x400,
                    ..agreement_request(2)
                },
                false,
                true,
            ),
            _ => (
                uapi::Features {
                    discard_granularity: 3000,
                    ..agreement_request(2)
                },
                false,
                false,
            ),
        };
        let t = &self.taps[i];
        // The driver reads the argument first, then checks the mapping, then the request, the
        // session's disk, an existing disk's agreement; then writes the answer back.
        let want = if !readable(p) {
            libc::EFAULT
        } else if !mapped {
            libc::EACCES
        } else if t.disk.is_some() && t.disk_by_session {
            libc::EINVAL
        } else if unknown {
            // The answer (supported set) is written back even so.
            if p == Ptr::ReadOnly {
                libc::EFAULT
            } else {
                libc::EINVAL
            }
        } else if !valid || (t.disk.is_some() && k != t.disk_agreement) {
            libc::EINVAL
        } else if p == Ptr::ReadOnly {
            // Agreed, but the answer cannot be written: taken back.
            libc::EFAULT
        } else {
            0
        };
        let arg = self.arena.ptr(p, &features_bytes(&f, 0, false));
        let r = ioctl(raw, uapi::IOCTL_NEGOTIATE, arg);
        if self.expect(&format!("NEGOTIATE {minor} {p:?} agreement {k}"), r, want) && r == 0 {
            self.taps[i].session = Some(k);
        }
    }

    fn op_open_disk(&mut self) {
        let Some(i) = self.pick() else { return };
        if self.taps[i].disk_fd.is_some() {
            return;
        }
        let t = &self.taps[i];
        let want = if t.disk.is_some() { 0 } else { libc::ENXIO };
        let what = format!("open disk {}", t.info.ring_minor);
        let node = t.disk_node.clone();
        let flags = libc::O_RDWR | libc::O_DIRECT;
        if let Some(fd) = self.expect_open(&what, &node, flags, want) {
            self.taps[i].disk_fd = Some(fd);
        }
    }

    fn op_close_disk(&mut self) {
        let Some(i) = self.pick() else { return };
        if self.taps[i].disk_fd.take().is_none() {
            return;
        }
        let minor = self.taps[i].info.ring_minor;
        self.note(format!("close disk {minor}"));
        if self.taps[i].disk.is_some() && self.taps[i].map.is_none() {
            if self.taps[i].fd.is_none() {
                // The ring was released while the disk was open: the disk goes now (design).
                let gone = util::wait_until(Duration::from_secs(5), || {
                    !sysfs::disk_exists(&self.env.sysfs, minor)
                });
                if !gone {
                    self.diverge(format!(
                        "disk {minor} still there 5 s after its last close, ring released"
                    ));
                }
                self.taps[i].disk = None;
            } else {
                // Unmapped but the ring file still open: the design does not say; the kernel
                // currently removes the disk too. Accept either and follow what happened.
                let gone = util::wait_until(Duration::from_secs(2), || {
                    !sysfs::disk_exists(&self.env.sysfs, minor)
                });
                self.note(format!(
                    "disk {minor} after its last close, ring unmapped: gone {gone}"
                ));
                if gone {
                    self.taps[i].disk = None;
                }
            }
        }
    }

    /// A read of the open disk: served if the ring is mapped and open, else EIO at once.
    fn op_read_disk(&mut self) {
        let Some(i) = self.pick() else { return };
        let t = &self.taps[i];
        let (Some(dfd), Some(info)) = (t.disk_fd.as_ref(), t.disk) else {
            return;
        };
        let minor = t.info.ring_minor;
        let bytes = info.capacity.saturating_mul(512);
        if bytes < 2 * BLOCK as u64 || info.lbs > BLOCK as u32 || t.map.is_some() && t.fd.is_none()
        {
            return;
        }
        let served = t.map.is_some();
        let ro = info.flags & uapi::DEVICE_RO != 0;
        let dfd = dfd.as_raw_fd();
        let fill = self.rng.next_u32() as u8;
        let write = served && self.rng.chance(50);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = AlignedBuf::new(BLOCK);
            let r = if write {
                buf.slice_mut(BLOCK).fill(fill);
                util::pwrite(dfd, buf.slice(BLOCK), 0)
            } else {
                util::pread(dfd, buf.slice_mut(BLOCK), 0)
            };
            let _ = tx.send((r, buf.slice(BLOCK).to_vec()));
        });
        let t0 = Instant::now();
        let mut res = None;
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(x) = rx.try_recv() {
                res = Some(x);
                break;
            }
            if served {
                let t = &mut self.taps[i];
                let raw = t.fd.as_ref().expect("fd").as_raw_fd();
                let m = t.map.as_ref().expect("map");
                let mem = m.memory();
                let mut pfd = libc::pollfd {
                    fd: raw,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 10) };
                if let Err(e) = t
                    .back
                    .serve_mem(mem, || match ioctl(raw, uapi::IOCTL_RESPOND, 0) {
                        0 => Ok(()),
                        e => Err(Errno(e).to_string()),
                    })
                {
                    self.diverge(format!("serving ring {minor}: {e}"));
                    break;
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let what = format!(
            "{} disk {minor}{}",
            if write { "write" } else { "read" },
            if served { "" } else { " (no daemon)" }
        );
        match res {
            None => {
                self.note(format!("{what} -> no answer"));
                self.diverge(format!("{what}: no answer within 5 s"));
            }
            Some((r, data)) => {
                let e = r.err().unwrap_or(0);
                // A read-only disk (flags bit 0) refuses writes in the block layer.
                let want = if write && ro {
                    libc::EPERM
                } else if served {
                    0
                } else {
                    libc::EIO
                };
                if self.expect(&what, e, want) && served && want == 0 {
                    let t = &self.taps[i];
                    let expect = &t.back.disk[..BLOCK];
                    if write && !expect.iter().all(|&b| b == fill) || !write && data != expect {
                        self.diverge(format!("{what}: data differs from the daemon's"));
                    }
                }
            }
        }
    }

    fn op_child(&mut self) {
        let Some(i) = self.pick() else { return };
        let Some(raw) = self.taps[i].fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let mapped = self.taps[i].map.is_some();
        let minor = self.taps[i].info.ring_minor;
        let end = util::in_child(|| {
            if ioctl(raw, uapi::IOCTL_RESPOND, 0) != libc::EACCES {
                return 1;
            }
            if ioctl(raw, uapi::IOCTL_REMOVE_DEVICE, 0) != libc::EACCES {
                return 2;
            }
            if mapped {
                // A mapping made here would die with the child.
                if util::mmap_ring(raw) != Err(libc::EBUSY) {
                    return 3;
                }
            }
            0
        });
        self.note(format!("child on ring {minor} -> {end:?}"));
        if end != Ok(ChildEnd::Exited(0)) {
            self.diverge(format!("a forked child on ring {minor} ended {end:?} (1 RESPOND, 2 REMOVE, 3 mmap not refused)"));
        }
    }

    /// sysfs agrees with the model.
    fn check_sysfs(&mut self) {
        for k in 0..self.taps.len() {
            let t = &self.taps[k];
            if !t.allocated {
                continue;
            }
            let minor = t.info.ring_minor;
            let disk = sysfs::disk_exists(&self.env.sysfs, minor);
            if disk != t.disk.is_some() {
                let what = format!(
                    "tap {minor}: /sys/block has the disk: {disk}, model: {}",
                    t.disk.is_some()
                );
                self.diverge(what);
            }
            match TapDebug::read(&self.env.class_dir(), minor) {
                Ok(d) => {
                    let t = &self.taps[k];
                    if d.mapped != t.map.is_some() || d.openers != u32::from(t.disk_fd.is_some()) {
                        let what = format!(
                            "tap {minor}: debug says mapped {} openers {}, model {} {}",
                            d.mapped,
                            d.openers,
                            t.map.is_some(),
                            t.disk_fd.is_some()
                        );
                        self.diverge(what);
                    }
                }
                Err(e) => self.diverge(format!("tap {minor}: {e}")),
            }
        }
    }

    fn step(&mut self) {
        self.steps += 1;
        match self.rng.below(20) {
            0..=1 => self.op_alloc(),
            2 => self.op_free(),
            3..=4 => self.op_open(),
            5 => self.op_close(),
            6..=8 => self.op_mmap(),
            9 => self.op_munmap(),
            10..=13 => self.op_ioctl(),
            14 => self.op_open_disk(),
            15 => self.op_close_disk(),
            16..=17 => self.op_read_disk(),
            _ => self.op_child(),
        }
        self.check_sysfs();
    }

    /// Closes everything and frees every tap; the result must be a clean table.
    fn cleanup(&mut self, t: &mut Ktap) {
        let mut errors = Vec::new();
        for tap in &mut self.taps {
            tap.disk_fd = None;
            tap.map = None;
            tap.fd = None;
        }
        for tap in &self.taps {
            if !tap.allocated {
                continue;
            }
            let m = tap.info.ring_minor;
            let r = util::retry_busy(Duration::from_secs(5), || self.ctl.free(m));
            if let Err(e) = r {
                errors.push(format!("{m}: {e}"));
            }
        }
        t.check(
            "fuzz: every tap of the walk can be freed at the end",
            errors.is_empty(),
            || errors.join("; "),
        );
        let _ = std::fs::remove_dir_all(self.env.tmp.join("fuzz"));
    }
}

/// Runs the fuzzer.
pub fn run(env: &Env, a: &FuzzArgs, t: &mut Ktap) {
    let seed = a.seed.unwrap_or_else(Rng::time_seed);
    t.diag(&format!(
        "fuzz: seed {seed} (rerun: blktap-test fuzz --seed {seed} --iterations {})",
        a.iterations
    ));
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("fuzz", &e),
    };
    let arena = Arena::new();
    let mut rng = Rng::new(seed);
    if !a.walk_only {
        probes_control(env, t, &ctl, &arena, &mut rng);
        match ctl.alloc() {
            Ok(info) => {
                match env.ring_node(&info) {
                    Ok(path) => {
                        probes_ring(env, t, &info, &path, &arena, &mut rng);
                        probe_open_race(t, &path);
                        probe_map_race(t, &path);
                    }
                    Err(e) => t.fail("fuzz: ring node", &e),
                }
                let r = util::retry_busy(Duration::from_secs(5), || ctl.free(info.ring_minor));
                t.expect_ok("fuzz: FREE_TAP after the ring probes", r);
            }
            Err(e) => t.fail("fuzz: ALLOC_TAP", &e),
        }
    }
    let mut w = Walk {
        env,
        ctl: &ctl,
        arena,
        rng: Rng::new(seed ^ 0x5eed),
        taps: Vec::new(),
        others: env.allocated().unwrap_or_default(),
        log: Vec::new(),
        divergence: None,
        steps: 0,
        max_taps: a.taps.max(1),
    };
    for _ in 0..a.iterations {
        w.step();
        if w.divergence.is_some() {
            break;
        }
    }
    t.diag(&format!("fuzz: {} steps", w.steps));
    let div = w.divergence.clone();
    t.check(
        &format!("fuzz: {} random steps match the model", w.steps),
        div.is_none(),
        || {
            format!(
                "seed {seed}, step {}: {}; last steps: {}",
                w.steps,
                div.clone().unwrap_or_default(),
                w.log.join(" | ")
            )
        },
    );
    w.cleanup(t);
}
