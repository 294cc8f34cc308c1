//! The leader issues WireGuard identities: once a network is encrypted, every node without one
//! gets a fresh key pair (generated here, from the OS's random source; the state machine cannot
//! draw random numbers and stay deterministic) through an `IssueWireGuard` command.

use super::Manager;
use crate::model::{generate_private_key, generate_seed};
use crate::state::Command;
use std::time::Duration;

pub async fn issue_loop(mgr: Manager) {
    let mut shutdown = mgr.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
        if !mgr.is_leader() {
            continue;
        }
        let now = super::now_ms();
        if mgr.shared().read(|s| s.pair_keys_due(now)) {
            match mgr.propose_as_leader(Command::RotatePairKeys { seed: generate_seed() }).await {
                Ok(_) => tracing::info!("rotated the node pairs' WireGuard preshared keys"),
                Err(e) => tracing::warn!("rotating the node pairs' keys: {e}"),
            }
        }
        let missing = mgr.shared().read(|s| s.nodes_missing_wireguard());
        if missing.is_empty() {
            continue;
        }
        let cmds: Vec<Command> =
            missing.iter().map(|node| Command::IssueWireGuard { node: node.clone(), private_key: generate_private_key() }).collect();
        match mgr.propose_as_leader(Command::Batch(cmds)).await {
            Ok(_) => tracing::info!(nodes = ?missing, "issued WireGuard identities"),
            Err(e) => tracing::warn!(nodes = ?missing, "issuing WireGuard identities: {e}"),
        }
    }
}
