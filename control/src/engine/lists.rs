//! The list endpoints' answers and the update endpoints' commands, as pure functions of the
//! replicated state: filters applied in dockerd's way, names resolved, and Docker's whole-object
//! updates turned into shoal's commands.

use super::convert;
use super::error::EngineError;
use super::filters::Filters;
use super::resolve::resolve;
use crate::model::{Availability, Network, Node, Role, Secret, Service, ServiceMode, ServiceSpec, Task, TaskState};
use crate::state::{ClusterState, Command};
use bollard_stubs::models as d;
use std::collections::BTreeMap;

pub fn find_node<'a>(st: &'a ClusterState, n: &str) -> Result<&'a Node, EngineError> {
    resolve("node", n, st.nodes.values().map(|x| (x.id.as_str(), x.hostname.as_str(), x)))
}

pub fn find_service<'a>(st: &'a ClusterState, s: &str) -> Result<&'a Service, EngineError> {
    resolve("service", s, st.services.values().map(|x| (x.id.as_str(), x.spec.name.as_str(), x)))
}

pub fn find_network<'a>(st: &'a ClusterState, n: &str) -> Result<&'a Network, EngineError> {
    resolve("network", n, st.networks.values().map(|x| (x.id.as_str(), x.spec.name.as_str(), x)))
}

pub fn find_secret<'a>(st: &'a ClusterState, s: &str) -> Result<&'a Secret, EngineError> {
    resolve("secret", s, st.secrets.values().map(|x| (x.id.as_str(), x.spec.name.as_str(), x)))
}

pub fn find_config<'a>(st: &'a ClusterState, c: &str) -> Result<&'a crate::model::Config, EngineError> {
    resolve("config", c, st.configs.values().map(|x| (x.id.as_str(), x.spec.name.as_str(), x)))
}

pub fn configs(st: &ClusterState, filters: Option<&str>) -> Result<Vec<d::Config>, EngineError> {
    let f = Filters::parse(filters, &["name", "names", "id", "label"])?;
    Ok(st
        .configs
        .values()
        .filter(|s| f.any("name", |x| s.spec.name.starts_with(x)) && f.any("names", |x| s.spec.name == x))
        .filter(|s| f.any("id", |x| s.id.starts_with(x)) && f.labels("label", &s.spec.labels))
        .map(convert::config)
        .collect())
}

pub fn find_task<'a>(st: &'a ClusterState, t: &str) -> Result<&'a Task, EngineError> {
    resolve("task", t, st.tasks.values().map(|x| (x.id.as_str(), x.id.as_str(), x)))
}

/// `GET /nodes`; `leader` is the Raft id of the leader, if known.
pub fn nodes(st: &ClusterState, leader: Option<u64>, filters: Option<&str>) -> Result<Vec<d::Node>, EngineError> {
    let f = Filters::parse(filters, &["id", "label", "name", "role", "membership", "node.label"])?;
    // "label" is dockerd's engine labels, which shoal nodes do not have.
    let no_engine_labels = BTreeMap::new();
    Ok(st
        .nodes
        .values()
        .filter(|n| f.any("id", |x| n.id.starts_with(x)) && f.any("name", |x| n.hostname.starts_with(x)))
        .filter(|n| f.labels("node.label", &n.labels) && f.labels("label", &no_engine_labels))
        .filter(|n| f.any("role", |x| x == if n.role == Role::Manager { "manager" } else { "worker" }))
        .filter(|_| f.any("membership", |x| x == "accepted"))
        .map(|n| convert::node(n, leader == Some(n.raft_id)))
        .collect())
}

/// `GET /services`; `status` adds the running/desired counts (`?status=true`).
pub fn services(st: &ClusterState, filters: Option<&str>, status: bool) -> Result<Vec<d::Service>, EngineError> {
    let f = Filters::parse(filters, &["id", "label", "name", "mode"])?;
    Ok(st
        .services
        .values()
        .filter(|s| f.any("id", |x| s.id.starts_with(x)) && f.any("name", |x| s.spec.name.starts_with(x)))
        .filter(|s| f.labels("label", &s.spec.labels))
        .filter(|s| f.any("mode", |x| x == if s.spec.mode == ServiceMode::Global { "global" } else { "replicated" }))
        .map(|s| convert::service(st, s, status))
        .collect())
}

/// `GET /tasks`. Services and nodes in the filter may be named; as dockerd does, they are
/// resolved first and an unknown one is an error.
pub fn tasks(st: &ClusterState, filters: Option<&str>) -> Result<Vec<d::Task>, EngineError> {
    let f = Filters::parse(filters, &["id", "name", "service", "node", "label", "desired-state", "_up-to-date"])?;
    let services: Vec<crate::model::ServiceId> =
        f.get("service").iter().map(|s| find_service(st, s).map(|s| s.id.clone())).collect::<Result<_, _>>()?;
    let nodes: Vec<crate::model::NodeId> =
        f.get("node").iter().map(|n| find_node(st, n).map(|n| n.id.clone())).collect::<Result<_, _>>()?;
    for s in f.get("desired-state") {
        if !matches!(s.as_str(), "running" | "shutdown" | "accepted") {
            return Err(EngineError::bad(format!("invalid filter 'desired-state={s}': use running, shutdown or accepted")));
        }
    }
    let up_to_date = f.get("_up-to-date").iter().any(|x| x == "true" || x == "1");
    Ok(st
        .tasks
        .values()
        .filter(|t| f.any("id", |x| t.id.starts_with(x)))
        .filter(|t| services.is_empty() || services.contains(&t.service_id))
        .filter(|t| nodes.is_empty() || t.node_id.as_ref().is_some_and(|n| nodes.contains(n)))
        .filter(|t| {
            f.any("desired-state", |x| match x {
                "running" => t.desired_state == TaskState::Running,
                "shutdown" => t.desired_state.is_terminal(),
                _ => t.desired_state == TaskState::Accepted,
            })
        })
        .filter(|t| {
            let svc = st.services.get(&t.service_id);
            let name = svc.map(|s| task_name(s, t)).unwrap_or_default();
            f.any("name", |x| name.starts_with(x))
                && svc.is_none_or(|s| f.labels("label", &s.spec.labels))
                && (!up_to_date || svc.is_some_and(|s| is_up_to_date(s, t)))
        })
        .map(|t| convert::task(st, t))
        .collect())
}

pub fn networks(st: &ClusterState, filters: Option<&str>) -> Result<Vec<d::Network>, EngineError> {
    let f = Filters::parse(filters, &["name", "id", "label", "driver", "scope", "type"])?;
    Ok(st
        .networks
        .values()
        .filter(|n| f.any("name", |x| n.spec.name.contains(x)) && f.any("id", |x| n.id.starts_with(x)))
        .filter(|n| f.labels("label", &n.spec.labels) && f.any("driver", |x| n.spec.driver == x))
        .filter(|n| f.any("scope", |x| x == if n.spec.node_local { "local" } else { "swarm" }))
        .filter(|_| f.any("type", |x| x == "custom"))
        .map(convert::network)
        .collect())
}

pub fn secrets(st: &ClusterState, filters: Option<&str>) -> Result<Vec<d::Secret>, EngineError> {
    let f = Filters::parse(filters, &["name", "names", "id", "label"])?;
    Ok(st
        .secrets
        .values()
        .filter(|s| f.any("name", |x| s.spec.name.starts_with(x)) && f.any("names", |x| s.spec.name == x))
        .filter(|s| f.any("id", |x| s.id.starts_with(x)) && f.labels("label", &s.spec.labels))
        .map(convert::secret)
        .collect())
}

/// The task name the docker CLI shows (`vote.1.<id>`; global: `<service>.<node>.<id>`).
pub fn task_name(s: &Service, t: &Task) -> String {
    match s.spec.mode {
        ServiceMode::Global => format!("{}.{}.{}", s.spec.name, t.node_id.clone().unwrap_or_default(), t.id),
        ServiceMode::Replicated { .. } => format!("{}.{}.{}", s.spec.name, t.slot, t.id),
    }
}

/// The `_up-to-date` filter (what `docker service create|update|scale|rollback` watches
/// converge): swarmkit's "the task is not dirty", i.e. it runs the service's current spec. Tasks
/// carry the spec version they run (the updater's), which a scale or a change of update settings
/// leaves as it is.
pub fn is_up_to_date(s: &Service, t: &Task) -> bool {
    t.service_version == s.spec_version
}

/// `?version=` of an update against the object's current version (optimistic concurrency).
pub fn check_version(version: Option<&str>, current: u64, kind: &str, name: &str) -> Result<(), EngineError> {
    match version {
        None => Ok(()),
        Some(v) if v.parse::<u64>().ok() == Some(current) => Ok(()),
        Some(v) => Err(EngineError::bad(format!(
            "update out of sequence: version {v} of {kind} {name} is not its current version {current}; inspect it again"
        ))),
    }
}

/// `POST /nodes/{id}/update`: Docker sends the whole spec; shoal's command carries what
/// changed (None: nothing did).
pub fn node_update(node: &Node, spec: &d::NodeSpec) -> Option<Command> {
    let role = match spec.role {
        Some(d::NodeSpecRoleEnum::MANAGER) => Some(Role::Manager),
        Some(d::NodeSpecRoleEnum::WORKER) => Some(Role::Worker),
        _ => None,
    }
    .filter(|r| *r != node.role);
    let availability = match spec.availability {
        Some(d::NodeSpecAvailabilityEnum::ACTIVE) => Some(Availability::Active),
        Some(d::NodeSpecAvailabilityEnum::PAUSE) => Some(Availability::Pause),
        Some(d::NodeSpecAvailabilityEnum::DRAIN) => Some(Availability::Drain),
        _ => None,
    }
    .filter(|a| *a != node.availability);
    let want: BTreeMap<String, String> = spec.labels.clone().unwrap_or_default().into_iter().collect();
    let label_add: BTreeMap<String, String> =
        want.iter().filter(|(k, v)| node.labels.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let label_rm: Vec<String> = node.labels.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    if role.is_none() && availability.is_none() && label_add.is_empty() && label_rm.is_empty() {
        return None;
    }
    Some(Command::UpdateNode { node: node.id.to_string(), availability, role, label_add, label_rm })
}

/// `list` in `old`'s order when it holds the same entries.
fn same_entries_in_old_order<T: PartialEq + Clone>(old: &[T], list: &mut [T]) {
    let mut rest: Vec<&T> = old.iter().collect();
    let same = old.len() == list.len()
        && list.iter().all(|x| match rest.iter().position(|o| *o == x) {
            Some(i) => {
                rest.swap_remove(i);
                true
            }
            None => false,
        });
    if same {
        list.clone_from_slice(old);
    }
}

/// The docker CLI's `service update` re-sorts lists whose order means nothing (mounts by
/// source, ulimits by name, capabilities) whatever flags were given. Where such a list holds
/// the same entries as the current spec, it keeps the current order, so `update --label-add`
/// or `--replicas` replaces no task.
pub fn keep_order(current: &ServiceSpec, mut new: ServiceSpec) -> ServiceSpec {
    same_entries_in_old_order(&current.mounts, &mut new.mounts);
    same_entries_in_old_order(&current.secrets, &mut new.secrets);
    same_entries_in_old_order(&current.configs, &mut new.configs);
    let (c, n) = (&current.container, &mut new.container);
    same_entries_in_old_order(&c.ulimits, &mut n.ulimits);
    same_entries_in_old_order(&c.cap_add, &mut n.cap_add);
    same_entries_in_old_order(&c.cap_drop, &mut n.cap_drop);
    same_entries_in_old_order(&c.groups, &mut n.groups);
    new
}

/// `POST /services/{id}/update`: the spec to apply (the body's, or the previous one with
/// `rollback=previous`), checked against `?version=`, as a command. A change of replicas alone
/// is a scale, which needs no rolling update.
pub fn service_update(
    svc: &Service,
    version: Option<&str>,
    rollback: Option<&str>,
    body: impl FnOnce() -> Result<ServiceSpec, EngineError>,
) -> Result<Command, EngineError> {
    let want = version.ok_or_else(|| EngineError::bad("version is missing: give ?version= from service inspect"))?;
    check_version(Some(want), svc.version, "service", &svc.spec.name)?;
    // The version goes into the command too: the state machine refuses it if another update
    // committed since this view was read.
    let at = svc.version;
    let spec = match rollback {
        Some("previous") => {
            if svc.previous_spec.is_none() {
                return Err(EngineError::bad(format!("service {} does not have a previous spec to roll back to", svc.spec.name)));
            }
            // The updater's rollback: tasks replaced by the restored spec's rollback settings.
            return Ok(Command::RollbackService { service: svc.id.to_string(), version: Some(at) });
        }
        None | Some("") => keep_order(&svc.spec, body()?),
        Some(o) => return Err(EngineError::bad(format!("rollback={o}: the only value is \"previous\""))),
    };
    let mut same_but_mode = svc.spec.clone();
    same_but_mode.mode = spec.mode.clone();
    match (&svc.spec.mode, &spec.mode) {
        (ServiceMode::Replicated { replicas: old }, ServiceMode::Replicated { replicas }) if same_but_mode == spec && old != replicas => {
            Ok(Command::ScaleService { service: svc.id.to_string(), replicas: *replicas })
        }
        _ => Ok(Command::UpdateServiceAt { service: svc.id.to_string(), version: at, spec }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NetworkSpec, SecretSpec};
    use crate::testkit::World;

    fn world() -> (World, crate::model::ServiceId) {
        let mut w = World::new(2);
        w.ok(Command::CreateNetwork {
            spec: NetworkSpec {
                name: "front".into(),
                driver: "overlay".into(),
                subnet: None,
                gateway: None,
                attachable: false,
                ingress: false,
                internal: false,
                node_local: false,
                options: Default::default(),
                labels: [("com.docker.stack.namespace".to_string(), "app".to_string())].into(),
            },
        });
        let mut spec = ServiceSpec::new("vote", "vote:latest");
        spec.mode = ServiceMode::Replicated { replicas: 3 };
        spec.labels.insert("com.docker.stack.namespace".into(), "app".into());
        let sid = w.create(spec);
        w.create(ServiceSpec::new("redis", "redis:7"));
        w.report_all(TaskState::Running);
        w.ok(Command::CreateSecret { spec: SecretSpec { name: "db_pw".into(), labels: Default::default(), data: b"x".to_vec() } });
        (w, sid)
    }

    #[test]
    fn service_list_filters_and_status() {
        let (w, _) = world();
        let all = services(&w.state, None, true).unwrap();
        assert_eq!(all.len(), 2);
        let vote = services(&w.state, Some(r#"{"name":{"vo":true}}"#), true).unwrap();
        assert_eq!(vote.len(), 1, "name filters are prefixes");
        let st = vote[0].service_status.as_ref().unwrap();
        assert_eq!((st.running_tasks, st.desired_tasks), (Some(3), Some(3)));
        let stack = services(&w.state, Some(r#"{"label":["com.docker.stack.namespace=app"]}"#), false).unwrap();
        assert_eq!(stack.len(), 1);
        assert!(stack[0].service_status.is_none());
        assert_eq!(services(&w.state, Some(r#"{"mode":["global"]}"#), false).unwrap().len(), 0);
        assert_eq!(services(&w.state, Some(r#"{"replicas":["3"]}"#), false).unwrap_err().status(), 400);
    }

    #[test]
    fn task_list_resolves_services_and_nodes_by_name() {
        let (w, sid) = world();
        let by_name = tasks(&w.state, Some(r#"{"service":{"vote":true},"desired-state":{"running":true}}"#)).unwrap();
        assert_eq!(by_name.len(), 3);
        assert!(by_name.iter().all(|t| t.service_id.as_deref() == Some(sid.as_str())));
        let prefix = &sid[..6];
        assert_eq!(tasks(&w.state, Some(&format!(r#"{{"service":["{prefix}"]}}"#))).unwrap().len(), 3);
        let e = tasks(&w.state, Some(r#"{"service":["nosuch"]}"#)).unwrap_err();
        assert_eq!((e.status(), e.to_string()), (404, "service nosuch not found".to_string()));
        let node = by_name[0].node_id.clone().unwrap();
        let on_node = tasks(&w.state, Some(&format!(r#"{{"node":["{node}"]}}"#))).unwrap();
        assert!(!on_node.is_empty() && on_node.iter().all(|t| t.node_id.as_deref() == Some(node.as_str())));
        assert_eq!(tasks(&w.state, Some(r#"{"desired-state":["sleeping"]}"#)).unwrap_err().status(), 400);
        assert_eq!(tasks(&w.state, Some(r#"{"_up-to-date":["true"],"service":["vote"]}"#)).unwrap().len(), 3);
        let stack = tasks(&w.state, Some(r#"{"label":["com.docker.stack.namespace=app"]}"#)).unwrap();
        assert_eq!(stack.len(), 3, "a task's labels filter is its service's, as swarmkit's");
    }

    #[test]
    fn node_network_and_secret_lists() {
        let (w, _) = world();
        assert_eq!(nodes(&w.state, None, None).unwrap().len(), 3);
        let managers = nodes(&w.state, None, Some(r#"{"role":["manager"]}"#)).unwrap();
        assert_eq!(managers.len(), 1);
        assert!(managers[0].manager_status.is_some());
        assert_eq!(networks(&w.state, Some(r#"{"name":["ron"]}"#)).unwrap().len(), 1, "network names match as substrings");
        assert_eq!(networks(&w.state, Some(r#"{"label":["com.docker.stack.namespace=app"]}"#)).unwrap().len(), 1);
        assert_eq!(secrets(&w.state, Some(r#"{"names":["db_pw"]}"#)).unwrap().len(), 1);
        assert_eq!(secrets(&w.state, Some(r#"{"names":["db"]}"#)).unwrap().len(), 0, "names is exact");
    }

    #[test]
    fn node_update_sends_only_the_difference() {
        let (w, _) = world();
        let n = w.state.nodes.values().find(|n| n.role == Role::Worker).unwrap();
        let spec = convert::node(n, false).spec.unwrap();
        assert!(node_update(n, &spec).is_none(), "the spec as inspected changes nothing");
        let mut promote = spec.clone();
        promote.role = Some(d::NodeSpecRoleEnum::MANAGER);
        promote.labels = Some([("zone".to_string(), "east".to_string())].into());
        match node_update(n, &promote) {
            Some(Command::UpdateNode { role, availability, label_add, label_rm, .. }) => {
                assert_eq!((role, availability), (Some(Role::Manager), None));
                assert_eq!(label_add.get("zone").map(String::as_str), Some("east"));
                assert!(label_rm.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn service_update_checks_the_version_and_scales_when_only_replicas_change() {
        let (w, sid) = world();
        let svc = &w.state.services[&sid];
        let v = svc.version.to_string();
        let mut scaled = svc.spec.clone();
        scaled.mode = ServiceMode::Replicated { replicas: 5 };
        let cmd = service_update(svc, Some(&v), None, || Ok(scaled.clone())).unwrap();
        assert_eq!(cmd, Command::ScaleService { service: sid.to_string(), replicas: 5 });
        let mut changed = svc.spec.clone();
        changed.env.push("A=1".into());
        assert!(matches!(
            service_update(svc, Some(&v), None, || Ok(changed.clone())).unwrap(),
            Command::UpdateServiceAt { version, .. } if version.to_string() == v
        ));
        let e = service_update(svc, Some("1000"), None, || Ok(changed.clone())).unwrap_err();
        assert!(e.to_string().contains("out of sequence"), "{e}");
        assert!(service_update(svc, None, None, || Ok(changed.clone())).unwrap_err().to_string().contains("version is missing"));
        let e = service_update(svc, Some(&v), Some("previous"), || unreachable!()).unwrap_err();
        assert!(e.to_string().contains("does not have a previous spec"), "{e}");
    }

    #[test]
    fn a_scale_leaves_tasks_up_to_date_and_a_spec_change_does_not() {
        let mut w = World::new(1);
        let sid = w.create(ServiceSpec::new("web", "nginx:1"));
        w.ok(Command::ScaleService { service: sid.to_string(), replicas: 2 });
        w.ok(Command::ScaleService { service: sid.to_string(), replicas: 1 });
        let before = w.live(&sid)[0].clone();
        assert!(is_up_to_date(&w.state.services[&sid], &before), "scales replace nothing: the task is up to date");
        let mut spec = w.state.services[&sid].spec.clone();
        spec.image = "nginx:2".into();
        w.ok(Command::UpdateService { service: sid.to_string(), spec });
        let s = w.state.services[&sid].clone();
        assert!(!is_up_to_date(&s, &before), "made from the old image");
        let mut fresh = before.clone();
        fresh.service_version = s.spec_version;
        assert!(is_up_to_date(&s, &fresh));
    }
}
