// SPDX-License-Identifier: GPL-2.0

//! The control device (`blktap/control`, also `blktap-control`): allocates and frees taps.

use core::mem::size_of;

use kernel::{
    fs::File,
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*,
    types::ForeignOwnable,
    uaccess::{
        UserPtr,
        UserSlice, //
    }, //
};

use crate::{
    kernel_ext::{
        compat,
        task, //
    },
    registry,
    uapi::{
        BlktapInfo,
        IOCTL_ALLOC_TAP,
        IOCTL_FREE_TAP,
        MAX_DEVICES, //
    },
};

/// The control device. Opening it needs no state (but, on 7.2, a reference on the module:
/// [`compat::MiscOpenPin`]); each ioctl stands alone.
pub(crate) struct Control;

#[vtable]
impl MiscDevice for Control {
    type Ptr = compat::MiscOpenPin;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr> {
        compat::misc_open_pin()
    }

    fn ioctl(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize> {
        match cmd {
            IOCTL_ALLOC_TAP => {
                if !task::capable_sys_admin() {
                    return Err(EPERM);
                }
                // The numbers are copied out before the tap is made, so that a failed copy
                // leaves nothing behind (see `registry::alloc_tap`).
                registry::alloc_tap(|info| {
                    UserSlice::new(UserPtr::from_addr(arg), size_of::<BlktapInfo>())
                        .writer()
                        .write(info)
                        .map_err(|_| EFAULT)
                })?;
                Ok(0)
            }
            IOCTL_FREE_TAP => {
                if !task::capable_sys_admin() {
                    return Err(EPERM);
                }
                // The minor comes by value; V-XS let 16384 and negative values through.
                let minor = arg as isize;
                if minor < 0 || minor >= MAX_DEVICES as isize {
                    return Err(EINVAL);
                }
                registry::free_tap(minor as u32)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}
