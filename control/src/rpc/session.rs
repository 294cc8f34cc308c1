//! What flows on an agent's session stream. The dispatcher sends `AgentUpdate`s: the node's
//! assignments and the cluster's endpoint table, as versioned deltas after a full snapshot.

use crate::model::{
    EndpointMode, Health, NetworkAttachment, NetworkId, NodeId, PortConfig, Role, ServiceId, ServiceSpec, Task, TaskId, TaskStatus, Vip,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A map of every node (or every node on a network): a persistent map, since each of 1,000
/// agents keeps one per network and per gossip ring, and must change and snapshot it at O(log n)
/// per entry rather than copy it whole on every update (serialised as a plain map).
pub type NodeMap<V> = imbl::OrdMap<NodeId, V>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AgentMessage {
    /// Keep the session alive.
    Heartbeat,
    /// What the node's kernel offers encrypted networks (sent first in each session; the
    /// leader records it when it differs from what the node reported before).
    Describe { encryption: crate::model::EncryptionSupport },
    /// Task states observed by the agent.
    TaskStatus { updates: Vec<(TaskId, TaskStatus)> },
    /// The answer to `SessionMessage::Logs`.
    Logs { request_id: String, logs: Vec<crate::logs::TaskLog> },
    /// The node's data plane (load balancers, DNS) holds the view of `version` now.
    Applied { version: u64 },
    /// Answer with `SessionMessage::Settled` once every node's data plane holds `version` (or
    /// after a while, with the version they all hold).
    AwaitSettled { version: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SessionMessage {
    /// First message of a session.
    Hello {
        node_id: NodeId,
        session_id: String,
        heartbeat_period_ms: u64,
        managers: Vec<String>,
        /// The managers' node ids: the only certificates the agent takes for a manager.
        #[serde(default)]
        manager_ids: Vec<NodeId>,
    },
    /// Boxed: the largest message by far, and the rest go through the same channels.
    Update(Box<AgentUpdate>),
    /// The managers changed since `Hello` (one joined, left or moved): where to look for the
    /// leader when this session ends. Without it an agent whose session opened before the
    /// other managers joined knows only the first one, and is lost when it dies.
    Managers {
        managers: Vec<String>,
        #[serde(default)]
        manager_ids: Vec<NodeId>,
    },
    /// The CA roots nodes must trust now (sent first, then on change: a CA rotation). A node
    /// whose trust differs renews its certificate at once, and takes the roots from the reply.
    Trust { ca_pem: String },
    /// This manager is not the leader: connect to `leader` instead.
    Redirect { leader: Option<String> },
    /// Read these tasks' logs (`service logs`); answered with `AgentMessage::Logs`.
    Logs { request_id: String, reads: Vec<crate::logs::LogRead> },
    /// Every connected node's data plane holds the view of `version` (the answer to
    /// `AgentMessage::AwaitSettled`).
    Settled { version: u64 },
}

/// A task the node must run (or stop, when `task.desired_state` is past running).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: Task,
    pub service_name: String,
    pub spec: ServiceSpec,
    /// Secrets the task references: name -> data.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Configs the task references: name -> data.
    #[serde(default)]
    pub configs: BTreeMap<String, Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub id: NetworkId,
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ingress: bool,
    /// No egress for its tasks (`network create --internal`).
    #[serde(default)]
    pub internal: bool,
    /// The gateway bridge: a bridge of each node's own, no VXLAN, no peers, no names.
    #[serde(default)]
    pub node_local: bool,
    pub options: BTreeMap<String, String>,
    /// Load-balancer address of each node on this network.
    pub lb_addrs: NodeMap<Ipv4Addr>,
    /// Underlay address of every node with tasks on this network (VXLAN peers).
    pub peers: NodeMap<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    pub id: ServiceId,
    pub name: String,
    pub mode: EndpointMode,
    pub vips: Vec<Vip>,
    pub ports: Vec<PortConfig>,
    pub networks: Vec<NetworkId>,
    /// Extra DNS names of the service, by network id (resolved from the spec's
    /// `network_aliases`); served only on that network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<NetworkId, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEndpoint {
    pub task_id: TaskId,
    pub service_id: ServiceId,
    pub name: String,
    pub node_id: NodeId,
    /// Underlay address of the node.
    pub node_addr: String,
    pub addresses: Vec<NetworkAttachment>,
    pub health: Option<Health>,
    pub weight: u32,
    /// Told to stop and still running on its node: no load balancer picks it and DNS does not
    /// answer it, but every node keeps it reachable for the flows it has (the drain).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// This node's WireGuard identity and every other node's public half, for encrypted networks.
/// Sent only on this node's own session (the private key is its alone); kept in memory.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGuardView {
    /// Base64.
    pub private_key: String,
    pub address: Ipv4Addr,
    /// Every node with an identity (this one included): node id -> public key and address.
    pub peers: BTreeMap<NodeId, WireGuardPeer>,
}

impl std::fmt::Debug for WireGuardView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGuardView")
            .field("private_key", &"(secret)")
            .field("address", &self.address)
            .field("peers", &self.peers)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGuardPeer {
    /// Base64.
    pub public_key: String,
    pub address: Ipv4Addr,
    /// The key this node shares with that peer alone (base64), empty for itself or before the
    /// managers issued one. Secret: `Debug` never prints it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preshared_key: String,
}

impl std::fmt::Debug for WireGuardPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGuardPeer").field("public_key", &self.public_key).field("address", &self.address).finish()
    }
}

/// What a node needs to run gossip (`control/src/node/gossip.rs`): the cluster's gossip key
/// ring and every node's address (the seeds, and the cluster's size). Sent on every session;
/// the agent keeps it in memory.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipView {
    /// The key id datagrams are sealed under.
    pub sending: u32,
    /// Every key still accepted: id -> base64 key.
    pub keys: BTreeMap<u32, String>,
    /// Node id -> underlay address, every node of the cluster (this one included).
    pub nodes: NodeMap<String>,
}

impl std::fmt::Debug for GossipView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipView")
            .field("sending", &self.sending)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// One step of the stream: `full` replaces everything the agent has; otherwise the upserts and
/// removals apply on top of version `version - n`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpdate {
    pub version: u64,
    pub full: bool,
    pub role: Option<Role>,
    pub assignments: Vec<Assignment>,
    pub removed_assignments: Vec<TaskId>,
    pub networks: Vec<NetworkInfo>,
    pub removed_networks: Vec<NetworkId>,
    pub services: Vec<ServiceEndpoint>,
    pub removed_services: Vec<ServiceId>,
    pub endpoints: Vec<TaskEndpoint>,
    pub removed_endpoints: Vec<TaskId>,
    /// This node's WireGuard view, when it changed (or on a full update). It is only ever
    /// replaced, never removed: a node keeps its identity until it leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireGuardView>,
    /// The gossip key ring and node list, when they changed (or on a full update). Boxed: rare,
    /// and it would make every session message larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip: Option<Box<GossipView>>,
    /// One node's entry in a network's peers changed (`None`: gone), sent instead of the whole
    /// network when nothing else of it changed: a join adds a peer and a load-balancer address
    /// to the ingress network, and resending the network whole cost O(nodes) per session per
    /// join. Applied after `networks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_peers: Vec<(NetworkId, NodeId, Option<String>)>,
    /// The same for a network's load-balancer addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_lb_addrs: Vec<(NetworkId, NodeId, Option<Ipv4Addr>)>,
    /// The same for the gossip node list, when the key ring did not change. Applied after
    /// `gossip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gossip_nodes: Vec<(NodeId, Option<String>)>,
}

impl AgentUpdate {
    pub fn is_empty(&self) -> bool {
        !self.full
            && self.role.is_none()
            && self.assignments.is_empty()
            && self.removed_assignments.is_empty()
            && self.networks.is_empty()
            && self.removed_networks.is_empty()
            && self.services.is_empty()
            && self.removed_services.is_empty()
            && self.endpoints.is_empty()
            && self.removed_endpoints.is_empty()
            && self.wireguard.is_none()
            && self.gossip.is_none()
            && self.network_peers.is_empty()
            && self.network_lb_addrs.is_empty()
            && self.gossip_nodes.is_empty()
    }
}
