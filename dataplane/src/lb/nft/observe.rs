//! Reads table `ip shoal` from `nft -j list table` output into [`NftObserved`].

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;

use super::plan::{parse_slot_map, NftObserved, MASQ_SET, TABLE};
use crate::lb::plan::{Proto, ServiceKey};

/// Parses the JSON listing of table `ip shoal`. Unknown objects are ignored; sets, maps and
/// chains of another layout are recorded by name (so the planner replaces them).
pub fn parse(json: &str) -> Result<NftObserved, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("nft -j output is not JSON: {e}"))?;
    let items = v.get("nftables").and_then(Value::as_array).ok_or("nft -j output has no `nftables` array")?;
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
            if name == MASQ_SET {
                obs.masq.extend(elems.filter_map(|e| frontend(concat(e)?)));
            } else if let Some((kind, size)) = parse_slot_map(name) {
                for e in elems {
                    let Some((key, slot, to)) = slot_element(e) else { continue };
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

fn frontend(parts: &[Value]) -> Option<ServiceKey> {
    let addr: Ipv4Addr = parts.first()?.as_str()?.parse().ok()?;
    let proto = match parts.get(1)? {
        Value::String(s) if s == "tcp" => Proto::Tcp,
        Value::String(s) if s == "udp" => Proto::Udp,
        Value::Number(n) if n.as_u64() == Some(6) => Proto::Tcp,
        Value::Number(n) if n.as_u64() == Some(17) => Proto::Udp,
        _ => return None,
    };
    let port = u16::try_from(parts.get(2)?.as_u64()?).ok()?;
    Some(ServiceKey { addr, port, proto })
}

/// `[{"concat": [addr, proto, port, slot]}, {"concat": [addr, port]}]`.
fn slot_element(e: &Value) -> Option<(ServiceKey, u32, SocketAddrV4)> {
    let key = concat(e.get(0)?)?;
    let slot = u32::try_from(key.get(3)?.as_u64()?).ok()?;
    let to = concat(e.get(1)?)?;
    let addr: Ipv4Addr = to.first()?.as_str()?.parse().ok()?;
    let port = u16::try_from(to.get(1)?.as_u64()?).ok()?;
    Some((frontend(key)?, slot, SocketAddrV4::new(addr, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::plan::Kind;

    /// Captured from `nft -j list table ip shoal` (nftables 1.0.6) after a batch like ours.
    const LISTING: &str = r#"{"nftables": [
{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "shoal", "handle": 1}},
{"map": {"family": "ip", "name": "vip_3", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service", "integer"], "handle": 1, "map": "ipv4_addr . inet_service", "elem": [[{"concat": ["10.0.9.100", "tcp", 80, 0]}, {"concat": ["10.0.9.2", 80]}], [{"concat": ["10.0.9.100", "udp", 53, 2]}, {"concat": ["10.0.9.3", 53]}]]}},
{"set": {"family": "ip", "name": "masq", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2, "elem": [{"concat": ["10.0.9.100", "tcp", 80]}]}},
{"map": {"family": "ip", "name": "vips", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 5, "map": "verdict"}},
{"chain": {"family": "ip", "table": "shoal", "name": "prerouting", "handle": 3, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
{"rule": {"family": "ip", "table": "shoal", "chain": "prerouting", "handle": 4, "comment": "shoal-mark", "expr": [{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "right": "@masq"}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 21248]}}}]}},
{"rule": {"family": "ip", "table": "shoal", "chain": "prerouting", "handle": 5, "comment": "shoal-vip_3", "expr": [{"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}, {"numgen": {"mode": "random", "mod": 3, "offset": 0}}]}, "data": "@vip_3"}}}}]}}
]}"#;

    #[test]
    fn parses_chains_rule_comments_sets_slots_and_masq() {
        let obs = parse(LISTING).unwrap();
        assert!(obs.table);
        assert_eq!(obs.chains["prerouting"], vec!["shoal-mark", "shoal-vip_3"]);
        assert_eq!(obs.sets.iter().map(String::as_str).collect::<Vec<_>>(), vec!["masq", "vip_3", "vips"]);
        let vip80 = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), 80);
        assert_eq!(obs.slots[&(Kind::Vip, vip80)][&3][&0], "10.0.9.2:80".parse::<SocketAddrV4>().unwrap());
        let vip53 = ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), 53);
        assert_eq!(obs.slots[&(Kind::Vip, vip53)][&3][&2], "10.0.9.3:53".parse::<SocketAddrV4>().unwrap());
        assert_eq!(obs.udp_refs.len(), 1);
        assert!(obs.masq.contains(&vip80));
        assert!(parse("{}").is_err());
    }
}
