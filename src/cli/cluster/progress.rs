//! The progress display of `service create|scale|update|rollback`, Docker style:
//! ```text
//! overall progress: 2 out of 3 tasks
//! 1/3: running   [==================================================>]
//! 2/3: preparing [=================================>                 ]
//! 3/3: running   [==================================================>]
//! ```

use shoal_control::manager::ClusterView;
use shoal_control::model::{Health, ServiceMode, Task, TaskState, UpdateState};
use std::collections::BTreeMap;

const WIDTH: usize = 50;

fn step(s: TaskState) -> usize {
    match s {
        TaskState::New => 1,
        TaskState::Pending => 3,
        TaskState::Assigned => 4,
        TaskState::Accepted => 5,
        TaskState::Preparing => 6,
        TaskState::Starting => 8,
        TaskState::Running => 9,
        _ => 0,
    }
}

fn bar(s: TaskState) -> String {
    let n = step(s) * WIDTH / 9;
    if n == 0 {
        return format!("[{}]", " ".repeat(WIDTH + 1));
    }
    format!("[{}>{}]", "=".repeat(n), " ".repeat(WIDTH - n))
}

/// Where the followed change stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Waiting,
    /// Every slot runs a task of the current spec, ready, and no update is in flight.
    Converged,
    /// The update paused, or rolled back when an update was asked for: Docker's error.
    Failed(String),
}

/// What `service create|scale|update|rollback` follow. `rollback_asked`: a rolled-back service
/// is the goal (`service rollback`), not a failure.
pub fn render(v: &ClusterView, service_id: &str, rollback_asked: bool, now_ms: u64) -> (Vec<String>, Outcome) {
    let Some(svc) = v.state.services.get(service_id) else {
        return (vec!["service removed".into()], Outcome::Converged);
    };
    let live: Vec<&Task> = v.state.tasks.values().filter(|t| t.service_id == service_id && t.desired_state == TaskState::Running).collect();
    // Newest live task per slot (or per node for global services).
    let mut slots: BTreeMap<String, &Task> = BTreeMap::new();
    for t in &live {
        let key = if t.slot > 0 { format!("{:09}", t.slot) } else { t.node_id.as_deref().unwrap_or_default().to_string() };
        if slots.get(&key).is_none_or(|o| o.seq < t.seq) {
            slots.insert(key, t);
        }
    }
    let total = match svc.spec.mode {
        ServiceMode::Replicated { replicas } => replicas.max(0) as usize,
        ServiceMode::Global => slots.len(),
    };
    // A slot is done when its task runs the current spec and is ready (healthy, with a check):
    // what the updater waits for, and what Docker's RUNNING means.
    let is_done = |t: &Task| {
        t.service_version == svc.spec_version
            && t.status.state == TaskState::Running
            && (svc.spec.healthcheck.is_none() || t.status.health == Some(Health::Healthy))
    };
    let done = slots.values().filter(|t| is_done(t)).count();
    let status = svc.update_status.as_ref();
    let rolling_back = status.is_some_and(|s| s.is_rollback());
    let mut lines = vec![];
    if let Some(st) = status.filter(|s| s.state == UpdateState::RollbackStarted) {
        lines.push(format!("rollback: {}", st.message));
    }
    let what = if rolling_back { "rolling back update: " } else { "" };
    lines.push(format!("overall progress: {what}{done} out of {total} tasks"));
    for t in slots.values() {
        let label = if t.slot > 0 { format!("{}/{}", t.slot, total) } else { super::format::short(t.node_id.as_deref().unwrap_or("")) };
        // A task of the older spec still in its slot is shown as what it waits for.
        let state = if t.service_version != svc.spec_version { TaskState::New } else { t.status.state };
        let mut line = format!("{label}: {:<9} {}", state.as_str(), bar(state));
        if state == TaskState::Pending && !t.status.message.is_empty() && t.status.message != "pending task scheduling" {
            line = format!("{label}: {:<9} {}", state.as_str(), t.status.message);
        }
        if state.is_terminal() {
            line = format!("{label}: {:<9} {}", state.as_str(), t.status.err.clone().unwrap_or(t.status.message.clone()));
        }
        lines.push(line);
    }
    let converged = done == total && slots.len() == total;
    let outcome = match status.map(|s| (s.state, s)) {
        Some((UpdateState::Paused, s)) => Outcome::Failed(format!("service update paused: {}", s.message)),
        Some((UpdateState::RollbackPaused, s)) => Outcome::Failed(format!("service rollback paused: {}", s.message)),
        Some((UpdateState::RollbackCompleted, s)) if !rollback_asked => Outcome::Failed(format!("service rolled back: {}", s.message)),
        Some((UpdateState::Updating | UpdateState::RollbackStarted, s)) => {
            if converged {
                let cfg = if rolling_back { svc.spec.rollback } else { svc.spec.update };
                let end = s.progress.last_batch_done_ms.saturating_add(cfg.monitor_ms);
                let secs = end.saturating_sub(now_ms).div_ceil(1000);
                lines.push(format!("verify: Waiting {secs} seconds to verify that tasks are stable..."));
            }
            Outcome::Waiting
        }
        _ if converged => Outcome::Converged,
        _ => Outcome::Waiting,
    };
    (lines, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_control::model::{ServiceMode, ServiceSpec};
    use shoal_control::testkit::World;

    fn view(w: &World) -> ClusterView {
        ClusterView {
            state: w.state.clone(),
            leader: None,
            voters: Default::default(),
            this_manager: 0,
            applied: 0,
            membership: Default::default(),
        }
    }

    #[test]
    fn shows_each_slot_and_converges() {
        let mut w = World::new(1);
        let mut s = ServiceSpec::new("web", "nginx");
        s.mode = ServiceMode::Replicated { replicas: 3 };
        let sid = w.create(s);
        let (lines, done) = render(&view(&w), &sid, false, w.now);
        assert_eq!(done, Outcome::Waiting);
        assert_eq!(lines[0], "overall progress: 0 out of 3 tasks");
        assert!(lines[1].starts_with("1/3: assigned"), "{}", lines[1]);
        w.report_all(TaskState::Running);
        let (lines, done) = render(&view(&w), &sid, false, w.now);
        assert_eq!(done, Outcome::Converged);
        assert_eq!(lines[0], "overall progress: 3 out of 3 tasks");
        assert_eq!(lines[3], format!("3/3: running   [{}>]", "=".repeat(50)));
    }

    fn update(w: &mut World, image: &str, failure_action: shoal_control::model::FailureAction) {
        let sid = w.state.services.keys().next().unwrap().clone();
        let mut s = w.state.services[&sid].spec.clone();
        s.image = image.into();
        s.update.failure_action = failure_action;
        s.update.monitor_ms = 5_000;
        w.ok(shoal_control::state::Command::UpdateService { service: "web".into(), spec: s });
    }

    fn stop_shut_down(w: &mut World) {
        let ids: Vec<shoal_control::model::TaskId> = w
            .state
            .tasks
            .values()
            .filter(|t| t.desired_state == TaskState::Shutdown && !t.status.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            w.report(&id, TaskState::Shutdown);
        }
    }

    #[test]
    fn an_update_counts_new_tasks_and_waits_out_the_monitor_window() {
        let mut w = World::new(1);
        let mut s = ServiceSpec::new("web", "whoami:1");
        s.mode = ServiceMode::Replicated { replicas: 2 };
        let sid = w.create(s);
        w.report_all(TaskState::Running);
        update(&mut w, "whoami:2", shoal_control::model::FailureAction::Pause);
        let (lines, outcome) = render(&view(&w), &sid, false, w.now);
        assert_eq!(outcome, Outcome::Waiting);
        assert_eq!(lines[0], "overall progress: 0 out of 2 tasks", "old tasks do not count: {lines:?}");
        for _ in 0..2 {
            stop_shut_down(&mut w);
            w.report_all(TaskState::Running);
        }
        let (lines, outcome) = render(&view(&w), &sid, false, w.now);
        assert_eq!(lines[0], "overall progress: 2 out of 2 tasks");
        assert_eq!(lines.last().unwrap(), "verify: Waiting 5 seconds to verify that tasks are stable...");
        assert_eq!(outcome, Outcome::Waiting, "until the monitor window ends");
        w.now += 5_000;
        w.ok(shoal_control::state::Command::Tick);
        assert_eq!(render(&view(&w), &sid, false, w.now).1, Outcome::Converged);
    }

    #[test]
    fn a_paused_or_rolled_back_update_is_dockers_error() {
        let mut w = World::new(1);
        let mut s = ServiceSpec::new("web", "whoami:1");
        s.mode = ServiceMode::Replicated { replicas: 2 };
        s.rollback.monitor_ms = 0;
        let sid = w.create(s);
        w.report_all(TaskState::Running);
        update(&mut w, "whoami:2", shoal_control::model::FailureAction::Rollback);
        stop_shut_down(&mut w);
        let new = w.live(&sid).into_iter().find(|t| t.status.state < TaskState::Running).unwrap().id.clone();
        w.report(&new, TaskState::Failed);
        let (lines, outcome) = render(&view(&w), &sid, false, w.now);
        assert_eq!(lines[0], format!("rollback: update rolled back due to failure or early termination of task {new}"));
        assert!(lines[1].starts_with("overall progress: rolling back update: "), "{lines:?}");
        assert_eq!(outcome, Outcome::Waiting);
        for _ in 0..3 {
            stop_shut_down(&mut w);
            w.report_all(TaskState::Running);
        }
        let (_, outcome) = render(&view(&w), &sid, false, w.now);
        assert_eq!(outcome, Outcome::Failed("service rolled back: rollback completed".into()));
        assert_eq!(render(&view(&w), &sid, true, w.now).1, Outcome::Converged, "the goal of `service rollback`");
        // A paused update.
        update(&mut w, "whoami:3", shoal_control::model::FailureAction::Pause);
        stop_shut_down(&mut w);
        let new = w.live(&sid).into_iter().find(|t| t.status.state < TaskState::Running).unwrap().id.clone();
        w.report(&new, TaskState::Failed);
        let (_, outcome) = render(&view(&w), &sid, false, w.now);
        assert_eq!(
            outcome,
            Outcome::Failed(format!("service update paused: update paused due to failure or early termination of task {new}"))
        );
    }
}
