use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use shoal_dataplane::overlay;
use shoal_dataplane::state::NodeState;

#[derive(Subcommand, Debug)]
pub enum DataplaneCommand {
    /// Bring this namespace's data plane to the desired state in FILE (JSON).
    Apply {
        #[arg(long)]
        state: PathBuf,
        /// Print the planned kernel operations without applying them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print what exists in the kernel, in the desired-state format.
    Show {
        /// This node's name, for the output.
        #[arg(long, default_value = "local")]
        node: String,
    },
    /// Remove every network, endpoint and task namespace shoal made here.
    Teardown,
}

pub fn run(cmd: DataplaneCommand) -> anyhow::Result<()> {
    match cmd {
        DataplaneCommand::Apply { state, dry_run } => {
            let text = std::fs::read_to_string(&state).with_context(|| format!("read {}", state.display()))?;
            let desired = NodeState::from_json(&text).with_context(|| format!("parse {}", state.display()))?;
            let ops = if dry_run { overlay::dry_run(&desired)? } else { overlay::reconcile(&desired)?.ops };
            for op in &ops {
                println!("{op}");
            }
            println!("{} {} changes", if dry_run { "planned" } else { "applied" }, ops.len());
        }
        DataplaneCommand::Show { node } => {
            println!("{}", serde_json::to_string_pretty(&overlay::show(&node)?)?);
        }
        DataplaneCommand::Teardown => {
            let report = overlay::teardown()?;
            println!("removed: {} operations", report.ops.len());
        }
    }
    Ok(())
}
