use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use shoal_dataplane::egress;
use shoal_dataplane::lb;
use shoal_dataplane::overlay;
use shoal_dataplane::state::NodeState;

#[derive(Subcommand, Debug)]
pub enum DataplaneCommand {
    /// Bring this namespace's data plane (overlay, then load balancer) to the desired state in
    /// FILE (JSON).
    Apply {
        #[arg(long)]
        state: PathBuf,
        /// Print the planned kernel operations without applying them.
        #[arg(long)]
        dry_run: bool,
        /// Load balancer: auto (probe: eBPF, else nftables, else IPVS) or force one.
        #[arg(long, default_value = "auto", value_parser = parse_choice)]
        lb: lb::Choice,
    },
    /// Print what exists in the kernel, in the desired-state format, plus the load balancer in
    /// use (`lb`).
    Show {
        /// This node's name, for the output.
        #[arg(long, default_value = "local")]
        node: String,
    },
    /// Remove every network, endpoint, task namespace and load-balancer object shoal made here.
    Teardown,
}

fn parse_choice(s: &str) -> Result<lb::Choice, String> {
    s.parse()
}

pub fn run(cmd: DataplaneCommand) -> anyhow::Result<()> {
    match cmd {
        DataplaneCommand::Apply { state, dry_run, lb: choice } => {
            let text = std::fs::read_to_string(&state).with_context(|| format!("read {}", state.display()))?;
            let desired = NodeState::from_json(&text).with_context(|| format!("parse {}", state.display()))?;
            let ops = if dry_run { overlay::dry_run(&desired)? } else { overlay::reconcile(&desired)?.ops };
            for op in &ops {
                println!("{op}");
            }
            // Egress needs nftables: without it tasks still run, reaching only the cluster's
            // networks (internal networks have no route out whatever happens here).
            let egress = if dry_run { egress::dry_run(&desired) } else { egress::reconcile(&desired) };
            let egress = match egress {
                Ok(op) => op,
                Err(e) => {
                    eprintln!("egress unavailable, tasks reach only the cluster's networks: {e}");
                    None
                }
            };
            if let Some(op) = &egress {
                println!("{op}");
            }
            let report = lb::reconcile(&desired, choice, dry_run)?;
            match report.kind {
                Some(kind) => eprintln!("load balancer: {kind} ({})", report.reason),
                None => eprintln!("load balancer: none ({})", report.reason),
            }
            for change in &report.changes {
                println!("{change}");
            }
            let total = ops.len() + usize::from(egress.is_some()) + report.changes.len();
            println!("{} {} changes", if dry_run { "planned" } else { "applied" }, total);
        }
        DataplaneCommand::Show { node } => {
            let mut v = serde_json::to_value(overlay::show(&node)?)?;
            v["lb"] = serde_json::to_value(lb::show(&node)?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DataplaneCommand::Teardown => {
            let lb_changes = lb::teardown("local");
            let egress = egress::teardown();
            let report = overlay::teardown()?;
            let lb_changes = lb_changes?;
            egress?;
            println!("removed: {} operations", report.ops.len() + lb_changes.len());
        }
    }
    Ok(())
}
