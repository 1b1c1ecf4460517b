//! Small wrappers around libc calls used throughout the crate.

use crate::error::{cvt, Error, Result};
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `path` as a C string.
pub(crate) fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("path {} contains a NUL byte", path.display())))
}

/// `open(2)` with `O_CLOEXEC` added.
pub(crate) fn open(path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string; open does not retain the pointer.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    let fd = cvt(fd, || format!("open {}", path.display()))?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
