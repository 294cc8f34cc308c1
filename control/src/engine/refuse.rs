//! The fields of Docker's ServiceSpec that shoal has no counterpart for: refused by their JSON
//! path when they carry anything but the default the docker CLI always sends, never dropped.
//! (Fields no model knows at all are refused in `strict`.)

use super::error::EngineError;
use bollard_stubs::models as d;

fn unsupported(path: &str, fix: &str) -> EngineError {
    EngineError::bad(format!("{path} is not supported by shoal: {fix}"))
}

fn set<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

fn text(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// Signals a task is stopped with by default (shoal sends SIGTERM, then SIGKILL after the grace period).
const SIGTERM: [&str; 3] = ["SIGTERM", "TERM", "15"];

/// `TaskTemplate.ContainerSpec` fields beyond shoal's model.
pub fn container(c: &d::TaskSpecContainerSpec) -> Result<(), EngineError> {
    let p = "TaskTemplate.ContainerSpec";
    if let Some(pr) = &c.privileges {
        let cred = pr.credential_spec.as_ref().is_some_and(|c| text(&c.config) || text(&c.file) || text(&c.registry));
        if cred {
            return Err(unsupported(
                &format!("{p}.Privileges.CredentialSpec"),
                "credential specs are for Windows: leave --credential-spec out",
            ));
        }
        let selinux = pr
            .se_linux_context
            .as_ref()
            .is_some_and(|s| s.disable == Some(true) || text(&s.user) || text(&s.role) || text(&s.typ) || text(&s.level));
        if selinux {
            return Err(unsupported(&format!("{p}.Privileges.SELinuxContext"), "tasks run with the node's default SELinux labels"));
        }
        use d::TaskSpecContainerSpecPrivilegesSeccompModeEnum as Seccomp;
        if pr.seccomp.as_ref().is_some_and(|s| !matches!(s.mode, None | Some(Seccomp::EMPTY) | Some(Seccomp::DEFAULT)) || text(&s.profile))
        {
            return Err(unsupported(&format!("{p}.Privileges.Seccomp"), "tasks run with Docker's default seccomp profile"));
        }
        use d::TaskSpecContainerSpecPrivilegesAppArmorModeEnum as AppArmor;
        if pr.app_armor.as_ref().is_some_and(|a| !matches!(a.mode, None | Some(AppArmor::EMPTY) | Some(AppArmor::DEFAULT))) {
            return Err(unsupported(&format!("{p}.Privileges.AppArmor"), "tasks run with the node's default AppArmor profile"));
        }
        if pr.no_new_privileges == Some(true) {
            return Err(unsupported(&format!("{p}.Privileges.NoNewPrivileges"), "leave no-new-privileges out"));
        }
    }
    if c.tty == Some(true) {
        return Err(unsupported(&format!("{p}.TTY"), "tasks have no terminal; their output goes to service logs: leave --tty out"));
    }
    if c.open_stdin == Some(true) {
        return Err(unsupported(&format!("{p}.OpenStdin"), "tasks read no input: leave it out"));
    }
    if let Some(s) = c.stop_signal.as_deref().filter(|s| !s.is_empty() && !SIGTERM.contains(&s.to_ascii_uppercase().as_str())) {
        return Err(unsupported(&format!("{p}.StopSignal"), &format!("tasks are stopped with SIGTERM, not {s}: leave --stop-signal out")));
    }
    if set(&c.hosts) {
        return Err(unsupported(&format!("{p}.Hosts"), "tasks find services through shoal's DNS: leave --host out"));
    }
    if c.oom_score_adj.is_some_and(|n| n != 0) {
        return Err(unsupported(&format!("{p}.OomScoreAdj"), "leave --oom-score-adj out"));
    }
    use d::TaskSpecContainerSpecIsolationEnum as Isolation;
    if let Some(i @ (Isolation::PROCESS | Isolation::HYPERV)) = c.isolation {
        return Err(unsupported(&format!("{p}.Isolation"), &format!("{i} is Windows isolation: leave --isolation out")));
    }
    Ok(())
}

/// `TaskTemplate` fields beyond shoal's model (the container spec aside).
pub fn task_template(tt: &d::TaskSpec) -> Result<(), EngineError> {
    if tt.plugin_spec.is_some() {
        return Err(unsupported("TaskTemplate.PluginSpec", "shoal runs containers only"));
    }
    if tt.network_attachment_spec.is_some() {
        return Err(unsupported("TaskTemplate.NetworkAttachmentSpec", "shoal runs containers only"));
    }
    if let Some(r) = tt.runtime.as_deref().filter(|r| !r.is_empty() && *r != "container") {
        return Err(unsupported("TaskTemplate.Runtime", &format!("{r:?}: shoal runs containers only")));
    }
    if let Some(l) = &tt.log_driver {
        if text(&l.name) || l.options.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(unsupported(
                "TaskTemplate.LogDriver",
                "task output is kept by each node and read with service logs: leave --log-driver and --log-opt out",
            ));
        }
    }
    if let Some(r) = &tt.resources {
        if r.swap_bytes.is_some() {
            return Err(unsupported("TaskTemplate.Resources.SwapBytes", "leave the swap limit out"));
        }
        if r.memory_swappiness.is_some_and(|s| s != -1) {
            return Err(unsupported("TaskTemplate.Resources.MemorySwappiness", "leave swappiness out"));
        }
        if r.reservations.as_ref().is_some_and(|r| set(&r.generic_resources)) {
            return Err(unsupported("TaskTemplate.Resources.Reservations.GenericResources", "leave --generic-resource out"));
        }
    }
    if let Some(p) = &tt.placement {
        if set(&p.platforms) {
            return Err(unsupported(
                "TaskTemplate.Placement.Platforms",
                "every node runs the image it has: leave them out (--no-resolve-image)",
            ));
        }
    }
    for (i, n) in tt.networks.iter().flatten().enumerate() {
        if n.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(unsupported(&format!("TaskTemplate.Networks[{i}].DriverOpts"), "leave the network's driver-opt out"));
        }
    }
    Ok(())
}

/// ServiceSpec fields beyond shoal's model, outside the task template.
pub fn service(s: &d::ServiceSpec) -> Result<(), EngineError> {
    if let Some(m) = &s.mode {
        if m.replicated_job.is_some() || m.global_job.is_some() {
            return Err(unsupported("Mode.ReplicatedJob / Mode.GlobalJob (jobs)", "run a replicated or global service"));
        }
    }
    for (i, n) in s.networks.iter().flatten().enumerate() {
        if n.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(unsupported(&format!("Networks[{i}].DriverOpts"), "leave the network's driver-opt out"));
        }
    }
    for (i, p) in s.endpoint_spec.iter().flat_map(|e| e.ports.iter().flatten()).enumerate() {
        if text(&p.name) {
            return Err(unsupported(&format!("EndpointSpec.Ports[{i}].Name"), "ports have no names: leave it out"));
        }
    }
    Ok(())
}
