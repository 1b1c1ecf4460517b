// SPDX-License-Identifier: GPL-2.0

//! Module-global state that C callbacks reach without a pointer of their own.
//!
//! [`global_mutex!`] defines a mutex-protected global of any type together with the function
//! that initialises it, so that the driver instantiates the globals it needs (its tap table)
//! without writing `unsafe` itself, and this layer knows nothing of what they hold.

/// Defines `static $name: GlobalLock<..>` (a [`kernel::sync::global_lock!`] mutex holding a
/// `$ty` made by `$value`) and `fn $init()`, which module init must call once, before anything
/// uses the global.
///
/// ```ignore
/// global_mutex! {
///     /// The table of taps.
///     pub(crate) static TAPS: TapTable = TapTable::new();
///     /// Initialises [`TAPS`].
///     pub(crate) fn init_taps;
/// }
/// ```
macro_rules! global_mutex {
    {
        $(#[$meta:meta])* $vis:vis static $name:ident: $ty:ty = $value:expr;
        $(#[$init_meta:meta])* $init_vis:vis fn $init:ident;
    } => {
        ::kernel::sync::global_lock! {
            // SAFETY: the `$init` function below is called in module init, before any use.
            $(#[$meta])* $vis unsafe(uninit) static $name: Mutex<$ty> = $value;
        }

        $(#[$init_meta])*
        $init_vis fn $init() {
            // SAFETY: called once, from module init, before anything can use the global (the
            // caller's promise, stated on the function).
            unsafe { $name.init() };
        }
    };
}
pub(crate) use global_mutex;
