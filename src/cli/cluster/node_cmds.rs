//! `node ls|inspect|promote|demote|update|rm`.

use super::format::node_table;
use super::Client;
use clap::Subcommand;
use shoal_control::model::{Availability, Role};
use shoal_control::node::{LocalReply, LocalRequest};
use shoal_control::state::Command;

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List nodes.
    Ls {
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Show nodes in detail (JSON).
    Inspect { nodes: Vec<String> },
    /// List the tasks on nodes (this node by default).
    Ps {
        /// Full task ids.
        #[arg(long)]
        no_trunc: bool,
        /// desired-state=running|shutdown|accepted, name=NAME, id=ID.
        #[arg(long, short = 'f')]
        filter: Vec<String>,
        nodes: Vec<String>,
    },
    /// Make nodes managers.
    Promote { nodes: Vec<String> },
    /// Make managers workers.
    Demote { nodes: Vec<String> },
    /// Change a node's availability, labels or role.
    Update {
        #[arg(long)]
        availability: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        node: String,
    },
    /// Remove nodes.
    Rm {
        #[arg(long, short = 'f')]
        force: bool,
        nodes: Vec<String>,
    },
}

pub async fn run(c: Client, cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Ls { format, quiet } => {
            let v = c.view().await?;
            if quiet {
                for n in v.state.nodes.values() {
                    println!("{}", n.id);
                }
            } else if format == "json" {
                for n in v.state.nodes.values() {
                    println!("{}", serde_json::to_string(n)?);
                }
            } else {
                let me = match c.call(LocalRequest::Info).await? {
                    LocalReply::Info(i) => i.node_id,
                    _ => None,
                };
                print!("{}", node_table(&v, me.as_deref()));
            }
        }
        NodeCmd::Ps { no_trunc, filter, nodes } => {
            let mut opts = super::format::PsOptions::parse(no_trunc, &filter)?;
            let v = c.view().await?;
            let nodes = if nodes.is_empty() {
                match c.call(LocalRequest::Info).await? {
                    LocalReply::Info(i) => i.node_id.into_iter().collect(),
                    _ => vec![],
                }
            } else {
                nodes
            };
            if nodes.is_empty() {
                anyhow::bail!("this daemon is not in a swarm: name a node (shoal node ps NODE)");
            }
            for n in &nodes {
                let id = v.state.find_node(n).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?.id.clone();
                opts.filters.push(("node".into(), id.to_string()));
            }
            let ids: Vec<shoal_control::model::ServiceId> = v.state.services.keys().cloned().collect();
            print!("{}", super::format::service_ps_table_with(&v, &ids, shoal_control::manager::now_ms(), &opts));
        }
        NodeCmd::Inspect { nodes } => {
            let v = c.view().await?;
            let mut out = vec![];
            for n in &nodes {
                out.push(v.state.find_node(n).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?.clone());
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NodeCmd::Promote { nodes } | NodeCmd::Demote { nodes } if nodes.is_empty() => anyhow::bail!("give at least one node"),
        NodeCmd::Promote { nodes } => {
            for n in nodes {
                c.propose(update(&n, None, Some(Role::Manager))).await?;
                println!("Node {n} promoted to a manager in the cluster.");
            }
        }
        NodeCmd::Demote { nodes } => {
            for n in nodes {
                c.propose(update(&n, None, Some(Role::Worker))).await?;
                println!("Manager {n} demoted in the cluster.");
            }
        }
        NodeCmd::Update { availability, role, label_add, label_rm, node } => {
            let availability =
                availability.map(|a| a.parse::<Availability>()).transpose().map_err(|e| anyhow::anyhow!("--availability: {e}"))?;
            let role = role.map(|r| r.parse::<Role>()).transpose().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let label_add = label_add.iter().map(|l| super::args::parse_kv(l)).collect();
            c.propose(Command::UpdateNode { node: node.clone(), availability, role, label_add, label_rm }).await?;
            println!("{node}");
        }
        NodeCmd::Rm { force, nodes } => {
            for n in nodes {
                c.propose(Command::RemoveNode { node: n.clone(), force }).await?;
                println!("{n}");
            }
        }
    }
    Ok(())
}

fn update(node: &str, availability: Option<Availability>, role: Option<Role>) -> Command {
    Command::UpdateNode { node: node.to_string(), availability, role, label_add: Default::default(), label_rm: vec![] }
}
