// SPDX-License-Identifier: GPL-2.0

//! A misc device registered at a fixed minor, so that opening its node loads the module.
//!
//! The `kernel` crate's [`MiscDeviceRegistration`] always asks for a dynamic minor. The misc
//! core loads a module on demand (`request_module("char-major-10-<minor>")` in `misc_open`) only
//! for fixed minors, and `depmod` lists a module's static node (`modules.devname`, which systemd
//! creates in `/dev` at boot) only for a `devname:` alias paired with a fixed
//! `char-major-10-<minor>` one. [`FixedMinorRegistration`] asks for a fixed minor and, if another
//! driver already holds it, falls back to a dynamic one (the device works; only the on-demand
//! loading is lost, and a log line says so).
//!
//! It registers the same `struct miscdevice` as [`MiscDeviceRegistration::register`] (built by
//! [`MiscDeviceOptions::into_raw`], so the same file operations), with only the minor changed,
//! and derefs to a [`MiscDeviceRegistration`]: callers see the kernel crate's type.

use core::{
    marker::PhantomData,
    ops::Deref, //
};
use kernel::{
    bindings,
    error::to_result,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    prelude::*,
    types::Opaque, //
};

/// The misc minors the kernel asks for at registration: below this one, fixed; this one,
/// dynamic (`MISC_DYNAMIC_MINOR`).
const DYNAMIC_MINOR: i32 = bindings::MISC_DYNAMIC_MINOR as i32;

/// A misc device registered at a fixed minor if it is free, at a dynamic one otherwise.
///
/// # Invariants
///
/// - `inner` holds a `struct miscdevice` made by [`MiscDeviceOptions::into_raw`] for `T`
///   (with `minor` possibly changed before registration) and registered by `misc_register()`
///   for the whole lifetime of this value; it is deregistered exactly once, in `drop`.
/// - The layout is that of [`MiscDeviceRegistration<T>`] (both are `repr(transparent)` over an
///   `Opaque<bindings::miscdevice>`), which is what the misc file operations of `T` expect
///   `file->private_data` to point to at open.
#[repr(transparent)]
#[pin_data(PinnedDrop)]
pub(crate) struct FixedMinorRegistration<T> {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
    _t: PhantomData<T>,
}

// SAFETY: As for `MiscDeviceRegistration`: `misc_deregister` may run on any thread.
unsafe impl<T> Send for FixedMinorRegistration<T> {}
// SAFETY: As for `MiscDeviceRegistration`: `&self` only reads the registered device.
unsafe impl<T> Sync for FixedMinorRegistration<T> {}

impl<T: MiscDevice> FixedMinorRegistration<T> {
    /// Registers `opts` at `minor` (below `MISC_DYNAMIC_MINOR`), or at a dynamic minor with a
    /// log line if `minor` is taken (`EBUSY`). Any other error fails the registration.
    pub(crate) fn register(opts: MiscDeviceOptions, minor: u8) -> impl PinInit<Self, Error> {
        let name = opts.name;
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut raw = opts.into_raw::<T>();
                let wanted = i32::from(minor).min(DYNAMIC_MINOR);
                raw.minor = wanted;
                // SAFETY: The initializer may write to `slot`.
                unsafe { slot.write(raw) };
                // SAFETY: `slot` holds a `miscdevice` made by `into_raw`; it is pinned and, by
                // the type invariants, deregistered in `drop` before its memory goes.
                let first = to_result(unsafe { bindings::misc_register(slot) });
                match first {
                    Err(e) if e == EBUSY && wanted != DYNAMIC_MINOR => {
                        pr_warn!(
                            "misc minor {} for {} is taken by another driver; using a dynamic \
                             one: opening the node will not load this module\n",
                            minor,
                            name.to_str().unwrap_or("?"),
                        );
                        // SAFETY: The failed `misc_register` left nothing registered and the
                        // fields intact; `slot` is ours to write.
                        unsafe { (*slot).minor = DYNAMIC_MINOR };
                        // SAFETY: As above.
                        // INVARIANT: On `Ok`, `slot` holds a registered misc device.
                        to_result(unsafe { bindings::misc_register(slot) })
                    }
                    other => other,
                }
            }),
            _t: PhantomData,
        })
    }
}

impl<T> Deref for FixedMinorRegistration<T> {
    type Target = MiscDeviceRegistration<T>;

    fn deref(&self) -> &MiscDeviceRegistration<T> {
        // SAFETY: Both types are `repr(transparent)` over `Opaque<bindings::miscdevice>`, and
        // `inner` satisfies `MiscDeviceRegistration`'s invariants (registered from `into_raw`,
        // valid while `self` is). The reference only lends access: no `MiscDeviceRegistration`
        // is ever owned, so its `drop` never runs; ours deregisters.
        unsafe { &*core::ptr::from_ref(self).cast::<MiscDeviceRegistration<T>>() }
    }
}

#[pinned_drop]
impl<T> PinnedDrop for FixedMinorRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Registered by the type invariants; deregistered only here.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}
