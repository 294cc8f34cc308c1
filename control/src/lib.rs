//! Cluster state and decisions: Raft store, manager API, CA and join tokens, allocator,
//! orchestrator, scheduler, dispatcher.

pub mod cli;
