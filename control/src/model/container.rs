//! How each task's process runs, beyond image and command: Docker's `ContainerSpec` fields that
//! `service create` sets with `--hostname`, `--user`, `--workdir`, `--entrypoint`,
//! `--stop-grace-period`, `--read-only`, `--init`, `--cap-add/--cap-drop`, `--dns*`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// `--init`: an init process (tini, Docker's docker-init) is PID 1 of each task: it reaps
    /// orphaned zombies and forwards signals to the command, its only child.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
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
    /// `--sysctl` (namespaced kernel parameters: net.*, kernel.shm*, kernel.msg*, fs.mqueue.*).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `--ulimit name=soft[:hard]`: (name, soft, hard).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--group`: supplementary groups (names from the image's /etc/group, or numbers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `--container-label`: labels of the tasks' containers (metadata).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Resource limits `--ulimit` takes (RLIMIT_<NAME>), as Docker.
pub const ULIMITS: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

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
