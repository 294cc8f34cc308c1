//! Work only the leader does, in background loops: mark silent nodes down, fire ticks for
//! restart delays and rolling updates, and keep the Raft voters equal to the nodes whose role is manager.

use super::{now_ms, Manager, ManagerError};
use crate::dispatcher::should_mark_down;
use crate::model::{NodeState, Role};
use crate::state::Command;
use openraft::BasicNode;
use std::collections::BTreeSet;
use std::time::Duration;

pub fn spawn_loops(mgr: Manager) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(liveness_loop(mgr.clone())),
        tokio::spawn(tick_loop(mgr.clone())),
        tokio::spawn(membership_loop(mgr.clone())),
        tokio::spawn(super::wireguard::issue_loop(mgr.clone())),
        tokio::spawn(super::gossip::issue_loop(mgr)),
    ]
}

async fn liveness_loop(mgr: Manager) {
    let period = mgr.config().heartbeat_period;
    let mut shutdown = mgr.shutdown_signal();
    let mut was_leader = false;
    let mut stepped_down = false;
    let mut unconfirmed_warned = None;
    let mut kept_warned: std::collections::HashMap<crate::model::NodeId, tokio::time::Instant> = Default::default();
    let mut woke = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period / 2) => {}
            _ = shutdown.changed() => return,
        }
        // Woken a whole period later than asked: this process did not run meanwhile, and the
        // heartbeats that came in may still wait to be read. Count silence from now.
        let late = woke.elapsed().saturating_sub(period / 2);
        woke = tokio::time::Instant::now();
        if late > period {
            tracing::info!(late_ms = late.as_millis() as u64, "this manager stalled: counting nodes' silence from now");
            mgr.liveness().stalled(woke);
        }
        if !mgr.raft_alive() && !stepped_down {
            // The Raft core stopped under a live server. Step down: no session may stay on a
            // manager that drops every report while the new leader reschedules its tasks.
            tracing::error!("the Raft core stopped: stepping down and closing every agent session");
            mgr.sessions().close_all();
            stepped_down = true;
        }
        let leader = mgr.is_leader();
        if leader && !was_leader {
            // A new leader gives every node a full grace period to find it.
            mgr.liveness().reset_all(tokio::time::Instant::now());
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        let nodes: Vec<(crate::model::NodeId, NodeState)> =
            mgr.shared().read(|s| s.nodes.values().map(|n| (n.id.clone(), n.state)).collect());
        let now = tokio::time::Instant::now();
        // A node marked down whose session is still open and heartbeating again (it stalled,
        // or its heartbeats were held up) is ready again, as a node that reconnects is: else a
        // single stall would leave it down, and out of scheduling, for as long as it stays up.
        for (node, _) in nodes.iter().filter(|(n, s)| *s == NodeState::Down && mgr.sessions().current(n).is_some()) {
            if mgr.liveness().expired(node, now) {
                continue;
            }
            tracing::info!(%node, "heartbeats resumed on the open session: marking node ready");
            let cmd = Command::SetNodeState { node: node.to_string(), state: NodeState::Ready, message: String::new() };
            if let Err(e) = mgr.propose_as_leader(cmd).await {
                tracing::warn!("marking node ready: {e}");
            }
        }
        let gossip = mgr.gossip().statuses();
        let expired: Vec<crate::model::NodeId> = nodes
            .into_iter()
            .filter(|(_, state)| *state != NodeState::Down)
            .filter(|(node, _)| {
                let silent = mgr.liveness().expired(node, now);
                let seen = gossip.as_ref().and_then(|g| g.get(node.as_str())).copied();
                let down = should_mark_down(silent, seen);
                if silent && !down && kept_warned.get(node).is_none_or(|at: &tokio::time::Instant| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(%node, "heartbeats silent, but gossip holds the node alive: it stays ready (cut off from this leader alone?)");
                    kept_warned.insert(node.clone(), now);
                }
                down
            })
            .map(|(n, _)| n)
            .collect();
        if expired.is_empty() {
            continue;
        }
        // Silence from agents is also what a leader cut off from the others hears. It judges
        // nodes dead only while a quorum still follows it (a heartbeat round, now): a deposed
        // leader that does not know it yet marks nothing down.
        if let Err(e) = mgr.raft().get_read_log_id().await {
            if unconfirmed_warned.is_none_or(|at: tokio::time::Instant| at.elapsed() > Duration::from_secs(5)) {
                tracing::warn!(nodes = ?expired, "nodes silent, but this manager cannot confirm it still leads, so it marks none down: {e}");
                unconfirmed_warned = Some(tokio::time::Instant::now());
            }
            continue;
        }
        for node in expired {
            let message = match gossip.as_ref().and_then(|g| g.get(node.as_str())) {
                Some(s) => format!("heartbeat failure; gossip holds it {}", s.as_str()),
                None => "heartbeat failure".to_string(),
            };
            tracing::warn!(%node, %message, "marking node down");
            let cmd = Command::SetNodeState { node: node.into_string(), state: NodeState::Down, message };
            if let Err(e) = mgr.propose_as_leader(cmd).await {
                tracing::warn!("marking node down: {e}");
            }
        }
    }
}

/// Proposes a `Tick` when a deadline of the state has come (a restart delay, an update's delay
/// or monitor window): it sleeps until the next deadline it knows of, and at most `TICK_POLL`
/// (a command may bring a nearer one meanwhile).
async fn tick_loop(mgr: Manager) {
    let mut shutdown = mgr.shutdown_signal();
    loop {
        let now = now_ms();
        let next = mgr.shared().read(|s| s.next_deadline(now));
        let wait = next.map_or(TICK_POLL, |at| Duration::from_millis(at.saturating_sub(now)).clamp(Duration::from_millis(1), TICK_POLL));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if !mgr.is_leader() {
            continue;
        }
        let now = now_ms();
        if mgr.shared().read(|s| s.is_due(now)) {
            if let Err(e) = mgr.propose_as_leader(Command::Tick).await {
                tracing::debug!("tick: {e}");
            }
        }
    }
}

const TICK_POLL: Duration = Duration::from_millis(100);

async fn membership_loop(mgr: Manager) {
    let mut shutdown = mgr.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = shutdown.changed() => return,
        }
        if !mgr.is_leader() {
            continue;
        }
        let voters: BTreeSet<u64> = mgr.raft().metrics().borrow().membership_config.membership().voter_ids().collect();
        let (want, addrs): (BTreeSet<u64>, Vec<(u64, String)>) = mgr.shared().read(|s| {
            let managers: Vec<_> = s.nodes.values().filter(|n| n.role == Role::Manager).collect();
            (
                managers.iter().map(|n| n.raft_id).collect(),
                managers.iter().filter_map(|n| n.manager_addr.clone().map(|a| (n.raft_id, a))).collect(),
            )
        });
        if want.is_empty() {
            continue;
        }
        // Remove voters whose node was demoted or removed (never the last one).
        let stale: Vec<u64> = voters.iter().filter(|v| !want.contains(v)).copied().collect();
        for v in stale {
            if let Err(e) = remove_voter(&mgr, v).await {
                tracing::warn!(raft_id = v, "removing Raft voter: {e}");
            }
        }
        for (raft_id, addr) in addrs {
            if !voters.contains(&raft_id) {
                if let Err(e) = add_voter(&mgr, raft_id, addr).await {
                    tracing::debug!(raft_id, "adding Raft voter (will retry): {e}");
                }
            }
        }
    }
}

pub async fn add_voter(mgr: &Manager, raft_id: u64, addr: String) -> Result<(), ManagerError> {
    let raft = mgr.raft();
    let timeout = Duration::from_secs(3);
    let manager = &mgr.config().advertise;
    tokio::time::timeout(timeout, raft.add_learner(raft_id, BasicNode::new(&addr), true))
        .await
        .map_err(|_| ManagerError::Timeout(timeout))?
        .map_err(|e| ManagerError::write(manager, format!("adding manager {raft_id} ({addr}) as a Raft learner"), e))?;
    let mut voters: BTreeSet<u64> = raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    voters.insert(raft_id);
    tokio::time::timeout(timeout, raft.change_membership(voters, false))
        .await
        .map_err(|_| ManagerError::Timeout(timeout))?
        .map_err(|e| ManagerError::write(manager, format!("adding Raft voter {raft_id}"), e))?;
    tracing::info!(raft_id, %addr, "manager added to Raft voters");
    Ok(())
}

pub async fn remove_voter(mgr: &Manager, raft_id: u64) -> Result<(), ManagerError> {
    let raft = mgr.raft();
    let mut voters: BTreeSet<u64> = raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    if !voters.remove(&raft_id) || voters.is_empty() {
        return Ok(());
    }
    let timeout = Duration::from_secs(3);
    tokio::time::timeout(timeout, raft.change_membership(voters, false))
        .await
        .map_err(|_| ManagerError::Timeout(timeout))?
        .map_err(|e| ManagerError::write(&mgr.config().advertise, format!("removing Raft voter {raft_id}"), e))?;
    tracing::info!(raft_id, "manager removed from Raft voters");
    Ok(())
}
