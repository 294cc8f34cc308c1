//! Commands: the payload of every Raft log entry.

use crate::model::{Availability, CaRotation, Cluster, NetworkSpec, Node, NodeState, Role, SecretSpec, ServiceSpec, TaskId, TaskStatus};
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
    SetJoinToken {
        role: Role,
        token: String,
    },
    /// `shoal update`: cluster-wide settings; `None` leaves a setting as it is.
    UpdateCluster {
        cert_expiry_ms: Option<u64>,
    },
    /// `shoal ca --rotate`: the new root (made by the manager that took the request).
    StartCaRotation {
        rotation: CaRotation,
    },
    /// A manager issued `node` a certificate signed by the root with digest `ca_digest`.
    CertIssued {
        node: String,
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
    UpdateService {
        service: String,
        spec: ServiceSpec,
    },
    ScaleService {
        service: String,
        replicas: i64,
    },
    RemoveService {
        service: String,
    },
    CreateSecret {
        spec: SecretSpec,
    },
    RemoveSecret {
        secret: String,
    },
    /// Task states reported by the agent of `node`.
    TaskStatus {
        node: String,
        updates: Vec<(TaskId, TaskStatus)>,
    },
    /// Nothing but a reconcile at `now` (restart delays that came due).
    Tick,
    /// Several commands in one log entry (the leader batches concurrent writes); each
    /// succeeds or fails on its own.
    Batch(Vec<Command>),
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
