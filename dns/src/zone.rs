//! The desired state the DNS serves: per network, its services and tasks; the nodes for the host side.
//!
//! This is the input of [`crate::DnsServer::set_zone`]; it is plain data (serde) so the control plane
//! and `shoal dataplane apply` can hand it over as JSON.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Everything the DNS knows, replaced whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// One entry per network; a task sees only the networks it is attached to.
    #[serde(default)]
    pub networks: Vec<NetworkZone>,
    /// Cluster nodes, answered on the host-side listener as `<node>.node.shoal`.
    #[serde(default)]
    pub nodes: Vec<NodeRecord>,
}

/// The names of one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkZone {
    /// Network name, also usable as a name suffix (`web.backend`).
    pub name: String,
    /// Services attached to this network.
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
    /// Tasks attached to this network (their IP is their address on this network).
    #[serde(default)]
    pub tasks: Vec<TaskRecord>,
}

/// How a service name resolves (`vip`: the service's virtual IP; `dnsrr`: the healthy task
/// IPs), and a port's protocol (for SRV names `_<port>._<proto>.<svc>`): declared once for
/// control, the data plane and the DNS, with the serde names this module used.
pub use shoal_types::{EndpointMode, Protocol};

/// A service port, answered as SRV `_<name>._<protocol>.<svc>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRecord {
    /// Symbolic name (`http`); when absent the port number is the name (`_80._tcp.web`).
    #[serde(default)]
    pub name: Option<String>,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// The port tasks listen on.
    pub port: u16,
}

impl PortRecord {
    /// The first SRV label, without underscore.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.port.to_string())
    }
}

/// A service on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    /// Service name.
    pub name: String,
    /// Extra names for the service on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// VIP or DNS round robin.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// The service's virtual IP on this network (required in VIP mode).
    #[serde(default)]
    pub vip: Option<IpAddr>,
    /// Ports, for SRV answers.
    #[serde(default)]
    pub ports: Vec<PortRecord>,
}

/// A task (one replica) attached to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRecord {
    /// Task id (full or short, as shown by `shoal service ps`).
    pub id: String,
    /// The service the task belongs to.
    pub service: String,
    /// Replica slot; global services have none.
    #[serde(default)]
    pub slot: Option<u64>,
    /// Task name; defaults to `<service>.<slot>.<id>` (or `<service>.<id>` without slot).
    #[serde(default)]
    pub name: Option<String>,
    /// The task's IP on this network.
    pub ip: IpAddr,
    /// Whether the task passes its health check; only healthy tasks are service backends.
    #[serde(default = "default_true")]
    pub healthy: bool,
    /// Extra names for this task on this network (answered only while healthy).
    #[serde(default)]
    pub aliases: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl TaskRecord {
    /// The name the task answers to: the explicit name, or `<service>.<slot>.<id>`.
    pub fn task_name(&self) -> String {
        match (&self.name, self.slot) {
            (Some(name), _) => name.clone(),
            (None, Some(slot)) => format!("{}.{}.{}", self.service, slot, self.id),
            (None, None) => format!("{}.{}", self.service, self.id),
        }
    }
}

/// A cluster node, for `<node>.node.shoal` on the host-side listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// Node name (hostname).
    pub name: String,
    /// The node's advertised address.
    pub address: IpAddr,
}
