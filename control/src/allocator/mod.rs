//! The allocator: VNIs, subnets, task addresses, VIPs, per-node load-balancer addresses and
//! published ports. Pure functions over the cluster state; the sub-modules are the pieces.

pub mod ipam;
pub mod ports;
pub mod subnet;
pub mod vni;

use crate::model::{
    mac_for, EndpointMode, NetworkAttachment, NetworkId, NetworkSpec, NodeId, PortConfig, PublishMode, Service, ServiceSpec, TaskId,
    TaskState, Vip,
};
use crate::state::{ClusterState, StateError};
use ipam::AddressPool;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

fn node_addrs(state: &ClusterState) -> Vec<Ipv4Addr> {
    state.nodes.values().filter_map(|n| n.addr.parse().ok()).collect()
}

/// VNI, subnet and gateway for a new network.
pub fn plan_network(state: &ClusterState, spec: &NetworkSpec) -> Result<(u32, Ipv4Net, Ipv4Addr), StateError> {
    let cluster = state.cluster.as_ref().ok_or(StateError::NotInitialised)?;
    let used_vnis: BTreeSet<u32> = state.networks.values().map(|n| n.vni).collect();
    let vni = vni::next_vni(&used_vnis).ok_or_else(|| StateError::Exhausted("no free VXLAN id left".into()))?;
    let nodes = node_addrs(state);
    let subnet = match spec.subnet {
        Some(s) => {
            let taken: Vec<(String, Ipv4Net)> = state.networks.values().map(|n| (n.spec.name.clone(), n.subnet)).collect();
            subnet::check_subnet(&s, &taken, &nodes).map_err(|m| StateError::invalid("subnet", m.to_string()))?;
            s
        }
        None => {
            let taken: Vec<Ipv4Net> = state.networks.values().map(|n| n.subnet).collect();
            subnet::carve(&cluster.default_addr_pool, cluster.subnet_size, &taken, &nodes).ok_or_else(|| {
                StateError::Exhausted(
                    "the default address pool has no free subnet: pass --subnet or init with a larger --default-addr-pool".into(),
                )
            })?
        }
    };
    let gateway = spec.gateway.unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
    Ok((vni, subnet, gateway))
}

/// The gateway bridge network for `init`: the first /16 of 172.18-31 that no node address or
/// network overlaps.
pub fn plan_gateway_network(state: &ClusterState) -> Result<(NetworkSpec, u32, Ipv4Net, Ipv4Addr), StateError> {
    let nodes = node_addrs(state);
    let taken: Vec<(String, Ipv4Net)> = state.networks.values().map(|n| (n.spec.name.clone(), n.subnet)).collect();
    let subnet = crate::model::GATEWAY_SUBNETS
        .filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok())
        .find(|s| subnet::check_subnet(s, &taken, &nodes).is_ok())
        .ok_or_else(|| StateError::Exhausted("no /16 of 172.18.0.0-172.31.255.255 is free for the gateway bridge".into()))?;
    let spec = NetworkSpec {
        name: crate::model::GATEWAY_NETWORK.into(),
        driver: "bridge".into(),
        subnet: Some(subnet),
        node_local: true,
        ..Default::default()
    };
    let (vni, subnet, gateway) = plan_network(state, &spec)?;
    Ok((spec, vni, subnet, gateway))
}

/// The networks a service's tasks attach to: ingress first when it publishes ingress ports; the
/// gateway bridge alone when it names no network and publishes nothing through the mesh (as
/// Swarm attaches such tasks to `docker_gwbridge` only).
pub fn service_networks(state: &ClusterState, spec: &ServiceSpec) -> Result<Vec<NetworkId>, StateError> {
    let mut ids = vec![];
    if spec.endpoint.ports.iter().any(|p| p.mode == PublishMode::Ingress) {
        if let Some(ing) = state.ingress_network() {
            ids.push(ing.id.clone());
        }
    }
    for (i, n) in spec.networks.iter().enumerate() {
        let net = state.find_network(n).map_err(|_| StateError::invalid(format!("networks[{i}]"), format!("network {n:?} not found")))?;
        if net.spec.node_local {
            return Err(StateError::invalid(
                format!("networks[{i}]"),
                format!("{n:?} is the gateway bridge: a service without networks gets it by itself; name overlay networks only"),
            ));
        }
        if !ids.contains(&net.id) {
            ids.push(net.id.clone());
        }
    }
    if ids.is_empty() {
        if let Some(gw) = state.networks.values().find(|n| n.spec.node_local) {
            ids.push(gw.id.clone());
        }
    }
    Ok(ids)
}

/// Address pools of every network with what the state already uses reserved.
pub fn pools(state: &ClusterState) -> BTreeMap<NetworkId, AddressPool> {
    let mut pools: BTreeMap<NetworkId, AddressPool> = state
        .networks
        .values()
        .map(|n| {
            let mut p = AddressPool::new(n.subnet);
            p.reserve(n.gateway);
            for a in n.lb_addrs.values() {
                p.reserve(*a);
            }
            (n.id.clone(), p)
        })
        .collect();
    for s in state.services.values() {
        for v in &s.vips {
            if let Some(p) = pools.get_mut(&v.network_id) {
                p.reserve(v.addr);
            }
        }
    }
    for t in state.tasks.values() {
        for a in &t.networks {
            if let Some(p) = pools.get_mut(&a.network_id) {
                p.reserve(a.addr);
            }
        }
    }
    pools
}

/// Published ports (filled in) and VIPs for a service being created or updated.
pub fn plan_service_endpoint(
    state: &ClusterState,
    spec: &ServiceSpec,
    network_ids: &[NetworkId],
    old: Option<&Service>,
) -> Result<(Vec<PortConfig>, Vec<Vip>), StateError> {
    let mut used = ports::UsedPorts::new();
    for s in state.services.values() {
        if old.is_some_and(|o| o.id == s.id) {
            continue;
        }
        for p in s.ports.iter().filter(|p| p.mode == PublishMode::Ingress) {
            if let Some(port) = p.published {
                used.insert((p.protocol, port as u16), s.spec.name.clone());
            }
        }
    }
    // On update, keep the ports that were picked automatically before.
    let mut wanted = spec.endpoint.ports.clone();
    if let Some(o) = old {
        for w in wanted.iter_mut().filter(|w| w.published.is_none()) {
            if let Some(prev) = o.ports.iter().find(|p| p.target == w.target && p.protocol == w.protocol && p.mode == w.mode) {
                w.published = prev.published;
            }
        }
    }
    let ports = ports::plan_ports(&wanted, &used, &spec.name)?;
    let mut vips = vec![];
    if spec.endpoint.mode == EndpointMode::Vip {
        let mut pools = pools(state);
        // The gateway bridge is node-local: a VIP there would reach only this node's tasks.
        for net in network_ids.iter().filter(|n| !state.networks.get(*n).is_some_and(|n| n.spec.node_local)) {
            if let Some(prev) = old.and_then(|o| o.vips.iter().find(|v| &v.network_id == net)) {
                vips.push(prev.clone());
                continue;
            }
            let pool = pools.get_mut(net).ok_or_else(|| StateError::not_found("network", net.as_str()))?;
            let addr = pool
                .allocate()
                .ok_or_else(|| StateError::Exhausted(format!("network {} has no free address for a VIP", state.networks[net].spec.name)))?;
            vips.push(Vip { network_id: net.clone(), addr, prefix: pool.prefix() });
        }
    }
    Ok((ports, vips))
}

/// NEW tasks get an address on each of their service's networks and move to PENDING; tasks
/// that ended give their addresses back.
pub fn allocate_tasks(state: &mut ClusterState, now_ms: u64) {
    for t in state.tasks.values_mut() {
        if t.status.state.is_terminal() && !t.networks.is_empty() {
            t.networks.clear();
        }
    }
    let needs: Vec<TaskId> = state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::New && t.desired_state <= TaskState::Running)
        .map(|t| t.id.clone())
        .collect();
    if needs.is_empty() {
        return;
    }
    let mut pools = pools(state);
    // Task addresses are given in turn through each subnet (see `Network::last_task_addr`).
    let mut last: BTreeMap<NetworkId, std::net::Ipv4Addr> = BTreeMap::new();
    for id in needs {
        let Some(task) = state.tasks.get(&id) else { continue };
        let Some(service) = state.services.get(&task.service_id) else { continue };
        let mut attachments = vec![];
        let mut failed = None;
        for net in &service.network_ids {
            let Some(pool) = pools.get_mut(net) else {
                failed = Some(format!("network {net} is gone"));
                break;
            };
            let after = last.get(net).copied().or_else(|| state.networks.get(net).and_then(|n| n.last_task_addr));
            match pool.allocate_after(after) {
                Some(addr) => {
                    last.insert(net.clone(), addr);
                    attachments.push(NetworkAttachment { network_id: net.clone(), addr, prefix: pool.prefix(), mac: mac_for(addr) })
                }
                None => {
                    failed = Some(format!("network {} has no free address", state.networks[net].spec.name));
                    break;
                }
            }
        }
        let Some(task) = state.tasks.get_mut(&id) else { continue };
        match failed {
            Some(msg) => {
                for a in &attachments {
                    if let Some(p) = pools.get_mut(&a.network_id) {
                        p.release(a.addr);
                    }
                }
                task.status.message = msg;
            }
            None => {
                task.networks = attachments;
                task.status = crate::model::TaskStatus::new(TaskState::Pending, "pending task scheduling", now_ms);
            }
        }
    }
    for (net, addr) in last {
        if let Some(n) = state.networks.get_mut(&net) {
            n.last_task_addr = Some(addr);
        }
    }
}

/// Every node that runs a task on a network gets one load-balancer address on it; every node
/// gets one on the ingress network, since every node answers on published ports (the routing
/// mesh), tasks or not (Swarm's ingress sandbox).
pub fn allocate_lb_addrs(state: &mut ClusterState) {
    let mut wanted: BTreeSet<(NetworkId, NodeId)> = BTreeSet::new();
    if let Some(ingress) = state.ingress_network() {
        for node in state.nodes.keys().filter(|n| !ingress.lb_addrs.contains_key(*n)) {
            wanted.insert((ingress.id.clone(), node.clone()));
        }
    }
    for t in state.tasks.values() {
        if let Some(node) = &t.node_id {
            if !t.status.state.is_terminal() {
                for a in &t.networks {
                    // The gateway bridge balances nothing: it needs no load-balancer address.
                    let local_only = state.networks.get(&a.network_id).is_some_and(|n| n.spec.node_local);
                    if !local_only && !state.networks.get(&a.network_id).is_some_and(|n| n.lb_addrs.contains_key(node)) {
                        wanted.insert((a.network_id.clone(), node.clone()));
                    }
                }
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let mut pools = pools(state);
    for (net, node) in wanted {
        let (Some(pool), Some(n)) = (pools.get_mut(&net), state.networks.get_mut(&net)) else { continue };
        if let Some(addr) = pool.allocate() {
            n.lb_addrs.insert(node, addr);
        }
    }
}
