//! `network create|ls|inspect|rm`.

use super::format::network_table;
use super::Client;
use clap::Subcommand;
use shoal_control::model::NetworkSpec;
use shoal_control::state::{Command, Response};

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create an overlay network.
    Create {
        #[arg(long, short = 'd', default_value = "overlay")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        attachable: bool,
        /// Tasks on this network get no egress: they reach the cluster's networks only.
        #[arg(long)]
        internal: bool,
        /// Driver options (KEY=VALUE). `encrypted`: traffic between nodes only encrypted, never in
        /// plaintext, with the best backend every node runs (kernel WireGuard everywhere, else
        /// ESP everywhere, else WireGuard in userspace); `encrypted=wireguard` or
        /// `encrypted=ipsec` forces one.
        #[arg(long = "opt", short = 'o')]
        opt: Vec<String>,
        #[arg(long)]
        label: Vec<String>,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Show networks in detail (JSON).
    Inspect { networks: Vec<String> },
    /// Remove networks.
    Rm { networks: Vec<String> },
    /// Change a network. `--rotate-keys`: issue every node pair of the encrypted networks a
    /// new preshared key now (they rotate every 12 hours anyway); no packet is lost.
    Update {
        #[arg(long)]
        rotate_keys: bool,
        network: String,
    },
}

pub async fn run(c: Client, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create { driver, subnet, gateway, attachable, internal, opt, label, name } => {
            let subnet =
                subnet.map(|s| s.parse().map_err(|_| anyhow::anyhow!("invalid --subnet {s:?}: use CIDR like 10.0.9.0/24"))).transpose()?;
            let gateway =
                gateway.map(|g| g.parse().map_err(|_| anyhow::anyhow!("invalid --gateway {g:?}: use an IPv4 address"))).transpose()?;
            let spec = NetworkSpec {
                name,
                driver,
                subnet,
                gateway,
                attachable,
                ingress: false,
                internal,
                node_local: false,
                options: opt.iter().map(|o| super::args::parse_kv(o)).collect(),
                labels: label.iter().map(|o| super::args::parse_kv(o)).collect(),
            };
            if let Response::Created { id } = c.propose(Command::CreateNetwork { spec }).await? {
                println!("{id}");
            }
        }
        NetworkCmd::Ls { format, quiet } => {
            let v = c.view().await?;
            if quiet {
                for n in v.state.networks.values() {
                    println!("{}", n.id);
                }
            } else if format == "json" {
                for n in v.state.networks.values() {
                    println!("{}", serde_json::to_string(n)?);
                }
            } else {
                print!("{}", network_table(&v));
            }
        }
        NetworkCmd::Inspect { networks } => {
            let v = c.view().await?;
            let mut out = vec![];
            for n in &networks {
                out.push(v.state.find_network(n).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?.clone());
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCmd::Update { rotate_keys, network } => {
            let v = c.view().await?;
            let n = v.state.find_network(&network).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?;
            if !rotate_keys {
                anyhow::bail!("nothing to update: pass --rotate-keys");
            }
            if !n.is_encrypted() {
                anyhow::bail!("network {} is not encrypted: it has no keys to rotate", n.spec.name);
            }
            c.propose(Command::RequestKeyRotation).await?;
            println!("{network}");
        }
        NetworkCmd::Rm { networks } => {
            for n in networks {
                c.propose(Command::RemoveNetwork { network: n.clone() }).await?;
                println!("{n}");
            }
        }
    }
    Ok(())
}
