//! The cluster's data model: what the Raft state machine holds and what the API returns.
//! Plain data, serde-serialisable, no behaviour beyond small helpers.

mod ids;
mod network;
mod node;
mod secret;
mod service;
mod task;

pub use ids::{random_id, IdGen, NetworkId, NodeId, SecretId, ServiceId, TaskId};
pub use network::{Network, NetworkSpec, GATEWAY_NETWORK, GATEWAY_SUBNETS};
pub use node::{Availability, Node, NodeResources, NodeState, Role};
pub use secret::{Secret, SecretSpec};
pub use service::{
    EndpointMode, EndpointSpec, FailureAction, HealthCheck, Placement, PortConfig, Protocol, PublishMode, Ratio, Replacement,
    ResourceLimits, ResourceReservations, RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
    UpdateProgress, UpdateState, UpdateStatus, Vip,
};
pub use task::{mac_for, Health, NetworkAttachment, Task, TaskState, TaskStatus, HOST_NAME_MAX};

use serde::{Deserialize, Serialize};

/// Cluster-wide settings and identity, fixed at `init` except the join tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub created_ms: u64,
    /// Pools that overlay subnets are carved from.
    pub default_addr_pool: Vec<ipnet::Ipv4Net>,
    /// Prefix length of each carved subnet.
    pub subnet_size: u8,
    pub worker_token: String,
    pub manager_token: String,
    /// Root CA certificate (PEM) and its key (PEM). The key lives in the replicated state so every
    /// manager can sign node certificates; the on-disk log and snapshots are encrypted.
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// How many tasks a slot keeps (running plus history).
    pub task_history_limit: usize,
    /// Agents' heartbeat period in milliseconds.
    pub heartbeat_period_ms: u64,
}
