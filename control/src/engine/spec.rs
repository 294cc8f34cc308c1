//! Docker's ServiceSpec (what `docker service create|update|scale` and `docker stack deploy`
//! send) to shoal's. Fields shoal has no counterpart for are refused by their JSON path when
//! set, never dropped in silence; the empty defaults the CLI always sends are accepted.

use super::container::{self, ms};
use super::error::EngineError;
use super::refuse;
use crate::model::{self as m, EndpointMode, PortConfig, Protocol, PublishMode, RestartCondition, ServiceMode, ServiceSpec};
use bollard_stubs::models as d;

fn nonneg(v: Option<i64>, path: &str) -> Result<Option<u64>, EngineError> {
    match v {
        Some(n) if n < 0 => Err(EngineError::bad(format!("{path}: {n} is negative"))),
        v => Ok(v.map(|n| n as u64)),
    }
}

/// A request body as shoal's spec: Docker's JSON read strictly (`strict`), then converted.
pub fn parse(body: &[u8]) -> Result<ServiceSpec, EngineError> {
    from_docker(&super::strict::decode::<d::ServiceSpec>(body, "service spec")?)
}

pub fn from_docker(s: &d::ServiceSpec) -> Result<ServiceSpec, EngineError> {
    let name = s.name.clone().unwrap_or_default();
    let tt = s.task_template.clone().unwrap_or_default();
    refuse::service(s)?;
    refuse::task_template(&tt)?;
    let c = tt.container_spec.clone().ok_or_else(|| EngineError::bad("TaskTemplate.ContainerSpec is missing: give an Image"))?;
    refuse::container(&c)?;
    let mut spec = ServiceSpec::new(name, String::new());
    container::from_docker(&c, &mut spec)?;
    spec.labels = s.labels.clone().unwrap_or_default().into_iter().collect();
    spec.force_update = tt.force_update.unwrap_or(0);
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
        spec.placement.constraints = p.constraints.clone().unwrap_or_default();
        spec.placement.max_replicas_per_node = nonneg(p.max_replicas, "TaskTemplate.Placement.MaxReplicas")?.unwrap_or(0);
        for (i, pref) in p.preferences.iter().flatten().enumerate() {
            let path = format!("TaskTemplate.Placement.Preferences[{i}].Spread.SpreadDescriptor");
            let spread = pref.spread.as_ref().and_then(|s| s.spread_descriptor.clone()).filter(|s| !s.is_empty());
            let spread = spread.ok_or_else(|| EngineError::bad(format!("{path} is missing: give e.g. spread=node.labels.zone")))?;
            let pref = m::PlacementPreference { spread };
            pref.check().map_err(|e| EngineError::bad(format!("invalid {path} (--placement-pref): {e}")))?;
            spec.placement.preferences.push(pref);
        }
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
    use crate::model::{ContainerOpts, FileRef, HealthCheck, Mount, MountKind};
    use serde_json::{json, Value};

    /// What docker 20.10 sends for `docker service create --name vote --replicas 3 -p 5000:80 vote:latest python app.py`.
    const CLI_CREATE: &str = r#"{"Name":"vote","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"vote:latest","Args":["python","app.py"],"Init":false,"DNSConfig":{},"Isolation":"default"},"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0,"Runtime":"container"},"Mode":{"Replicated":{"Replicas":3}},"UpdateConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"RollbackConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":5000,"PublishMode":"ingress"}]}}"#;

    /// What docker 20.10 sends for `docker service create --detach --name carry --mount
    /// type=volume,src=data,dst=/data --mount type=tmpfs,dst=/scratch --config
    /// src=appcfg,target=/etc/app.conf --hostname carry-host --user 1000:1000 --workdir /tmp
    /// --read-only --cap-drop NET_RAW --dns-option ndots:2 --stop-grace-period 3s --sysctl
    /// net.ipv4.ip_local_port_range="20000 30000" --ulimit nofile=512:1024 busybox sleep 3600`
    /// (recorded on a socket; the config's ID is what the CLI looked up).
    const CLI_CARRY: &str = r#"{"Name":"carry","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest","Args":["sleep","3600"],"Hostname":"carry-host","Dir":"/tmp","User":"1000:1000","Init":false,"ReadOnly":true,"Mounts":[{"Type":"volume","Source":"data","Target":"/data"},{"Type":"tmpfs","Target":"/scratch"}],"StopGracePeriod":3000000000,"DNSConfig":{"Options":["ndots:2"]},"Configs":[{"File":{"Name":"/etc/app.conf","UID":"0","GID":"0","Mode":292},"ConfigID":"cfgid123","ConfigName":"appcfg"}],"Sysctls":{"net.ipv4.ip_local_port_range":"20000 30000"},"CapabilityDrop":["CAP_NET_RAW"],"Ulimits":[{"Name":"nofile","Hard":1024,"Soft":512}]},"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{}},"EndpointSpec":{"Mode":"vip"}}"#;

    /// docker 20.10's `service create --detach busybox` (no flags): the defaults it always sends.
    const CLI_PLAIN: &str = r#"{"Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest","Init":false,"DNSConfig":{}},"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{}},"EndpointSpec":{"Mode":"vip"}}"#;

    /// A spec with every field shoal has set away from its default.
    fn full() -> ServiceSpec {
        let mut s = ServiceSpec::new("carry", "busybox:1");
        s.args = vec!["sleep".into(), "3600".into()];
        s.env = vec!["A=1".into()];
        s.labels.insert("tier".into(), "back".into());
        s.mode = ServiceMode::Replicated { replicas: 2 };
        s.networks = vec!["front".into()];
        s.network_aliases.insert("front".into(), vec!["store".into()]);
        s.secrets = vec![FileRef { source: "pw".into(), target: "db/pass".into(), uid: 70, gid: 71, mode: 0o400 }];
        s.configs = vec![
            FileRef { source: "appcfg".into(), target: "/etc/app.conf".into(), uid: 1000, gid: 0, mode: 0o440 },
            FileRef::config_named("other"),
        ];
        let mut data = Mount::new(MountKind::Volume, "data", "/data");
        data.volume_nocopy = true;
        data.volume_driver = Some("local".into());
        let mut scratch = Mount::new(MountKind::Tmpfs, "", "/scratch");
        scratch.tmpfs_size = 1 << 20;
        scratch.tmpfs_mode = Some(0o1770);
        let mut srv = Mount::new(MountKind::Bind, "/srv", "/srv");
        srv.readonly = true;
        srv.bind_propagation = Some("rslave".into());
        s.mounts = vec![data, scratch, srv, Mount::new(MountKind::Volume, "", "/anon")];
        s.container = ContainerOpts {
            hostname: Some("carry-host".into()),
            user: Some("1000:1000".into()),
            workdir: Some("/tmp".into()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            stop_grace_ms: Some(3000),
            read_only: true,
            cap_add: vec!["CAP_NET_ADMIN".into()],
            cap_drop: vec!["CAP_NET_RAW".into()],
            dns: vec!["10.0.0.2".into()],
            dns_search: vec!["corp.example".into()],
            dns_options: vec!["ndots:2".into()],
            sysctls: [("net.ipv4.ip_local_port_range".to_string(), "20000 30000".to_string())].into(),
            ulimits: vec![("nofile".into(), 512, 1024), ("memlock".into(), u64::MAX, u64::MAX)],
            groups: vec!["44".into()],
            labels: [("role".to_string(), "db".to_string())].into(),
            init: false,
        };
        let mut hc = HealthCheck::new("test -e /tmp");
        hc.interval_ms = 2000;
        hc.retries = 5;
        hc.start_period_ms = 1000;
        s.healthcheck = Some(hc);
        s.limits.memory_bytes = 256 << 20;
        s.limits.nano_cpus = 500_000_000;
        s.limits.pids = 100;
        s.reservations.memory_bytes = 64 << 20;
        s.placement.constraints = vec!["node.role==worker".into()];
        s.placement.max_replicas_per_node = 1;
        s.restart.condition = RestartCondition::OnFailure;
        s.restart.max_attempts = 3;
        s.update.order = m::UpdateOrder::StartFirst;
        s.update.parallelism = 2;
        s.rollback.failure_action = m::FailureAction::Continue;
        s.endpoint.ports = vec![PortConfig { protocol: Protocol::Udp, target: 53, published: Some(5353), mode: PublishMode::Host }];
        s.force_update = 2;
        s
    }

    fn wire(s: &ServiceSpec) -> Vec<u8> {
        serde_json::to_vec(&super::super::convert::service_spec(s)).unwrap()
    }

    /// `docker service inspect` of [`full`] as shoal serves it (without the IDs of its secrets
    /// and configs, which come from the cluster state).
    const INSPECTED: &str = r#"{"Name":"carry","Labels":{"tier":"back"},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:1","Labels":{"role":"db"},"Command":["/bin/sh","-c"],"Args":["sleep","3600"],"Hostname":"carry-host","Env":["A=1"],"Dir":"/tmp","User":"1000:1000","Groups":["44"],"ReadOnly":true,"Mounts":[{"Target":"/data","Source":"data","Type":"volume","VolumeOptions":{"NoCopy":true,"DriverConfig":{"Name":"local"}}},{"Target":"/scratch","Type":"tmpfs","TmpfsOptions":{"SizeBytes":1048576,"Mode":1016}},{"Target":"/srv","Source":"/srv","Type":"bind","ReadOnly":true,"BindOptions":{"Propagation":"rslave"}},{"Target":"/anon","Type":"volume"}],"StopGracePeriod":3000000000,"HealthCheck":{"Test":["CMD-SHELL","test -e /tmp"],"Interval":2000000000,"Timeout":30000000000,"Retries":5,"StartPeriod":1000000000},"DNSConfig":{"Nameservers":["10.0.0.2"],"Search":["corp.example"],"Options":["ndots:2"]},"Secrets":[{"File":{"Name":"db/pass","UID":"70","GID":"71","Mode":256},"SecretName":"pw"}],"Configs":[{"File":{"Name":"/etc/app.conf","UID":"1000","GID":"0","Mode":288},"ConfigName":"appcfg"},{"File":{"Name":"/other","UID":"0","GID":"0","Mode":292},"ConfigName":"other"}],"Sysctls":{"net.ipv4.ip_local_port_range":"20000 30000"},"CapabilityAdd":["CAP_NET_ADMIN"],"CapabilityDrop":["CAP_NET_RAW"],"Ulimits":[{"Name":"nofile","Soft":512,"Hard":1024},{"Name":"memlock","Soft":-1,"Hard":-1}]},"Resources":{"Limits":{"NanoCPUs":500000000,"MemoryBytes":268435456,"Pids":100},"Reservations":{"MemoryBytes":67108864}},"RestartPolicy":{"Condition":"on-failure","Delay":5000000000,"MaxAttempts":3,"Window":0},"Placement":{"Constraints":["node.role==worker"],"MaxReplicas":1},"ForceUpdate":2,"Runtime":"container","Networks":[{"Target":"front","Aliases":["store"]}]},"Mode":{"Replicated":{"Replicas":2}},"UpdateConfig":{"Parallelism":2,"Delay":0,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0.0,"Order":"start-first"},"RollbackConfig":{"Parallelism":1,"Delay":0,"FailureAction":"continue","Monitor":5000000000,"MaxFailureRatio":0.0,"Order":"stop-first"},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"udp","TargetPort":53,"PublishedPort":5353,"PublishMode":"host"}]}}"#;

    /// What docker 20.10 sent back for `docker service update --detach --image busybox:2
    /// --env-add B=2 carry` after reading [`INSPECTED`] (recorded on a socket): the whole spec,
    /// with the Go spelling `Healthcheck`, mounts re-sorted by source and ulimits by name.
    const CLI_UPDATE: &str = r#"{"Name":"carry","Labels":{"tier":"back"},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:2","Labels":{"role":"db"},"Command":["/bin/sh","-c"],"Args":["sleep","3600"],"Hostname":"carry-host","Env":["A=1","B=2"],"Dir":"/tmp","User":"1000:1000","Groups":["44"],"ReadOnly":true,"Mounts":[{"Type":"volume","Target":"/anon"},{"Type":"tmpfs","Target":"/scratch","TmpfsOptions":{"SizeBytes":1048576,"Mode":1016}},{"Type":"bind","Source":"/srv","Target":"/srv","ReadOnly":true,"BindOptions":{"Propagation":"rslave"}},{"Type":"volume","Source":"data","Target":"/data","VolumeOptions":{"NoCopy":true,"DriverConfig":{"Name":"local"}}}],"StopGracePeriod":3000000000,"Healthcheck":{"Test":["CMD-SHELL","test -e /tmp"],"Interval":2000000000,"Timeout":30000000000,"StartPeriod":1000000000,"Retries":5},"DNSConfig":{"Nameservers":["10.0.0.2"],"Search":["corp.example"],"Options":["ndots:2"]},"Secrets":[{"File":{"Name":"db/pass","UID":"70","GID":"71","Mode":256},"SecretID":"","SecretName":"pw"}],"Configs":[{"File":{"Name":"/etc/app.conf","UID":"1000","GID":"0","Mode":288},"ConfigID":"","ConfigName":"appcfg"},{"File":{"Name":"/other","UID":"0","GID":"0","Mode":292},"ConfigID":"","ConfigName":"other"}],"Sysctls":{"net.ipv4.ip_local_port_range":"20000 30000"},"CapabilityAdd":["CAP_NET_ADMIN"],"CapabilityDrop":["CAP_NET_RAW"],"Ulimits":[{"Name":"memlock","Hard":-1,"Soft":-1},{"Name":"nofile","Hard":1024,"Soft":512}]},"Resources":{"Limits":{"NanoCPUs":500000000,"MemoryBytes":268435456,"Pids":100},"Reservations":{"MemoryBytes":67108864}},"RestartPolicy":{"Condition":"on-failure","Delay":5000000000,"MaxAttempts":3,"Window":0},"Placement":{"Constraints":["node.role==worker"],"MaxReplicas":1},"Networks":[{"Target":"front","Aliases":["store"]}],"ForceUpdate":2,"Runtime":"container"},"Mode":{"Replicated":{"Replicas":2}},"UpdateConfig":{"Parallelism":2,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"start-first"},"RollbackConfig":{"Parallelism":1,"FailureAction":"continue","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"udp","TargetPort":53,"PublishedPort":5353,"PublishMode":"host"}]}}"#;

    /// Sets `path` (object keys, made on the way) in `v`.
    fn set(v: &mut Value, path: &[&str], x: Value) {
        let mut at = v;
        for k in path {
            if !at.is_object() {
                *at = json!({});
            }
            at = at.as_object_mut().unwrap().entry(k.to_string()).or_insert(Value::Null);
        }
        *at = x;
    }

    fn with(base: &str, path: &[&str], x: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(base).unwrap();
        set(&mut v, path, x);
        serde_json::to_vec(&v).unwrap()
    }

    const CS: [&str; 2] = ["TaskTemplate", "ContainerSpec"];

    fn cs(field: &str) -> Vec<&str> {
        let mut p = CS.to_vec();
        p.extend(field.split('.'));
        p
    }

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
        assert_eq!(parse(CLI_CREATE.as_bytes()).unwrap(), s);
    }

    #[test]
    fn the_defaults_docker_always_sends_are_accepted() {
        let s = parse(CLI_PLAIN.as_bytes()).unwrap();
        assert_eq!(s, ServiceSpec::new("", "busybox:latest"));
        // Every field shoal refuses, at the value meaning "not used".
        let mut v: Value = serde_json::from_str(CLI_PLAIN).unwrap();
        for (path, x) in [
            (
                cs("Privileges"),
                json!({"CredentialSpec": {}, "SELinuxContext": {"Disable": false}, "Seccomp": {"Mode": "default"}, "AppArmor": {"Mode": ""}, "NoNewPrivileges": false}),
            ),
            (cs("TTY"), json!(false)),
            (cs("OpenStdin"), json!(false)),
            (cs("StopSignal"), json!("SIGTERM")),
            (cs("Hosts"), json!([])),
            (cs("OomScoreAdj"), json!(0)),
            (cs("Isolation"), json!("default")),
            (cs("Init"), json!(false)),
            (cs("Mounts"), json!([])),
            (cs("Configs"), json!([])),
            (cs("HealthCheck"), json!({"Test": []})),
            (vec!["TaskTemplate", "Runtime"], json!("container")),
            (vec!["TaskTemplate", "LogDriver"], json!({"Name": ""})),
            (vec!["TaskTemplate", "Placement", "Platforms"], json!([])),
            (vec!["TaskTemplate", "Placement", "Preferences"], json!([])),
            (vec!["TaskTemplate", "Resources", "MemorySwappiness"], json!(-1)),
        ] {
            set(&mut v, &path, x);
        }
        assert_eq!(parse(&serde_json::to_vec(&v).unwrap()).unwrap(), ServiceSpec::new("", "busybox:latest"), "{v}");
    }

    #[test]
    fn the_cli_carry_body_maps_every_flag() {
        let s = parse(CLI_CARRY.as_bytes()).unwrap();
        let k = &s.container;
        assert_eq!(s.args, ["sleep", "3600"]);
        assert_eq!(k.entrypoint, None, "IMAGE CMD... are arguments to the image's entrypoint");
        assert_eq!((k.hostname.as_deref(), k.user.as_deref(), k.workdir.as_deref()), (Some("carry-host"), Some("1000:1000"), Some("/tmp")));
        assert!(k.read_only);
        assert_eq!(k.stop_grace_ms, Some(3000));
        assert_eq!(k.cap_drop, ["CAP_NET_RAW"]);
        assert_eq!(k.dns_options, ["ndots:2"]);
        assert_eq!(k.sysctls["net.ipv4.ip_local_port_range"], "20000 30000");
        assert_eq!(k.ulimits, [("nofile".to_string(), 512, 1024)]);
        assert_eq!(s.mounts, [Mount::new(MountKind::Volume, "data", "/data"), Mount::new(MountKind::Tmpfs, "", "/scratch")]);
        assert_eq!(s.configs, [FileRef { source: "appcfg".into(), target: "/etc/app.conf".into(), uid: 0, gid: 0, mode: 0o444 }]);
        // --entrypoint is Docker's Command: the image's ENTRYPOINT replaced, Args after it.
        let s = parse(&with(CLI_CARRY, &cs("Command"), json!(["/bin/sh", "-c"]))).unwrap();
        assert_eq!(
            (s.container.entrypoint.unwrap(), s.args),
            (vec!["/bin/sh".to_string(), "-c".into()], vec!["sleep".to_string(), "3600".into()])
        );
        // Capabilities as a client may spell them; ulimit -1 is unlimited.
        let s = parse(&with(CLI_CARRY, &cs("CapabilityAdd"), json!(["net_admin", "CAP_SYS_TIME", "ALL"]))).unwrap();
        assert_eq!(s.container.cap_add, ["CAP_NET_ADMIN", "CAP_SYS_TIME", "ALL"]);
        let s = parse(&with(CLI_CARRY, &cs("Ulimits"), json!([{"Name": "memlock", "Soft": -1, "Hard": -1}]))).unwrap();
        assert_eq!(s.container.ulimits, [("memlock".to_string(), u64::MAX, u64::MAX)]);
    }

    /// The fields the model gained with --init, --placement-pref and volume-opt/volume-label.
    #[test]
    fn init_placement_preferences_and_volume_options_round_trip() {
        let mut s = ServiceSpec::new("web", "busybox:1");
        s.container.init = true;
        s.placement.preferences = vec![
            m::PlacementPreference { spread: "node.labels.zone".into() },
            m::PlacementPreference { spread: "node.labels.rack".into() },
        ];
        let mut v = m::Mount::new(m::MountKind::Volume, "fast", "/data");
        v.volume_driver = Some("local".into());
        v.volume_opts = [("type".to_string(), "tmpfs".to_string()), ("device".to_string(), "tmpfs".to_string())].into();
        v.volume_labels = [("tier".to_string(), "hot".to_string())].into();
        s.mounts = vec![v];
        let d = super::super::convert::service_spec(&s);
        assert_eq!(d.task_template.as_ref().unwrap().container_spec.as_ref().unwrap().init, Some(true));
        assert_eq!(from_docker(&d).unwrap(), s);
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
    fn round_trip_with_every_field_set() {
        let s = full();
        assert_eq!(from_docker(&super::super::convert::service_spec(&s)).unwrap(), s);
        // Through the wire too: JSON out, read back strictly.
        assert_eq!(parse(&wire(&s)).unwrap(), s);
        let mut g = full();
        g.mode = ServiceMode::Global;
        g.placement.max_replicas_per_node = 0;
        g.endpoint.mode = EndpointMode::Dnsrr;
        g.container = ContainerOpts::default();
        g.mounts.clear();
        g.healthcheck = None;
        assert_eq!(parse(&wire(&g)).unwrap(), g);
    }

    #[test]
    fn an_update_of_image_and_env_keeps_mounts_configs_and_options() {
        // The constant is what the docker CLI read: it must still be what shoal serves.
        let served: Value = serde_json::from_slice(&wire(&full())).unwrap();
        assert_eq!(served, serde_json::from_str::<Value>(INSPECTED).unwrap(), "convert changed: record CLI_UPDATE again");
        let mut w = crate::testkit::World::new(1);
        w.ok(crate::state::Command::CreateNetwork {
            spec: m::NetworkSpec {
                name: "front".into(),
                driver: "overlay".into(),
                subnet: None,
                gateway: None,
                attachable: false,
                ingress: false,
                internal: false,
                node_local: false,
                options: Default::default(),
                labels: Default::default(),
            },
        });
        w.ok(crate::state::Command::CreateSecret {
            spec: m::SecretSpec { name: "pw".into(), labels: Default::default(), data: b"x".to_vec() },
        });
        for name in ["appcfg", "other"] {
            w.ok(crate::state::Command::CreateConfig {
                spec: m::ConfigSpec { name: name.into(), labels: Default::default(), data: b"x=1".to_vec() },
            });
        }
        let sid = w.create(full());
        let svc = w.state.services[&sid].clone();
        let version = svc.version.to_string();
        let cmd = super::super::lists::service_update(&svc, Some(&version), None, || parse(CLI_UPDATE.as_bytes())).unwrap();
        let mut want = full();
        want.image = "busybox:2".into();
        want.env.push("B=2".into());
        match &cmd {
            crate::state::Command::UpdateServiceAt { spec, .. } => assert_eq!(spec, &want),
            other => panic!("{other:?}"),
        }
        w.ok(cmd);
        assert_eq!(w.state.services[&sid].spec, want);
        // The same body with only the replicas changed (`docker service update --replicas 3`)
        // is a scale, though the CLI re-sorted the mounts and ulimits: no task is replaced.
        let svc = w.state.services[&sid].clone();
        let mut v: Value = serde_json::from_str(CLI_UPDATE).unwrap();
        set(&mut v, &["Mode", "Replicated", "Replicas"], json!(3));
        let body = serde_json::to_vec(&v).unwrap();
        let cmd = super::super::lists::service_update(&svc, Some(&svc.version.to_string()), None, || parse(&body)).unwrap();
        assert!(matches!(cmd, crate::state::Command::ScaleService { replicas: 3, .. }), "{cmd:?}");
    }

    #[test]
    fn each_field_shoal_does_not_have_is_refused_by_its_path() {
        for (path, x, named) in [
            (cs("Privileges.CredentialSpec.Config"), json!("x"), "TaskTemplate.ContainerSpec.Privileges.CredentialSpec"),
            (cs("Privileges.SELinuxContext.Type"), json!("t"), "TaskTemplate.ContainerSpec.Privileges.SELinuxContext"),
            (cs("Privileges.Seccomp.Mode"), json!("unconfined"), "TaskTemplate.ContainerSpec.Privileges.Seccomp"),
            (cs("Privileges.AppArmor.Mode"), json!("disabled"), "TaskTemplate.ContainerSpec.Privileges.AppArmor"),
            (cs("Privileges.NoNewPrivileges"), json!(true), "TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges"),
            (cs("TTY"), json!(true), "TaskTemplate.ContainerSpec.TTY"),
            (cs("OpenStdin"), json!(true), "TaskTemplate.ContainerSpec.OpenStdin"),
            (cs("StopSignal"), json!("SIGINT"), "TaskTemplate.ContainerSpec.StopSignal"),
            (cs("Hosts"), json!(["10.0.0.1 a"]), "TaskTemplate.ContainerSpec.Hosts"),
            (cs("OomScoreAdj"), json!(-500), "TaskTemplate.ContainerSpec.OomScoreAdj"),
            (cs("Isolation"), json!("process"), "TaskTemplate.ContainerSpec.Isolation"),
            (
                cs("HealthCheck"),
                json!({"Test": ["CMD", "true"], "StartInterval": 1_000_000}),
                "TaskTemplate.ContainerSpec.HealthCheck.StartInterval",
            ),
            (cs("Configs"), json!([{"Runtime": {}, "ConfigName": "cred"}]), "TaskTemplate.ContainerSpec.Configs[0].Runtime"),
            (cs("Configs"), json!([{"File": {"Name": "/a"}}]), "TaskTemplate.ContainerSpec.Configs[0].ConfigName"),
            (cs("Configs"), json!([{"ConfigName": "c", "File": {"UID": "root"}}]), "TaskTemplate.ContainerSpec.Configs[0].File.UID"),
            (cs("Mounts"), json!([{"Type": "npipe", "Source": "/a", "Target": "/b"}]), "TaskTemplate.ContainerSpec.Mounts[0].Type"),
            (cs("Ulimits"), json!([{"Name": "nofile", "Soft": -2, "Hard": 1}]), "TaskTemplate.ContainerSpec.Ulimits[0].Soft"),
            (cs("StopGracePeriod"), json!(-1), "TaskTemplate.ContainerSpec.StopGracePeriod"),
            (cs("Sparkle"), json!(true), "TaskTemplate.ContainerSpec.Sparkle is not a field"),
            (vec!["TaskTemplate", "LogDriver"], json!({"Name": "json-file"}), "TaskTemplate.LogDriver"),
            (
                vec!["TaskTemplate", "Placement", "Preferences"],
                json!([{"Spread": {"SpreadDescriptor": "engine.labels.az"}}]),
                "TaskTemplate.Placement.Preferences[0].Spread.SpreadDescriptor",
            ),
            (
                vec!["TaskTemplate", "Placement", "Platforms"],
                json!([{"Architecture": "amd64", "OS": "linux"}]),
                "TaskTemplate.Placement.Platforms",
            ),
            (
                vec!["TaskTemplate", "Resources", "Reservations", "GenericResources"],
                json!([{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}]),
                "GenericResources",
            ),
            (vec!["TaskTemplate", "Resources", "SwapBytes"], json!(0), "TaskTemplate.Resources.SwapBytes"),
            (
                vec!["TaskTemplate", "Networks"],
                json!([{"Target": "front", "DriverOpts": {"a": "b"}}]),
                "TaskTemplate.Networks[0].DriverOpts",
            ),
            (vec!["TaskTemplate", "Runtime"], json!("plugin"), "TaskTemplate.Runtime"),
            (vec!["Mode"], json!({"ReplicatedJob": {}}), "jobs"),
            (vec!["EndpointSpec", "Ports"], json!([{"Name": "web", "TargetPort": 80}]), "EndpointSpec.Ports[0].Name"),
            (vec!["TaskTemplate", "RestartPolicy", "Delay"], json!(-5), "TaskTemplate.RestartPolicy.Delay"),
        ] {
            let e = parse(&with(CLI_PLAIN, &path, x.clone())).unwrap_err();
            assert_eq!(e.status(), 400, "{path:?}");
            assert!(e.to_string().contains(named), "{path:?}={x}: {e}");
        }
        let mut d: d::ServiceSpec = serde_json::from_str(CLI_CREATE).unwrap();
        d.task_template.as_mut().unwrap().container_spec = None;
        assert!(from_docker(&d).unwrap_err().to_string().contains("Image"));
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

    #[test]
    fn the_models_validation_names_docker_paths() {
        let mut w = crate::testkit::World::new(1);
        w.ok(crate::state::Command::CreateConfig {
            spec: m::ConfigSpec { name: "appcfg".into(), labels: Default::default(), data: vec![] },
        });
        for (path, x, named) in [
            (
                cs("Mounts"),
                json!([{"Type": "volume", "Source": "data", "Target": "data"}]),
                "TaskTemplate.ContainerSpec.Mounts[0].Target (--mount)",
            ),
            (
                cs("Mounts"),
                json!([{"Type": "tmpfs", "Target": "/a"}, {"Type": "tmpfs", "Target": "/a"}]),
                "TaskTemplate.ContainerSpec.Mounts[1].Target",
            ),
            (cs("Mounts"), json!([{"Type": "tmpfs", "Source": "x", "Target": "/a"}]), "TaskTemplate.ContainerSpec.Mounts[0].Source"),
            (cs("Mounts"), json!([{"Type": "bind", "Source": "rel", "Target": "/a"}]), "TaskTemplate.ContainerSpec.Mounts[0].Source"),
            (
                cs("Mounts"),
                json!([{"Type": "volume", "Target": "/a", "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}}]),
                "TaskTemplate.ContainerSpec.Mounts[0].VolumeOptions.DriverConfig.Name",
            ),
            (
                cs("Mounts"),
                json!([{"Type": "volume", "Target": "/a", "TmpfsOptions": {"SizeBytes": 1024}}]),
                "TaskTemplate.ContainerSpec.Mounts[0].TmpfsOptions.SizeBytes",
            ),
            (
                cs("Mounts"),
                json!([{"Type": "volume", "Target": "/a", "BindOptions": {"Propagation": "shared"}}]),
                "TaskTemplate.ContainerSpec.Mounts[0].BindOptions.Propagation",
            ),
            (
                cs("Mounts"),
                json!([{"Type": "tmpfs", "Target": "/a", "TmpfsOptions": {"Mode": 65535}}]),
                "TaskTemplate.ContainerSpec.Mounts[0].TmpfsOptions.Mode",
            ),
            (
                cs("Configs"),
                json!([{"ConfigName": "nope", "File": {"Name": "/a"}}]),
                "TaskTemplate.ContainerSpec.Configs[0].ConfigName (--config)",
            ),
            (cs("Configs"), json!([{"ConfigName": "appcfg", "File": {"Name": "../a"}}]), "TaskTemplate.ContainerSpec.Configs[0].File.Name"),
            (
                cs("Configs"),
                json!([{"ConfigName": "appcfg", "File": {"Name": "/a", "Mode": 65535}}]),
                "TaskTemplate.ContainerSpec.Configs[0].File.Mode",
            ),
            (cs("Hostname"), json!("bad host"), "TaskTemplate.ContainerSpec.Hostname (--hostname)"),
            (cs("User"), json!("a:b:c"), "TaskTemplate.ContainerSpec.User (--user)"),
            (cs("Dir"), json!("relative"), "TaskTemplate.ContainerSpec.Dir (--workdir)"),
            (cs("StopGracePeriod"), json!(100_000_000_000_000i64), "TaskTemplate.ContainerSpec.StopGracePeriod"),
            (cs("CapabilityDrop"), json!(["FLY"]), "TaskTemplate.ContainerSpec.CapabilityDrop (--cap-drop)"),
            (cs("DNSConfig.Nameservers"), json!(["not-an-ip"]), "TaskTemplate.ContainerSpec.DNSConfig.Nameservers (--dns)"),
            (cs("DNSConfig.Options"), json!(["two words"]), "TaskTemplate.ContainerSpec.DNSConfig.Options (--dns-option)"),
            (cs("Sysctls"), json!({"kernel.panic": "1"}), "TaskTemplate.ContainerSpec.Sysctls (--sysctl)"),
            (cs("Ulimits"), json!([{"Name": "bogus", "Soft": 1, "Hard": 1}]), "TaskTemplate.ContainerSpec.Ulimits (--ulimit)"),
            (cs("Ulimits"), json!([{"Name": "nofile", "Soft": 10, "Hard": 5}]), "TaskTemplate.ContainerSpec.Ulimits"),
        ] {
            let spec = parse(&with(CLI_CREATE, &path, x.clone())).unwrap_or_else(|e| panic!("{path:?}={x}: {e}"));
            let e = crate::state::validate::check_service(&spec, &w.state).unwrap_err();
            let e = super::super::paths::in_docker_terms(e, &spec);
            assert_eq!(e.status(), 400);
            assert!(e.to_string().starts_with(&format!("invalid {named}")), "{path:?}={x}: {e}");
        }
    }
}
