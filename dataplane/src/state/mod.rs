//! The desired state of one node's data plane, as `shoal dataplane apply --state FILE` reads it
//! and, later, as the agent builds it from the dispatcher's endpoint table.
//!
//! [`DesiredNode::validate`] checks everything before anything touches the kernel, and names the
//! field and the fix in every complaint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::netlink::Mac;
use crate::netns;

mod services;
mod wireguard;
pub use services::{EndpointMode, PortConfig, Protocol, PublishMode, Service};
pub use wireguard::{Encryption, NodeWireGuard};

use crate::crypt::key::PrivateKey;

pub const VNI_MAX: u32 = 16_777_215;
pub const MIN_MTU: u32 = 1280;
/// Outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8).
pub const VXLAN_OVERHEAD: u32 = 50;
pub const VXLAN_PORT: u16 = 4789;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// What one node's data plane should be. Not control's `model::NodeState` (a node's liveness in
/// the cluster): one name, one meaning.
#[serde(deny_unknown_fields)]
pub struct DesiredNode {
    /// This node's name; must appear in `nodes`.
    pub node: String,
    /// Every node of the cluster with its underlay address (its VTEP).
    pub nodes: Vec<NodeInfo>,
    #[serde(default)]
    pub networks: Vec<Network>,
    /// The cluster's endpoint table: local ones are attached here, remote ones programmed into
    /// the VXLAN forwarding and neighbour tables.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Services with their VIPs, published ports and backends (the load balancers' input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// This node's WireGuard private key, when a network is encrypted. The agent keeps it in
    /// memory only; `dataplane apply` (a lab and test tool) reads it from the state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_private_key: Option<PrivateKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    pub name: String,
    pub address: Ipv4Addr,
    /// Public key and tunnel address: needed from every node with tasks on an encrypted network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireGuard>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub subnet: Ipv4Net,
    /// Defaults to the subnet's first host address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Defaults to the underlay MTU minus the VXLAN overhead (50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Each node's own address on this network (Docker's load-balancer endpoint): the source
    /// address of mesh traffic this node forwards, and the bridge's MAC is derived from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lb_addresses: BTreeMap<String, Ipv4Addr>,
    /// Tasks on it get no egress (Swarm's `--internal`): their traffic to anything outside the
    /// cluster's networks is unreachable, and never masqueraded.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// A node-local network (the gateway bridge of tasks whose service names no network): a
    /// bridge only, no VXLAN device; endpoints of other nodes on it are not programmed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub local: bool,
    /// Traffic between nodes travels only inside encrypted tunnels (`--opt encrypted`): the
    /// network's VXLAN runs between the nodes' tunnel addresses, never in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<Encryption>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub id: String,
    pub network: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// Defaults to 02:42 followed by the IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// The task's network namespace (`/run/netns/NAME`); required for endpoints on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Health: an unhealthy endpoint gets no new load-balanced flows (its open ones go on).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub healthy: bool,
    /// Relative share of new flows (backends that support weights; 1 by default).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u16,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            id: String::new(),
            network: String::new(),
            node: String::new(),
            ip: Ipv4Addr::UNSPECIFIED,
            mac: None,
            netns: None,
            healthy: true,
            weight: 1,
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn one() -> u16 {
    1
}

fn is_one(w: &u16) -> bool {
    *w == 1
}

impl Network {
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway.unwrap_or_else(|| first_host(self.subnet))
    }
}

impl Endpoint {
    pub fn mac(&self) -> Mac {
        self.mac.unwrap_or_else(|| Mac::from_ipv4(self.ip))
    }
}

fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// One thing wrong with the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `networks[1].vni`.
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.field, self.problem, self.fix)
    }
}

#[derive(Debug, thiserror::Error)]
pub struct InvalidState(pub Vec<FieldError>);

impl fmt::Display for InvalidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the desired state is invalid, nothing was changed:")?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), problem: problem.into(), fix: fix.into() });
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl DesiredNode {
    /// Nothing desired: what teardown plans towards.
    pub fn empty() -> Self {
        Self { node: String::new(), nodes: vec![], networks: vec![], endpoints: vec![], services: vec![], wireguard_private_key: None }
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn self_node(&self) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == self.node)
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The task-side interface of each local endpoint: a namespace's endpoints, in the order
    /// listed, get eth0, eth1, ...; eth0 carries the default route.
    pub fn task_ifnames(&self) -> std::collections::HashMap<&str, String> {
        let mut next: HashMap<&str, usize> = HashMap::new();
        self.local_endpoints()
            .filter_map(|e| {
                let n = next.entry(e.netns.as_deref()?).or_default();
                *n += 1;
                Some((e.id.as_str(), crate::overlay::names::task_ifname(*n - 1)))
            })
            .collect()
    }

    pub fn local_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.node == self.node)
    }

    /// Checks the whole state; every problem is reported, not just the first.
    pub fn validate(&self) -> Result<(), InvalidState> {
        let mut errs = Errors(Vec::new());
        self.validate_nodes(&mut errs);
        self.validate_networks(&mut errs);
        self.validate_endpoints(&mut errs);
        self.validate_services(&mut errs);
        self.validate_wireguard(&mut errs);
        if errs.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidState(errs.0))
        }
    }

    fn validate_nodes(&self, errs: &mut Errors) {
        if self.self_node().is_none() {
            errs.push("node", format!("'{}' is not one of `nodes`", self.node), "add this node with its underlay address to `nodes`");
        }
        let mut names = HashSet::new();
        let mut addrs = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !valid_name(&n.name) {
                errs.push(format!("nodes[{i}].name"), format!("'{}' is not a valid name", n.name), "use 1-64 characters of [A-Za-z0-9_.-]");
            }
            if !names.insert(&n.name) {
                errs.push(format!("nodes[{i}].name"), format!("node '{}' is listed twice", n.name), "list each node once");
            }
            if n.address.is_unspecified() || n.address.is_broadcast() || n.address.is_multicast() {
                errs.push(
                    format!("nodes[{i}].address"),
                    format!("{} cannot be a VTEP address", n.address),
                    "use the node's unicast underlay address",
                );
            }
            if let Some(other) = addrs.insert(n.address, &n.name) {
                errs.push(
                    format!("nodes[{i}].address"),
                    format!("{} is also the address of node '{other}'", n.address),
                    "give every node its own underlay address",
                );
            }
        }
    }

    fn validate_networks(&self, errs: &mut Errors) {
        let mut names = HashSet::new();
        let mut vnis: HashMap<u32, &str> = HashMap::new();
        for (i, net) in self.networks.iter().enumerate() {
            let at = |f: &str| format!("networks[{i}].{f}");
            if !valid_name(&net.name) {
                errs.push(at("name"), format!("'{}' is not a valid network name", net.name), "use 1-64 characters of [A-Za-z0-9_.-]");
            }
            if !names.insert(&net.name) {
                errs.push(at("name"), format!("network '{}' is defined twice", net.name), "define each network once");
            }
            if net.vni == 0 || net.vni > VNI_MAX {
                errs.push(
                    at("vni"),
                    format!("{} is outside 1..{VNI_MAX}", net.vni),
                    "pick a VNI in 1..16777215 (shoal allocates from 4096)",
                );
            } else if let Some(other) = vnis.insert(net.vni, &net.name) {
                errs.push(at("vni"), format!("vni {} is already used by network '{other}'", net.vni), "give every network its own VNI");
            }
            let subnet = net.subnet.trunc();
            if subnet != net.subnet {
                errs.push(at("subnet"), format!("{} has host bits set", net.subnet), format!("write it as {subnet}"));
            }
            if net.subnet.prefix_len() > 30 {
                errs.push(at("subnet"), format!("{} is too small for tasks", net.subnet), "use a /30 or larger (a /24 is usual)");
            }
            for (j, other) in self.networks.iter().enumerate().take(i) {
                if subnet.contains(&other.subnet.network()) || other.subnet.trunc().contains(&subnet.network()) {
                    errs.push(
                        at("subnet"),
                        format!("{} overlaps {} of network '{}' (networks[{j}])", net.subnet, other.subnet, other.name),
                        "pick a subnet that overlaps no other network",
                    );
                }
            }
            for n in &self.nodes {
                if subnet.contains(&n.address) {
                    errs.push(
                        at("subnet"),
                        format!("{} contains the underlay address {} of node '{}'", net.subnet, n.address, n.name),
                        "pick a subnet outside the underlay",
                    );
                }
            }
            let gw = net.gateway();
            if !is_host_of(subnet, gw) {
                errs.push(
                    at("gateway"),
                    format!("{gw} is not a host address of {}", net.subnet),
                    "leave it unset (first host) or pick a host address inside the subnet",
                );
            }
            if let Some(mtu) = net.mtu {
                if mtu < MIN_MTU {
                    errs.push(
                        at("mtu"),
                        format!("{mtu} is below {MIN_MTU}, the smallest MTU IPv6 and most stacks accept"),
                        "leave it unset (underlay MTU - 50) or use 1280 or more",
                    );
                } else if mtu > 65_535 - VXLAN_OVERHEAD {
                    errs.push(at("mtu"), format!("{mtu} is too large"), "leave it unset (underlay MTU - 50)");
                }
            }
            if net.local && !net.lb_addresses.is_empty() {
                errs.push(
                    at("lb_addresses"),
                    format!("network '{}' is node-local: nothing is balanced through it", net.name),
                    "remove `lb_addresses` or `local`",
                );
            }
            let mut lb_ips = HashMap::new();
            for (node, ip) in &net.lb_addresses {
                let f = at(&format!("lb_addresses.{node}"));
                if !self.nodes.iter().any(|n| &n.name == node) {
                    errs.push(&f, format!("node '{node}' is not one of `nodes`"), "use a node name from `nodes`");
                }
                if !is_host_of(subnet, *ip) || *ip == gw {
                    errs.push(
                        &f,
                        format!("{ip} is not a free host address of {}", net.subnet),
                        "pick a host address of the subnet other than the gateway",
                    );
                }
                if let Some(other) = lb_ips.insert(*ip, node) {
                    errs.push(&f, format!("{ip} is also the address of node '{other}'"), "give every node its own address");
                }
            }
        }
    }

    fn validate_endpoints(&self, errs: &mut Errors) {
        let mut ids = HashSet::new();
        let mut ips: HashMap<(&str, Ipv4Addr), &str> = HashMap::new();
        let mut macs: HashMap<(&str, Mac), &str> = HashMap::new();
        let mut namespaces: HashMap<(&str, &str), &str> = HashMap::new();
        let mut per_ns: HashMap<&str, usize> = HashMap::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let at = |f: &str| format!("endpoints[{i}].{f}");
            if !valid_name(&ep.id) {
                errs.push(at("id"), format!("'{}' is not a valid endpoint id", ep.id), "use 1-64 characters of [A-Za-z0-9_.-]");
            }
            if !ids.insert(&ep.id) {
                errs.push(at("id"), format!("endpoint '{}' is listed twice", ep.id), "list each endpoint once");
            }
            if !self.nodes.iter().any(|n| n.name == ep.node) {
                errs.push(at("node"), format!("node '{}' is unknown", ep.node), "add the node to `nodes` or fix the endpoint's node");
            }
            match self.network(&ep.network) {
                None => errs.push(
                    at("network"),
                    format!("network '{}' is unknown", ep.network),
                    "add it to `networks` or fix the endpoint's network",
                ),
                Some(net) => {
                    let subnet = net.subnet.trunc();
                    if !is_host_of(subnet, ep.ip) {
                        errs.push(
                            at("ip"),
                            format!("{} is not a host address of {} (network '{}')", ep.ip, net.subnet, net.name),
                            "pick an address inside the network's subnet",
                        );
                    } else if ep.ip == net.gateway() {
                        errs.push(at("ip"), format!("{} is the gateway of network '{}'", ep.ip, net.name), "pick another address");
                    } else if let Some((node, _)) = net.lb_addresses.iter().find(|(_, ip)| **ip == ep.ip) {
                        errs.push(
                            at("ip"),
                            format!("{} is node '{node}''s address on network '{}'", ep.ip, net.name),
                            "pick another address",
                        );
                    }
                    if let Some(other) = ips.insert((ep.network.as_str(), ep.ip), &ep.id) {
                        errs.push(
                            at("ip"),
                            format!("{} is also used by endpoint '{other}' on network '{}'", ep.ip, ep.network),
                            "give every endpoint of a network its own address",
                        );
                    }
                    if let Some(other) = macs.insert((ep.network.as_str(), ep.mac()), &ep.id) {
                        errs.push(
                            at("mac"),
                            format!("{} is also used by endpoint '{other}'", ep.mac()),
                            "leave mac unset (derived from the IP) or make it unique",
                        );
                    }
                }
            }
            if ep.node == self.node {
                match &ep.netns {
                    None => errs.push(
                        at("netns"),
                        "an endpoint on this node needs a network namespace",
                        "set netns to the task's namespace name",
                    ),
                    Some(ns) => {
                        if netns::validate_name(ns).is_err() {
                            errs.push(
                                at("netns"),
                                format!("'{ns}' is not a valid namespace name"),
                                "use 1-64 characters of [A-Za-z0-9_.-]",
                            );
                        }
                        if let Some(other) = namespaces.insert((ns, ep.network.as_str()), &ep.id) {
                            errs.push(
                                at("netns"),
                                format!("namespace '{ns}' already has endpoint '{other}' on network '{}'", ep.network),
                                "a task joins each network once: one endpoint per network per namespace",
                            );
                        }
                        let n = per_ns.entry(ns).or_default();
                        *n += 1;
                        if *n == crate::overlay::names::MAX_TASK_IFACES + 1 {
                            errs.push(
                                at("netns"),
                                format!("namespace '{ns}' has more than {} endpoints", crate::overlay::names::MAX_TASK_IFACES),
                                "join at most 16 networks per task",
                            );
                        }
                    }
                }
            }
        }
    }
}

fn is_host_of(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}
