//! Pure translation of the dispatcher's view into the data plane's desired state for this node.
//! Node names in the data plane are node ids.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use shoal_control::dispatcher::AgentView;
use shoal_control::model::{EndpointMode as CtlMode, Protocol as CtlProtocol, PublishMode as CtlPublish, TaskState};
use shoal_dataplane::state::{Endpoint, EndpointMode, Network, NodeInfo, NodeState, PortConfig, Protocol, PublishMode, Service};

/// The task's network namespace: task ids are unique in the cluster, and so on the machine.
pub fn task_netns(task_id: &str) -> String {
    format!("shoal-t-{task_id}")
}

/// The data plane's id of a task's endpoint on its `index`-th network: the task id for the
/// first (the task's eth0, as before tasks had several), `<task>.<network>` for the others.
pub fn endpoint_id(task_id: &str, index: usize, network: &str) -> String {
    if index == 0 {
        task_id.to_string()
    } else {
        format!("{task_id}.{network}")
    }
}

/// `ip` or `ip:port` -> ip.
fn ip_of(addr: &str) -> Option<Ipv4Addr> {
    addr.rsplit_once(':').map_or(addr, |(ip, _)| ip).parse().ok()
}

/// Tasks of this node that must have their network (a process runs, or is about to).
pub fn attached_tasks(view: &AgentView, running: &BTreeSet<String>) -> BTreeSet<String> {
    view.assignments
        .values()
        .filter(|a| a.task.desired_state <= TaskState::Running && !a.task.status.state.is_terminal())
        .map(|a| a.task.id.clone())
        .chain(running.iter().cloned())
        .collect()
}

/// Builds this node's desired data plane. `running` are local tasks whose process is alive: they
/// keep their network until stopped, even when no longer assigned.
pub fn node_state(view: &AgentView, node_id: &str, self_addr: Ipv4Addr, running: &BTreeSet<String>) -> NodeState {
    let mut nodes: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    nodes.insert(node_id.to_string(), self_addr);
    for net in view.networks.values() {
        for (id, addr) in &net.peers {
            if let Some(ip) = ip_of(addr) {
                nodes.entry(id.clone()).or_insert(ip);
            }
        }
    }
    for ep in view.endpoints.values() {
        if let Some(ip) = ip_of(&ep.node_addr) {
            nodes.entry(ep.node_id.clone()).or_insert(ip);
        }
    }
    let net_name = |id: &str| view.networks.get(id).map(|n| n.name.clone());
    let networks: Vec<Network> = view
        .networks
        .values()
        .map(|n| Network {
            name: n.name.clone(),
            vni: n.vni,
            subnet: n.subnet,
            gateway: Some(n.gateway),
            mtu: None,
            lb_addresses: n.lb_addrs.iter().filter(|(node, _)| nodes.contains_key(*node)).map(|(k, v)| (k.clone(), *v)).collect(),
            internal: n.internal,
            local: n.node_local,
            // The control plane cannot create encrypted networks yet (refused at create).
            encrypted: None,
        })
        .collect();

    let mut endpoints = Vec::new();
    let local = attached_tasks(view, running);
    // A task joins every network of its service, in order: eth0, eth1, ... in its namespace.
    for a in view.assignments.values().filter(|a| local.contains(&a.task.id)) {
        for (i, att) in a.task.networks.iter().enumerate() {
            let Some(network) = net_name(&att.network_id) else { continue };
            endpoints.push(Endpoint {
                id: endpoint_id(&a.task.id, i, &network),
                network,
                node: node_id.to_string(),
                ip: att.addr,
                mac: att.mac.parse().ok(),
                netns: Some(task_netns(&a.task.id)),
                healthy: a.task.is_endpoint(),
                weight: a.task.weight.clamp(1, u16::MAX as u32) as u16,
            });
        }
    }
    for ep in view.endpoints.values().filter(|e| e.node_id != node_id) {
        for (i, att) in ep.addresses.iter().enumerate() {
            // Another node's gateway bridge is not reachable from here.
            if view.networks.get(&att.network_id).is_some_and(|n| n.node_local) {
                continue;
            }
            let Some(network) = net_name(&att.network_id) else { continue };
            endpoints.push(Endpoint {
                id: endpoint_id(&ep.task_id, i, &network),
                network,
                node: ep.node_id.clone(),
                ip: att.addr,
                mac: att.mac.parse().ok(),
                netns: None,
                healthy: true,
                weight: ep.weight.clamp(1, u16::MAX as u32) as u16,
            });
        }
    }
    let services = services(view, node_id, &endpoints);
    NodeState {
        node: node_id.to_string(),
        nodes: nodes.into_iter().map(|(name, address)| NodeInfo { name, address, wireguard: None }).collect(),
        networks,
        endpoints,
        services,
        wireguard_private_key: None,
    }
}

/// Services with their VIPs and ports; backends are the endpoints (on every network) of the
/// service's tasks that the managers list as endpoints (running and healthy).
fn services(view: &AgentView, node_id: &str, endpoints: &[Endpoint]) -> Vec<Service> {
    let present: BTreeSet<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
    // Networks this node balances on: those it has an LB address on (a task there, or ingress),
    // and the gateway bridge (host-mode ports). Backends elsewhere are nothing it can reach.
    let balanced = |n: &&shoal_control::dispatcher::messages::NetworkInfo| n.lb_addrs.contains_key(node_id) || n.node_local;
    let of_task = |t: &shoal_control::dispatcher::messages::TaskEndpoint| -> Vec<String> {
        t.addresses
            .iter()
            .enumerate()
            .filter_map(|(i, att)| Some(endpoint_id(&t.task_id, i, &view.networks.get(&att.network_id).filter(balanced)?.name)))
            .filter(|id| present.contains(id.as_str()))
            .collect()
    };
    view.services
        .values()
        .map(|s| Service {
            name: s.name.clone(),
            // A VIP lives on the network's bridge, sourced from this node's LB address there:
            // a node with no task on the network has neither, and no local client of the VIP.
            vips: s
                .vips
                .iter()
                .filter_map(|v| view.networks.get(&v.network_id).filter(balanced).map(|n| (n.name.clone(), v.addr)))
                .collect(),
            endpoint_mode: match s.mode {
                CtlMode::Vip => EndpointMode::Vip,
                CtlMode::Dnsrr => EndpointMode::Dnsrr,
            },
            ports: s
                .ports
                .iter()
                .filter_map(|p| {
                    Some(PortConfig {
                        target: u16::try_from(p.target).ok()?,
                        published: p.published.and_then(|p| u16::try_from(p).ok()),
                        protocol: match p.protocol {
                            CtlProtocol::Tcp => Protocol::Tcp,
                            CtlProtocol::Udp => Protocol::Udp,
                            CtlProtocol::Sctp => return None,
                        },
                        mode: match p.mode {
                            CtlPublish::Ingress => PublishMode::Ingress,
                            CtlPublish::Host => PublishMode::Host,
                        },
                        keep_client_ip: false,
                    })
                })
                .collect(),
            backends: view.endpoints.values().filter(|t| t.service_id == s.id).flat_map(of_task).collect(),
            // Published ports reach the tasks on the cluster's ingress network (the service's
            // first network otherwise), as in Swarm; a task's other networks are for its peers.
            ingress_network: if s.ports.is_empty() {
                None
            } else {
                let nets: Vec<_> = s.networks.iter().filter_map(|id| view.networks.get(id)).collect();
                nets.iter().find(|n| n.ingress).or(nets.first()).map(|n| n.name.clone())
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_or_without_port() {
        assert_eq!(ip_of("192.168.33.10"), Some(Ipv4Addr::new(192, 168, 33, 10)));
        assert_eq!(ip_of("192.168.33.10:2377"), Some(Ipv4Addr::new(192, 168, 33, 10)));
        assert_eq!(ip_of("nonsense"), None);
    }

    fn network(id: &str, vni: u32, subnet: &str, lb: &[(&str, &str)]) -> shoal_control::dispatcher::messages::NetworkInfo {
        let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
        shoal_control::dispatcher::messages::NetworkInfo {
            id: id.into(),
            name: format!("net-{id}"),
            vni,
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            ingress: false,
            internal: id == "private",
            node_local: false,
            options: Default::default(),
            lb_addrs: lb.iter().map(|(n, a)| (n.to_string(), a.parse().unwrap())).collect(),
            peers: Default::default(),
        }
    }

    #[test]
    fn a_vip_of_a_network_this_node_has_no_task_on_is_left_out_and_the_rest_stays_valid() {
        let mut view = AgentView::default();
        view.networks.insert("backend".into(), network("backend", 4098, "10.0.9.0/24", &[("n1", "10.0.9.250")]));
        view.networks.insert("private".into(), network("private", 4099, "10.0.10.0/24", &[("n2", "10.0.10.250")]));
        for (id, net, vip) in [("web", "backend", "10.0.9.100"), ("db", "private", "10.0.10.100")] {
            view.services.insert(
                id.into(),
                shoal_control::dispatcher::messages::ServiceEndpoint {
                    id: id.into(),
                    name: id.into(),
                    mode: CtlMode::Vip,
                    vips: vec![shoal_control::model::Vip { network_id: net.into(), addr: vip.parse().unwrap(), prefix: 24 }],
                    ports: vec![],
                    networks: vec![net.into()],
                    aliases: Default::default(),
                },
            );
        }
        // `both` is on both networks, with a task on n2 (endpoints on both).
        view.services.insert(
            "both".into(),
            shoal_control::dispatcher::messages::ServiceEndpoint {
                id: "both".into(),
                name: "both".into(),
                mode: CtlMode::Vip,
                vips: vec![
                    shoal_control::model::Vip { network_id: "backend".into(), addr: "10.0.9.101".parse().unwrap(), prefix: 24 },
                    shoal_control::model::Vip { network_id: "private".into(), addr: "10.0.10.101".parse().unwrap(), prefix: 24 },
                ],
                ports: vec![],
                networks: vec!["backend".into(), "private".into()],
                aliases: Default::default(),
            },
        );
        let att = |net: &str, addr: &str| shoal_control::model::NetworkAttachment {
            network_id: net.into(),
            addr: addr.parse().unwrap(),
            prefix: 24,
            mac: String::new(),
        };
        view.endpoints.insert(
            "t1".into(),
            shoal_control::dispatcher::messages::TaskEndpoint {
                task_id: "t1".into(),
                service_id: "both".into(),
                name: "both.1.t1".into(),
                node_id: "n2".into(),
                node_addr: "192.168.33.20".into(),
                addresses: vec![att("backend", "10.0.9.5"), att("private", "10.0.10.5")],
                health: None,
                weight: 1,
            },
        );
        let s = node_state(&view, "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        let vips: Vec<_> = s.services.iter().map(|s| (s.name.as_str(), s.vips.len(), s.backends.len())).collect();
        assert_eq!(vips, vec![("both", 1, 1), ("db", 0, 0), ("web", 1, 0)]);
        assert!(s.networks.iter().any(|n| n.name == "net-private" && n.internal));
    }

    #[test]
    fn empty_view_is_a_valid_empty_node() {
        let s = node_state(&AgentView::default(), "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok());
        assert_eq!(s.nodes.len(), 1);
        assert!(s.networks.is_empty() && s.endpoints.is_empty());
    }
}
