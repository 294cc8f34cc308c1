//! Running a command inside a running task (health checks; `docker exec` later): `nsenter` into
//! the namespaces of the task's init, `/bin/sh -c` as Docker's CMD-SHELL, bounded in time and
//! output.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// What one command inside a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited { code: i32, output: String },
    TimedOut,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Exited { code: 0, .. })
    }

    /// One line for task messages.
    pub fn describe(&self, timeout: Duration) -> String {
        match self {
            Outcome::Exited { code, output } => {
                let out = output.trim();
                if out.is_empty() {
                    format!("exit {code}")
                } else {
                    format!("exit {code}: {out}")
                }
            }
            Outcome::TimedOut => format!("timed out after {timeout:?}"),
        }
    }
}

/// Docker keeps this much of a check's output.
const MAX_OUTPUT: u64 = 4096;

/// Runs `sh -c cmd` in the network, mount, UTS and PID namespaces of `pid`; kills it (our own
/// child, by PID) after `timeout`.
pub fn run_in(pid: Pid, cmd: &str, timeout: Duration) -> std::io::Result<Outcome> {
    let mut c = Command::new("nsenter");
    c.args(["--target", &pid.to_string(), "--net", "--mount", "--uts", "--pid", "--", "/bin/sh", "-c", cmd]);
    run_command(c, timeout)
}

/// Runs `command` (which enters the task: nsenter, `runc exec`), bounded in time and output.
pub fn run_command(mut command: Command, timeout: Duration) -> std::io::Result<Outcome> {
    let (mut reader, writer) = std::io::pipe()?;
    let mut child = command.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer).spawn()?;
    // The Command keeps its copies of the pipe's write end: drop them, or the reader never
    // sees the end of the output.
    drop(command);
    // Read while it runs (a full pipe would stall it); a background process the command left
    // holding the pipe only keeps this thread, never the caller.
    let collect = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut reader).take(MAX_OUTPUT).read_to_end(&mut buf);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Outcome::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let code = status.code().unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
    // Give the reader a moment for the last bytes; it ends when every writer closed.
    let output = wait_for(collect, Duration::from_millis(200)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    Ok(Outcome::Exited { code, output })
}

fn wait_for(handle: std::thread::JoinHandle<Vec<u8>>, limit: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Pid {
        Pid::this()
    }

    // nsenter into our own namespaces needs root (setns), like the agent has.
    fn need_root() {
        assert!(nix::unistd::geteuid().is_root(), "needs root");
    }

    #[test]
    #[ignore = "needs root: run by tests/run.sh"]
    fn exit_codes_and_output_come_back() {
        need_root();
        let ok = run_in(me(), "echo fine; echo err >&2", Duration::from_secs(5)).unwrap();
        assert!(ok.passed());
        assert!(matches!(&ok, Outcome::Exited { output, .. } if output.contains("fine") && output.contains("err")), "{ok:?}");
        let bad = run_in(me(), "exit 3", Duration::from_secs(5)).unwrap();
        assert_eq!(bad, Outcome::Exited { code: 3, output: String::new() });
        assert_eq!(bad.describe(Duration::from_secs(1)), "exit 3");
    }

    #[test]
    #[ignore = "needs root: run by tests/run.sh"]
    fn a_slow_command_times_out() {
        need_root();
        assert_eq!(run_in(me(), "sleep 30", Duration::from_millis(300)).unwrap(), Outcome::TimedOut);
    }
}
