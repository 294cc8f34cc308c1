//! Work only the leader does, in background loops: mark silent nodes down, fire ticks for
//! restart delays and rolling updates, and keep the Raft voters equal to the nodes whose role is manager.

use super::{now_ms, Manager, ManagerError};
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
        tokio::spawn(super::wireguard::issue_loop(mgr)),
    ]
}

async fn liveness_loop(mgr: Manager) {
    let period = mgr.config().heartbeat_period;
    let mut shutdown = mgr.shutdown_signal();
    let mut was_leader = false;
    let mut stepped_down = false;
    let mut unconfirmed_warned = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period / 2) => {}
            _ = shutdown.changed() => return,
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
        let nodes: Vec<(String, NodeState)> = mgr.shared().read(|s| s.nodes.values().map(|n| (n.id.clone(), n.state)).collect());
        let now = tokio::time::Instant::now();
        // A node marked down whose session is still open and heartbeating again (it stalled,
        // or its heartbeats were held up) is ready again, as a node that reconnects is: else a
        // single stall would leave it down, and out of scheduling, for as long as it stays up.
        for (node, _) in nodes.iter().filter(|(n, s)| *s == NodeState::Down && mgr.sessions().current(n).is_some()) {
            if mgr.liveness().expired(node, now) {
                continue;
            }
            tracing::info!(%node, "heartbeats resumed on the open session: marking node ready");
            let cmd = Command::SetNodeState { node: node.clone(), state: NodeState::Ready, message: String::new() };
            if let Err(e) = mgr.propose_as_leader(cmd).await {
                tracing::warn!("marking node ready: {e}");
            }
        }
        let expired: Vec<String> = nodes
            .into_iter()
            .filter(|(node, state)| *state != NodeState::Down && mgr.liveness().expired(node, now))
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
            tracing::warn!(%node, "heartbeat failure: marking node down");
            let cmd = Command::SetNodeState { node, state: NodeState::Down, message: "heartbeat failure".into() };
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
    tokio::time::timeout(timeout, raft.add_learner(raft_id, BasicNode::new(&addr), true))
        .await
        .map_err(|_| ManagerError::Timeout(timeout))?
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
    let mut voters: BTreeSet<u64> = raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    voters.insert(raft_id);
    tokio::time::timeout(timeout, raft.change_membership(voters, false))
        .await
        .map_err(|_| ManagerError::Timeout(timeout))?
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
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
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
    tracing::info!(raft_id, "manager removed from Raft voters");
    Ok(())
}
