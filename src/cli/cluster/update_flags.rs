//! `--update-*` and `--rollback-*`: how tasks are replaced on an update and on a rollback, for
//! `service create` and `service update` alike (Docker's flags, values and defaults).

use super::args::parse_duration_ms;
use clap::Args;
use shoal_control::model::{FailureAction, Ratio, UpdateConfig, UpdateOrder};

#[derive(Args, Debug, Default, Clone)]
pub struct UpdatePolicyArgs {
    /// Tasks updated at once (0 = all at once) [1].
    #[arg(long)]
    pub update_parallelism: Option<u64>,
    /// Wait between updates of batches (ms|s|m|h) [0s].
    #[arg(long)]
    pub update_delay: Option<String>,
    /// What to do when an update fails: pause, continue or rollback [pause].
    #[arg(long)]
    pub update_failure_action: Option<String>,
    /// How long each new task is watched for failure after it runs (ms|s|m|h) [5s].
    #[arg(long)]
    pub update_monitor: Option<String>,
    /// Share of new tasks that may fail before the failure action applies (0 to 1) [0].
    #[arg(long)]
    pub update_max_failure_ratio: Option<f64>,
    /// stop-first (old task stops before its replacement starts) or start-first (they overlap) [stop-first].
    #[arg(long)]
    pub update_order: Option<String>,
    /// Tasks rolled back at once (0 = all at once) [1].
    #[arg(long)]
    pub rollback_parallelism: Option<u64>,
    /// Wait between rollbacks of batches (ms|s|m|h) [0s].
    #[arg(long)]
    pub rollback_delay: Option<String>,
    /// What to do when a rollback fails: pause or continue [pause].
    #[arg(long)]
    pub rollback_failure_action: Option<String>,
    /// How long each rolled-back task is watched for failure (ms|s|m|h) [5s].
    #[arg(long)]
    pub rollback_monitor: Option<String>,
    /// Share of rolled-back tasks that may fail before the failure action applies (0 to 1) [0].
    #[arg(long)]
    pub rollback_max_failure_ratio: Option<f64>,
    /// stop-first or start-first [stop-first].
    #[arg(long)]
    pub rollback_order: Option<String>,
}

/// One side's flags, so that both sides share the parsing and the error messages.
struct Side<'a> {
    prefix: &'static str,
    parallelism: Option<u64>,
    delay: &'a Option<String>,
    failure_action: &'a Option<String>,
    monitor: &'a Option<String>,
    max_failure_ratio: Option<f64>,
    order: &'a Option<String>,
}

impl UpdatePolicyArgs {
    /// Applies the flags given to `update` and `rollback`; flags not given keep their value.
    pub fn apply(&self, update: &mut UpdateConfig, rollback: &mut UpdateConfig) -> anyhow::Result<()> {
        let u = Side {
            prefix: "update",
            parallelism: self.update_parallelism,
            delay: &self.update_delay,
            failure_action: &self.update_failure_action,
            monitor: &self.update_monitor,
            max_failure_ratio: self.update_max_failure_ratio,
            order: &self.update_order,
        };
        let r = Side {
            prefix: "rollback",
            parallelism: self.rollback_parallelism,
            delay: &self.rollback_delay,
            failure_action: &self.rollback_failure_action,
            monitor: &self.rollback_monitor,
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: &self.rollback_order,
        };
        apply_side(&u, update)?;
        apply_side(&r, rollback)
    }
}

fn apply_side(s: &Side, c: &mut UpdateConfig) -> anyhow::Result<()> {
    let p = s.prefix;
    if let Some(n) = s.parallelism {
        c.parallelism = n;
    }
    if let Some(d) = s.delay {
        c.delay_ms = parse_duration_ms(d).map_err(|e| anyhow::anyhow!("invalid --{p}-delay: {e}"))?;
    }
    if let Some(m) = s.monitor {
        c.monitor_ms = parse_duration_ms(m).map_err(|e| anyhow::anyhow!("invalid --{p}-monitor: {e}"))?;
    }
    if let Some(a) = s.failure_action {
        c.failure_action = match (a.as_str(), p) {
            ("pause", _) => FailureAction::Pause,
            ("continue", _) => FailureAction::Continue,
            ("rollback", "update") => FailureAction::Rollback,
            (_, "update") => anyhow::bail!("invalid --update-failure-action {a:?}: use pause, continue or rollback"),
            _ => anyhow::bail!("invalid --rollback-failure-action {a:?}: use pause or continue"),
        };
    }
    if let Some(r) = s.max_failure_ratio {
        if !(0.0..=1.0).contains(&r) {
            anyhow::bail!("invalid --{p}-max-failure-ratio {r}: use a fraction from 0 to 1, e.g. 0.2");
        }
        // One zero: -0.0 and 0.0 differ by bits, and specs compare by them.
        c.max_failure_ratio = Ratio(if r == 0.0 { 0.0 } else { r });
    }
    if let Some(o) = s.order {
        c.order = match o.as_str() {
            "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            _ => anyhow::bail!("invalid --{p}-order {o:?}: use stop-first or start-first"),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_only_what_they_name() {
        let a = UpdatePolicyArgs {
            update_parallelism: Some(2),
            update_delay: Some("10s".into()),
            update_failure_action: Some("rollback".into()),
            rollback_order: Some("start-first".into()),
            rollback_max_failure_ratio: Some(0.25),
            ..Default::default()
        };
        let (mut u, mut r) = (UpdateConfig::default(), UpdateConfig::default());
        a.apply(&mut u, &mut r).unwrap();
        assert_eq!((u.parallelism, u.delay_ms, u.failure_action), (2, 10_000, FailureAction::Rollback));
        assert_eq!(u.monitor_ms, 5_000, "untouched");
        assert_eq!((r.order, r.max_failure_ratio), (UpdateOrder::StartFirst, Ratio(0.25)));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let bad = |a: UpdatePolicyArgs| a.apply(&mut UpdateConfig::default(), &mut UpdateConfig::default()).unwrap_err().to_string();
        let e = bad(UpdatePolicyArgs { rollback_failure_action: Some("rollback".into()), ..Default::default() });
        assert!(e.contains("--rollback-failure-action") && e.contains("pause or continue"), "{e}");
        let e = bad(UpdatePolicyArgs { update_order: Some("random".into()), ..Default::default() });
        assert!(e.contains("--update-order \"random\""), "{e}");
        let e = bad(UpdatePolicyArgs { update_max_failure_ratio: Some(1.5), ..Default::default() });
        assert!(e.contains("--update-max-failure-ratio 1.5"), "{e}");
        let e = bad(UpdatePolicyArgs { update_delay: Some("soon".into()), ..Default::default() });
        assert!(e.contains("--update-delay"), "{e}");
    }
}
