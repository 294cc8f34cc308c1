//! What the executor needs to run one task, written to the task's directory as `spec.json` so the
//! shim (and a restarted daemon) can read it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRun {
    pub id: String,
    /// `<svc>.<slot>.<taskid>`: also the hostname inside the task.
    pub name: String,
    /// The task's network namespace (made by the data plane before the process starts).
    pub netns: String,
    pub image: Image,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Written to the task's /etc/resolv.conf and /etc/hosts.
    pub resolv_conf: String,
    pub hosts: String,
    /// The task's cgroups (made by the executor, joined by the shim) and their limits.
    #[serde(default)]
    pub cgroups: super::cgroups::CgroupPlan,
    /// Paths of the node (state directory, API socket directory, config) covered inside tasks
    /// that see the host's filesystem (`host`, `shoal/whoami`); set by the executor.
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// Secrets (and configs) as files in the task. Their data is never in spec.json: the
    /// executor hands it to the shim through a pipe and the shim writes it only into a tmpfs
    /// of the task's own mount namespace, gone with the task.
    #[serde(default)]
    pub files: Vec<CarriedFile>,
    /// The seccomp programs the shim installs for workloads it runs itself (`host`,
    /// `shoal/whoami`), packed (see `oci::seccomp_bpf`); set by the executor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seccomp: Vec<Vec<u64>>,
    /// `--read-only`: the root filesystem is mounted read-only.
    #[serde(default)]
    pub read_only: bool,
    /// `--cap-add` / `--cap-drop` over Docker's default set.
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--sysctl` and `--ulimit` (name, soft, hard).
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--stop-grace-period`: over the node's default.
    #[serde(default)]
    pub stop_grace_ms: Option<u64>,
    /// `--mount`s, resolved to host paths by the executor.
    #[serde(default)]
    pub mounts: Vec<TaskMount>,
    /// `--init`: the node's init binary (tini), bound read-only at [`INIT_TARGET`] in an image
    /// task and run as its PID 1 with the command as its child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

/// Where `--init` finds tini on a node (Debian's `tini` package: static, so it runs in any
/// image).
pub const INIT_BINARY: &str = "/usr/bin/tini-static";
/// Where an image task sees it (Docker's path for its docker-init).
pub const INIT_TARGET: &str = "/sbin/docker-init";

/// One `--mount` of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMount {
    pub spec: shoal_control::model::Mount,
    /// The host directory bound in (a bind's source, a volume's data directory); set by the
    /// executor.
    #[serde(default)]
    pub host: PathBuf,
    /// A volume made for this task: the shim fills it from the image's content at the target.
    #[serde(default)]
    pub populate: bool,
}

/// One file a task carries (a secret or a config), bound read-only at `target`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedFile {
    /// Absolute path inside the task.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// Never serialized: spec.json is on the node's disk.
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl std::fmt::Debug for CarriedFile {
    // The data stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarriedFile")
            .field("target", &self.target)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// The carried files' data as the executor writes it to the shim's stdin: for each file in
/// order, its length (u64, little-endian) then its bytes.
pub fn write_files(w: &mut impl std::io::Write, files: &[CarriedFile]) -> std::io::Result<()> {
    for f in files {
        w.write_all(&(f.data.len() as u64).to_le_bytes())?;
        w.write_all(&f.data)?;
    }
    w.flush()
}

/// Reads what [`write_files`] wrote into `files` (whose metadata came from spec.json).
pub fn read_files(r: &mut impl std::io::Read, files: &mut [CarriedFile], max: usize) -> std::io::Result<()> {
    for f in files.iter_mut() {
        let mut len = [0u8; 8];
        r.read_exact(&mut len)?;
        let len = usize::try_from(u64::from_le_bytes(len))
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: more than {max} bytes", f.target)))?;
        f.data = vec![0; len];
        r.read_exact(&mut f.data)?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Image {
    /// The built-in `shoal/whoami` workload, with its arguments.
    Whoami { args: Vec<String> },
    /// A command from the host's filesystem.
    Host { argv: Vec<String> },
    /// A root filesystem imported with `shoal image import`, pivot_root into it: how tasks of
    /// imported root filesystems ran before they ran under runc (as [`Image::Oci`]); kept so
    /// a daemon adopts and stops such tasks after an upgrade.
    Rootfs { root: PathBuf, argv: Vec<String> },
    /// An image from the node's image store, run by the OCI runtime on its own overlayfs root.
    Oci(OciImage),
}

/// What the OCI runtime needs of an image, resolved when the task is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciImage {
    /// The image's id (config digest): `shoal image rm` refuses while a task uses it.
    pub image_id: String,
    /// The unpacked layers, top first (overlayfs lowerdir order).
    pub layers: Vec<PathBuf>,
    /// Entrypoint + Cmd, or the service's args in place of Cmd.
    pub argv: Vec<String>,
    /// The image's Env with the service's on top.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// The task's cgroup relative to the cgroup roots (`/shoal/<instance>/<task>`), where the
    /// runtime puts it: the one the shim joined, under the node's (eBPF socket LB) cgroup.
    #[serde(default)]
    pub cgroups_path: String,
    /// The image's StopSignal (`docker stop` sends it instead of SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image '{0}' is not a built-in image (shoal/whoami, host)")]
    Unknown(String),
    #[error("image '{0}' needs a command (service create ... IMAGE CMD...)")]
    NoCommand(String),
}

pub const IMAGE_DIR: &str = "/var/lib/shoal/images";

impl Image {
    /// Resolves a built-in image (`shoal/whoami`, `host`) and its command; images from the store
    /// and imported root filesystems are resolved by the agent (`agent::images`).
    pub fn resolve(image: &str, command: &[String]) -> Result<Image, ImageError> {
        let name = image.split(':').next().unwrap_or(image);
        match name {
            "shoal/whoami" | "whoami" => Ok(Image::Whoami { args: command.to_vec() }),
            "host" if command.is_empty() => Err(ImageError::NoCommand(image.into())),
            "host" => Ok(Image::Host { argv: command.to_vec() }),
            _ => Err(ImageError::Unknown(image.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_resolve() {
        assert_eq!(Image::resolve("shoal/whoami", &[]).unwrap(), Image::Whoami { args: vec![] });
        assert_eq!(Image::resolve("shoal/whoami:latest", &[]).unwrap(), Image::Whoami { args: vec![] });
        assert_eq!(Image::resolve("host", &["sleep".into(), "1".into()]).unwrap(), Image::Host { argv: vec!["sleep".into(), "1".into()] });
        assert!(matches!(Image::resolve("host", &[]), Err(ImageError::NoCommand(_))));
        assert!(matches!(Image::resolve("nginx:1.27", &[]), Err(ImageError::Unknown(_))));
    }
}
