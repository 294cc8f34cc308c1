//! Messages of the control gRPC service (the dispatcher session's are in `session.rs`).

use crate::model::Role;
use crate::state::{Command, Response, StateError};
use crate::store::TypeConfig;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

pub use super::session::{AgentMessage, SessionMessage};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub csr_pem: String,
    pub hostname: String,
    /// Underlay address of the node (IP).
    pub addr: String,
    /// `ip:port` the node's manager API will listen on, if it is or becomes a manager.
    pub manager_addr: String,
    /// What the node has for tasks (older nodes send none).
    #[serde(default)]
    pub resources: crate::model::NodeResources,
    /// What its kernel offers encrypted networks (older nodes send none).
    #[serde(default)]
    pub encryption: crate::model::EncryptionSupport,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub raft_id: u64,
    pub node_id: crate::model::NodeId,
    pub addr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: crate::model::NodeId,
    pub raft_id: u64,
    pub role: Role,
    pub cert_pem: String,
    pub ca_cert_pem: String,
    pub cluster_id: String,
    pub managers: Vec<ManagerInfo>,
    pub heartbeat_period_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewResponse {
    /// The node certificate, followed by the cross-signed root during a CA rotation.
    pub cert_pem: String,
    pub role: Role,
    /// The roots the node must trust now (both during a rotation).
    #[serde(default)]
    pub ca_pem: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // moved once per RPC
pub enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

/// Requests to a manager: from a node's local API (CLI) or forwarded by another manager.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one request per call; boxing buys nothing
pub enum ApiRequest {
    /// Commit a command through Raft (forwarded to the leader).
    Propose(Command),
    /// The cluster as this manager sees it (secrets' data and the CA key left out).
    View,
    /// Current join tokens, optionally rotating one first.
    JoinTokens { rotate: Option<Role> },
    /// A node that joined as manager (or was promoted) is ready: make it a Raft voter.
    AddVoter { raft_id: u64, addr: String },
    /// Take a manager out of the Raft membership (demote or leave).
    RemoveVoter { raft_id: u64 },
    /// Task output (`service logs`), gathered by the leader from the nodes that ran the tasks.
    Logs(crate::logs::LogsRequest),
    /// Start a root CA rotation (`shoal ca --rotate`).
    RotateCa,
    /// Turn autolock on (a new key) or off.
    SetAutolock(bool),
    /// The current unlock key, optionally rotated first (`shoal unlock-key [--rotate]`).
    UnlockKey { rotate: bool },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ApiResponse {
    Committed {
        result: Result<Response, StateError>,
        index: u64,
    },
    View(Box<ClusterView>),
    JoinTokens {
        worker: String,
        manager: String,
    },
    Done,
    Logs(crate::logs::LogsReply),
    /// The unlock key after the change (None: autolock is off).
    UnlockKey(Option<String>),
}

/// What `node ls`, `service ps` and friends read: the state without secrets' data, the CA key
/// or join tokens (`manager::redact`), plus Raft facts (leader, voters).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterView {
    pub state: crate::state::ClusterState,
    /// Raft id of the leader, if one is known.
    pub leader: Option<u64>,
    pub voters: std::collections::BTreeSet<u64>,
    /// Raft id of the manager that answered.
    pub this_manager: u64,
    /// Last applied log index on that manager.
    pub applied: u64,
    /// Each node's gossip membership as the answering manager's node sees it, by node id:
    /// "alive", "suspect" or "down"; empty when gossip does not run there.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub membership: std::collections::BTreeMap<String, String>,
}
