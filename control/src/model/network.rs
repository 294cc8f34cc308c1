//! Overlay networks.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkSpec {
    pub name: String,
    /// Only `overlay` is supported.
    pub driver: String,
    /// Explicit subnet; carved from the default pool when absent.
    pub subnet: Option<ipnet::Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub attachable: bool,
    /// The routing-mesh network made at `init`.
    pub ingress: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: super::NetworkId,
    pub spec: NetworkSpec,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    /// One load-balancer address per node that has tasks on this network.
    pub lb_addrs: BTreeMap<super::NodeId, Ipv4Addr>,
    pub created_ms: u64,
}
