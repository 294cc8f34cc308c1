//! What `node ls`, `service ps` and friends read: the state without secrets' data, the CA key
//! or join tokens, plus Raft facts (leader, voters).

use crate::state::ClusterState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterView {
    pub state: ClusterState,
    /// Raft id of the leader, if one is known.
    pub leader: Option<u64>,
    pub voters: BTreeSet<u64>,
    /// Raft id of the manager that answered.
    pub this_manager: u64,
    /// Last applied log index on that manager.
    pub applied: u64,
}

pub fn redact(mut state: ClusterState) -> ClusterState {
    if let Some(c) = state.cluster.as_mut() {
        c.ca_key_pem.clear();
        // Whether autolock is on stays visible; the key itself only through `unlock-key`.
        if c.autolock_key.is_some() {
            c.autolock_key = Some(String::new());
        }
        if let Some(r) = c.ca_rotation.as_mut() {
            r.key_pem.clear();
        }
        c.worker_token.clear();
        c.manager_token.clear();
    }
    for s in state.secrets.values_mut() {
        s.spec.data.clear();
    }
    // WireGuard private keys reach only their own node, over its dispatcher session.
    for w in state.wireguard.values_mut() {
        w.private_key.clear();
    }
    if let Some(k) = state.pair_keys.as_mut() {
        k.seed.clear();
    }
    state
}
