//! Per-pair, per-direction IPsec keys and SPIs, derived from the pair key the managers issue
//! (HKDF-SHA256, RFC 5869), so both ends of a pair compute the same SAs without another round
//! trip. Pure.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use crate::crypt::key::PrivateKey;

/// What an AES-256-GCM SA takes (rfc4106): a 256-bit key followed by a 4-byte salt.
pub const AEAD_KEY_LEN: usize = 36;

/// The key of one SA. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SaKey(pub [u8; AEAD_KEY_LEN]);

impl std::fmt::Debug for SaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaKey(<redacted>)")
    }
}

const BLOCK: usize = 64;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// HKDF-SHA256: extract with `salt`, expand to `out.len()` bytes (at most 255 blocks) of `info`.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    let prk = hmac(salt, &[ikm]);
    let mut prev: Vec<u8> = Vec::new();
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let t = hmac(&prk, &[&prev, info, &[(i + 1) as u8]]);
        chunk.copy_from_slice(&t[..chunk.len()]);
        prev = t.to_vec();
    }
}

const SALT: &[u8] = b"shoal ipsec v1";

/// Names a key generation without revealing it: the first 4 bytes of SHA-256 of the pair key.
/// The SPIs and keys of a generation carry it in their HKDF label.
pub fn generation(pair_key: &PrivateKey) -> u32 {
    let d = Sha256::digest([b"shoal ipsec generation\0".as_slice(), &pair_key.expose().0].concat());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The label of the SA carrying `src` -> `dst` under a key generation.
fn label(what: &str, src: Ipv4Addr, dst: Ipv4Addr, generation: u32) -> Vec<u8> {
    format!("{what} {src}->{dst} generation {generation:08x}").into_bytes()
}

/// The AES-GCM key and salt of the SA `src` -> `dst` (each direction its own).
pub fn sa_key(pair_key: &PrivateKey, src: Ipv4Addr, dst: Ipv4Addr) -> SaKey {
    let mut out = [0u8; AEAD_KEY_LEN];
    hkdf(SALT, &pair_key.expose().0, &label("key", src, dst, generation(pair_key)), &mut out);
    SaKey(out)
}

/// The SPI of the SA `src` -> `dst`: random-looking, never 0-255 (reserved by RFC 4303).
pub fn spi(pair_key: &PrivateKey, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
    let mut out = [0u8; 4];
    hkdf(SALT, &pair_key.expose().0, &label("spi", src, dst, generation(pair_key)), &mut out);
    256 + u32::from_be_bytes(out) % (u32::MAX - 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmac_and_hkdf_match_the_rfc_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 5869 test case 1.
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        hkdf(&salt, &ikm, &info, &mut okm);
        assert_eq!(hex(&okm), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
    }

    #[test]
    fn both_ends_agree_each_direction_and_generation_differs_and_spis_skip_the_reserved_range() {
        let (a, b): (Ipv4Addr, Ipv4Addr) = ("192.168.33.10".parse().unwrap(), "192.168.33.20".parse().unwrap());
        let k1 = PrivateKey::from_bytes([1; 32]);
        let k2 = PrivateKey::from_bytes([2; 32]);
        assert_eq!(sa_key(&k1, a, b), sa_key(&k1, a, b));
        assert_ne!(sa_key(&k1, a, b), sa_key(&k1, b, a), "each direction has its own key");
        assert_ne!(spi(&k1, a, b), spi(&k1, b, a));
        assert_ne!(sa_key(&k1, a, b), sa_key(&k2, a, b), "a new generation is a new key");
        assert_ne!(spi(&k1, a, b), spi(&k2, a, b), "and a new SPI");
        assert_ne!(generation(&k1), generation(&k2));
        for i in 0..=255u8 {
            assert!(spi(&PrivateKey::from_bytes([i; 32]), a, b) > 255);
        }
        assert_eq!(format!("{:?}", sa_key(&k1, a, b)), "SaKey(<redacted>)");
    }
}
