// SPDX-License-Identifier: GPL-2.0

//! The data path of a tap: block requests queued for the daemon, sent from its poll, completed
//! by its `RESPOND`, and failed by the request timeout, a killed daemon or an abort.
//!
//! Locking: [`Tap::io`] (a spinlock, taken in `queue_rq`) guards the ring state; data is copied
//! to and from the shared pages outside it (see `Documentation/design.rst`).

use kernel::{
    bindings,
    fs::File,
    page::PAGE_SIZE,
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
    Ctl,
    Doomed,
    FailReason,
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
        feature_of,
        judge_response,
        responses_to_consume,
        segment_sectors,
        DiskName,
        Pending,
        Verdict,
        SECTOR_SIZE, //
    },
    uapi::{
        Layout,
        RingRangeRequest,
        RingRequest,
        Segment,
        DEEP_RING_SLOTS_MAX,
        FEAT_FUA,
        FEAT_LARGE,
        FEAT_LOW_LATENCY,
        OP_DISCARD,
        OP_FLUSH,
        OP_READ,
        OP_WRITE,
        OP_WRITE_ZEROES,
        REQ_FUA,
        REQ_NOUNMAP,
        SEGMENT_MAX, //
    },
};

/// How long a daemon seen exiting may keep its ring mapped before the requests held from before
/// are failed, in case it waits for one of them (a normal exit unmaps within milliseconds).
const EXIT_GRACE_MS: i64 = 1000;

/// Requests taken from the ring per round of [`Tap::respond`] and [`Tap::dispatch`]: bounds
/// their stack arrays and spinlock hold times whatever the ring's depth.
const CHUNK: usize = 32;

/// A ring entry built by [`Tap::encode`].
enum Entry {
    /// READ, WRITE (data segments) or FLUSH (none).
    Data(RingRequest),
    /// DISCARD or WRITE_ZEROES.
    Range(RingRangeRequest),
}

impl Tap {
    /// Registers `file` for wake-ups, sends queued requests to the daemon and reports whether
    /// the daemon has something to do.
    ///
    /// For a V-XS daemon (tapdisk, which never writes `req_event`) each publish is reported to
    /// one poll, as V-XS does: right for select and poll. A daemon that keeps `req_event` the
    /// Xen ring way (`req_cons + 1` once it has taken requests up to `req_cons`) gets a level:
    /// readable while a published request lies past its mark. That is what epoll needs, which
    /// calls `poll` more than once per event (at `EPOLL_CTL_ADD`/`MOD`, in a nested epoll's
    /// readiness check, and again when it reports).
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &self.poll);
        self.dispatch();
        let mut guard = self.io.lock();
        let io = &mut *guard;
        // V-OXT: readable while the kernel has a message in the ring (only after sysfs `pause`,
        // `resume` or `remove`: a V-XS daemon never sees one). The kernel's own record, not
        // the shared byte: what a daemon writes there changes nothing.
        let message = io.ring.is_some() && Self::ring_message(io) != 0;
        let level = io.ring.as_mut().and_then(|ring| {
            let mark = ring.shm.request_event();
            ring.marks_taken |= mark != 1;
            // Requests up to `mark - 1` (excluded) are taken: anything published past them is
            // news. A hostile mark only makes this daemon's own poll readable.
            ring.marks_taken
                .then(|| ring.req_prod_published != mark.wrapping_sub(1))
        });
        let ready = level.unwrap_or(io.requests_published) || io.disk_closed || message;
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
    /// In chunks of [`CHUNK`] responses (a deep ring has up to 1024), each in three steps, so
    /// that the spinlock `queue_rq` needs is held only briefly: judge the responses and take
    /// their requests, keeping their ids reserved; copy read data out of the shared pages
    /// without the lock (holding `ctl` keeps the mapping, and so the pages, alive); then free
    /// the ids and end the requests. `rsp_prod` is read once: responses written after it wait
    /// for the next call.
    pub(crate) fn respond(&self) -> Result {
        let ctl = self.ctl.lock();
        Self::check_owner(&ctl)?;
        let mut left = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let Some(ring) = io.ring.as_mut() else {
                return Err(EACCES);
            };
            let prod = ring.shm.responses_produced();
            let Some(n) = responses_to_consume(ring.rsp_cons, prod, io.layout.slots) else {
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
            io.stats.responds += u64::from(n > 0);
            n
        };
        // At most `slots / CHUNK` rounds (`responses_to_consume` bounds `left`).
        while left > 0 {
            let n = left.min(CHUNK as u32);
            self.respond_chunk(&ctl, n)?;
            left -= n;
        }
        Ok(())
    }

    /// Consumes the next `n` (at most [`CHUNK`]) responses for [`Tap::respond`].
    fn respond_chunk(&self, ctl: &Ctl, n: u32) -> Result {
        let mut done: [Option<(usize, Pending<Request>, Status)>; CHUNK] = [const { None }; CHUNK];
        let shm = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let layout = io.layout;
            let Some(ring) = io.ring.as_mut() else {
                return Err(EACCES);
            };
            let mut ndone = 0;
            for i in 0..n {
                let rsp = ring
                    .shm
                    .read_response(layout, ring.rsp_cons.wrapping_add(i));
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
                    if let Some(slot) = done.get_mut(ndone) {
                        *slot = Some((id, pending, status));
                        ndone += 1;
                    }
                }
            }
            ring.rsp_cons = ring.rsp_cons.wrapping_add(n);
            ring.shm.clone()
        };

        for (id, pending, status) in done.iter_mut().flatten() {
            if *status == Status::Ok && pending.operation == OP_READ {
                let layout = pending.layout;
                let copied = if layout.packed() {
                    Self::copy_packed(&shm, layout, *id, &pending.rq, false)
                } else {
                    pending.rq.segments().enumerate().try_for_each(|(seg, s)| {
                        shm.copy_from_data(layout, *id, seg, s.offset, &s.page, s.offset, s.len)
                    })
                };
                if copied.is_err() {
                    *status = Status::IoError;
                }
            }
        }

        let (restart, drained) = {
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
            (restart, Self::check_drained(io))
        };
        if drained {
            // A pause waited for these: `PAUSE` is in the ring now.
            self.poll.notify_all();
        }
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

    /// Queues `rq` for the daemon (see [`super::TapQueue`]); hands it back if the ring is full.
    ///
    /// The request is only recorded here; the daemon's next `poll` sends it ([`Tap::dispatch`]),
    /// as in V-XS. So write data is copied in the daemon's context, not the submitter's: under
    /// load the submitter queues more before the daemon runs, and the daemon takes bigger
    /// batches (measured in `Documentation/benchmarks.rst`).
    pub(crate) fn queue(&self, rq: Request, is_last: bool) -> Result<(), Request> {
        // Flush, discard and write-zeroes only come if the disk advertises them, which it does
        // only as its daemon negotiated; `dispatch` checks again against the ring's daemon.
        let operation = match rq.op() {
            Op::Read => OP_READ,
            Op::Write => OP_WRITE,
            Op::Flush => OP_FLUSH,
            Op::Discard => OP_DISCARD,
            Op::WriteZeroes => OP_WRITE_ZEROES,
            Op::Other(_) => {
                rq.end(Status::NotSupported);
                return Ok(());
            }
        };
        let mut pending = Pending::new(rq, operation);
        pending.submitter = task::current_mm_id();
        let mut guard = self.io.lock();
        let io = &mut *guard;
        let killed = Self::owner_killed(io);
        let serving = io.disk_live
            && io.poisoned.is_none()
            && !killed
            && (io.ring_ready || !io.recovery.is_open());
        let ring = match io.ring.as_mut() {
            Some(ring) if serving => ring,
            _ => {
                // No daemon to send it to now. Held if a new one may come (not when it is the
                // dying daemon's own I/O, which would keep it from exiting); else failed at
                // once, never waiting: a killed daemon, a poisoned session, a disk going away.
                let own = killed
                    && io
                        .ring
                        .as_ref()
                        .is_some_and(|r| r.owner_mm == pending.submitter);
                let mut failed = Doomed::new();
                let pending = if io.disk_live && !own && io.poisoned.is_none() {
                    io.recovery.hold(pending).err()
                } else {
                    Some(pending)
                };
                if let Some(pending) = pending {
                    failed.push(pending.rq);
                    if !io.recovery.is_open() {
                        // A window that expired fails what it still holds with it.
                        io.recovery.end(&mut failed);
                    }
                }
                io.stats.failed += failed.len() as u64;
                drop(guard);
                failed.end_all();
                return Ok(());
            }
        };
        let Some(id) = ring.slots.free_id() else {
            io.queue_busy = true;
            io.stats.busy += 1;
            return Err(pending.rq);
        };
        ring.slots.queue(id, pending);
        // `FEAT_LOW_LATENCY`: published now, for a daemon that watches the ring; the queue is
        // a blocking one (process context), so the `dispatch` mutex may be taken.
        let eager = is_last && io.ops_allowed & FEAT_LOW_LATENCY != 0;
        let wake = is_last && Self::notify(io);
        drop(guard);
        if eager {
            self.dispatch();
        }
        if wake {
            self.poll.notify_all();
        }
        Ok(())
    }

    /// Whether the daemon must be woken for queued requests: only the first time since its
    /// last poll, so a busy daemon costs no wake-ups.
    fn notify(io: &mut Io) -> bool {
        // Nothing is sent while paused: the end of the pause wakes the daemon.
        let queued = io.pause.sends() && io.ring.as_ref().is_some_and(|r| r.slots.has_queued());
        let wake = queued && !core::mem::replace(&mut io.daemon_notified, true);
        io.stats.wakeups += u64::from(wake);
        wake
    }

    /// blk-mq `commit_rqs`: wakes the daemon for requests queued without `is_last`.
    pub(crate) fn commit(&self) {
        let (eager, wake) = {
            let mut io = self.io.lock();
            (
                io.ops_allowed & FEAT_LOW_LATENCY != 0,
                Self::notify(&mut io),
            )
        };
        if eager {
            self.dispatch();
        }
        if wake {
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
    /// record them as sent and publish `req_prod`, else fail them. In chunks of [`CHUNK`]
    /// requests, each published as it is ready.
    fn dispatch(&self) {
        let _dispatching = self.dispatch.lock();
        // Bounded: a deep ring has at most `DEEP_RING_SLOTS_MAX` ids; what is queued meanwhile
        // beyond them goes at the next poll.
        let mut counted = false;
        for _ in 0..=DEEP_RING_SLOTS_MAX / CHUNK {
            if !self.dispatch_chunk(&mut counted) {
                break;
            }
        }
    }

    /// Sends up to [`CHUNK`] queued requests, lowest ids first, for [`Tap::dispatch`] (whose
    /// mutex the caller holds). Returns whether it took a full chunk (more may be queued).
    /// `counted`: whether this dispatch was counted already (`Stats::dispatches` counts polls
    /// that sent requests, not chunks).
    fn dispatch_chunk(&self, counted: &mut bool) -> bool {
        let mut taken: [Option<(usize, Pending<Request>, bool)>; CHUNK] = [const { None }; CHUNK];
        let (shm, base, allowed, layout) = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            if !io.pause.sends() {
                // Paused (V-OXT): queued requests wait for the resume.
                return false;
            }
            let Some(ring) = io.ring.as_mut() else {
                return false;
            };
            // Cleared before taking the requests: one queued after this wakes the daemon again.
            io.daemon_notified = false;
            for slot in taken.iter_mut() {
                let Some((id, pending)) = ring.slots.take_first_queued() else {
                    break;
                };
                *slot = Some((id, pending, false));
            }
            if taken[0].is_none() {
                return false;
            }
            (
                ring.shm.clone(),
                ring.req_prod_pvt,
                io.ops_allowed,
                io.layout,
            )
        };
        let full = taken.iter().all(Option::is_some);

        let mut n: u32 = 0;
        for (id, pending, ok) in taken.iter_mut().flatten() {
            pending.layout = layout;
            let index = base.wrapping_add(n);
            let written =
                match Self::encode(&shm, &pending.rq, *id, pending.operation, allowed, layout) {
                    Ok(Entry::Data(req)) => shm.write_request(layout, index, &req),
                    Ok(Entry::Range(req)) => shm.write_range_request(layout, index, &req),
                    Err(e) => Err(e),
                };
            if written.is_err() {
                continue;
            }
            n += 1;
            *ok = true;
        }

        let mut failed: [Option<(Request, bool)>; CHUNK] = [const { None }; CHUNK];
        let drained = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let same_ring = io
                .ring
                .as_ref()
                .is_some_and(|ring| Arc::ptr_eq(&ring.shm, &shm));
            let live = io.disk_live && io.poisoned.is_none();
            for (slot, entry) in failed.iter_mut().zip(taken.iter_mut()) {
                let Some((id, pending, encoded)) = entry.take() else {
                    continue;
                };
                if let Some(ring) = io.ring.as_mut().filter(|_| same_ring) {
                    if live && encoded {
                        let s = &mut io.stats;
                        s.sent += 1;
                        match pending.operation {
                            OP_FLUSH => s.flushes += 1,
                            OP_DISCARD => s.discards += 1,
                            OP_WRITE_ZEROES => s.write_zeroes += 1,
                            _ => s.fua_writes += u64::from(pending.rq.fua()),
                        }
                        ring.slots.insert(id, pending);
                        continue;
                    }
                    ring.slots.end_complete(id);
                } else if encoded && !same_ring {
                    // The ring went meanwhile (with the reservation): held if recovering.
                    let Err(pending) = io.recovery.hold(pending) else {
                        continue;
                    };
                    io.stats.failed += 1;
                    *slot = Some((pending.rq, false));
                    continue;
                }
                io.stats.failed += 1;
                *slot = Some((pending.rq, !encoded));
            }
            if same_ring && live {
                if n > 0 && !*counted {
                    io.stats.dispatches += 1;
                    *counted = true;
                }
                if let Some(ring) = io.ring.as_mut() {
                    debug_assert_eq!(ring.req_prod_pvt, base);
                    ring.req_prod_pvt = base.wrapping_add(n);
                    let held = ring.slots.live() - ring.slots.queued_count();
                    io.stats.ring_peak = io.stats.ring_peak.max(held);
                }
                // The caller is the poller: `poll` reports these itself, no wake-up needed.
                Self::publish(io);
            }
            // A pause may have waited for requests failed here.
            Self::check_drained(io)
        };
        if drained {
            self.poll.notify_all();
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
        full
    }

    /// Copies the data of the `FEAT_LARGE` request `rq` between its pages and its contiguous
    /// data in slot `id` (`layout.segments` pages from the slot's first): into the ring if
    /// `to_ring`, else out of it. A segment lies within one page of the request, but may
    /// straddle two data pages (at most two steps each); `SharedRing` refuses anything past
    /// the slot.
    fn copy_packed(
        shm: &SharedRing,
        layout: Layout,
        id: usize,
        rq: &Request,
        to_ring: bool,
    ) -> Result {
        let mut pos = 0;
        for s in rq.segments() {
            let mut done = 0;
            while done < s.len {
                let (page, offset) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
                // Non-zero: `offset < PAGE_SIZE` and `done < s.len`.
                let len = (s.len - done).min(PAGE_SIZE - offset);
                if to_ring {
                    shm.copy_to_data(layout, id, page, offset, &s.page, s.offset + done, len)?;
                } else {
                    shm.copy_from_data(layout, id, page, offset, &s.page, s.offset + done, len)?;
                }
                done += len;
                pos += len;
            }
        }
        Ok(())
    }

    /// Builds the ring entry for `rq` in slot `id`, copying write data into its pages.
    ///
    /// `allowed` are the `FEAT_*` the ring's daemon agreed on: any other operation, or flag,
    /// is refused, never sent (a V-XS daemon sees only READ and WRITE, flags 0). `layout` is
    /// the ring's: with `FEAT_LARGE` (more than `SEGMENT_MAX` data pages per request), READ
    /// and WRITE go as range requests whose data is contiguous in the slot's pages.
    fn encode(
        shm: &SharedRing,
        rq: &Request,
        id: usize,
        operation: u8,
        allowed: u64,
        layout: Layout,
    ) -> Result<Entry> {
        let need = feature_of(operation);
        if need & allowed != need {
            return Err(EINVAL);
        }
        let mut flags = 0;
        if rq.fua() && operation != OP_FLUSH {
            if allowed & FEAT_FUA == 0 {
                return Err(EINVAL);
            }
            flags |= REQ_FUA;
        }
        match operation {
            OP_FLUSH => {
                return Ok(Entry::Data(RingRequest {
                    operation,
                    id: id as u64,
                    ..RingRequest::default()
                }))
            }
            OP_DISCARD | OP_WRITE_ZEROES => {
                let nr_sectors = u64::from(rq.bytes()) / 512;
                if nr_sectors == 0 || u64::from(rq.bytes()) % 512 != 0 {
                    return Err(EINVAL);
                }
                if operation == OP_WRITE_ZEROES && rq.no_unmap() {
                    flags |= REQ_NOUNMAP;
                }
                return Ok(Entry::Range(RingRangeRequest {
                    operation,
                    flags,
                    id: id as u64,
                    sector_number: rq.sector(),
                    nr_sectors,
                    ..RingRangeRequest::default()
                }));
            }
            _ => {}
        }
        if layout.packed() {
            if allowed & FEAT_LARGE == 0 {
                return Err(EINVAL);
            }
            let len = rq.bytes() as usize;
            if len == 0 || len % SECTOR_SIZE != 0 || len > layout.segments * PAGE_SIZE {
                return Err(EINVAL);
            }
            if operation == OP_WRITE {
                Self::copy_packed(shm, layout, id, rq, true)?;
            }
            return Ok(Entry::Range(RingRangeRequest {
                operation,
                flags,
                id: id as u64,
                sector_number: rq.sector(),
                nr_sectors: (len / SECTOR_SIZE) as u64,
                ..RingRangeRequest::default()
            }));
        }
        let mut req = RingRequest {
            operation,
            flags,
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
                shm.copy_to_data(layout, id, n, s.offset, &s.page, s.offset, s.len)?;
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
        Ok(Entry::Data(req))
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

    /// blk-mq asks about request `id`, with the driver for another timer interval.
    ///
    /// A held request fails once the recovery window is over (all of them then) or once it is
    /// older than the timeout. A request on the ring fails if the daemon's process is exiting
    /// (held instead, if recovery is on and it is not the daemon's own I/O), or if it is older
    /// than the timeout: if it was sent, that poisons the session (see [`FailReason`]).
    pub(crate) fn timed_out(this: ArcBorrow<'_, Self>, id: RequestId) -> TimeoutAction {
        let mut failed = Doomed::new();
        let mut window_over = false;
        let mut drained = false;
        let mut log = None;
        // Failures by timeout and abort so far, read with the counts updated (rate limit).
        let mut logged = 0;
        let action = {
            let mut guard = this.io.lock();
            let io = &mut *guard;
            let timeout = io.timeout_secs;
            let expired = |since: Instant<Monotonic>| {
                timeout > 0 && since.elapsed() >= Delta::from_secs(i64::from(timeout))
            };
            if let Some(since) = io.recovery.held_since(id) {
                // The dying daemon still maps the ring a while after it was seen exiting: it
                // may be waiting for a request it queued itself (through a worker, so not
                // known as its own) and cannot exit, nor free the ring for a successor, until
                // that wait ends. So what was held before it was seen exiting fails then.
                let exit_stuck = io.ring.as_ref().and_then(|r| r.killed_at).is_some_and(|t| {
                    t.elapsed() >= Delta::from_millis(EXIT_GRACE_MS) && !(t - since).is_negative()
                });
                if !io.recovery.is_open() {
                    // Held for a new daemon that did not come in time: fail them all.
                    io.recovery.end(&mut failed);
                    window_over = true;
                } else if expired(since) || exit_stuck {
                    if let Some(pending) = io.recovery.take(id) {
                        failed.push(pending.rq);
                        if exit_stuck {
                            io.stats.aborted += 1;
                        } else {
                            io.stats.timeouts += 1;
                        }
                    }
                } else {
                    return TimeoutAction::ResetTimer;
                }
                io.stats.failed += failed.len() as u64;
                TimeoutAction::Done
            } else {
                let killed = Self::owner_killed(io);
                let Some(ring) = io.ring.as_mut() else {
                    return TimeoutAction::ResetTimer;
                };
                // Not found: being sent or completed right now, by whoever holds it.
                let Some(slot) = ring.slots.find(|rq| rq.id() == id) else {
                    return TimeoutAction::ResetTimer;
                };
                let Some(p) = ring.slots.get(slot) else {
                    return TimeoutAction::ResetTimer;
                };
                let (since, own) = (p.since, p.submitter == ring.owner_mm);
                let sent = ring.slots.is_sent(slot);
                let pid = ring.owner.pid();
                if killed {
                    // The daemon will never answer. Recovery: the next daemon gets it, unless
                    // the dying daemon waits for it itself. The timer stays armed, so that the
                    // end of the window, or the timeout, still fails it.
                    if let Some(pending) = ring.slots.abandon(slot) {
                        let pending = if own {
                            Err(pending)
                        } else {
                            io.recovery.hold(pending)
                        };
                        match pending {
                            Ok(()) => return TimeoutAction::ResetTimer,
                            Err(pending) => failed.push(pending.rq),
                        }
                    }
                    io.stats.aborted += failed.len() as u64;
                    log = Some((FailReason::DaemonKilled, sent, pid));
                } else if expired(since) {
                    if sent {
                        // The daemon still holds it and may apply it late: nothing more may
                        // go to this daemon.
                        Self::poison(io, FailReason::TimedOut, &mut failed);
                    } else if let Some(pending) = ring.slots.abandon(slot) {
                        // Never sent: failing it alone reorders nothing.
                        failed.push(pending.rq);
                        io.stats.timeouts += 1;
                    }
                    log = Some((FailReason::TimedOut, sent, pid));
                } else {
                    return TimeoutAction::ResetTimer;
                }
                io.stats.failed += failed.len() as u64;
                logged = io.stats.timeouts + io.stats.aborted;
                // A pause may have waited for a request abandoned here.
                drained = Self::check_drained(io);
                TimeoutAction::Done
            }
        };
        if drained {
            this.poll.notify_all();
        }
        if log.is_some_and(|(why, sent, _)| sent && why == FailReason::TimedOut) {
            // The session is poisoned: a pause in progress ended with it.
            this.admin_wait.notify_all();
        }
        if window_over {
            pr_warn!(
                "{}: no new daemon within the recovery window: failing the held requests\n",
                DiskName::new(this.minor)
            );
            // The disk may go now, if nobody has it open.
            module_wq::enqueue(Arc::from(this));
        }
        if let Some((why, sent, pid)) = log {
            let poisoned = sent && why == FailReason::TimedOut;
            let to = if sent { "sent to" } else { "not yet taken by" };
            let then = if poisoned {
                "; nothing more is sent to this daemon until it unmaps the ring"
            } else {
                ""
            };
            if worth_logging(logged) || poisoned {
                pr_warn!(
                    "{}: failing {} request(s) {} daemon {}: {}{}\n",
                    DiskName::new(this.minor),
                    failed.len(),
                    to,
                    pid,
                    why.as_str(),
                    then
                );
            }
        }
        failed.end_all();
        action
    }

    /// Poisons the session of the current ring for `why`: moves every request of the ring
    /// (sent or queued) and every held one to `failed`; from now on every request fails at once
    /// and nothing more is sent to this ring, until it is unmapped. Ids of sent requests stay
    /// reserved until the daemon answers them (late answers complete nothing).
    fn poison(io: &mut Io, why: FailReason, failed: &mut Doomed) {
        let before = failed.len();
        Self::fail_ring(io, failed);
        io.recovery.end(failed);
        // A pause ends: nothing more goes to this daemon anyway, and a writer waiting for it
        // would wait in vain.
        Self::end_pause(io, EIO);
        if io.poisoned.is_none() {
            io.poisoned = Some(why);
        }
        io.queue_busy = false;
        let n = (failed.len() - before) as u64;
        match why {
            FailReason::TimedOut => io.stats.timeouts += n,
            _ => io.stats.aborted += n,
        }
    }

    /// Moves every request of the current ring (sent or queued) to `failed`.
    pub(super) fn fail_ring(io: &mut Io, failed: &mut Doomed) {
        if let Some(ring) = io.ring.as_mut() {
            for id in 0..ring.slots.capacity() {
                if let Some(pending) = ring.slots.abandon(id) {
                    failed.push(pending.rq);
                }
            }
        }
    }

    /// Fails every request now, and every later one until the ring is unmapped: the session
    /// is poisoned, as by a timeout. Without a ring, fails the requests held for a new daemon.
    /// `ENXIO` if there was nothing to abort.
    pub(crate) fn abort(&self) -> Result {
        let ctl = self.ctl.lock();
        let mut failed = Doomed::new();
        let mapped = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let mapped = io.ring.is_some();
            if mapped {
                Self::poison(io, FailReason::Aborted, &mut failed);
            } else {
                io.recovery.end(&mut failed);
            }
            io.stats.failed += failed.len() as u64;
            mapped
        };
        if !mapped && failed.len() == 0 {
            return Err(ENXIO);
        }
        pr_warn!(
            "{}: aborted by the administrator: {} request(s) failed{}\n",
            DiskName::new(self.minor),
            failed.len(),
            if mapped {
                ", later ones fail at once until the daemon unmaps the ring"
            } else {
                ""
            }
        );
        failed.end_all();
        // Requests handed back as busy are dispatched again and now fail at once.
        if let Some(disk) = &ctl.disk {
            disk.run_queue();
        }
        drop(ctl);
        // A pause ended with the session: its writer, and the daemon (the message is gone).
        self.admin_wait.notify_all();
        self.poll.notify_all();
        Ok(())
    }

    /// The disk is being opened.
    ///
    /// A disk whose recovery window expired without a new daemon and with nothing held is
    /// only waiting to be removed: the open fails and the removal is queued.
    pub(crate) fn disk_opened(this: ArcBorrow<'_, Self>) -> Result {
        let mut io = this.io.lock();
        if !io.disk_live || io.removing {
            return Err(ENXIO);
        }
        if io.ring.is_none() && io.recovery.expired() && io.recovery.held_count() == 0 {
            drop(io);
            module_wq::enqueue(Arc::from(this));
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
        // Wakes a daemon retrying `REMOVE_DEVICE`, and a writer of `remove`.
        this.poll.notify_all();
        this.admin_wait.notify_all();
        if orphaned {
            // Removal takes the open mutex, which our caller holds: do it from the workqueue.
            module_wq::enqueue(Arc::from(this));
        }
    }

    /// Whether the process of the ring's daemon is exiting. With recovery on, that opens the
    /// window: it will never answer, and the next daemon should get its requests.
    pub(super) fn owner_killed(io: &mut Io) -> bool {
        let Some(ring) = io.ring.as_mut() else {
            return false;
        };
        if ring.killed_at.is_none() && task::process_exiting(&ring.owner) {
            ring.killed_at = Some(Instant::now());
        }
        let killed = ring.killed_at.is_some();
        if killed && io.disk_live && io.poisoned.is_none() {
            io.recovery.open();
        }
        killed
    }

    /// Queues the held requests on the new ring, oldest first, to be sent at its daemon's next
    /// poll; closes the recovery window. Returns how many.
    pub(super) fn reissue_held(io: &mut Io) -> u32 {
        let Some(ring) = io.ring.as_mut() else {
            return 0;
        };
        io.recovery.close();
        let mut n = 0;
        while let Some(id) = ring.slots.free_id() {
            // The ring is new and has a slot per tag.
            let Some(pending) = io.recovery.take_oldest() else {
                break;
            };
            ring.slots.queue(id, pending);
            n += 1;
        }
        io.stats.reissued += u64::from(n);
        if n > 0 {
            Self::notify(io);
        }
        n
    }
}
