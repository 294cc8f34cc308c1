//! Cluster verbs of the `shoal` CLI. Placeholder until the control plane lands (issue 3).

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Initialise a cluster with this node as the first manager.
    Init {
        #[arg(long)]
        advertise_addr: String,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Init { .. } => anyhow::bail!("the control plane is not built yet"),
    }
}
