// SPDX-License-Identifier: GPL-2.0

//! sysfs files on an existing device, and directories of attributes under it.
//!
//! Used for the control device's `default_pool` file and its `pools/<name>/{size,free}`
//! directories. As in [`super::class`], attributes are `(name, mode)` lists served by one pair
//! of trampolines that dispatch by name to safe code.
//!
//! C headers: [`include/linux/kobject.h`](srctree/include/linux/kobject.h),
//! [`include/linux/sysfs.h`](srctree/include/linux/sysfs.h)

use core::{
    marker::PhantomData,
    pin::Pin,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    error::to_result,
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*, //
};

/// The `struct device` of a registered misc device.
fn misc_dev<M: MiscDevice>(misc: &MiscDeviceRegistration<M>) -> *mut bindings::device {
    // SAFETY: the registration is live, so `this_device` is the misc device's device.
    unsafe { (*misc.as_raw()).this_device }
}

use super::{
    class::{
        attr,
        store_input,
        store_result,
        SysfsWriter, //
    },
    compat, //
};

/// Handlers of the files of a [`DeviceFiles`] and of the directories of a [`DirSet`].
pub(crate) trait FileHandlers: Sized + 'static {
    /// `(name, mode)` of the files created directly on the device.
    const DEVICE_FILES: &'static [(&'static CStr, u16)];
    /// `(name, mode)` of the files of every directory.
    const DIR_FILES: &'static [(&'static CStr, u16)];

    /// Shows device file `name`.
    fn show_file(name: &CStr, out: &mut SysfsWriter) -> Result;
    /// Stores `input` into device file `name`.
    fn store_file(name: &CStr, input: &[u8]) -> Result;
    /// Shows file `name` of directory `dir`.
    fn show_dir(dir: &CStr, name: &CStr, out: &mut SysfsWriter) -> Result;
    /// Stores `input` into file `name` of directory `dir`.
    fn store_dir(dir: &CStr, name: &CStr, input: &[u8]) -> Result;
}

struct Callbacks<T>(PhantomData<T>);

impl<T: FileHandlers> Callbacks<T> {
    /// # Safety
    ///
    /// Called by sysfs for a file created by [`DeviceFiles::new`]; `buf` is a page.
    unsafe extern "C" fn show_file(
        _dev: *mut bindings::device,
        attr: *mut bindings::device_attribute,
        buf: *mut c_char,
    ) -> isize {
        // SAFETY: attribute names are the static strings of `T::DEVICE_FILES`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        let mut out = SysfsWriter::new(buf.cast());
        let ret = T::show_file(name, &mut out);
        out.result(ret)
    }

    /// # Safety
    ///
    /// As for `show_file`; `buf` holds `count` bytes.
    unsafe extern "C" fn store_file(
        _dev: *mut bindings::device,
        attr: *mut bindings::device_attribute,
        buf: *const c_char,
        count: usize,
    ) -> isize {
        // SAFETY: as in `show_file`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        // SAFETY: sysfs passes `count` readable bytes.
        let input = unsafe { store_input(buf, count) };
        store_result(T::store_file(name, input), count)
    }

    /// # Safety
    ///
    /// Called by sysfs for a file of a directory created by [`DirSet::add`]; `buf` is a page.
    unsafe extern "C" fn show_dir(
        kobj: *mut bindings::kobject,
        attr: *mut bindings::kobj_attribute,
        buf: *mut c_char,
    ) -> isize {
        // SAFETY: the kobject is live during the callback and its name is a C string.
        let dir = unsafe { CStr::from_char_ptr((*kobj).name) };
        // SAFETY: attribute names are the static strings of `T::DIR_FILES`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        let mut out = SysfsWriter::new(buf.cast());
        let ret = T::show_dir(dir, name, &mut out);
        out.result(ret)
    }

    /// # Safety
    ///
    /// As for `show_dir`; `buf` holds `count` bytes.
    unsafe extern "C" fn store_dir(
        kobj: *mut bindings::kobject,
        attr: *mut bindings::kobj_attribute,
        buf: *const c_char,
        count: usize,
    ) -> isize {
        // SAFETY: as in `show_dir`.
        let dir = unsafe { CStr::from_char_ptr((*kobj).name) };
        // SAFETY: as in `show_dir`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        // SAFETY: sysfs passes `count` readable bytes.
        let input = unsafe { store_input(buf, count) };
        store_result(T::store_dir(dir, name, input), count)
    }
}

/// Files created on an existing device, removed when dropped.
///
/// # Invariants
///
/// Each entry of `attrs` was added to `dev` with `device_create_file`; the device outlives
/// this object (its owner drops this first).
pub(crate) struct DeviceFiles<T: FileHandlers> {
    dev: NonNull<bindings::device>,
    attrs: KVec<bindings::device_attribute>,
    _p: PhantomData<fn(T)>,
}

// SAFETY: sysfs functions may be called from any thread.
unsafe impl<T: FileHandlers> Send for DeviceFiles<T> {}
// SAFETY: `&DeviceFiles` gives no access to anything.
unsafe impl<T: FileHandlers> Sync for DeviceFiles<T> {}

impl<T: FileHandlers> DeviceFiles<T> {
    /// Creates `T::DEVICE_FILES` on the device of `misc`, which must outlive the returned object.
    pub(crate) fn new<M: MiscDevice>(misc: &MiscDeviceRegistration<M>) -> Result<Self> {
        let dev = misc_dev(misc);
        let mut attrs = KVec::with_capacity(T::DEVICE_FILES.len(), GFP_KERNEL)?;
        for &(n, mode) in T::DEVICE_FILES {
            attrs.push(
                bindings::device_attribute {
                    attr: attr(n, mode),
                    __bindgen_anon_1: bindings::device_attribute__bindgen_ty_1 {
                        show: Some(Callbacks::<T>::show_file),
                    },
                    __bindgen_anon_2: bindings::device_attribute__bindgen_ty_2 {
                        store: (mode & 0o222 != 0).then_some(Callbacks::<T>::store_file),
                    },
                },
                GFP_KERNEL,
            )?;
        }
        // The vector is never resized again, so its entries keep their addresses.
        for (i, a) in attrs.iter().enumerate() {
            // SAFETY: `dev` is a live device; `a` lives as long as the returned object.
            if let Err(e) = to_result(unsafe { bindings::device_create_file(dev, a) }) {
                for b in &attrs[..i] {
                    // SAFETY: `b` was added above.
                    unsafe { bindings::device_remove_file(dev, b) };
                }
                return Err(e);
            }
        }
        // INVARIANT: every entry was added to `dev`.
        Ok(Self {
            dev: NonNull::new(dev).ok_or(EINVAL)?,
            attrs,
            _p: PhantomData,
        })
    }
}

impl<T: FileHandlers> Drop for DeviceFiles<T> {
    fn drop(&mut self) {
        for a in self.attrs.iter() {
            // SAFETY: by the type invariant `a` was added to the live device; removal waits
            // for callbacks in progress.
            unsafe { bindings::device_remove_file(self.dev.as_ptr(), a) };
        }
    }
}

/// The attribute group shared by every directory of a [`DirSet`], pinned.
struct DirGroup {
    attrs: KVec<bindings::kobj_attribute>,
    ptrs: KVec<*mut bindings::attribute>,
    group: bindings::attribute_group,
}

/// A directory (kset) under a device, holding directories of `T::DIR_FILES`.
///
/// # Invariants
///
/// `kset` was created by `kset_create_and_add` under the device given to `new`, which
/// outlives this object; `group` is pinned and used by every directory added.
pub(crate) struct DirSet<T: FileHandlers> {
    kset: NonNull<bindings::kset>,
    group: Pin<KBox<DirGroup>>,
    _p: PhantomData<fn(T)>,
}

// SAFETY: kobject functions may be called from any thread.
unsafe impl<T: FileHandlers> Send for DirSet<T> {}
// SAFETY: `add` only calls thread-safe kobject functions.
unsafe impl<T: FileHandlers> Sync for DirSet<T> {}

impl<T: FileHandlers> DirSet<T> {
    /// Creates directory `name` under the device of `misc`, which must outlive the returned
    /// object.
    pub(crate) fn new<M: MiscDevice>(
        misc: &MiscDeviceRegistration<M>,
        name: &'static CStr,
    ) -> Result<Self> {
        let dev = misc_dev(misc);
        let mut attrs = KVec::with_capacity(T::DIR_FILES.len(), GFP_KERNEL)?;
        for &(n, mode) in T::DIR_FILES {
            attrs.push(
                compat::kobj_attribute(
                    attr(n, mode),
                    Some(Callbacks::<T>::show_dir),
                    (mode & 0o222 != 0).then_some(Callbacks::<T>::store_dir),
                ),
                GFP_KERNEL,
            )?;
        }
        let mut group = KBox::new(
            DirGroup {
                attrs,
                ptrs: KVec::new(),
                group: pin_init::zeroed(),
            },
            GFP_KERNEL,
        )?;
        let g = &mut *group;
        for a in g.attrs.iter_mut() {
            g.ptrs.push(&raw mut a.attr, GFP_KERNEL)?;
        }
        g.ptrs.push(core::ptr::null_mut(), GFP_KERNEL)?;
        g.group.__bindgen_anon_2.attrs = g.ptrs.as_mut_ptr();
        // SAFETY: `dev` is live; `name` is static; default uevent operations.
        let kset = unsafe {
            bindings::kset_create_and_add(
                name.as_char_ptr(),
                core::ptr::null(),
                &raw mut (*dev).kobj,
            )
        };
        // INVARIANT: the kset was created under `dev`; the group is boxed and pinned.
        Ok(Self {
            kset: NonNull::new(kset).ok_or(ENOMEM)?,
            group: KBox::into_pin(group),
            _p: PhantomData,
        })
    }

    /// Adds directory `name` with the files of `T::DIR_FILES`.
    pub(crate) fn add(&self, name: &CStr) -> Result<Dir> {
        // SAFETY: by the type invariant the kset is live; `name` is copied by the kobject.
        let kobj = unsafe {
            bindings::kobject_create_and_add(
                name.as_char_ptr(),
                &raw mut (*self.kset.as_ptr()).kobj,
            )
        };
        let kobj = NonNull::new(kobj).ok_or(ENOMEM)?;
        // SAFETY: `kobj` is live; the group is pinned and outlives every `Dir` (see `Drop`).
        let ret = unsafe { bindings::sysfs_create_group(kobj.as_ptr(), &self.group.group) };
        if ret != 0 {
            // SAFETY: `kobj` came from `kobject_create_and_add` and is released once.
            unsafe { bindings::kobject_put(kobj.as_ptr()) };
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: the kobject was created and its files added.
        Ok(Dir { kobj })
    }
}

impl<T: FileHandlers> Drop for DirSet<T> {
    fn drop(&mut self) {
        // The owner drops every `Dir` first (they hold no reference to this object).
        // SAFETY: by the type invariant the kset is live.
        unsafe { bindings::kset_unregister(self.kset.as_ptr()) };
    }
}

/// A directory of a [`DirSet`], removed when dropped; it must be dropped before its set.
///
/// # Invariants
///
/// `kobj` was created by `kobject_create_and_add` and this object owns that reference.
pub(crate) struct Dir {
    kobj: NonNull<bindings::kobject>,
}

// SAFETY: kobjects may be released from any thread.
unsafe impl Send for Dir {}
// SAFETY: `&Dir` gives no access to the kobject.
unsafe impl Sync for Dir {}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own this reference; the last put removes the
        // directory and its files, waiting for callbacks in progress.
        unsafe { bindings::kobject_put(self.kobj.as_ptr()) };
    }
}
