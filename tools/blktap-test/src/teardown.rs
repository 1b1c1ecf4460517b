//! `teardown`: every order of tearing a tap down, with I/O in flight.
//!
//! Each scenario allocates its own tap, serves it with an in-process daemon
//! ([`crate::daemon`]) where it needs one, breaks it down in one particular order and checks
//! the documented outcome: errno values, I/O failing with EIO within the bound, the disk
//! being removed, and the tap being freeable at the end.

use crate::daemon::{self, Backend};
use crate::ktap::Ktap;
use crate::util::{self, AlignedBuf, TapDebug, BLOCK};
use crate::{Env, Taps};
use blktap::ring::Ring;
use blktap::uapi::{DeviceInfo, RING_SIZE};
use blktap::{sysfs, BlktapInfo};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a failing I/O may take to come back (the daemon-death guarantee).
pub const EIO_BOUND: Duration = Duration::from_secs(5);
/// Disk size used by the scenarios.
const DISK_BYTES: usize = 8 << 20;

/// Scenario names, in the order `all` runs them.
pub const SCENARIOS: [&str; 12] = [
    "unmap-pending",
    "unmap-remap",
    "close-keep-mapping",
    "remove-busy",
    "free-busy",
    "reopen-during-removal",
    "orphan-reopen",
    "new-daemon-serves-survivor",
    "ring-full-unmap",
    "poll-unmapped",
    "unmap-race",
    "free-during-removal",
];

/// A tap with a mapped ring, a disk and an in-process daemon's state.
pub struct Setup {
    /// The tap.
    pub info: BlktapInfo,
    /// Its ring, mapped.
    pub ring: Ring,
    /// The daemon's indices and RAM disk.
    pub backend: Backend,
    /// The disk node.
    pub disk: PathBuf,
}

/// Allocates a tap, opens and maps its ring and creates an 8 MiB disk.
pub fn setup(env: &Env, taps: &mut Taps<'_>) -> Result<Setup, String> {
    let info = taps.alloc().map_err(|e| e.to_string())?;
    let mut ring = env.open_ring(&info).map_err(|e| e.to_string())?;
    ring.map().map_err(|e| e.to_string())?;
    ring.create_device_info(&DeviceInfo::new(DISK_BYTES as u64 / 512, 512, false))
        .map_err(|e| e.to_string())?;
    let disk = env.disk_node(&info).map_err(|e| e.to_string())?;
    Ok(Setup {
        info,
        ring,
        backend: Backend::new(DISK_BYTES),
        disk,
    })
}

/// Result of one I/O done by a helper thread, with its duration.
pub type IoDone = (Result<usize, i32>, Duration);

/// One O_DIRECT I/O of block `block` in a new thread (opening the disk itself): a read, or
/// a write of 4 KiB of `fill`.
pub fn spawn_io(disk: &Path, block: u64, fill: Option<u8>) -> mpsc::Receiver<IoDone> {
    let (tx, rx) = mpsc::channel();
    let disk = disk.to_path_buf();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = util::open_disk(&disk).and_then(|fd| io_on(&fd, block, fill).map(|_| BLOCK));
        let _ = tx.send((r, t0.elapsed()));
    });
    rx
}

/// One O_DIRECT I/O on an open disk: a read (returning the data) or a write of `fill`.
pub fn io_on(fd: &OwnedFd, block: u64, fill: Option<u8>) -> Result<Vec<u8>, i32> {
    let mut buf = AlignedBuf::new(BLOCK);
    let off = block * BLOCK as u64;
    let n = match fill {
        Some(b) => {
            buf.slice_mut(BLOCK).fill(b);
            util::pwrite(fd.as_raw_fd(), buf.slice(BLOCK), off)?
        }
        None => util::pread(fd.as_raw_fd(), buf.slice_mut(BLOCK), off)?,
    };
    if n != BLOCK {
        return Err(libc::EIO);
    }
    Ok(buf.slice(BLOCK).to_vec())
}

/// Checks that the I/O behind `rx` fails with EIO within `bound`.
pub fn expect_eio(t: &mut Ktap, name: &str, rx: &mpsc::Receiver<IoDone>, bound: Duration) {
    match rx.recv_timeout(bound) {
        Ok((Err(e), lat)) => {
            t.check(name, e == libc::EIO, || {
                format!("failed with {} after {lat:?}", util::errno_name(e))
            });
        }
        Ok((Ok(_), lat)) => t.fail(name, &format!("succeeded after {lat:?}")),
        Err(_) => t.fail(name, &format!("no answer within {bound:?}")),
    }
}

/// Checks that the I/O behind `rx` succeeds within `bound`.
fn expect_ok(t: &mut Ktap, name: &str, rx: &mpsc::Receiver<IoDone>, bound: Duration) {
    match rx.recv_timeout(bound) {
        Ok((Ok(_), _)) => {
            t.check(name, true, String::new);
        }
        Ok((Err(e), lat)) => t.fail(
            name,
            &format!("failed with {} after {lat:?}", util::errno_name(e)),
        ),
        Err(_) => t.fail(name, &format!("no answer within {bound:?}")),
    }
}

fn disk_exists(env: &Env, minor: u32) -> bool {
    sysfs::disk_exists(&env.sysfs, minor)
}

/// Waits until the disk of `minor` is gone from sysfs; checks it went within the bound.
fn expect_disk_gone(t: &mut Ktap, env: &Env, minor: u32, name: &str) {
    let t0 = Instant::now();
    let gone = util::wait_until(EIO_BOUND, || !disk_exists(env, minor));
    t.check(name, gone, || {
        format!("still in /sys/block after {:?}", t0.elapsed())
    });
}

/// The usual end of a scenario: the disk goes ([`expect_disk_gone`], checked as
/// "`scenario`: `gone`"), then the tap can be freed ("`scenario`: FREE_TAP").
fn expect_gone_then_free(
    t: &mut Ktap,
    env: &Env,
    taps: &mut Taps<'_>,
    minor: u32,
    scenario: &str,
    gone: &str,
) {
    expect_disk_gone(t, env, minor, &format!("{scenario}: {gone}"));
    t.expect_ok(&format!("{scenario}: FREE_TAP"), taps.free(minor));
}

/// Waits until the kernel has `n` requests pending on `minor` (or the timeout passes).
fn wait_pending(env: &Env, minor: u32, n: usize, timeout: Duration) -> bool {
    util::wait_until(timeout, || {
        TapDebug::read(&env.class_dir(), minor).is_ok_and(|d| d.pending.len() >= n)
    })
}

fn run_one(env: &Env, t: &mut Ktap, name: &str) {
    t.diag(&format!("scenario {name}"));
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip(name, &e),
    };
    let mut taps = Taps::new(&ctl);
    let s = match setup(env, &mut taps) {
        Ok(s) => s,
        Err(e) => return t.fail(&format!("{name}: set up a tap with a disk"), &e),
    };
    match name {
        "unmap-pending" => unmap_pending(env, t, &mut taps, s),
        "unmap-remap" => unmap_remap(env, t, &mut taps, s),
        "close-keep-mapping" => close_keep_mapping(env, t, &mut taps, s),
        "remove-busy" => remove_busy(env, t, &mut taps, s),
        "free-busy" => free_busy(env, t, &mut taps, s),
        "reopen-during-removal" => reopen_during_removal(env, t, &mut taps, s),
        "orphan-reopen" => orphan_reopen(env, t, &mut taps, s),
        "new-daemon-serves-survivor" => new_daemon(env, t, &mut taps, s),
        "ring-full-unmap" => ring_full_unmap(env, t, &mut taps, s),
        "poll-unmapped" => poll_unmapped(env, t, &mut taps, s),
        "unmap-race" => unmap_race(env, t, &mut taps, s),
        "free-during-removal" => free_during_removal(env, t, &mut taps, s),
        _ => t.fail(name, &"unknown scenario"),
    }
}

/// munmap with a request in flight and the disk open; then close; then the last disk close.
fn unmap_pending(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, mut s: Setup) {
    let minor = s.info.ring_minor;
    let hold = match util::open_disk(&s.disk) {
        Ok(fd) => fd,
        Err(e) => return t.fail("open the disk", &util::errno_name(e)),
    };
    let rx = spawn_io(&s.disk, 1, None);
    // Requests reach the ring when its owner polls (as in V-XS).
    let mem_prod = || {
        let _ = s.ring.poll(Some(Duration::ZERO));
        s.ring.memory().map_or(0, |m| m.req_prod())
    };
    t.check(
        "unmap-pending: the read reaches the ring",
        util::wait_until(EIO_BOUND, || mem_prod() != 0),
        || "req_prod stayed 0".to_string(),
    );
    s.ring.unmap();
    expect_eio(
        t,
        "unmap-pending: the pending read fails with EIO after munmap",
        &rx,
        EIO_BOUND,
    );
    t.expect_errno(
        "unmap-pending: RESPOND after munmap is EACCES",
        s.ring.respond(),
        libc::EACCES,
    );
    t.expect_errno(
        "unmap-pending: REMOVE_DEVICE after munmap is EACCES",
        s.ring.remove_device(),
        libc::EACCES,
    );
    let rx = spawn_io(&s.disk, 2, Some(0x5a));
    expect_eio(
        t,
        "unmap-pending: a later write fails with EIO",
        &rx,
        EIO_BOUND,
    );
    match TapDebug::read(&env.class_dir(), minor) {
        Ok(d) => {
            t.check(
                "unmap-pending: nothing pending, not mapped",
                !d.mapped && d.pending.is_empty(),
                || format!("{d:?}"),
            );
        }
        Err(e) => t.fail("unmap-pending: read debug", &e),
    }
    t.expect_errno(
        "unmap-pending: FREE_TAP with the ring open is EBUSY",
        taps.ctl.free(minor),
        libc::EBUSY,
    );
    drop(s.ring);
    t.check(
        "unmap-pending: the open disk survives the ring's release",
        disk_exists(env, minor),
        || "disk removed while open".to_string(),
    );
    t.expect_errno(
        "unmap-pending: FREE_TAP with the disk open is EBUSY",
        taps.ctl.free(minor),
        libc::EBUSY,
    );
    let t0 = Instant::now();
    let r = io_on(&hold, 0, None);
    t.check(
        "unmap-pending: I/O on the orphaned disk fails with EIO at once",
        r == Err(libc::EIO) && t0.elapsed() < EIO_BOUND,
        || format!("{:?} after {:?}", r.map(|_| ()), t0.elapsed()),
    );
    drop(hold);
    let gone = "the disk goes after its last close";
    expect_gone_then_free(t, env, taps, minor, "unmap-pending", gone);
}

/// munmap keeping the fd; map again: the disk survived (EEXIST) and is served again.
fn unmap_remap(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, mut s: Setup) {
    let minor = s.info.ring_minor;
    s.ring.unmap();
    t.check(
        "unmap-remap: the disk stays while the ring file is open",
        disk_exists(env, minor),
        || "disk removed at munmap".to_string(),
    );
    t.expect_errno(
        "unmap-remap: CREATE_DEVICE while unmapped is EACCES",
        s.ring
            .create_device_info(&DeviceInfo::new(2048, 512, false)),
        libc::EACCES,
    );
    if t.expect_ok("unmap-remap: mmap again", s.ring.map())
        .is_none()
    {
        return;
    }
    s.backend.reset();
    t.expect_errno(
        "unmap-remap: CREATE_DEVICE on the surviving disk is EEXIST",
        s.ring
            .create_device_info(&DeviceInfo::new(2048, 512, false)),
        libc::EEXIST,
    );
    let served = daemon::while_serving(&s.ring, &mut s.backend, || {
        let rx = spawn_io(&s.disk, 3, Some(0x33));
        expect_ok(t, "unmap-remap: a write is served", &rx, EIO_BOUND);
        let r = util::open_disk(&s.disk).and_then(|fd| io_on(&fd, 3, None));
        t.check(
            "unmap-remap: and read back",
            r.as_ref().is_ok_and(|d| d.iter().all(|&b| b == 0x33)),
            || format!("{:?}", r.as_ref().map(|d| d[0])),
        );
    });
    if let Err(e) = served.expect("server thread") {
        t.fail("unmap-remap: serving", &e);
    }
    t.expect_ok("unmap-remap: REMOVE_DEVICE", s.ring.remove_device());
    drop(s.ring);
    t.expect_ok("unmap-remap: FREE_TAP", taps.free(minor));
}

/// close() keeping the mapping: the tap stays busy; requests stall until munmap fails them.
fn close_keep_mapping(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, s: Setup) {
    let minor = s.info.ring_minor;
    let Some(mapping) = s.ring.into_mapping() else {
        return t.fail("close-keep-mapping: mapping", &"none");
    };
    t.expect_errno(
        "close-keep-mapping: FREE_TAP while mapped is EBUSY",
        taps.ctl.free(minor),
        libc::EBUSY,
    );
    t.expect_errno(
        "close-keep-mapping: opening the ring again is EBUSY",
        env.open_ring(&s.info),
        libc::EBUSY,
    );
    let rx = spawn_io(&s.disk, 4, None);
    // Without the ring fd nobody can poll, so the read waits, queued (as in V-XS), until the
    // mapping goes.
    t.check(
        "close-keep-mapping: the read waits while the mapping lives",
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        || "the read finished without a daemon".to_string(),
    );
    drop(mapping);
    expect_eio(
        t,
        "close-keep-mapping: the stalled read fails with EIO at munmap",
        &rx,
        EIO_BOUND,
    );
    let gone = "the disk goes with the ring";
    expect_gone_then_free(t, env, taps, minor, "close-keep-mapping", gone);
}

/// REMOVE_DEVICE while the disk is open: EBUSY and I/O keeps flowing; after close: removed.
fn remove_busy(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, mut s: Setup) {
    let minor = s.info.ring_minor;
    let ring = &s.ring;
    let served = daemon::while_serving(ring, &mut s.backend, || match util::open_disk(&s.disk) {
        Ok(hold) => {
            t.expect_errno(
                "remove-busy: REMOVE_DEVICE with the disk open is EBUSY",
                ring.remove_device(),
                libc::EBUSY,
            );
            let w = io_on(&hold, 5, Some(0x77));
            let r = io_on(&hold, 5, None);
            t.check(
                "remove-busy: I/O keeps flowing after the refused removal",
                w.is_ok() && r.as_ref().is_ok_and(|d| d.iter().all(|&b| b == 0x77)),
                || format!("write {:?}, read {:?}", w.map(|_| ()), r.map(|d| d[0])),
            );
            drop(hold);
            t.expect_ok(
                "remove-busy: REMOVE_DEVICE after the last close",
                ring.remove_device(),
            );
        }
        Err(e) => t.fail("remove-busy: open the disk", &util::errno_name(e)),
    });
    if let Err(e) = served.expect("server thread") {
        t.fail("remove-busy: serving", &e);
    }
    t.check(
        "remove-busy: the disk is gone",
        !disk_exists(env, minor),
        || "still in /sys/block".to_string(),
    );
    t.expect_ok(
        "remove-busy: REMOVE_DEVICE without a disk",
        s.ring.remove_device(),
    );
    drop(s.ring);
    t.expect_ok("remove-busy: FREE_TAP", taps.free(minor));
}

/// FREE_TAP in every busy state.
fn free_busy(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, s: Setup) {
    let minor = s.info.ring_minor;
    t.expect_errno(
        "free-busy: FREE_TAP with ring open, mapped and a disk is EBUSY",
        taps.ctl.free(minor),
        libc::EBUSY,
    );
    let hold = util::open_disk(&s.disk);
    let Some(mapping) = s.ring.into_mapping() else {
        return t.fail("free-busy: mapping", &"none");
    };
    t.expect_errno(
        "free-busy: FREE_TAP with the ring mapped (fd closed) is EBUSY",
        taps.ctl.free(minor),
        libc::EBUSY,
    );
    drop(mapping);
    match hold {
        Ok(hold) => {
            t.expect_errno(
                "free-busy: FREE_TAP with the ring released but the disk open is EBUSY",
                taps.ctl.free(minor),
                libc::EBUSY,
            );
            drop(hold);
        }
        Err(e) => t.fail("free-busy: open the disk", &util::errno_name(e)),
    }
    // The disk goes with its last close (a work item) or with FREE_TAP itself.
    let r = util::retry_busy(EIO_BOUND, || taps.free(minor));
    t.expect_ok("free-busy: FREE_TAP once everything is closed", r);
    t.check("free-busy: no disk left", !disk_exists(env, minor), || {
        "still in /sys/block".to_string()
    });
    let mut ring = match taps.alloc().and_then(|i| env.open_ring(&i).map(|r| (i, r))) {
        Ok(x) => x,
        Err(e) => return t.fail("free-busy: second tap", &e),
    };
    t.expect_errno(
        "free-busy: FREE_TAP with the ring open, unmapped is EBUSY",
        taps.ctl.free(ring.0.ring_minor),
        libc::EBUSY,
    );
    if ring.1.map().is_ok() {
        ring.1.unmap();
    }
    drop(ring.1);
    t.expect_ok(
        "free-busy: FREE_TAP after close",
        taps.free(ring.0.ring_minor),
    );
}

/// Rounds of [`free_during_removal`].
const FREE_DURING_REMOVAL_ROUNDS: usize = 10;

/// FREE_TAP right after the last close of an orphaned disk, while the removal work deletes it:
/// FREE_TAP waits for that removal and succeeds (never EBUSY), and the disk is gone when it
/// returns. Repeated with new taps; how many rounds caught the disk still there is reported.
fn free_during_removal(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, first: Setup) {
    let mut next = Some(first);
    let (mut freed, mut in_flight) = (0, 0);
    let mut errors = Vec::new();
    for round in 0..FREE_DURING_REMOVAL_ROUNDS {
        let s = match next.take().map_or_else(|| setup(env, taps), Ok) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("round {round}: set up: {e}"));
                break;
            }
        };
        let minor = s.info.ring_minor;
        let hold = match util::open_disk(&s.disk) {
            Ok(fd) => fd,
            Err(e) => {
                errors.push(format!(
                    "round {round}: open the disk: {}",
                    util::errno_name(e)
                ));
                break;
            }
        };
        // The daemon goes; the open disk survives, orphaned, until its last close.
        drop(s.ring);
        if !disk_exists(env, minor) {
            errors.push(format!("round {round}: the open disk went with the ring"));
            break;
        }
        // The last close queues the removal work; FREE_TAP comes at once, no retry.
        drop(hold);
        in_flight += usize::from(disk_exists(env, minor));
        match taps.free(minor) {
            Ok(()) => freed += 1,
            Err(e) => errors.push(format!("round {round}: FREE_TAP: {e}")),
        }
        if disk_exists(env, minor) {
            errors.push(format!("round {round}: the disk outlived FREE_TAP"));
        }
    }
    t.diag(&format!(
        "free-during-removal: {freed}/{FREE_DURING_REMOVAL_ROUNDS} freed, the disk still \
         there at FREE_TAP in {in_flight}"
    ));
    t.check(
        "free-during-removal: FREE_TAP after the last close waits for the removal",
        errors.is_empty() && freed == FREE_DURING_REMOVAL_ROUNDS,
        || errors.join("; "),
    );
}

/// Opener threads: open the disk, read a block, close, until `stop`; counts of reads that
/// succeeded, failed with EIO, and open errors (by errno).
#[derive(Default, Debug)]
struct OpenerCounts {
    opens: u64,
    reads_ok: u64,
    reads_eio: u64,
    read_other: Vec<i32>,
    open_errors: Vec<i32>,
}

fn opener(disk: &Path, stop: &AtomicBool, expect_data: bool, gen: &AtomicU64) -> OpenerCounts {
    let mut c = OpenerCounts::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        match util::open_disk(disk) {
            Ok(fd) => {
                c.opens += 1;
                let r = io_on(&fd, 6 + i % 8, None);
                // Read after the I/O: EIO is fine if the daemon may have died meanwhile.
                let phase = gen.load(Ordering::SeqCst);
                match r {
                    Ok(_) => c.reads_ok += 1,
                    Err(libc::EIO) if !expect_data || phase > 0 => c.reads_eio += 1,
                    Err(e) => c.read_other.push(e),
                }
            }
            Err(e) => {
                if c.open_errors.len() < 64 {
                    c.open_errors.push(e);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    c
}

/// Checks that the openers' failed opens all failed as opens of a removed disk may (ENXIO,
/// ENOENT or ENODEV).
fn expect_removed_opens(t: &mut Ktap, name: &str, counts: &[OpenerCounts]) {
    let bad_opens: Vec<i32> = counts
        .iter()
        .flat_map(|c| c.open_errors.clone())
        .filter(|&e| e != libc::ENXIO && e != libc::ENOENT && e != libc::ENODEV)
        .collect();
    t.check(name, bad_opens.is_empty(), || {
        format!("open errors {bad_opens:?}")
    });
}

/// The disk is opened again and again while REMOVE_DEVICE is retried.
fn reopen_during_removal(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, mut s: Setup) {
    let minor = s.info.ring_minor;
    let stop_io = AtomicBool::new(false);
    let stop_srv = AtomicBool::new(false);
    let phase = AtomicU64::new(0);
    let (ring, backend, disk) = (&s.ring, &mut s.backend, &s.disk);
    let mut removed = None;
    let counts: Vec<OpenerCounts> = std::thread::scope(|sc| {
        let server = sc.spawn(|| daemon::serve_until(ring, backend, &stop_srv));
        let openers: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| opener(disk, &stop_io, true, &phase)))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let mut tries = 0;
        while t0.elapsed() < Duration::from_secs(20) {
            tries += 1;
            match ring.remove_device() {
                Ok(()) => {
                    removed = Some(tries);
                    break;
                }
                Err(e) if e.is_errno(libc::EBUSY) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    t.fail("reopen-during-removal: REMOVE_DEVICE", &e);
                    break;
                }
            }
        }
        // Let the openers run into the removed disk for a while.
        std::thread::sleep(Duration::from_millis(200));
        stop_io.store(true, Ordering::Relaxed);
        let counts = openers
            .into_iter()
            .map(|h| h.join().expect("opener thread"))
            .collect();
        stop_srv.store(true, Ordering::Relaxed);
        if let Err(e) = server.join().expect("server thread") {
            t.fail("reopen-during-removal: serving", &e);
        }
        counts
    });
    t.diag(&format!("reopen-during-removal: {counts:?}"));
    t.check(
        "reopen-during-removal: REMOVE_DEVICE succeeds despite concurrent opens",
        removed.is_some(),
        || "still EBUSY after 20 s".to_string(),
    );
    let bad_reads: Vec<i32> = counts.iter().flat_map(|c| c.read_other.clone()).collect();
    t.check(
        "reopen-during-removal: every read of an opened disk succeeds",
        bad_reads.is_empty() && counts.iter().all(|c| c.reads_eio == 0),
        || format!("read errors {bad_reads:?}"),
    );
    expect_removed_opens(
        t,
        "reopen-during-removal: opens of the removed disk fail with ENXIO (or ENOENT)",
        &counts,
    );
    t.check(
        "reopen-during-removal: the disk is gone",
        !disk_exists(env, minor),
        || "still in /sys/block".to_string(),
    );
    drop(s.ring);
    t.expect_ok("reopen-during-removal: FREE_TAP", taps.free(minor));
}

/// The daemon dies while other tasks keep opening the disk; it goes once they stop.
fn orphan_reopen(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, s: Setup) {
    let Setup {
        info,
        ring,
        mut backend,
        disk,
    } = s;
    let minor = info.ring_minor;
    let mut ring = Some(ring);
    let stop_io = AtomicBool::new(false);
    let dead = AtomicU64::new(0);
    let counts: Vec<OpenerCounts> = std::thread::scope(|sc| {
        let openers: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| opener(&disk, &stop_io, true, &dead)))
            .collect();
        let r = ring.as_ref().expect("ring");
        let served = daemon::while_serving(r, &mut backend, || {
            std::thread::sleep(Duration::from_millis(300));
            // The openers may see EIO from here on.
            dead.store(1, Ordering::SeqCst);
        });
        if let Err(e) = served.expect("server thread") {
            t.fail("orphan-reopen: serving", &e);
        }
        // The daemon dies: unmap and close.
        drop(ring.take());
        std::thread::sleep(Duration::from_millis(500));
        stop_io.store(true, Ordering::Relaxed);
        openers
            .into_iter()
            .map(|h| h.join().expect("opener thread"))
            .collect()
    });
    t.diag(&format!("orphan-reopen: {counts:?}"));
    let bad: Vec<i32> = counts.iter().flat_map(|c| c.read_other.clone()).collect();
    t.check(
        "orphan-reopen: reads succeed while served and fail with EIO after",
        bad.is_empty(),
        || format!("unexpected read errors {bad:?}"),
    );
    expect_removed_opens(
        t,
        "orphan-reopen: opens fail only with ENXIO (or ENOENT)",
        &counts,
    );
    expect_disk_gone(
        t,
        env,
        minor,
        "orphan-reopen: the disk goes after the last opener",
    );
    let r = util::retry_busy(EIO_BOUND, || taps.free(minor));
    t.expect_ok("orphan-reopen: FREE_TAP", r);
}

/// A daemon dies with the disk open; a new one maps the ring and serves the same disk.
fn new_daemon(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, mut s: Setup) {
    let minor = s.info.ring_minor;
    let hold = match util::open_disk(&s.disk) {
        Ok(fd) => fd,
        Err(e) => return t.fail("new-daemon: open the disk", &util::errno_name(e)),
    };
    let _ = daemon::while_serving(&s.ring, &mut s.backend, || {
        let w = io_on(&hold, 0, Some(0x11));
        t.check("new-daemon: first daemon serves a write", w.is_ok(), || {
            format!("{:?}", w.map(|_| ()))
        });
    });
    drop(s.ring);
    let r = io_on(&hold, 0, None);
    t.check(
        "new-daemon: without a daemon I/O fails with EIO",
        r == Err(libc::EIO),
        || format!("{:?}", r.map(|d| d[0])),
    );
    let mut ring = match env.open_ring(&s.info).and_then(|mut r| r.map().map(|()| r)) {
        Ok(r) => r,
        Err(e) => return t.fail("new-daemon: second daemon opens and maps the ring", &e),
    };
    t.expect_errno(
        "new-daemon: CREATE_DEVICE of the surviving disk is EEXIST",
        ring.create_device_info(&DeviceInfo::new(DISK_BYTES as u64 / 512, 512, false)),
        libc::EEXIST,
    );
    let mut b2 = Backend::new(DISK_BYTES);
    b2.disk[..BLOCK].fill(0x22);
    let _ = daemon::while_serving(&ring, &mut b2, || {
        let r = io_on(&hold, 0, None);
        t.check(
            "new-daemon: the second daemon serves the same disk",
            r.as_ref().is_ok_and(|d| d.iter().all(|&b| b == 0x22)),
            || format!("{:?}", r.map(|d| d[0])),
        );
        drop(hold);
        t.expect_ok(
            "new-daemon: the second daemon removes the disk",
            ring.remove_device(),
        );
    });
    ring.unmap();
    drop(ring);
    t.check("new-daemon: no disk left", !disk_exists(env, minor), || {
        "still in /sys/block".to_string()
    });
    t.expect_ok("new-daemon: FREE_TAP", taps.free(minor));
}

/// 40 reads with nobody answering: 32 fill the ring, the rest wait; munmap fails them all.
fn ring_full_unmap(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, mut s: Setup) {
    let minor = s.info.ring_minor;
    // Held across the remap: the readers' last close must not hand the disk to the removal
    // work while the ring is unmapped (the kernel removes it then; see the report).
    let hold = match util::open_disk(&s.disk) {
        Ok(fd) => fd,
        Err(e) => return t.fail("ring-full-unmap: open the disk", &util::errno_name(e)),
    };
    let n = RING_SIZE as u64 + 8;
    let rxs: Vec<_> = (0..n).map(|i| spawn_io(&s.disk, 16 + i, None)).collect();
    t.check(
        "ring-full-unmap: 32 requests pending",
        wait_pending(env, minor, RING_SIZE as usize, Duration::from_secs(20)),
        || {
            format!(
                "{:?}",
                TapDebug::read(&env.class_dir(), minor).map(|d| d.pending.len())
            )
        },
    );
    let t0 = Instant::now();
    s.ring.unmap();
    let mut results = Vec::new();
    for rx in &rxs {
        results.push(rx.recv_timeout(EIO_BOUND.saturating_sub(t0.elapsed())));
    }
    let eio = results
        .iter()
        .filter(|r| matches!(r, Ok((Err(libc::EIO), _))))
        .count();
    t.check(
        &format!("ring-full-unmap: all {n} reads fail with EIO within the bound"),
        eio == n as usize,
        || {
            format!(
                "{eio} EIO; others: {:?}",
                results
                    .iter()
                    .filter(|r| !matches!(r, Ok((Err(libc::EIO), _))))
                    .map(|r| r.as_ref().map(|x| x.0).map_err(|_| "timeout"))
                    .collect::<Vec<_>>()
            )
        },
    );
    if t.expect_ok("ring-full-unmap: map again", s.ring.map())
        .is_none()
    {
        return;
    }
    s.backend.reset();
    let _ = daemon::while_serving(&s.ring, &mut s.backend, || {
        let rx = spawn_io(&s.disk, 1, None);
        expect_ok(t, "ring-full-unmap: I/O flows after remap", &rx, EIO_BOUND);
        drop(hold);
    });
    t.expect_ok("ring-full-unmap: REMOVE_DEVICE", s.ring.remove_device());
    drop(s.ring);
    t.expect_ok("ring-full-unmap: FREE_TAP", taps.free(minor));
}

/// poll before mmap and after munmap neither crashes nor hangs.
fn poll_unmapped(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, mut s: Setup) {
    let minor = s.info.ring_minor;
    s.ring.unmap();
    let t0 = Instant::now();
    let r = s.ring.poll(Some(Duration::from_millis(100)));
    t.check(
        "poll-unmapped: poll after munmap returns",
        r.is_ok() && t0.elapsed() < Duration::from_secs(2),
        || format!("{r:?} after {:?}", t0.elapsed()),
    );
    t.expect_ok("poll-unmapped: map again", s.ring.map());
    t.expect_ok(
        "poll-unmapped: poll while mapped",
        s.ring.poll(Some(Duration::from_millis(10))),
    );
    t.expect_ok("poll-unmapped: REMOVE_DEVICE", s.ring.remove_device());
    drop(s.ring);
    t.check(
        "poll-unmapped: no disk left",
        !disk_exists(env, minor),
        || "still in /sys/block".to_string(),
    );
    t.expect_ok("poll-unmapped: FREE_TAP", taps.free(minor));
    // A ring that was never mapped.
    match taps.alloc().and_then(|i| env.open_ring(&i).map(|r| (i, r))) {
        Ok((i, r)) => {
            let t0 = Instant::now();
            let p = r.poll(Some(Duration::from_millis(100)));
            t.check(
                "poll-unmapped: poll before mmap returns",
                p.is_ok() && t0.elapsed() < Duration::from_secs(2),
                || format!("{p:?}"),
            );
            drop(r);
            t.expect_ok("poll-unmapped: FREE_TAP", taps.free(i.ring_minor));
        }
        Err(e) => t.fail("poll-unmapped: second tap", &e),
    }
}

/// The daemon maps, serves and unmaps its ring over and over while other threads of it issue
/// RESPOND, REMOVE_DEVICE and poll and readers keep I/O going on the (held open) disk: every
/// call ends with an allowed result and every read completes, with data or EIO.
fn unmap_race(env: &Env, t: &mut Ktap, taps: &mut Taps<'_>, s: Setup) {
    let Setup {
        info,
        mut ring,
        mut backend,
        disk,
    } = s;
    let minor = info.ring_minor;
    let hold = match util::open_disk(&disk) {
        Ok(fd) => fd,
        Err(e) => return t.fail("unmap-race: open the disk", &util::errno_name(e)),
    };
    ring.unmap();
    let fd = std::os::fd::AsFd::as_fd(&ring).as_raw_fd();
    let stop = AtomicBool::new(false);
    let bad = std::sync::Mutex::new(Vec::<String>::new());
    let note = |what: String| {
        let mut b = bad.lock().expect("list");
        if b.len() < 8 {
            b.push(what);
        }
    };
    let ioctl = |cmd: u32| {
        // SAFETY: RESPOND and REMOVE_DEVICE take no pointer argument.
        let r = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, 0) };
        if r < 0 {
            util::last_errno()
        } else {
            0
        }
    };
    let reads = AtomicU64::new(0);
    let eio = AtomicU64::new(0);
    let cycles = 40;
    let mut mapped_cycles = 0;
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = ioctl(blktap::uapi::IOCTL_RESPOND);
                    if r != 0 && r != libc::EACCES {
                        note(format!("RESPOND: {}", util::errno_name(r)));
                    }
                    let r = ioctl(blktap::uapi::IOCTL_REMOVE_DEVICE);
                    if r != libc::EBUSY && r != libc::EACCES {
                        note(format!(
                            "REMOVE_DEVICE with the disk open: {}",
                            util::errno_name(r)
                        ));
                    }
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1) };
                }
            });
        }
        for k in 0..4u64 {
            let (hold, stop, reads, eio, note) = (&hold, &stop, &reads, &eio, &note);
            sc.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    match io_on(hold, 32 + k * 8 + i % 8, None) {
                        Ok(_) => {}
                        Err(libc::EIO) => {
                            eio.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => note(format!("read: {}", util::errno_name(e))),
                    }
                    if t0.elapsed() > EIO_BOUND {
                        note(format!("a read took {:?}", t0.elapsed()));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        for c in 0..cycles {
            let p = match util::mmap_ring(fd) {
                Ok(p) => p,
                Err(e) => {
                    note(format!("mmap cycle {c}: {}", blktap::Errno(e)));
                    continue;
                }
            };
            mapped_cycles += 1;
            backend.reset();
            // SAFETY: the mapping covers MMAP_SIZE bytes and lives until the munmap below.
            let mem = unsafe { blktap::ring::RingMemory::from_raw(p.cast()) };
            let until = Instant::now() + Duration::from_millis(20 + (c as u64 % 5) * 10);
            while Instant::now() < until {
                let _ = backend.serve_mem(mem, || match ioctl(blktap::uapi::IOCTL_RESPOND) {
                    0 => Ok(()),
                    e => Err(util::errno_name(e)),
                });
                std::thread::sleep(Duration::from_millis(1));
            }
            // SAFETY: our own mapping; `mem` is not used after this.
            unsafe { libc::munmap(p, blktap::uapi::MMAP_SIZE) };
        }
        stop.store(true, Ordering::Relaxed);
    });
    let bad = bad.into_inner().expect("list");
    t.diag(&format!(
        "unmap-race: {mapped_cycles} map/serve/unmap cycles, {} reads, {} EIO",
        reads.load(Ordering::Relaxed),
        eio.load(Ordering::Relaxed)
    ));
    t.check(
        "unmap-race: every call and read ended as allowed, within the bound",
        bad.is_empty() && mapped_cycles == cycles,
        || bad.join("; "),
    );
    drop(hold);
    if t.expect_ok("unmap-race: map again", ring.map()).is_some() {
        t.expect_ok("unmap-race: REMOVE_DEVICE", ring.remove_device());
    }
    drop(ring);
    t.check("unmap-race: no disk left", !disk_exists(env, minor), || {
        "still in /sys/block".to_string()
    });
    t.expect_ok("unmap-race: FREE_TAP", taps.free(minor));
}

/// Runs scenario `name` ("all" for every one).
pub fn run(env: &Env, t: &mut Ktap, names: &[String]) {
    let list: Vec<&str> = if names.is_empty() || names.iter().any(|n| n == "all") {
        SCENARIOS.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    for name in list {
        if !SCENARIOS.contains(&name) {
            t.fail(name, &"unknown scenario");
            continue;
        }
        run_one(env, t, name);
    }
}
