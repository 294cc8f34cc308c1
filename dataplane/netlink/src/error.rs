use std::{fmt, io, time::Duration};

/// The errno values callers react to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    Exists = libc::EEXIST,
    NotFound = libc::ENOENT,
    NoDevice = libc::ENODEV,
    AddrNotAvailable = libc::EADDRNOTAVAIL,
    NoSuchProcess = libc::ESRCH,
    Invalid = libc::EINVAL,
}

/// The kernel refused a request: its errno and, when it gave one, its reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub errno: i32,
    pub message: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("netlink socket: {0}")]
    Io(#[source] io::Error),
    #[error("the kernel did not answer within {after:?} (receive timed out)")]
    TimedOut { after: Duration },
    #[error("truncated netlink message")]
    Truncated,
    #[error("kernel refused: {0}")]
    Kernel(Refusal),
}

impl Error {
    /// The errno of a refusal or of a failed system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel(r) => Some(r.errno),
            Self::Open(e) | Self::Io(e) => e.raw_os_error(),
            Self::TimedOut { .. } => Some(libc::ETIMEDOUT),
            Self::Truncated => None,
        }
    }

    pub fn is(&self, errno: Errno) -> bool {
        self.errno() == Some(errno as i32)
    }
}

/// For callers that speak `io::Error`: the kind follows the errno, and the kernel's words stay
/// in the text.
impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Open(e) | Error::Io(e) => e,
            Error::Kernel(Refusal { errno, message: None }) => io::Error::from_raw_os_error(errno),
            Error::Kernel(Refusal { errno, message: Some(m) }) => {
                let raw = io::Error::from_raw_os_error(errno);
                io::Error::new(raw.kind(), format!("{raw}: {m}"))
            }
            e @ Error::TimedOut { .. } => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
            Error::Truncated => io::Error::other("truncated netlink message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_the_errno_then_the_kernels_words() {
        let e = Error::Kernel(Refusal { errno: libc::ENOENT, message: Some("no such set".into()) });
        assert_eq!(e.to_string(), "kernel refused: No such file or directory (os error 2) (no such set)");
        assert!(e.is(Errno::NotFound));
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        assert!(io.to_string().contains("no such set"), "{io}");
        let io: io::Error = Error::Kernel(Refusal { errno: libc::EEXIST, message: None }).into();
        assert_eq!(io.raw_os_error(), Some(libc::EEXIST));
        let t: io::Error = Error::TimedOut { after: Duration::from_secs(10) }.into();
        assert_eq!(t.kind(), io::ErrorKind::TimedOut);
        assert!(t.to_string().contains("did not answer within 10s"), "{t}");
    }
}
