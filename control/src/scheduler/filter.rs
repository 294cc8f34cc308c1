//! Node filters and the spread score.

use super::constraint::{parse_all, Constraint};
use crate::model::{Availability, Node, NodeState, Protocol, Service};
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
        format!("no suitable node ({total} nodes: {})", if parts.is_empty() { "none".into() } else { parts.join("; ") })
    }
}

pub struct Candidates {
    pub nodes: Vec<String>,
    pub rejections: Rejections,
}

/// Nodes passing the filters that do not depend on other placements.
pub fn static_candidates(state: &ClusterState, service: &Service) -> Candidates {
    let constraints: Vec<Constraint> = parse_all(&service.spec.placement.constraints).unwrap_or_default();
    let mut rejections = Rejections::default();
    let mut nodes = vec![];
    for n in state.nodes.values() {
        if let Err(why) = check_node(n, &constraints) {
            match why {
                Why::NotReady => rejections.not_ready += 1,
                Why::NotActive => rejections.not_active += 1,
                Why::Constraint => rejections.constraints += 1,
            }
            continue;
        }
        nodes.push(n.id.clone());
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

/// Task counts per node, per service per node, and host ports in use per node.
#[derive(Default)]
pub struct NodeLoad {
    total: HashMap<String, u64>,
    /// service -> node -> count
    per_service: HashMap<String, HashMap<String, u64>>,
    host_ports: HashMap<String, BTreeSet<(Protocol, i64)>>,
}

impl NodeLoad {
    pub fn add(&mut self, node: &str, service: &str, host_ports: &[(Protocol, i64)]) {
        *self.total.entry(node.to_string()).or_default() += 1;
        *self.per_service.entry(service.to_string()).or_default().entry(node.to_string()).or_default() += 1;
        if !host_ports.is_empty() {
            self.host_ports.entry(node.to_string()).or_default().extend(host_ports.iter().copied());
        }
    }

    fn service_count(&self, node: &str, service: &str) -> u64 {
        self.per_service.get(service).and_then(|m| m.get(node)).copied().unwrap_or(0)
    }

    pub fn fits(&self, node: &str, service: &str, ports: &[(Protocol, i64)], max: u64, why: &mut Rejections) -> bool {
        if max > 0 && self.service_count(node, service) >= max {
            why.max_replicas += 1;
            return false;
        }
        if let Some(used) = self.host_ports.get(node) {
            if ports.iter().any(|p| used.contains(p)) {
                why.host_ports += 1;
                return false;
            }
        }
        true
    }

    /// Spread: fewest tasks of this service, then fewest overall, then lowest node id.
    pub fn best(&self, nodes: &[String], service: &str, ports: &[(Protocol, i64)], max: u64, why: &mut Rejections) -> Option<String> {
        let mut best: Option<((u64, u64), &String)> = None;
        for n in nodes {
            if !self.fits(n, service, ports, max, why) {
                continue;
            }
            let score = (self.service_count(n, service), self.total.get(n).copied().unwrap_or(0));
            if best.as_ref().is_none_or(|(s, id)| score < *s || (score == *s && n < *id)) {
                best = Some((score, n));
            }
        }
        best.map(|(_, n)| n.clone())
    }
}
