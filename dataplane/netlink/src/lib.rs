//! The one netlink layer of shoal, below every crate that talks netlink to the kernel: the route
//! code and the load balancers of `shoal-dataplane` (rtnetlink, nfnetlink for nftables and
//! conntrack, generic netlink for IPVS and WireGuard) and the tc filters of `shoal-ebpf`.
//!
//! - [`MsgBuilder`] frames a request (header, family header, attributes, nests);
//! - [`frames`] splits what a receive returned into messages, [`attrs`] walks their attributes;
//! - [`parse_ack`] is the one reader of NLMSG_ERROR, with the kernel's extended-ack text
//!   (NLMSGERR_ATTR_MSG), so a user reads "VXLAN device with the specified VNI already exists"
//!   and not only "File exists (os error 17)";
//! - [`Socket`] sends requests and collects answers, every receive bounded by [`RECV_TIMEOUT`].
//!
//! It lives in its own crate because `shoal-dataplane` depends on `shoal-ebpf`: the tc code could
//! not use a layer inside the data plane without a cycle.

mod ack;
mod attr;
mod build;
mod consts;
mod error;
mod frame;
mod socket;

pub use ack::{parse_ack, Ack};
pub use attr::{attrs, find, Attr};
pub use build::MsgBuilder;
pub use consts::*;
pub use error::{Errno, Error, Refusal};
pub use frame::{frames, Frame};
pub use socket::{bound_receives, timed_out, Received, Socket, RECV_TIMEOUT};
