//! The cluster's gossip key ring (Swarm's networking:gossip key): every gossip datagram between
//! nodes is sealed under it. The managers issue it (the key material comes from the proposing
//! manager: the state machine cannot draw random numbers and stay deterministic) and rotate it
//! in three steps, each its own command, so no node ever receives a datagram under a key it
//! does not hold: install the new key everywhere, switch sending to it, retire the old one.
//! Like the rest of the state it is on disk only inside the managers' encrypted Raft store;
//! agents get it over their dispatcher session and keep it in memory.

use super::{ClusterState, Response, StateError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The key is rotated this often unless asked sooner (as the WireGuard pair keys, and Docker's
/// own gossip key).
pub const GOSSIP_KEY_ROTATION_MS: u64 = 12 * 3600 * 1000;

/// Between the steps of a rotation: time for every agent's session to bring the new key ring
/// (a view reaches connected agents within a heartbeat) before anyone sends under the new key,
/// and for datagrams in flight under the old one before it is refused.
pub const GOSSIP_KEY_GRACE_MS: u64 = 30_000;

/// One issued key: its id travels in every datagram's header.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedGossipKey {
    pub id: u32,
    /// Base64 of 32 random bytes.
    pub key: String,
    pub installed_ms: u64,
}

impl std::fmt::Debug for IssuedGossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedGossipKey").field("id", &self.id).field("key", &"(secret)").field("installed_ms", &self.installed_ms).finish()
    }
}

/// The key ring: the keys nodes accept (at most two, during a rotation) and the one they send
/// under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKeys {
    pub keys: Vec<IssuedGossipKey>,
    pub sending: u32,
    pub sending_since_ms: u64,
    /// `shoal update --rotate-gossip-key` asked for a rotation at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_requested_ms: Option<u64>,
}

/// What the leader does next to the key ring (`gossip_key_step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GossipKeyStep {
    /// Issue a fresh key (`InstallGossipKey`): the first one, or step 1 of a rotation.
    Install,
    /// Step 2: send under the new key (`UseGossipKey`).
    Use(u32),
    /// Step 3: stop accepting the old key (`RetireGossipKey`).
    Retire(u32),
}

impl ClusterState {
    /// The next step for the key ring at `now`, if one is due: a first key as soon as there is
    /// a cluster; a rotation every [`GOSSIP_KEY_ROTATION_MS`] or when asked; each step of a
    /// rotation [`GOSSIP_KEY_GRACE_MS`] after the one before.
    pub fn gossip_key_step(&self, now: u64) -> Option<GossipKeyStep> {
        self.cluster.as_ref()?;
        let Some(ring) = self.gossip_keys.as_ref().filter(|r| !r.keys.is_empty()) else { return Some(GossipKeyStep::Install) };
        if let Some(newer) = ring.keys.iter().filter(|k| k.id > ring.sending).max_by_key(|k| k.id) {
            return (now >= newer.installed_ms.saturating_add(GOSSIP_KEY_GRACE_MS)).then_some(GossipKeyStep::Use(newer.id));
        }
        if let Some(older) = ring.keys.iter().find(|k| k.id != ring.sending) {
            return (now >= ring.sending_since_ms.saturating_add(GOSSIP_KEY_GRACE_MS)).then_some(GossipKeyStep::Retire(older.id));
        }
        let current = ring.keys.iter().find(|k| k.id == ring.sending)?;
        let asked = ring.rotation_requested_ms.is_some_and(|r| r >= current.installed_ms);
        (asked || now >= current.installed_ms.saturating_add(GOSSIP_KEY_ROTATION_MS)).then_some(GossipKeyStep::Install)
    }

    /// Step 1 (or the first key): `key` is accepted by every node from now on, under the next
    /// id; the first key is also the one sent under.
    pub(crate) fn install_gossip_key(&mut self, now: u64, key: &str) -> Result<Response, StateError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .map_err(|e| StateError::invalid("key", format!("not base64: {e}; give 32 random bytes in base64")))?;
        if bytes.len() != 32 {
            return Err(StateError::invalid("key", format!("{} bytes: a gossip key is 32 bytes", bytes.len())));
        }
        let ring = self.gossip_keys.get_or_insert_with(GossipKeys::default);
        if ring.keys.len() >= 2 {
            return Err(StateError::FailedPrecondition(format!(
                "a gossip key rotation is under way (keys {:?}, sending {}): it must finish before another key is installed",
                ring.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
                ring.sending
            )));
        }
        if ring.keys.iter().any(|k| k.key == key.trim()) {
            return Err(StateError::invalid("key", "this key is already in the ring: issue a fresh one"));
        }
        let id = ring.keys.iter().map(|k| k.id).max().unwrap_or(ring.sending).saturating_add(1);
        ring.keys.push(IssuedGossipKey { id, key: key.trim().to_string(), installed_ms: now });
        if ring.keys.len() == 1 {
            ring.sending = id;
            ring.sending_since_ms = now;
        }
        Ok(Response::Ok)
    }

    /// Step 2: every node sends under key `id` (installed before).
    pub(crate) fn use_gossip_key(&mut self, now: u64, id: u32) -> Result<Response, StateError> {
        let ring = self.gossip_keys.as_mut().ok_or_else(|| StateError::not_found("gossip key", id.to_string()))?;
        if !ring.keys.iter().any(|k| k.id == id) {
            return Err(StateError::not_found("gossip key", id.to_string()));
        }
        if ring.sending != id {
            ring.sending = id;
            ring.sending_since_ms = now;
        }
        Ok(Response::Ok)
    }

    /// Step 3: no node accepts key `id` any more.
    pub(crate) fn retire_gossip_key(&mut self, id: u32) -> Result<Response, StateError> {
        let ring = self.gossip_keys.as_mut().ok_or_else(|| StateError::not_found("gossip key", id.to_string()))?;
        if ring.sending == id {
            return Err(StateError::FailedPrecondition(format!(
                "gossip key {id} is the one nodes send under: switch to another key (UseGossipKey) before retiring it"
            )));
        }
        let before = ring.keys.len();
        ring.keys.retain(|k| k.id != id);
        if ring.keys.len() == before {
            return Err(StateError::not_found("gossip key", id.to_string()));
        }
        Ok(Response::Ok)
    }

    /// `shoal update --rotate-gossip-key`: the leader starts a rotation at its next look.
    pub(crate) fn request_gossip_key_rotation(&mut self, now: u64) -> Result<Response, StateError> {
        let ring = self.gossip_keys.as_mut().ok_or_else(|| {
            StateError::FailedPrecondition("no gossip key is issued yet: the leader issues one shortly after init".into())
        })?;
        ring.rotation_requested_ms = Some(now);
        Ok(Response::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;
    use crate::testkit::World;

    fn fresh() -> String {
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// The next command applies at `ms` (`World::apply` steps the clock by 1 first).
    fn at(w: &mut World, ms: u64) {
        w.now = ms - 1;
    }

    #[test]
    fn first_key_then_a_rotation_every_12_hours_in_three_timed_steps() {
        let mut w = World::new(1);
        let t0 = w.now + 10;
        assert_eq!(w.state.gossip_key_step(t0), Some(GossipKeyStep::Install), "a cluster without a key gets one at once");
        at(&mut w, t0);
        w.ok(Command::InstallGossipKey { key: fresh() });
        let ring = w.state.gossip_keys.clone().unwrap();
        assert_eq!((ring.sending, ring.keys.len()), (1, 1), "the first key is sent under at once");
        assert_eq!(w.state.gossip_key_step(t0 + GOSSIP_KEY_ROTATION_MS - 1), None);

        let t1 = t0 + GOSSIP_KEY_ROTATION_MS;
        assert_eq!(w.state.gossip_key_step(t1), Some(GossipKeyStep::Install));
        at(&mut w, t1);
        w.ok(Command::InstallGossipKey { key: fresh() });
        assert_eq!(w.state.gossip_keys.as_ref().unwrap().sending, 1, "installing does not switch sending");
        assert_eq!(w.state.gossip_key_step(t1 + GOSSIP_KEY_GRACE_MS - 1), None, "every node gets the new key first");
        assert_eq!(w.state.gossip_key_step(t1 + GOSSIP_KEY_GRACE_MS), Some(GossipKeyStep::Use(2)));
        let t2 = t1 + GOSSIP_KEY_GRACE_MS;
        at(&mut w, t2);
        w.ok(Command::UseGossipKey { id: 2 });
        assert_eq!(w.state.gossip_key_step(t2 + GOSSIP_KEY_GRACE_MS - 1), None, "the old key is still accepted for a grace");
        assert_eq!(w.state.gossip_key_step(t2 + GOSSIP_KEY_GRACE_MS), Some(GossipKeyStep::Retire(1)));
        w.ok(Command::RetireGossipKey { id: 1 });
        let ring = w.state.gossip_keys.clone().unwrap();
        assert_eq!((ring.sending, ring.keys.iter().map(|k| k.id).collect::<Vec<_>>()), (2, vec![2]));
        assert_eq!(w.state.gossip_key_step(t2 + GOSSIP_KEY_GRACE_MS), None);
    }

    #[test]
    fn a_rotation_on_request_starts_at_once_and_is_consumed_by_it() {
        let mut w = World::new(0);
        let err = w.apply(Command::RequestGossipKeyRotation).unwrap_err().to_string();
        assert!(err.contains("no gossip key is issued yet"), "{err}");
        w.ok(Command::InstallGossipKey { key: fresh() });
        let later = w.now + 1000;
        at(&mut w, later);
        w.ok(Command::RequestGossipKeyRotation);
        assert_eq!(w.state.gossip_key_step(w.now), Some(GossipKeyStep::Install));
        w.ok(Command::InstallGossipKey { key: fresh() });
        assert_eq!(w.state.gossip_key_step(w.now), None, "the request is met by the installed key");
    }

    #[test]
    fn bad_keys_and_out_of_order_steps_are_refused_by_name_and_change_nothing() {
        let mut w = World::new(0);
        let err = w.apply(Command::InstallGossipKey { key: "c2hvcnQ=".into() }).unwrap_err().to_string();
        assert!(err.contains("key") && err.contains("5 bytes") && err.contains("32 bytes"), "{err}");
        let err = w.apply(Command::InstallGossipKey { key: "not base64!".into() }).unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
        let key = fresh();
        w.ok(Command::InstallGossipKey { key: key.clone() });
        let before = w.state.clone();
        let err = w.apply(Command::InstallGossipKey { key }).unwrap_err().to_string();
        assert!(err.contains("already in the ring"), "{err}");
        let err = w.apply(Command::RetireGossipKey { id: 1 }).unwrap_err().to_string();
        assert!(err.contains("gossip key 1 is the one nodes send under"), "{err}");
        let err = w.apply(Command::UseGossipKey { id: 7 }).unwrap_err().to_string();
        assert!(err.contains("gossip key") && err.contains('7'), "{err}");
        w.ok(Command::InstallGossipKey { key: fresh() });
        let err = w.apply(Command::InstallGossipKey { key: fresh() }).unwrap_err().to_string();
        assert!(err.contains("rotation is under way"), "{err}");
        w.ok(Command::RetireGossipKey { id: 2 });
        assert_eq!(w.state.gossip_keys, before.gossip_keys, "retiring the unused new key puts the ring back");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let k = IssuedGossipKey { id: 1, key: fresh(), installed_ms: 0 };
        assert!(!format!("{k:?}").contains(&k.key));
    }
}
