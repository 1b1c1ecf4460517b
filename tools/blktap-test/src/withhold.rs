//! `withhold`: a daemon that holds back a write, as a paused or stalled tapdisk does, to show
//! whether a write the kernel already failed can land after a newer one (issue 19, point 1).
//!
//! It serves a RAM disk, but withholds the first write to sector 0 (W1: it keeps a copy of its
//! data and does not answer it). If a second write to sector 0 (W2) arrives, it applies W2 and
//! then W1, in that order, and answers both: the reordering a daemon holding both may do. If
//! `--go` appears first, it applies W1 alone and answers it (late). Either way it then writes
//! the first 4 KiB of the disk to `--dump` and goes on serving normally until killed.

use crate::daemon::Backend;
use blktap::ring::{Op, Request, Ring, RingMemory};
use blktap::uapi::{DeviceInfo, RingResponse, RING_SIZE, RSP_ERROR, RSP_OKAY};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of `withhold`.
#[derive(Debug, Args)]
pub struct WithholdArgs {
    /// Ring node of an allocated tap (e.g. /dev/blktap/blktap0).
    #[arg(long, value_name = "PATH")]
    ring: PathBuf,

    /// Disk size in MiB.
    #[arg(long, default_value_t = 16)]
    size_mib: u64,

    /// Where to write the first 4 KiB of the disk once the withheld write was applied.
    #[arg(long, value_name = "FILE")]
    dump: PathBuf,

    /// Apply the withheld write alone (and answer it) once this file exists.
    #[arg(long, value_name = "FILE")]
    go: PathBuf,
}

/// The withheld write: its ring id and operation (to answer it) and a copy of its data.
struct Held {
    id: u64,
    operation: u8,
    offset: usize,
    data: Vec<u8>,
}

impl Held {
    fn take(mem: RingMemory<'_>, id: u64, operation: u8, req: &Request) -> Self {
        let mut data = Vec::new();
        for b in req.buffers(mem) {
            data.extend_from_slice(&b.to_vec());
        }
        Self {
            id,
            operation,
            offset: (req.sector * 512) as usize,
            data,
        }
    }

    fn apply(&self, backend: &mut Backend) {
        backend.disk[self.offset..self.offset + self.data.len()].copy_from_slice(&self.data);
    }
}

/// Writes a response and advances the private producer index.
fn answer(mem: RingMemory<'_>, backend: &mut Backend, id: u64, operation: u8, status: i16) {
    mem.write_response(
        backend.rsp_prod_pvt,
        &RingResponse::new(id, operation, status),
    );
    backend.rsp_prod_pvt = backend.rsp_prod_pvt.wrapping_add(1);
    backend.served += 1;
}

/// Writes the first 4 KiB of the disk to `path` (through a temporary file and a rename, so
/// that a reader never sees it half written).
fn dump(backend: &Backend, path: &Path) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &backend.disk[..4096])
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("dump to {}: {e}", path.display()))?;
    eprintln!(
        "withhold: sector 0 dumped (first byte {:#04x})",
        backend.disk[0]
    );
    Ok(())
}

/// Runs the daemon until it is killed; returns only on an error.
pub fn run(args: &WithholdArgs) -> Result<(), String> {
    let bytes = args.size_mib << 20;
    let mut ring = Ring::open(&args.ring).map_err(|e| e.to_string())?;
    ring.map().map_err(|e| e.to_string())?;
    ring.create_device(&DeviceInfo::new(bytes / 512, 512, false))
        .map_err(|e| e.to_string())?;
    let mem = ring.memory().ok_or("ring not mapped")?;
    let mut b = Backend::new(bytes as usize);
    let mut held: Option<Held> = None;
    let mut done = false;
    eprintln!("withhold: serving {}", args.ring.display());
    loop {
        ring.poll(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let prod = mem.req_prod();
        let n = prod.wrapping_sub(b.req_cons);
        if n > RING_SIZE {
            return Err(format!(
                "req_prod {prod} is {n} past req_cons {}",
                b.req_cons
            ));
        }
        let before = b.rsp_prod_pvt;
        for _ in 0..n {
            let raw = mem.read_request(b.req_cons);
            b.req_cons = b.req_cons.wrapping_add(1);
            let Ok(req) = Request::parse(&raw) else {
                answer(mem, &mut b, raw.id, raw.operation, RSP_ERROR);
                continue;
            };
            let to_sector0 = !done && req.op == Op::Write && req.sector == 0;
            if to_sector0 && held.is_none() {
                let h = Held::take(mem, raw.id, raw.operation, &req);
                eprintln!(
                    "withhold: withholding write id {} at sector 0 ({} bytes, first byte {:#04x})",
                    h.id,
                    h.data.len(),
                    h.data.first().copied().unwrap_or(0)
                );
                held = Some(h);
                continue;
            }
            let status = b.handle(mem, &req);
            answer(mem, &mut b, raw.id, raw.operation, status);
            // A second write to sector 0 (the first one is held, else it was taken above).
            if let Some(h) = to_sector0.then(|| held.take()).flatten() {
                h.apply(&mut b);
                answer(mem, &mut b, h.id, h.operation, RSP_OKAY);
                eprintln!(
                    "withhold: a second write to sector 0 (id {}) applied, then the withheld \
                     one (id {}); both answered",
                    raw.id, h.id
                );
                done = true;
                dump(&b, &args.dump)?;
            }
        }
        if !done && args.go.exists() {
            if let Some(h) = held.take() {
                h.apply(&mut b);
                answer(mem, &mut b, h.id, h.operation, RSP_OKAY);
                eprintln!(
                    "withhold: go: the withheld write (id {}) applied alone and answered",
                    h.id
                );
                done = true;
                dump(&b, &args.dump)?;
            }
        }
        if b.rsp_prod_pvt != before {
            mem.set_rsp_prod(b.rsp_prod_pvt);
            ring.respond().map_err(|e| e.to_string())?;
        }
    }
}
