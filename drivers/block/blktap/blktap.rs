// SPDX-License-Identifier: GPL-2.0

//! blktap: userspace-backed block devices over the Xen blktap2 ring ABI.
//!
//! A daemon (tapdisk, or `blktapd` from this project) serves each disk `td<letters>` through a
//! shared request ring that it maps from the char device `blktap<N>`. Taps are allocated and
//! freed through the control device `blktap/control` (also registered as `blktap-control`).
//! The ABI is the "V-XS" variant of XenServer's driver, byte for byte: see
//! `include/uapi/linux/blktap.h` and `Documentation/userspace-api.rst`.
//!
//! All `unsafe` code and all use of `kernel::bindings` live in [`kernel_ext`]; the driver logic
//! in the other modules is safe Rust.

use kernel::{
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    prelude::*,
    InPlaceModule, //
};

use crate::kernel_ext::misc::FixedMinorRegistration;

mod control;
mod kernel_ext;
mod registry;
mod ring;
mod ringdev;
mod sysfs;
mod tap;
mod uapi;

module! {
    type: BlktapModule,
    name: "blktap",
    authors: ["blktap-rs developers"],
    description: "Userspace-backed block devices over the Xen blktap2 ring ABI",
    license: "GPL",
    // Opening `/dev/blktap/control` loads the module: the misc core asks for
    // `char-major-10-<CONTROL_MINOR>`, and depmod lists the node in `modules.devname`, from which
    // systemd creates it at boot. Keep the minor in step with `CONTROL_MINOR`.
    alias: ["devname:blktap/control", "char-major-10-248"],
    params: {
        request_timeout: u32 {
            // 0, as V-XS: tapdisk 3.x holds requests while paused (`tap-ctl pause`) and while
            // its image I/O is stalled, and completes them later. Its own 120 s limit
            // (`TD_VBD_REQUEST_TIMEOUT`, drivers/tapdisk-vbd.c) only stops retries of requests
            // that already failed; any kernel timeout would fail I/O tapdisk still completes.
            default: 0,
            description: "Seconds a request may wait for its daemon before it fails with EIO; \
                0 (the default): never, as in V-XS, since tapdisk holds requests while paused or \
                stalled and completes them later. The value new taps start with; each tap has \
                its own in sysfs (timeout), which blktapd sets (--timeout, 180 s by default).",
        },
    },
}

/// The misc minor of `blktap/control`: one of those devices.txt reserves for local use
/// (243-254), fixed so that the node can exist before the module is loaded (see the module's
/// aliases). If another driver holds it, the control device takes a dynamic minor instead.
const CONTROL_MINOR: u8 = 248;

/// The module: the control device under both names, and the driver-wide objects.
#[pin_data(PinnedDrop)]
struct BlktapModule {
    /// `/dev/blktap/control`, the name V-XS tap-ctl looks for in `/proc/misc`, at
    /// [`CONTROL_MINOR`].
    #[pin]
    control: FixedMinorRegistration<control::Control>,
    /// `/dev/blktap-control`, the name older and OpenXT tools use.
    #[pin]
    control_compat: MiscDeviceRegistration<control::Control>,
    /// Dropped after the control devices: tears down the char region, class and block major.
    registry: registry::RegistryGuard,
}

impl InPlaceModule for BlktapModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            registry: registry::init()?,
            control <- FixedMinorRegistration::register(
                MiscDeviceOptions {
                    name: c"blktap/control",
                },
                CONTROL_MINOR,
            ),
            control_compat <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"blktap-control",
            }),
        })
        .pin_chain(|this| {
            // The page pool files live under `/sys/class/misc/blktap!control/`.
            registry::init_pools(&this.control)
        })
    }
}

#[pinned_drop]
impl PinnedDrop for BlktapModule {
    fn drop(self: Pin<&mut Self>) {
        // Before the control device they hang off goes away.
        registry::shutdown_pools();
    }
}
