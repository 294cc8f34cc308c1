//! Docker's health state machine, pure: a task starts `starting`; one passing check makes it
//! `healthy`; `retries` consecutive failures make it `unhealthy`. Failures inside the start
//! period do not count until the first success.

use shoal_control::model::{Health, HealthCheck};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    pub status: Health,
    failures: u32,
    /// When the task started (ms), for the start period.
    started_ms: u64,
    passed_once: bool,
}

impl HealthState {
    pub fn new(started_ms: u64) -> Self {
        HealthState { status: Health::Starting, failures: 0, started_ms, passed_once: false }
    }

    /// A task the agent adopts after a restart keeps the health the managers last recorded, so a
    /// restart does not pull healthy tasks out of the load balancers.
    pub fn adopted(status: Health, started_ms: u64) -> Self {
        HealthState { status, failures: 0, started_ms, passed_once: status != Health::Starting }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one check's outcome; returns the new status when it changed.
    pub fn record(&mut self, passed: bool, now_ms: u64, check: &HealthCheck) -> Option<Health> {
        let before = self.status;
        if passed {
            self.failures = 0;
            self.passed_once = true;
            self.status = Health::Healthy;
        } else {
            let in_start_period = !self.passed_once && now_ms.saturating_sub(self.started_ms) < check.start_period_ms;
            if !in_start_period {
                self.failures += 1;
                if self.failures >= check.retries {
                    self.status = Health::Unhealthy;
                }
            }
        }
        (self.status != before).then_some(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(retries: u32, start_period_ms: u64) -> HealthCheck {
        HealthCheck { cmd: "true".into(), interval_ms: 100, timeout_ms: 100, retries, start_period_ms }
    }

    #[test]
    fn one_pass_makes_a_starting_task_healthy() {
        let mut s = HealthState::new(0);
        assert_eq!(s.status, Health::Starting);
        assert_eq!(s.record(true, 10, &check(3, 0)), Some(Health::Healthy));
        assert_eq!(s.record(true, 20, &check(3, 0)), None);
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy_and_a_pass_resets_the_count() {
        let c = check(3, 0);
        let mut s = HealthState::new(0);
        s.record(true, 1, &c);
        assert_eq!(s.record(false, 2, &c), None);
        assert_eq!(s.record(false, 3, &c), None);
        assert_eq!(s.record(true, 4, &c), None, "a pass in between resets");
        assert_eq!(s.failures(), 0);
        assert_eq!(s.record(false, 5, &c), None);
        assert_eq!(s.record(false, 6, &c), None);
        assert_eq!(s.record(false, 7, &c), Some(Health::Unhealthy));
    }

    #[test]
    fn a_task_that_never_passes_turns_unhealthy_without_a_start_period() {
        let c = check(2, 0);
        let mut s = HealthState::new(0);
        assert_eq!(s.record(false, 1, &c), None);
        assert_eq!(s.record(false, 2, &c), Some(Health::Unhealthy));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_the_first_pass() {
        let c = check(1, 1000);
        let mut s = HealthState::new(0);
        assert_eq!(s.record(false, 500, &c), None);
        assert_eq!(s.status, Health::Starting);
        assert_eq!(s.failures(), 0);
        // After the start period, they count.
        assert_eq!(s.record(false, 1000, &c), Some(Health::Unhealthy));
        // A pass inside the start period ends it: the next failure counts at once.
        let mut s = HealthState::new(0);
        s.record(true, 100, &c);
        assert_eq!(s.record(false, 200, &c), Some(Health::Unhealthy));
    }

    #[test]
    fn an_adopted_healthy_task_stays_an_endpoint() {
        let c = check(2, 60_000);
        let mut s = HealthState::adopted(Health::Healthy, 0);
        assert_eq!(s.record(false, 1, &c), None, "the start period is over for a task that passed");
        assert_eq!(s.record(false, 2, &c), Some(Health::Unhealthy));
    }
}
