//! The few bpf(2) commands aya 0.14 does not expose: running a program on a
//! test packet, opening pinned objects, swapping the program of a link, and
//! reading what a link is attached to.

mod bpf;

pub use bpf::{link_detach, link_target, link_update, obj_get, test_run, LinkTarget};
