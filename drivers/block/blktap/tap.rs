// SPDX-License-Identifier: GPL-2.0

//! A tap: one ring (shared with its daemon) and, once the daemon asks for it, one disk.
//!
//! See `Documentation/design.rst` for the object lifetimes and the lock order; in short:
//!
//! 1. [`Tap::disk_change`], held across `add_disk` and `del_gendisk` (and so across the block
//!    layer's locks: the disk's `open_mutex`, sysfs, the tag set's; and across whatever they
//!    wait for, which may take an mmap lock),
//! 2. the mmap lock (held by the mm core around `mmap` and VMA close),
//! 3. [`TAPS`](crate::registry::TAPS), the table of taps,
//! 4. [`Tap::ctl`], the control state (mapping, disk, name),
//! 5. [`Tap::dispatch`], the sender of queued requests,
//! 6. [`Tap::io`], the data path state (ring, pending requests), a spinlock.
//!
//! Nothing copies from or to userspace while holding `ctl` (a fault takes the mmap lock), and
//! no disk is added or deleted while holding `ctl` or `TAPS`: a removal takes the disk out of
//! `ctl` and deletes it after releasing `ctl`, still holding `disk_change`, which whoever needs
//! the disk gone (`FREE_TAP`) takes and so waits for a removal in flight.

use kernel::{
    mm::virt::VmaNew,
    new_condvar, new_mutex, new_poll_condvar, new_spinlock,
    prelude::*,
    sync::{
        aref::ARef,
        poll::PollCondVar,
        Arc,
        ArcBorrow,
        CondVar,
        Mutex,
        MutexGuard,
        SpinLock,
        UniqueArc, //
    },
    task::Task,
    time::{
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
    kernel_ext::{
        blk::{
            DiskParams,
            GenDisk,
            Request, //
        },
        shm::{
            MappingId,
            MappingOwner,
            SharedRing, //
        },
        task::{
            self,
            ModuleRef, //
        },
        workqueue as module_wq,
    },
    ring::{
        checked_name,
        mapping_layout,
        Agreement,
        DeviceConfig,
        DiskName,
        Refusal,
        Slots,
        FEATURES_KNOWN, //
    },
    uapi::{
        Features,
        Layout,
        FEAT_DEEP,
        FEAT_DISCARD,
        FEAT_FLUSH,
        FEAT_FUA,
        FEAT_LARGE,
        FEAT_LOW_LATENCY,
        FEAT_WRITE_ZEROES, //
    },
};

/// The ring of a mapped tap: the shared memory and the kernel's private indices.
struct Ring {
    /// Shared so that `respond` and `dispatch` can copy data without holding the spinlock.
    shm: Arc<SharedRing>,
    /// The task that mapped the ring: once its process is exiting, nothing will answer.
    owner: ARef<Task>,
    /// The address space that maps the ring (see [`task::current_mm_id`]).
    owner_mm: Option<usize>,
    /// When the driver first saw the owner's process exiting.
    killed_at: Option<Instant<Monotonic>>,
    /// The daemon keeps `req_event` (the Xen ring's consumer mark): `poll` reports a level,
    /// not V-XS's edge. Set the first time `poll` reads a `req_event` other than its initial 1.
    marks_taken: bool,
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
    /// Requests failed because the daemon was killed, the tap aborted or the session poisoned.
    pub(crate) aborted: u64,
    /// Responses to requests failed already (abandoned ids freed).
    pub(crate) late: u64,
    /// Requests held while no daemon mapped the ring and sent again to the next one.
    pub(crate) reissued: u64,
    /// Wake-ups of the daemon for queued requests.
    pub(crate) wakeups: u64,
    /// Polls that sent requests (batches sent).
    pub(crate) dispatches: u64,
    /// Most requests the daemon held at once (sent and not yet answered).
    pub(crate) ring_peak: u32,
    /// Flush requests sent.
    pub(crate) flushes: u64,
    /// Writes sent with `REQ_FUA`.
    pub(crate) fua_writes: u64,
    /// Discard requests sent.
    pub(crate) discards: u64,
    /// Write-zeroes requests sent.
    pub(crate) write_zeroes: u64,
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
    /// The session (this mapping of the ring) is poisoned, and why: a sent request was ended
    /// without the daemon's answer (timeout, abort), so nothing more may be sent to this daemon,
    /// which could reorder it with that one. Every request fails until the ring is unmapped.
    poisoned: Option<FailReason>,
    /// Requests held for the next daemon (opt-in).
    recovery: Recovery,
    /// The daemon of the current ring has made or found the disk (`CREATE_DEVICE`): it has its
    /// image open and can take requests. Until then, held requests stay held.
    ring_ready: bool,
    /// `FEAT_*` whose operations may be sent to the current ring: those its daemon agreed on
    /// for the disk (minus any the administrator switched off since). `0`: V-XS.
    ops_allowed: u64,
    /// The current ring's layout as its daemon uses it: V-XS's, or the one it agreed on with
    /// `FEAT_LARGE` and `FEAT_DEEP` (set with `ops_allowed`).
    layout: Layout,
    /// Kernel-driven pause (V-OXT): what may be sent, the ring message, the waiting writer.
    pause: Pause,
    /// The ring file is open (mirrors `Ctl::task`, for the writer of `remove` to wait on).
    ring_open: bool,
    /// sysfs `remove` was written: the ring cannot be opened or mapped, nor the disk opened;
    /// the tap goes once its daemon is gone and its disk closed.
    removing: bool,
    stats: Stats,
}

impl Io {
    /// The current ring may be sent what `agreement` allows, in its data layout.
    fn allow(&mut self, agreement: &Agreement) {
        self.ops_allowed = agreement.features;
        self.layout = agreement.layout();
        if let Some(ring) = self.ring.as_mut() {
            ring.slots.set_limit(self.layout.slots);
        }
    }
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
    /// What the daemon of the current mapping negotiated (`IOCTL_NEGOTIATE`), if it did.
    session: Option<Agreement>,
    /// Mappings of the ring so far: the current one's number identifies its session (a new
    /// mapping at the same address is another session).
    sessions: u64,
    /// The session whose daemon made the disk.
    disk_session: u64,
    /// `FEAT_*` the administrator switched off for this tap (sysfs `discard`,
    /// `write_zeroes`): never offered, and taken off a live disk.
    switched_off: u64,
    /// A module reference that the removal work drops (see [`Tap::put_module_later`]).
    module: Option<ModuleRef>,
}

/// What [`Tap::undo_negotiation`] restores.
pub(crate) struct Undo {
    /// The session that negotiated.
    sessions: u64,
    /// Its agreement before.
    previous: Option<Agreement>,
}

/// Proof that the caller holds [`Tap::disk_change`].
type DiskChange<'a> = MutexGuard<'a, ()>;

/// One tap.
#[pin_data]
pub(crate) struct Tap {
    minor: u32,
    bdev_major: u32,
    ring_major: u32,
    /// Serialises adding and deleting the disk, which happen under it and never under `ctl`
    /// or `TAPS` (`add_disk` and `del_gendisk` wait for block layer locks whose holders may
    /// wait for an mmap lock, under which `mmap` takes `ctl`). Taken with no tap lock held.
    /// While a removal holds it, the disk is already out of `ctl`: whoever needs the disk
    /// gone takes it too, and so waits for that removal to finish.
    #[pin]
    disk_change: Mutex<()>,
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
    /// Writers of `pause`, `resume` and `remove` wait here for the daemon (with the guard of
    /// `io`, under which everything they wait for changes).
    #[pin]
    admin_wait: CondVar,
    #[pin]
    remove_work: Work<Tap>,
}

mod attrs;
mod datapath;
mod pause;
mod queue;
mod recovery;

pub(crate) use queue::TapQueue;

use pause::{
    Hold,
    Pause, //
};

use recovery::{
    Doomed,
    FailReason,
    Recovery, //
};

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
                disk_change <- new_mutex!(()),
                ctl <- new_mutex!(Ctl {
                    task: None,
                    mapping: None,
                    disk: None,
                    config: None,
                    name: KVec::new(),
                    pool,
                    freed: false,
                    creating: false,
                    session: None,
                    sessions: 0,
                    disk_session: 0,
                    switched_off: 0,
                    module: None,
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
                    poisoned: None,
                    recovery: Recovery::new(),
                    ring_ready: false,
                    ops_allowed: 0,
                    layout: Layout::VXS,
                    pause: Pause::new(),
                    ring_open: false,
                    removing: false,
                    stats: Stats::default(),
                }),
                dispatch <- new_mutex!(()),
                poll <- new_poll_condvar!(),
                admin_wait <- new_condvar!(),
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
        let mut io = self.io.lock();
        if ctl.freed || io.removing {
            return Err(ENXIO);
        }
        if ctl.task.is_some() {
            return Err(EBUSY);
        }
        ctl.task = Some(task::current_pid());
        io.ring_open = true;
        Ok(())
    }

    /// The last reference to the ring file is gone (close and unmap both happened).
    pub(crate) fn release_ring(&self) {
        self.release_ring_disk();
        // A writer of `remove` may be waiting for the ring to go.
        self.admin_wait.notify_all();
    }

    /// [`Tap::release_ring`]: removes the disk unless it is open or held for recovery.
    fn release_ring_disk(&self) {
        let change = self.disk_change.lock();
        let disk = {
            let mut ctl = self.ctl.lock();
            ctl.task = None;
            let left = {
                let mut io = self.io.lock();
                io.ring_open = false;
                io.recovery.left()
            };
            if let Some(secs) = left {
                pr_info!(
                    "{}: daemon gone; holding its requests for a new one for {} s\n",
                    DiskName::new(self.minor),
                    secs
                );
                return;
            }
            // Without a daemon the disk only fails I/O: remove it now if nobody has it open,
            // otherwise when its last opener closes it (see `disk_released`).
            match self.take_idle_disk(&change, &mut ctl) {
                Ok(disk) => disk,
                Err(_) => {
                    pr_info!(
                        "{}: daemon gone while the disk is open; failing I/O until it is closed\n",
                        DiskName::new(self.minor)
                    );
                    return;
                }
            }
        };
        self.delete_disk(&change, disk);
    }

    /// Maps the ring into `vma` (the whole area, once: 353 pages for V-XS, more for a daemon
    /// that will negotiate `FEAT_LARGE` or `FEAT_DEEP`).
    pub(crate) fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        // The mapping's size gives its layout: V-XS's 353 pages, or more entries and data
        // pages for a daemon that will negotiate `FEAT_LARGE` or `FEAT_DEEP`. The ring's pages
        // (about 1.4 MiB for V-XS, up to 128 MiB) and its id table are allocated before
        // `ctl`, which `RESPOND` needs: reclaim must never wait on this disk's I/O under it.
        let shm = match mapping_layout(vma.end() - vma.start()) {
            Some(layout) => Some((
                UniqueArc::new(SharedRing::new(layout)?, GFP_KERNEL)?,
                Slots::new(layout.slots)?,
            )),
            None => None,
        };
        let mut ctl = this.ctl.lock();
        if ctl.mapping.is_some() {
            return Err(EBUSY);
        }
        if this.io.lock().removing {
            return Err(ENXIO);
        }
        // A size that is neither V-XS's nor a large ring's (after `EBUSY`, as before).
        let Some((mut shm, slots)) = shm else {
            return Err(EINVAL);
        };
        // Everything that can fail comes before `map`, which installs the VMA callbacks (and
        // their tap reference) last: a failed mmap never calls `close`, and would leak it.
        let id = shm.map(vma, Arc::from(this))?;
        let shm: Arc<SharedRing> = shm.into();
        ctl.mapping = Some(id);
        // A new daemon has agreed on nothing yet: V-XS until it negotiates.
        ctl.session = None;
        ctl.sessions += 1;
        let mut io = this.io.lock();
        io.ring = Some(Ring {
            shm,
            owner: task::current_task(),
            owner_mm: task::current_mm_id(),
            killed_at: None,
            marks_taken: false,
            slots,
            req_prod_pvt: 0,
            req_prod_published: 0,
            rsp_cons: 0,
        });
        io.allow(&Agreement::default());
        io.queue_busy = false;
        // A poisoned session, and an abort, last as long as the ring they were made against.
        io.poisoned = None;
        io.ring_ready = false;
        // A new daemon has not been told of anything yet: the next queued request wakes it,
        // even if it waits (epoll, `IOCB_CMD_POLL`) before its first poll.
        io.daemon_notified = false;
        io.requests_published = false;
        // A new session is not paused (the last one's pause ended with it).
        io.pause.hold = Hold::Running;
        Ok(())
    }

    /// The ring's daemon made or found the disk: requests held for it are sent from now on.
    fn ring_ready(&self) {
        let reissued = {
            let mut io = self.io.lock();
            io.ring_ready = true;
            Self::reissue_held(&mut io)
        };
        if reissued > 0 {
            pr_info!(
                "{}: sending {} held request(s) to the new daemon\n",
                DiskName::new(self.minor),
                reissued
            );
            self.poll.notify_all();
        }
    }

    /// Checks that the caller may use the ring ioctls (else `EACCES`), as each of them does
    /// again under `ctl`: lets an ioctl answer `EACCES` before it checks its argument further.
    pub(crate) fn check_caller(&self) -> Result {
        Self::check_owner(&self.ctl.lock())
    }

    /// Checks that the calling task's address space owns the ring mapping (else `EACCES`).
    fn check_owner(ctl: &Ctl) -> Result {
        match (ctl.mapping, task::current_mm_id()) {
            (Some(m), Some(mm)) if m.mm() == mm => Ok(()),
            _ => Err(EACCES),
        }
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
            let mut guard = self.io.lock();
            let io = &mut *guard;
            let mut ring = io.ring.take();
            // With recovery on, the disk keeps its requests for the next daemon; not those of
            // a poisoned session, which this daemon may still hold.
            if ctl.disk.is_some() && io.poisoned.is_none() {
                io.recovery.open();
            }
            let mut failed = Doomed::new();
            // The session's pause ends with it; its requests go the recovery way below.
            Self::end_pause(io, ENXIO);
            io.pause.hold = Hold::Running;
            if let Some(r) = ring.as_mut() {
                for id in 0..r.slots.capacity() {
                    if let Some(pending) = r.slots.take(id) {
                        if let Err(pending) = io.recovery.hold(pending) {
                            failed.push(pending.rq);
                        }
                    }
                }
            }
            io.stats.failed += failed.len() as u64;
            io.queue_busy = false;
            (ring, failed)
        };
        failed.end_all();
        // Requests handed back as busy are dispatched again and now fail at once.
        if let Some(disk) = &ctl.disk {
            disk.run_queue();
        }
        drop(ctl);
        drop(ring);
        self.admin_wait.notify_all();
    }

    // ---------------------------------------------------------------------------------------
    // Ring ioctls.

    /// `CREATE_DEVICE` / `CREATE_DEVICE_COMPAT`: creates the disk, all or nothing.
    ///
    /// The disk and the name are allocated without `ctl` held: `RESPOND` takes `ctl`, so an
    /// allocation under it that waits for reclaim, which waits for this disk's writeback, would
    /// wait for itself. `disk_change` is held throughout: a second caller, or a removal, waits
    /// for this one (`ctl.creating` tells the `pool` attribute), and the result is kept only if
    /// the same mapping is still there when `ctl` is taken again.
    ///
    /// `claims`: the call carries its features (V-OXT's flags, in `config`'s agreement), which
    /// the disk gets (minus those switched off), or must have already; a session that
    /// negotiated must claim the same agreement, else `EINVAL`. The claim holds for this call
    /// only (it is not the session's agreement). Otherwise the disk gets what the session
    /// negotiated, if anything.
    pub(crate) fn create_device(
        this: ArcBorrow<'_, Self>,
        config: Result<DeviceConfig>,
        name: Option<&[u8]>,
        claims: bool,
    ) -> Result {
        let _change = this.disk_change.lock();
        let mapping = {
            let mut ctl = this.ctl.lock();
            Self::check_owner(&ctl)?;
            let claimed = match &config {
                Ok(c) if claims => Some(c.agreement.without(ctl.switched_off)),
                _ => None,
            };
            if let (Some(claimed), Some(negotiated)) = (claimed, ctl.session) {
                if claimed != negotiated {
                    pr_warn!(
                        "{}: CREATE_DEVICE refused: its flags ask for features {:#x}, the \
                         session negotiated {:#x} (and limits)\n",
                        DiskName::new(this.minor),
                        claimed.features,
                        negotiated.features
                    );
                    return Err(EINVAL);
                }
            }
            let session = claimed.or(ctl.session);
            if let Some(disk) = ctl.config.map(|c| c.agreement) {
                // A new daemon finding the disk of its predecessor (tapdisk and blktapd go on
                // on EEXIST): it is ready for the requests held for it, if it agreed on the
                // disk's features (a V-XS daemon must never be sent an op it does not know).
                let agreed = session.unwrap_or_default();
                if agreed != disk {
                    pr_warn!(
                        "{}: the daemon agreed on features {:#x}, the disk has {:#x} (and \
                         limits): refusing it\n",
                        DiskName::new(this.minor),
                        agreed.features,
                        disk.features
                    );
                    return Err(EINVAL);
                }
                this.io.lock().allow(&disk);
                this.ring_ready();
                return Err(EEXIST);
            }
            ctl.creating = true;
            (ctl.mapping, ctl.sessions, session)
        };
        let (mapping, session, agreed) = mapping;
        let agreement = agreed.unwrap_or_default();
        let config = config.map(|c| DeviceConfig { agreement, ..c });
        let created = Self::new_disk(this, config, name);
        let mut ctl = this.ctl.lock();
        ctl.creating = false;
        let (disk, config, name) = created?;
        if ctl.mapping != mapping || ctl.sessions != session || ctl.freed {
            // The daemon unmapped the ring meanwhile: nothing may remain of the disk. It is
            // deleted without `ctl` held, still under `disk_change`. Requests it already
            // queued (udev probes it at once) may sit on a ring mapped since: `del_gendisk`
            // would wait for them, so they fail first.
            drop(ctl);
            let failed = {
                let mut guard = this.io.lock();
                let io = &mut *guard;
                io.disk_live = false;
                let mut failed = Doomed::new();
                Self::fail_ring(io, &mut failed);
                failed
            };
            failed.end_all();
            drop(disk);
            return Err(ENXIO);
        }
        ctl.disk = Some(disk);
        ctl.config = Some(config);
        ctl.disk_session = session;
        this.io.lock().allow(&config.agreement);
        this.ring_ready();
        if let Some(name) = name {
            ctl.name = name;
        }
        pr_info!(
            "{}: sector-size: {}/{} capacity: {}{} features: {:#x}\n",
            DiskName::new(this.minor),
            config.logical_block_size,
            config.physical_block_size,
            config.capacity,
            if config.read_only { " read-only" } else { "" },
            config.agreement.features
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
            alignment_offset: config.alignment_offset,
            // At most 256 (`LARGE_SEGMENT_MAX`): fits.
            max_segments: config.agreement.segments() as u16,
            max_segment_size: kernel::page::PAGE_SIZE as u32,
            seg_boundary_mask: kernel::page::PAGE_SIZE as u64 - 1,
            dma_alignment: 511,
            max_hw_sectors: (config.agreement.segments() * kernel::page::PAGE_SIZE / 512) as u32,
            queue_depth: config.agreement.slots() as u32,
            // `FEAT_LOW_LATENCY`: `queue_rq` publishes requests itself, under a mutex.
            blocking: config.agreement.has(FEAT_LOW_LATENCY),
            read_only: config.read_only,
            write_cache: config.agreement.has(FEAT_FLUSH),
            fua: config.agreement.has(FEAT_FUA),
            max_discard_sectors: config.agreement.max_discard_sectors,
            discard_granularity: config.agreement.discard_granularity,
            discard_alignment: config.agreement.discard_alignment,
            max_write_zeroes_sectors: config.agreement.max_write_zeroes_sectors,
            timer_interval_ms: TIMER_INTERVAL_MS,
        };
        // Room to hold a request of every tag for a new daemon (recovery), made before any
        // can be held; the room it replaces is freed outside the spinlock (`vfree` sleeps).
        let room = Recovery::room(config.agreement.slots() + 1)?;
        // Live before the disk is added: udev may read it at once. Its operations may go to
        // this ring from the start too (an opener may flush at once).
        let spare = {
            let mut io = this.io.lock();
            let spare = io.recovery.make_room(room);
            io.disk_live = true;
            io.allow(&config.agreement);
            spare
        };
        drop(spare);
        match GenDisk::new(
            fmt!("{}", DiskName::new(this.minor)),
            &params,
            Arc::from(this),
        ) {
            Ok(disk) => Ok((disk, config, name)),
            Err(e) => {
                let mut io = this.io.lock();
                io.disk_live = false;
                io.allow(&Agreement::default());
                Err(e)
            }
        }
    }

    /// `NEGOTIATE`: agrees with the ring's daemon on the features beyond V-XS that its disk
    /// will have (see `include/uapi/linux/blktap.h`). On refusal, `EINVAL`, with a log line;
    /// for unknown feature bits only, the answer to write back too (the supported set).
    pub(crate) fn negotiate(
        &self,
        req: &Features,
    ) -> Result<(Features, Undo), (Error, Option<Features>)> {
        let mut ctl = self.ctl.lock();
        Self::check_owner(&ctl).map_err(|e| (e, None))?;
        let supported = FEATURES_KNOWN & !ctl.switched_off;
        let refuse = |why: &str,
                      answer: Option<Features>|
         -> Result<(Features, Undo), (Error, Option<Features>)> {
            pr_warn!(
                "{}: NEGOTIATE refused: {} (pid {})\n",
                DiskName::new(self.minor),
                why,
                task::current_pid()
            );
            Err((EINVAL, answer))
        };
        if ctl.disk.is_some() && ctl.disk_session == ctl.sessions {
            return refuse("the disk exists already", None);
        }
        let agreed = match Agreement::negotiate(req, supported) {
            Ok(a) => a,
            Err(Refusal::Unknown(bits)) => {
                pr_warn!(
                    "{}: NEGOTIATE: unknown feature bits {:#x}\n",
                    DiskName::new(self.minor),
                    bits
                );
                return refuse(
                    "unknown feature bits",
                    Some(Agreement::default().to_features(supported)),
                );
            }
            Err(Refusal::Bad(why)) => return refuse(why, None),
        };
        let mapped = self.io.lock().ring.as_ref().map(|r| r.shm.layout());
        if agreed.has(FEAT_LARGE | FEAT_DEEP) && mapped != Some(agreed.layout()) {
            return refuse(
                "max segments or ring slots other than the ring mapping's",
                None,
            );
        }
        if let Some(disk) = ctl.config.map(|c| c.agreement) {
            // A new daemon for an existing disk (recovery): the disk's features cannot change.
            if agreed != disk {
                return refuse("the existing disk has other features or limits", None);
            }
        }
        let undo = Undo {
            sessions: ctl.sessions,
            previous: ctl.session.replace(agreed),
        };
        pr_info!(
            "{}: negotiated features {:#x} (asked {:#x}, supported {:#x})\n",
            DiskName::new(self.minor),
            agreed.features,
            req.features,
            supported
        );
        Ok((agreed.to_features(supported), undo))
    }

    /// Takes back a negotiation whose answer could not be written to the daemon (`EFAULT`):
    /// the daemon must not get a disk with features it does not know it agreed on.
    pub(crate) fn undo_negotiation(&self, undo: Undo) {
        let mut ctl = self.ctl.lock();
        let made_disk = ctl.disk.is_some() && ctl.disk_session == ctl.sessions;
        if ctl.sessions == undo.sessions && !made_disk {
            ctl.session = undo.previous;
        }
    }

    /// The `FEAT_*` bits the administrator has not switched off.
    pub(crate) fn offered(&self) -> u64 {
        FEATURES_KNOWN & !self.ctl.lock().switched_off
    }

    /// Switches `feature` (`FEAT_DISCARD` or `FEAT_WRITE_ZEROES`) on or off for this tap. Off
    /// also takes it off a live disk: its queue stops advertising it and no such request is
    /// sent any more. On applies from the next negotiation.
    ///
    /// The queue update freezes the queue, which waits for the requests in flight: it runs with
    /// no tap lock held (their `RESPOND` takes `ctl`; `disk_change` would hold up removals and
    /// `FREE_TAP` behind a stuck daemon), on a counted reference to the disk, which keeps its
    /// queue alive should the disk be removed meanwhile.
    pub(crate) fn switch_feature(&self, feature: u64, on: bool) -> Result {
        let live = {
            let mut ctl = self.ctl.lock();
            if on {
                ctl.switched_off &= !feature;
                return Ok(());
            }
            ctl.switched_off |= feature;
            if let Some(s) = ctl.session.as_mut() {
                *s = s.without(feature);
            }
            let Some(config) = ctl.config.as_mut() else {
                return Ok(());
            };
            if !config.agreement.has(feature) {
                return Ok(());
            }
            config.agreement = config.agreement.without(feature);
            self.io.lock().ops_allowed &= !feature;
            ctl.disk.as_ref().map(|d| d.handle())
        };
        if let Some(disk) = live {
            let discard = feature & FEAT_DISCARD != 0;
            disk.clear_limits(discard, feature & FEAT_WRITE_ZEROES != 0)?;
            let what = if discard { "discard" } else { "write-zeroes" };
            pr_info!(
                "{}: {} switched off by the administrator\n",
                DiskName::new(self.minor),
                what
            );
        }
        Ok(())
    }

    /// `REMOVE_DEVICE`: removes the disk unless it is open (`EBUSY`).
    pub(crate) fn remove_device(&self) -> Result {
        let change = self.disk_change.lock();
        let disk = {
            let mut ctl = self.ctl.lock();
            Self::check_owner(&ctl)?;
            self.take_idle_disk(&change, &mut ctl)?
        };
        self.delete_disk(&change, disk);
        Ok(())
    }

    /// Takes the disk out of the tap if nobody has it open and no request is with the daemon
    /// (else `EBUSY`), for [`Tap::delete_disk`] to delete once `ctl` is released.
    fn take_idle_disk(
        &self,
        _change: &DiskChange<'_>,
        ctl: &mut Ctl,
    ) -> Result<Option<GenDisk<TapQueue>>> {
        if ctl.disk.is_none() {
            return Ok(None);
        }
        {
            let mut io = self.io.lock();
            // Abandoned ids hold no block request: they do not keep the disk.
            let pending = io.ring.as_ref().map_or(0, |r| r.slots.live()) + io.recovery.held_count();
            if io.openers > 0 || pending > 0 {
                return Err(EBUSY);
            }
            // From here opens fail and new requests fail at once, so `del_gendisk` (which
            // waits for requests in flight) cannot wait for the daemon.
            io.disk_live = false;
        }
        ctl.config = None;
        Ok(ctl.disk.take())
    }

    /// Deletes a disk taken out by [`Tap::take_idle_disk`], with `disk_change` still held and
    /// no other tap lock: `del_gendisk` waits for block layer locks whose holders may wait for
    /// an mmap lock, which `mmap` holds when it takes `ctl`.
    fn delete_disk(&self, _change: &DiskChange<'_>, disk: Option<GenDisk<TapQueue>>) {
        let Some(disk) = disk else {
            return;
        };
        // Requests handed back as busy are dispatched again and now fail at once.
        disk.run_queue();
        drop(disk);
        pr_info!("{}: removed\n", DiskName::new(self.minor));
    }

    // ---------------------------------------------------------------------------------------
    // Control.

    /// `FREE_TAP` check: the tap may only go once its ring is closed and unmapped and its disk
    /// gone (removed here if nobody has it open). Marks the tap freed on success; `ENODEV` if
    /// it was already.
    ///
    /// Called without `TAPS` held. Waits for a removal in flight (ring release, the removal
    /// work, `REMOVE_DEVICE`) to finish: the disk it took out of `ctl` still exists until then.
    pub(crate) fn prepare_free(&self) -> Result {
        let change = self.disk_change.lock();
        let disk = {
            let mut ctl = self.ctl.lock();
            if ctl.freed {
                return Err(ENODEV);
            }
            if ctl.task.is_some() || ctl.mapping.is_some() {
                return Err(EBUSY);
            }
            let disk = self.take_idle_disk(&change, &mut ctl)?;
            ctl.freed = true;
            disk
        };
        self.delete_disk(&change, disk);
        drop(change);
        // A writer of `remove` waits for the tap to be freed, by whoever frees it.
        self.admin_wait.notify_all();
        Ok(())
    }
}

impl Tap {
    /// Drops `module`, a reference on this module, from the tap's work item: a sysfs callback
    /// that has just freed its tap may hold the module's last reference, and module code must
    /// not run after that reference is gone, except on the module's workqueue, which module
    /// exit drains.
    pub(crate) fn put_module_later(this: Arc<Self>, module: ModuleRef) {
        this.ctl.lock().module = Some(module);
        // Already queued: that run drops it.
        module_wq::enqueue(this);
    }
}

impl MappingOwner for Tap {
    fn unmapped(this: ArcBorrow<'_, Self>, id: MappingId) {
        this.unmap(id);
    }
}

impl WorkItem for Tap {
    type Pointer = Arc<Tap>;

    /// Removes a disk whose daemon is gone, once its last opener has closed it; then, if
    /// sysfs `remove` asked for it and its writer no longer waits, frees the tap.
    fn run(this: Arc<Tap>) {
        // Dropped when this function returns (see `Tap::put_module_later`).
        let _module = this.ctl.lock().module.take();
        let change = this.disk_change.lock();
        let (disk, free) = {
            let mut ctl = this.ctl.lock();
            let (recovering, free) = {
                let io = this.io.lock();
                let free = io.removing && io.pause.waiter.is_none() && !ctl.freed;
                (io.recovery.is_open(), free)
            };
            if ctl.mapping.is_some() || ctl.task.is_some() || recovering {
                // A new daemon serves the disk now, or the ring file is still open (its release
                // removes the disk, as documented in `Documentation/design.rst`).
                return;
            }
            // Still open (reopened since the work was queued): its last close queues us again.
            (this.take_idle_disk(&change, &mut ctl).unwrap_or(None), free)
        };
        this.delete_disk(&change, disk);
        drop(change);
        this.admin_wait.notify_all();
        if free {
            // A removal whose writer gave up while the disk was open. `EBUSY`: still open.
            match crate::registry::free_tap(this.minor) {
                Ok(()) => pr_info!("{}: tap removed\n", DiskName::new(this.minor)),
                Err(e) if e == EBUSY || e == ENODEV => {}
                Err(e) => pr_warn!(
                    "{}: removing the tap failed: {:?}\n",
                    DiskName::new(this.minor),
                    e
                ),
            }
        }
    }
}
