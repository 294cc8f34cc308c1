//! Lifeguard's local health awareness (LHA): a node whose own probes keep failing, or that
//! keeps being accused while alive, is more likely the slow one than its peers are dead. Its
//! score rises on such evidence and falls on each probe that succeeds; the probe timers foca
//! asks for (`probe_rtt` before ping-req, `probe_period` before judging) are stretched by
//! `1 + score`, so a struggling node waits longer before it suspects anyone.
//!
//! foca's probe timings are fixed once it runs (`set_config` refuses to change them), but the
//! runtime decides when timers are delivered, and foca tolerates late delivery: scaling both
//! keeps their order, which is all its probe cycle needs.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct LocalHealth {
    score: u32,
    max: u32,
}

impl LocalHealth {
    pub fn new(max: u32) -> LocalHealth {
        LocalHealth { score: 0, max }
    }

    pub fn score(&self) -> u32 {
        self.score
    }

    /// One of our probes got neither an ack nor an indirect ack.
    pub fn probe_failed(&mut self) {
        self.score = (self.score + 1).min(self.max);
    }

    /// Someone accused us while we are running: we had to refute.
    pub fn accused(&mut self) {
        self.score = (self.score + 1).min(self.max);
    }

    pub fn probe_succeeded(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    pub fn scale(&self, d: Duration) -> Duration {
        d * (1 + self.score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_bounded_and_recovers() {
        let mut h = LocalHealth::new(3);
        let p = Duration::from_millis(500);
        assert_eq!(h.scale(p), p);
        for _ in 0..10 {
            h.probe_failed();
        }
        assert_eq!(h.score(), 3);
        assert_eq!(h.scale(p), p * 4);
        h.accused();
        assert_eq!(h.score(), 3);
        for _ in 0..10 {
            h.probe_succeeded();
        }
        assert_eq!(h.scale(p), p);
    }
}
