//! The leader's side of an agent session, driven through a fake [`Leader`] under a paused
//! clock: no Raft, no sockets. The agent's inbound stream is a channel the test writes to.

use super::session::{self, SETTLE_WAIT};
use super::{Leader, Liveness, Sessions, ViewCache};
use crate::logs::broker::Broker;
use crate::model::{Role, ServiceMode, ServiceSpec, TaskState, TaskStatus};
use crate::rpc::session::{AgentMessage, AgentUpdate, SessionMessage};
use crate::state::limits::{MAX_REPORT_UPDATES, REPORT_RATE_PER_SEC};
use crate::state::{Command, Request};
use crate::store::SharedState;
use crate::testkit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

const LEADER_ADDR: &str = "192.168.1.1:2377";
const PERIOD: Duration = Duration::from_secs(1);

/// A leader whose Raft is a list: proposals are applied to the state at once and told to the
/// test with the time they arrived.
#[derive(Clone)]
struct FakeLeader(Arc<Inner>);

struct Inner {
    leading: AtomicBool,
    shared: Arc<SharedState>,
    liveness: Liveness,
    sessions: Sessions,
    views: ViewCache,
    logs: Broker,
    shutdown: watch::Sender<bool>,
    proposed: mpsc::UnboundedSender<(Instant, Command)>,
    /// How long a proposal takes to commit (a Raft write under load).
    commit_time: std::sync::Mutex<Duration>,
}

impl Leader for FakeLeader {
    type ProposeError = std::convert::Infallible;

    fn is_leader(&self) -> bool {
        self.0.leading.load(Ordering::SeqCst)
    }
    fn leader_addr(&self) -> Option<String> {
        Some(LEADER_ADDR.into())
    }
    fn managers(&self) -> (Vec<String>, Vec<crate::model::NodeId>) {
        (vec![LEADER_ADDR.into()], vec!["n1".into()])
    }
    fn voters(&self) -> Vec<u64> {
        vec![1]
    }
    fn shared(&self) -> Arc<SharedState> {
        self.0.shared.clone()
    }
    fn liveness(&self) -> &Liveness {
        &self.0.liveness
    }
    fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }
    fn views(&self) -> &ViewCache {
        &self.0.views
    }
    fn logs(&self) -> &Broker {
        &self.0.logs
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.subscribe()
    }
    async fn propose(&self, cmd: Command) -> Result<(), Self::ProposeError> {
        let _ = self.0.proposed.send((Instant::now(), cmd.clone()));
        let commit_time = *self.0.commit_time.lock().unwrap_or_else(|p| p.into_inner());
        tokio::time::sleep(commit_time).await;
        let _ = self.0.shared.apply_detached(&Request { now_ms: 5_000, cmd });
        Ok(())
    }
}

type Out = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

/// A cluster of `n1` (manager, the leader) and `n2` (worker), and the proposals' channel.
fn cluster(leading: bool) -> (FakeLeader, mpsc::UnboundedReceiver<(Instant, Command)>) {
    let shared = SharedState::detached();
    let init = Command::Init { cluster: testkit::cluster(), node: testkit::node("n1", Role::Manager) };
    for cmd in [init, Command::AddNode { node: testkit::node("n2", Role::Worker) }] {
        shared.apply_detached(&Request { now_ms: 1_000, cmd }).expect("setup command applies");
    }
    let (proposed, rx) = mpsc::unbounded_channel();
    let inner = Inner {
        leading: AtomicBool::new(leading),
        shared,
        liveness: Liveness::new(PERIOD),
        sessions: Sessions::default(),
        views: ViewCache::default(),
        logs: Broker::default(),
        shutdown: watch::channel(false).0,
        proposed,
        commit_time: std::sync::Mutex::new(Duration::ZERO),
    };
    (FakeLeader(Arc::new(inner)), rx)
}

fn create_service(leader: &FakeLeader, name: &str, replicas: i64) {
    let mut spec = ServiceSpec::new(name, "nginx");
    spec.mode = ServiceMode::Replicated { replicas };
    leader.shared().apply_detached(&Request { now_ms: 2_000, cmd: Command::CreateService { spec } }).expect("service is created");
}

/// Open a session for `node`; the sender is the agent's side of the inbound stream.
fn open(leader: &FakeLeader, node: &str) -> (mpsc::Sender<AgentMessage>, Out) {
    let (tx, rx) = mpsc::channel(16);
    let out = session::open(leader.clone(), node.into(), None, ReceiverStream::new(rx).map(Ok)).expect("session opens");
    (tx, out)
}

async fn next(out: &mut Out) -> SessionMessage {
    match tokio::time::timeout(Duration::from_secs(60), out.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("expected a session message, got {other:?}"),
    }
}

async fn next_update(out: &mut Out) -> AgentUpdate {
    loop {
        match next(out).await {
            SessionMessage::Update(u) => return *u,
            SessionMessage::Managers { .. } | SessionMessage::Trust { .. } => continue,
            other => panic!("expected an update, got {other:?}"),
        }
    }
}

/// A task of `n2`, from the state.
fn task_of_n2(leader: &FakeLeader) -> crate::model::TaskId {
    leader.shared().read(|s| s.tasks.values().find(|t| t.node_id.as_deref() == Some("n2")).map(|t| t.id.clone())).expect("a task on n2")
}

#[tokio::test(start_paused = true)]
async fn hello_first_then_a_full_snapshot_then_deltas() {
    let (leader, _proposed) = cluster(true);
    let (_agent, mut out) = open(&leader, "n2");
    match next(&mut out).await {
        SessionMessage::Hello { node_id, heartbeat_period_ms, managers, .. } => {
            assert_eq!(node_id, "n2");
            assert_eq!(heartbeat_period_ms, PERIOD.as_millis() as u64);
            assert_eq!(managers, vec![LEADER_ADDR.to_string()]);
        }
        other => panic!("expected Hello first, got {other:?}"),
    }
    let full = next_update(&mut out).await;
    assert!(full.full, "the first update is a full snapshot: {full:?}");
    assert!(full.assignments.is_empty(), "no service yet");
    create_service(&leader, "web", 2);
    let delta = next_update(&mut out).await;
    assert!(!delta.full, "later updates are deltas");
    assert!(delta.version > full.version);
    assert_eq!(delta.assignments.len(), 1, "n2 got one of the two tasks: {delta:?}");
    assert_eq!(delta.assignments[0].service_name, "web");
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_the_node_seen_and_silence_does_not() {
    let (leader, _proposed) = cluster(true);
    let (agent, mut out) = open(&leader, "n2");
    let _hello = next(&mut out).await;
    for _ in 0..30 {
        tokio::time::sleep(PERIOD).await;
        agent.send(AgentMessage::Heartbeat).await.expect("session reads");
        tokio::task::yield_now().await;
        assert!(!leader.liveness().expired("n2", Instant::now()), "a heartbeating node stays alive");
    }
    tokio::time::sleep(PERIOD * 30).await;
    assert!(leader.liveness().expired("n2", Instant::now()), "a silent node expires");
}

#[tokio::test(start_paused = true)]
async fn a_node_not_in_the_cluster_is_refused() {
    let (leader, _proposed) = cluster(true);
    let (_tx, rx) = mpsc::channel(1);
    let err = match session::open(leader, "ghost".into(), None, ReceiverStream::new(rx).map(Ok)) {
        Err(e) => e,
        Ok(_) => panic!("a node that is not in the cluster got a session"),
    };
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("node ghost is not part of the cluster"), "{}", err.message());
}

#[tokio::test(start_paused = true)]
async fn a_manager_that_does_not_lead_redirects_to_the_leader() {
    let (leader, _proposed) = cluster(false);
    let (_agent, mut out) = open(&leader, "n2");
    match next(&mut out).await {
        SessionMessage::Redirect { leader } => assert_eq!(leader.as_deref(), Some(LEADER_ADDR)),
        other => panic!("expected a redirect, got {other:?}"),
    }
    assert!(out.next().await.is_none(), "nothing else is sent");
}

#[tokio::test(start_paused = true)]
async fn a_second_session_of_a_node_closes_the_first() {
    let (leader, _proposed) = cluster(true);
    let (_old_agent, mut old) = open(&leader, "n2");
    let _hello = next(&mut old).await;
    let _full = next_update(&mut old).await;
    let (_agent, mut new) = open(&leader, "n2");
    let _hello = next(&mut new).await;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(60), old.next()).await.expect("the old session ends") {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the old session ended without saying why"),
        }
    };
    assert_eq!(closed.code(), tonic::Code::Aborted);
    assert!(closed.message().contains("opened a newer session"), "{}", closed.message());
    assert!(matches!(next_update(&mut new).await, AgentUpdate { full: true, .. }), "the new session goes on");
}

#[tokio::test(start_paused = true)]
async fn reports_are_forwarded_at_the_session_rate() {
    let (leader, mut proposed) = cluster(true);
    create_service(&leader, "web", 2);
    let (agent, mut out) = open(&leader, "n2");
    let _hello = next(&mut out).await;
    // The open marks the node ready only when it is not; drain whatever it proposed.
    while proposed.try_recv().is_ok() {}
    let task = task_of_n2(&leader);
    let running = TaskStatus::new(TaskState::Running, "started", 3_000);
    // A full bucket's worth goes at once; the next as many wait for the bucket to refill.
    let burst = vec![(task.clone(), running.clone()); MAX_REPORT_UPDATES];
    let sent = Instant::now();
    agent.send(AgentMessage::TaskStatus { updates: burst.clone() }).await.expect("session reads");
    let (at, cmd) = proposed.recv().await.expect("the report is proposed");
    assert!(matches!(&cmd, Command::TaskStatus { node, updates } if node == "n2" && updates.len() == MAX_REPORT_UPDATES), "{cmd:?}");
    assert_eq!(at, sent, "the first burst is not held back");
    agent.send(AgentMessage::TaskStatus { updates: burst }).await.expect("session reads");
    let (at, _) = proposed.recv().await.expect("the second report is proposed");
    let refill = Duration::from_secs_f64(MAX_REPORT_UPDATES as f64 / REPORT_RATE_PER_SEC as f64);
    assert!(at - sent >= refill, "the second burst waited {:?}, less than the refill time {refill:?}", at - sent);
    assert!(!leader.liveness().expired("n2", Instant::now()), "a throttled node is talking: it stays alive");
    // A report about a task of another node is not forwarded.
    let foreign = leader.shared().read(|s| s.tasks.values().find(|t| t.node_id.as_deref() == Some("n1")).map(|t| t.id.clone()));
    let foreign = foreign.expect("a task on n1");
    agent.send(AgentMessage::TaskStatus { updates: vec![(foreign, running)] }).await.expect("session reads");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(proposed.try_recv().is_err(), "a foreign report became a proposal");
}

#[tokio::test(start_paused = true)]
async fn a_slow_raft_write_of_a_report_does_not_make_the_node_look_silent() {
    let (leader, mut proposed) = cluster(true);
    create_service(&leader, "web", 2);
    let (agent, mut out) = open(&leader, "n2");
    let _hello = next(&mut out).await;
    while proposed.try_recv().is_ok() {}
    let task = task_of_n2(&leader);
    *leader.0.commit_time.lock().unwrap() = PERIOD * 10;
    agent
        .send(AgentMessage::TaskStatus { updates: vec![(task, TaskStatus::new(TaskState::Running, "started", 3_000))] })
        .await
        .expect("session reads");
    proposed.recv().await.expect("the report is proposed");
    // The agent goes on heartbeating while its report is being written; the session reads none
    // of it until the write is done.
    for _ in 0..12 {
        tokio::time::sleep(PERIOD).await;
        let _ = agent.try_send(AgentMessage::Heartbeat);
        assert!(!leader.liveness().expired("n2", Instant::now()), "a node whose report is being written is not silent");
    }
    // Once written, a node that stops talking is found silent as usual.
    drop(agent);
    tokio::time::sleep(PERIOD * 30).await;
    assert!(leader.liveness().expired("n2", Instant::now()), "a node gone silent after its report expires");
}

/// Open a session for `node` and read up to its first (full) update.
async fn opened(leader: &FakeLeader, node: &str) -> (mpsc::Sender<AgentMessage>, Out, u64) {
    let (agent, mut out) = open(leader, node);
    let _hello = next(&mut out).await;
    let full = next_update(&mut out).await;
    (agent, out, full.version)
}

async fn settled(out: &mut Out) -> u64 {
    loop {
        match next(out).await {
            SessionMessage::Settled { version } => return version,
            SessionMessage::Update(_) | SessionMessage::Managers { .. } | SessionMessage::Trust { .. } => continue,
            other => panic!("expected Settled, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn await_settled_is_answered_once_every_session_applied() {
    let (leader, _proposed) = cluster(true);
    let (a1, _o1, v1) = opened(&leader, "n1").await;
    let (a2, mut o2, v2) = opened(&leader, "n2").await;
    let version = v1.max(v2);
    let asked = Instant::now();
    a2.send(AgentMessage::Applied { version: v2 }).await.expect("session reads");
    a2.send(AgentMessage::AwaitSettled { version }).await.expect("session reads");
    tokio::time::sleep(Duration::from_millis(100)).await;
    a1.send(AgentMessage::Applied { version: v1 }).await.expect("session reads");
    assert!(settled(&mut o2).await >= version, "every data plane holds the version");
    assert!(asked.elapsed() < SETTLE_WAIT, "answered when the last node applied, not at the timeout");
}

#[tokio::test(start_paused = true)]
async fn await_settled_gives_up_on_a_node_behind_after_the_settle_wait() {
    let (leader, _proposed) = cluster(true);
    let (_a1, _o1, _) = opened(&leader, "n1").await;
    let (a2, mut o2, v2) = opened(&leader, "n2").await;
    let asked = Instant::now();
    a2.send(AgentMessage::Applied { version: v2 }).await.expect("session reads");
    a2.send(AgentMessage::AwaitSettled { version: v2 }).await.expect("session reads");
    assert!(settled(&mut o2).await < v2, "n1 never applied: the answer says what they hold");
    assert!(asked.elapsed() >= SETTLE_WAIT, "waited {:?}", asked.elapsed());
}

/// Many sessions, one build per applied version: each session folds the steps since what it
/// was sent into its agent's view, which ends equal to the view built for its node alone.
#[tokio::test(start_paused = true)]
async fn sessions_share_one_build_per_version_and_their_agents_hold_their_own_views() {
    let (leader, _proposed) = cluster(true);
    let nodes: Vec<String> = std::iter::once("n2".to_string()).chain((3..=40).map(|i| format!("n{i}"))).collect();
    for n in nodes.iter().skip(1) {
        leader.shared().apply_detached(&Request { now_ms: 1_500, cmd: Command::AddNode { node: testkit::node(n, Role::Worker) } }).unwrap();
    }
    let mut agents = Vec::new();
    for n in &nodes {
        let (tx, mut out) = open(&leader, n);
        let _hello = next(&mut out).await;
        let mut view = super::AgentView::default();
        view.apply(&next_update(&mut out).await);
        agents.push((n.clone(), tx, out, view));
    }
    let before = leader.views().builds();
    for i in 0..5 {
        create_service(&leader, &format!("svc{i}"), 20);
    }
    for (node, _tx, out, view) in agents.iter_mut() {
        while view.services.len() < 5 {
            let u = next_update(out).await;
            assert!(!u.full, "{node} got a full update for a delta");
            view.apply(&u);
        }
        let want = leader.shared().read(|s| super::AgentView::for_node(s, node, &super::EndpointTable::from_state(s)));
        assert_eq!(view.assignments, want.assignments, "{node}");
        assert_eq!((&view.services, &view.endpoints, &view.networks), (&want.services, &want.endpoints, &want.networks), "{node}");
    }
    let builds = leader.views().builds() - before;
    assert!((1..=5).contains(&builds), "{builds} builds for 5 applied entries and {} sessions", nodes.len());
}
