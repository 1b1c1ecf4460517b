//! `evil`: a hostile daemon. It writes to the shared ring what a broken or malicious
//! tapdisk could, while threads do O_DIRECT I/O on the disk, and checks that the kernel
//! survives it and keeps serving well-formed responses.
//!
//! The run alternates evil and good phases. In an evil phase the daemon picks random
//! actions (random, far and backward `rsp_prod`, responses with out-of-range, idle,
//! duplicated or racing ids, wrong operations, garbage status, rewritten `req_prod`,
//! scribbled ring and data pages, concurrent `RESPOND` storms, remapping the ring). I/O that
//! overlaps an evil phase may fail (only ever with EIO) or return garbage, and writes served
//! then are not stored. Between phases the daemon drains the ring: it pauses the I/O threads,
//! fails whatever the kernel still has pending (the `debug` attribute lists it) and realigns
//! the indices. In a good phase every I/O must succeed and read back what was last written.

use crate::daemon::Backend;
use crate::ktap::Ktap;
use crate::rng::Rng;
use crate::util::{self, AlignedBuf, BlockModel, PlannedIo, TapDebug, BLOCK};
use crate::{Env, Taps};
use blktap::ring::{Request, Ring, RingMemory};
use blktap::uapi::{
    self, DeviceInfo, RingResponse, OP_READ, OP_WRITE, PAGE_SIZE, RING_SIZE, RSP_ERROR, RSP_OKAY,
};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options of the `evil` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct EvilArgs {
    /// Random seed [default: from the clock]; printed so that a failure can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evil/good phase pairs.
    #[arg(long, default_value_t = 10)]
    pub iterations: u32,
    /// I/O threads.
    #[arg(long, default_value_t = 8)]
    pub threads: u32,
    /// Length of each phase in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub phase_ms: u64,
    /// Longest time a good-phase I/O may take, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub io_timeout: f64,
    /// Only these actions (comma separated; see the list printed at start).
    #[arg(long, value_delimiter = ',')]
    pub actions: Vec<String>,
    /// A deep ring (FEAT_DEEP) of this many entries instead of V-XS's 32.
    #[arg(long)]
    pub ring_slots: Option<u32>,
}

/// Maps `ring` as V-XS's, or as a deep ring of `slots` entries and negotiates it.
fn map_ring(ring: &mut Ring, slots: Option<u32>) -> blktap::Result<()> {
    let Some(n) = slots else {
        return ring.map();
    };
    ring.map_layout(n, uapi::SEGMENT_MAX)?;
    ring.negotiate(&uapi::Features {
        ring_slots: n,
        ..uapi::Features::request(uapi::FEAT_DEEP)
    })?;
    ring.set_layout(n, uapi::SEGMENT_MAX)
}

/// The hostile actions.
pub const ACTIONS: [&str; 19] = [
    "serve",
    "stall",
    "rsp-prod-random",
    "rsp-prod-far",
    "rsp-prod-behind",
    "bad-ids",
    "idle-ids",
    "duplicate",
    "wrong-op",
    "garbage-status",
    "race",
    "req-prod",
    "scribble-ring",
    "scribble-data",
    "remap",
    "unpublished",
    "full-batch",
    "respond-storm",
    "ioctls",
];

const DISK_BYTES: usize = 16 << 20;

/// State shared with the I/O threads.
struct Shared {
    start: Instant,
    /// Even: good phase; odd: evil phase.
    epoch: AtomicU64,
    pause: AtomicBool,
    paused: AtomicU32,
    stop: AtomicBool,
    in_flight: Vec<AtomicU64>,
    /// I/Os completed entirely within a good phase, updated live.
    good_done: AtomicU64,
    stats: Mutex<IoStats>,
}

#[derive(Default, Debug)]
struct IoStats {
    ios: u64,
    good_ios: u64,
    good_failed: u64,
    evil_eio: u64,
    other_errors: u64,
    mismatches: u64,
    problems: Vec<String>,
}

impl IoStats {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 6 {
            self.problems.push(p);
        }
    }
}

fn io_thread(sh: &Shared, slot: usize, disk: &Path, first: u64, count: u64, seed: u64) {
    let fd = match util::open_disk(disk) {
        Ok(fd) => fd,
        Err(e) => {
            let mut s = sh.stats.lock().expect("stats");
            s.other_errors += 1;
            s.problem(format!("open {}: {}", disk.display(), util::errno_name(e)));
            return;
        }
    };
    let mut rng = Rng::new(seed);
    let mut model = BlockModel::new(seed, first, count);
    let max = 32.min(count);
    let mut buf = AlignedBuf::new(max as usize * BLOCK);
    let mut local = IoStats::default();
    loop {
        if sh.stop.load(SeqCst) {
            break;
        }
        if sh.pause.load(SeqCst) {
            sh.paused.fetch_add(1, SeqCst);
            while sh.pause.load(SeqCst) && !sh.stop.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            sh.paused.fetch_sub(1, SeqCst);
            continue;
        }
        let io = model.plan_io(&mut rng, max, 50, &mut buf);
        let e0 = sh.epoch.load(SeqCst);
        let r = util::tracked_io(fd.as_raw_fd(), &mut buf, &io, &sh.in_flight[slot], sh.start);
        let e1 = sh.epoch.load(SeqCst);
        let len = io.len();
        let PlannedIo {
            first: b0,
            blocks: n,
            write,
            gens,
        } = io;
        let good = e0 == e1 && e0 % 2 == 0;
        local.ios += 1;
        local.good_ios += u64::from(good);
        if good {
            sh.good_done.fetch_add(1, SeqCst);
        }
        let what = format!(
            "{} of blocks {b0}..{} (epoch {e0}..{e1})",
            if write { "write" } else { "read" },
            b0 + n
        );
        match r {
            Ok(got) if got == len => {
                if write {
                    for (i, g) in gens.iter().enumerate() {
                        if good {
                            model.written(b0 + i as u64, *g);
                        } else {
                            model.clobbered(b0 + i as u64);
                        }
                    }
                } else if good {
                    for e in model.check_reads(b0, buf.slice(len)) {
                        local.mismatches += 1;
                        local.problem(format!("{what}: {e}"));
                    }
                }
            }
            r => {
                for i in 0..n {
                    model.clobbered(b0 + i);
                }
                let e = match r {
                    Ok(got) => {
                        local.other_errors += 1;
                        local.problem(format!("{what}: short transfer of {got} bytes"));
                        0
                    }
                    Err(e) => e,
                };
                if good {
                    local.good_failed += 1;
                    local.problem(format!(
                        "{what} failed in a good phase: {}",
                        util::errno_name(e)
                    ));
                } else if e == libc::EIO {
                    local.evil_eio += 1;
                } else if e != 0 {
                    local.other_errors += 1;
                    local.problem(format!(
                        "{what}: {} (only EIO is acceptable)",
                        util::errno_name(e)
                    ));
                }
            }
        }
    }
    let mut s = sh.stats.lock().expect("stats");
    s.ios += local.ios;
    s.good_ios += local.good_ios;
    s.good_failed += local.good_failed;
    s.evil_eio += local.evil_eio;
    s.other_errors += local.other_errors;
    s.mismatches += local.mismatches;
    for p in local.problems {
        s.problem(p);
    }
}

/// The hostile daemon.
struct Evil<'a> {
    env: &'a Env,
    minor: u32,
    ring: Ring,
    /// `--ring-slots`, if the ring is deep.
    deep: Option<u32>,
    /// Entries of the ring (32, or `--ring-slots`).
    slots: u32,
    back: Backend,
    rng: Rng,
    actions: Vec<&'static str>,
    /// Recent actions, for the failure report.
    log: Vec<String>,
    /// Problems of the daemon side (failed resyncs, wrong errnos in the middle of it all).
    problems: Vec<String>,
    ioctl_checks: u64,
    resyncs: u64,
    remaps: u64,
}

impl Evil<'_> {
    fn mem(&self) -> RingMemory<'_> {
        self.ring.memory().expect("ring mapped")
    }

    fn debug(&self) -> Result<TapDebug, String> {
        TapDebug::read(&self.env.class_dir(), self.minor)
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 10 {
            self.problems
                .push(format!("{p} (after: {})", self.recent()));
        }
    }

    fn recent(&self) -> String {
        let n = self.log.len();
        self.log[n.saturating_sub(8)..].join(" ")
    }

    /// Adopts the kernel's indices as far as it can.
    fn sync_view(&mut self) {
        if let Ok(d) = self.debug() {
            if let Some(rc) = d.rsp_cons {
                self.back.rsp_prod_pvt = rc;
            }
            if let Some(p) = d.req_prod_pvt {
                if p.wrapping_sub(self.back.req_cons) > self.slots {
                    self.back.req_cons = p;
                }
            }
        }
    }

    fn respond(&self) {
        // Errors are not expected (we own the mapping) but must not stop the run.
        let _ = self.ring.respond();
    }

    /// Writes `rsp` at the next response index.
    fn push(&mut self, rsp: &RingResponse) {
        let i = self.back.rsp_prod_pvt;
        self.mem().write_response(i, rsp);
        self.back.rsp_prod_pvt = i.wrapping_add(1);
    }

    fn publish(&self) {
        self.mem().set_rsp_prod(self.back.rsp_prod_pvt);
    }

    fn take_requests(&mut self) -> Vec<uapi::RingRequest> {
        take_requests(&self.ring, &mut self.back)
    }

    fn answer(&mut self, raw: &uapi::RingRequest) -> i16 {
        answer(&self.ring, &mut self.back, raw)
    }

    fn evil_serve(&mut self) {
        evil_serve(&self.ring, &mut self.back);
    }

    fn random_bad_id(&mut self) -> u64 {
        let slots = u64::from(self.slots);
        let pending = self.rng.below(slots);
        let r = self.rng.next_u64();
        *self.rng.pick(&[
            slots,
            slots + 1,
            2 * slots,
            1000,
            u64::from(u32::MAX),
            1 << 32,
            (1 << 32) | pending,
            u64::MAX,
            i64::MIN as u64,
            r,
        ])
    }

    fn act(&mut self, action: &str) {
        let phase_start = self.back.rsp_prod_pvt;
        match action {
            "serve" => self.evil_serve(),
            "stall" => std::thread::sleep(Duration::from_millis(self.rng.below(100))),
            "rsp-prod-random" => {
                let v = self.rng.next_u32();
                self.mem().set_rsp_prod(v);
                self.respond();
            }
            "rsp-prod-far" => {
                let v = phase_start
                    .wrapping_add(self.slots + 1)
                    .wrapping_add(self.rng.below(1 << 20) as u32);
                self.mem().set_rsp_prod(v);
                self.respond();
            }
            "rsp-prod-behind" => {
                let v = phase_start.wrapping_sub(1 + self.rng.below(100) as u32);
                self.mem().set_rsp_prod(v);
                self.respond();
            }
            "bad-ids" => {
                for _ in 0..self.rng.range(1, 8) {
                    let id = self.random_bad_id();
                    let op = *self.rng.pick(&[OP_READ, OP_WRITE]);
                    self.push(&RingResponse::new(id, op, RSP_OKAY));
                }
                self.publish();
                self.respond();
            }
            "idle-ids" => {
                let pending: Vec<u32> = self
                    .debug()
                    .map(|d| d.pending.iter().map(|p| p.0).collect())
                    .unwrap_or_default();
                for _ in 0..self.rng.range(1, 8) {
                    let id = self.rng.below(u64::from(self.slots)) as u32;
                    if !pending.contains(&id) {
                        let op = *self.rng.pick(&[OP_READ, OP_WRITE]);
                        let st = *self.rng.pick(&[RSP_OKAY, RSP_ERROR]);
                        self.push(&RingResponse::new(u64::from(id), op, st));
                    }
                }
                self.publish();
                self.respond();
            }
            "duplicate" => {
                let reqs = self.take_requests();
                for raw in &reqs {
                    let st = self.answer(raw);
                    let rsp = RingResponse::new(raw.id, raw.operation, st);
                    self.push(&rsp);
                    self.push(&rsp);
                }
                self.publish();
                self.respond();
                // And once more in a later batch.
                for raw in &reqs {
                    self.push(&RingResponse::new(raw.id, raw.operation, RSP_OKAY));
                }
                self.publish();
                self.respond();
            }
            "wrong-op" => {
                let reqs = self.take_requests();
                for raw in &reqs {
                    let op = if self.rng.chance(50) {
                        raw.operation ^ 1
                    } else {
                        self.rng.range(2, 255) as u8
                    };
                    self.push(&RingResponse::new(raw.id, op, RSP_OKAY));
                }
                self.publish();
                self.respond();
            }
            "garbage-status" => {
                let reqs = self.take_requests();
                for raw in &reqs {
                    let st = *self.rng.pick(&[1, -2, i16::MIN, i16::MAX, 0x7f00, -1000]);
                    let idx = self.back.rsp_prod_pvt;
                    self.push(&RingResponse::new(raw.id, raw.operation, st));
                    // Garbage in the padding bytes too.
                    let base = self.mem().base();
                    let off = uapi::entry_offset(idx % self.slots);
                    for b in [9usize, 12, 13, 14, 15] {
                        let v = self.rng.next_u32() as u8;
                        // SAFETY: inside the 112-byte entry of the live ring page.
                        unsafe { std::ptr::write_volatile(base.add(off + b), v) };
                    }
                }
                self.publish();
                self.respond();
            }
            "race" => self.race(),
            "req-prod" => {
                let v = self.rng.next_u32();
                self.mem().set_req_prod(v);
            }
            "scribble-ring" => {
                let mut page = vec![0u8; uapi::ring_pages(self.slots) * PAGE_SIZE];
                self.rng.fill(&mut page);
                let base = self.mem().base();
                for (i, b) in page.iter().enumerate() {
                    // SAFETY: inside the ring pages of the live mapping.
                    unsafe { std::ptr::write_volatile(base.add(i), *b) };
                }
                self.respond();
            }
            "scribble-data" => {
                for _ in 0..self.rng.range(1, 20) {
                    let first = uapi::ring_pages(self.slots) as u64;
                    let pages = uapi::deep_mmap_pages(self.slots, uapi::SEGMENT_MAX) as u64;
                    let page = self.rng.range(first, pages - 1) as usize;
                    let p = self.mem().page_ptr(page);
                    let v = self.rng.next_u32() as u8;
                    // SAFETY: a whole data page of the live mapping.
                    unsafe { std::ptr::write_bytes(p, v, PAGE_SIZE) };
                }
            }
            "remap" => self.remap(),
            "unpublished" => {
                let reqs = self.take_requests();
                for raw in &reqs {
                    self.push(&RingResponse::new(raw.id, raw.operation, RSP_OKAY));
                }
                self.respond();
            }
            "full-batch" => {
                let pending: Vec<(u32, u8)> = self.debug().map(|d| d.pending).unwrap_or_default();
                for _ in 0..self.slots {
                    let rsp = match (self.rng.below(3), pending.is_empty()) {
                        (0, false) => {
                            let &(id, op) = self.rng.pick(&pending);
                            RingResponse::new(u64::from(id), op, RSP_ERROR)
                        }
                        (1, _) => RingResponse::new(self.rng.next_u64(), 0, 0),
                        _ => RingResponse::new(
                            self.rng.below(u64::from(self.slots)),
                            self.rng.below(2) as u8,
                            0,
                        ),
                    };
                    self.push(&rsp);
                }
                self.publish();
                self.respond();
            }
            "respond-storm" => {
                let ring = &self.ring;
                std::thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(|| {
                            for _ in 0..200 {
                                let _ = ring.respond();
                            }
                        });
                    }
                });
                self.evil_serve();
            }
            "ioctls" => self.ioctls(),
            _ => {}
        }
    }

    /// Ioctls with documented results, in the middle of the chaos.
    fn ioctls(&mut self) {
        let info = DeviceInfo::new(DISK_BYTES as u64 / 512, 512, false);
        let r = self.ring.create_device_info(&info);
        self.ioctl_checks += 1;
        if !r.as_ref().is_err_and(|e| e.is_errno(libc::EEXIST)) {
            self.problem(format!("CREATE_DEVICE with a disk: {r:?}, expected EEXIST"));
        }
        // The I/O threads keep the disk open.
        let r = self.ring.remove_device();
        self.ioctl_checks += 1;
        if !r.as_ref().is_err_and(|e| e.is_errno(libc::EBUSY)) {
            self.problem(format!(
                "REMOVE_DEVICE with the disk open: {r:?}, expected EBUSY"
            ));
        }
    }

    /// munmap (failing every pending request) and mmap again: a fresh ring.
    fn remap(&mut self) {
        self.ring.unmap();
        self.remaps += 1;
        match self.debug() {
            Ok(d) if d.pending.is_empty() && !d.mapped => {}
            other => self.problem(format!("after munmap: {other:?}, expected nothing pending")),
        }
        if let Err(e) = map_ring(&mut self.ring, self.deep) {
            self.problem(format!("mmap after munmap: {e}"));
            return;
        }
        self.back.reset();
        let info = DeviceInfo::new(DISK_BYTES as u64 / 512, 512, false);
        let r = self.ring.create_device_info(&info);
        self.ioctl_checks += 1;
        if !r.as_ref().is_err_and(|e| e.is_errno(libc::EEXIST)) {
            self.problem(format!("CREATE_DEVICE after remap: {r:?}, expected EEXIST"));
        }
    }

    /// Responses from another thread racing the daemon's own, plus concurrent RESPONDs.
    fn race(&mut self) {
        let stop = AtomicBool::new(false);
        let mut rng = Rng::new(self.rng.next_u64());
        let base_idx = self.back.rsp_prod_pvt;
        let slots = u64::from(self.slots);
        let until = Instant::now() + Duration::from_millis(self.rng.range(20, 150));
        let (ring, back) = (&self.ring, &mut self.back);
        std::thread::scope(|s| {
            let stop = &stop;
            s.spawn(move || {
                let mem = ring.memory().expect("mapped");
                while !stop.load(SeqCst) {
                    let idx = base_idx.wrapping_add(rng.below(64) as u32);
                    let id = if rng.chance(70) {
                        rng.below(slots)
                    } else {
                        rng.next_u64()
                    };
                    let op = rng.below(3) as u8;
                    mem.write_response(idx, &RingResponse::new(id, op, rng.below(2) as i16));
                    if rng.chance(30) {
                        mem.set_rsp_prod(base_idx.wrapping_add(rng.below(40) as u32));
                    }
                    let _ = ring.respond();
                }
            });
            s.spawn(move || {
                while !stop.load(SeqCst) {
                    let _ = ring.respond();
                    let _ = ring.poll(Some(Duration::from_millis(1)));
                }
            });
            while Instant::now() < until {
                let _ = ring.poll(Some(Duration::from_millis(5)));
                evil_serve(ring, back);
            }
            stop.store(true, SeqCst);
        });
    }

    /// Fails everything pending and realigns the ring, with the I/O threads paused.
    fn resync(&mut self, sh: &Shared, threads: u32) -> Result<(), String> {
        self.resyncs += 1;
        sh.pause.store(true, SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        let quiet = loop {
            // Queued requests are sent (and so can be answered) when the owner polls.
            let _ = self.ring.poll(Some(Duration::ZERO));
            let d = self.debug()?;
            if !d.mapped {
                return Err("ring not mapped during resync".into());
            }
            let rc = d.rsp_cons.ok_or("no rsp_cons in the debug attribute")?;
            if !d.pending.is_empty() {
                let mem = self.mem();
                let mut idx = rc;
                for &(id, op) in &d.pending {
                    mem.write_response(idx, &RingResponse::new(u64::from(id), op, RSP_ERROR));
                    idx = idx.wrapping_add(1);
                }
                mem.set_rsp_prod(idx);
                self.ring.respond().map_err(|e| e.to_string())?;
            }
            if sh.paused.load(SeqCst) == threads {
                let d2 = self.debug()?;
                if d2.pending.is_empty() {
                    break d2;
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "cannot drain the ring: pending {:?}, {}/{threads} threads paused",
                    d.pending,
                    sh.paused.load(SeqCst)
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let x = quiet.req_prod_pvt.ok_or("no req_prod_pvt")?;
        let g = quiet.rsp_cons.ok_or("no rsp_cons")?;
        let dist = x.wrapping_sub(g);
        if dist != 0 {
            let mem = self.mem();
            if dist <= self.slots {
                for i in 0..dist {
                    mem.write_response(g.wrapping_add(i), &RingResponse::new(u64::MAX, 0, 0));
                }
            }
            // A distance beyond the ring is a corrupt index: the kernel skips to it.
            mem.set_rsp_prod(x);
            self.ring.respond().map_err(|e| e.to_string())?;
            let d = self.debug()?;
            if d.rsp_cons != Some(x) || !d.pending.is_empty() {
                // Not what the design says; start over on a fresh mapping instead.
                self.problem(format!(
                    "realigning rsp_cons {g} -> {x}: kernel now has rsp_cons {:?}, pending {:?}",
                    d.rsp_cons, d.pending
                ));
                self.remap();
                sh.pause.store(false, SeqCst);
                return Ok(());
            }
        }
        self.mem().set_req_prod(x);
        self.back.req_cons = x;
        self.back.rsp_prod_pvt = x;
        Ok(())
    }

    /// Serves correctly until `until`; checks for I/Os that hang.
    fn good_phase(
        &mut self,
        sh: &Shared,
        until: Instant,
        io_timeout: Duration,
    ) -> Result<(), String> {
        while Instant::now() < until {
            let _ = self.ring.poll(Some(Duration::from_millis(10)));
            self.back
                .serve(&self.ring)
                .map_err(|e| format!("good phase: {e}"))?;
            let now = sh.start.elapsed().as_millis() as u64 + 1;
            for (i, f) in sh.in_flight.iter().enumerate() {
                let since = f.load(SeqCst);
                if since != 0 && now.saturating_sub(since) > io_timeout.as_millis() as u64 {
                    return Err(format!(
                        "good phase: an I/O of thread {i} has waited {} ms; kernel: {:?}",
                        now - since,
                        self.debug()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Requests published since the last call (at most a ring's worth), as raw entries.
fn take_requests(ring: &Ring, back: &mut Backend) -> Vec<uapi::RingRequest> {
    let Some(mem) = ring.memory() else {
        return Vec::new();
    };
    let prod = mem.req_prod();
    let n = prod.wrapping_sub(back.req_cons);
    if n > mem.slots() {
        back.req_cons = prod;
        return Vec::new();
    }
    let v = (0..n)
        .map(|i| mem.read_request(back.req_cons.wrapping_add(i)))
        .collect();
    back.req_cons = prod;
    v
}

/// Answers a request in an evil phase: reads get the stored data, writes are dropped.
fn answer(ring: &Ring, back: &mut Backend, raw: &uapi::RingRequest) -> i16 {
    let Some(mem) = ring.memory() else {
        return RSP_ERROR;
    };
    match Request::parse_in(raw, &mem) {
        Ok(req) if req.op == blktap::ring::Op::Read => back.handle(mem, &req),
        Ok(_) => RSP_OKAY,
        _ => RSP_ERROR,
    }
}

/// Serves what is published, evil-phase style (see [`answer`]).
fn evil_serve(ring: &Ring, back: &mut Backend) {
    let reqs = take_requests(ring, back);
    let Some(mem) = ring.memory() else { return };
    for raw in &reqs {
        let st = answer(ring, back, raw);
        mem.write_response(
            back.rsp_prod_pvt,
            &RingResponse::new(raw.id, raw.operation, st),
        );
        back.rsp_prod_pvt = back.rsp_prod_pvt.wrapping_add(1);
    }
    if !reqs.is_empty() {
        mem.set_rsp_prod(back.rsp_prod_pvt);
        let _ = ring.respond();
    }
}

/// Runs the hostile daemon.
pub fn run(env: &Env, a: &EvilArgs, t: &mut Ktap) {
    let seed = a.seed.unwrap_or_else(Rng::time_seed);
    let actions: Vec<&'static str> = if a.actions.is_empty() {
        ACTIONS.to_vec()
    } else {
        ACTIONS
            .iter()
            .copied()
            .filter(|x| a.actions.iter().any(|y| y == x))
            .collect()
    };
    let deep = a
        .ring_slots
        .map_or(String::new(), |n| format!(" --ring-slots {n}"));
    t.diag(&format!(
        "evil: seed {seed} iterations {} threads {} (rerun: blktap-test evil --seed {seed} --iterations {} --threads {} --phase-ms {}{deep})",
        a.iterations, a.threads, a.iterations, a.threads, a.phase_ms
    ));
    t.diag(&format!("evil: actions {}", actions.join(",")));
    if actions.is_empty() || a.threads == 0 {
        return t.fail("evil arguments", &"no actions or no threads");
    }
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("evil", &e),
    };
    let mut taps = Taps::new(&ctl);
    let info = match taps.alloc() {
        Ok(i) => i,
        Err(e) => return t.fail("evil: ALLOC_TAP", &e),
    };
    let ring = match env.open_ring(&info).and_then(|mut r| {
        map_ring(&mut r, a.ring_slots)?;
        r.create_device_info(&DeviceInfo::new(DISK_BYTES as u64 / 512, 512, false))?;
        Ok(r)
    }) {
        Ok(r) => r,
        Err(e) => return t.fail("evil: set up the ring and disk", &e),
    };
    let disk: PathBuf = match env.disk_node(&info) {
        Ok(p) => p,
        Err(e) => return t.fail("evil: disk node", &e),
    };
    let io_timeout = Duration::from_secs_f64(a.io_timeout);
    let sh = Shared {
        start: Instant::now(),
        epoch: AtomicU64::new(0),
        pause: AtomicBool::new(false),
        paused: AtomicU32::new(0),
        stop: AtomicBool::new(false),
        in_flight: (0..a.threads).map(|_| AtomicU64::new(0)).collect(),
        good_done: AtomicU64::new(0),
        stats: Mutex::new(IoStats::default()),
    };
    let mut ev = Evil {
        env,
        minor: info.ring_minor,
        ring,
        deep: a.ring_slots,
        slots: a.ring_slots.unwrap_or(RING_SIZE),
        back: Backend::new(DISK_BYTES),
        rng: Rng::new(seed),
        actions,
        log: Vec::new(),
        problems: Vec::new(),
        ioctl_checks: 0,
        resyncs: 0,
        remaps: 0,
    };
    let blocks = (DISK_BYTES / BLOCK) as u64;
    let per = blocks / u64::from(a.threads);
    let phase = Duration::from_millis(a.phase_ms);
    let mut fatal: Option<String> = None;
    let mut stalled_phases = 0;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..a.threads {
            let (sh, disk) = (&sh, &disk);
            let tseed = seed ^ (u64::from(i) + 1).wrapping_mul(0x9e37_79b9);
            handles.push(
                s.spawn(move || io_thread(sh, i as usize, disk, u64::from(i) * per, per, tseed)),
            );
        }
        // A short good phase first: the I/O path works at all.
        if let Err(e) = ev.good_phase(&sh, Instant::now() + phase, io_timeout) {
            fatal = Some(e);
        }
        for it in 0..a.iterations {
            if fatal.is_some() {
                break;
            }
            sh.epoch.fetch_add(1, SeqCst);
            let until = Instant::now() + phase;
            while Instant::now() < until {
                let act = *ev.rng.pick(&ev.actions);
                ev.log.push(format!("{it}:{act}"));
                ev.act(act);
                ev.sync_view();
                let _ = ev.ring.poll(Some(Duration::from_millis(ev.rng.below(5))));
            }
            if let Err(e) = ev.resync(&sh, a.threads) {
                fatal = Some(format!("resync after iteration {it}: {e}"));
                break;
            }
            sh.epoch.fetch_add(1, SeqCst);
            sh.pause.store(false, SeqCst);
            let g0 = sh.good_done.load(SeqCst);
            // Good phases last until some I/O went through (bounded by the I/O timeout).
            let t0 = Instant::now();
            let mut until = t0 + phase;
            loop {
                if let Err(e) = ev.good_phase(&sh, until, io_timeout) {
                    fatal = Some(format!("iteration {it}: {e}"));
                    break;
                }
                let progress = sh.good_done.load(SeqCst) > g0;
                if progress || t0.elapsed() > io_timeout {
                    stalled_phases += u32::from(!progress);
                    break;
                }
                until = Instant::now() + Duration::from_millis(50);
            }
        }
        // A final well-behaved phase, then stop the I/O and keep serving until it drains.
        if fatal.is_none() {
            if let Err(e) = ev.good_phase(&sh, Instant::now() + 2 * phase, io_timeout) {
                fatal = Some(format!("final good phase: {e}"));
            }
        }
        sh.stop.store(true, SeqCst);
        let deadline = Instant::now() + io_timeout;
        while handles.iter().any(|h| !h.is_finished()) {
            if fatal.is_some() || Instant::now() > deadline {
                // Unstick the threads: munmap fails whatever is pending.
                ev.ring.unmap();
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let _ = ev.ring.poll(Some(Duration::from_millis(10)));
            let _ = ev.back.serve(&ev.ring);
        }
        for h in handles {
            let _ = h.join();
        }
    });

    let st = sh.stats.lock().expect("stats");
    let dbg = ev.debug();
    let bad = dbg.as_ref().map(|d| d.bad_responses).unwrap_or(0);
    t.diag(&format!(
        "evil: ios={} good_ios={} eio={} bad_responses={bad} resyncs={} remaps={} ioctl_checks={}",
        st.ios, st.good_ios, st.evil_eio, ev.resyncs, ev.remaps, ev.ioctl_checks
    ));
    t.diag(&format!("io-total: ios={} failed={}", st.ios, st.evil_eio));
    let tag = format!("seed {seed}");
    t.check(
        "evil: the daemon side ran to the end",
        fatal.is_none(),
        || {
            format!(
                "{} ({tag}; recent actions: {})",
                fatal.clone().unwrap_or_default(),
                ev.recent()
            )
        },
    );
    t.check(
        "evil: good-phase I/O all succeeded",
        st.good_failed == 0 && st.good_ios > 0,
        || {
            format!(
                "{} of {} failed: {} ({tag})",
                st.good_failed,
                st.good_ios,
                st.problems.join("; ")
            )
        },
    );
    t.check(
        "evil: good-phase reads return the data last written",
        st.mismatches == 0,
        || {
            format!(
                "{} mismatches: {} ({tag})",
                st.mismatches,
                st.problems.join("; ")
            )
        },
    );
    t.check(
        "evil: I/O only ever fails with EIO",
        st.other_errors == 0,
        || format!("{} ({tag})", st.problems.join("; ")),
    );
    t.check(
        "evil: ioctls in the middle of it return the documented errno",
        ev.problems.is_empty(),
        || format!("{} ({tag})", ev.problems.join("; ")),
    );
    if stalled_phases > 0 {
        t.diag(&format!(
            "evil: {stalled_phases} good phases without I/O progress"
        ));
    }
    if ev.actions.len() > 2 {
        t.check("evil: the kernel counted bad responses", bad > 0, || {
            format!("debug: {dbg:?}")
        });
    }
    drop(st);
    // Teardown must be clean.
    match &dbg {
        Ok(d) => {
            t.check(
                "evil: nothing pending at the end",
                d.pending.is_empty(),
                || format!("{d:?}"),
            );
        }
        Err(e) => t.fail("evil: read debug", e),
    }
    if ev.ring.is_mapped() {
        t.expect_ok("evil: REMOVE_DEVICE", ev.ring.remove_device());
    }
    ev.ring.unmap();
    drop(ev.ring);
    let minor = info.ring_minor;
    let gone = util::wait_until(Duration::from_secs(5), || {
        !blktap::sysfs::disk_exists(&env.sysfs, minor)
    });
    t.check("evil: the disk is gone", gone, || {
        "still in /sys/block".to_string()
    });
    t.expect_ok("evil: FREE_TAP", taps.free(minor));
}
