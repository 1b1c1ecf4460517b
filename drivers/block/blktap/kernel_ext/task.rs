// SPDX-License-Identifier: GPL-2.0

//! Facts about the calling task, and references on this module.

use kernel::{
    bindings,
    prelude::*,
    sync::aref::ARef,
    task::Task, //
};

use super::compat;

/// The thread id of the calling task, as the `task` sysfs attribute reports it.
pub(crate) fn current_pid() -> i32 {
    kernel::current!().pid()
}

/// An identity for the address space of the calling task, or `None` for a kernel thread.
///
/// The value is only ever compared with the identity recorded when a ring was mapped; that
/// mapping keeps its address space alive, so the value cannot be reused while it is recorded.
pub(crate) fn current_mm_id() -> Option<usize> {
    kernel::current!()
        .mm()
        .map(|mm| core::ptr::from_ref(mm).addr())
}

/// The calling task, counted: a ring keeps its daemon's task to ask whether it was killed.
pub(crate) fn current_task() -> ARef<Task> {
    ARef::from(&**kernel::current!())
}

/// Whether `task` was sent `SIGKILL` (what `fatal_signal_pending` tests): it can no longer
/// answer anything, but a task asleep in uninterruptible I/O wait does not act on it until
/// that I/O ends.
pub(crate) fn killed(task: &Task) -> bool {
    // SAFETY: `task` is a live, counted task; its private pending set is read the way
    // `__fatal_signal_pending` reads it, without the signal lock (a volatile read: the bit
    // may be set concurrently, and a stale answer is corrected by the next check).
    let set = unsafe {
        core::ptr::read_volatile(core::ptr::addr_of!((*task.as_ptr()).pending.signal.sig[0]))
    };
    set & (1 << (bindings::SIGKILL - 1)) != 0
}

/// Whether the calling task has `CAP_SYS_ADMIN` (and so may create and destroy taps).
pub(crate) fn capable_sys_admin() -> bool {
    // SAFETY: `capable` may be called from any process context.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as c_int) }
}

/// A reference on this module: while one exists, the module cannot be unloaded.
///
/// # Invariants
///
/// A reference on `THIS_MODULE` was taken with `try_module_get` and is owned by this object.
pub(crate) struct ModuleRef(());

impl ModuleRef {
    /// Takes a reference on this module; fails with `ENODEV` while the module is being unloaded.
    pub(crate) fn get() -> Result<Self> {
        let module = compat::this_module();
        // SAFETY: `module` is this module's `THIS_MODULE` pointer, valid while we run.
        if unsafe { bindings::try_module_get(module) } {
            // INVARIANT: the reference was just taken.
            Ok(Self(()))
        } else {
            Err(ENODEV)
        }
    }
}

impl Drop for ModuleRef {
    fn drop(&mut self) {
        let module = compat::this_module();
        // SAFETY: by the type invariant we own one reference on this module.
        unsafe { bindings::module_put(module) };
    }
}
