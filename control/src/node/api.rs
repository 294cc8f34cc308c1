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
    /// `shoal members`: what gossip on this node sees.
    Members,
}

/// The node's dispatcher session while one is up: the manager it is with (the leader when it opened) and
/// since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
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
    pub session: Option<SessionInfo>,
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
    /// Every member gossip on this node lists (a restarted node's former self included, down).
    Members(Vec<crate::gossip::MemberInfo>),
}

pub type LocalResponse = Result<LocalReply, LocalError>;

/// What kind of failure the local API reports, so a client can act on it (offer `shoal
/// unlock`, `shoal init`, run on a manager) without reading the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalErrorKind {
    /// The request line was not a request (a client of another version?).
    BadRequest,
    AlreadyJoined,
    NotJoined,
    NotManager,
    /// Leaving on a manager without `--force`.
    LeaveManager,
    /// A field of the request is invalid (the message names it).
    Invalid,
    /// The remote manager refused or could not be reached.
    Join,
    /// Autolock is on and this manager waits for `shoal unlock`.
    Locked,
    NotLocked,
    BadUnlockKey,
    /// Anything else: the message says what.
    #[default]
    Other,
}

/// The local API's error reply: its kind and the text the CLI prints after "Error response
/// from daemon:". On the wire `{"kind": ..., "message": ...}`; a bare string (a node from
/// before the kind) still reads, as kind `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(from = "LocalErrorWire")]
#[error("{message}")]
pub struct LocalError {
    pub kind: LocalErrorKind,
    pub message: String,
}

impl LocalError {
    pub fn bad_request(e: impl std::fmt::Display) -> Self {
        LocalError { kind: LocalErrorKind::BadRequest, message: format!("bad request: {e}") }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LocalErrorWire {
    Typed { kind: LocalErrorKind, message: String },
    Text(String),
}

impl From<LocalErrorWire> for LocalError {
    fn from(w: LocalErrorWire) -> Self {
        match w {
            LocalErrorWire::Typed { kind, message } => LocalError { kind, message },
            LocalErrorWire::Text(message) => LocalError { kind: LocalErrorKind::Other, message },
        }
    }
}

impl From<super::NodeError> for LocalError {
    fn from(e: super::NodeError) -> Self {
        use super::NodeError as E;
        let kind = match &e {
            E::AlreadyJoined => LocalErrorKind::AlreadyJoined,
            E::NotJoined => LocalErrorKind::NotJoined,
            E::NotManager => LocalErrorKind::NotManager,
            E::LeaveManager => LocalErrorKind::LeaveManager,
            E::Invalid { .. } => LocalErrorKind::Invalid,
            E::Join { .. } => LocalErrorKind::Join,
            E::Locked => LocalErrorKind::Locked,
            E::NotLocked => LocalErrorKind::NotLocked,
            E::BadUnlockKey => LocalErrorKind::BadUnlockKey,
            E::Manager(_) | E::Identity(_) | E::Ca(_) | E::Tls(_) | E::Socket { .. } | E::Recover(_) => LocalErrorKind::Other,
        };
        LocalError { kind, message: e.to_string() }
    }
}

/// Docker's rule for `swarm init` without `--advertise-addr`: the listen address's IP when it
/// names one (`--listen-addr 192.168.33.10:2377`); empty (the daemon's own address) otherwise.
pub fn default_advertise(listen: Option<&str>) -> String {
    let ip = listen.and_then(|l| l.parse::<std::net::SocketAddr>().map(|s| s.ip()).or_else(|_| l.parse::<std::net::IpAddr>()).ok());
    match ip {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_carries_its_kind_and_text_and_an_old_text_reply_still_reads() {
        let e = LocalError::from(super::super::NodeError::Locked);
        let line = serde_json::to_string(&LocalResponse::Err(e.clone())).unwrap();
        let back: LocalResponse = serde_json::from_str(&line).unwrap();
        let back = back.unwrap_err();
        assert_eq!(back, e);
        assert_eq!(back.kind, LocalErrorKind::Locked);
        assert!(back.to_string().contains("Please use `shoal unlock` to unlock it."), "{back}");
        let old: LocalResponse = serde_json::from_str(r#"{"Err":"bad request: EOF"}"#).unwrap();
        assert_eq!(old.unwrap_err(), LocalError { kind: LocalErrorKind::Other, message: "bad request: EOF".into() });
    }

    #[test]
    fn advertise_defaults_to_a_specific_listen_ip() {
        assert_eq!(default_advertise(Some("192.168.33.10:2377")), "192.168.33.10");
        assert_eq!(default_advertise(Some("192.168.33.10")), "192.168.33.10");
        assert_eq!(default_advertise(Some("0.0.0.0:2377")), "");
        assert_eq!(default_advertise(None), "");
    }
}
