//! Heartbeat bookkeeping: when each node was last heard from. A node silent for
//! `GRACE` heartbeat periods is expired.

use crate::gossip::Status;
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

/// Whether the leader marks a node down: its heartbeats are silent, and gossip on the leader's
/// node does not hold it alive (`gossip`: that node's status there; `None` when gossip does not
/// run or does not know the node). Heartbeats go to the leader alone, so their silence may be a
/// fault between the leader and that node only; gossip probes it from every node (directly and
/// through others), so a node cut off from the leader alone stays Ready and keeps its tasks.
/// A suspect is not held alive: gossip itself is unsure, and the heartbeats already failed.
pub fn should_mark_down(heartbeats_expired: bool, gossip: Option<Status>) -> bool {
    heartbeats_expired && gossip != Some(Status::Alive)
}

pub struct Liveness {
    period: Duration,
    last_seen: Mutex<HashMap<String, Instant>>,
    since: Mutex<Instant>,
    /// Since when this manager has been listening without a stall of its own: silence is not
    /// counted from before it (heartbeats that came in while it was not running are unread).
    listening_since: Mutex<Instant>,
}

impl Liveness {
    pub fn new(period: Duration) -> Liveness {
        let now = Instant::now();
        Liveness { period, last_seen: Mutex::new(HashMap::new()), since: Mutex::new(now), listening_since: Mutex::new(now) }
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

    /// This manager was not running for a while (its own loop woke up late: CPU starvation, a
    /// blocked runtime, a suspended VM). Heartbeats that arrived meanwhile may still be unread,
    /// so nodes' silence is counted again from `now`: a stalled leader must not take its own
    /// pause for every node's.
    pub fn stalled(&self, now: Instant) {
        *self.listening_since.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    pub fn expired(&self, node: &str, now: Instant) -> bool {
        let since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
        let listening = *self.listening_since.lock().unwrap_or_else(|p| p.into_inner());
        match self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied().filter(|l| *l >= since) {
            Some(last) => now.saturating_duration_since(last.max(listening)) > self.period * GRACE,
            None => now.saturating_duration_since(since) > (self.period * GRACE).max(FAILOVER_GRACE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_node_gossip_holds_alive_is_not_marked_down_for_silent_heartbeats_alone() {
        let l = Liveness::new(Duration::from_millis(500));
        l.seen("a", Instant::now());
        tokio::time::advance(Duration::from_secs(3)).await;
        let silent = l.expired("a", Instant::now());
        assert!(silent);
        assert!(!should_mark_down(silent, Some(Status::Alive)), "cut off from the leader alone: stays Ready");
        assert!(should_mark_down(silent, Some(Status::Down)), "gossip agrees it is dead");
        assert!(should_mark_down(silent, Some(Status::Suspect)), "gossip is unsure: heartbeats decide");
        assert!(should_mark_down(silent, None), "no gossip on the leader: heartbeats alone decide, as before");
        l.seen("a", Instant::now());
        assert!(!should_mark_down(l.expired("a", Instant::now()), Some(Status::Down)), "heartbeats heard: never down");
    }

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

    #[tokio::test(start_paused = true)]
    async fn a_stall_of_the_manager_is_not_counted_as_the_nodes_silence() {
        let l = Liveness::new(Duration::from_millis(200));
        l.seen("a", Instant::now());
        // The manager does not run for 2 s; the heartbeats sent meanwhile are not read yet.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(l.expired("a", Instant::now()), "without knowing of the stall, the node looks silent");
        l.stalled(Instant::now());
        assert!(!l.expired("a", Instant::now()), "silence is counted from the end of the stall");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!l.expired("a", Instant::now()), "within 3 periods of the stall's end");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(l.expired("a", Instant::now()), "a node still silent 3 periods after the stall is down");
        l.seen("a", Instant::now());
        assert!(!l.expired("a", Instant::now()), "a heartbeat after the stall counts as usual");
    }
}
