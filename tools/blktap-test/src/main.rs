//! `blktap-test`: checks of the blktap2 kernel driver for the VM selftests.
//!
//! Prints KTAP-style results (`ok N - name`, `not ok N - name # reason`) and exits with 0 if
//! everything passed, 1 if anything failed and 4 if everything was skipped.

// Doc comments on the CLI types are clap help text, written for a terminal, not rustdoc.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod daemon;
mod dstate;
mod evil;
mod features;
mod fuzz;
mod io;
mod ktap;
mod level;
mod oxt;
mod rng;
mod security;
mod storm;
mod stuck;
mod teardown;
mod util;
mod withhold;

use blktap::node::{self, disk_name, NodeKind};
use blktap::ring::{BackRing, Mapping, Ring};
use blktap::uapi::{
    self, Blktap2Params, DeviceInfo, SringHeader, MAX_DEVICES, MMAP_PAGES, MMAP_SIZE, PAGE_SIZE,
    RSP_OKAY,
};
use blktap::{sysfs, BlktapInfo, Control, Errno, Error};
use clap::{Parser, Subcommand};
use ktap::Ktap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Checks of the blktap2 driver's ioctl, mmap and naming behaviour, with KTAP-style output.
///
/// Every subcommand allocates its own taps and frees them again. Exit status: 0 if all
/// checks passed, 1 if any failed, 4 if everything was skipped (e.g. the driver is not
/// loaded). Needs root.
#[derive(Debug, Parser)]
#[command(name = "blktap-test", version, about, long_about)]
struct Cli {
    /// Control device node [default: first existing of /dev/blktap-control,
    /// /dev/blktap/control, /dev/xen/blktap-2/control].
    #[arg(long, global = true, value_name = "PATH")]
    control: Option<PathBuf>,

    /// Directory of the ring nodes blktap<N> (devtmpfs). Missing nodes are created in a
    /// temporary directory with the ring major returned by ALLOC_TAP.
    #[arg(long, global = true, value_name = "DIR", default_value = node::DEVTMPFS_RING_DIR)]
    ring_dir: PathBuf,

    /// Directory of the disk nodes td<letters> (devtmpfs); missing nodes are created in a
    /// temporary directory.
    #[arg(long, global = true, value_name = "DIR", default_value = "/dev")]
    disk_dir: PathBuf,

    /// Mount point of sysfs.
    #[arg(long, global = true, value_name = "DIR", default_value = "/sys")]
    sysfs: PathBuf,

    /// Directory for temporary device nodes [default: a new directory in $TMPDIR].
    #[arg(long, global = true, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Error codes of the control and ring ioctls, open and mmap.
    ///
    /// Control: ALLOC_TAP returns the lowest free minor; FREE_TAP of an unknown minor is
    /// ENODEV, of -1, 16384 and 1<<40 EINVAL; an unknown ioctl is ENOTTY; ALLOC_TAP with a
    /// bad pointer is EFAULT and leaks no tap. Ring: a second open is EBUSY; opening an
    /// unallocated minor is ENXIO; ioctls before mmap are EACCES; a second mmap is EBUSY;
    /// invalid CREATE_DEVICE parameters are EINVAL, a second CREATE_DEVICE EEXIST;
    /// FREE_TAP of an open or mapped ring is EBUSY; REMOVE_DEVICE of an open disk is EBUSY;
    /// an unknown ring ioctl is ENOTTY; a ring ioctl from a forked child is EACCES.
    IoctlErrors,

    /// Disk names: taps 0, 25 and 26 get the disks tda, tdz and tdaa.
    ///
    /// Allocates 27 taps (skips if one of minors 0, 25, 26 is already in use), creates disks
    /// on 0, 25 and 26, checks /sys/block and the class attribute `devices`, then removes and
    /// frees everything.
    Names,

    /// A fresh ring mapping: zeroed data pages, initial ring header, exact mapping size.
    ///
    /// Checks that mmap lengths other than 353 pages and non-zero offsets are refused, that
    /// all 352 data pages are present and zero, that the ring header is in its initial state
    /// (req_prod 0, req_event 1, rsp_prod 0, rsp_event 1, rest zero) and that nothing of the
    /// ring is mapped past 353 pages.
    ZeroedPages,

    /// Run all of the above (ioctl-errors, names, zeroed-pages).
    All,

    /// A hostile daemon: garbage responses and indices, scribbled ring, racing RESPONDs,
    /// remaps, while threads do O_DIRECT I/O; good phases in between must serve correct data.
    Evil(evil::EvilArgs),

    /// ioctl and mmap fuzzing: every bad argument class once, then a seeded random walk over
    /// a model of a few taps that predicts every errno.
    Fuzz(fuzz::FuzzArgs),

    /// Every teardown order with I/O in flight (scenarios: see --help; default all).
    Teardown {
        /// Scenarios to run (default: all): unmap-pending, unmap-remap, close-keep-mapping,
        /// remove-busy, free-busy, reopen-during-removal, orphan-reopen,
        /// new-daemon-serves-survivor, ring-full-unmap, poll-unmapped, unmap-race,
        /// free-during-removal.
        scenarios: Vec<String>,
    },

    /// Processes allocating, using and freeing taps concurrently, racing FREE_TAP and open.
    Storm(storm::StormArgs),

    /// Node permissions, CAP_SYS_ADMIN for ALLOC/FREE, no ring access for non-owners.
    Security,

    /// No stale data in the pages a daemon gets: after a daemon served I/O and exited, the
    /// next mapping's data pages are zero, and read buffers start out zero.
    StalePages,

    /// Verified O_DIRECT I/O on tap disks (for load and daemon-death tests).
    Io(io::IoArgs),

    /// Watch all tasks for uninterruptible sleep longer than a bound.
    Dstate(dstate::DstateArgs),

    /// The feature negotiation (NEGOTIATE, 209): every refusal is EINVAL (sizes, version,
    /// unknown bits, with the supported set written back; FUA without FLUSH; limits out of
    /// range or without their feature; reserved words; after the session's disk exists); the
    /// agreement is the intersection with what the tap offers (sysfs discard / write_zeroes);
    /// the disk's queue shows it; a second daemon on the disk must agree on the same features.
    Negotiate,

    /// V-OXT's 40-byte CREATE_DEVICE (issue 21): the layout told from V-XS's by the word at
    /// offset 12; only the bytes the flags select are read; bad geometry is EINVAL with nothing
    /// written back; flags written back masked (EFAULT and no disk if they cannot be); the
    /// queue follows FLUSH, TRIM and PSZ; the recovery rule and a prior NEGOTIATE must agree.
    OxtInfo,

    /// BLKZEROOUT of LEN bytes at OFFSET of the block device DEV (exit status 1 on failure).
    Zeroout {
        /// Block device.
        dev: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },

    /// A daemon that is alive but stuck or odd (never polls, never responds, does I/O on its
    /// own disk from one thread, another thread or Linux AIO, polls only through Linux AIO),
    /// until it is killed.
    Stuck(stuck::StuckArgs),

    /// A daemon that withholds the first write to sector 0, then applies a second one and the
    /// withheld one in that order (or the withheld one alone on --go) and dumps sector 0.
    Withhold(withhold::WithholdArgs),

    /// A daemon that keeps req_event the Xen ring way (poll level) and waits for requests
    /// through epoll: added late, EPOLLONESHOT re-armed by MOD, nested, or added before mmap.
    Level(level::LevelArgs),
}

/// Paths used by the checks.
struct Env {
    control: Option<PathBuf>,
    ring_dir: PathBuf,
    disk_dir: PathBuf,
    sysfs: PathBuf,
    tmp: PathBuf,
}

/// Control node paths tried when --control is not given.
const CONTROL_PATHS: [&str; 3] = [
    "/dev/blktap-control",
    "/dev/blktap/control",
    "/dev/xen/blktap-2/control",
];

impl Env {
    fn class_dir(&self) -> PathBuf {
        self.sysfs.join("class/blktap2")
    }

    fn control(&self) -> Result<Control, String> {
        let path = match &self.control {
            Some(p) => p.clone(),
            None => CONTROL_PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .ok_or("no blktap control node (is the module loaded?)")?,
        };
        Control::open(&path).map_err(|e| e.to_string())
    }

    /// The ring node of `info`: the devtmpfs node if present, else one made in `tmp`.
    fn ring_node(&self, info: &BlktapInfo) -> blktap::Result<PathBuf> {
        let p = node::ring_path(&self.ring_dir, info.ring_minor);
        if p.exists() {
            return Ok(p);
        }
        self.tmp_node(
            NodeKind::Char,
            info.ring_major,
            info.ring_minor,
            &format!("blktap{}", info.ring_minor),
        )
    }

    /// The disk node of `info`: the devtmpfs node if present, else one made in `tmp`.
    fn disk_node(&self, info: &BlktapInfo) -> blktap::Result<PathBuf> {
        let name = disk_name(info.ring_minor);
        let p = self.disk_dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
        self.tmp_node(NodeKind::Block, info.bdev_major, info.ring_minor, &name)
    }

    fn tmp_node(
        &self,
        kind: NodeKind,
        major: u32,
        minor: u32,
        name: &str,
    ) -> blktap::Result<PathBuf> {
        node::mkdir_p(&self.tmp, 0o700)?;
        let p = self.tmp.join(name);
        let _ = fs::remove_file(&p);
        node::mknod(&p, kind, major, minor, 0o600)?;
        Ok(p)
    }

    fn open_ring(&self, info: &BlktapInfo) -> blktap::Result<Ring> {
        Ring::open(self.ring_node(info)?)
    }

    fn allocated(&self) -> Option<Vec<u32>> {
        sysfs::list_minors(&self.class_dir()).ok()
    }
}

/// Taps allocated by a check; whatever is left is freed on drop.
struct Taps<'c> {
    ctl: &'c Control,
    minors: Vec<u32>,
}

impl<'c> Taps<'c> {
    fn new(ctl: &'c Control) -> Self {
        Self {
            ctl,
            minors: Vec::new(),
        }
    }

    fn alloc(&mut self) -> blktap::Result<BlktapInfo> {
        let info = self.ctl.alloc()?;
        self.minors.push(info.ring_minor);
        Ok(info)
    }

    fn free(&mut self, minor: u32) -> blktap::Result<()> {
        self.ctl.free(minor)?;
        self.minors.retain(|&m| m != minor);
        Ok(())
    }
}

impl Drop for Taps<'_> {
    fn drop(&mut self) {
        for &minor in &self.minors {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match self.ctl.free(minor) {
                    Ok(()) => break,
                    Err(e) if e.is_errno(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => {
                        println!("# cleanup: {e}");
                        break;
                    }
                }
            }
        }
    }
}

/// Checks that FREE_TAP of `minor` is EBUSY (`busy`) while `holder` (its ring or a mapping of
/// it) keeps the tap busy, and succeeds (`after`) once `holder` is dropped.
fn free_after_release<H>(
    t: &mut Ktap,
    taps: &mut Taps<'_>,
    minor: u32,
    holder: H,
    busy: &str,
    after: &str,
) {
    t.expect_errno(busy, taps.ctl.free(minor), libc::EBUSY);
    drop(holder);
    t.expect_ok(after, taps.free(minor));
}

fn valid_info() -> DeviceInfo {
    DeviceInfo::new(2048, 512, false)
}

/// Answers whatever I/O the kernel queued (e.g. a udev probe) with success.
fn serve_null(ring: &Ring, back: &mut BackRing) -> blktap::Result<()> {
    if ring.is_mapped() {
        ring.serve(back, |_| RSP_OKAY)?;
    }
    Ok(())
}

/// REMOVE_DEVICE, retried while EBUSY (serving any I/O meanwhile) until `timeout`.
fn remove_with_retry(ring: &Ring, back: &mut BackRing, timeout: Duration) -> blktap::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match ring.remove_device() {
            Err(e) if e.is_errno(libc::EBUSY) && Instant::now() < deadline => {
                ring.poll(Some(Duration::from_millis(100)))?;
                serve_null(ring, back)?;
            }
            r => return r,
        }
    }
}

/// Issues RESPOND from a forked child (which has no copy of the ring mapping) and returns the
/// child's errno (0 on success).
fn ioctl_in_child(ring: &Ring) -> Result<i32, String> {
    let fd = ring.as_fd().as_raw_fd();
    // SAFETY: blktap-test never starts threads, so the child may run; it only calls the
    // async-signal-safe ioctl and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", Errno::last()));
    }
    if pid == 0 {
        // SAFETY: RESPOND takes no argument; _exit does not return.
        unsafe {
            let ret = libc::ioctl(fd, uapi::IOCTL_RESPOND as _, 0);
            let err = if ret < 0 {
                *libc::__errno_location()
            } else {
                0
            };
            libc::_exit(err & 0xff);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(format!("waitpid: {}", Errno::last()));
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(format!("child ended with status {status:#x}"))
    }
}

/// A minor that no tap uses (from the top of the range).
fn unallocated_minor(allocated: &[u32]) -> u32 {
    (0..MAX_DEVICES)
        .rev()
        .find(|m| !allocated.contains(m))
        .unwrap_or(MAX_DEVICES - 1)
}

fn ioctl_errors(env: &Env, t: &mut Ktap) {
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("ioctl-errors", &e),
    };
    let mut taps = Taps::new(&ctl);

    // --- control device ---
    let before = env.allocated();
    let mut got = Vec::new();
    for i in 0..3 {
        match taps.alloc() {
            Ok(info) => got.push(info),
            Err(e) => return t.fail(&format!("ALLOC_TAP #{}", i + 1), &e),
        }
    }
    let minors: Vec<u32> = got.iter().map(|i| i.ring_minor).collect();
    t.diag(&format!("allocated minors {minors:?}"));
    match &before {
        Some(before) => {
            let mut taken = before.clone();
            let mut expected = Vec::new();
            for _ in 0..3 {
                let m = sysfs::lowest_free(&taken, MAX_DEVICES).unwrap_or(u32::MAX);
                expected.push(m);
                taken.push(m);
                taken.sort_unstable();
            }
            t.check(
                "ALLOC_TAP returns the lowest free minors in order",
                minors == expected,
                || format!("got {minors:?}, expected {expected:?}"),
            );
        }
        None => {
            t.check(
                "ALLOC_TAP returns increasing minors",
                minors.windows(2).all(|w| w[0] < w[1]),
                || format!("got {minors:?}"),
            );
        }
    }
    t.check(
        "ALLOC_TAP reports majors",
        got.iter()
            .all(|i| i.ring_major != 0 && i.bdev_major != 0 && i.ring_major == got[0].ring_major),
        || format!("{got:?}"),
    );

    let (a, b, c) = (got[0], got[1], got[2]);
    if t.expect_ok("FREE_TAP of the middle tap", taps.free(b.ring_minor))
        .is_some()
    {
        match taps.alloc() {
            Ok(again) => {
                t.check(
                    "ALLOC_TAP reuses the freed (lowest) minor",
                    again.ring_minor == b.ring_minor,
                    || format!("got {}, expected {}", again.ring_minor, b.ring_minor),
                );
            }
            Err(e) => t.fail("ALLOC_TAP after FREE_TAP", &e),
        }
    }
    if t.expect_ok("FREE_TAP of the last tap", taps.free(c.ring_minor))
        .is_some()
    {
        t.expect_errno(
            "FREE_TAP of an unallocated minor is ENODEV",
            ctl.free(c.ring_minor),
            libc::ENODEV,
        );
    }
    t.expect_errno(
        "FREE_TAP(-1) is EINVAL",
        ctl.free_raw(-1i64 as libc::c_ulong),
        libc::EINVAL,
    );
    t.expect_errno(
        "FREE_TAP(16384) is EINVAL",
        ctl.free_raw(16384),
        libc::EINVAL,
    );
    t.expect_errno(
        "FREE_TAP(1<<40) is EINVAL",
        ctl.free_raw(1 << 40),
        libc::EINVAL,
    );
    if let Some(now) = env.allocated() {
        t.check(
            "invalid FREE_TAPs freed nothing",
            now.contains(&a.ring_minor) && now.contains(&b.ring_minor),
            || format!("allocated now: {now:?}"),
        );
    }
    // SAFETY: 12345 is not a control ioctl; the argument is not used.
    t.expect_errno(
        "unknown control ioctl is ENOTTY",
        unsafe { ctl.ioctl_raw(12345, 0) },
        libc::ENOTTY,
    );

    let before = env.allocated();
    // SAFETY: address 0x1 is never mapped (mmap_min_addr), so the kernel cannot write there
    // and must fail with EFAULT.
    let r = unsafe { ctl.alloc_raw(1usize as *mut BlktapInfo) };
    let faulted = t.expect_errno("ALLOC_TAP with a bad pointer is EFAULT", r, libc::EFAULT);
    if !faulted {
        // It may have allocated a tap we do not know the minor of; resync from sysfs.
        if let (Some(before), Some(now)) = (&before, env.allocated()) {
            taps.minors
                .extend(now.iter().filter(|m| !before.contains(m)));
        }
    }
    match (&before, env.allocated()) {
        (Some(before), Some(now)) => {
            t.check(
                "failed ALLOC_TAP leaves no tap behind",
                *before == now,
                || format!("before {before:?}, after {now:?}"),
            );
        }
        _ => t.skip(
            "failed ALLOC_TAP leaves no tap behind",
            &"sysfs not available",
        ),
    }
    if let Some(before) = &before {
        let expected = sysfs::lowest_free(before, MAX_DEVICES);
        match taps.alloc() {
            Ok(i) => {
                t.check(
                    "the next ALLOC_TAP gets the minor the failed one would have",
                    Some(i.ring_minor) == expected,
                    || format!("got {}, expected {expected:?}", i.ring_minor),
                );
                let _ = taps.free(i.ring_minor);
            }
            Err(e) => t.fail("ALLOC_TAP after EFAULT", &e),
        }
    }

    // --- ring device ---
    let Some(mut ring) = t.expect_ok("open ring", env.open_ring(&a)) else {
        return;
    };
    t.check(
        "ring minor from fstat matches",
        ring.minor().ok() == Some(a.ring_minor),
        || format!("{:?}", ring.minor()),
    );
    t.expect_errno(
        "second open of a ring is EBUSY",
        env.open_ring(&a),
        libc::EBUSY,
    );
    let free_minor = unallocated_minor(&env.allocated().unwrap_or_default());
    match env.tmp_node(NodeKind::Char, a.ring_major, free_minor, "unallocated") {
        Ok(p) => {
            let r = Ring::open(&p);
            t.expect_errno(
                &format!("open of unallocated minor {free_minor} is ENXIO"),
                r,
                libc::ENXIO,
            );
        }
        Err(e) => t.fail("mknod for an unallocated minor", &e),
    };

    t.expect_errno(
        "RESPOND before mmap is EACCES",
        ring.respond(),
        libc::EACCES,
    );
    t.expect_errno(
        "CREATE_DEVICE before mmap is EACCES",
        ring.create_device_info(&valid_info()),
        libc::EACCES,
    );
    t.expect_errno(
        "REMOVE_DEVICE before mmap is EACCES",
        ring.remove_device(),
        libc::EACCES,
    );
    if t.expect_ok("mmap of 353 pages", ring.map()).is_none() {
        return;
    }
    t.expect_errno(
        "second mmap is EBUSY",
        ring.map_with(MMAP_SIZE, 0),
        libc::EBUSY,
    );
    // SAFETY: 12345 is not a ring ioctl; the argument is not used.
    t.expect_errno(
        "unknown ring ioctl is ENOTTY",
        unsafe { ring.ioctl_raw(12345, 0) },
        libc::ENOTTY,
    );
    match ioctl_in_child(&ring) {
        Ok(e) => {
            t.check(
                "ring ioctl from a forked child is EACCES",
                e == libc::EACCES,
                || format!("child got {}", Errno(e)),
            );
        }
        Err(e) => t.fail("ring ioctl from a forked child is EACCES", &e),
    }
    t.expect_ok("RESPOND with nothing to consume", ring.respond());

    let mut no_capacity = valid_info();
    no_capacity.capacity = 0;
    let mut bad_physical = valid_info();
    bad_physical.physical_sector_size = 100;
    for (what, bad) in [
        ("capacity 0", no_capacity),
        ("sector size 1000", DeviceInfo::new(2048, 1000, false)),
        ("sector size 8192", DeviceInfo::new(2048, 8192, false)),
        ("physical size 100", bad_physical),
    ] {
        t.expect_errno(
            &format!("CREATE_DEVICE with {what} is EINVAL"),
            ring.create_device_info(&bad),
            libc::EINVAL,
        );
    }
    t.check(
        "no disk after invalid CREATE_DEVICEs",
        !sysfs::disk_exists(&env.sysfs, a.ring_minor),
        || format!("/sys/block/{} exists", disk_name(a.ring_minor)),
    );
    t.expect_errno(
        "FREE_TAP of an open, mapped ring is EBUSY",
        ctl.free(a.ring_minor),
        libc::EBUSY,
    );

    let created = t
        .expect_ok("CREATE_DEVICE", ring.create_device_info(&valid_info()))
        .is_some();
    t.expect_errno(
        "second CREATE_DEVICE is EEXIST",
        ring.create_device_info(&valid_info()),
        libc::EEXIST,
    );
    let mut back = BackRing::new();
    if created {
        t.check(
            "disk appears in /sys/block",
            sysfs::disk_exists(&env.sysfs, a.ring_minor),
            || format!("no /sys/block/{}", disk_name(a.ring_minor)),
        );
        match env.disk_node(&a).and_then(|p| {
            fs::File::open(&p).map_err(|e| Error::from_io(format!("open {}", p.display()), &e))
        }) {
            Ok(disk) => {
                t.expect_errno(
                    "REMOVE_DEVICE while the disk is open is EBUSY",
                    ring.remove_device(),
                    libc::EBUSY,
                );
                drop(disk);
                t.expect_ok(
                    "REMOVE_DEVICE after the disk is closed",
                    remove_with_retry(&ring, &mut back, Duration::from_secs(5)),
                );
            }
            Err(e) => {
                t.fail("open the disk", &e);
                let _ = remove_with_retry(&ring, &mut back, Duration::from_secs(5));
            }
        }
        t.check(
            "disk gone from /sys/block",
            !sysfs::disk_exists(&env.sysfs, a.ring_minor),
            || format!("/sys/block/{} still exists", disk_name(a.ring_minor)),
        );
    }
    t.expect_ok("REMOVE_DEVICE without a disk", ring.remove_device());
    // A name with a newline would forge a "minor name" line of the class `devices` attribute.
    t.expect_errno(
        "CREATE_DEVICE_COMPAT with a newline in the name is EINVAL",
        ring.create_device_compat(&Blktap2Params::new(2048, 512).with_name("x\n1 forged")),
        libc::EINVAL,
    );
    t.check(
        "no disk after the refused CREATE_DEVICE_COMPAT",
        !sysfs::disk_exists(&env.sysfs, a.ring_minor),
        || format!("/sys/block/{} exists", disk_name(a.ring_minor)),
    );
    let params = Blktap2Params::new(2048, 512).with_name("blktap-test");
    if t.expect_ok("CREATE_DEVICE_COMPAT", ring.create_device_compat(&params))
        .is_some()
    {
        let name = sysfs::read_tap(&env.class_dir(), a.ring_minor).map(|t| t.name);
        t.check(
            "CREATE_DEVICE_COMPAT sets the tap name",
            matches!(&name, Ok(n) if n == "blktap-test"),
            || format!("name {name:?}"),
        );
        t.expect_ok(
            "REMOVE_DEVICE of the compat disk",
            remove_with_retry(&ring, &mut back, Duration::from_secs(5)),
        );
    }

    ring.unmap();
    t.expect_errno(
        "RESPOND after munmap is EACCES",
        ring.respond(),
        libc::EACCES,
    );
    free_after_release(
        t,
        &mut taps,
        a.ring_minor,
        ring,
        "FREE_TAP of an open, unmapped ring is EBUSY",
        "FREE_TAP after the ring is closed",
    );

    // A mapping that outlives the file descriptor keeps the tap busy.
    let mapping: Option<Mapping> = match env.open_ring(&b).and_then(|mut r| r.map().map(|()| r)) {
        Ok(r) => r.into_mapping(),
        Err(e) => {
            t.fail("open and map a second ring", &e);
            None
        }
    };
    if let Some(m) = mapping {
        free_after_release(
            t,
            &mut taps,
            b.ring_minor,
            m,
            "FREE_TAP of a mapped ring whose fd is closed is EBUSY",
            "FREE_TAP after munmap",
        );
    }
}

fn names(env: &Env, t: &mut Ktap) {
    const WANTED: [u32; 3] = [0, 25, 26];
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("names", &e),
    };
    let before = env.allocated().unwrap_or_default();
    if let Some(m) = WANTED.iter().find(|m| before.contains(m)) {
        return t.skip("names", &format!("minor {m} is already allocated"));
    }
    let mut taps = Taps::new(&ctl);
    let mut infos = Vec::new();
    let limit = 27 + before.len();
    while !infos.iter().any(|i: &BlktapInfo| i.ring_minor == 26) && taps.minors.len() < limit {
        match taps.alloc() {
            Ok(i) => infos.push(i),
            Err(e) => return t.fail("allocate taps up to minor 26", &e),
        }
    }
    let wanted: Vec<BlktapInfo> = WANTED
        .iter()
        .filter_map(|m| infos.iter().find(|i| i.ring_minor == *m).copied())
        .collect();
    if !t.check("allocated taps 0, 25 and 26", wanted.len() == 3, || {
        format!(
            "allocated {:?}",
            infos.iter().map(|i| i.ring_minor).collect::<Vec<_>>()
        )
    }) {
        return;
    }
    t.diag(&format!("{} taps allocated", infos.len()));

    let mut rings = Vec::new();
    for info in &wanted {
        let name = disk_name(info.ring_minor);
        let ring = env.open_ring(info).and_then(|mut r| {
            r.map()?;
            r.create_device(&valid_info())?;
            Ok(r)
        });
        if let Some(r) = t.expect_ok(&format!("create disk on tap {}", info.ring_minor), ring) {
            rings.push((r, BackRing::new(), *info));
            t.check(
                &format!("tap {} has disk {name} in /sys/block", info.ring_minor),
                sysfs::disk_exists(&env.sysfs, info.ring_minor),
                || format!("no {}", env.sysfs.join("block").join(&name).display()),
            );
            let node = env.disk_dir.join(&name);
            t.check(
                &format!("disk node {} exists", node.display()),
                node.exists(),
                || "missing".to_string(),
            );
        }
    }
    match sysfs::read_devices(&env.class_dir()) {
        Ok(devs) => {
            let listed: Vec<u32> = devs.iter().map(|d| d.0).collect();
            t.check(
                "class attribute devices lists the disks",
                rings.iter().all(|(_, _, i)| listed.contains(&i.ring_minor)),
                || format!("devices lists {listed:?}"),
            );
        }
        Err(e) => t.fail("read class attribute devices", &e),
    }
    for (ring, back, info) in &mut rings {
        t.expect_ok(
            &format!("remove disk {}", disk_name(info.ring_minor)),
            remove_with_retry(ring, back, Duration::from_secs(5)),
        );
    }
    drop(rings);
    let errors: Vec<String> = infos
        .iter()
        .filter_map(|info| taps.free(info.ring_minor).err())
        .map(|e| e.to_string())
        .collect();
    t.check(
        &format!("freed all {} taps", infos.len()),
        errors.is_empty(),
        || errors.join("; "),
    );
}

/// Returns the line of /proc/self/maps describing the mapping that starts at `addr`, and
/// whether any mapping contains `probe`.
fn maps_lookup(addr: usize, probe: usize) -> std::io::Result<(Option<(usize, usize)>, bool)> {
    let maps = fs::read_to_string("/proc/self/maps")?;
    let mut found = None;
    let mut probe_mapped = false;
    for line in maps.lines() {
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) else {
            continue;
        };
        if s == addr {
            found = Some((s, e));
        }
        probe_mapped |= (s..e).contains(&probe);
    }
    Ok((found, probe_mapped))
}

fn zeroed_pages(env: &Env, t: &mut Ktap) {
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("zeroed-pages", &e),
    };
    let mut taps = Taps::new(&ctl);
    let info = match taps.alloc() {
        Ok(i) => i,
        Err(e) => return t.fail("ALLOC_TAP", &e),
    };
    let Some(mut ring) = t.expect_ok("open ring", env.open_ring(&info)) else {
        return;
    };

    for (what, len, offset) in [
        ("354 pages", MMAP_SIZE + PAGE_SIZE, 0i64),
        ("352 pages", MMAP_SIZE - PAGE_SIZE, 0),
        ("353 pages at page offset 1", MMAP_SIZE, PAGE_SIZE as i64),
    ] {
        match ring.map_with(len, offset) {
            Err(e) => {
                t.check(
                    &format!("mmap of {what} is refused with EINVAL"),
                    e.is_errno(libc::EINVAL),
                    || e.to_string(),
                );
            }
            Ok(m) => {
                t.fail(
                    &format!("mmap of {what} is refused with EINVAL"),
                    &"the mapping succeeded",
                );
                drop(m);
            }
        }
    }
    if t.expect_ok("mmap of 353 pages", ring.map()).is_none() {
        return;
    }
    let mem = ring.memory().expect("mapped");
    let base = mem.base();

    let hdr = mem.header();
    t.check(
        "ring header is in its initial state",
        hdr == SringHeader::INITIAL,
        || {
            format!(
                "req_prod {} req_event {} rsp_prod {} rsp_event {} msg {} pad nonzero {}",
                hdr.req_prod,
                hdr.req_event,
                hdr.rsp_prod,
                hdr.rsp_event,
                hdr.msg,
                hdr.pad.iter().any(|&b| b != 0)
            )
        },
    );
    // SAFETY: reading within the 4096-byte ring page of the live mapping, by value.
    let nonzero_entry_bytes = (uapi::SRING_HEADER_SIZE..PAGE_SIZE)
        .filter(|&i| unsafe { std::ptr::read_volatile(base.add(i)) } != 0)
        .count();
    t.check("ring entries are zero", nonzero_entry_bytes == 0, || {
        format!("{nonzero_entry_bytes} non-zero bytes")
    });

    let mut resident = vec![0u8; MMAP_PAGES];
    // SAFETY: `base` is the page-aligned start of our MMAP_SIZE mapping and `resident` has one
    // byte per page.
    let ret = unsafe { libc::mincore(base.cast(), MMAP_SIZE, resident.as_mut_ptr()) };
    let missing: Vec<usize> = if ret == 0 {
        (1..MMAP_PAGES).filter(|&p| resident[p] & 1 == 0).collect()
    } else {
        t.diag(&format!("mincore: {}", Errno::last()));
        Vec::new()
    };
    if t.check(
        "all data pages are mapped at mmap time",
        missing.is_empty(),
        || {
            format!(
                "{} pages not present, first {:?} (touching them could SIGBUS)",
                missing.len(),
                &missing[..missing.len().min(8)]
            )
        },
    ) {
        let mut dirty = Vec::new();
        for page in 1..MMAP_PAGES {
            let p = mem.page_ptr(page).cast::<u64>();
            // SAFETY: the page lies inside the mapping, is present (mincore) and 8-aligned; read
            // word by word by value.
            let zero =
                (0..PAGE_SIZE / 8).all(|w| unsafe { std::ptr::read_volatile(p.add(w)) } == 0);
            if !zero {
                dirty.push(page);
            }
        }
        t.check("all 352 data pages are zero", dirty.is_empty(), || {
            format!(
                "{} non-zero pages, first {:?}",
                dirty.len(),
                &dirty[..dirty.len().min(8)]
            )
        });
    }

    let end = base as usize + MMAP_SIZE;
    match maps_lookup(base as usize, end) {
        Ok((Some((s, e)), probe_mapped)) => {
            t.check(
                "the ring VMA is exactly 353 pages",
                e - s == MMAP_SIZE,
                || format!("VMA is {} bytes", e - s),
            );
            if e == end && probe_mapped {
                t.skip(
                    "the byte past the mapping is not mapped",
                    &"another mapping happens to follow the ring",
                );
            } else {
                t.check(
                    "the byte past the mapping is not mapped",
                    !probe_mapped,
                    || format!("{end:#x} is mapped"),
                );
            }
        }
        Ok((None, _)) => t.fail(
            "the ring VMA is exactly 353 pages",
            &"no VMA starts at the mapping address",
        ),
        Err(e) => t.fail("read /proc/self/maps", &e),
    }

    drop(ring);
    t.expect_ok("FREE_TAP", taps.free(info.ring_minor));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (tmp, own_tmp) = match &cli.tmp_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("blktap-test.{}", std::process::id())),
            true,
        ),
    };
    let env = Env {
        control: cli.control.clone(),
        ring_dir: cli.ring_dir.clone(),
        disk_dir: cli.disk_dir.clone(),
        sysfs: cli.sysfs.clone(),
        tmp,
    };
    if let Cmd::Dstate(a) = &cli.command {
        return dstate::run(a);
    }
    if let Cmd::Zeroout { dev, offset, len } = &cli.command {
        return match features::zeroout(dev, *offset, *len) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("zeroout: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The test daemons run until they are killed; they return only on an error.
    let daemon = match &cli.command {
        Cmd::Stuck(a) => Some(("stuck", stuck::run(a))),
        Cmd::Withhold(a) => Some(("withhold", withhold::run(a))),
        Cmd::Level(a) => Some(("level", level::run(a))),
        _ => None,
    };
    if let Some((name, r)) = daemon {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut t = Ktap::new();
    match cli.command {
        Cmd::IoctlErrors => ioctl_errors(&env, &mut t),
        Cmd::Names => names(&env, &mut t),
        Cmd::ZeroedPages => zeroed_pages(&env, &mut t),
        Cmd::All => {
            ioctl_errors(&env, &mut t);
            names(&env, &mut t);
            zeroed_pages(&env, &mut t);
        }
        Cmd::Evil(a) => evil::run(&env, &a, &mut t),
        Cmd::Fuzz(a) => fuzz::run(&env, &a, &mut t),
        Cmd::Teardown { scenarios } => teardown::run(&env, &mut t, &scenarios),
        Cmd::Storm(a) => storm::run(&env, &a, &mut t),
        Cmd::Security => security::run(&env, &mut t),
        Cmd::StalePages => security::stale_pages(&env, &mut t),
        Cmd::Io(a) => io::run(&a, &mut t),
        Cmd::Negotiate => features::run(&env, &mut t),
        Cmd::OxtInfo => oxt::run(&env, &mut t),
        Cmd::Dstate(_) | Cmd::Stuck(_) | Cmd::Withhold(_) | Cmd::Level(_) | Cmd::Zeroout { .. } => {
            unreachable!("handled above")
        }
    }
    if own_tmp {
        let _ = fs::remove_dir_all(&env.tmp);
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unallocated_minor_choice() {
        assert_eq!(unallocated_minor(&[]), MAX_DEVICES - 1);
        assert_eq!(unallocated_minor(&[MAX_DEVICES - 1]), MAX_DEVICES - 2);
    }

    #[test]
    fn maps_lookup_finds_own_mapping() {
        let m = Mapping::anonymous(3 * PAGE_SIZE).unwrap();
        let (found, probe) =
            maps_lookup(m.as_ptr() as usize, m.as_ptr() as usize + PAGE_SIZE).unwrap();
        let (s, e) = found.unwrap();
        assert_eq!(s, m.as_ptr() as usize);
        assert!(e - s >= 3 * PAGE_SIZE);
        assert!(probe);
    }

    #[test]
    fn child_ioctl_on_a_regular_file() {
        // Without the driver, the forked child's RESPOND (= FIBMAP on a regular file with a
        // NULL argument) fails; what matters here is that the errno comes back.
        let path = std::env::temp_dir().join(format!("blktap-test-child-{}", std::process::id()));
        fs::write(&path, b"x").unwrap();
        let ring = Ring::open(&path).unwrap();
        let e = ioctl_in_child(&ring).unwrap();
        assert_ne!(e, 0);
        fs::remove_file(&path).unwrap();
    }
}
