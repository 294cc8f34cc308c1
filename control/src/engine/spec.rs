//! Docker's ServiceSpec (what `docker service create|update|scale` and `docker stack deploy`
//! send) to shoal's. Fields shoal has no counterpart for are refused by their JSON path when
//! set, never dropped in silence; the empty defaults the CLI always sends are accepted.

use super::error::EngineError;
use crate::model::{self as m, EndpointMode, HealthCheck, PortConfig, Protocol, PublishMode, RestartCondition, ServiceMode, ServiceSpec};
use bollard_stubs::models as d;

fn unsupported(path: &str) -> EngineError {
    EngineError::bad(format!("{path} is not supported by shoal: leave it out of the service spec"))
}

fn ms(ns: Option<i64>, path: &str) -> Result<Option<u64>, EngineError> {
    match ns {
        None => Ok(None),
        Some(n) if n < 0 => Err(EngineError::bad(format!("{path}: {n} is negative; give a duration of 0 or more"))),
        Some(n) => Ok(Some((n / 1_000_000) as u64)),
    }
}

fn nonneg(v: Option<i64>, path: &str) -> Result<Option<u64>, EngineError> {
    match v {
        Some(n) if n < 0 => Err(EngineError::bad(format!("{path}: {n} is negative"))),
        v => Ok(v.map(|n| n as u64)),
    }
}

pub fn from_docker(s: &d::ServiceSpec) -> Result<ServiceSpec, EngineError> {
    let name = s.name.clone().unwrap_or_default();
    let tt = s.task_template.clone().unwrap_or_default();
    if tt.plugin_spec.is_some() {
        return Err(unsupported("TaskTemplate.PluginSpec"));
    }
    if tt.network_attachment_spec.is_some() {
        return Err(unsupported("TaskTemplate.NetworkAttachmentSpec"));
    }
    if tt.runtime.as_deref().is_some_and(|r| !r.is_empty() && r != "container") {
        return Err(unsupported("TaskTemplate.Runtime"));
    }
    let c = tt.container_spec.clone().ok_or_else(|| EngineError::bad("TaskTemplate.ContainerSpec is missing: give an Image"))?;
    let image = c.image.clone().filter(|i| !i.is_empty()).ok_or_else(|| EngineError::bad("TaskTemplate.ContainerSpec.Image is missing"))?;
    if c.mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(unsupported("TaskTemplate.ContainerSpec.Mounts"));
    }
    if c.configs.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(unsupported("TaskTemplate.ContainerSpec.Configs"));
    }
    let mut spec = ServiceSpec::new(name, image);
    // shoal runs an image's program with arguments; Docker's Command (the entrypoint) and
    // Args (its arguments) become one argument list.
    spec.args = c.command.clone().unwrap_or_default();
    spec.args.extend(c.args.clone().unwrap_or_default());
    spec.env = c.env.clone().unwrap_or_default();
    spec.labels = s.labels.clone().unwrap_or_default().into_iter().collect();
    for (i, sec) in c.secrets.clone().unwrap_or_default().iter().enumerate() {
        let n = sec
            .secret_name
            .clone()
            .or_else(|| sec.secret_id.clone())
            .ok_or_else(|| EngineError::bad(format!("TaskTemplate.ContainerSpec.Secrets[{i}].SecretName is missing")))?;
        let mut r = crate::model::FileRef::named(n);
        if let Some(f) = &sec.file {
            let field = |what: &str, v: &str| {
                EngineError::bad(format!("TaskTemplate.ContainerSpec.Secrets[{i}].File.{what}: {v:?} is not a number"))
            };
            if let Some(t) = f.name.as_ref().filter(|t| !t.is_empty()) {
                r.target = t.clone();
            }
            if let Some(u) = f.uid.as_ref().filter(|u| !u.is_empty()) {
                r.uid = u.parse().map_err(|_| field("UID", u))?;
            }
            if let Some(g) = f.gid.as_ref().filter(|g| !g.is_empty()) {
                r.gid = g.parse().map_err(|_| field("GID", g))?;
            }
            if let Some(m) = f.mode {
                r.mode = m;
            }
        }
        spec.secrets.push(r);
    }
    if let Some(h) = &c.health_check {
        let test = h.test.clone().unwrap_or_default();
        let cmd = match test.first().map(String::as_str) {
            None | Some("NONE") => None,
            Some("CMD-SHELL") => Some(test[1..].join(" ")),
            Some("CMD") => Some(
                shlex::try_join(test[1..].iter().map(String::as_str)).map_err(|e| EngineError::bad(format!("HealthCheck.Test: {e}")))?,
            ),
            Some(other) => return Err(EngineError::bad(format!("HealthCheck.Test: {other:?} is not CMD, CMD-SHELL or NONE"))),
        };
        if let Some(cmd) = cmd {
            let mut hc = HealthCheck::new(cmd);
            let p = "TaskTemplate.ContainerSpec.HealthCheck";
            hc.interval_ms = ms(h.interval, &format!("{p}.Interval"))?.filter(|v| *v > 0).unwrap_or(hc.interval_ms);
            hc.timeout_ms = ms(h.timeout, &format!("{p}.Timeout"))?.filter(|v| *v > 0).unwrap_or(hc.timeout_ms);
            hc.start_period_ms = ms(h.start_period, &format!("{p}.StartPeriod"))?.unwrap_or(0);
            if let Some(r) = nonneg(h.retries, &format!("{p}.Retries"))?.filter(|r| *r > 0) {
                hc.retries = u32::try_from(r).map_err(|_| EngineError::bad(format!("{p}.Retries: {r} is too large")))?;
            }
            spec.healthcheck = Some(hc);
        }
    }
    if let Some(r) = &tt.resources {
        if let Some(l) = &r.limits {
            spec.limits.nano_cpus = nonneg(l.nano_cpus, "TaskTemplate.Resources.Limits.NanoCPUs")?.unwrap_or(0);
            spec.limits.memory_bytes = nonneg(l.memory_bytes, "TaskTemplate.Resources.Limits.MemoryBytes")?.unwrap_or(0);
            spec.limits.pids = nonneg(l.pids, "TaskTemplate.Resources.Limits.Pids")?.unwrap_or(0);
        }
        if let Some(l) = &r.reservations {
            spec.reservations.nano_cpus = nonneg(l.nano_cpus, "TaskTemplate.Resources.Reservations.NanoCPUs")?.unwrap_or(0);
            spec.reservations.memory_bytes = nonneg(l.memory_bytes, "TaskTemplate.Resources.Reservations.MemoryBytes")?.unwrap_or(0);
        }
    }
    if let Some(r) = &tt.restart_policy {
        let p = "TaskTemplate.RestartPolicy";
        spec.restart.condition = match r.condition {
            None | Some(d::TaskSpecRestartPolicyConditionEnum::EMPTY) | Some(d::TaskSpecRestartPolicyConditionEnum::ANY) => {
                RestartCondition::Any
            }
            Some(d::TaskSpecRestartPolicyConditionEnum::NONE) => RestartCondition::None,
            Some(d::TaskSpecRestartPolicyConditionEnum::ON_FAILURE) => RestartCondition::OnFailure,
        };
        spec.restart.delay_ms = ms(r.delay, &format!("{p}.Delay"))?.unwrap_or(spec.restart.delay_ms);
        spec.restart.max_attempts = nonneg(r.max_attempts, &format!("{p}.MaxAttempts"))?.unwrap_or(0);
        spec.restart.window_ms = ms(r.window, &format!("{p}.Window"))?.unwrap_or(0);
    }
    if let Some(p) = &tt.placement {
        if p.preferences.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(unsupported("TaskTemplate.Placement.Preferences"));
        }
        spec.placement.constraints = p.constraints.clone().unwrap_or_default();
        spec.placement.max_replicas_per_node = nonneg(p.max_replicas, "TaskTemplate.Placement.MaxReplicas")?.unwrap_or(0);
    }
    // Networks: the task template's (current clients) or the spec's (deprecated) list.
    for n in tt.networks.iter().flatten().chain(s.networks.iter().flatten()) {
        let target =
            n.target.clone().filter(|t| !t.is_empty()).ok_or_else(|| EngineError::bad("TaskTemplate.Networks[].Target is missing"))?;
        if let Some(a) = n.aliases.clone().filter(|a| !a.is_empty()) {
            spec.network_aliases.insert(target.clone(), a);
        }
        spec.networks.push(target);
    }
    spec.mode = match &s.mode {
        None => ServiceMode::Replicated { replicas: 1 },
        Some(mo) if mo.replicated_job.is_some() || mo.global_job.is_some() => {
            return Err(unsupported("Mode.ReplicatedJob / Mode.GlobalJob (jobs)"))
        }
        Some(mo) if mo.global.is_some() => ServiceMode::Global,
        Some(mo) => ServiceMode::Replicated { replicas: mo.replicated.as_ref().and_then(|r| r.replicas).unwrap_or(1) },
    };
    if let Some(u) = &s.update_config {
        spec.update = update_config(
            "UpdateConfig",
            (u.parallelism, u.delay, u.monitor, u.max_failure_ratio),
            u.failure_action.map(|f| f.to_string()),
            u.order.map(|o| o.to_string()),
        )?;
    }
    if let Some(u) = &s.rollback_config {
        spec.rollback = update_config(
            "RollbackConfig",
            (u.parallelism, u.delay, u.monitor, u.max_failure_ratio),
            u.failure_action.map(|f| f.to_string()),
            u.order.map(|o| o.to_string()),
        )?;
    }
    if let Some(e) = &s.endpoint_spec {
        spec.endpoint.mode = match e.mode {
            Some(d::EndpointSpecModeEnum::DNSRR) => EndpointMode::Dnsrr,
            _ => EndpointMode::Vip,
        };
        for (i, p) in e.ports.iter().flatten().enumerate() {
            spec.endpoint.ports.push(PortConfig {
                protocol: match p.protocol {
                    Some(d::EndpointPortConfigProtocolEnum::UDP) => Protocol::Udp,
                    Some(d::EndpointPortConfigProtocolEnum::SCTP) => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                target: p.target_port.ok_or_else(|| EngineError::bad(format!("EndpointSpec.Ports[{i}].TargetPort is missing")))?,
                published: p.published_port.filter(|p| *p != 0),
                mode: match p.publish_mode {
                    Some(d::EndpointPortConfigPublishModeEnum::HOST) => PublishMode::Host,
                    _ => PublishMode::Ingress,
                },
            });
        }
    }
    Ok(spec)
}

fn update_config(
    path: &str,
    (parallelism, delay, monitor, ratio): (Option<i64>, Option<i64>, Option<i64>, Option<f64>),
    failure_action: Option<String>,
    order: Option<String>,
) -> Result<m::UpdateConfig, EngineError> {
    let mut u = m::UpdateConfig::default();
    u.parallelism = nonneg(parallelism, &format!("{path}.Parallelism"))?.unwrap_or(u.parallelism);
    u.delay_ms = ms(delay, &format!("{path}.Delay"))?.unwrap_or(u.delay_ms);
    u.monitor_ms = ms(monitor, &format!("{path}.Monitor"))?.filter(|m| *m > 0).unwrap_or(u.monitor_ms);
    u.max_failure_ratio = m::Ratio(ratio.unwrap_or(0.0));
    u.failure_action = match failure_action.as_deref() {
        None | Some("") | Some("pause") => m::FailureAction::Pause,
        Some("continue") => m::FailureAction::Continue,
        Some("rollback") => m::FailureAction::Rollback,
        Some(o) => return Err(EngineError::bad(format!("{path}.FailureAction: {o:?} is not pause, continue or rollback"))),
    };
    u.order = match order.as_deref() {
        None | Some("") | Some("stop-first") => m::UpdateOrder::StopFirst,
        Some("start-first") => m::UpdateOrder::StartFirst,
        Some(o) => return Err(EngineError::bad(format!("{path}.Order: {o:?} is not stop-first or start-first"))),
    };
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What docker 20.10 sends for `docker service create --name vote --replicas 3 -p 5000:80 vote:latest python app.py`.
    const CLI_CREATE: &str = r#"{"Name":"vote","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"vote:latest","Args":["python","app.py"],"Init":false,"DNSConfig":{},"Isolation":"default"},"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0,"Runtime":"container"},"Mode":{"Replicated":{"Replicas":3}},"UpdateConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"RollbackConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":5000,"PublishMode":"ingress"}]}}"#;

    #[test]
    fn the_cli_create_body() {
        let d: d::ServiceSpec = serde_json::from_str(CLI_CREATE).unwrap();
        let s = from_docker(&d).unwrap();
        assert_eq!((s.name.as_str(), s.image.as_str()), ("vote", "vote:latest"));
        assert_eq!(s.args, ["python", "app.py"]);
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 3 });
        assert_eq!(
            s.endpoint.ports,
            vec![PortConfig { protocol: Protocol::Tcp, target: 80, published: Some(5000), mode: PublishMode::Ingress }]
        );
        assert_eq!(s.update, m::UpdateConfig::default());
    }

    #[test]
    fn round_trip_through_docker_shape() {
        let mut s = ServiceSpec::new("web", "nginx:1");
        s.args = vec!["-g".into(), "daemon off;".into()];
        s.mode = ServiceMode::Global;
        s.networks = vec!["front".into()];
        s.network_aliases.insert("front".into(), vec!["www".into()]);
        s.secrets = vec![crate::model::FileRef::named("db_pw")];
        s.healthcheck = Some(HealthCheck::new("curl -f localhost"));
        s.limits.memory_bytes = 256 << 20;
        s.placement.constraints = vec!["node.role==worker".into()];
        s.restart.condition = RestartCondition::OnFailure;
        s.update.order = m::UpdateOrder::StartFirst;
        s.endpoint.mode = EndpointMode::Dnsrr;
        let back = from_docker(&super::super::convert::service_spec(&s)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn unsupported_fields_are_named() {
        let mut d: d::ServiceSpec = serde_json::from_str(CLI_CREATE).unwrap();
        let tt = d.task_template.as_mut().unwrap();
        tt.container_spec.as_mut().unwrap().mounts = Some(vec![Default::default()]);
        let e = from_docker(&d).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("TaskTemplate.ContainerSpec.Mounts"), "{e}");
        let mut d: d::ServiceSpec = serde_json::from_str(CLI_CREATE).unwrap();
        d.mode = Some(d::ServiceSpecMode { replicated_job: Some(Default::default()), ..Default::default() });
        assert!(from_docker(&d).unwrap_err().to_string().contains("jobs"));
        let mut d: d::ServiceSpec = serde_json::from_str(CLI_CREATE).unwrap();
        d.task_template.as_mut().unwrap().restart_policy = Some(d::TaskSpecRestartPolicy { delay: Some(-5), ..Default::default() });
        assert!(from_docker(&d).unwrap_err().to_string().contains("TaskTemplate.RestartPolicy.Delay"));
        let mut d: d::ServiceSpec = serde_json::from_str(CLI_CREATE).unwrap();
        d.task_template.as_mut().unwrap().container_spec = None;
        assert!(from_docker(&d).unwrap_err().to_string().contains("Image"));
    }
}
