use crate::model::{Availability, NodeState, RestartCondition, RestartPolicy, Role, ServiceMode, ServiceSpec, TaskState};
use crate::state::Command;
use crate::testkit::World;

fn spec(name: &str, replicas: i64) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, "nginx");
    s.mode = ServiceMode::Replicated { replicas };
    s.restart = RestartPolicy { condition: RestartCondition::Any, delay_ms: 0, max_attempts: 0, window_ms: 0 };
    s
}

#[test]
fn replicated_service_gets_one_task_per_slot() {
    let mut w = World::new(2);
    let sid = w.create(spec("web", 3));
    let live = w.live(&sid);
    assert_eq!(live.len(), 3);
    let mut slots: Vec<u64> = live.iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3]);
    assert!(live.iter().all(|t| t.status.state == TaskState::Assigned));
}

#[test]
fn task_names_follow_swarm() {
    let mut w = World::new(0);
    let sid = w.create(spec("web", 1));
    let t = w.live(&sid)[0];
    assert_eq!(t.name("web"), format!("web.1.{}", t.id));
    assert_eq!(t.id.len(), 25);
}

#[test]
fn scale_up_and_down() {
    let mut w = World::new(2);
    let sid = w.create(spec("web", 2));
    w.ok(Command::ScaleService { service: "web".into(), replicas: 5 });
    assert_eq!(w.live(&sid).len(), 5);
    w.ok(Command::ScaleService { service: "web".into(), replicas: 1 });
    let live = w.live(&sid);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].slot, 1);
    // The others are told to shut down.
    let stopping = w.state.tasks.values().filter(|t| t.desired_state == TaskState::Shutdown).count();
    assert_eq!(stopping, 4);
}

#[test]
fn scale_to_zero_and_back() {
    let mut w = World::new(1);
    let sid = w.create(spec("web", 2));
    w.ok(Command::ScaleService { service: "web".into(), replicas: 0 });
    assert!(w.live(&sid).is_empty());
    w.ok(Command::ScaleService { service: "web".into(), replicas: 2 });
    assert_eq!(w.live(&sid).len(), 2);
}

#[test]
fn failed_task_is_restarted_in_its_slot() {
    let mut w = World::new(1);
    let sid = w.create(spec("web", 1));
    w.report_all(TaskState::Running);
    let first = w.live(&sid)[0].id.clone();
    w.report(&first, TaskState::Failed);
    let live = w.live(&sid);
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].id, first);
    assert_eq!(live[0].slot, 1);
    assert_eq!(w.state.tasks[&first].desired_state, TaskState::Shutdown);
}

#[test]
fn restart_condition_none_leaves_the_slot_ended() {
    let mut w = World::new(1);
    let mut s = spec("job", 1);
    s.restart.condition = RestartCondition::None;
    let sid = w.create(s);
    let first = w.live(&sid)[0].id.clone();
    w.report(&first, TaskState::Complete);
    assert_eq!(w.state.tasks.values().filter(|t| t.service_id == sid).count(), 1);
    // The ended task stays the slot's task: nothing new is made on later passes.
    w.ok(Command::Tick);
    assert_eq!(w.state.tasks.values().filter(|t| t.service_id == sid).count(), 1);
}

#[test]
fn on_failure_does_not_restart_completed_tasks() {
    let mut w = World::new(1);
    let mut s = spec("job", 1);
    s.restart.condition = RestartCondition::OnFailure;
    let sid = w.create(s);
    let first = w.live(&sid)[0].id.clone();
    w.report(&first, TaskState::Complete);
    assert_eq!(w.state.tasks.values().filter(|t| t.service_id == sid).count(), 1);
    w.ok(Command::ScaleService { service: "job".into(), replicas: 2 });
    let second = w.live(&sid).into_iter().find(|t| t.slot == 2).unwrap().id.clone();
    w.report(&second, TaskState::Failed);
    assert_eq!(w.state.tasks.values().filter(|t| t.service_id == sid && t.slot == 2).count(), 2);
}

#[test]
fn max_attempts_stops_restarting() {
    let mut w = World::new(1);
    let mut s = spec("crashy", 1);
    s.restart.max_attempts = 2;
    let sid = w.create(s);
    for _ in 0..5 {
        if let Some(t) = w.live(&sid).into_iter().find(|t| !t.status.state.is_terminal()) {
            let id = t.id.clone();
            w.report(&id, TaskState::Failed);
        }
    }
    // Original + 2 restarts.
    assert_eq!(w.state.tasks.values().filter(|t| t.service_id == sid).count(), 3);
}

#[test]
fn restart_delay_waits_for_a_tick() {
    let mut w = World::new(1);
    let mut s = spec("slow", 1);
    s.restart.delay_ms = 10_000;
    let sid = w.create(s);
    let first = w.live(&sid)[0].id.clone();
    w.report(&first, TaskState::Failed);
    let next = w.live(&sid)[0].clone();
    assert_eq!(next.status.state, TaskState::Pending, "waits for its delay");
    let due = w.state.next_deadline(w.now).unwrap();
    assert_eq!(due, next.not_before_ms);
    w.now = due;
    w.ok(Command::Tick);
    assert_eq!(w.state.tasks[&next.id].status.state, TaskState::Assigned);
}

#[test]
fn history_is_bounded_per_slot() {
    let mut w = World::new(1);
    let sid = w.create(spec("flappy", 1));
    for _ in 0..20 {
        let id = w.live(&sid)[0].id.clone();
        w.report(&id, TaskState::Failed);
    }
    let in_slot = w.state.tasks.values().filter(|t| t.service_id == sid).count();
    assert_eq!(in_slot, 5);
    assert_eq!(w.live(&sid).len(), 1);
}

#[test]
fn history_limit_is_configurable() {
    let mut w = World::new(1);
    w.state.cluster.as_mut().unwrap().task_history_limit = 2;
    let sid = w.create(spec("flappy", 1));
    for _ in 0..6 {
        let id = w.live(&sid)[0].id.clone();
        w.report(&id, TaskState::Failed);
    }
    assert_eq!(w.state.tasks.values().filter(|t| t.service_id == sid).count(), 2);
}

#[test]
fn node_down_orphans_and_replaces_tasks() {
    let mut w = World::new(2);
    let sid = w.create(spec("web", 6));
    w.report_all(TaskState::Running);
    let on_n2: Vec<crate::model::TaskId> =
        w.live(&sid).iter().filter(|t| t.node_id.as_deref() == Some("n2")).map(|t| t.id.clone()).collect();
    assert_eq!(on_n2.len(), 2);
    w.ok(Command::SetNodeState { node: "n2".into(), state: NodeState::Down, message: "heartbeat failure".into() });
    for id in &on_n2 {
        assert_eq!(w.state.tasks[id].status.state, TaskState::Orphaned);
        assert_eq!(w.state.tasks[id].desired_state, TaskState::Shutdown);
    }
    let live = w.live(&sid);
    assert_eq!(live.len(), 6);
    assert!(live.iter().all(|t| t.node_id.as_deref() != Some("n2")));
}

#[test]
fn drain_moves_tasks_off() {
    let mut w = World::new(2);
    let sid = w.create(spec("web", 6));
    w.report_all(TaskState::Running);
    w.ok(Command::UpdateNode {
        node: "n3".into(),
        availability: Some(Availability::Drain),
        role: None,
        label_add: Default::default(),
        label_rm: vec![],
    });
    let live = w.live(&sid);
    assert_eq!(live.len(), 6);
    assert!(live.iter().all(|t| t.node_id.as_deref() != Some("n3")));
    // The drained node's tasks are told to stop, and the agent will report them shut down.
    let stopping: Vec<_> = w.state.tasks.values().filter(|t| t.node_id.as_deref() == Some("n3")).collect();
    assert_eq!(stopping.len(), 2);
    assert!(stopping.iter().all(|t| t.desired_state == TaskState::Shutdown));
}

#[test]
fn global_service_runs_once_per_eligible_node() {
    let mut w = World::new(3);
    let mut s = spec("agent", 0);
    s.mode = ServiceMode::Global;
    let sid = w.create(s);
    assert_eq!(w.live(&sid).len(), 4);
    w.ok(Command::AddNode { node: crate::testkit::node("n9", Role::Worker) });
    assert_eq!(w.live(&sid).len(), 5);
    w.ok(Command::UpdateNode {
        node: "n9".into(),
        availability: Some(Availability::Drain),
        role: None,
        label_add: Default::default(),
        label_rm: vec![],
    });
    assert_eq!(w.live(&sid).len(), 4);
    let mut nodes: Vec<_> = w.live(&sid).iter().map(|t| t.node_id.clone().unwrap()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 4);
}

#[test]
fn global_service_with_constraint() {
    let mut w = World::new(3);
    let mut s = spec("mgr-only", 0);
    s.mode = ServiceMode::Global;
    s.placement.constraints = vec!["node.role==manager".into()];
    let sid = w.create(s);
    let live = w.live(&sid);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].node_id.as_deref(), Some("n1"));
    assert!(live[0].name("mgr-only").starts_with("mgr-only.n1."));
}

#[test]
fn removed_service_tasks_stop_and_go() {
    let mut w = World::new(1);
    let sid = w.create(spec("web", 3));
    w.report_all(TaskState::Running);
    w.ok(Command::RemoveService { service: "web".into() });
    assert!(w.state.tasks.values().all(|t| t.desired_state == TaskState::Shutdown));
    let ids: Vec<crate::model::TaskId> = w.state.tasks.keys().cloned().collect();
    for id in ids {
        w.report(&id, TaskState::Shutdown);
    }
    assert!(w.state.tasks.values().all(|t| t.service_id != sid));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever the sequence of scales, failures and node changes, each slot 1..=replicas has
    /// exactly one live task and no slot above has one.
    #[test]
    fn one_live_task_per_slot(ops in proptest::collection::vec((0u8..5, 0u8..8), 1..40)) {
        let mut w = World::new(3);
        let sid = w.create(spec("p", 2));
        let mut replicas = 2i64;
        for (op, arg) in ops {
            match op {
                0 => { replicas = i64::from(arg); w.ok(Command::ScaleService { service: "p".into(), replicas }); }
                1 => {
                    let live: Vec<crate::model::TaskId> = w.live(&sid).iter().filter(|t| t.node_id.is_some() && !t.status.state.is_terminal()).map(|t| t.id.clone()).collect();
                    if let Some(id) = live.get(arg as usize % live.len().max(1)) { let id = id.clone(); w.report(&id, TaskState::Failed); }
                }
                2 => { w.report_all(TaskState::Running); }
                3 => {
                    let node = format!("n{}", 2 + arg % 3);
                    let state = if arg % 2 == 0 { NodeState::Down } else { NodeState::Ready };
                    w.ok(Command::SetNodeState { node, state, message: String::new() });
                }
                _ => {
                    let node = format!("n{}", 2 + arg % 3);
                    let a = if arg % 2 == 0 { Availability::Drain } else { Availability::Active };
                    w.ok(Command::UpdateNode { node, availability: Some(a), role: None, label_add: Default::default(), label_rm: vec![] });
                }
            }
            let live = w.live(&sid);
            let mut slots: Vec<u64> = live.iter().map(|t| t.slot).collect();
            slots.sort();
            let want: Vec<u64> = (1..=replicas as u64).collect();
            proptest::prop_assert_eq!(slots, want);
            // Every live assigned task sits on a ready, active node.
            for t in live {
                if let Some(n) = &t.node_id {
                    if t.status.state == TaskState::Assigned {
                        let node = &w.state.nodes[n];
                        proptest::prop_assert_eq!(node.state, NodeState::Ready);
                        proptest::prop_assert_eq!(node.availability, Availability::Active);
                    }
                }
            }
        }
    }
}
