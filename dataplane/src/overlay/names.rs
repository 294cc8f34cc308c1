//! Names and labels of the kernel objects shoal owns. A restarted agent finds its objects by
//! these, so they are derived from the desired state alone (never random).

use crate::state::{Endpoint, Network};

pub const BRIDGE_PREFIX: &str = "shb-";
pub const VXLAN_PREFIX: &str = "shv-";
pub const VETH_PREFIX: &str = "she-";
/// Name of a task's first interface; its n-th network (in the desired state's order) gets `eth<n>`.
pub const TASK_IFNAME: &str = "eth0";
/// At most this many networks per task namespace.
pub const MAX_TASK_IFACES: usize = 16;

/// The task-side name of a task's `n`-th interface.
pub fn task_ifname(n: usize) -> String {
    format!("eth{n}")
}

/// Whether `name` is one of the task-side names shoal gives.
pub fn is_task_ifname(name: &str) -> bool {
    name.strip_prefix("eth").is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n < MAX_TASK_IFACES))
}

/// Routing table ids: the isolation table holds an `unreachable` route per local overlay subnet;
/// each network's own table holds just its subnet.
pub const ISOLATION_TABLE: u32 = 1_000_000_000;
pub const PRIO_NETWORK: u32 = 30_100;
pub const PRIO_ISOLATION: u32 = 30_200;

pub fn bridge(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

pub fn vxlan(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

pub fn network_table(vni: u32) -> u32 {
    ISOLATION_TABLE + vni
}

/// Host side of an endpoint's veth. Interface names are at most 15 bytes, so the id is hashed.
pub fn veth(endpoint_id: &str) -> String {
    format!("{VETH_PREFIX}{:08x}", fnv1a(endpoint_id.as_bytes()))
}

pub fn network_alias(net: &Network) -> String {
    format!("shoal net={}", net.name)
}

/// The label of an endpoint's host-side veth. eth0's carries no interface name, as before
/// tasks could have more than one: veths made then are adopted unchanged.
pub fn endpoint_alias(ep: &Endpoint, ifname: &str) -> String {
    let alias = format!("shoal ep={} ns={}", ep.id, ep.netns.as_deref().unwrap_or(""));
    if ifname == TASK_IFNAME {
        alias
    } else {
        format!("{alias} if={ifname}")
    }
}

/// `(endpoint id, namespace, task-side interface)` from a veth's alias, when shoal made it.
pub fn parse_endpoint_alias(alias: &str) -> Option<(&str, &str, &str)> {
    let rest = alias.strip_prefix("shoal ep=")?;
    let (id, rest) = rest.split_once(" ns=")?;
    match rest.split_once(" if=") {
        Some((ns, ifname)) => Some((id, ns, ifname)),
        None => Some((id, rest, TASK_IFNAME)),
    }
}

pub fn is_shoal_alias(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with("shoal "))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_ifnamsiz() {
        assert!(bridge(16_777_215).len() <= 15);
        assert!(vxlan(16_777_215).len() <= 15);
        assert_eq!(veth("a-very-long-endpoint-identifier-of-a-task").len(), 12);
    }

    #[test]
    fn veth_name_is_stable_and_distinct() {
        assert_eq!(veth("web.1"), veth("web.1"));
        assert_ne!(veth("web.1"), veth("web.2"));
    }

    #[test]
    fn endpoint_alias_round_trips() {
        let ep = Endpoint {
            id: "web.1".into(),
            network: "n".into(),
            node: "a".into(),
            ip: "10.0.0.2".parse().unwrap(),
            mac: None,
            netns: Some("shoal-t-web1".into()),
            ..Default::default()
        };
        let alias = endpoint_alias(&ep, "eth0");
        assert_eq!(alias, "shoal ep=web.1 ns=shoal-t-web1");
        assert_eq!(parse_endpoint_alias(&alias), Some(("web.1", "shoal-t-web1", "eth0")));
        let alias = endpoint_alias(&ep, "eth2");
        assert_eq!(parse_endpoint_alias(&alias), Some(("web.1", "shoal-t-web1", "eth2")));
        assert_eq!(parse_endpoint_alias("something else"), None);
        assert!(is_task_ifname("eth0") && is_task_ifname("eth15") && !is_task_ifname("eth16") && !is_task_ifname("lo"));
    }
}
