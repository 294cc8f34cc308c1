//! `shoal dataplane show`: what exists in the kernel, in the desired-state format, so the two can
//! be compared by eye or by `diff`.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use crate::netlink::{LinkKind, Mac};
use crate::state::{DesiredNode, Endpoint, Network, NodeInfo};

use super::names;
use super::observe::Observed;
use crate::crypt::plan::DEVICE as TUNNEL;

/// Reconstructs the state the kernel holds. Remote endpoints are known only by VTEP, so their
/// node is shown as that address and their id as `remote-<ip>`.
pub fn describe(obs: &Observed, node: &str) -> DesiredNode {
    let mut networks = Vec::new();
    let mut endpoints = Vec::new();
    let mut vteps = BTreeMap::new();
    let local_addr = obs
        .addrs
        .iter()
        .find(|a| obs.link_name(a.ifindex).is_some_and(|n| !n.starts_with("she-") && !n.starts_with("shb-") && n != "lo" && n != TUNNEL));
    if let Some(a) = local_addr {
        vteps.insert(a.ip, node.to_string());
    }
    for vx in &obs.links {
        let LinkKind::Vxlan(info) = &vx.kind else { continue };
        if !vx.name.starts_with(names::VXLAN_PREFIX) || !names::is_shoal_alias(vx.alias.as_deref()) {
            continue;
        }
        let Some(bridge) = obs.link(&names::bridge(info.vni)) else { continue };
        let name = bridge.alias.as_deref().and_then(|a| a.strip_prefix("shoal net=")).unwrap_or(&bridge.name).to_string();
        let table = names::network_table(info.vni);
        let Some(route) = obs.routes.iter().find(|r| r.table == table && r.oif.is_some()) else { continue };
        let internal = obs.routes.iter().any(|r| r.table == table && r.prefix == 0 && r.oif.is_none());
        let Ok(subnet) = Ipv4Net::new(route.dst, route.prefix) else { continue };
        let bridge_addrs: Vec<_> = obs.addrs.iter().filter(|a| a.ifindex == bridge.index).map(|a| a.ip).collect();
        let lb = if bridge_addrs.len() > 1 { route.src } else { None };
        let gateway = bridge_addrs.iter().copied().find(|ip| Some(*ip) != lb);
        let mut lb_addresses = BTreeMap::new();
        if let Some(lb) = lb {
            lb_addresses.insert(node.to_string(), lb);
        }
        for n in obs.neighbours.iter().filter(|n| n.ifindex == vx.index) {
            let Some(f) = obs.fdb.iter().find(|f| f.ifindex == vx.index && f.mac == n.mac) else { continue };
            let remote = vteps.entry(f.dst).or_insert_with(|| f.dst.to_string()).clone();
            endpoints.push(Endpoint {
                id: format!("remote-{}", n.ip),
                network: name.clone(),
                node: remote,
                ip: n.ip,
                mac: (n.mac != Mac::from_ipv4(n.ip)).then_some(n.mac),
                netns: None,
                ..Default::default()
            });
        }
        for l in obs.links.iter().filter(|l| l.master == Some(bridge.index)) {
            let Some((id, ns, ifname)) = l.alias.as_deref().and_then(names::parse_endpoint_alias) else { continue };
            let Some(task) = obs.tasks.get(ns) else { continue };
            let Some(addr) = task.addrs_of(ifname).first().copied() else { continue };
            let mac = task.iface(ifname).and_then(|e| e.mac);
            endpoints.push(Endpoint {
                id: id.to_string(),
                network: name.clone(),
                node: node.to_string(),
                ip: addr.ip,
                mac: mac.filter(|m| *m != Mac::from_ipv4(addr.ip)),
                netns: Some(ns.to_string()),
                ..Default::default()
            });
        }
        // Its VXLAN runs from the tunnel device's address: an encrypted network.
        let encrypted = info.local.is_some_and(|ip| obs.addrs.iter().any(|a| a.ip == ip && obs.link_name(a.ifindex) == Some(TUNNEL)));
        let encrypted = encrypted.then_some(crate::state::Encryption::Wireguard);
        networks.push(Network {
            name,
            vni: info.vni,
            subnet,
            gateway,
            mtu: Some(bridge.mtu),
            lb_addresses,
            internal,
            local: false,
            encrypted,
        });
    }
    // Dumps come in kernel order; sort so two shows of the same state print the same text.
    endpoints.sort_by(|a, b| (&a.network, a.ip).cmp(&(&b.network, b.ip)));
    networks.sort_by_key(|n| n.vni);
    let nodes = vteps.into_iter().map(|(address, name)| NodeInfo { name, address, wireguard: None }).collect();
    DesiredNode { node: node.to_string(), nodes, networks, endpoints, services: vec![], wireguard_private_key: None }
}
