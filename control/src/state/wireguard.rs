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
    pub fn nodes_missing_wireguard(&self) -> Vec<String> {
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

    pub(super) fn rotate_pair_keys(&mut self, now: u64, seed: &str) -> Result<Response, StateError> {
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

    pub(super) fn issue_wireguard(&mut self, now: u64, node: &str, private_key: &str) -> Result<Response, StateError> {
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

#[cfg(test)]
mod tests {
    use crate::model::{generate_private_key, NetworkSpec};
    use crate::state::Command;
    use crate::testkit::World;

    fn encrypted(w: &mut World, name: &str) {
        let mut spec = NetworkSpec { name: name.into(), driver: "overlay".into(), ..Default::default() };
        spec.options.insert("encrypted".into(), String::new());
        w.ok(Command::CreateNetwork { spec });
    }

    #[test]
    fn identities_are_wanted_only_once_a_network_is_encrypted_and_get_distinct_addresses() {
        let mut w = World::new(3);
        assert!(w.state.nodes_missing_wireguard().is_empty(), "no encrypted network: no keys");
        encrypted(&mut w, "secure");
        let missing = w.state.nodes_missing_wireguard();
        assert_eq!(missing.len(), 4);
        for n in &missing {
            w.ok(Command::IssueWireGuard { node: n.clone(), private_key: generate_private_key() });
        }
        assert!(w.state.nodes_missing_wireguard().is_empty());
        let mut addrs: Vec<_> = w.state.wireguard.values().map(|i| i.address).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 4);
        assert_eq!(addrs[0], "10.255.0.1".parse::<std::net::Ipv4Addr>().unwrap());
    }

    #[test]
    fn reissue_keeps_the_address_and_bad_or_shared_keys_change_nothing() {
        let mut w = World::new(1);
        encrypted(&mut w, "secure");
        let key = generate_private_key();
        w.ok(Command::IssueWireGuard { node: "n1".into(), private_key: key.clone() });
        let first = w.state.wireguard["n1"].clone();
        w.ok(Command::IssueWireGuard { node: "n1".into(), private_key: generate_private_key() });
        let second = w.state.wireguard["n1"].clone();
        assert_eq!(first.address, second.address);
        assert_ne!(first.public_key, second.public_key);
        let before = w.state.clone();
        let err = w.apply(Command::IssueWireGuard { node: "n2".into(), private_key: "nope".into() }).unwrap_err().to_string();
        assert!(err.contains("private_key") && err.contains("not a WireGuard key"), "{err}");
        let err = w.apply(Command::IssueWireGuard { node: "n2".into(), private_key: second.private_key.clone() }).unwrap_err().to_string();
        assert!(err.contains("another node has this key"), "{err}");
        let err = w.apply(Command::IssueWireGuard { node: "ghost".into(), private_key: key }).unwrap_err().to_string();
        assert!(err.contains("ghost"), "{err}");
        assert_eq!(w.state, before);
    }

    #[test]
    fn pair_keys_are_due_first_then_every_12_hours_and_on_request() {
        let mut w = World::new(1);
        assert!(!w.state.pair_keys_due(w.now));
        let err = w.apply(Command::RequestKeyRotation).unwrap_err().to_string();
        assert!(err.contains("no network is encrypted"), "{err}");
        encrypted(&mut w, "secure");
        assert!(w.state.pair_keys_due(w.now));
        w.ok(Command::RotatePairKeys { seed: crate::model::generate_seed() });
        let first = w.state.pair_keys.clone().unwrap();
        assert_eq!(first.generation, 1);
        assert!(!w.state.pair_keys_due(w.now));
        assert!(w.state.pair_keys_due(first.issued_ms + crate::model::PAIR_KEY_ROTATION_MS));
        w.ok(Command::RequestKeyRotation);
        assert!(w.state.pair_keys_due(w.now));
        w.ok(Command::RotatePairKeys { seed: crate::model::generate_seed() });
        assert_eq!(w.state.pair_keys.as_ref().unwrap().generation, 2);
        assert!(!w.state.pair_keys_due(w.now));
        let before = w.state.clone();
        let err = w.apply(Command::RotatePairKeys { seed: "c2hvcnQ=".into() }).unwrap_err().to_string();
        assert!(err.contains("seed") && err.contains("want 32"), "{err}");
        assert_eq!(w.state, before);
    }

    #[test]
    fn a_removed_node_loses_its_identity() {
        let mut w = World::new(1);
        encrypted(&mut w, "secure");
        w.ok(Command::IssueWireGuard { node: "n2".into(), private_key: generate_private_key() });
        w.ok(Command::SetNodeState { node: "n2".into(), state: crate::model::NodeState::Down, message: String::new() });
        w.ok(Command::RemoveNode { node: "n2".into(), force: false });
        assert!(!w.state.wireguard.contains_key("n2"));
    }
}
