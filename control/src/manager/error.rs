//! What can go wrong in a manager, one variant per cause: callers (and users) tell a manager
//! that is shutting down from one whose Raft core stopped, or from one that is not the leader.
//! Raft's own error is part of the message (a field, not a `#[source]`): users read these over
//! the local API as text, and the binary prints chains with `{:#}`, which would repeat it.

use super::disk;
use crate::rpc::tls;
use openraft::error::{ChangeMembershipError, ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::BasicNode;
use openraft::ConfigError;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(thiserror::Error, Debug)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("manager {raft_id}: the Raft timing is invalid: {error} (check the heartbeat and election timeouts)")]
    RaftConfig { raft_id: u64, error: Box<ConfigError> },
    #[error("manager {raft_id}: starting Raft: {error}")]
    RaftStart { raft_id: u64, error: Box<Fatal<u64>> },
    #[error("manager {raft_id}: starting a new cluster: {error}")]
    Initialize { raft_id: u64, error: Box<InitializeError<u64, BasicNode>> },
    /// The manager stopped (or is stopping) while a write waited: it may or may not have committed.
    #[error("manager {manager} is shutting down: the write may not have been committed (check, then retry on another manager)")]
    ShuttingDown { manager: String },
    /// The Raft core stopped on its own (a storage error, a panic) while the rest still runs.
    #[error("manager {manager}: its Raft core has stopped ({error}): see its log, and restart it")]
    RaftFatal { manager: String, error: Box<Fatal<u64>> },
    #[error(
        "manager {manager}: its Raft core has stopped (a storage error: see its log), so it knows no leader to read through; restart it"
    )]
    RaftStopped { manager: String },
    /// Raft refused a membership change (one is in progress, the learner is unknown, ...).
    #[error("manager {manager}: {change}: {error}")]
    Membership { manager: String, change: String, error: Box<ChangeMembershipError<u64>> },
    #[error(
        "no leader is reachable: the managers may have lost quorum (recover with `shoal init --force-new-cluster` on a surviving manager)"
    )]
    NoLeader,
    #[error("the write was not committed within {0:?}: the managers may have lost quorum")]
    Timeout(Duration),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("manager {addr}: {message}")]
    Remote { addr: String, message: String },
    #[error("listening on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error("this manager has no cluster yet")]
    NoCluster,
    #[error("this manager is not the leader (an election may be under way): ask the leader, or try again")]
    NotLeader,
    #[error(
        "too few managers answer to confirm the current state: a read needs more than half of the managers online and reachable (try again, or recover with `shoal init --force-new-cluster` on a surviving manager)"
    )]
    NoQuorum,
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
}

impl ManagerError {
    /// A Raft write (`change` says which: "adding Raft voter 3") that failed on `manager`.
    pub(super) fn write(manager: &str, change: impl Into<String>, e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ManagerError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ManagerError::NotLeader,
            RaftError::APIError(ClientWriteError::ChangeMembershipError(source)) => {
                ManagerError::Membership { manager: manager.to_string(), change: change.into(), error: Box::new(source) }
            }
            RaftError::Fatal(source) => ManagerError::fatal(manager, source),
        }
    }

    pub(super) fn fatal(manager: &str, error: Fatal<u64>) -> ManagerError {
        ManagerError::RaftFatal { manager: manager.to_string(), error: Box::new(error) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_names_its_manager_and_what_to_do() {
        let e = ManagerError::ShuttingDown { manager: "10.0.0.1:2377".into() }.to_string();
        assert!(e.contains("10.0.0.1:2377 is shutting down") && e.contains("retry on another manager"), "{e}");
        let e = ManagerError::fatal("10.0.0.2:2377", Fatal::Panicked).to_string();
        assert!(e.contains("10.0.0.2:2377") && e.contains("Raft core has stopped (panicked)") && e.contains("restart it"), "{e}");
        let e = ManagerError::RaftStopped { manager: "10.0.0.3:2377".into() }.to_string();
        assert!(e.contains("10.0.0.3:2377") && e.contains("knows no leader to read through"), "{e}");
    }

    #[test]
    fn a_write_sent_to_a_follower_is_not_leader() {
        let fwd = openraft::error::ForwardToLeader::<u64, BasicNode>::empty();
        let e = ManagerError::write("m", "adding Raft voter 3", RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)));
        assert!(matches!(e, ManagerError::NotLeader), "{e:?}");
        let e = ManagerError::write("m", "adding Raft voter 3", RaftError::Fatal(Fatal::Stopped));
        assert!(matches!(e, ManagerError::RaftFatal { ref manager, .. } if manager == "m"), "{e:?}");
    }
}
