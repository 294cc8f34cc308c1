//! Named local volumes: a directory per volume under `<state>/volumes/<name>/_data`, made on the
//! first task that mounts it (and filled from the image's content at the mount's target unless
//! `volume-nocopy`, as Docker does), kept across task restarts on that node, listed and removed
//! with `shoal volume ls|inspect|rm` on the node.

use std::path::{Path, PathBuf};

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
}

const META: &str = "meta.json";
const DATA: &str = "_data";

pub fn root(state: &Path) -> PathBuf {
    state.join("volumes")
}

/// The volume's data directory, made when missing; `true` when it was made now (a new volume
/// is filled from the image).
pub fn ensure(volumes: &Path, name: &str) -> Result<(PathBuf, bool), VolumeError> {
    let io = |what| move |source| VolumeError::Io { name: name.to_string(), what, source };
    let dir = volumes.join(name);
    let data = dir.join(DATA);
    if data.is_dir() {
        return Ok((data, false));
    }
    std::fs::create_dir_all(&data).map_err(io("create"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let info = VolumeInfo {
        name: name.into(),
        driver: "local".into(),
        mountpoint: data.clone(),
        created_at: shoal_control::cli::rfc3339(now),
        scope: "local".into(),
    };
    let meta =
        serde_json::to_vec_pretty(&info).map_err(|e| VolumeError::Io { name: name.into(), what: "write meta.json", source: e.into() })?;
    std::fs::write(dir.join(META), meta).map_err(io("write meta.json"))?;
    Ok((data, true))
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
    if let Some(task) = user_of(&state.join("tasks"), &volumes.join(name).join(DATA)) {
        return Err(VolumeError::InUse { name: name.into(), task });
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
        let (data, new) = ensure(&v, "db-data").unwrap();
        assert!(new && data.is_dir());
        std::fs::write(data.join("row"), "1").unwrap();
        let (again, new) = ensure(&v, "db-data").unwrap();
        assert!(!new && again == data && again.join("row").exists(), "kept across tasks");
        assert_eq!(list(&v).iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["db-data"]);
        assert_eq!(inspect(&v, "db-data").unwrap().driver, "local");
        assert!(matches!(inspect(&v, "nope"), Err(VolumeError::NotFound(_))));
        remove(state.path(), "db-data").unwrap();
        assert!(list(&v).is_empty());
    }
}
