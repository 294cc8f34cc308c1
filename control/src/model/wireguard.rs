//! Encrypted overlays: the backend a network asks for, and each node's WireGuard identity
//! (key pair and tunnel address), issued by the managers and kept in the Raft state, which is
//! encrypted at rest. Agents get theirs over the dispatcher session and keep it in memory.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The network option that asks for encryption (`--opt encrypted[=BACKEND]`, as Docker's).
pub const ENCRYPTED_OPTION: &str = "encrypted";

/// How an encrypted network's traffic between nodes is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionBackend {
    /// One WireGuard tunnel per node pair (kernel WireGuard where the node has it, else
    /// userspace WireGuard on a TUN device: the node's own choice, shown by `shoal doctor`).
    Wireguard,
    /// ESP in transport mode (XFRM, AES-GCM) between the nodes' underlay addresses, with SAs
    /// derived from the same per-pair keys. Needs ESP in every node's kernel.
    Ipsec,
}

impl EncryptionBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionBackend::Wireguard => "wireguard",
            EncryptionBackend::Ipsec => "ipsec",
        }
    }

    /// The backend an `encrypted` option value forces, `None` for `--opt encrypted` alone (the
    /// managers pick: [`EncryptionBackend::pick`]); the error says what to use instead.
    pub fn from_option(value: &str) -> Result<Option<EncryptionBackend>, BackendError> {
        match value {
            "" | "true" => Ok(None),
            "wireguard" => Ok(Some(EncryptionBackend::Wireguard)),
            "ipsec" => Ok(Some(EncryptionBackend::Ipsec)),
            other => Err(BackendError::Unknown { given: other.to_string() }),
        }
    }

    /// The best backend every node can run, from what each reported when it joined. WireGuard
    /// when every node has it in the kernel; else IPsec when every node's kernel has ESP (kernel
    /// crypto on every node beats WireGuard in userspace on some); else WireGuard, which every
    /// node with a TUN device runs in userspace. A node that reported nothing (it joined before
    /// nodes reported) counts as having neither, so it never gets a backend it may lack.
    pub fn pick<'a>(nodes: impl IntoIterator<Item = &'a EncryptionSupport>) -> EncryptionBackend {
        let (mut all_kernel_wg, mut all_esp, mut any) = (true, true, false);
        for n in nodes {
            any = true;
            all_kernel_wg &= n.kernel_wireguard;
            all_esp &= n.esp;
        }
        if any && !all_kernel_wg && all_esp {
            EncryptionBackend::Ipsec
        } else {
            EncryptionBackend::Wireguard
        }
    }
}

/// What a node's kernel offers encrypted networks, probed by its daemon and reported when it
/// joins (shown by `node inspect`; `shoal doctor` shows the same on the node itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionSupport {
    /// The kernel has WireGuard.
    pub kernel_wireguard: bool,
    /// The kernel has ESP over XFRM (IPsec).
    pub esp: bool,
    /// `/dev/net/tun` is there (userspace WireGuard).
    pub tun: bool,
}

/// A node's WireGuard identity. The private key is secret: `redact` blanks it in every view a
/// client reads, and `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGuardIdentity {
    /// Base64, as `wg genkey` prints it.
    pub private_key: String,
    /// Base64, derived from the private key when the identity is issued.
    pub public_key: String,
    /// The node's address inside the tunnels: encrypted networks' VXLAN runs between these.
    pub address: Ipv4Addr,
    pub issued_ms: u64,
}

impl std::fmt::Debug for WireGuardIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGuardIdentity")
            .field("private_key", &"(secret)")
            .field("public_key", &self.public_key)
            .field("address", &self.address)
            .field("issued_ms", &self.issued_ms)
            .finish()
    }
}

/// The managers' secret from which every node pair's preshared key is derived (one per
/// rotation). Only managers hold it; each node gets the keys of its own pairs alone, so no node
/// can compute another pair's key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairKeySeed {
    /// Base64, 32 random bytes.
    pub seed: String,
    pub issued_ms: u64,
    /// Bumped by every rotation (shown by `network inspect` as the key generation).
    pub generation: u64,
}

impl std::fmt::Debug for PairKeySeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairKeySeed")
            .field("seed", &"(secret)")
            .field("issued_ms", &self.issued_ms)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Every node pair's keys are rotated this often unless asked sooner (Docker rotates its one
/// cluster-wide key every 12 hours).
pub const PAIR_KEY_ROTATION_MS: u64 = 12 * 3600 * 1000;

impl PairKeySeed {
    /// The preshared key of the pair (`a`, `b`), the same from either side, base64.
    pub fn pair_key(&self, a: &str, b: &str) -> String {
        use sha2::{Digest, Sha256};
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = Sha256::new();
        h.update(b"shoal wireguard pair key v1\0");
        h.update(self.seed.as_bytes());
        for id in [lo, hi] {
            h.update((id.len() as u64).to_be_bytes());
            h.update(id.as_bytes());
        }
        STANDARD.encode(h.finalize())
    }
}

/// A fresh private key from the OS's random source, in base64 (clamped as `wg genkey` does).
pub fn generate_private_key() -> String {
    let mut k: [u8; 32] = rand::random();
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    STANDARD.encode(k)
}

/// The public key of a base64 private key; `Err` names what is wrong with it.
pub fn public_key_of(private_key: &str) -> Result<String, KeyError> {
    let bytes = STANDARD.decode(private_key.trim()).map_err(KeyError::NotBase64)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| KeyError::Length { bytes: b.len() })?;
    let secret = x25519_dalek::StaticSecret::from(bytes);
    Ok(STANDARD.encode(x25519_dalek::PublicKey::from(&secret).to_bytes()))
}

/// A WireGuard private key that is not 32 bytes of base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not base64: {0}")]
    NotBase64(base64::DecodeError),
    #[error("{bytes} bytes, want 32")]
    Length { bytes: usize },
}

/// An `--opt encrypted=` value shoal cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{given:?} is not an encryption backend: use --opt encrypted, --opt encrypted=wireguard or --opt encrypted=ipsec")]
    Unknown { given: String },
}

/// A fresh pair-key seed (32 random bytes, base64).
pub fn generate_seed() -> String {
    STANDARD.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_key_is_the_same_from_both_sides_and_differs_per_pair_and_seed() {
        let s = PairKeySeed { seed: generate_seed(), issued_ms: 0, generation: 1 };
        assert_eq!(s.pair_key("a", "b"), s.pair_key("b", "a"));
        assert_ne!(s.pair_key("a", "b"), s.pair_key("a", "c"));
        assert_ne!(s.pair_key("ab", "c"), s.pair_key("a", "bc"), "ids are length-prefixed");
        let t = PairKeySeed { seed: generate_seed(), ..s.clone() };
        assert_ne!(s.pair_key("a", "b"), t.pair_key("a", "b"));
        assert_eq!(STANDARD.decode(s.pair_key("a", "b")).unwrap().len(), 32);
        assert!(!format!("{s:?}").contains(&s.seed));
    }

    #[test]
    fn option_values() {
        for v in ["", "true"] {
            assert_eq!(EncryptionBackend::from_option(v), Ok(None), "{v:?}: the managers pick");
        }
        assert_eq!(EncryptionBackend::from_option("wireguard"), Ok(Some(EncryptionBackend::Wireguard)));
        assert_eq!(EncryptionBackend::from_option("ipsec"), Ok(Some(EncryptionBackend::Ipsec)));
        assert_eq!(EncryptionBackend::Ipsec.as_str(), "ipsec");
        let e = EncryptionBackend::from_option("aes").unwrap_err().to_string();
        assert!(e.contains("\"aes\" is not an encryption backend") && e.contains("--opt encrypted=ipsec"), "{e}");
    }

    #[test]
    fn the_pick_is_the_best_backend_every_node_runs() {
        let s = |kernel_wireguard, esp| EncryptionSupport { kernel_wireguard, esp, tun: true };
        let pick = |nodes: &[EncryptionSupport]| EncryptionBackend::pick(nodes);
        assert_eq!(pick(&[s(true, true), s(true, false)]), EncryptionBackend::Wireguard, "kernel WireGuard everywhere");
        assert_eq!(pick(&[s(true, true), s(false, true)]), EncryptionBackend::Ipsec, "ESP everywhere, WireGuard not in every kernel");
        assert_eq!(pick(&[s(false, true), s(false, false)]), EncryptionBackend::Wireguard, "one node lacks ESP: userspace WireGuard there");
        assert_eq!(pick(&[s(true, true), EncryptionSupport::default()]), EncryptionBackend::Wireguard, "a node that reported nothing");
        assert_eq!(pick(&[]), EncryptionBackend::Wireguard);
    }

    #[test]
    fn keys_are_fresh_and_derive_a_public_key_and_debug_hides_the_secret() {
        let (a, b) = (generate_private_key(), generate_private_key());
        assert_ne!(a, b);
        let public = public_key_of(&a).unwrap();
        assert_eq!(STANDARD.decode(&public).unwrap().len(), 32);
        assert_eq!(public_key_of(&a).unwrap(), public);
        assert!(public_key_of("c2hvcnQ=").unwrap_err().to_string().contains("5 bytes, want 32"));
        let id = WireGuardIdentity { private_key: a.clone(), public_key: public, address: Ipv4Addr::new(10, 255, 0, 1), issued_ms: 0 };
        assert!(!format!("{id:?}").contains(&a));
    }
}
