//! The crate's error type: every variant names the object it failed on and, for bad input, the fix.

use std::{io, net::SocketAddr, path::PathBuf};

/// Errors of the embedded DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The zone handed to [`crate::DnsServer::set_zone`] is invalid; the server keeps the previous one.
    #[error("invalid DNS zone: {0}")]
    Zone(#[from] ZoneError),
    /// The configuration is invalid.
    #[error("invalid DNS config: field `{field}`: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Opening the task's network namespace file failed.
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns {
        /// The namespace path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// setns(2) into the task's namespace failed.
    #[error("cannot enter network namespace {path}: {source}")]
    EnterNetns {
        /// The namespace path.
        path: PathBuf,
        /// The OS error.
        source: nix::Error,
    },
    /// Binding a listening socket failed.
    #[error("cannot bind DNS {proto} socket on {addr}{hint}: {source}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// A hint to the fix, possibly empty.
        hint: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The helper thread that opens sockets in a namespace died.
    #[error("socket opener thread for {path} failed: {reason}")]
    OpenerThread {
        /// The namespace path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A task with this id is already attached.
    #[error("task {0} is already attached to the DNS; detach it first")]
    TaskAlreadyAttached(String),
    /// No task with this id is attached.
    #[error("task {0} is not attached to the DNS")]
    UnknownTask(String),
    /// Reading the resolver configuration failed.
    #[error("cannot read resolver config {path}: {source}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The server's runtime could not be started.
    #[error("cannot start the DNS server's runtime thread: {0}")]
    Runtime(String),
}

/// Why a [`crate::Zone`] was rejected. Each variant names the network and object, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// A name is not a valid DNS name.
    #[error("{what} {name:?}{place}: {reason}")]
    BadName {
        /// What the name is ("service name", "task alias", ...).
        what: &'static str,
        /// The name.
        name: String,
        /// Where, e.g. " in network backend".
        place: String,
        /// What is wrong and the fix.
        reason: String,
    },
    /// Two networks have the same name.
    #[error("network {0:?} appears twice in the zone; merge the two entries")]
    DuplicateNetwork(String),
    /// Two services in one network have the same name.
    #[error("service {service:?} appears twice in network {network:?}; merge the two entries")]
    DuplicateService {
        /// The network.
        network: String,
        /// The service.
        service: String,
    },
    /// A service in VIP mode has no VIP on this network.
    #[error("service {service:?} in network {network:?} has endpoint_mode vip but no vip; set `vip` or use endpoint_mode dnsrr")]
    MissingVip {
        /// The network.
        network: String,
        /// The service.
        service: String,
    },
    /// A task names a service that is not in its network.
    #[error("task {task:?} in network {network:?} belongs to service {service:?}, which is not in that network's services; add the service to the network or drop the task")]
    UnknownService {
        /// The network.
        network: String,
        /// The task id.
        task: String,
        /// The service it names.
        service: String,
    },
}
