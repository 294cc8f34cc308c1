//! Durable Raft storage: the log in redb (every append is fsynced before Raft hears it is
//! done), snapshots as files (written, fsynced, renamed), the state machine in memory. All on-disk
//! bytes of entries and snapshots are encrypted with the node's data key (`crypto`), so secrets
//! and the CA key are never on disk in clear.

pub mod crypto;
mod log_store;
pub mod recover;
mod state_machine;
#[cfg(test)]
mod tests;

pub use log_store::LogStore;
pub use state_machine::{SharedState, StateMachineStore};

use crate::state::{Request, Response, StateError};
use std::io::Cursor;

/// What applying one entry returns to the proposer.
pub type ApplyResult = Result<Response, StateError>;

openraft::declare_raft_types!(
    /// Raft types of the control plane.
    pub TypeConfig:
        D = Request,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;

#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("opening the Raft log {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("Raft log database: {0}")]
    Db(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("decrypting {what}: wrong data key or corrupted file")]
    Decrypt { what: String },
    #[error("decoding {what}: {source}")]
    Decode { what: String, source: serde_json::Error },
    #[error("{what}: the disk writer thread ended without an answer ({reason})")]
    Writer { what: &'static str, reason: String },
}

/// Runs a disk write (an fsync: up to seconds on a busy disk) on tokio's blocking pool. Run on
/// a runtime worker instead, it holds the worker and the tasks queued on it, among them agent
/// sessions whose heartbeats then go unread, and nodes look silent.
pub(crate) async fn on_disk<T: Send + 'static>(
    what: &'static str,
    write: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(write).await {
        Ok(out) => out,
        Err(e) => Err(StoreError::Writer { what, reason: e.to_string() }),
    }
}

macro_rules! db_err {
    ($e:expr) => {
        $crate::store::StoreError::Db($e.to_string())
    };
}
pub(crate) use db_err;
