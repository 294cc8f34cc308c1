//! Reads table `ip shoal` from `nft -j list table` output into [`NftObserved`].

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;

use super::plan::{masq_set, parse_slot_map, NftObserved, TABLE};
use crate::lb::plan::{Kind, Proto, ServiceKey, ANY_PORT};

/// Why `nft -j` output could not be read (elements of another layout are skipped, not refused).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("nft -j output is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("nft -j output has no `nftables` array")]
    NoNftablesArray,
}

/// Parses the JSON listing of table `ip shoal`. Unknown objects are ignored; sets, maps and
/// chains of another layout are recorded by name (so the planner replaces them).
pub fn parse(json: &str) -> Result<NftObserved, ParseError> {
    let v: Value = serde_json::from_str(json).map_err(ParseError::NotJson)?;
    let items = v.get("nftables").and_then(Value::as_array).ok_or(ParseError::NoNftablesArray)?;
    let mut obs = NftObserved::default();
    for item in items {
        if let Some(t) = item.get("table") {
            obs.table |= t.get("name").and_then(Value::as_str) == Some(TABLE);
        } else if let Some(c) = item.get("chain") {
            if let Some(name) = c.get("name").and_then(Value::as_str) {
                obs.chains.entry(name.to_string()).or_default();
            }
        } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            let Some(name) = s.get("name").and_then(Value::as_str) else { continue };
            obs.sets.insert(name.to_string());
            let elems = s.get("elem").and_then(Value::as_array).into_iter().flatten();
            if let Some(kind) = [Kind::Published, Kind::Vip].into_iter().find(|k| name == masq_set(*k)) {
                obs.masq.extend(elems.filter_map(|e| Some((kind, frontend(kind, concat(e)?)?))));
            } else if let Some((kind, size)) = parse_slot_map(name) {
                for e in elems {
                    let Some((key, slot, to)) = slot_element(kind, e) else { continue };
                    obs.insert_slot((kind, key), size, slot, to);
                }
            }
        } else if let Some(r) = item.get("rule") {
            let Some(chain) = r.get("chain").and_then(Value::as_str) else { continue };
            let comment = r.get("comment").and_then(Value::as_str).unwrap_or_default();
            obs.chains.entry(chain.to_string()).or_default().push(comment.to_string());
        }
    }
    Ok(obs)
}

/// The parts of a `{"concat": [...]}` value (an element may also be wrapped in `{"elem": {"val": ...}}`).
fn concat(v: &Value) -> Option<&Vec<Value>> {
    let v = v.get("elem").and_then(|e| e.get("val")).unwrap_or(v);
    v.get("concat")?.as_array()
}

/// `[addr, proto, port]` for a published port, `[addr, proto]` for a VIP (every port).
fn frontend(kind: Kind, parts: &[Value]) -> Option<ServiceKey> {
    let addr: Ipv4Addr = parts.first()?.as_str()?.parse().ok()?;
    let proto = match parts.get(1)? {
        Value::String(s) if s == "tcp" => Proto::Tcp,
        Value::String(s) if s == "udp" => Proto::Udp,
        Value::Number(n) if n.as_u64() == Some(6) => Proto::Tcp,
        Value::Number(n) if n.as_u64() == Some(17) => Proto::Udp,
        _ => return None,
    };
    let port = match kind {
        Kind::Vip => ANY_PORT,
        Kind::Published => u16::try_from(parts.get(2)?.as_u64()?).ok()?,
    };
    Some(ServiceKey { addr, port, proto })
}

/// A published port's `[{"concat": [addr, proto, port, slot]}, {"concat": [addr, port]}]`, a
/// VIP's `[{"concat": [addr, proto, slot]}, addr]` (the backend's port is the client's).
fn slot_element(kind: Kind, e: &Value) -> Option<(ServiceKey, u32, SocketAddrV4)> {
    let key = concat(e.get(0)?)?;
    let fields = if kind == Kind::Vip { 2 } else { 3 };
    if key.len() != fields + 1 {
        return None;
    }
    let slot = u32::try_from(key.get(fields)?.as_u64()?).ok()?;
    let to = match kind {
        Kind::Vip => SocketAddrV4::new(e.get(1)?.as_str()?.parse().ok()?, ANY_PORT),
        Kind::Published => {
            let to = concat(e.get(1)?)?;
            let addr: Ipv4Addr = to.first()?.as_str()?.parse().ok()?;
            SocketAddrV4::new(addr, u16::try_from(to.get(1)?.as_u64()?).ok()?)
        }
    };
    Some((frontend(kind, key)?, slot, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as `nft -j list table ip shoal` (nftables 1.0.6) prints a table like ours: a VIP map
    /// and `masq_any` as it printed them for `typeof ip daddr . meta l4proto . numgen ... : ip
    /// daddr` and `type ipv4_addr . inet_proto`, a published map, and two maps of older layouts.
    const LISTING: &str = r#"{"nftables": [
{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "shoal", "handle": 1}},
{"map": {"family": "ip", "name": "vip_any_3", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "integer"], "handle": 1, "map": "ipv4_addr", "elem": [[{"concat": ["10.0.9.100", "tcp", 0]}, "10.0.9.2"], [{"concat": ["10.0.9.100", "udp", 2]}, "10.0.9.3"]]}},
{"map": {"family": "ip", "name": "pub_3", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service", "integer"], "handle": 2, "map": "ipv4_addr . inet_service", "elem": [[{"concat": ["192.168.33.10", "udp", 5353, 1]}, {"concat": ["10.0.9.3", 53]}]]}},
{"set": {"family": "ip", "name": "masq", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 3, "elem": [{"concat": ["192.168.33.10", "udp", 5353]}]}},
{"set": {"family": "ip", "name": "masq_any", "table": "shoal", "type": ["ipv4_addr", "inet_proto"], "handle": 4, "elem": [{"concat": ["10.0.9.100", "tcp"]}]}},
{"map": {"family": "ip", "name": "vips", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 5, "map": "verdict"}},
{"map": {"family": "ip", "name": "vip_3", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service", "integer"], "handle": 6, "map": "ipv4_addr . inet_service", "elem": [[{"concat": ["10.0.9.100", "tcp", 80, 0]}, {"concat": ["10.0.9.2", 80]}]]}},
{"chain": {"family": "ip", "table": "shoal", "name": "prerouting", "handle": 3, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
{"rule": {"family": "ip", "table": "shoal", "chain": "prerouting", "handle": 4, "comment": "shoal-mark", "expr": [{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@masq"}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 21248]}}}]}},
{"rule": {"family": "ip", "table": "shoal", "chain": "prerouting", "handle": 5, "comment": "shoal-vip_any_3", "expr": [{"dnat": {"addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"numgen": {"mode": "random", "mod": 3, "offset": 0}}]}, "data": "@vip_any_3"}}}}]}}
]}"#;

    #[test]
    fn parses_chains_rule_comments_sets_slots_and_masq() {
        let obs = parse(LISTING).unwrap();
        assert!(obs.table);
        assert_eq!(obs.chains["prerouting"], vec!["shoal-mark", "shoal-vip_any_3"]);
        assert_eq!(
            obs.sets.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["masq", "masq_any", "pub_3", "vip_3", "vip_any_3", "vips"]
        );
        let vip = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
        assert_eq!(obs.slots[&(Kind::Vip, vip)][&3][&0], "10.0.9.2:0".parse::<SocketAddrV4>().unwrap());
        let vip_udp = ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
        assert_eq!(obs.slots[&(Kind::Vip, vip_udp)][&3][&2], "10.0.9.3:0".parse::<SocketAddrV4>().unwrap());
        let dns = ServiceKey::udp(Ipv4Addr::new(192, 168, 33, 10), 5353);
        assert_eq!(obs.slots[&(Kind::Published, dns)][&3][&1], "10.0.9.3:53".parse::<SocketAddrV4>().unwrap());
        // the older port-keyed VIP map is named (so the table is replaced) but holds no slot of ours
        assert_eq!(obs.slots.len(), 3);
        assert_eq!(obs.udp_refs.keys().map(|a| a.to_string()).collect::<Vec<_>>(), vec!["10.0.9.3:0", "10.0.9.3:53"]);
        assert_eq!(obs.masq, [(Kind::Published, dns), (Kind::Vip, vip)].into_iter().collect());
        assert!(parse("{}").is_err());
    }
}
