//! `dstate`: watches every task for uninterruptible sleep (state D) longer than a bound.
//!
//! Samples `/proc/*/task/*/stat` every 100 ms. A task seen in state D in every sample for
//! longer than `--bound` seconds, without a context switch in between (so in one and the same
//! sleep, not in back-to-back I/O waits), is reported once, with its command and wait
//! channel, on standard output (and in `--out`). Runs until `--duration` passes or `--until`
//! exists.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of the `dstate` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DstateArgs {
    /// Longest acceptable time in state D, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub bound: f64,
    /// Stop after this many seconds [default: never].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop once this file exists.
    #[arg(long, value_name = "FILE")]
    pub until: Option<PathBuf>,
    /// Also append reports to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// State and command of a task from the text of its `stat` file.
pub fn parse_stat(text: &str) -> Option<(char, &str)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = &text[open + 1..close];
    let state = text[close + 1..].trim_start().chars().next()?;
    Some((state, comm))
}

/// The context switch counts in the text of a task's `status` file.
pub fn parse_switches(text: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        if let Some(v) = line
            .strip_prefix("voluntary_ctxt_switches:")
            .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        {
            *total.get_or_insert(0) += v.trim().parse::<u64>().ok()?;
        }
    }
    total
}

/// Every (pid, tid) currently in state D with its command and context switch count.
fn sample() -> Vec<((u32, u32), String, u64)> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(text) = fs::read_to_string(t.path().join("stat")) {
                if let Some(('D', comm)) = parse_stat(&text) {
                    let switches = fs::read_to_string(t.path().join("status"))
                        .ok()
                        .and_then(|s| parse_switches(&s))
                        .unwrap_or(0);
                    out.push(((pid, tid), comm.to_string(), switches));
                }
            }
        }
    }
    out
}

/// Runs the watcher; the exit status is 1 if any task overstayed.
pub fn run(a: &DstateArgs) -> std::process::ExitCode {
    let start = Instant::now();
    let bound = Duration::from_secs_f64(a.bound);
    // (pid, tid) -> (first seen in this sleep, context switches then, reported)
    let mut seen: HashMap<(u32, u32), (Instant, u64, bool)> = HashMap::new();
    let mut violations = 0;
    let mut out = a.out.as_ref().and_then(|p| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    loop {
        if a.duration
            .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
            || a.until.as_ref().is_some_and(|f| f.exists())
        {
            break;
        }
        let now = Instant::now();
        let current = sample();
        seen.retain(|k, _| current.iter().any(|(c, _, _)| c == k));
        for (key, comm, switches) in current {
            let entry = seen.entry(key).or_insert((now, switches, false));
            if entry.1 != switches {
                // It ran in between: a new sleep.
                *entry = (now, switches, false);
            }
            if !entry.2 && now.duration_since(entry.0) > bound {
                entry.2 = true;
                violations += 1;
                let wchan = fs::read_to_string(format!("/proc/{}/task/{}/wchan", key.0, key.1))
                    .unwrap_or_default();
                let line = format!(
                    "dstate: pid {} tid {} ({comm}) in D for more than {:.1} s, wchan {}",
                    key.0,
                    key.1,
                    a.bound,
                    if wchan.is_empty() { "?" } else { &wchan }
                );
                println!("{line}");
                if let Some(f) = out.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if violations > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        assert_eq!(parse_stat("12 (a b) c) D 1 2 3"), Some(('D', "a b) c")));
        assert_eq!(parse_stat("1 (init) S 0"), Some(('S', "init")));
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t5\n";
        assert_eq!(parse_switches(status), Some(15));
        assert_eq!(parse_switches("Name: x"), None);
        let own = fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some());
    }
}
