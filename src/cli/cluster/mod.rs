//! Cluster verbs of the `shoal` CLI, with Docker's names, flags and output. They talk to the
//! local node's API on a unix socket (`--host unix:///path` or `SHOAL_HOST`), like `docker`
//! talks to dockerd; the node forwards cluster calls to the managers.

mod args;
mod ca_cmds;
mod cluster_cmds;
mod config_cmds;
mod format;
mod logs_cmd;
mod members_cmd;
mod network_cmds;
mod node_cmds;
mod progress;
mod secret_cmds;
mod service_cmds;
mod service_update;
mod stack_cmds;
mod update_flags;

#[cfg(test)]
mod tests;

pub use format::rfc3339;
pub use shoal_control::api_client::Client;

use clap::{Args, Subcommand};

/// Where the local node's API is.
#[derive(Args, Debug, Clone)]
pub struct HostOpt {
    /// Node API socket, e.g. unix:///run/shoal/shoal.sock
    #[arg(long = "host", short = 'H', env = "SHOAL_HOST", global = true, default_value = "unix:///run/shoal/shoal.sock")]
    pub host: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Initialise a cluster with this node as the first manager.
    Init(cluster_cmds::InitArgs),
    /// Join a cluster as a worker or manager.
    Join(cluster_cmds::JoinArgs),
    /// Print (or rotate) the join token for workers or managers.
    #[command(name = "join-token")]
    JoinToken(cluster_cmds::JoinTokenArgs),
    /// Change cluster-wide settings (certificate lifetime).
    Update(cluster_cmds::UpdateArgs),
    /// Unlock a manager restarted with autolock on (the key is read from stdin).
    Unlock(cluster_cmds::UnlockArgs),
    /// Print (or rotate) the unlock key.
    #[command(name = "unlock-key")]
    UnlockKey(cluster_cmds::UnlockKeyArgs),
    /// Print the root CA certificate, or rotate the root CA (--rotate).
    Ca(ca_cmds::CaArgs),
    /// Leave the cluster.
    Leave(cluster_cmds::LeaveArgs),
    /// Manage nodes.
    Node {
        #[command(flatten)]
        host: HostOpt,
        #[command(subcommand)]
        cmd: node_cmds::NodeCmd,
    },
    /// Manage networks.
    Network {
        #[command(flatten)]
        host: HostOpt,
        #[command(subcommand)]
        cmd: network_cmds::NetworkCmd,
    },
    /// Manage services.
    Service {
        #[command(flatten)]
        host: HostOpt,
        #[command(subcommand)]
        cmd: service_cmds::ServiceCmd,
    },
    /// Manage stacks: applications from Compose files.
    Stack {
        #[command(flatten)]
        host: HostOpt,
        #[command(subcommand)]
        cmd: stack_cmds::StackCmd,
    },
    /// Docker's spelling of the cluster verbs: `shoal swarm init|join|join-token|update|ca|leave`.
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Manage secrets.
    Secret {
        #[command(flatten)]
        host: HostOpt,
        #[command(subcommand)]
        cmd: secret_cmds::SecretCmd,
    },
    /// Manage configs.
    Config {
        #[command(flatten)]
        host: HostOpt,
        #[command(subcommand)]
        cmd: config_cmds::ConfigCmd,
    },
    /// List the cluster's nodes as gossip on this node sees them (node, address, status).
    Members(members_cmd::MembersArgs),
}

/// `docker swarm ...`: the same verbs as shoal's top-level ones, so a seed's `docker swarm init`
/// works with `docker` replaced by `shoal`.
#[derive(Subcommand, Debug)]
pub enum SwarmCmd {
    /// Initialise a swarm with this node as the first manager (= `shoal init`).
    Init(cluster_cmds::InitArgs),
    /// Join a swarm as a worker or manager (= `shoal join`).
    Join(cluster_cmds::JoinArgs),
    /// Print (or rotate) a join token (= `shoal join-token`).
    #[command(name = "join-token")]
    JoinToken(cluster_cmds::JoinTokenArgs),
    /// Change swarm settings (= `shoal update`).
    Update(cluster_cmds::UpdateArgs),
    /// Print or rotate the root CA (= `shoal ca`).
    Ca(ca_cmds::CaArgs),
    /// Leave the swarm (= `shoal leave`).
    Leave(cluster_cmds::LeaveArgs),
    /// Unlock a manager restarted with autolock on (= `shoal unlock`).
    Unlock(cluster_cmds::UnlockArgs),
    /// Print (or rotate) the unlock key (= `shoal unlock-key`).
    #[command(name = "unlock-key")]
    UnlockKey(cluster_cmds::UnlockKeyArgs),
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Swarm(s) => match s {
            SwarmCmd::Init(a) => cluster_cmds::init(a).await,
            SwarmCmd::Join(a) => cluster_cmds::join(a).await,
            SwarmCmd::JoinToken(a) => cluster_cmds::join_token(a).await,
            SwarmCmd::Update(a) => cluster_cmds::update(a).await,
            SwarmCmd::Ca(a) => ca_cmds::run(a).await,
            SwarmCmd::Leave(a) => cluster_cmds::leave(a).await,
            SwarmCmd::Unlock(a) => cluster_cmds::unlock(a).await,
            SwarmCmd::UnlockKey(a) => cluster_cmds::unlock_key(a).await,
        },
        Command::Init(a) => cluster_cmds::init(a).await,
        Command::Join(a) => cluster_cmds::join(a).await,
        Command::JoinToken(a) => cluster_cmds::join_token(a).await,
        Command::Update(a) => cluster_cmds::update(a).await,
        Command::Ca(a) => ca_cmds::run(a).await,
        Command::Unlock(a) => cluster_cmds::unlock(a).await,
        Command::UnlockKey(a) => cluster_cmds::unlock_key(a).await,
        Command::Leave(a) => cluster_cmds::leave(a).await,
        Command::Node { host, cmd } => node_cmds::run(Client::from_host(&host.host)?, cmd).await,
        Command::Network { host, cmd } => network_cmds::run(Client::from_host(&host.host)?, cmd).await,
        Command::Service { host, cmd } => service_cmds::run(Client::from_host(&host.host)?, cmd).await,
        Command::Stack { host, cmd } => stack_cmds::run(Client::from_host(&host.host)?, cmd).await,
        Command::Secret { host, cmd } => secret_cmds::run(Client::from_host(&host.host)?, cmd).await,
        Command::Config { host, cmd } => config_cmds::run(Client::from_host(&host.host)?, cmd).await,
        Command::Members(a) => members_cmd::run(a).await,
    }
}
