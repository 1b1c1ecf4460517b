// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernel versions this driver builds for.
//!
//! The driver is written for the 7.3 `kernel` crate. Kbuild sets `--cfg blktap_kver_lt_7_3`
//! for older kernels (7.2, Debian sid's stock kernel); every difference between the two is
//! hidden here, so that the rest of the driver has one spelling:
//!
//! - `THIS_MODULE`: 7.3 has `kernel::module::this_module::<LocalModule>()`, 7.2 a
//!   `THIS_MODULE` static that `module!` defines in the crate root;
//! - the error codes `ENAMETOOLONG` and `EOPNOTSUPP`, which 7.2's `kernel::error::code` lacks;
//! - the offset into the current vector entry of a `struct bvec_iter`: `bi_offset` in 7.3,
//!   `bi_bvec_done` in 7.2;
//! - `struct kobj_attribute`: its `show` and `store` are unions with `const` variants in 7.3
//!   (`__SYSFS_FUNCTION_ALTERNATIVE`), plain members in 7.2;
//! - a module parameter's value: `value()` returns a copy in 7.3, a reference in 7.2;
//! - what pins the module while a misc device (the control device) is open: in 7.3 the `kernel`
//!   crate sets the misc device's `fops->owner`; 7.2's leaves it null, so each open file takes
//!   a reference on the module itself ([`MiscOpenPin`]).

pub(crate) use imp::*;

use kernel::{
    bindings,
    prelude::*, //
};

/// The `show` callback of a `struct kobj_attribute`.
pub(crate) type KobjShow = unsafe extern "C" fn(
    *mut bindings::kobject,
    *mut bindings::kobj_attribute,
    *mut c_char,
) -> isize;

/// The `store` callback of a `struct kobj_attribute`.
pub(crate) type KobjStore = unsafe extern "C" fn(
    *mut bindings::kobject,
    *mut bindings::kobj_attribute,
    *const c_char,
    usize,
) -> isize;

/// `ENAMETOOLONG`: file name too long (not in 7.2's `kernel::error::code`).
pub(crate) fn enametoolong() -> Error {
    Error::from_errno(-(bindings::ENAMETOOLONG as c_int))
}

/// `EOPNOTSUPP`: operation not supported (not in 7.2's `kernel::error::code`).
pub(crate) fn eopnotsupp() -> Error {
    Error::from_errno(-(bindings::EOPNOTSUPP as c_int))
}

/// The 7.3 spellings.
#[cfg(not(blktap_kver_lt_7_3))]
mod imp {
    use super::{
        KobjShow,
        KobjStore, //
    };
    use kernel::{
        bindings,
        module_param::ModuleParamAccess,
        prelude::*, //
    };

    /// This module's `THIS_MODULE` pointer (`owner` of the driver's operation tables).
    pub(crate) const fn this_module() -> *mut bindings::module {
        kernel::module::this_module::<crate::LocalModule>().as_ptr()
    }

    /// The bytes of the current vector entry that `iter` has already consumed.
    pub(crate) fn bvec_done(iter: &bindings::bvec_iter) -> u32 {
        iter.bi_offset
    }

    /// Sets the bytes of the current vector entry that `iter` has consumed.
    pub(crate) fn set_bvec_done(iter: &mut bindings::bvec_iter, done: u32) {
        iter.bi_offset = done;
    }

    /// A `struct kobj_attribute` with the non-`const` callbacks `show` and `store`.
    pub(crate) fn kobj_attribute(
        attr: bindings::attribute,
        show: Option<KobjShow>,
        store: Option<KobjStore>,
    ) -> bindings::kobj_attribute {
        bindings::kobj_attribute {
            attr,
            __bindgen_anon_1: bindings::kobj_attribute__bindgen_ty_1 { show },
            __bindgen_anon_2: bindings::kobj_attribute__bindgen_ty_2 { store },
        }
    }

    /// The value of a module parameter: the one given at load time, else its default.
    pub(crate) fn param_value<T: Copy>(param: &ModuleParamAccess<T>) -> T {
        param.value()
    }

    /// Held by an open misc device file: nothing, `fops->owner` pins the module.
    pub(crate) type MiscOpenPin = ();

    /// Pins the module while a misc device file is open (see [`MiscOpenPin`]).
    pub(crate) fn misc_open_pin() -> Result<MiscOpenPin> {
        Ok(())
    }
}

/// The 7.2 spellings.
#[cfg(blktap_kver_lt_7_3)]
mod imp {
    use super::{
        super::task::ModuleRef,
        KobjShow,
        KobjStore, //
    };
    use kernel::{
        bindings,
        module_param::ModuleParamAccess,
        prelude::*, //
    };

    /// This module's `THIS_MODULE` pointer (`owner` of the driver's operation tables).
    pub(crate) const fn this_module() -> *mut bindings::module {
        crate::THIS_MODULE.as_ptr()
    }

    /// The bytes of the current vector entry that `iter` has already consumed.
    pub(crate) fn bvec_done(iter: &bindings::bvec_iter) -> u32 {
        iter.bi_bvec_done
    }

    /// Sets the bytes of the current vector entry that `iter` has consumed.
    pub(crate) fn set_bvec_done(iter: &mut bindings::bvec_iter, done: u32) {
        iter.bi_bvec_done = done;
    }

    /// A `struct kobj_attribute` with the non-`const` callbacks `show` and `store`.
    pub(crate) fn kobj_attribute(
        attr: bindings::attribute,
        show: Option<KobjShow>,
        store: Option<KobjStore>,
    ) -> bindings::kobj_attribute {
        bindings::kobj_attribute { attr, show, store }
    }

    /// The value of a module parameter: the one given at load time, else its default.
    pub(crate) fn param_value<T: Copy>(param: &ModuleParamAccess<T>) -> T {
        *param.value()
    }

    /// Held by an open misc device file: a reference on the module, which 7.2's misc device
    /// `fops` (no `owner`) do not take. Dropped by the file's `release`, so the module could in
    /// theory go between that `module_put` and the return from `release` (the reason the VFS
    /// drops `fops->owner` itself, after `release`); without it, `rmmod` with the control
    /// device open would unload code that the open file still points to.
    pub(crate) type MiscOpenPin = KBox<ModuleRef>;

    /// Pins the module while a misc device file is open (see [`MiscOpenPin`]). `open` runs
    /// under `misc_mtx`, which `misc_deregister` in the module's exit also takes: while the
    /// module is being unloaded, `try_module_get` fails and so does the open (`ENODEV`).
    pub(crate) fn misc_open_pin() -> Result<MiscOpenPin> {
        Ok(KBox::new(ModuleRef::get()?, GFP_KERNEL)?)
    }
}
