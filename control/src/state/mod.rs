//! The replicated cluster state and the commands that change it. `apply` is deterministic: the
//! same commands in the same order give the same state on every manager. A command either
//! fails with an error naming the field and changes nothing, or succeeds and is followed by one
//! reconcile pass (orchestrator -> allocator -> scheduler).

mod apply;
#[cfg(test)]
mod bounds_tests;
mod ca_rotation;
mod command;
mod error;
pub mod limits;
mod lookup;
#[cfg(test)]
mod tests;
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
    /// Bumped by every successful command.
    pub version: u64,
    /// The leader's clock at the last reconcile: a deadline at or before it has had its pass.
    #[serde(default)]
    pub reconciled_ms: u64,
}

impl ClusterState {
    /// Apply one command: all or nothing.
    pub fn apply(&mut self, req: &Request) -> Result<Response, StateError> {
        if let Command::Batch(cmds) = &req.cmd {
            // Each command is all-or-nothing on its own; one reconcile pass for the batch.
            let mut results = Vec::with_capacity(cmds.len());
            for c in cmds {
                let r = self.apply_command(req.now_ms, c);
                if r.is_ok() {
                    self.version += 1;
                }
                results.push(r);
            }
            self.finish_ca_rotation();
            self.reconcile(req.now_ms);
            return Ok(Response::Batch(results));
        }
        let resp = self.apply_command(req.now_ms, &req.cmd)?;
        self.version += 1;
        self.finish_ca_rotation();
        self.reconcile(req.now_ms);
        Ok(resp)
    }

    /// Bring tasks in line with services and nodes: make/stop tasks, give them addresses,
    /// place them. Never fails: problems are written into task status messages.
    pub fn reconcile(&mut self, now_ms: u64) {
        if self.cluster.is_none() {
            return;
        }
        self.reconciled_ms = self.reconciled_ms.max(now_ms);
        crate::orchestrator::reconcile(self, now_ms);
        crate::allocator::allocate_tasks(self, now_ms);
        crate::scheduler::schedule(self, now_ms);
        crate::allocator::allocate_lb_addrs(self);
    }

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
