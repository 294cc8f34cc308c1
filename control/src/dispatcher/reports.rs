//! Task reports from an agent, screened before they become Raft entries: only tasks the state
//! assigns to the reporting node, at most `MAX_REPORT_UPDATES` per message, messages trimmed
//! to `MAX_MESSAGE_BYTES`, and at most `REPORT_RATE_PER_SEC` a second per session after a
//! burst. Pure: the session loop carries out what these say.

use crate::model::{TaskId, TaskStatus};
use crate::state::limits::{MAX_MESSAGE_BYTES, MAX_REPORT_UPDATES, REPORT_RATE_PER_SEC};
use crate::state::ClusterState;
use std::time::Duration;
use tokio::time::Instant;

/// What to do with one report message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Screened {
    /// The updates to propose (possibly none).
    pub kept: Vec<(TaskId, TaskStatus)>,
    /// Tasks the state does not assign to this node (unknown, or another node's).
    pub foreign: Vec<TaskId>,
    /// Updates past the per-message cap, dropped unread.
    pub over_cap: usize,
}

/// Keep what `node` may say: a node speaks only for its own tasks.
pub fn screen(state: &ClusterState, node: &str, mut updates: Vec<(TaskId, TaskStatus)>) -> Screened {
    let over_cap = updates.len().saturating_sub(MAX_REPORT_UPDATES);
    updates.truncate(MAX_REPORT_UPDATES);
    let mut out = Screened { over_cap, ..Default::default() };
    for (id, mut status) in updates {
        let ours = state.tasks.get(&id).is_some_and(|t| t.node_id.as_deref() == Some(node));
        if !ours {
            out.foreign.push(id);
            continue;
        }
        trim(&mut status.message);
        if let Some(e) = status.err.as_mut() {
            trim(e);
        }
        out.kept.push((id, status));
    }
    out
}

/// Cut a string to `MAX_MESSAGE_BYTES` on a character boundary.
fn trim(s: &mut String) {
    if s.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A token bucket of task updates: `capacity` at most, refilled at `rate` a second.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(capacity: u64, rate: u64, now: Instant) -> TokenBucket {
        TokenBucket { capacity: capacity as f64, rate: rate.max(1) as f64, tokens: capacity as f64, last: now }
    }

    /// The bucket of one agent session.
    pub fn for_session(now: Instant) -> TokenBucket {
        TokenBucket::new(MAX_REPORT_UPDATES as u64, REPORT_RATE_PER_SEC, now)
    }

    /// Take `n` tokens; returns how long to wait before going on (zero when they were there).
    /// The tokens are taken either way (the bucket goes into debt), so waiting that long and
    /// taking the next batch keeps the average rate.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServiceSpec, TaskState};
    use crate::testkit::World;

    fn up(id: &str, msg: &str) -> (TaskId, TaskStatus) {
        (id.into(), TaskStatus::new(TaskState::Running, msg, 0))
    }

    #[test]
    fn a_node_speaks_only_for_its_own_tasks() {
        let mut w = World::new(1);
        let sid = w.create(ServiceSpec { mode: crate::model::ServiceMode::Replicated { replicas: 2 }, ..ServiceSpec::new("web", "nginx") });
        let tasks = w.live(&sid);
        let mine = tasks.iter().find(|t| t.node_id.as_deref() == Some("n2")).expect("a task on n2").id.clone();
        let theirs = tasks.iter().find(|t| t.node_id.as_deref() == Some("n1")).expect("a task on n1").id.clone();
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let s = screen(&w.state, "n2", vec![up(&theirs, ""), up("nosuchtask", ""), up(&mine, &long)]);
        assert_eq!(s.foreign, vec![theirs, "nosuchtask".into()]);
        assert_eq!(s.kept.len(), 1);
        assert_eq!(s.kept[0].0, mine);
        assert!(s.kept[0].1.message.len() <= MAX_MESSAGE_BYTES && s.kept[0].1.message.starts_with('é'));
        assert_eq!(s.over_cap, 0);
    }

    #[test]
    fn a_message_carries_at_most_the_cap() {
        let w = World::new(0);
        let many: Vec<_> = (0..MAX_REPORT_UPDATES + 7).map(|i| up(&format!("t{i}"), "")).collect();
        let s = screen(&w.state, "n1", many);
        assert_eq!(s.over_cap, 7);
        assert_eq!(s.foreign.len(), MAX_REPORT_UPDATES);
    }

    fn ms(d: Duration) -> u64 {
        (d.as_secs_f64() * 1000.0).round() as u64
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(100, 50, Instant::now());
        assert_eq!(ms(b.take(100, Instant::now())), 0, "a full burst passes at once");
        // Empty: 50 more must wait a second (50 a second).
        assert_eq!(ms(b.take(50, Instant::now())), 1000);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(ms(b.take(0, Instant::now())), 0, "the debt is paid after the wait");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(ms(b.take(25, Instant::now())), 0, "half a second refills 25");
        assert_eq!(ms(b.take(1, Instant::now())), 20);
        // A long pause refills only up to the capacity.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(ms(b.take(100, Instant::now())), 0);
        assert_eq!(ms(b.take(100, Instant::now())), 2000);
    }
}
