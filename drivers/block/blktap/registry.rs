// SPDX-License-Identifier: GPL-2.0

//! The driver-wide objects and the table of taps, indexed by minor.

use core::pin::Pin;

use kernel::{
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
            ClassDevice, //
        },
        globals::{
            self,
            TAPS, //
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

/// Debug level shown and set through the class `verbosity` attribute (V-XS default 1).
pub(crate) static VERBOSITY: Atomic<i32> = Atomic::new(1);

/// The registered driver-wide objects.
struct Driver {
    region: Pin<KBox<Region<RingFile>>>,
    class: Class<Tap>,
    bdev: BlockMajor,
}

/// An allocated tap with its sysfs device; it pins the module.
struct Entry {
    tap: Arc<Tap>,
    _device: ClassDevice<Tap>,
    _module: ModuleRef,
}

/// The taps, indexed by minor, and the driver objects they need.
pub(crate) struct TapTable {
    driver: Option<Driver>,
    taps: KVec<Option<Entry>>,
}

impl TapTable {
    /// An empty table, before module init.
    pub(crate) const fn new() -> Self {
        Self {
            driver: None,
            taps: KVec::new(),
        }
    }
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
    globals::init();
    let queue = install_module_queue(OwnedQueue::new(c"blktap")?);
    let bdev = BlockMajor::new(c"tapdev")?;
    let region = Region::<RingFile>::new(c"blktap2", MAX_DEVICES)?;
    let class = Class::<Tap>::new(c"blktap2")?;
    TAPS.lock().driver = Some(Driver {
        region,
        class,
        bdev,
    });
    Ok(RegistryGuard { _queue: queue })
}

/// Allocates the lowest free minor and its tap.
pub(crate) fn alloc_tap() -> Result<BlktapInfo> {
    let mut guard = TAPS.lock();
    let TapTable { driver, taps } = &mut *guard;
    let driver = driver.as_ref().ok_or(ENODEV)?;
    let minor = taps.iter().position(Option::is_none).unwrap_or(taps.len());
    if minor >= MAX_DEVICES as usize {
        // V-XS reports every allocation failure, exhaustion included, as ENOMEM.
        return Err(ENOMEM);
    }
    let minor = minor as u32;
    let ring_major = driver.region.major();
    let bdev_major = driver.bdev.major();
    let module = ModuleRef::get()?;
    let tap = Tap::new(minor, ring_major, bdev_major)?;
    let name = CString::try_from_fmt(fmt!("blktap/blktap{}", minor))?;
    let device = driver
        .class
        .create_device(mkdev(ring_major, minor), &name, tap.clone())?;
    let entry = Entry {
        tap,
        _device: device,
        _module: module,
    };
    if minor as usize == taps.len() {
        taps.push(Some(entry), GFP_KERNEL)?;
    } else {
        taps[minor as usize] = Some(entry);
    }
    Ok(BlktapInfo {
        ring_major,
        bdev_major,
        ring_minor: minor,
    })
}

/// Frees tap `minor`: `ENODEV` if there is none, `EBUSY` while its ring is open or mapped or
/// its disk is open.
pub(crate) fn free_tap(minor: u32) -> Result {
    let mut guard = TAPS.lock();
    let slot = guard.taps.get_mut(minor as usize).ok_or(ENODEV)?;
    let entry = slot.as_ref().ok_or(ENODEV)?;
    entry.tap.prepare_free()?;
    let entry = slot.take();
    while matches!(guard.taps.last(), Some(None)) {
        guard.taps.pop();
    }
    // Removes the sysfs device (waiting for its attribute callbacks) and unpins the module.
    drop(entry);
    Ok(())
}

/// The tap of `minor`, for opening its ring (`ENXIO` if there is none).
pub(crate) fn lookup(minor: u32) -> Result<Arc<Tap>> {
    let guard = TAPS.lock();
    match guard.taps.get(minor as usize) {
        Some(Some(entry)) => Ok(entry.tap.clone()),
        _ => Err(ENXIO),
    }
}

/// Calls `f` for each tap, lowest minor first.
pub(crate) fn for_each_tap(mut f: impl FnMut(&Tap) -> Result) -> Result {
    let guard = TAPS.lock();
    for entry in guard.taps.iter().flatten() {
        f(&entry.tap)?;
    }
    Ok(())
}

/// The current verbosity.
pub(crate) fn verbosity() -> i32 {
    VERBOSITY.load(Relaxed)
}
