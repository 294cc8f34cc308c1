//! The scheduler: places PENDING tasks on nodes. Filters (node ready, availability active,
//! constraints, max replicas per node, host-mode port conflicts, reserved CPU and memory), then
//! the service's placement preferences narrow the nodes to one branch of node-label values
//! (`spread`), then spread: fewest tasks of this service, then fewest tasks overall, then node
//! id (for determinism).

mod filter;
mod spread;

use crate::model::{PublishMode, ServiceId, TaskId, TaskState, TaskStatus};
use crate::state::ClusterState;
use filter::{NodeLoad, Reservation};
use std::collections::BTreeMap;

/// Whether a task counts against a node's load.
fn is_active(t: &crate::model::Task) -> bool {
    t.node_id.is_some() && !t.status.state.is_terminal() && t.desired_state <= TaskState::Running
}

pub fn schedule(state: &mut ClusterState, now: u64) {
    // Tasks waiting for a node, grouped by service so filters are computed once per service.
    let mut pending: BTreeMap<ServiceId, Vec<TaskId>> = BTreeMap::new();
    for t in state.tasks.values() {
        if t.status.state == TaskState::Pending && t.desired_state == TaskState::Running && t.not_before_ms <= now {
            pending.entry(t.service_id.clone()).or_default().push(t.id.clone());
        }
    }
    if pending.is_empty() {
        return;
    }
    let mut load = NodeLoad::new(state);
    for t in state.tasks.values().filter(|t| is_active(t)) {
        let Some(pos) = t.node_id.as_deref().and_then(|n| load.position(n)) else { continue };
        let svc = state.services.get(&t.service_id);
        let host_ports = svc.map(host_ports_of).unwrap_or_default();
        load.add(pos, &t.service_id, &host_ports, svc.map(Reservation::of).unwrap_or_default());
    }
    for (sid, mut tasks) in pending {
        let Some(service) = state.services.get(&sid) else { continue };
        tasks.sort_by_key(|id| state.tasks.get(id).map(|t| (t.slot, t.seq)).unwrap_or_default());
        let candidates = filter::static_candidates(state, service);
        let host_ports = host_ports_of(service);
        let max_per_node = service.spec.placement.max_replicas_per_node;
        let reserve = Reservation::of(service);
        for tid in tasks {
            let Some(task) = state.tasks.get(&tid) else { continue };
            let mut rejections = candidates.rejections.clone();
            let choice = match &task.node_id {
                // Global tasks come with their node; it still has to pass the filters.
                Some(node) => load.position(node).filter(|pos| {
                    candidates.nodes.contains(pos) && load.fits(*pos, &sid, &host_ports, max_per_node, reserve, &mut rejections)
                }),
                None => {
                    let branch = spread_branch(state, service, &candidates.nodes, &load, &host_ports, reserve);
                    // An empty branch (no node with room) still goes through `best` for the reasons.
                    let nodes = branch.as_deref().filter(|b| !b.is_empty()).unwrap_or(&candidates.nodes);
                    load.best(nodes, &sid, &host_ports, max_per_node, reserve, &mut rejections)
                }
            };
            let Some(task) = state.tasks.get_mut(&tid) else { continue };
            match choice {
                Some(pos) => {
                    load.add(pos, &sid, &host_ports, reserve);
                    task.node_id = Some(load.id(pos).clone());
                    task.status = TaskStatus::new(TaskState::Assigned, "scheduler assigned task to node", now);
                }
                None => {
                    task.status.message = rejections.message(state.nodes.len());
                }
            }
        }
    }
}

/// The candidates the service's placement preferences leave for its next task, or `None`
/// when it has none.
fn spread_branch(
    state: &ClusterState,
    service: &crate::model::Service,
    candidates: &[usize],
    load: &NodeLoad,
    host_ports: &[(crate::model::Protocol, i64)],
    reserve: Reservation,
) -> Option<Vec<usize>> {
    let prefs = &service.spec.placement.preferences;
    if prefs.is_empty() {
        return None;
    }
    let nodes: Vec<&crate::model::Node> = state.nodes.values().collect();
    let max = service.spec.placement.max_replicas_per_node;
    let spread_nodes: Vec<spread::SpreadNode> = candidates
        .iter()
        .map(|&pos| spread::SpreadNode {
            pos,
            values: prefs.iter().map(|p| p.label().and_then(|l| nodes[pos].labels.get(l)).cloned().unwrap_or_default()).collect(),
            tasks: load.tasks_of(&service.id, pos),
            fits: load.fits(pos, &service.id, host_ports, max, reserve, &mut filter::Rejections::default()),
        })
        .collect();
    Some(spread::branch(&spread_nodes, prefs.len()))
}

fn host_ports_of(s: &crate::model::Service) -> Vec<(crate::model::Protocol, i64)> {
    s.ports.iter().filter(|p| p.mode == PublishMode::Host).filter_map(|p| p.published.map(|n| (p.protocol, n))).collect()
}

#[cfg(test)]
mod tests;
