//! Readers for the driver's sysfs attributes (`/sys/class/blktap2`).

use crate::error::{Error, Result};
use crate::node::disk_name;
use std::fs;
use std::path::{Path, PathBuf};

/// The driver's sysfs class directory.
pub const CLASS_DIR: &str = "/sys/class/blktap2";
/// Prefix of per-tap directories in [`CLASS_DIR`] (`blktap/blktap<N>` with `/` → `!`).
pub const TAP_PREFIX: &str = "blktap!blktap";

/// What sysfs says about one tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapEntry {
    /// The tap minor.
    pub minor: u32,
    /// Contents of `name` without the trailing newline (the minor if no name was set).
    pub name: String,
    /// Pid of the process that has the ring open (`task`), if any.
    pub task: Option<u32>,
}

impl TapEntry {
    /// The disk name (`td...`) of this tap.
    pub fn disk_name(&self) -> String {
        disk_name(self.minor)
    }
}

/// The request timeout, in seconds, that blktapd sets on its tap's `timeout` unless told
/// otherwise (`blktapd --timeout`, `blktap-ctl create --request-timeout`): far longer than any I/O of a
/// healthy backend takes, and a bound on how long a stuck daemon keeps a disk's users waiting.
/// The driver's own default (module parameter `request_timeout`) is 0, never, as in V-XS,
/// because tapdisk holds requests while paused and completes them later.
pub const DAEMON_TIMEOUT: u32 = 180;

/// `<class_dir>/blktap!blktap<minor>`.
pub fn tap_dir(class_dir: &Path, minor: u32) -> PathBuf {
    class_dir.join(format!("{TAP_PREFIX}{minor}"))
}

/// Reads a sysfs attribute and strips one trailing newline.
pub fn read_attr(path: &Path) -> Result<String> {
    let mut s = fs::read_to_string(path)
        .map_err(|e| Error::from_io(format!("read {}", path.display()), &e))?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

/// Writes `value` to the sysfs attribute `name` of tap `minor` (under `class_dir`).
pub fn write_tap_attr(class_dir: &Path, minor: u32, name: &str, value: &str) -> Result<()> {
    let path = tap_dir(class_dir, minor).join(name);
    fs::write(&path, value).map_err(|e| Error::from_io(format!("write {}", path.display()), &e))
}

/// Parses the `task` attribute: a pid, or empty when the ring is not open.
pub fn parse_task(s: &str) -> Result<Option<u32>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| Error::Invalid(format!("task attribute {s:?} is not a pid")))
}

/// Reads the sysfs entry of tap `minor`.
pub fn read_tap(class_dir: &Path, minor: u32) -> Result<TapEntry> {
    let dir = tap_dir(class_dir, minor);
    let name = read_attr(&dir.join("name"))?;
    let task = parse_task(&read_attr(&dir.join("task"))?)?;
    Ok(TapEntry { minor, name, task })
}

/// Minor of a class directory entry named `blktap!blktap<N>`.
pub fn parse_tap_dir_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(TAP_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Minors of all allocated taps, sorted.
pub fn list_minors(class_dir: &Path) -> Result<Vec<u32>> {
    let rd = fs::read_dir(class_dir)
        .map_err(|e| Error::from_io(format!("read {}", class_dir.display()), &e))?;
    let mut minors: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_tap_dir_name(&e.file_name().to_string_lossy()))
        .collect();
    minors.sort_unstable();
    Ok(minors)
}

/// All allocated taps with their name and task, sorted by minor. Taps that disappear while
/// the directory is read are skipped.
pub fn list_taps(class_dir: &Path) -> Result<Vec<TapEntry>> {
    let mut taps = Vec::new();
    for minor in list_minors(class_dir)? {
        match read_tap(class_dir, minor) {
            Ok(t) => taps.push(t),
            Err(e) if e.is_errno(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(taps)
}

/// Parses the class attribute `devices`: one `<minor> <name>` line per tap that has a block
/// device (the name may be empty).
pub fn parse_devices(text: &str) -> Result<Vec<(u32, String)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (minor, name) = line.split_once(' ').unwrap_or((line, ""));
            let minor = minor
                .trim()
                .parse()
                .map_err(|_| Error::Invalid(format!("devices line {line:?}")))?;
            Ok((minor, name.to_string()))
        })
        .collect()
}

/// Reads `<class_dir>/devices`.
pub fn read_devices(class_dir: &Path) -> Result<Vec<(u32, String)>> {
    parse_devices(&read_attr(&class_dir.join("devices"))?)
}

/// True if the disk of `minor` exists under `<sys_dir>/block`.
pub fn disk_exists(sys_dir: &Path, minor: u32) -> bool {
    sys_dir.join("block").join(disk_name(minor)).exists()
}

/// The minors, among `minors`, of the taps that have a block device. The class attribute
/// `devices` is the driver's own list of them; only if it cannot be read is the disk
/// `<sys_dir>/block/td<letters>` taken as the sign. Neither the `tapdev<N>` node, which
/// tap-ctl and blktap-ctl create when they allocate a tap, nor the `disk:` field of `debug`,
/// which names the disk a tap would get, says that the disk exists.
pub fn minors_with_disk(class_dir: &Path, sys_dir: &Path, minors: &[u32]) -> Vec<u32> {
    match read_devices(class_dir) {
        Ok(devices) => minors
            .iter()
            .copied()
            .filter(|m| devices.iter().any(|(d, _)| d == m))
            .collect(),
        Err(_) => minors
            .iter()
            .copied()
            .filter(|&m| disk_exists(sys_dir, m))
            .collect(),
    }
}

/// The lowest minor in `0..max` that is not in the sorted list `allocated`.
pub fn lowest_free(allocated: &[u32], max: u32) -> Option<u32> {
    let mut expect = 0;
    for &m in allocated {
        if m > expect {
            break;
        }
        if m == expect {
            expect += 1;
        }
    }
    (expect < max).then_some(expect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_dir_names() {
        assert_eq!(parse_tap_dir_name("blktap!blktap0"), Some(0));
        assert_eq!(parse_tap_dir_name("blktap!blktap16383"), Some(16383));
        assert_eq!(parse_tap_dir_name("blktap!blktap"), None);
        assert_eq!(parse_tap_dir_name("blktap!blktapx"), None);
        assert_eq!(parse_tap_dir_name("blktap12"), None);
        assert_eq!(parse_tap_dir_name("devices"), None);
    }

    #[test]
    fn task_and_devices() {
        assert_eq!(parse_task("").unwrap(), None);
        assert_eq!(parse_task("1234\n").unwrap(), Some(1234));
        assert!(parse_task("abc").is_err());
        let d = parse_devices("0 vm1\n25 \n26\n").unwrap();
        assert_eq!(
            d,
            vec![(0, "vm1".into()), (25, String::new()), (26, String::new())]
        );
        assert!(parse_devices("x y\n").is_err());
        assert_eq!(parse_devices("").unwrap(), vec![]);
    }

    #[test]
    fn lowest_free_minor() {
        assert_eq!(lowest_free(&[], 16384), Some(0));
        assert_eq!(lowest_free(&[0, 1, 2], 16384), Some(3));
        assert_eq!(lowest_free(&[0, 2, 3], 16384), Some(1));
        assert_eq!(lowest_free(&[1, 2], 16384), Some(0));
        assert_eq!(lowest_free(&[0, 1], 2), None);
    }

    #[test]
    fn fake_class_dir() {
        let base = std::env::temp_dir().join(format!("blktap-sysfs-{}", std::process::id()));
        for (minor, name, task) in [(3, "3\n", ""), (0, "vbd-1\n", "4242\n")] {
            let d = tap_dir(&base, minor);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("name"), name).unwrap();
            fs::write(d.join("task"), task).unwrap();
        }
        fs::create_dir_all(base.join("blktap!blktap9")).unwrap(); // vanishing tap: no attrs
        fs::write(base.join("devices"), "0 vbd-1\n").unwrap();
        fs::write(base.join("verbosity"), "1\n").unwrap();
        assert_eq!(list_minors(&base).unwrap(), vec![0, 3, 9]);
        let taps = list_taps(&base).unwrap();
        assert_eq!(
            taps,
            vec![
                TapEntry {
                    minor: 0,
                    name: "vbd-1".into(),
                    task: Some(4242)
                },
                TapEntry {
                    minor: 3,
                    name: "3".into(),
                    task: None
                },
            ]
        );
        assert_eq!(taps[0].disk_name(), "tda");
        assert_eq!(read_devices(&base).unwrap(), vec![(0, "vbd-1".into())]);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn which_taps_have_a_disk() {
        let base = std::env::temp_dir().join(format!("blktap-disks-{}", std::process::id()));
        let class = base.join("class/blktap2");
        fs::create_dir_all(&class).unwrap();
        // Tap 3 has a disk, tap 1 has none (a tdb of someone else's must not count).
        fs::create_dir_all(base.join("block/tdb")).unwrap();
        fs::create_dir_all(base.join("block/tdd")).unwrap();
        fs::write(class.join("devices"), "3 vm\n").unwrap();
        assert_eq!(minors_with_disk(&class, &base, &[0, 1, 3]), vec![3]);
        fs::write(class.join("devices"), "").unwrap();
        assert_eq!(
            minors_with_disk(&class, &base, &[0, 1, 3]),
            Vec::<u32>::new()
        );
        // Without `devices`, /sys/block decides.
        fs::remove_file(class.join("devices")).unwrap();
        assert_eq!(minors_with_disk(&class, &base, &[0, 1, 3]), vec![1, 3]);
        fs::remove_dir_all(&base).unwrap();
    }
}
