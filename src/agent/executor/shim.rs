//! `shoal task-exec DIR`: the process that runs one task. It enters the task's network
//! namespace, makes new mount, UTS and PID namespaces, and forks a tiny init (PID 1 inside) that
//! starts the workload, forwards SIGTERM/SIGINT to it, reaps orphans and exits with the
//! workload's status. The shim records the init's PID and, at the end, the exit code, in DIR:
//! a restarted daemon reads them to adopt the task instead of killing it. The workload's stdout
//! and stderr are pipes the shim copies into `stdout.log`/`stderr.log`, capped and rotated
//! ([`super::logfile`]).

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::logfile::{self, LogLimits, RotatingWriter};
use super::spec::{Image, TaskRun};

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; pid and sig are plain integers.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

pub(super) fn install_forwarding(to: Pid) -> anyhow::Result<()> {
    FORWARD_TO.store(to.as_raw(), Ordering::SeqCst);
    let action = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only reads an atomic and calls kill(2), both async-signal-safe.
        unsafe { sigaction(sig, &action) }.context("install signal forwarding")?;
    }
    Ok(())
}

/// Exit status of a waited process, shell-style (128 + signal when killed).
fn code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Whether `pid` has ended (without blocking); its status is kept in `status`.
pub(super) fn ended(pid: Pid, status: &mut Option<i32>) -> bool {
    if status.is_none() {
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(s) => *status = code(s),
            Err(nix::Error::EINTR) => {}
            Err(_) => *status = Some(255),
        }
    }
    status.is_some()
}

pub(super) fn wait_for(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(status) => {
                if let Some(c) = code(status) {
                    return c;
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// A secret's or config's data: Docker's limit is 500 KiB; this bounds what the shim reads.
const MAX_FILE_BYTES: usize = 1 << 20;

/// The file in DIR that says why the shim could not make the task (before its init ran).
pub const START_ERROR: &str = "start-error";

/// Runs the task; a failure before its init exists is also written to DIR/`START_ERROR`, so
/// the agent reports it once, with the reason, instead of finding no trace and starting the
/// task again and again.
pub fn run(dir: &Path) -> anyhow::Result<i32> {
    let r = run_task(dir);
    if let Err(e) = &r {
        if !dir.join("pid").exists() {
            // Whole, as "pid" and "exit": the daemon polls for it, and once read it empty
            // (CI: a failed task reported as "task ID: " with no reason).
            let _ = write_whole(&dir.join(START_ERROR), &format!("{e:#}"));
        }
    }
    r
}

fn run_task(dir: &Path) -> anyhow::Result<i32> {
    let mut spec: TaskRun =
        serde_json::from_slice(&std::fs::read(dir.join("spec.json")).context("read spec.json")?).context("parse spec.json")?;
    if !spec.files.is_empty() {
        super::spec::read_files(&mut std::io::stdin().lock(), &mut spec.files, MAX_FILE_BYTES)
            .context("read the task's secrets and configs from the daemon")?;
    }
    if let Image::Oci(img) = &spec.image {
        return super::oci::shim::run(dir, &spec, img);
    }
    let ns = shoal_dataplane::netns::open(&spec.netns).with_context(|| format!("task namespace {}", spec.netns))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("enter the task's network namespace")?;
    // Before the fork, so the task's every process is in them (and limited) from the start.
    for cg in &spec.cgroups.join {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).with_context(|| format!("join cgroup {}", cg.display()))?;
    }
    std::fs::write(dir.join("resolv.conf"), &spec.resolv_conf)?;
    std::fs::write(dir.join("hosts"), &spec.hosts)?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID)
        .context("unshare mount, UTS and PID namespaces")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).context("make mounts private")?;
    nix::unistd::sethostname(&spec.name).context("set hostname")?;
    let argv = argv(&spec)?;
    let limits = LogLimits::read(dir);
    let out_log = RotatingWriter::open(&dir.join("stdout.log"), limits)?;
    let err_log = RotatingWriter::open(&dir.join("stderr.log"), limits)?;
    // Close-on-exec: only the copies dup'ed onto fds 1 and 2 reach the workload.
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("make the stdout pipe")?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("make the stderr pipe")?;

    // SAFETY: the shim is single-threaded here (no runtime was started for task-exec), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() }.context("fork the task's init")? {
        ForkResult::Parent { child } => {
            // Ours closed, the pipes end when every process of the task is gone.
            drop((out_w, err_w));
            write_whole(&dir.join("pid"), &child.as_raw().to_string())?;
            install_forwarding(child)?;
            // All output is in the files before "exit" says the task ended. The PID namespace
            // is gone with its init, so the pipes close; the linger only guards against a
            // writer that escaped it.
            let mut status = None;
            let streams = vec![(std::fs::File::from(out_r), out_log), (std::fs::File::from(err_r), err_log)];
            logfile::pump(streams, || ended(child, &mut status), std::time::Duration::from_secs(2));
            let status = status.unwrap_or_else(|| wait_for(child));
            write_whole(&dir.join("exit"), &status.to_string())?;
            Ok(status)
        }
        ForkResult::Child => {
            drop((out_r, err_r, out_log, err_log));
            if let Err(e) = onto_stdio(out_w, err_w) {
                eprintln!("shoal task-exec: {e:#}");
                std::process::exit(127);
            }
            let status = match init(&spec, dir, &argv) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("shoal task-exec: {e:#}");
                    127
                }
            };
            std::process::exit(status)
        }
    }
}

/// Writes `text` to `path` whole or not at all (a temporary file renamed over it): the daemon
/// reads "pid", "exit" and `START_ERROR` while the shim writes them, and an empty "pid" it read under load
/// made a task that had just started look ended (exit 137), so it was reported failed and
/// then stopped.
pub fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Makes the pipes the init's (and so the workload's) stdout and stderr.
fn onto_stdio(out: OwnedFd, err: OwnedFd) -> anyhow::Result<()> {
    nix::unistd::dup2_stdout(&out).context("pipe stdout")?;
    nix::unistd::dup2_stderr(&err).context("pipe stderr")?;
    Ok(())
}

fn argv(spec: &TaskRun) -> anyhow::Result<Vec<String>> {
    Ok(match &spec.image {
        Image::Whoami { args } => {
            let exe = std::env::current_exe().context("find the shoal binary")?;
            let mut v = vec![exe.display().to_string(), "whoami".into(), "--name".into(), spec.name.clone()];
            v.extend(args.iter().cloned());
            v
        }
        Image::Host { argv } | Image::Rootfs { argv, .. } => argv.clone(),
        Image::Oci(_) => anyhow::bail!("an image task is run by the OCI runtime"),
    })
}

/// PID 1 of the task's PID namespace.
fn init(spec: &TaskRun, dir: &Path, argv: &[String]) -> anyhow::Result<i32> {
    // A mount namespace of the task's own: what it mounts (its /proc, the covers over shoal's
    // files) must not change the shim's view, which still writes pid, exit and the logs in the
    // task directory.
    unshare(CloneFlags::CLONE_NEWNS).context("unshare the task's mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).context("make mounts private")?;
    let etc = match &spec.image {
        Image::Rootfs { root, .. } => {
            enter_rootfs(root)?;
            Path::new("/etc").to_path_buf()
        }
        _ => Path::new("/etc").to_path_buf(),
    };
    // Secrets (under /run only: the executor refused any other target), before the task's own
    // /proc: the host's /run is bound back through the host's /proc.
    if !spec.files.is_empty() && !matches!(spec.image, Image::Rootfs { .. }) {
        super::host_carry::carry(dir, &spec.files)?;
    }
    mount(Some("proc"), "/proc", Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
        .context("mount /proc")?;
    for file in ["resolv.conf", "hosts"] {
        let src = match &spec.image {
            // after pivot_root the task directory is reachable under /.shoal-task
            Image::Rootfs { .. } => Path::new("/.shoal-task").join(file),
            _ => dir.join(file),
        };
        let target = etc.join(file);
        if !target.exists() {
            std::fs::write(&target, "").ok();
        }
        mount(Some(&src), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind {} over {}", src.display(), target.display()))?;
    }
    // The host's filesystem is the image of `host` and `shoal/whoami`: shoal's own files (state
    // directory with its keys and task records, API socket, config) are covered by empty
    // read-only mounts, and the task starts at / rather than in its (hidden) task directory.
    for path in spec.hidden.iter().filter(|p| p.is_dir()) {
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some("size=4k,mode=000")).with_context(|| format!("hide {}", path.display()))?;
    }
    std::env::set_current_dir("/").context("chdir /")?;
    let cargs: Vec<CString> = argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<_, _>>()?;
    let env: Vec<CString> = std::env::vars()
        .filter(|(k, _)| k == "PATH")
        .chain(spec.env.iter().cloned())
        .chain([("HOSTNAME".to_string(), spec.name.clone())])
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    // SAFETY: still single-threaded (a forked child of a single-threaded process).
    match unsafe { fork() }.context("fork the workload")? {
        ForkResult::Child => {
            if let Err(e) = confine() {
                eprintln!("shoal task-exec: {e:#}");
                std::process::exit(127);
            }
            // Docker's default seccomp profile, compiled by the executor (spec.json), installed
            // last before exec. Without one the task does not start.
            if let Err(e) = super::oci::seccomp_bpf::install(&spec.seccomp) {
                eprintln!("shoal task-exec: {e}");
                std::process::exit(127);
            }
            let err = nix::unistd::execvpe(&cargs[0], &cargs, &env).unwrap_err();
            eprintln!("shoal task-exec: exec {}: {err}", argv[0]);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            install_forwarding(child)?;
            // Reap everything; leave when the workload itself is gone.
            loop {
                match waitpid(Pid::from_raw(-1), None) {
                    Ok(status) if status.pid() == Some(child) => {
                        if let Some(c) = code(status) {
                            // The namespace dies with its init: stragglers get SIGKILL.
                            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                            return Ok(c);
                        }
                    }
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(_) => return Ok(255),
                }
            }
        }
    }
}

/// Docker's default capabilities as a bounding set (a root workload's capabilities after exec
/// are the bounding set) and no_new_privs, for the workloads this shim runs itself.
fn confine() -> anyhow::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);
    for cap in (0..=last).filter(|c| DOCKER_CAPS & (1u64 << c) == 0) {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes two integers and touches no memory of ours.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("drop capability {cap} from the bounding set"));
        }
    }
    nix::sys::prctl::set_no_new_privs().context("set no_new_privs")?;
    Ok(())
}

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW,
/// SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP: Docker's default set, as /proc/PID/status shows it.
pub const DOCKER_CAPS: u64 = 0xa804_25fb;

fn enter_rootfs(root: &Path) -> anyhow::Result<()> {
    mount(Some(root), root, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).context("bind the rootfs")?;
    let task_dir = root.join(".shoal-task");
    std::fs::create_dir_all(&task_dir)?;
    let dir = std::env::current_dir()?;
    mount(Some(&dir), &task_dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).context("bind the task dir")?;
    let old = root.join(".old-root");
    std::fs::create_dir_all(&old)?;
    nix::unistd::pivot_root(root, &old).context("pivot_root")?;
    std::env::set_current_dir("/")?;
    nix::mount::umount2("/.old-root", nix::mount::MntFlags::MNT_DETACH).context("detach the old root")?;
    let _ = std::fs::remove_dir("/.old-root");
    Ok(())
}
