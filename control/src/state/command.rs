//! Commands: the payload of every Raft log entry.

use crate::model::{
    Availability, CaRotation, Cluster, ConfigSpec, NetworkSpec, Node, NodeId, NodeState, Role, SecretSpec, ServiceSpec, TaskId, TaskStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Init {
        cluster: Cluster,
        node: Node,
    },
    AddNode {
        node: Node,
    },
    RemoveNode {
        node: String,
        force: bool,
    },
    UpdateNode {
        node: String,
        availability: Option<Availability>,
        role: Option<Role>,
        label_add: BTreeMap<String, String>,
        label_rm: Vec<String>,
    },
    SetNodeState {
        node: String,
        state: NodeState,
        message: String,
    },
    /// What the node's kernel offers encrypted networks, as its agent describes it at the
    /// start of each session (a node probes at daemon start: a new kernel after a reboot is
    /// told here, not only at join).
    SetNodeEncryption {
        node: crate::model::NodeId,
        encryption: crate::model::EncryptionSupport,
    },
    SetJoinToken {
        role: Role,
        token: String,
    },
    /// `shoal update`: cluster-wide settings; `None` leaves a setting as it is.
    UpdateCluster {
        cert_expiry_ms: Option<u64>,
        /// Autolock on with this key (or the key rotated), or off; `None` leaves it.
        #[serde(default)]
        autolock: Option<Autolock>,
    },
    /// `shoal ca --rotate`: the new root (made by the manager that took the request).
    StartCaRotation {
        rotation: CaRotation,
    },
    /// A manager issued `node` a certificate signed by the root with digest `ca_digest`.
    CertIssued {
        node: NodeId,
        ca_digest: String,
    },
    CreateNetwork {
        spec: NetworkSpec,
    },
    RemoveNetwork {
        network: String,
    },
    CreateService {
        spec: ServiceSpec,
    },
    /// A whole new spec (a stack's redeploy); when it changes what tasks run, the updater
    /// replaces them by `spec.update`.
    UpdateService {
        service: String,
        spec: ServiceSpec,
    },
    /// `service update`: as `UpdateService`, refused unless the service is still at
    /// `version` (the version it was read at; the Engine API's `?version=`).
    UpdateServiceAt {
        service: String,
        version: u64,
        spec: ServiceSpec,
    },
    /// `service rollback`: back to the previous spec, tasks replaced by `spec.rollback`.
    RollbackService {
        service: String,
        version: Option<u64>,
    },
    ScaleService {
        service: String,
        replicas: i64,
    },
    RemoveService {
        service: String,
    },
    CreateConfig {
        spec: ConfigSpec,
    },
    RemoveConfig {
        config: String,
    },
    CreateSecret {
        spec: SecretSpec,
    },
    RemoveSecret {
        secret: String,
    },
    /// A manager issues `node` its WireGuard identity (a fresh key pair; the tunnel address is
    /// given here, deterministically): the first time an encrypted network needs it, and again
    /// on rotation (the address stays).
    IssueWireGuard {
        node: NodeId,
        private_key: String,
    },
    /// A manager rotates every node pair's preshared key: a fresh seed they are derived from.
    RotatePairKeys {
        seed: String,
    },
    /// `network update --rotate-keys`: rotate the pair keys now (the leader issues a new seed).
    RequestKeyRotation,
    /// A manager issues a gossip key (base64, 32 random bytes): the first, or step 1 of a
    /// rotation (every node accepts it from now on; see `state::gossip`).
    InstallGossipKey {
        key: String,
    },
    /// Step 2 of a gossip key rotation: every node sends under key `id`.
    UseGossipKey {
        id: u32,
    },
    /// Step 3: no node accepts key `id` any more.
    RetireGossipKey {
        id: u32,
    },
    /// `shoal update --rotate-gossip-key`: the leader rotates the gossip key now.
    RequestGossipKeyRotation,
    /// Task states reported by the agent of `node`.
    TaskStatus {
        node: NodeId,
        updates: Vec<(TaskId, TaskStatus)>,
    },
    /// Nothing but a reconcile at `now` (restart delays, update delays and monitor windows
    /// that came due).
    Tick,
    /// Several commands in one log entry (the leader batches concurrent writes); each
    /// succeeds or fails on its own.
    Batch(Vec<Command>),
}

/// Autolock's setting in `UpdateCluster` (an enum, not `Option<Option<_>>`: serde cannot tell
/// `Some(None)` from `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Autolock {
    Off,
    /// On, with this unlock key (`SWMKEY-1-...`).
    Key(String),
}

/// A command with the leader's clock, so replicas agree on time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub now_ms: u64,
    pub cmd: Command,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Created { id: String },
    Batch(Vec<Result<Response, super::StateError>>),
}
