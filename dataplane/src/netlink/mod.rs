//! The one typed netlink module: every kernel change of the data plane goes through here.

mod addr;
mod error;
mod link;
mod mac;
mod neigh;
mod route;
mod rule;
mod socket;

pub use addr::Addr;
pub use error::{Errno, KernelError, NetlinkError};
pub use link::{Link, LinkKind, VxlanInfo, VxlanSpec};
pub use mac::Mac;
pub use neigh::{Fdb, Neigh};
pub use route::{Route, MAIN_TABLE, SHOAL_PROTO};
pub use rule::{Rule, RuleAction};
pub use socket::{bound_receives, timed_out, Netlink, RECV_TIMEOUT};
