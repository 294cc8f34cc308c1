//! The words the control plane, the data plane and the DNS share about a service, declared once.
//!
//! A crate of its own, with serde as its only dependency, because no crate of the three depends
//! on another: control is below nothing, and depending on `shoal-dns` or `shoal-dataplane` would
//! pull their kernel and DNS stacks into it.
//!
//! The serde names are part of the Raft log and snapshots (control) and of the desired data plane
//! JSON (`shoal dataplane apply`): they must never change (see the tests).

mod service;

pub use service::{EndpointMode, Protocol, PublishMode};
