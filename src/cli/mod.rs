//! Command-line surface. Each subcommand family lives in its own file or folder; the cluster
//! verbs (init, join, node, network, service, ...) are `cluster/`, which talks to the local
//! node's API through `shoal_control::api_client`.

pub mod cluster;
mod dataplane;
mod lab;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "shoal", version, about = "Cluster networking for replicated services")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `shoal_dataplane=debug`.
    #[arg(long, global = true, env = "SHOAL_LOG")]
    pub log_level: Option<String>,
    /// Run inside this network namespace (/run/netns/NAME), e.g. a lab node.
    #[arg(long, global = true, env = "SHOAL_NETNS")]
    pub netns: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run this node: the agent on every node, the manager role on managers.
    Daemon(crate::daemon::DaemonArgs),
    /// A cluster of network namespaces on this machine, for trying and testing shoal.
    Lab(lab::LabArgs),
    /// This node's data plane: apply a desired state, show what exists.
    #[command(subcommand)]
    Dataplane(dataplane::DataplaneCommand),
    /// Test workload: an HTTP server answering with its name, addresses and the client it sees.
    Whoami(crate::whoami::WhoamiArgs),
    /// Kernel features of this host (VXLAN, nftables, eBPF hooks, IPVS, ESP, WireGuard, TUN) and
    /// the backends shoal will pick.
    Doctor,
    /// Images on this node: load, pull, ls, inspect, rm (and import for flat root filesystems).
    Image(crate::image::ImageArgs),
    /// This node's local volumes: ls, inspect, rm.
    Volume(crate::agent::volumes::VolumeArgs),
    /// Benchmarks that need the whole product running (as root).
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Runs one task (started by the agent; not for people).
    #[command(hide = true)]
    TaskExec { dir: std::path::PathBuf },
    #[command(flatten)]
    Cluster(cluster::Command),
}

pub fn init_tracing(filter: Option<&str>) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter.unwrap_or("warn")).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(ns) = &cli.global.netns {
        // Before any thread exists, so the whole process lives in the namespace.
        shoal_dataplane::netns::enter_for_process(ns)?;
    }
    match cli.command {
        Command::Daemon(args) => crate::daemon::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Dataplane(cmd) => dataplane::run(cmd),
        Command::Whoami(args) => crate::whoami::run(args),
        Command::Doctor => crate::doctor::run(),
        Command::Bench(cmd) => crate::bench::run(cmd),
        Command::Image(cmd) => crate::image::run(cmd),
        Command::Volume(args) => crate::agent::volumes::run(args),
        Command::TaskExec { dir } => std::process::exit(crate::agent::executor::shim::run(&dir).unwrap_or_else(|e| {
            eprintln!("shoal task-exec: {e:#}");
            127
        })),
        Command::Cluster(cmd) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cluster::run(cmd))
        }
    }
}
