//! `--mount`: a host directory (bind), a named node-local volume, or a tmpfs in each task.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// A host path (bind), a volume name (empty: an anonymous volume per task), none (tmpfs).
    #[serde(default)]
    pub source: String,
    /// Absolute path inside the task.
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    /// `bind-propagation` (Docker's default rprivate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_propagation: Option<String>,
    /// `volume-nocopy`: a new volume is not filled from the image's content at the target.
    #[serde(default)]
    pub volume_nocopy: bool,
    /// `volume-driver` (only `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_driver: Option<String>,
    /// `tmpfs-size` in bytes (0: no limit but the kernel's, half the memory).
    #[serde(default)]
    pub tmpfs_size: u64,
    /// `tmpfs-mode` permission bits (Docker's default 1777).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_mode: Option<u32>,
}

impl Mount {
    pub fn new(kind: MountKind, source: &str, target: &str) -> Mount {
        Mount {
            kind,
            source: source.into(),
            target: target.into(),
            readonly: false,
            bind_propagation: None,
            volume_nocopy: false,
            volume_driver: None,
            tmpfs_size: 0,
            tmpfs_mode: None,
        }
    }
}

/// Docker's bind propagation modes.
pub const PROPAGATIONS: [&str; 6] = ["private", "rprivate", "shared", "rshared", "slave", "rslave"];
