//! Nodes: managers and workers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

/// A role that is neither worker nor manager, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {given:?}: use worker or manager")]
pub struct UnknownRole {
    pub given: String,
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "worker" => Ok(Role::Worker),
            "manager" => Ok(Role::Manager),
            other => Err(UnknownRole { given: other.to_string() }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

/// An availability that is not active, pause or drain, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown availability {given:?}: use active, pause or drain")]
pub struct UnknownAvailability {
    pub given: String,
}

impl std::str::FromStr for Availability {
    type Err = UnknownAvailability;
    fn from_str(s: &str) -> Result<Availability, UnknownAvailability> {
        match s {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            other => Err(UnknownAvailability { given: other.to_string() }),
        }
    }
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Unknown,
    Down,
    Ready,
    Disconnected,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Down => "down",
            NodeState::Ready => "ready",
            NodeState::Disconnected => "disconnected",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: super::NodeId,
    /// Raft member id (only meaningful while the node is a manager, kept for life).
    pub raft_id: u64,
    pub hostname: String,
    /// Address other nodes reach this node on (IP only).
    pub addr: String,
    /// Manager gRPC address (`ip:port`), for managers.
    pub manager_addr: Option<String>,
    pub role: Role,
    pub availability: Availability,
    pub state: NodeState,
    pub message: String,
    pub labels: BTreeMap<String, String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// What the node has for tasks (Docker's node Resources), reported when it joined.
    #[serde(default)]
    pub resources: NodeResources,
    /// What its kernel offers encrypted networks, reported when it joined (older nodes: none).
    #[serde(default)]
    pub encryption: super::EncryptionSupport,
}

/// CPUs (in billionths) and memory of a node; 0 = not reported (no reservation check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

impl NodeResources {
    /// This machine's: its CPUs and MemTotal.
    pub fn of_this_host() -> NodeResources {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(0);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
            .unwrap_or(0);
        NodeResources { nano_cpus: cpus * 1_000_000_000, memory_bytes: mem * 1024 }
    }
}
