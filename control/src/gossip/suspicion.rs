//! Lifeguard's dynamic suspicion: a suspicion nobody confirms waits `max`; each independent
//! accuser shortens it, down to `min` after `k` of them:
//! `timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))` (memberlist's formula).
//!
//! foca fixes `suspect_to_down_after`, and its member updates do not say who accused, so the
//! core intercepts foca's `ChangeSuspectToDown` timer, keeps it here, and learns accusers from
//! accusation broadcasts (`accuse.rs`) that every node sends when its own probe fails.

use super::identity::GossipId;
use foca::{Incarnation, Timer};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub fn timeout(min: Duration, max: Duration, k: u32, confirmations: u32) -> Duration {
    if k == 0 || confirmations >= k {
        return min;
    }
    let frac = f64::from(confirmations + 1).ln() / f64::from(k + 1).ln();
    let span = max.saturating_sub(min).as_secs_f64();
    (max.saturating_sub(Duration::from_secs_f64(span * frac))).max(min)
}

type Key = (GossipId, Incarnation);

struct Pending {
    started: Instant,
    accusers: BTreeSet<String>,
    /// foca's timer, once this node suspects the member itself.
    timer: Option<Timer<GossipId>>,
    /// Last checks sent to the suspect itself (see `begin_check`).
    checks: u8,
}

pub struct Suspicions {
    min: Duration,
    max: Duration,
    k: u32,
    /// Rounds of last checks before an unconfirmed suspicion becomes final (each round is a few
    /// datagrams to the suspect and one round trip of waiting).
    checks: u8,
    pending: HashMap<Key, Pending>,
}

impl Suspicions {
    pub fn new(min: Duration, max: Duration, k: u32, checks: u8) -> Suspicions {
        Suspicions { min, max, k, checks, pending: HashMap::new() }
    }

    fn deadline(&self, p: &Pending, members: usize) -> Instant {
        deadline(self.min, self.max, self.k, p, members)
    }

    /// This node's own probe failed: hold foca's timer; returns when to look at it again.
    pub fn start(&mut self, now: Instant, target: GossipId, incarnation: Incarnation, timer: Timer<GossipId>, members: usize) -> Instant {
        let (min, max, k) = (self.min, self.max, self.k);
        let p = self.pending.entry((target, incarnation)).or_insert(Pending {
            started: now,
            accusers: BTreeSet::new(),
            timer: None,
            checks: 0,
        });
        p.started = p.started.min(now);
        p.timer = Some(timer);
        deadline(min, max, k, p, members)
    }

    /// Another node accused `target`: returns the new deadline if this node holds a timer for it.
    pub fn confirm(
        &mut self,
        now: Instant,
        target: GossipId,
        incarnation: Incarnation,
        accuser: String,
        members: usize,
    ) -> Option<Instant> {
        let (min, max, k) = (self.min, self.max, self.k);
        let p = self.pending.entry((target, incarnation)).or_insert(Pending {
            started: now,
            accusers: BTreeSet::new(),
            timer: None,
            checks: 0,
        });
        if !p.accusers.insert(accuser) || p.timer.is_none() {
            return None;
        }
        Some(deadline(min, max, k, p, members))
    }

    /// foca's timer, if the suspicion of `key` has run its course by `now`.
    pub fn take_due(&mut self, now: Instant, target: &GossipId, incarnation: Incarnation, members: usize) -> Option<Timer<GossipId>> {
        let key = (target.clone(), incarnation);
        let p = self.pending.get(&key)?;
        p.timer.as_ref()?;
        if self.deadline(p, members) > now {
            return None;
        }
        self.pending.remove(&key).and_then(|p| p.timer)
    }

    /// The suspicion of `target` has run its course but too few others confirmed it: before it
    /// becomes final, ask the suspect itself (up to `checks` rounds). Returns true when a check
    /// is due now (the caller sends it and looks again after a round trip).
    ///
    /// Why: a refutation spreads by gossip, which reaches almost every node but not every one;
    /// a node the refutation missed (often the accuser itself, whose probe was simply lost)
    /// declares a live member down when its timer runs out, and Down is final for that
    /// identity, so the whole cluster drops it. A direct message to the suspect brings its
    /// higher incarnation back in one round trip. A member that really died is confirmed by
    /// many accusers (each probe of it fails), so it skips the check and is not slowed down.
    pub fn begin_check(&mut self, now: Instant, target: &GossipId, incarnation: Incarnation, members: usize) -> bool {
        let (min, max, k, checks) = (self.min, self.max, self.k, self.checks);
        let Some(p) = self.pending.get_mut(&(target.clone(), incarnation)) else { return false };
        let k = k.min(members.saturating_sub(2) as u32);
        if p.timer.is_none() || p.checks >= checks || p.accusers.len() as u32 >= k || deadline(min, max, k, p, members) > now {
            return false;
        }
        p.checks += 1;
        true
    }

    pub fn has_timer(&self, target: &GossipId, incarnation: Incarnation) -> bool {
        self.pending.get(&(target.clone(), incarnation)).is_some_and(|p| p.timer.is_some())
    }

    /// Forget accusations this node never acted on, once they are too old to matter.
    pub fn prune(&mut self, now: Instant) {
        let keep = self.max * 2;
        self.pending.retain(|_, p| p.timer.is_some() || now.saturating_duration_since(p.started) < keep);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

fn deadline(min: Duration, max: Duration, k: u32, p: &Pending, members: usize) -> Instant {
    // With fewer than k other members to confirm, count only those who could (memberlist).
    let k = k.min(members.saturating_sub(2) as u32);
    p.started + timeout(min, max, k, p.accusers.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_shrinks_with_confirmations() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(5));
        let t: Vec<Duration> = (0..5).map(|c| timeout(min, max, 3, c)).collect();
        assert_eq!(t[0], max);
        assert!(t[0] > t[1] && t[1] > t[2] && t[2] > t[3], "{t:?}");
        assert_eq!(t[3], min);
        assert_eq!(t[4], min);
        assert_eq!(timeout(min, max, 0, 0), min);
    }

    #[test]
    fn confirmations_bring_the_deadline_in() {
        let now = Instant::now();
        let mut s = Suspicions::new(Duration::from_secs(1), Duration::from_secs(10), 3, 0);
        let x = GossipId::new("x", "127.0.0.1:1".parse().unwrap(), 1);
        let timer = Timer::ChangeSuspectToDown { member_id: x.clone(), incarnation: 0, token: 0 };
        // An accusation heard before our own probe failed still counts.
        assert_eq!(s.confirm(now, x.clone(), 0, "a".into(), 100), None);
        let d1 = s.start(now, x.clone(), 0, timer, 100);
        assert!(d1 < now + Duration::from_secs(10));
        assert!(s.take_due(now, &x, 0, 100).is_none());
        let d2 = s.confirm(now, x.clone(), 0, "b".into(), 100).unwrap();
        assert!(d2 < d1);
        assert_eq!(s.confirm(now, x.clone(), 0, "b".into(), 100), None, "one accuser counts once");
        let d3 = s.confirm(now, x.clone(), 0, "c".into(), 100).unwrap();
        assert_eq!(d3, now + Duration::from_secs(1));
        assert!(s.take_due(d3, &x, 0, 100).is_some());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn an_unconfirmed_suspicion_is_checked_with_the_suspect_before_it_is_final() {
        let now = Instant::now();
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(10));
        let x = GossipId::new("x", "127.0.0.1:1".parse().unwrap(), 1);
        let timer = || Timer::ChangeSuspectToDown { member_id: x.clone(), incarnation: 0, token: 0 };
        let mut s = Suspicions::new(min, max, 3, 2);
        let due = s.start(now, x.clone(), 0, timer(), 100);
        assert!(!s.begin_check(due - Duration::from_millis(1), &x, 0, 100), "no check before the deadline");
        assert!(s.begin_check(due, &x, 0, 100), "first round");
        assert!(s.begin_check(due, &x, 0, 100), "second round");
        assert!(!s.begin_check(due, &x, 0, 100), "two rounds, then the verdict");
        assert!(s.take_due(due, &x, 0, 100).is_some());

        // Confirmed by k others (a member that really died): no check, no delay.
        let mut s = Suspicions::new(min, max, 3, 2);
        s.start(now, x.clone(), 0, timer(), 100);
        for accuser in ["a", "b", "c"] {
            s.confirm(now, x.clone(), 0, accuser.into(), 100);
        }
        assert!(!s.begin_check(now + min, &x, 0, 100));
        assert!(s.take_due(now + min, &x, 0, 100).is_some());

        // Checks switched off (memberlist's behaviour).
        let mut s = Suspicions::new(min, max, 3, 0);
        let due = s.start(now, x.clone(), 0, timer(), 100);
        assert!(!s.begin_check(due, &x, 0, 100));
    }
}
