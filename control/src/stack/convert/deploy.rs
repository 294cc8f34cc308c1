//! A service's `deploy` key: mode and replicas, placement, resources, restart policy, update
//! and rollback configs, endpoint mode, service labels.

use super::Unsupported;
use crate::model::{EndpointMode, FailureAction, Ratio, RestartCondition, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder};
use crate::stack::compose;
use crate::stack::de::Duration;
use crate::stack::error::StackError;

pub(super) fn ms(d: &Option<Duration>) -> Option<u64> {
    d.map(|d| d.ms)
}

fn nonneg(v: i64, path: &str) -> Result<u64, StackError> {
    u64::try_from(v).map_err(|_| StackError::invalid(path, format!("{v} is negative: use 0 or more")))
}

fn cpus(v: f64, path: &str) -> Result<u64, StackError> {
    if !(v > 0.0 && v < 1e6) {
        return Err(StackError::invalid(path, format!("{v}: give a number of CPUs above 0, e.g. 0.5")));
    }
    Ok((v * 1e9).round() as u64)
}

pub(super) fn deploy(spec: &mut ServiceSpec, d: &compose::Deploy, path: &str, u: &mut Unsupported) -> Result<(), StackError> {
    spec.mode = match d.mode.as_deref() {
        None | Some("replicated") => ServiceMode::Replicated { replicas: d.replicas.map_or(1, |r| r.0) },
        Some("global") => {
            if d.replicas.is_some() {
                return Err(StackError::invalid(format!("{path}.replicas"), "a global service runs one task per node: remove replicas"));
            }
            ServiceMode::Global
        }
        Some(job @ ("replicated-job" | "global-job")) => {
            u.add(format!("{path}.mode: {job} (jobs)"));
            ServiceMode::Replicated { replicas: 1 }
        }
        Some(other) => return Err(StackError::invalid(format!("{path}.mode"), format!("{other:?}: use replicated or global"))),
    };
    if let ServiceMode::Replicated { replicas } = spec.mode {
        if replicas < 0 {
            return Err(StackError::invalid(format!("{path}.replicas"), format!("{replicas} is negative: use 0 or more")));
        }
    }
    if let Some(p) = &d.placement {
        spec.placement.constraints = p.constraints.clone();
        for (i, pref) in p.preferences.iter().enumerate() {
            let pref = crate::model::PlacementPreference { spread: pref.spread.clone() };
            pref.check().map_err(|why| StackError::invalid(format!("{path}.placement.preferences[{i}].spread"), why.to_string()))?;
            spec.placement.preferences.push(pref);
        }
        if let Some(m) = p.max_replicas_per_node {
            spec.placement.max_replicas_per_node = nonneg(m.0, &format!("{path}.placement.max_replicas_per_node"))?;
        }
    }
    if let Some(r) = &d.resources {
        for (set, name) in [(&r.limits, "limits"), (&r.reservations, "reservations")] {
            let Some(set) = set else { continue };
            let p = format!("{path}.resources.{name}");
            if set.generic_resources.is_some() {
                u.add(format!("{p}.generic_resources (generic resources)"));
            }
            if set.devices.is_some() {
                u.add(format!("{p}.devices (devices)"));
            }
            let nano = set.cpus.map(|c| cpus(c.0, &format!("{p}.cpus"))).transpose()?.unwrap_or(0);
            let mem = set.memory.map_or(0, |m| m.0);
            if name == "limits" {
                spec.limits.nano_cpus = nano;
                spec.limits.memory_bytes = mem;
                spec.limits.pids = set.pids.map(|n| nonneg(n.0, &format!("{p}.pids"))).transpose()?.unwrap_or(0);
            } else {
                if set.pids.is_some() {
                    return Err(StackError::invalid(format!("{p}.pids"), "pids is a limit: move it under resources.limits"));
                }
                spec.reservations.nano_cpus = nano;
                spec.reservations.memory_bytes = mem;
            }
        }
    }
    if let Some(r) = &d.restart_policy {
        let p = format!("{path}.restart_policy");
        if let Some(c) = &r.condition {
            spec.restart.condition = match c.as_str() {
                "none" => RestartCondition::None,
                "on-failure" => RestartCondition::OnFailure,
                "any" => RestartCondition::Any,
                other => return Err(StackError::invalid(format!("{p}.condition"), format!("{other:?}: use none, on-failure or any"))),
            };
        }
        spec.restart.delay_ms = ms(&r.delay).unwrap_or(spec.restart.delay_ms);
        spec.restart.window_ms = ms(&r.window).unwrap_or(spec.restart.window_ms);
        if let Some(m) = r.max_attempts {
            spec.restart.max_attempts = nonneg(m.0, &format!("{p}.max_attempts"))?;
        }
    }
    if let Some(c) = &d.update_config {
        spec.update = update_config(c, &format!("{path}.update_config"))?;
    }
    if let Some(c) = &d.rollback_config {
        spec.rollback = update_config(c, &format!("{path}.rollback_config"))?;
    }
    spec.endpoint.mode = match d.endpoint_mode.as_deref() {
        None | Some("vip") => EndpointMode::Vip,
        Some("dnsrr") => EndpointMode::Dnsrr,
        Some(other) => return Err(StackError::invalid(format!("{path}.endpoint_mode"), format!("{other:?}: use vip or dnsrr"))),
    };
    for (k, v) in d.labels.iter().flat_map(|l| l.0.iter()) {
        spec.labels.insert(k.clone(), v.clone().unwrap_or_default());
    }
    Ok(())
}

fn update_config(c: &compose::UpdateConfig, path: &str) -> Result<UpdateConfig, StackError> {
    let mut out = UpdateConfig::default();
    if let Some(p) = c.parallelism {
        out.parallelism = nonneg(p.0, &format!("{path}.parallelism"))?;
    }
    out.delay_ms = ms(&c.delay).unwrap_or(out.delay_ms);
    out.monitor_ms = ms(&c.monitor).unwrap_or(out.monitor_ms);
    if let Some(a) = &c.failure_action {
        out.failure_action = match a.as_str() {
            "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" => FailureAction::Rollback,
            other => {
                return Err(StackError::invalid(format!("{path}.failure_action"), format!("{other:?}: use pause, continue or rollback")))
            }
        };
    }
    if let Some(r) = c.max_failure_ratio {
        if !(0.0..=1.0).contains(&r.0) {
            return Err(StackError::invalid(format!("{path}.max_failure_ratio"), format!("{}: use a fraction from 0 to 1", r.0)));
        }
        // 0.0 and -0.0 compare by bits: keep the positive zero.
        out.max_failure_ratio = Ratio(r.0 + 0.0);
    }
    if let Some(o) = &c.order {
        out.order = match o.as_str() {
            "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => return Err(StackError::invalid(format!("{path}.order"), format!("{other:?}: use stop-first or start-first"))),
        };
    }
    Ok(out)
}
