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
    /// `--internal` (Swarm's flag): tasks on it get no egress to addresses outside the cluster's
    /// networks.
    #[serde(default)]
    pub internal: bool,
    /// The gateway bridge made at `init` (Swarm's `docker_gwbridge`): on every node a bridge of
    /// its own, never joined to the others by VXLAN, for the tasks of services that name no
    /// network (loopback plus egress through the node). Services cannot name it.
    #[serde(default)]
    pub node_local: bool,
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
    /// The last address given to a task. The next task gets the next free one after it, not
    /// the lowest free (Docker's IPAM does the same): an address freed by a task that just
    /// ended (a rolling update) is not given at once to a task on another node while switches
    /// and caches still send it to the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_addr: Option<Ipv4Addr>,
    /// The backend chosen at create for `--opt encrypted` (shown by `network inspect`); `None`
    /// for a plaintext network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<super::EncryptionBackend>,
}

impl Network {
    /// Whether the network's traffic between nodes must be encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some() || self.spec.options.contains_key(super::ENCRYPTED_OPTION)
    }
}

/// The name of the gateway bridge network made at `init` (see [`NetworkSpec::node_local`]).
pub const GATEWAY_NETWORK: &str = "shoal_gwbridge";

/// Its subnet on every node: Docker's `docker_gwbridge` default 172.18.0.0/16, or the next
/// free /16 up to 172.31 when a node's address or a network is there already. Addresses are
/// given out cluster-wide all the same, so the allocator needs no per-node pools.
pub const GATEWAY_SUBNETS: std::ops::RangeInclusive<u8> = 18..=31;
