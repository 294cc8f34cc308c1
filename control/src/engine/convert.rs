//! The cluster's objects in Docker's JSON shape (bollard-stubs' models), as dockerd's swarm
//! endpoints return them. Pure functions of the replicated state.

use crate::model::{self as m, Availability, EndpointMode, Protocol, PublishMode, RestartCondition, Role, ServiceMode, TaskState};
use crate::state::ClusterState;
use bollard_stubs::models as d;
use std::collections::{BTreeMap, HashMap};

/// RFC 3339 with nanoseconds, as Go's time.Time marshals.
pub fn date(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn labels(l: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    Some(l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn version(index: u64) -> Option<d::ObjectVersion> {
    Some(d::ObjectVersion { index: Some(index) })
}

pub fn node(n: &m::Node, leader: bool) -> d::Node {
    d::Node {
        id: Some(n.id.to_string()),
        // Nodes carry no counter of their own: their last change's time stands in, so an
        // update sent with a stale version is refused (see handlers::node_update).
        version: version(n.updated_ms),
        created_at: Some(date(n.created_ms)),
        updated_at: Some(date(n.updated_ms)),
        spec: Some(d::NodeSpec {
            name: None,
            labels: labels(&n.labels),
            role: Some(match n.role {
                Role::Manager => d::NodeSpecRoleEnum::MANAGER,
                Role::Worker => d::NodeSpecRoleEnum::WORKER,
            }),
            availability: Some(match n.availability {
                Availability::Active => d::NodeSpecAvailabilityEnum::ACTIVE,
                Availability::Pause => d::NodeSpecAvailabilityEnum::PAUSE,
                Availability::Drain => d::NodeSpecAvailabilityEnum::DRAIN,
            }),
        }),
        description: Some(d::NodeDescription {
            hostname: Some(n.hostname.clone()),
            platform: Some(d::Platform { architecture: Some(std::env::consts::ARCH.to_string()), os: Some("linux".into()) }),
            resources: Some(d::ResourceObject {
                nano_cpus: Some(n.resources.nano_cpus as i64),
                memory_bytes: Some(n.resources.memory_bytes as i64),
                generic_resources: None,
            }),
            engine: Some(d::EngineDescription {
                engine_version: Some(format!("shoal-{}", env!("CARGO_PKG_VERSION"))),
                labels: None,
                plugins: None,
            }),
            tls_info: None,
        }),
        status: Some(d::NodeStatus {
            state: Some(match n.state {
                m::NodeState::Unknown => d::NodeState::UNKNOWN,
                m::NodeState::Down => d::NodeState::DOWN,
                m::NodeState::Ready => d::NodeState::READY,
                m::NodeState::Disconnected => d::NodeState::DISCONNECTED,
            }),
            message: Some(n.message.clone()),
            addr: Some(n.addr.clone()),
        }),
        manager_status: (n.role == Role::Manager).then(|| d::ManagerStatus {
            leader: Some(leader),
            reachability: Some(if n.state == m::NodeState::Ready { d::Reachability::REACHABLE } else { d::Reachability::UNREACHABLE }),
            addr: n.manager_addr.clone(),
        }),
    }
}

fn port(p: &m::PortConfig) -> d::EndpointPortConfig {
    d::EndpointPortConfig {
        name: None,
        protocol: Some(match p.protocol {
            Protocol::Tcp => d::EndpointPortConfigProtocolEnum::TCP,
            Protocol::Udp => d::EndpointPortConfigProtocolEnum::UDP,
            Protocol::Sctp => d::EndpointPortConfigProtocolEnum::SCTP,
        }),
        target_port: Some(p.target),
        published_port: p.published,
        publish_mode: Some(match p.mode {
            PublishMode::Ingress => d::EndpointPortConfigPublishModeEnum::INGRESS,
            PublishMode::Host => d::EndpointPortConfigPublishModeEnum::HOST,
        }),
    }
}

fn update_config(u: &m::UpdateConfig) -> (Option<i64>, Option<i64>, Option<i64>, Option<f64>, String, String) {
    let fa = match u.failure_action {
        m::FailureAction::Pause => "pause",
        m::FailureAction::Continue => "continue",
        m::FailureAction::Rollback => "rollback",
    };
    let order = match u.order {
        m::UpdateOrder::StopFirst => "stop-first",
        m::UpdateOrder::StartFirst => "start-first",
    };
    (
        Some(u.parallelism as i64),
        Some(u.delay_ms as i64 * 1_000_000),
        Some(u.monitor_ms as i64 * 1_000_000),
        Some(u.max_failure_ratio.0),
        fa.to_string(),
        order.to_string(),
    )
}

/// A shoal spec as Docker's ServiceSpec (what `docker service inspect` shows and what the
/// CLI sends back, modified, on `service update` and `scale`).
pub fn service_spec(s: &m::ServiceSpec) -> d::ServiceSpec {
    let (up, ud, um, ur, ufa, uo) = update_config(&s.update);
    let (rp, rd, rm, rr, rfa, ro) = update_config(&s.rollback);
    let networks: Vec<d::NetworkAttachmentConfig> = s
        .networks
        .iter()
        .map(|n| d::NetworkAttachmentConfig { target: Some(n.clone()), aliases: s.network_aliases.get(n).cloned(), driver_opts: None })
        .collect();
    d::ServiceSpec {
        name: Some(s.name.clone()),
        labels: labels(&s.labels),
        task_template: Some(d::TaskSpec {
            container_spec: Some(super::container::to_docker(s)),
            resources: Some(d::TaskSpecResources {
                limits: Some(d::Limit {
                    nano_cpus: (s.limits.nano_cpus > 0).then_some(s.limits.nano_cpus as i64),
                    memory_bytes: (s.limits.memory_bytes > 0).then_some(s.limits.memory_bytes as i64),
                    pids: (s.limits.pids > 0).then_some(s.limits.pids as i64),
                }),
                reservations: Some(d::ResourceObject {
                    nano_cpus: (s.reservations.nano_cpus > 0).then_some(s.reservations.nano_cpus as i64),
                    memory_bytes: (s.reservations.memory_bytes > 0).then_some(s.reservations.memory_bytes as i64),
                    generic_resources: None,
                }),
                ..Default::default()
            }),
            restart_policy: Some(d::TaskSpecRestartPolicy {
                condition: Some(match s.restart.condition {
                    RestartCondition::None => d::TaskSpecRestartPolicyConditionEnum::NONE,
                    RestartCondition::OnFailure => d::TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
                    RestartCondition::Any => d::TaskSpecRestartPolicyConditionEnum::ANY,
                }),
                delay: Some(s.restart.delay_ms as i64 * 1_000_000),
                max_attempts: Some(s.restart.max_attempts as i64),
                window: Some(s.restart.window_ms as i64 * 1_000_000),
            }),
            placement: Some(d::TaskSpecPlacement {
                constraints: (!s.placement.constraints.is_empty()).then(|| s.placement.constraints.clone()),
                max_replicas: (s.placement.max_replicas_per_node > 0).then_some(s.placement.max_replicas_per_node as i64),
                preferences: (!s.placement.preferences.is_empty()).then(|| {
                    s.placement
                        .preferences
                        .iter()
                        .map(|p| d::TaskSpecPlacementPreferences {
                            spread: Some(d::TaskSpecPlacementSpread { spread_descriptor: Some(p.spread.clone()) }),
                        })
                        .collect()
                }),
                ..Default::default()
            }),
            force_update: Some(s.force_update),
            runtime: Some("container".into()),
            networks: (!networks.is_empty()).then_some(networks),
            ..Default::default()
        }),
        mode: Some(match s.mode {
            ServiceMode::Replicated { replicas } => {
                d::ServiceSpecMode { replicated: Some(d::ServiceSpecModeReplicated { replicas: Some(replicas) }), ..Default::default() }
            }
            ServiceMode::Global => d::ServiceSpecMode { global: Some(HashMap::new()), ..Default::default() },
        }),
        update_config: Some(d::ServiceSpecUpdateConfig {
            parallelism: up,
            delay: ud,
            failure_action: ufa.parse().ok(),
            monitor: um,
            max_failure_ratio: ur,
            order: uo.parse().ok(),
        }),
        rollback_config: Some(d::ServiceSpecRollbackConfig {
            parallelism: rp,
            delay: rd,
            failure_action: rfa.parse().ok(),
            monitor: rm,
            max_failure_ratio: rr,
            order: ro.parse().ok(),
        }),
        networks: None,
        endpoint_spec: Some(d::EndpointSpec {
            mode: Some(match s.endpoint.mode {
                EndpointMode::Vip => d::EndpointSpecModeEnum::VIP,
                EndpointMode::Dnsrr => d::EndpointSpecModeEnum::DNSRR,
            }),
            ports: Some(s.endpoint.ports.iter().map(port).collect()),
        }),
    }
}

/// Running and desired task counts (`status=true`, what `docker service ls` shows).
pub fn service_status(st: &ClusterState, s: &m::Service) -> d::ServiceServiceStatus {
    let live = st.tasks.values().filter(|t| t.service_id == s.id && t.desired_state == TaskState::Running);
    let (mut running, mut desired) = (0u64, 0u64);
    for t in live {
        desired += 1;
        if t.status.state == TaskState::Running {
            running += 1;
        }
    }
    if let ServiceMode::Replicated { replicas } = s.spec.mode {
        desired = replicas.max(0) as u64;
    }
    d::ServiceServiceStatus { running_tasks: Some(running), desired_tasks: Some(desired), completed_tasks: Some(0) }
}

/// The IDs of the secrets and configs a spec names, beside their names as dockerd shows them
/// (the docker CLI sends both back on update; shoal reads the name).
fn with_ids(st: &ClusterState, mut spec: d::ServiceSpec) -> d::ServiceSpec {
    let c = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut());
    if let Some(c) = c {
        for r in c.secrets.iter_mut().flatten() {
            r.secret_id = r.secret_name.as_deref().and_then(|n| st.find_secret(n).ok()).map(|x| x.id.to_string());
        }
        for r in c.configs.iter_mut().flatten() {
            r.config_id = r.config_name.as_deref().and_then(|n| st.find_config(n).ok()).map(|x| x.id.to_string());
        }
    }
    spec
}

pub fn service(st: &ClusterState, s: &m::Service, with_status: bool) -> d::Service {
    let spec = with_ids(st, service_spec(&s.spec));
    d::Service {
        id: Some(s.id.to_string()),
        version: version(s.version),
        created_at: Some(date(s.created_ms)),
        updated_at: Some(date(s.updated_ms)),
        endpoint: Some(d::ServiceEndpoint {
            spec: spec.endpoint_spec.clone(),
            ports: Some(s.ports.iter().map(port).collect()),
            virtual_ips: Some(
                s.vips
                    .iter()
                    .map(|v| d::ServiceEndpointVirtualIps {
                        network_id: Some(v.network_id.to_string()),
                        addr: Some(format!("{}/{}", v.addr, v.prefix)),
                    })
                    .collect(),
            ),
        }),
        spec: Some(spec),
        update_status: s.update_status.as_ref().map(|u| d::ServiceUpdateStatus {
            state: Some(match u.state {
                m::UpdateState::Updating => d::ServiceUpdateStatusStateEnum::UPDATING,
                m::UpdateState::Paused => d::ServiceUpdateStatusStateEnum::PAUSED,
                m::UpdateState::Completed => d::ServiceUpdateStatusStateEnum::COMPLETED,
                m::UpdateState::RollbackStarted => d::ServiceUpdateStatusStateEnum::ROLLBACK_STARTED,
                m::UpdateState::RollbackPaused => d::ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
                m::UpdateState::RollbackCompleted => d::ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED,
            }),
            started_at: Some(date(u.started_ms)),
            completed_at: u.completed_ms.map(date),
            message: Some(u.message.clone()),
        }),
        service_status: with_status.then(|| service_status(st, s)),
        job_status: None,
    }
}

pub fn task_state(s: TaskState) -> d::TaskState {
    match s {
        TaskState::New => d::TaskState::NEW,
        TaskState::Pending => d::TaskState::PENDING,
        TaskState::Assigned => d::TaskState::ASSIGNED,
        TaskState::Accepted => d::TaskState::ACCEPTED,
        TaskState::Preparing => d::TaskState::PREPARING,
        TaskState::Starting => d::TaskState::STARTING,
        TaskState::Running => d::TaskState::RUNNING,
        TaskState::Complete => d::TaskState::COMPLETE,
        TaskState::Shutdown => d::TaskState::SHUTDOWN,
        TaskState::Failed => d::TaskState::FAILED,
        TaskState::Rejected => d::TaskState::REJECTED,
        TaskState::Orphaned => d::TaskState::ORPHANED,
    }
}

pub fn task(st: &ClusterState, t: &m::Task) -> d::Task {
    let svc = st.services.get(&t.service_id);
    // A task shows the spec it was made from (an older one until the updater replaces it).
    let spec = svc.map(|s| with_ids(st, service_spec(s.spec_for(t.service_version))));
    d::Task {
        id: Some(t.id.to_string()),
        version: version(t.seq),
        created_at: Some(date(t.created_ms)),
        updated_at: Some(date(t.status.timestamp_ms)),
        name: None,
        labels: Some(HashMap::new()),
        spec: spec.and_then(|s| s.task_template),
        service_id: Some(t.service_id.to_string()),
        slot: svc.filter(|s| matches!(s.spec.mode, ServiceMode::Replicated { .. })).map(|_| t.slot as i64),
        node_id: t.node_id.as_ref().map(ToString::to_string),
        status: Some(d::TaskStatus {
            timestamp: Some(date(t.status.timestamp_ms)),
            state: Some(task_state(t.status.state)),
            message: Some(t.status.message.clone()),
            err: t.status.err.clone(),
            ..Default::default()
        }),
        desired_state: Some(task_state(t.desired_state)),
        ..Default::default()
    }
}

pub fn network(n: &m::Network) -> d::Network {
    d::Network {
        name: Some(n.spec.name.clone()),
        id: Some(n.id.to_string()),
        created: Some(date(n.created_ms)),
        scope: Some(if n.spec.node_local { "local".into() } else { "swarm".into() }),
        driver: Some(n.spec.driver.clone()),
        enable_ipv4: Some(true),
        enable_ipv6: Some(false),
        ipam: Some(d::Ipam {
            driver: Some("default".into()),
            config: Some(vec![d::IpamConfig {
                subnet: Some(n.subnet.to_string()),
                gateway: Some(n.gateway.to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        internal: Some(n.spec.internal),
        attachable: Some(n.spec.attachable),
        ingress: Some(n.spec.ingress),
        config_only: Some(false),
        options: labels(&n.spec.options).map(|mut o| {
            o.insert("com.docker.network.driver.overlay.vxlanid_list".into(), n.vni.to_string());
            o
        }),
        labels: labels(&n.spec.labels),
        ..Default::default()
    }
}

pub fn secret(s: &m::Secret) -> d::Secret {
    d::Secret {
        id: Some(s.id.to_string()),
        version: version(s.created_ms),
        created_at: Some(date(s.created_ms)),
        updated_at: Some(date(s.created_ms)),
        spec: Some(d::SecretSpec { name: Some(s.spec.name.clone()), labels: labels(&s.spec.labels), ..Default::default() }),
    }
}

/// Configs are not secret: Docker shows their data (base64) in `config inspect`.
pub fn config(c: &m::Config) -> d::Config {
    use base64::Engine;
    d::Config {
        id: Some(c.id.to_string()),
        version: version(c.created_ms),
        created_at: Some(date(c.created_ms)),
        updated_at: Some(date(c.created_ms)),
        spec: Some(d::ConfigSpec {
            name: Some(c.spec.name.clone()),
            labels: labels(&c.spec.labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(&c.spec.data)),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;
    use crate::testkit::World;

    #[test]
    fn docker_field_names_and_dates() {
        assert_eq!(date(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        let mut w = World::new(1);
        let mut spec = m::ServiceSpec::new("vote", "vote:latest");
        spec.endpoint.ports.push(m::PortConfig { protocol: Protocol::Tcp, target: 80, published: Some(5000), mode: PublishMode::Ingress });
        let sid = w.create(spec);
        w.report_all(TaskState::Running);
        let st = &w.state;
        let mgr = st.nodes.values().find(|n| n.role == Role::Manager).unwrap();
        let n = serde_json::to_value(node(mgr, true)).unwrap();
        assert_eq!(n["ManagerStatus"]["Leader"], true);
        assert_eq!(n["Spec"]["Role"], "manager");
        assert_eq!(n["Status"]["State"], "ready");
        assert_eq!(n["Description"]["Hostname"], mgr.hostname.as_str());
        let s = serde_json::to_value(service(st, &st.services[&sid], true)).unwrap();
        assert_eq!(s["Spec"]["Name"], "vote");
        assert_eq!(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], "vote:latest");
        assert_eq!(s["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
        assert_eq!(s["Endpoint"]["Ports"][0]["PublishedPort"], 5000);
        assert_eq!(s["Endpoint"]["Ports"][0]["PublishMode"], "ingress");
        assert_eq!(s["ServiceStatus"]["RunningTasks"], 1);
        let t = st.tasks.values().next().unwrap();
        let tj = serde_json::to_value(task(st, t)).unwrap();
        assert_eq!(tj["Status"]["State"], "running");
        assert_eq!(tj["DesiredState"], "running");
        assert_eq!(tj["Slot"], 1);
        assert_eq!(tj["Spec"]["ContainerSpec"]["Image"], "vote:latest");
        w.ok(Command::ScaleService { service: sid.to_string(), replicas: 0 });
        let s = service(&w.state, &w.state.services[&sid], true);
        assert_eq!(s.service_status.unwrap().desired_tasks, Some(0));
    }
}
