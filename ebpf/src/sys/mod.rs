//! The few system calls aya 0.14 does not expose: running a program on a
//! test packet, opening pinned objects, swapping the program of a link,
//! reading what a link is attached to, and the network namespace cookie.

mod bpf;
mod netns;

pub use bpf::{link_detach, link_target, link_update, obj_get, test_run, LinkTarget};
pub use netns::netns_cookie;
