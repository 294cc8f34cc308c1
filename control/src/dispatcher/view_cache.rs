//! Every agent's view, built once per applied version and shared by all sessions, with the
//! step from each built version to the next. An applied entry costs one build for the whole
//! cluster and, per session, only what changed for its node: each session used to rebuild the
//! endpoint table, its node's assignments and its whole view, and diff that against a copy of
//! the last one it sent, which at 1,000 agents is O(agents x table) for every entry (issue 20).
//!
//! Pure but for one mutex: `Built` and `Step` are values, `update` composes an agent's delta
//! from them, and the tests check that what an agent folds in is what `AgentView::for_node`
//! would have built.

use super::view::{assignment, wireguard_view, AgentView, EndpointTable};
use crate::model::{NetworkId, NodeId, PairKeySeed, Role, TaskId, WireGuardIdentity};
use crate::rpc::session::{AgentUpdate, Assignment, GossipView, NetworkInfo, NodeMap, WireGuardView};
use crate::state::ClusterState;
use crate::store::SharedState;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many steps are kept: a session further behind than this (a stream stalled for that
/// many applied entries) gets a full update instead.
pub const KEPT_STEPS: usize = 256;

/// What every agent sees at one applied version.
#[derive(Debug)]
pub struct Built {
    pub version: u64,
    pub table: EndpointTable,
    /// Each node's assignments (only nodes that have some).
    pub assignments: BTreeMap<NodeId, imbl::OrdMap<TaskId, Assignment>>,
    /// Each node's role and Raft id (a demoted manager keeps its role while it is a voter).
    pub nodes: BTreeMap<NodeId, (Role, u64)>,
    wireguard: BTreeMap<NodeId, WireGuardIdentity>,
    pair_keys: Option<PairKeySeed>,
}

impl Built {
    pub fn from_state(version: u64, state: &ClusterState) -> Built {
        let mut assignments: BTreeMap<NodeId, imbl::OrdMap<TaskId, Assignment>> = BTreeMap::new();
        for t in state.tasks.values() {
            let Some(node) = &t.node_id else { continue };
            if let Some(a) = assignment(state, t) {
                assignments.entry(node.clone()).or_default().insert(t.id.clone(), a);
            }
        }
        Built {
            version,
            table: EndpointTable::from_state(state),
            assignments,
            nodes: state.nodes.iter().map(|(id, n)| (id.clone(), (n.role, n.raft_id))).collect(),
            wireguard: state.wireguard.clone(),
            pair_keys: state.pair_keys.clone(),
        }
    }

    /// `node`'s WireGuard view at this version (O(nodes): only on a full update or a change).
    pub fn wireguard_for(&self, node: &str) -> Option<WireGuardView> {
        wireguard_view(&self.wireguard, self.pair_keys.as_ref(), node)
    }

    /// `node`'s whole view at this version.
    pub fn view_for(&self, node: &str, role: Option<Role>) -> AgentView {
        AgentView {
            role,
            assignments: self.assignments.get(node).cloned().unwrap_or_default(),
            networks: self.table.networks.clone(),
            services: self.table.services.clone(),
            endpoints: self.table.endpoints.clone(),
            wireguard: self.wireguard_for(node),
            gossip: self.table.gossip.clone(),
        }
    }
}

/// What changed in a map from one version to the next: `Some` is the new value, `None` says
/// it is gone.
pub type Changes<K, V> = BTreeMap<K, Option<V>>;

/// From one built version to the next.
#[derive(Debug, Default)]
pub struct Step {
    pub from: u64,
    pub to: u64,
    pub networks: Changes<NetworkId, NetworkInfo>,
    pub services: Changes<crate::model::ServiceId, crate::rpc::session::ServiceEndpoint>,
    pub endpoints: Changes<TaskId, crate::rpc::session::TaskEndpoint>,
    /// The ring and node list when they changed (`Some(None)`: no ring any more).
    pub gossip: Option<Option<GossipView>>,
    /// Per node, only nodes whose assignments changed.
    pub assignments: BTreeMap<NodeId, Changes<TaskId, Assignment>>,
    /// The WireGuard identities or pair keys changed: every node's view is computed again.
    pub wireguard: bool,
    /// Per-node entries of networks whose only change was in them (a join's peer and
    /// load-balancer address), instead of the whole network in `networks`.
    pub network_peers: Changes<(NetworkId, NodeId), String>,
    pub network_lb_addrs: Changes<(NetworkId, NodeId), Ipv4Addr>,
    /// The gossip node list's changes when the key ring did not change (else `gossip`).
    pub gossip_nodes: Changes<NodeId, String>,
}

impl Step {
    pub fn between(old: &Built, new: &Built) -> Step {
        let mut assignments = BTreeMap::new();
        let empty = imbl::OrdMap::new();
        for node in old.assignments.keys().chain(new.assignments.keys()) {
            if assignments.contains_key(node) {
                continue;
            }
            let c = changes(old.assignments.get(node).unwrap_or(&empty), new.assignments.get(node).unwrap_or(&empty));
            if !c.is_empty() {
                assignments.insert(node.clone(), c);
            }
        }
        let mut step = Step {
            from: old.version,
            to: new.version,
            networks: changes(&old.table.networks, &new.table.networks),
            services: changes(&old.table.services, &new.table.services),
            endpoints: changes(&old.table.endpoints, &new.table.endpoints),
            assignments,
            wireguard: old.wireguard != new.wireguard || old.pair_keys != new.pair_keys,
            ..Default::default()
        };
        // A network whose only change is in its per-node maps goes as those entries.
        step.networks.retain(|id, new_net| {
            let (Some(new_net), Some(old_net)) = (new_net.as_ref(), old.table.networks.get(id)) else { return true };
            let bare = |n: &NetworkInfo| NetworkInfo { peers: NodeMap::new(), lb_addrs: NodeMap::new(), ..n.clone() };
            if bare(old_net) != bare(new_net) {
                return true;
            }
            for (node, v) in changes(&old_net.peers, &new_net.peers) {
                step.network_peers.insert((id.clone(), node), v);
            }
            for (node, v) in changes(&old_net.lb_addrs, &new_net.lb_addrs) {
                step.network_lb_addrs.insert((id.clone(), node), v);
            }
            false
        });
        match (&old.table.gossip, &new.table.gossip) {
            (Some(o), Some(n)) if o.sending == n.sending && o.keys == n.keys => step.gossip_nodes = changes(&o.nodes, &n.nodes),
            (o, n) if o != n => step.gossip = Some(n.clone()),
            _ => {}
        }
        step
    }
}

/// imbl's diff skips what both versions share, so a step costs O(change), not O(table).
fn changes<K: Ord + Clone, V: Clone + PartialEq>(old: &imbl::OrdMap<K, V>, new: &imbl::OrdMap<K, V>) -> Changes<K, V> {
    old.diff(new)
        .map(|item| match item {
            imbl::ordmap::DiffItem::Add(k, v) | imbl::ordmap::DiffItem::Update { new: (k, v), .. } => (k.clone(), Some(v.clone())),
            imbl::ordmap::DiffItem::Remove(k, _) => (k.clone(), None),
        })
        .collect()
}

/// What a session last sent its agent: the version, and the per-node parts it compares
/// (everything else comes as steps).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sent {
    pub version: u64,
    pub role: Option<Role>,
    pub wireguard: Option<WireGuardView>,
}

/// The update that brings `node`'s agent from `sent` to `built`: a full one when nothing was
/// sent yet or the steps since are no longer kept (`steps` None), else the steps folded
/// together, restricted to the node. `role` is the role to tell (the session's, after its
/// demotion rule). Returns what the session has sent after it.
pub fn update(node: &str, role: Option<Role>, built: &Built, sent: Option<&Sent>, steps: Option<&[Arc<Step>]>) -> (AgentUpdate, Sent) {
    let (Some(sent), Some(steps)) = (sent, steps) else {
        let view = built.view_for(node, role);
        let now = Sent { version: built.version, role, wireguard: view.wireguard.clone() };
        return (view.full_update(built.version), now);
    };
    // Folded in order. A whole network (or ring) from a later step replaces the entry
    // changes before it; entry changes after a whole value go into that value.
    let mut networks: BTreeMap<NetworkId, Option<NetworkInfo>> = BTreeMap::new();
    let mut peers: BTreeMap<(NetworkId, NodeId), Option<String>> = BTreeMap::new();
    let mut lb_addrs: BTreeMap<(NetworkId, NodeId), Option<Ipv4Addr>> = BTreeMap::new();
    let mut services = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    let mut assignments = BTreeMap::new();
    let mut gossip: Option<Option<GossipView>> = None;
    let mut gossip_nodes: BTreeMap<NodeId, Option<String>> = BTreeMap::new();
    let mut wireguard_changed = false;
    for s in steps {
        for (id, v) in &s.networks {
            networks.insert(id.clone(), v.clone());
            peers.retain(|(net, _), _| net != id);
            lb_addrs.retain(|(net, _), _| net != id);
        }
        for ((net, node), v) in &s.network_peers {
            match networks.get_mut(net) {
                Some(Some(n)) => super::view::set(&mut n.peers, node, v.clone()),
                Some(None) => {}
                None => {
                    peers.insert((net.clone(), node.clone()), v.clone());
                }
            }
        }
        for ((net, node), v) in &s.network_lb_addrs {
            match networks.get_mut(net) {
                Some(Some(n)) => super::view::set(&mut n.lb_addrs, node, *v),
                Some(None) => {}
                None => {
                    lb_addrs.insert((net.clone(), node.clone()), *v);
                }
            }
        }
        services.extend(s.services.iter());
        endpoints.extend(s.endpoints.iter());
        if let Some(a) = s.assignments.get(node) {
            assignments.extend(a.iter());
        }
        if let Some(g) = &s.gossip {
            gossip = Some(g.clone());
            gossip_nodes.clear();
        }
        for (id, v) in &s.gossip_nodes {
            match &mut gossip {
                Some(Some(g)) => super::view::set(&mut g.nodes, id, v.clone()),
                Some(None) => {}
                None => {
                    gossip_nodes.insert(id.clone(), v.clone());
                }
            }
        }
        wireguard_changed |= s.wireguard;
    }
    let mut u = AgentUpdate { version: built.version, ..Default::default() };
    for (id, v) in networks {
        match v {
            Some(n) => u.networks.push(n),
            None => u.removed_networks.push(id),
        }
    }
    split(services, &mut u.services, &mut u.removed_services);
    split(endpoints, &mut u.endpoints, &mut u.removed_endpoints);
    split(assignments, &mut u.assignments, &mut u.removed_assignments);
    u.network_peers = peers.into_iter().map(|((net, node), v)| (net, node, v)).collect();
    u.network_lb_addrs = lb_addrs.into_iter().map(|((net, node), v)| (net, node, v)).collect();
    u.gossip_nodes = gossip_nodes.into_iter().collect();
    // As `AgentView::diff`: a ring that is gone is not sent (an agent keeps the one it has).
    u.gossip = gossip.flatten().map(Box::new);
    if role != sent.role {
        u.role = role;
    }
    let mut now = Sent { version: built.version, role, wireguard: sent.wireguard.clone() };
    if wireguard_changed {
        let view = built.wireguard_for(node);
        if view != sent.wireguard {
            u.wireguard = view.clone();
            now.wireguard = view;
        }
    }
    (u, now)
}

fn split<K: Clone, V: Clone>(changes: BTreeMap<&K, &Option<V>>, upserts: &mut Vec<V>, removed: &mut Vec<K>) {
    for (k, v) in changes {
        match v {
            Some(v) => upserts.push(v.clone()),
            None => removed.push(k.clone()),
        }
    }
}

/// The latest build and the steps that lead to it.
#[derive(Default)]
pub struct ViewCache {
    inner: Mutex<Cached>,
    builds: AtomicU64,
}

#[derive(Default)]
struct Cached {
    current: Option<Arc<Built>>,
    /// Oldest first; each step's `from` is the previous one's `to`.
    steps: VecDeque<Arc<Step>>,
}

impl ViewCache {
    /// The build of the state's latest applied version: made by the first session that asks
    /// for it, shared by the rest.
    pub fn current(&self, shared: &SharedState) -> Arc<Built> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (version, ()) = shared.read_at(|_| ());
        if let Some(b) = c.current.as_ref().filter(|b| b.version == version) {
            return b.clone();
        }
        let (version, built) = shared.read_at(|s| Built::from_state(0, s));
        let built = Arc::new(Built { version, ..built });
        self.builds.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = c.current.take() {
            c.steps.push_back(Arc::new(Step::between(&old, &built)));
            while c.steps.len() > KEPT_STEPS {
                c.steps.pop_front();
            }
        }
        c.current = Some(built.clone());
        built
    }

    /// The steps from version `from` to `to`, if they are all still kept (none when equal).
    pub fn steps(&self, from: u64, to: u64) -> Option<Vec<Arc<Step>>> {
        if from == to {
            return Some(Vec::new());
        }
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let start = c.steps.iter().position(|s| s.from == from)?;
        let mut out = Vec::new();
        for s in c.steps.iter().skip(start) {
            out.push(s.clone());
            if s.to == to {
                return Some(out);
            }
        }
        None
    }

    /// How many versions were built (one per applied version a session looked at, however
    /// many sessions looked).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}
