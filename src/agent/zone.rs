//! Pure translation of the dispatcher's view into the DNS zone: per network, the services with
//! their VIP and ports and the running tasks; the nodes for the host-side listener.

use std::net::IpAddr;

use shoal_control::dispatcher::AgentView;
use shoal_dns::{EndpointMode, NetworkZone, NodeRecord, PortRecord, ServiceRecord, TaskRecord, Zone};

/// `<svc>.<slot>.<taskid>` -> slot.
fn slot_of(task_name: &str) -> Option<u64> {
    let mut parts = task_name.rsplitn(3, '.');
    let _id = parts.next()?;
    parts.next()?.parse().ok()
}

pub fn zone(view: &AgentView) -> Zone {
    let mut networks = Vec::new();
    // As in Swarm, the ingress network carries published ports, not names: a task of a
    // published service resolves its peers on its own networks.
    // Nor does the gateway bridge: it is node-local, with no service to name.
    for net in view.networks.values().filter(|n| !n.ingress && !n.node_local) {
        let services = view
            .services
            .values()
            .filter(|s| s.networks.iter().any(|n| n == &net.id || n == &net.name))
            .map(|s| ServiceRecord {
                name: s.name.clone(),
                // Docker's network aliases (a stack's short service names), on this network only.
                aliases: s.aliases.get(&net.id).cloned().unwrap_or_default(),
                endpoint_mode: s.mode,
                vip: s.vips.iter().find(|v| v.network_id == net.id).map(|v| IpAddr::V4(v.addr)),
                ports: s
                    .ports
                    .iter()
                    .filter_map(|p| Some(PortRecord { name: None, protocol: p.protocol, port: u16::try_from(p.target).ok()? }))
                    .collect(),
            })
            // A VIP-mode service without a VIP on this network is not resolvable here.
            .filter(|s| s.endpoint_mode == EndpointMode::Dnsrr || s.vip.is_some())
            .collect();
        let tasks = view
            .endpoints
            .values()
            .filter(|t| !t.draining)
            .filter_map(|t| {
                let att = t.addresses.iter().find(|a| a.network_id == net.id)?;
                let service = view.services.get(&t.service_id)?.name.clone();
                Some(TaskRecord {
                    id: t.task_id.to_string(),
                    service,
                    slot: slot_of(&t.name),
                    name: Some(t.name.clone()),
                    ip: IpAddr::V4(att.addr),
                    healthy: true, // the endpoint table holds only running, healthy tasks (and draining ones)
                    aliases: vec![],
                })
            })
            .collect();
        networks.push(NetworkZone { name: net.name.clone(), services, tasks });
    }
    let mut nodes: Vec<NodeRecord> = Vec::new();
    for net in view.networks.values() {
        for (id, addr) in &net.peers {
            let ip = addr.rsplit_once(':').map_or(addr.as_str(), |(ip, _)| ip);
            if let (Ok(address), false) = (ip.parse(), nodes.iter().any(|n| &n.name == id)) {
                nodes.push(NodeRecord { name: id.to_string(), address });
            }
        }
    }
    Zone { networks, nodes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_from_task_names() {
        assert_eq!(slot_of("vote.3.abcd"), Some(3));
        assert_eq!(slot_of("vote.x.abcd"), None);
        assert_eq!(slot_of("my.svc.2.abcd"), Some(2));
    }

    #[test]
    fn empty_view_gives_an_empty_zone() {
        let z = zone(&AgentView::default());
        assert!(z.networks.is_empty() && z.nodes.is_empty());
    }

    #[test]
    fn a_service_s_aliases_are_served_only_on_their_own_network() {
        use shoal_control::model::Vip;
        use shoal_control::rpc::session::{NetworkInfo, ServiceEndpoint};
        let net = |id: &str, subnet: &str| NetworkInfo {
            id: id.into(),
            name: format!("app_{id}"),
            vni: 4100,
            subnet: subnet.parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            ingress: false,
            internal: false,
            node_local: false,
            options: Default::default(),
            lb_addrs: Default::default(),
            peers: Default::default(),
        };
        let mut view = AgentView::default();
        view.networks.insert("front".into(), net("front", "10.0.1.0/24"));
        view.networks.insert("back".into(), net("back", "10.0.2.0/24"));
        view.services.insert(
            "s1".into(),
            ServiceEndpoint {
                id: "s1".into(),
                name: "app_worker".into(),
                mode: EndpointMode::Vip,
                vips: vec![
                    Vip { network_id: "front".into(), addr: "10.0.1.5".parse().unwrap(), prefix: 24 },
                    Vip { network_id: "back".into(), addr: "10.0.2.5".parse().unwrap(), prefix: 24 },
                ],
                ports: vec![],
                networks: vec!["front".into(), "back".into()],
                aliases: [("front".into(), vec!["worker".to_string()]), ("back".into(), vec!["worker".into(), "jobs".into()])].into(),
            },
        );
        let z = zone(&view);
        let aliases = |net: &str| -> Vec<String> {
            z.networks.iter().find(|n| n.name == net).unwrap().services.iter().find(|s| s.name == "app_worker").unwrap().aliases.clone()
        };
        assert_eq!(aliases("app_front"), ["worker"]);
        assert_eq!(aliases("app_back"), ["worker", "jobs"]);
        // The DNS builds it: the aliases are valid names and answer the service's VIP there.
        shoal_dns::table::Tables::build(&z, None).expect("a zone with aliases builds");

        // tasks.<service> answers serving tasks only, never one that drains.
        use shoal_control::model::NetworkAttachment;
        use shoal_control::rpc::session::TaskEndpoint;
        for (id, draining) in [("t1", false), ("t2", true)] {
            let addr = if draining { "10.0.1.12" } else { "10.0.1.11" };
            view.endpoints.insert(
                id.into(),
                TaskEndpoint {
                    task_id: id.into(),
                    service_id: "s1".into(),
                    name: format!("app_worker.1.{id}"),
                    node_id: "n1".into(),
                    node_addr: "192.168.33.10".into(),
                    addresses: vec![NetworkAttachment {
                        network_id: "front".into(),
                        addr: addr.parse().unwrap(),
                        prefix: 24,
                        mac: String::new(),
                    }],
                    health: None,
                    weight: 1,
                    draining,
                },
            );
        }
        let z = zone(&view);
        let front = z.networks.iter().find(|n| n.name == "app_front").unwrap();
        let ids: Vec<&str> = front.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t1"]);
    }
}
