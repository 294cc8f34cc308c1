//! Named local volumes: a directory per volume under `<state>/volumes/<name>/_data`, made on the
//! first task that mounts it (and filled from the image's content at the mount's target unless
//! `volume-nocopy`, as Docker does), kept across task restarts on that node, listed and removed
//! with `shoal volume ls|inspect|rm` on the node. A volume made with the local driver's options
//! (`volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=64m`) has that device
//! mounted on its data directory when a task first needs it, and until `volume rm`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {name}: {what}: {source}")]
    Io { name: String, what: &'static str, source: std::io::Error },
    #[error("Error response from daemon: get {0}: no such volume")]
    NotFound(String),
    #[error("Error response from daemon: remove {name}: volume is in use by task {task}")]
    InUse { name: String, task: String },
    #[error("volume {name}: mount -t {kind} -o {options:?} {device} (the volume's options): {source}")]
    Mount { name: String, kind: String, device: String, options: String, source: nix::Error },
    #[error("volume {name}: {reason}")]
    Options { name: String, reason: String },
    #[error("volume {name}: unmount {path}: {source}")]
    Unmount { name: String, path: PathBuf, source: nix::Error },
}

/// What `volume inspect` shows (Docker's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub created_at: String,
    pub scope: String,
    /// The local driver's options it was made with (`volume-opt`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

const META: &str = "meta.json";
const DATA: &str = "_data";

pub fn root(state: &Path) -> PathBuf {
    state.join("volumes")
}

/// The volume's data directory, made when missing with `opts` and `labels`; `true` when it was
/// made now (a new volume is filled from the image). A volume with options has its device
/// mounted there (the options it was made with: a later mount's differ only in what it asked).
pub fn ensure(
    volumes: &Path,
    name: &str,
    opts: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Result<(PathBuf, bool), VolumeError> {
    let io = |what| move |source| VolumeError::Io { name: name.to_string(), what, source };
    let dir = volumes.join(name);
    let data = dir.join(DATA);
    if data.is_dir() {
        let info = inspect(volumes, name)?;
        mount_device(&info, &data)?;
        return Ok((data, false));
    }
    // Options are checked before anything is made: a bad one leaves no volume behind.
    if !opts.is_empty() {
        mount_args(name, opts)?;
    }
    std::fs::create_dir_all(&data).map_err(io("create"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let info = VolumeInfo {
        name: name.into(),
        driver: "local".into(),
        mountpoint: data.clone(),
        created_at: crate::cli::cluster::rfc3339(now),
        scope: "local".into(),
        options: opts.clone(),
        labels: labels.clone(),
    };
    let meta =
        serde_json::to_vec_pretty(&info).map_err(|e| VolumeError::Io { name: name.into(), what: "write meta.json", source: e.into() })?;
    std::fs::write(dir.join(META), meta).map_err(io("write meta.json"))?;
    mount_device(&info, &data)?;
    Ok((data, true))
}

/// What `mount(2)` gets for the local driver's options: (type, device, flags, data). Flags in
/// `o` (ro, nosuid, bind...) become mount flags, as Docker's local driver reads them; the rest is
/// the filesystem's data (`size=64m`).
pub fn mount_args(name: &str, opts: &BTreeMap<String, String>) -> Result<(String, String, MsFlags, String), VolumeError> {
    shoal_control::model::check_volume_opts(opts)
        .map_err(|(k, reason)| VolumeError::Options { name: name.into(), reason: format!("volume-opt {k}: {reason}") })?;
    let mut flags = MsFlags::empty();
    let mut data = vec![];
    for o in opts.get("o").map(String::as_str).unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "suid" | "dev" | "exec" | "async" | "defaults" => {}
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    Ok((opts["type"].clone(), opts["device"].clone(), flags, data.join(",")))
}

/// Mounts a volume's device on its data directory unless it is mounted there already (a
/// restarted daemon finds it so).
fn mount_device(info: &VolumeInfo, data: &Path) -> Result<(), VolumeError> {
    if info.options.is_empty() || is_mountpoint(data) {
        return Ok(());
    }
    let (kind, device, flags, options) = mount_args(&info.name, &info.options)?;
    let data_opt = (!options.is_empty()).then_some(options.as_str());
    nix::mount::mount(Some(device.as_str()), data, Some(kind.as_str()), flags, data_opt).map_err(|source| VolumeError::Mount {
        name: info.name.clone(),
        kind,
        device,
        options,
        source,
    })?;
    tracing::info!(volume = %info.name, path = %data.display(), "mounted the volume's device");
    Ok(())
}

/// Whether something is mounted exactly at `path` (this process's mount table).
fn is_mountpoint(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    // Field 5 is the mount point, with spaces and the like written as octal escapes.
    table.lines().filter_map(|l| l.split(' ').nth(4)).any(|p| unescape(p) == want)
}

fn unescape(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(v) if b[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn list(volumes: &Path) -> Vec<VolumeInfo> {
    let Ok(entries) = std::fs::read_dir(volumes) else { return vec![] };
    let mut v: Vec<VolumeInfo> =
        entries.flatten().filter_map(|e| serde_json::from_slice(&std::fs::read(e.path().join(META)).ok()?).ok()).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub fn inspect(volumes: &Path, name: &str) -> Result<VolumeInfo, VolumeError> {
    list(volumes).into_iter().find(|v| v.name == name).ok_or_else(|| VolumeError::NotFound(name.into()))
}

/// Removes a volume no live task record mounts (Docker refuses while a container uses it).
pub fn remove(state: &Path, name: &str) -> Result<(), VolumeError> {
    let volumes = root(state);
    inspect(&volumes, name)?;
    let data = volumes.join(name).join(DATA);
    if let Some(task) = user_of(&state.join("tasks"), &data) {
        return Err(VolumeError::InUse { name: name.into(), task });
    }
    if is_mountpoint(&data) {
        nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH).map_err(|source| VolumeError::Unmount {
            name: name.into(),
            path: data.clone(),
            source,
        })?;
    }
    std::fs::remove_dir_all(volumes.join(name)).map_err(|source| VolumeError::Io { name: name.into(), what: "remove", source })
}

/// A task on this node that has not ended and mounts `data`.
fn user_of(tasks: &Path, data: &Path) -> Option<String> {
    let entries = std::fs::read_dir(tasks).ok()?;
    entries.flatten().find_map(|e| {
        let dir = e.path();
        if dir.join("exit").exists() || dir.join(super::executor::shim::START_ERROR).exists() {
            return None;
        }
        let run: super::executor::TaskRun = serde_json::from_slice(&std::fs::read(dir.join("spec.json")).ok()?).ok()?;
        run.mounts.iter().any(|m| m.host == data).then(|| run.id.clone())
    })
}

#[derive(Args, Debug)]
pub struct VolumeArgs {
    /// The node's state directory (`shoal daemon --state-dir`).
    #[arg(long, global = true, default_value = "/var/lib/shoal")]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub cmd: VolumeCmd,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// List this node's volumes.
    Ls {
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes no task on this node uses.
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

pub fn run(args: VolumeArgs) -> anyhow::Result<()> {
    let volumes = root(&args.state_dir);
    match args.cmd {
        VolumeCmd::Ls { quiet } => {
            let all = list(&volumes);
            if !quiet {
                println!("{:<15} VOLUME NAME", "DRIVER");
            }
            for v in all {
                if quiet {
                    println!("{}", v.name);
                } else {
                    println!("{:<15} {}", v.driver, v.name);
                }
            }
        }
        VolumeCmd::Inspect { volumes: names } => {
            let found = names.iter().map(|n| inspect(&volumes, n)).collect::<Result<Vec<_>, _>>()?;
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
        VolumeCmd::Rm { volumes: names } => {
            for n in names {
                remove(&args.state_dir, &n)?;
                println!("{n}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_is_made_once_listed_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let v = root(state.path());
        let none = BTreeMap::new();
        let (data, new) = ensure(&v, "db-data", &none, &none).unwrap();
        assert!(new && data.is_dir());
        std::fs::write(data.join("row"), "1").unwrap();
        let (again, new) = ensure(&v, "db-data", &none, &none).unwrap();
        assert!(!new && again == data && again.join("row").exists(), "kept across tasks");
        assert_eq!(list(&v).iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["db-data"]);
        assert_eq!(inspect(&v, "db-data").unwrap().driver, "local");
        assert!(matches!(inspect(&v, "nope"), Err(VolumeError::NotFound(_))));
        remove(state.path(), "db-data").unwrap();
        assert!(list(&v).is_empty());
    }

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_local_driver_s_options_become_mount_arguments() {
        let (kind, device, flags, data) =
            mount_args("v", &opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m,uid=1000")])).unwrap();
        assert_eq!((kind.as_str(), device.as_str(), flags, data.as_str()), ("tmpfs", "tmpfs", MsFlags::empty(), "size=64m,uid=1000"));
        let (_, device, flags, data) = mount_args("v", &opts(&[("type", "none"), ("device", "/srv/x"), ("o", "bind,ro,nosuid")])).unwrap();
        assert_eq!((device.as_str(), flags, data.as_str()), ("/srv/x", MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID, ""));
        let e = mount_args("v", &opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("size", "1")])).unwrap_err().to_string();
        assert!(e.contains("volume v: volume-opt size") && e.contains("type, device or o"), "{e}");
    }

    #[test]
    fn a_volume_with_bad_options_is_not_made() {
        let state = tempfile::tempdir().unwrap();
        let v = root(state.path());
        assert!(ensure(&v, "bad", &opts(&[("type", "tmpfs")]), &BTreeMap::new()).is_err());
        assert!(list(&v).is_empty(), "nothing made");
    }

    #[test]
    fn labels_and_options_are_kept_and_old_records_still_read() {
        let state = tempfile::tempdir().unwrap();
        let v = root(state.path());
        ensure(&v, "plain", &BTreeMap::new(), &opts(&[("com.docker.stack.namespace", "app")])).unwrap();
        assert_eq!(inspect(&v, "plain").unwrap().labels["com.docker.stack.namespace"], "app");
        let old = r#"{"Name":"x","Driver":"local","Mountpoint":"/m","CreatedAt":"t","Scope":"local"}"#;
        let info: VolumeInfo = serde_json::from_str(old).unwrap();
        assert!(info.options.is_empty() && info.labels.is_empty());
    }

    #[test]
    fn mount_points_are_read_from_the_mount_table() {
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/proc/self")));
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain\\"), "/plain\\");
    }
}
