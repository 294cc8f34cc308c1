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
    /// Build the lab, an overlay network with a task on every node, and ping across it.
    Demo {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
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
        LabCommand::Demo { nodes } => lab::demo::run(&lab::topology(&args.name, nodes)?)?,
    }
    Ok(())
}
