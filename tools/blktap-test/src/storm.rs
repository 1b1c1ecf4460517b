//! `storm`: several processes allocate, open, map, create, remove and free taps at the same
//! time, while others free and open random minors. Every call must end in one of the errno
//! values the design allows for that race, no process may hang, and once they have all
//! exited every tap they left must be freeable (nothing stays busy).

use crate::ktap::Ktap;
use crate::rng::Rng;
use crate::util::{self, ChildEnd};
use crate::Env;
use blktap::node::{self, NodeKind};
use blktap::ring::Ring;
use blktap::uapi::DeviceInfo;
use blktap::Control;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of the `storm` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Number of processes.
    #[arg(long, default_value_t = 4)]
    pub procs: u32,
    /// Operations per process.
    #[arg(long, default_value_t = 50)]
    pub iterations: u32,
    /// Random seed [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Mix of operations, one letter per weight unit: a (alloc+free), l (full life cycle:
    /// open, map, create, remove, close, free), r (FREE_TAP of random minors), p (open and
    /// close random rings), m (several allocs, frees in random order).
    #[arg(long, default_value = "aallllrppm")]
    pub mix: String,
    /// Seconds to wait for the processes before declaring a hang.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

struct Child<'a> {
    ctl: Control,
    nodes: &'a [PathBuf],
    rng: Rng,
    log: String,
    ops: u64,
    unexpected: u64,
}

impl Child<'_> {
    fn expect(&mut self, what: &str, errno: i32, allowed: &[i32]) {
        self.ops += 1;
        if !allowed.contains(&errno) {
            self.unexpected += 1;
            let _ = writeln!(
                self.log,
                "{what}: got {}, allowed {:?}",
                util::errno_name(errno),
                allowed
                    .iter()
                    .map(|&e| util::errno_name(e))
                    .collect::<Vec<_>>()
            );
        }
    }

    fn free_own(&mut self, minor: u32) {
        // A prowler may hold the ring open for a moment; a raider may have freed it.
        for _ in 0..200 {
            let r = util::rc(&self.ctl.free(minor));
            if r != libc::EBUSY {
                self.expect(&format!("FREE_TAP({minor}) own"), r, &[0, libc::ENODEV]);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.expect(
            &format!("FREE_TAP({minor}) own, 1 s of EBUSY"),
            libc::EBUSY,
            &[],
        );
    }

    fn alloc(&mut self) -> Option<u32> {
        match self.ctl.alloc() {
            Ok(i) => {
                self.ops += 1;
                Some(i.ring_minor)
            }
            Err(e) => {
                self.expect("ALLOC_TAP", e.errno().unwrap_or(-1), &[0]);
                None
            }
        }
    }

    fn node(&self, minor: u32) -> Option<&Path> {
        self.nodes.get(minor as usize).map(PathBuf::as_path)
    }

    fn lifecycle(&mut self) {
        let Some(minor) = self.alloc() else { return };
        let Some(path) = self.node(minor).map(Path::to_path_buf) else {
            return self.free_own(minor);
        };
        match Ring::open(&path) {
            Ok(mut ring) => {
                self.ops += 1;
                let r = util::rc(&ring.map());
                self.expect(&format!("mmap ring {minor}"), r, &[0]);
                if r == 0 && self.rng.chance(60) {
                    let c = ring.create_device_info(&DeviceInfo::new(2048, 512, false));
                    self.expect(&format!("CREATE_DEVICE {minor}"), util::rc(&c), &[0]);
                    if self.rng.chance(50) {
                        let r = util::rc(&ring.remove_device());
                        self.expect(&format!("REMOVE_DEVICE {minor}"), r, &[0]);
                    }
                }
                if self.rng.chance(50) {
                    ring.unmap();
                }
                drop(ring);
            }
            Err(e) => {
                let r = e.errno().unwrap_or(-1);
                self.expect(
                    &format!("open ring {minor}"),
                    r,
                    &[libc::ENXIO, libc::EBUSY],
                );
            }
        }
        self.free_own(minor);
    }

    fn run(&mut self, iterations: u32, mix: &[u8]) {
        let n = self.nodes.len() as u64;
        for _ in 0..iterations {
            match *self.rng.pick(mix) {
                b'a' => {
                    if let Some(m) = self.alloc() {
                        self.free_own(m);
                    }
                }
                b'l' => self.lifecycle(),
                b'r' => {
                    let m = self.rng.below(n) as u32;
                    let r = util::rc(&self.ctl.free(m));
                    self.expect(
                        &format!("FREE_TAP({m}) raid"),
                        r,
                        &[0, libc::ENODEV, libc::EBUSY],
                    );
                }
                b'p' => {
                    let m = self.rng.below(n) as u32;
                    let path = self.nodes[m as usize].clone();
                    match Ring::open(&path) {
                        Ok(r) => {
                            self.ops += 1;
                            std::thread::sleep(Duration::from_millis(self.rng.below(3)));
                            drop(r);
                        }
                        Err(e) => self.expect(
                            &format!("open ring {m} prowl"),
                            e.errno().unwrap_or(-1),
                            &[libc::ENXIO, libc::EBUSY],
                        ),
                    }
                }
                b'm' => {
                    let k = self.rng.range(2, 4);
                    let mut got: Vec<u32> = (0..k).filter_map(|_| self.alloc()).collect();
                    while !got.is_empty() {
                        let i = self.rng.below(got.len() as u64) as usize;
                        let m = got.swap_remove(i);
                        self.free_own(m);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Runs the storm.
pub fn run(env: &Env, a: &StormArgs, t: &mut Ktap) {
    let seed = a.seed.unwrap_or_else(Rng::time_seed);
    t.diag(&format!(
        "storm: seed {seed} (rerun: blktap-test storm --seed {seed} --procs {} --iterations {})",
        a.procs, a.iterations
    ));
    let mix = a.mix.as_bytes();
    if mix.is_empty() || mix.iter().any(|c| !b"alrpm".contains(c)) {
        return t.fail("storm: --mix", &"use the letters a, l, r, p, m");
    }
    let ctl = match env.control() {
        Ok(c) => c,
        Err(e) => return t.skip("storm", &e),
    };
    let ctl_path = ctl.path().to_path_buf();
    let initial = env.allocated().unwrap_or_default();
    let major = match ctl.alloc() {
        Ok(i) => {
            let _ = ctl.free(i.ring_minor);
            i.ring_major
        }
        Err(e) => return t.fail("storm: ALLOC_TAP", &e),
    };
    let nminors = (initial.len() as u32 + 2 * a.procs + 8).min(1024);
    let dir = env.tmp.join("storm");
    let _ = node::mkdir_p(&dir, 0o700);
    let mut nodes = Vec::new();
    for m in 0..nminors {
        let p = dir.join(format!("blktap{m}"));
        let _ = fs::remove_file(&p);
        if let Err(e) = node::mknod(&p, NodeKind::Char, major, m, 0o600) {
            return t.fail("storm: mknod", &e);
        }
        nodes.push(p);
    }
    let logs: Vec<PathBuf> = (0..a.procs)
        .map(|i| dir.join(format!("child{i}.log")))
        .collect();
    let mut pids = Vec::new();
    for i in 0..a.procs {
        // SAFETY: no threads exist in this process (storm never starts any), so the child
        // may run ordinary Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            t.fail("storm: fork", &blktap::Errno::last());
            break;
        }
        if pid == 0 {
            let code = match Control::open(&ctl_path) {
                Ok(ctl) => {
                    let mut c = Child {
                        ctl,
                        nodes: &nodes,
                        rng: Rng::new(seed.wrapping_add(u64::from(i) * 1_000_003)),
                        log: String::new(),
                        ops: 0,
                        unexpected: 0,
                    };
                    c.run(a.iterations, mix);
                    let _ = fs::write(
                        &logs[i as usize],
                        format!("ops={} unexpected={}\n{}", c.ops, c.unexpected, c.log),
                    );
                    i32::from(c.unexpected > 0)
                }
                Err(_) => 2,
            };
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        pids.push(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut ends: Vec<Option<ChildEnd>> = vec![None; pids.len()];
    while ends.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, &pid) in pids.iter().enumerate() {
            if ends[i].is_some() {
                continue;
            }
            let mut status = 0;
            // SAFETY: polling our own child.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                ends[i] = Some(if libc::WIFEXITED(status) {
                    ChildEnd::Exited(libc::WEXITSTATUS(status))
                } else {
                    ChildEnd::Signaled(libc::WTERMSIG(status))
                });
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hung: Vec<i32> = pids
        .iter()
        .zip(&ends)
        .filter(|(_, e)| e.is_none())
        .map(|(&p, _)| p)
        .collect();
    t.check(
        &format!(
            "storm: all {} processes finish within {} s",
            a.procs, a.timeout
        ),
        hung.is_empty(),
        || format!("still running: {hung:?}"),
    );
    for &p in &hung {
        // SAFETY: killing our own child.
        unsafe { libc::kill(p, libc::SIGKILL) };
        let _ = util::wait_child(p);
    }
    let mut ops = 0u64;
    let mut problems = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(n) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("ops="))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            ops += n;
        }
        if ends[i] != Some(ChildEnd::Exited(0)) {
            problems.push(format!(
                "process {i} ended {:?}: {}",
                ends[i],
                text.lines().skip(1).take(3).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    t.diag(&format!("storm: ops={ops}"));
    t.check(
        "storm: every call ended with an allowed result",
        problems.is_empty(),
        || problems.join("; "),
    );
    let now = env.allocated().unwrap_or_default();
    let left: Vec<u32> = now
        .iter()
        .copied()
        .filter(|m| !initial.contains(m))
        .collect();
    let busy: Vec<String> = left
        .iter()
        .filter_map(|&m| ctl.free(m).err().map(|e| format!("{m}: {e}")))
        .collect();
    t.diag(&format!(
        "storm: {} taps left allocated, freed now",
        left.len()
    ));
    t.check(
        "storm: every tap left behind can be freed (nothing stays busy)",
        busy.is_empty(),
        || busy.join("; "),
    );
    let fin = env.allocated().unwrap_or_default();
    t.check(
        "storm: the allocated set is back to what it was",
        fin == initial,
        || format!("before {initial:?}, after {fin:?}"),
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Used by tests: paths of the nodes directory.
#[cfg(test)]
mod tests {
    #[test]
    fn errno_sets_are_reported() {
        let nodes = Vec::new();
        let mut c = super::Child {
            ctl: match blktap::Control::open("/dev/null") {
                Ok(c) => c,
                Err(_) => return,
            },
            nodes: &nodes,
            rng: crate::rng::Rng::new(1),
            log: String::new(),
            ops: 0,
            unexpected: 0,
        };
        c.expect("x", libc::EBUSY, &[0, libc::EBUSY]);
        c.expect("y", libc::EINVAL, &[0]);
        assert_eq!((c.ops, c.unexpected), (2, 1));
        assert!(c.log.contains("EINVAL"));
    }
}
