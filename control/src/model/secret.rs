//! Secrets: small blobs delivered only to tasks that reference them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Payload. In memory it is plaintext; on disk the whole Raft log and snapshots are
    /// encrypted (see `store::crypto`).
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub id: super::SecretId,
    pub spec: SecretSpec,
    pub created_ms: u64,
}
