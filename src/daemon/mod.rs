//! `shoal daemon`: one process per node. The control runtime (local API, manager role on
//! managers, dispatcher session) and the agent that turns assignments into processes and
//! kernel state.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_control::node::{NodeConfig, NodeControl};

use shoal_control::logs::LogSourceRef;

use crate::agent::{self, executor::NamespaceExecutor, logs::TaskLogs, AgentConfig};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Identity, certificates, the Raft log (managers) and task records.
    #[arg(long, default_value = "/var/lib/shoal")]
    pub state_dir: PathBuf,
    /// The local API socket the CLI talks to.
    #[arg(long, default_value = "/run/shoal/shoal.sock")]
    pub socket: PathBuf,
    /// Manager listen address (used on `init`/`join` when they give none).
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub listen_addr: String,
    /// This node's underlay address; default: its first non-loopback IPv4 address.
    #[arg(long)]
    pub advertise_addr: Option<Ipv4Addr>,
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Seconds between withdrawing a stopping task from LB/DNS and sending it SIGTERM.
    #[arg(long, default_value_t = 2.0)]
    pub drain_seconds: f64,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10.0)]
    pub stop_grace_seconds: f64,
    /// Host-side DNS listener with Consul-style names (<svc>.service.shoal); "off" disables it.
    #[arg(long, default_value = "127.0.0.1:8600")]
    pub dns_host_addr: String,
    /// Upstream resolvers for other names (at most 3); default: this host's /etc/resolv.conf.
    #[arg(long, value_delimiter = ',')]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// Load balancer: auto (probe the kernel: eBPF, then nftables, then IPVS), ebpf, nftables, ipvs.
    #[arg(long, default_value = "auto")]
    pub lb: shoal_dataplane::lb::Choice,
    /// Forward nothing upstream (names outside the cluster get SERVFAIL); for closed labs.
    #[arg(long, conflicts_with = "dns_upstream")]
    pub no_dns_upstream: bool,
}

pub fn run(a: DaemonArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(serve(a))
}

fn first_address() -> anyhow::Result<Ipv4Addr> {
    let mut nl = shoal_dataplane::netlink::Netlink::open()?;
    let links = nl.links()?;
    nl.addrs()?
        .into_iter()
        .find(|a| !a.ip.is_loopback() && links.iter().any(|l| l.index == a.ifindex && !l.name.starts_with("sh")))
        .map(|a| a.ip)
        .context("no IPv4 address on this host: pass --advertise-addr")
}

async fn serve(a: DaemonArgs) -> anyhow::Result<()> {
    let self_addr = match a.advertise_addr {
        Some(ip) => ip,
        None => first_address()?,
    };
    let mut cfg = NodeConfig::new(&a.state_dir);
    cfg.socket = Some(a.socket.clone());
    cfg.listen_addr = a.listen_addr.parse().with_context(|| format!("--listen-addr {:?} is not ip:port", a.listen_addr))?;
    cfg.advertise_addr = Some(self_addr.to_string());
    cfg.heartbeat_period = Duration::from_millis(a.heartbeat_ms.max(10));
    if let Some(h) = a.hostname {
        cfg.hostname = h;
    }
    std::fs::create_dir_all(&a.state_dir).with_context(|| format!("create {}", a.state_dir.display()))?;
    let exec = Arc::new(NamespaceExecutor::new(a.state_dir.join("tasks"))?);
    cfg.logs = Some(LogSourceRef(Arc::new(TaskLogs(exec.clone()))));
    if let Some(dir) = a.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let node = NodeControl::start(cfg, stop_rx.clone()).await?;
    tracing::info!(socket = %a.socket.display(), addr = %self_addr, "shoal daemon running");

    let upstreams = if a.no_dns_upstream {
        Vec::new()
    } else if a.dns_upstream.is_empty() {
        shoal_dns::upstreams_from_resolv_conf(std::path::Path::new("/etc/resolv.conf")).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no upstream resolvers: names outside the cluster get SERVFAIL");
            Vec::new()
        })
    } else {
        a.dns_upstream.clone()
    };
    let dns = Arc::new(shoal_dns::DnsServer::new(shoal_dns::DnsConfig { upstreams, ..Default::default() })?);
    if a.dns_host_addr != "off" {
        let addr = a.dns_host_addr.parse().with_context(|| format!("--dns-host-addr {:?} is not ip:port", a.dns_host_addr))?;
        match dns.serve_host(addr) {
            Ok(bound) => tracing::info!(%bound, "host DNS listener (<svc>.service.shoal)"),
            Err(e) => tracing::warn!(error = %e, "host DNS listener not started"),
        }
    }
    let agent = {
        let (node, stop_rx, dns) = (node.clone(), stop_rx.clone(), dns.clone());
        let lb = a.lb;
        let (drain, grace) = (Duration::from_secs_f64(a.drain_seconds), Duration::from_secs_f64(a.stop_grace_seconds));
        tokio::spawn(async move {
            // The agent starts once this node belongs to a cluster (after init or join).
            let node_id = loop {
                if let Some(id) = node.node_id().await {
                    break id;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            // Tasks run in this node's cgroup, where the eBPF socket load balancer attaches.
            let cgroup = shoal_ebpf::cgroup2_mount().map(|root| shoal_dataplane::lb::Instance::here(&node_id).cgroup(&root));
            if let Some(cg) = &cgroup {
                if let Err(e) = std::fs::create_dir_all(cg) {
                    tracing::warn!(cgroup = %cg.display(), error = %e, "cannot create the task cgroup");
                }
            }
            let cfg = AgentConfig { node_id, self_addr, drain, stop_grace: grace, cgroup, lb };
            agent::run(node, cfg, exec, dns, stop_rx).await;
        })
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Crash-only: stopping the daemon leaves tasks and kernel state as they are.
    stop.send_replace(true);
    agent.abort();
    node.stop().await;
    let _ = std::fs::remove_file(&a.socket);
    Ok(())
}
