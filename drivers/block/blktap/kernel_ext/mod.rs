// SPDX-License-Identifier: GPL-2.0

//! Local extensions of the `kernel` crate.
//!
//! This is the only part of the driver that uses `kernel::bindings` or `unsafe`. Each file wraps
//! one kernel facility the 7.3 `kernel` crate does not cover (or covers too thinly for this
//! driver) behind a safe API written like an upstream abstraction:
//!
//! - [`blk`]: blk-mq tag set, gendisk with queue limits and block device callbacks, and requests
//!   the driver owns until it ends them (with any status);
//! - [`chrdev`]: a character device region whose files have `poll` and `mmap`;
//! - [`misc`]: a misc device at a fixed minor (so that opening its node loads the module);
//! - [`class`]: a device class, its devices and their sysfs attributes;
//! - [`sysfs_dir`]: sysfs files on an existing device and directories of attributes under it;
//! - [`shm`]: the memory shared with the ring daemon and the VMA that maps it;
//! - [`workqueue`]: a workqueue owned by the module, drained when it is dropped;
//! - [`globals`]: mutex-protected globals (the driver's tap table) for C callbacks to reach;
//! - [`task`]: facts about the calling task (pid, mm identity, capabilities) and module refs;
//! - [`compat`]: what differs between the kernel versions the driver builds for (7.3, 7.2).

pub(crate) mod blk;
pub(crate) mod chrdev;
pub(crate) mod class;
pub(crate) mod compat;
pub(crate) mod globals;
pub(crate) mod misc;
pub(crate) mod shm;
pub(crate) mod sysfs_dir;
pub(crate) mod task;
pub(crate) mod workqueue;
