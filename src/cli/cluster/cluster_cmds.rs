//! `init`, `join`, `join-token`, `update`, `leave`.

use super::{Client, HostOpt};
use anyhow::bail;
use clap::Args;
use shoal_control::model::Role;
use shoal_control::node::{InitOptions, JoinOptions, LocalReply, LocalRequest};
use shoal_control::rpc::messages::{ApiRequest, ApiResponse};

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub host: HostOpt,
    /// Address other nodes reach this one on (ip or ip:port) [the --listen-addr IP when it
    /// names one, else the daemon's --advertise-addr].
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Manager listen address.
    #[arg(long)]
    pub listen_addr: Option<String>,
    /// Pools overlay subnets are carved from (repeatable).
    #[arg(long)]
    pub default_addr_pool: Vec<String>,
    /// Prefix length of carved subnets.
    #[arg(long, default_value_t = 24)]
    pub default_addr_pool_mask_length: u8,
    /// Restart as a single-manager cluster from this manager's state (lost quorum).
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Tasks kept per slot.
    #[arg(long)]
    pub task_history_limit: Option<usize>,
    /// Validity of node certificates, e.g. 2160h (90 days, the default) or 1m; nodes renew
    /// theirs from half of it on.
    #[arg(long, value_parser = super::args::parse_duration_ms)]
    pub cert_expiry: Option<u64>,
    /// Seal the managers' keys under an unlock key: a restarted manager serves nothing until
    /// `shoal unlock`.
    #[arg(long)]
    pub autolock: bool,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub host: HostOpt,
}

#[derive(Args, Debug)]
pub struct UnlockKeyArgs {
    #[command(flatten)]
    pub host: HostOpt,
    /// Make a new unlock key (the old one no longer unlocks managers that restart later).
    #[arg(long)]
    pub rotate: bool,
    /// Print only the key.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub host: HostOpt,
    /// Validity of node certificates issued from now on (each node renews from half of its
    /// current certificate's lifetime on).
    #[arg(long, value_parser = super::args::parse_duration_ms)]
    pub cert_expiry: Option<u64>,
    /// Turn autolock on or off (--autolock=true|false).
    #[arg(long)]
    pub autolock: Option<bool>,
    /// Rotate the cluster's gossip key now (it is rotated every 12 hours anyway).
    #[arg(long)]
    pub rotate_gossip_key: bool,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    #[command(flatten)]
    pub host: HostOpt,
    #[arg(long)]
    pub token: String,
    #[arg(long)]
    pub advertise_addr: Option<String>,
    #[arg(long)]
    pub listen_addr: Option<String>,
    /// A manager, host:port.
    pub remote: String,
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    #[command(flatten)]
    pub host: HostOpt,
    /// worker or manager
    pub role: String,
    #[arg(long)]
    pub rotate: bool,
    /// Print only the token.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct LeaveArgs {
    #[command(flatten)]
    pub host: HostOpt,
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub async fn init(a: InitArgs) -> anyhow::Result<()> {
    let c = Client::from_host(&a.host.host)?;
    let reply = c
        .call(LocalRequest::Init(InitOptions {
            advertise_addr: a.advertise_addr.unwrap_or_else(|| shoal_control::node::default_advertise(a.listen_addr.as_deref())),
            listen_addr: a.listen_addr,
            default_addr_pool: a.default_addr_pool,
            default_addr_pool_mask_length: a.default_addr_pool_mask_length,
            force_new_cluster: a.force_new_cluster,
            task_history_limit: a.task_history_limit,
            cert_expiry_ms: a.cert_expiry,
            autolock: a.autolock,
        }))
        .await?;
    let LocalReply::Initialized { node_id, worker_token, manager_addr, unlock_key, .. } = reply else {
        bail!("unexpected reply {reply:?}")
    };
    println!("Cluster initialized: current node ({node_id}) is now a manager.\n");
    println!("To add a worker to this cluster, run the following command:\n");
    println!("    shoal join --token {worker_token} {manager_addr}\n");
    println!("To add a manager to this cluster, run 'shoal join-token manager' and follow the instructions.\n");
    if let Some(key) = unlock_key {
        print_unlock_key(&key);
    }
    Ok(())
}

fn print_unlock_key(key: &str) {
    println!("To unlock a cluster manager after it restarts, run the `shoal unlock`");
    println!("command and provide the following key:\n");
    println!("    {key}\n");
    println!("Please remember to store this key in a password manager, since without it you");
    println!("will not be able to restart the manager.");
}

/// `shoal unlock`: reads the unlock key from stdin (as `docker swarm unlock` does).
pub async fn unlock(a: UnlockArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("Please enter unlock key: ");
    }
    let mut key = String::new();
    std::io::stdin().read_line(&mut key)?;
    let c = Client::from_host(&a.host.host)?;
    c.call(LocalRequest::Unlock { key: key.trim().to_string() }).await?;
    Ok(())
}

/// `shoal unlock-key [--rotate] [-q]`.
pub async fn unlock_key(a: UnlockKeyArgs) -> anyhow::Result<()> {
    let c = Client::from_host(&a.host.host)?;
    let ApiResponse::UnlockKey(key) = c.api(ApiRequest::UnlockKey { rotate: a.rotate }).await? else { bail!("unexpected reply") };
    let Some(key) = key else {
        bail!("Error response from daemon: no unlock key is set: turn autolock on with `shoal update --autolock=true`")
    };
    if a.quiet {
        println!("{key}");
    } else {
        if a.rotate {
            println!("Successfully rotated manager unlock key.\n");
        }
        print_unlock_key(&key);
    }
    Ok(())
}

pub async fn join(a: JoinArgs) -> anyhow::Result<()> {
    let c = Client::from_host(&a.host.host)?;
    let reply = c
        .call(LocalRequest::Join(JoinOptions {
            token: a.token,
            remote: a.remote,
            advertise_addr: a.advertise_addr,
            listen_addr: a.listen_addr,
        }))
        .await?;
    let LocalReply::Joined { role, .. } = reply else { bail!("unexpected reply {reply:?}") };
    println!("This node joined a cluster as a {}.", role.as_str());
    Ok(())
}

pub async fn join_token(a: JoinTokenArgs) -> anyhow::Result<()> {
    let role: Role = a.role.parse()?;
    let c = Client::from_host(&a.host.host)?;
    let rotate = a.rotate.then_some(role);
    let ApiResponse::JoinTokens { worker, manager } = c.api(ApiRequest::JoinTokens { rotate }).await? else { bail!("unexpected reply") };
    let token = if role == Role::Worker { worker } else { manager };
    if a.quiet {
        println!("{token}");
        return Ok(());
    }
    if a.rotate {
        println!("Successfully rotated {} join token.\n", role.as_str());
    }
    let addr = match c.call(LocalRequest::Info).await? {
        LocalReply::Info(i) => i.manager_addr.unwrap_or_default(),
        _ => String::new(),
    };
    println!("To add a {} to this cluster, run the following command:\n", role.as_str());
    println!("    shoal join --token {token} {addr}\n");
    Ok(())
}

/// `shoal update`: cluster-wide settings (Docker's `swarm update`).
pub async fn update(a: UpdateArgs) -> anyhow::Result<()> {
    if a.cert_expiry.is_none() && a.autolock.is_none() && !a.rotate_gossip_key {
        bail!("nothing to update: give a setting, e.g. --cert-expiry 2160h, --autolock=true or --rotate-gossip-key");
    }
    let c = Client::from_host(&a.host.host)?;
    if a.rotate_gossip_key {
        c.propose(shoal_control::state::Command::RequestGossipKeyRotation).await?;
        println!("Gossip key rotation started: every node gets the new key, then sends under it; the old key is retired after a grace.");
    }
    if a.cert_expiry.is_some() {
        c.propose(shoal_control::state::Command::UpdateCluster { cert_expiry_ms: a.cert_expiry, autolock: None }).await?;
    }
    if let Some(on) = a.autolock {
        let ApiResponse::UnlockKey(key) = c.api(ApiRequest::SetAutolock(on)).await? else { bail!("unexpected reply") };
        if let Some(key) = key {
            print_unlock_key(&key);
        }
    }
    println!("Cluster updated.");
    Ok(())
}

pub async fn leave(a: LeaveArgs) -> anyhow::Result<()> {
    let c = Client::from_host(&a.host.host)?;
    c.call(LocalRequest::Leave { force: a.force }).await?;
    println!("Node left the cluster.");
    Ok(())
}
