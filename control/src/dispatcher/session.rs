//! One agent session on the leader: send the node's view as a full snapshot, then deltas
//! whenever the state moves; take heartbeats and task reports.

use super::reports::{self, TokenBucket};
use super::view_cache::{self, Built};
use super::Leader;
use crate::model::NodeState;
use crate::rpc::session::{AgentMessage, SessionMessage};
use crate::state::Command;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

type Out = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send + 'static>>;

/// `peer`: the agent's address and port as this manager sees them (logged, so an operator can
/// match a session to a connection in `ss`).
/// `inbound`: what the agent sends (tonic's `Streaming` on a manager, a channel in tests).
pub fn open<L: Leader>(
    mgr: L,
    node_id: crate::model::NodeId,
    peer: Option<std::net::SocketAddr>,
    mut inbound: impl Stream<Item = Result<AgentMessage, Status>> + Send + Unpin + 'static,
) -> Result<Out, Status> {
    let (tx, rx) = mpsc::channel::<Result<SessionMessage, Status>>(64);
    let out: Out = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
    if !mgr.is_leader() {
        let leader = mgr.leader_addr();
        let _ = tx.try_send(Ok(SessionMessage::Redirect { leader }));
        return Ok(out);
    }
    let node = mgr.shared().read(|s| s.nodes.get(&node_id).cloned());
    let Some(node) = node else {
        return Err(Status::permission_denied(format!("node {node_id} is not part of the cluster (removed?)")));
    };
    let heartbeat_period_ms = mgr.liveness().period().as_millis() as u64;
    let session_id: String = crate::model::random_id();
    let managers = mgr.managers();
    let _ = tx.try_send(Ok(SessionMessage::Hello {
        node_id: node_id.clone(),
        session_id: session_id.clone(),
        heartbeat_period_ms,
        managers: managers.0.clone(),
        manager_ids: managers.1.clone(),
    }));
    mgr.liveness().seen(&node_id, tokio::time::Instant::now());
    // One session per node: this one closes any other, and closes when a newer one opens.
    let replaced = mgr.sessions().register(&node_id, &session_id);
    mgr.logs().attach(&node_id, &session_id, tx.clone());
    let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
    tracing::info!(node = %node_id, session = %session_id, %peer, "agent session opened");
    if node.state != NodeState::Ready {
        let m = mgr.clone();
        let n = node_id.clone();
        tokio::spawn(async move {
            let cmd = Command::SetNodeState { node: n.into_string(), state: NodeState::Ready, message: String::new() };
            if let Err(e) = m.propose(cmd).await {
                tracing::warn!("marking node ready: {e}");
            }
        });
    }
    // Outbound: views as deltas.
    let (closed_tx, mut closed_rx) = tokio::sync::watch::channel(false);
    {
        let mgr = mgr.clone();
        let node_id = node_id.clone();
        let tx = tx.clone();
        let mut replaced = replaced.clone();
        let session = session_id.clone();
        tokio::spawn(async move {
            let shared = mgr.shared();
            let mut applied = shared.subscribe();
            let mut shutdown = mgr.shutdown_signal();
            let mut sent: Option<view_cache::Sent> = None;
            let mut sent_managers = managers;
            let mut sent_trust = String::new();
            loop {
                if !mgr.is_leader() {
                    let _ = tx.send(Ok(SessionMessage::Redirect { leader: mgr.leader_addr() })).await;
                    return;
                }
                let managers = mgr.managers();
                if managers != sent_managers {
                    let (addrs, ids) = managers.clone();
                    if tx.send(Ok(SessionMessage::Managers { managers: addrs, manager_ids: ids })).await.is_err() {
                        return;
                    }
                    sent_managers = managers;
                }
                let trust = shared.read(|s| s.cluster.as_ref().map(|c| c.trust_bundle()).unwrap_or_default());
                if trust != sent_trust {
                    if tx.send(Ok(SessionMessage::Trust { ca_pem: trust.clone() })).await.is_err() {
                        return;
                    }
                    sent_trust = trust;
                }
                applied.borrow_and_update();
                // One build per applied version for every session; this node's part of the
                // steps since what it was sent (or everything, first and after a long stall).
                let built = mgr.views().current(&shared);
                let version = built.version;
                let steps = sent.as_ref().and_then(|s| mgr.views().steps(s.version, version));
                let (update, now) = view_cache::update(&node_id, role_of(&mgr, &built, &node_id), &built, sent.as_ref(), steps.as_deref());
                if update.is_empty() {
                    mgr.sessions().progress(&node_id, &session, |p| p.unchanged(version));
                } else {
                    mgr.sessions().progress(&node_id, &session, |p| p.sent(version));
                    if tx.send(Ok(SessionMessage::Update(Box::new(update)))).await.is_err() {
                        return;
                    }
                }
                sent = Some(now);
                tokio::select! {
                    // Replacement first: the inbound half also ends on it and closes
                    // `closed_rx`, and the agent must still be told why its session ended.
                    biased;
                    _ = until_replaced(&mut replaced) => {
                        let _ = tx.send(Err(Status::aborted(format!("node {node_id} opened a newer session: this one is closed")))).await;
                        return;
                    }
                    r = applied.changed() => if r.is_err() { return },
                    _ = closed_rx.changed() => return,
                    _ = shutdown.changed() => return,
                    // Re-check leadership now and then even when nothing is applied.
                    _ = tokio::time::sleep(mgr.liveness().period()) => {}
                }
            }
        });
    }
    // Settling: answer the agent's latest `AwaitSettled` (one waiter per session, however
    // many the agent sends).
    let (await_tx, await_rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(answer_settled(mgr.clone(), node_id.clone(), await_rx, tx.downgrade()));
    // Inbound: heartbeats and task reports, until the agent or a newer session ends it.
    tokio::spawn(async move {
        let mut replaced = replaced;
        let mut bucket = TokenBucket::for_session(tokio::time::Instant::now());
        loop {
            let msg = tokio::select! {
                m = inbound.next() => m,
                _ = until_replaced(&mut replaced) => break,
            };
            match msg {
                Some(Ok(AgentMessage::Heartbeat)) => mgr.liveness().seen(&node_id, tokio::time::Instant::now()),
                Some(Ok(AgentMessage::Describe { encryption })) => {
                    let known = mgr.shared().read(|s| s.nodes.get(&node_id).map(|n| n.encryption));
                    if known.is_some_and(|k| k != encryption) {
                        tracing::info!(node = %node_id, ?encryption, "the node's encryption support changed (a new kernel?): recorded");
                        let cmd = Command::SetNodeEncryption { node: node_id.clone(), encryption };
                        if let Err(e) = busy_with(&mgr, &node_id, mgr.propose(cmd)).await {
                            tracing::warn!(node = %node_id, "recording the node's encryption support: {e}");
                        }
                    }
                }
                Some(Ok(AgentMessage::TaskStatus { updates })) => {
                    mgr.liveness().seen(&node_id, tokio::time::Instant::now());
                    let screened = mgr.shared().read(|s| reports::screen(s, &node_id, updates));
                    if screened.over_cap > 0 {
                        tracing::warn!(node = %node_id, session = %session_id, dropped = screened.over_cap, "task report over the per-message cap");
                    }
                    for task in &screened.foreign {
                        tracing::warn!(node = %node_id, task = %task, "dropped a report for a task not assigned to this node");
                    }
                    if screened.kept.is_empty() {
                        continue;
                    }
                    let wait = bucket.take(screened.kept.len(), tokio::time::Instant::now());
                    if !wait.is_zero() && !throttle(&mgr, &node_id, wait, &mut replaced).await {
                        break;
                    }
                    let cmd = Command::TaskStatus { node: node_id.clone(), updates: screened.kept };
                    let started = tokio::time::Instant::now();
                    if let Err(e) = busy_with(&mgr, &node_id, mgr.propose(cmd)).await {
                        tracing::warn!(node = %node_id, "recording task states: {e}");
                    }
                    let took = started.elapsed();
                    if took > mgr.liveness().period() {
                        tracing::info!(node = %node_id, took_ms = took.as_millis() as u64, "recording task states was slow: the node's heartbeats waited, and it was kept alive meanwhile");
                    }
                }
                Some(Ok(AgentMessage::Logs { request_id, logs })) => mgr.logs().answer(&request_id, logs),
                Some(Ok(AgentMessage::Applied { version })) => mgr.sessions().progress(&node_id, &session_id, |p| p.acked(version)),
                Some(Ok(AgentMessage::AwaitSettled { version })) => {
                    await_tx.send_if_modified(|w| std::mem::replace(w, version.max(*w)) < version);
                }
                None | Some(Err(_)) => break,
            }
        }
        mgr.logs().detach(&node_id, &session_id);
        mgr.sessions().unregister(&node_id, &session_id);
        tracing::info!(node = %node_id, session = %session_id, "agent session closed");
        let _ = closed_tx.send(true);
    });
    Ok(out)
}

/// How long the leader waits for every data plane to hold a version before it answers with
/// the version they do hold: a node whose data plane is stuck must not hold stops up forever.
pub const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers each version the agent waits for with `Settled` once every open session's data
/// plane holds it, or after [`SETTLE_WAIT`] with what they hold (naming the nodes behind).
async fn answer_settled<L: Leader>(
    mgr: L,
    node_id: crate::model::NodeId,
    mut wanted: tokio::sync::watch::Receiver<u64>,
    // Weak: the session's stream ends when its own tasks end (a manager shutting down), not
    // when this one does.
    tx: mpsc::WeakSender<Result<SessionMessage, Status>>,
) {
    let mut settled = mgr.sessions().settled();
    while wanted.changed().await.is_ok() {
        let version = *wanted.borrow_and_update();
        if tokio::time::timeout(SETTLE_WAIT, settled.wait_for(|s| *s >= version)).await.is_err() {
            let lagging = mgr.sessions().lagging(version);
            tracing::warn!(node = %node_id, version, ?lagging, "nodes' data planes are behind: a stop proceeds without them");
        }
        let now = *settled.borrow_and_update();
        let Some(tx) = tx.upgrade() else { return };
        if tx.send(Ok(SessionMessage::Settled { version: now })).await.is_err() {
            return;
        }
    }
}

/// Runs `work` for a node's session while keeping the node alive: the session reads nothing
/// meanwhile, so the heartbeats queued behind a slow Raft write (seconds, under disk load) are
/// unread, and that silence is this manager's, not the node's. A node that really stopped is
/// found silent once the work is done.
async fn busy_with<L: Leader, T>(mgr: &L, node_id: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(mgr.liveness().period()) => mgr.liveness().seen(node_id, tokio::time::Instant::now()),
        }
    }
}

/// Wait out the report rate limit. The node is talking (we are the ones not reading), so it
/// stays alive meanwhile. False when the session was replaced during the wait.
async fn throttle<L: Leader>(mgr: &L, node_id: &str, wait: std::time::Duration, replaced: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tracing::debug!(node = %node_id, ?wait, "task reports over the session's rate: slowing down");
    let until = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < until {
        let slice = mgr.liveness().period().min(until - tokio::time::Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(slice) => {}
            _ = until_replaced(replaced) => return false,
        }
        mgr.liveness().seen(node_id, tokio::time::Instant::now());
    }
    true
}

/// The role to tell the node. A demoted manager keeps its manager role until it has left the
/// Raft voters, or the joint configuration could never commit without it.
fn role_of<L: Leader>(mgr: &L, built: &Built, node_id: &str) -> Option<crate::model::Role> {
    let (role, raft_id) = *built.nodes.get(node_id)?;
    if role == crate::model::Role::Worker && mgr.voters().contains(&raft_id) {
        return Some(crate::model::Role::Manager);
    }
    Some(role)
}

/// Resolves when a newer session of the node replaced this one (or the registry went away).
async fn until_replaced(replaced: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = replaced.wait_for(|r| *r).await.map(|_| ());
}
