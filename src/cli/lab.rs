use clap::{Args, Subcommand};

use crate::lab;

#[derive(Args, Debug)]
pub struct LabArgs {
    /// Name of the lab: its namespaces are shoal-<name>-*.
    #[arg(long, default_value = "lab", global = true)]
    pub name: String,
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build the lab: underlay bridge, node namespaces (192.168.33.10, .20, ...), client (.100).
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Show the lab's hosts.
    Status,
    /// Remove everything the lab made, by exact name.
    Down,
    /// The demo: daemons on every node, a cluster, a published service, curl through the mesh,
    /// DNS, scaling and a node failure. The lab stays up for exploring.
    Demo {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Only the overlay: a task per node from a state file, and pings across every pair.
        #[arg(long)]
        overlay_only: bool,
    },
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Up { nodes } => {
            let t = lab::topology(&args.name, nodes)?;
            lab::up(&t)?;
            print!("{}", lab::status(&t));
        }
        LabCommand::Status => print!("{}", lab::status(&lab::load(&args.name)?)),
        LabCommand::Down => {
            lab::down(&lab::load(&args.name)?)?;
            println!("lab '{}' removed", args.name);
        }
        LabCommand::Demo { nodes, overlay_only } => {
            let t = lab::topology(&args.name, nodes)?;
            if overlay_only {
                lab::overlay_demo::run(&t)?
            } else {
                lab::demo::run(&t)?
            }
        }
    }
    Ok(())
}
