//! Identifiers. Like Swarm's, they are 25 lowercase base-36 characters. They are derived from
//! the cluster id and a counter kept in the replicated state, so every replica makes the same ids.

use sha2::{Digest, Sha256};

/// Declares an id newtype: a node id cannot be passed where a task id is wanted. It is the id's
/// text on the wire and in the Raft log (`serde(transparent)`: entries written before the
/// newtypes read the same), reads as `&str` (`Deref`, `Borrow<str>`: maps keyed by it are looked
/// up with a `&str`), and prints as the bare id (`Display`) or as the quoted string (`Debug`),
/// as the plain `String` did.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(id: &String) -> $name {
                $name(id.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

id_type!(
    /// A node's id: made once when the node joins (random), the name of its certificate.
    NodeId
);
id_type!(
    /// A network's id.
    NetworkId
);
id_type!(
    /// A service's id.
    ServiceId
);
id_type!(
    /// A task's id: one task, one run of one slot of a service.
    TaskId
);
id_type!(
    /// A secret's id.
    SecretId
);
id_type!(
    /// A config's id.
    ConfigId
);

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

    /// The next id, of whichever id type the caller wants (the counter is shared by all kinds).
    pub fn next_id<T: From<String>>(&mut self) -> T {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(self.seed.as_bytes());
        h.update(self.counter.to_be_bytes());
        T::from(base36_25(&h.finalize()))
    }
}

/// A fresh random id (for things made outside the state machine: cluster and node ids).
pub fn random_id<T: From<String>>() -> T {
    let bytes: [u8; 32] = rand::random();
    T::from(base36_25(&bytes))
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
        let x: String = a.next_id();
        assert_eq!(x.len(), 25);
        assert!(x.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(x, b.next_id::<String>());
        assert_ne!(a.next_id::<String>(), x);
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id::<String>(), random_id::<String>());
    }

    #[test]
    fn an_id_is_its_text_on_the_wire_and_in_messages() {
        let id = NodeId::new("n1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"n1\"");
        assert_eq!(serde_json::from_str::<NodeId>("\"n1\"").unwrap(), id);
        assert_eq!(format!("{id} {id:?}"), "n1 \"n1\"");
        let mut m = std::collections::BTreeMap::new();
        m.insert(id.clone(), 1);
        assert_eq!(m.get("n1"), Some(&1));
        assert_eq!(id, "n1");
        assert_eq!("n1", id);
    }
}
