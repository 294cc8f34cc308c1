//! The task as the executor runs it, from its assignment: image, hostname, environment,
//! cgroups, resolv.conf and hosts, carried secrets and configs, mounts.

use std::path::PathBuf;

use shoal_control::rpc::session::Assignment;

use super::executor::{self, TaskRun};
use super::{desired, images, AgentConfig};

/// Why a task cannot run on this node (the agent rejects it with this text).
#[derive(Debug, thiserror::Error)]
pub enum TaskRunError {
    #[error(transparent)]
    Image(#[from] images::ResolveError),
    #[error(transparent)]
    Cgroups(#[from] executor::cgroups::CgroupError),
    /// A secret or config the task names was not sent with it: it was removed.
    #[error("{kind} {name:?} was not sent with the task: it was removed")]
    FileMissing { kind: &'static str, name: String },
}

/// The task as the executor runs it, or None while its image is being pulled.
pub fn task_run(a: &Assignment, cfg: &AgentConfig) -> Result<Option<TaskRun>, TaskRunError> {
    // The hostname (<= 64 bytes: a long service name is cut short, never refused by the kernel).
    let k = &a.spec.container;
    let name = k.hostname.clone().unwrap_or_else(|| a.task.hostname(&a.service_name));
    let (layout, instance) = &cfg.cgroups;
    let env: Vec<(String, String)> = a
        .spec
        .env
        .iter()
        .map(|kv| kv.split_once('=').map_or((kv.clone(), String::new()), |(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let wanted = images::Wanted {
        image: &a.spec.image,
        args: &a.spec.args,
        env: &env,
        hostname: &name,
        cgroups_path: format!("/{}", instance.join(a.task.id.as_str()).display()),
        user: k.user.as_deref(),
        workdir: k.workdir.as_deref(),
        entrypoint: k.entrypoint.as_deref(),
        groups: &k.groups,
    };
    let image = match cfg.images.resolve(&wanted)? {
        images::Resolved::Ready(image) => image,
        images::Resolved::Pulling => return Ok(None),
    };
    let cgroups = executor::cgroups::plan(layout, instance, &a.task.id, &a.spec.limits)?;
    let files = carried_files(a)?;
    let ip = a.task.networks.first().map(|n| n.addr.to_string()).unwrap_or_default();
    Ok(Some(TaskRun {
        id: a.task.id.to_string(),
        netns: desired::task_netns(&a.task.id),
        image,
        env,
        resolv_conf: resolv_conf(k),
        hosts: format!("127.0.0.1\tlocalhost\n{ip}\t{name}\n"),
        seccomp: vec![],
        cgroups,
        name,
        hidden: Vec::new(),
        files,
        read_only: k.read_only,
        cap_add: k.cap_add.clone(),
        cap_drop: k.cap_drop.clone(),
        stop_grace_ms: k.stop_grace_ms,
        sysctls: k.sysctls.clone(),
        ulimits: k.ulimits.clone(),
        mounts: a
            .spec
            .mounts
            .iter()
            .map(|m| executor::spec::TaskMount { spec: m.clone(), host: PathBuf::new(), populate: false })
            .collect(),
        init: k.init.then(|| PathBuf::from(executor::spec::INIT_BINARY)),
    }))
}

/// The embedded DNS first (it answers service names and forwards the rest), then `--dns`
/// servers, `--dns-search` and `--dns-option`.
fn resolv_conf(k: &shoal_control::model::ContainerOpts) -> String {
    let mut s = shoal_dns::resolv_conf_for_task();
    if k.dns.is_empty() && k.dns_search.is_empty() && k.dns_options.is_empty() {
        return s;
    }
    let mut options = vec!["ndots:0".to_string()];
    for o in &k.dns_options {
        let key = o.split(':').next().unwrap_or("");
        options.retain(|x| x.split(':').next() != Some(key));
        options.push(o.clone());
    }
    s = s.lines().filter(|l| !l.starts_with("options")).map(|l| format!("{l}\n")).collect();
    for d in &k.dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    if !k.dns_search.is_empty() {
        s.push_str(&format!("search {}\n", k.dns_search.join(" ")));
    }
    s.push_str(&format!("options {}\n", options.join(" ")));
    s
}

/// The task's secrets and configs as files, with the data the dispatcher sent with the
/// assignment (it holds only those of this node's tasks, and only in memory).
fn carried_files(a: &Assignment) -> Result<Vec<executor::spec::CarriedFile>, TaskRunError> {
    let secrets = a.spec.secrets.iter().map(|r| ("secret", r, r.secret_path(), a.secrets.get(&r.source)));
    let configs = a.spec.configs.iter().map(|r| ("config", r, r.config_path(), a.configs.get(&r.source)));
    secrets
        .chain(configs)
        .map(|(what, r, target, data)| {
            let data = data.ok_or_else(|| TaskRunError::FileMissing { kind: what, name: r.source.clone() })?;
            Ok(executor::spec::CarriedFile { target, uid: r.uid, gid: r.gid, mode: r.mode, data: data.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_control::model::{ServiceSpec, Task, TaskState};
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_long_service_name_still_gives_a_valid_hostname() {
        // 63 bytes: the longest name `service create` takes; with `.<slot>.<task id>` it
        // was 91 bytes, sethostname(2) refused it and the task never started.
        let service = "s".repeat(63);
        let task = Task::in_slot("abcdefghijklmnopqrstuvwxy", "svc", 1, Some("n1"), TaskState::Running, TaskState::Assigned);
        let a = Assignment {
            task,
            service_name: service.clone(),
            spec: ServiceSpec::new(service, "shoal/whoami"),
            secrets: Default::default(),
            configs: Default::default(),
        };
        let cfg = AgentConfig {
            node_id: "n1".into(),
            self_addr: Ipv4Addr::LOCALHOST,
            drain: Duration::ZERO,
            stop_grace: Duration::ZERO,
            cgroups: (executor::cgroups::Layout::default(), PathBuf::from("shoal/test")),
            lb: Default::default(),
            control_ports: Default::default(),
            images: Arc::new(images::Images::new(Path::new("/nonexistent"), vec![])),
        };
        let run = task_run(&a, &cfg).expect("a task run").expect("no pull for a built-in image");
        assert!(run.name.len() <= shoal_control::model::HOST_NAME_MAX, "hostname {} is {} bytes", run.name, run.name.len());
        assert!(run.name.ends_with(".1.abcdefghijklmnopqrstuvwxy"), "{}", run.name);
        assert!(run.hosts.contains(&run.name), "/etc/hosts names the hostname");
    }
}
