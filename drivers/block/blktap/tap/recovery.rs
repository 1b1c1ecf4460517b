// SPDX-License-Identifier: GPL-2.0

//! Restart without I/O errors (opt-in, per tap), and the requests the data path fails.
//!
//! While no daemon can serve the disk (its ring went, or its process is exiting), the disk
//! holds its requests, in flight or new, for up to `window_secs`; the next daemon to map the
//! ring and make or find the disk gets them all sent again, oldest first. The rules (see
//! `Documentation/design.rst`, "Recovery"):
//!
//! - a held request is bounded by the window *and* by the request timeout;
//! - a request that the dying daemon's own process queued is never held: that process cannot
//!   finish exiting (and unmap the ring for a successor) while it waits for it;
//! - a window that expired is not open: it never keeps the next one from opening;
//! - a poisoned session (see [`FailReason`]) opens no window.

use kernel::{
    prelude::*,
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};

use crate::{
    kernel_ext::blk::{
        Request,
        RequestId,
        RequestList,
        Status, //
    },
    ring::{
        empty_table,
        Pending, //
    },
};

/// Why the driver ended a request without the daemon's answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailReason {
    /// It was older than the tap's request timeout.
    TimedOut,
    /// The administrator aborted the tap (sysfs `abort`).
    Aborted,
    /// The daemon's process is exiting and no recovery window holds the request.
    DaemonKilled,
}

impl FailReason {
    /// The reason as one word, for the kernel log and the `debug` attribute
    /// (`poisoned:<reason>`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::TimedOut => "timeout",
            Self::Aborted => "abort",
            Self::DaemonKilled => "daemon-exit",
        }
    }
}

/// Requests to end with `EIO` once the spinlock is released (completion may run the queue,
/// which takes it again). They are chained through the requests themselves, so the list never
/// runs out of room, whatever the ring's depth; one still in it when it is dropped ends with
/// `EIO` too, never lost.
pub(crate) struct Doomed {
    list: RequestList,
}

impl Doomed {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            list: RequestList::new(),
        }
    }

    /// Adds `rq` to the list.
    pub(crate) fn push(&mut self, rq: Request) {
        self.list.push(rq);
    }

    /// Number of requests in the list.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Ends every request in the list with `EIO`. Call it without the spinlock.
    pub(crate) fn end_all(self) {
        self.list.end_all(Status::IoError);
    }
}

/// The recovery window of a tap and the requests it holds.
pub(super) struct Recovery {
    /// Seconds to hold requests once no daemon can serve them (`0`: off, V-XS behaviour: they
    /// fail at once).
    pub(super) window_secs: u32,
    /// While a window is (or was last) open: when it ends.
    until: Option<Instant<Monotonic>>,
    /// The held requests: room for one per tag of the disk (see [`Recovery::make_room`]).
    held: KVVec<Option<Pending<Request>>>,
}

impl Recovery {
    /// Recovery off, nothing held, no room yet.
    pub(super) const fn new() -> Self {
        Self {
            window_secs: 0,
            until: None,
            held: KVVec::new(),
        }
    }

    /// Room to hold `n` requests, allocated where sleeping is allowed, for
    /// [`Recovery::make_room`].
    pub(super) fn room(n: usize) -> Result<KVVec<Option<Pending<Request>>>> {
        empty_table(n)
    }

    /// Takes `room` (from [`Recovery::room`]) if it is larger than the room there is and
    /// nothing is held (a new disk has none): every tag of the new disk then has a place.
    /// Returns the room not kept, empty, for the caller to free once it may sleep (`vfree`).
    pub(super) fn make_room(
        &mut self,
        room: KVVec<Option<Pending<Request>>>,
    ) -> KVVec<Option<Pending<Request>>> {
        if room.len() > self.held.len() && self.held_count() == 0 {
            core::mem::replace(&mut self.held, room)
        } else {
            room
        }
    }

    /// Seconds left in the open window, if one is open.
    pub(super) fn left(&self) -> Option<i64> {
        let left = self.until? - Instant::now();
        (!left.is_negative()).then(|| left.as_millis() / 1000 + 1)
    }

    /// Whether a window is open (and not yet expired).
    pub(super) fn is_open(&self) -> bool {
        self.left().is_some()
    }

    /// Whether a window was opened and has expired without being closed.
    pub(super) fn expired(&self) -> bool {
        self.until.is_some() && !self.is_open()
    }

    /// Opens a window now, unless recovery is off or one is open already. Returns whether a
    /// window is open.
    pub(super) fn open(&mut self) -> bool {
        if self.window_secs == 0 {
            return false;
        }
        if !self.is_open() {
            self.until = Some(Instant::now() + Delta::from_secs(i64::from(self.window_secs)));
        }
        true
    }

    /// Holds `pending` for the next daemon if a window is open; else hands it back.
    pub(super) fn hold(&mut self, pending: Pending<Request>) -> Result<(), Pending<Request>> {
        if !self.is_open() {
            return Err(pending);
        }
        match self.held.iter_mut().find(|h| h.is_none()) {
            Some(slot) => {
                *slot = Some(pending);
                Ok(())
            }
            None => Err(pending),
        }
    }

    /// Number of held requests.
    pub(super) fn held_count(&self) -> u32 {
        self.held.iter().flatten().count() as u32
    }

    /// The held request with block request id `id`, if it is held: its age.
    pub(super) fn held_since(&self, id: RequestId) -> Option<Instant<Monotonic>> {
        self.held
            .iter()
            .flatten()
            .find(|p| p.rq.id() == id)
            .map(|p| p.since)
    }

    /// Takes the held request with block request id `id` out (to fail it alone).
    pub(super) fn take(&mut self, id: RequestId) -> Option<Pending<Request>> {
        self.held
            .iter_mut()
            .find(|h| h.as_ref().is_some_and(|p| p.rq.id() == id))?
            .take()
    }

    /// Takes the oldest held request out (to send it again).
    pub(super) fn take_oldest(&mut self) -> Option<Pending<Request>> {
        let mut oldest: Option<(usize, Instant<Monotonic>)> = None;
        for (i, p) in self.held.iter().enumerate() {
            let Some(p) = p else { continue };
            if oldest.is_none_or(|(_, since)| (p.since - since).is_negative()) {
                oldest = Some((i, p.since));
            }
        }
        self.held.get_mut(oldest?.0)?.take()
    }

    /// Closes the window and moves every held request to `doomed`.
    pub(super) fn end(&mut self, doomed: &mut Doomed) {
        self.until = None;
        for held in self.held.iter_mut() {
            if let Some(pending) = held.take() {
                doomed.push(pending.rq);
            }
        }
    }

    /// Closes the window (its requests were all sent again).
    pub(super) fn close(&mut self) {
        self.until = None;
    }
}
