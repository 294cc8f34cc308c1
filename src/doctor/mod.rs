//! `shoal doctor`: which kernel features this host has and which backends shoal will pick.
//! Placeholder until issue 7 lands.

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("shoal doctor is not built yet")
}
