//! Node filters and the spread score.

use crate::model::constraint::{parse_all, Constraint};
use crate::model::{Availability, Node, NodeId, NodeState, Protocol, Service};
use crate::state::ClusterState;
use std::collections::{BTreeSet, HashMap};

/// Why nodes were turned down, for the task's status message.
#[derive(Clone, Debug, Default)]
pub struct Rejections {
    pub not_ready: usize,
    pub not_active: usize,
    pub constraints: usize,
    pub max_replicas: usize,
    pub host_ports: usize,
    pub resources: usize,
}

impl Rejections {
    pub fn message(&self, total: usize) -> String {
        let mut parts = vec![];
        if self.not_ready > 0 {
            parts.push(format!("{} not ready", self.not_ready));
        }
        if self.not_active > 0 {
            parts.push(format!("{} not available for new tasks", self.not_active));
        }
        if self.constraints > 0 {
            parts.push(format!("{} not matching constraints", self.constraints));
        }
        if self.max_replicas > 0 {
            parts.push(format!("{} at max replicas per node", self.max_replicas));
        }
        if self.host_ports > 0 {
            parts.push(format!("{} with host-mode port conflicts", self.host_ports));
        }
        if self.resources > 0 {
            parts.push(format!("{} with insufficient resources", self.resources));
        }
        format!("no suitable node ({total} nodes: {})", if parts.is_empty() { "none".into() } else { parts.join("; ") })
    }
}

pub struct Candidates {
    /// Positions (in `NodeLoad`'s node order) of nodes passing the static filters.
    pub nodes: Vec<usize>,
    pub rejections: Rejections,
}

/// Nodes passing the filters that do not depend on other placements.
pub fn static_candidates(state: &ClusterState, service: &Service) -> Candidates {
    let constraints: Vec<Constraint> = parse_all(&service.spec.placement.constraints).unwrap_or_default();
    let mut rejections = Rejections::default();
    let mut nodes = vec![];
    for (i, n) in state.nodes.values().enumerate() {
        if let Err(why) = check_node(n, &constraints) {
            match why {
                Why::NotReady => rejections.not_ready += 1,
                Why::NotActive => rejections.not_active += 1,
                Why::Constraint => rejections.constraints += 1,
            }
            continue;
        }
        nodes.push(i);
    }
    Candidates { nodes, rejections }
}

enum Why {
    NotReady,
    NotActive,
    Constraint,
}

fn check_node(n: &Node, constraints: &[Constraint]) -> Result<(), Why> {
    if n.state != NodeState::Ready {
        return Err(Why::NotReady);
    }
    if n.availability != Availability::Active {
        return Err(Why::NotActive);
    }
    if !constraints.iter().all(|c| c.matches(n)) {
        return Err(Why::Constraint);
    }
    Ok(())
}

/// Task counts per node, per service per node, and host ports in use per node. Nodes are
/// addressed by position in the state's (id-sorted) node map, so a placement is a scan over
/// two integer arrays.
pub struct NodeLoad {
    index: HashMap<NodeId, usize>,
    ids: Vec<NodeId>,
    total: Vec<u64>,
    per_service: HashMap<String, Vec<u64>>,
    host_ports: HashMap<usize, BTreeSet<(Protocol, i64)>>,
    /// (CPUs, memory) each node has (0 = not reported) and what its tasks reserve.
    capacity: Vec<(u64, u64)>,
    reserved: Vec<(u64, u64)>,
}

/// What one task of a service asks of its node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

impl Reservation {
    pub fn of(s: &Service) -> Reservation {
        Reservation { nano_cpus: s.spec.reservations.nano_cpus, memory_bytes: s.spec.reservations.memory_bytes }
    }
}

impl NodeLoad {
    pub fn new(state: &ClusterState) -> NodeLoad {
        let ids: Vec<NodeId> = state.nodes.keys().cloned().collect();
        let index = ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        let capacity = state.nodes.values().map(|n| (n.resources.nano_cpus, n.resources.memory_bytes)).collect();
        NodeLoad {
            index,
            total: vec![0; ids.len()],
            reserved: vec![(0, 0); ids.len()],
            capacity,
            ids,
            per_service: HashMap::new(),
            host_ports: HashMap::new(),
        }
    }

    pub fn position(&self, node: &str) -> Option<usize> {
        self.index.get(node).copied()
    }

    pub fn id(&self, pos: usize) -> &NodeId {
        &self.ids[pos]
    }

    pub fn add(&mut self, pos: usize, service: &str, host_ports: &[(Protocol, i64)], r: Reservation) {
        self.total[pos] += 1;
        self.reserved[pos].0 += r.nano_cpus;
        self.reserved[pos].1 += r.memory_bytes;
        let n = self.ids.len();
        self.per_service.entry(service.to_string()).or_insert_with(|| vec![0; n])[pos] += 1;
        if !host_ports.is_empty() {
            self.host_ports.entry(pos).or_default().extend(host_ports.iter().copied());
        }
    }

    /// A resource the node did not report is not checked.
    fn has_room(&self, pos: usize, r: Reservation) -> bool {
        let ((cpu, mem), (used_cpu, used_mem)) = (self.capacity[pos], self.reserved[pos]);
        (r.nano_cpus == 0 || cpu == 0 || used_cpu + r.nano_cpus <= cpu)
            && (r.memory_bytes == 0 || mem == 0 || used_mem + r.memory_bytes <= mem)
    }

    fn fits_with(
        &self,
        pos: usize,
        counts: Option<&Vec<u64>>,
        ports: &[(Protocol, i64)],
        max: u64,
        r: Reservation,
        why: &mut Rejections,
    ) -> bool {
        if !self.has_room(pos, r) {
            why.resources += 1;
            return false;
        }
        if max > 0 && counts.map_or(0, |c| c[pos]) >= max {
            why.max_replicas += 1;
            return false;
        }
        if !ports.is_empty() {
            if let Some(used) = self.host_ports.get(&pos) {
                if ports.iter().any(|p| used.contains(p)) {
                    why.host_ports += 1;
                    return false;
                }
            }
        }
        true
    }

    /// Tasks of `service` on the node.
    pub fn tasks_of(&self, service: &str, pos: usize) -> u64 {
        self.per_service.get(service).map_or(0, |c| c[pos])
    }

    pub fn fits(&self, pos: usize, service: &str, ports: &[(Protocol, i64)], max: u64, r: Reservation, why: &mut Rejections) -> bool {
        self.fits_with(pos, self.per_service.get(service), ports, max, r, why)
    }

    /// Spread: fewest tasks of this service, then fewest overall, then lowest node id.
    pub fn best(
        &self,
        nodes: &[usize],
        service: &str,
        ports: &[(Protocol, i64)],
        max: u64,
        r: Reservation,
        why: &mut Rejections,
    ) -> Option<usize> {
        let counts = self.per_service.get(service);
        let mut best: Option<((u64, u64), usize)> = None;
        for &pos in nodes {
            if !self.fits_with(pos, counts, ports, max, r, why) {
                continue;
            }
            let score = (counts.map_or(0, |c| c[pos]), self.total[pos]);
            // Positions follow node ids, so the first of equal scores has the lowest id.
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, pos));
            }
        }
        best.map(|(_, pos)| pos)
    }
}
