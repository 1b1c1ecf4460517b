//! Device nodes (created by tap-ctl itself rather than by udev) and disk names.

use crate::error::{cvt, Error, Result};
use crate::sys;
use crate::uapi::BlktapInfo;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Directory in which tap-ctl creates its nodes.
pub const DEV_DIR: &str = "/dev/xen/blktap-2";
/// Directory of the devtmpfs ring nodes (the class device name `blktap/blktap<N>`).
pub const DEVTMPFS_RING_DIR: &str = "/dev/blktap";

/// Kind of device node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
}

/// `<dir>/control`.
pub fn control_path(dir: &Path) -> PathBuf {
    dir.join("control")
}

/// `<dir>/blktap<minor>`: the ring node.
pub fn ring_path(dir: &Path, minor: u32) -> PathBuf {
    dir.join(format!("blktap{minor}"))
}

/// `<dir>/tapdev<minor>`: the block node.
pub fn tapdev_path(dir: &Path, minor: u32) -> PathBuf {
    dir.join(format!("tapdev{minor}"))
}

/// Creates `dir` and its missing parents with `mode`.
pub fn mkdir_p(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            mkdir_p(parent, mode)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::from_io(format!("chmod {}", dir.display()), &e)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::from_io(format!("mkdir {}", dir.display()), &e)),
    }
}

/// `mknod(2)` of a device node with exactly `mode` permission bits (umask is undone).
pub fn mknod(path: &Path, kind: NodeKind, major: u32, minor: u32, mode: u32) -> Result<()> {
    let c = sys::cpath(path)?;
    let fmt = match kind {
        NodeKind::Char => libc::S_IFCHR,
        NodeKind::Block => libc::S_IFBLK,
    };
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path; mknod does not retain it.
    let ret = unsafe { libc::mknod(c.as_ptr(), fmt | (mode & 0o7777), dev) };
    cvt(ret, || {
        format!("mknod {} ({major}:{minor})", path.display())
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::from_io(format!("chmod {}", path.display()), &e))
}

fn unlink_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(Error::from_io(format!("unlink {}", path.display()), &e))
        }
        _ => Ok(()),
    }
}

/// Creates the ring node `<dir>/blktap<N>` and the block node `<dir>/tapdev<N>` for an
/// allocated tap (mode 0600, `dir` created with 0755, existing nodes replaced), as tap-ctl
/// does after `ALLOC_TAP`.
pub fn create_nodes(dir: &Path, info: &BlktapInfo) -> Result<()> {
    mkdir_p(dir, 0o755)?;
    let minor = info.ring_minor;
    let ring = ring_path(dir, minor);
    unlink_if_exists(&ring)?;
    mknod(&ring, NodeKind::Char, info.ring_major, minor, 0o600)?;
    let tapdev = tapdev_path(dir, minor);
    unlink_if_exists(&tapdev)?;
    mknod(&tapdev, NodeKind::Block, info.bdev_major, minor, 0o600)
}

/// Removes the nodes made by [`create_nodes`]; missing nodes are not an error.
pub fn remove_nodes(dir: &Path, minor: u32) -> Result<()> {
    unlink_if_exists(&ring_path(dir, minor))?;
    unlink_if_exists(&tapdev_path(dir, minor))
}

/// Name of the disk of tap `minor`: `td` plus base-26 letters
/// (0 → `tda`, 25 → `tdz`, 26 → `tdaa`, 701 → `tdzz`, 702 → `tdaaa`).
pub fn disk_name(minor: u32) -> String {
    let letter = |n: u32| char::from(b'a' + (n % 26) as u8);
    let mut name = String::from("td");
    if minor < 26 {
        name.push(letter(minor));
    } else if minor < 702 {
        name.push(letter(minor / 26 - 1));
        name.push(letter(minor));
    } else {
        let hi = minor / 26 - 1;
        name.push(letter(hi / 26 - 1));
        name.push(letter(hi));
        name.push(letter(minor));
    }
    name
}

/// Inverse of [`disk_name`] (`None` for names it cannot produce).
pub fn minor_from_disk_name(name: &str) -> Option<u32> {
    let letters = name.strip_prefix("td")?.as_bytes();
    if letters.is_empty() || letters.len() > 3 || !letters.iter().all(u8::is_ascii_lowercase) {
        return None;
    }
    let v: Vec<u32> = letters.iter().map(|b| u32::from(b - b'a')).collect();
    Some(match v[..] {
        [a] => a,
        [a, b] => (a + 1) * 26 + b,
        [a, b, c] => ((a + 1) * 26 + b + 1) * 26 + c,
        _ => unreachable!(),
    })
}

/// Major number registered under `name` in the text of `/proc/devices`, in the
/// "Character devices" or "Block devices" section.
pub fn parse_proc_devices(text: &str, kind: NodeKind, name: &str) -> Option<u32> {
    let header = match kind {
        NodeKind::Char => "Character devices:",
        NodeKind::Block => "Block devices:",
    };
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.ends_with(':') {
            in_section = line == header;
            continue;
        }
        if !in_section {
            continue;
        }
        let mut it = line.split_whitespace();
        if let (Some(major), Some(n)) = (it.next(), it.next()) {
            if n == name {
                return major.parse().ok();
            }
        }
    }
    None
}

/// Majors of the `blktap2` ring devices and `tapdev` block devices from `/proc/devices`.
pub fn read_majors(proc_devices: &Path) -> Result<(u32, u32)> {
    let text = fs::read_to_string(proc_devices)
        .map_err(|e| Error::from_io(format!("read {}", proc_devices.display()), &e))?;
    let ring = parse_proc_devices(&text, NodeKind::Char, "blktap2").ok_or_else(|| {
        Error::NotFound(format!("char major blktap2 in {}", proc_devices.display()))
    })?;
    let bdev = parse_proc_devices(&text, NodeKind::Block, "tapdev").ok_or_else(|| {
        Error::NotFound(format!("block major tapdev in {}", proc_devices.display()))
    })?;
    Ok((ring, bdev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names() {
        let cases = [
            (0, "tda"),
            (1, "tdb"),
            (25, "tdz"),
            (26, "tdaa"),
            (27, "tdab"),
            (51, "tdaz"),
            (52, "tdba"),
            (701, "tdzz"),
            (702, "tdaaa"),
            (703, "tdaab"),
            (728, "tdaba"),
            (16383, "tdxfd"),
        ];
        for (minor, name) in cases {
            assert_eq!(disk_name(minor), name, "minor {minor}");
            assert_eq!(minor_from_disk_name(name), Some(minor), "{name}");
        }
    }

    #[test]
    fn disk_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for minor in 0..crate::uapi::MAX_DEVICES {
            let name = disk_name(minor);
            assert_eq!(minor_from_disk_name(&name), Some(minor));
            assert!(seen.insert(name));
        }
        assert_eq!(minor_from_disk_name("sda"), None);
        assert_eq!(minor_from_disk_name("td"), None);
        assert_eq!(minor_from_disk_name("tdA"), None);
        assert_eq!(minor_from_disk_name("tdaaaa"), None);
    }

    #[test]
    fn proc_devices_parsing() {
        let text = "Character devices:\n  1 mem\n 10 misc\n248 blktap2\n\nBlock devices:\n  8 sd\n252 tapdev\n253 device-mapper\n";
        assert_eq!(
            parse_proc_devices(text, NodeKind::Char, "blktap2"),
            Some(248)
        );
        assert_eq!(
            parse_proc_devices(text, NodeKind::Block, "tapdev"),
            Some(252)
        );
        assert_eq!(parse_proc_devices(text, NodeKind::Block, "blktap2"), None);
        assert_eq!(parse_proc_devices(text, NodeKind::Char, "tapdev"), None);
    }

    #[test]
    fn paths() {
        let d = Path::new(DEV_DIR);
        assert_eq!(ring_path(d, 7), Path::new("/dev/xen/blktap-2/blktap7"));
        assert_eq!(tapdev_path(d, 7), Path::new("/dev/xen/blktap-2/tapdev7"));
        assert_eq!(control_path(d), Path::new("/dev/xen/blktap-2/control"));
    }

    #[test]
    fn create_and_remove_nodes() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mknod needs root");
            return;
        }
        let base = std::env::temp_dir().join(format!("blktap-nodes-{}", std::process::id()));
        let dir = base.join("xen/blktap-2");
        let info = BlktapInfo {
            ring_major: 240,
            bdev_major: 241,
            ring_minor: 5,
        };
        mkdir_p(&dir, 0o755).unwrap();
        fs::write(ring_path(&dir, 5), b"stale").unwrap();
        create_nodes(&dir, &info).unwrap();
        let ring = fs::metadata(ring_path(&dir, 5)).unwrap();
        assert!(ring.file_type().is_char_device());
        assert_eq!(ring.mode() & 0o7777, 0o600);
        assert_eq!(
            (libc::major(ring.rdev()), libc::minor(ring.rdev())),
            (240, 5)
        );
        let disk = fs::metadata(tapdev_path(&dir, 5)).unwrap();
        assert!(disk.file_type().is_block_device());
        assert_eq!(
            (libc::major(disk.rdev()), libc::minor(disk.rdev())),
            (241, 5)
        );
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o755);
        create_nodes(&dir, &info).unwrap(); // replaces existing nodes
        remove_nodes(&dir, 5).unwrap();
        remove_nodes(&dir, 5).unwrap();
        assert!(!ring_path(&dir, 5).exists() && !tapdev_path(&dir, 5).exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn mkdir_p_creates_parents() {
        let base = std::env::temp_dir().join(format!("blktap-mkdir-{}", std::process::id()));
        let deep = base.join("a/b/c");
        mkdir_p(&deep, 0o755).unwrap();
        assert!(deep.is_dir());
        mkdir_p(&deep, 0o755).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }
}
