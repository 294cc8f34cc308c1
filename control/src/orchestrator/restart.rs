//! Restart policy: should an ended task be replaced, and what restart history does its
//! replacement carry.

use crate::model::{RestartCondition, RestartPolicy, Task, TaskState};

/// `Some(restart times for the new task)` when the task should be restarted.
pub fn decide(policy: &RestartPolicy, t: &Task, now: u64) -> Option<Vec<u64>> {
    let failed = matches!(
        t.status.state,
        TaskState::Failed | TaskState::Rejected | TaskState::Orphaned | TaskState::Shutdown
    );
    let wanted = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => failed,
        RestartCondition::Any => true,
    };
    if !wanted {
        return None;
    }
    let mut recent: Vec<u64> = t
        .restarts
        .iter()
        .copied()
        .filter(|at| policy.window_ms == 0 || now.saturating_sub(*at) < policy.window_ms)
        .collect();
    if policy.max_attempts > 0 && recent.len() as u64 >= policy.max_attempts {
        return None;
    }
    recent.push(now);
    Some(recent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskStatus;

    fn task(state: TaskState, restarts: Vec<u64>) -> Task {
        Task {
            id: "t".into(),
            service_id: "s".into(),
            slot: 1,
            node_id: Some("n".into()),
            desired_state: TaskState::Running,
            status: TaskStatus::new(state, "", 0),
            service_version: 1,
            networks: vec![],
            not_before_ms: 0,
            created_ms: 0,
            weight: 1,
            seq: 1,
            restarts,
        }
    }

    fn policy(condition: RestartCondition, max: u64, window: u64) -> RestartPolicy {
        RestartPolicy { condition, delay_ms: 0, max_attempts: max, window_ms: window }
    }

    #[test]
    fn conditions() {
        let any = policy(RestartCondition::Any, 0, 0);
        let on_fail = policy(RestartCondition::OnFailure, 0, 0);
        let none = policy(RestartCondition::None, 0, 0);
        assert!(decide(&any, &task(TaskState::Complete, vec![]), 1).is_some());
        assert!(decide(&on_fail, &task(TaskState::Complete, vec![]), 1).is_none());
        assert!(decide(&on_fail, &task(TaskState::Failed, vec![]), 1).is_some());
        assert!(decide(&on_fail, &task(TaskState::Rejected, vec![]), 1).is_some());
        assert!(decide(&none, &task(TaskState::Failed, vec![]), 1).is_none());
    }

    #[test]
    fn max_attempts_counts_history() {
        let p = policy(RestartCondition::Any, 2, 0);
        assert_eq!(decide(&p, &task(TaskState::Failed, vec![]), 5), Some(vec![5]));
        assert_eq!(decide(&p, &task(TaskState::Failed, vec![5]), 6), Some(vec![5, 6]));
        assert_eq!(decide(&p, &task(TaskState::Failed, vec![5, 6]), 7), None);
    }

    #[test]
    fn window_forgets_old_attempts() {
        let p = policy(RestartCondition::Any, 2, 10);
        assert_eq!(decide(&p, &task(TaskState::Failed, vec![0, 1]), 5), None);
        assert_eq!(decide(&p, &task(TaskState::Failed, vec![0, 1]), 11), Some(vec![11]));
    }
}
