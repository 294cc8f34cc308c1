//! `shoal doctor`: which kernel features this host has and which backends shoal will pick.
//!
//! Every feature is probed by trying the real thing inside a throwaway network namespace (a
//! thread that unshared its namespace: whatever the probes make disappears with it), so the
//! answer is what the kernel does, loaded modules and autoloading included, not what a config
//! file claims. [`probe`] has the side effects, [`choice`] and [`report`] are pure.

mod choice;
mod feature;
mod probe;
mod report;

use choice::choose;

/// Probes the kernel and prints the report; fails when shoal cannot run here at all (no overlay
/// or no load balancer), after printing why.
pub fn run() -> anyhow::Result<()> {
    let probed = probe::all()?;
    let choices = choose(&probed.findings, &probed.lb);
    print!("{}", report::render(&probed.kernel, &probed.findings, &choices));
    if let Some(why) = choices.blocker() {
        anyhow::bail!("shoal cannot run on this kernel: {why}");
    }
    Ok(())
}
