//! Why a WireGuard device could not be read or configured, through the kernel's generic netlink
//! family ([`super::kernel`]) or the userspace tunnel's UAPI socket ([`super::uapi`]).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("the kernel has no WireGuard (generic netlink family \"wireguard\" not found: the module is not built in or loadable)")]
    NoKernelWireGuard,
    #[error("the generic netlink controller answered without a family id")]
    NoFamilyId,
    /// A netlink request failed; `what` says which (open, ask for the family, read, configure).
    #[error("{what}: {source}")]
    Netlink { what: String, source: shoal_netlink::Error },
    /// The userspace tunnel's control socket could not be reached or read.
    #[error("{what} through {}: {source}", socket.display())]
    Socket { what: &'static str, socket: PathBuf, source: std::io::Error },
    /// The userspace tunnel answered with an error number.
    #[error("the tunnel refused the configuration: errno {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    Refused { errno: i32 },
    #[error("the tunnel gave no answer")]
    NoAnswer,
    /// A line of a UAPI answer shoal cannot read.
    #[error("the tunnel's answer has {what} in line {line:?}")]
    BadAnswer { what: &'static str, line: String },
}
