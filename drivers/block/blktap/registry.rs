// SPDX-License-Identifier: GPL-2.0

//! The driver-wide objects and the table of taps, indexed by minor.

use core::pin::Pin;

use core::fmt::Write;

use kernel::{
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*,
    str::CString,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, //
    }, //
};

use crate::{
    kernel_ext::{
        blk::BlockMajor,
        chrdev::{
            mkdev,
            Region, //
        },
        class::{
            Class,
            ClassDevice,
            SysfsWriter, //
        },
        compat,
        globals::global_mutex,
        sysfs_dir::{
            DeviceFiles,
            Dir,
            DirSet,
            FileHandlers, //
        },
        task::ModuleRef,
        workqueue::{
            install_module_queue,
            ModuleQueueGuard,
            OwnedQueue, //
        },
    },
    ringdev::RingFile,
    tap::Tap,
    uapi::{
        BlktapInfo,
        MAX_DEVICES, //
    },
};

// Rule of this file: no sysfs object of ours is created or removed while `TAPS` is held,
// failures included. Removing a sysfs file (also when `device_add` or `sysfs_create_group`
// undo their own half-done work) waits for the `show`/`store` callbacks running in it, and
// the callbacks of the pool files and of a tap's `pool` attribute take `TAPS`.

/// Debug level shown and set through the class `verbosity` attribute (V-XS default 1).
pub(crate) static VERBOSITY: Atomic<i32> = Atomic::new(1);

/// The registered driver-wide objects.
struct Driver {
    region: Pin<KBox<Region<RingFile>>>,
    /// Shared so that `ALLOC_TAP` can create a tap's device without `TAPS` held. The module
    /// outlives every user of a clone (the control file of the `ALLOC_TAP` caller pins it).
    class: Arc<Class<Tap>>,
    bdev: BlockMajor,
}

/// An allocated tap with its sysfs devices; it pins the module.
struct Entry {
    tap: Arc<Tap>,
    /// `blktap/blktap<N>` (sysfs `blktap!blktap<N>`, what V-XS tools parse), with the ring's
    /// device number.
    _device: ClassDevice<Tap>,
    /// `blktap<N>`, the V-OXT spelling OpenXT's `tap-ctl list` parses: the same attributes,
    /// no device number. Each line's tools skip the other's entries.
    _oxt_device: ClassDevice<Tap>,
    _module: ModuleRef,
}

/// A minor's slot in the tap table.
enum Slot {
    /// The minor is free.
    Free,
    /// The minor has a tap.
    Used(Entry),
    /// The minor's tap was freed and its sysfs device is being removed: not reusable yet (a new
    /// device of the same name would clash with it).
    Freeing,
    /// The minor is being allocated: its slot exists before its device does.
    Reserved,
}

impl Slot {
    fn entry(&self) -> Option<&Entry> {
        match self {
            Slot::Used(entry) => Some(entry),
            _ => None,
        }
    }
}

global_mutex! {
    /// The tap table: the ring char devices find taps by minor (`open` gets only an inode), and
    /// the control device's ioctls need the driver's class and majors.
    pub(crate) static TAPS: TapTable = TapTable::new();
    /// Initialises [`TAPS`]; called once, first thing in module init ([`init`]).
    fn init_taps;
}

/// The taps, indexed by minor, and the driver objects they need.
pub(crate) struct TapTable {
    driver: Option<Driver>,
    taps: KVec<Slot>,
    pools: Option<Pools>,
}

impl TapTable {
    /// An empty table, before module init.
    pub(crate) const fn new() -> Self {
        Self {
            driver: None,
            taps: KVec::new(),
            pools: None,
        }
    }
}

/// Default size of a page pool: two full rings (V-XS `POOL_DEFAULT_PAGES`).
const POOL_DEFAULT_PAGES: u32 = 2 * 32 * 11;
/// Accepted pool sizes, in pages: one request to 256 requests (V-XS).
const POOL_PAGES: core::ops::RangeInclusive<u32> = 11..=2816;

/// A named page pool. This driver preallocates every ring's pages at `mmap` time, so pools
/// reserve nothing: they exist so that tools written for V-XS (SM) find the files they use.
struct Pool {
    name: CString,
    pages: u32,
    _dir: Dir,
}

/// The page pools under `/sys/class/misc/blktap!control/`, in [`TAPS`]. The set of their
/// directories is apart, in [`POOL_DIRS`].
struct Pools {
    pools: KVec<Pool>,
    default: usize,
    _files: DeviceFiles<PoolFiles>,
}

impl Pools {
    fn find(&self, name: &[u8]) -> Option<usize> {
        self.pools.iter().position(|p| p.name.to_bytes() == name)
    }
}

global_mutex! {
    /// The directory `pools/` that holds one directory per pool. A pool's directory is made
    /// under this lock and without `TAPS` (see the rule at the top): the lock keeps two
    /// stores of one new name from both creating it (a duplicate sysfs name is a kernel
    /// warning). Taken before `TAPS`, never under it. The files of a pool directory (`size`,
    /// `free`) do not take it in their callbacks, so removing one under it cannot wait for
    /// itself.
    static POOL_DIRS: Option<DirSet<PoolFiles>> = None;
    /// Initialises [`POOL_DIRS`]; called once, in module init ([`init`]).
    fn init_pool_dirs;
}

/// Checks a pool name as written to sysfs: one trailing newline is ignored (V-XS kept it).
fn pool_name(name: &[u8]) -> Result<&[u8]> {
    let name = name.strip_suffix(b"\n").unwrap_or(name);
    if name.is_empty() || name.len() > 255 || name.iter().any(|&b| b == 0 || b == b'/') {
        return Err(EINVAL);
    }
    Ok(name)
}

/// A new pool `name` (already checked by [`pool_name`]) with its directory in `set`.
fn new_pool(set: &DirSet<PoolFiles>, name: &[u8]) -> Result<Pool> {
    let mut bytes = KVec::with_capacity(name.len() + 1, GFP_KERNEL)?;
    bytes.extend_from_slice(name, GFP_KERNEL)?;
    bytes.push(0, GFP_KERNEL)?;
    let name = CString::try_from(CStr::from_bytes_with_nul(&bytes).map_err(|_| EINVAL)?)?;
    let dir = set.add(&name)?;
    Ok(Pool {
        name,
        pages: POOL_DEFAULT_PAGES,
        _dir: dir,
    })
}

/// Finds or creates pool `name`, then calls `f` with the pools and its index under `TAPS`.
fn with_pool(name: &[u8], f: impl FnOnce(&mut Pools, usize)) -> Result {
    let name = pool_name(name)?;
    let dirs = POOL_DIRS.lock();
    {
        let mut t = TAPS.lock();
        let pools = t.pools.as_mut().ok_or(ENODEV)?;
        if let Some(i) = pools.find(name) {
            f(pools, i);
            return Ok(());
        }
        // Room first: once the directory exists, nothing may fail until it is in the table.
        pools.pools.reserve(1, GFP_KERNEL)?;
    }
    let pool = new_pool(dirs.as_ref().ok_or(ENODEV)?, name)?;
    let mut t = TAPS.lock();
    // Only holders of `POOL_DIRS` add pools, so the room reserved above is still there, unless
    // the pools were shut down meanwhile.
    let rejected = match t.pools.as_mut() {
        Some(pools) => match pools.pools.push_within_capacity(pool) {
            Ok(()) => {
                let i = pools.pools.len() - 1;
                f(pools, i);
                None
            }
            Err(e) => Some((e.0, ENOMEM)),
        },
        None => Some((pool, ENODEV)),
    };
    drop(t);
    match rejected {
        // Its directory goes without `TAPS`.
        Some((pool, e)) => {
            drop(pool);
            Err(e)
        }
        None => Ok(()),
    }
}

/// Handlers of `default_pool` and `pools/<name>/{size,free}`.
struct PoolFiles;

/// Parses an unsigned integer as `simple_strtoul(.., 0)` would (`0x` hex, `0` octal).
fn parse_ulong(input: &[u8]) -> Result<u64> {
    let s = core::str::from_utf8(input).map_err(|_| EINVAL)?.trim();
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    u64::from_str_radix(digits, radix).map_err(|_| EINVAL)
}

fn fmt_err(_: core::fmt::Error) -> Error {
    EINVAL
}

impl FileHandlers for PoolFiles {
    const DEVICE_FILES: &'static [(&'static CStr, u16)] = &[(c"default_pool", 0o644)];
    const DIR_FILES: &'static [(&'static CStr, u16)] = &[(c"size", 0o644), (c"free", 0o444)];

    fn show_file(_name: &CStr, out: &mut SysfsWriter) -> Result {
        let t = TAPS.lock();
        let pools = t.pools.as_ref().ok_or(ENODEV)?;
        writeln!(
            out,
            "{}",
            pools.pools[pools.default]
                .name
                .to_str()
                .map_err(|_| EINVAL)?
        )
        .map_err(fmt_err)
    }

    fn store_file(_name: &CStr, input: &[u8]) -> Result {
        with_pool(input, |pools, i| pools.default = i)
    }

    fn show_dir(dir: &CStr, name: &CStr, out: &mut SysfsWriter) -> Result {
        let t = TAPS.lock();
        let pools = t.pools.as_ref().ok_or(ENODEV)?;
        let pool = &pools.pools[pools.find(dir.to_bytes()).ok_or(ENOENT)?];
        match name.to_bytes() {
            // Nothing is ever taken from a pool: every page is free.
            b"size" | b"free" => writeln!(out, "{}", pool.pages).map_err(fmt_err),
            _ => Err(EINVAL),
        }
    }

    fn store_dir(dir: &CStr, name: &CStr, input: &[u8]) -> Result {
        if name.to_bytes() != b"size" {
            return Err(EINVAL);
        }
        let pages = parse_ulong(input)?;
        let pages = pages.clamp(u64::from(*POOL_PAGES.start()), u64::from(*POOL_PAGES.end()));
        let mut t = TAPS.lock();
        let pools = t.pools.as_mut().ok_or(ENODEV)?;
        let i = pools.find(dir.to_bytes()).ok_or(ENOENT)?;
        pools.pools[i].pages = pages as u32;
        Ok(())
    }
}

/// Creates the page pool files under the control device `dev` and the `default` pool.
pub(crate) fn init_pools<M: MiscDevice>(control: &MiscDeviceRegistration<M>) -> Result {
    let set = DirSet::new(control, c"pools")?;
    let default = new_pool(&set, b"default")?;
    let mut pools = KVec::with_capacity(1, GFP_KERNEL)?;
    pools.push(default, GFP_KERNEL)?;
    let files = DeviceFiles::new(control)?;
    // Nothing is published before here, so a failure above drops everything without a lock.
    *POOL_DIRS.lock() = Some(set);
    TAPS.lock().pools = Some(Pools {
        pools,
        default: 0,
        _files: files,
    });
    Ok(())
}

/// Removes the page pool files; called before the control device goes away.
pub(crate) fn shutdown_pools() {
    let pools = TAPS.lock().pools.take();
    // Dropped without the lock: removing the files waits for their callbacks, which take it.
    // The pool directories go before their set.
    drop(pools);
    let set = POOL_DIRS.lock().take();
    drop(set);
}

/// Makes pool `name` exist (for a tap's `pool` attribute).
pub(crate) fn get_or_create_pool(name: &[u8]) -> Result {
    with_pool(name, |_, _| ())
}

/// The name of the pool new taps get.
fn default_pool_name(t: &TapTable) -> &[u8] {
    t.pools
        .as_ref()
        .map_or(b"default", |p| p.pools[p.default].name.to_bytes())
}

/// Tears the driver objects down when dropped (module exit, or a failed init).
pub(crate) struct RegistryGuard {
    _queue: ModuleQueueGuard,
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        let driver = TAPS.lock().driver.take();
        // Every tap pins the module, so none is left here.
        drop(driver);
    }
}

/// Registers the block major `tapdev`, the `blktap2` char region and class, and the module's
/// workqueue (in the V-XS init order).
pub(crate) fn init() -> Result<RegistryGuard> {
    init_taps();
    init_pool_dirs();
    let queue = install_module_queue(OwnedQueue::new(c"blktap")?);
    let bdev = BlockMajor::new(c"tapdev")?;
    let region = Region::<RingFile>::new(c"blktap2", MAX_DEVICES)?;
    let class = Arc::new(Class::<Tap>::new(c"blktap2")?, GFP_KERNEL)?;
    TAPS.lock().driver = Some(Driver {
        region,
        class,
        bdev,
    });
    Ok(RegistryGuard { _queue: queue })
}

/// Allocates the lowest free minor and its tap. `report` tells the caller the new tap's
/// numbers (the copy out of `ALLOC_TAP`) before the tap exists; if it fails, nothing is made.
///
/// Why before: a tap whose minor the caller never learned must not stay allocated, and once a
/// tap exists, anyone may open its ring (its node appears with the device), after which it
/// can no longer be freed (`EBUSY`) until that opener lets go. While the copy runs, the minor
/// is only reserved: no tap, no device, nothing to open or free, so undoing it cannot fail.
pub(crate) fn alloc_tap(report: impl FnOnce(&BlktapInfo) -> Result) -> Result {
    let (minor, info, class, pool) = {
        let mut guard = TAPS.lock();
        let mut pool = KVec::new();
        pool.extend_from_slice(default_pool_name(&guard), GFP_KERNEL)?;
        let TapTable { driver, taps, .. } = &mut *guard;
        let driver = driver.as_ref().ok_or(ENODEV)?;
        let minor = taps
            .iter()
            .position(|s| matches!(s, Slot::Free))
            .unwrap_or(taps.len());
        if minor >= MAX_DEVICES as usize {
            // V-XS reports every allocation failure, exhaustion included, as ENOMEM.
            return Err(ENOMEM);
        }
        if minor == taps.len() {
            taps.push(Slot::Reserved, GFP_KERNEL)?;
        } else {
            taps[minor] = Slot::Reserved;
        }
        let info = BlktapInfo {
            ring_major: driver.region.major(),
            bdev_major: driver.bdev.major(),
            ring_minor: minor as u32,
        };
        (minor, info, driver.class.clone(), pool)
    };
    // Without `TAPS`: the copy may fault (the mmap lock comes before `TAPS`), and the device
    // is created, or removed again when a later step fails, without it (see the rule at the
    // top). Whatever was made is dropped here, before `TAPS` is taken again.
    let made = report(&info).and_then(|()| {
        let module = ModuleRef::get()?;
        let timeout = compat::param_value(&crate::module_parameters::request_timeout);
        let tap = Tap::new(
            info.ring_minor,
            info.ring_major,
            info.bdev_major,
            pool,
            timeout,
        )?;
        let name = CString::try_from_fmt(fmt!("blktap/blktap{}", info.ring_minor))?;
        let device =
            class.create_device(mkdev(info.ring_major, info.ring_minor), &name, tap.clone())?;
        let name = CString::try_from_fmt(fmt!("blktap{}", info.ring_minor))?;
        let oxt_device = class.create_device(0, &name, tap.clone())?;
        Ok(Entry {
            tap,
            _device: device,
            _oxt_device: oxt_device,
            _module: module,
        })
    });
    drop(class);
    let mut guard = TAPS.lock();
    let taps = &mut guard.taps;
    // The reserved slot is still at `minor`: only trailing free slots are ever removed.
    let (result, unused) = match (made, taps.get_mut(minor)) {
        (Ok(entry), Some(slot)) => {
            *slot = Slot::Used(entry);
            (Ok(()), None)
        }
        (Ok(entry), None) => (Err(EINVAL), Some(entry)),
        (Err(e), slot) => {
            if let Some(slot) = slot {
                *slot = Slot::Free;
            }
            while matches!(taps.last(), Some(Slot::Free)) {
                taps.pop();
            }
            (Err(e), None)
        }
    };
    drop(guard);
    drop(unused);
    result
}

/// Frees tap `minor`: `ENODEV` if there is none, `EBUSY` while its ring is open or mapped or
/// its disk is open. Waits for a removal of its disk in flight.
pub(crate) fn free_tap(minor: u32) -> Result {
    let tap = lookup_entry(minor).ok_or(ENODEV)?;
    // Without `TAPS`: this deletes an idle disk (`del_gendisk` must not run under `TAPS`) or
    // waits for a removal in flight. Only one caller succeeds (the tap is then marked freed).
    tap.prepare_free()?;
    unregister(minor, &tap, |remove_device| remove_device())
}

/// sysfs `remove` of `tap` (V-OXT): frees the tap once its daemon is gone and its disk closed
/// (see [`Tap::remove`]). `detached` is given the removal of the tap's sysfs device to run: the
/// caller is a callback of that device, whose removal waits for its callbacks unless told
/// otherwise.
pub(crate) fn remove_tap(tap: &Tap, detached: impl FnOnce(&mut dyn FnMut())) -> Result {
    let minor = tap.minor();
    // The table's reference, which outlives the device whose callback borrows `tap`.
    let tap = lookup_entry(minor)
        .filter(|t| core::ptr::eq(&**t, tap))
        .ok_or(ENODEV)?;
    // The module's code runs on after the tap's own reference is dropped with its entry: this
    // one is dropped by the tap's work item, which module exit waits for.
    let module = ModuleRef::get()?;
    if Tap::remove(&tap)? {
        unregister(minor, &tap, detached)?;
        pr_info!("{}: tap removed\n", crate::ring::DiskName::new(minor));
    }
    Tap::put_module_later(tap, module);
    Ok(())
}

/// Takes the freed `tap` out of slot `minor` and removes its sysfs device, by the function that
/// `detached` is given to run.
fn unregister(minor: u32, tap: &Arc<Tap>, detached: impl FnOnce(&mut dyn FnMut())) -> Result {
    let mut guard = TAPS.lock();
    let slot = guard.taps.get_mut(minor as usize).ok_or(ENODEV)?;
    // A freed tap keeps its slot until here: nothing else empties a used slot.
    if !slot.entry().is_some_and(|e| Arc::ptr_eq(&e.tap, tap)) {
        return Err(ENODEV);
    }
    let mut entry = Some(core::mem::replace(slot, Slot::Freeing));
    drop(guard);
    // Without the lock: removing the sysfs device waits for its attribute callbacks, which may
    // take it. Then the module is unpinned (the caller's open control file still pins it).
    detached(&mut || drop(entry.take()));
    drop(entry);
    let mut guard = TAPS.lock();
    if let Some(slot) = guard.taps.get_mut(minor as usize) {
        *slot = Slot::Free;
    }
    while matches!(guard.taps.last(), Some(Slot::Free)) {
        guard.taps.pop();
    }
    Ok(())
}

/// The tap of `minor`, if it has one.
fn lookup_entry(minor: u32) -> Option<Arc<Tap>> {
    let guard = TAPS.lock();
    guard
        .taps
        .get(minor as usize)
        .and_then(Slot::entry)
        .map(|entry| entry.tap.clone())
}

/// The tap of `minor`, for opening its ring (`ENXIO` if there is none).
pub(crate) fn lookup(minor: u32) -> Result<Arc<Tap>> {
    lookup_entry(minor).ok_or(ENXIO)
}

/// Calls `f` for each tap, lowest minor first.
pub(crate) fn for_each_tap(mut f: impl FnMut(&Tap) -> Result) -> Result {
    let guard = TAPS.lock();
    for entry in guard.taps.iter().filter_map(Slot::entry) {
        f(&entry.tap)?;
    }
    Ok(())
}

/// The current verbosity.
pub(crate) fn verbosity() -> i32 {
    VERBOSITY.load(Relaxed)
}
