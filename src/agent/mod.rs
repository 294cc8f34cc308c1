//! The node agent: runs the tasks assigned to this node and wires the overlay, the load
//! balancers and DNS from the dispatcher's stream.
//!
//! One loop: on every new view (and on a short tick, to notice exits) it stops what is no longer
//! wanted, reconciles the data plane, starts what is wanted, and reports task states. The data
//! plane is reconciled from the whole view each time (plan-then-apply makes that cheap and
//! idempotent), so a missed update or a restart repairs itself.

pub mod desired;
pub mod executor;
pub mod health;
pub mod images;
pub mod logs;
pub mod ready;
pub mod volumes;
pub mod worker;
pub mod zone;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_control::dispatcher::messages::Assignment;
use shoal_control::model::{Health, TaskState, TaskStatus};
use shoal_control::node::NodeControl;
use tokio::sync::watch;

use executor::{Executor, ProcessState, TaskRun};

pub struct AgentConfig {
    pub node_id: String,
    pub self_addr: Ipv4Addr,
    /// Time between withdrawing a task from load balancers/DNS and sending it SIGTERM.
    pub drain: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The host's cgroup mounts and this node's cgroup path under them (`shoal/<instance>`):
    /// each task gets its own cgroup there (the eBPF socket LB attaches at the instance's).
    pub cgroups: (executor::cgroups::Layout, PathBuf),
    /// Which load balancer (auto probes the kernel).
    pub lb: shoal_dataplane::lb::Choice,
    /// The node's own control ports, which its tasks must not reach.
    pub control_ports: shoal_dataplane::guard::ControlPorts,
    /// The node's images (and the pulls under way).
    pub images: Arc<images::Images>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn status(state: TaskState, message: &str, err: Option<String>) -> TaskStatus {
    let mut s = TaskStatus::new(state, message, now_ms());
    s.err = err;
    s
}

/// The task's health check: the service's, else its image's HEALTHCHECK (as Docker does).
fn healthcheck(a: &Assignment, cfg: &AgentConfig) -> Option<shoal_control::model::HealthCheck> {
    a.spec.healthcheck.clone().or_else(|| cfg.images.healthcheck(&a.spec.image))
}

/// A running task's status; with a health check it starts as `starting` (not yet an endpoint).
fn running_status(a: &Assignment, cfg: &AgentConfig, message: &str) -> TaskStatus {
    let mut s = status(TaskState::Running, message, None);
    if healthcheck(a, cfg).is_some() {
        s.health = Some(a.task.status.health.filter(|h| *h != Health::Unhealthy).unwrap_or(Health::Starting));
    }
    s
}

/// Reports `report` (Running) for a started task once its program listens on every port in
/// `ports`, or after [`ready::READY_LIMIT`]; nothing if the process ends first (the agent's pass
/// reports the exit).
fn report_when_listening(
    ctl: NodeControl,
    exec: Arc<dyn Executor>,
    awaiting: Arc<Mutex<HashSet<String>>>,
    id: String,
    pid: i32,
    ports: std::collections::BTreeSet<u16>,
    report: TaskStatus,
) {
    tokio::spawn(async move {
        let t0 = std::time::Instant::now();
        let listening = loop {
            if ready::ready(pid, &ports) {
                break true;
            }
            if t0.elapsed() >= ready::READY_LIMIT || exec.state(&id) != ProcessState::Running {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if exec.state(&id) == ProcessState::Running {
            if !listening {
                tracing::info!(task = %id, ?ports, "not listening after {:?}: reported running anyway", ready::READY_LIMIT);
            }
            ctl.report(vec![(id.clone(), report)]).await;
        }
        awaiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
}

/// How long a stop waits for the task to leave the endpoint table, then for every node's load
/// balancers to let go of it (a little over the leader's own wait, so its answer arrives).
const SETTLE_LIMIT: Duration = Duration::from_secs(6);

/// The version of the first view in which task `id` is no endpoint (at once for a task the
/// managers stopped; for one this agent failed, once the managers took the report), or None
/// after `limit`.
async fn withdrawn_at(ctl: &NodeControl, id: &str, limit: Duration) -> Option<u64> {
    let mut view = ctl.view();
    let snap = tokio::time::timeout(limit, view.wait_for(|s| !s.view.endpoints.contains_key(id))).await.ok()?.ok()?;
    Some(snap.version)
}

/// Stops a withdrawn task: once every node's load balancers and DNS let go of it (each node's
/// data plane applied a view without it: none can pick it for a new flow), waits the drain
/// period for the flows it has, then stops its process. `report` says whether to report
/// Shutdown at the end.
fn stop_task(
    exec: Arc<dyn Executor>,
    ctl: NodeControl,
    cfg: Arc<AgentConfig>,
    stopping: Arc<Mutex<HashSet<String>>>,
    id: String,
    report: bool,
) {
    tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        let settled = match withdrawn_at(&ctl, &id, SETTLE_LIMIT).await {
            Some(version) => ctl.settled(version, SETTLE_LIMIT).await,
            None => false,
        };
        if settled {
            tracing::debug!(task = %id, waited = ?t0.elapsed(), "every node let go of the task");
        } else {
            tracing::warn!(task = %id, waited = ?t0.elapsed(), "not every node is known to have let go of the task: stopping it anyway");
        }
        tokio::time::sleep(cfg.drain).await;
        let grace = cfg.stop_grace;
        let e = exec.clone();
        let tid = id.clone();
        let end = tokio::task::spawn_blocking(move || e.stop(&tid, grace)).await;
        let msg = match end {
            Ok(Ok(ProcessState::Exited(code))) => format!("shutdown (exit {code})"),
            _ => "shutdown".to_string(),
        };
        if report {
            ctl.report(vec![(id.clone(), status(TaskState::Shutdown, &msg, None))]).await;
        }
        tracing::info!(task = %id, "{msg}");
        stopping.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
}

pub async fn run(
    ctl: NodeControl,
    cfg: AgentConfig,
    exec: Arc<dyn Executor>,
    dns: Arc<shoal_dns::DnsServer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let mut view = ctl.view();
    let stopping: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Started tasks waiting for their program to listen before they report Running (ready.rs).
    let awaiting: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut reported: HashMap<String, TaskState> = HashMap::new();
    let mut failures = 0u32;
    let worker = match worker::Worker::spawn(cfg.lb, cfg.control_ports.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the data plane worker");
            return;
        }
    };
    // What the last pass saw: a pass runs when the view or a local process changed, after a
    // failure (with backoff), and every few seconds to repair what somebody else changed.
    let mut last: Option<(u64, BTreeMap<String, ProcessState>)> = None;
    let mut last_full = std::time::Instant::now();
    let (mut health, mut verdicts) = health::Monitor::new();
    tracing::info!(node = %cfg.node_id, addr = %cfg.self_addr, "agent running");
    loop {
        let pause = Duration::from_millis(if failures == 0 { 100 } else { (250u64 << failures.min(5)).min(5000) });
        let mut verdict = None;
        tokio::select! {
            _ = view.changed() => {}
            v = verdicts.recv() => verdict = v,
            // A pull ended: start (or reject) the tasks that waited on it now.
            _ = cfg.images.wake.notified() => last = None,
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        let snapshot = view.borrow().clone();
        let v = &snapshot.view;
        if let Some(verdict) = verdict {
            let Some(a) = v.assignments.get(&verdict.task_id) else { continue };
            let report = if verdict.health == Health::Unhealthy {
                // Swarm's answer to an unhealthy task: fail it (out of LB and DNS at once), stop
                // it after the drain, and let the orchestrator replace it.
                health.stop(&verdict.task_id);
                let mut s = status(
                    TaskState::Failed,
                    "unhealthy",
                    Some(format!("unhealthy: {} consecutive health checks failed (last: {})", verdict.failures, verdict.last)),
                );
                s.health = Some(Health::Unhealthy);
                if stopping.lock().unwrap_or_else(|p| p.into_inner()).insert(verdict.task_id.clone()) {
                    stop_task(exec.clone(), ctl.clone(), cfg.clone(), stopping.clone(), verdict.task_id.clone(), false);
                }
                s
            } else {
                let mut s = status(TaskState::Running, &format!("health: {:?}", verdict.health).to_lowercase(), None);
                s.health = Some(verdict.health);
                s
            };
            reported.insert(a.task.id.clone(), report.state);
            ctl.report(vec![(a.task.id.clone(), report)]).await;
            continue;
        }
        let states: BTreeMap<String, ProcessState> = exec
            .known()
            .into_iter()
            .map(|id| {
                let s = exec.state(&id);
                (id, s)
            })
            .collect();
        let now = (snapshot.version, states.clone());
        if failures == 0 && last.as_ref() == Some(&now) && last_full.elapsed() < Duration::from_secs(5) {
            continue;
        }
        last = Some(now);
        last_full = std::time::Instant::now();
        let running: BTreeSet<String> = states.iter().filter(|(_, s)| **s == ProcessState::Running).map(|(id, _)| id.clone()).collect();

        // 1. Stop what is no longer wanted: it left the endpoint table already (it is not
        //    running-and-desired), so after the drain period no new flow reaches it. The drain
        //    starts once this node's load balancer has let go of it (step 3), not before: a slow
        //    data-plane pass must not eat into it.
        let mut to_stop = Vec::new();
        for id in &running {
            let wanted = v.assignments.get(id).is_some_and(|a| a.task.desired_state <= TaskState::Running);
            if wanted || !stopping.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
                continue;
            }
            to_stop.push(id.clone());
        }
        let start_drains = |ids: Vec<String>| {
            for id in ids {
                stop_task(exec.clone(), ctl.clone(), cfg.clone(), stopping.clone(), id, true);
            }
        };

        // 2. DNS first (in memory, fast): a withdrawn task stops being an answer at once.
        if let Err(e) = dns.set_zone(&zone::zone(v)) {
            tracing::warn!(error = %e, "DNS zone rejected");
        }

        // 3. The kernel, from the whole view. Tasks still stopping keep their network.
        let desired = desired::node_state(v, &cfg.node_id, cfg.self_addr, &running);
        let applied = worker.apply(desired).await;
        if applied.is_ok() {
            // Before the drains start: a stop waits for every node, this one included.
            ctl.applied(snapshot.version);
        }
        start_drains(std::mem::take(&mut to_stop));
        match applied {
            Ok((overlay, lb)) => {
                failures = 0;
                if overlay + lb > 0 {
                    tracing::info!(overlay, lb, "data plane reconciled");
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, attempt = failures, "data plane reconcile failed; retrying");
                continue;
            }
        }

        // 3b. Every live local task served by DNS in its namespace (also tasks adopted after a
        //     restart: their sockets died with the old process).
        let attached: HashSet<String> = dns.attached_tasks().into_iter().map(|(id, _)| id).collect();
        for id in running.iter().filter(|id| !attached.contains(*id)) {
            if let Some(a) = v.assignments.get(id) {
                attach_dns(&dns, a, v).await;
            }
        }

        // 4. Start what is wanted, report what ended.
        let mut reports = Vec::new();
        for a in v.assignments.values() {
            let id = &a.task.id;
            if a.task.desired_state > TaskState::Running || a.task.status.state.is_terminal() {
                continue;
            }
            match exec.state(id) {
                ProcessState::Unknown if a.task.not_before_ms <= now_ms() => {
                    match desired::encryption_gate(v, &a.task.networks, worker.encryption_refused().as_deref()) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            reports.push((id.clone(), status(TaskState::Rejected, "rejected", Some(e))));
                            continue;
                        }
                    }
                    let run = match task_run(a, &cfg) {
                        Ok(Some(run)) => run,
                        Ok(None) => {
                            // Swarm's Preparing: the image is being pulled.
                            if reported.get(id) != Some(&TaskState::Preparing) {
                                reports.push((id.clone(), status(TaskState::Preparing, "preparing: pulling the image", None)));
                            }
                            continue;
                        }
                        Err(e) => {
                            reports.push((id.clone(), status(TaskState::Rejected, "rejected", Some(e.to_string()))));
                            continue;
                        }
                    };
                    // Names resolve from the first instruction the task runs.
                    attach_dns(&dns, a, v).await;
                    let e = exec.clone();
                    let started = tokio::task::spawn_blocking(move || e.start(&run)).await;
                    match (started, exec.state(id)) {
                        (Ok(Ok(())), ProcessState::Running) => {
                            let ports = ready::tcp_ports(&a.spec);
                            match exec.task_pid(id) {
                                Some(pid) if healthcheck(a, &cfg).is_none() && !ports.is_empty() => {
                                    awaiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
                                    let report = running_status(a, &cfg, "started");
                                    report_when_listening(ctl.clone(), exec.clone(), awaiting.clone(), id.clone(), pid, ports, report);
                                }
                                _ => reports.push((id.clone(), running_status(a, &cfg, "started"))),
                            }
                        }
                        (Ok(Err(err)), _) => reports.push((id.clone(), status(TaskState::Failed, "start failed", Some(err.to_string())))),
                        _ => {} // exited at once: reported below on the next pass
                    }
                }
                ProcessState::Running
                    if a.task.status.state < TaskState::Running
                        && reported.get(id) != Some(&TaskState::Running)
                        && !awaiting.lock().unwrap_or_else(|p| p.into_inner()).contains(id) =>
                {
                    reports.push((id.clone(), running_status(a, &cfg, "running")));
                }
                ProcessState::Exited(code) if reported.get(id).is_none_or(|s| !s.is_terminal()) => {
                    let (state, err) = if code == 0 {
                        (TaskState::Complete, None)
                    } else {
                        // A start that failed after the executor stopped waiting still says why.
                        let why = exec.start_error(id).map(|e| format!("task {id}: {e}"));
                        (TaskState::Failed, Some(why.unwrap_or_else(|| format!("task exited with code {code}"))))
                    };
                    reports.push((id.clone(), status(state, &format!("exit {code}"), err)));
                }
                _ => {}
            }
        }
        // 5. Health checks for running tasks that have one (not for those being stopped).
        //    The process states read at the top of the pass will do: a task started just now gets
        //    its loop on the next pass (it is `starting` until its first check anyway).
        let now = now_ms();
        let stopping_now = stopping.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let checked: Vec<health::Wanted> = v
            .assignments
            .values()
            .filter(|a| a.task.desired_state == TaskState::Running && !a.task.status.state.is_terminal())
            .filter(|a| running.contains(&a.task.id) && !stopping_now.contains(&a.task.id))
            .filter_map(|a| {
                let check = healthcheck(a, &cfg)?;
                let started = if a.task.status.timestamp_ms > 0 { a.task.status.timestamp_ms } else { now };
                let initial = match a.task.status.health {
                    Some(h @ Health::Healthy) => health::HealthState::adopted(h, started),
                    _ => health::HealthState::new(started),
                };
                Some(health::Wanted { task_id: a.task.id.clone(), check, initial })
            })
            .collect();
        health.sync(checked, &exec);

        // Forget records of tasks the managers no longer assign here.
        for id in exec.known() {
            if !v.assignments.contains_key(&id) && !running.contains(&id) {
                exec.remove(&id);
                reported.remove(&id);
                if attached.contains(&id) {
                    let _ = dns.detach_task(&id).await;
                }
            }
        }
        if !reports.is_empty() {
            for (id, s) in &reports {
                reported.insert(id.clone(), s.state);
            }
            ctl.report(reports).await;
        }
    }
}

async fn attach_dns(dns: &shoal_dns::DnsServer, a: &Assignment, v: &shoal_control::dispatcher::AgentView) {
    let networks: Vec<String> = a
        .task
        .networks
        .iter()
        .filter_map(|n| v.networks.get(&n.network_id).filter(|net| !net.ingress && !net.node_local).map(|net| net.name.clone()))
        .collect();
    let ns = shoal_dataplane::netns::path(&desired::task_netns(&a.task.id));
    if let Err(e) = dns.attach_task(&a.task.id, &ns, networks).await {
        tracing::warn!(task = %a.task.id, error = %e, "cannot serve DNS in the task");
    }
}

/// The task as the executor runs it, or None while its image is being pulled.
fn task_run(a: &Assignment, cfg: &AgentConfig) -> Result<Option<TaskRun>, String> {
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
        cgroups_path: format!("/{}", instance.join(&a.task.id).display()),
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
        id: a.task.id.clone(),
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
fn carried_files(a: &Assignment) -> Result<Vec<executor::spec::CarriedFile>, String> {
    let secrets = a.spec.secrets.iter().map(|r| ("secret", r, r.secret_path(), a.secrets.get(&r.source)));
    let configs = a.spec.configs.iter().map(|r| ("config", r, r.config_path(), a.configs.get(&r.source)));
    secrets
        .chain(configs)
        .map(|(what, r, target, data)| {
            let data = data.ok_or_else(|| format!("{what} {:?} was not sent with the task: it was removed", r.source))?;
            Ok(executor::spec::CarriedFile { target, uid: r.uid, gid: r.gid, mode: r.mode, data: data.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_control::model::{ServiceSpec, Task};
    use std::path::Path;

    #[test]
    fn a_long_service_name_still_gives_a_valid_hostname() {
        // 63 bytes: the longest name `service create` takes; with `.<slot>.<task id>` it
        // was 91 bytes, sethostname(2) refused it and the task never started.
        let service = "s".repeat(63);
        let task = Task {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            service_id: "svc".into(),
            slot: 1,
            node_id: Some("n1".into()),
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, "", 0),
            service_version: 1,
            networks: vec![],
            not_before_ms: 0,
            created_ms: 0,
            weight: 1,
            seq: 1,
            restarts: vec![],
        };
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
