//! The node's local API (unix socket, one JSON request and one JSON reply per line): what the
//! `shoal` CLI on this host talks to, like `docker` talks to dockerd.

use crate::model::Role;
use crate::rpc::messages::{ApiRequest, ApiResponse};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitOptions {
    /// `ip` or `ip:port` other nodes use to reach this one.
    pub advertise_addr: String,
    /// `ip:port` to listen on for the manager API (default 0.0.0.0:2377).
    pub listen_addr: Option<String>,
    pub default_addr_pool: Vec<String>,
    pub default_addr_pool_mask_length: u8,
    pub force_new_cluster: bool,
    pub task_history_limit: Option<usize>,
    /// Node certificates' lifetime (`--cert-expiry`); None = 90 days.
    #[serde(default)]
    pub cert_expiry_ms: Option<u64>,
    /// `--autolock`: seal the managers' keys under an unlock key.
    #[serde(default)]
    pub autolock: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinOptions {
    pub token: String,
    /// `host:port` of a manager.
    pub remote: String,
    pub advertise_addr: Option<String>,
    pub listen_addr: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one request per CLI call; boxing buys nothing
pub enum LocalRequest {
    Init(InitOptions),
    Join(JoinOptions),
    Leave {
        force: bool,
    },
    /// `shoal unlock`: the cluster's unlock key.
    Unlock {
        key: String,
    },
    Api(ApiRequest),
    Info,
}

/// The agent's dispatcher session: the manager it is with (the leader when it opened) and
/// since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSession {
    /// `ip:port` of the manager.
    pub manager: String,
    pub session_id: String,
    pub since_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: Option<String>,
    pub cluster_id: Option<String>,
    pub role: Option<Role>,
    pub managers: Vec<String>,
    pub manager_addr: Option<String>,
    pub connected: bool,
    pub view_version: u64,
    /// The agent's session, while one is up.
    #[serde(default)]
    pub session: Option<AgentSession>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LocalReply {
    Initialized {
        node_id: String,
        worker_token: String,
        manager_token: String,
        manager_addr: String,
        /// With `--autolock`: the key that unlocks a restarted manager.
        #[serde(default)]
        unlock_key: Option<String>,
    },
    Unlocked,
    Joined {
        node_id: String,
        role: Role,
    },
    Left,
    Api(ApiResponse),
    Info(NodeInfo),
}

pub type LocalResponse = Result<LocalReply, String>;
