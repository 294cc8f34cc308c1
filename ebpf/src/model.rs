//! Public description of what the load balancers serve: services and their
//! backends, independent of the map layout.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
};

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// IANA protocol number, as the programs see it.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    pub(crate) fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// The port of a front end that carries every port of its address (a VIP,
/// Swarm's semantics), and of a backend that gets the port the client asked
/// for. An exact (address, port) front end wins over it.
pub const ANY_PORT: u16 = 0;

/// A load-balanced front end.
///
/// For the socket LB, `addr:port` is a service VIP ([`ANY_PORT`]: every
/// port). For the published-port NAT it is a node address and a published
/// port; `0.0.0.0` publishes the port on every node address; a NAT service
/// with [`ServiceOptions::vip`] is a VIP balanced on the overlay bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// VIP or node address.
    pub addr: Ipv4Addr,
    /// Service or published port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl ServiceKey {
    /// A TCP front end.
    pub const fn tcp(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port, proto: Proto::Tcp }
    }

    /// A UDP front end.
    pub const fn udp(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port, proto: Proto::Udp }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto)
    }
}

/// Per-service options, stored in the service's flags (so they are read back
/// after a restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceOptions {
    /// Prefer a local backend when one exists: new flows then go to a local
    /// backend (the NAT also keeps the client's source address, no SNAT).
    /// With no local backend the service behaves as without this option.
    pub keep_client_ip: bool,
    /// Socket LB only: this service is a published port (node address and
    /// port) mirrored for the node's own processes and tasks, not a VIP. The
    /// programs treat both alike; the tag tells a restarted agent which is which.
    pub published: bool,
    /// NAT only: this service is a VIP, balanced by `nat_reply` on the
    /// overlay bridge for packets no socket hook translated (processes in a
    /// task's network namespace outside the task cgroup); `nat_ingress` on
    /// the underlay never takes it.
    pub vip: bool,
}

/// One backend (a task) of a service. Only healthy backends belong in a
/// service: the programs choose among those present in proportion to their
/// weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Task address and target port ([`ANY_PORT`]: the client's port).
    pub addr: SocketAddrV4,
    /// NAT only: the source address packets towards this backend get (the
    /// node's own LB address on the backend's overlay network).
    pub snat: Option<Ipv4Addr>,
    /// NAT only: the task runs on this node (used by `keep_client_ip`).
    pub local: bool,
    /// Relative share of new flows (1 by default). 0 drains the backend: it
    /// gets no new flow, while its established flows (and the UDP sockets
    /// and flows tied to it) keep going to it.
    pub weight: u16,
}

impl Backend {
    /// A backend for the socket LB, weight 1.
    pub const fn new(addr: SocketAddrV4) -> Self {
        Self { addr, snat: None, local: false, weight: 1 }
    }

    /// A backend for the published-port NAT, reached with source `snat`, weight 1.
    pub const fn nat(addr: SocketAddrV4, snat: Ipv4Addr, local: bool) -> Self {
        Self { addr, snat: Some(snat), local, weight: 1 }
    }

    /// The same backend with another weight.
    pub const fn with_weight(mut self, weight: u16) -> Self {
        self.weight = weight;
        self
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if let Some(snat) = self.snat {
            write!(f, " (snat {snat})")?;
        }
        if self.local {
            f.write_str(" (local)")?;
        }
        if self.weight != 1 {
            write!(f, " (weight {})", self.weight)?;
        }
        Ok(())
    }
}
