//! The nftables table the IPVS balancer owns (pure): its lines in `nft -f` syntax, and what
//! `nft -j list table ip shoal_ipvs` says it holds.
//!
//! ```text
//! table ip shoal_ipvs
//!   map vips_any   { ipv4_addr . inet_proto : mark }                  VIP (every port) -> fwmark
//!   map published  { ipv4_addr . inet_proto . inet_service : mark }   node:port -> fwmark
//!   set snat_marks { mark }                                            fwmarks whose flows are SNATed
//!   chain prerouting  (filter, mangle)  meta mark set ip daddr . meta l4proto map @vips_any
//!                                       meta mark set ip daddr . meta l4proto . th dport map @published
//!   chain postrouting (nat, srcnat)     meta mark @snat_marks jump mesh_snat
//!   chain mesh_snat                     oifname "shb-<vni>" snat to <node LB address>
//!   chain unmark (filter, srcnat + 10)  meta mark 0x5e000000/8 meta mark set 0
//! ```
//! `unmark` clears the mark once SNAT was decided: VXLAN encapsulates the same socket buffer,
//! mark included, and IPVS' LOCAL_OUT hook would otherwise balance the outer UDP packet too.
//!
//! A VIP carries every port: it is marked on its address and protocol alone, and its fwmark
//! service's destinations have port 0, which IPVS reads as "the packet's own port" (Docker's
//! VIPs work so). Sets of other layouts (the port-keyed `vips` map before) are deleted once
//! the rules that use them are rewritten, in the same transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::plan::{MARK_TAG, MARK_TAG_MASK};
use crate::lb::plan::{Kind, Proto, ServiceKey, ANY_PORT};

pub const TABLE: &str = "shoal_ipvs";
pub const SNAT_SET: &str = "snat_marks";
/// (`snat` is a keyword of nft's grammar.)
pub const SNAT_CHAIN: &str = "mesh_snat";
pub const PREROUTING: &str = "prerouting";
pub const POSTROUTING: &str = "postrouting";
pub const UNMARK: &str = "unmark";
/// The base chains, in the order they are made.
pub const BASE_CHAINS: [&str; 3] = [PREROUTING, POSTROUTING, UNMARK];

/// What the kernel holds in table `ip shoal_ipvs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableObserved {
    pub present: bool,
    /// Names of its maps and sets.
    pub sets: BTreeSet<String>,
    /// Chain -> the comments of its rules, in order ("" for a rule without one).
    pub chains: BTreeMap<String, Vec<String>>,
    /// Frontend -> its fwmark (map elements).
    pub elements: BTreeMap<(Kind, ServiceKey), u32>,
    pub snat_marks: BTreeSet<u32>,
}

/// One line of an `nft -f` batch; a batch is one kernel transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftLine {
    AddTable,
    AddMap(Kind),
    AddSnatSet,
    /// One of [`BASE_CHAINS`].
    AddBaseChain(&'static str),
    AddChain(&'static str),
    FlushChain(&'static str),
    AddRule {
        chain: &'static str,
        rule: String,
        comment: String,
    },
    AddElement {
        kind: Kind,
        key: ServiceKey,
        mark: u32,
    },
    DeleteElement {
        kind: Kind,
        key: ServiceKey,
    },
    AddSnatMark(u32),
    DeleteSnatMark(u32),
    /// A map or set this layout does not use.
    DeleteSet(String),
    DeleteTable,
}

pub fn map_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Vip => "vips_any",
        Kind::Published => "published",
    }
}

/// A frontend as its map keys it: a VIP without a port (it carries every one).
fn element(kind: Kind, key: &ServiceKey) -> String {
    match kind {
        Kind::Vip => format!("{} . {}", key.addr, key.proto),
        Kind::Published => format!("{} . {} . {}", key.addr, key.proto, key.port),
    }
}

impl fmt::Display for NftLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NftLine::AddTable => write!(f, "add table ip {TABLE}"),
            NftLine::DeleteTable => write!(f, "delete table ip {TABLE}"),
            NftLine::AddMap(Kind::Vip) => {
                write!(f, "add map ip {TABLE} {} {{ type ipv4_addr . inet_proto : mark ; }}", map_name(Kind::Vip))
            }
            NftLine::AddMap(Kind::Published) => {
                write!(f, "add map ip {TABLE} {} {{ type ipv4_addr . inet_proto . inet_service : mark ; }}", map_name(Kind::Published))
            }
            NftLine::AddSnatSet => write!(f, "add set ip {TABLE} {SNAT_SET} {{ type mark ; }}"),
            NftLine::AddBaseChain(name) => {
                let (kind, hook, prio) = match *name {
                    PREROUTING => ("filter", PREROUTING, "mangle"),
                    UNMARK => ("filter", POSTROUTING, "srcnat + 10"),
                    _ => ("nat", POSTROUTING, "srcnat"),
                };
                write!(f, "add chain ip {TABLE} {name} {{ type {kind} hook {hook} priority {prio} ; policy accept ; }}")
            }
            NftLine::AddChain(c) => write!(f, "add chain ip {TABLE} {c}"),
            NftLine::FlushChain(c) => write!(f, "flush chain ip {TABLE} {c}"),
            NftLine::AddRule { chain, rule, comment } => write!(f, "add rule ip {TABLE} {chain} {rule} comment \"{comment}\""),
            NftLine::AddElement { kind, key, mark } => {
                write!(f, "add element ip {TABLE} {} {{ {} : {mark:#010x} }}", map_name(*kind), element(*kind, key))
            }
            NftLine::DeleteElement { kind, key } => {
                write!(f, "delete element ip {TABLE} {} {{ {} }}", map_name(*kind), element(*kind, key))
            }
            NftLine::AddSnatMark(m) => write!(f, "add element ip {TABLE} {SNAT_SET} {{ {m:#010x} }}"),
            NftLine::DeleteSnatMark(m) => write!(f, "delete element ip {TABLE} {SNAT_SET} {{ {m:#010x} }}"),
            NftLine::DeleteSet(name) => write!(f, "delete set ip {TABLE} {name}"),
        }
    }
}

/// The rules of the base chains, as (comment, rule).
pub fn base_rules(chain: &str) -> Vec<(&'static str, String)> {
    if chain == PREROUTING {
        vec![
            ("shoal-vips-any", format!("meta mark set ip daddr . meta l4proto map @{}", map_name(Kind::Vip))),
            ("shoal-published", format!("meta mark set ip daddr . meta l4proto . th dport map @{}", map_name(Kind::Published))),
        ]
    } else if chain == UNMARK {
        vec![("shoal-unmark", format!("meta mark & {MARK_TAG_MASK:#x} == {MARK_TAG:#x} meta mark set 0"))]
    } else {
        vec![("shoal-snat", format!("meta mark @{SNAT_SET} jump {SNAT_CHAIN}"))]
    }
}

impl TableObserved {
    /// The model after `lines` were committed.
    pub fn apply(&mut self, lines: &[NftLine]) {
        for l in lines {
            match l {
                NftLine::AddTable => self.present = true,
                NftLine::DeleteTable => *self = TableObserved::default(),
                NftLine::AddMap(kind) => {
                    self.sets.insert(map_name(*kind).to_string());
                }
                NftLine::AddSnatSet => {
                    self.sets.insert(SNAT_SET.to_string());
                }
                NftLine::AddBaseChain(c) | NftLine::AddChain(c) => {
                    self.chains.entry(c.to_string()).or_default();
                }
                NftLine::FlushChain(c) => {
                    self.chains.insert(c.to_string(), vec![]);
                }
                NftLine::AddRule { chain, comment, .. } => self.chains.entry(chain.to_string()).or_default().push(comment.clone()),
                NftLine::AddElement { kind, key, mark } => {
                    self.elements.insert((*kind, *key), *mark);
                }
                NftLine::DeleteElement { kind, key } => {
                    self.elements.remove(&(*kind, *key));
                }
                NftLine::AddSnatMark(m) => {
                    self.snat_marks.insert(*m);
                }
                NftLine::DeleteSnatMark(m) => {
                    self.snat_marks.remove(m);
                }
                NftLine::DeleteSet(name) => {
                    self.sets.remove(name);
                }
            }
        }
    }
}

fn proto(v: &Value) -> Option<Proto> {
    match v {
        Value::String(s) if s == "tcp" => Some(Proto::Tcp),
        Value::String(s) if s == "udp" => Some(Proto::Udp),
        Value::Number(n) if n.as_u64() == Some(6) => Some(Proto::Tcp),
        Value::Number(n) if n.as_u64() == Some(17) => Some(Proto::Udp),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.strip_prefix("0x").map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok()),
        _ => None,
    }
}

/// An element, bare or wrapped as `{"elem": {"val": ...}}` (when it carries options).
fn unwrap_elem(v: &Value) -> &Value {
    v.get("elem").and_then(|e| e.get("val")).unwrap_or(v)
}

/// Why `nft -j list table ip shoal_ipvs` could not be read, naming the object that did not fit.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("nft -j printed what is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("no \"nftables\" array")]
    NoNftablesArray,
    #[error("element key {key} is not a concatenation")]
    KeyNotConcat { key: Value },
    #[error("element key {key} is not {}", match .kind { Kind::Vip => "address . protocol", Kind::Published => "address . protocol . port" })]
    KeyShape { kind: Kind, key: Value },
    #[error("map {map}: element {element} is not [key, mark]")]
    NotAPair { map: String, element: Value },
    #[error("{container}: {value} is not a mark")]
    NotAMark { container: String, value: Value },
}

/// `address . protocol . port` of a published port, `address . protocol` of a VIP (every port).
fn frontend(kind: Kind, key: &Value) -> Result<ServiceKey, ParseError> {
    let parts = unwrap_elem(key).get("concat").and_then(Value::as_array).ok_or_else(|| ParseError::KeyNotConcat { key: key.clone() })?;
    let bad = || ParseError::KeyShape { kind, key: key.clone() };
    let (addr, p, port) = match (kind, parts.as_slice()) {
        (Kind::Vip, [addr, p]) => (addr, p, ANY_PORT),
        (Kind::Published, [addr, p, port]) => (addr, p, number(port).and_then(|n| u16::try_from(n).ok()).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    Ok(ServiceKey { addr: addr.as_str().and_then(|a| a.parse().ok()).ok_or_else(bad)?, proto: proto(p).ok_or_else(bad)?, port })
}

/// Parses `nft -j list table ip shoal_ipvs`.
pub fn parse(json: &str) -> Result<TableObserved, ParseError> {
    let v: Value = serde_json::from_str(json).map_err(ParseError::NotJson)?;
    let mut t = TableObserved::default();
    let items = v.get("nftables").and_then(Value::as_array).ok_or(ParseError::NoNftablesArray)?;
    let ours = |o: &Value| o.get("table").and_then(Value::as_str) == Some(TABLE);
    for item in items {
        if let Some(o) = item.get("table") {
            if o.get("name").and_then(Value::as_str) == Some(TABLE) {
                t.present = true;
            }
        } else if let Some(o) = item.get("map").or_else(|| item.get("set")).filter(|o| ours(o)) {
            let name = o.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let elems = o.get("elem").and_then(Value::as_array).cloned().unwrap_or_default();
            let kind = [Kind::Vip, Kind::Published].into_iter().find(|k| name == map_name(*k));
            for e in &elems {
                if let Some(kind) = kind {
                    let pair = e
                        .as_array()
                        .filter(|p| p.len() == 2)
                        .ok_or_else(|| ParseError::NotAPair { map: name.clone(), element: e.clone() })?;
                    let mark = number(&pair[1])
                        .and_then(|m| u32::try_from(m).ok())
                        .ok_or_else(|| ParseError::NotAMark { container: format!("map {name}"), value: pair[1].clone() })?;
                    t.elements.insert((kind, frontend(kind, &pair[0])?), mark);
                } else if name == SNAT_SET {
                    let mark = number(unwrap_elem(e))
                        .and_then(|m| u32::try_from(m).ok())
                        .ok_or_else(|| ParseError::NotAMark { container: format!("set {name}"), value: e.clone() })?;
                    t.snat_marks.insert(mark);
                }
            }
            t.sets.insert(name);
        } else if let Some(o) = item.get("chain").filter(|o| ours(o)) {
            let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
            t.chains.entry(name.to_string()).or_default();
        } else if let Some(o) = item.get("rule").filter(|o| ours(o)) {
            let chain = o.get("chain").and_then(Value::as_str).unwrap_or_default();
            let comment = o.get("comment").and_then(Value::as_str).unwrap_or_default();
            t.chains.entry(chain.to_string()).or_default().push(comment.to_string());
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Shaped as nft 1.0.6 prints a table made with these lines (the VIP map's type and element
    /// as it printed them for `type ipv4_addr . inet_proto : mark`).
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "shoal_ipvs", "handle": 1}},
      {"map": {"family": "ip", "name": "vips_any", "table": "shoal_ipvs", "type": ["ipv4_addr", "inet_proto"], "handle": 4, "map": "mark",
               "elem": [[{"concat": ["10.0.9.100", "tcp"]}, 1577062964]]}},
      {"map": {"family": "ip", "name": "published", "table": "shoal_ipvs", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 5, "map": "mark"}},
      {"set": {"family": "ip", "name": "snat_marks", "table": "shoal_ipvs", "type": "mark", "handle": 6, "elem": [1577062964]}},
      {"chain": {"family": "ip", "table": "shoal_ipvs", "name": "prerouting", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
      {"chain": {"family": "ip", "table": "shoal_ipvs", "name": "mesh_snat", "handle": 2}},
      {"chain": {"family": "ip", "table": "shoal_ipvs", "name": "postrouting", "handle": 3, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "shoal_ipvs", "chain": "prerouting", "handle": 7, "comment": "shoal-vips-any", "expr": []}},
      {"rule": {"family": "ip", "table": "shoal_ipvs", "chain": "prerouting", "handle": 8, "comment": "shoal-published", "expr": []}},
      {"rule": {"family": "ip", "table": "shoal_ipvs", "chain": "mesh_snat", "handle": 9, "comment": "snat shb-4097 10.0.9.250", "expr": []}},
      {"rule": {"family": "ip", "table": "shoal_ipvs", "chain": "postrouting", "handle": 10, "comment": "shoal-snat", "expr": []}}]}"#;

    #[test]
    fn a_listed_table_reads_back_as_its_lines_built_it() {
        let key = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
        let parsed = parse(LISTED).unwrap();
        let mut built = TableObserved::default();
        let mut lines = vec![NftLine::AddTable, NftLine::AddMap(Kind::Vip), NftLine::AddMap(Kind::Published), NftLine::AddSnatSet];
        lines.push(NftLine::AddBaseChain(PREROUTING));
        for (comment, rule) in base_rules(PREROUTING) {
            lines.push(NftLine::AddRule { chain: PREROUTING, rule, comment: comment.into() });
        }
        lines.push(NftLine::AddChain(SNAT_CHAIN));
        lines.push(NftLine::AddRule {
            chain: SNAT_CHAIN,
            rule: "oifname \"shb-4097\" snat to 10.0.9.250".into(),
            comment: "snat shb-4097 10.0.9.250".into(),
        });
        lines.push(NftLine::AddBaseChain(POSTROUTING));
        for (comment, rule) in base_rules(POSTROUTING) {
            lines.push(NftLine::AddRule { chain: POSTROUTING, rule, comment: comment.into() });
        }
        lines.push(NftLine::AddElement { kind: Kind::Vip, key, mark: 1_577_062_964 });
        lines.push(NftLine::AddSnatMark(1_577_062_964));
        built.apply(&lines);
        assert_eq!(parsed, built);
        assert_eq!(parse(r#"{"nftables": []}"#).unwrap(), TableObserved::default());
        assert!(parse("Error").is_err());
    }

    #[test]
    fn lines_are_nft_syntax() {
        let key = ServiceKey::udp(Ipv4Addr::new(192, 168, 33, 10), 5000);
        assert_eq!(
            NftLine::AddElement { kind: Kind::Published, key, mark: 0x5e00_0042 }.to_string(),
            "add element ip shoal_ipvs published { 192.168.33.10 . udp . 5000 : 0x5e000042 }"
        );
        assert_eq!(NftLine::DeleteSnatMark(0x5e00_0042).to_string(), "delete element ip shoal_ipvs snat_marks { 0x5e000042 }");
        let vip = ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
        assert_eq!(
            NftLine::AddElement { kind: Kind::Vip, key: vip, mark: 0x5e00_0043 }.to_string(),
            "add element ip shoal_ipvs vips_any { 10.0.9.100 . udp : 0x5e000043 }"
        );
        assert_eq!(NftLine::AddMap(Kind::Vip).to_string(), "add map ip shoal_ipvs vips_any { type ipv4_addr . inet_proto : mark ; }");
        assert_eq!(base_rules(PREROUTING)[0].1, "meta mark set ip daddr . meta l4proto map @vips_any");
        assert_eq!(NftLine::DeleteSet("vips".into()).to_string(), "delete set ip shoal_ipvs vips");
        assert_eq!(
            NftLine::AddBaseChain(PREROUTING).to_string(),
            "add chain ip shoal_ipvs prerouting { type filter hook prerouting priority mangle ; policy accept ; }"
        );
        assert_eq!(
            NftLine::AddBaseChain(POSTROUTING).to_string(),
            "add chain ip shoal_ipvs postrouting { type nat hook postrouting priority srcnat ; policy accept ; }"
        );
        assert_eq!(
            NftLine::AddBaseChain(UNMARK).to_string(),
            "add chain ip shoal_ipvs unmark { type filter hook postrouting priority srcnat + 10 ; policy accept ; }"
        );
        assert_eq!(base_rules(UNMARK)[0].1, "meta mark & 0xff000000 == 0x5e000000 meta mark set 0");
    }

    #[test]
    fn elements_with_options_and_numeric_protocols_parse() {
        let json = r#"{"nftables": [{"table": {"family": "ip", "name": "shoal_ipvs"}},
          {"map": {"family": "ip", "name": "published", "table": "shoal_ipvs",
                   "elem": [[{"elem": {"val": {"concat": ["192.168.33.10", 17, 5000]}, "comment": "x"}}, "0x5e000001"]]}},
          {"set": {"family": "ip", "name": "snat_marks", "table": "shoal_ipvs", "elem": [{"elem": {"val": 7}}]}}]}"#;
        let t = parse(json).unwrap();
        assert_eq!(t.elements[&(Kind::Published, ServiceKey::udp(Ipv4Addr::new(192, 168, 33, 10), 5000))], 0x5e00_0001);
        assert!(t.snat_marks.contains(&7));
        let bad = r#"{"nftables": [{"map": {"name": "published", "table": "shoal_ipvs", "elem": [[{"concat": ["x", "tcp", 80]}, 1]]}}]}"#;
        assert!(parse(bad).unwrap_err().to_string().contains("address . protocol . port"));
        let bad =
            r#"{"nftables": [{"map": {"name": "vips_any", "table": "shoal_ipvs", "elem": [[{"concat": ["10.0.9.100", "tcp", 80]}, 1]]}}]}"#;
        assert!(parse(bad).unwrap_err().to_string().contains("is not address . protocol"));
        // the port-keyed map of the layout before: named (so it is deleted), its elements not ours
        let old =
            r#"{"nftables": [{"map": {"name": "vips", "table": "shoal_ipvs", "elem": [[{"concat": ["10.0.9.100", "tcp", 80]}, 1]]}}]}"#;
        let t = parse(old).unwrap();
        assert!(t.sets.contains("vips") && t.elements.is_empty());
    }
}
