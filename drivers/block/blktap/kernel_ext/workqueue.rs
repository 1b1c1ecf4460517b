// SPDX-License-Identifier: GPL-2.0

//! A workqueue owned by the module.
//!
//! Work queued on a system workqueue may still be running module code when the module is
//! unloaded; destroying our own queue at module exit drains it first.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use core::ptr::NonNull;

use kernel::{
    bindings,
    prelude::*,
    workqueue::Queue, //
};

/// A workqueue allocated by this module and destroyed (after draining) when dropped.
///
/// # Invariants
///
/// `ptr` points to a workqueue created by `alloc_workqueue` and not yet destroyed.
pub(crate) struct OwnedQueue {
    ptr: NonNull<bindings::workqueue_struct>,
}

// SAFETY: workqueues may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: all workqueue operations are internally synchronised.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// Allocates a workqueue named `name`.
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        // Unbound: the work (removing a disk) is rare and has no CPU affinity.
        let flags = bindings::wq_flags_WQ_UNBOUND as c_uint;
        // SAFETY: `name` is a NUL-terminated string without format directives, so no variadic
        // arguments are read; max_active 0 asks for the default.
        let ptr = unsafe { bindings::alloc_workqueue_noprof(name.as_char_ptr(), flags, 0) };
        // INVARIANT: a non-NULL return is a live workqueue.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the queue is live; `destroy_workqueue` drains it first.
        unsafe { bindings::destroy_workqueue(self.ptr.as_ptr()) };
    }
}

/// The module's workqueue, reachable from callbacks that have no other way to find it.
static MODULE_QUEUE: kernel::sync::atomic::Atomic<*mut bindings::workqueue_struct> =
    kernel::sync::atomic::Atomic::new(core::ptr::null_mut());

/// Installs `queue` as the module's workqueue until the returned guard is dropped.
///
/// Work enqueued with [`enqueue`] runs on it; dropping the guard drains and destroys it.
pub(crate) fn install_module_queue(queue: OwnedQueue) -> ModuleQueueGuard {
    let ptr = queue.ptr.as_ptr();
    core::mem::forget(queue);
    MODULE_QUEUE.store(ptr, kernel::sync::atomic::Release);
    ModuleQueueGuard(())
}

/// Owns the module's workqueue; see [`install_module_queue`].
pub(crate) struct ModuleQueueGuard(());

impl Drop for ModuleQueueGuard {
    fn drop(&mut self) {
        let ptr = MODULE_QUEUE.xchg(core::ptr::null_mut(), kernel::sync::atomic::Full);
        if let Some(ptr) = NonNull::new(ptr) {
            // INVARIANT: `ptr` came from an `OwnedQueue` forgotten in `install_module_queue`.
            drop(OwnedQueue { ptr });
        }
    }
}

/// Enqueues `work` on the module's workqueue; returns `false` if it was already queued or if
/// the module is shutting down (its queue is gone).
pub(crate) fn enqueue<W>(work: W) -> bool
where
    W: kernel::workqueue::RawWorkItem<0> + Send + 'static,
    W: kernel::workqueue::WorkItemPointer<0>,
    W: kernel::workqueue::RawWorkItem<0, EnqueueOutput = Result<(), W>>,
{
    let ptr = MODULE_QUEUE.load(kernel::sync::atomic::Acquire);
    if ptr.is_null() {
        return false;
    }
    // SAFETY: the queue stays alive until `ModuleQueueGuard` is dropped at module exit, after
    // every tap (the only users) is gone.
    let queue = unsafe { Queue::from_raw(ptr) };
    queue.enqueue(work).is_ok()
}
