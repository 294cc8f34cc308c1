//! The view cache against the views it replaces: whatever steps an agent is sent (one per
//! version, several folded, or a full update after the steps were dropped), what it holds
//! after folding them in is `AgentView::for_node` of the same state. And a change costs its
//! size: one task's report is one endpoint for every node and assignments for one.

use super::view::{AgentView, EndpointTable};
use super::view_cache::{self, Built, Sent, Step, ViewCache, KEPT_STEPS};
use crate::model::{NetworkSpec, NodeId, Role, ServiceMode, ServiceSpec, TaskState};
use crate::state::{Command, Request};
use crate::store::SharedState;
use crate::testkit::{self, World};
use std::sync::Arc;

/// A run of builds over a `World`, and agents that catch up now and then.
struct Run {
    w: World,
    builds: Vec<Arc<Built>>,
    steps: Vec<Arc<Step>>,
}

struct Agent {
    node: NodeId,
    view: AgentView,
    sent: Option<Sent>,
    /// Index into `Run::builds` of the version it was last sent.
    at: usize,
}

impl Run {
    fn new(w: World) -> Run {
        let first = Arc::new(Built::from_state(1, &w.state));
        Run { w, builds: vec![first], steps: Vec::new() }
    }

    /// Build the next version from the world as it is now.
    fn build(&mut self) {
        let prev = self.builds.last().unwrap().clone();
        let next = Arc::new(Built::from_state(prev.version + 1, &self.w.state));
        self.steps.push(Arc::new(Step::between(&prev, &next)));
        self.builds.push(next);
    }

    fn agent(&self, node: &str) -> Agent {
        Agent { node: node.into(), view: AgentView::default(), sent: None, at: 0 }
    }

    /// Bring `a` to the latest build with the steps since its last one, and check it holds
    /// what `for_node` builds from the state.
    fn catch_up(&self, a: &mut Agent) -> crate::rpc::session::AgentUpdate {
        let built = self.builds.last().unwrap();
        let role = built.nodes.get(&a.node).map(|(r, _)| *r);
        let steps = &self.steps[a.at..];
        let (u, sent) = view_cache::update(&a.node, role, built, a.sent.as_ref(), a.sent.as_ref().map(|_| steps));
        a.view.apply(&u);
        a.sent = Some(sent);
        a.at = self.builds.len() - 1;
        let want = AgentView::for_node(&self.w.state, &a.node, &EndpointTable::from_state(&self.w.state));
        assert_eq!(a.view, want, "{} after version {}", a.node, built.version);
        u
    }
}

#[test]
fn folded_steps_give_every_agent_the_view_built_for_it() {
    let mut r = Run::new(World::new(2));
    // n1 is sent every version, n2 every third, n3 only a few times (long folds).
    let mut agents = [r.agent("n1"), r.agent("n2"), r.agent("n3")];
    let mut round = 0;
    let mut step = |r: &mut Run, agents: &mut [Agent; 3]| {
        r.build();
        round += 1;
        r.catch_up(&mut agents[0]);
        if round % 3 == 0 {
            r.catch_up(&mut agents[1]);
        }
        if round % 7 == 0 {
            r.catch_up(&mut agents[2]);
        }
    };
    for a in agents.iter_mut() {
        r.catch_up(a);
    }
    r.w.ok(Command::CreateSecret { spec: crate::model::SecretSpec { name: "pw".into(), labels: Default::default(), data: b"1".to_vec() } });
    step(&mut r, &mut agents);
    let mut s = ServiceSpec::new("web", "nginx");
    s.mode = ServiceMode::Replicated { replicas: 6 };
    s.secrets = vec![crate::model::FileRef::named("pw")];
    r.w.create(s);
    step(&mut r, &mut agents);
    r.w.report_all(TaskState::Running);
    step(&mut r, &mut agents);
    r.w.ok(Command::ScaleService { service: "web".into(), replicas: 3 });
    step(&mut r, &mut agents);
    let stopped: Vec<_> = r.w.state.tasks.values().filter(|t| t.desired_state > TaskState::Running).map(|t| t.id.clone()).collect();
    for id in &stopped {
        r.w.report(id, TaskState::Shutdown);
        step(&mut r, &mut agents);
    }
    // Made and gone again between two of n2's and n3's catch-ups.
    r.w.create(ServiceSpec::new("blip", "redis"));
    step(&mut r, &mut agents);
    r.w.ok(Command::RemoveService { service: "blip".into() });
    step(&mut r, &mut agents);
    // An encrypted network: WireGuard identities, then a pair key rotation.
    let mut spec = NetworkSpec { name: "secure".into(), driver: "overlay".into(), ..Default::default() };
    spec.options.insert("encrypted".into(), String::new());
    r.w.ok(Command::CreateNetwork { spec });
    step(&mut r, &mut agents);
    for n in r.w.state.nodes_missing_wireguard() {
        r.w.ok(Command::IssueWireGuard { node: n, private_key: crate::model::generate_private_key() });
        step(&mut r, &mut agents);
    }
    r.w.ok(Command::RotatePairKeys { seed: crate::model::generate_seed() });
    step(&mut r, &mut agents);
    // The gossip ring, and a node that joins (the ring's node list, everyone's peers).
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 32]>());
    r.w.ok(Command::InstallGossipKey { key });
    step(&mut r, &mut agents);
    r.w.ok(Command::AddNode { node: testkit::node("n4", Role::Worker) });
    step(&mut r, &mut agents);
    // A promotion changes a role; the service's update replaces tasks.
    r.w.ok(Command::UpdateNode {
        node: "n2".into(),
        availability: None,
        role: Some(Role::Manager),
        label_add: Default::default(),
        label_rm: vec![],
    });
    step(&mut r, &mut agents);
    let mut s = r.w.state.find_service("web").unwrap().spec.clone();
    s.env = vec!["V=2".into()];
    r.w.ok(Command::UpdateService { service: "web".into(), spec: s });
    step(&mut r, &mut agents);
    r.w.report_all(TaskState::Running);
    step(&mut r, &mut agents);
    r.w.ok(Command::RemoveService { service: "web".into() });
    step(&mut r, &mut agents);
    for a in agents.iter_mut() {
        r.catch_up(a);
    }
    assert_eq!(agents[1].view.role, Some(Role::Manager), "the promotion reached n2");
    assert!(agents.iter().all(|a| a.view.services.is_empty() && a.view.wireguard.is_some() && a.view.gossip.is_some()));
}

#[test]
fn one_task_report_costs_one_endpoint_and_one_nodes_assignment() {
    let mut r = Run::new(World::new(4));
    let mut s = ServiceSpec::new("web", "nginx");
    s.mode = ServiceMode::Replicated { replicas: 50 };
    r.w.create(s);
    r.w.report_all(TaskState::Starting);
    r.build();
    let mut agents: Vec<Agent> = ["n1", "n2", "n3", "n4", "n5"].iter().map(|n| r.agent(n)).collect();
    for a in agents.iter_mut() {
        r.catch_up(a);
    }
    let task = r.w.state.tasks.values().next().unwrap().clone();
    let owner = task.node_id.clone().unwrap();
    r.w.report(&task.id, TaskState::Running);
    r.build();
    let s = r.steps.last().unwrap();
    assert_eq!((s.endpoints.len(), s.services.len(), s.networks.len()), (1, 0, 0), "{s:?}");
    assert_eq!(s.assignments.keys().collect::<Vec<_>>(), vec![&owner], "only the task's node's assignments changed");
    for a in agents.iter_mut() {
        let u = r.catch_up(a);
        assert_eq!(u.endpoints.len(), 1, "one endpoint for {}", a.node);
        let assigned = if a.node == owner { 1 } else { 0 };
        assert_eq!(u.assignments.len(), assigned, "{}'s assignments: {:?}", a.node, u.assignments);
        assert!(u.networks.is_empty() && u.services.is_empty() && u.wireguard.is_none() && u.gossip.is_none() && u.role.is_none());
    }
}

/// The cache over an applied state: one build per version however many sessions ask, steps
/// chained between the versions built, and none once more than `KEPT_STEPS` are gone.
#[test]
fn the_cache_builds_once_per_version_and_keeps_a_bounded_chain() {
    let shared = SharedState::detached();
    let apply = |cmd| shared.apply_detached(&Request { now_ms: 1_000, cmd }).expect("applies");
    apply(Command::Init { cluster: testkit::cluster(), node: testkit::node("n1", Role::Manager) });
    let cache = ViewCache::default();
    let first = cache.current(&shared);
    for _ in 0..10 {
        assert!(Arc::ptr_eq(&cache.current(&shared), &first), "the same version is not built again");
    }
    assert_eq!(cache.builds(), 1);
    apply(Command::AddNode { node: testkit::node("n2", Role::Worker) });
    apply(Command::AddNode { node: testkit::node("n3", Role::Worker) });
    let second = cache.current(&shared);
    assert_eq!((cache.builds(), second.version), (2, first.version + 2), "two entries applied, one build");
    let steps = cache.steps(first.version, second.version).expect("the step is kept");
    assert_eq!(steps.len(), 1);
    assert!(cache.steps(second.version, second.version).is_some_and(|s| s.is_empty()));
    for i in 0..KEPT_STEPS {
        apply(Command::AddNode { node: testkit::node(&format!("m{i}"), Role::Worker) });
        cache.current(&shared);
    }
    let last = cache.current(&shared);
    assert!(cache.steps(first.version, last.version).is_none(), "the first step was dropped");
    let chain = cache.steps(second.version, last.version).expect("the last KEPT_STEPS steps are kept");
    assert_eq!(chain.len(), KEPT_STEPS);
    // A session that far behind gets a full update.
    let sent = Sent { version: first.version, ..Default::default() };
    let (u, _) = view_cache::update("n2", Some(Role::Worker), &last, Some(&sent), None);
    assert!(u.full);
}

/// A join adds one peer and one load-balancer address to the ingress network and one node to
/// the gossip list: sent as those entries, not as the network and the ring whole (which made a
/// join cost O(nodes) per session, O(nodes^2) in all: the scale bench's leader stalled at 250).
#[test]
fn a_join_costs_its_entries_not_the_networks_and_ring_whole() {
    let mut r = Run::new(World::new(30));
    let mut s = ServiceSpec::new("web", "nginx");
    s.endpoint.ports = vec![crate::model::PortConfig {
        protocol: crate::model::Protocol::Tcp,
        target: 80,
        published: Some(8080),
        mode: crate::model::PublishMode::Ingress,
    }];
    r.w.create(s);
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 32]>());
    r.w.ok(Command::InstallGossipKey { key });
    r.build();
    let mut agent = r.agent("n5");
    r.catch_up(&mut agent);
    let ingress = agent.view.networks.values().find(|n| n.ingress).expect("ingress").clone();
    assert!(ingress.peers.len() > 20 && ingress.lb_addrs.len() > 20, "{ingress:?}");
    r.w.ok(Command::AddNode { node: testkit::node("n99", Role::Worker) });
    r.build();
    let u = r.catch_up(&mut agent);
    assert!(u.networks.is_empty() && u.gossip.is_none(), "whole network or ring resent: {u:?}");
    assert_eq!(u.gossip_nodes.len(), 1, "{:?}", u.gossip_nodes);
    assert!(u.network_peers.len() + u.network_lb_addrs.len() <= 2, "{:?} {:?}", u.network_peers, u.network_lb_addrs);
    assert!(serde_json::to_vec(&u).unwrap().len() < 1000, "a join's update is small");
}
