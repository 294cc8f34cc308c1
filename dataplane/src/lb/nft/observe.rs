//! Reads table `ip shoal` from `nft -j list table` output into [`NftObserved`].

use std::net::Ipv4Addr;

use serde_json::Value;

use super::plan::{NftObserved, TABLE};
use crate::lb::plan::{Kind, Proto, ServiceKey};

/// Parses the JSON listing of table `ip shoal`. Unknown objects are ignored.
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
        } else if let Some(m) = item.get("map") {
            let kind = match m.get("name").and_then(Value::as_str) {
                Some("vips") => Kind::Vip,
                Some("published") => Kind::Published,
                _ => continue,
            };
            for e in m.get("elem").and_then(Value::as_array).into_iter().flatten() {
                let (Some(key), Some(target)) = (e.get(0).and_then(element_key), e.get(1).and_then(goto_target)) else {
                    continue;
                };
                obs.elements.insert((kind, key), target);
            }
        } else if let Some(r) = item.get("rule") {
            let Some(chain) = r.get("chain").and_then(Value::as_str) else { continue };
            let comment = r.get("comment").and_then(Value::as_str).unwrap_or_default();
            obs.chains.entry(chain.to_string()).or_default().push(comment.to_string());
            let mut to = Vec::new();
            collect_dnat(r, &mut to);
            if !to.is_empty() {
                obs.targets.entry(chain.to_string()).or_default().extend(to);
            }
        }
    }
    Ok(obs)
}

fn element_key(v: &Value) -> Option<ServiceKey> {
    let parts = v.get("concat")?.as_array()?;
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

fn goto_target(v: &Value) -> Option<String> {
    Some(v.get("goto")?.get("target")?.as_str()?.to_string())
}

/// Every `dnat` target of a rule, as `addr:port`.
fn collect_dnat(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(d) = m.get("dnat") {
                if let (Some(addr), Some(port)) = (d.get("addr").and_then(Value::as_str), d.get("port").and_then(Value::as_u64)) {
                    out.push(format!("{addr}:{port}"));
                    return;
                }
            }
            m.values().for_each(|x| collect_dnat(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_dnat(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `nft -j list table ip shoal` (nftables 1.0.6) after a batch like ours.
    const LISTING: &str = r#"{"nftables": [
{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "shoal", "handle": 1}},
{"map": {"family": "ip", "name": "vips", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 1, "map": "verdict", "elem": [[{"concat": ["10.0.9.100", "tcp", 80]}, {"goto": {"target": "v_1"}}]]}},
{"chain": {"family": "ip", "table": "shoal", "name": "prerouting", "handle": 2, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
{"chain": {"family": "ip", "table": "shoal", "name": "b_10_0_9_2_80_tcp_m", "handle": 3}},
{"chain": {"family": "ip", "table": "shoal", "name": "v_1", "handle": 7}},
{"rule": {"family": "ip", "table": "shoal", "chain": "prerouting", "handle": 10, "comment": "shoal-vips", "expr": [{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@vips"}}]}},
{"rule": {"family": "ip", "table": "shoal", "chain": "b_10_0_9_2_80_tcp_m", "handle": 4, "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 21248]}}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.0.9.2", "port": 80}}]}},
{"rule": {"family": "ip", "table": "shoal", "chain": "v_1", "handle": 9, "comment": "h123", "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 3, "offset": 0}}, "data": {"set": [[0, {"goto": {"target": "b_10_0_9_2_80_tcp_m"}}], [{"range": [1, 2]}, {"goto": {"target": "b_10_0_9_3_80_tcp_m"}}]]}}}]}}
]}"#;

    #[test]
    fn parses_chains_rule_comments_elements_and_targets() {
        let obs = parse(LISTING).unwrap();
        assert!(obs.table);
        assert_eq!(obs.chains["prerouting"], vec!["shoal-vips"]);
        assert_eq!(obs.chains["b_10_0_9_2_80_tcp_m"], vec![""]);
        assert_eq!(obs.chains["v_1"], vec!["h123"]);
        assert_eq!(obs.elements[&(Kind::Vip, ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), 80))], "v_1");
        assert_eq!(obs.targets["b_10_0_9_2_80_tcp_m"], vec!["10.0.9.2:80"]);
        assert!(parse("{}").is_err());
    }
}
