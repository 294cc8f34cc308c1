use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use shoal_dataplane::crypt;
use shoal_dataplane::egress;
use shoal_dataplane::lb;
use shoal_dataplane::overlay;
use shoal_dataplane::state::DesiredNode;

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
        /// WireGuard for encrypted networks: auto (kernel where it has it, else userspace on
        /// TUN) or force one.
        #[arg(long, default_value = "auto", value_parser = parse_wg)]
        wireguard: crypt::Choice,
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
    /// Print a new WireGuard key pair as JSON (`private_key`, `public_key`), for state files.
    WgKey,
    /// Runs the userspace WireGuard tunnel of this namespace (started by `apply`; not for people).
    #[command(hide = true)]
    WgTun {
        #[arg(long)]
        dir: PathBuf,
    },
}

// clap value parsers: clap wants `Result<T, String>` here (and prints it after the flag).
fn parse_wg(s: &str) -> Result<crypt::Choice, String> {
    s.parse()
}

fn parse_choice(s: &str) -> Result<lb::Choice, String> {
    s.parse()
}

pub fn run(cmd: DataplaneCommand) -> anyhow::Result<()> {
    let mut crypt_changes = 0;
    match cmd {
        DataplaneCommand::Apply { state, dry_run, lb: choice, wireguard } => {
            let text = std::fs::read_to_string(&state).with_context(|| format!("read {}", state.display()))?;
            let desired = DesiredNode::from_json(&text).with_context(|| format!("parse {}", state.display()))?;
            desired.validate()?;
            // Encryption first: a network that cannot be encrypted here is not attached at all.
            let (desired, not_encrypted) = match crypt::reconcile(&desired, wireguard, dry_run) {
                Ok(report) => {
                    if let Some(backend) = report.backend {
                        eprintln!("encryption: {backend} ({})", report.reason);
                    }
                    for change in &report.changes {
                        println!("{change}");
                    }
                    crypt_changes = report.changes.len();
                    (desired, None)
                }
                Err(e) => {
                    let names: std::collections::HashSet<&str> =
                        desired.networks.iter().filter(|n| n.encrypted.is_some()).map(|n| n.name.as_str()).collect();
                    let mut list: Vec<&str> = names.iter().copied().collect();
                    list.sort();
                    let why = format!(
                        "encrypted network{} {} not attached on node '{}': {e}",
                        if list.len() == 1 { "" } else { "s" },
                        list.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "),
                        desired.node
                    );
                    eprintln!("{why}");
                    (desired.without_networks(&names), Some(why))
                }
            };
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
            let total = crypt_changes + ops.len() + usize::from(egress.is_some()) + report.changes.len();
            println!("{} {} changes", if dry_run { "planned" } else { "applied" }, total);
            if let Some(why) = not_encrypted {
                anyhow::bail!("{why}");
            }
        }
        DataplaneCommand::Show { node } => {
            let mut v = serde_json::to_value(overlay::show(&node)?)?;
            v["lb"] = serde_json::to_value(lb::show(&node)?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DataplaneCommand::WgKey => {
            let private = crypt::key::PrivateKey::generate();
            let out = serde_json::json!({"private_key": private.expose().to_base64(), "public_key": private.public_key()});
            println!("{out}");
        }
        DataplaneCommand::WgTun { dir } => crypt::userspace::serve(&dir)?,
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
