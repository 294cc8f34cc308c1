//! The images of the tasks this node runs. A service's image resolves to what the executor
//! runs: the built-ins (`shoal/whoami`, `host`), an image in the node's store (run by the OCI
//! runtime with the image's config), or a flat imported root filesystem. An image the store
//! lacks is pulled first, once for every task that waits on it, as Swarm's agent does; a pull
//! that fails rejects the task with the registry's reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::agent::executor::oci::{process, read_from_layers};
use crate::agent::executor::spec::{Image, OciImage};
use crate::image::{ImageRecord, Store};
use shoal_control::model::HealthCheck;

enum Pull {
    Running,
    Failed(String),
}

pub struct Images {
    state_dir: PathBuf,
    insecure: Vec<String>,
    pulls: Mutex<HashMap<String, Pull>>,
    /// The image HEALTHCHECK of each image reference tasks use, read once from the store.
    health: Mutex<HashMap<String, Option<HealthCheck>>>,
    /// Told when a pull ends, so the agent starts (or rejects) its tasks at once.
    pub wake: tokio::sync::Notify,
}

/// What a task's image is, now.
/// Why a task's image cannot run, naming the image (or the flag) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Builtin(#[from] crate::agent::executor::spec::ImageError),
    /// The store, a layer or the image's config could not be read, or the reference is invalid.
    #[error(transparent)]
    Store(#[from] crate::image::ImageError),
    /// A pull of this image failed earlier (kept as its text: the pull ran on another task).
    #[error("{reason}")]
    PullFailed { image: String, reason: String },
    #[error("image '{image}' has no Entrypoint or Cmd: give the command (service create ... IMAGE CMD...)")]
    NoCommand { image: String },
    #[error("image '{image}' is a root filesystem without a config: give the command (service create ... IMAGE CMD...)")]
    RootfsNoCommand { image: String },
    #[error("image '{image}': {source}")]
    User { image: String, source: crate::agent::executor::oci::process::UserError },
    #[error("--group {group:?}: no such group in the image's /etc/group")]
    NoGroup { group: String },
}

pub enum Resolved {
    Ready(Image),
    /// Being pulled; the task waits (Preparing).
    Pulling,
}

/// A service's image, command and environment, as the task will run them.
pub struct Wanted<'a> {
    pub image: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub hostname: &'a str,
    pub cgroups_path: String,
    /// `--user`, `--workdir`, `--entrypoint` over the image's.
    pub user: Option<&'a str>,
    pub workdir: Option<&'a str>,
    pub entrypoint: Option<&'a [String]>,
    /// `--group`: supplementary groups.
    pub groups: &'a [String],
}

impl Images {
    pub fn new(state_dir: &Path, insecure: Vec<String>) -> Images {
        Images {
            state_dir: state_dir.to_path_buf(),
            insecure,
            pulls: Mutex::default(),
            health: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The HEALTHCHECK of the stored image `image` names (None for built-ins, images without
    /// one, or `NONE`).
    pub fn healthcheck(&self, image: &str) -> Option<HealthCheck> {
        if Self::is_builtin(image) {
            return None;
        }
        let mut cache = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = cache.get(image) {
            return h.clone();
        }
        let store = Store::existing(&self.state_dir)?;
        let record = store.find(image)?;
        let h = store.read_blob(&record.id).ok().and_then(|b| image_healthcheck(&b));
        cache.insert(image.to_string(), h.clone());
        h
    }

    fn is_builtin(image: &str) -> bool {
        let name = image.split(':').next().unwrap_or(image);
        matches!(name, "shoal/whoami" | "whoami" | "host")
    }

    /// Resolves `w.image`; starts a pull (on the current tokio runtime) when it is missing.
    pub fn resolve(self: &Arc<Self>, w: &Wanted) -> Result<Resolved, ResolveError> {
        if Self::is_builtin(w.image) {
            return Ok(Resolved::Ready(Image::resolve(w.image, w.args)?));
        }
        let store = Store::open(&self.state_dir)?;
        if let Some(record) = store.find(w.image) {
            return oci_image(&store, &record, w).map(|i| Resolved::Ready(Image::Oci(i)));
        }
        let flat = crate::image::rootfs::dir(w.image.split(':').next().unwrap_or(w.image));
        if flat.is_dir() {
            return rootfs_image(&flat, w).map(|i| Resolved::Ready(Image::Oci(i)));
        }
        crate::image::reference::ImageRef::parse(w.image)?;
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        match pulls.remove(w.image) {
            Some(Pull::Failed(reason)) => return Err(ResolveError::PullFailed { image: w.image.to_string(), reason }),
            Some(Pull::Running) => {
                pulls.insert(w.image.to_string(), Pull::Running);
                return Ok(Resolved::Pulling);
            }
            None => {}
        }
        pulls.insert(w.image.to_string(), Pull::Running);
        drop(pulls);
        self.spawn_pull(w.image.to_string());
        Ok(Resolved::Pulling)
    }

    fn spawn_pull(self: &Arc<Self>, image: String) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = match Store::open(&me.state_dir) {
                Ok(store) => crate::image::pull::pull(&store, &image, &me.insecure).await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut pulls = me.pulls.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(()) => {
                    tracing::info!(image = %image, ms = started.elapsed().as_millis() as u64, "image pulled");
                    // The tag may name another image now: its HEALTHCHECK is read again.
                    me.health.lock().unwrap_or_else(|p| p.into_inner()).remove(&image);
                    pulls.remove(&image);
                }
                Err(e) => {
                    tracing::warn!(image = %image, error = %e, "image pull failed");
                    pulls.insert(image, Pull::Failed(e));
                }
            }
            drop(pulls);
            me.wake.notify_one();
        });
    }
}

/// The executor's view of a stored image for one task: Entrypoint/Cmd with the service's args
/// in place of Cmd, the image's Env under the service's, WorkingDir, User looked up in the
/// image's own /etc/passwd and /etc/group.
pub fn oci_image(store: &Store, record: &ImageRecord, w: &Wanted) -> Result<OciImage, ResolveError> {
    let config = store.config(record)?;
    let c = config.config().clone().unwrap_or_default();
    // `--entrypoint` replaces the image's Entrypoint and drops its Cmd, as Docker does.
    let (entrypoint, cmd) = match w.entrypoint {
        Some(e) => (e.to_vec(), vec![]),
        None => (c.entrypoint().clone().unwrap_or_default(), c.cmd().clone().unwrap_or_default()),
    };
    let argv = process::argv(&entrypoint, &cmd, w.args);
    if argv.is_empty() {
        return Err(ResolveError::NoCommand { image: w.image.to_string() });
    }
    let mut layers = Vec::new();
    for l in record.layers.iter().rev() {
        layers.push(store.layer_dir(l)?);
    }
    let passwd = read_from_layers(&layers, "etc/passwd").unwrap_or_default();
    let group = read_from_layers(&layers, "etc/group").unwrap_or_default();
    let user = process::user(w.user.or(c.user().as_deref()).unwrap_or(""), &passwd, &group)
        .map_err(|source| ResolveError::User { image: w.image.to_string(), source })?;
    let mut additional_gids = user.additional_gids;
    for g in w.groups {
        let gid = g.parse::<u32>().ok().or_else(|| {
            group.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok()).flatten()
            })
        });
        let gid = gid.ok_or_else(|| ResolveError::NoGroup { group: g.to_string() })?;
        if !additional_gids.contains(&gid) {
            additional_gids.push(gid);
        }
    }
    Ok(OciImage {
        image_id: record.id.clone(),
        layers,
        argv,
        env: process::env(&c.env().clone().unwrap_or_default(), w.env, w.hostname),
        cwd: w.workdir.map(String::from).or_else(|| c.working_dir().clone().filter(|d| !d.is_empty())).unwrap_or_else(|| "/".into()),
        uid: user.uid,
        gid: user.gid,
        additional_gids,
        cgroups_path: w.cgroups_path.clone(),
        stop_signal: c.stop_signal().clone(),
    })
}

/// A flat root filesystem from `shoal image import` runs like an image of one layer with no
/// config: the service's command, as root, at /, in the same sandbox and with a copy-on-write
/// root of its own.
pub fn rootfs_image(root: &Path, w: &Wanted) -> Result<OciImage, ResolveError> {
    if w.args.is_empty() {
        return Err(ResolveError::RootfsNoCommand { image: w.image.to_string() });
    }
    Ok(OciImage {
        // The name `shoal image rm` takes (a tag, if the service gave one, is not part of it).
        image_id: format!("rootfs:{}", w.image.split(':').next().unwrap_or(w.image)),
        layers: vec![root.to_path_buf()],
        argv: w.args.to_vec(),
        env: process::env(&[], w.env, w.hostname),
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        cgroups_path: w.cgroups_path.clone(),
        stop_signal: None,
    })
}

/// Docker's `config.Healthcheck` of an image config (oci-spec leaves it out): `CMD-SHELL cmd`
/// runs as is, `CMD arg...` quoted for the shell, `NONE` turns it off; durations are
/// nanoseconds, zero meaning Docker's default.
pub fn image_healthcheck(config: &[u8]) -> Option<HealthCheck> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    let h = v.get("config")?.get("Healthcheck")?;
    let test: Vec<&str> = h.get("Test")?.as_array()?.iter().filter_map(|s| s.as_str()).collect();
    let cmd = match test.split_first()? {
        (&"CMD-SHELL", [cmd]) => cmd.to_string(),
        (&"CMD", args) if !args.is_empty() => args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
        _ => return None,
    };
    let mut check = HealthCheck::new(cmd);
    let ms = |key: &str| h.get(key).and_then(|n| n.as_u64()).map(|ns| ns / 1_000_000).filter(|ms| *ms > 0);
    check.interval_ms = ms("Interval").unwrap_or(check.interval_ms);
    check.timeout_ms = ms("Timeout").unwrap_or(check.timeout_ms);
    check.start_period_ms = ms("StartPeriod").unwrap_or(check.start_period_ms);
    check.retries = h.get("Retries").and_then(|n| n.as_u64()).filter(|n| *n > 0).map_or(check.retries, |n| n.min(u32::MAX as u64) as u32);
    Some(check)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::sha256;

    /// A store holding one image (one empty layer with /etc/passwd) with this config section.
    fn store_with(dir: &Path, config: serde_json::Value) -> Store {
        let store = Store::open(dir).unwrap();
        let layer = sha256(b"layer");
        let ldir = store.layer_dir(&layer).unwrap();
        std::fs::create_dir_all(ldir.join("etc")).unwrap();
        std::fs::write(ldir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n").unwrap();
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": { "type": "layers", "diff_ids": [layer] },
        }))
        .unwrap();
        let id = sha256(&cfg);
        store.put_blob("config", &id, &cfg).unwrap();
        store.commit(&id, vec![layer], &["docker.io/library/web:1".into()], &[]).unwrap();
        store
    }

    fn wanted<'a>(image: &'a str, args: &'a [String], env: &'a [(String, String)]) -> Wanted<'a> {
        Wanted {
            image,
            args,
            env,
            hostname: "web.1.t1",
            cgroups_path: "/shoal/n1/t1".into(),
            user: None,
            workdir: None,
            entrypoint: None,
            groups: &[],
        }
    }

    #[test]
    fn a_stored_image_runs_its_config_under_the_services_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(
            tmp.path(),
            serde_json::json!({
                "Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["PATH=/bin", "MODE=image"],
                "WorkingDir": "/var/www", "User": "web", "StopSignal": "SIGQUIT",
            }),
        );
        let record = store.find("web:1").unwrap();
        let env = vec![("MODE".to_string(), "service".to_string())];
        let img = oci_image(&store, &record, &wanted("web:1", &[], &env)).unwrap();
        assert_eq!(img.argv, vec!["/entry".to_string(), "serve".into()]);
        assert_eq!(img.env, vec!["PATH=/bin".to_string(), "HOSTNAME=web.1.t1".into(), "MODE=service".into()]);
        assert_eq!((img.cwd.as_str(), img.uid, img.gid), ("/var/www", 33, 33));
        assert_eq!(img.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(img.layers, vec![store.layer_dir(&record.layers[0]).unwrap()]);
        let args = vec!["debug".to_string()];
        assert_eq!(oci_image(&store, &record, &wanted("web:1", &args, &[])).unwrap().argv, vec!["/entry".to_string(), "debug".into()]);
    }

    #[test]
    fn an_image_without_a_command_or_with_an_unknown_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), serde_json::json!({}));
        let record = store.find("web:1").unwrap();
        let err = oci_image(&store, &record, &wanted("web:1", &[], &[])).unwrap_err().to_string();
        assert!(err.contains("has no Entrypoint or Cmd"), "{err}");
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), serde_json::json!({ "Cmd": ["x"], "User": "nobody" }));
        let record = store.find("web:1").unwrap();
        let err = oci_image(&store, &record, &wanted("web:1", &[], &[])).unwrap_err().to_string();
        assert_eq!(err, "image 'web:1': user 'nobody' is not in the image's /etc/passwd");
    }

    #[tokio::test]
    async fn a_missing_image_is_pulled_once_and_a_failed_pull_rejects_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let images = Arc::new(Images::new(tmp.path(), vec![]));
        // Nothing listens on loopback port 1: the pull fails at once, without leaving the host.
        let image = "127.0.0.1:1/app:1";
        let wake = images.wake.notified();
        assert!(matches!(images.resolve(&wanted(image, &[], &[])), Ok(Resolved::Pulling)));
        assert!(matches!(images.resolve(&wanted(image, &[], &[])), Ok(Resolved::Pulling)), "one pull for every waiting task");
        tokio::time::timeout(std::time::Duration::from_secs(20), wake).await.expect("the pull ends and wakes the agent");
        let err = images.resolve(&wanted(image, &[], &[])).err().expect("the failure, once").to_string();
        assert!(err.starts_with("pull 127.0.0.1:1/app:1: "), "{err}");
        assert!(matches!(images.resolve(&wanted(image, &[], &[])), Ok(Resolved::Pulling)), "the next task tries again");
        assert!(matches!(images.resolve(&wanted("host", &["true".into()], &[])), Ok(Resolved::Ready(Image::Host { .. }))));
        assert!(images.resolve(&wanted("Bad Name", &[], &[])).is_err());
    }

    #[test]
    fn image_healthchecks_read_like_docker() {
        let cfg = |h: serde_json::Value| serde_json::to_vec(&serde_json::json!({ "config": { "Healthcheck": h } })).unwrap();
        let h = image_healthcheck(&cfg(serde_json::json!({
            "Test": ["CMD-SHELL", "curl -f localhost || exit 1"], "Interval": 200_000_000u64, "Retries": 5
        })))
        .unwrap();
        assert_eq!(h.cmd, "curl -f localhost || exit 1");
        assert_eq!((h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms), (200, 30_000, 5, 0));
        let h = image_healthcheck(&cfg(serde_json::json!({ "Test": ["CMD", "redis-cli", "ping", "it's"] }))).unwrap();
        assert_eq!(h.cmd, "redis-cli ping 'it'\\''s'");
        assert!(image_healthcheck(&cfg(serde_json::json!({ "Test": ["NONE"] }))).is_none());
        assert!(image_healthcheck(br#"{"config": {}}"#).is_none());
        assert!(image_healthcheck(b"junk").is_none());
    }
}
