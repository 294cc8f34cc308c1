//! Heartbeat bookkeeping: when each node was last heard from. A node silent for
//! `GRACE` heartbeat periods is expired.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Missed heartbeats before a node is marked down.
pub const GRACE: u32 = 3;

pub struct Liveness {
    period: Duration,
    last_seen: Mutex<HashMap<String, Instant>>,
    since: Mutex<Instant>,
}

impl Liveness {
    pub fn new(period: Duration) -> Liveness {
        Liveness { period, last_seen: Mutex::new(HashMap::new()), since: Mutex::new(Instant::now()) }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn seen(&self, node: &str, now: Instant) {
        self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), now);
    }

    /// Forget everything and count silence from `now` (a new leader).
    pub fn reset_all(&self, now: Instant) {
        self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    pub fn expired(&self, node: &str, now: Instant) -> bool {
        let since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
        let last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied().unwrap_or(since).max(since);
        now.saturating_duration_since(last) > self.period * GRACE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_nodes_expire_after_grace() {
        let l = Liveness::new(Duration::from_millis(500));
        l.reset_all(Instant::now());
        l.seen("a", Instant::now());
        tokio::time::advance(Duration::from_millis(1000)).await;
        l.seen("a", Instant::now());
        assert!(!l.expired("a", Instant::now()));
        assert!(!l.expired("b", Instant::now()), "unknown nodes get a grace period from the start");
        tokio::time::advance(Duration::from_millis(1200)).await;
        assert!(!l.expired("a", Instant::now()));
        assert!(l.expired("b", Instant::now()));
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(l.expired("a", Instant::now()));
        l.reset_all(Instant::now());
        assert!(!l.expired("a", Instant::now()), "a new leader gives a fresh grace period");
    }
}
