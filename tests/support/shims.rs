//! Ending the task shims a test's daemons started. A daemon killed while it was starting a task
//! leaves a shim that has not written the task's `pid` file yet; the shims are found by their
//! command line (`shoal task-exec <dir>/...`) instead, so none outlives the test.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Ends every shim whose task folder is under `dir`, and its task (the task's init: its PID
/// namespace goes with it), by PID; looks again until none is left (at most 3 s).
pub fn end_task_shims(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let shims = task_shims(dir);
        if shims.is_empty() || Instant::now() > deadline {
            return;
        }
        for shim in shims {
            for task in children(shim) {
                let _ = kill(Pid::from_raw(task), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(shim), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn task_shims(dir: &Path) -> Vec<i32> {
    let dir = dir.as_os_str().as_encoded_bytes();
    let mut shims = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"task-exec"[..]) && args.get(2).is_some_and(|a| a.starts_with(dir)) {
            shims.push(pid);
        }
    }
    shims
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for thread in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(thread.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}
