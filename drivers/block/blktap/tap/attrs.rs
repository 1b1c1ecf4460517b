// SPDX-License-Identifier: GPL-2.0

//! The sysfs attributes of a tap (`/sys/class/blktap2/blktap!blktap<N>/`): name, pool, request
//! timeout and the `debug` dump.

use core::fmt::Write;

use kernel::prelude::*;

use super::{
    FailReason,
    Tap, //
};
use crate::{
    kernel_ext::class::SysfsWriter,
    ring::{
        checked_name,
        DiskName, //
    },
    uapi::{
        OP_DISCARD,
        OP_FLUSH,
        OP_WRITE,
        OP_WRITE_ZEROES, //
    },
};

impl Tap {
    /// The recovery window in seconds (`0`: off).
    pub(crate) fn recovery_secs(&self) -> u32 {
        self.io.lock().recovery.window_secs
    }

    /// Sets the recovery window (it applies the next time the ring goes).
    pub(crate) fn set_recovery_secs(&self, secs: u32) {
        self.io.lock().recovery.window_secs = secs;
    }

    /// The request timeout in seconds (`0`: none).
    pub(crate) fn timeout_secs(&self) -> u32 {
        self.io.lock().timeout_secs
    }

    /// Sets the request timeout; it applies to requests already waiting too.
    pub(crate) fn set_timeout_secs(&self, secs: u32) {
        self.io.lock().timeout_secs = secs;
    }

    /// Writes the `name` attribute: the name (bytes as stored), or the minor if it has none.
    pub(crate) fn show_name(&self, out: &mut SysfsWriter) -> core::fmt::Result {
        let ctl = self.ctl.lock();
        if ctl.name.is_empty() {
            writeln!(out, "{}", self.minor)
        } else {
            out.write_bytes(&ctl.name);
            writeln!(out)
        }
    }

    /// Sets the name (see [`checked_name`] for what is refused). Allocates before taking
    /// `ctl`, which `RESPOND` needs: reclaim must never wait on this disk's I/O under it.
    pub(crate) fn set_name(&self, name: &[u8]) -> Result {
        let mut new = KVec::new();
        new.extend_from_slice(checked_name(name)?, GFP_KERNEL)?;
        self.ctl.lock().name = new;
        Ok(())
    }

    /// The pid of the ring's opener, if open.
    pub(crate) fn task(&self) -> Option<i32> {
        self.ctl.lock().task
    }

    /// Whether the tap has a disk, and its name bytes (for the class `devices` attribute).
    pub(crate) fn with_disk_name<R>(&self, f: impl FnOnce(bool, &[u8]) -> R) -> R {
        let ctl = self.ctl.lock();
        f(ctl.disk.is_some(), &ctl.name)
    }

    /// Writes the pool attribute.
    pub(crate) fn show_pool(&self, out: &mut SysfsWriter) -> core::fmt::Result {
        out.write_bytes(&self.ctl.lock().pool);
        writeln!(out)
    }

    /// Selects pool `name` (get-or-create); refused (`EBUSY`) while the disk exists.
    pub(crate) fn set_pool(&self, name: &[u8]) -> Result {
        if self.ctl.lock().disk.is_some() {
            return Err(EBUSY);
        }
        // Validates the name and creates the pool; takes `TAPS`, so not under `ctl`.
        crate::registry::get_or_create_pool(name)?;
        let mut new = KVec::new();
        new.extend_from_slice(name.strip_suffix(b"\n").unwrap_or(name), GFP_KERNEL)?;
        let mut ctl = self.ctl.lock();
        if ctl.disk.is_some() || ctl.creating {
            return Err(EBUSY);
        }
        ctl.pool = new;
        Ok(())
    }

    /// Writes the `debug` attribute: state, disk and pending requests.
    pub(crate) fn show_debug(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let ctl = self.ctl.lock();
        let name = DiskName::new(self.minor);
        writeln!(
            out,
            "tap {}:{} disk:{} mapped:{} task:{}",
            self.ring_major,
            self.minor,
            name,
            ctl.mapping.is_some(),
            ctl.task.unwrap_or(0)
        )?;
        if let Some(c) = ctl.config {
            writeln!(
                out,
                "disk capacity:{} sector size:{}/{}{}",
                c.capacity,
                c.logical_block_size,
                c.physical_block_size,
                if c.read_only { " read-only" } else { "" }
            )?;
        }
        let io = self.io.lock();
        let s = io.stats;
        writeln!(
            out,
            "bdev openers:{} live:{} busy:{}",
            io.openers, io.disk_live, io.queue_busy
        )?;
        writeln!(
            out,
            "sent:{} failed:{} bad responses:{} ring full:{}",
            s.sent, s.failed, s.bad_responses, s.busy
        )?;
        writeln!(
            out,
            "wakeups:{} dispatches:{} responds:{} ring peak:{} entries:{}",
            s.wakeups, s.dispatches, s.responds, s.ring_peak, io.layout.slots
        )?;
        writeln!(
            out,
            "timeout:{} timeouts:{} aborted:{} late responses:{} abort:{} poisoned:{}",
            io.timeout_secs,
            s.timeouts,
            s.aborted,
            s.late,
            io.poisoned.is_some(),
            io.poisoned.map_or("no", FailReason::as_str)
        )?;
        writeln!(
            out,
            "features:{:#x} allowed:{:#x} flushes:{} fua writes:{} discards:{} write-zeroes:{}",
            ctl.config.map_or(0, |c| c.agreement.features),
            io.ops_allowed,
            s.flushes,
            s.fua_writes,
            s.discards,
            s.write_zeroes
        )?;
        writeln!(
            out,
            "recovery:{} holding:{} reissued:{} ready:{}",
            io.recovery.window_secs,
            io.recovery.held_count(),
            s.reissued,
            io.ring_ready
        )?;
        let (hold, message, waiter, secs) = Self::pause_debug(&io);
        writeln!(
            out,
            "pause:{} message:{} waiting:{} removing:{} message_timeout:{}",
            hold.as_str(),
            message,
            waiter.map_or("none", |w| w.as_str()),
            io.removing,
            secs
        )?;
        match io.ring.as_ref() {
            None => writeln!(out, "begin pending:0\nend pending"),
            Some(r) => {
                writeln!(
                    out,
                    "req_prod_pvt:{} rsp_cons:{} abandoned:{}\nbegin pending:{}",
                    r.req_prod_pvt,
                    r.rsp_cons,
                    r.slots.abandoned(),
                    r.slots.live()
                )?;
                for id in r.slots.ids() {
                    let op = match r.slots.operation(id).unwrap_or(0) {
                        OP_WRITE => 'W',
                        OP_FLUSH => 'F',
                        OP_DISCARD => 'D',
                        OP_WRITE_ZEROES => 'Z',
                        _ => 'R',
                    };
                    writeln!(out, "{}: op:{}", id, op)?;
                }
                writeln!(out, "end pending")
            }
        }
    }
}
