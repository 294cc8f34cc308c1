//! `shoal daemon` in every lab node: started detached with their PIDs recorded, so `lab down`
//! ends exactly them (and the tasks they started) even after the CLI that started them is gone.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{LabHost, Topology};

pub fn node_dir(t: &Topology, node: &str) -> PathBuf {
    PathBuf::from(super::RECORD_DIR).join(&t.lab).join(node)
}

pub fn socket(t: &Topology, node: &str) -> PathBuf {
    node_dir(t, node).join("shoal.sock")
}

pub fn host_arg(t: &Topology, node: &str) -> String {
    format!("unix://{}", socket(t, node).display())
}

fn pid_file(t: &Topology, node: &str) -> PathBuf {
    node_dir(t, node).join("daemon.pid")
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("daemon"))
}

pub fn daemon_pid(t: &Topology, node: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(t, node)).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Starts the node's daemon unless it runs already. Idempotent.
pub fn start(t: &Topology, host: &LabHost) -> anyhow::Result<()> {
    if daemon_pid(t, &host.name).is_some() {
        return Ok(());
    }
    let dir = node_dir(t, &host.name);
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let sock = socket(t, &host.name);
    let _ = std::fs::remove_file(&sock);
    let child = Command::new(std::env::current_exe()?)
        .args(["--netns", &host.netns, "--log-level", "info,shoal::agent=debug", "daemon"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&sock)
        .args(["--listen-addr", &format!("{}:2377", host.address), "--hostname", &host.name])
        .args(["--heartbeat-ms", "250", "--drain-seconds", "0.5", "--stop-grace-seconds", "3"])
        // The lab is closed: nothing is forwarded to resolvers outside it.
        .arg("--no-dns-upstream")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start shoal daemon")?;
    std::fs::write(pid_file(t, &host.name), child.id().to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if Instant::now() > deadline {
            bail!("the daemon of {} did not open its socket; see {}", host.name, dir.join("daemon.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// SIGKILL the node's daemon (a crash, as far as the cluster can tell).
pub fn kill_daemon(t: &Topology, node: &str) {
    if let Some(pid) = daemon_pid(t, node) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Ends the node's daemon and every task it started (each task's init, by recorded PID).
pub fn stop(t: &Topology, node: &str) -> Vec<String> {
    kill_daemon(t, node);
    let mut failures = Vec::new();
    let tasks = node_dir(t, node).join("state").join("tasks");
    for entry in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("pid")) else { continue };
        let Ok(pid) = text.trim().parse::<i32>() else { continue };
        // Only a process still in a task's namespaces: never a recycled PID of somebody else.
        // (A PID with no /proc entry has exited already: nothing to end.)
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let ours = ns.is_some() && ns != std::fs::read_link("/proc/self/ns/pid").ok();
        if ours {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => failures.push(format!("kill task {pid}: {e}")),
            }
        }
    }
    failures
}

/// Namespaces of the tasks the lab's daemons started, from their records.
pub fn task_namespaces(t: &Topology) -> Vec<String> {
    let mut v = Vec::new();
    for n in &t.nodes {
        let tasks = node_dir(t, &n.name).join("state").join("tasks");
        for entry in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            if let Ok(id) = entry.file_name().into_string() {
                let ns = crate::agent::desired::task_netns(&id);
                if shoal_dataplane::netns::exists(&ns) {
                    v.push(ns);
                }
            }
        }
    }
    v
}
