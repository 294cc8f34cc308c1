//! The agent's runner with a fake control plane, executor, data plane and DNS, under a paused
//! clock: the order of a start, the drain before SIGTERM, adoption after a restart, health
//! transitions, and the back-off after data-plane errors.

use super::*;
use crate::agent::executor::inside::Outcome;
use crate::agent::executor::{ExecError, TaskRun};
use crate::agent::images::Images;
use crate::agent::worker::Applied;
use shoal_control::dispatcher::AgentView;
use shoal_control::model::{HealthCheck, ServiceSpec, Task};
use shoal_control::node::ViewSnapshot;
use shoal_control::rpc::session::TaskEndpoint;
use shoal_dns::{DnsError, Zone};
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Zone,
    DataPlane,
    Applied(u64),
    DnsAttach(String),
    Start(String),
    Stop(String),
    Report(String, TaskState, Option<Health>),
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Log {
    fn push(&self, e: Event) {
        self.0.lock().unwrap().push((Instant::now(), e));
    }
    fn all(&self) -> Vec<(Instant, Event)> {
        self.0.lock().unwrap().clone()
    }
    fn at(&self, e: &Event) -> Option<Instant> {
        self.all().into_iter().find(|(_, x)| x == e).map(|(t, _)| t)
    }
    fn index(&self, e: &Event) -> usize {
        self.all().iter().position(|(_, x)| x == e).unwrap_or_else(|| panic!("{e:?} never happened: {:?}", self.all()))
    }
    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.all().iter().filter(|(_, e)| f(e)).count()
    }
}

#[derive(Clone)]
struct FakeControl {
    log: Log,
    view: watch::Sender<Arc<ViewSnapshot>>,
    /// The version every node's data plane holds, as the leader would say.
    cluster: watch::Sender<u64>,
}

impl Control for FakeControl {
    fn view(&self) -> watch::Receiver<Arc<ViewSnapshot>> {
        self.view.subscribe()
    }
    fn report(&self, updates: Vec<(String, TaskStatus)>) -> impl Future<Output = ()> + Send {
        for (id, s) in updates {
            self.log.push(Event::Report(id, s.state, s.health));
        }
        async {}
    }
    fn applied(&self, version: u64) {
        self.log.push(Event::Applied(version));
    }
    fn settled(&self, version: u64, limit: Duration) -> impl Future<Output = bool> + Send {
        let mut rx = self.cluster.subscribe();
        async move { tokio::time::timeout(limit, rx.wait_for(|v| *v >= version)).await.is_ok() }
    }
}

struct FakeNames {
    log: Log,
    attached: Mutex<HashSet<String>>,
}

impl Names for FakeNames {
    fn set_zone(&self, _: &Zone) -> Result<(), DnsError> {
        self.log.push(Event::Zone);
        Ok(())
    }
    fn attach_task(&self, task_id: &str, _: &Path, _: Vec<String>) -> impl Future<Output = Result<(), DnsError>> + Send {
        self.log.push(Event::DnsAttach(task_id.into()));
        self.attached.lock().unwrap().insert(task_id.into());
        async { Ok(()) }
    }
    fn detach_task(&self, task_id: &str) -> impl Future<Output = Result<(), DnsError>> + Send {
        self.attached.lock().unwrap().remove(task_id);
        async { Ok(()) }
    }
    fn attached_tasks(&self) -> HashSet<String> {
        self.attached.lock().unwrap().clone()
    }
}

struct FakeDataPlane {
    log: Log,
    /// Results of the next passes (then Ok).
    results: Mutex<VecDeque<Applied>>,
}

impl DataPlane for FakeDataPlane {
    fn apply(&self, _: shoal_dataplane::state::DesiredNode) -> impl Future<Output = Applied> + Send {
        self.log.push(Event::DataPlane);
        let r = self.results.lock().unwrap().pop_front().unwrap_or(Ok((0, 0)));
        async move { r }
    }
    fn encryption_refused(&self) -> Option<String> {
        None
    }
}

struct FakeExec {
    log: Log,
    processes: Mutex<BTreeMap<String, ProcessState>>,
    /// Whether health checks pass.
    healthy: Mutex<bool>,
}

impl Executor for FakeExec {
    fn start(&self, run: &TaskRun) -> Result<(), ExecError> {
        self.log.push(Event::Start(run.id.clone()));
        self.processes.lock().unwrap().insert(run.id.clone(), ProcessState::Running);
        Ok(())
    }
    fn stop(&self, id: &str, _: Duration) -> Result<ProcessState, ExecError> {
        self.log.push(Event::Stop(id.into()));
        self.processes.lock().unwrap().insert(id.into(), ProcessState::Exited(0));
        Ok(ProcessState::Exited(0))
    }
    fn state(&self, id: &str) -> ProcessState {
        self.processes.lock().unwrap().get(id).copied().unwrap_or(ProcessState::Unknown)
    }
    fn known(&self) -> Vec<String> {
        self.processes.lock().unwrap().keys().cloned().collect()
    }
    fn remove(&self, id: &str) {
        self.processes.lock().unwrap().remove(id);
    }
    fn log_paths(&self, _: &str) -> Option<(PathBuf, PathBuf)> {
        None
    }
    fn run_inside(&self, _: &str, _: &str, _: Duration) -> Result<Outcome, ExecError> {
        let code = if *self.healthy.lock().unwrap() { 0 } else { 1 };
        Ok(Outcome::Exited { code, output: String::new() })
    }
}

const DRAIN: Duration = Duration::from_millis(500);

struct Lab {
    log: Log,
    ctl: FakeControl,
    exec: Arc<FakeExec>,
    version: u64,
    view: AgentView,
    stop: watch::Sender<bool>,
}

impl Lab {
    /// An agent with these tasks already running (as found after a restart) and `failures`
    /// failing data-plane passes first.
    fn start(running: &[&str], failures: usize) -> Lab {
        let log = Log::default();
        let ctl = FakeControl { log: log.clone(), view: watch::channel(Arc::new(ViewSnapshot::default())).0, cluster: watch::channel(0).0 };
        let exec = Arc::new(FakeExec {
            log: log.clone(),
            processes: Mutex::new(running.iter().map(|id| (id.to_string(), ProcessState::Running)).collect()),
            healthy: Mutex::new(true),
        });
        let cfg = AgentConfig {
            node_id: "n1".into(),
            self_addr: std::net::Ipv4Addr::new(10, 0, 0, 1),
            drain: DRAIN,
            stop_grace: Duration::from_secs(1),
            cgroups: (crate::agent::executor::cgroups::Layout::default(), PathBuf::from("shoal/test")),
            lb: Default::default(),
            control_ports: Default::default(),
            images: Arc::new(Images::new(Path::new("/nonexistent"), vec![])),
        };
        let results = (0..failures).map(|_| Err(crate::agent::worker::PassError::WorkerStopped)).collect();
        let runner = Runner {
            ctl: ctl.clone(),
            cfg: Arc::new(cfg),
            exec: exec.clone(),
            dns: Arc::new(FakeNames { log: log.clone(), attached: Mutex::default() }),
            data_plane: FakeDataPlane { log: log.clone(), results: Mutex::new(results) },
        };
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(runner.run(stop_rx));
        Lab { log, ctl, exec, version: 0, view: AgentView::default(), stop }
    }

    /// Publish the view with `tasks`: (id, desired state, reported state), each an endpoint
    /// while it is wanted and running.
    fn publish(&mut self, tasks: &[(&str, TaskState, TaskState)], check: Option<HealthCheck>) {
        self.version += 1;
        self.view.assignments.clear();
        self.view.endpoints.clear();
        for (id, desired, state) in tasks {
            let mut spec = ServiceSpec::new("web", "shoal/whoami");
            spec.healthcheck = check.clone();
            let task = Task::in_slot(id, "svc", 1, Some("n1"), *desired, *state);
            // As the managers' table: serving while wanted and running, draining once told to
            // stop while still running.
            if *state == TaskState::Running {
                self.view.endpoints.insert(
                    (*id).into(),
                    TaskEndpoint {
                        task_id: (*id).into(),
                        service_id: "svc".into(),
                        name: format!("web.1.{id}"),
                        node_id: "n1".into(),
                        node_addr: "10.0.0.1".into(),
                        addresses: vec![],
                        health: None,
                        weight: 1,
                        draining: *desired > TaskState::Running,
                    },
                );
            }
            let a = Assignment { task, service_name: "web".into(), spec, secrets: Default::default(), configs: Default::default() };
            self.view.assignments.insert((*id).into(), a);
        }
        self.ctl.view.send_replace(Arc::new(ViewSnapshot { version: self.version, view: self.view.clone() }));
    }

    async fn until(&self, what: &str, f: impl Fn(&Log) -> bool) {
        let t0 = Instant::now();
        while !f(&self.log) {
            assert!(t0.elapsed() < Duration::from_secs(60), "{what}: never happened: {:?}", self.log.all());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_starts_after_its_network_and_dns_and_is_reported_running() {
    let mut lab = Lab::start(&[], 0);
    lab.publish(&[("t1", TaskState::Running, TaskState::Assigned)], None);
    let running = Event::Report("t1".into(), TaskState::Running, None);
    lab.until("t1 reported running", |l| l.at(&running).is_some()).await;
    let (dp, dns, start, report) = (
        lab.log.index(&Event::DataPlane),
        lab.log.index(&Event::DnsAttach("t1".into())),
        lab.log.index(&Event::Start("t1".into())),
        lab.log.index(&running),
    );
    assert!(lab.log.index(&Event::Zone) < dp, "DNS zone before the kernel");
    assert!(dp < dns && dns < start && start < report, "network, DNS, process, report: {:?}", lab.log.all());
    assert_eq!(lab.log.count(|e| matches!(e, Event::Start(_))), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_task_gets_sigterm_only_after_every_node_let_go_and_the_drain() {
    let mut lab = Lab::start(&[], 0);
    lab.publish(&[("t1", TaskState::Running, TaskState::Assigned)], None);
    lab.until("t1 started", |l| l.at(&Event::Start("t1".into())).is_some()).await;
    lab.publish(&[("t1", TaskState::Running, TaskState::Running)], None);
    lab.publish(&[("t1", TaskState::Shutdown, TaskState::Running)], None);
    let withdrawn = lab.version;
    lab.until("the withdrawal applied here", |l| l.at(&Event::Applied(withdrawn)).is_some()).await;
    // Another node is slow: nothing is stopped while it still balances to the task.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lab.log.at(&Event::Stop("t1".into())), None, "stopped before every node let go of it");
    let settled_at = Instant::now();
    lab.ctl.cluster.send_replace(withdrawn);
    let shutdown = Event::Report("t1".into(), TaskState::Shutdown, None);
    lab.until("t1 reported shut down", |l| l.at(&shutdown).is_some()).await;
    let stopped = lab.log.at(&Event::Stop("t1".into())).unwrap();
    assert!(stopped - settled_at >= DRAIN, "SIGTERM {:?} after the cluster settled: the drain is {DRAIN:?}", stopped - settled_at);
    assert!(lab.log.index(&Event::Stop("t1".into())) < lab.log.index(&shutdown));
    assert_eq!(lab.log.count(|e| matches!(e, Event::Stop(_))), 1, "stopped once");
}

#[tokio::test(start_paused = true)]
async fn a_stop_goes_ahead_when_the_cluster_never_says_it_settled() {
    let mut lab = Lab::start(&["t1"], 0);
    lab.publish(&[("t1", TaskState::Shutdown, TaskState::Running)], None);
    let t0 = Instant::now();
    lab.until("t1 stopped", |l| l.at(&Event::Stop("t1".into())).is_some()).await;
    let waited = lab.log.at(&Event::Stop("t1".into())).unwrap() - t0;
    assert!(waited >= SETTLE_LIMIT + DRAIN, "stopped after {waited:?}, before the settle limit and the drain");
    assert!(waited < SETTLE_LIMIT + DRAIN + Duration::from_secs(1), "a stuck node holds a stop {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_found_running_after_a_restart_is_adopted_not_started_again() {
    let mut lab = Lab::start(&["t1"], 0);
    lab.publish(&[("t1", TaskState::Running, TaskState::Starting)], None);
    let running = Event::Report("t1".into(), TaskState::Running, None);
    lab.until("t1 reported running", |l| l.at(&running).is_some()).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(lab.log.count(|e| matches!(e, Event::Start(_))), 0, "a live task is never started twice");
    assert_eq!(lab.log.count(|e| matches!(e, Event::DnsAttach(_))), 1, "DNS served again in the adopted task, once");
    assert_eq!(lab.log.count(|e| *e == running), 1);
    assert_eq!(lab.exec.state("t1"), ProcessState::Running);
}

#[tokio::test(start_paused = true)]
async fn health_goes_starting_healthy_then_unhealthy_and_the_task_is_failed_and_stopped() {
    let mut lab = Lab::start(&[], 0);
    let check = HealthCheck { cmd: "true".into(), interval_ms: 1000, timeout_ms: 500, retries: 2, start_period_ms: 0 };
    lab.publish(&[("t1", TaskState::Running, TaskState::Assigned)], Some(check.clone()));
    let starting = Event::Report("t1".into(), TaskState::Running, Some(Health::Starting));
    lab.until("t1 running, starting", |l| l.at(&starting).is_some()).await;
    lab.publish(&[("t1", TaskState::Running, TaskState::Running)], Some(check.clone()));
    let healthy = Event::Report("t1".into(), TaskState::Running, Some(Health::Healthy));
    lab.until("t1 healthy", |l| l.at(&healthy).is_some()).await;
    *lab.exec.healthy.lock().unwrap() = false;
    let failing = Instant::now();
    let unhealthy = Event::Report("t1".into(), TaskState::Failed, Some(Health::Unhealthy));
    lab.until("t1 failed as unhealthy", |l| l.at(&unhealthy).is_some()).await;
    let after = lab.log.at(&unhealthy).unwrap() - failing;
    // Two failed checks 1 s apart, the first at the next tick (within 1 s).
    assert!(after > Duration::from_secs(1) && after <= Duration::from_millis(2050), "unhealthy after {after:?}: 2 failures 1 s apart");
    // The managers took the report: the task is no endpoint, every node let go of it.
    lab.publish(&[("t1", TaskState::Running, TaskState::Failed)], Some(check));
    lab.ctl.cluster.send_replace(lab.version);
    lab.until("t1 stopped", |l| l.at(&Event::Stop("t1".into())).is_some()).await;
    assert!(lab.log.at(&Event::Stop("t1".into())).unwrap() - lab.log.at(&unhealthy).unwrap() >= DRAIN);
    assert_eq!(lab.log.count(|e| matches!(e, Event::Report(_, TaskState::Shutdown, _))), 0, "a failed task is not reported shut down");
}

#[tokio::test(start_paused = true)]
async fn failed_data_plane_passes_back_off_and_nothing_starts_until_one_succeeds() {
    let mut lab = Lab::start(&[], 4);
    lab.publish(&[("t1", TaskState::Running, TaskState::Assigned)], None);
    lab.until("t1 started", |l| l.at(&Event::Start("t1".into())).is_some()).await;
    let passes: Vec<Instant> = lab.log.all().into_iter().filter(|(_, e)| *e == Event::DataPlane).map(|(t, _)| t).collect();
    assert!(passes.len() >= 5, "{passes:?}");
    let gaps: Vec<Duration> = passes.windows(2).take(4).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let want = pause(i as u32 + 1);
        assert!(*gap >= want && *gap < want + Duration::from_millis(50), "gap {i} is {gap:?}, wanted {want:?}: {gaps:?}");
    }
    let first_good = lab.log.all().iter().enumerate().filter(|(_, (_, e))| *e == Event::DataPlane).nth(4).map(|(i, _)| i).unwrap();
    assert!(lab.log.index(&Event::Start("t1".into())) > first_good, "a task starts only after its network is up");
    assert_eq!(
        lab.log.count(|e| matches!(e, Event::Applied(_))),
        lab.log.count(|e| *e == Event::DataPlane) - 4,
        "only successful passes are acknowledged"
    );
}
