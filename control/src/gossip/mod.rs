//! Gossip membership (SWIM, Lifeguard) among all nodes, on foca 2.0.
//!
//! - `core`: the sans-IO membership core (foca, timers, sealing, Lifeguard, member events);
//! - `identity`: who a member is on the wire; `seal`: the key ring and the sealed datagram;
//! - `config`: timings, checked; what foca gives and what we add is said there;
//! - `health`, `suspicion`, `accuse`: Lifeguard's local health and dynamic suspicion;
//! - `sim`: an in-memory network of cores with loss and latency (tests and the scale bench);
//! - `udp`: the tokio driver on a UDP socket (port 7946 in the daemon).

mod accuse;
pub mod config;
pub mod core;
pub mod error;
mod health;
pub mod identity;
pub mod seal;
pub mod sim;
mod suspicion;
pub mod udp;

#[cfg(test)]
mod core_tests;

pub use self::config::GossipConfig;
pub use self::core::{MemberEvent, MemberInfo, Membership, Stats, Status, Transmit};
pub use self::error::GossipError;
pub use self::identity::GossipId;
pub use self::seal::{GossipKey, Keyring};
