//! The model's validation names fields as the shoal CLI spells them (`mounts[0].target`,
//! `stop-grace-period`); a Docker client sent JSON, so its errors name Docker's path
//! (`TaskTemplate.ContainerSpec.Mounts[0].Target`) and the docker flag that sets it. The
//! checks themselves are the model's, run by the state machine for both faces alike.

use super::error::EngineError;
use crate::model::ServiceSpec;
use crate::state::StateError;

const CS: &str = "TaskTemplate.ContainerSpec";

/// shoal's field name -> (Docker's JSON path, the docker flag that sets it).
fn base(head: &str) -> Option<(String, Option<&'static str>)> {
    let cs = |f: &str| format!("{CS}.{f}");
    let (path, flag) = match head {
        "name" => ("Name".to_string(), Some("--name")),
        "image" => (cs("Image"), None),
        "replicas" => ("Mode.Replicated.Replicas".into(), Some("--replicas")),
        "args" => (cs("Args"), None),
        "env" => (cs("Env"), Some("--env")),
        "labels" => ("Labels".into(), Some("--label")),
        "networks" => ("TaskTemplate.Networks".into(), Some("--network")),
        "secrets" => (cs("Secrets"), Some("--secret")),
        "configs" => (cs("Configs"), Some("--config")),
        "mounts" => (cs("Mounts"), Some("--mount")),
        "hostname" => (cs("Hostname"), Some("--hostname")),
        "user" => (cs("User"), Some("--user")),
        "workdir" => (cs("Dir"), Some("--workdir")),
        "entrypoint" => (cs("Command"), Some("--entrypoint")),
        "stop-grace-period" => (cs("StopGracePeriod"), Some("--stop-grace-period")),
        "cap-add" => (cs("CapabilityAdd"), Some("--cap-add")),
        "cap-drop" => (cs("CapabilityDrop"), Some("--cap-drop")),
        "ulimit" => (cs("Ulimits"), Some("--ulimit")),
        "sysctl" => (cs("Sysctls"), Some("--sysctl")),
        "group" => (cs("Groups"), Some("--group")),
        "container-label" => (cs("Labels"), Some("--container-label")),
        "dns" => (cs("DNSConfig.Nameservers"), Some("--dns")),
        "dns-search" => (cs("DNSConfig.Search"), Some("--dns-search")),
        "dns-option" => (cs("DNSConfig.Options"), Some("--dns-option")),
        "health-cmd" => (cs("HealthCheck.Test"), Some("--health-cmd")),
        "health-interval" => (cs("HealthCheck.Interval"), Some("--health-interval")),
        "health-timeout" => (cs("HealthCheck.Timeout"), Some("--health-timeout")),
        "health-retries" => (cs("HealthCheck.Retries"), Some("--health-retries")),
        "health-start-period" => (cs("HealthCheck.StartPeriod"), Some("--health-start-period")),
        "constraints" => ("TaskTemplate.Placement.Constraints".into(), Some("--constraint")),
        "max-replicas" => ("TaskTemplate.Placement.MaxReplicas".into(), Some("--replicas-max-per-node")),
        "limit-cpu" => ("TaskTemplate.Resources.Limits.NanoCPUs".into(), Some("--limit-cpu")),
        "limit-memory" => ("TaskTemplate.Resources.Limits.MemoryBytes".into(), Some("--limit-memory")),
        "limit-pids" => ("TaskTemplate.Resources.Limits.Pids".into(), Some("--limit-pids")),
        "reserve-cpu" => ("TaskTemplate.Resources.Reservations.NanoCPUs".into(), Some("--reserve-cpu")),
        "reserve-memory" => ("TaskTemplate.Resources.Reservations.MemoryBytes".into(), Some("--reserve-memory")),
        "restart-delay" => ("TaskTemplate.RestartPolicy.Delay".into(), Some("--restart-delay")),
        "restart-window" => ("TaskTemplate.RestartPolicy.Window".into(), Some("--restart-window")),
        "restart-max-attempts" => ("TaskTemplate.RestartPolicy.MaxAttempts".into(), Some("--restart-max-attempts")),
        "ports" => ("EndpointSpec.Ports".into(), Some("--publish")),
        "endpoint-mode" => ("EndpointSpec.Mode".into(), Some("--endpoint-mode")),
        "update-parallelism" => ("UpdateConfig.Parallelism".into(), Some("--update-parallelism")),
        "update-delay" => ("UpdateConfig.Delay".into(), Some("--update-delay")),
        "update-monitor" => ("UpdateConfig.Monitor".into(), Some("--update-monitor")),
        "update-max-failure-ratio" => ("UpdateConfig.MaxFailureRatio".into(), Some("--update-max-failure-ratio")),
        "rollback-parallelism" => ("RollbackConfig.Parallelism".into(), Some("--rollback-parallelism")),
        "rollback-delay" => ("RollbackConfig.Delay".into(), Some("--rollback-delay")),
        "rollback-monitor" => ("RollbackConfig.Monitor".into(), Some("--rollback-monitor")),
        "rollback-max-failure-ratio" => ("RollbackConfig.MaxFailureRatio".into(), Some("--rollback-max-failure-ratio")),
        _ => return None,
    };
    Some((path, flag))
}

/// The Docker name of a sub-field of one entry of a list (`mounts[0].tmpfs-size`).
fn sub(head: &str, field: &str) -> String {
    let s = match (head, field) {
        ("mounts", "target") => "Target",
        ("mounts", "source") => "Source",
        ("mounts", "bind-propagation") => "BindOptions.Propagation",
        ("mounts", "volume-nocopy") => "VolumeOptions.NoCopy",
        ("mounts", "volume-driver") => "VolumeOptions.DriverConfig.Name",
        ("mounts", "tmpfs-size") => "TmpfsOptions.SizeBytes",
        ("mounts", "tmpfs-mode") => "TmpfsOptions.Mode",
        ("secrets" | "configs", "target") => "File.Name",
        ("secrets" | "configs", "mode") => "File.Mode",
        ("secrets" | "configs", "uid") => "File.UID",
        ("secrets" | "configs", "gid") => "File.GID",
        ("ports", "target") => "TargetPort",
        ("ports", "published") => "PublishedPort",
        ("ports", "protocol") => "Protocol",
        ("ports", "mode") => "PublishMode",
        (_, other) => other,
    };
    s.to_string()
}

/// `mounts[0].target` -> ("mounts", Some("0"), ".target"); `labels[k]` -> ("labels", Some("k"), "").
fn split(field: &str) -> (&str, Option<&str>, &str) {
    let Some(open) = field.find('[') else {
        return (field, None, "");
    };
    let head = &field[..open];
    match field[open..].find(']') {
        Some(close) => (head, Some(&field[open + 1..open + close]), &field[open + close + 1..]),
        None => (field, None, ""),
    }
}

/// Docker's path of shoal's `field` of `spec`, with the docker flag that sets it; `None` for
/// a field with no Docker counterpart (the whole spec's size).
pub fn docker_field(field: &str, spec: &ServiceSpec) -> Option<(String, Option<&'static str>)> {
    let (head, key, tail) = split(field);
    if head == "network-aliases" {
        // Keyed by network; Docker's aliases are per entry of TaskTemplate.Networks.
        let net = key?;
        let i = spec.networks.iter().position(|n| n == net)?;
        return Some((format!("TaskTemplate.Networks[{i}].Aliases{tail}"), None));
    }
    let (path, flag) = base(head)?;
    let path = match (key, tail.strip_prefix('.')) {
        (None, _) => path,
        (Some(k), Some(s)) => format!("{path}[{k}].{}", sub(head, s)),
        (Some(k), None) if head == "secrets" => format!("{path}[{k}].SecretName{tail}"),
        (Some(k), None) if head == "configs" => format!("{path}[{k}].ConfigName{tail}"),
        (Some(k), None) => format!("{path}[{k}]{tail}"),
    };
    Some((path, flag))
}

/// A state-machine error about `spec` in Docker's terms: an invalid field names its path.
pub fn in_docker_terms(e: StateError, spec: &ServiceSpec) -> EngineError {
    if let StateError::InvalidSpec { field, message } = &e {
        if let Some((path, flag)) = docker_field(field, spec) {
            let flag = flag.map(|f| format!(" ({f})")).unwrap_or_default();
            return EngineError::bad(format!("invalid {path}{flag}: {message}"));
        }
    }
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoal_fields_become_docker_paths() {
        let mut s = ServiceSpec::new("web", "nginx");
        s.networks = vec!["back".into(), "front".into()];
        for (field, path) in [
            ("mounts[0].target", "TaskTemplate.ContainerSpec.Mounts[0].Target"),
            ("mounts[2].volume-driver", "TaskTemplate.ContainerSpec.Mounts[2].VolumeOptions.DriverConfig.Name"),
            ("mounts[1].tmpfs-mode", "TaskTemplate.ContainerSpec.Mounts[1].TmpfsOptions.Mode"),
            ("configs[0]", "TaskTemplate.ContainerSpec.Configs[0].ConfigName"),
            ("configs[1].target", "TaskTemplate.ContainerSpec.Configs[1].File.Name"),
            ("secrets[0].mode", "TaskTemplate.ContainerSpec.Secrets[0].File.Mode"),
            ("workdir", "TaskTemplate.ContainerSpec.Dir"),
            ("entrypoint[3]", "TaskTemplate.ContainerSpec.Command[3]"),
            ("dns-option", "TaskTemplate.ContainerSpec.DNSConfig.Options"),
            ("sysctl", "TaskTemplate.ContainerSpec.Sysctls"),
            ("container-label[tier]", "TaskTemplate.ContainerSpec.Labels[tier]"),
            ("ports[0].published", "EndpointSpec.Ports[0].PublishedPort"),
            ("network-aliases[front]", "TaskTemplate.Networks[1].Aliases"),
            ("update-max-failure-ratio", "UpdateConfig.MaxFailureRatio"),
            ("name", "Name"),
        ] {
            assert_eq!(docker_field(field, &s).map(|(p, _)| p).as_deref(), Some(path), "{field}");
        }
        assert_eq!(docker_field("spec", &s), None);
        let e = in_docker_terms(StateError::invalid("mounts[0].target", "\"data\" is not an absolute path"), &s);
        assert_eq!(e.to_string(), "invalid TaskTemplate.ContainerSpec.Mounts[0].Target (--mount): \"data\" is not an absolute path");
        assert_eq!(e.status(), 400);
        let e = in_docker_terms(StateError::not_found("service", "x"), &s);
        assert_eq!(e.status(), 404);
    }
}
