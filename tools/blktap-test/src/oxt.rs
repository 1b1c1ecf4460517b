//! V-OXT's 40-byte `CREATE_DEVICE` argument (issue 21): told from V-XS's 56-byte one by the
//! zero word at offset 12, read only as far as its flags ask, checked, its flags written back
//! masked before the disk exists; FLUSH and TRIM become the session's agreement.

use crate::ktap::Ktap;
use crate::{remove_with_retry, serve_null, Env, Taps};
use blktap::ring::{BackRing, Mapping, Ring};
use blktap::sysfs;
use blktap::uapi::{
    DeviceInfo, Features, OxtDeviceInfo, DEVICE_FLUSH, DEVICE_PSZ, DEVICE_RO, DEVICE_TRIM,
    FEAT_FLUSH, IOCTL_CREATE_DEVICE, MAX_RANGE_SECTORS, PAGE_SIZE,
};
use std::time::Duration;

/// A valid V-OXT info: 1 MiB, 512-byte sectors, physical 4096 at offset 1024, trim 8192.
fn good(flags: u64) -> OxtDeviceInfo {
    OxtDeviceInfo {
        phys_block_size: 4096,
        phys_block_offset: 1024,
        trim_block_size: 8192,
        trim_block_offset: 0,
        ..OxtDeviceInfo::new(2048, 512, flags)
    }
}

/// `CREATE_DEVICE` with the bytes at `addr` (any layout); the errno on failure.
fn create_at(ring: &Ring, addr: usize) -> Result<(), i32> {
    // SAFETY: the kernel reads and writes user memory at `addr` with copy_{from,to}_user,
    // which fail with EFAULT rather than fault; the pages involved belong to this process.
    match unsafe { ring.ioctl_raw(IOCTL_CREATE_DEVICE, addr as libc::c_ulong) } {
        Ok(_) => Ok(()),
        Err(e) => Err(e.errno().unwrap_or(0)),
    }
}

/// Two pages, the second one inaccessible; `info` is placed so that its first `len` bytes
/// end the first page. Returns the mapping and the address of the copy.
fn at_page_end(info: &OxtDeviceInfo, len: usize, first_prot: libc::c_int) -> (Mapping, usize) {
    let m = Mapping::anonymous(2 * PAGE_SIZE).expect("anonymous mapping");
    let base = m.as_ptr() as usize;
    let addr = base + PAGE_SIZE - len;
    // SAFETY: the copy lies within the first page of the fresh mapping (len <= 40), which is
    // writable; the raw byte copy of a plain-integer struct.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (info as *const OxtDeviceInfo).cast::<u8>(),
            addr as *mut u8,
            len,
        );
        libc::mprotect(
            (base + PAGE_SIZE) as *mut libc::c_void,
            PAGE_SIZE,
            libc::PROT_NONE,
        );
        libc::mprotect(base as *mut libc::c_void, PAGE_SIZE, first_prot);
    }
    (m, addr)
}

fn queue_attr(env: &Env, minor: u32, name: &str) -> String {
    let disk = crate::disk_name(minor);
    let path = env.sysfs.join("block").join(&disk).join(name);
    sysfs::read_attr(&path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

fn disk_exists(env: &Env, minor: u32) -> bool {
    env.sysfs
        .join("block")
        .join(crate::disk_name(minor))
        .exists()
}

/// Removes the disk (serving any probe), for the next case.
fn remove(t: &mut Ktap, ring: &Ring, back: &mut BackRing, what: &str) {
    let r = remove_with_retry(ring, back, Duration::from_secs(10));
    t.expect_ok(&format!("REMOVE_DEVICE after {what}"), r);
}

/// Runs every check on a tap of its own.
pub fn run(env: &Env, t: &mut Ktap) {
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => {
            t.skip("V-OXT device info", &e);
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
    let mut probe = good(DEVICE_FLUSH);
    t.expect_errno(
        "V-OXT CREATE_DEVICE before mmap is EACCES",
        ring.create_device_oxt(&mut probe),
        libc::EACCES,
    );
    if t.expect_ok("mmap", ring.map()).is_none() {
        return;
    }
    let mut back = BackRing::new();
    let q = |name: &str| queue_attr(env, minor, &format!("queue/{name}"));

    // V-XS layout: the physical size at offset 12 selects it, as before.
    let mut xs = DeviceInfo::new(2048, 512, false);
    xs.physical_sector_size = 4096;
    xs.flags = DEVICE_FLUSH | DEVICE_TRIM;
    if t.expect_ok(
        "V-XS layout (physical 4096 at 12)",
        ring.create_device_info(&xs),
    )
    .is_some()
    {
        t.check(
            "... V-XS disk: physical 4096, its FLUSH/TRIM bits ignored",
            q("physical_block_size") == "4096"
                && q("write_cache") == "write through"
                && q("discard_max_bytes") == "0",
            || {
                format!(
                    "physical {} write_cache {} discard_max_bytes {}",
                    q("physical_block_size"),
                    q("write_cache"),
                    q("discard_max_bytes")
                )
            },
        );
        remove(t, &ring, &mut back, "the V-XS disk");
    }

    // Refusals: EINVAL, nothing written back, no disk.
    let bad: [(&str, OxtDeviceInfo); 12] = [
        (
            "capacity 0",
            OxtDeviceInfo {
                capacity: 0,
                ..good(0)
            },
        ),
        (
            "sector size 768",
            OxtDeviceInfo {
                sector_size: 768,
                ..good(0)
            },
        ),
        (
            "sector size 256",
            OxtDeviceInfo {
                sector_size: 256,
                ..good(0)
            },
        ),
        (
            "sector size 8192",
            OxtDeviceInfo {
                sector_size: 8192,
                ..good(0)
            },
        ),
        (
            "capacity beyond 2^64 bytes",
            OxtDeviceInfo {
                capacity: u64::MAX,
                sector_size: 4096,
                ..good(0)
            },
        ),
        (
            "PSZ: physical 256 below logical",
            OxtDeviceInfo {
                phys_block_size: 256,
                phys_block_offset: 0,
                ..good(DEVICE_PSZ)
            },
        ),
        (
            "PSZ: physical 3072 not a power of two",
            OxtDeviceInfo {
                phys_block_size: 3072,
                phys_block_offset: 0,
                ..good(DEVICE_PSZ)
            },
        ),
        (
            "PSZ: offset 100 not a multiple of logical",
            OxtDeviceInfo {
                phys_block_offset: 100,
                ..good(DEVICE_PSZ)
            },
        ),
        (
            "PSZ: offset equal to the physical size",
            OxtDeviceInfo {
                phys_block_offset: 4096,
                ..good(DEVICE_PSZ)
            },
        ),
        (
            "TRIM: size 0",
            OxtDeviceInfo {
                trim_block_size: 0,
                ..good(DEVICE_TRIM)
            },
        ),
        (
            "TRIM: offset equal to the size",
            OxtDeviceInfo {
                trim_block_offset: 8192,
                ..good(DEVICE_TRIM)
            },
        ),
        (
            "TRIM: size 2 GiB",
            OxtDeviceInfo {
                trim_block_size: 1 << 31,
                ..good(DEVICE_TRIM)
            },
        ),
    ];
    for (what, info) in bad {
        let mut copy = info;
        let r = ring.create_device_oxt(&mut copy);
        t.expect_errno(&format!("V-OXT {what} is EINVAL"), r, libc::EINVAL);
        if copy.flags != info.flags || disk_exists(env, minor) {
            t.check(
                &format!("... {what}: flags untouched, no disk"),
                false,
                || format!("flags {:#x}", copy.flags),
            );
        }
    }
    t.check(
        "no disk after the refusals",
        !disk_exists(env, minor),
        || "a disk exists",
    );

    // Only the bytes the flags select are read: the struct ends the page before a hole.
    let (_m, addr) = at_page_end(
        &good(DEVICE_FLUSH | 0x10),
        24,
        libc::PROT_READ | libc::PROT_WRITE,
    );
    let r = create_at(&ring, addr);
    t.check(
        "no PSZ/TRIM: only 24 bytes are read (the next page is a hole)",
        r.is_ok(),
        || format!("errno {r:?}"),
    );
    if r.is_ok() {
        // SAFETY: `addr + 16` is inside the first, readable page of `_m`.
        let back_flags = unsafe { std::ptr::read_unaligned((addr + 16) as *const u64) };
        t.check(
            "... flags written back masked (0x10 cleared)",
            back_flags == DEVICE_FLUSH,
            || format!("{back_flags:#x}"),
        );
        t.check(
            "... FLUSH only: write back cache, no FUA, no discard, physical = logical",
            q("write_cache") == "write back"
                && q("fua") == "0"
                && q("discard_max_bytes") == "0"
                && q("physical_block_size") == "512",
            || {
                format!(
                    "write_cache {} fua {} discard_max_bytes {} physical {}",
                    q("write_cache"),
                    q("fua"),
                    q("discard_max_bytes"),
                    q("physical_block_size")
                )
            },
        );
        remove(t, &ring, &mut back, "the FLUSH disk");
    }
    let (_m, addr) = at_page_end(&good(DEVICE_PSZ), 24, libc::PROT_READ | libc::PROT_WRITE);
    t.check(
        "PSZ: bytes 24..31 are read (EFAULT past a hole at 24)",
        create_at(&ring, addr) == Err(libc::EFAULT),
        || "not EFAULT",
    );
    let (_m, addr) = at_page_end(&good(DEVICE_PSZ), 32, libc::PROT_READ | libc::PROT_WRITE);
    let r = create_at(&ring, addr);
    t.check("PSZ: 32 bytes are enough", r.is_ok(), || format!("{r:?}"));
    if r.is_ok() {
        remove(t, &ring, &mut back, "the PSZ disk");
    }
    let (_m, addr) = at_page_end(&good(DEVICE_TRIM), 32, libc::PROT_READ | libc::PROT_WRITE);
    t.check(
        "TRIM: bytes 32..39 are read (EFAULT past a hole at 32)",
        create_at(&ring, addr) == Err(libc::EFAULT),
        || "not EFAULT",
    );
    let (_m, addr) = at_page_end(&good(DEVICE_FLUSH), 24, libc::PROT_READ);
    t.check(
        "flags that cannot be written back: EFAULT, and no disk",
        create_at(&ring, addr) == Err(libc::EFAULT) && !disk_exists(env, minor),
        || "a disk, or not EFAULT",
    );
    drop(_m);

    // No flags: nothing beyond V-XS.
    let mut plain = good(0);
    if t.expect_ok("V-OXT without flags", ring.create_device_oxt(&mut plain))
        .is_some()
    {
        t.check(
            "... write through, no discard, flags 0 back",
            plain.flags == 0
                && q("write_cache") == "write through"
                && q("discard_max_bytes") == "0",
            || format!("flags {:#x} write_cache {}", plain.flags, q("write_cache")),
        );
        remove(t, &ring, &mut back, "the plain disk");
    }

    // Everything: RO, PSZ, FLUSH, TRIM, plus unknown bits.
    let all = DEVICE_RO | DEVICE_PSZ | DEVICE_FLUSH | DEVICE_TRIM;
    let mut full = good(all | 0x10 | 0x100);
    if t.expect_ok(
        "V-OXT RO|PSZ|FLUSH|TRIM|0x110",
        ring.create_device_oxt(&mut full),
    )
    .is_some()
    {
        t.check(
            "... flags written back: RO|PSZ|FLUSH|TRIM",
            full.flags == all,
            || format!("{:#x}", full.flags),
        );
        let max = (u64::from(MAX_RANGE_SECTORS) * 512).to_string();
        t.check(
            "... queue: physical 4096 at offset 1024, write back without FUA, discard 8192 \
             granules, read-only",
            q("physical_block_size") == "4096"
                && queue_attr(env, minor, "alignment_offset") == "1024"
                && q("write_cache") == "write back"
                && q("fua") == "0"
                && q("discard_granularity") == "8192"
                && q("discard_max_hw_bytes") == max
                && queue_attr(env, minor, "ro") == "1",
            || {
                format!(
                    "physical {} alignment {} write_cache {} fua {} granularity {} max {} ro {}",
                    q("physical_block_size"),
                    queue_attr(env, minor, "alignment_offset"),
                    q("write_cache"),
                    q("fua"),
                    q("discard_granularity"),
                    q("discard_max_hw_bytes"),
                    queue_attr(env, minor, "ro")
                )
            },
        );
        // A new daemon (mapping) on this disk: V-XS is refused, the same flags find it.
        let _ = serve_null(&ring, &mut back);
        ring.unmap();
        if t.expect_ok("mmap again (a new session)", ring.map())
            .is_some()
        {
            t.expect_errno(
                "a V-XS CREATE_DEVICE on the V-OXT disk with features is EINVAL",
                ring.create_device_info(&crate::valid_info()),
                libc::EINVAL,
            );
            let mut less = good(DEVICE_PSZ | DEVICE_FLUSH);
            t.expect_errno(
                "V-OXT flags without TRIM on that disk are EINVAL",
                ring.create_device_oxt(&mut less),
                libc::EINVAL,
            );
            let mut same = good(all);
            t.expect_errno(
                "the same V-OXT flags find the disk (EEXIST)",
                ring.create_device_oxt(&mut same),
                libc::EEXIST,
            );
            t.check(
                "... flags written back on EEXIST too",
                same.flags == all,
                || format!("{:#x}", same.flags),
            );
            let mut f = Features::request(FEAT_FLUSH);
            t.expect_errno(
                "NEGOTIATE for other features than that disk's is EINVAL",
                ring.negotiate_raw(&mut f),
                libc::EINVAL,
            );
        }
        remove(t, &ring, &mut back, "the full disk");
    }

    // With a prior NEGOTIATE in the same session.
    ring.unmap();
    if t.expect_ok("mmap (a fresh session)", ring.map()).is_some() {
        let mut f = Features::request(FEAT_FLUSH);
        t.expect_ok("NEGOTIATE FLUSH", ring.negotiate_raw(&mut f));
        let mut other = good(DEVICE_FLUSH | DEVICE_TRIM);
        t.expect_errno(
            "then V-OXT flags FLUSH|TRIM (another agreement) are EINVAL",
            ring.create_device_oxt(&mut other),
            libc::EINVAL,
        );
        let mut same = good(DEVICE_FLUSH);
        if t.expect_ok(
            "then V-OXT flags FLUSH (the same agreement) create the disk",
            ring.create_device_oxt(&mut same),
        )
        .is_some()
        {
            remove(t, &ring, &mut back, "the negotiated V-OXT disk");
        }
    }

    // The tap's discard switch: TRIM is written back (the module serves it) but the disk gets
    // no discard and the daemon no TRIM.
    let off = sysfs::write_tap_attr(&class, minor, "discard", "0");
    t.expect_ok("switch discard off (sysfs)", off);
    ring.unmap();
    if t.expect_ok("mmap (another session)", ring.map()).is_some() {
        let mut trim = good(DEVICE_FLUSH | DEVICE_TRIM);
        if t.expect_ok(
            "V-OXT FLUSH|TRIM with discard off",
            ring.create_device_oxt(&mut trim),
        )
        .is_some()
        {
            t.check(
                "... no discard on the queue, write back",
                q("discard_max_bytes") == "0" && q("write_cache") == "write back",
                || format!("discard_max_bytes {}", q("discard_max_bytes")),
            );
            remove(t, &ring, &mut back, "the disk without discard");
        }
    }
    let _ = sysfs::write_tap_attr(&class, minor, "discard", "1");
    drop(ring);
    t.expect_ok("FREE_TAP", taps.free(minor));
}
