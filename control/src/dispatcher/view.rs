//! What one agent sees of the cluster, computed from the state, and the delta between two
//! such views. Pure: the dispatcher keeps the last view it sent per session and sends the diff.

use crate::model::{NetworkId, NodeId, NodeState, PairKeySeed, Role, ServiceId, Task, TaskId, TaskState, WireGuardIdentity};
use crate::rpc::session::{
    AgentUpdate, Assignment, GossipView, NetworkInfo, NodeMap, ServiceEndpoint, TaskEndpoint, WireGuardPeer, WireGuardView,
};
use crate::state::ClusterState;
use std::collections::BTreeMap;

/// The maps are persistent (`imbl`): the agent folds each update in and publishes a snapshot
/// to its tasks, and at 1,000 nodes a copy of the whole view per update was the agents' main
/// cost (a snapshot now shares everything the update did not touch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentView {
    pub role: Option<Role>,
    pub assignments: imbl::OrdMap<TaskId, Assignment>,
    pub networks: imbl::OrdMap<NetworkId, NetworkInfo>,
    pub services: imbl::OrdMap<ServiceId, ServiceEndpoint>,
    pub endpoints: imbl::OrdMap<TaskId, TaskEndpoint>,
    /// This node's WireGuard identity and its peers' (once a network is encrypted).
    pub wireguard: Option<WireGuardView>,
    /// The gossip key ring and node list (once the managers issued a key).
    pub gossip: Option<GossipView>,
}

/// The endpoint table (services, endpoints, networks) shared by all agents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointTable {
    pub networks: imbl::OrdMap<NetworkId, NetworkInfo>,
    pub services: imbl::OrdMap<ServiceId, ServiceEndpoint>,
    pub endpoints: imbl::OrdMap<TaskId, TaskEndpoint>,
    /// The gossip key ring and node list, the same for every node.
    pub gossip: Option<GossipView>,
}

impl EndpointTable {
    pub fn from_state(state: &ClusterState) -> EndpointTable {
        let mut peers: BTreeMap<NetworkId, NodeMap<String>> = BTreeMap::new();
        let mut endpoints = imbl::OrdMap::new();
        for t in state.tasks.values() {
            let Some(node) = t.node_id.as_ref().and_then(|n| state.nodes.get(n)) else { continue };
            if t.status.state.is_terminal() || t.status.state < TaskState::Assigned {
                continue;
            }
            for a in &t.networks {
                peers.entry(a.network_id.clone()).or_default().insert(node.id.clone(), node.addr.clone());
            }
            // Told to stop but still running on its node: no load balancer picks it and DNS does
            // not answer it, but every node keeps it reachable for the flows it has until its
            // node reports it stopped (the drain works across nodes, not only on its own).
            let draining = t.status.state == TaskState::Running && t.desired_state > TaskState::Running;
            if !t.is_endpoint() && !draining {
                continue;
            }
            let Some(svc) = state.services.get(&t.service_id) else { continue };
            endpoints.insert(
                t.id.clone(),
                TaskEndpoint {
                    task_id: t.id.clone(),
                    service_id: t.service_id.clone(),
                    name: t.name(&svc.spec.name),
                    node_id: node.id.clone(),
                    node_addr: node.addr.clone(),
                    addresses: t.networks.clone(),
                    health: t.status.health,
                    weight: t.weight,
                    draining,
                },
            );
        }
        // A node with a load-balancer address on a network balances on it (the routing mesh on
        // ingress, every node): the replies to that address come back over the overlay, so the
        // node is a peer of the network even with no task on it.
        for n in state.networks.values().filter(|n| !n.spec.node_local) {
            for node in n.lb_addrs.keys().filter_map(|id| state.nodes.get(id)).filter(|node| node.state != NodeState::Down) {
                peers.entry(n.id.clone()).or_default().insert(node.id.clone(), node.addr.clone());
            }
        }
        let networks = state
            .networks
            .values()
            .map(|n| {
                let peers = peers.remove(&n.id).unwrap_or_default();
                (
                    n.id.clone(),
                    NetworkInfo {
                        id: n.id.clone(),
                        name: n.spec.name.clone(),
                        vni: n.vni,
                        subnet: n.subnet,
                        gateway: n.gateway,
                        ingress: n.spec.ingress,
                        internal: n.spec.internal,
                        node_local: n.spec.node_local,
                        options: n.spec.options.clone(),
                        lb_addrs: NodeMap::from(&n.lb_addrs),
                        peers,
                    },
                )
            })
            .collect();
        let services = state
            .services
            .values()
            .map(|s| {
                (
                    s.id.clone(),
                    ServiceEndpoint {
                        id: s.id.clone(),
                        name: s.spec.name.clone(),
                        mode: s.spec.endpoint.mode,
                        vips: s.vips.clone(),
                        ports: s.ports.clone(),
                        networks: s.network_ids.clone(),
                        aliases: s
                            .spec
                            .network_aliases
                            .iter()
                            .filter_map(|(net, names)| Some((state.find_network(net).ok()?.id.clone(), names.clone())))
                            .collect(),
                    },
                )
            })
            .collect();
        EndpointTable { networks, services, endpoints, gossip: gossip_view(state) }
    }
}

impl AgentView {
    /// The view of `node_id`, sharing a precomputed endpoint table. (The leader's sessions
    /// read views through the `ViewCache`; this is the same view, built for one node.)
    pub fn for_node(state: &ClusterState, node_id: &str, table: &EndpointTable) -> AgentView {
        let assignments = state
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some(node_id))
            .filter_map(|t| assignment(state, t))
            .map(|a| (a.task.id.clone(), a))
            .collect();
        AgentView {
            role: state.nodes.get(node_id).map(|n| n.role),
            assignments,
            networks: table.networks.clone(),
            services: table.services.clone(),
            endpoints: table.endpoints.clone(),
            wireguard: wireguard_view(&state.wireguard, state.pair_keys.as_ref(), node_id),
            gossip: table.gossip.clone(),
        }
    }

    pub fn full_update(&self, version: u64) -> AgentUpdate {
        AgentUpdate {
            version,
            full: true,
            role: self.role,
            assignments: self.assignments.values().cloned().collect(),
            networks: self.networks.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
            wireguard: self.wireguard.clone(),
            gossip: self.gossip.clone().map(Box::new),
            ..Default::default()
        }
    }

    /// What changed from `old` to `self`.
    pub fn diff(&self, old: &AgentView, version: u64) -> AgentUpdate {
        let mut u = AgentUpdate { version, ..Default::default() };
        if self.role != old.role {
            u.role = self.role;
        }
        diff_map(&old.assignments, &self.assignments, &mut u.assignments, &mut u.removed_assignments);
        diff_map(&old.networks, &self.networks, &mut u.networks, &mut u.removed_networks);
        diff_map(&old.services, &self.services, &mut u.services, &mut u.removed_services);
        diff_map(&old.endpoints, &self.endpoints, &mut u.endpoints, &mut u.removed_endpoints);
        if self.wireguard != old.wireguard {
            u.wireguard = self.wireguard.clone();
        }
        if self.gossip != old.gossip {
            u.gossip = self.gossip.clone().map(Box::new);
        }
        u
    }

    /// The agent side: fold an update into the view it has.
    pub fn apply(&mut self, u: &AgentUpdate) {
        if u.full {
            *self = AgentView::default();
        }
        if u.role.is_some() {
            self.role = u.role;
        }
        apply_map(&mut self.assignments, &u.assignments, &u.removed_assignments, |a| a.task.id.clone());
        apply_map(&mut self.networks, &u.networks, &u.removed_networks, |n| n.id.clone());
        apply_map(&mut self.services, &u.services, &u.removed_services, |s| s.id.clone());
        apply_map(&mut self.endpoints, &u.endpoints, &u.removed_endpoints, |e| e.task_id.clone());
        if u.wireguard.is_some() {
            self.wireguard = u.wireguard.clone();
        }
        if u.gossip.is_some() {
            self.gossip = u.gossip.as_deref().cloned();
        }
        for (net, node, addr) in &u.network_peers {
            if let Some(n) = self.networks.get_mut(net) {
                set(&mut n.peers, node, addr.clone());
            }
        }
        for (net, node, addr) in &u.network_lb_addrs {
            if let Some(n) = self.networks.get_mut(net) {
                set(&mut n.lb_addrs, node, *addr);
            }
        }
        if let Some(g) = &mut self.gossip {
            for (node, addr) in &u.gossip_nodes {
                set(&mut g.nodes, node, addr.clone());
            }
        }
    }
}

/// What the task's node runs of it, if the task is one it should run (assigned, not ended,
/// its service still there).
pub(super) fn assignment(state: &ClusterState, t: &Task) -> Option<Assignment> {
    if t.status.state < TaskState::Assigned || t.status.state.is_terminal() {
        return None;
    }
    let svc = state.services.get(&t.service_id)?;
    // The spec the task was made from: during a rolling update the old tasks keep theirs
    // (their health check, their secrets) until they are replaced.
    let spec = svc.spec_for(t.service_version);
    let secrets =
        spec.secrets.iter().filter_map(|r| state.find_secret(&r.source).ok().map(|s| (r.source.clone(), s.spec.data.clone()))).collect();
    let configs =
        spec.configs.iter().filter_map(|r| state.find_config(&r.source).ok().map(|s| (r.source.clone(), s.spec.data.clone()))).collect();
    Some(Assignment { task: t.clone(), service_name: svc.spec.name.clone(), spec: spec.clone(), secrets, configs })
}

/// `node_id`'s WireGuard view: its own identity (with the private key, for it alone) and every
/// node's public half with the pair's preshared key.
pub(super) fn wireguard_view(
    identities: &BTreeMap<NodeId, WireGuardIdentity>,
    pair_keys: Option<&PairKeySeed>,
    node_id: &str,
) -> Option<WireGuardView> {
    let me = identities.get(node_id)?;
    Some(WireGuardView {
        private_key: me.private_key.clone(),
        address: me.address,
        peers: identities
            .iter()
            .map(|(id, w)| {
                let preshared_key = match pair_keys {
                    Some(k) if id != node_id => k.pair_key(node_id, id),
                    _ => String::new(),
                };
                (id.clone(), WireGuardPeer { public_key: w.public_key.clone(), address: w.address, preshared_key })
            })
            .collect(),
    })
}

/// The gossip key ring and every node's address, the same for every node.
fn gossip_view(state: &ClusterState) -> Option<GossipView> {
    let ring = state.gossip_keys.as_ref().filter(|r| !r.keys.is_empty())?;
    Some(GossipView {
        sending: ring.sending,
        keys: ring.keys.iter().map(|k| (k.id, k.key.clone())).collect(),
        nodes: state.nodes.values().map(|n| (n.id.clone(), n.addr.clone())).collect(),
    })
}

/// The entries added or changed from `old` to `new`, and the keys removed (imbl's diff skips
/// the subtrees both share).
fn diff_map<K: Ord + Clone, T: Clone + PartialEq>(
    old: &imbl::OrdMap<K, T>,
    new: &imbl::OrdMap<K, T>,
    upserts: &mut Vec<T>,
    removed: &mut Vec<K>,
) {
    for item in old.diff(new) {
        match item {
            imbl::ordmap::DiffItem::Add(_, v) | imbl::ordmap::DiffItem::Update { new: (_, v), .. } => upserts.push(v.clone()),
            imbl::ordmap::DiffItem::Remove(k, _) => removed.push(k.clone()),
        }
    }
}

/// Sets or (with `None`) removes one entry.
pub(super) fn set<K: Ord + Clone, V: Clone>(map: &mut imbl::OrdMap<K, V>, key: &K, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key.clone(), v);
        }
        None => {
            map.remove(key);
        }
    }
}

fn apply_map<K: Ord + Clone, T: Clone>(map: &mut imbl::OrdMap<K, T>, upserts: &[T], removed: &[K], key: impl Fn(&T) -> K) {
    for k in removed {
        map.remove(k);
    }
    for v in upserts {
        map.insert(key(v), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServiceMode, ServiceSpec};
    use crate::state::Command;
    use crate::testkit::World;

    fn view(w: &World, node: &str) -> AgentView {
        AgentView::for_node(&w.state, node, &EndpointTable::from_state(&w.state))
    }

    /// `web`, one replica, port 5000 published on the routing mesh (so on the ingress network).
    fn published_web() -> ServiceSpec {
        let mut s = ServiceSpec::new("web", "nginx");
        s.endpoint.ports = vec![crate::model::PortConfig {
            protocol: crate::model::Protocol::Tcp,
            target: 80,
            published: Some(5000),
            mode: crate::model::PublishMode::Ingress,
        }];
        s
    }

    #[test]
    fn every_node_is_an_ingress_peer_even_without_tasks() {
        let mut w = World::new(2);
        w.create(published_web());
        let table = EndpointTable::from_state(&w.state);
        let ingress = table.networks.values().find(|n| n.ingress).unwrap();
        // One task, on one node; the mesh of the other two still reaches it and hears back.
        assert_eq!(ingress.peers.len(), 3, "{:?}", ingress.peers);
        let backend = table.networks.values().find(|n| !n.ingress && !n.node_local);
        assert!(backend.is_none_or(|n| n.peers.len() <= 1));
    }

    #[test]
    fn an_agent_s_snapshot_shares_what_an_update_did_not_touch() {
        let mut w = World::new(3);
        w.create(published_web());
        w.report_all(crate::model::TaskState::Running);
        let first = view(&w, "n2");
        let mut agent = AgentView::default();
        agent.apply(&first.full_update(1));
        // What the agent publishes to its tasks after each update (node/session.rs).
        let snapshot = agent.clone();
        w.create(ServiceSpec::new("api", "nginx"));
        w.report_all(crate::model::TaskState::Running);
        let second = view(&w, "n2");
        agent.apply(&second.diff(&first, 2));
        assert_eq!(agent, second);
        assert_ne!(agent.services.len(), snapshot.services.len(), "the update changed the service table");
        // The ingress network (every node a peer, the map that grows with the cluster) was not
        // touched: the new view shares it with the snapshot instead of holding a copy.
        let ingress = agent.networks.values().find(|n| n.ingress).unwrap();
        let before = &snapshot.networks[&ingress.id];
        assert_eq!(ingress.peers.len(), 4);
        assert!(ingress.peers.ptr_eq(&before.peers) && ingress.lb_addrs.ptr_eq(&before.lb_addrs));
    }

    #[test]
    fn deltas_rebuild_the_same_view() {
        let mut w = World::new(2);
        let mut agent = AgentView::default();
        let mut sent = AgentView::default();
        let mut version = 0;
        let mut step = |w: &World, agent: &mut AgentView, sent: &mut AgentView| {
            version += 1;
            let now = view(w, "n2");
            let u = if version == 1 { now.full_update(version) } else { now.diff(sent, version) };
            agent.apply(&u);
            *sent = now;
            assert_eq!(agent, sent);
        };
        step(&w, &mut agent, &mut sent);
        let mut s = ServiceSpec::new("web", "nginx");
        s.mode = ServiceMode::Replicated { replicas: 6 };
        w.create(s);
        step(&w, &mut agent, &mut sent);
        assert_eq!(agent.assignments.len(), 2);
        w.report_all(crate::model::TaskState::Running);
        step(&w, &mut agent, &mut sent);
        assert_eq!(agent.endpoints.len(), 6, "every running task is an endpoint");
        w.ok(Command::ScaleService { service: "web".into(), replicas: 3 });
        step(&w, &mut agent, &mut sent);
        let serving = |v: &AgentView| v.endpoints.values().filter(|e| !e.draining).count();
        assert_eq!(serving(&agent), 3, "tasks told to stop leave the load balancers at once");
        assert_eq!(agent.endpoints.len(), 6, "they stay reachable while they drain: still running on their nodes");
        let stopped: Vec<crate::model::TaskId> =
            w.state.tasks.values().filter(|t| t.desired_state > crate::model::TaskState::Running).map(|t| t.id.clone()).collect();
        for id in &stopped {
            w.report(id, crate::model::TaskState::Shutdown);
        }
        step(&w, &mut agent, &mut sent);
        assert_eq!((serving(&agent), agent.endpoints.len()), (3, 3), "a task reported stopped is gone from the table");
        w.ok(Command::RemoveService { service: "web".into() });
        step(&w, &mut agent, &mut sent);
        assert!(agent.services.is_empty());
    }

    /// A node that balances on a network (its load-balancer address there) is a peer of it
    /// with no task on it: else the other nodes cannot send replies back to that address, and
    /// the routing mesh dies on a node whose last task of a published service went away.
    #[test]
    fn nodes_that_balance_on_a_network_are_its_peers_without_tasks() {
        let mut w = World::new(3);
        let mut s = ServiceSpec::new("web", "nginx");
        s.mode = ServiceMode::Replicated { replicas: 1 };
        s.placement.constraints = vec!["node.id==n1".into()];
        s.endpoint.ports = vec![crate::model::PortConfig {
            protocol: crate::model::Protocol::Tcp,
            target: 80,
            published: Some(8080),
            mode: crate::model::PublishMode::Ingress,
        }];
        w.create(s);
        w.report_all(crate::model::TaskState::Running);
        let ingress = w.state.ingress_network().unwrap().id.clone();
        let all: Vec<crate::model::NodeId> = w.state.nodes.keys().cloned().collect();
        assert!(all.len() >= 3);
        for node in &all {
            let peers: Vec<crate::model::NodeId> = view(&w, node).networks[&ingress].peers.keys().cloned().collect();
            assert_eq!(peers, all, "as seen from {node}");
        }
        w.ok(Command::SetNodeState { node: "n3".into(), state: crate::model::NodeState::Down, message: String::new() });
        let peers: Vec<crate::model::NodeId> = view(&w, "n1").networks[&ingress].peers.keys().cloned().collect();
        assert!(!peers.contains(&"n3".into()) && peers.len() == all.len() - 1, "a down node is no peer: {peers:?}");
    }

    #[test]
    fn unchanged_state_gives_an_empty_delta() {
        let mut w = World::new(1);
        w.create(ServiceSpec::new("web", "nginx"));
        let a = view(&w, "n1");
        assert!(a.diff(&a, 7).is_empty());
    }

    #[test]
    fn every_node_gets_the_gossip_key_ring_and_node_list_and_a_rotation_arrives_as_a_delta() {
        let mut w = World::new(1);
        let before = view(&w, "n2");
        assert!(before.gossip.is_none(), "no key issued yet: no gossip view");
        let key = || base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 32]>());
        w.ok(Command::InstallGossipKey { key: key() });
        let (v1, v2) = (view(&w, "n1"), view(&w, "n2"));
        let g = v2.gossip.clone().unwrap();
        assert_eq!(v1.gossip, v2.gossip, "the ring is the cluster's, the same for every node");
        assert_eq!((g.sending, g.keys.len()), (1, 1));
        assert_eq!(g.nodes.keys().cloned().collect::<Vec<_>>(), vec!["n1".to_string(), "n2".to_string()]);
        assert!(!format!("{g:?}").contains(&g.keys[&1]), "Debug prints a gossip key");
        let mut agent = before.clone();
        agent.apply(&v2.diff(&before, 2));
        assert_eq!(agent, v2);
        assert!(v2.diff(&v2, 3).is_empty());
        w.ok(Command::InstallGossipKey { key: key() });
        let d = view(&w, "n2").diff(&v2, 4);
        assert_eq!(d.gossip.as_ref().map(|g| (g.sending, g.keys.len())), Some((1, 2)), "step 1 adds a key, sending stays");
        let redacted = crate::manager::redact(w.state.clone());
        assert!(redacted.gossip_keys.unwrap().keys.iter().all(|k| k.key.is_empty()), "client views carry gossip keys");
    }

    #[test]
    fn a_wireguard_private_key_goes_only_to_its_node_and_changes_arrive_as_deltas() {
        let mut w = World::new(1);
        let mut spec = crate::model::NetworkSpec { name: "secure".into(), driver: "overlay".into(), ..Default::default() };
        spec.options.insert("encrypted".into(), String::new());
        w.ok(Command::CreateNetwork { spec });
        let before = view(&w, "n1");
        assert!(before.wireguard.is_none());
        for n in w.state.nodes_missing_wireguard() {
            w.ok(Command::IssueWireGuard { node: n, private_key: crate::model::generate_private_key() });
        }
        let (v1, v2) = (view(&w, "n1"), view(&w, "n2"));
        let (w1, w2) = (v1.wireguard.clone().unwrap(), v2.wireguard.clone().unwrap());
        assert_eq!(w1.private_key, w.state.wireguard["n1"].private_key);
        assert_eq!(w2.private_key, w.state.wireguard["n2"].private_key);
        assert_eq!(w1.peers, w2.peers, "both see every node's public half");
        assert_eq!(w1.peers.len(), 2);
        let json = serde_json::to_string(&v2.diff(&before, 2)).unwrap();
        assert!(!json.contains(&w1.private_key), "n2's stream carries n1's private key");
        let mut agent = before.clone();
        agent.apply(&v1.diff(&before, 2));
        assert_eq!(agent, v1);
        assert!(v1.diff(&v1, 3).is_empty());
        assert!(!format!("{w1:?}").contains(&w1.private_key), "Debug prints the private key");
        // Pair keys: each node gets those of its own pairs, the same on both sides, and a
        // rotation changes them.
        w.ok(Command::RotatePairKeys { seed: crate::model::generate_seed() });
        let (p1, p2) = (view(&w, "n1").wireguard.unwrap().peers, view(&w, "n2").wireguard.unwrap().peers);
        assert!(p1["n1"].preshared_key.is_empty() && !p1["n2"].preshared_key.is_empty());
        assert_eq!(p1["n2"].preshared_key, p2["n1"].preshared_key);
        assert!(!format!("{p1:?}").contains(&p1["n2"].preshared_key));
        w.ok(Command::RotatePairKeys { seed: crate::model::generate_seed() });
        assert_ne!(view(&w, "n1").wireguard.unwrap().peers["n2"].preshared_key, p1["n2"].preshared_key);
    }

    #[test]
    fn secrets_only_go_to_assigned_nodes() {
        let mut w = World::new(1);
        w.ok(Command::CreateSecret {
            spec: crate::model::SecretSpec { name: "pw".into(), labels: Default::default(), data: b"x".to_vec() },
        });
        let mut s = ServiceSpec::new("db", "postgres");
        s.secrets = vec![crate::model::FileRef::named("pw")];
        s.placement.constraints = vec!["node.id==n2".into()];
        w.create(s);
        assert_eq!(view(&w, "n2").assignments.values().next().unwrap().secrets["pw"], b"x");
        assert!(view(&w, "n1").assignments.is_empty());
    }
}
