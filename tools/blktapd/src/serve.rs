//! Serving requests: checks common to all backends, dispatch, statistics.

use crate::backend::{Backend, Io};
use blktap::ring::{BackRing, Batch, Op, Request, RingMemory};
use blktap::uapi::{RSP_EOPNOTSUPP, RSP_ERROR, RSP_OKAY};

/// Errors logged individually before the daemon goes quiet about them.
const MAX_LOGGED_ERRORS: u64 = 20;

/// Counters of what was served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Batches (each one publish and one `RESPOND`).
    pub batches: u64,
    /// Read requests answered.
    pub reads: u64,
    /// Write requests answered.
    pub writes: u64,
    /// Flush requests answered.
    pub flushes: u64,
    /// Writes with FUA answered.
    pub fua_writes: u64,
    /// Discard requests answered.
    pub discards: u64,
    /// Write-zeroes requests answered.
    pub write_zeroes: u64,
    /// Requests for an operation that was not negotiated (answered `RSP_EOPNOTSUPP`).
    pub unnegotiated: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Malformed requests.
    pub invalid: u64,
    /// Batches found by watching the ring after the previous one (low latency), with no poll.
    pub spun: u64,
}

/// A backend plus the policy around it.
pub struct Server {
    backend: Box<dyn Backend>,
    read_only: bool,
    /// The `FEAT_*` agreed with the kernel (`0` for a V-XS ring).
    features: u64,
    stats: Stats,
    /// The I/Os of the batch being served (kept to reuse its allocation).
    ios: Vec<Io>,
    /// How long to watch the ring for more requests after a batch (low latency), if at all.
    spin: Option<std::time::Duration>,
}

impl Server {
    /// Serves `backend`; writes fail when `read_only`.
    pub fn new(backend: Box<dyn Backend>, read_only: bool) -> Self {
        Self {
            backend,
            read_only,
            features: 0,
            stats: Stats::default(),
            ios: Vec::with_capacity(blktap::uapi::RING_SIZE as usize),
            spin: None,
        }
    }

    /// Watch the ring for `spin` after each batch before sleeping (`FEAT_LOW_LATENCY` agreed),
    /// or not (`None`).
    pub fn set_spin(&mut self, spin: Option<std::time::Duration>) {
        self.spin = spin;
    }

    /// How long to watch the ring after a batch, if at all.
    pub fn spin(&self) -> Option<std::time::Duration> {
        self.spin
    }

    /// Counts a batch found by watching the ring.
    pub fn count_spun(&mut self) {
        self.stats.spun += 1;
    }

    /// Accepts the operations of `features` (`FEAT_*`, as agreed through `NEGOTIATE`).
    pub fn set_features(&mut self, features: u64) {
        self.features = features;
    }

    /// Replaces the backend (a V-OXT pause closes the image, its resume reopens one); returns
    /// the previous one.
    pub fn replace_backend(&mut self, backend: Box<dyn Backend>) -> Box<dyn Backend> {
        std::mem::replace(&mut self.backend, backend)
    }

    /// What has been served so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The backend, to prepare or release it.
    pub fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    fn error(&mut self, req: &Request, what: &dyn std::fmt::Display) -> i16 {
        self.stats.errors += 1;
        if self.stats.errors <= MAX_LOGGED_ERRORS {
            log!(
                "{:?} id {} sector {} ({} sectors) failed: {what}{}",
                req.op,
                req.id,
                req.sector,
                req.nr_sectors(),
                if self.stats.errors == MAX_LOGGED_ERRORS {
                    " (further errors not logged)"
                } else {
                    ""
                }
            );
        }
        RSP_ERROR
    }

    /// Applies the policy (read-only, device size) to `req`: the byte offset to serve it at, or
    /// the error status to answer it with.
    fn check(&mut self, req: &Request) -> Result<u64, i16> {
        match req.op {
            Op::Read => self.stats.reads += 1,
            Op::Write => self.stats.writes += 1,
            Op::Flush => self.stats.flushes += 1,
            Op::Discard => self.stats.discards += 1,
            Op::WriteZeroes => self.stats.write_zeroes += 1,
        }
        let fua = req.fua() && req.op.writes();
        self.stats.fua_writes += u64::from(fua && req.op == Op::Write);
        let need = req.op.feature() | if fua { blktap::uapi::FEAT_FUA } else { 0 };
        if need & self.features != need {
            // Never sent by a kernel that did not agree: a bad request, answered as such.
            self.stats.unnegotiated += 1;
            self.error(req, &"operation not negotiated");
            return Err(RSP_EOPNOTSUPP);
        }
        if req.op.writes() && self.read_only {
            return Err(self.error(req, &"write to a read-only device"));
        }
        let size = self.backend.size();
        match req.byte_range() {
            Some(range) if range.end <= size => Ok(range.start),
            _ => Err(self.error(
                req,
                &format_args!("beyond the end of the device ({size} bytes)"),
            )),
        }
    }

    /// Serves validated requests together (the backend may overlap or merge them) and sets
    /// `status[i]` to the response status of `reqs[i]`.
    pub fn handle_all(&mut self, reqs: &[Request], status: &mut [i16], mem: RingMemory<'_>) {
        let mut ios = std::mem::take(&mut self.ios);
        ios.clear();
        for (i, req) in reqs.iter().enumerate() {
            match self.check(req) {
                Ok(offset) => ios.push(Io::new(i, offset, *req)),
                Err(st) => status[i] = st,
            }
        }
        // A deep ring's batch goes to the backend in pieces it has buffers for (iovecs,
        // io_uring entries): 32 requests, or the whole batch on io_uring.
        let most = self.backend.batch_max().max(1);
        for chunk in ios.chunks_mut(most) {
            self.backend.serve(chunk, mem);
        }
        for io in ios.iter_mut() {
            status[io.index] = match std::mem::replace(&mut io.result, Ok(())) {
                Ok(()) => RSP_OKAY,
                Err(e) => self.error(&io.req, &e),
            };
        }
        self.ios = ios;
    }

    /// Drains the ring up to `req_prod`, answers every request, then publishes the responses
    /// and calls `kick` (the `RESPOND` ioctl) once if there were any.
    pub fn serve_batch<K>(
        &mut self,
        back: &mut BackRing,
        mem: RingMemory<'_>,
        kick: K,
    ) -> blktap::Result<Batch>
    where
        K: FnOnce() -> blktap::Result<()>,
    {
        let batch = back.serve_all(mem, |reqs, status| self.handle_all(reqs, status, mem), kick)?;
        if batch.responses > 0 {
            self.stats.batches += 1;
        }
        if let Some(e) = batch.last_invalid {
            self.stats.invalid += u64::from(batch.invalid);
            log!(
                "{} malformed request(s) answered with an error: {e}",
                batch.invalid
            );
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{FileBackend, MemBackend, NullBackend};
    use blktap::ring::Mapping;
    use blktap::uapi::{
        RingRequest, RingResponse, MMAP_SIZE, OP_READ, OP_WRITE, RING_SIZE, SEGMENT_MAX,
    };
    use std::sync::mpsc;
    use std::time::Duration;

    /// Deterministic xorshift generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn new_ring() -> Mapping {
        let m = Mapping::anonymous(MMAP_SIZE).unwrap();
        m.memory().unwrap().init();
        m
    }

    /// A random request of the shape the kernel produces: up to 11 page-contained segments,
    /// contiguous on disk, the inner ones covering whole pages.
    fn random_request(rng: &mut Rng, id: u32, disk_sectors: u64) -> RingRequest {
        let nsegs = 1 + rng.below(u64::from(SEGMENT_MAX)) as usize;
        let mut segs = vec![(0u8, 7u8); nsegs];
        segs[0].0 = rng.below(8) as u8;
        let last = nsegs - 1;
        segs[last].1 = (segs[last].0 + rng.below(u64::from(8 - segs[last].0)) as u8).min(7);
        let sectors: u64 = segs.iter().map(|&(f, l)| u64::from(l - f) + 1).sum();
        let sector = rng.below(disk_sectors - sectors + 1);
        let op = if rng.below(2) == 0 { OP_READ } else { OP_WRITE };
        RingRequest::new(op, u64::from(id), sector, &segs)
    }

    /// A fake kernel drives random I/O through the ring against a daemon thread serving a
    /// RAM disk, keeping up to 32 requests in flight, and checks every byte read back
    /// against its own model of the disk.
    #[test]
    fn fake_kernel_round_trips_through_mem_backend() {
        const DISK: u64 = 1 << 20;
        const TOTAL: u32 = 3000;
        let mapping = new_ring();
        let mem = mapping.memory().unwrap();
        let (poll_tx, poll_rx) = mpsc::channel::<bool>();
        let (kick_tx, kick_rx) = mpsc::channel::<()>();

        let stats = std::thread::scope(|s| {
            let daemon = s.spawn(move || {
                let mut server = Server::new(Box::new(MemBackend::new(DISK).unwrap()), false);
                let mut back = BackRing::new();
                // `true` = "poll returned POLLIN", `false` = stop.
                while poll_rx.recv().unwrap() {
                    server
                        .serve_batch(&mut back, mem, || {
                            kick_tx.send(()).unwrap();
                            Ok(())
                        })
                        .unwrap();
                }
                server.stats()
            });

            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut model = vec![0u8; DISK as usize];
            let mut free_ids: Vec<u32> = (0..RING_SIZE).rev().collect();
            let mut inflight: Vec<Option<(RingRequest, Vec<u8>)>> = vec![None; RING_SIZE as usize];
            let (mut req_prod_pvt, mut rsp_cons, mut submitted, mut completed) =
                (0u32, 0u32, 0u32, 0u32);
            let (mut reads_checked, mut batches) = (0u32, 0u32);

            while completed < TOTAL {
                // Queue a random number of requests while slots are free.
                let want = 1 + rng.below(u64::from(RING_SIZE)) as u32;
                let mut queued = 0;
                while queued < want && submitted < TOTAL {
                    let Some(id) = free_ids.pop() else { break };
                    let raw = random_request(&mut rng, id, DISK / 512);
                    let req = Request::parse(&raw).unwrap();
                    let off = req.byte_range().unwrap().start as usize;
                    let len = req.len_bytes() as usize;
                    let expected = if raw.operation == OP_WRITE {
                        let mut data = vec![0u8; len];
                        data.iter_mut().for_each(|b| *b = rng.next() as u8);
                        fill_request(&req, mem, &data);
                        model[off..off + len].copy_from_slice(&data);
                        Vec::new()
                    } else {
                        // Stale data in the pages, as with the kernel's unzeroed pool pages.
                        req.buffers(mem).for_each(|b| b.fill(0xee));
                        model[off..off + len].to_vec()
                    };
                    mem.write_request(req_prod_pvt, &raw);
                    req_prod_pvt = req_prod_pvt.wrapping_add(1);
                    inflight[id as usize] = Some((raw, expected));
                    submitted += 1;
                    queued += 1;
                }
                mem.set_req_prod(req_prod_pvt);
                poll_tx.send(true).unwrap();
                kick_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("no RESPOND");
                batches += 1;

                let rsp_prod = mem.rsp_prod();
                assert_eq!(
                    rsp_prod, req_prod_pvt,
                    "every published request is answered"
                );
                while rsp_cons != rsp_prod {
                    let rsp = mem.read_response(rsp_cons);
                    rsp_cons = rsp_cons.wrapping_add(1);
                    let (raw, expected) = inflight[rsp.id as usize]
                        .take()
                        .expect("response to an idle id");
                    assert_eq!(rsp, RingResponse::new(raw.id, raw.operation, RSP_OKAY));
                    if raw.operation == OP_READ {
                        let req = Request::parse(&raw).unwrap();
                        let got = request_data(&req, mem);
                        assert!(
                            got == expected,
                            "read id {} sector {} returned wrong data",
                            raw.id,
                            raw.sector_number
                        );
                        reads_checked += 1;
                    }
                    free_ids.push(rsp.id as u32);
                    completed += 1;
                }
            }
            poll_tx.send(false).unwrap();
            let stats = daemon.join().unwrap();
            assert!(reads_checked > TOTAL / 3);
            assert_eq!(stats.batches, u64::from(batches));
            stats
        });
        assert_eq!(stats.reads + stats.writes, u64::from(TOTAL));
        assert_eq!(stats.errors, 0);
    }

    fn serve_one(
        server: &mut Server,
        mapping: &Mapping,
        back: &mut BackRing,
        raw: RingRequest,
    ) -> RingResponse {
        let mem = mapping.memory().unwrap();
        let idx = back.req_cons();
        mem.write_request(idx, &raw);
        mem.set_req_prod(idx.wrapping_add(1));
        let mut kicked = false;
        server
            .serve_batch(back, mem, || {
                kicked = true;
                Ok(())
            })
            .unwrap();
        assert!(kicked);
        assert_eq!(mem.rsp_prod(), idx.wrapping_add(1));
        mem.read_response(idx)
    }

    #[test]
    fn policy_errors() {
        let mapping = new_ring();
        let mut back = BackRing::new();
        let mut ro = Server::new(Box::new(MemBackend::new(8192).unwrap()), true);
        let w = RingRequest::new(OP_WRITE, 0, 0, &[(0, 7)]);
        assert_eq!(serve_one(&mut ro, &mapping, &mut back, w).status, RSP_ERROR);
        let r = RingRequest::new(OP_READ, 1, 8, &[(0, 7)]);
        assert_eq!(serve_one(&mut ro, &mapping, &mut back, r).status, RSP_OKAY);
        let past_end = RingRequest::new(OP_READ, 2, 9, &[(0, 7)]);
        assert_eq!(
            serve_one(&mut ro, &mapping, &mut back, past_end).status,
            RSP_ERROR
        );
        let huge = RingRequest::new(OP_READ, 3, u64::MAX / 256, &[(0, 7)]);
        assert_eq!(
            serve_one(&mut ro, &mapping, &mut back, huge).status,
            RSP_ERROR
        );
        let bad = RingRequest::new(7, 4, 0, &[(0, 7)]);
        let rsp = serve_one(&mut ro, &mapping, &mut back, bad);
        assert_eq!((rsp.id, rsp.operation, rsp.status), (4, 7, RSP_ERROR));
        let s = ro.stats();
        assert_eq!(
            (s.reads, s.writes, s.errors, s.invalid, s.batches),
            (3, 1, 3, 1, 5)
        );
    }

    #[test]
    fn negotiated_operations_only() {
        use blktap::uapi::{
            RingRangeRequest, FEATURES_ALL, OP_DISCARD, OP_FLUSH, OP_WRITE_ZEROES, REQ_FUA,
            RSP_EOPNOTSUPP,
        };
        let mapping = new_ring();
        let mut back = BackRing::new();
        let mut server = Server::new(Box::new(MemBackend::new(1 << 20).unwrap()), false);
        let flush = RingRequest::new(OP_FLUSH, 0, 0, &[]);
        let trim = RingRangeRequest::new(OP_DISCARD, 0, 1, 0, 8).to_request();
        let mut fua = RingRequest::new(OP_WRITE, 2, 0, &[(0, 7)]);
        fua.flags = REQ_FUA;
        // A V-XS session: none of them was agreed.
        for raw in [flush, trim, fua] {
            let rsp = serve_one(&mut server, &mapping, &mut back, raw);
            assert_eq!((rsp.operation, rsp.status), (raw.operation, RSP_EOPNOTSUPP));
        }
        server.set_features(FEATURES_ALL);
        // Write a pattern, zero half of it, read it back.
        let mem = mapping.memory().unwrap();
        mem.segment_buf(2, 0, &blktap::uapi::Segment::new(0, 7))
            .fill(0xa5);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, fua).status,
            RSP_OKAY
        );
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, flush).status,
            RSP_OKAY
        );
        let wz = RingRangeRequest::new(OP_WRITE_ZEROES, 0, 3, 4, 4).to_request();
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, wz).status,
            RSP_OKAY
        );
        let r = RingRequest::new(OP_READ, 4, 0, &[(0, 7)]);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, r).status,
            RSP_OKAY
        );
        let got = mem
            .segment_buf(4, 0, &blktap::uapi::Segment::new(0, 7))
            .to_vec();
        assert!(got[..2048].iter().all(|&b| b == 0xa5));
        assert!(got[2048..].iter().all(|&b| b == 0));
        // Past the end.
        let far = RingRangeRequest::new(OP_DISCARD, 0, 5, 2040, 16).to_request();
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, far).status,
            RSP_ERROR
        );
        let s = server.stats();
        assert_eq!(
            (
                s.flushes,
                s.discards,
                s.write_zeroes,
                s.fua_writes,
                s.unnegotiated
            ),
            (2, 2, 1, 2, 3)
        );
    }

    #[test]
    fn file_backend_punches_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("blktapd-trim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![0x11u8; 1 << 20]).unwrap();
        let mut b = FileBackend::open(&path, false).unwrap();
        let before = std::fs::metadata(&path).unwrap().blocks();
        b.discard(0, 512 * 1024).unwrap();
        b.flush().unwrap();
        let after = std::fs::metadata(&path).unwrap().blocks();
        // Where the file system can punch holes (not all can), the blocks go.
        if after < before {
            assert!(
                after <= before - 512 * 1024 / 512 + 64,
                "{before} -> {after}"
            );
        }
        b.write_zeroes(512 * 1024, 4096, true).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert!(data[..512 * 1024 + 4096].iter().all(|&x| x == 0));
        assert!(data[512 * 1024 + 4096..].iter().all(|&x| x == 0x11));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn null_backend_leaves_data_alone() {
        let mapping = new_ring();
        let mem = mapping.memory().unwrap();
        let mut back = BackRing::new();
        let mut server = Server::new(Box::new(NullBackend::new(1 << 20)), false);
        mem.segment_buf(5, 0, &blktap::uapi::Segment::new(0, 7))
            .fill(0x5a);
        let r = RingRequest::new(OP_READ, 5, 0, &[(0, 7)]);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, r).status,
            RSP_OKAY
        );
        // SAFETY: test-only read inside the mapping.
        assert_eq!(unsafe { *mem.data_ptr(5, 0).add(100) }, 0x5a);
    }

    #[test]
    fn file_backend_round_trip() {
        let dir = std::env::temp_dir().join(format!("blktapd-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![0u8; 64 * 1024 + 100]).unwrap();

        let mapping = new_ring();
        let mem = mapping.memory().unwrap();
        let mut back = BackRing::new();
        let backend = FileBackend::open(&path, false).unwrap();
        assert_eq!(
            backend.size(),
            64 * 1024,
            "size rounded down to whole sectors"
        );
        let mut server = Server::new(Box::new(backend), false);

        // Write 3 segments: sectors 4..=7 of page 0, all of page 1, sector 0 of page 2.
        let w = RingRequest::new(OP_WRITE, 9, 3, &[(4, 7), (0, 7), (0, 0)]);
        let req = Request::parse(&w).unwrap();
        let pattern: Vec<u8> = (0..req.len_bytes() as usize)
            .map(|i| (i % 251) as u8)
            .collect();
        fill_request(&req, mem, &pattern);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, w).status,
            RSP_OKAY
        );
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[3 * 512..3 * 512 + pattern.len()], &pattern[..]);
        assert!(on_disk[..3 * 512].iter().all(|&b| b == 0));

        // Read it back through a different slot with a different segment shape.
        let r = RingRequest::new(OP_READ, 20, 3, &[(0, 7), (0, 4)]);
        let req = Request::parse(&r).unwrap();
        req.buffers(mem).for_each(|b| b.fill(0xff));
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, r).status,
            RSP_OKAY
        );
        let got = request_data(&req, mem);
        assert_eq!(&got[..], &pattern[..]);

        // Past the end of the image.
        let r = RingRequest::new(OP_READ, 0, 127, &[(0, 1)]);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, r).status,
            RSP_ERROR
        );

        // Read-only open refuses writes at the policy level and opens O_RDONLY.
        let ro = FileBackend::open(&path, true).unwrap();
        let mut server = Server::new(Box::new(ro), true);
        let w = RingRequest::new(OP_WRITE, 1, 0, &[(0, 7)]);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, w).status,
            RSP_ERROR
        );
        let r = RingRequest::new(OP_READ, 1, 3, &[(0, 7)]);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, r).status,
            RSP_OKAY
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes `data` into the buffers of `req`.
    fn fill_request(req: &Request, mem: RingMemory<'_>, data: &[u8]) {
        let mut pos = 0;
        for b in req.buffers(mem) {
            b.copy_from_slice(&data[pos..pos + b.len()]);
            pos += b.len();
        }
    }

    /// The bytes in the buffers of `req`.
    fn request_data(req: &Request, mem: RingMemory<'_>) -> Vec<u8> {
        req.buffers(mem).flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn file_backend_serves_batches_with_sequential_runs() {
        const DISK: usize = 1 << 20;
        let dir = std::env::temp_dir().join(format!("blktapd-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![0u8; DISK]).unwrap();
        let mapping = new_ring();
        let mem = mapping.memory().unwrap();
        let mut server = Server::new(Box::new(FileBackend::open(&path, false).unwrap()), false);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let full = [(0u8, 7u8); SEGMENT_MAX as usize];

        // One batch: three full 44 KiB writes continuing one another from sector 64 (one run),
        // a partial-page write elsewhere, a write past the end, and a second run of two.
        let writes = [
            RingRequest::new(OP_WRITE, 4, 64, &full),
            RingRequest::new(OP_WRITE, 5, 64 + 88, &full),
            RingRequest::new(OP_WRITE, 6, 64 + 176, &full),
            RingRequest::new(OP_WRITE, 9, 1000, &[(2, 7), (0, 3)]),
            RingRequest::new(OP_WRITE, 10, (DISK / 512) as u64 - 1, &[(0, 1)]),
            RingRequest::new(OP_WRITE, 11, 1500, &[(0, 7)]),
            RingRequest::new(OP_WRITE, 12, 1508, &[(0, 7), (0, 7)]),
        ];
        let reqs: Vec<Request> = writes.iter().map(|r| Request::parse(r).unwrap()).collect();
        let mut model = vec![0u8; DISK];
        for req in &reqs {
            let data: Vec<u8> = (0..req.len_bytes()).map(|_| rng.next() as u8).collect();
            fill_request(req, mem, &data);
            let off = req.byte_range().unwrap().start as usize;
            if off + data.len() <= DISK {
                model[off..off + data.len()].copy_from_slice(&data);
            }
        }
        let mut status = [0i16; 7];
        server.handle_all(&reqs, &mut status, mem);
        assert_eq!(
            status,
            [RSP_OKAY, RSP_OKAY, RSP_OKAY, RSP_OKAY, RSP_ERROR, RSP_OKAY, RSP_OKAY]
        );
        assert!(
            std::fs::read(&path).unwrap() == model,
            "file differs from the model"
        );

        // Read the same ranges back in one batch through other slots, stale data in the pages.
        let reads: Vec<Request> = writes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 4)
            .map(|(i, w)| {
                let segs: Vec<(u8, u8)> = w.seg[..usize::from(w.nr_segments)]
                    .iter()
                    .map(|s| (s.first_sect, s.last_sect))
                    .collect();
                let r = RingRequest::new(OP_READ, 20 + i as u64, w.sector_number, &segs);
                Request::parse(&r).unwrap()
            })
            .collect();
        reads
            .iter()
            .for_each(|r| r.buffers(mem).for_each(|b| b.fill(0xee)));
        let mut status = [RSP_ERROR; 6];
        server.handle_all(&reads, &mut status, mem);
        assert_eq!(status, [RSP_OKAY; 6]);
        for req in &reads {
            let off = req.byte_range().unwrap().start as usize;
            let len = req.len_bytes() as usize;
            assert!(
                request_data(req, mem) == model[off..off + len],
                "read id {} sector {} returned wrong data",
                req.id,
                req.sector
            );
        }
        let s = server.stats();
        assert_eq!((s.reads, s.writes, s.errors), (6, 7, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_backend_on_tmpfs() {
        // /dev/shm is tmpfs, which refuses O_DIRECT opens with EINVAL before Linux 6.6.
        let shm = std::path::Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let path = shm.join(format!("blktapd-test-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let b = FileBackend::open(&path, false).unwrap();
        let mapping = new_ring();
        let mut back = BackRing::new();
        let mut server = Server::new(Box::new(b), false);
        let r = RingRequest::new(OP_READ, 0, 0, &[(0, 7), (0, 7)]);
        assert_eq!(
            serve_one(&mut server, &mapping, &mut back, r).status,
            RSP_OKAY
        );
        // SAFETY: test-only read inside the mapping.
        let last = unsafe { *mapping.memory().unwrap().data_ptr(0, 1).add(4095) };
        assert_eq!(last, 7);
        std::fs::remove_file(&path).unwrap();
    }
}
