//! Embedded service DNS served at 127.0.0.11 inside every task namespace, fed by the endpoint table.
//!
//! - [`Zone`] is the desired state (per network: services, tasks; nodes), replaced whole with
//!   [`DnsServer::set_zone`]; it is compiled into per-network [`table::Tables`] and swapped atomically.
//! - [`DnsServer::attach_task`] opens 127.0.0.11:53 (UDP and TCP) inside the task's namespace and
//!   answers the names of the task's networks there; other names are forwarded upstream.
//! - [`DnsServer::serve_host`] serves Consul-style names on the host (`<svc>.service.shoal`).
//! - [`query::respond`] is the whole query path without I/O (unit-, property- and fuzz-tested).

pub mod bench;
mod error;
pub mod forward;
pub mod query;
mod server;
pub mod table;
mod zone;

pub use error::{DnsError, ZoneError};
pub use forward::resolv_conf::{parse_resolv_conf, resolv_conf_for_task, upstreams_from_resolv_conf, TASK_DNS_ADDR};
pub use server::{netns::bind_in_netns, DnsConfig, DnsServer, DnsStats, DEFAULT_HOST_ADDR, TASK_DNS_SOCKET};
pub use zone::{EndpointMode, NetworkZone, NodeRecord, PortRecord, Protocol, ServiceRecord, TaskRecord, Zone};
