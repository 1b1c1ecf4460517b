// SPDX-License-Identifier: GPL-2.0

//! Kernel-driven pause, resume and removal (V-OXT, what OpenXT's legacy tapdisk2 answers): the
//! tap's sysfs files `pause`, `resume` and `remove`, the ring message byte, and the ring ioctls
//! that answer it (`SET_PARAMS` 203, `PAUSE` 204, `REOPEN` 205, `RESUME` 206).
//!
//! The kernel writes the byte (offset 16 of the ring page) only when one of those files is
//! written, so a daemon that never sees them (tapdisk 3.55.5, blktapd) sees V-XS exactly.
//!
//! ```text
//!            pause                      drained (RESPOND)         PAUSE (204)
//!   Running -------> Draining ------------------------> Requested ----------> Paused
//!      ^   no sends   (byte 0)                           (byte 1)              (byte 0)
//!      |                                                                          |
//!      |           RESUME (206) with 0                       resume               |
//!      +-------------------------------------- Resuming <-------------------------+
//!                                              (byte 2)  206 with an error: Paused
//! ```
//!
//! Nothing is sent to the daemon outside `Running`: requests that arrive are queued in their
//! ring slots (a slot per tag, so they always fit) and sent at resume; the request timeout
//! still applies to them. `remove` moves any state to `Closing` (byte 3) while the ring is
//! mapped. A writer that gives up (the tap's `message_timeout`, or a signal) takes back what it
//! asked: a pause in `Draining` or `Requested` goes back to `Running`, a resume to `Paused`, a
//! removal whose daemon still maps the ring to the state before (`Running` or `Paused`). The
//! end of the session (unmap), `abort` and a poisoned session end any pause: `Running`, and the
//! waiting writer gets `ENXIO` (unmap) or `EIO`.
//!
//! One writer at a time: a second one gets `EBUSY`. Writers wait on [`Tap::admin_wait`] with
//! the `io` spinlock's guard, and every change they wait for is made under `io`: no wake-up is
//! lost.

use kernel::{
    prelude::*,
    sync::{
        Arc,
        CondVarTimeoutResult, //
    },
    time::{
        msecs_to_jiffies,
        Delta,
        Instant,
        Monotonic, //
    },
};

use super::{
    Doomed,
    Io,
    Tap, //
};
use crate::{
    kernel_ext::{
        compat,
        workqueue as module_wq, //
    },
    ring::{
        checked_name,
        params_name,
        DeviceConfig,
        DiskName, //
    },
    uapi::{
        Blktap2Params,
        NAME_MAX,
        RING_MESSAGE_CLOSE,
        RING_MESSAGE_PAUSE,
        RING_MESSAGE_RESUME, //
    },
};

/// Default of the per-tap `message_timeout`, in seconds: how long a writer of `pause`,
/// `resume` or `remove` waits for the daemon.
const MESSAGE_TIMEOUT_SECS: u32 = 30;

/// Largest `message_timeout` accepted, in seconds.
const MESSAGE_TIMEOUT_MAX_SECS: u32 = 3600;

/// What the kernel lets through to the daemon, and what the ring's message byte says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Requests are sent as they come.
    Running,
    /// `pause` was written: nothing new is sent; waiting for the requests with the daemon.
    Draining,
    /// `PAUSE` is in the ring: waiting for the daemon's `PAUSE` ioctl.
    Requested,
    /// The daemon paused (it has closed its image): requests are queued, not sent.
    Paused,
    /// `RESUME` is in the ring: waiting for the daemon's `RESUME` ioctl.
    Resuming,
    /// `CLOSE` is in the ring (`remove`): nothing more is sent; waiting for the daemon to go.
    Closing,
}

impl Hold {
    /// The ring message byte of this state.
    fn message(self) -> u8 {
        match self {
            Hold::Requested => RING_MESSAGE_PAUSE,
            Hold::Resuming => RING_MESSAGE_RESUME,
            Hold::Closing => RING_MESSAGE_CLOSE,
            _ => 0,
        }
    }

    /// The state as one word, for the `debug` attribute (`pause:<state>`).
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Hold::Running => "none",
            Hold::Draining => "draining",
            Hold::Requested => "requested",
            Hold::Paused => "paused",
            Hold::Resuming => "resuming",
            Hold::Closing => "closing",
        }
    }

    /// Whether the daemon has been told to pause, or has paused, and not yet resumed.
    fn pausing(self) -> bool {
        matches!(
            self,
            Hold::Draining | Hold::Requested | Hold::Paused | Hold::Resuming
        )
    }
}

/// The sysfs writer waiting for the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiter {
    /// A writer of `pause`.
    Pause,
    /// A writer of `resume`.
    Resume,
    /// A writer of `remove`.
    Remove,
}

impl Waiter {
    /// The attribute's name, for the `debug` attribute and the kernel log.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Waiter::Pause => "pause",
            Waiter::Resume => "resume",
            Waiter::Remove => "remove",
        }
    }
}

/// The pause state of a tap, in [`Io`].
pub(super) struct Pause {
    /// See [`Hold`].
    pub(super) hold: Hold,
    /// The writer waiting for the daemon, if any.
    pub(super) waiter: Option<Waiter>,
    /// How the wait of a `pause` or `resume` writer ended (the daemon's answer, or the end of
    /// the session), for that writer to take.
    outcome: Option<Result>,
    /// Seconds a writer waits for the daemon (sysfs `message_timeout`).
    pub(super) timeout_secs: u32,
}

impl Pause {
    /// Running, nobody waiting.
    pub(super) const fn new() -> Self {
        Self {
            hold: Hold::Running,
            waiter: None,
            outcome: None,
            timeout_secs: MESSAGE_TIMEOUT_SECS,
        }
    }

    /// Whether requests may be sent to the daemon.
    pub(super) fn sends(&self) -> bool {
        self.hold == Hold::Running
    }
}

/// The error a daemon's `RESUME` result `err` (0 or `-errno`; a positive errno is taken too)
/// gives the writer of `resume`: an errno userspace knows, else `EIO` (never one of the
/// kernel's internal restart codes).
fn resume_error(err: i32) -> Error {
    let errno = err.unsigned_abs();
    // EPERM (1) .. EHWPOISON (133): the errnos of `include/uapi/asm-generic/errno.h`.
    if (1..=133).contains(&errno) {
        Error::from_errno(-(errno as i32))
    } else {
        EIO
    }
}

impl Tap {
    /// Sets the pause state, and the ring's message byte to match.
    fn set_hold(io: &mut Io, hold: Hold) {
        io.pause.hold = hold;
        if let Some(ring) = io.ring.as_ref() {
            ring.shm.set_message(hold.message());
        }
        if hold == Hold::Running {
            // Requests queued meanwhile: the next one, or the caller, wakes the daemon.
            io.daemon_notified = false;
        }
    }

    /// Requests with the daemon: sent and not answered (abandoned ids hold none).
    fn in_flight(io: &Io) -> u32 {
        io.ring
            .as_ref()
            .map_or(0, |r| r.slots.live() - r.slots.queued_count())
    }

    /// Moves a draining pause on to `Requested` (`PAUSE` in the ring) once nothing is with the
    /// daemon. Returns whether it did: the daemon must then be woken.
    pub(super) fn check_drained(io: &mut Io) -> bool {
        if io.pause.hold != Hold::Draining || Self::in_flight(io) != 0 {
            return false;
        }
        Self::set_hold(io, Hold::Requested);
        true
    }

    /// Ends a pause (in any of its states), because the session ended or was poisoned: the
    /// waiting writer of `pause` or `resume` gets `why`. Returns whether anything changed:
    /// the caller wakes the daemon and the writer, once `io` is released.
    pub(super) fn end_pause(io: &mut Io, why: Error) -> bool {
        let pausing = io.pause.hold.pausing();
        if pausing {
            Self::set_hold(io, Hold::Running);
        }
        let waiting = matches!(io.pause.waiter, Some(Waiter::Pause | Waiter::Resume))
            && io.pause.outcome.is_none();
        if waiting {
            io.pause.outcome = Some(Err(why));
        }
        pausing || waiting
    }

    /// The message the kernel has put in the ring (0: none).
    pub(super) fn ring_message(io: &Io) -> u8 {
        io.pause.hold.message()
    }

    /// The pause state, for the `debug` attribute: the state, the ring's message byte as the
    /// daemon sees it, the waiting writer and the bound.
    pub(super) fn pause_debug(io: &Io) -> (Hold, u8, Option<Waiter>, u32) {
        let message = io.ring.as_ref().map_or(0, |r| r.shm.message());
        (
            io.pause.hold,
            message,
            io.pause.waiter,
            io.pause.timeout_secs,
        )
    }

    /// The tap's `message_timeout` in seconds.
    pub(crate) fn message_timeout_secs(&self) -> u32 {
        self.io.lock().pause.timeout_secs
    }

    /// Sets the tap's `message_timeout` (1 to [`MESSAGE_TIMEOUT_MAX_SECS`] seconds: every wait
    /// is bounded); it applies to the next writer.
    pub(crate) fn set_message_timeout_secs(&self, secs: u32) -> Result {
        if !(1..=MESSAGE_TIMEOUT_MAX_SECS).contains(&secs) {
            return Err(EINVAL);
        }
        self.io.lock().pause.timeout_secs = secs;
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // sysfs writers.

    /// sysfs `pause`: stops sending requests to the daemon, waits for those it has, asks it to
    /// pause (`PAUSE` in the ring) and waits for its `PAUSE` ioctl, at most `message_timeout`.
    ///
    /// `ENXIO` without a live daemon; `EBUSY` while another writer waits or the tap is being
    /// removed or resumed; `EIO` on a poisoned session; 0 at once if already paused. On
    /// `ETIMEDOUT` or `EINTR` the pause is cancelled.
    pub(crate) fn pause(&self) -> Result {
        let wake = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            if io.removing || io.pause.waiter.is_some() {
                return Err(EBUSY);
            }
            if io.ring.is_none() || Self::owner_killed(io) {
                return Err(ENXIO);
            }
            match io.pause.hold {
                Hold::Running => {}
                Hold::Paused => return Ok(()),
                _ => return Err(EBUSY),
            }
            if io.poisoned.is_some() {
                return Err(EIO);
            }
            io.pause.waiter = Some(Waiter::Pause);
            io.pause.outcome = None;
            Self::set_hold(io, Hold::Draining);
            Self::check_drained(io)
        };
        pr_info!("{}: pause requested\n", DiskName::new(self.minor));
        if wake {
            self.poll.notify_all();
        }
        self.wait_for_daemon(Waiter::Pause)
    }

    /// sysfs `resume`: asks the paused daemon to resume (`RESUME` in the ring) and waits for
    /// its `RESUME` ioctl, at most `message_timeout`; its error, if it reports one, is the
    /// writer's (the tap then stays paused).
    ///
    /// `EINVAL` unless paused; `EBUSY` while another writer waits. On `ETIMEDOUT` or `EINTR`
    /// the tap stays paused.
    pub(crate) fn resume(&self) -> Result {
        {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            if io.pause.waiter.is_some() {
                return Err(EBUSY);
            }
            if io.pause.hold != Hold::Paused || io.ring.is_none() {
                return Err(EINVAL);
            }
            io.pause.waiter = Some(Waiter::Resume);
            io.pause.outcome = None;
            Self::set_hold(io, Hold::Resuming);
        }
        pr_info!("{}: resume requested\n", DiskName::new(self.minor));
        self.poll.notify_all();
        self.wait_for_daemon(Waiter::Resume)
    }

    /// Waits for the outcome of the `pause` or `resume` the caller asked for; on the bound or a
    /// signal, takes the request back.
    fn wait_for_daemon(&self, waiter: Waiter) -> Result {
        let mut guard = self.io.lock();
        let secs = guard.pause.timeout_secs;
        let deadline = Instant::<Monotonic>::now() + Delta::from_secs(i64::from(secs));
        let mut interrupted = false;
        let failure = loop {
            // An answer that came with the signal or the bound still counts.
            if let Some(outcome) = guard.pause.outcome.take() {
                guard.pause.waiter = None;
                return outcome;
            }
            if interrupted {
                break EINTR;
            }
            let Some(jiffies) = Self::jiffies_until(deadline) else {
                break ETIMEDOUT;
            };
            interrupted = matches!(
                self.admin_wait
                    .wait_interruptible_timeout(&mut guard, jiffies),
                CondVarTimeoutResult::Signal { .. }
            );
        };
        let io = &mut *guard;
        io.pause.waiter = None;
        let (wake, hold) = match (waiter, io.pause.hold) {
            (Waiter::Pause, Hold::Draining | Hold::Requested) => {
                Self::set_hold(io, Hold::Running);
                (true, "cancelled")
            }
            (Waiter::Resume, Hold::Resuming) => {
                Self::set_hold(io, Hold::Paused);
                (false, "still paused")
            }
            _ => (false, "unchanged"),
        };
        drop(guard);
        if wake {
            self.poll.notify_all();
        }
        if failure == ETIMEDOUT {
            pr_warn!(
                "{}: no answer from the daemon to {} within {} s: {}\n",
                DiskName::new(self.minor),
                waiter.as_str(),
                secs,
                hold
            );
        } else {
            pr_info!(
                "{}: {} interrupted: {}\n",
                DiskName::new(self.minor),
                waiter.as_str(),
                hold
            );
        }
        Err(failure)
    }

    /// Jiffies left until `deadline`, if any.
    fn jiffies_until(deadline: Instant<Monotonic>) -> Option<kernel::time::Jiffies> {
        let left = deadline - Instant::now();
        if left.is_negative() || left.is_zero() {
            return None;
        }
        let ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
        Some(msecs_to_jiffies(ms))
    }

    /// sysfs `remove`: removes the tap, as `FREE_TAP` would, once its daemon is gone and its
    /// disk closed. Returns whether this writer freed it (and must now unregister it; `false`:
    /// someone else did).
    ///
    /// From now on the ring cannot be opened or mapped (`ENXIO`). With the ring mapped, `CLOSE`
    /// goes into the ring and nothing more is sent; the daemon closes its image, unmaps and
    /// closes the ring. Requests it leaves, and those held for recovery, fail (the recovery
    /// window is switched off: no successor is wanted). Then the disk is removed and the tap
    /// freed. The writer waits at most `message_timeout`: if the daemon still has the ring
    /// then, the removal is cancelled (`ETIMEDOUT`, or `EINTR` on a signal); if only the disk
    /// is still open, `EBUSY` (or `EINTR`) and the removal completes at its last close.
    pub(crate) fn remove(this: &Arc<Self>) -> Result<bool> {
        let mut failed = Doomed::new();
        let (wake, window, before) = {
            let ctl = this.ctl.lock();
            if ctl.freed {
                return Ok(false);
            }
            let mut guard = this.io.lock();
            let io = &mut *guard;
            if io.pause.waiter.is_some() {
                return Err(EBUSY);
            }
            io.pause.waiter = Some(Waiter::Remove);
            io.removing = true;
            let window = core::mem::replace(&mut io.recovery.window_secs, 0);
            io.recovery.end(&mut failed);
            io.stats.failed += failed.len() as u64;
            let mapped = io.ring.is_some();
            let before = io.pause.hold;
            if mapped {
                Self::set_hold(io, Hold::Closing);
            }
            (mapped, window, before)
        };
        failed.end_all();
        pr_info!(
            "{}: removal requested{}\n",
            DiskName::new(this.minor),
            if wake {
                "; asking the daemon to close"
            } else {
                ""
            }
        );
        if wake {
            this.poll.notify_all();
        }
        let secs = this.message_timeout_secs();
        let deadline = Instant::<Monotonic>::now() + Delta::from_secs(i64::from(secs));
        let failure = loop {
            match this.prepare_free() {
                Ok(()) => {
                    this.io.lock().pause.waiter = None;
                    return Ok(true);
                }
                Err(e) if e == ENODEV => {
                    this.io.lock().pause.waiter = None;
                    return Ok(false);
                }
                Err(_) => {}
            }
            let mut io = this.io.lock();
            let Some(jiffies) = Self::jiffies_until(deadline) else {
                break ETIMEDOUT;
            };
            if io.ring.is_none() && !io.ring_open && io.openers == 0 {
                // Changed since `prepare_free` looked: look again.
                continue;
            }
            if let CondVarTimeoutResult::Signal { .. } =
                this.admin_wait.wait_interruptible_timeout(&mut io, jiffies)
            {
                break EINTR;
            }
        };
        Self::give_up_removal(this, failure, (window, before), secs)
    }

    /// The writer of `remove` stops waiting (`failure`: `ETIMEDOUT` or `EINTR`): with the
    /// daemon still there the removal is cancelled, restoring the recovery window and the pause
    /// state from before (`Running` or `Paused`: a paused daemon stays paused); without, it
    /// stays requested and completes at the disk's last close (`EBUSY` for the writer).
    fn give_up_removal(
        this: &Arc<Self>,
        failure: Error,
        (window, before): (u32, Hold),
        secs: u32,
    ) -> Result<bool> {
        let name = DiskName::new(this.minor);
        let daemon = {
            let ctl = this.ctl.lock();
            let mut guard = this.io.lock();
            let io = &mut *guard;
            io.pause.waiter = None;
            if ctl.freed {
                return Ok(false);
            }
            let daemon = io.ring.is_some() || io.ring_open;
            if daemon {
                io.removing = false;
                if io.recovery.window_secs == 0 {
                    io.recovery.window_secs = window;
                }
                if io.pause.hold == Hold::Closing {
                    let hold = if before == Hold::Paused {
                        Hold::Paused
                    } else {
                        Hold::Running
                    };
                    Self::set_hold(io, hold);
                }
            }
            daemon
        };
        let interrupted = failure == EINTR;
        if daemon {
            this.poll.notify_all();
            pr_warn!(
                "{}: the daemon did not close the ring within {} s{}: removal cancelled\n",
                name,
                secs,
                if interrupted { " (interrupted)" } else { "" }
            );
            return Err(failure);
        }
        // The disk is still open: its last close queues the removal work, which frees the tap.
        // Queued here too, in case that close came as this writer gave up.
        module_wq::enqueue(this.clone());
        pr_info!(
            "{}: the disk is still open: it and the tap go at its last close\n",
            name
        );
        Err(if interrupted { EINTR } else { EBUSY })
    }

    // ---------------------------------------------------------------------------------------
    // Ring ioctls (the daemon's answers).

    /// `PAUSE` (204): the daemon has paused, answering `PAUSE` in the ring. `EINVAL` unless a
    /// pause was asked (0 if already paused).
    pub(crate) fn ioctl_pause(&self) -> Result {
        {
            let ctl = self.ctl.lock();
            Self::check_owner(&ctl)?;
            let mut guard = self.io.lock();
            let io = &mut *guard;
            match io.pause.hold {
                Hold::Requested => {}
                Hold::Paused => return Ok(()),
                _ => return Err(EINVAL),
            }
            Self::set_hold(io, Hold::Paused);
            if io.pause.waiter == Some(Waiter::Pause) {
                io.pause.outcome = Some(Ok(()));
            }
        }
        pr_info!("{}: paused\n", DiskName::new(self.minor));
        self.admin_wait.notify_all();
        Ok(())
    }

    /// `REOPEN` (205): copies the tap's name (what the daemon reopens, `type:path`) and a NUL
    /// into `out`; returns the bytes to copy to the daemon. `EINVAL` unless paused.
    pub(crate) fn ioctl_reopen(&self, out: &mut [u8; NAME_MAX]) -> Result<usize> {
        let ctl = self.ctl.lock();
        Self::check_owner(&ctl)?;
        if !matches!(self.io.lock().pause.hold, Hold::Paused | Hold::Resuming) {
            return Err(EINVAL);
        }
        let len = ctl.name.len();
        if len >= out.len() {
            return Err(compat::enametoolong());
        }
        out[..len].copy_from_slice(&ctl.name);
        out[len] = 0;
        Ok(len + 1)
    }

    /// `SET_PARAMS` (203): the reopened image's capacity and name, while paused. The capacity
    /// is applied to the live disk; a different sector size is refused (`EINVAL`, logged): the
    /// queue's block size cannot change under a disk that may be open.
    pub(crate) fn ioctl_set_params(&self, params: &Blktap2Params) -> Result {
        // Validated and copied before `ctl` (no allocation under it), judged after the owner
        // check: a caller that does not own the ring gets EACCES whatever it passed.
        let config = DeviceConfig::from_params(params);
        let copy = checked_name(params_name(params)).and_then(|name| {
            let mut copy = KVec::new();
            copy.extend_from_slice(name, GFP_KERNEL)?;
            Ok(copy)
        });
        let (disk, old, new) = {
            let mut ctl = self.ctl.lock();
            Self::check_owner(&ctl)?;
            if !matches!(self.io.lock().pause.hold, Hold::Paused | Hold::Resuming) {
                return Err(EINVAL);
            }
            let (config, copy) = (config?, copy?);
            let Some(current) = ctl.config.as_mut() else {
                return Err(EINVAL);
            };
            if config.logical_block_size != current.logical_block_size {
                pr_warn!(
                    "{}: SET_PARAMS refused: sector size {} differs from the disk's {}\n",
                    DiskName::new(self.minor),
                    config.logical_block_size,
                    current.logical_block_size
                );
                return Err(EINVAL);
            }
            let old = core::mem::replace(&mut current.capacity, config.capacity);
            if !copy.is_empty() {
                ctl.name = copy;
            }
            (ctl.disk.as_ref().map(|d| d.handle()), old, config.capacity)
        };
        // Without `ctl`: the uevent allocates.
        if let Some(disk) = disk {
            if old != new {
                disk.set_capacity(new);
                pr_info!(
                    "{}: capacity {} -> {} sectors (SET_PARAMS)\n",
                    DiskName::new(self.minor),
                    old,
                    new
                );
            }
        }
        Ok(())
    }

    /// `RESUME` (206): the daemon's resume result `err`, by value. 0 resumes: the requests
    /// queued meanwhile are sent. Anything else leaves the tap paused, and is the error of the
    /// writer of `resume`. `EINVAL` unless paused.
    pub(crate) fn ioctl_resume(&self, err: i32) -> Result {
        {
            let ctl = self.ctl.lock();
            Self::check_owner(&ctl)?;
            let mut guard = self.io.lock();
            let io = &mut *guard;
            if !matches!(io.pause.hold, Hold::Paused | Hold::Resuming) {
                return Err(EINVAL);
            }
            let outcome = if err == 0 {
                Self::set_hold(io, Hold::Running);
                Ok(())
            } else {
                Self::set_hold(io, Hold::Paused);
                Err(resume_error(err))
            };
            if io.pause.waiter == Some(Waiter::Resume) {
                io.pause.outcome = Some(outcome);
            }
        }
        if err == 0 {
            pr_info!("{}: resumed\n", DiskName::new(self.minor));
            // Requests queued during the pause go at the daemon's next poll.
            self.poll.notify_all();
        } else {
            pr_warn!(
                "{}: the daemon failed to resume ({}): still paused\n",
                DiskName::new(self.minor),
                err
            );
        }
        self.admin_wait.notify_all();
        Ok(())
    }
}

#[kunit_tests(blktap_pause)]
mod tests {
    use super::*;

    #[test]
    fn message_of_each_state() {
        assert_eq!(Hold::Running.message(), 0);
        assert_eq!(Hold::Draining.message(), 0);
        assert_eq!(Hold::Requested.message(), RING_MESSAGE_PAUSE);
        assert_eq!(Hold::Paused.message(), 0);
        assert_eq!(Hold::Resuming.message(), RING_MESSAGE_RESUME);
        assert_eq!(Hold::Closing.message(), RING_MESSAGE_CLOSE);
        assert!(Pause::new().sends());
        assert!(!Hold::Running.pausing() && !Hold::Closing.pausing());
        assert!(Hold::Draining.pausing() && Hold::Resuming.pausing());
    }

    #[test]
    fn resume_errors_are_user_errnos() {
        assert_eq!(resume_error(-2), ENOENT);
        assert_eq!(resume_error(2), ENOENT);
        assert_eq!(resume_error(-133), Error::from_errno(-133));
        // Kernel-internal codes (ERESTARTSYS 512, ENOIOCTLCMD 515) and nonsense become EIO.
        assert_eq!(resume_error(-512), EIO);
        assert_eq!(resume_error(-515), EIO);
        assert_eq!(resume_error(i32::MIN), EIO);
        assert_eq!(resume_error(134), EIO);
    }
}
