// SPDX-License-Identifier: GPL-2.0

//! A tap: one ring (shared with its daemon) and, once the daemon asks for it, one disk.
//!
//! See `Documentation/design.rst` for the object lifetimes and the lock order; in short:
//!
//! 1. the mmap lock (held by the mm core around `mmap` and VMA close),
//! 2. [`TAPS`](crate::registry::TAPS), the table of taps,
//! 3. [`Tap::ctl`], the control state (mapping, disk, name),
//! 4. the disk's `open_mutex` (block layer: `del_gendisk`, and around our open/release),
//! 5. [`Tap::io`], the data path state (ring, pending requests), a spinlock.
//!
//! Nothing copies from or to userspace while holding `ctl` (a fault takes the mmap lock).

use core::fmt::Write;

use kernel::{
    bindings,
    fs::File,
    mm::virt::VmaNew,
    new_mutex, new_poll_condvar, new_spinlock,
    prelude::*,
    sync::{
        aref::ARef,
        poll::{
            PollCondVar,
            PollTable, //
        },
        Arc,
        ArcBorrow,
        Mutex,
        SpinLock, //
    },
    task::Task,
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
    workqueue::{
        impl_has_work,
        new_work,
        Work,
        WorkItem, //
    },
};

use crate::{
    device::TapQueue,
    kernel_ext::{
        blk::{
            DiskParams,
            GenDisk,
            Op,
            Request,
            RequestId,
            Status,
            TimeoutAction, //
        },
        class::SysfsWriter,
        shm::{
            MappingId,
            MappingOwner,
            SharedRing, //
        },
        task, workqueue as module_wq,
    },
    ring::{
        checked_name,
        judge_response,
        responses_to_consume,
        segment_sectors,
        DeviceConfig,
        DiskName,
        Pending,
        Slots,
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

/// The ring of a mapped tap: the shared memory and the kernel's private indices.
struct Ring {
    /// Shared so that `respond` and `dispatch` can copy data without holding the spinlock.
    shm: Arc<SharedRing>,
    /// The task that mapped the ring: once it is killed, nothing will answer.
    owner: ARef<Task>,
    /// When each id's request was queued (for the request timeout).
    started: [Instant<Monotonic>; RING_SIZE],
    slots: Slots<Request>,
    /// Next request index to fill.
    req_prod_pvt: u32,
    /// `req_prod` as last published to the daemon.
    req_prod_published: u32,
    /// Next response index to consume.
    rsp_cons: u32,
}

/// Statistics, shown by the `debug` attribute.
#[derive(Default, Clone, Copy)]
pub(crate) struct Stats {
    /// Requests sent to the daemon.
    pub(crate) sent: u64,
    /// Requests completed with an error (by the daemon or by teardown).
    pub(crate) failed: u64,
    /// Malformed responses ignored.
    pub(crate) bad_responses: u64,
    /// Times the ring was full.
    pub(crate) busy: u64,
    /// Requests failed because they were older than the request timeout.
    pub(crate) timeouts: u64,
    /// Requests failed because the daemon was killed or the tap aborted.
    pub(crate) aborted: u64,
    /// Responses to requests failed already (abandoned ids freed).
    pub(crate) late: u64,
    /// Wake-ups of the daemon for queued requests.
    pub(crate) wakeups: u64,
    /// Polls that sent requests (batches sent).
    pub(crate) dispatches: u64,
    /// `RESPOND` calls that consumed responses (batches answered).
    pub(crate) responds: u64,
}

/// Data path state, taken in `queue_rq` (atomic context).
struct Io {
    ring: Option<Ring>,
    /// The disk exists and accepts opens and I/O.
    disk_live: bool,
    /// Openers of the disk.
    openers: u32,
    /// Requests were published since the last poll.
    requests_published: bool,
    /// The daemon was woken for queued requests and has not polled since.
    daemon_notified: bool,
    /// The disk's last opener closed it since the last poll.
    disk_closed: bool,
    /// A request was handed back because the ring was full.
    queue_busy: bool,
    /// Seconds a request may wait for the daemon before it fails (`0`: forever).
    timeout_secs: u32,
    /// The administrator aborted the tap: every request fails until the ring is unmapped.
    aborted: bool,
    stats: Stats,
}

/// Control state, taken in ioctls, open/release, mmap, VMA close and sysfs.
struct Ctl {
    /// Pid of the task that opened the ring, while it is open.
    task: Option<i32>,
    /// The ring's mapping, while it exists.
    mapping: Option<MappingId>,
    disk: Option<GenDisk<TapQueue>>,
    config: Option<DeviceConfig>,
    /// Name set through sysfs or `CREATE_DEVICE_COMPAT` (bytes, as given).
    name: KVec<u8>,
    /// Page pool name (pools are accepted for compatibility; all share the page allocator).
    pool: KVec<u8>,
    /// `FREE_TAP` succeeded: the ring can no longer be opened.
    freed: bool,
    /// A `CREATE_DEVICE` is making the disk (without `ctl` held).
    creating: bool,
}

/// One tap.
#[pin_data]
pub(crate) struct Tap {
    minor: u32,
    bdev_major: u32,
    ring_major: u32,
    #[pin]
    ctl: Mutex<Ctl>,
    #[pin]
    io: SpinLock<Io>,
    /// Serialises [`Tap::dispatch`]: the holder owns `req_prod_pvt` and the ring entries past
    /// it.
    #[pin]
    dispatch: Mutex<()>,
    #[pin]
    poll: PollCondVar,
    #[pin]
    remove_work: Work<Tap>,
}

impl_has_work! {
    impl HasWork<Self> for Tap { self.remove_work }
}

/// How often blk-mq asks about a request still with the daemon ([`Tap::timed_out`]): the
/// bound on noticing a killed daemon, and the granularity of the request timeout.
const TIMER_INTERVAL_MS: u32 = 1000;

/// Rate limit for per-tap warnings: log the 1st, 2nd, 4th, 8th, ... occurrence.
fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

impl Tap {
    /// Creates tap `minor`.
    pub(crate) fn new(
        minor: u32,
        ring_major: u32,
        bdev_major: u32,
        pool: KVec<u8>,
        timeout_secs: u32,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                minor,
                bdev_major,
                ring_major,
                ctl <- new_mutex!(Ctl {
                    task: None,
                    mapping: None,
                    disk: None,
                    config: None,
                    name: KVec::new(),
                    pool,
                    freed: false,
                    creating: false,
                }),
                io <- new_spinlock!(Io {
                    ring: None,
                    disk_live: false,
                    openers: 0,
                    requests_published: false,
                    daemon_notified: false,
                    disk_closed: false,
                    queue_busy: false,
                    timeout_secs,
                    aborted: false,
                    stats: Stats::default(),
                }),
                dispatch <- new_mutex!(()),
                poll <- new_poll_condvar!(),
                remove_work <- new_work!(),
            }),
            GFP_KERNEL,
        )
    }

    /// The tap's minor number.
    pub(crate) fn minor(&self) -> u32 {
        self.minor
    }

    // ---------------------------------------------------------------------------------------
    // Ring file.

    /// The ring device is being opened by the calling task.
    pub(crate) fn open_ring(&self) -> Result {
        let mut ctl = self.ctl.lock();
        if ctl.freed {
            return Err(ENXIO);
        }
        if ctl.task.is_some() {
            return Err(EBUSY);
        }
        ctl.task = Some(task::current_pid());
        Ok(())
    }

    /// The last reference to the ring file is gone (close and unmap both happened).
    pub(crate) fn release_ring(&self) {
        let mut ctl = self.ctl.lock();
        ctl.task = None;
        // Without a daemon the disk only fails I/O: remove it now if nobody has it open,
        // otherwise when its last opener closes it (see `disk_released`).
        if self.try_remove_disk(&mut ctl).is_err() {
            pr_info!(
                "{}: daemon gone while the disk is open; failing I/O until it is closed\n",
                DiskName::new(self.minor)
            );
        }
    }

    /// Maps the ring into `vma` (the whole 353-page area, once).
    pub(crate) fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        let mut ctl = this.ctl.lock();
        if ctl.mapping.is_some() {
            return Err(EBUSY);
        }
        let mut shm = SharedRing::new()?;
        let id = shm.map(vma, Arc::from(this))?;
        let shm = Arc::new(shm, GFP_KERNEL)?;
        ctl.mapping = Some(id);
        let mut io = this.io.lock();
        io.ring = Some(Ring {
            shm,
            owner: task::current_task(),
            started: [Instant::now(); RING_SIZE],
            slots: Slots::new(),
            req_prod_pvt: 0,
            req_prod_published: 0,
            rsp_cons: 0,
        });
        io.queue_busy = false;
        // An abort lasts as long as the ring it was made against.
        io.aborted = false;
        Ok(())
    }

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

    /// Checks that the calling task's address space owns the ring mapping (else `EACCES`).
    fn check_owner(ctl: &Ctl) -> Result {
        match (ctl.mapping, task::current_mm_id()) {
            (Some(m), Some(mm)) if m.mm() == mm => Ok(()),
            _ => Err(EACCES),
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

    /// The VMA `id` is going away: if it is the ring's, fail every pending request.
    fn unmap(&self, id: MappingId) {
        let mut ctl = self.ctl.lock();
        if ctl.mapping != Some(id) {
            // A transient copy made by a refused `mremap`.
            return;
        }
        ctl.mapping = None;
        let (ring, failed) = {
            let mut io = self.io.lock();
            let mut ring = io.ring.take();
            let mut failed: [Option<Request>; RING_SIZE] = [const { None }; RING_SIZE];
            if let Some(r) = ring.as_mut() {
                for (id, slot) in failed.iter_mut().enumerate() {
                    *slot = r.slots.take(id).map(|p| p.rq);
                }
            }
            let n = failed.iter().filter(|r| r.is_some()).count() as u64;
            io.stats.failed += n;
            io.queue_busy = false;
            (ring, failed)
        };
        for rq in failed.into_iter().flatten() {
            rq.end(Status::IoError);
        }
        // Requests handed back as busy are dispatched again and now fail at once.
        if let Some(disk) = &ctl.disk {
            disk.run_queue();
        }
        drop(ctl);
        drop(ring);
    }

    // ---------------------------------------------------------------------------------------
    // Ring ioctls.

    /// `CREATE_DEVICE` / `CREATE_DEVICE_COMPAT`: creates the disk, all or nothing.
    ///
    /// The disk and the name are allocated without `ctl` held: `RESPOND` takes `ctl`, so an
    /// allocation under it that waits for reclaim, which waits for this disk's writeback, would
    /// wait for itself. `ctl.creating` keeps a second caller out meanwhile (`EBUSY`), and the
    /// result is kept only if the same mapping is still there when `ctl` is taken again.
    pub(crate) fn create_device(
        this: ArcBorrow<'_, Self>,
        config: Result<DeviceConfig>,
        name: Option<&[u8]>,
    ) -> Result {
        let mapping = {
            let mut ctl = this.ctl.lock();
            Self::check_owner(&ctl)?;
            if ctl.disk.is_some() {
                return Err(EEXIST);
            }
            if ctl.creating {
                return Err(EBUSY);
            }
            ctl.creating = true;
            ctl.mapping
        };
        let created = Self::new_disk(this, config, name);
        let mut ctl = this.ctl.lock();
        ctl.creating = false;
        let (disk, config, name) = created?;
        if ctl.mapping != mapping || ctl.freed {
            // The daemon unmapped the ring meanwhile: nothing may remain of the disk.
            drop(ctl);
            this.io.lock().disk_live = false;
            drop(disk);
            return Err(ENXIO);
        }
        ctl.disk = Some(disk);
        ctl.config = Some(config);
        if let Some(name) = name {
            ctl.name = name;
        }
        pr_info!(
            "{}: sector-size: {}/{} capacity: {}{}\n",
            DiskName::new(this.minor),
            config.logical_block_size,
            config.physical_block_size,
            config.capacity,
            if config.read_only { " read-only" } else { "" }
        );
        Ok(())
    }

    /// The allocating half of [`Tap::create_device`], run without `ctl`: checks the
    /// configuration and the name, copies the name, creates and adds the disk.
    fn new_disk(
        this: ArcBorrow<'_, Self>,
        config: Result<DeviceConfig>,
        name: Option<&[u8]>,
    ) -> Result<(GenDisk<TapQueue>, DeviceConfig, Option<KVec<u8>>)> {
        let config = config?;
        let name = match name.map(checked_name).transpose()? {
            Some(n) if !n.is_empty() => {
                let mut copy = KVec::new();
                copy.extend_from_slice(n, GFP_KERNEL)?;
                Some(copy)
            }
            _ => None,
        };
        let params = DiskParams {
            major: this.bdev_major,
            first_minor: this.minor,
            capacity_sectors: config.capacity,
            logical_block_size: config.logical_block_size,
            physical_block_size: config.physical_block_size,
            max_segments: SEGMENT_MAX as u16,
            max_segment_size: kernel::page::PAGE_SIZE as u32,
            seg_boundary_mask: kernel::page::PAGE_SIZE as u64 - 1,
            dma_alignment: 511,
            max_hw_sectors: (SEGMENT_MAX * kernel::page::PAGE_SIZE / 512) as u32,
            queue_depth: RING_SIZE as u32,
            read_only: config.read_only,
            timer_interval_ms: TIMER_INTERVAL_MS,
        };
        // Live before the disk is added: udev may read it at once.
        this.io.lock().disk_live = true;
        match GenDisk::new(
            fmt!("{}", DiskName::new(this.minor)),
            &params,
            Arc::from(this),
        ) {
            Ok(disk) => Ok((disk, config, name)),
            Err(e) => {
                this.io.lock().disk_live = false;
                Err(e)
            }
        }
    }

    /// `REMOVE_DEVICE`: removes the disk unless it is open (`EBUSY`).
    pub(crate) fn remove_device(&self) -> Result {
        let mut ctl = self.ctl.lock();
        Self::check_owner(&ctl)?;
        self.try_remove_disk(&mut ctl)
    }

    /// Removes the disk if nobody has it open and no request is with the daemon.
    fn try_remove_disk(&self, ctl: &mut Ctl) -> Result {
        let Some(disk) = ctl.disk.as_ref() else {
            return Ok(());
        };
        {
            let mut io = self.io.lock();
            // Abandoned ids hold no block request: they do not keep the disk.
            let pending = io.ring.as_ref().map_or(0, |r| r.slots.live());
            if io.openers > 0 || pending > 0 {
                return Err(EBUSY);
            }
            // From here opens fail and new requests fail at once, so `del_gendisk` (which
            // waits for requests in flight) cannot wait for the daemon.
            io.disk_live = false;
        }
        disk.run_queue();
        ctl.disk = None;
        ctl.config = None;
        pr_info!("{}: removed\n", DiskName::new(self.minor));
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Block device.

    /// Queues `rq` for the daemon (see [`crate::device`]); hands it back if the ring is full.
    ///
    /// The request is only recorded here; the daemon's next `poll` sends it ([`Tap::dispatch`]),
    /// as in V-XS. So write data is copied in the daemon's context, not the submitter's: under
    /// load the submitter queues more before the daemon runs, and the daemon takes bigger
    /// batches (measured in `Documentation/benchmarks.rst`).
    pub(crate) fn queue(&self, rq: Request, is_last: bool) -> Result<(), Request> {
        let mut guard = self.io.lock();
        let io = &mut *guard;
        let ring = match (io.disk_live && !io.aborted, io.ring.as_mut()) {
            (true, Some(ring)) if !task::killed(&ring.owner) => ring,
            _ => {
                // No daemon (or a killed one, an aborted tap, a disk going away): fail at once,
                // never wait.
                io.stats.failed += 1;
                drop(guard);
                rq.end(Status::IoError);
                return Ok(());
            }
        };
        let operation = match rq.op() {
            Op::Read => OP_READ,
            Op::Write => OP_WRITE,
            Op::Other(_) => {
                drop(guard);
                rq.end(Status::NotSupported);
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
                }
                // Else the ring went, and the reservation with it.
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
    pub(crate) fn timed_out(&self, id: RequestId) -> TimeoutAction {
        let (failed, why, pid) = {
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let timeout = io.timeout_secs;
            let aborted = io.aborted;
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
                DiskName::new(self.minor),
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
            let Some(ring) = io.ring.as_mut() else {
                return Err(ENXIO);
            };
            let mut failed: [Option<Request>; RING_SIZE] = [const { None }; RING_SIZE];
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

    /// The request timeout in seconds (`0`: none).
    pub(crate) fn timeout_secs(&self) -> u32 {
        self.io.lock().timeout_secs
    }

    /// Sets the request timeout; it applies to requests already waiting too.
    pub(crate) fn set_timeout_secs(&self, secs: u32) {
        self.io.lock().timeout_secs = secs;
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

    // ---------------------------------------------------------------------------------------
    // Control.

    /// `FREE_TAP` check: the tap may only go once its ring is closed and unmapped and its disk
    /// gone (removed here if nobody has it open). Marks the tap freed on success.
    pub(crate) fn prepare_free(&self) -> Result {
        let mut ctl = self.ctl.lock();
        if ctl.task.is_some() || ctl.mapping.is_some() {
            return Err(EBUSY);
        }
        self.try_remove_disk(&mut ctl)?;
        ctl.freed = true;
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // sysfs.

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
            "wakeups:{} dispatches:{} responds:{}",
            s.wakeups, s.dispatches, s.responds
        )?;
        writeln!(
            out,
            "timeout:{} timeouts:{} aborted:{} late responses:{} abort:{}",
            io.timeout_secs, s.timeouts, s.aborted, s.late, io.aborted
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
                    let op = r.slots.operation(id).unwrap_or(0);
                    writeln!(out, "{}: op:{}", id, if op == OP_WRITE { 'W' } else { 'R' })?;
                }
                writeln!(out, "end pending")
            }
        }
    }
}

impl MappingOwner for Tap {
    fn unmapped(this: ArcBorrow<'_, Self>, id: MappingId) {
        this.unmap(id);
    }
}

impl WorkItem for Tap {
    type Pointer = Arc<Tap>;

    /// Removes a disk whose daemon is gone, once its last opener has closed it.
    fn run(this: Arc<Tap>) {
        let mut ctl = this.ctl.lock();
        if ctl.mapping.is_some() || ctl.task.is_some() {
            // A new daemon serves the disk now, or the ring file is still open (its release
            // removes the disk, as documented in `Documentation/design.rst`).
            return;
        }
        let _ = this.try_remove_disk(&mut ctl);
    }
}
