//! Where in the file a spec the cluster refused came from: the state names the field as the
//! CLI flags do (`limit-memory`); a stack user reads the key's path in the file
//! (`services.web.deploy.resources.limits.memory`).

use super::convert::StackSpec;
use super::diff::Step;
use crate::state::StateError;

/// The file path of the key behind a refused step, or the object's own path when the field
/// has no key of its own.
pub fn refused_at(spec: &StackSpec, step: &Step, err: &StateError) -> String {
    let field = match err {
        StateError::InvalidSpec { field, .. } => field.as_str(),
        _ => "",
    };
    match step {
        Step::CreateService(s) | Step::UpdateService(s) => {
            let key = s.name.strip_prefix(&format!("{}_", spec.name)).unwrap_or(&s.name);
            format!("services.{key}{}", service_key(field))
        }
        Step::CreateNetwork(n) => {
            let key = spec.networks.iter().find(|x| x.spec.name == n.name).map_or(n.name.as_str(), |x| x.key.as_str());
            let sub = match field {
                "subnet" => ".ipam.config[0].subnet",
                "gateway" => ".ipam.config[0].gateway",
                "driver" => ".driver",
                f if f.starts_with("opt") => ".driver_opts",
                "labels" => ".labels",
                _ => "",
            };
            format!("networks.{key}{sub}")
        }
        Step::CreateSecret(s) => {
            let key = spec.secrets.iter().find(|x| x.spec.name == s.name).map_or(s.name.as_str(), |x| x.key.as_str());
            format!("secrets.{key}")
        }
        Step::CreateConfig(c) => {
            let key = spec.configs.iter().find(|x| x.spec.name == c.name).map_or(c.name.as_str(), |x| x.key.as_str());
            format!("configs.{key}")
        }
        Step::RemoveService(_) | Step::RemoveNetwork(_) | Step::RemoveSecret(_) | Step::RemoveConfig(_) => String::new(),
    }
}

fn service_key(field: &str) -> String {
    // `name[3]` keeps its index where the file's list has the same order.
    let (base, index) = match field.split_once('[') {
        Some((b, rest)) => (b, rest.split(']').next().unwrap_or("")),
        None => (field, ""),
    };
    let indexed = |path: &str| if index.is_empty() { path.to_string() } else { format!("{path}[{index}]") };
    match base {
        "image" => ".image".into(),
        "args" => ".command".into(),
        "env" => ".environment".into(),
        "labels" => ".deploy.labels".into(),
        "networks" | "network-aliases" => ".networks".into(),
        "secrets" => indexed(".secrets"),
        "configs" => indexed(".configs"),
        "mounts" => indexed(".volumes"),
        "hostname" => ".hostname".into(),
        "user" => ".user".into(),
        "workdir" => ".working_dir".into(),
        "entrypoint" => ".entrypoint".into(),
        "stop-grace-period" => ".stop_grace_period".into(),
        "cap-add" => ".cap_add".into(),
        "cap-drop" => ".cap_drop".into(),
        "dns" => ".dns".into(),
        "dns-search" => ".dns_search".into(),
        "dns-option" => ".dns_opt".into(),
        "sysctl" => ".sysctls".into(),
        "ulimit" => ".ulimits".into(),
        "group" => ".group_add".into(),
        "container-label" => ".labels".into(),
        "constraints" => indexed(".deploy.placement.constraints"),
        "max-replicas" => ".deploy.placement.max_replicas_per_node".into(),
        "placement-pref" => indexed(".deploy.placement.preferences"),
        "replicas" => ".deploy.replicas".into(),
        "ports" => ".ports".into(),
        "endpoint-mode" => ".deploy.endpoint_mode".into(),
        "limit-cpu" => ".deploy.resources.limits.cpus".into(),
        "limit-memory" => ".deploy.resources.limits.memory".into(),
        "limit-pids" => ".deploy.resources.limits.pids".into(),
        "reserve-cpu" => ".deploy.resources.reservations.cpus".into(),
        "reserve-memory" => ".deploy.resources.reservations.memory".into(),
        "restart-delay" => ".deploy.restart_policy.delay".into(),
        "restart-window" => ".deploy.restart_policy.window".into(),
        "restart-max-attempts" => ".deploy.restart_policy.max_attempts".into(),
        "health-cmd" => ".healthcheck.test".into(),
        "health-interval" => ".healthcheck.interval".into(),
        "health-timeout" => ".healthcheck.timeout".into(),
        "health-retries" => ".healthcheck.retries".into(),
        "health-start-period" => ".healthcheck.start_period".into(),
        f if f.starts_with("update-") || f == "update" => ".deploy.update_config".into(),
        f if f.starts_with("rollback-") || f == "rollback" => ".deploy.rollback_config".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceSpec;

    #[test]
    fn state_fields_map_to_file_paths() {
        let spec = StackSpec { name: "app".into(), networks: vec![], secrets: vec![], configs: vec![], services: vec![] };
        let step = Step::CreateService(ServiceSpec::new("app_web", "x"));
        let at = |field: &str| refused_at(&spec, &step, &StateError::invalid(field, "m"));
        assert_eq!(at("limit-memory"), "services.web.deploy.resources.limits.memory");
        assert_eq!(at("constraints[1]"), "services.web.deploy.placement.constraints[1]");
        assert_eq!(at("health-retries"), "services.web.healthcheck.retries");
        assert_eq!(at("update-parallelism"), "services.web.deploy.update_config");
        assert_eq!(at("something-new"), "services.web");
        assert_eq!(at("mounts[2].source"), "services.web.volumes[2]");
        assert_eq!(at("sysctl"), "services.web.sysctls");
        let not_found = StateError::not_found("network", "x");
        assert_eq!(refused_at(&spec, &step, &not_found), "services.web");
    }
}
