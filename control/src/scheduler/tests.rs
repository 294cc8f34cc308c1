use crate::model::{Availability, NodeState, PortConfig, Protocol, PublishMode, ServiceMode, ServiceSpec, TaskState};
use crate::state::Command;
use crate::testkit::World;
use std::collections::BTreeMap;

fn spec(name: &str, replicas: i64) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, "nginx");
    s.mode = ServiceMode::Replicated { replicas };
    s
}

fn per_node(w: &World, sid: &str) -> BTreeMap<crate::model::NodeId, usize> {
    let mut m = BTreeMap::new();
    for t in w.live(sid) {
        if let Some(n) = &t.node_id {
            *m.entry(n.clone()).or_default() += 1;
        }
    }
    m
}

#[test]
fn spreads_evenly() {
    let mut w = World::new(3);
    let sid = w.create(spec("web", 8));
    let counts: Vec<usize> = per_node(&w, &sid).values().copied().collect();
    assert_eq!(counts.len(), 4);
    assert!(counts.iter().all(|c| *c == 2), "{counts:?}");
}

#[test]
fn spread_prefers_nodes_with_fewer_tasks_overall() {
    let mut w = World::new(1);
    // n1 and n2; "a" with 1 replica lands on n1 (lowest id); "b" must then go to n2.
    w.create(spec("a", 1));
    let b = w.create(spec("b", 1));
    let a_node = w.state.tasks.values().find(|t| t.service_id != b).unwrap().node_id.clone();
    let b_node = w.live(&b)[0].node_id.clone();
    assert_ne!(a_node, b_node);
}

#[test]
fn skips_down_paused_and_drained_nodes() {
    let mut w = World::new(3);
    w.ok(Command::SetNodeState { node: "n2".into(), state: NodeState::Down, message: String::new() });
    for (n, a) in [("n3", Availability::Pause), ("n4", Availability::Drain)] {
        w.ok(Command::UpdateNode { node: n.into(), availability: Some(a), role: None, label_add: Default::default(), label_rm: vec![] });
    }
    let sid = w.create(spec("web", 3));
    let nodes = per_node(&w, &sid);
    assert_eq!(nodes.keys().collect::<Vec<_>>(), vec!["n1"]);
}

#[test]
fn constraints_on_role_hostname_id_and_labels() {
    let mut w = World::new(3);
    w.ok(Command::UpdateNode {
        node: "n3".into(),
        availability: None,
        role: None,
        label_add: BTreeMap::from([("zone".into(), "east".into())]),
        label_rm: vec![],
    });
    for (c, want) in [
        ("node.role==manager", vec!["n1"]),
        ("node.hostname==host-n2", vec!["n2"]),
        ("node.id==n4", vec!["n4"]),
        ("node.labels.zone==east", vec!["n3"]),
    ] {
        let mut s = spec(&format!("s{}", c.len()), 4);
        s.name = format!("svc-{}", want[0]);
        s.placement.constraints = vec![c.into()];
        let sid = w.create(s);
        let nodes: Vec<crate::model::NodeId> = per_node(&w, &sid).keys().cloned().collect();
        assert_eq!(nodes, want, "{c}");
    }
}

#[test]
fn unsatisfiable_constraint_leaves_tasks_pending_with_reason() {
    let mut w = World::new(2);
    let mut s = spec("nowhere", 2);
    s.placement.constraints = vec!["node.labels.gpu==yes".into()];
    let sid = w.create(s);
    for t in w.live(&sid) {
        assert_eq!(t.status.state, TaskState::Pending);
        assert!(t.status.message.contains("3 not matching constraints"), "{}", t.status.message);
    }
    // Labelling a node makes them schedulable on the next pass.
    w.ok(Command::UpdateNode {
        node: "n2".into(),
        availability: None,
        role: None,
        label_add: BTreeMap::from([("gpu".into(), "yes".into())]),
        label_rm: vec![],
    });
    assert!(w.live(&sid).iter().all(|t| t.status.state == TaskState::Assigned && t.node_id.as_deref() == Some("n2")));
}

#[test]
fn max_replicas_per_node() {
    let mut w = World::new(1);
    let mut s = spec("capped", 5);
    s.placement.max_replicas_per_node = 2;
    let sid = w.create(s);
    let nodes = per_node(&w, &sid);
    assert_eq!(nodes.values().sum::<usize>(), 4);
    let pending: Vec<_> = w.live(&sid).into_iter().filter(|t| t.status.state == TaskState::Pending).collect();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].status.message.contains("max replicas"), "{}", pending[0].status.message);
}

#[test]
fn host_mode_ports_conflict_per_node() {
    let mut w = World::new(1);
    let mut s = spec("hostport", 3);
    s.endpoint.ports = vec![PortConfig { protocol: Protocol::Tcp, target: 80, published: Some(8080), mode: PublishMode::Host }];
    let sid = w.create(s);
    let nodes = per_node(&w, &sid);
    assert_eq!(nodes.len(), 2);
    assert!(nodes.values().all(|c| *c == 1));
    let pending: Vec<_> = w.live(&sid).into_iter().filter(|t| t.status.state == TaskState::Pending).collect();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].status.message.contains("host-mode port"), "{}", pending[0].status.message);
}

#[test]
fn new_node_picks_up_pending_tasks() {
    let mut w = World::new(0);
    w.ok(Command::SetNodeState { node: "n1".into(), state: NodeState::Down, message: String::new() });
    let sid = w.create(spec("web", 2));
    assert!(w.live(&sid).iter().all(|t| t.status.state == TaskState::Pending));
    w.ok(Command::AddNode { node: crate::testkit::node("n7", crate::model::Role::Worker) });
    assert!(w.live(&sid).iter().all(|t| t.node_id.as_deref() == Some("n7")));
}

#[test]
fn many_tasks_many_nodes() {
    let mut w = World::new(99);
    let sid = w.create(spec("big", 1000));
    let counts = per_node(&w, &sid);
    assert_eq!(counts.len(), 100);
    assert!(counts.values().all(|c| *c == 10));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Spread: per service, node counts differ by at most one among eligible nodes.
    #[test]
    fn spread_is_balanced(nodes in 1usize..12, replicas in 0i64..60, drained in proptest::collection::vec(0usize..12, 0..4)) {
        let mut w = World::new(nodes - 1);
        let mut eligible = nodes;
        for d in drained {
            if d < nodes && eligible > 1 {
                let n = format!("n{}", d + 1);
                if w.state.nodes[n.as_str()].availability == Availability::Active {
                    w.ok(Command::UpdateNode { node: n, availability: Some(Availability::Drain), role: None, label_add: Default::default(), label_rm: vec![] });
                    eligible -= 1;
                }
            }
        }
        let sid = w.create(spec("p", replicas));
        let counts = per_node(&w, &sid);
        let total: usize = counts.values().sum();
        proptest::prop_assert_eq!(total as i64, replicas);
        let max = counts.values().copied().max().unwrap_or(0);
        let min = if counts.len() < eligible { 0 } else { counts.values().copied().min().unwrap_or(0) };
        proptest::prop_assert!(max - min <= 1, "counts {:?} eligible {}", counts, eligible);
    }
}

#[test]
fn reservations_place_only_where_there_is_room_and_say_why_not() {
    // Test nodes have 4 CPUs and 8 GiB each.
    let mut w = World::new(1);
    let mut s = spec("big", 3);
    s.reservations.nano_cpus = 3_000_000_000;
    let sid = w.create(s);
    assert_eq!(per_node(&w, &sid).values().sum::<usize>(), 2, "one 3-CPU task per 4-CPU node");
    let pending: Vec<_> = w.live(&sid).into_iter().filter(|t| t.node_id.is_none()).collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status.message, "no suitable node (2 nodes: 2 with insufficient resources)");
    // Memory counts across services on a node.
    let mut m = spec("mem", 2);
    m.reservations.memory_bytes = 6 << 30;
    let mid = w.create(m);
    assert_eq!(per_node(&w, &mid).len(), 2, "6 GiB fits beside a CPU-only reservation on each node");
    let mut more = spec("more", 1);
    more.reservations.memory_bytes = 3 << 30;
    let more_id = w.create(more);
    assert!(w.live(&more_id)[0].node_id.is_none(), "2 GiB left per node: 3 GiB does not fit");
    // Scaling the big service down frees its CPUs for the pending one... which is the one removed.
    w.ok(Command::ScaleService { service: "big".into(), replicas: 2 });
    assert!(w.live(&sid).iter().all(|t| t.node_id.is_some()));
}

#[test]
fn nodes_that_did_not_report_resources_are_not_checked() {
    let mut w = World::new(0);
    let n1 = w.state.nodes.keys().next().unwrap().clone();
    w.state.nodes.get_mut(&n1).unwrap().resources = Default::default();
    let mut s = spec("big", 2);
    s.reservations.nano_cpus = 64_000_000_000;
    let sid = w.create(s);
    assert_eq!(per_node(&w, &sid).values().sum::<usize>(), 2);
}

fn label(w: &mut World, node: &str, k: &str, v: &str) {
    w.ok(Command::UpdateNode {
        node: node.into(),
        availability: None,
        role: None,
        label_add: BTreeMap::from([(k.into(), v.into())]),
        label_rm: vec![],
    });
}

fn zones(w: &World, sid: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in w.live(sid) {
        let node = &w.state.nodes[t.node_id.as_ref().unwrap()];
        *m.entry(node.labels.get("zone").cloned().unwrap_or_default()).or_default() += 1;
    }
    m
}

fn spread_over(label: &str) -> crate::model::PlacementPreference {
    crate::model::PlacementPreference::parse(&format!("spread=node.labels.{label}")).unwrap()
}

#[test]
fn placement_preferences_spread_over_label_values_not_nodes() {
    // zone=a,a,b: 4 replicas are 2 in zone a and 2 on the one node of zone b.
    let mut w = World::new(2);
    for (n, z) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
        label(&mut w, n, "zone", z);
    }
    let mut s = spec("web", 4);
    s.placement.preferences = vec![spread_over("zone")];
    let sid = w.create(s.clone());
    assert_eq!(zones(&w, &sid), BTreeMap::from([("a".into(), 2), ("b".into(), 2)]));
    assert_eq!(per_node(&w, &sid), BTreeMap::from([("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 2)]));
    // Without the preference the same service spreads over nodes.
    let plain = w.create(spec("plain", 6));
    assert_eq!(per_node(&w, &plain).values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    // Scaling up keeps the zones even.
    let mut up = w.state.services[&sid].spec.clone();
    up.mode = ServiceMode::Replicated { replicas: 6 };
    w.ok(Command::UpdateService { service: sid.to_string(), spec: up });
    assert_eq!(zones(&w, &sid), BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));
}

#[test]
fn constraints_apply_before_preferences_and_unlabelled_nodes_are_a_group() {
    let mut w = World::new(3);
    label(&mut w, "n2", "zone", "a");
    label(&mut w, "n3", "zone", "a");
    // n4 has no zone; n1 is the manager, kept out by the constraint.
    let mut s = spec("web", 4);
    s.placement.constraints = vec!["node.role==worker".into()];
    s.placement.preferences = vec![spread_over("zone")];
    let sid = w.create(s);
    assert_eq!(zones(&w, &sid), BTreeMap::from([("".into(), 2), ("a".into(), 2)]));
    assert!(!per_node(&w, &sid).contains_key("n1"));
}

#[test]
fn nested_preferences_and_a_full_group() {
    let mut w = World::new(3);
    for (n, z, r) in [("n1", "a", "r1"), ("n2", "a", "r2"), ("n3", "b", "r1"), ("n4", "b", "r1")] {
        label(&mut w, n, "zone", z);
        label(&mut w, n, "rack", r);
    }
    let mut s = spec("web", 4);
    s.placement.preferences = vec![spread_over("zone"), spread_over("rack")];
    let sid = w.create(s);
    assert_eq!(per_node(&w, &sid), BTreeMap::from([("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 1), ("n4".into(), 1)]));
    // With at most one task per node, zone b (two nodes) is full after 2: the rest go to a
    // until it is full too, then the tasks wait with the reason.
    let mut s = spec("capped", 5);
    s.placement.preferences = vec![spread_over("zone")];
    s.placement.max_replicas_per_node = 1;
    let capped = w.create(s);
    assert_eq!(w.live(&capped).iter().filter(|t| t.node_id.is_some()).count(), 4);
    let waiting = w.live(&capped).into_iter().find(|t| t.node_id.is_none()).unwrap();
    assert!(waiting.status.message.contains("at max replicas per node"), "{}", waiting.status.message);
}

#[test]
fn a_bad_preference_is_refused_naming_the_field() {
    let mut w = World::new(1);
    let mut s = spec("web", 1);
    s.placement.preferences = vec![crate::model::PlacementPreference { spread: "engine.labels.zone".into() }];
    let err = w.apply(Command::CreateService { spec: s }).unwrap_err().to_string();
    assert!(err.contains("placement-pref[0]") && err.contains("spread over a node label"), "{err}");
}
