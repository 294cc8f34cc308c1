//! Heartbeat bookkeeping: when each node was last heard from. A node silent for
//! `GRACE` heartbeat periods is expired.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Missed heartbeats before a node is marked down.
pub const GRACE: u32 = 3;

/// What a new leader gives nodes it has not heard from yet, at the least: their agents may still
/// be on the old leader, which they give up within the session's keepalive (about 6 s) if it
/// went silent. Marking them down sooner would move tasks that are running fine.
pub const FAILOVER_GRACE: Duration = Duration::from_secs(15);

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
        match self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied().filter(|l| *l >= since) {
            Some(last) => now.saturating_duration_since(last) > self.period * GRACE,
            None => now.saturating_duration_since(since) > (self.period * GRACE).max(FAILOVER_GRACE),
        }
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
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(l.expired("a", Instant::now()), "a node heard from is down after 3 missed heartbeats");
        assert!(!l.expired("b", Instant::now()), "a node not heard from since the leader took over gets the failover grace");
        tokio::time::advance(FAILOVER_GRACE).await;
        assert!(l.expired("b", Instant::now()));
        l.reset_all(Instant::now());
        assert!(!l.expired("a", Instant::now()), "a new leader gives a fresh grace period");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!l.expired("a", Instant::now()), "long enough for agents to leave a silent old leader");
    }
}
