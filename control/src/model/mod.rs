//! The cluster's data model: what the Raft state machine holds and what the API returns.
//! Plain data, serde-serialisable, no behaviour beyond small helpers.

mod config;
pub mod constraint;
mod container;
mod file_ref;
mod ids;
mod mount;
mod network;
mod node;
mod placement;
mod secret;
mod service;
mod task;
mod wireguard;

pub use config::{Config, ConfigSpec};
pub use container::{normalize_cap, ContainerOpts, CAPABILITIES, ULIMITS};
pub use file_ref::{FileRef, DEFAULT_FILE_MODE, SECRETS_DIR};
pub use ids::{random_id, ConfigId, IdGen, NetworkId, NodeId, SecretId, ServiceId, TaskId};
pub use mount::{check_volume_opts, Mount, MountKind, PROPAGATIONS, VOLUME_OPTS};
pub use network::{Network, NetworkSpec, GATEWAY_NETWORK, GATEWAY_SUBNETS};
pub use node::{Availability, Node, NodeResources, NodeState, Role, UnknownAvailability, UnknownRole};
pub use placement::{PlacementError, PlacementPreference, MAX_PREFERENCES};
pub use secret::{Secret, SecretSpec};
pub use service::{
    EndpointMode, EndpointSpec, FailureAction, HealthCheck, Placement, PortConfig, Protocol, PublishMode, Ratio, Replacement,
    ResourceLimits, ResourceReservations, RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
    UpdateProgress, UpdateState, UpdateStatus, Vip,
};
pub use task::{mac_for, Health, NetworkAttachment, Task, TaskState, TaskStatus, HOST_NAME_MAX};
pub use wireguard::{
    generate_private_key, generate_seed, public_key_of, BackendError, EncryptionBackend, EncryptionSupport, KeyError, PairKeySeed,
    WireGuardIdentity, ENCRYPTED_OPTION, PAIR_KEY_ROTATION_MS,
};

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
    /// Lifetime of node certificates (`--cert-expiry`); nodes renew from half of it on.
    #[serde(default = "default_cert_expiry_ms")]
    pub cert_expiry_ms: u64,
    /// Autolock's unlock key (`SWMKEY-1-...`); managers seal their key files under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autolock_key: Option<String>,
    /// A root CA rotation under way (`shoal ca --rotate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<CaRotation>,
}

/// The new root of a CA rotation. Managers sign with it (presenting the cross-signed
/// certificate beside, for nodes that trust only the old root), every node trusts both roots,
/// and once every node that is not down holds a certificate of the new root it replaces the
/// old one, which is then trusted no more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    pub cert_pem: String,
    pub key_pem: String,
    /// The new root's certificate signed by the old root.
    pub cross_signed_pem: String,
    pub started_ms: u64,
    /// Nodes that hold a certificate of the new root.
    pub renewed: std::collections::BTreeSet<NodeId>,
}

fn default_cert_expiry_ms() -> u64 {
    crate::ca::DEFAULT_CERT_EXPIRY.as_millis() as u64
}

impl Cluster {
    pub fn cert_expiry(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.cert_expiry_ms)
    }

    /// The CA that signs node certificates now, and the certificates to present after a node
    /// certificate it signed (the cross-signed root during a rotation, else none).
    pub fn signing_ca(&self) -> (crate::ca::RootCa, String) {
        match &self.ca_rotation {
            Some(r) => (crate::ca::RootCa { cert_pem: r.cert_pem.clone(), key_pem: r.key_pem.clone() }, r.cross_signed_pem.clone()),
            None => (crate::ca::RootCa { cert_pem: self.ca_cert_pem.clone(), key_pem: self.ca_key_pem.clone() }, String::new()),
        }
    }

    /// The roots every node must trust: the current one, and the new one during a rotation.
    pub fn trust_bundle(&self) -> String {
        match &self.ca_rotation {
            Some(r) => format!("{}\n{}", self.ca_cert_pem.trim_end(), r.cert_pem),
            None => self.ca_cert_pem.clone(),
        }
    }
}
