//! How each task's process runs, beyond image and command: Docker's `ContainerSpec` fields that
//! `service create` sets with `--hostname`, `--user`, `--workdir`, `--entrypoint`,
//! `--stop-grace-period`, `--read-only`, `--cap-add/--cap-drop`, `--dns*`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOpts {
    /// The task's hostname in place of `<service>.<slot>.<task>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `user[:group]`, names from the image's /etc/passwd or numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Replaces the image's Entrypoint (and its Cmd, as Docker does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Time between the stop signal and SIGKILL (the node's default when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_ms: Option<u64>,
    pub read_only: bool,
    /// Capabilities as `CAP_NAME` (or `ALL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
}

impl ContainerOpts {
    pub fn is_default(&self) -> bool {
        self == &ContainerOpts::default()
    }
}

/// `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` -> `CAP_NET_ADMIN` (Docker's normalization).
pub fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}
