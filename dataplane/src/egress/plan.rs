//! The pure half of egress: which subnets get it, what the kernel's table says, and the nft
//! transaction that turns one into the other.

use std::collections::BTreeSet;
use std::fmt;

use ipnet::Ipv4Net;

use crate::overlay::names::BRIDGE_PREFIX;
use crate::state::DesiredNode;

pub const TABLE: &str = "shoal_egress";
const SET: &str = "subnets";
/// The comment of our one rule: a table whose rule lacks it (another version's) is replaced.
pub const RULE_TAG: &str = "shoal egress v1";

/// The subnets whose tasks get egress on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    pub subnets: BTreeSet<Ipv4Net>,
}

/// Every network of the node that is not internal: overlays, and the gateway bridge.
pub fn desired(state: &DesiredNode) -> Egress {
    Egress { subnets: state.networks.iter().filter(|n| !n.internal).map(|n| n.subnet.trunc()).collect() }
}

/// What the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Absent,
    Present {
        subnets: BTreeSet<Ipv4Net>,
        /// Our rule, as this version writes it, is there.
        rule: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressOp {
    /// Make the table anew with these subnets (one transaction: no moment without the rule).
    Replace(Egress),
    Delete,
}

impl fmt::Display for EgressOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressOp::Replace(e) => {
                let list: Vec<String> = e.subnets.iter().map(|s| s.to_string()).collect();
                write!(f, "egress: masquerade {} leaving the overlay", list.join(", "))
            }
            EgressOp::Delete => write!(f, "egress: remove table ip {TABLE}"),
        }
    }
}

/// None when the kernel already has what is wanted.
pub fn plan(want: &Egress, have: &Observed) -> Option<EgressOp> {
    match have {
        Observed::Absent if want.subnets.is_empty() => None,
        Observed::Present { .. } if want.subnets.is_empty() => Some(EgressOp::Delete),
        Observed::Present { subnets, rule: true } if *subnets == want.subnets => None,
        _ => Some(EgressOp::Replace(want.clone())),
    }
}

/// The `nft -f` script for `op`.
pub fn script(op: &EgressOp) -> String {
    // `add` then `delete` makes the delete succeed whether or not the table exists.
    let mut s = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
    if let EgressOp::Replace(e) = op {
        let elements: Vec<String> = e.subnets.iter().map(|n| n.to_string()).collect();
        s.push_str(&format!(
            "table ip {TABLE} {{\n\
             \tset {SET} {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {{ {} }}\n\t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr @{SET} oifname != \"{BRIDGE_PREFIX}*\" masquerade comment \"{RULE_TAG}\"\n\
             \t}}\n}}\n",
            elements.join(", ")
        ));
    }
    s
}

/// Reads `nft -j list table ip shoal_egress`.
pub fn parse(json: &serde_json::Value) -> Observed {
    let items = json["nftables"].as_array().cloned().unwrap_or_default();
    let mut subnets = BTreeSet::new();
    let mut rule = false;
    for item in &items {
        if item["set"]["name"] == SET {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                let net = match (&e["prefix"]["addr"], &e["prefix"]["len"], e.as_str()) {
                    (serde_json::Value::String(a), serde_json::Value::Number(l), _) => format!("{a}/{l}").parse().ok(),
                    (_, _, Some(single)) => format!("{single}/32").parse().ok(),
                    _ => None,
                };
                // Anything we cannot read (a range) makes the set differ: it is rewritten.
                subnets.insert(net.unwrap_or_default());
            }
        }
        if item["rule"]["chain"] == "postrouting" && item["rule"]["comment"] == RULE_TAG {
            rule = true;
        }
    }
    Observed::Present { subnets, rule }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn state(internal: bool) -> DesiredNode {
        serde_json::from_value(json!({
            "node": "a",
            "nodes": [{"name": "a", "address": "192.168.33.10"}],
            "networks": [
                {"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24"},
                {"name": "db", "vni": 4098, "subnet": "10.0.10.0/24", "internal": internal},
                {"name": "shoal_gwbridge", "vni": 4099, "subnet": "172.18.0.0/16", "local": true},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn every_network_but_internal_ones_gets_egress() {
        let want = desired(&state(true));
        assert_eq!(want.subnets, [net("10.0.9.0/24"), net("172.18.0.0/16")].into_iter().collect());
        assert_eq!(desired(&state(false)).subnets.len(), 3);
    }

    #[test]
    fn the_table_is_replaced_only_when_it_differs() {
        let want = desired(&state(true));
        assert_eq!(plan(&want, &Observed::Absent), Some(EgressOp::Replace(want.clone())));
        let same = Observed::Present { subnets: want.subnets.clone(), rule: true };
        assert_eq!(plan(&want, &same), None);
        let old_rule = Observed::Present { subnets: want.subnets.clone(), rule: false };
        assert_eq!(plan(&want, &old_rule), Some(EgressOp::Replace(want.clone())));
        let fewer = Observed::Present { subnets: [net("10.0.9.0/24")].into_iter().collect(), rule: true };
        assert_eq!(plan(&want, &fewer), Some(EgressOp::Replace(want.clone())));
        assert_eq!(plan(&Egress::default(), &same), Some(EgressOp::Delete));
        assert_eq!(plan(&Egress::default(), &Observed::Absent), None);
    }

    #[test]
    fn the_script_masquerades_only_what_leaves_the_overlay_bridges() {
        let s = script(&EgressOp::Replace(desired(&state(true))));
        assert!(s.starts_with("add table ip shoal_egress\ndelete table ip shoal_egress\n"), "{s}");
        assert!(s.contains("elements = { 10.0.9.0/24, 172.18.0.0/16 }"), "{s}");
        assert!(s.contains(r#"ip saddr @subnets oifname != "shb-*" masquerade comment "shoal egress v1""#), "{s}");
        assert!(s.contains("type nat hook postrouting priority srcnat"), "{s}");
        assert_eq!(script(&EgressOp::Delete), "add table ip shoal_egress\ndelete table ip shoal_egress\n");
    }

    #[test]
    fn what_nft_prints_reads_back() {
        let printed = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "shoal_egress", "handle": 1}},
            {"set": {"family": "ip", "name": "subnets", "table": "shoal_egress", "type": "ipv4_addr", "flags": ["interval"],
                     "elem": [{"prefix": {"addr": "10.0.9.0", "len": 24}}, {"prefix": {"addr": "172.18.0.0", "len": 16}}]}},
            {"chain": {"family": "ip", "table": "shoal_egress", "name": "postrouting"}},
            {"rule": {"family": "ip", "table": "shoal_egress", "chain": "postrouting", "handle": 3, "comment": "shoal egress v1", "expr": []}},
        ]});
        assert_eq!(parse(&printed), Observed::Present { subnets: desired(&state(true)).subnets, rule: true });
        let empty = json!({"nftables": [{"table": {"family": "ip", "name": "shoal_egress"}}]});
        assert_eq!(parse(&empty), Observed::Present { subnets: BTreeSet::new(), rule: false });
    }
}
