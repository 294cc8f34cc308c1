//! `service create|ls|ps|inspect|scale|update|rollback|rm`.

use super::args::{parse_duration_ms, parse_kv, parse_publish};
use super::format::service_table;
use super::Client;
use clap::{Args, Subcommand};
use shoal_control::model::{EndpointMode, RestartCondition, ServiceMode, ServiceSpec};
use shoal_control::state::{Command, Response};
use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<i64>,
    /// replicated or global
    #[arg(long, default_value = "replicated")]
    pub mode: String,
    /// published:target[/proto] or published=..,target=..,protocol=..,mode=..
    #[arg(long = "publish", short = 'p')]
    pub publish: Vec<String>,
    #[arg(long)]
    pub constraint: Vec<String>,
    /// Spread tasks over a node label's values: spread=node.labels.<label> (repeat to nest).
    #[arg(long)]
    pub placement_pref: Vec<String>,
    #[arg(long)]
    pub network: Vec<String>,
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    #[arg(long = "label", short = 'l')]
    pub label: Vec<String>,
    /// vip or dnsrr
    #[arg(long, default_value = "vip")]
    pub endpoint_mode: String,
    /// none, on-failure or any
    #[arg(long)]
    pub restart_condition: Option<String>,
    #[arg(long)]
    pub restart_delay: Option<String>,
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    #[arg(long)]
    pub restart_window: Option<String>,
    #[arg(long)]
    pub replicas_max_per_node: Option<u64>,
    /// A secret as a file in the tasks: NAME, or source=NAME,target=FILE,uid=0,gid=0,mode=0444
    /// (target relative to /run/secrets).
    #[arg(long)]
    pub secret: Vec<String>,
    /// A config as a file in the tasks: NAME, or source=NAME,target=/PATH,uid=0,gid=0,mode=0444
    /// (target /NAME by default).
    #[arg(long)]
    pub config: Vec<String>,
    /// type=bind|volume|tmpfs,src=...,dst=...[,readonly][,volume-nocopy][,volume-opt=type|device|o=..][,volume-label=K=V][,tmpfs-size=..][,tmpfs-mode=..][,bind-propagation=..]
    #[arg(long)]
    pub mount: Vec<String>,
    /// Read environment variables from a file (KEY=value lines, # comments).
    #[arg(long)]
    pub env_file: Vec<String>,
    /// The tasks' hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// user[:group] the command runs as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory of the command.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// Replace the image's ENTRYPOINT (a shell-quoted string).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Time to wait after the stop signal before SIGKILL (ms|s|m|h).
    #[arg(long)]
    pub stop_grace_period: Option<String>,
    /// Mount the task's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Run an init (tini) as PID 1 that reaps zombies and forwards signals to the command.
    #[arg(long)]
    pub init: bool,
    /// Add Linux capabilities (NET_ADMIN, ALL...).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// DNS servers (after the embedded DNS).
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domains.
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// DNS options (ndots:2, timeout:1...).
    #[arg(long)]
    pub dns_option: Vec<String>,
    /// Kernel parameters of the task's namespaces (net.ipv4.ip_forward=1).
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Resource limits: name=soft[:hard] (nofile=1024:2048).
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Supplementary groups of the command's user.
    #[arg(long)]
    pub group: Vec<String>,
    /// Labels of the tasks' containers.
    #[arg(long)]
    pub container_label: Vec<String>,
    /// Command to run to check health (`/bin/sh -c` inside the task; exit 0 = healthy).
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between health checks (ms|s|m|h) [30s].
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Maximum time one check may take (ms|s|m|h) [30s].
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy [3].
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Start period during which failures do not count (ms|s|m|h) [0s].
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// CPUs a task may use, e.g. 0.5.
    #[arg(long)]
    pub limit_cpu: Option<f64>,
    /// Memory a task may use, e.g. 256M or 1G (a task over it is killed).
    #[arg(long)]
    pub limit_memory: Option<String>,
    /// Processes a task may run at once.
    #[arg(long)]
    pub limit_pids: Option<u64>,
    /// CPUs each task needs free on its node (the scheduler places by it), e.g. 0.5.
    #[arg(long)]
    pub reserve_cpu: Option<f64>,
    /// Memory each task needs free on its node, e.g. 256M.
    #[arg(long)]
    pub reserve_memory: Option<String>,
    #[command(flatten)]
    pub policy: super::update_flags::UpdatePolicyArgs,
    /// Return at once instead of waiting for the service to converge.
    #[arg(long, short = 'd')]
    pub detach: bool,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// List services.
    Ls {
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// List the tasks of services.
    Ps {
        #[arg(long, default_value = "table")]
        format: String,
        /// Full task ids.
        #[arg(long)]
        no_trunc: bool,
        /// desired-state=running|shutdown|accepted, node=NODE, name=NAME, id=ID.
        #[arg(long, short = 'f')]
        filter: Vec<String>,
        services: Vec<String>,
    },
    /// Show services in detail (JSON, or Docker's text with --pretty).
    Inspect {
        #[arg(long)]
        pretty: bool,
        services: Vec<String>,
    },
    /// Scale replicated services: SERVICE=REPLICAS...
    Scale {
        #[arg(long, short = 'd')]
        detach: bool,
        targets: Vec<String>,
    },
    /// Update a service: its tasks are replaced by `--update-*` (a rolling update).
    Update(Box<super::service_update::UpdateArgs>),
    /// Roll a service back to its previous spec.
    Rollback {
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long, short = 'q')]
        quiet: bool,
        service: String,
    },
    /// Remove services.
    Rm { services: Vec<String> },
    /// Fetch the output of a service's tasks (or one task's), from the nodes that ran them.
    Logs(super::logs_cmd::LogsArgs),
}

pub fn build_spec(a: &CreateArgs) -> anyhow::Result<ServiceSpec> {
    let name = a.name.clone().unwrap_or_else(|| {
        // Docker picks a random name; use the image's last path part and a short random suffix.
        let base = a.image.rsplit('/').next().unwrap_or("svc").split(':').next().unwrap_or("svc").to_string();
        format!("{base}-{}", &shoal_control::model::random_id::<String>()[..6])
    });
    let mut s = ServiceSpec::new(name, a.image.clone());
    s.args = a.args.clone();
    s.env = env_files(&a.env_file)?;
    s.env.extend(a.env.iter().cloned());
    let k = &mut s.container;
    k.hostname = a.hostname.clone();
    k.user = a.user.clone();
    k.workdir = a.workdir.clone();
    if let Some(e) = &a.entrypoint {
        k.entrypoint = Some(shlex::split(e).ok_or_else(|| anyhow::anyhow!("invalid --entrypoint {e:?}: unclosed quote"))?);
    }
    if let Some(g) = &a.stop_grace_period {
        k.stop_grace_ms = Some(parse_duration_ms(g).map_err(|e| anyhow::anyhow!("invalid --stop-grace-period: {e}"))?);
    }
    k.read_only = a.read_only;
    k.init = a.init;
    k.cap_add = a.cap_add.iter().map(|c| shoal_control::model::normalize_cap(c)).collect();
    k.cap_drop = a.cap_drop.iter().map(|c| shoal_control::model::normalize_cap(c)).collect();
    k.dns = a.dns.clone();
    k.dns_search = a.dns_search.clone();
    k.dns_options = a.dns_option.clone();
    k.sysctls = a.sysctl.iter().map(|s| super::args::parse_kv(s)).collect();
    k.ulimits = a.ulimit.iter().map(|u| super::args::parse_ulimit(u)).collect::<Result<_, _>>()?;
    k.groups = a.group.clone();
    k.labels = a.container_label.iter().map(|s| super::args::parse_kv(s)).collect();
    s.labels = a.label.iter().map(|l| parse_kv(l)).collect();
    s.mode = match a.mode.as_str() {
        "replicated" => ServiceMode::Replicated { replicas: a.replicas.unwrap_or(1) },
        "global" => {
            if a.replicas.is_some() {
                anyhow::bail!("--replicas can only be used with replicated mode");
            }
            ServiceMode::Global
        }
        m => anyhow::bail!("invalid --mode {m:?}: use replicated or global"),
    };
    s.networks = a.network.clone();
    s.endpoint.mode = match a.endpoint_mode.as_str() {
        "vip" => EndpointMode::Vip,
        "dnsrr" => EndpointMode::Dnsrr,
        m => anyhow::bail!("invalid --endpoint-mode {m:?}: use vip or dnsrr"),
    };
    for p in &a.publish {
        s.endpoint.ports.push(parse_publish(p).map_err(|e| anyhow::anyhow!("invalid --publish {p:?}: {e}"))?);
    }
    s.placement.constraints = a.constraint.clone();
    s.placement.preferences = a
        .placement_pref
        .iter()
        .map(|p| shoal_control::model::PlacementPreference::parse(p).map_err(|e| anyhow::anyhow!("invalid --placement-pref: {e}")))
        .collect::<Result<_, _>>()?;
    s.placement.max_replicas_per_node = a.replicas_max_per_node.unwrap_or(0);
    if let Some(c) = &a.restart_condition {
        s.restart.condition = match c.as_str() {
            "none" => RestartCondition::None,
            "on-failure" => RestartCondition::OnFailure,
            "any" => RestartCondition::Any,
            _ => anyhow::bail!("invalid --restart-condition {c:?}: use none, on-failure or any"),
        };
    }
    if let Some(d) = &a.restart_delay {
        s.restart.delay_ms = parse_duration_ms(d).map_err(|e| anyhow::anyhow!("invalid --restart-delay: {e}"))?;
    }
    if let Some(n) = a.restart_max_attempts {
        s.restart.max_attempts = n;
    }
    if let Some(w) = &a.restart_window {
        s.restart.window_ms = parse_duration_ms(w).map_err(|e| anyhow::anyhow!("invalid --restart-window: {e}"))?;
    }
    s.mounts = a.mount.iter().map(|x| super::args::parse_mount(x, "--mount")).collect::<Result<_, _>>()?;
    s.configs = a.config.iter().map(|x| super::args::parse_config_ref(x, "--config")).collect::<Result<_, _>>()?;
    s.secrets = a.secret.iter().map(|x| super::args::parse_file_ref(x, "--secret")).collect::<Result<_, _>>()?;
    s.healthcheck = health_check(a)?;
    if let Some(cpu) = a.limit_cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            anyhow::bail!("invalid --limit-cpu {cpu}: give a number of CPUs above 0, e.g. 0.5");
        }
        s.limits.nano_cpus = (cpu * 1e9).round() as u64;
    }
    if let Some(m) = &a.limit_memory {
        s.limits.memory_bytes = super::args::parse_bytes(m).map_err(|e| anyhow::anyhow!("invalid --limit-memory: {e}"))?;
    }
    s.limits.pids = a.limit_pids.unwrap_or(0);
    if let Some(cpu) = a.reserve_cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            anyhow::bail!("invalid --reserve-cpu {cpu}: give a number of CPUs above 0, e.g. 0.5");
        }
        s.reservations.nano_cpus = (cpu * 1e9).round() as u64;
    }
    if let Some(m) = &a.reserve_memory {
        s.reservations.memory_bytes = super::args::parse_bytes(m).map_err(|e| anyhow::anyhow!("invalid --reserve-memory: {e}"))?;
    }
    a.policy.apply(&mut s.update, &mut s.rollback)?;
    Ok(s)
}

fn health_check(a: &CreateArgs) -> anyhow::Result<Option<shoal_control::model::HealthCheck>> {
    let Some(cmd) = &a.health_cmd else {
        if a.health_interval.is_some() || a.health_timeout.is_some() || a.health_retries.is_some() || a.health_start_period.is_some() {
            anyhow::bail!("--health-interval, --health-timeout, --health-retries and --health-start-period need --health-cmd");
        }
        return Ok(None);
    };
    let mut h = shoal_control::model::HealthCheck::new(cmd.clone());
    let ms = |flag: &str, v: &Option<String>, default: u64| -> anyhow::Result<u64> {
        match v {
            Some(s) => parse_duration_ms(s).map_err(|e| anyhow::anyhow!("invalid --{flag}: {e}")),
            None => Ok(default),
        }
    };
    h.interval_ms = ms("health-interval", &a.health_interval, h.interval_ms)?;
    h.timeout_ms = ms("health-timeout", &a.health_timeout, h.timeout_ms)?;
    h.start_period_ms = ms("health-start-period", &a.health_start_period, h.start_period_ms)?;
    h.retries = a.health_retries.unwrap_or(h.retries);
    Ok(Some(h))
}

pub async fn run(c: Client, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create(a) => {
            let spec = build_spec(&a)?;
            let Response::Created { id } = c.propose(Command::CreateService { spec }).await? else {
                anyhow::bail!("no service id returned")
            };
            println!("{id}");
            if !a.detach {
                follow(&c, &id, false, 0).await?;
            }
        }
        ServiceCmd::Update(a) => update(&c, *a).await?,
        ServiceCmd::Rollback { detach, quiet, service } => rollback(&c, &service, None, detach || quiet).await?,
        ServiceCmd::Ls { format, quiet } => {
            let v = c.view().await?;
            if quiet {
                for s in v.state.services.values() {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                for s in v.state.services.values() {
                    println!("{}", serde_json::to_string(s)?);
                }
            } else {
                print!("{}", service_table(&v));
            }
        }
        ServiceCmd::Ps { format, no_trunc, filter, services } => {
            let opts = super::format::PsOptions::parse(no_trunc, &filter)?;
            let v = c.view().await?;
            let mut ids = vec![];
            for s in &services {
                ids.push(v.state.find_service(s).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?.id.clone());
            }
            if format == "json" {
                for t in v.state.tasks.values().filter(|t| ids.contains(&t.service_id)) {
                    println!("{}", serde_json::to_string(t)?);
                }
            } else {
                print!("{}", super::format::service_ps_table_with(&v, &ids, shoal_control::manager::now_ms(), &opts));
            }
        }
        ServiceCmd::Inspect { pretty, services } => {
            let v = c.view().await?;
            let mut out = vec![];
            for s in &services {
                out.push(v.state.find_service(s).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?.clone());
            }
            if pretty {
                let now = shoal_control::manager::now_ms();
                println!("{}", out.iter().map(|s| super::format::service_pretty(s, now)).collect::<Vec<_>>().join("\n"));
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        ServiceCmd::Scale { detach, targets } => {
            let mut scaled = vec![];
            for t in &targets {
                let (name, n) = t.split_once('=').ok_or_else(|| anyhow::anyhow!("invalid scale specifier {t:?}: use SERVICE=REPLICAS"))?;
                let replicas: i64 = n.parse().map_err(|_| anyhow::anyhow!("invalid replicas value {n:?} for {name}"))?;
                c.propose(Command::ScaleService { service: name.to_string(), replicas }).await?;
                println!("{name} scaled to {replicas}");
                scaled.push(name.to_string());
            }
            if !detach {
                let v = c.view().await?;
                for name in scaled {
                    if let Ok(s) = v.state.find_service(&name) {
                        follow(&c, &s.id.clone(), false, 0).await?;
                    }
                }
            }
        }
        ServiceCmd::Logs(a) => super::logs_cmd::run(&c, a).await?,
        ServiceCmd::Rm { services } => {
            for s in services {
                c.propose(Command::RemoveService { service: s.clone() }).await?;
                println!("{s}");
            }
        }
    }
    Ok(())
}

/// `service update`: the new spec from the flags, sent with the version it was read at.
async fn update(c: &Client, a: super::service_update::UpdateArgs) -> anyhow::Result<()> {
    let v = c.view().await?;
    let svc = v.state.find_service(&a.service).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?.clone();
    let version = a.version.unwrap_or(svc.version);
    let spec = super::service_update::apply(&svc.spec, &a)?;
    if a.rollback {
        if spec != svc.spec {
            anyhow::bail!("--rollback cannot be combined with flags that change the service: roll back first, then update");
        }
        return rollback(c, &svc.id, Some(version), a.detach || a.quiet).await;
    }
    let changed = spec != svc.spec;
    c.propose(Command::UpdateServiceAt { service: svc.id.to_string(), version, spec }).await?;
    println!("{}", a.service);
    if !(a.detach || a.quiet) {
        follow(c, &svc.id, false, if changed { version + 1 } else { version }).await?;
    }
    Ok(())
}

/// `service rollback` (and `service update --rollback`).
async fn rollback(c: &Client, service: &str, version: Option<u64>, detach: bool) -> anyhow::Result<()> {
    let v = c.view().await?;
    let svc = v.state.find_service(service).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?.clone();
    c.propose(Command::RollbackService { service: svc.id.to_string(), version }).await?;
    println!("{}", svc.spec.name);
    if !detach {
        follow(c, &svc.id, true, svc.version + 1).await?;
    }
    Ok(())
}

/// Redraw the progress until the service converges (every slot runs a ready task of its
/// current spec, no update in flight), or fail with Docker's message when the update paused or
/// rolled back. `min_version`: views older than the change just made are skipped.
async fn follow(c: &Client, id: &str, rollback_asked: bool, min_version: u64) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let mut last: Vec<String> = vec![];
    let mut announced: Vec<String> = vec![];
    loop {
        let v = c.view().await?;
        if v.state.services.get(id).is_some_and(|s| s.version < min_version) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let (lines, outcome) = super::progress::render(&v, id, rollback_asked, shoal_control::manager::now_ms());
        if tty && lines != last {
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                write!(out, "\x1b[{drawn}A\x1b[J")?;
            }
            for l in &lines {
                writeln!(out, "{l}")?;
            }
            out.flush()?;
            drawn = lines.len();
        }
        if !tty {
            // Without a terminal only the last drawing is printed; a rollback's reason is
            // printed as it starts, as Docker's does.
            for l in lines.iter().filter(|l| l.starts_with("rollback: ")) {
                if !announced.contains(l) {
                    println!("{l}");
                    announced.push(l.clone());
                }
            }
        }
        last = lines;
        let finished = outcome != super::progress::Outcome::Waiting;
        if finished && !tty {
            for l in last.iter().filter(|l| !announced.contains(l)) {
                println!("{l}");
            }
        }
        match outcome {
            super::progress::Outcome::Converged => {
                println!("verify: Service converged");
                return Ok(());
            }
            super::progress::Outcome::Failed(e) => anyhow::bail!(e),
            super::progress::Outcome::Waiting => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--env-file`: `KEY=value` lines, blank lines and `#` comments skipped; a bare `KEY` takes the
/// value from this environment (as Docker).
pub fn env_files(files: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = vec![];
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("invalid --env-file {f}: {e}"))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if line.contains('=') {
                out.push(line.to_string());
            } else if let Ok(v) = std::env::var(line) {
                out.push(format!("{line}={v}"));
            }
        }
    }
    Ok(out)
}
