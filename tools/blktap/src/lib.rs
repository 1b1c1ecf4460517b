//! Userspace interface to the blktap2 kernel driver (V-XS ABI, see
//! `include/uapi/linux/blktap.h`).
//!
//! * [`uapi`]: `#[repr(C)]` types and constants of the ABI.
//! * [`control`]: the control device (`ALLOC_TAP`, `FREE_TAP`).
//! * [`ring`]: the per-tap ring device: mapping, request parsing, responses, ring ioctls.
//! * [`node`]: device nodes as tap-ctl creates them, disk names, `/proc/devices`.
//! * [`sysfs`]: readers of `/sys/class/blktap2`.

pub mod control;
pub mod error;
pub mod node;
pub mod ring;
mod sys;
pub mod sysfs;
pub mod uapi;

pub use control::Control;
pub use error::{Errno, Error, Result};
pub use ring::{BackRing, Batch, Mapping, Op, Request, Ring, RingMemory, SegmentBuf};
pub use uapi::{BlktapInfo, DeviceInfo};
