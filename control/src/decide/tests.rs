//! Whole-state tests: validation errors name the field and change nothing; allocation.

use crate::model::{EndpointMode, NetworkSpec, PortConfig, Protocol, PublishMode, ServiceMode, ServiceSpec, TaskState};
use crate::state::{Command, StateError};
use crate::testkit::World;

fn net(w: &mut World, name: &str, subnet: Option<&str>) -> Result<crate::state::Response, StateError> {
    w.apply(Command::CreateNetwork {
        spec: NetworkSpec { name: name.into(), driver: "overlay".into(), subnet: subnet.map(|s| s.parse().unwrap()), ..Default::default() },
    })
}

fn port(target: i64, published: Option<i64>) -> PortConfig {
    PortConfig { protocol: Protocol::Tcp, target, published, mode: PublishMode::Ingress }
}

/// Apply a bad spec and check the error names `field` and the state did not move.
fn refused(w: &mut World, spec: ServiceSpec, field: &str) {
    let before = w.state.clone();
    let err = w.apply(Command::CreateService { spec }).unwrap_err();
    assert!(err.to_string().contains(field), "error {err} should name {field}");
    assert_eq!(w.state, before, "a refused command changed the state");
}

#[test]
fn bad_service_specs_name_the_field_and_change_nothing() {
    let mut w = World::new(1);
    net(&mut w, "backend", None).unwrap();
    let base = ServiceSpec::new("web", "nginx");
    let mut s = base.clone();
    s.networks = vec!["nope".into()];
    refused(&mut w, s, "networks[0]");
    let mut s = base.clone();
    s.endpoint.ports = vec![port(80, Some(70000))];
    refused(&mut w, s, "ports[0].published");
    let mut s = base.clone();
    s.endpoint.ports = vec![port(0, None)];
    refused(&mut w, s, "ports[0].target");
    let mut s = base.clone();
    s.mode = ServiceMode::Replicated { replicas: -1 };
    refused(&mut w, s, "replicas");
    let mut s = base.clone();
    s.placement.constraints = vec!["node.role=manager".into()];
    refused(&mut w, s, "constraints[0]");
    let mut s = base.clone();
    s.name = "-bad".into();
    refused(&mut w, s, "name");
    let mut s = base.clone();
    s.image = "".into();
    refused(&mut w, s, "image");
    let mut s = base.clone();
    s.env = vec!["=x".into()];
    refused(&mut w, s, "env[0]");
    let mut s = base.clone();
    s.endpoint.mode = EndpointMode::Dnsrr;
    s.endpoint.ports = vec![port(80, Some(80))];
    refused(&mut w, s, "endpoint-mode");
    let mut s = base;
    s.secrets = vec![crate::model::FileRef::named("missing")];
    refused(&mut w, s, "secrets[0]");
}

#[test]
fn port_conflicts_are_refused_with_the_owner() {
    let mut w = World::new(0);
    let mut a = ServiceSpec::new("a", "nginx");
    a.endpoint.ports = vec![port(80, Some(8080))];
    w.create(a);
    let mut b = ServiceSpec::new("b", "nginx");
    b.endpoint.ports = vec![port(80, Some(8080))];
    let before = w.state.clone();
    let err = w.apply(Command::CreateService { spec: b }).unwrap_err().to_string();
    assert!(err.contains("8080/tcp") && err.contains("service a"), "{err}");
    assert_eq!(w.state, before);
}

#[test]
fn duplicate_names_are_refused() {
    let mut w = World::new(0);
    w.create(ServiceSpec::new("a", "nginx"));
    assert!(matches!(w.apply(Command::CreateService { spec: ServiceSpec::new("a", "x") }), Err(StateError::AlreadyExists { .. })));
    net(&mut w, "n", None).unwrap();
    assert!(matches!(net(&mut w, "n", None), Err(StateError::AlreadyExists { .. })));
}

#[test]
fn networks_get_vnis_and_disjoint_subnets() {
    let mut w = World::new(0);
    net(&mut w, "a", None).unwrap();
    net(&mut w, "b", Some("10.0.5.0/24")).unwrap();
    net(&mut w, "c", None).unwrap();
    let nets: Vec<_> = w.state.networks.values().collect();
    let mut vnis: Vec<u32> = nets.iter().map(|n| n.vni).collect();
    vnis.sort();
    // ingress, the gateway bridge, then a, b, c.
    assert_eq!(vnis, vec![4096, 4097, 4098, 4099, 4100]);
    for x in &nets {
        for y in &nets {
            if x.id != y.id {
                assert!(!crate::allocator::subnet::overlaps(&x.subnet, &y.subnet), "{} {}", x.subnet, y.subnet);
            }
        }
    }
    let err = net(&mut w, "d", Some("10.0.5.128/25")).unwrap_err().to_string();
    assert!(err.contains("subnet") && err.contains("overlaps"), "{err}");
    let err = net(&mut w, "e", Some("192.168.1.0/24")).unwrap_err().to_string();
    assert!(err.contains("node address 192.168.1.1"), "{err}");
}

#[test]
fn tasks_get_addresses_and_services_vips() {
    let mut w = World::new(1);
    net(&mut w, "backend", None).unwrap();
    let mut s = ServiceSpec::new("web", "nginx");
    s.mode = ServiceMode::Replicated { replicas: 3 };
    s.networks = vec!["backend".into()];
    s.endpoint.ports = vec![port(80, None)];
    let sid = w.create(s);
    let svc = &w.state.services[&sid];
    assert_eq!(svc.ports[0].published, Some(30000));
    assert_eq!(svc.network_ids.len(), 2, "ingress + backend");
    assert_eq!(svc.vips.len(), 2);
    let backend = w.state.find_network("backend").unwrap().clone();
    let vip = svc.vips.iter().find(|v| v.network_id == backend.id).unwrap();
    assert!(backend.subnet.contains(&vip.addr));
    let mut addrs = vec![vip.addr, backend.gateway];
    for t in w.live(&sid) {
        assert_eq!(t.networks.len(), 2);
        let a = t.networks.iter().find(|a| a.network_id == backend.id).unwrap();
        assert!(backend.subnet.contains(&a.addr));
        assert!(a.mac.starts_with("02:42:"));
        addrs.push(a.addr);
    }
    // Each node running a task got one LB address on the network.
    let backend = w.state.find_network("backend").unwrap();
    assert_eq!(backend.lb_addrs.len(), 2);
    addrs.extend(backend.lb_addrs.values().copied());
    let n = addrs.len();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), n, "addresses are unique");
}

#[test]
fn ended_tasks_give_addresses_back() {
    let mut w = World::new(0);
    let n = net(&mut w, "tiny", Some("10.9.9.0/29")).unwrap();
    let _ = n;
    let mut s = ServiceSpec::new("web", "nginx");
    s.networks = vec!["tiny".into()];
    s.endpoint.mode = EndpointMode::Dnsrr;
    s.restart.delay_ms = 0;
    let sid = w.create(s);
    // /29: 6 hosts, gateway + 1 LB address leaves 4: many restarts must not exhaust it.
    for _ in 0..10 {
        let id = w.live(&sid)[0].id.clone();
        w.report(&id, TaskState::Failed);
    }
    let t = w.live(&sid)[0];
    assert_eq!(t.status.state, TaskState::Assigned, "{}", t.status.message);
}

#[test]
fn network_in_use_cannot_be_removed() {
    let mut w = World::new(0);
    net(&mut w, "backend", None).unwrap();
    let mut s = ServiceSpec::new("web", "nginx");
    s.networks = vec!["backend".into()];
    w.create(s);
    let err = w.apply(Command::RemoveNetwork { network: "backend".into() }).unwrap_err().to_string();
    assert!(err.contains("in use by service web"), "{err}");
    w.ok(Command::RemoveService { service: "web".into() });
    w.ok(Command::RemoveNetwork { network: "backend".into() });
}

#[test]
fn agent_reports_only_move_forward_and_only_from_the_owner() {
    let mut w = World::new(1);
    let sid = w.create(ServiceSpec::new("web", "nginx"));
    let t = w.live(&sid)[0].clone();
    let owner = t.node_id.clone().unwrap();
    let other = if owner == "n1" { "n2" } else { "n1" };
    w.ok(Command::TaskStatus {
        node: other.into(),
        updates: vec![(t.id.clone(), crate::model::TaskStatus::new(TaskState::Running, "", 0))],
    });
    assert_eq!(w.state.tasks[&t.id].status.state, TaskState::Assigned);
    w.report(&t.id, TaskState::Running);
    w.report(&t.id, TaskState::Starting);
    assert_eq!(w.state.tasks[&t.id].status.state, TaskState::Running);
}

#[test]
fn last_manager_cannot_be_demoted_and_managers_not_removed() {
    let mut w = World::new(1);
    let err = w
        .apply(Command::UpdateNode {
            node: "n1".into(),
            availability: None,
            role: Some(crate::model::Role::Worker),
            label_add: Default::default(),
            label_rm: vec![],
        })
        .unwrap_err();
    assert!(err.to_string().contains("last manager"));
    let err = w.apply(Command::RemoveNode { node: "n1".into(), force: true }).unwrap_err();
    assert!(err.to_string().contains("demote"));
    let err = w.apply(Command::RemoveNode { node: "n2".into(), force: false }).unwrap_err();
    assert!(err.to_string().contains("--force"));
    w.ok(Command::RemoveNode { node: "n2".into(), force: true });
}

#[test]
fn a_batch_applies_each_command_on_its_own() {
    let mut w = World::new(0);
    let r = w.ok(Command::Batch(vec![
        Command::CreateService { spec: ServiceSpec::new("good", "nginx") },
        Command::CreateService { spec: ServiceSpec::new("-bad", "nginx") },
        Command::ScaleService { service: "good".into(), replicas: 2 },
    ]));
    let crate::state::Response::Batch(results) = r else { panic!("{r:?}") };
    assert!(results[0].is_ok());
    assert!(results[1].as_ref().unwrap_err().to_string().contains("name"));
    assert!(results[2].is_ok());
    let sid = w.state.find_service("good").unwrap().id.clone();
    assert_eq!(w.live(&sid).len(), 2);
    assert!(w.state.find_service("-bad").is_err());
}

#[test]
fn bad_health_checks_name_the_flag_and_change_nothing() {
    let mut w = World::new(1);
    let with = |f: &dyn Fn(&mut crate::model::HealthCheck)| {
        let mut s = ServiceSpec::new("web", "shoal/whoami");
        let mut h = crate::model::HealthCheck::new("true");
        f(&mut h);
        s.healthcheck = Some(h);
        s
    };
    refused(&mut w, with(&|h| h.cmd = " ".into()), "health-cmd");
    refused(&mut w, with(&|h| h.interval_ms = 0), "health-interval");
    refused(&mut w, with(&|h| h.timeout_ms = 0), "health-timeout");
    refused(&mut w, with(&|h| h.retries = 0), "health-retries");
    refused(&mut w, with(&|h| h.start_period_ms = 90_000_000), "health-start-period");
    w.create(with(&|_| {}));
}

#[test]
fn a_task_with_a_health_check_is_an_endpoint_only_when_healthy() {
    use crate::model::Health;
    let mut w = World::new(0);
    let sid = w.create(ServiceSpec::new("web", "shoal/whoami"));
    w.report_all(TaskState::Running);
    let mut t = w.live(&sid)[0].clone();
    assert!(t.is_endpoint(), "no health check: running is enough");
    for (health, endpoint) in [(Health::Starting, false), (Health::Healthy, true), (Health::Unhealthy, false)] {
        t.status.health = Some(health);
        assert_eq!(t.is_endpoint(), endpoint, "{health:?}");
    }
}

#[test]
fn the_ports_the_clusters_daemons_listen_on_cannot_be_published() {
    let mut w = World::new(0);
    // The managers listen where `--listen-addr` said: n1 on 2377, a second manager on 4000.
    w.state.nodes.get_mut("n1").unwrap().manager_addr = Some("192.168.1.1:2377".into());
    let mut m2 = crate::testkit::node("n2", crate::model::Role::Manager);
    m2.manager_addr = Some("192.168.1.2:4000".into());
    w.ok(Command::AddNode { node: m2 });
    for (proto, port, what) in
        [(Protocol::Tcp, 2377, "manager API of host-n1"), (Protocol::Tcp, 4000, "manager API of host-n2"), (Protocol::Udp, 4789, "VXLAN")]
    {
        let mut s = ServiceSpec::new("web", "shoal/whoami");
        s.endpoint.ports.push(PortConfig { protocol: proto, target: 80, published: Some(port), mode: PublishMode::Ingress });
        let before = w.state.clone();
        let err = w.apply(Command::CreateService { spec: s }).unwrap_err().to_string();
        assert!(err.contains("ports[0].published") && err.contains(what), "{err}");
        assert_eq!(w.state, before);
    }
    // What nothing listens on is free: 2377/udp, and 7946 (no gossip listener yet).
    for (name, proto, port) in [("a", Protocol::Udp, 2377), ("b", Protocol::Tcp, 7946), ("c", Protocol::Udp, 7946)] {
        let mut s = ServiceSpec::new(name, "shoal/whoami");
        s.endpoint.ports.push(PortConfig { protocol: proto, target: 80, published: Some(port), mode: PublishMode::Ingress });
        w.create(s);
    }
}

#[test]
fn sctp_ports_are_refused_naming_the_field() {
    let mut w = World::new(0);
    for published in [None, Some(9000)] {
        let mut s = ServiceSpec::new("web", "shoal/whoami");
        s.endpoint.ports.push(PortConfig { protocol: Protocol::Sctp, target: 9000, published, mode: PublishMode::Ingress });
        refused(&mut w, s, "ports[0].protocol");
    }
}

#[test]
fn a_service_without_networks_gets_the_gateway_bridge_and_no_vip() {
    let mut w = World::new(1);
    let gw = w.state.networks.values().find(|n| n.spec.node_local).expect("init makes the gateway bridge").clone();
    assert_eq!(gw.spec.name, crate::model::GATEWAY_NETWORK);
    assert_eq!(gw.subnet.to_string(), "172.18.0.0/16");
    let sid = w.create(ServiceSpec::new("big", "host"));
    let svc = &w.state.services[&sid];
    assert_eq!(svc.network_ids, vec![gw.id.clone()]);
    assert!(svc.vips.is_empty(), "the gateway bridge is node-local: no VIP");
    w.report_all(TaskState::Running);
    let t = w.live(&sid)[0];
    assert_eq!(t.networks.len(), 1);
    assert!(gw.subnet.contains(&t.networks[0].addr));
    assert!(w.state.networks[&gw.id].lb_addrs.is_empty(), "no LB address on the gateway bridge");
    // It cannot be named, removed, or made twice.
    let mut s = ServiceSpec::new("web", "shoal/whoami");
    s.networks = vec![crate::model::GATEWAY_NETWORK.into()];
    refused(&mut w, s, "networks[0]");
    assert!(w.apply(Command::RemoveNetwork { network: crate::model::GATEWAY_NETWORK.into() }).is_err());
    // A service on an overlay network does not get it.
    net(&mut w, "backend", None).unwrap();
    let mut s = ServiceSpec::new("web", "shoal/whoami");
    s.networks = vec!["backend".into()];
    let sid = w.create(s);
    assert!(!w.state.services[&sid].network_ids.contains(&gw.id));
}

#[test]
fn the_gateway_bridge_moves_off_a_subnet_a_node_uses() {
    let mut w = World { state: crate::state::ClusterState::default(), now: 1 };
    let mut n1 = crate::testkit::node("n1", crate::model::Role::Manager);
    n1.addr = "172.18.0.5".into();
    w.ok(Command::Init { cluster: crate::testkit::cluster(), node: n1 });
    let gw = w.state.networks.values().find(|n| n.spec.node_local).unwrap();
    assert_eq!(gw.subnet.to_string(), "172.19.0.0/16");
}

#[test]
fn every_node_gets_an_ingress_lb_address_tasks_or_not() {
    let mut w = World::new(2);
    let ingress = w.state.ingress_network().unwrap();
    assert_eq!(ingress.lb_addrs.len(), 3, "every node answers on published ports: {:?}", ingress.lb_addrs);
    w.ok(Command::AddNode { node: crate::testkit::node("n9", crate::model::Role::Worker) });
    assert!(w.state.ingress_network().unwrap().lb_addrs.contains_key("n9"), "a node that joins gets one too");
    // Other networks: only nodes with tasks there.
    net(&mut w, "backend", None).unwrap();
    let backend = w.state.networks.values().find(|n| n.spec.name == "backend").unwrap();
    assert!(backend.lb_addrs.is_empty());
}

#[test]
fn encrypted_alone_picks_the_best_backend_every_node_reported_and_keeps_it() {
    use crate::model::{EncryptionBackend, EncryptionSupport};
    let mut w = World::new(2);
    let create = |w: &mut World, name: &str, value: &str| {
        let mut spec = NetworkSpec { name: name.into(), driver: "overlay".into(), ..Default::default() };
        spec.options.insert("encrypted".into(), value.into());
        w.ok(Command::CreateNetwork { spec });
        w.state.find_network(name).unwrap().encryption
    };
    // The test nodes reported nothing: WireGuard, which runs anywhere there is a TUN device.
    assert_eq!(create(&mut w, "a", ""), Some(EncryptionBackend::Wireguard));
    // Every kernel has ESP, one lacks WireGuard: IPsec (kernel crypto on every node).
    let ids: Vec<_> = w.state.nodes.keys().cloned().collect();
    for (i, id) in ids.iter().enumerate() {
        w.ok(Command::SetNodeEncryption {
            node: id.clone(),
            encryption: EncryptionSupport { kernel_wireguard: i > 0, esp: true, tun: true },
        });
    }
    assert_eq!(create(&mut w, "b", "true"), Some(EncryptionBackend::Ipsec));
    // Forcing a backend is honoured whatever the nodes have.
    assert_eq!(create(&mut w, "c", "wireguard"), Some(EncryptionBackend::Wireguard));
    // Every kernel has WireGuard: WireGuard.
    // (A node says what its kernel offers at each session start: after a reboot, more.)
    for id in &ids {
        w.ok(Command::SetNodeEncryption {
            node: id.clone(),
            encryption: EncryptionSupport { kernel_wireguard: true, esp: true, tun: true },
        });
    }
    assert_eq!(create(&mut w, "d", ""), Some(EncryptionBackend::Wireguard));
    let before = w.state.clone();
    let err = w.apply(Command::SetNodeEncryption { node: "ghost".into(), encryption: EncryptionSupport::default() }).unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
    assert_eq!(w.state.nodes, before.nodes, "a refused command changes nothing");
    // A network keeps the backend it was made with when the nodes change.
    w.ok(Command::AddNode { node: crate::testkit::node("n9", crate::model::Role::Worker) });
    assert_eq!(w.state.find_network("b").unwrap().encryption, Some(EncryptionBackend::Ipsec));
}

#[test]
fn an_encrypted_network_records_its_backend_and_one_it_cannot_run_is_refused_never_made_in_plaintext() {
    let mut w = World::new(0);
    for (i, value) in ["", "wireguard"].into_iter().enumerate() {
        let mut spec = NetworkSpec { name: format!("secure{i}"), driver: "overlay".into(), ..Default::default() };
        spec.options.insert("encrypted".into(), value.into());
        w.ok(Command::CreateNetwork { spec });
        let n = w.state.find_network(&format!("secure{i}")).unwrap();
        assert_eq!(n.encryption, Some(crate::model::EncryptionBackend::Wireguard));
        assert!(n.is_encrypted());
    }
    // IPsec is a backend of its own (ESP between the nodes), recorded as asked.
    let mut spec = NetworkSpec { name: "esp".into(), driver: "overlay".into(), ..Default::default() };
    spec.options.insert("encrypted".into(), "ipsec".into());
    w.ok(Command::CreateNetwork { spec });
    let n = w.state.find_network("esp").unwrap();
    assert_eq!(n.encryption, Some(crate::model::EncryptionBackend::Ipsec));
    assert!(n.is_encrypted());
    for value in ["rot13", "aes"] {
        let before = w.state.clone();
        let mut spec = NetworkSpec { name: "secure".into(), driver: "overlay".into(), ..Default::default() };
        spec.options.insert("encrypted".into(), value.into());
        let err = w.apply(Command::CreateNetwork { spec }).unwrap_err().to_string();
        assert!(
            err.contains("opt encrypted") && err.contains(&format!("--opt encrypted={value}")) && err.contains("use --opt encrypted"),
            "{err}"
        );
        assert_eq!(w.state, before, "a refused network changed the state");
    }
}
