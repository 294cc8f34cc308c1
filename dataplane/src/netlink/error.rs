use std::fmt;

/// What the kernel said about one operation, with the operation named.
#[derive(Debug)]
pub struct KernelError {
    pub what: String,
    pub errno: i32,
    pub extack: Option<String>,
}

impl KernelError {
    pub fn is(&self, errno: Errno) -> bool {
        self.errno == errno as i32
    }
}

/// The errno values the data plane reacts to by name (one list, in the netlink layer).
pub use shoal_netlink::Errno;

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{}: {io}", self.what)?;
        if let Some(msg) = &self.extack {
            write!(f, " ({msg})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("cannot decode a netlink message: {0}")]
    Decode(String),
    #[error("the kernel did not answer netlink request {seq} within {after:?} (receive timed out)")]
    TimedOut { seq: u32, after: std::time::Duration },
    #[error("{0}")]
    Kernel(KernelError),
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            Self::Kernel(k) => Some(k),
            _ => None,
        }
    }

    pub fn is(&self, errno: Errno) -> bool {
        self.kernel().is_some_and(|k| k.is(errno))
    }
}
