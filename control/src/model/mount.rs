//! `--mount`: a host directory (bind), a named node-local volume, or a tmpfs in each task.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// `volume-opt`: the local driver's options (`type`, `device`, `o`), used when the node
    /// makes the volume: with them it mounts `device` of `type` with options `o` as the volume.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_opts: BTreeMap<String, String>,
    /// `volume-label`: labels the node gives the volume when it makes it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_labels: BTreeMap<String, String>,
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
            volume_opts: BTreeMap::new(),
            volume_labels: BTreeMap::new(),
            tmpfs_size: 0,
            tmpfs_mode: None,
        }
    }
}

/// Docker's bind propagation modes.
pub const PROPAGATIONS: [&str; 6] = ["private", "rprivate", "shared", "rshared", "slave", "rslave"];

/// The local driver's options (Docker's `volume-opt`, as `mount(8)` takes them).
pub const VOLUME_OPTS: [&str; 3] = ["type", "device", "o"];

/// Checks a volume's driver options: only the local driver's keys, `type` and `device` together
/// (a mount needs both), no NUL. `Err((key, reason))` names the offending key.
pub fn check_volume_opts(opts: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    for (k, v) in opts {
        if !VOLUME_OPTS.contains(&k.as_str()) {
            return Err((k.clone(), format!("{k:?} is not an option of the local driver: use type, device or o")));
        }
        if v.contains('\0') || v.len() > 4096 {
            return Err((k.clone(), "not a mount option value".into()));
        }
    }
    match (opts.get("type"), opts.get("device")) {
        (Some(t), Some(d)) if !t.is_empty() && !d.is_empty() => Ok(()),
        (None, None) if opts.is_empty() => Ok(()),
        (None, None) => Err(("o".into(), "o needs type and device too, e.g. type=tmpfs,device=tmpfs,o=size=64m".into())),
        (Some(_), _) => Err(("device".into(), "give the device to mount, e.g. device=tmpfs or device=/dev/sdb1".into())),
        (None, Some(_)) => Err(("type".into(), "give the filesystem type, e.g. type=tmpfs, type=ext4 or type=none with o=bind".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn volume_options_are_the_local_driver_s() {
        assert!(check_volume_opts(&BTreeMap::new()).is_ok());
        assert!(check_volume_opts(&opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m")])).is_ok());
        let e = check_volume_opts(&opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("size", "1")])).unwrap_err();
        assert_eq!(e.0, "size");
        assert!(e.1.contains("type, device or o"), "{e:?}");
        assert_eq!(check_volume_opts(&opts(&[("type", "tmpfs")])).unwrap_err().0, "device");
        assert_eq!(check_volume_opts(&opts(&[("device", "/dev/x")])).unwrap_err().0, "type");
        assert_eq!(check_volume_opts(&opts(&[("o", "size=1m")])).unwrap_err().0, "o");
    }

    #[test]
    fn old_mounts_without_options_still_read() {
        let m: Mount = serde_json::from_str(r#"{"type":"volume","source":"v","target":"/v"}"#).unwrap();
        assert!(m.volume_opts.is_empty() && m.volume_labels.is_empty());
        assert!(!serde_json::to_string(&m).unwrap().contains("volume_opts"));
    }
}
