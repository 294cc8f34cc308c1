//! WireGuard identities of the nodes (encrypted networks): which nodes still need one, and
//! issuing one (the key comes from the proposing manager; the address is chosen here, so every
//! replica picks the same).

use super::{ClusterState, Response, StateError};
use crate::model::{public_key_of, WireGuardIdentity, PAIR_KEY_ROTATION_MS};
use std::net::Ipv4Addr;

/// Tunnel addresses come from here: outside Docker's and shoal's default pools' usual start
/// (10.0.0.0/8 is carved from its bottom), skipping any network's subnet.
pub const TUNNEL_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 255, 0, 0), 16);

impl ClusterState {
    /// Nodes that need a WireGuard identity and have none: every node, once any network is
    /// encrypted (a task of it may be placed anywhere, and every node may be its peer).
    pub fn nodes_missing_wireguard(&self) -> Vec<crate::model::NodeId> {
        if !self.networks.values().any(|n| n.is_encrypted()) {
            return Vec::new();
        }
        self.nodes.keys().filter(|id| !self.wireguard.contains_key(*id)).cloned().collect()
    }

    /// Whether the leader should issue a fresh pair-key seed at `now`: the first once a network
    /// is encrypted, then every [`PAIR_KEY_ROTATION_MS`] and when a rotation was asked for.
    pub fn pair_keys_due(&self, now: u64) -> bool {
        if !self.networks.values().any(|n| n.is_encrypted()) {
            return false;
        }
        match &self.pair_keys {
            None => true,
            Some(k) => {
                now >= k.issued_ms.saturating_add(PAIR_KEY_ROTATION_MS) || self.key_rotation_requested_ms.is_some_and(|r| r >= k.issued_ms)
            }
        }
    }

    pub(crate) fn rotate_pair_keys(&mut self, now: u64, seed: &str) -> Result<Response, StateError> {
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, seed.trim())
            .map_err(|e| StateError::invalid("seed", format!("not base64: {e}")))?;
        if bytes.len() != 32 {
            return Err(StateError::invalid("seed", format!("{} bytes: want 32", bytes.len())));
        }
        let generation = self.pair_keys.as_ref().map_or(0, |k| k.generation) + 1;
        self.pair_keys = Some(crate::model::PairKeySeed { seed: seed.trim().to_string(), issued_ms: now, generation });
        self.key_rotation_requested_ms = None;
        Ok(Response::Ok)
    }

    pub(crate) fn issue_wireguard(&mut self, now: u64, node: &str, private_key: &str) -> Result<Response, StateError> {
        let id = self.find_node(node)?.id.clone();
        let public_key = public_key_of(private_key).map_err(|m| StateError::invalid("private_key", format!("not a WireGuard key: {m}")))?;
        if self.wireguard.iter().any(|(other, w)| *other != id && w.public_key == public_key) {
            return Err(StateError::invalid("private_key", "another node has this key: issue a fresh one"));
        }
        let address = match self.wireguard.get(&id) {
            Some(old) => old.address,
            None => self
                .free_tunnel_address()
                .ok_or_else(|| StateError::Exhausted(format!("no free tunnel address left in {}/{}", TUNNEL_POOL.0, TUNNEL_POOL.1)))?,
        };
        self.wireguard.insert(id, WireGuardIdentity { private_key: private_key.trim().to_string(), public_key, address, issued_ms: now });
        Ok(Response::Ok)
    }

    fn free_tunnel_address(&self) -> Option<Ipv4Addr> {
        let base = u32::from(TUNNEL_POOL.0);
        let size = 1u32 << (32 - TUNNEL_POOL.1);
        let nodes: Vec<Ipv4Addr> = self.nodes.values().filter_map(|n| n.addr.parse().ok()).collect();
        (1..size - 1).map(|i| Ipv4Addr::from(base + i)).find(|a| {
            !self.wireguard.values().any(|w| w.address == *a) && !self.networks.values().any(|n| n.subnet.contains(a)) && !nodes.contains(a)
        })
    }
}
