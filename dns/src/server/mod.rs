//! The DNS server: one set of tables, served to every attached task inside its own namespace and
//! on optional host-side listeners.

mod config;
mod listener;
mod mmsg;
pub mod netns;
mod runtime;
mod stats;
mod tcp;
mod udp;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use arc_swap::ArcSwap;
use tokio::{sync::Semaphore, task::JoinHandle};
use tracing::Instrument;

pub use config::DnsConfig;
use listener::{Listener, Scope, Shared};
pub use stats::DnsStats;
use stats::ListenerStats;

use crate::{
    error::DnsError,
    forward::{resolv_conf::TASK_DNS_ADDR, Forwarder},
    table::Tables,
    zone::Zone,
};

/// Default address of the host-side (Consul-style) listener.
pub const DEFAULT_HOST_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8600);

/// The address and port tasks query: 127.0.0.11:53.
pub const TASK_DNS_SOCKET: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(TASK_DNS_ADDR), 53);

/// The embedded DNS of one node. Cheap to share behind an `Arc`; all methods take `&self`.
/// Dropping it (or [`DnsServer::shutdown`]) stops every listener.
pub struct DnsServer {
    shared: Arc<Shared>,
    config: DnsConfig,
    tasks: Mutex<HashMap<String, TaskEntry>>,
    hosts: Mutex<Vec<Serving>>,
    /// Serialises zone updates (each builds on the previous tables).
    zone_update: Mutex<()>,
    /// Where the listeners run (declared last: dropped after them).
    runtime: runtime::DnsRuntime,
}

/// A task's listener: its networks (replaceable) and the serving loops.
struct TaskEntry {
    networks: Arc<ArcSwap<Vec<String>>>,
    serving: Serving,
}

/// The running loops of one listener; aborted on drop.
struct Serving {
    local_addr: SocketAddr,
    handles: Vec<JoinHandle<()>>,
    stats: Arc<ListenerStats>,
}

impl Serving {
    /// Aborts the loops and waits for them to be dropped.
    async fn stop(mut self) {
        let handles = std::mem::take(&mut self.handles);
        for handle in &handles {
            handle.abort();
        }
        for handle in handles {
            let _ = handle.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

impl DnsServer {
    /// A server with an empty zone, running on its own runtime thread(s) (started here: they
    /// and their forwarding sockets live in the calling thread's network namespace).
    pub fn new(config: DnsConfig) -> Result<Self, DnsError> {
        let answer = config.validate()?;
        let runtime = runtime::DnsRuntime::start(config.worker_threads)?;
        let forwarder = Forwarder::new(&config.upstreams, config.upstream_timeout);
        Ok(Self {
            shared: Arc::new(Shared { tables: ArcSwap::from_pointee(Tables::default()), answer, forwarder }),
            config,
            tasks: Mutex::new(HashMap::new()),
            hosts: Mutex::new(Vec::new()),
            zone_update: Mutex::new(()),
            runtime,
        })
    }

    /// Replaces the zone. The new tables are built aside and swapped in atomically: a query sees
    /// either the old zone or the new one. An invalid zone is rejected and the old one stays.
    /// Only services whose part of the zone changed are recompiled, so a backend change costs
    /// about the size of its service (plus a comparison of the zone).
    pub fn set_zone(&self, zone: &Zone) -> Result<(), DnsError> {
        let _serial = self.zone_update.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.shared.tables.load_full();
        let tables = Tables::build(zone, Some(&previous))?;
        self.shared.tables.store(Arc::new(tables));
        tracing::debug!(networks = zone.networks.len(), "DNS zone replaced");
        // Freeing a large table takes as long as building it: do it off the caller's path.
        if Arc::strong_count(&previous) == 1 {
            let _ = std::thread::Builder::new().name("shoal-dns-free".into()).spawn(move || drop(previous));
        }
        Ok(())
    }

    /// Serves the task's DNS at 127.0.0.11:53 (UDP and TCP) inside the network namespace at
    /// `netns`, answering the names of `networks` (in this order of preference). The namespace's
    /// loopback interface must be up.
    pub async fn attach_task(&self, task_id: &str, netns: &Path, networks: Vec<String>) -> Result<(), DnsError> {
        self.check_new_task(task_id)?;
        let sockets = netns::bind_in_netns(netns, TASK_DNS_SOCKET).await?;
        self.start_task(task_id, sockets, networks).map(|_| ())
    }

    /// Like [`DnsServer::attach_task`] but on `addr` in the current namespace (port 0 picks one);
    /// returns the bound address. For tests and benchmarks, or runtimes without namespaces.
    pub async fn attach_task_at(&self, task_id: &str, addr: SocketAddr, networks: Vec<String>) -> Result<SocketAddr, DnsError> {
        self.check_new_task(task_id)?;
        let sockets = netns::bind(addr)?;
        self.start_task(task_id, sockets, networks)
    }

    /// Changes the networks a task sees (a network connected or disconnected).
    pub fn set_task_networks(&self, task_id: &str, networks: Vec<String>) -> Result<(), DnsError> {
        let tasks = self.lock_tasks();
        let entry = tasks.get(task_id).ok_or_else(|| DnsError::UnknownTask(task_id.to_string()))?;
        entry.networks.store(Arc::new(lowercase(networks)));
        Ok(())
    }

    /// Stops serving the task and waits until its listening loops are gone (its sockets are then
    /// closed, unless a forwarded query is still waiting for its upstream). Unknown ids are an
    /// error.
    pub async fn detach_task(&self, task_id: &str) -> Result<(), DnsError> {
        let entry = self.lock_tasks().remove(task_id).ok_or_else(|| DnsError::UnknownTask(task_id.to_string()))?;
        entry.serving.stop().await;
        tracing::debug!(task = task_id, "task DNS detached");
        Ok(())
    }

    /// Ids of the attached tasks with their listening address.
    pub fn attached_tasks(&self) -> Vec<(String, SocketAddr)> {
        self.lock_tasks().iter().map(|(id, entry)| (id.clone(), entry.serving.local_addr)).collect()
    }

    /// Query counters of one attached task.
    pub fn task_stats(&self, task_id: &str) -> Option<DnsStats> {
        self.lock_tasks().get(task_id).map(|e| e.serving.stats.snapshot())
    }

    /// Query counters summed over the attached tasks and the host-side listeners.
    pub fn stats(&self) -> DnsStats {
        let mut total = DnsStats::default();
        for entry in self.lock_tasks().values() {
            total += entry.serving.stats.snapshot();
        }
        for host in self.hosts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            total += host.stats.snapshot();
        }
        total
    }

    /// Serves the Consul-style host names (`<svc>.service.shoal`, `<node>.node.shoal`) on `addr`
    /// (UDP and TCP) in the current namespace, e.g. 127.0.0.1:8600; returns the bound address.
    pub fn serve_host(&self, addr: SocketAddr) -> Result<SocketAddr, DnsError> {
        let sockets = netns::bind(addr)?;
        let serving = self.spawn(sockets, Scope::Host)?;
        let local = serving.local_addr;
        self.hosts.lock().unwrap_or_else(|e| e.into_inner()).push(serving);
        tracing::info!(addr = %local, "host-side DNS listening");
        Ok(local)
    }

    /// Stops every listener (tasks and host side) and waits until their loops are gone.
    pub async fn shutdown(&self) {
        let tasks: Vec<TaskEntry> = self.lock_tasks().drain().map(|(_, entry)| entry).collect();
        let hosts: Vec<Serving> = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for entry in tasks {
            entry.serving.stop().await;
        }
        for host in hosts {
            host.stop().await;
        }
        tracing::debug!("DNS server stopped");
    }

    fn check_new_task(&self, task_id: &str) -> Result<(), DnsError> {
        if self.lock_tasks().contains_key(task_id) {
            return Err(DnsError::TaskAlreadyAttached(task_id.to_string()));
        }
        Ok(())
    }

    fn start_task(&self, task_id: &str, sockets: netns::Sockets, networks: Vec<String>) -> Result<SocketAddr, DnsError> {
        let networks = Arc::new(ArcSwap::from_pointee(lowercase(networks)));
        let scope = Scope::Task { id: task_id.to_string(), networks: networks.clone() };
        let serving = self.spawn(sockets, scope)?;
        let local = serving.local_addr;
        let mut tasks = self.lock_tasks();
        if tasks.contains_key(task_id) {
            // Raced with another attach of the same id; ours is dropped (and stopped).
            return Err(DnsError::TaskAlreadyAttached(task_id.to_string()));
        }
        tasks.insert(task_id.to_string(), TaskEntry { networks, serving });
        tracing::debug!(task = task_id, addr = %local, "task DNS attached");
        Ok(local)
    }

    fn spawn(&self, sockets: netns::Sockets, scope: Scope) -> Result<Serving, DnsError> {
        let local_addr =
            sockets.udp.local_addr().map_err(|source| DnsError::Bind { proto: "udp", addr: TASK_DNS_SOCKET, hint: "", source })?;
        let runtime = self.runtime.handle();
        let _guard = runtime.enter();
        let udp = tokio::net::UdpSocket::from_std(sockets.udp).map_err(|source| DnsError::Bind {
            proto: "udp",
            addr: local_addr,
            hint: "",
            source,
        })?;
        let tcp = tokio::net::TcpListener::from_std(sockets.tcp).map_err(|source| DnsError::Bind {
            proto: "tcp",
            addr: local_addr,
            hint: "",
            source,
        })?;
        let stats = Arc::new(ListenerStats::default());
        let listener = Arc::new(Listener {
            stats: stats.clone(),
            shared: self.shared.clone(),
            scope,
            inflight: Arc::new(Semaphore::new(self.config.max_inflight_per_task)),
            tcp_connections: Arc::new(Semaphore::new(self.config.max_tcp_connections_per_task)),
            tcp_idle_timeout: self.config.tcp_idle_timeout,
        });
        let span = match &listener.scope {
            Scope::Task { id, .. } => tracing::debug_span!("dns", task = %id, addr = %local_addr),
            Scope::Host => tracing::debug_span!("dns", host = true, addr = %local_addr),
        };
        let handles = vec![
            runtime.spawn(udp::serve(udp, listener.clone()).instrument(span.clone())),
            runtime.spawn(tcp::serve(tcp, listener).instrument(span)),
        ];
        Ok(Serving { local_addr, handles, stats })
    }

    fn lock_tasks(&self) -> MutexGuard<'_, HashMap<String, TaskEntry>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Aborts every loop (each `Serving` aborts its tasks on drop); `shutdown` also waits.
        self.lock_tasks().clear();
        self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn lowercase(networks: Vec<String>) -> Vec<String> {
    networks.into_iter().map(|n| n.trim_end_matches('.').to_ascii_lowercase()).collect()
}
