//! The node's data-encryption key and sealing of bytes written to disk (XChaCha20-Poly1305
//! with a random nonce per record). The key file is created 0600 next to the data it protects;
//! with autolock it is itself sealed under the cluster's unlock key (`UnlockKey`), so the data
//! cannot be read from the disk alone.

use super::StoreError;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::Write;
use std::path::Path;

#[derive(Clone)]
pub struct DataKey {
    cipher: XChaCha20Poly1305,
    raw: [u8; 32],
}

/// What a sealed file starts with; a plain data key is 32 raw bytes, a plain node key PEM.
pub const SEALED_PREFIX: &[u8] = b"shoal-sealed-v1:";

/// The cluster's unlock key (autolock), in Docker's text form `SWMKEY-1-<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

impl std::fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use base64::Engine;
        write!(f, "SWMKEY-1-{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0))
    }
}

impl UnlockKey {
    pub fn random() -> UnlockKey {
        UnlockKey(rand::random())
    }

    pub fn parse(text: &str) -> Option<UnlockKey> {
        use base64::Engine;
        let b = text.trim().strip_prefix("SWMKEY-1-")?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b.trim_end_matches('=')).ok()?;
        Some(UnlockKey(bytes.try_into().ok()?))
    }

    /// `plain` sealed under this key, as a file's content.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut out = SEALED_PREFIX.to_vec();
        out.extend_from_slice(hex::encode(DataKey::from_bytes(&self.0).seal(plain)).as_bytes());
        out
    }

    /// A file's content opened with this key; None when it is not sealed or not by this key.
    pub fn unseal(&self, content: &[u8]) -> Option<Vec<u8>> {
        let body = content.strip_prefix(SEALED_PREFIX)?;
        let sealed = hex::decode(body.trim_ascii()).ok()?;
        DataKey::from_bytes(&self.0).open(&sealed, "sealed file").ok()
    }
}

pub fn is_sealed(content: &[u8]) -> bool {
    content.starts_with(SEALED_PREFIX)
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn from_bytes(key: &[u8; 32]) -> DataKey {
        DataKey { cipher: XChaCha20Poly1305::new(key.into()), raw: *key }
    }

    pub fn random() -> DataKey {
        DataKey::from_bytes(&rand::random())
    }

    /// Load the key at `path`, or make one (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<DataKey, StoreError> {
        Self::load_or_create_locked(path, None)
    }

    /// Writes the key at `path` again, sealed under `unlock` (autolock) or plain (none).
    pub fn store(&self, path: &Path, unlock: Option<&UnlockKey>) -> Result<(), StoreError> {
        let io = |what, source| StoreError::Io { what, path: path.display().to_string(), source };
        let content = match unlock {
            Some(k) => k.seal(&self.raw),
            None => self.raw.to_vec(),
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new();
        f.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
        let mut file = f.open(&tmp).map_err(|e| io("creating data key", e))?;
        file.write_all(&content).map_err(|e| io("writing data key", e))?;
        file.sync_all().map_err(|e| io("syncing data key", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("renaming data key", e))
    }

    /// Like `load_or_create`, for a key that may be sealed under the unlock key: a sealed key
    /// without the right unlock key is an error, and a new key is written sealed when one is
    /// given.
    pub fn load_or_create_locked(path: &Path, unlock: Option<&UnlockKey>) -> Result<DataKey, StoreError> {
        let io = |what, source| StoreError::Io { what, path: path.display().to_string(), source };
        match std::fs::read(path) {
            Ok(bytes) if is_sealed(&bytes) => {
                let plain = unlock.and_then(|k| k.unseal(&bytes)).ok_or_else(|| StoreError::Decrypt {
                    what: format!("data key {} (sealed by autolock: a wrong or missing unlock key)", path.display()),
                })?;
                let key: [u8; 32] = plain
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Decrypt { what: format!("key file {} (wrong length)", path.display()) })?;
                Ok(DataKey::from_bytes(&key))
            }
            Ok(bytes) => {
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Decrypt { what: format!("key file {} (wrong length)", path.display()) })?;
                Ok(DataKey::from_bytes(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = DataKey::random();
                key.store(path, unlock)?;
                Ok(key)
            }
            Err(e) => Err(io("reading data key", e)),
        }
    }

    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self.cipher.encrypt(nonce, plain).unwrap_or_default();
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8], what: &str) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < 24 {
            return Err(StoreError::Decrypt { what: what.to_string() });
        }
        let (nonce, ct) = sealed.split_at(24);
        self.cipher.decrypt(XNonce::from_slice(nonce), ct).map_err(|_| StoreError::Decrypt { what: what.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let k = DataKey::random();
        let sealed = k.seal(b"top secret");
        assert!(!sealed.windows(10).any(|w| w == b"top secret"));
        assert_eq!(k.open(&sealed, "x").unwrap(), b"top secret");
        assert!(DataKey::random().open(&sealed, "x").is_err());
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_unlock_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        let a = DataKey::load_or_create(&p).unwrap();
        let unlock = UnlockKey::random();
        a.store(&p, Some(&unlock)).unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert!(is_sealed(&on_disk) && !on_disk.windows(32).any(|w| w == a.raw), "the key is not on disk in the clear");
        assert!(DataKey::load_or_create(&p).is_err(), "no unlock key");
        assert!(DataKey::load_or_create_locked(&p, Some(&UnlockKey::random())).is_err(), "a wrong unlock key");
        let b = DataKey::load_or_create_locked(&p, Some(&unlock)).unwrap();
        assert_eq!(b.open(&a.seal(b"x"), "x").unwrap(), b"x");
        let text = unlock.to_string();
        assert!(text.starts_with("SWMKEY-1-"), "{text}");
        assert_eq!(UnlockKey::parse(&text), Some(unlock.clone()));
        assert_eq!(UnlockKey::parse("SWMKEY-1-short"), None);
        b.store(&p, None).unwrap();
        assert!(DataKey::load_or_create(&p).is_ok(), "autolock off: plain again");
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        let a = DataKey::load_or_create(&p).unwrap();
        let b = DataKey::load_or_create(&p).unwrap();
        assert_eq!(b.open(&a.seal(b"x"), "x").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
