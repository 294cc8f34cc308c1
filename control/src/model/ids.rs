//! Identifiers. Like Swarm's, they are 25 lowercase base-36 characters. They are derived from
//! the cluster id and a counter kept in the replicated state, so every replica makes the same ids.

use sha2::{Digest, Sha256};

pub type NodeId = String;
pub type NetworkId = String;
pub type ServiceId = String;
pub type TaskId = String;
pub type SecretId = String;
pub type ConfigId = String;

/// Deterministic id generator (state-machine side).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdGen {
    pub seed: String,
    pub counter: u64,
}

impl IdGen {
    pub fn new(seed: impl Into<String>) -> IdGen {
        IdGen { seed: seed.into(), counter: 0 }
    }

    pub fn next_id(&mut self) -> String {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(self.seed.as_bytes());
        h.update(self.counter.to_be_bytes());
        base36_25(&h.finalize())
    }
}

/// A fresh random id (for things made outside the state machine: cluster and node ids).
pub fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    base36_25(&bytes)
}

fn base36_25(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // 25 base-36 digits hold ~129 bits; take 16 bytes twice mixed.
    let mut n = u128::from_be_bytes(bytes[..16].try_into().unwrap_or([0; 16]));
    let mut m = u128::from_be_bytes(bytes[16..32].try_into().unwrap_or([0; 16]));
    let mut out = String::with_capacity(25);
    for i in 0..25 {
        let src = if i % 2 == 0 { &mut n } else { &mut m };
        out.push(ALPHABET[(*src % 36) as usize] as char);
        *src /= 36;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_25_base36_and_deterministic() {
        let mut a = IdGen::new("c1");
        let mut b = IdGen::new("c1");
        let x = a.next_id();
        assert_eq!(x.len(), 25);
        assert!(x.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(x, b.next_id());
        assert_ne!(a.next_id(), x);
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id(), random_id());
    }
}
