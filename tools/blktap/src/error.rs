//! Error type shared by the crate: an errno with the operation that produced it, or a
//! problem found in data read from the kernel (procfs, sysfs, the ring).

use std::fmt;
use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An `errno` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        Self(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// Symbolic name (`"EBUSY"`) for the values this driver produces, else `"E<n>"`.
    pub fn name(self) -> String {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENOTTY => "ENOTTY",
            libc::ENOSPC => "ENOSPC",
            libc::EROFS => "EROFS",
            libc::ENOSYS => "ENOSYS",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ETIMEDOUT => "ETIMEDOUT",
            crate::uapi::ENOIOCTLCMD => "ENOIOCTLCMD",
            0 => "0",
            n => return format!("E{n}"),
        };
        name.to_string()
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = io::Error::from_raw_os_error(self.0).to_string();
        // Drop std's " (os error N)" suffix: the symbolic name says the same.
        let text = text.split(" (os error").next().unwrap_or(&text);
        write!(f, "{text} ({})", self.name())
    }
}

/// Errors of this crate.
#[derive(Debug)]
pub enum Error {
    /// A system call failed.
    Sys {
        /// What was being done, e.g. `"ioctl ALLOC_TAP on /dev/blktap-control"`.
        context: String,
        /// The error number.
        errno: Errno,
    },
    /// Something we needed was not there (no control node, no `/proc/misc` entry, ...).
    NotFound(String),
    /// Data read from procfs, sysfs or the ring was malformed.
    Invalid(String),
}

impl Error {
    /// A [`Error::Sys`] from the current `errno`.
    pub fn last_os(context: impl Into<String>) -> Self {
        Self::Sys {
            context: context.into(),
            errno: Errno::last(),
        }
    }

    /// A [`Error::Sys`] from an [`io::Error`] (errors without an OS code map to `EIO`).
    pub fn from_io(context: impl Into<String>, err: &io::Error) -> Self {
        Self::Sys {
            context: context.into(),
            errno: Errno(err.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    /// The errno, for [`Error::Sys`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Sys { errno, .. } => Some(errno.0),
            _ => None,
        }
    }

    /// True if this is a system error with errno `errno`.
    pub fn is_errno(&self, errno: i32) -> bool {
        self.errno() == Some(errno)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sys { context, errno } => write!(f, "{context}: {errno}"),
            Self::NotFound(what) => write!(f, "not found: {what}"),
            Self::Invalid(what) => write!(f, "invalid data: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match &e {
            Error::Sys { errno, .. } => {
                io::Error::new(io::Error::from_raw_os_error(errno.0).kind(), e)
            }
            Error::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e),
            Error::Invalid(_) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Converts a `-1`-on-error libc return value into a [`Result`].
pub(crate) fn cvt<T: Copy + PartialEq + From<i8>>(
    ret: T,
    context: impl FnOnce() -> String,
) -> Result<T> {
    if ret == T::from(-1) {
        Err(Error::last_os(context()))
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_errno() {
        let e = Error::Sys {
            context: "ioctl FREE_TAP".into(),
            errno: Errno(libc::EBUSY),
        };
        assert!(e.is_errno(libc::EBUSY));
        let s = e.to_string();
        assert!(s.starts_with("ioctl FREE_TAP: "), "{s}");
        assert_eq!(s, "ioctl FREE_TAP: Device or resource busy (EBUSY)");
        assert_eq!(Errno(515).name(), "ENOIOCTLCMD");
        assert_eq!(Errno(4000).name(), "E4000");
        assert_eq!(Error::NotFound("x".into()).errno(), None);
    }
}
