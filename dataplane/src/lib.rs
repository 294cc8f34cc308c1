//! Everything that touches the kernel's network stack: overlays (bridge + VXLAN), task
//! attachment, and later the load balancers and encryption.
//!
//! The shape is plan-then-apply: [`state`] is the desired state of one node,
//! [`overlay::observe`] reads what the kernel has, [`overlay::plan`] (pure) turns the two into
//! [`overlay::Op`]s, and [`overlay::apply`] runs them through the one [`netlink`] module.

pub mod crypt;
pub mod egress;
pub mod guard;
pub mod lb;
pub mod netlink;
pub mod netns;
pub mod overlay;
pub mod state;
