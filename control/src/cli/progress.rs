//! The `service create` progress display, Docker style:
//! ```text
//! overall progress: 2 out of 3 tasks
//! 1/3: running   [==================================================>]
//! 2/3: preparing [=================================>                 ]
//! 3/3: running   [==================================================>]
//! ```

use crate::manager::ClusterView;
use crate::model::{ServiceMode, Task, TaskState};
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

/// The lines to show and whether the service has converged.
pub fn render(v: &ClusterView, service_id: &str) -> (Vec<String>, bool) {
    let Some(svc) = v.state.services.get(service_id) else {
        return (vec!["service removed".into()], true);
    };
    let live: Vec<&Task> = v.state.tasks.values().filter(|t| t.service_id == service_id && t.desired_state == TaskState::Running).collect();
    // Newest live task per slot (or per node for global services).
    let mut slots: BTreeMap<String, &Task> = BTreeMap::new();
    for t in &live {
        let key = if t.slot > 0 { format!("{:09}", t.slot) } else { t.node_id.clone().unwrap_or_default() };
        if slots.get(&key).is_none_or(|o| o.seq < t.seq) {
            slots.insert(key, t);
        }
    }
    let total = match svc.spec.mode {
        ServiceMode::Replicated { replicas } => replicas.max(0) as usize,
        ServiceMode::Global => slots.len(),
    };
    let running = slots.values().filter(|t| t.status.state == TaskState::Running).count();
    let mut lines = vec![format!("overall progress: {running} out of {total} tasks")];
    for (i, t) in slots.values().enumerate() {
        let label =
            if t.slot > 0 { format!("{}/{}", t.slot, total) } else { crate::cli::format::short(t.node_id.as_deref().unwrap_or("")) };
        let state = t.status.state.as_str();
        let mut line = format!("{label}: {state:<9} {}", bar(t.status.state));
        if t.status.state == TaskState::Pending && !t.status.message.is_empty() && t.status.message != "pending task scheduling" {
            line = format!("{label}: {state:<9} {}", t.status.message);
        }
        if t.status.state.is_terminal() {
            line = format!("{label}: {state:<9} {}", t.status.err.clone().unwrap_or(t.status.message.clone()));
        }
        lines.push(line);
        let _ = i;
    }
    let converged = running == total && slots.len() == total;
    (lines, converged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServiceMode, ServiceSpec};
    use crate::testkit::World;

    fn view(w: &World) -> ClusterView {
        ClusterView { state: w.state.clone(), leader: None, voters: Default::default(), this_manager: 0, applied: 0 }
    }

    #[test]
    fn shows_each_slot_and_converges() {
        let mut w = World::new(1);
        let mut s = ServiceSpec::new("web", "nginx");
        s.mode = ServiceMode::Replicated { replicas: 3 };
        let sid = w.create(s);
        let (lines, done) = render(&view(&w), &sid);
        assert!(!done);
        assert_eq!(lines[0], "overall progress: 0 out of 3 tasks");
        assert!(lines[1].starts_with("1/3: assigned"), "{}", lines[1]);
        w.report_all(TaskState::Running);
        let (lines, done) = render(&view(&w), &sid);
        assert!(done);
        assert_eq!(lines[0], "overall progress: 3 out of 3 tasks");
        assert_eq!(lines[3], format!("3/3: running   [{}>]", "=".repeat(50)));
    }
}
