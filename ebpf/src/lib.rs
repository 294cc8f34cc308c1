//! eBPF programs (C, built by clang) and their aya loader: socket-level VIP
//! load balancing ([`SockLb`]) and tc NAT for published ports ([`TcNat`]).
//!
//! Both keep services in the same slot layout (see [`maps`]): one backend
//! change is a constant number of map writes, planned by [`plan::LbTable`]
//! without touching the kernel.

pub mod bench;
mod error;
mod loader;
pub mod maps;
mod model;
mod objects;
mod pin;
pub mod plan;
mod probe;
mod service_table;
mod sock_lb;
pub mod sys;
mod tc_nat;

pub use error::Error;
pub use loader::LoadOptions;
pub use model::{Backend, Proto, ServiceKey, ServiceOptions};
pub use pin::{ensure_bpffs, is_bpffs};
pub use probe::{cgroup2_mount, probe, Probe, Support};
pub use service_table::ServiceTable;
pub use sock_lb::SockLb;
pub use tc_nat::{TcHook, TcNat};
