//! The scale harness (issue 20): real managers, each on a tokio runtime of its own so the
//! leader's CPU can be read from its threads, and many simulated agents on the caller's
//! runtime. Every agent is a whole node: its own state directory, identity and certificate
//! (joined with the worker token), and a dispatcher session to the leader over TLS on
//! loopback; `sim_agent` runs what it is assigned. No gossip (in-process nodes share one
//! address; the gossip figures come from `gossip::sim`).
//!
//! Used by `control/tests/scale.rs` (a few dozen agents) and `benches/scale.rs` (1,000).

use super::{free_port, sim_agent};
use crate::manager::RaftTiming;
use crate::model::{NodeId, Role};
use crate::node::{InitOptions, JoinOptions, LocalReply, LocalRequest, NodeConfig, NodeControl};
use crate::rpc::messages::{ApiRequest, ApiResponse};
use crate::state::{Command, Response, StateError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A manager and the runtime it runs on.
pub struct ManagerNode {
    pub node: NodeControl,
    pub addr: String,
    /// Its runtime's threads are named this (workers and blocking threads alike).
    pub threads: String,
    rt: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    /// Its own agent (`sim_agent`, once it is part of the cluster), on its runtime.
    sim: Option<JoinHandle<()>>,
    /// Ends the runtime's thread (which drops the runtime).
    end: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct AgentNode {
    pub node: NodeControl,
    pub id: NodeId,
    stop: watch::Sender<bool>,
    sim: JoinHandle<()>,
}

pub struct Harness {
    pub managers: Vec<ManagerNode>,
    pub agents: Vec<AgentNode>,
    _dir: StateDir,
}

/// The harness's state directory, removed when the harness goes (a failed test's too).
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Production timing: 1 s heartbeats, Raft's defaults.
fn config(dir: &Path, name: &str) -> (NodeConfig, String) {
    let port = free_port();
    let mut cfg = NodeConfig::new(dir.join(name));
    cfg.socket = None;
    cfg.listen_addr = SocketAddr::from(([127, 0, 0, 1], port));
    cfg.advertise_addr = Some(format!("127.0.0.1:{port}"));
    cfg.hostname = name.to_string();
    cfg.raft = RaftTiming::default();
    (cfg, format!("127.0.0.1:{port}"))
}

impl ManagerNode {
    /// Start a node on a new runtime of `workers` threads named `threads`.
    async fn start(dir: &Path, name: &str, threads: &str, workers: usize) -> Result<ManagerNode, String> {
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let thread_name = threads.to_string();
        let thread = std::thread::Builder::new()
            .name(threads.to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name(thread_name)
                    // Blocking threads (fsyncs) that ended would take their CPU time out of
                    // /proc/self/task: they are kept for the harness's life.
                    .thread_keep_alive(Duration::from_secs(24 * 3600))
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                // Until told to end (or the harness is gone): then the runtime drops here, off
                // any async context.
                let _ = end_rx.recv();
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(|e| format!("start {name}'s runtime thread: {e}"))?;
        let rt = handle_rx.await.map_err(|_| format!("{name}'s runtime thread ended"))??;
        let (cfg, addr) = config(dir, name);
        let (stop, rx) = watch::channel(false);
        let node = rt.spawn(NodeControl::start(cfg, rx)).await.map_err(|e| e.to_string())?.map_err(|e| format!("start {name}: {e}"))?;
        Ok(ManagerNode { node, addr, threads: threads.to_string(), rt, stop, sim: None, end: Some(end_tx), thread: Some(thread) })
    }

    /// A local request served on the manager's own runtime (what it starts runs there).
    pub async fn handle(&self, req: LocalRequest) -> Result<LocalReply, String> {
        let node = self.node.clone();
        self.rt.spawn(async move { node.handle(req).await }).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    }

    /// Propose through this manager (forwarded to the leader) and wait until it is applied.
    pub async fn propose(&self, cmd: Command) -> Result<Result<Response, StateError>, String> {
        match self.handle(LocalRequest::Api(ApiRequest::Propose(cmd))).await? {
            LocalReply::Api(ApiResponse::Committed { result, .. }) => Ok(result),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    pub async fn is_leader(&self) -> bool {
        match self.node.manager().await {
            Some(m) => m.is_leader(),
            None => false,
        }
    }

    /// CPU time (user + system) of this manager's runtime threads so far.
    pub fn cpu(&self) -> Duration {
        threads_cpu(&self.threads)
    }

    /// Run its agent (on its own runtime, as a node's agent shares its process).
    fn run_agent(&mut self) {
        let node = self.node.clone();
        let _guard = self.rt.enter();
        self.sim = Some(sim_agent(node));
    }

    /// Stop the manager (its state directory stays), as a killed node: the others elect a
    /// new leader and the agents' sessions go there.
    pub async fn shutdown(mut self) {
        if let Some(sim) = self.sim.take() {
            sim.abort();
        }
        self.stop.send_replace(true);
        let node = self.node.clone();
        let _ = self.rt.spawn(async move { node.stop().await }).await;
        if let Some(end) = self.end.take() {
            let _ = end.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Sums utime + stime of this process's threads whose name starts with `prefix`
/// (/proc/self/task/*/stat, in clock ticks of 10 ms on Linux).
pub fn threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // After the ")" that ends the name: state is field 3, utime 14 and stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(14) + field(15);
    }
    Duration::from_millis(ticks * 10)
}

impl Harness {
    /// `managers` managers (the first inits, the rest join) and `agents` agents, `parallel`
    /// joins at a time, each agent running `sim_agent` once joined. State under `dir`
    /// (removed by `shutdown`).
    pub async fn start(dir: &Path, managers: usize, agents: usize, parallel: usize) -> Result<Harness, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("make {}: {e}", dir.display()))?;
        let mut ms: Vec<ManagerNode> = Vec::new();
        let first = ManagerNode::start(dir, "m1", "mgr1-", 2).await?;
        let (worker_token, manager_token) = match first
            .handle(LocalRequest::Init(InitOptions {
                advertise_addr: first.addr.clone(),
                listen_addr: None,
                default_addr_pool: vec![],
                default_addr_pool_mask_length: 24,
                force_new_cluster: false,
                task_history_limit: None,
                cert_expiry_ms: None,
                autolock: false,
            }))
            .await?
        {
            LocalReply::Initialized { worker_token, manager_token, .. } => (worker_token, manager_token),
            other => return Err(format!("init: {other:?}")),
        };
        let leader_addr = first.addr.clone();
        let mut first = first;
        first.run_agent();
        ms.push(first);
        for i in 2..=managers {
            let mut m = ManagerNode::start(dir, &format!("m{i}"), &format!("mgr{i}-"), 2).await?;
            let req = LocalRequest::Join(JoinOptions {
                token: manager_token.clone(),
                remote: leader_addr.clone(),
                advertise_addr: None,
                listen_addr: None,
            });
            match m.handle(req).await? {
                LocalReply::Joined { role: Role::Manager, .. } => {}
                other => return Err(format!("join m{i}: {other:?}")),
            }
            m.run_agent();
            ms.push(m);
        }
        let mut harness = Harness { managers: ms, agents: Vec::new(), _dir: StateDir(dir.to_path_buf()) };
        let mut joining = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < agents || !joining.is_empty() {
            while next < agents && joining.len() < parallel.max(1) {
                next += 1;
                let (cfg, _) = config(dir, &format!("a{next}"));
                let (token, remote) = (worker_token.clone(), leader_addr.clone());
                joining.spawn(async move { join_agent(cfg, token, remote).await });
            }
            match joining.join_next().await {
                Some(Ok(Ok(a))) => harness.agents.push(a),
                Some(Ok(Err(e))) => {
                    harness.shutdown().await;
                    return Err(e);
                }
                Some(Err(e)) => {
                    harness.shutdown().await;
                    return Err(e.to_string());
                }
                None => {}
            }
        }
        Ok(harness)
    }

    /// The manager that leads now, if any.
    pub async fn leader(&self) -> Option<&ManagerNode> {
        for m in &self.managers {
            if m.is_leader().await {
                return Some(m);
            }
        }
        None
    }

    /// Every node's (managers' and agents') control handle.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeControl> {
        self.managers.iter().map(|m| &m.node).chain(self.agents.iter().map(|a| &a.node))
    }

    /// Stop everything and remove the state directory.
    pub async fn shutdown(self) {
        for a in self.agents {
            a.sim.abort();
            a.stop.send_replace(true);
            a.node.stop().await;
        }
        for m in self.managers {
            m.shutdown().await;
        }
    }
}

async fn join_agent(cfg: NodeConfig, token: String, remote: String) -> Result<AgentNode, String> {
    let name = cfg.hostname.clone();
    let (stop, rx) = watch::channel(false);
    let node = NodeControl::start(cfg, rx).await.map_err(|e| format!("start {name}: {e}"))?;
    let req = LocalRequest::Join(JoinOptions { token, remote, advertise_addr: None, listen_addr: None });
    match node.handle(req).await.map_err(|e| format!("join {name}: {e}"))? {
        LocalReply::Joined { role: Role::Worker, .. } => {}
        other => return Err(format!("join {name}: {other:?}")),
    }
    let id = node.node_id().await.ok_or_else(|| format!("{name} has no node id after joining"))?;
    let sim = sim_agent(node.clone());
    Ok(AgentNode { node, id, stop, sim })
}
