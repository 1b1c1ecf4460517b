// SPDX-License-Identifier: GPL-2.0

//! Module-global state that C callbacks reach without a pointer of their own.
//!
//! The ring char devices are found by minor number (`open` gets only an inode) and the control
//! device's ioctls need the driver's class and majors: both go through [`TAPS`].

use core::pin::Pin;

use kernel::sync::global_lock;

use crate::registry::TapTable;

global_lock! {
    // SAFETY: `init` below runs in module init, before any use of `TAPS`.
    pub(crate) unsafe(uninit) static TAPS: Mutex<TapTable> = TapTable::new();
}

/// Initialises [`TAPS`]; called once, first thing in module init.
pub(crate) fn init() {
    // SAFETY: called once, from module init, before anything can use `TAPS`.
    unsafe { TAPS.init() };
}
