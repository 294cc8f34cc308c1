//! WireGuard keys: Curve25519, 32 bytes, written in base64 as `wg` writes them. A private key
//! never reaches a log: its `Debug` and `Display` print a placeholder.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A public key (or any 32-byte key when it is not secret).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// A node's private key. Kept in memory by the agent; in the state file only for `dataplane
/// apply`, the lab and test tool.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Key);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WireGuard key: {0} (want 32 bytes in base64, as `wg genkey` prints)")]
pub struct BadKey(String);

impl Key {
    pub fn from_base64(s: &str) -> Result<Self, BadKey> {
        let bytes = STANDARD.decode(s.trim()).map_err(|e| BadKey(e.to_string()))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| BadKey(format!("{} bytes", b.len())))?;
        Ok(Key(bytes))
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Key(out))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The configuration protocol (UAPI) writes keys in hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl PrivateKey {
    pub fn from_base64(s: &str) -> Result<Self, BadKey> {
        Key::from_base64(s).map(PrivateKey)
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        PrivateKey(Key(b))
    }

    /// A fresh key from the OS's random source.
    pub fn generate() -> Self {
        let mut k: [u8; 32] = rand::random();
        // Clamped as `wg genkey` writes it (the curve clamps anyway; this keeps keys comparable).
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        PrivateKey(Key(k))
    }

    pub fn public_key(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(self.0 .0);
        Key(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// The secret bytes, for the kernel or the tunnel process only.
    pub fn expose(&self) -> &Key {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_base64())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<private key>")
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Key::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PrivateKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PrivateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Key::deserialize(d).map(PrivateKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_private_ones_stay_out_of_logs() {
        let k = PrivateKey::generate();
        let text = serde_json::to_string(&k).unwrap();
        let back: PrivateKey = serde_json::from_str(&text).unwrap();
        assert_eq!(back, k);
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
        assert!(!format!("{k}").contains(&k.expose().to_base64()));
        let p = k.public_key();
        assert_eq!(Key::from_hex(&p.to_hex()), Some(p));
        assert!(Key::from_base64("c2hvcnQ=").unwrap_err().to_string().contains("5 bytes"));
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        // `wg pubkey` of the all-zero-but-clamped test vector from RFC 7748 section 6.1.
        let alice = Key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let public = PrivateKey(alice).public_key();
        assert_eq!(public.to_hex(), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    }
}
