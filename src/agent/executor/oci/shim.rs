//! The shim's part for image tasks: join the task's cgroups, mount its overlayfs root in a
//! mount namespace of its own, and run `runc run` in the foreground with the workload's
//! stdout/stderr on pipes the shim copies into the rotating log files. runc writes the
//! container init's PID to DIR/pid (atomically) once the workload runs, and exits with its
//! status, which the shim writes to DIR/exit: a restarted daemon adopts the task from them.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::Pid;

use super::super::logfile::{self, LogLimits, RotatingWriter};
use super::super::shim::{ended, install_forwarding, wait_for};
use super::super::spec::{OciImage, TaskRun};

pub fn run(dir: &Path, spec: &TaskRun, img: &OciImage) -> anyhow::Result<i32> {
    std::fs::write(dir.join("resolv.conf"), &spec.resolv_conf)?;
    std::fs::write(dir.join("hosts"), &spec.hosts)?;
    std::fs::write(dir.join("hostname"), format!("{}\n", spec.name))?;
    // Before runc starts, so the container is in them (and limited) from its first instruction.
    for cg in &spec.cgroups.join {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).with_context(|| format!("join cgroup {}", cg.display()))?;
    }
    // The task's root exists only here and in the container: never in the node's mount table.
    unshare(CloneFlags::CLONE_NEWNS).context("unshare the mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).context("make mounts private")?;
    if !spec.files.is_empty() {
        super::carry::write(&dir.join(super::carry::DIR), &spec.files)?;
    }
    for d in ["upper", "work", "rootfs"] {
        std::fs::create_dir_all(dir.join(d)).with_context(|| format!("create {d}"))?;
    }
    let (options, base) = super::overlay_options(&img.layers, dir)?;
    // Relative lowerdirs resolve against the working directory at mount time.
    if let Some(base) = &base {
        std::env::set_current_dir(base).with_context(|| format!("chdir {}", base.display()))?;
    }
    let mounted = mount(Some("overlay"), &dir.join("rootfs"), Some("overlay"), MsFlags::empty(), Some(options.as_str()));
    std::env::set_current_dir(dir).context("chdir back to the task directory")?;
    mounted.with_context(|| format!("mount the task's overlayfs root ({options})"))?;
    super::carry::populate(&dir.join("rootfs"), &spec.mounts)?;

    let limits = LogLimits::read(dir);
    let out_log = RotatingWriter::open(&dir.join("stdout.log"), limits)?;
    let err_log = RotatingWriter::open(&dir.join("stderr.log"), limits)?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("make the stdout pipe")?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("make the stderr pipe")?;
    let tasks = dir.parent().context("the task directory has a parent")?;
    let child = Command::new(super::RUNC)
        .arg("--root")
        .arg(super::runtime_root(tasks))
        .arg("--log")
        .arg(dir.join(RUNC_LOG))
        .args(["run", "--bundle"])
        .arg(dir)
        .arg("--pid-file")
        .arg(dir.join("pid"))
        .arg(&spec.id)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .spawn()
        .context("start runc (install Debian's runc package)")?;
    let pid = Pid::from_raw(child.id() as i32);
    // SIGTERM to the shim reaches the workload through runc, which forwards it.
    install_forwarding(pid)?;
    let mut status = None;
    let streams = vec![(std::fs::File::from(out_r), out_log), (std::fs::File::from(err_r), err_log)];
    logfile::pump(streams, || ended(pid, &mut status), std::time::Duration::from_secs(2));
    let status = status.unwrap_or_else(|| wait_for(pid));
    if !dir.join("pid").exists() {
        // runc never started the workload: say why, once (the agent reports it).
        let log = std::fs::read_to_string(dir.join(RUNC_LOG)).unwrap_or_default();
        anyhow::bail!("{}", runc_error(&log).unwrap_or_else(|| format!("runc exited with {status} before the task started")));
    }
    super::super::shim::write_whole(&dir.join("exit"), &status.to_string())?;
    Ok(status)
}

/// runc's own log (not the workload's).
pub const RUNC_LOG: &str = "runc.log";

/// The last error runc logged, e.g. `exec: "nope": executable file not found in $PATH`.
pub fn runc_error(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains("level=error"))?;
    let msg = line.split_once("msg=")?.1.trim();
    let msg = msg.strip_prefix('"').and_then(|m| m.strip_suffix('"')).unwrap_or(msg);
    Some(msg.replace("\\\"", "\"").trim_start_matches("runc run failed: ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_errors_read_as_the_reason() {
        let log = "time=\"2026-01-01T00:00:00Z\" level=warning msg=\"x\"\ntime=\"2026-01-01T00:00:00Z\" level=error msg=\"runc run failed: unable to start container process: exec: \\\"nope\\\": executable file not found in $PATH\"\n";
        assert_eq!(runc_error(log).unwrap(), "unable to start container process: exec: \"nope\": executable file not found in $PATH");
        assert_eq!(runc_error(""), None);
    }
}
