// SPDX-License-Identifier: GPL-2.0

//! The data path of a tap: block requests queued for the daemon, sent from its poll, completed
//! by its `RESPOND`, and failed by the request timeout, a killed daemon or an abort.
//!
//! Locking: [`Tap::io`] (a spinlock, taken in `queue_rq`) guards the ring state; data is copied
//! to and from the shared pages outside it (see `Documentation/design.rst`).

use kernel::{
    bindings,
    fs::File,
    prelude::*,
    sync::{
        poll::PollTable,
        Arc,
        ArcBorrow, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};

use super::{
    worth_logging,
    Io,
    Tap, //
};
use crate::{
    kernel_ext::{
        blk::{
            Op,
            Request,
            RequestId,
            Status,
            TimeoutAction, //
        },
        shm::SharedRing,
        task, workqueue as module_wq,
    },
    ring::{
        judge_response,
        responses_to_consume,
        segment_sectors,
        DiskName,
        Pending,
        Verdict, //
    },
    uapi::{
        RingRequest,
        Segment,
        OP_READ,
        OP_WRITE,
        RING_SIZE,
        SEGMENT_MAX, //
    },
};

impl Io {
    /// Seconds left in an open recovery window, if one is open.
    pub(super) fn recovery_left(&self) -> Option<i64> {
        let until = self.recovery.until?;
        let left = until - Instant::now();
        (!left.is_negative()).then(|| left.as_millis() / 1000 + 1)
    }

    /// Number of held requests.
    pub(super) fn held_count(&self) -> u32 {
        self.recovery.held.iter().flatten().count() as u32
    }
}

impl Tap {
    /// Registers `file` for wake-ups, sends queued requests to the daemon and reports whether
    /// the daemon has something to do (each event is reported to one poll, as in V-XS).
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &self.poll);
        self.dispatch();
        let mut io = self.io.lock();
        let ready = io.requests_published || io.disk_closed;
        io.requests_published = false;
        io.disk_closed = false;
        if ready {
            bindings::POLLIN | bindings::POLLRDNORM
        } else {
            0
        }
    }

    /// `RESPOND`: consumes the daemon's responses and completes their requests.
    ///
    /// Three steps, so that the spinlock `queue_rq` needs is held only briefly: judge the
    /// responses and take their requests, keeping their ids reserved; copy read data out of
    /// the shared pages without the lock (holding `ctl` keeps the mapping, and so the pages,
    /// alive); then free the ids and end the requests.
    pub(crate) fn respond(&self) -> Result {
        let ctl = self.ctl.lock();
        Self::check_owner(&ctl)?;
        let mut done: [Option<(usize, Pending<Request>, Status)>; RING_SIZE] =
            [const { None }; RING_SIZE];
        let shm = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let Some(ring) = io.ring.as_mut() else {
                return Err(EACCES);
            };
            let prod = ring.shm.responses_produced();
            let Some(n) = responses_to_consume(ring.rsp_cons, prod) else {
                io.stats.bad_responses += 1;
                if worth_logging(io.stats.bad_responses) {
                    pr_warn!(
                        "{}: ignoring responses: rsp_prod {} is {} past rsp_cons {}\n",
                        DiskName::new(self.minor),
                        prod,
                        prod.wrapping_sub(ring.rsp_cons),
                        ring.rsp_cons
                    );
                }
                ring.rsp_cons = prod;
                return Ok(());
            };
            let mut ndone = 0;
            for i in 0..n {
                let rsp = ring.shm.read_response(ring.rsp_cons.wrapping_add(i));
                let (id, status) = match judge_response(&ring.slots, &rsp) {
                    Verdict::Complete { id, ok } => {
                        (id, if ok { Status::Ok } else { Status::IoError })
                    }
                    Verdict::OpMismatch { id } => {
                        io.stats.bad_responses += 1;
                        if worth_logging(io.stats.bad_responses) {
                            pr_warn!(
                                "{}: response for id {} has operation {}; failing it\n",
                                DiskName::new(self.minor),
                                id,
                                rsp.operation
                            );
                        }
                        (id, Status::IoError)
                    }
                    Verdict::Late { id } => {
                        // The kernel failed this request already; its id is free again.
                        ring.slots.release(id);
                        io.stats.late += 1;
                        continue;
                    }
                    Verdict::Invalid => {
                        io.stats.bad_responses += 1;
                        if worth_logging(io.stats.bad_responses) {
                            pr_warn!(
                                "{}: ignoring response for id {} (no such request)\n",
                                DiskName::new(self.minor),
                                rsp.id
                            );
                        }
                        continue;
                    }
                };
                // `judge_response` found the request pending, so it is there.
                if let Some(pending) = ring.slots.begin_complete(id) {
                    done[ndone] = Some((id, pending, status));
                    ndone += 1;
                }
            }
            ring.rsp_cons = ring.rsp_cons.wrapping_add(n);
            io.stats.responds += u64::from(n > 0);
            ring.shm.clone()
        };

        for (id, pending, status) in done.iter_mut().flatten() {
            if *status == Status::Ok && pending.operation == OP_READ {
                for (seg, s) in pending.rq.segments().enumerate() {
                    if shm
                        .copy_from_data(*id, seg, s.offset, &s.page, s.offset, s.len)
                        .is_err()
                    {
                        *status = Status::IoError;
                        break;
                    }
                }
            }
        }

        let restart = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let mut ndone = 0;
            for (id, _, status) in done.iter().flatten() {
                if let Some(ring) = io.ring.as_mut() {
                    ring.slots.end_complete(*id);
                }
                if *status != Status::Ok {
                    io.stats.failed += 1;
                }
                ndone += 1;
            }
            let restart = io.queue_busy && ndone > 0;
            if restart {
                io.queue_busy = false;
            }
            restart
        };
        // Ended outside the spinlock: completion may run the queue, which takes it again.
        for (_, pending, status) in done.iter_mut().filter_map(Option::take) {
            pending.rq.end(status);
        }
        if restart {
            if let Some(disk) = &ctl.disk {
                disk.run_queue();
            }
        }
        Ok(())
    }

    /// Queues `rq` for the daemon (see [`crate::device`]); hands it back if the ring is full.
    ///
    /// The request is only recorded here; the daemon's next `poll` sends it ([`Tap::dispatch`]),
    /// as in V-XS. So write data is copied in the daemon's context, not the submitter's: under
    /// load the submitter queues more before the daemon runs, and the daemon takes bigger
    /// batches (measured in `Documentation/benchmarks.rst`).
    pub(crate) fn queue(&self, rq: Request, is_last: bool) -> Result<(), Request> {
        let operation = match rq.op() {
            Op::Read => OP_READ,
            Op::Write => OP_WRITE,
            Op::Other(_) => {
                rq.end(Status::NotSupported);
                return Ok(());
            }
        };
        let mut guard = self.io.lock();
        let io = &mut *guard;
        let killed = Self::owner_killed(io);
        let recovering = io.recovery_left().is_some();
        let ready = io.ring_ready;
        let ring = match (io.disk_live && !io.aborted, io.ring.as_mut()) {
            (true, Some(ring)) if !killed && (ready || !recovering) => ring,
            (true, _) if recovering => {
                // No daemon, but a new one may come: hold the request for it.
                let failed = Self::hold(io, Pending { rq, operation });
                io.stats.failed += u64::from(failed.is_some());
                drop(guard);
                if let Some(rq) = failed {
                    rq.end(Status::IoError);
                }
                return Ok(());
            }
            _ => {
                // No daemon (or a killed one, an aborted tap, a disk going away): fail at once,
                // never wait.
                io.stats.failed += 1;
                let ended = Self::end_recovery(io);
                drop(guard);
                rq.end(Status::IoError);
                Self::fail_all(ended);
                return Ok(());
            }
        };
        let Some(id) = ring.slots.free_id() else {
            io.queue_busy = true;
            io.stats.busy += 1;
            return Err(rq);
        };
        ring.slots.queue(id, Pending { rq, operation });
        ring.started[id] = Instant::now();
        let wake = is_last && Self::notify(io);
        drop(guard);
        if wake {
            self.poll.notify_all();
        }
        Ok(())
    }

    /// Whether the daemon must be woken for queued requests: only the first time since its
    /// last poll, so a busy daemon costs no wake-ups.
    fn notify(io: &mut Io) -> bool {
        let queued = io.ring.as_ref().is_some_and(|r| r.slots.queued() != 0);
        let wake = queued && !core::mem::replace(&mut io.daemon_notified, true);
        io.stats.wakeups += u64::from(wake);
        wake
    }

    /// blk-mq `commit_rqs`: wakes the daemon for requests queued without `is_last`.
    pub(crate) fn commit(&self) {
        if Self::notify(&mut self.io.lock()) {
            self.poll.notify_all();
        }
    }

    /// Sends the queued requests to the daemon.
    ///
    /// Whoever polls the ring sends them, not only the daemon's own threads: this touches the
    /// ring only through kernel addresses, and a poll from another context (Linux AIO's
    /// `IOCB_CMD_POLL` re-polls from a kernel worker with no address space; a second process
    /// sharing the fd) must not report readiness without having sent what it reports.
    ///
    /// Three steps, so that the spinlock is held only briefly: take the queued requests out,
    /// keeping their ids reserved, and note `req_prod_pvt`; build their ring entries, copying
    /// write data into their pages, without the lock (the `dispatch` mutex makes the entries
    /// past `req_prod_pvt` ours, and the reference keeps the memory alive should the daemon
    /// unmap the ring meanwhile); then, if the same ring is still there and the disk live,
    /// record them as sent and publish `req_prod`, else fail them.
    fn dispatch(&self) {
        let _dispatching = self.dispatch.lock();
        let mut taken: [Option<(usize, Pending<Request>, bool)>; RING_SIZE] =
            [const { None }; RING_SIZE];
        let (shm, base) = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let Some(ring) = io.ring.as_mut() else {
                return;
            };
            // Cleared before taking the requests: one queued after this wakes the daemon again.
            io.daemon_notified = false;
            let queued = ring.slots.queued();
            if queued == 0 {
                return;
            }
            for (id, slot) in taken.iter_mut().enumerate() {
                if queued & (1 << id) != 0 {
                    *slot = ring.slots.take_queued(id).map(|p| (id, p, false));
                }
            }
            (ring.shm.clone(), ring.req_prod_pvt)
        };

        let mut n: u32 = 0;
        for (id, pending, ok) in taken.iter_mut().flatten() {
            if let Ok(req) = Self::encode(&shm, &pending.rq, *id, pending.operation) {
                shm.write_request(base.wrapping_add(n), &req);
                n += 1;
                *ok = true;
            }
        }

        let mut failed: [Option<(Request, bool)>; RING_SIZE] = [const { None }; RING_SIZE];
        {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let same_ring = io
                .ring
                .as_ref()
                .is_some_and(|ring| Arc::ptr_eq(&ring.shm, &shm));
            let live = io.disk_live && !io.aborted;
            for (slot, entry) in failed.iter_mut().zip(taken.iter_mut()) {
                let Some((id, pending, encoded)) = entry.take() else {
                    continue;
                };
                if let Some(ring) = io.ring.as_mut().filter(|_| same_ring) {
                    if live && encoded {
                        ring.slots.insert(id, pending);
                        io.stats.sent += 1;
                        continue;
                    }
                    ring.slots.end_complete(id);
                } else if encoded && !same_ring {
                    // The ring went meanwhile (with the reservation): held if recovering.
                    let Some(rq) = Self::hold(io, pending) else {
                        continue;
                    };
                    io.stats.failed += 1;
                    *slot = Some((rq, false));
                    continue;
                }
                io.stats.failed += 1;
                *slot = Some((pending.rq, !encoded));
            }
            if same_ring && live {
                io.stats.dispatches += u64::from(n > 0);
                if let Some(ring) = io.ring.as_mut() {
                    debug_assert_eq!(ring.req_prod_pvt, base);
                    ring.req_prod_pvt = base.wrapping_add(n);
                }
                // The caller is the poller: `poll` reports these itself, no wake-up needed.
                Self::publish(io);
            }
        }
        drop(shm);
        for (rq, bad) in failed.into_iter().flatten() {
            if bad {
                pr_warn!(
                    "{}: failing a request the ring cannot carry ({} bytes at sector {})\n",
                    DiskName::new(self.minor),
                    rq.bytes(),
                    rq.sector()
                );
            }
            rq.end(Status::IoError);
        }
    }

    /// Builds the ring entry for `rq` in slot `id`, copying write data into its pages.
    fn encode(shm: &SharedRing, rq: &Request, id: usize, operation: u8) -> Result<RingRequest> {
        let mut req = RingRequest {
            operation,
            id: id as u64,
            sector_number: rq.sector(),
            ..RingRequest::default()
        };
        let mut n = 0;
        for s in rq.segments() {
            if n == SEGMENT_MAX {
                return Err(EINVAL);
            }
            let (first_sect, last_sect) = segment_sectors(s.offset, s.len)?;
            if operation == OP_WRITE {
                shm.copy_to_data(id, n, s.offset, &s.page, s.offset, s.len)?;
            }
            req.seg[n] = Segment {
                first_sect,
                last_sect,
                ..Segment::default()
            };
            n += 1;
        }
        if n == 0 {
            return Err(EINVAL);
        }
        req.nr_segments = n as u8;
        Ok(req)
    }

    /// Publishes the requests filled so far (`req_prod`) and flags them for `poll` to report.
    fn publish(io: &mut Io) {
        let Some(ring) = io.ring.as_mut() else {
            return;
        };
        if ring.req_prod_published == ring.req_prod_pvt {
            return;
        }
        ring.shm.publish_requests(ring.req_prod_pvt);
        ring.req_prod_published = ring.req_prod_pvt;
        io.requests_published = true;
    }

    /// blk-mq asks about request `id`, with the driver for another timer interval: fail it if
    /// the daemon was killed, the tap aborted, or the request is older than the timeout.
    pub(crate) fn timed_out(this: ArcBorrow<'_, Self>, id: RequestId) -> TimeoutAction {
        let (failed, why, pid) = {
            let mut guard = this.io.lock();
            let io = &mut *guard;
            let timeout = io.timeout_secs;
            let aborted = io.aborted;
            if io.recovery.held.iter().flatten().any(|p| p.rq.id() == id) {
                // Held for a new daemon: fail them all once the window is over.
                if io.recovery_left().is_some() {
                    return TimeoutAction::ResetTimer;
                }
                let ended = Self::end_recovery(io);
                drop(guard);
                pr_warn!(
                    "{}: no new daemon within the recovery window: failing the held requests\n",
                    DiskName::new(this.minor)
                );
                Self::fail_all(ended);
                // The disk may go now, if nobody has it open.
                module_wq::enqueue(Arc::from(this));
                return TimeoutAction::Done;
            }
            let Some(ring) = io.ring.as_mut() else {
                return TimeoutAction::ResetTimer;
            };
            // Not found: being sent or completed right now, by whoever holds it.
            let Some(slot) = ring.slots.find(|rq| rq.id() == id) else {
                return TimeoutAction::ResetTimer;
            };
            let why = if aborted {
                "the tap was aborted"
            } else if task::killed(&ring.owner) {
                if io.recovery.window_secs > 0 && io.disk_live {
                    // Recovery: the next daemon gets it. The timer stays armed, so that the
                    // window's end still fails it if no daemon comes.
                    Self::owner_killed(io);
                    if let Some(ring) = io.ring.as_mut() {
                        if let Some(pending) = ring.slots.abandon(slot) {
                            if let Some(rq) = Self::hold(io, pending) {
                                // Cannot happen (the window was just opened); never lose it.
                                drop(guard);
                                rq.end(Status::IoError);
                                return TimeoutAction::Done;
                            }
                        }
                    }
                    return TimeoutAction::ResetTimer;
                }
                "its daemon was killed"
            } else if timeout > 0
                && ring.started[slot].elapsed() >= Delta::from_secs(i64::from(timeout))
            {
                "it timed out"
            } else {
                return TimeoutAction::ResetTimer;
            };
            let sent = ring.slots.is_sent(slot);
            let Some(pending) = ring.slots.abandon(slot) else {
                return TimeoutAction::ResetTimer;
            };
            io.stats.failed += 1;
            if why == "it timed out" {
                io.stats.timeouts += 1;
            } else {
                io.stats.aborted += 1;
            }
            let count = io.stats.timeouts + io.stats.aborted;
            let pid = ring.owner.pid();
            (pending, worth_logging(count).then_some((why, sent)), pid)
        };
        if let Some((why, sent)) = why {
            pr_warn!(
                "{}: failing a request {} daemon {}: {}\n",
                DiskName::new(this.minor),
                if sent { "sent to" } else { "not yet taken by" },
                pid,
                why
            );
        }
        failed.rq.end(Status::IoError);
        TimeoutAction::Done
    }

    /// Fails every request now, and every later one until the ring is unmapped: what an
    /// unmap does, for a daemon that is alive but stuck. Ids of sent requests stay reserved
    /// until the daemon answers them. `ENXIO` if no daemon maps the ring.
    pub(crate) fn abort(&self) -> Result {
        let ctl = self.ctl.lock();
        let (failed, n) = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let mut failed = Self::end_recovery(io);
            let Some(ring) = io.ring.as_mut() else {
                let n = failed.iter().flatten().count();
                drop(guard);
                if n == 0 {
                    return Err(ENXIO);
                }
                pr_warn!(
                    "{}: aborted by the administrator: {} held request(s) failed\n",
                    DiskName::new(self.minor),
                    n
                );
                Self::fail_all(failed);
                return Ok(());
            };
            let mut n = 0u64;
            for (id, slot) in failed.iter_mut().enumerate() {
                *slot = ring.slots.abandon(id).map(|p| p.rq);
                n += u64::from(slot.is_some());
            }
            io.aborted = true;
            io.queue_busy = false;
            io.stats.failed += n;
            io.stats.aborted += n;
            (failed, n)
        };
        pr_warn!(
            "{}: aborted by the administrator: {} request(s) failed, later ones fail at once\n",
            DiskName::new(self.minor),
            n
        );
        for rq in failed.into_iter().flatten() {
            rq.end(Status::IoError);
        }
        // Requests handed back as busy are dispatched again and now fail at once.
        if let Some(disk) = &ctl.disk {
            disk.run_queue();
        }
        Ok(())
    }

    /// The disk is being opened.
    pub(crate) fn disk_opened(&self) -> Result {
        let mut io = self.io.lock();
        if !io.disk_live {
            return Err(ENXIO);
        }
        io.openers += 1;
        Ok(())
    }

    /// The disk is being closed.
    pub(crate) fn disk_released(this: ArcBorrow<'_, Self>) {
        let orphaned = {
            let mut io = this.io.lock();
            io.openers = io.openers.saturating_sub(1);
            if io.openers > 0 {
                return;
            }
            io.disk_closed = true;
            io.ring.is_none()
        };
        // Wakes a daemon retrying `REMOVE_DEVICE`.
        this.poll.notify_all();
        if orphaned {
            // Removal takes the open mutex, which our caller holds: do it from the workqueue.
            module_wq::enqueue(Arc::from(this));
        }
    }

    /// Whether the ring's daemon was killed. With recovery on, that opens the window: it will
    /// never answer, and the next daemon should get its requests.
    fn owner_killed(io: &mut Io) -> bool {
        let killed = io.ring.as_ref().is_some_and(|r| task::killed(&r.owner));
        if killed
            && io.recovery.window_secs > 0
            && io.recovery.until.is_none()
            && io.disk_live
            && !io.aborted
        {
            io.recovery.until = Some(Self::window_end(io.recovery.window_secs));
        }
        killed
    }

    /// When a recovery window of `secs` seconds opened now ends.
    pub(super) fn window_end(secs: u32) -> Instant<Monotonic> {
        Instant::now() + Delta::from_secs(i64::from(secs))
    }

    /// Holds `pending` for the next daemon if a recovery window is open; else hands its
    /// request back, to be failed.
    pub(super) fn hold(io: &mut Io, pending: Pending<Request>) -> Option<Request> {
        if io.recovery_left().is_none() {
            return Some(pending.rq);
        }
        match io.recovery.held.iter_mut().find(|h| h.is_none()) {
            Some(slot) => {
                *slot = Some(pending);
                None
            }
            // Cannot happen (a request per tag at most), but never lose one.
            None => Some(pending.rq),
        }
    }

    /// Closes the recovery window and returns the held requests, to be failed.
    fn end_recovery(io: &mut Io) -> [Option<Request>; RING_SIZE] {
        io.recovery.until = None;
        let held = core::mem::replace(&mut io.recovery.held, [const { None }; RING_SIZE]);
        let ended = held.map(|h| h.map(|p| p.rq));
        io.stats.failed += ended.iter().flatten().count() as u64;
        ended
    }

    /// Fails `requests` (outside the spinlock: completion may run the queue).
    fn fail_all(requests: [Option<Request>; RING_SIZE]) {
        for rq in requests.into_iter().flatten() {
            rq.end(Status::IoError);
        }
    }

    /// Queues the held requests on the new ring, to be sent at its daemon's next poll; closes
    /// the recovery window. Returns how many.
    pub(super) fn reissue_held(io: &mut Io) -> u32 {
        io.recovery.until = None;
        let Some(ring) = io.ring.as_mut() else {
            return 0;
        };
        let mut n = 0;
        for held in io.recovery.held.iter_mut() {
            let Some(pending) = held.take() else {
                continue;
            };
            // The ring is new and has a slot per tag.
            let Some(id) = ring.slots.free_id() else {
                *held = Some(pending);
                break;
            };
            ring.slots.queue(id, pending);
            ring.started[id] = Instant::now();
            n += 1;
        }
        io.stats.reissued += u64::from(n);
        if n > 0 {
            Self::notify(io);
        }
        n
    }
}
