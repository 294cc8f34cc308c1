//! The updater as a state machine: every step is a command applied at an explicit `now` (the
//! leader's clock), so delays and monitor windows are tested without waiting.

use crate::model::{
    FailureAction, Health, HealthCheck, Ratio, RestartCondition, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus, UpdateOrder,
    UpdateState,
};
use crate::state::{Command, StateError};
use crate::testkit::World;

fn spec(replicas: i64) -> ServiceSpec {
    let mut s = ServiceSpec::new("web", "whoami:1");
    s.mode = ServiceMode::Replicated { replicas };
    s.restart.delay_ms = 0;
    s.update.monitor_ms = 1_000;
    s.rollback.monitor_ms = 1_000;
    s
}

fn v2(mut s: ServiceSpec) -> ServiceSpec {
    s.image = "whoami:2".into();
    s
}

/// A service of `replicas` running tasks on 2 nodes.
fn running(s: ServiceSpec) -> (World, crate::model::ServiceId) {
    let mut w = World::new(1);
    let sid = w.create(s);
    w.report_all(TaskState::Running);
    (w, sid)
}

fn update(w: &mut World, s: ServiceSpec) {
    w.ok(Command::UpdateService { service: "web".into(), spec: s });
}

fn image_of(w: &World, t: &Task) -> String {
    w.state.services[&t.service_id].spec_for(t.service_version).image.clone()
}

/// Live tasks as (slot, image, state), sorted.
fn live(w: &World, sid: &str) -> Vec<(u64, String, TaskState)> {
    let mut v: Vec<_> = w.live(sid).into_iter().map(|t| (t.slot, image_of(w, t), t.status.state)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    v
}

fn state_of(w: &World, sid: &str) -> (UpdateState, String) {
    let st = w.state.services[sid].update_status.clone().expect("an update status");
    (st.state, st.message)
}

/// Agents report every task told to shut down as ended.
fn stop_shut_down(w: &mut World) {
    let ids: Vec<crate::model::TaskId> = w
        .state
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Shutdown && !t.status.state.is_terminal() && t.node_id.is_some())
        .map(|t| t.id.clone())
        .collect();
    for id in ids {
        w.report(&id, TaskState::Shutdown);
    }
}

fn new_tasks(w: &World, sid: &str, image: &str) -> Vec<crate::model::TaskId> {
    w.live(sid).into_iter().filter(|t| image_of(w, t) == image).map(|t| t.id.clone()).collect()
}

/// Runs the cluster's agents and leader until nothing moves: tasks start, stop, ticks fire.
fn settle(w: &mut World) {
    for _ in 0..100 {
        let before = w.state.clone();
        w.report_all(TaskState::Running);
        stop_shut_down(w);
        if let Some(at) = w.state.next_deadline(w.now) {
            w.now = at;
        }
        if w.state.is_due(w.now) {
            w.ok(Command::Tick);
        }
        if w.state == before {
            return;
        }
    }
    panic!("the cluster never settled");
}

#[test]
fn stop_first_replaces_one_slot_at_a_time_and_holds_it_until_the_old_task_ended() {
    let (mut w, sid) = running(spec(3));
    update(&mut w, v2(spec(3)));
    assert_eq!(state_of(&w, &sid), (UpdateState::Updating, "update in progress".into()));
    // Slot 1's old task is told to stop; its slot waits empty for it (stop-first).
    let stopping: Vec<&Task> = w.state.tasks.values().filter(|t| t.desired_state == TaskState::Shutdown).collect();
    assert_eq!(stopping.len(), 1);
    assert_eq!(stopping[0].slot, 1);
    assert!(new_tasks(&w, &sid, "whoami:2").is_empty(), "no new task before the old one ended");
    stop_shut_down(&mut w);
    let new = new_tasks(&w, &sid, "whoami:2");
    assert_eq!(new.len(), 1);
    assert_eq!(w.state.tasks[&new[0]].slot, 1);
    // Slot 2 is left alone until slot 1's new task runs.
    w.ok(Command::Tick);
    assert_eq!(w.state.tasks.values().filter(|t| t.desired_state == TaskState::Shutdown).count(), 1);
    w.report(&new[0], TaskState::Running);
    let stopping: Vec<u64> = w
        .state
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Shutdown && !t.status.state.is_terminal())
        .map(|t| t.slot)
        .collect();
    assert_eq!(stopping, vec![2], "the next batch starts at once (no delay)");
    settle(&mut w);
    assert_eq!(live(&w, &sid).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), vec!["whoami:2"; 3]);
    assert_eq!(state_of(&w, &sid), (UpdateState::Completed, "update completed".into()));
    // The old spec is kept for rollback, and for the ended tasks of the slots' history.
    let svc = &w.state.services[&sid];
    assert_eq!(svc.previous_spec.as_ref().unwrap().image, "whoami:1");
    assert_eq!(svc.task_specs.values().map(|s| s.image.as_str()).collect::<Vec<_>>(), vec!["whoami:1"]);
}

#[test]
fn start_first_overlaps_and_ends_the_old_task_only_once_the_new_one_runs() {
    let mut s = spec(2);
    s.update.order = UpdateOrder::StartFirst;
    let (mut w, sid) = running(s.clone());
    update(&mut w, v2(s));
    let v = live(&w, &sid);
    assert_eq!(v.len(), 3, "slot 1 runs its old task and its new one: {v:?}");
    assert_eq!(v[0], (1, "whoami:1".into(), TaskState::Running));
    assert_eq!(v[1].1, "whoami:2");
    let new = new_tasks(&w, &sid, "whoami:2")[0].clone();
    w.report(&new, TaskState::Starting);
    assert_eq!(live(&w, &sid).len(), 3, "the old task runs until the new one does");
    w.report(&new, TaskState::Running);
    let v = live(&w, &sid);
    assert!(v.iter().all(|t| !(t.0 == 1 && t.1 == "whoami:1")), "slot 1's old task is told to stop: {v:?}");
    assert!(v.iter().any(|t| t.0 == 2 && t.1 == "whoami:2"), "slot 2's new task is made: {v:?}");
    settle(&mut w);
    assert_eq!(live(&w, &sid), vec![(1, "whoami:2".into(), TaskState::Running), (2, "whoami:2".into(), TaskState::Running)]);
}

#[test]
fn a_new_task_with_a_health_check_counts_as_updated_only_once_healthy() {
    let mut s = spec(2);
    s.update.order = UpdateOrder::StartFirst;
    let (mut w, sid) = running(s.clone());
    let mut next = v2(s);
    next.healthcheck = Some(HealthCheck::new("true"));
    update(&mut w, next);
    let new = new_tasks(&w, &sid, "whoami:2")[0].clone();
    let node = w.state.tasks[&new].node_id.clone().unwrap();
    let mut st = TaskStatus::new(TaskState::Running, "", w.now);
    st.health = Some(Health::Starting);
    w.ok(Command::TaskStatus { node: node.clone(), updates: vec![(new.clone(), st.clone())] });
    assert_eq!(live(&w, &sid).len(), 3, "running but not yet healthy: the old task stays");
    st.health = Some(Health::Healthy);
    w.ok(Command::TaskStatus { node, updates: vec![(new.clone(), st)] });
    assert_eq!(live(&w, &sid).len(), 3, "healthy: slot 1's old task stops, slot 2's new one starts");
    assert!(live(&w, &sid).iter().all(|t| !(t.0 == 1 && t.1 == "whoami:1")));
}

#[test]
fn parallelism_and_delay_batch_the_slots_and_ticks_come_due() {
    let mut s = spec(5);
    s.update.parallelism = 2;
    s.update.delay_ms = 10_000;
    let (mut w, sid) = running(s.clone());
    update(&mut w, v2(s));
    let shut = |w: &World| w.state.tasks.values().filter(|t| t.desired_state == TaskState::Shutdown).count();
    assert_eq!(shut(&w), 2, "two slots at once");
    stop_shut_down(&mut w);
    w.report_all(TaskState::Running);
    let done_at = w.now;
    assert_eq!(shut(&w), 2, "the next batch waits for the delay");
    assert_eq!(w.state.next_deadline(w.now), Some(done_at + 10_000));
    assert!(!w.state.is_due(w.now));
    w.now = done_at + 9_000;
    assert!(!w.state.is_due(w.now));
    w.ok(Command::Tick);
    assert_eq!(shut(&w), 2);
    w.now = done_at + 10_000;
    assert!(w.state.is_due(w.now), "the leader proposes a tick when the delay ends");
    w.ok(Command::Tick);
    assert_eq!(shut(&w), 4, "the second batch");
    assert!(!w.state.is_due(w.now), "one tick per deadline");
    settle(&mut w);
    assert_eq!(new_tasks(&w, &sid, "whoami:2").len(), 5);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Completed);
}

#[test]
fn the_update_completes_only_after_the_last_monitor_window() {
    let mut s = spec(1);
    s.update.monitor_ms = 5_000;
    let (mut w, sid) = running(s.clone());
    update(&mut w, v2(s));
    stop_shut_down(&mut w);
    w.report_all(TaskState::Running);
    let at = w.now;
    assert_eq!(state_of(&w, &sid).0, UpdateState::Updating);
    assert_eq!(w.state.next_deadline(w.now), Some(at + 5_000));
    w.now = at + 5_000;
    w.ok(Command::Tick);
    assert_eq!(state_of(&w, &sid), (UpdateState::Completed, "update completed".into()));
    assert!(w.state.services[&sid].update_status.as_ref().unwrap().completed_ms.is_some());
    assert_eq!(w.state.next_deadline(w.now), None);
}

/// Updates `spec(replicas)` with `cfg` to whoami:2 and fails the first new task.
fn fail_first_new_task(replicas: i64, cfg: impl Fn(&mut ServiceSpec)) -> (World, crate::model::ServiceId, crate::model::TaskId) {
    let mut s = spec(replicas);
    cfg(&mut s);
    let (mut w, sid) = running(s.clone());
    update(&mut w, v2(s));
    stop_shut_down(&mut w);
    let new = new_tasks(&w, &sid, "whoami:2")[0].clone();
    w.report(&new, TaskState::Failed);
    (w, sid, new)
}

#[test]
fn failure_action_pause_stops_the_update_and_the_next_update_resumes_it() {
    let (mut w, sid, failed) = fail_first_new_task(3, |s| s.update.failure_action = FailureAction::Pause);
    assert_eq!(state_of(&w, &sid), (UpdateState::Paused, format!("update paused due to failure or early termination of task {failed}")));
    settle(&mut w);
    // Slot 1 keeps a task (its restart, of the new spec); slots 2 and 3 stay on the old one.
    assert_eq!(live(&w, &sid).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), vec!["whoami:2", "whoami:1", "whoami:1"]);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Paused);
    // `service update` with nothing changed resumes it, as Docker's.
    let same = w.state.services[&sid].spec.clone();
    update(&mut w, same);
    settle(&mut w);
    assert_eq!(live(&w, &sid).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), vec!["whoami:2"; 3]);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Completed);
}

#[test]
fn failure_action_continue_keeps_going() {
    let (mut w, sid, _) = fail_first_new_task(3, |s| s.update.failure_action = FailureAction::Continue);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Updating);
    settle(&mut w);
    assert_eq!(live(&w, &sid).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), vec!["whoami:2"; 3]);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Completed);
}

#[test]
fn failure_action_rollback_returns_to_the_old_spec_by_itself() {
    let (mut w, sid, failed) = fail_first_new_task(3, |s| s.update.failure_action = FailureAction::Rollback);
    let svc = &w.state.services[&sid];
    assert_eq!(svc.spec.image, "whoami:1", "the spec is the old one again");
    assert_eq!(svc.previous_spec.as_ref().unwrap().image, "whoami:2");
    assert_eq!(
        state_of(&w, &sid),
        (UpdateState::RollbackStarted, format!("update rolled back due to failure or early termination of task {failed}"))
    );
    settle(&mut w);
    assert_eq!(live(&w, &sid).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), vec!["whoami:1"; 3]);
    assert_eq!(state_of(&w, &sid), (UpdateState::RollbackCompleted, "rollback completed".into()));
}

#[test]
fn a_failing_rollback_pauses_rather_than_rolling_back_again() {
    let mut s = spec(2);
    s.update.failure_action = FailureAction::Rollback;
    s.rollback.failure_action = FailureAction::Rollback;
    let (mut w, sid) = running(s.clone());
    update(&mut w, v2(s));
    stop_shut_down(&mut w);
    let new = new_tasks(&w, &sid, "whoami:2")[0].clone();
    w.report(&new, TaskState::Failed);
    assert_eq!(state_of(&w, &sid).0, UpdateState::RollbackStarted);
    // The rolled-back slot's task (a restart of the new spec) is replaced by an old-spec task, which fails too.
    stop_shut_down(&mut w);
    let back: Vec<crate::model::TaskId> = w
        .live(&sid)
        .into_iter()
        .filter(|t| t.slot == 1 && image_of(&w, t) == "whoami:1" && t.status.state < TaskState::Running)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(back.len(), 1, "{:?}", live(&w, &sid));
    w.report(&back[0], TaskState::Failed);
    let (st, msg) = state_of(&w, &sid);
    assert_eq!(st, UpdateState::RollbackPaused);
    assert_eq!(msg, format!("rollback paused due to failure or early termination of task {}", back[0]));
}

#[test]
fn max_failure_ratio_tolerates_failures_up_to_the_ratio() {
    let mut s = spec(4);
    s.update.parallelism = 0;
    s.update.order = UpdateOrder::StartFirst;
    s.update.max_failure_ratio = Ratio(0.5);
    s.restart.condition = RestartCondition::None;
    let (mut w, sid) = running(s.clone());
    update(&mut w, v2(s));
    let new = new_tasks(&w, &sid, "whoami:2");
    assert_eq!(new.len(), 4, "parallelism 0: every slot at once");
    w.report(&new[0], TaskState::Failed);
    w.report(&new[1], TaskState::Failed);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Updating, "2 of 4 is not above 0.5");
    w.report(&new[2], TaskState::Failed);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Paused, "3 of 4 is");
}

#[test]
fn a_failure_counts_only_within_the_monitor_window() {
    let mut s = spec(2);
    s.update.monitor_ms = 5_000;
    s.update.delay_ms = 60_000;
    let (mut w, sid) = running(s.clone());
    update(&mut w, v2(s));
    stop_shut_down(&mut w);
    let first = new_tasks(&w, &sid, "whoami:2")[0].clone();
    w.report(&first, TaskState::Running);
    // Past its window, slot 1's new task fails: the restart policy's business, not the update's.
    w.now += 6_000;
    w.report(&first, TaskState::Failed);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Updating);
    // Slot 2's new task fails 1 s after it runs: within its window.
    w.now += 60_000;
    w.ok(Command::Tick);
    stop_shut_down(&mut w);
    let second = w.live(&sid).into_iter().find(|t| t.slot == 2 && image_of(&w, t) == "whoami:2").unwrap().id.clone();
    w.report(&second, TaskState::Running);
    w.now += 1_000;
    w.report(&second, TaskState::Failed);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Paused);
}

#[test]
fn service_rollback_swaps_the_specs_and_replaces_tasks_by_the_rollback_settings() {
    // As swarmkit: the rollback settings are those of the spec rolled back to.
    let mut s = spec(2);
    s.rollback.order = UpdateOrder::StartFirst;
    let (mut w, sid) = running(s.clone());
    let err = w.apply(Command::RollbackService { service: "web".into(), version: None }).unwrap_err();
    assert_eq!(err, StateError::FailedPrecondition("service web has no previous spec to roll back to".into()));
    update(&mut w, v2(s));
    settle(&mut w);
    assert_eq!(state_of(&w, &sid).0, UpdateState::Completed);
    w.ok(Command::RollbackService { service: "web".into(), version: None });
    assert_eq!(state_of(&w, &sid), (UpdateState::RollbackStarted, "manually requested rollback".into()));
    assert_eq!(live(&w, &sid).len(), 3, "start-first: an old-spec task beside slot 1's new one");
    settle(&mut w);
    assert_eq!(live(&w, &sid).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), vec!["whoami:1"; 2]);
    assert_eq!(state_of(&w, &sid), (UpdateState::RollbackCompleted, "rollback completed".into()));
    // Rolling back again goes forward again (the specs swap).
    w.ok(Command::RollbackService { service: "web".into(), version: None });
    settle(&mut w);
    assert_eq!(live(&w, &sid).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), vec!["whoami:2"; 2]);
}

#[test]
fn a_stale_versioned_update_is_refused_and_changes_nothing() {
    let (mut w, sid) = running(spec(2));
    let read_at = w.state.services[&sid].version;
    w.ok(Command::ScaleService { service: "web".into(), replicas: 3 });
    let before = w.state.clone();
    let err = w.apply(Command::UpdateServiceAt { service: "web".into(), version: read_at, spec: v2(spec(2)) }).unwrap_err();
    assert!(
        matches!(&err, StateError::Conflict(m) if m.contains("update out of sequence") && m.contains(&format!("made from version {read_at}"))),
        "{err}"
    );
    assert_eq!(w.state.services, before.services);
    assert_eq!(w.state.tasks, before.tasks);
    let now_at = w.state.services[&sid].version;
    w.ok(Command::UpdateServiceAt { service: "web".into(), version: now_at, spec: v2(spec(3)) });
    assert_eq!(w.state.services[&sid].version, now_at + 1);
}

#[test]
fn changes_that_tasks_do_not_see_replace_nothing() {
    let (mut w, sid) = running(spec(2));
    let before: Vec<crate::model::TaskId> = w.live(&sid).iter().map(|t| t.id.clone()).collect();
    let mut s = spec(4);
    s.labels.insert("tier".into(), "front".into());
    s.update.delay_ms = 3_000;
    update(&mut w, s);
    settle(&mut w);
    let after: Vec<crate::model::TaskId> = w.live(&sid).iter().map(|t| t.id.clone()).collect();
    assert_eq!(after.len(), 4);
    assert!(before.iter().all(|id| after.contains(id)), "the first two tasks still run");
    assert!(w.state.services[&sid].update_status.is_none());
    // The same spec again is no change at all.
    let version = w.state.services[&sid].version;
    let same = w.state.services[&sid].spec.clone();
    update(&mut w, same);
    assert_eq!(w.state.services[&sid].version, version);
}

#[test]
fn force_replaces_every_task_of_an_unchanged_spec() {
    let (mut w, sid) = running(spec(2));
    let before: Vec<crate::model::TaskId> = w.live(&sid).iter().map(|t| t.id.clone()).collect();
    let mut s = w.state.services[&sid].spec.clone();
    s.force_update += 1;
    update(&mut w, s);
    settle(&mut w);
    let after: Vec<crate::model::TaskId> = w.live(&sid).iter().map(|t| t.id.clone()).collect();
    assert_eq!(after.len(), 2);
    assert!(before.iter().all(|id| !after.contains(id)), "every task was replaced");
}

#[test]
fn a_global_service_is_updated_node_by_node() {
    let mut s = spec(0);
    s.mode = ServiceMode::Global;
    let (mut w, sid) = running(s.clone());
    let mut next = v2(s);
    next.mode = ServiceMode::Global;
    update(&mut w, next);
    let stopping: Vec<Option<crate::model::NodeId>> =
        w.state.tasks.values().filter(|t| t.desired_state == TaskState::Shutdown).map(|t| t.node_id.clone()).collect();
    assert_eq!(stopping, vec![Some("n1".into())]);
    settle(&mut w);
    let v: Vec<(Option<crate::model::NodeId>, String)> = w.live(&sid).into_iter().map(|t| (t.node_id.clone(), image_of(&w, t))).collect();
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|(_, image)| image == "whoami:2"), "{v:?}");
}

#[test]
fn old_tasks_keep_their_own_spec_in_their_assignment_until_replaced() {
    let mut s = spec(2);
    s.healthcheck = Some(HealthCheck::new("true"));
    let (mut w, sid) = running(s.clone());
    let mut next = v2(s);
    next.healthcheck = Some(HealthCheck::new("false"));
    update(&mut w, next);
    let table = crate::dispatcher::EndpointTable::from_state(&w.state);
    let old = w.live(&sid).into_iter().find(|t| t.slot == 2).unwrap().clone();
    let view = crate::dispatcher::AgentView::for_node(&w.state, old.node_id.as_deref().unwrap(), &table);
    let a = &view.assignments[&old.id];
    assert_eq!(a.spec.image, "whoami:1");
    assert_eq!(a.spec.healthcheck.as_ref().unwrap().cmd, "true", "the old task is not checked by the new spec's health check");
}

#[test]
fn a_stop_first_slot_whose_node_goes_down_is_not_held_forever() {
    let (mut w, sid) = running(spec(2));
    update(&mut w, v2(spec(2)));
    let old = w.state.tasks.values().find(|t| t.desired_state == TaskState::Shutdown).unwrap().clone();
    w.ok(Command::SetNodeState {
        node: old.node_id.clone().unwrap().into_string(),
        state: crate::model::NodeState::Down,
        message: "gone".into(),
    });
    assert!(w.live(&sid).iter().any(|t| t.slot == old.slot && image_of(&w, t) == "whoami:2"), "the slot gets its new task");
}
