//! `service update` and `service rollback`: Docker's flags turn the service's current spec into
//! the new one (pure, below), which is sent whole with the version it was read at, so an update
//! made from a stale read is refused instead of undoing what changed since.

use super::args::{parse_bytes, parse_duration_ms, parse_kv, parse_publish};
use super::update_flags::UpdatePolicyArgs;
use clap::Args;
use shoal_control::model::{EndpointMode, HealthCheck, PortConfig, RestartCondition, ServiceMode, ServiceSpec};

#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    /// The image to run.
    #[arg(long)]
    pub image: Option<String>,
    /// The command's arguments, as one shell-quoted string (`--args "serve --port 80"`).
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Add or replace an environment variable (KEY=VALUE).
    #[arg(long)]
    pub env_add: Vec<String>,
    /// Remove an environment variable (KEY).
    #[arg(long)]
    pub env_rm: Vec<String>,
    /// Add or replace a service label (key=value).
    #[arg(long)]
    pub label_add: Vec<String>,
    /// Remove a service label (key).
    #[arg(long)]
    pub label_rm: Vec<String>,
    /// Publish a port, as `service create -p`.
    #[arg(long)]
    pub publish_add: Vec<String>,
    /// Remove a published port by its target port (`80`, `80/udp`) or as published (`8080:80`).
    #[arg(long)]
    pub publish_rm: Vec<String>,
    /// Attach the service to a network.
    #[arg(long)]
    pub network_add: Vec<String>,
    /// Detach the service from a network.
    #[arg(long)]
    pub network_rm: Vec<String>,
    /// Give the tasks a secret.
    #[arg(long)]
    pub secret_add: Vec<String>,
    /// Take a secret from the tasks.
    #[arg(long)]
    pub secret_rm: Vec<String>,
    /// The tasks' hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// user[:group] the command runs as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory of the command.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// Replace the image's ENTRYPOINT (a shell-quoted string; "" restores the image's).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Time to wait after the stop signal before SIGKILL (ms|s|m|h).
    #[arg(long)]
    pub stop_grace_period: Option<String>,
    /// Mount the root filesystem read-only (true|false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub read_only: Option<bool>,
    /// Run an init (tini) as PID 1 of the tasks (true|false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub init: Option<bool>,
    /// Add Linux capabilities.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Add or remove DNS servers, search domains, options.
    #[arg(long)]
    pub dns_add: Vec<String>,
    #[arg(long)]
    pub dns_rm: Vec<String>,
    #[arg(long)]
    pub dns_search_add: Vec<String>,
    #[arg(long)]
    pub dns_search_rm: Vec<String>,
    #[arg(long)]
    pub dns_option_add: Vec<String>,
    #[arg(long)]
    pub dns_option_rm: Vec<String>,
    /// Add a mount (as --mount).
    #[arg(long)]
    pub mount_add: Vec<String>,
    /// Remove the mount at this target path.
    #[arg(long)]
    pub mount_rm: Vec<String>,
    /// Give the tasks a config.
    #[arg(long)]
    pub config_add: Vec<String>,
    /// Take a config from the tasks.
    #[arg(long)]
    pub config_rm: Vec<String>,
    /// Add a placement constraint.
    #[arg(long)]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint (as written).
    #[arg(long)]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference (spread=node.labels.<label>), after the others.
    #[arg(long)]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference (spread=node.labels.<label>).
    #[arg(long)]
    pub placement_pref_rm: Vec<String>,
    /// Number of tasks.
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<i64>,
    /// Maximum tasks per node (0 = unlimited).
    #[arg(long)]
    pub replicas_max_per_node: Option<u64>,
    /// vip or dnsrr
    #[arg(long)]
    pub endpoint_mode: Option<String>,
    /// Command to run to check health.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between health checks (ms|s|m|h).
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Maximum time one check may take (ms|s|m|h).
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Start period during which failures do not count (ms|s|m|h).
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Remove the health check.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// CPUs a task may use (0 = no limit).
    #[arg(long)]
    pub limit_cpu: Option<f64>,
    /// Memory a task may use (0 = no limit).
    #[arg(long)]
    pub limit_memory: Option<String>,
    /// Processes a task may run (0 = no limit).
    #[arg(long)]
    pub limit_pids: Option<u64>,
    /// CPUs each task needs free on its node (0 = none).
    #[arg(long)]
    pub reserve_cpu: Option<f64>,
    /// Memory each task needs free on its node (0 = none).
    #[arg(long)]
    pub reserve_memory: Option<String>,
    /// none, on-failure or any
    #[arg(long)]
    pub restart_condition: Option<String>,
    /// Wait between restarts (ms|s|m|h).
    #[arg(long)]
    pub restart_delay: Option<String>,
    /// Restarts before giving up (0 = unlimited).
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window in which restarts are counted (ms|s|m|h).
    #[arg(long)]
    pub restart_window: Option<String>,
    #[command(flatten)]
    pub policy: UpdatePolicyArgs,
    /// Replace every task even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Roll back to the previous spec (as `service rollback`).
    #[arg(long)]
    pub rollback: bool,
    /// Refuse the update unless the service is still at this version (default: the version
    /// read just before; `service inspect` shows it).
    #[arg(long)]
    pub version: Option<u64>,
    /// Return at once instead of following the update.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Print only the service name, no progress.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    pub service: String,
}

fn err(flag: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("invalid --{flag}: {e}")
}

/// The spec `old` becomes under these flags (nothing else changes).
pub fn apply(old: &ServiceSpec, a: &UpdateArgs) -> anyhow::Result<ServiceSpec> {
    let mut s = old.clone();
    if let Some(image) = &a.image {
        s.image = image.clone();
    }
    if let Some(args) = &a.args {
        s.args = shlex::split(args).ok_or_else(|| err("args", format!("{args:?} has an unclosed quote")))?;
    }
    for e in &a.env_rm {
        let key = e.split('=').next().unwrap_or("");
        s.env.retain(|x| x.split('=').next() != Some(key));
    }
    for e in &a.env_add {
        let key = e.split('=').next().unwrap_or("");
        match s.env.iter_mut().find(|x| x.split('=').next() == Some(key)) {
            Some(x) => *x = e.clone(),
            None => s.env.push(e.clone()),
        }
    }
    for k in &a.label_rm {
        s.labels.remove(k);
    }
    for l in &a.label_add {
        let (k, v) = parse_kv(l);
        s.labels.insert(k, v);
    }
    for p in &a.publish_rm {
        remove_port(&mut s.endpoint.ports, p, &old.name)?;
    }
    for p in &a.publish_add {
        let port = parse_publish(p).map_err(|e| err("publish-add", format!("{p:?}: {e}")))?;
        // A port published again replaces the old one (same published port and protocol).
        s.endpoint.ports.retain(|x| !(x.published.is_some() && x.published == port.published && x.protocol == port.protocol));
        s.endpoint.ports.push(port);
    }
    for n in &a.network_rm {
        if !s.networks.contains(n) {
            anyhow::bail!("invalid --network-rm {n:?}: service {} is not attached to it (it is on {:?})", old.name, s.networks);
        }
        s.networks.retain(|x| x != n);
    }
    for n in &a.network_add {
        if !s.networks.contains(n) {
            s.networks.push(n.clone());
        }
    }
    for x in &a.secret_rm {
        s.secrets.retain(|y| &y.source != x);
    }
    for x in &a.secret_add {
        let r = super::args::parse_file_ref(x, "--secret-add")?;
        // One file per target: the new reference replaces the old one there.
        s.secrets.retain(|y| y.target != r.target);
        s.secrets.push(r);
    }
    let k = &mut s.container;
    if let Some(h) = &a.hostname {
        k.hostname = Some(h.clone()).filter(|h| !h.is_empty());
    }
    if let Some(u) = &a.user {
        k.user = Some(u.clone()).filter(|u| !u.is_empty());
    }
    if let Some(w) = &a.workdir {
        k.workdir = Some(w.clone()).filter(|w| !w.is_empty());
    }
    if let Some(e) = &a.entrypoint {
        let argv = shlex::split(e).ok_or_else(|| anyhow::anyhow!("invalid --entrypoint {e:?}: unclosed quote"))?;
        k.entrypoint = Some(argv).filter(|v| !v.is_empty());
    }
    if let Some(g) = &a.stop_grace_period {
        k.stop_grace_ms = Some(super::args::parse_duration_ms(g).map_err(|e| anyhow::anyhow!("invalid --stop-grace-period: {e}"))?);
    }
    if let Some(r) = a.read_only {
        k.read_only = r;
    }
    if let Some(i) = a.init {
        k.init = i;
    }
    // Docker: an added capability leaves the drop list and the other way round.
    for c in a.cap_add.iter().map(|c| shoal_control::model::normalize_cap(c)) {
        k.cap_drop.retain(|x| x != &c);
        if !k.cap_add.contains(&c) {
            k.cap_add.push(c);
        }
    }
    for c in a.cap_drop.iter().map(|c| shoal_control::model::normalize_cap(c)) {
        k.cap_add.retain(|x| x != &c);
        if !k.cap_drop.contains(&c) {
            k.cap_drop.push(c);
        }
    }
    for (list, add, rm) in [
        (&mut k.dns, &a.dns_add, &a.dns_rm),
        (&mut k.dns_search, &a.dns_search_add, &a.dns_search_rm),
        (&mut k.dns_options, &a.dns_option_add, &a.dns_option_rm),
    ] {
        list.retain(|x| !rm.contains(x));
        for x in add {
            if !list.contains(x) {
                list.push(x.clone());
            }
        }
    }
    for x in &a.mount_rm {
        if !s.mounts.iter().any(|m| &m.target == x) {
            anyhow::bail!("invalid --mount-rm {x:?}: no mount has that target (give the target path)");
        }
        s.mounts.retain(|m| &m.target != x);
    }
    for x in &a.mount_add {
        let m = super::args::parse_mount(x, "--mount-add")?;
        s.mounts.retain(|y| y.target != m.target);
        s.mounts.push(m);
    }
    for x in &a.config_rm {
        s.configs.retain(|y| &y.source != x);
    }
    for x in &a.config_add {
        let r = super::args::parse_config_ref(x, "--config-add")?;
        s.configs.retain(|y| y.config_path() != r.config_path());
        s.configs.push(r);
    }
    for c in &a.constraint_rm {
        s.placement.constraints.retain(|y| y.replace(' ', "") != c.replace(' ', ""));
    }
    for c in &a.constraint_add {
        if !s.placement.constraints.contains(c) {
            s.placement.constraints.push(c.clone());
        }
    }
    // Docker removes first, then adds at the end (the order of nested preferences matters).
    for p in &a.placement_pref_rm {
        let p = shoal_control::model::PlacementPreference::parse(p).map_err(|e| anyhow::anyhow!("invalid --placement-pref-rm: {e}"))?;
        s.placement.preferences.retain(|x| !x.spread.eq_ignore_ascii_case(&p.spread));
    }
    for p in &a.placement_pref_add {
        let p = shoal_control::model::PlacementPreference::parse(p).map_err(|e| anyhow::anyhow!("invalid --placement-pref-add: {e}"))?;
        s.placement.preferences.push(p);
    }
    if let Some(n) = a.replicas {
        match s.mode {
            ServiceMode::Replicated { .. } => s.mode = ServiceMode::Replicated { replicas: n },
            ServiceMode::Global => {
                anyhow::bail!("invalid --replicas: service {} is global; only replicated services have replicas", old.name)
            }
        }
    }
    if let Some(n) = a.replicas_max_per_node {
        s.placement.max_replicas_per_node = n;
    }
    if let Some(m) = &a.endpoint_mode {
        s.endpoint.mode = match m.as_str() {
            "vip" => EndpointMode::Vip,
            "dnsrr" => EndpointMode::Dnsrr,
            _ => anyhow::bail!("invalid --endpoint-mode {m:?}: use vip or dnsrr"),
        };
    }
    health(&mut s, a)?;
    resources(&mut s, a)?;
    if let Some(c) = &a.restart_condition {
        s.restart.condition = match c.as_str() {
            "none" => RestartCondition::None,
            "on-failure" => RestartCondition::OnFailure,
            "any" => RestartCondition::Any,
            _ => anyhow::bail!("invalid --restart-condition {c:?}: use none, on-failure or any"),
        };
    }
    if let Some(d) = &a.restart_delay {
        s.restart.delay_ms = parse_duration_ms(d).map_err(|e| err("restart-delay", e))?;
    }
    if let Some(n) = a.restart_max_attempts {
        s.restart.max_attempts = n;
    }
    if let Some(w) = &a.restart_window {
        s.restart.window_ms = parse_duration_ms(w).map_err(|e| err("restart-window", e))?;
    }
    a.policy.apply(&mut s.update, &mut s.rollback)?;
    if a.force {
        s.force_update = s.force_update.wrapping_add(1);
    }
    Ok(s)
}

/// `--publish-rm 80` removes the ports with that target (Docker's rule), or, when none has it,
/// the one published on it; `8080:80` removes exactly that mapping. Removing a port the service
/// does not publish is an error, not a silent no-op.
fn remove_port(ports: &mut Vec<PortConfig>, p: &str, service: &str) -> anyhow::Result<()> {
    let want = parse_publish(p).map_err(|e| err("publish-rm", format!("{p:?}: {e}")))?;
    let before = ports.len();
    match want.published {
        Some(published) => ports.retain(|x| !(x.published == Some(published) && x.target == want.target && x.protocol == want.protocol)),
        None => {
            ports.retain(|x| !(x.target == want.target && x.protocol == want.protocol));
            if ports.len() == before {
                ports.retain(|x| !(x.published == Some(want.target) && x.protocol == want.protocol));
            }
        }
    }
    if ports.len() == before {
        let have = super::format::ports_text(ports);
        anyhow::bail!(
            "invalid --publish-rm {p:?}: service {service} publishes no such port (it publishes {})",
            if have.is_empty() { "none".into() } else { have }
        );
    }
    Ok(())
}

fn health(s: &mut ServiceSpec, a: &UpdateArgs) -> anyhow::Result<()> {
    let tuning = a.health_interval.is_some() || a.health_timeout.is_some() || a.health_retries.is_some() || a.health_start_period.is_some();
    if a.no_healthcheck {
        if a.health_cmd.is_some() || tuning {
            anyhow::bail!("--no-healthcheck conflicts with --health-* options");
        }
        s.healthcheck = None;
        return Ok(());
    }
    if let Some(cmd) = &a.health_cmd {
        let h = s.healthcheck.get_or_insert_with(|| HealthCheck::new(cmd.clone()));
        h.cmd = cmd.clone();
    }
    let Some(h) = s.healthcheck.as_mut() else {
        if tuning {
            anyhow::bail!(
                "--health-interval, --health-timeout, --health-retries and --health-start-period need a health check: add --health-cmd"
            );
        }
        return Ok(());
    };
    let ms = |flag: &str, v: &Option<String>, cur: u64| -> anyhow::Result<u64> {
        v.as_deref().map_or(Ok(cur), |d| parse_duration_ms(d).map_err(|e| err(flag, e)))
    };
    h.interval_ms = ms("health-interval", &a.health_interval, h.interval_ms)?;
    h.timeout_ms = ms("health-timeout", &a.health_timeout, h.timeout_ms)?;
    h.start_period_ms = ms("health-start-period", &a.health_start_period, h.start_period_ms)?;
    h.retries = a.health_retries.unwrap_or(h.retries);
    Ok(())
}

fn cpus(flag: &str, cpu: f64) -> anyhow::Result<u64> {
    if !(cpu.is_finite() && cpu >= 0.0) {
        anyhow::bail!("invalid --{flag} {cpu}: give a number of CPUs, e.g. 0.5 (0 for none)");
    }
    Ok((cpu * 1e9).round() as u64)
}

fn resources(s: &mut ServiceSpec, a: &UpdateArgs) -> anyhow::Result<()> {
    if let Some(c) = a.limit_cpu {
        s.limits.nano_cpus = cpus("limit-cpu", c)?;
    }
    if let Some(m) = &a.limit_memory {
        s.limits.memory_bytes = parse_bytes(m).map_err(|e| err("limit-memory", e))?;
    }
    if let Some(p) = a.limit_pids {
        s.limits.pids = p;
    }
    if let Some(c) = a.reserve_cpu {
        s.reservations.nano_cpus = cpus("reserve-cpu", c)?;
    }
    if let Some(m) = &a.reserve_memory {
        s.reservations.memory_bytes = parse_bytes(m).map_err(|e| err("reserve-memory", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_control::model::Protocol;

    fn base() -> ServiceSpec {
        let mut s = ServiceSpec::new("web", "myapp:1.2.0");
        s.env = vec!["NODE_ENV=development".into(), "PORT=80".into()];
        s.endpoint.ports = vec![parse_publish("8080:80").unwrap(), parse_publish("9090:90").unwrap()];
        s.networks = vec!["front".into()];
        s
    }

    fn args(service: &str) -> UpdateArgs {
        UpdateArgs { service: service.into(), ..Default::default() }
    }

    #[test]
    fn boolean_flags_take_no_value_or_an_equals_sign() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: UpdateArgs,
        }
        let c = Cli::try_parse_from(["update", "--init", "--read-only", "web"]).unwrap();
        assert_eq!((c.a.init, c.a.read_only, c.a.service.as_str()), (Some(true), Some(true), "web"));
        let c = Cli::try_parse_from(["update", "--init=false", "web"]).unwrap();
        assert_eq!((c.a.init, c.a.read_only), (Some(false), None));
    }

    #[test]
    fn the_seeds_rolling_deployment() {
        // docker service update --image myapp:1.2.1 --env-add NODE_ENV=production --publish-rm 8080 web
        let a = UpdateArgs {
            image: Some("myapp:1.2.1".into()),
            env_add: vec!["NODE_ENV=production".into()],
            publish_rm: vec!["8080".into()],
            ..args("web")
        };
        let s = apply(&base(), &a).unwrap();
        assert_eq!(s.image, "myapp:1.2.1");
        assert_eq!(s.env, vec!["NODE_ENV=production".to_string(), "PORT=80".into()], "replaced in place");
        assert_eq!(s.endpoint.ports.len(), 1, "8080 is no target, so the port published on 8080 goes");
        assert_eq!(s.endpoint.ports[0].target, 90);
    }

    #[test]
    fn container_options_update_like_docker() {
        let a = UpdateArgs {
            hostname: Some("db".into()),
            entrypoint: Some("/bin/sh -c".into()),
            stop_grace_period: Some("30s".into()),
            read_only: Some(true),
            init: Some(true),
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CHOWN".into()],
            dns_option_add: vec!["ndots:2".into()],
            ..args("web")
        };
        let s = apply(&base(), &a).unwrap();
        let k = &s.container;
        assert_eq!(k.hostname.as_deref(), Some("db"));
        assert_eq!(k.entrypoint.as_deref(), Some(&["/bin/sh".to_string(), "-c".to_string()][..]));
        assert_eq!((k.stop_grace_ms, k.read_only, k.init), (Some(30_000), true, true));
        assert_eq!((k.cap_add.clone(), k.cap_drop.clone()), (vec!["CAP_NET_ADMIN".to_string()], vec!["CAP_CHOWN".to_string()]));
        let s2 = apply(
            &s,
            &UpdateArgs {
                cap_add: vec!["CHOWN".into()],
                entrypoint: Some(String::new()),
                dns_option_rm: vec!["ndots:2".into()],
                ..args("web")
            },
        )
        .unwrap();
        assert!(s2.container.cap_drop.is_empty() && s2.container.entrypoint.is_none() && s2.container.dns_options.is_empty());
    }

    #[test]
    fn lists_add_and_remove() {
        let a = UpdateArgs {
            args: Some("serve --name 'a b'".into()),
            env_rm: vec!["PORT".into()],
            label_add: vec!["tier=front".into()],
            publish_rm: vec!["80".into()],
            publish_add: vec!["5353:53/udp".into()],
            network_add: vec!["back".into()],
            network_rm: vec!["front".into()],
            secret_add: vec!["db".into()],
            constraint_add: vec!["node.role==worker".into()],
            replicas: Some(4),
            force: true,
            ..args("web")
        };
        let s = apply(&base(), &a).unwrap();
        assert_eq!(s.args, vec!["serve", "--name", "a b"]);
        assert_eq!(s.env, vec!["NODE_ENV=development".to_string()]);
        assert_eq!(s.labels["tier"], "front");
        assert_eq!(
            s.endpoint.ports.iter().map(|p| (p.target, p.protocol)).collect::<Vec<_>>(),
            vec![(90, Protocol::Tcp), (53, Protocol::Udp)]
        );
        assert_eq!(s.networks, vec!["back".to_string()]);
        assert_eq!(s.secrets, vec![shoal_control::model::FileRef::named("db")]);
        assert_eq!(s.placement.constraints, vec!["node.role==worker".to_string()]);
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 4 });
        assert_eq!(s.force_update, 1);
        let s2 = apply(&s, &UpdateArgs { constraint_rm: vec!["node.role == worker".into()], ..args("web") }).unwrap();
        assert!(s2.placement.constraints.is_empty());
        let s3 = apply(
            &s2,
            &UpdateArgs { placement_pref_add: vec!["spread=node.labels.zone".into(), "spread=node.labels.rack".into()], ..args("web") },
        )
        .unwrap();
        assert_eq!(
            s3.placement.preferences.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["spread=node.labels.zone", "spread=node.labels.rack"]
        );
        let s4 = apply(&s3, &UpdateArgs { placement_pref_rm: vec!["spread=node.labels.zone".into()], ..args("web") }).unwrap();
        assert_eq!(s4.placement.preferences.iter().map(ToString::to_string).collect::<Vec<_>>(), ["spread=node.labels.rack"]);
        let e = apply(&s4, &UpdateArgs { placement_pref_add: vec!["spread=node.role".into()], ..args("web") }).unwrap_err().to_string();
        assert!(e.contains("--placement-pref-add") && e.contains("node label"), "{e}");
    }

    #[test]
    fn health_and_resources() {
        let a = UpdateArgs {
            health_cmd: Some("curl -f localhost".into()),
            health_interval: Some("2s".into()),
            limit_memory: Some("256M".into()),
            ..args("web")
        };
        let s = apply(&base(), &a).unwrap();
        let h = s.healthcheck.clone().unwrap();
        assert_eq!((h.cmd.as_str(), h.interval_ms, h.retries), ("curl -f localhost", 2_000, 3));
        assert_eq!(s.limits.memory_bytes, 256 << 20);
        let s = apply(&s, &UpdateArgs { health_retries: Some(5), limit_memory: Some("0".into()), ..args("web") }).unwrap();
        assert_eq!(s.healthcheck.as_ref().unwrap().retries, 5);
        assert_eq!(s.limits.memory_bytes, 0, "0 removes the limit");
        let s = apply(&s, &UpdateArgs { no_healthcheck: true, ..args("web") }).unwrap();
        assert!(s.healthcheck.is_none());
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        let e = |a: UpdateArgs| apply(&base(), &a).unwrap_err().to_string();
        let m = e(UpdateArgs { publish_rm: vec!["7000".into()], ..args("web") });
        assert!(m.contains("--publish-rm \"7000\"") && m.contains("*:8080->80/tcp"), "{m}");
        let m = e(UpdateArgs { network_rm: vec!["back".into()], ..args("web") });
        assert!(m.contains("--network-rm \"back\""), "{m}");
        let m = e(UpdateArgs { health_interval: Some("1s".into()), ..args("web") });
        assert!(m.contains("add --health-cmd"), "{m}");
        let m = e(UpdateArgs { args: Some("'open".into()), ..args("web") });
        assert!(m.contains("--args") && m.contains("unclosed quote"), "{m}");
        let m = e(UpdateArgs { limit_cpu: Some(f64::NAN), ..args("web") });
        assert!(m.contains("--limit-cpu"), "{m}");
        let mut global = base();
        global.mode = ServiceMode::Global;
        let m = apply(&global, &UpdateArgs { replicas: Some(2), ..args("web") }).unwrap_err().to_string();
        assert!(m.contains("is global"), "{m}");
    }
}
