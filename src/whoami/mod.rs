//! `shoal whoami`: the built-in test workload (issue 4). Placeholder until it lands.

#[derive(clap::Args, Debug)]
pub struct WhoamiArgs {
    /// Name to answer with (defaults to the hostname).
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(_args: WhoamiArgs) -> anyhow::Result<()> {
    anyhow::bail!("shoal whoami is not built yet")
}
