//! The node's data-encryption key and sealing of bytes written to disk (XChaCha20-Poly1305
//! with a random nonce per record). The key file is created 0600 next to the data it protects.

use super::StoreError;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::Write;
use std::path::Path;

#[derive(Clone)]
pub struct DataKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn from_bytes(key: &[u8; 32]) -> DataKey {
        DataKey { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    pub fn random() -> DataKey {
        DataKey::from_bytes(&rand::random())
    }

    /// Load the key at `path`, or make one (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<DataKey, StoreError> {
        let io = |what, source| StoreError::Io { what, path: path.display().to_string(), source };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Decrypt { what: format!("key file {} (wrong length)", path.display()) })?;
                Ok(DataKey::from_bytes(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut f = std::fs::OpenOptions::new();
                f.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
                let mut file = f.open(path).map_err(|e| io("creating data key", e))?;
                file.write_all(&key).map_err(|e| io("writing data key", e))?;
                file.sync_all().map_err(|e| io("syncing data key", e))?;
                Ok(DataKey::from_bytes(&key))
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
