//! Pure translation of the dispatcher's view into the data plane's desired state for this node.
//! Node names in the data plane are node ids.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use shoal_control::dispatcher::AgentView;
use shoal_control::model::{TaskState, ENCRYPTED_OPTION};
use shoal_dataplane::crypt::key::{Key, PrivateKey};
use shoal_dataplane::state::{DesiredNode, Encryption, Endpoint, Network, NodeInfo, NodeWireGuard, PortConfig, Protocol, Service};

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

/// Whether a network of the view asks for encryption.
pub fn is_encrypted(n: &shoal_control::rpc::session::NetworkInfo) -> bool {
    n.options.contains_key(ENCRYPTED_OPTION)
}

/// Why a task on an encrypted network cannot run here yet, or ever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionError {
    #[error("waiting for this node's WireGuard key from the managers")]
    NoKeyYet,
    #[error("the managers' WireGuard key for this node: {0}")]
    BadKey(shoal_dataplane::crypt::key::BadKey),
    /// The data plane refused encryption here (`why` is its reason).
    #[error("encrypted network '{}' cannot run on this node: {why}", .networks.join("', '"))]
    Refused { networks: Vec<String>, why: String },
}

/// This node's WireGuard private key and every node's public key and tunnel address, from the
/// managers. `Err` says why this node has no usable identity yet (encrypted networks then wait:
/// they are left out of the desired state, never built in plaintext).
fn wireguard(view: &AgentView) -> Result<(PrivateKey, BTreeMap<String, NodeWireGuard>), EncryptionError> {
    let wg = view.wireguard.as_ref().ok_or(EncryptionError::NoKeyYet)?;
    let private = PrivateKey::from_base64(&wg.private_key).map_err(EncryptionError::BadKey)?;
    let peers = wg
        .peers
        .iter()
        .filter_map(|(id, p)| {
            let wg = NodeWireGuard {
                public_key: Key::from_base64(&p.public_key).ok()?,
                address: p.address,
                preshared_key: PrivateKey::from_base64(&p.preshared_key).ok(),
            };
            Some((id.to_string(), wg))
        })
        .collect();
    Ok((private, peers))
}

/// Whether a task may start as far as encryption goes: `Ok(true)` yes, `Ok(false)` not yet
/// (this node's key is on its way from the managers), `Err(why)` never here: it is on an
/// encrypted network and this node cannot encrypt (`refused`, from the data plane). The task
/// is then rejected with that reason (`service ps` shows it), never run in plaintext.
pub fn encryption_gate(
    view: &AgentView,
    networks: &[shoal_control::model::NetworkAttachment],
    refused: Option<&str>,
) -> Result<bool, EncryptionError> {
    let encrypted: Vec<&str> =
        networks.iter().filter_map(|att| view.networks.get(&att.network_id).filter(|n| is_encrypted(n)).map(|n| n.name.as_str())).collect();
    if encrypted.is_empty() {
        return Ok(true);
    }
    if let Some(why) = refused {
        return Err(EncryptionError::Refused { networks: encrypted.iter().map(|n| n.to_string()).collect(), why: why.to_string() });
    }
    Ok(encryption_waits(view).is_none())
}

/// Tasks of this node that must have their network (a process runs, or is about to).
pub fn attached_tasks(view: &AgentView, running: &BTreeSet<String>) -> BTreeSet<String> {
    view.assignments
        .values()
        .filter(|a| a.task.desired_state <= TaskState::Running && !a.task.status.state.is_terminal())
        .map(|a| a.task.id.to_string())
        .chain(running.iter().cloned())
        .collect()
}

/// Builds this node's desired data plane. `running` are local tasks whose process is alive: they
/// keep their network until stopped, even when no longer assigned.
pub fn desired_node(view: &AgentView, node_id: &str, self_addr: Ipv4Addr, running: &BTreeSet<String>) -> DesiredNode {
    let mut nodes: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    nodes.insert(node_id.to_string(), self_addr);
    for net in view.networks.values() {
        for (id, addr) in &net.peers {
            if let Some(ip) = ip_of(addr) {
                nodes.entry(id.to_string()).or_insert(ip);
            }
        }
    }
    for ep in view.endpoints.values() {
        if let Some(ip) = ip_of(&ep.node_addr) {
            nodes.entry(ep.node_id.to_string()).or_insert(ip);
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
            lb_addresses: n
                .lb_addrs
                .iter()
                .filter(|(node, _)| nodes.contains_key(node.as_str()))
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            internal: n.internal,
            local: n.node_local,
            encrypted: is_encrypted(n).then(|| match n.options.get(ENCRYPTED_OPTION).map(String::as_str) {
                Some("ipsec") => Encryption::Ipsec,
                _ => Encryption::Wireguard,
            }),
        })
        .collect();
    let identity = if networks.iter().any(|n| n.encrypted.is_some()) { Some(wireguard(view)) } else { None };
    let peers = match &identity {
        Some(Ok((_, peers))) => peers.clone(),
        _ => BTreeMap::new(),
    };
    let encrypted_net = |name: &str| networks.iter().any(|n| n.name == name && n.encrypted.is_some());

    let mut endpoints = Vec::new();
    let local = attached_tasks(view, running);
    // A task joins every network of its service, in order: eth0, eth1, ... in its namespace.
    for a in view.assignments.values().filter(|a| local.contains(a.task.id.as_str())) {
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
            // A node the managers have not issued a key yet is not reachable on an encrypted
            // network: its endpoints join once it has one.
            if encrypted_net(&network) && !peers.contains_key(ep.node_id.as_str()) {
                continue;
            }
            endpoints.push(Endpoint {
                id: endpoint_id(&ep.task_id, i, &network),
                network,
                node: ep.node_id.to_string(),
                ip: att.addr,
                mac: att.mac.parse().ok(),
                netns: None,
                // A draining task gets no new flow; the ones it has still reach it.
                healthy: !ep.draining,
                weight: ep.weight.clamp(1, u16::MAX as u32) as u16,
            });
        }
    }
    let services = services(view, node_id, &endpoints);
    let state = DesiredNode {
        node: node_id.to_string(),
        nodes: nodes.into_iter().map(|(name, address)| NodeInfo { wireguard: peers.get(&name).cloned(), name, address }).collect(),
        networks,
        endpoints,
        services,
        wireguard_private_key: identity.as_ref().and_then(|i| i.as_ref().ok()).map(|(k, _)| k.clone()),
    };
    match identity {
        Some(Err(why)) => {
            tracing::info!(node = %node_id, "encrypted networks wait: {why}");
            let encrypted: std::collections::HashSet<&str> =
                state.networks.iter().filter(|n| n.encrypted.is_some()).map(|n| n.name.as_str()).collect();
            state.without_networks(&encrypted)
        }
        _ => state,
    }
}

/// Why this node cannot have encrypted networks yet (no identity from the managers), if so.
pub fn encryption_waits(view: &AgentView) -> Option<EncryptionError> {
    if view.networks.values().any(is_encrypted) {
        wireguard(view).err()
    } else {
        None
    }
}

/// Services with their VIPs and ports; backends are the endpoints (on every network) of the
/// service's tasks that the managers list as endpoints (running and healthy).
fn services(view: &AgentView, node_id: &str, endpoints: &[Endpoint]) -> Vec<Service> {
    let present: BTreeSet<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
    // Networks this node balances on: those it has an LB address on (a task there, or ingress),
    // and the gateway bridge (host-mode ports). Backends elsewhere are nothing it can reach.
    let balanced = |n: &&shoal_control::rpc::session::NetworkInfo| n.lb_addrs.contains_key(node_id) || n.node_local;
    let of_task = |t: &shoal_control::rpc::session::TaskEndpoint| -> Vec<String> {
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
            endpoint_mode: s.mode,
            ports: s
                .ports
                .iter()
                // The balancers carry TCP and UDP (the data plane refuses an SCTP port).
                .filter(|p| p.protocol != Protocol::Sctp)
                .filter_map(|p| {
                    Some(PortConfig {
                        target: u16::try_from(p.target).ok()?,
                        published: p.published.and_then(|p| u16::try_from(p).ok()),
                        protocol: p.protocol,
                        mode: p.mode,
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

    fn network(id: &str, vni: u32, subnet: &str, lb: &[(&str, &str)]) -> shoal_control::rpc::session::NetworkInfo {
        let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
        shoal_control::rpc::session::NetworkInfo {
            id: id.into(),
            name: format!("net-{id}"),
            vni,
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            ingress: false,
            internal: id == "private",
            node_local: false,
            options: Default::default(),
            lb_addrs: lb.iter().map(|(n, a)| (shoal_control::model::NodeId::from(*n), a.parse::<std::net::Ipv4Addr>().unwrap())).collect(),
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
                shoal_control::rpc::session::ServiceEndpoint {
                    id: id.into(),
                    name: id.into(),
                    mode: shoal_control::model::EndpointMode::Vip,
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
            shoal_control::rpc::session::ServiceEndpoint {
                id: "both".into(),
                name: "both".into(),
                mode: shoal_control::model::EndpointMode::Vip,
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
            shoal_control::rpc::session::TaskEndpoint {
                task_id: "t1".into(),
                service_id: "both".into(),
                name: "both.1.t1".into(),
                node_id: "n2".into(),
                node_addr: "192.168.33.20".into(),
                addresses: vec![att("backend", "10.0.9.5"), att("private", "10.0.10.5")],
                health: None,
                weight: 1,
                draining: false,
            },
        );
        let s = desired_node(&view, "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        let vips: Vec<_> = s.services.iter().map(|s| (s.name.as_str(), s.vips.len(), s.backends.len())).collect();
        assert_eq!(vips, vec![("both", 1, 1), ("db", 0, 0), ("web", 1, 0)]);
        assert!(s.networks.iter().any(|n| n.name == "net-private" && n.internal));

        // Told to stop, t1 drains on n2: no new flow picks it here, but n1 still reaches it for
        // the flows it has (its overlay entries stay until n2 reports it stopped).
        view.endpoints.get_mut("t1").unwrap().draining = true;
        let s = desired_node(&view, "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        let t1: Vec<_> = s.endpoints.iter().filter(|e| e.node == "n2").map(|e| (e.ip.to_string(), e.healthy)).collect();
        assert_eq!(t1, vec![("10.0.9.5".to_string(), false), ("10.0.10.5".to_string(), false)]);
        let lb = shoal_dataplane::lb::plan::desired(&s);
        assert!(lb.vips.values().all(|f| f.backends.is_empty()), "a draining task is no backend: {lb:?}");
    }

    /// n1 (here) and n2 with a task each on the encrypted network `secure`; `keys` says which
    /// nodes the managers issued an identity to.
    fn encrypted_view(keys: &[&str]) -> (AgentView, BTreeMap<String, String>) {
        use shoal_control::rpc::session::{WireGuardPeer, WireGuardView};
        let mut view = AgentView::default();
        let mut net = network("secure", 4100, "10.0.20.0/24", &[("n1", "10.0.20.250"), ("n2", "10.0.20.251")]);
        net.options.insert("encrypted".into(), String::new());
        net.peers = [
            (shoal_control::model::NodeId::from("n1"), "192.168.33.10".to_string()),
            (shoal_control::model::NodeId::from("n2"), "192.168.33.20".to_string()),
        ]
        .into_iter()
        .collect();
        view.networks.insert("secure".into(), net);
        let mut privates = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for (i, n) in keys.iter().enumerate() {
            let k = shoal_control::model::generate_private_key();
            let public_key = shoal_control::model::public_key_of(&k).unwrap();
            peers.insert(
                shoal_control::model::NodeId::new(*n),
                WireGuardPeer {
                    public_key,
                    address: Ipv4Addr::new(10, 255, 0, i as u8 + 1),
                    preshared_key: if *n == "n1" { String::new() } else { shoal_control::model::generate_seed() },
                },
            );
            privates.insert(n.to_string(), k);
        }
        if let Some(k) = privates.get("n1") {
            view.wireguard = Some(WireGuardView { private_key: k.clone(), address: peers["n1"].address, peers: peers.clone() });
        }
        for (task, node, addr) in [("t1", "n1", "10.0.20.5"), ("t2", "n2", "10.0.20.6")] {
            let att = shoal_control::model::NetworkAttachment {
                network_id: "secure".into(),
                addr: addr.parse().unwrap(),
                prefix: 24,
                mac: String::new(),
            };
            view.endpoints.insert(
                task.into(),
                shoal_control::rpc::session::TaskEndpoint {
                    task_id: task.into(),
                    service_id: "s".into(),
                    name: format!("s.1.{task}"),
                    node_id: node.into(),
                    node_addr: if node == "n1" { "192.168.33.10".into() } else { "192.168.33.20".into() },
                    addresses: vec![att],
                    health: None,
                    weight: 1,
                    draining: false,
                },
            );
        }
        (view, privates)
    }

    #[test]
    fn an_encrypted_network_carries_the_managers_keys_into_a_valid_state() {
        let (view, privates) = encrypted_view(&["n1", "n2"]);
        let s = desired_node(&view, "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert_eq!(s.networks[0].encrypted, Some(Encryption::Wireguard));
        assert_eq!(s.wireguard_private_key.as_ref().unwrap().expose().to_base64(), privates["n1"]);
        assert!(s.nodes.iter().all(|n| n.wireguard.is_some()), "{:?}", s.nodes);
        let psk = |n: &str| s.nodes.iter().find(|x| x.name == n).and_then(|x| x.wireguard.as_ref()?.preshared_key.clone());
        assert!(psk("n2").is_some() && psk("n1").is_none(), "the pair key with n2 reaches the tunnel");
        assert!(s.endpoints.iter().any(|e| e.node == "n2"), "the peer's task is reachable through the tunnel");
        assert_eq!(encryption_waits(&view), None);
    }

    #[test]
    fn without_its_key_a_node_builds_nothing_of_an_encrypted_network_and_a_peer_without_one_is_left_out() {
        let (view, _) = encrypted_view(&["n2"]);
        let s = desired_node(&view, "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert!(s.networks.is_empty() && s.endpoints.is_empty(), "{s:?}");
        assert!(encryption_waits(&view).unwrap().to_string().contains("waiting for this node's WireGuard key"));

        let (view, _) = encrypted_view(&["n1"]);
        let s = desired_node(&view, "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert_eq!(s.networks.len(), 1);
        assert!(s.endpoints.iter().all(|e| e.node != "n2"), "n2 has no key yet: {:?}", s.endpoints);
    }

    #[test]
    fn a_task_on_an_encrypted_network_waits_for_keys_and_is_refused_where_encryption_cannot_run() {
        let (mut view, _) = encrypted_view(&["n1", "n2"]);
        let a = vec![shoal_control::model::NetworkAttachment {
            network_id: "secure".into(),
            addr: "10.0.20.5".parse().unwrap(),
            prefix: 24,
            mac: String::new(),
        }];
        assert_eq!(encryption_gate(&view, &a, None), Ok(true));
        let err = encryption_gate(&view, &a, Some("this node cannot encrypt: no TUN device")).unwrap_err().to_string();
        assert!(err.contains("encrypted network 'net-secure' cannot run on this node") && err.contains("no TUN device"), "{err}");
        view.wireguard = None;
        assert_eq!(encryption_gate(&view, &a, None), Ok(false));
        assert_eq!(encryption_gate(&view, &[], Some("no TUN")), Ok(true));
    }

    #[test]
    fn empty_view_is_a_valid_empty_node() {
        let s = desired_node(&AgentView::default(), "n1", Ipv4Addr::new(192, 168, 33, 10), &BTreeSet::new());
        assert!(s.validate().is_ok());
        assert_eq!(s.nodes.len(), 1);
        assert!(s.networks.is_empty() && s.endpoints.is_empty());
    }
}
