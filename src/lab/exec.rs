//! Running a program inside a lab namespace (the product never shells out to `ip`).

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;
use nix::sched::{setns, CloneFlags};
use shoal_dataplane::netns;

/// A `Command` that will run inside network namespace `ns`.
pub fn command_in(ns: &str, program: &str) -> anyhow::Result<Command> {
    let file = netns::open(ns).with_context(|| format!("open namespace {ns}"))?;
    let mut cmd = Command::new(program);
    // SAFETY: the closure runs in the forked child before exec; it only calls setns(2), which is
    // async-signal-safe, on an fd the child inherited, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
    }
    Ok(cmd)
}
