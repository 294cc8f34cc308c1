//! Join tokens in Swarm's format: `SWMTKN-1-<CA digest>-<secret>`. The digest (base 36 of the
//! SHA-256 of the root CA certificate, 50 characters) lets a joining node check it talks to the
//! right cluster before it sends anything; the secret (25 characters) says which role it gets.

use super::CaError;
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

const PREFIX: &str = "SWMTKN-1-";

impl JoinToken {
    pub fn new(ca_digest: &str) -> JoinToken {
        let bytes: [u8; 17] = rand::random();
        let mut secret = base36(&bytes);
        secret.truncate(25);
        while secret.len() < 25 {
            secret.insert(0, '0');
        }
        JoinToken { ca_digest: ca_digest.to_string(), secret }
    }

    pub fn parse(text: &str) -> Result<JoinToken, CaError> {
        let rest = text.trim().strip_prefix(PREFIX).ok_or(CaError::BadToken)?;
        let (digest, secret) = rest.split_once('-').ok_or(CaError::BadToken)?;
        let ok = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase());
        if !ok(digest, 50) || !ok(secret, 25) {
            return Err(CaError::BadToken);
        }
        Ok(JoinToken { ca_digest: digest.to_string(), secret: secret.to_string() })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.ca_digest, self.secret)
    }
}

/// Base-36 SHA-256 digest of a certificate (PEM or DER), 50 characters.
pub fn ca_digest(cert: &str) -> String {
    let der = super::pem_certs(cert).first().map(|d| d.as_ref().to_vec()).unwrap_or_else(|| cert.as_bytes().to_vec());
    digest_der(&der)
}

pub fn digest_der(der: &[u8]) -> String {
    let mut s = base36(&Sha256::digest(der));
    while s.len() < 50 {
        s.insert(0, '0');
    }
    s
}

/// Big-endian bytes to base 36.
fn base36(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut num: Vec<u8> = bytes.to_vec();
    let mut out = vec![];
    while num.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        out.push(ALPHABET[rem as usize]);
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Constant-time string comparison for secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse() {
        let digest = digest_der(b"some cert");
        assert_eq!(digest.len(), 50);
        let t = JoinToken::new(&digest);
        let text = t.to_string();
        assert!(text.starts_with("SWMTKN-1-"));
        assert_eq!(text.len(), 9 + 50 + 1 + 25);
        assert_eq!(JoinToken::parse(&text).unwrap(), t);
    }

    #[test]
    fn malformed_tokens() {
        for bad in ["", "SWMTKN-1-abc-def", "SWMTKN-2-x-y", &format!("SWMTKN-1-{}-{}", "A".repeat(50), "b".repeat(25))] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base36_known_values() {
        assert_eq!(base36(&[0, 36]), "10");
        assert_eq!(base36(&[1, 0]), "74");
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
