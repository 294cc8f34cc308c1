//! What clients may read of the state: without secrets' data, the CA key, join tokens or
//! private keys. The view's wire form is `rpc::messages::ClusterView`.

use crate::state::ClusterState;

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
    // The gossip keys reach agents over their dispatcher sessions only.
    for k in state.gossip_keys.iter_mut().flat_map(|r| r.keys.iter_mut()) {
        k.key.clear();
    }
    state
}
