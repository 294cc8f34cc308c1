//! Restart policy: should an ended task be replaced, and what restart history does its
//! replacement carry.

use crate::model::{RestartCondition, RestartPolicy, Task, TaskState};

/// `Some(restart times for the new task)` when the task should be restarted.
pub fn decide(policy: &RestartPolicy, t: &Task, now: u64) -> Option<Vec<u64>> {
    let failed = matches!(t.status.state, TaskState::Failed | TaskState::Rejected | TaskState::Orphaned | TaskState::Shutdown);
    let wanted = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => failed,
        RestartCondition::Any => true,
    };
    if !wanted {
        return None;
    }
    let mut recent: Vec<u64> =
        t.restarts.iter().copied().filter(|at| policy.window_ms == 0 || now.saturating_sub(*at) < policy.window_ms).collect();
    if policy.max_attempts > 0 && recent.len() as u64 >= policy.max_attempts {
        return None;
    }
    recent.push(now);
    // Only the newest `max_attempts` count; with no maximum and no window nothing would
    // ever drop out, so the history is bounded here too (one entry per restart otherwise).
    let keep = if policy.max_attempts > 0 { policy.max_attempts } else { crate::state::limits::MAX_RETRIES };
    let excess = recent.len().saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
    recent.drain(..excess);
    Some(recent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: TaskState, restarts: Vec<u64>) -> Task {
        Task { restarts, ..Task::in_slot("t", "s", 1, Some("n"), TaskState::Running, state) }
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
    fn history_stays_bounded_without_a_maximum() {
        let p = policy(RestartCondition::Any, 0, 0);
        let full: Vec<u64> = (0..crate::state::limits::MAX_RETRIES).collect();
        let next = decide(&p, &task(TaskState::Failed, full), 5_000).expect("restarted");
        assert_eq!(next.len() as u64, crate::state::limits::MAX_RETRIES);
        assert_eq!(next.last(), Some(&5_000));
    }

    #[test]
    fn window_forgets_old_attempts() {
        let p = policy(RestartCondition::Any, 2, 10);
        assert_eq!(decide(&p, &task(TaskState::Failed, vec![0, 1]), 5), None);
        assert_eq!(decide(&p, &task(TaskState::Failed, vec![0, 1]), 11), Some(vec![11]));
    }
}
