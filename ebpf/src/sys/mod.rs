//! The few system calls aya 0.14 does not expose: running a program on a
//! test packet, opening pinned objects, swapping the program of a link,
//! reading what a link is attached to, the network namespace cookie, and
//! listing and deleting legacy tc filters.

mod bpf;
mod netns;
mod tc_filter;

pub use bpf::{link_detach, link_target, link_update, obj_get, obj_pin, test_run, test_run_repeat, LinkTarget};
pub use netns::netns_cookie;
pub use tc_filter::{delete_ingress, list_ingress, TcFilter};
