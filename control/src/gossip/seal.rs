//! The cluster gossip key ring and the sealed datagram: every datagram on the gossip port is
//! `version (1) | key id (4, big endian) | nonce (24) | XChaCha20-Poly1305(foca packet) + tag (16)`,
//! the first five bytes authenticated as associated data.
//!
//! Rotation (as Swarm's `networking:gossip` keys): the managers hand every node the new key,
//! which is `install`ed (accepted, not yet used); once every node has it, each `use_key`s it
//! (sending under it while still accepting the old one); then the old one is `retire`d. At no
//! step does a node send under a key another node cannot open, so no member is lost.
//! XChaCha's 192-bit random nonces need no counter shared across restarts.

use super::error::GossipError;
use base64::Engine;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand10::Rng;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 24;
const TAG: usize = 16;
/// What sealing adds to a foca packet.
pub const OVERHEAD: usize = HEADER + TAG;

#[derive(Clone)]
pub struct GossipKey {
    pub id: u32,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKey({}, ..)", self.id)
    }
}

impl GossipKey {
    pub fn from_bytes(id: u32, key: &[u8; 32]) -> GossipKey {
        GossipKey { id, cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// A key as the managers issue it: 32 bytes in standard base64.
    pub fn from_base64(id: u32, text: &str) -> Result<GossipKey, GossipError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| GossipError::Key(format!("key {id} is not base64 ({e}); give 32 random bytes in standard base64")))?;
        let key: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            GossipError::Key(format!("key {id} has {} bytes; a gossip key is exactly 32 bytes (base64 of 32 random bytes)", raw.len()))
        })?;
        Ok(GossipKey::from_bytes(id, &key))
    }

    /// A fresh random key and its base64 text, for the managers to issue.
    pub fn generate(id: u32) -> (GossipKey, String) {
        let raw: [u8; 32] = rand::random();
        (GossipKey::from_bytes(id, &raw), base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Why a datagram was dropped before foca saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    UnknownKey(u32),
    Forged(u32),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Malformed => f.write_str("too short or an unknown envelope version"),
            Rejected::UnknownKey(id) => {
                write!(f, "sealed under key id {id}, which this node does not hold (not yet installed, or retired)")
            }
            Rejected::Forged(id) => write!(f, "does not open under key id {id} (corrupt, or sealed with another key of that id)"),
        }
    }
}

/// The keys a node accepts, and the one it sends under.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<GossipKey>,
    sending: u32,
}

impl Keyring {
    pub fn new(key: GossipKey) -> Keyring {
        Keyring { sending: key.id, keys: vec![key] }
    }

    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.id).collect()
    }

    pub fn sending_id(&self) -> u32 {
        self.sending
    }

    /// Accept datagrams under `key` from now on (replacing a key of the same id, unless it is the
    /// sending key: a key id names one key for its whole life).
    pub fn install(&mut self, key: GossipKey) -> Result<(), GossipError> {
        if key.id == self.sending {
            return Err(GossipError::Key(format!("key id {} is the sending key; a new key needs a new id", key.id)));
        }
        self.keys.retain(|k| k.id != key.id);
        self.keys.push(key);
        Ok(())
    }

    /// Send under key `id` (already installed).
    pub fn use_key(&mut self, id: u32) -> Result<(), GossipError> {
        if !self.keys.iter().any(|k| k.id == id) {
            return Err(GossipError::UnknownKeyId { id, installed: self.ids() });
        }
        self.sending = id;
        Ok(())
    }

    /// Stop accepting key `id`.
    pub fn retire(&mut self, id: u32) -> Result<(), GossipError> {
        if id == self.sending {
            return Err(GossipError::RetireSendingKey { id });
        }
        if !self.keys.iter().any(|k| k.id == id) {
            return Err(GossipError::UnknownKeyId { id, installed: self.ids() });
        }
        self.keys.retain(|k| k.id != id);
        Ok(())
    }

    pub fn seal(&self, plain: &[u8], rng: &mut impl Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&self.sending.to_be_bytes());
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let key = self.keys.iter().find(|k| k.id == self.sending).expect("the sending key is always in the ring");
        let (head, body) = out.split_at_mut(HEADER);
        // Sealing in memory with a 24-byte nonce cannot fail (the length limit is 256 GiB).
        let tag = key.cipher.encrypt_in_place_detached(XNonce::from_slice(&head[5..]), &head[..5], body).expect("in-memory seal");
        out.extend_from_slice(&tag);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, Rejected> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(Rejected::Malformed);
        }
        let id = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let key = self.keys.iter().find(|k| k.id == id).ok_or(Rejected::UnknownKey(id))?;
        let (body, tag) = sealed[HEADER..].split_at(sealed.len() - HEADER - TAG);
        let mut plain = body.to_vec();
        key.cipher
            .decrypt_in_place_detached(XNonce::from_slice(&sealed[5..HEADER]), &sealed[..5], &mut plain, tag.into())
            .map_err(|_| Rejected::Forged(id))?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand10::SeedableRng;

    fn rng() -> rand10::rngs::StdRng {
        rand10::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn round_trip_and_tamper() {
        let ring = Keyring::new(GossipKey::from_bytes(1, &[9; 32]));
        let sealed = ring.seal(b"hello", &mut rng());
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(ring.open(&sealed).unwrap(), b"hello");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(ring.open(&bad).is_err(), "flipping byte {i} must not open");
        }
        assert_eq!(ring.open(&sealed[..10]), Err(Rejected::Malformed));
    }

    #[test]
    fn unknown_and_retired_keys_are_rejected() {
        let mut a = Keyring::new(GossipKey::from_bytes(1, &[1; 32]));
        let b = Keyring::new(GossipKey::from_bytes(2, &[2; 32]));
        assert_eq!(b.open(&a.seal(b"x", &mut rng())), Err(Rejected::UnknownKey(1)));
        // Same id, other key material: forged.
        let c = Keyring::new(GossipKey::from_bytes(1, &[3; 32]));
        assert_eq!(c.open(&a.seal(b"x", &mut rng())), Err(Rejected::Forged(1)));

        a.install(GossipKey::from_bytes(2, &[2; 32])).unwrap();
        let old = a.seal(b"old", &mut rng());
        a.use_key(2).unwrap();
        assert_eq!(b.open(&a.seal(b"new", &mut rng())).unwrap(), b"new");
        assert_eq!(a.open(&old).unwrap(), b"old", "the old key is accepted until retired");
        a.retire(1).unwrap();
        assert_eq!(a.open(&old), Err(Rejected::UnknownKey(1)));
    }

    #[test]
    fn rotation_mistakes_are_named() {
        let mut a = Keyring::new(GossipKey::from_bytes(1, &[1; 32]));
        assert!(matches!(a.retire(1), Err(GossipError::RetireSendingKey { id: 1 })));
        assert!(matches!(a.use_key(5), Err(GossipError::UnknownKeyId { id: 5, .. })));
        assert!(matches!(a.retire(5), Err(GossipError::UnknownKeyId { id: 5, .. })));
        assert!(a.install(GossipKey::from_bytes(1, &[4; 32])).is_err());
        let err = GossipKey::from_base64(3, "c2hvcnQ=").unwrap_err().to_string();
        assert!(err.contains("5 bytes") && err.contains("32 bytes"), "{err}");
        let (k, text) = GossipKey::generate(4);
        assert_eq!(GossipKey::from_base64(4, &text).unwrap().id, k.id);
    }
}
