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

/// Whether the process (thread group) of `task` is exiting: a fatal signal was delivered to
/// it (`SIGKILL` sets the group's exit flag when it is sent, before any thread acts on it), one
/// of its threads called `exit_group` or is replacing it through `exec`, or none of its threads
/// is live any more. A process in that state can no longer answer anything, although its exit
/// may still wait for I/O (a thread asleep in uninterruptible I/O wait, Linux AIO drained by
/// `exit_aio`). Once true, it stays true.
///
/// Unlike the pending `SIGKILL` of one thread, this does not depend on which thread is asked
/// nor on whether that thread has already dequeued the signal.
pub(crate) fn process_exiting(task: &Task) -> bool {
    // SAFETY: `task` is a live, counted task; its `signal` pointer is set at fork and freed only
    // with the task itself (`__put_task_struct`), so it is valid while we hold the reference.
    let signal = unsafe { (*task.as_ptr()).signal };
    if signal.is_null() {
        return true;
    }
    // SAFETY: `signal` is valid (above). The fields are read without `siglock`, as
    // `signal_group_exit` may be: each is a word written once on the way to exit, and a stale
    // answer is corrected by the next check (a second later at most).
    let (flags, exec_task, live) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!((*signal).flags)),
            core::ptr::read_volatile(core::ptr::addr_of!((*signal).group_exec_task)),
            core::ptr::read_volatile(core::ptr::addr_of!((*signal).live.counter)),
        )
    };
    flags & bindings::SIGNAL_GROUP_EXIT != 0 || !exec_task.is_null() || live <= 0
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
