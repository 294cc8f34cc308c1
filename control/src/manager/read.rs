//! Linearizable reads (Raft's ReadIndex). `node ls`, `service ps` and every other read through
//! the API see at least every write acknowledged before the read began, on whichever manager
//! they are asked (Docker's managers send reads to the leader too):
//! - the leader confirms with a quorum that it still leads (a heartbeat round) and waits until
//!   it has applied everything committed when the read arrived, then answers from its state;
//! - a follower asks the leader for its confirmed view, then answers from its own replica once
//!   that has applied as far, so every replica's state machine is what users read. A replica that
//!   cannot catch up in time (its disk is full, its Raft core stopped) answers with the leader's
//!   view, which is just as new.
//!
//! A manager that cannot reach a leader (no quorum, or cut off from it) refuses the read rather
//! than answer from a state that may be stale.

use super::{ClusterView, Manager, ManagerError};
use crate::rpc::messages::{ApiRequest, ApiResponse};
use openraft::error::{CheckIsLeaderError, RaftError};
use std::time::Duration;

/// How long a read may take to confirm leadership or to get the leader's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a follower waits for its replica to apply as far as the leader had.
const CATCH_UP: Duration = Duration::from_secs(1);
/// Between two leadership checks that found no quorum (a follower slow to answer one heartbeat).
const RETRY: Duration = Duration::from_millis(50);

/// Why the leader could not confirm it leads.
enum Confirm {
    /// Another manager leads (or an election is on): ask it.
    NotLeader,
    Failed(ManagerError),
}

impl Manager {
    /// A linearizable view of the cluster, on any manager.
    pub async fn read_view(&self) -> Result<ClusterView, ManagerError> {
        match self.confirmed_leader_view().await {
            Ok(v) => return Ok(v),
            Err(Confirm::Failed(e)) => return Err(e),
            Err(Confirm::NotLeader) => {}
        }
        if !self.raft_alive() {
            return Err(ManagerError::RaftStopped { manager: self.config().advertise.clone() });
        }
        let addr = self.leader_addr().ok_or(ManagerError::NoLeader)?;
        let mut client = self.client_for(&addr)?;
        let reply = tokio::time::timeout(READ_TIMEOUT, client.api(ApiRequest::View))
            .await
            .map_err(|_| ManagerError::Remote {
                addr: addr.clone(),
                message: format!("the leader did not answer a read within {READ_TIMEOUT:?}"),
            })?
            .map_err(|s| ManagerError::Remote { addr: addr.clone(), message: s.message().to_string() })?
            .into_inner();
        let leader_view = match reply {
            ApiResponse::View(v) => *v,
            other => return Err(ManagerError::Remote { addr, message: format!("unexpected reply {other:?}") }),
        };
        if self.raft_alive() && self.applied_within(leader_view.applied, CATCH_UP).await {
            return Ok(self.view());
        }
        tracing::debug!(leader = %addr, index = leader_view.applied, "this replica is behind the leader: answering with the leader's view");
        Ok(leader_view)
    }

    /// The view, if this manager is the leader and a quorum confirms it; what another manager
    /// asks the leader for.
    pub async fn leader_view(&self) -> Result<ClusterView, ManagerError> {
        match self.confirmed_leader_view().await {
            Ok(v) => Ok(v),
            Err(Confirm::NotLeader) => Err(ManagerError::NotLeader),
            Err(Confirm::Failed(e)) => Err(e),
        }
    }

    async fn confirmed_leader_view(&self) -> Result<ClusterView, Confirm> {
        if !self.is_leader() {
            return Err(Confirm::NotLeader);
        }
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            // Waits for the apply too: the state read below holds every write committed when
            // the leadership was confirmed.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = tokio::time::timeout(left, self.raft().ensure_linearizable()).await;
            match outcome {
                Ok(Ok(_)) => return Ok(self.view()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => return Err(Confirm::NotLeader),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                    if tokio::time::Instant::now() + RETRY >= deadline {
                        tracing::warn!(reachable = ?q.got, "a read could not confirm this manager still leads: too few managers answer");
                        return Err(Confirm::Failed(ManagerError::NoQuorum));
                    }
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Err(RaftError::Fatal(e))) => return Err(Confirm::Failed(ManagerError::fatal(&self.config().advertise, e))),
                Err(_) => return Err(Confirm::Failed(ManagerError::NoQuorum)),
            }
        }
    }

    /// Whether the local state machine applied `index` within `limit`.
    async fn applied_within(&self, index: u64, limit: Duration) -> bool {
        let mut rx = self.shared().subscribe();
        let reached = matches!(tokio::time::timeout(limit, rx.wait_for(|v| *v >= index)).await, Ok(Ok(_)));
        reached
    }
}
