//! The feature negotiation (`NEGOTIATE`, issue 20): every refusal case, the intersection with
//! what the tap offers, the disk a session makes with it, and a second daemon on that disk.

use crate::ktap::Ktap;
use crate::{serve_null, valid_info, Env, Taps};
use blktap::ring::{BackRing, Ring};
use blktap::sysfs;
use blktap::uapi::{
    Features, FEATURES_ALL, FEATURES_KNOWN, FEATURES_SIZE_V1, FEAT_DISCARD, FEAT_FLUSH, FEAT_FUA,
    IOCTL_NEGOTIATE, MAX_DISCARD_GRANULARITY, MAX_RANGE_SECTORS,
};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

/// A request for everything, with sane limits.
fn all() -> Features {
    Features {
        discard_granularity: 4096,
        max_discard_sectors: 8192,
        max_write_zeroes_sectors: 8192,
        ..Features::request(FEATURES_ALL)
    }
}

/// A `Features` followed by `N` more bytes, for sizes above the module's.
#[repr(C)]
struct Bigger<const N: usize> {
    f: Features,
    extra: [u8; N],
}

/// `NEGOTIATE` with `arg` as the argument's bytes (`size` set by the caller).
fn raw_negotiate<T>(ring: &Ring, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is a live, writable object at least as large as the size it declares.
    let ret = unsafe {
        libc::ioctl(
            ring.as_fd().as_raw_fd(),
            IOCTL_NEGOTIATE as _,
            arg as *mut T as libc::c_ulong,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn expect_einval(t: &mut Ktap, name: &str, ring: &Ring, mut f: Features) {
    let r = ring.negotiate_raw(&mut f);
    t.expect_errno(name, r, libc::EINVAL);
}

fn read_attr(class: &Path, minor: u32, name: &str) -> String {
    sysfs::read_attr(&sysfs::tap_dir(class, minor).join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// Runs every check on a tap of its own.
pub fn run(env: &Env, t: &mut Ktap) {
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => {
            t.skip("negotiation", &e);
            return;
        }
    };
    let mut taps = Taps::new(&ctl);
    let Some(info) = t.expect_ok("ALLOC_TAP", taps.alloc()) else {
        return;
    };
    let minor = info.ring_minor;
    let class = env.class_dir();
    let Some(mut ring) = t.expect_ok("open the ring", env.open_ring(&info)) else {
        return;
    };
    let mut f = all();
    t.expect_errno(
        "NEGOTIATE before mmap is EACCES",
        ring.negotiate_raw(&mut f),
        libc::EACCES,
    );
    if t.expect_ok("mmap", ring.map()).is_none() {
        return;
    }

    // Refusals.
    for size in [0, 8, FEATURES_SIZE_V1 - 1, 4097, u32::MAX] {
        expect_einval(
            t,
            &format!("size {size} is EINVAL"),
            &ring,
            Features { size, ..all() },
        );
    }
    expect_einval(
        t,
        "version 2 is EINVAL",
        &ring,
        Features {
            version: 2,
            ..all()
        },
    );
    expect_einval(
        t,
        "version 0 is EINVAL",
        &ring,
        Features {
            version: 0,
            ..all()
        },
    );
    let mut unknown = Features {
        features: FEATURES_ALL | 0x400,
        ..all()
    };
    let r = ring.negotiate_raw(&mut unknown);
    t.expect_errno("unknown feature bit 0x400 is EINVAL", r, libc::EINVAL);
    t.check(
        "... and the answer names the supported features",
        unknown.supported == FEATURES_KNOWN && unknown.size == FEATURES_SIZE_V1,
        || format!("supported {:#x} size {}", unknown.supported, unknown.size),
    );
    expect_einval(
        t,
        "bit 63 is EINVAL",
        &ring,
        Features {
            features: 1 << 63,
            ..all()
        },
    );
    expect_einval(
        t,
        "RO bit 0x1 is EINVAL",
        &ring,
        Features {
            features: 1,
            ..all()
        },
    );
    expect_einval(
        t,
        "FUA without FLUSH is EINVAL",
        &ring,
        Features::request(FEAT_FUA),
    );
    expect_einval(
        t,
        "reserved word is EINVAL",
        &ring,
        Features {
            rsvd: [0, 1],
            ..all()
        },
    );
    expect_einval(
        t,
        "ring_slots without DEEP is EINVAL",
        &ring,
        Features {
            ring_slots: 64,
            ..all()
        },
    );
    // Nor does it hold a deep ring: 32 entries.
    for n in [0, 32, 64, 128, 1024, 2048, u32::MAX] {
        expect_einval(
            t,
            &format!("DEEP with ring_slots {n} on a V-XS mapping is EINVAL"),
            &ring,
            Features {
                features: FEATURES_ALL | blktap::uapi::FEAT_DEEP,
                ring_slots: n,
                ..all()
            },
        );
    }
    // This ring is mapped with V-XS's 353 pages: 11 data pages per request.
    for n in [0, 11, 12, 64, 256, 257, u32::MAX] {
        expect_einval(
            t,
            &format!("LARGE with max_segments {n} on a V-XS mapping is EINVAL"),
            &ring,
            Features {
                features: FEATURES_ALL | blktap::uapi::FEAT_LARGE,
                max_segments: n,
                ..all()
            },
        );
    }
    expect_einval(
        t,
        "max_segments without LARGE is EINVAL",
        &ring,
        Features {
            max_segments: 64,
            ..all()
        },
    );
    for g in [0, 256, 3000, MAX_DISCARD_GRANULARITY * 2] {
        expect_einval(
            t,
            &format!("discard granularity {g} is EINVAL"),
            &ring,
            Features {
                discard_granularity: g,
                ..all()
            },
        );
    }
    for a in [100, 4096] {
        expect_einval(
            t,
            &format!("discard alignment {a} is EINVAL"),
            &ring,
            Features {
                discard_alignment: a,
                ..all()
            },
        );
    }
    for n in [0, 1, MAX_RANGE_SECTORS + 1, u32::MAX] {
        expect_einval(
            t,
            &format!("max discard sectors {n} is EINVAL"),
            &ring,
            Features {
                max_discard_sectors: n,
                ..all()
            },
        );
    }
    for n in [0, MAX_RANGE_SECTORS + 1, u32::MAX] {
        expect_einval(
            t,
            &format!("max write-zeroes sectors {n} is EINVAL"),
            &ring,
            Features {
                max_write_zeroes_sectors: n,
                ..all()
            },
        );
    }
    expect_einval(
        t,
        "discard limits without DISCARD are EINVAL",
        &ring,
        Features {
            discard_granularity: 4096,
            max_discard_sectors: 8,
            ..Features::request(FEAT_FLUSH)
        },
    );
    expect_einval(
        t,
        "a write-zeroes limit without WRITE_ZEROES is EINVAL",
        &ring,
        Features {
            max_write_zeroes_sectors: 8,
            ..Features::request(FEAT_FLUSH)
        },
    );
    let mut big = Bigger::<8> {
        f: Features {
            size: FEATURES_SIZE_V1 + 8,
            ..all()
        },
        extra: [0, 0, 0, 0, 0, 0, 0, 1],
    };
    let r = raw_negotiate(&ring, &mut big);
    t.check(
        "a larger struct with non-zero bytes past ours is EINVAL",
        r == Err(libc::EINVAL),
        || format!("{r:?}"),
    );

    // Agreements.
    big.extra = [0; 8];
    let r = raw_negotiate(&ring, &mut big);
    t.check(
        "a larger struct with zeroes past ours is accepted, answered with our size",
        r.is_ok() && big.f.size == FEATURES_SIZE_V1 && big.f.features == FEATURES_ALL,
        || format!("{r:?} size {} features {:#x}", big.f.size, big.f.features),
    );
    let mut none = Features::request(0);
    let r = ring.negotiate_raw(&mut none);
    t.check(
        "nothing asked: nothing agreed, everything supported",
        r.is_ok() && none.features == 0 && none.supported == FEATURES_KNOWN,
        || format!("{r:?} {none:?}"),
    );
    t.check(
        "the tap offers discard and write-zeroes by default",
        read_attr(&class, minor, "discard") == "1"
            && read_attr(&class, minor, "write_zeroes") == "1",
        || "sysfs discard / write_zeroes not 1",
    );
    let off = sysfs::write_tap_attr(&class, minor, "discard", "0");
    t.expect_ok("switch discard off (sysfs)", off);
    let mut f = all();
    let r = ring.negotiate_raw(&mut f);
    t.check(
        "with discard switched off, the agreement is the intersection",
        r.is_ok()
            && f.features == FEATURES_ALL & !FEAT_DISCARD
            && f.supported == FEATURES_KNOWN & !FEAT_DISCARD
            && f.max_discard_sectors == 0
            && f.discard_granularity == 0
            && f.max_write_zeroes_sectors == 8192,
        || format!("{r:?} {f:?}"),
    );
    let on = sysfs::write_tap_attr(&class, minor, "discard", "1");
    t.expect_ok("switch discard on again", on);
    t.expect_errno(
        "sysfs discard 2 is EINVAL",
        sysfs::write_tap_attr(&class, minor, "discard", "2"),
        libc::EINVAL,
    );
    let mut f = all();
    let r = ring.negotiate_raw(&mut f);
    t.check(
        "a second negotiation before the disk exists replaces the first",
        r.is_ok() && f.features == FEATURES_ALL && f.max_discard_sectors == 8192,
        || format!("{r:?} {f:?}"),
    );

    // The disk.
    let mut back = BackRing::new();
    if t.expect_ok("CREATE_DEVICE", ring.create_device_info(&valid_info()))
        .is_none()
    {
        return;
    }
    let mut f = all();
    let r = ring.negotiate_raw(&mut f);
    t.expect_errno(
        "NEGOTIATE after the session's disk exists is EINVAL",
        r,
        libc::EINVAL,
    );
    let disk = crate::disk_name(minor);
    let queue = env.sysfs.join("block").join(&disk).join("queue");
    let q = |name: &str| {
        sysfs::read_attr(&queue.join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("<{e}>"))
    };
    t.check(
        "queue: write_cache is write back, fua 1",
        q("write_cache") == "write back" && q("fua") == "1",
        || format!("write_cache {:?} fua {:?}", q("write_cache"), q("fua")),
    );
    t.check(
        "queue: discard limits as agreed",
        q("discard_max_hw_bytes") == (8192 * 512).to_string() && q("discard_granularity") == "4096",
        || {
            format!(
                "discard_max_hw_bytes {:?} granularity {:?}",
                q("discard_max_hw_bytes"),
                q("discard_granularity")
            )
        },
    );
    t.check(
        "queue: write_zeroes_max_bytes as agreed",
        q("write_zeroes_max_bytes") == (8192 * 512).to_string(),
        || format!("{:?}", q("write_zeroes_max_bytes")),
    );

    // A second daemon (a new mapping of the same ring) on the existing disk.
    let _ = serve_null(&ring, &mut back);
    ring.unmap();
    if t.expect_ok("mmap again (a new session)", ring.map())
        .is_none()
    {
        return;
    }
    t.expect_errno(
        "a V-XS daemon on a disk with features: CREATE_DEVICE is EINVAL",
        ring.create_device_info(&valid_info()),
        libc::EINVAL,
    );
    let mut f = Features::request(FEAT_FLUSH);
    let r = ring.negotiate_raw(&mut f);
    t.expect_errno(
        "asking for other features than the disk's is EINVAL",
        r,
        libc::EINVAL,
    );
    let mut f = all();
    let r = ring.negotiate_raw(&mut f);
    t.check(
        "asking for the disk's features is accepted",
        r.is_ok() && f.features == FEATURES_ALL,
        || format!("{r:?} {f:?}"),
    );
    t.expect_errno(
        "... and CREATE_DEVICE then finds the disk (EEXIST)",
        ring.create_device_info(&valid_info()),
        libc::EEXIST,
    );

    // A live switch-off takes discard off the queue.
    let off = sysfs::write_tap_attr(&class, minor, "write_zeroes", "0");
    t.expect_ok("switch write-zeroes off on the live disk", off);
    t.check(
        "queue: write_zeroes_max_bytes is 0 after the switch",
        q("write_zeroes_max_bytes") == "0",
        || format!("{:?}", q("write_zeroes_max_bytes")),
    );
    let _ = sysfs::write_tap_attr(&class, minor, "write_zeroes", "1");

    let removed = crate::remove_with_retry(&ring, &mut back, Duration::from_secs(10));
    t.expect_ok("REMOVE_DEVICE", removed);
    drop(ring);
    t.expect_ok("FREE_TAP", taps.free(minor));
    deep(env, t, &mut taps);
}

/// Deep rings (`FEAT_DEEP`): the ring_slots agreed must be the mapping's, and the disk gets
/// as many tags; a daemon mapping V-XS's size cannot take such a disk over.
fn deep(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>) {
    use blktap::uapi::{FEAT_DEEP, FEAT_LARGE};
    let Some(info) = t.expect_ok("ALLOC_TAP (deep)", taps.alloc()) else {
        return;
    };
    let minor = info.ring_minor;
    let Some(mut ring) = t.expect_ok("open the ring (deep)", env.open_ring(&info)) else {
        return;
    };
    if t.expect_ok("mmap a ring of 128 entries", ring.map_layout(128, 11))
        .is_none()
    {
        return;
    }
    let deep = |slots: u32| Features {
        features: FEATURES_ALL | FEAT_DEEP,
        ring_slots: slots,
        ..all()
    };
    for n in [64, 256, 1024] {
        expect_einval(
            t,
            &format!("DEEP with ring_slots {n} on a 128-entry mapping is EINVAL"),
            &ring,
            deep(n),
        );
    }
    expect_einval(
        t,
        "DEEP and LARGE with max_segments 64 on a mapping of 11 is EINVAL",
        &ring,
        Features {
            features: FEATURES_ALL | FEAT_DEEP | FEAT_LARGE,
            max_segments: 64,
            ..deep(128)
        },
    );
    let mut f = all();
    let r = ring.negotiate_raw(&mut f);
    t.check(
        "without DEEP, a deep mapping is used as V-XS's",
        r.is_ok() && f.features == FEATURES_ALL && f.ring_slots == 0,
        || format!("{r:?} {f:?}"),
    );
    let mut f = deep(128);
    let r = ring.negotiate_raw(&mut f);
    t.check(
        "DEEP with the mapping's 128 entries is agreed",
        r.is_ok() && f.features == FEATURES_ALL | FEAT_DEEP && f.ring_slots == 128,
        || format!("{r:?} {f:?}"),
    );
    let mut back = BackRing::new();
    if t.expect_ok(
        "CREATE_DEVICE (deep)",
        ring.create_device_info(&valid_info()),
    )
    .is_none()
    {
        return;
    }
    let tags = env
        .sysfs
        .join("block")
        .join(crate::disk_name(minor))
        .join("mq/0/nr_tags");
    let tags = sysfs::read_attr(&tags).map(|s| s.trim().to_string());
    t.check(
        "the disk has 128 tags",
        tags.as_ref().is_ok_and(|s| s == "128"),
        || format!("{tags:?}"),
    );
    // A daemon with V-XS's mapping cannot take the deep disk over.
    let _ = serve_null(&ring, &mut back);
    ring.unmap();
    if t.expect_ok("mmap V-XS's size (a new session)", ring.map())
        .is_none()
    {
        return;
    }
    expect_einval(
        t,
        "the disk's DEEP agreement on a V-XS mapping is EINVAL",
        &ring,
        deep(128),
    );
    t.expect_errno(
        "... and its CREATE_DEVICE is EINVAL",
        ring.create_device_info(&valid_info()),
        libc::EINVAL,
    );
    ring.unmap();
    if t.expect_ok("mmap 128 entries again", ring.map_layout(128, 11))
        .is_none()
    {
        return;
    }
    let mut f = deep(128);
    let r = ring.negotiate_raw(&mut f);
    t.check(
        "the same agreement on the same layout is accepted",
        r.is_ok() && f.ring_slots == 128,
        || format!("{r:?} {f:?}"),
    );
    t.expect_errno(
        "... and CREATE_DEVICE then finds the disk (EEXIST)",
        ring.create_device_info(&valid_info()),
        libc::EEXIST,
    );
    ring.set_layout(128, 11).ok();
    let mut back = BackRing::new();
    let removed = crate::remove_with_retry(&ring, &mut back, Duration::from_secs(10));
    t.expect_ok("REMOVE_DEVICE (deep)", removed);
    drop(ring);
    t.expect_ok("FREE_TAP (deep)", taps.free(minor));
}

/// `BLKZEROOUT` of `len` bytes at `offset` of the block device `dev`.
pub fn zeroout(dev: &Path, offset: u64, len: u64) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(|e| format!("{}: {e}", dev.display()))?;
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT (_IO(0x12, 127)) reads two u64 from the valid pointer.
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), 0x127f as _, range.as_ptr()) };
    if ret < 0 {
        return Err(format!(
            "BLKZEROOUT {}: {}",
            dev.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
