//! `blktap-ctl`: manage blktap2 taps in the spirit of tap-ctl.

use blktap::control::{self, MISC_NAME};
use blktap::node::{self, disk_name};
use blktap::sysfs::{self, TapEntry};
use blktap::{BlktapInfo, Control};
use blktap_ctl::cli::{Cli, Cmd, CreateArgs};
use clap::Parser;
use std::error::Error;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

type AnyResult<T> = Result<T, Box<dyn Error>>;

/// Where the kernel lists misc devices; the control device's minor is looked up here.
const PROC_MISC: &str = "/proc/misc";

/// The error to report for `err`, met while opening the control device or reading the
/// blktap2 sysfs class (`missing` names what was not there). If `proc_misc` has no
/// `blktap/control` line -- the check by which opening the control device finds that the
/// module is not loaded ([`control::find_misc_minor`]) -- the message says so and how to
/// load it. Other errors, and all errors while the module is loaded (e.g. a wrong `--sysfs`
/// or `--control`), are returned unchanged.
fn explain_missing_module(err: blktap::Error, missing: &str, proc_misc: &Path) -> Box<dyn Error> {
    let absent = matches!(err, blktap::Error::NotFound(_))
        || [libc::ENOENT, libc::ENXIO, libc::ENODEV]
            .into_iter()
            .any(|e| err.is_errno(e));
    if absent
        && matches!(
            control::find_misc_minor(proc_misc),
            Err(blktap::Error::NotFound(_))
        )
    {
        return format!("blktap module not loaded (no {missing}): modprobe blktap").into();
    }
    err.into()
}

/// Opens the control device (see [`Cli::control`]), saying so if the module is not loaded.
fn open_control(cli: &Cli) -> AnyResult<Control> {
    let proc_misc = Path::new(PROC_MISC);
    cli.control()
        .map_err(|e| explain_missing_module(e, &format!("{MISC_NAME} in {PROC_MISC}"), proc_misc))
}

fn cmd_alloc(cli: &Cli) -> AnyResult<()> {
    let ctl = open_control(cli)?;
    let info = ctl.alloc()?;
    if let Err(e) = node::create_nodes(&cli.dev_dir, &info) {
        let _ = ctl.free(info.ring_minor);
        return Err(e.into());
    }
    println!("{}", info.ring_minor);
    Ok(())
}

fn cmd_free(cli: &Cli, minor: u32) -> AnyResult<()> {
    open_control(cli)?.free(minor)?;
    node::remove_nodes(&cli.dev_dir, minor)?;
    Ok(())
}

/// Writes `value` to the sysfs attribute `name` of tap `minor`.
fn write_tap_attr(cli: &Cli, minor: u32, name: &str, value: &str) -> AnyResult<()> {
    Ok(sysfs::write_tap_attr(&cli.class_dir(), minor, name, value)?)
}

fn daemon_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("blktapd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("blktapd"))
}

/// A pipe whose write end is inheritable.
fn ready_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: clearing FD_CLOEXEC on a descriptor we own, so that the daemon inherits it.
    if unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r, w))
}

/// Reads from `r` until a line "ready" arrives (true), EOF (false) or the deadline.
fn wait_ready(r: OwnedFd, deadline: Instant) -> io::Result<bool> {
    let mut f = File::from(r);
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for blktapd",
            ));
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut chunk = [0u8; 64];
        let got = f.read(&mut chunk)?;
        if got == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..got]);
        if buf.split(|&b| b == b'\n').any(|l| l == b"ready") {
            return Ok(true);
        }
    }
}

/// Kills the daemon of `minor` (if any), waits for the ring to be released and frees the
/// tap, retrying `EBUSY` until `deadline`.
fn teardown(cli: &Cli, ctl: &Control, minor: u32, deadline: Instant) -> AnyResult<()> {
    let class = cli.class_dir();
    if let Ok(tap) = sysfs::read_tap(&class, minor) {
        if let Some(pid) = tap.task {
            stop_daemon(&class, minor, pid, deadline)?;
        }
    }
    loop {
        match ctl.free(minor) {
            Ok(()) => break,
            Err(e) if e.is_errno(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e.into()),
        }
    }
    node::remove_nodes(&cli.dev_dir, minor)?;
    Ok(())
}

/// True if `pid` is gone or a zombie.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// SIGTERMs `pid` and waits until it no longer holds the ring of `minor`.
fn stop_daemon(class: &Path, minor: u32, pid: u32, deadline: Instant) -> AnyResult<()> {
    let pid_t = libc::pid_t::try_from(pid)?;
    // SAFETY: sending a signal has no memory-safety implications.
    if unsafe { libc::kill(pid_t, libc::SIGTERM) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(format!("kill {pid}: {e}").into());
        }
    }
    loop {
        let released = match sysfs::read_tap(class, minor) {
            Ok(tap) => tap.task != Some(pid),
            Err(_) => true,
        };
        if released || process_gone(pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "blktapd (pid {pid}) did not exit in time; is /dev/{} still open?",
                disk_name(minor)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cmd_create(cli: &Cli, args: &CreateArgs) -> AnyResult<()> {
    let ctl = open_control(cli)?;
    let info = ctl.alloc()?;
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    match start_daemon(cli, &info, args, deadline) {
        Ok(()) => {
            println!(
                "{}",
                node::tapdev_path(&cli.dev_dir, info.ring_minor).display()
            );
            Ok(())
        }
        Err(e) => {
            let cleanup_deadline = Instant::now() + Duration::from_secs(args.wait.max(1));
            if let Err(c) = teardown(cli, &ctl, info.ring_minor, cleanup_deadline) {
                eprintln!("blktap-ctl: cleanup of tap {} failed: {c}", info.ring_minor);
            }
            Err(e)
        }
    }
}

fn start_daemon(
    cli: &Cli,
    info: &BlktapInfo,
    args: &CreateArgs,
    deadline: Instant,
) -> AnyResult<()> {
    let minor = info.ring_minor;
    node::create_nodes(&cli.dev_dir, info)?;
    let (r, w) = ready_pipe()?;
    let exe = daemon_path(args.daemon.as_deref());
    let mut cmd = Command::new(&exe);
    cmd.arg("--minor")
        .arg(minor.to_string())
        .arg("--dev-dir")
        .arg(&cli.dev_dir)
        .arg("--backend")
        .arg(&args.backend)
        .arg("--ready-fd")
        .arg(w.as_raw_fd().to_string())
        .arg("--timeout")
        .arg(args.request_timeout.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(s) = &args.size {
        cmd.arg("--size").arg(s);
    }
    if args.read_only {
        cmd.arg("--read-only");
    }
    if let Some(s) = args.sector_size {
        cmd.arg("--sector-size").arg(s.to_string());
    }
    if let Some(a) = &args.abi {
        cmd.arg("--abi").arg(a);
    }
    if let Some(f) = &args.features {
        cmd.arg("--features").arg(f);
    }
    if let Some(n) = args.max_segments {
        cmd.arg("--max-segments").arg(n.to_string());
    }
    if let Some(n) = args.ring_slots {
        cmd.arg("--ring-slots").arg(n.to_string());
    }
    if let Some(n) = args.spin_us {
        cmd.arg("--spin-us").arg(n.to_string());
    }
    if let Some(g) = args.discard_granularity {
        cmd.arg("--discard-granularity").arg(g.to_string());
    }
    if let Some(m) = &args.io {
        cmd.arg("--io").arg(m);
    }
    if let Some(l) = &args.log {
        cmd.arg("--log").arg(l);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    drop(w);
    let ready = wait_ready(r, deadline);
    if ready.is_err() {
        // Timed out: the process we started is still waiting for its daemon child; stop it
        // (the daemon itself, if it got as far as opening the ring, is stopped by teardown).
        let _ = child.kill();
    }
    // blktapd forks into the background; the process we started exits once the disk exists
    // (or the daemon failed), so this does not block for long.
    let status = child.wait()?;
    match ready {
        Ok(true) if status.success() => Ok(()),
        Ok(_) => Err(format!("blktapd failed for tap {minor} ({status})").into()),
        Err(e) => Err(e.into()),
    }
}

fn cmd_destroy(cli: &Cli, minor: u32, timeout: u64) -> AnyResult<()> {
    let ctl = open_control(cli)?;
    let class = cli.class_dir();
    if class.exists() && !sysfs::tap_dir(&class, minor).exists() {
        return Err(format!("no tap with minor {minor}").into());
    }
    teardown(
        cli,
        &ctl,
        minor,
        Instant::now() + Duration::from_secs(timeout),
    )
}

/// All taps in the sysfs class `class`, saying so if the module is not loaded.
fn read_taps(class: &Path, proc_misc: &Path) -> AnyResult<Vec<TapEntry>> {
    sysfs::list_taps(class)
        .map_err(|e| explain_missing_module(e, &class.display().to_string(), proc_misc))
}

/// The table `list` prints: a header line and one line per tap. DISK and PID are "-" for a
/// tap without a disk or daemon; `with_disk` are the minors of the taps that have a disk.
fn format_list(taps: &[TapEntry], with_disk: &[u32]) -> String {
    let mut out = format!(
        "{:>5}  {:>7}  {:<7}  {:<7}  NAME\n",
        "MINOR", "PID", "DISK", "STATE"
    );
    for tap in taps {
        let has_disk = with_disk.contains(&tap.minor);
        let state = match (tap.task.is_some(), has_disk) {
            (false, false) => "idle",
            (true, false) => "open",
            (true, true) => "active",
            (false, true) => "closing",
        };
        let pid = tap.task.map_or_else(|| "-".to_string(), |p| p.to_string());
        let disk = if has_disk {
            tap.disk_name()
        } else {
            "-".to_string()
        };
        out.push_str(&format!(
            "{:>5}  {:>7}  {:<7}  {:<7}  {}\n",
            tap.minor, pid, disk, state, tap.name
        ));
    }
    out
}

fn cmd_list(cli: &Cli) -> AnyResult<()> {
    let class = cli.class_dir();
    let taps = read_taps(&class, Path::new(PROC_MISC))?;
    let minors: Vec<u32> = taps.iter().map(|t| t.minor).collect();
    let with_disk = sysfs::minors_with_disk(&class, &cli.sysfs, &minors);
    print!("{}", format_list(&taps, &with_disk));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Alloc => cmd_alloc(&cli),
        Cmd::Free { minor } => cmd_free(&cli, *minor),
        Cmd::Create(args) => cmd_create(&cli, args),
        Cmd::Destroy { minor, timeout } => cmd_destroy(&cli, *minor, *timeout),
        Cmd::Abort { minor } => write_tap_attr(&cli, *minor, "abort", "1"),
        Cmd::Recover { minor, window } => {
            write_tap_attr(&cli, *minor, "recovery", &window.to_string())
        }
        Cmd::List => cmd_list(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blktap-ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_parsing() {
        let c = Cli::try_parse_from([
            "blktap-ctl",
            "create",
            "-R",
            "--backend",
            "mem",
            "--size",
            "1M",
        ])
        .unwrap();
        match c.command {
            Cmd::Create(a) => {
                assert!(a.read_only);
                assert_eq!(a.backend, "mem");
                assert_eq!(a.size.as_deref(), Some("1M"));
                assert_eq!((a.request_timeout, a.wait), (180, 60));
            }
            _ => panic!("not create"),
        }
        let c = Cli::try_parse_from([
            "blktap-ctl",
            "create",
            "--backend",
            "null:1M",
            "--request-timeout",
            "0",
            "-t",
            "150",
        ])
        .unwrap();
        match c.command {
            Cmd::Create(a) => assert_eq!((a.request_timeout, a.wait), (0, 150)),
            _ => panic!("not create"),
        }
        let c = Cli::try_parse_from(["blktap-ctl", "destroy", "-m", "4", "--dev-dir", "/tmp/x"])
            .unwrap();
        assert!(matches!(
            c.command,
            Cmd::Destroy {
                minor: 4,
                timeout: 60
            }
        ));
        assert_eq!(c.dev_dir, PathBuf::from("/tmp/x"));
        let c = Cli::try_parse_from(["blktap-ctl", "abort", "-m", "7"]).unwrap();
        assert!(matches!(c.command, Cmd::Abort { minor: 7 }));
        assert!(Cli::try_parse_from(["blktap-ctl", "abort"]).is_err());
        let c = Cli::try_parse_from(["blktap-ctl", "recover", "-m", "2", "-w", "30"]).unwrap();
        assert!(matches!(
            c.command,
            Cmd::Recover {
                minor: 2,
                window: 30
            }
        ));
        assert!(Cli::try_parse_from(["blktap-ctl", "free"]).is_err());
        assert!(Cli::try_parse_from(["blktap-ctl", "create"]).is_err());
    }

    #[test]
    fn ready_protocol() {
        let (r, w) = ready_pipe().unwrap();
        let mut f = File::from(w);
        std::io::Write::write_all(&mut f, b"ready\n").unwrap();
        assert!(wait_ready(r, Instant::now() + Duration::from_secs(5)).unwrap());

        let (r, w) = ready_pipe().unwrap();
        drop(w);
        assert!(!wait_ready(r, Instant::now() + Duration::from_secs(5)).unwrap());

        let (r, _w) = ready_pipe().unwrap();
        let e = wait_ready(r, Instant::now() + Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    fn tap(minor: u32, name: &str, task: Option<u32>) -> TapEntry {
        TapEntry {
            minor,
            name: name.into(),
            task,
        }
    }

    #[test]
    fn list_format() {
        let taps = [
            tap(0, "0", Some(312)),
            tap(1, "1", None),
            tap(2, "vm-2", Some(400)),
            tap(27, "27", None),
        ];
        assert_eq!(
            format_list(&taps, &[0, 27]),
            "MINOR      PID  DISK     STATE    NAME\n\
             \x20   0      312  tda      active   0\n\
             \x20   1        -  -        idle     1\n\
             \x20   2      400  -        open     vm-2\n\
             \x20  27        -  tdab     closing  27\n"
        );
        assert_eq!(
            format_list(&[], &[]),
            "MINOR      PID  DISK     STATE    NAME\n"
        );
    }

    #[test]
    fn module_not_loaded() {
        let base = std::env::temp_dir().join(format!("blktap-ctl-list-{}", std::process::id()));
        let sys = base.join("sys");
        let class = sys.join("class/blktap2");
        let misc = base.join("misc");
        std::fs::create_dir_all(&sys).unwrap();

        // No class and no blktap/control in /proc/misc: the module is not loaded.
        std::fs::write(&misc, "130 watchdog\n").unwrap();
        let e = read_taps(&class, &misc).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "blktap module not loaded (no {}): modprobe blktap",
                class.display()
            )
        );
        // The same for the control device (what create, alloc, free and destroy open).
        let e = explain_missing_module(
            blktap::Control::open(base.join("control")).unwrap_err(),
            "blktap/control in /proc/misc",
            &misc,
        );
        assert_eq!(
            e.to_string(),
            "blktap module not loaded (no blktap/control in /proc/misc): modprobe blktap"
        );
        let e = explain_missing_module(
            control::find_misc_minor(&misc).unwrap_err(),
            "blktap/control in /proc/misc",
            &misc,
        );
        assert!(e.to_string().starts_with("blktap module not loaded"), "{e}");

        // Module loaded (or /proc/misc unreadable): the error stays as it was, e.g. for a
        // wrong --sysfs.
        std::fs::write(&misc, "130 watchdog\n 61 blktap/control\n").unwrap();
        let e = read_taps(&class, &misc).unwrap_err().to_string();
        assert!(e.starts_with(&format!("read {}: ", class.display())), "{e}");
        let e = read_taps(&class, &base.join("no-misc"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("read {}: ", class.display())), "{e}");

        // Errors other than a missing class are not blamed on the module.
        std::fs::write(&misc, "130 watchdog\n").unwrap();
        let e = explain_missing_module(
            blktap::Error::Sys {
                context: "ioctl ALLOC_TAP".into(),
                errno: blktap::Errno(libc::EPERM),
            },
            "x",
            &misc,
        );
        assert!(e.to_string().starts_with("ioctl ALLOC_TAP"), "{e}");

        // With the class present, list reads it.
        std::fs::create_dir_all(class.join("blktap!blktap1")).unwrap();
        std::fs::write(class.join("blktap!blktap1/name"), "1\n").unwrap();
        std::fs::write(class.join("blktap!blktap1/task"), "").unwrap();
        assert_eq!(read_taps(&class, &misc).unwrap(), vec![tap(1, "1", None)]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn process_state() {
        assert!(!process_gone(std::process::id()));
        assert!(process_gone(u32::MAX / 2));
    }
}
