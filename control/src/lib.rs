//! Cluster state and decisions: Raft store, manager API, CA and join tokens, allocator,
//! orchestrator, scheduler, dispatcher.
//!
//! Layout, each layer importing only those below it: `model` (plain data), `state` (the
//! replicated state, its commands, validation), the pure decision makers `allocator`,
//! `orchestrator`, `scheduler`, `decide` (the pipeline that applies a command and reconciles),
//! then the I/O side (`store`, `manager`, `dispatcher`, `node`) over the leaf `rpc`.

pub mod allocator;
pub mod api_client;
pub mod ca;
pub mod decide;
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
// Builders for tests of the pure core; the binary's CLI tests use them too (feature `testkit`).
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
