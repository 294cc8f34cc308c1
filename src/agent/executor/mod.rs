//! Runs task processes through the `task-exec` shim: image tasks with the OCI runtime (runc,
//! see [`oci`]) on their own overlayfs roots; the built-in `shoal/whoami`, `host` and flat
//! imported root filesystems with Linux namespaces directly.

pub mod cgroups;
mod host_carry;
pub mod inside;
pub mod logfile;
pub mod oci;
pub mod shim;
pub mod spec;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a start waits for the task's shim to make its init (or fail). Far above a normal
/// start (milliseconds): it only bounds a shim that hangs.
const START_LIMIT: Duration = Duration::from_secs(60);

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use spec::{Image, TaskRun};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    Exited(i32),
    /// No trace of the task on this node.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("task {id}: {what}: {source}")]
    Io { id: String, what: &'static str, source: std::io::Error },
    #[error("task {id}: {reason}")]
    Start { id: String, reason: String },
    #[error("task {id}: the task's seccomp filter: {source}")]
    Seccomp { id: String, source: oci::seccomp_bpf::SeccompError },
    #[error("task {id}: {source}")]
    RuntimeConfig { id: String, source: oci::config::RenderError },
    #[error("task {id}: set up cgroups: {source}")]
    Cgroups { id: String, source: cgroups::CgroupError },
}

pub trait Executor: Send + Sync {
    fn start(&self, run: &TaskRun) -> Result<(), ExecError>;
    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&self, id: &str, grace: Duration) -> Result<ProcessState, ExecError>;
    fn state(&self, id: &str) -> ProcessState;
    /// Tasks this node has records of (running or exited), for adoption after a restart.
    fn known(&self) -> Vec<String>;
    /// Forgets an ended task's records.
    fn remove(&self, id: &str);
    /// The task's stdout and stderr files, while this node holds its records.
    fn log_paths(&self, id: &str) -> Option<(PathBuf, PathBuf)>;
    /// Why the task never started, when it did not (runc's or the shim's reason).
    fn start_error(&self, _id: &str) -> Option<String> {
        None
    }
    /// Runs `sh -c cmd` inside the running task (health checks).
    fn run_inside(&self, id: &str, cmd: &str, timeout: Duration) -> Result<inside::Outcome, ExecError>;
    /// The host PID of the task's first process, while it runs (for readiness: its sockets).
    fn task_pid(&self, _id: &str) -> Option<i32> {
        None
    }
}

/// One directory per task under `root`: spec.json, pid (the task's init, host PID), exit,
/// stdout.log, stderr.log (and their rotated copies, see [`logfile`]), log-limits.json,
/// resolv.conf, hosts.
pub struct NamespaceExecutor {
    root: PathBuf,
    shoal: PathBuf,
    log_limits: logfile::LogLimits,
    hidden: Vec<PathBuf>,
}

impl NamespaceExecutor {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root, shoal: std::env::current_exe()?, log_limits: logfile::LogLimits::default(), hidden: Vec::new() })
    }

    /// The node's own paths that tasks seeing the host's filesystem must not see.
    pub fn with_hidden(mut self, paths: Vec<PathBuf>) -> Self {
        self.hidden = paths;
        self
    }

    /// `--log-max-size`/`--log-max-file` for the tasks started from now on.
    pub fn with_log_limits(mut self, limits: logfile::LogLimits) -> Self {
        self.log_limits = limits;
        self
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Bind sources must exist (Docker refuses the task with the reason); volumes are made on
    /// first use, an anonymous one per task and mount.
    fn resolve_mounts(&self, run: &TaskRun) -> Result<Vec<spec::TaskMount>, ExecError> {
        use shoal_control::model::MountKind;
        let volumes = crate::agent::volumes::root(self.root.parent().unwrap_or(&self.root));
        let mut out = Vec::with_capacity(run.mounts.len());
        for (i, m) in run.mounts.iter().enumerate() {
            let mut m = m.clone();
            match m.spec.kind {
                MountKind::Bind => {
                    m.host = PathBuf::from(&m.spec.source);
                    if !m.host.exists() {
                        return Err(ExecError::Start {
                            id: run.id.clone(),
                            reason: format!("invalid mount config for type \"bind\": bind source path does not exist: {}", m.spec.source),
                        });
                    }
                }
                MountKind::Volume => {
                    let name = if m.spec.source.is_empty() { format!("{}-{i}", run.id) } else { m.spec.source.clone() };
                    let (data, new) = crate::agent::volumes::ensure(&volumes, &name, &m.spec.volume_opts, &m.spec.volume_labels)
                        .map_err(|e| ExecError::Start { id: run.id.clone(), reason: e.to_string() })?;
                    m.host = data;
                    m.populate = new && !m.spec.volume_nocopy;
                }
                MountKind::Tmpfs => {}
            }
            out.push(m);
        }
        Ok(out)
    }

    fn pid(&self, id: &str) -> Option<Pid> {
        let text = std::fs::read_to_string(self.dir(id).join("pid")).ok()?;
        let pid = Pid::from_raw(text.trim().parse().ok()?);
        // A recycled PID would not be in the task's namespaces: check it is still ours.
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/uts")).ok()?;
        let ours = std::fs::read_link(format!("/proc/{}/ns/uts", std::process::id())).ok()?;
        (ns != ours).then_some(pid)
    }
}

/// What a task of the host's binaries (`host`, `shoal/whoami`) cannot carry: it sees the host's
/// filesystem, where shoal makes no files, so it gets its secrets under /run (a /run of its
/// own) and nothing else; configs elsewhere and mounts need an image.
fn not_for_host_binaries(run: &TaskRun) -> Option<String> {
    match &run.image {
        Image::Oci(_) => None,
        _ if !run.mounts.is_empty() => Some(format!(
            "mounts reach tasks of images only: a task of image host or shoal/whoami runs on the host's filesystem (mount {} needs an image: shoal image load or pull)",
            run.mounts[0].spec.target
        )),
        Image::Rootfs { .. } if !run.files.is_empty() => Some("secrets and configs reach tasks of images only".into()),
        _ => host_carry::outside_run(&run.files).map(|t| {
            format!(
                "{t}: a task of image host or shoal/whoami runs on the host's filesystem and gets its secrets under /run/secrets only: a config or another target needs an image (shoal image load or pull)"
            )
        }),
    }
}

/// Never without the init the service asked for: why an image task with `--init` cannot start
/// on this node. Tasks that see the host's filesystem (`host`, `shoal/whoami`) always have the
/// shim's own init as PID 1, which reaps orphans and forwards signals.
fn missing_init(run: &TaskRun) -> Option<String> {
    let init = run.init.as_deref().filter(|_| matches!(run.image, Image::Oci(_)))?;
    (!init.is_file()).then(|| format!("--init: {} is missing on this node: install Debian's tini package", init.display()))
}

impl Executor for NamespaceExecutor {
    fn task_pid(&self, id: &str) -> Option<i32> {
        self.pid(id).map(|p| p.as_raw())
    }

    fn start(&self, run: &TaskRun) -> Result<(), ExecError> {
        let io = |what| move |source| ExecError::Io { id: run.id.clone(), what, source };
        if let Some(reason) = not_for_host_binaries(run) {
            return Err(ExecError::Start { id: run.id.clone(), reason });
        }
        if let Some(reason) = missing_init(run) {
            return Err(ExecError::Start { id: run.id.clone(), reason });
        }
        let mounts = self.resolve_mounts(run)?;
        let dir = self.dir(&run.id);
        std::fs::create_dir_all(&dir).map_err(io("create task dir"))?;
        for stale in ["pid", "exit", shim::START_ERROR] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let seccomp = match &run.image {
            Image::Oci(_) => vec![],
            _ => oci::seccomp_bpf::default_packed().map_err(|source| ExecError::Seccomp { id: run.id.clone(), source })?,
        };
        let run = &TaskRun { hidden: self.hidden.clone(), mounts, seccomp, ..run.clone() };
        let spec =
            serde_json::to_vec_pretty(run).map_err(|e| ExecError::Io { id: run.id.clone(), what: "write spec", source: e.into() })?;
        std::fs::write(dir.join("spec.json"), spec).map_err(io("write spec"))?;
        if let Image::Oci(img) = &run.image {
            let netns = shoal_dataplane::netns::path(&run.netns);
            let config = oci::config::render(&oci::config::build(run, img, &dir, &netns))
                .map_err(|source| ExecError::RuntimeConfig { id: run.id.clone(), source })?;
            std::fs::write(dir.join("config.json"), config).map_err(io("write config.json"))?;
        }
        cgroups::apply(&run.cgroups).map_err(|source| ExecError::Cgroups { id: run.id.clone(), source })?;
        let limits = serde_json::to_vec(&self.log_limits).map_err(|e| ExecError::Io {
            id: run.id.clone(),
            what: "write log limits",
            source: e.into(),
        })?;
        std::fs::write(dir.join(logfile::LIMITS_FILE), limits).map_err(io("write log limits"))?;
        // The workload's output goes through the shim's rotating writers; this file only gets
        // the shim's own complaints (before the task exists, or a failing log disk).
        let err = append(&dir.join("stderr.log")).map_err(io("open stderr.log"))?;
        let mut cmd = Command::new(&self.shoal);
        cmd.arg("task-exec")
            .arg(&dir)
            .current_dir(&dir)
            .stdin(if run.files.is_empty() { Stdio::null() } else { Stdio::piped() })
            .stdout(Stdio::null())
            .stderr(err)
            // Its own session: the task outlives a daemon that is killed or restarted.
            .process_group(0);
        let mut child = cmd.spawn().map_err(io("spawn task-exec"))?;
        // Secrets and configs go to the shim through a pipe, never through a file. A shim that
        // failed before reading them reports why in START_ERROR below.
        if let Some(mut stdin) = child.stdin.take() {
            if let Err(e) = spec::write_files(&mut stdin, &run.files) {
                tracing::debug!(task = %run.id, error = %e, "hand the task's files to the shim");
            }
        }
        // The shim is reaped by a thread so it never lingers as a zombie of the daemon; the flag
        // says it ended.
        let shim_ended = Arc::new(AtomicBool::new(false));
        let ended = shim_ended.clone();
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
            ended.store(true, Ordering::Release);
        });
        // Wait until the shim has made the task's init, or failed, or ended. Not a short timeout:
        // a start still under way reads as never started (no pid yet), and the next pass would
        // start the task a second time (seen under load: the second start failed, the task was
        // reported failed and its running process stopped). The limit is only for a shim that
        // hangs.
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(reason) = std::fs::read_to_string(dir.join(shim::START_ERROR)) {
                return Err(ExecError::Start { id: run.id.clone(), reason });
            }
            if dir.join("pid").exists() || dir.join("exit").exists() {
                return Ok(());
            }
            if shim_ended.load(Ordering::Acquire) {
                // It may have written its files just before it ended: look once more.
                if dir.join("pid").exists() || dir.join("exit").exists() {
                    return Ok(());
                }
                let reason = std::fs::read_to_string(dir.join(shim::START_ERROR))
                    .unwrap_or_else(|_| "the task's shim ended before it started the task".into());
                return Err(ExecError::Start { id: run.id.clone(), reason });
            }
            if Instant::now() >= deadline {
                return Err(ExecError::Start {
                    id: run.id.clone(),
                    reason: format!("the task's shim did not start it within {} s", START_LIMIT.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&self, id: &str, grace: Duration) -> Result<ProcessState, ExecError> {
        if let Some(pid) = self.pid(id) {
            // The image's StopSignal, as `docker stop` sends it; SIGTERM otherwise.
            let signal = std::fs::read(self.dir(id).join("spec.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<TaskRun>(&b).ok())
                .and_then(|r| match r.image {
                    Image::Oci(img) => img.stop_signal.as_deref().and_then(oci::process::stop_signal),
                    _ => None,
                })
                .unwrap_or(Signal::SIGTERM);
            // The service's --stop-grace-period, when it set one, over the node's default.
            let grace = std::fs::read(self.dir(id).join("spec.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<TaskRun>(&b).ok())
                .and_then(|r| r.stop_grace_ms)
                .map_or(grace, Duration::from_millis);
            let _ = kill(pid, signal);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && matches!(self.state(id), ProcessState::Running) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.state(id), ProcessState::Running) {
                // SIGKILL on a PID namespace's init ends every process in it.
                let _ = kill(pid, Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && matches!(self.state(id), ProcessState::Running) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        Ok(self.state(id))
    }

    fn state(&self, id: &str) -> ProcessState {
        let dir = self.dir(id);
        if let Ok(code) = std::fs::read_to_string(dir.join("exit")) {
            return ProcessState::Exited(code.trim().parse().unwrap_or(255));
        }
        // It never started (reported Failed with the reason): ended, not unknown, so it is
        // not started again.
        if dir.join(shim::START_ERROR).exists() {
            return ProcessState::Exited(127);
        }
        match self.pid(id) {
            Some(_) => ProcessState::Running,
            // The shim writes "exit" after its init ends; if both are gone it was killed.
            None if dir.join("pid").exists() => ProcessState::Exited(137),
            None => ProcessState::Unknown,
        }
    }

    fn known(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Vec::new() };
        entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
    }

    fn remove(&self, id: &str) {
        // The task's cgroups are empty once its processes ended.
        if let Ok(spec) = std::fs::read(self.dir(id).join("spec.json")) {
            if let Ok(run) = serde_json::from_slice::<TaskRun>(&spec) {
                if matches!(run.image, Image::Oci(_)) {
                    // runc's record of the container and the cgroups it made.
                    let out = Command::new(oci::RUNC)
                        .arg("--root")
                        .arg(oci::runtime_root(&self.root))
                        .args(["delete", "--force", id])
                        .stdin(Stdio::null())
                        .output();
                    if let Some(out) = out.ok().filter(|o| !o.status.success()) {
                        tracing::debug!(task = %id, error = %String::from_utf8_lossy(&out.stderr).trim(), "runc delete");
                    }
                }
                for d in run.cgroups.mkdirs.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.dir(id));
    }

    fn run_inside(&self, id: &str, cmd: &str, timeout: Duration) -> Result<inside::Outcome, ExecError> {
        let pid = self.pid(id).ok_or_else(|| ExecError::Io {
            id: id.into(),
            what: "run a command inside",
            source: std::io::Error::other("the task is not running"),
        })?;
        let oci = std::fs::read(self.dir(id).join("spec.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<TaskRun>(&b).ok())
            .is_some_and(|r| matches!(r.image, Image::Oci(_)));
        if oci {
            // Inside the container's sandbox (its user, capabilities, seccomp, cgroups), as
            // `docker exec` runs a health check.
            let mut c = Command::new(oci::RUNC);
            c.arg("--root").arg(oci::runtime_root(&self.root)).args(["exec", id, "/bin/sh", "-c", cmd]);
            return inside::run_command(c, timeout).map_err(|source| ExecError::Io {
                id: id.into(),
                what: "run a command inside (runc exec)",
                source,
            });
        }
        inside::run_in(pid, cmd, timeout).map_err(|source| ExecError::Io { id: id.into(), what: "run a command inside (nsenter)", source })
    }

    fn start_error(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(id).join(shim::START_ERROR)).ok()
    }

    fn log_paths(&self, id: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir(id);
        dir.join("spec.json").exists().then(|| (dir.join("stdout.log"), dir.join("stderr.log")))
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}
