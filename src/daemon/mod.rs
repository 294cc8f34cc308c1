//! `shoal daemon`: one process per node. The control runtime (local API, manager role on
//! managers, dispatcher session) and the agent that turns assignments into processes and
//! kernel state.

pub mod config;
mod notify;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_control::logs::LogSourceRef;
use shoal_control::node::{NodeConfig, NodeControl};

use crate::agent::{self, executor::NamespaceExecutor, logs::TaskLogs, AgentConfig};

/// Every setting can also come from the config file (see [`config`]); defaults in brackets.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// JSON settings keyed by these flags' names [/etc/shoal/daemon.json, when it exists].
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Identity, certificates, the Raft log (managers) and task records [/var/lib/shoal].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The local API socket the CLI talks to [/run/shoal/shoal.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The Docker Engine API socket (`DOCKER_HOST=unix://PATH docker service ls`); "off"
    /// disables it [/run/shoal/docker.sock].
    #[arg(long)]
    pub engine_socket: Option<String>,
    /// Manager listen address, used on `init`/`join` when they give none [0.0.0.0:2377].
    #[arg(long)]
    pub listen_addr: Option<String>,
    /// This node's underlay address [its first non-loopback IPv4 address].
    #[arg(long)]
    pub advertise_addr: Option<Ipv4Addr>,
    /// Agent heartbeat period in milliseconds [1000].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Node name [the host's].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Seconds between withdrawing a stopping task from LB/DNS and sending it SIGTERM [2].
    #[arg(long)]
    pub drain_seconds: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL [10].
    #[arg(long)]
    pub stop_grace_seconds: Option<f64>,
    /// Host-side DNS listener with Consul-style names (<svc>.service.shoal); "off" disables
    /// it [127.0.0.1:8600].
    #[arg(long)]
    pub dns_host_addr: Option<String>,
    /// Upstream resolvers for other names (at most 3) [this host's /etc/resolv.conf].
    #[arg(long, value_delimiter = ',')]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// Load balancer: auto (probe the kernel: eBPF, then nftables, then IPVS), ebpf, nftables,
    /// ipvs [auto].
    #[arg(long)]
    pub lb: Option<shoal_dataplane::lb::Choice>,
    /// Forward nothing upstream (names outside the cluster get SERVFAIL); for closed labs.
    #[arg(long, conflicts_with = "dns_upstream")]
    pub no_dns_upstream: bool,
    /// Rotate a task's stdout/stderr log past this size: bytes, or k/m/g (Docker's `local`
    /// log driver default) [20m].
    #[arg(long)]
    pub log_max_size: Option<String>,
    /// Files kept per task stream, the current one included [5].
    #[arg(long, allow_negative_numbers = true)]
    pub log_max_file: Option<i64>,
    /// A registry reached over plain HTTP when pulling images, host[:port]; repeatable
    /// (daemon.json: `insecure-registries`, a list) [none].
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

impl DaemonArgs {
    fn flags(&self) -> config::Flags {
        config::Flags {
            state_dir: self.state_dir.clone(),
            socket: self.socket.clone(),
            engine_socket: self.engine_socket.clone(),
            listen_addr: self.listen_addr.clone(),
            advertise_addr: self.advertise_addr,
            heartbeat_ms: self.heartbeat_ms,
            hostname: self.hostname.clone(),
            drain_seconds: self.drain_seconds,
            stop_grace_seconds: self.stop_grace_seconds,
            dns_host_addr: self.dns_host_addr.clone(),
            dns_upstream: self.dns_upstream.clone(),
            lb: self.lb,
            no_dns_upstream: self.no_dns_upstream,
            log_max_size: self.log_max_size.clone(),
            log_max_file: self.log_max_file,
            insecure_registries: self.insecure_registries.clone(),
        }
    }
}

pub fn run(a: DaemonArgs) -> anyhow::Result<()> {
    let file = config::load(a.config_file.as_deref())?;
    let settings = config::resolve(&a.flags(), file.as_ref().map(|(p, f)| (p.as_path(), f)))?;
    if let Some((path, _)) = &file {
        tracing::info!(file = %path.display(), "settings read from the config file");
    }
    // The manager's request futures hold whole service specs across awaits; unoptimised
    // builds lay them out on the stack and overflowed tokio's 2 MiB default under the
    // Engine API's swarm update. 8 MiB is the main thread's size.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(8 << 20).build()?;
    crate::image::reference::ImageRef::warm_up();
    rt.block_on(serve(settings))
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

/// What this kernel offers encrypted networks, probed as `shoal doctor` does; the node reports it
/// when it joins, and `--opt encrypted` picks a backend every node runs.
fn encryption_support() -> shoal_control::model::EncryptionSupport {
    use shoal_dataplane::crypt;
    let support = shoal_control::model::EncryptionSupport {
        kernel_wireguard: crypt::kernel::probe().is_ok(),
        esp: crypt::ipsec::kernel::probe().is_ok(),
        tun: Path::new("/dev/net/tun").exists(),
    };
    tracing::info!(
        kernel_wireguard = support.kernel_wireguard,
        esp = support.esp,
        tun = support.tun,
        "encryption support (reported when the node joins)"
    );
    support
}

async fn serve(a: config::Settings) -> anyhow::Result<()> {
    let self_addr = match a.advertise_addr {
        Some(ip) => ip,
        None => first_address()?,
    };
    let mut cfg = NodeConfig::new(&a.state_dir);
    cfg.socket = Some(a.socket.clone());
    cfg.listen_addr = a.listen_addr;
    cfg.advertise_addr = Some(self_addr.to_string());
    cfg.gossip_port = Some(shoal_control::node::gossip::GOSSIP_PORT);
    cfg.encryption = encryption_support();
    cfg.heartbeat_period = Duration::from_millis(a.heartbeat_ms);
    if let Some(h) = a.hostname {
        cfg.hostname = h;
    }
    std::fs::create_dir_all(&a.state_dir).with_context(|| format!("create {}", a.state_dir.display()))?;
    // Tasks that see the host's filesystem (`host`, `shoal/whoami`) get these covered.
    let mut hidden = vec![a.state_dir.clone(), PathBuf::from("/etc/shoal"), PathBuf::from("/run/shoal")];
    hidden.extend(a.socket.parent().map(Path::to_path_buf));
    hidden.sort();
    hidden.dedup();
    let exec = Arc::new(NamespaceExecutor::new(a.state_dir.join("tasks"))?.with_log_limits(a.log_limits).with_hidden(hidden));
    let images = Arc::new(agent::images::Images::new(&a.state_dir, a.insecure_registries.clone()));
    cfg.logs = Some(LogSourceRef(Arc::new(TaskLogs(exec.clone()))));
    if let Some(dir) = a.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let engine_hostname = cfg.hostname.clone();
    let node = NodeControl::start(cfg, stop_rx.clone()).await?;
    if let Some(path) = &a.engine_socket {
        // The cluster does not depend on it: a socket that cannot be bound (another daemon's
        // on this host) is reported and the node runs on.
        match shoal_control::engine::bind(path) {
            Ok(l) => {
                let cfg = shoal_control::engine::EngineConfig { hostname: engine_hostname.clone(), advertise_addr: self_addr.to_string() };
                tokio::spawn(shoal_control::engine::serve(node.clone(), cfg, l, stop_rx.clone()));
                tracing::info!(socket = %path.display(), "Docker Engine API served");
            }
            Err(e) => tracing::warn!(socket = %path.display(), error = %e, "Docker Engine API not served"),
        }
    }
    tracing::info!(socket = %a.socket.display(), addr = %self_addr, "shoal daemon running");
    notify::notify("READY=1");

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
    if let Some(addr) = a.dns_host_addr {
        match dns.serve_host(addr) {
            Ok(bound) => tracing::info!(%bound, "host DNS listener (<svc>.service.shoal)"),
            Err(e) => tracing::warn!(error = %e, "host DNS listener not started"),
        }
    }
    let agent = {
        let (node, stop_rx, dns) = (node.clone(), stop_rx.clone(), dns.clone());
        let lb = a.lb;
        // The manager API (this daemon's and Swarm's usual port) and gossip; the host DNS
        // listener too when it is not on loopback (tasks cannot reach the node's loopback).
        let mut control_ports = shoal_dataplane::guard::ControlPorts::default();
        control_ports.tcp.extend([a.listen_addr.port(), 2377, 7946]);
        control_ports.udp.insert(7946);
        if let Some(dns) = a.dns_host_addr.filter(|d| !d.ip().is_loopback()) {
            control_ports.udp.insert(dns.port());
            control_ports.tcp.insert(dns.port());
        }
        let (drain, grace) = (Duration::from_secs_f64(a.drain_seconds), Duration::from_secs_f64(a.stop_grace_seconds));
        tokio::spawn(async move {
            // The agent starts once this node belongs to a cluster (after init or join).
            let node_id = loop {
                if let Some(id) = node.node_id().await {
                    break id;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            // Tasks run in cgroups under this node's, where the eBPF socket load balancer attaches.
            let layout = agent::executor::cgroups::Layout::detect_or_mount();
            let instance = PathBuf::from("shoal").join(shoal_dataplane::lb::Instance::here(&node_id).name);
            if let Some(root) = &layout.v2 {
                let cg = root.join(&instance);
                if let Err(e) = std::fs::create_dir_all(&cg) {
                    tracing::warn!(cgroup = %cg.display(), error = %e, "cannot create the node's task cgroup");
                }
            }
            let cfg = AgentConfig {
                node_id: node_id.into_string(),
                self_addr,
                drain,
                stop_grace: grace,
                cgroups: (layout, instance),
                lb,
                control_ports,
                images,
            };
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
    if let Some(path) = &a.engine_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
