//! Cluster state and decisions: Raft store, manager API, CA and join tokens, allocator,
//! orchestrator, scheduler, dispatcher.
//!
//! Layout: `model` (plain data), `state` (the replicated state and its commands), the pure
//! decision makers `allocator`, `orchestrator`, `scheduler`, then the I/O side.

pub mod allocator;
pub mod ca;
pub mod cli;
pub mod dispatcher;
pub mod engine;
pub mod gossip;
pub mod logs;
pub mod manager;
pub mod model;
pub mod node;
pub mod orchestrator;
pub mod rpc;
pub mod scheduler;
pub mod stack;
pub mod state;
pub mod store;
#[cfg(test)]
pub mod testkit;
