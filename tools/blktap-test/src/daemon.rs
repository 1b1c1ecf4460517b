//! A minimal daemon for the tests: serves a ring from a RAM disk, with its indices in the
//! open so that tests can break and repair them.

use blktap::ring::{Request, Ring, RingMemory};
use blktap::uapi::{RingResponse, SringHeader, RSP_ERROR, RSP_OKAY};
use std::mem::offset_of;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Duration;

/// Stores `value` in the shared ring's `req_event` (offset 4; V-XS daemons never write it).
/// A daemon that keeps it the Xen ring way asks the kernel for a poll level: ready while
/// `req_prod != req_event - 1`. Storing 0 right after mmap asks for the level from the start.
pub fn set_req_event(mem: RingMemory<'_>, value: u32) {
    let off = offset_of!(SringHeader, req_event);
    // SAFETY: `req_event` is a 4-byte aligned u32 of the header inside the valid ring page,
    // which the kernel reads concurrently: written atomically, never through a reference.
    unsafe { AtomicU32::from_ptr(mem.base().add(off).cast()) }.store(value, Ordering::Release);
}

/// The daemon's side of a ring: private indices and the RAM disk it serves.
#[derive(Debug)]
pub struct Backend {
    /// Next request index to consume.
    pub req_cons: u32,
    /// Next response index to write.
    pub rsp_prod_pvt: u32,
    /// Disk content.
    pub disk: Vec<u8>,
    /// Requests served so far.
    pub served: u64,
}

impl Backend {
    /// A zeroed RAM disk of `bytes` bytes and indices of a fresh mapping.
    pub fn new(bytes: usize) -> Self {
        Self {
            req_cons: 0,
            rsp_prod_pvt: 0,
            disk: vec![0; bytes],
            served: 0,
        }
    }

    /// Indices of a fresh mapping.
    pub fn reset(&mut self) {
        self.req_cons = 0;
        self.rsp_prod_pvt = 0;
    }

    /// Answers one request: copies data between the RAM disk and the request's pages.
    pub fn handle(&mut self, mem: RingMemory<'_>, req: &Request) -> i16 {
        let Some(range) = req.byte_range() else {
            return RSP_ERROR;
        };
        if range.end > self.disk.len() as u64 {
            return RSP_ERROR;
        }
        let mut off = range.start as usize;
        match req.op {
            blktap::ring::Op::Flush => return RSP_OKAY,
            blktap::ring::Op::Discard | blktap::ring::Op::WriteZeroes => {
                self.disk[off..range.end as usize].fill(0);
                return RSP_OKAY;
            }
            _ => {}
        }
        for b in req.buffers(mem) {
            let len = b.len();
            if req.op == blktap::ring::Op::Read {
                b.copy_from_slice(&self.disk[off..off + len]);
            } else {
                b.copy_to_slice(&mut self.disk[off..off + len]);
            }
            off += len;
        }
        RSP_OKAY
    }

    /// Consumes every request published up to `req_prod`, answers it, publishes the
    /// responses and issues `RESPOND`. Returns the number answered; fails if `req_prod` is
    /// more than a ring ahead of what was consumed (a kernel that overruns the ring).
    pub fn serve(&mut self, ring: &Ring) -> Result<u32, String> {
        let mem = ring.memory().ok_or("ring not mapped")?;
        self.serve_mem(mem, || ring.respond().map_err(|e| e.to_string()))
    }

    /// [`serve`](Self::serve) on any ring memory, with `kick` as `RESPOND`.
    pub fn serve_mem(
        &mut self,
        mem: RingMemory<'_>,
        kick: impl FnOnce() -> Result<(), String>,
    ) -> Result<u32, String> {
        let prod = mem.req_prod();
        let n = prod.wrapping_sub(self.req_cons);
        if n > mem.slots() {
            return Err(format!(
                "req_prod {prod} is {n} requests past req_cons {}",
                self.req_cons
            ));
        }
        for _ in 0..n {
            let raw = mem.read_request(self.req_cons);
            self.req_cons = self.req_cons.wrapping_add(1);
            let status = match Request::parse_in(&raw, &mem) {
                Ok(req) => self.handle(mem, &req),
                Err(_) => RSP_ERROR,
            };
            mem.write_response(
                self.rsp_prod_pvt,
                &RingResponse::new(raw.id, raw.operation, status),
            );
            self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
            self.served += 1;
        }
        if n > 0 {
            mem.set_rsp_prod(self.rsp_prod_pvt);
            kick()?;
        }
        Ok(n)
    }

    /// Serves the Xen ring way (`RING_FINAL_CHECK_FOR_REQUESTS`): takes and answers every
    /// published request, marks them taken (`req_event = req_cons + 1`), and looks again in
    /// case more were published meanwhile. Returns the number answered.
    pub fn serve_final_check(&mut self, ring: &Ring) -> Result<u32, String> {
        let mem = ring.memory().ok_or("ring not mapped")?;
        let mut total = 0;
        loop {
            total += self.serve(ring)?;
            set_req_event(mem, self.req_cons.wrapping_add(1));
            fence(Ordering::SeqCst);
            if mem.req_prod() == self.req_cons {
                return Ok(total);
            }
        }
    }

    /// Polls for up to `timeout`, then serves.
    pub fn poll_serve(&mut self, ring: &Ring, timeout: Duration) -> Result<u32, String> {
        ring.poll(Some(timeout)).map_err(|e| e.to_string())?;
        self.serve(ring)
    }
}

/// Serves `ring` from `backend` in a loop until `stop` is set; returns the first error.
pub fn serve_until(
    ring: &Ring,
    backend: &mut Backend,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        backend.poll_serve(ring, Duration::from_millis(50))?;
    }
    Ok(())
}

/// How a serving thread ended: `Err` with the panic payload if it panicked, else what
/// [`serve_until`] returned.
pub type Served = std::thread::Result<Result<(), String>>;

/// Runs `f` while `backend` serves `ring` ([`serve_until`]) in another thread, then stops and
/// joins that thread: the in-process daemon most scenarios need around their I/O.
pub fn while_serving(ring: &Ring, backend: &mut Backend, f: impl FnOnce()) -> Served {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let server = sc.spawn(|| serve_until(ring, backend, &stop));
        f();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use blktap::ring::Mapping;
    use blktap::uapi::{RingRequest, MMAP_SIZE, OP_READ, OP_WRITE};

    #[test]
    fn round_trip_in_memory() {
        let m = Mapping::anonymous(MMAP_SIZE).unwrap();
        let mem = m.memory().unwrap();
        mem.init();
        let mut b = Backend::new(1 << 16);
        let w = Request::parse(&RingRequest::new(OP_WRITE, 3, 8, &[(0, 7)])).unwrap();
        // SAFETY: test-only write inside the mapping.
        unsafe { std::ptr::write_bytes(mem.data_ptr(3, 0), 0xab, 4096) };
        assert_eq!(b.handle(mem, &w), RSP_OKAY);
        assert!(b.disk[4096..8192].iter().all(|&x| x == 0xab));
        let r = Request::parse(&RingRequest::new(OP_READ, 4, 8, &[(1, 1)])).unwrap();
        assert_eq!(b.handle(mem, &r), RSP_OKAY);
        // SAFETY: test-only read inside the mapping.
        assert_eq!(unsafe { *mem.data_ptr(4, 0).add(512) }, 0xab);
        let far = Request::parse(&RingRequest::new(OP_READ, 4, 1 << 20, &[(0, 7)])).unwrap();
        assert_eq!(b.handle(mem, &far), RSP_ERROR);
    }
}
