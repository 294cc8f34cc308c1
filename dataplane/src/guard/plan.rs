//! The pure half of the guard: which (VTEP, VNI) pairs and control ports, what the kernel's table
//! says, and the nft transaction that turns one into the other.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use crate::overlay::names::BRIDGE_PREFIX;
use crate::state::{DesiredNode, VXLAN_PORT};

pub const TABLE: &str = "shoal_guard";
const SET: &str = "vteps";
/// The start of our rule's comment; the digest of the content follows.
const RULE_TAG: &str = "shoal guard v1";

/// The node's own control ports, which its tasks must not reach (the daemon knows them; the
/// desired data plane does not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlPorts {
    pub tcp: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
}

/// What the table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// (source VTEP, VNI) pairs whose VXLAN packets this node accepts.
    pub vteps: BTreeSet<(Ipv4Addr, u32)>,
    pub control: ControlPorts,
}

impl Guard {
    /// A digest of the whole content, kept in the rule's comment.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (ip, vni) in &self.vteps {
            h.update(format!("{ip}.{vni};"));
        }
        h.update(format!("tcp{:?}udp{:?}", self.control.tcp, self.control.udp));
        h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// The peers of each overlay network this node is on (nodes that balance on it, and nodes with
/// endpoints on it, as the overlay planner programs them), at their VTEP: the underlay address,
/// or the WireGuard address for an encrypted network (whose VXLAN runs inside the tunnels).
pub fn desired(state: &DesiredNode, ports: &ControlPorts) -> Guard {
    let vtep_of = |name: &str, encrypted: bool| {
        let node = state.nodes.iter().find(|n| n.name == name)?;
        if encrypted {
            node.wireguard.as_ref().map(|w| w.address)
        } else {
            Some(node.address)
        }
    };
    let mut vteps = BTreeSet::new();
    for net in state.networks.iter().filter(|n| !n.local) {
        let encrypted = net.encrypted.is_some();
        let peers = net
            .lb_addresses
            .keys()
            .map(String::as_str)
            .chain(state.endpoints.iter().filter(|e| e.network == net.name).map(|e| e.node.as_str()))
            .filter(|node| *node != state.node);
        for node in peers {
            if let Some(vtep) = vtep_of(node, encrypted) {
                vteps.insert((vtep, net.vni));
            }
        }
    }
    Guard { vteps, control: ports.clone() }
}

/// What the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Absent,
    /// The digest our rule's comment carries (None: no rule of ours, another version's table).
    Present {
        digest: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardOp {
    /// Make the table anew (one transaction: never a moment without the rules).
    Replace(Guard),
    Delete,
}

impl fmt::Display for GuardOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardOp::Replace(g) => write!(
                f,
                "guard: VXLAN from {} peer VTEP/VNI pairs only; tasks kept off control ports tcp {:?} udp {:?}",
                g.vteps.len(),
                g.control.tcp,
                g.control.udp
            ),
            GuardOp::Delete => write!(f, "guard: remove table ip {TABLE}"),
        }
    }
}

/// None when the kernel already holds `want`. The table stays even with no peers: then no
/// VXLAN packet is legitimate here.
pub fn plan(want: &Guard, have: &Observed) -> Option<GuardOp> {
    match have {
        Observed::Present { digest: Some(d) } if *d == want.digest() => None,
        _ => Some(GuardOp::Replace(want.clone())),
    }
}

fn port_set(ports: &BTreeSet<u16>) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// The `nft -f` script for `op`.
pub fn script(op: &GuardOp) -> String {
    // `add` then `delete` makes the delete succeed whether or not the table exists.
    let mut s = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
    let GuardOp::Replace(g) = op else { return s };
    let elements: Vec<String> = g.vteps.iter().map(|(ip, vni)| format!("{ip} . {vni}")).collect();
    let elements = if elements.is_empty() { String::new() } else { format!("\t\telements = {{ {} }}\n", elements.join(", ")) };
    let tag = format!("{RULE_TAG} {}", g.digest());
    // The VNI is the 24 bits after the VXLAN flags and reserved bytes: transport header bit 96.
    s.push_str(&format!(
        "table ip {TABLE} {{\n\
         \tset {SET} {{\n\t\ttypeof ip saddr . @th,96,24\n{elements}\t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority -200; policy accept;\n\
         \t\tudp dport {VXLAN_PORT} ip saddr . @th,96,24 != @{SET} counter drop comment \"{tag}\"\n"
    ));
    for (proto, ports) in [("tcp", &g.control.tcp), ("udp", &g.control.udp)] {
        if !ports.is_empty() {
            s.push_str(&format!(
                "\t\tiifname \"{BRIDGE_PREFIX}*\" fib daddr type local {proto} dport {{ {} }} counter drop\n",
                port_set(ports)
            ));
        }
    }
    s.push_str("\t}\n}\n");
    s
}

/// Reads `nft -j list table ip shoal_guard`: the digest in our rule's comment.
pub fn parse(json: &serde_json::Value) -> Observed {
    let digest = json["nftables"].as_array().into_iter().flatten().find_map(|item| {
        let comment = item["rule"]["comment"].as_str()?;
        comment.strip_prefix(RULE_TAG).map(|d| d.trim().to_string())
    });
    Observed::Present { digest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state() -> DesiredNode {
        serde_json::from_value(json!({
            "node": "a",
            "nodes": [
                {"name": "a", "address": "192.168.33.10"},
                {"name": "b", "address": "192.168.33.20"},
                {"name": "c", "address": "192.168.33.30"},
            ],
            "networks": [
                {"name": "ingress", "vni": 4096, "subnet": "10.0.0.0/24",
                 "lb_addresses": {"a": "10.0.0.2", "b": "10.0.0.3", "c": "10.0.0.4"}},
                {"name": "backend", "vni": 4097, "subnet": "10.0.1.0/24", "lb_addresses": {"a": "10.0.1.2"}},
                {"name": "shoal_gwbridge", "vni": 4099, "subnet": "172.18.0.0/16", "local": true},
            ],
            "endpoints": [
                {"id": "t1", "network": "backend", "node": "b", "ip": "10.0.1.5"},
                {"id": "t2", "network": "backend", "node": "a", "ip": "10.0.1.6", "netns": "x"},
            ],
        }))
        .unwrap()
    }

    fn ports() -> ControlPorts {
        ControlPorts { tcp: [2377].into_iter().collect(), udp: [7946].into_iter().collect() }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn each_peer_is_accepted_only_for_the_vnis_it_shares_with_this_node() {
        let g = desired(&state(), &ports());
        let want: BTreeSet<(Ipv4Addr, u32)> =
            [(ip("192.168.33.20"), 4096), (ip("192.168.33.30"), 4096), (ip("192.168.33.20"), 4097)].into_iter().collect();
        assert_eq!(g.vteps, want, "c has nothing on backend; the gateway bridge and this node are never VTEPs");
    }

    #[test]
    fn the_table_is_replaced_only_when_its_content_differs() {
        let g = desired(&state(), &ports());
        assert_eq!(plan(&g, &Observed::Absent), Some(GuardOp::Replace(g.clone())));
        assert_eq!(plan(&g, &Observed::Present { digest: Some(g.digest()) }), None);
        assert_eq!(plan(&g, &Observed::Present { digest: None }), Some(GuardOp::Replace(g.clone())));
        let mut fewer = g.clone();
        fewer.vteps.pop_first();
        assert_ne!(fewer.digest(), g.digest());
        assert_eq!(plan(&fewer, &Observed::Present { digest: Some(g.digest()) }), Some(GuardOp::Replace(fewer.clone())));
        let mut other_ports = g.clone();
        other_ports.control.tcp.insert(2378);
        assert_ne!(other_ports.digest(), g.digest());
    }

    #[test]
    fn the_script_drops_foreign_vxlan_and_tasks_reaching_control_ports() {
        let g = desired(&state(), &ports());
        let s = script(&GuardOp::Replace(g.clone()));
        assert!(s.starts_with("add table ip shoal_guard\ndelete table ip shoal_guard\n"), "{s}");
        assert!(s.contains("typeof ip saddr . @th,96,24"), "{s}");
        assert!(s.contains("elements = { 192.168.33.20 . 4096, 192.168.33.20 . 4097, 192.168.33.30 . 4096 }"), "{s}");
        assert!(
            s.contains(&format!("udp dport 4789 ip saddr . @th,96,24 != @vteps counter drop comment \"shoal guard v1 {}\"", g.digest())),
            "{s}"
        );
        assert!(s.contains(r#"iifname "shb-*" fib daddr type local tcp dport { 2377 } counter drop"#), "{s}");
        assert!(s.contains(r#"iifname "shb-*" fib daddr type local udp dport { 7946 } counter drop"#), "{s}");
        let lonely = script(&GuardOp::Replace(Guard::default()));
        assert!(!lonely.contains("elements") && lonely.contains("!= @vteps"), "no peers: every VXLAN packet is dropped\n{lonely}");
        assert_eq!(script(&GuardOp::Delete), "add table ip shoal_guard\ndelete table ip shoal_guard\n");
    }

    #[test]
    fn what_nft_prints_reads_back() {
        let printed = json!({"nftables": [
            {"table": {"family": "ip", "name": "shoal_guard"}},
            {"rule": {"family": "ip", "table": "shoal_guard", "chain": "input", "comment": "shoal guard v1 0011223344556677", "expr": []}},
        ]});
        assert_eq!(parse(&printed), Observed::Present { digest: Some("0011223344556677".into()) });
        let foreign = json!({"nftables": [{"table": {"family": "ip", "name": "shoal_guard"}}]});
        assert_eq!(parse(&foreign), Observed::Present { digest: None });
    }
}
