//! Carries out the agent's passes (`pass::plan`) against the real world: the executor, the
//! data-plane worker, DNS and the control plane, each behind a seam so the tests run it all
//! with fakes under a paused clock.
//!
//! One loop: on every new view (and on a short tick, to notice exits) it plans a pass and runs
//! it: stop what is no longer wanted (after every node let go of it and the drain), DNS, the
//! data plane, start what is wanted (network and DNS before the process), report task states.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_control::model::{Health, TaskState, TaskStatus};
use shoal_control::rpc::session::Assignment;
use tokio::sync::watch;

use super::executor::{Executor, ProcessState};
use super::pass::{self, Report};
use super::seams::{Control, DataPlane, Names};
use super::{desired, health, healthcheck, now_ms, ready, running_status, status, task_run, AgentConfig};

/// How long a stop waits for the task to leave the endpoint table, then for every node's load
/// balancers to let go of it (a little over the leader's own wait, so its answer arrives).
pub const SETTLE_LIMIT: Duration = Duration::from_secs(6);

/// The pause between passes: short while all is well, doubling after each failed data-plane
/// pass up to 5 s.
pub fn pause(failures: u32) -> Duration {
    Duration::from_millis(if failures == 0 { 100 } else { (250u64 << failures.min(5)).min(5000) })
}

type Shared = Arc<Mutex<HashSet<String>>>;

fn locked(s: &Shared) -> std::sync::MutexGuard<'_, HashSet<String>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Runner<C: Control, D: DataPlane, N: Names> {
    pub ctl: C,
    pub cfg: Arc<AgentConfig>,
    pub exec: Arc<dyn Executor>,
    pub dns: Arc<N>,
    pub data_plane: D,
}

/// What the agent is doing, between passes.
struct Doing {
    /// Tasks being stopped (draining).
    stopping: Shared,
    /// Started tasks waiting for their program to listen before they report Running (ready.rs).
    awaiting: Shared,
    /// The last state reported for each task.
    reported: HashMap<String, TaskState>,
    /// Data-plane passes failed in a row.
    failures: u32,
}

impl<C: Control, D: DataPlane, N: Names> Runner<C, D, N> {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut view = self.ctl.view();
        let mut gossip = self.ctl.gossip_members();
        let mut held_dead = std::collections::BTreeSet::new();
        let mut doing = Doing { stopping: Arc::default(), awaiting: Arc::default(), reported: HashMap::new(), failures: 0 };
        // What the last pass saw: a pass runs when the view or a local process changed, after a
        // failure (with backoff), and every few seconds to repair what somebody else changed.
        let mut last: Option<(u64, BTreeMap<String, ProcessState>)> = None;
        let mut last_full = tokio::time::Instant::now();
        let (mut health, mut verdicts) = health::Monitor::new();
        tracing::info!(node = %self.cfg.node_id, addr = %self.cfg.self_addr, "agent running");
        loop {
            let mut verdict = None;
            tokio::select! {
                _ = view.changed() => {}
                // A peer confirmed dead or back: its endpoints leave or rejoin at once.
                Ok(()) = gossip.changed() => last = None,
                v = verdicts.recv() => verdict = v,
                // A pull ended: start (or reject) the tasks that waited on it now.
                _ = self.cfg.images.wake.notified() => last = None,
                _ = tokio::time::sleep(pause(doing.failures)) => {}
                _ = shutdown.changed() => return,
            }
            let snapshot = view.borrow().clone();
            if let Some(verdict) = verdict {
                self.on_verdict(&snapshot.view, verdict, &mut health, &mut doing).await;
                continue;
            }
            let processes: BTreeMap<String, ProcessState> =
                self.exec.known().into_iter().map(|id| (id.clone(), self.exec.state(&id))).collect();
            let now = (snapshot.version, processes.clone());
            if doing.failures == 0 && last.as_ref() == Some(&now) && last_full.elapsed() < Duration::from_secs(5) {
                continue;
            }
            last = Some(now);
            last_full = tokio::time::Instant::now();
            let dead = pass::held_dead(&gossip.borrow_and_update(), &self.cfg.node_id);
            if dead != held_dead {
                tracing::info!(node = %self.cfg.node_id, dead = ?dead, "gossip: endpoints of nodes held dead are left out of this node's load balancer and DNS");
                held_dead = dead.clone();
            }
            self.pass(&snapshot, &processes, &dead, &mut health, &mut doing).await;
        }
    }

    /// A health check changed its verdict. Swarm's answer to an unhealthy task: fail it (out of
    /// LB and DNS once the managers take the report), stop it after the drain, and let the
    /// orchestrator replace it.
    async fn on_verdict(
        &self,
        v: &shoal_control::dispatcher::AgentView,
        verdict: health::Verdict,
        health: &mut health::Monitor,
        doing: &mut Doing,
    ) {
        let Some(a) = v.assignments.get(verdict.task_id.as_str()) else { return };
        let report = if verdict.health == Health::Unhealthy {
            health.stop(&verdict.task_id);
            let mut s = status(
                TaskState::Failed,
                "unhealthy",
                Some(format!("unhealthy: {} consecutive health checks failed (last: {})", verdict.failures, verdict.last)),
            );
            s.health = Some(Health::Unhealthy);
            if locked(&doing.stopping).insert(verdict.task_id.clone()) {
                self.stop_task(&doing.stopping, verdict.task_id.clone(), false);
            }
            s
        } else {
            let mut s = status(TaskState::Running, &format!("health: {:?}", verdict.health).to_lowercase(), None);
            s.health = Some(verdict.health);
            s
        };
        doing.reported.insert(a.task.id.to_string(), report.state);
        self.ctl.report(vec![(a.task.id.to_string(), report)]).await;
    }

    async fn pass(
        &self,
        snapshot: &shoal_control::node::ViewSnapshot,
        processes: &BTreeMap<String, ProcessState>,
        dead_nodes: &std::collections::BTreeSet<String>,
        health: &mut health::Monitor,
        doing: &mut Doing,
    ) {
        let v = &snapshot.view;
        let cfg = &self.cfg;
        // The plan borrows what it reads; it is dropped before the first await.
        let plan = {
            let check = |a: &Assignment| healthcheck(a, cfg);
            let (stopping, awaiting) = (locked(&doing.stopping).clone(), locked(&doing.awaiting).clone());
            let inputs = pass::Inputs {
                view: v,
                node_id: &cfg.node_id,
                self_addr: cfg.self_addr,
                processes,
                stopping: &stopping,
                awaiting: &awaiting,
                reported: &doing.reported,
                healthcheck: &check,
                now_ms: now_ms(),
                dead_nodes,
            };
            pass::plan(&inputs, &self.dns.attached_tasks())
        };

        // 1. What is no longer wanted left the endpoint table already; it is stopped once this
        //    node's load balancer let go of it (after step 3: a slow data-plane pass must not eat
        //    into the drain), and every other node's.
        for id in &plan.stop {
            locked(&doing.stopping).insert(id.clone());
        }

        // 2. DNS first (in memory, fast): a withdrawn task stops being an answer at once.
        if let Err(e) = self.dns.set_zone(&plan.zone) {
            tracing::warn!(error = %e, "DNS zone rejected");
        }

        // 3. The kernel, from the whole view.
        let applied = self.data_plane.apply(plan.data_plane).await;
        if applied.is_ok() {
            // Before the drains start: a stop waits for every node, this one included.
            self.ctl.applied(snapshot.version);
        }
        for id in plan.stop {
            self.stop_task(&doing.stopping, id, true);
        }
        match applied {
            Ok((overlay, lb)) => {
                doing.failures = 0;
                if overlay + lb > 0 {
                    tracing::info!(overlay, lb, "data plane reconciled");
                }
            }
            Err(e) => {
                doing.failures += 1;
                tracing::warn!(error = %e, attempt = doing.failures, "data plane reconcile failed; retrying");
                return;
            }
        }

        // 3b. Live tasks DNS does not serve yet (adopted after a restart).
        for id in &plan.attach_dns {
            if let Some(a) = v.assignments.get(id.as_str()) {
                self.attach_dns(a, v).await;
            }
        }

        // 4. Start what is wanted, report what ended.
        let mut reports = Vec::new();
        for id in &plan.start {
            let Some(a) = v.assignments.get(id.as_str()) else { continue };
            if let Some(report) = self.start(a, v, &doing.awaiting, &doing.reported).await {
                reports.push((id.clone(), report));
            }
        }
        for r in plan.reports {
            match r {
                Report::Running(id) => {
                    if let Some(a) = v.assignments.get(id.as_str()) {
                        reports.push((id, running_status(a, cfg, "running")));
                    }
                }
                Report::Exited(id, code) => {
                    let (state, err) = if code == 0 {
                        (TaskState::Complete, None)
                    } else {
                        // A start that failed after the executor stopped waiting still says why.
                        let why = self.exec.start_error(&id).map(|e| format!("task {id}: {e}"));
                        (TaskState::Failed, Some(why.unwrap_or_else(|| format!("task exited with code {code}"))))
                    };
                    reports.push((id, status(state, &format!("exit {code}"), err)));
                }
            }
        }

        // 5. Health checks for running tasks that have one (not for those being stopped). A task
        //    started just now gets its loop on the next pass (it is `starting` until its first
        //    check anyway).
        health.sync(plan.checks, &self.exec);

        // Forget records of tasks the managers no longer assign here.
        let attached = self.dns.attached_tasks();
        for id in plan.forget {
            self.exec.remove(&id);
            doing.reported.remove(&id);
            if attached.contains(&id) {
                let _ = self.dns.detach_task(&id).await;
            }
        }
        if !reports.is_empty() {
            for (id, s) in &reports {
                doing.reported.insert(id.clone(), s.state);
            }
            self.ctl.report(reports).await;
        }
    }

    /// Starts one task: network (already up from step 3), DNS, then the process. The status to
    /// report now, if any (Running is reported later for a task that must listen first).
    async fn start(
        &self,
        a: &Assignment,
        v: &shoal_control::dispatcher::AgentView,
        awaiting: &Shared,
        reported: &HashMap<String, TaskState>,
    ) -> Option<TaskStatus> {
        let id = a.task.id.as_str();
        let cfg = &self.cfg;
        match desired::encryption_gate(v, &a.task.networks, self.data_plane.encryption_refused().as_deref()) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(status(TaskState::Rejected, "rejected", Some(e.to_string()))),
        }
        let run = match task_run::task_run(a, cfg) {
            Ok(Some(run)) => run,
            // Swarm's Preparing: the image is being pulled.
            Ok(None) if reported.get(id) != Some(&TaskState::Preparing) => {
                return Some(status(TaskState::Preparing, "preparing: pulling the image", None));
            }
            Ok(None) => return None,
            Err(e) => return Some(status(TaskState::Rejected, "rejected", Some(e.to_string()))),
        };
        // Names resolve from the first instruction the task runs.
        self.attach_dns(a, v).await;
        let e = self.exec.clone();
        let started = tokio::task::spawn_blocking(move || e.start(&run)).await;
        match (started, self.exec.state(id)) {
            (Ok(Ok(())), ProcessState::Running) => {
                let ports = ready::tcp_ports(&a.spec);
                match self.exec.task_pid(id) {
                    Some(pid) if healthcheck(a, cfg).is_none() && !ports.is_empty() => {
                        locked(awaiting).insert(id.to_string());
                        let report = running_status(a, cfg, "started");
                        self.report_when_listening(awaiting.clone(), id.to_string(), pid, ports, report);
                        None
                    }
                    _ => Some(running_status(a, cfg, "started")),
                }
            }
            (Ok(Err(err)), _) => Some(status(TaskState::Failed, "start failed", Some(err.to_string()))),
            _ => None, // exited at once: reported on the next pass
        }
    }

    async fn attach_dns(&self, a: &Assignment, v: &shoal_control::dispatcher::AgentView) {
        let networks: Vec<String> = a
            .task
            .networks
            .iter()
            .filter_map(|n| v.networks.get(&n.network_id).filter(|net| !net.ingress && !net.node_local).map(|net| net.name.clone()))
            .collect();
        let ns = shoal_dataplane::netns::path(&desired::task_netns(&a.task.id));
        if let Err(e) = self.dns.attach_task(&a.task.id, &ns, networks).await {
            tracing::warn!(task = %a.task.id, error = %e, "cannot serve DNS in the task");
        }
    }

    /// Reports `report` (Running) for a started task once its program listens on every port in
    /// `ports`, or after [`ready::READY_LIMIT`]; nothing if the process ends first (the next
    /// pass reports the exit).
    fn report_when_listening(&self, awaiting: Shared, id: String, pid: i32, ports: std::collections::BTreeSet<u16>, report: TaskStatus) {
        let (ctl, exec) = (self.ctl.clone(), self.exec.clone());
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
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
            locked(&awaiting).remove(&id);
        });
    }

    /// Stops a withdrawn task: once every node's load balancers and DNS let go of it (each
    /// node's data plane applied a view without it: none can pick it for a new flow), waits the
    /// drain period for the flows it has, then stops its process. `report` says whether to
    /// report Shutdown at the end.
    fn stop_task(&self, stopping: &Shared, id: String, report: bool) {
        let (ctl, exec, cfg, stopping) = (self.ctl.clone(), self.exec.clone(), self.cfg.clone(), stopping.clone());
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
            let (e, tid) = (exec.clone(), id.clone());
            let end = tokio::task::spawn_blocking(move || e.stop(&tid, grace)).await;
            let msg = match end {
                Ok(Ok(ProcessState::Exited(code))) => format!("shutdown (exit {code})"),
                _ => "shutdown".to_string(),
            };
            if report {
                ctl.report(vec![(id.clone(), status(TaskState::Shutdown, &msg, None))]).await;
            }
            tracing::info!(task = %id, "{msg}");
            locked(&stopping).remove(&id);
        });
    }
}

/// The version of the first view in which task `id` is no endpoint (at once for a task the
/// managers stopped; for one this agent failed, once the managers took the report), or None
/// after `limit`.
async fn withdrawn_at(ctl: &impl Control, id: &str, limit: Duration) -> Option<u64> {
    let mut view = ctl.view();
    let withdrawn = |s: &Arc<shoal_control::node::ViewSnapshot>| s.view.endpoints.get(id).is_none_or(|e| e.draining);
    let snap = tokio::time::timeout(limit, view.wait_for(withdrawn)).await.ok()?.ok()?;
    Some(snap.version)
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
