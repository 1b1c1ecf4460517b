// SPDX-License-Identifier: GPL-2.0

//! A device class with sysfs attributes on the class and on each of its devices.
//!
//! The 7.3 `kernel` crate has no sysfs attribute abstraction. Attributes here are declared as
//! `(name, mode)` lists; one show and one store trampoline serve them all and dispatch to the
//! owner by attribute name, so the driver's attribute code stays safe Rust.
//!
//! C header: [`include/linux/device/class.h`](srctree/include/linux/device/class.h)

use core::{
    fmt,
    marker::PhantomData,
    pin::Pin,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    error::to_result,
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc,
    types::Opaque, //
};

/// Output buffer of a sysfs `show` callback (one page, truncated silently like `sysfs_emit`).
pub(crate) struct SysfsWriter {
    buf: *mut u8,
    len: usize,
}

impl SysfsWriter {
    /// A writer into `buf`, the page sysfs hands to a `show` callback.
    pub(super) fn new(buf: *mut u8) -> Self {
        Self { buf, len: 0 }
    }

    /// Writes `bytes` as they are (sysfs files are bytes, not UTF-8), truncated at the page.
    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(PAGE_SIZE - 1 - self.len);
        // SAFETY: `buf` is the page sysfs handed to `show`; `len + n < PAGE_SIZE`.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buf.add(self.len), n) };
        self.len += n;
    }

    /// The return value of a `show` callback: the length written, or the error.
    pub(super) fn result(&self, ret: Result) -> isize {
        match ret {
            Ok(()) => self.len as isize,
            Err(e) => e.to_errno() as isize,
        }
    }
}

impl fmt::Write for SysfsWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// The input of a sysfs `store` callback.
///
/// # Safety
///
/// `buf` must be valid for reads of `count` bytes for `'a`.
pub(super) unsafe fn store_input<'a>(buf: *const c_char, count: usize) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), count) }
}

/// The return value of a sysfs `store` callback: the bytes consumed (all), or the error.
pub(super) fn store_result(ret: Result, count: usize) -> isize {
    match ret {
        Ok(()) => count as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// The attribute file whose `store` callback is running, handed to [`Attributes::store`].
pub(crate) struct AttrFile<'a> {
    dev: *mut bindings::device,
    attr: *const bindings::device_attribute,
    _callback: PhantomData<&'a ()>,
}

impl AttrFile<'_> {
    /// Runs `f` with this file's callback no longer counted as running in it, so that `f` can
    /// remove the file's whole device (drop its [`ClassDevice`]): removing a device waits for
    /// the callbacks running in its files, this one included otherwise
    /// (`sysfs_break_active_protection`, as SCSI's `delete` attribute does). The device's
    /// memory stays valid until `f` has returned.
    pub(crate) fn unprotected(&self, f: impl FnOnce()) {
        // SAFETY: `dev` and `attr` are the device and attribute of the `store` callback running
        // for the lifetime of `self`, so both are live. The call takes a reference on the
        // device's kobject and on the file's node, which the unbreak below drops.
        let kn = unsafe {
            bindings::sysfs_break_active_protection(&raw mut (*self.dev).kobj, &(*self.attr).attr)
        };
        f();
        if !kn.is_null() {
            // SAFETY: `kn` came from `sysfs_break_active_protection` above and is not used
            // after this call.
            unsafe { bindings::sysfs_unbreak_active_protection(kn) };
        }
    }
}

/// Attributes of the class and of its devices, implemented by the per-device data type.
pub(crate) trait Attributes: Send + Sync + Sized + 'static {
    /// `(name, mode)` of every per-device attribute.
    const DEVICE_ATTRS: &'static [(&'static CStr, u16)];
    /// `(name, mode)` of every class attribute.
    const CLASS_ATTRS: &'static [(&'static CStr, u16)];

    /// Shows per-device attribute `name` of `this`.
    fn show(this: &Self, name: &CStr, out: &mut SysfsWriter) -> Result;
    /// Stores `input` (exactly as written) into per-device attribute `name` of `this`, whose
    /// file is `file`.
    fn store(this: &Self, name: &CStr, input: &[u8], file: &AttrFile<'_>) -> Result;
    /// Shows class attribute `name`.
    fn show_class(name: &CStr, out: &mut SysfsWriter) -> Result;
    /// Stores `input` into class attribute `name`.
    fn store_class(name: &CStr, input: &[u8]) -> Result;
}

struct Callbacks<T: Attributes>(PhantomData<T>);

impl<T: Attributes> Callbacks<T> {
    /// # Safety
    ///
    /// Called by sysfs for an attribute of a device created by [`Class::create_device`].
    unsafe extern "C" fn show(
        dev: *mut bindings::device,
        attr: *mut bindings::device_attribute,
        buf: *mut c_char,
    ) -> isize {
        // SAFETY: the device's driver data is the `T` kept alive by its `ClassDevice`, which
        // removes the device (waiting for running callbacks) before releasing it.
        let this = unsafe { &*bindings::dev_get_drvdata(dev).cast::<T>() };
        // SAFETY: attribute names are the static strings of `T::DEVICE_ATTRS`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        let mut out = SysfsWriter::new(buf.cast());
        let ret = T::show(this, name, &mut out);
        out.result(ret)
    }

    /// # Safety
    ///
    /// As for `show`; `buf` holds `count` bytes.
    unsafe extern "C" fn store(
        dev: *mut bindings::device,
        attr: *mut bindings::device_attribute,
        buf: *const c_char,
        count: usize,
    ) -> isize {
        // SAFETY: as in `show`.
        let this = unsafe { &*bindings::dev_get_drvdata(dev).cast::<T>() };
        // SAFETY: as in `show`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        // SAFETY: sysfs passes `count` readable bytes.
        let input = unsafe { store_input(buf, count) };
        let file = AttrFile {
            dev,
            attr,
            _callback: PhantomData,
        };
        store_result(T::store(this, name, input, &file), count)
    }

    /// # Safety
    ///
    /// Called by sysfs for an attribute of a class registered by [`Class::new`].
    unsafe extern "C" fn show_class(
        _class: *const bindings::class,
        attr: *const bindings::class_attribute,
        buf: *mut c_char,
    ) -> isize {
        // SAFETY: attribute names are the static strings of `T::CLASS_ATTRS`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        let mut out = SysfsWriter::new(buf.cast());
        let ret = T::show_class(name, &mut out);
        out.result(ret)
    }

    /// # Safety
    ///
    /// As for `show_class`; `buf` holds `count` bytes.
    unsafe extern "C" fn store_class(
        _class: *const bindings::class,
        attr: *const bindings::class_attribute,
        buf: *const c_char,
        count: usize,
    ) -> isize {
        // SAFETY: as in `show_class`.
        let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
        // SAFETY: sysfs passes `count` readable bytes.
        let input = unsafe { store_input(buf, count) };
        store_result(T::store_class(name, input), count)
    }
}

/// The C structures of a class and its attribute groups, pinned for as long as it is registered.
struct ClassData {
    class: Opaque<bindings::class>,
    dev_attrs: KVec<bindings::device_attribute>,
    class_attrs: KVec<bindings::class_attribute>,
    dev_attr_ptrs: KVec<*mut bindings::attribute>,
    class_attr_ptrs: KVec<*mut bindings::attribute>,
    dev_group: bindings::attribute_group,
    class_group: bindings::attribute_group,
    dev_groups: [*const bindings::attribute_group; 2],
    class_groups: [*const bindings::attribute_group; 2],
}

/// A registered device class.
///
/// # Invariants
///
/// `data.class` is registered with `class_register` and points at the attribute arrays of
/// `data`, which never move (the box is pinned) while it is registered.
pub(crate) struct Class<T: Attributes> {
    data: Pin<KBox<ClassData>>,
    _p: PhantomData<fn(T)>,
}

// SAFETY: class functions may be called from any thread; the data is only changed at creation.
unsafe impl<T: Attributes> Send for Class<T> {}
// SAFETY: as above.
unsafe impl<T: Attributes> Sync for Class<T> {}

/// A sysfs attribute named `name` with permissions `mode`.
pub(super) fn attr(name: &'static CStr, mode: u16) -> bindings::attribute {
    let attr = bindings::attribute {
        name: name.as_char_ptr(),
        mode,
        ..pin_init::zeroed()
    };
    // As `sysfs_attr_init` does: lockdep needs a static key for attributes in dynamic memory.
    #[cfg(CONFIG_DEBUG_LOCK_ALLOC)]
    let attr = bindings::attribute {
        key: kernel::static_lock_class!().as_ptr(),
        ..attr
    };
    attr
}

impl<T: Attributes> Class<T> {
    /// Registers class `name` with `T`'s attributes.
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        let mut dev_attrs = KVec::with_capacity(T::DEVICE_ATTRS.len(), GFP_KERNEL)?;
        for &(n, mode) in T::DEVICE_ATTRS {
            dev_attrs.push(
                bindings::device_attribute {
                    attr: attr(n, mode),
                    __bindgen_anon_1: bindings::device_attribute__bindgen_ty_1 {
                        show: Some(Callbacks::<T>::show),
                    },
                    __bindgen_anon_2: bindings::device_attribute__bindgen_ty_2 {
                        store: if mode & 0o222 != 0 {
                            Some(Callbacks::<T>::store)
                        } else {
                            None
                        },
                    },
                },
                GFP_KERNEL,
            )?;
        }
        let mut class_attrs = KVec::with_capacity(T::CLASS_ATTRS.len(), GFP_KERNEL)?;
        for &(n, mode) in T::CLASS_ATTRS {
            class_attrs.push(
                bindings::class_attribute {
                    attr: attr(n, mode),
                    show: Some(Callbacks::<T>::show_class),
                    store: if mode & 0o222 != 0 {
                        Some(Callbacks::<T>::store_class)
                    } else {
                        None
                    },
                },
                GFP_KERNEL,
            )?;
        }
        let mut data = KBox::new(
            ClassData {
                class: Opaque::zeroed(),
                dev_attrs,
                class_attrs,
                dev_attr_ptrs: KVec::new(),
                class_attr_ptrs: KVec::new(),
                dev_group: pin_init::zeroed(),
                class_group: pin_init::zeroed(),
                dev_groups: [core::ptr::null(); 2],
                class_groups: [core::ptr::null(); 2],
            },
            GFP_KERNEL,
        )?;
        // Wire the pointer arrays; the box's contents do not move from here on.
        let d = &mut *data;
        for a in d.dev_attrs.iter_mut() {
            d.dev_attr_ptrs.push(&raw mut a.attr, GFP_KERNEL)?;
        }
        d.dev_attr_ptrs.push(core::ptr::null_mut(), GFP_KERNEL)?;
        for a in d.class_attrs.iter_mut() {
            d.class_attr_ptrs.push(&raw mut a.attr, GFP_KERNEL)?;
        }
        d.class_attr_ptrs.push(core::ptr::null_mut(), GFP_KERNEL)?;
        d.dev_group.__bindgen_anon_2.attrs = d.dev_attr_ptrs.as_mut_ptr();
        d.class_group.__bindgen_anon_2.attrs = d.class_attr_ptrs.as_mut_ptr();
        d.dev_groups[0] = &raw const d.dev_group;
        d.class_groups[0] = &raw const d.class_group;
        let class = d.class.get();
        // SAFETY: `class` is zeroed memory owned by `d`; the groups point into `d`.
        unsafe {
            (*class).name = name.as_char_ptr();
            (*class).dev_groups = d.dev_groups.as_ptr().cast_mut();
            (*class).class_groups = d.class_groups.as_ptr().cast_mut();
        }
        let data = KBox::into_pin(data);
        // SAFETY: the class structure is fully set up and pinned in `data`.
        to_result(unsafe { bindings::class_register(data.class.get()) })?;
        // INVARIANT: registered just above, with pinned data.
        Ok(Self {
            data,
            _p: PhantomData,
        })
    }

    /// Creates device `name` (a `/` in it shows as `!` in sysfs) with number `devt` (`0`: none,
    /// so no device node either), whose attributes are served by `data`.
    pub(crate) fn create_device(
        &self,
        devt: u32,
        name: &CStr,
        data: Arc<T>,
    ) -> Result<ClassDevice<T>> {
        let drvdata = Arc::into_raw(data);
        // SAFETY: the class is registered; `"%s"` consumes exactly the one string argument.
        let dev = unsafe {
            bindings::device_create(
                self.data.class.get(),
                core::ptr::null_mut(),
                devt,
                drvdata.cast_mut().cast(),
                c"%s".as_char_ptr(),
                name.as_char_ptr(),
            )
        };
        match kernel::error::from_err_ptr(dev) {
            Ok(dev) => Ok(ClassDevice {
                // SAFETY: `from_err_ptr` succeeded, so `dev` is a valid device.
                dev: unsafe { NonNull::new_unchecked(dev) },
                // SAFETY: `drvdata` came from `Arc::into_raw` above.
                data: unsafe { Arc::from_raw(drvdata) },
            }),
            Err(e) => {
                // SAFETY: `drvdata` came from `Arc::into_raw` above and was not kept.
                drop(unsafe { Arc::from_raw(drvdata) });
                Err(e)
            }
        }
    }
}

impl<T: Attributes> Drop for Class<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the class is registered.
        unsafe { bindings::class_unregister(self.data.class.get()) };
    }
}

/// A device of a [`Class`], removed when dropped.
///
/// # Invariants
///
/// `dev` was created by `device_create` with driver data `data`, and this owns the reference
/// `device_create` returned; its class outlives it (the driver drops all devices before the
/// class).
pub(crate) struct ClassDevice<T: Attributes> {
    dev: NonNull<bindings::device>,
    data: Arc<T>,
}

// SAFETY: devices may be removed from any thread.
unsafe impl<T: Attributes> Send for ClassDevice<T> {}
// SAFETY: `&ClassDevice` gives no access to the C device.
unsafe impl<T: Attributes> Sync for ClassDevice<T> {}

impl<T: Attributes> Drop for ClassDevice<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the device exists in its live class and this owns a
        // reference to it, which `device_unregister` drops. (Not `device_destroy`, which looks
        // the device up by number: devices without one would be ambiguous.) Removing the
        // device waits for attribute callbacks in progress, so `data` is released after them.
        unsafe { bindings::device_unregister(self.dev.as_ptr()) };
        let _ = &self.data;
    }
}
