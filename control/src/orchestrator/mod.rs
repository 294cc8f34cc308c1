//! The orchestrator: makes the set of tasks match the services. Replicated services get one
//! live task per slot `1..=replicas`; global services one per eligible node. Tasks that end are
//! restarted by the restart policy (condition, delay, max attempts in a window); tasks on down
//! or drained nodes are replaced; each slot keeps a bounded history. When a spec changes what
//! tasks run, the updater (`update`) replaces the older tasks slot by slot.

mod restart;
pub mod update;

use crate::model::constraint::{parse_all, Constraint};
use crate::model::{Availability, NodeId, NodeState, ServiceId, ServiceMode, Task, TaskId, TaskState, TaskStatus};
use crate::state::ClusterState;
use std::collections::{BTreeMap, BTreeSet};

/// Slot key: replicated slots by number, global ones by node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SlotKey {
    Replica(u64),
    Node(NodeId),
}

pub fn reconcile(state: &mut ClusterState, now: u64) {
    remove_orphans_of_deleted_services(state);
    let mut by_service: BTreeMap<ServiceId, BTreeMap<SlotKey, Vec<TaskId>>> = BTreeMap::new();
    for t in state.tasks.values() {
        let key = if t.slot > 0 { SlotKey::Replica(t.slot) } else { SlotKey::Node(t.node_id.clone().unwrap_or_default()) };
        by_service.entry(t.service_id.clone()).or_default().entry(key).or_default().push(t.id.clone());
    }
    let service_ids: Vec<ServiceId> = state.services.keys().cloned().collect();
    for sid in service_ids {
        let mut slots = by_service.remove(&sid).unwrap_or_default();
        for ids in slots.values_mut() {
            ids.sort_by_key(|id| state.tasks.get(id).map(|t| t.seq).unwrap_or(0));
        }
        adopt_unversioned_tasks(state, &sid);
        handle_current_tasks(state, &sid, &mut slots, now);
        let held = update::run(state, &sid, &mut slots, now);
        match state.services[&sid].spec.mode {
            ServiceMode::Replicated { replicas } => scale_replicated(state, &sid, &mut slots, replicas.max(0) as u64, &held, now),
            ServiceMode::Global => converge_global(state, &sid, &mut slots, &held, now),
        }
        trim_history(state, &slots);
        forget_unused_specs(state, &sid);
    }
}

/// A service from before spec versions (state written by an older shoal): its spec is the one
/// every task runs, as nothing replaced tasks then.
fn adopt_unversioned_tasks(state: &mut ClusterState, sid: &str) {
    let Some(s) = state.services.get_mut(sid) else { return };
    if s.spec_version != 0 {
        return;
    }
    s.spec_version = s.version.max(1);
    let v = s.spec_version;
    for t in state.tasks.values_mut().filter(|t| t.service_id == sid) {
        t.service_version = v;
    }
}

/// Older specs are kept while some task runs them (its assignment carries its own spec).
fn forget_unused_specs(state: &mut ClusterState, sid: &str) {
    let Some(s) = state.services.get(sid) else { return };
    if s.task_specs.is_empty() {
        return;
    }
    let used: std::collections::BTreeSet<u64> = state.tasks.values().filter(|t| t.service_id == sid).map(|t| t.service_version).collect();
    if let Some(s) = state.services.get_mut(sid) {
        s.task_specs.retain(|v, _| used.contains(v));
    }
}

/// The live task of a slot: the newest one still desired to run.
fn current<'a>(state: &'a ClusterState, ids: &[TaskId]) -> Option<&'a Task> {
    ids.iter().rev().filter_map(|id| state.tasks.get(id)).find(|t| t.desired_state <= TaskState::Running)
}

fn shut_down(t: &mut Task, now: u64, message: &str) {
    t.desired_state = TaskState::Shutdown;
    if t.status.state < TaskState::Assigned {
        t.status = TaskStatus::new(TaskState::Shutdown, message, now);
    }
}

fn handle_current_tasks(state: &mut ClusterState, sid: &str, slots: &mut BTreeMap<SlotKey, Vec<TaskId>>, now: u64) {
    for (key, ids) in slots.iter_mut() {
        let Some(t) = current(state, ids) else { continue };
        let tid = t.id.clone();
        let node = t.node_id.as_ref().map(|n| state.nodes.get(n));
        let terminal = t.status.state.is_terminal();
        // Node gone or down: the task is orphaned and replaced at once.
        if let Some(node) = node {
            let lost = match node {
                None => Some("node removed"),
                Some(n) if n.state == NodeState::Down => Some("node down"),
                _ => None,
            };
            if let Some(why) = lost {
                if !terminal || t.desired_state == TaskState::Running {
                    let Some(t) = state.tasks.get_mut(&tid) else { continue };
                    t.desired_state = TaskState::Shutdown;
                    if !t.status.state.is_terminal() {
                        t.status = TaskStatus::new(TaskState::Orphaned, why, now);
                    }
                    if let SlotKey::Replica(slot) = key {
                        let restarts = t.restarts.clone();
                        let new = new_task(state, sid, *slot, None, now, 0, restarts);
                        ids.push(new);
                    }
                }
                continue;
            }
            if node.is_some_and(|n| n.availability == Availability::Drain) && !terminal {
                let Some(t) = state.tasks.get_mut(&tid) else { continue };
                shut_down(t, now, "node is drained");
                if let SlotKey::Replica(slot) = key {
                    let restarts = t.restarts.clone();
                    let new = new_task(state, sid, *slot, None, now, 0, restarts);
                    ids.push(new);
                }
                continue;
            }
        }
        if terminal {
            let policy = state.services[sid].spec.restart.clone();
            let t = &state.tasks[&tid];
            if let Some(restarts) = restart::decide(&policy, t, now) {
                let node = match key {
                    SlotKey::Node(n) => Some(n.clone()),
                    SlotKey::Replica(_) => None,
                };
                let slot = t.slot;
                if let Some(t) = state.tasks.get_mut(&tid) {
                    t.desired_state = TaskState::Shutdown;
                }
                let new = new_task(state, sid, slot, node, now, now + policy.delay_ms, restarts);
                ids.push(new);
            }
        }
    }
}

fn scale_replicated(
    state: &mut ClusterState,
    sid: &str,
    slots: &mut BTreeMap<SlotKey, Vec<TaskId>>,
    replicas: u64,
    held: &BTreeSet<SlotKey>,
    now: u64,
) {
    for (key, ids) in slots.iter() {
        if let SlotKey::Replica(slot) = key {
            if *slot > replicas {
                let live: Vec<TaskId> =
                    ids.iter().filter(|id| state.tasks.get(*id).is_some_and(|t| t.desired_state <= TaskState::Running)).cloned().collect();
                for id in live {
                    if let Some(t) = state.tasks.get_mut(&id) {
                        shut_down(t, now, "service scaled down");
                    }
                }
            }
        }
    }
    for slot in 1..=replicas {
        let key = SlotKey::Replica(slot);
        if held.contains(&key) {
            continue;
        }
        let has = slots.get(&key).is_some_and(|ids| current(state, ids).is_some());
        if !has {
            let id = new_task(state, sid, slot, None, now, 0, vec![]);
            slots.entry(key).or_default().push(id);
        }
    }
}

fn eligible_for_global(state: &ClusterState, constraints: &[Constraint]) -> Vec<NodeId> {
    state
        .nodes
        .values()
        .filter(|n| n.state != NodeState::Down && n.availability != Availability::Drain)
        .filter(|n| constraints.iter().all(|c| c.matches(n)))
        .map(|n| n.id.clone())
        .collect()
}

fn converge_global(state: &mut ClusterState, sid: &str, slots: &mut BTreeMap<SlotKey, Vec<TaskId>>, held: &BTreeSet<SlotKey>, now: u64) {
    let constraints = parse_all(&state.services[sid].spec.placement.constraints).unwrap_or_default();
    let eligible = eligible_for_global(state, &constraints);
    for (key, ids) in slots.iter() {
        if let SlotKey::Node(node) = key {
            if !eligible.contains(node) {
                let live: Vec<TaskId> =
                    ids.iter().filter(|id| state.tasks.get(*id).is_some_and(|t| t.desired_state <= TaskState::Running)).cloned().collect();
                for id in live {
                    if let Some(t) = state.tasks.get_mut(&id) {
                        shut_down(t, now, "node no longer eligible for this global service");
                    }
                }
            }
        }
    }
    for node in eligible {
        let key = SlotKey::Node(node.clone());
        if held.contains(&key) {
            continue;
        }
        let has = slots.get(&key).is_some_and(|ids| current(state, ids).is_some());
        if !has {
            let id = new_task(state, sid, 0, Some(node), now, 0, vec![]);
            slots.entry(key).or_default().push(id);
        }
    }
}

fn new_task(state: &mut ClusterState, sid: &str, slot: u64, node: Option<NodeId>, now: u64, not_before: u64, restarts: Vec<u64>) -> TaskId {
    let id: TaskId = state.ids.next_id();
    // Tasks run the service's current spec (its spec version), whichever path makes them.
    let version = state.services.get(sid).map(|s| s.spec_version).unwrap_or(0);
    let task = Task {
        id: id.clone(),
        service_id: sid.into(),
        slot,
        node_id: node,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::New, "created", now),
        service_version: version,
        networks: vec![],
        not_before_ms: not_before,
        created_ms: now,
        weight: 1,
        seq: state.ids.counter,
        restarts,
    };
    state.tasks.insert(id.clone(), task);
    id
}

/// Keep the newest `limit` tasks per slot; older ones go once they have ended.
fn trim_history(state: &mut ClusterState, slots: &BTreeMap<SlotKey, Vec<TaskId>>) {
    let limit = state.task_history_limit();
    for ids in slots.values() {
        let live: Vec<&TaskId> = ids.iter().filter(|id| state.tasks.contains_key(*id)).collect();
        if live.len() <= limit {
            continue;
        }
        let excess = live.len() - limit;
        let doomed: Vec<TaskId> = live
            .iter()
            .filter(|id| state.tasks.get(**id).is_some_and(|t| t.desired_state > TaskState::Running && t.status.state.is_terminal()))
            .take(excess)
            .map(|id| (*id).clone())
            .collect();
        for id in doomed {
            state.tasks.remove(&id);
        }
    }
}

/// Tasks of removed services stop; they are deleted once they have ended or never started.
fn remove_orphans_of_deleted_services(state: &mut ClusterState) {
    let mut doomed = vec![];
    for t in state.tasks.values_mut() {
        if state.services.contains_key(&t.service_id) {
            continue;
        }
        t.desired_state = TaskState::Shutdown;
        let node_alive = t.node_id.as_ref().and_then(|n| state.nodes.get(n)).is_some_and(|n| n.state != NodeState::Down);
        if t.status.state.is_terminal() || t.status.state < TaskState::Assigned || !node_alive {
            doomed.push(t.id.clone());
        }
    }
    for id in doomed {
        state.tasks.remove(&id);
    }
}

#[cfg(test)]
mod tests;
