//! Configs: like secrets, small blobs delivered as files into the tasks that reference them, but
//! not secret (Docker shows their data in `config inspect`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub id: super::ConfigId,
    pub spec: ConfigSpec,
    pub created_ms: u64,
}
