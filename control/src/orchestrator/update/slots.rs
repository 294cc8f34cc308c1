//! What the updater asks of a slot and of a task: which slots still run an older spec, whether
//! a new task counts as updated or failed, whether an old one has ended.

use super::super::{shut_down, SlotKey};
use crate::model::{NodeId, NodeState, Replacement, Service, ServiceMode, Task, TaskId, TaskState};
use crate::state::ClusterState;
use std::collections::BTreeMap;

/// Running and, when its spec has a health check, healthy: a new task counts as updated.
pub fn ready(svc: &Service, t: &Task) -> bool {
    t.status.state == TaskState::Running
        && (svc.spec_for(t.service_version).healthcheck.is_none() || t.status.health == Some(crate::model::Health::Healthy))
}

/// Ended on its own: failed, refused by its node, or exited (a service's task should not).
/// A task shut down on purpose, or lost with its node, is not the new spec's failure.
pub fn failed(t: &Task) -> bool {
    matches!(t.status.state, TaskState::Failed | TaskState::Rejected | TaskState::Complete)
}

/// An old task is out of the way: it ended, never reached a node, or its node is gone or down
/// (nothing will report it ending).
pub fn ended(state: &ClusterState, id: &str) -> bool {
    let Some(t) = state.tasks.get(id) else { return true };
    if t.status.state.is_terminal() || t.status.state < TaskState::Assigned {
        return true;
    }
    t.node_id.as_ref().and_then(|n| state.nodes.get(n)).is_none_or(|n| n.state == NodeState::Down)
}

pub fn key_of(r: &Replacement) -> SlotKey {
    match &r.node {
        Some(n) if r.slot == 0 => SlotKey::Node(n.clone()),
        _ => SlotKey::Replica(r.slot),
    }
}

/// The slot's newest task of the current spec that is still meant to run, if any.
pub fn current_version_task(state: &ClusterState, ids: Option<&Vec<TaskId>>, spec_version: u64) -> Option<TaskId> {
    ids?.iter()
        .rev()
        .filter_map(|id| state.tasks.get(id))
        .find(|t| t.desired_state <= TaskState::Running && t.service_version == spec_version && !t.status.state.is_terminal())
        .map(|t| t.id.clone())
}

/// Slots of the service's desired set that still run a task of an older spec and that this
/// update has not replaced yet, in slot order.
pub fn dirty(
    state: &ClusterState,
    sid: &str,
    slots: &BTreeMap<SlotKey, Vec<TaskId>>,
    spec_version: u64,
    done: &[(u64, Option<NodeId>)],
) -> Vec<SlotKey> {
    let Some(svc) = state.services.get(sid) else { return vec![] };
    slots
        .iter()
        .filter(|(key, _)| match (key, &svc.spec.mode) {
            (SlotKey::Replica(n), ServiceMode::Replicated { replicas }) => *n <= (*replicas).max(0) as u64,
            (SlotKey::Node(_), ServiceMode::Global) => true,
            _ => false,
        })
        .filter(|(key, _)| {
            let (slot, node) = match key {
                SlotKey::Replica(n) => (*n, None),
                SlotKey::Node(n) => (0, Some(n.clone())),
            };
            !done.iter().any(|(s, n)| *s == slot && *n == node)
        })
        .filter(|(_, ids)| {
            ids.iter()
                .filter_map(|id| state.tasks.get(id))
                .any(|t| t.desired_state <= TaskState::Running && t.service_version != spec_version)
        })
        .map(|(key, _)| key.clone())
        .collect()
}

pub fn shut_down_all(state: &mut ClusterState, ids: &[TaskId], now: u64, message: &str) {
    for id in ids {
        if let Some(t) = state.tasks.get_mut(id) {
            if t.desired_state <= TaskState::Running {
                shut_down(t, now, message);
            }
        }
    }
}
