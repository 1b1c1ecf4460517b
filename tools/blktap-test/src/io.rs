//! `io`: verified O_DIRECT I/O on tap disks, for load and daemon-death tests.
//!
//! Each thread owns a range of 4 KiB blocks of one disk and writes blocks whose content
//! names the block and a generation number, then reads them back and checks them against a
//! model. A write that fails leaves its blocks ambiguous (old or new content); a read narrows
//! them again. With `--tolerate-eio` failures with EIO (a killed daemon) are counted, not
//! fatal; with `--expect-eio` every I/O must fail with EIO.

use crate::ktap::Ktap;
use crate::rng::Rng;
use crate::util::{self, AlignedBuf, BlockModel, PlannedIo, BLOCK};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options of the `io` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct IoArgs {
    /// Disk node to exercise (repeatable).
    #[arg(long = "disk", required = true, value_name = "PATH")]
    pub disks: Vec<PathBuf>,
    /// Threads per disk, each on its own range of blocks.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Run for this many seconds (or until --until or --ops).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Stop each thread after this many I/Os.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Stop once this file exists.
    #[arg(long, value_name = "FILE")]
    pub until: Option<PathBuf>,
    /// Random seed [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// 4 KiB blocks used per disk, from the start of the disk.
    #[arg(long, default_value_t = 512)]
    pub blocks: u64,
    /// Largest I/O in 4 KiB blocks.
    #[arg(long, default_value_t = 16)]
    pub max_blocks: u64,
    /// Percentage of writes.
    #[arg(long, default_value_t = 50)]
    pub write_percent: u64,
    /// EIO is expected from time to time (daemon kills): count it, do not fail.
    #[arg(long)]
    pub tolerate_eio: bool,
    /// Every I/O must fail with EIO (no daemon).
    #[arg(long, conflicts_with = "tolerate_eio")]
    pub expect_eio: bool,
    /// Longest time a single I/O may take, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub io_timeout: f64,
    /// Nice value for the I/O threads (e.g. 19 to leave the CPU to daemons being restarted).
    #[arg(long, allow_hyphen_values = true)]
    pub nice: Option<i32>,
}

/// Counts of one thread.
#[derive(Default, Debug, Clone)]
struct Counts {
    ios: u64,
    reads: u64,
    writes: u64,
    eio: u64,
    other_errors: u64,
    unexpected_ok: u64,
    mismatches: u64,
    max_latency: Duration,
    problems: Vec<String>,
}

impl Counts {
    fn problem(&mut self, what: String) {
        if self.problems.len() < 5 {
            self.problems.push(what);
        }
    }

    fn add(&mut self, o: &Counts) {
        self.ios += o.ios;
        self.reads += o.reads;
        self.writes += o.writes;
        self.eio += o.eio;
        self.other_errors += o.other_errors;
        self.unexpected_ok += o.unexpected_ok;
        self.mismatches += o.mismatches;
        self.max_latency = self.max_latency.max(o.max_latency);
        for p in &o.problems {
            self.problem(p.clone());
        }
    }
}

/// Shared state of the threads.
struct Shared<'a> {
    args: &'a IoArgs,
    start: Instant,
    stop: AtomicBool,
    /// Per thread: start of the I/O in flight, in ms since `start` plus one (0 = idle).
    in_flight: Vec<AtomicU64>,
    hangs: Mutex<Vec<String>>,
}

impl Shared<'_> {
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.start.elapsed().as_secs_f64() >= self.args.seconds
            || self.args.until.as_ref().is_some_and(|f| f.exists())
    }
}

fn worker(sh: &Shared<'_>, slot: usize, disk: &Path, model: &mut BlockModel, seed: u64) -> Counts {
    let a = sh.args;
    let mut c = Counts::default();
    let fd = match util::open_disk(disk) {
        Ok(fd) => fd,
        Err(e) => {
            c.other_errors += 1;
            c.problem(format!("open {}: {}", disk.display(), util::errno_name(e)));
            return c;
        }
    };
    let mut rng = Rng::new(seed);
    let max = a.max_blocks.clamp(1, model.len());
    let mut buf = AlignedBuf::new(max as usize * BLOCK);
    while !sh.should_stop() && a.ops.is_none_or(|n| c.ios < n) {
        let io = model.plan_io(&mut rng, max, a.write_percent, &mut buf);
        let t0 = Instant::now();
        let r = util::tracked_io(fd.as_raw_fd(), &mut buf, &io, &sh.in_flight[slot], sh.start);
        let len = io.len();
        let PlannedIo {
            first,
            blocks: n,
            write,
            gens,
        } = io;
        let lat = t0.elapsed();
        c.max_latency = c.max_latency.max(lat);
        c.ios += 1;
        if write {
            c.writes += 1;
        } else {
            c.reads += 1;
        }
        let what = format!(
            "{} of blocks {first}..{} of {}",
            if write { "write" } else { "read" },
            first + n,
            disk.display()
        );
        match r {
            Ok(got) if got == len => {
                if a.expect_eio {
                    c.unexpected_ok += 1;
                    c.problem(format!("{what} succeeded, expected EIO"));
                }
                if write {
                    for (i, g) in gens.iter().enumerate() {
                        model.written(first + i as u64, *g);
                    }
                } else {
                    for e in model.check_reads(first, buf.slice(len)) {
                        c.mismatches += 1;
                        c.problem(format!("{what}: {e}"));
                    }
                }
            }
            Ok(got) => {
                c.other_errors += 1;
                c.problem(format!("{what}: short transfer of {got} bytes"));
                for (i, g) in gens.iter().enumerate() {
                    model.maybe_written(first + i as u64, *g);
                }
            }
            Err(e) => {
                for (i, g) in gens.iter().enumerate() {
                    model.maybe_written(first + i as u64, *g);
                }
                if e == libc::EIO && (a.tolerate_eio || a.expect_eio) {
                    c.eio += 1;
                    if a.tolerate_eio {
                        // The daemon is gone: do not spin while it is restarted.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                } else {
                    c.other_errors += 1;
                    c.problem(format!("{what}: {}", util::errno_name(e)));
                }
            }
        }
    }
    c
}

/// Runs the `io` subcommand.
pub fn run(a: &IoArgs, t: &mut Ktap) {
    let seed = a.seed.unwrap_or_else(Rng::time_seed);
    t.diag(&format!("io: seed {seed}"));
    if a.threads == 0 || a.blocks < u64::from(a.threads) {
        return t.fail("io arguments", &"need at least one block per thread");
    }
    if let Some(n) = a.nice {
        // SAFETY: changes the scheduling priority of this thread only; the I/O threads
        // inherit it.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
            t.diag(&format!("io: setpriority {n}: {}", blktap::Errno::last()));
        }
    }
    let nthreads = a.disks.len() * a.threads as usize;
    let sh = Shared {
        args: a,
        start: Instant::now(),
        stop: AtomicBool::new(false),
        in_flight: (0..nthreads).map(|_| AtomicU64::new(0)).collect(),
        hangs: Mutex::new(Vec::new()),
    };
    let per = a.blocks / u64::from(a.threads);
    let timeout_ms = (a.io_timeout * 1000.0) as u64;
    let results: Vec<(PathBuf, Counts)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (d, disk) in a.disks.iter().enumerate() {
            for th in 0..a.threads {
                let slot = d * a.threads as usize + th as usize;
                let sh = &sh;
                let tag = seed ^ ((slot as u64 + 1) << 48);
                let tseed = seed.wrapping_add(slot as u64 * 7919);
                handles.push((
                    disk.clone(),
                    s.spawn(move || {
                        let mut model = BlockModel::new(tag, u64::from(th) * per, per);
                        worker(sh, slot, disk, &mut model, tseed)
                    }),
                ));
            }
        }
        // Watch for I/Os that take too long while the workers run.
        let mut reported = vec![0u64; nthreads];
        while handles.iter().any(|(_, h)| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            let now = sh.start.elapsed().as_millis() as u64 + 1;
            for (i, f) in sh.in_flight.iter().enumerate() {
                let since = f.load(Ordering::SeqCst);
                if since != 0 && now.saturating_sub(since) > timeout_ms && reported[i] != since {
                    reported[i] = since;
                    let disk = &a.disks[i / a.threads as usize];
                    let msg = format!(
                        "an I/O of thread {i} on {} has taken more than {:.1} s",
                        disk.display(),
                        a.io_timeout
                    );
                    t.diag(&msg);
                    sh.hangs.lock().expect("hang list").push(msg);
                }
            }
        }
        handles
            .into_iter()
            .map(|(d, h)| (d, h.join().expect("I/O thread panicked")))
            .collect()
    });

    let mut total = Counts::default();
    for disk in &a.disks {
        let mut c = Counts::default();
        for (_, r) in results.iter().filter(|(d, _)| d == disk) {
            c.add(r);
        }
        t.diag(&format!(
            "io: disk={} ios={} reads={} writes={} eio={} errors={} mismatches={} max_latency_ms={}",
            disk.display(),
            c.ios,
            c.reads,
            c.writes,
            c.eio,
            c.other_errors,
            c.mismatches,
            c.max_latency.as_millis()
        ));
        let name = disk.display();
        t.check(
            &format!("{name}: data read back is correct"),
            c.mismatches == 0,
            || c.problems.join("; "),
        );
        t.check(
            &format!("{name}: no unexpected I/O errors"),
            c.other_errors == 0,
            || c.problems.join("; "),
        );
        if a.expect_eio {
            t.check(
                &format!("{name}: every I/O failed with EIO"),
                c.unexpected_ok == 0 && c.ios > 0,
                || format!("{} of {} succeeded", c.unexpected_ok, c.ios),
            );
        }
        total.add(&c);
    }
    let hangs = sh.hangs.lock().expect("hang list").clone();
    t.check(
        &format!("every I/O finished within {:.1} s", a.io_timeout),
        hangs.is_empty() && total.max_latency.as_secs_f64() <= a.io_timeout,
        || {
            format!(
                "longest I/O {} ms; {}",
                total.max_latency.as_millis(),
                hangs.join("; ")
            )
        },
    );
    t.diag(&format!(
        "io-total: ios={} failed={} max_latency_ms={}",
        total.ios,
        total.eio,
        total.max_latency.as_millis()
    ));
}
