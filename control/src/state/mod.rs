//! The replicated cluster state: data, lookups, validation, and the commands that change it.
//! Applying a command and reconciling is the decision pipeline's job (`crate::decide`), which
//! sits above this module; nothing here imports the allocator, orchestrator or scheduler.

mod ca_rotation;
mod command;
mod error;
pub mod gossip;
pub mod limits;
mod lookup;
pub mod validate;
mod wireguard;

pub use command::{Autolock, Command, Request, Response};
pub use error::StateError;

use crate::model::{
    Cluster, Config, ConfigId, IdGen, Network, NetworkId, Node, NodeId, Secret, SecretId, Service, ServiceId, Task, TaskId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster: Option<Cluster>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub networks: BTreeMap<NetworkId, Network>,
    pub services: BTreeMap<ServiceId, Service>,
    pub tasks: BTreeMap<TaskId, Task>,
    pub secrets: BTreeMap<SecretId, Secret>,
    #[serde(default)]
    pub configs: BTreeMap<ConfigId, Config>,
    pub ids: IdGen,
    /// Nodes removed with `node rm`: their certificates stay valid until they expire, and are
    /// refused by id (etcd's removed-member check).
    #[serde(default)]
    pub removed_nodes: BTreeSet<NodeId>,
    /// Each node's WireGuard identity (encrypted networks), by node id. Private keys are
    /// blanked in every client view (`manager::redact`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wireguard: BTreeMap<NodeId, crate::model::WireGuardIdentity>,
    /// The seed of the node pairs' preshared keys (managers only; blanked in client views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_keys: Option<crate::model::PairKeySeed>,
    /// A rotation of the pair keys was asked for at this time (`network update --rotate-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation_requested_ms: Option<u64>,
    /// The cluster's gossip key ring (`state::gossip`; blanked in client views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_keys: Option<gossip::GossipKeys>,
    /// Bumped by every successful command.
    pub version: u64,
    /// The leader's clock at the last reconcile: a deadline at or before it has had its pass.
    #[serde(default)]
    pub reconciled_ms: u64,
}

impl ClusterState {
    /// The earliest time after `now_ms` that a reconcile has something to do that no command
    /// will bring: a restart delay ending, an update's delay or last monitor window ending.
    pub fn next_deadline(&self, now_ms: u64) -> Option<u64> {
        self.deadlines().filter(|at| *at > now_ms).min()
    }

    /// Whether some deadline has come and had no reconcile since (the leader then proposes a
    /// `Tick`; a deadline whose pass could not act, a restart no node can take, asks once).
    pub fn is_due(&self, now_ms: u64) -> bool {
        self.deadlines().any(|at| at <= now_ms && at > self.reconciled_ms)
    }

    fn deadlines(&self) -> impl Iterator<Item = u64> + '_ {
        let restarts = self
            .tasks
            .values()
            .filter(|t| t.status.state == crate::model::TaskState::Pending && t.node_id.is_none() && t.not_before_ms > 0)
            .map(|t| t.not_before_ms);
        let updates =
            self.services.values().filter_map(|s| s.update_status.as_ref().filter(|st| st.is_active()).and_then(|st| st.progress.due_ms));
        restarts.chain(updates)
    }

    pub fn task_history_limit(&self) -> usize {
        self.cluster.as_ref().map(|c| c.task_history_limit).unwrap_or(5).max(1)
    }
}
