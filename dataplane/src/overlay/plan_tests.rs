//! Planner tests. `Sim` is a small model of the kernel that executes planned operations, so
//! "apply, then plan again" is checked without root.

use std::net::Ipv4Addr;

use crate::netlink::{Addr, Fdb, Link, LinkKind, Mac, Neigh, Route, Rule, RuleAction, VxlanInfo};
use crate::state::{DesiredNode, Endpoint, Network, NodeInfo};

use super::observe::{Observed, TaskSide};
use super::op::Op;
use super::{names, plan, plan_teardown, PlanError};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn state() -> DesiredNode {
    DesiredNode {
        node: "smgr".into(),
        nodes: vec![
            NodeInfo { name: "smgr".into(), address: ip("192.168.33.10"), wireguard: None },
            NodeInfo { name: "snode1".into(), address: ip("192.168.33.20"), wireguard: None },
            NodeInfo { name: "snode2".into(), address: ip("192.168.33.30"), wireguard: None },
        ],
        networks: vec![Network {
            name: "backend".into(),
            vni: 4097,
            subnet: "10.0.9.0/24".parse().unwrap(),
            gateway: None,
            mtu: None,
            lb_addresses: [("smgr".to_string(), ip("10.0.9.250")), ("snode1".to_string(), ip("10.0.9.251"))].into_iter().collect(),
            internal: false,
            local: false,
            encrypted: None,
        }],
        endpoints: vec![
            ep("web.1", "backend", "smgr", "10.0.9.2", Some("t-web1")),
            ep("web.2", "backend", "snode1", "10.0.9.3", None),
            ep("web.3", "backend", "snode2", "10.0.9.4", None),
        ],
        services: vec![],
        wireguard_private_key: None,
    }
}

fn ep(id: &str, net: &str, node: &str, addr: &str, ns: Option<&str>) -> Endpoint {
    Endpoint {
        id: id.into(),
        network: net.into(),
        node: node.into(),
        ip: ip(addr),
        mac: None,
        netns: ns.map(String::from),
        ..Default::default()
    }
}

/// A node namespace with just its underlay interface.
fn bare() -> Observed {
    Observed {
        links: vec![Link {
            index: 2,
            name: "eth0".into(),
            kind: LinkKind::Veth,
            mtu: 1500,
            up: true,
            master: None,
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            alias: None,
        }],
        addrs: vec![Addr { ifindex: 2, ip: ip("192.168.33.10"), prefix: 24 }],
        ..Default::default()
    }
}

/// Executes operations against an `Observed`, the way the kernel would.
struct Sim {
    obs: Observed,
    next: u32,
}

impl Sim {
    fn new(obs: Observed) -> Self {
        Self { obs, next: 100 }
    }

    fn index(&self, name: &str) -> u32 {
        self.obs.link(name).unwrap_or_else(|| panic!("no link {name}")).index
    }

    fn link_mut(&mut self, name: &str) -> &mut Link {
        self.obs.links.iter_mut().find(|l| l.name == name).unwrap_or_else(|| panic!("no link {name}"))
    }

    fn add_link(&mut self, name: &str, kind: LinkKind, mtu: u32, mac: Option<Mac>, alias: &str) {
        assert!(self.obs.link(name).is_none(), "{name} exists");
        self.next += 1;
        self.obs.links.push(Link {
            index: self.next,
            name: name.into(),
            kind,
            mtu,
            up: false,
            master: None,
            mac: Some(mac.unwrap_or(Mac([2, 9, 9, 0, 0, self.next as u8]))),
            alias: Some(alias.into()),
        });
    }

    fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.step(op);
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::EnableForwarding => self.obs.ip_forward = true,
            Op::DisableBridgeNetfilter => self.obs.bridge_nf = Some(false),
            Op::CreateBridge { name, mtu, mac, alias } => self.add_link(name, LinkKind::Bridge, *mtu, *mac, alias),
            Op::CreateVxlan { name, vni, local, mtu, alias, .. } => {
                let v = VxlanInfo { vni: *vni, local: Some(*local), port: 4789, learning: false, proxy: true };
                self.add_link(name, LinkKind::Vxlan(v), *mtu, None, alias)
            }
            Op::DeleteLink { name } => {
                let i = self.index(name);
                self.obs.links.retain(|l| l.index != i);
                self.obs.addrs.retain(|a| a.ifindex != i);
                self.obs.fdb.retain(|f| f.ifindex != i);
                self.obs.neighbours.retain(|n| n.ifindex != i);
                self.obs.routes.retain(|r| r.oif != Some(i));
            }
            Op::SetMtu { link, mtu } => self.link_mut(link).mtu = *mtu,
            Op::SetMac { link, mac } => self.link_mut(link).mac = Some(*mac),
            Op::SetMaster { link, master } => {
                let m = self.index(master);
                self.link_mut(link).master = Some(m)
            }
            Op::SetUp { link } => self.link_mut(link).up = true,
            Op::AddAddr { link, ip, prefix } => {
                let a = Addr { ifindex: self.index(link), ip: *ip, prefix: *prefix };
                assert!(!self.obs.addrs.contains(&a), "address exists: {op}");
                self.obs.addrs.push(a)
            }
            Op::DelAddr { link, ip, prefix } => {
                let a = Addr { ifindex: self.index(link), ip: *ip, prefix: *prefix };
                self.obs.addrs.retain(|x| *x != a)
            }
            Op::AddFdb { link, mac, dst } => {
                let i = self.index(link);
                self.obs.fdb.retain(|f| !(f.ifindex == i && f.mac == *mac));
                self.obs.fdb.push(Fdb { ifindex: i, mac: *mac, dst: *dst })
            }
            Op::DelFdb { link, mac, dst } => {
                let f = Fdb { ifindex: self.index(link), mac: *mac, dst: *dst };
                assert!(self.obs.fdb.contains(&f), "no such fdb: {op}");
                self.obs.fdb.retain(|x| *x != f)
            }
            Op::AddNeigh { link, ip, mac } => {
                let i = self.index(link);
                assert!(!self.obs.neighbours.iter().any(|n| n.ifindex == i && n.ip == *ip), "neighbour exists: {op}");
                self.obs.neighbours.push(Neigh { ifindex: i, ip: *ip, mac: *mac })
            }
            Op::DelNeigh { link, ip, .. } => {
                let i = self.index(link);
                self.obs.neighbours.retain(|n| !(n.ifindex == i && n.ip == *ip))
            }
            Op::AddRoute(r) => {
                let oif = r.dev.as_ref().map(|d| self.index(d));
                if let Some(d) = &r.dev {
                    assert!(self.obs.link(d).unwrap().up, "route via a down device: {op}");
                }
                if let Some(src) = r.src {
                    assert!(self.obs.addrs.iter().any(|a| a.ip == src), "src not local: {op}");
                }
                self.obs.routes.push(Route { table: r.table, dst: r.dst, prefix: r.prefix, oif, gateway: None, src: r.src })
            }
            Op::DelRoute(r) => {
                let oif = r.dev.as_ref().map(|d| self.index(d));
                let before = self.obs.routes.len();
                self.obs.routes.retain(|x| !(x.table == r.table && x.dst == r.dst && x.prefix == r.prefix && x.oif == oif));
                assert_eq!(before, self.obs.routes.len() + 1, "no such route: {op}");
            }
            Op::AddRule { priority, iif, table } => {
                self.obs.rules.push(Rule { priority: *priority, iif: iif.clone(), action: RuleAction::Lookup(*table) })
            }
            Op::DelRule { priority, iif, table } => {
                let r = Rule { priority: *priority, iif: iif.clone(), action: RuleAction::Lookup(*table) };
                self.obs.rules.retain(|x| *x != r)
            }
            Op::CreateNetns { name } => {
                assert!(!self.obs.tasks.contains_key(name));
                self.obs.tasks.insert(name.clone(), TaskSide::default());
            }
            Op::DeleteNetns { name } => {
                self.obs.tasks.remove(name);
            }
            Op::CreateVeth { host, netns, ifname, mtu, mac, alias } => {
                self.add_link(host, LinkKind::Veth, *mtu, None, alias);
                let t = self.obs.tasks.get_mut(netns).expect("netns exists before its veth");
                assert!(t.iface(ifname).is_none(), "{ifname} exists already: {op}");
                let index = 2 + t.ifaces.len() as u32;
                t.ifaces.push(Link {
                    index,
                    name: ifname.clone(),
                    kind: LinkKind::Veth,
                    mtu: *mtu,
                    up: false,
                    master: None,
                    mac: Some(*mac),
                    alias: None,
                });
            }
            Op::ConfigureTask { netns, ifname, ip, prefix, gateway, mtu, mac } => {
                let t = self.obs.tasks.get_mut(netns).expect("netns");
                let iface = t.ifaces.iter_mut().find(|l| &l.name == ifname).expect("the interface exists");
                iface.mtu = *mtu;
                iface.mac = Some(*mac);
                iface.up = true;
                let index = iface.index;
                t.addrs.retain(|a| a.ifindex != index);
                t.addrs.push(Addr { ifindex: index, ip: *ip, prefix: *prefix });
                if let Some(gw) = gateway {
                    t.routes =
                        vec![Route { table: 254, dst: Ipv4Addr::UNSPECIFIED, prefix: 0, oif: Some(index), gateway: Some(*gw), src: None }];
                }
            }
        }
    }
}

fn converge(desired: &DesiredNode, from: Observed) -> Sim {
    let ops = plan(desired, &from).expect("plan");
    let mut sim = Sim::new(from);
    sim.run(&ops);
    sim
}

fn count(ops: &[Op], pred: impl Fn(&Op) -> bool) -> usize {
    ops.iter().filter(|o| pred(o)).count()
}

#[test]
fn fresh_node_gets_the_whole_overlay() {
    let ops = plan(&state(), &bare()).unwrap();
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(ops[0], Op::EnableForwarding);
    assert!(text.contains(&"create bridge shb-4097 mtu 1450".to_string()), "{text:#?}");
    assert!(text.contains(&"create vxlan shv-4097 id 4097 local 192.168.33.10 dev eth0 mtu 1450".to_string()));
    assert!(text.contains(&"add address 10.0.9.1/32 dev shb-4097".to_string()));
    assert!(text.contains(&"add address 10.0.9.250/32 dev shb-4097".to_string()));
    // two remote task endpoints + one remote LB address
    assert_eq!(count(&ops, |o| matches!(o, Op::AddFdb { .. })), 3);
    assert_eq!(count(&ops, |o| matches!(o, Op::AddNeigh { .. })), 3);
    assert!(ops.contains(&Op::AddFdb { link: "shv-4097".into(), mac: Mac::from_ipv4(ip("10.0.9.3")), dst: ip("192.168.33.20") }));
    assert!(ops.contains(&Op::AddFdb { link: "shv-4097".into(), mac: Mac::from_ipv4(ip("10.0.9.4")), dst: ip("192.168.33.30") }));
    assert!(ops.contains(&Op::CreateNetns { name: "t-web1".into() }));
    assert!(ops.contains(&Op::CreateVeth {
        host: names::veth("web.1"),
        netns: "t-web1".into(),
        ifname: "eth0".into(),
        mtu: 1450,
        mac: Mac::from_ipv4(ip("10.0.9.2")),
        alias: "shoal ep=web.1 ns=t-web1".into()
    }));
    assert!(text.contains(&"configure t-web1:eth0 10.0.9.2/24 via 10.0.9.1 mtu 1450".to_string()));
    assert!(text.contains(&"add rule 30100 iif shb-4097 lookup 1000004097".to_string()));
    assert!(text.contains(&"add rule 30200 iif shb-4097 lookup 1000000000".to_string()));
    assert!(text.contains(&"add route unreachable 10.0.9.0/24 table 1000000000".to_string()));
    assert!(text.contains(&"add route 10.0.9.0/24 dev shb-4097 src 10.0.9.250 table 254".to_string()));
    // the bridge's MAC is derived from this node's LB address, so peers know it
    assert!(ops.contains(&Op::CreateBridge {
        name: "shb-4097".into(),
        mtu: 1450,
        mac: Some(Mac::from_ipv4(ip("10.0.9.250"))),
        alias: "shoal net=backend".into()
    }));
}

#[test]
fn applying_twice_changes_nothing() {
    let sim = converge(&state(), bare());
    let again = plan(&state(), &sim.obs).unwrap();
    assert!(again.is_empty(), "second plan should be empty: {again:#?}");
}

#[test]
fn remote_endpoint_change_is_o1() {
    let sim = converge(&state(), bare());
    let mut s = state();
    s.endpoints.push(ep("web.4", "backend", "snode2", "10.0.9.5", None));
    let ops = plan(&s, &sim.obs).unwrap();
    assert_eq!(ops.len(), 2, "{ops:#?}");
    assert!(ops.iter().all(|o| matches!(o, Op::AddFdb { .. } | Op::AddNeigh { .. })));

    let mut s = state();
    s.endpoints.retain(|e| e.id != "web.3");
    let ops = plan(&s, &sim.obs).unwrap();
    assert_eq!(
        ops,
        vec![
            Op::DelNeigh { link: "shv-4097".into(), ip: ip("10.0.9.4"), mac: Mac::from_ipv4(ip("10.0.9.4")) },
            Op::DelFdb { link: "shv-4097".into(), mac: Mac::from_ipv4(ip("10.0.9.4")), dst: ip("192.168.33.30") },
        ]
    );
}

#[test]
fn endpoint_moving_to_another_node_updates_its_vtep() {
    let sim = converge(&state(), bare());
    let mut s = state();
    s.endpoints[2].node = "snode1".into();
    let ops = plan(&s, &sim.obs).unwrap();
    let mut sim2 = Sim::new(sim.obs.clone());
    sim2.run(&ops);
    assert!(sim2.obs.fdb.iter().any(|f| f.mac == Mac::from_ipv4(ip("10.0.9.4")) && f.dst == ip("192.168.33.20")));
    assert!(!sim2.obs.fdb.iter().any(|f| f.dst == ip("192.168.33.30")));
    assert!(plan(&s, &sim2.obs).unwrap().is_empty());
}

#[test]
fn removing_a_network_deletes_its_links_rules_and_isolation_route() {
    let mut s = state();
    s.networks.push(Network {
        name: "frontend".into(),
        vni: 4098,
        subnet: "10.0.10.0/24".parse().unwrap(),
        gateway: None,
        mtu: None,
        lb_addresses: Default::default(),
        internal: false,
        local: false,
        encrypted: None,
    });
    s.endpoints.push(ep("fe.1", "frontend", "smgr", "10.0.10.2", Some("t-fe1")));
    let sim = converge(&s, bare());
    let ops = plan(&state(), &sim.obs).unwrap();
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert!(text.contains(&"delete link shb-4098".to_string()), "{text:#?}");
    assert!(text.contains(&"delete link shv-4098".to_string()));
    assert!(text.contains(&format!("delete link {}", names::veth("fe.1"))));
    assert!(text.contains(&"delete netns t-fe1".to_string()));
    assert!(text.contains(&"delete route unreachable 10.0.10.0/24 table 1000000000".to_string()));
    assert_eq!(count(&ops, |o| matches!(o, Op::DelRule { .. })), 2);
    // entries on the deleted links go with them: no per-entry deletions
    assert_eq!(count(&ops, |o| matches!(o, Op::DelAddr { .. } | Op::DelFdb { .. } | Op::DelNeigh { .. })), 0);
    let mut sim2 = Sim::new(sim.obs.clone());
    sim2.run(&ops);
    assert!(plan(&state(), &sim2.obs).unwrap().is_empty());
}

#[test]
fn a_misconfigured_vxlan_is_recreated_with_its_entries() {
    let mut sim = converge(&state(), bare());
    if let LinkKind::Vxlan(v) = &mut sim.link_mut("shv-4097").kind {
        v.learning = true;
    }
    let ops = plan(&state(), &sim.obs).unwrap();
    assert!(ops.contains(&Op::DeleteLink { name: "shv-4097".into() }));
    assert_eq!(count(&ops, |o| matches!(o, Op::AddFdb { .. })), 3, "{ops:#?}");
    sim.run(&ops);
    assert!(plan(&state(), &sim.obs).unwrap().is_empty());
}

#[test]
fn restart_adoption_repairs_only_the_difference() {
    let mut sim = converge(&state(), bare());
    // somebody deleted an FDB entry and took the bridge down while the agent was away
    let vx = sim.index("shv-4097");
    sim.obs.fdb.retain(|f| !(f.ifindex == vx && f.dst == ip("192.168.33.30")));
    sim.link_mut("shb-4097").up = false;
    let ops = plan(&state(), &sim.obs).unwrap();
    assert_eq!(
        ops,
        vec![
            Op::SetUp { link: "shb-4097".into() },
            Op::AddFdb { link: "shv-4097".into(), mac: Mac::from_ipv4(ip("10.0.9.4")), dst: ip("192.168.33.30") },
        ]
    );
}

#[test]
fn broken_task_side_is_reconfigured_without_recreating_the_veth() {
    let mut sim = converge(&state(), bare());
    sim.obs.tasks.get_mut("t-web1").unwrap().addrs.clear();
    let ops = plan(&state(), &sim.obs).unwrap();
    assert_eq!(ops.len(), 1);
    assert!(matches!(ops[0], Op::ConfigureTask { .. }));
}

#[test]
fn a_vanished_task_namespace_is_rebuilt() {
    let mut sim = converge(&state(), bare());
    sim.obs.tasks.clear();
    let host = names::veth("web.1");
    sim.obs.links.retain(|l| l.name != host); // the veth died with its peer
    let ops = plan(&state(), &sim.obs).unwrap();
    assert!(ops.contains(&Op::CreateNetns { name: "t-web1".into() }));
    sim.run(&ops);
    assert!(plan(&state(), &sim.obs).unwrap().is_empty());
}

#[test]
fn teardown_removes_everything_shoal_made() {
    let sim = converge(&state(), bare());
    let ops = plan_teardown(&sim.obs);
    let mut sim2 = Sim::new(sim.obs.clone());
    sim2.run(&ops);
    assert_eq!(sim2.obs.links.len(), 1, "only the underlay stays: {:#?}", sim2.obs.links);
    assert!(sim2.obs.rules.is_empty());
    assert!(sim2.obs.routes.is_empty());
    assert!(sim2.obs.tasks.is_empty());
}

#[test]
fn default_mtu_follows_the_underlay() {
    let mut obs = bare();
    obs.links[0].mtu = 9000;
    let ops = plan(&state(), &obs).unwrap();
    assert!(ops.iter().any(|o| matches!(o, Op::CreateBridge { mtu: 8950, .. })));
}

fn invalid_fields(s: &DesiredNode, obs: &Observed) -> Vec<String> {
    match plan(s, obs) {
        Err(PlanError::Invalid(e)) => e.0.iter().map(|f| f.field.clone()).collect(),
        other => panic!("expected invalid state, got {other:?}"),
    }
}

#[test]
fn mtu_above_what_the_underlay_carries_is_refused() {
    let mut s = state();
    s.networks[0].mtu = Some(1500);
    assert_eq!(invalid_fields(&s, &bare()), vec!["networks[0].mtu"]);
    let err = plan(&s, &bare()).unwrap_err().to_string();
    assert!(err.contains("use 1450 or less"), "{err}");
}

#[test]
fn vni_used_by_a_foreign_device_is_refused() {
    let mut obs = bare();
    obs.links.push(Link {
        index: 9,
        name: "vx-ab12".into(),
        kind: LinkKind::Vxlan(VxlanInfo { vni: 4097, local: None, port: 4789, learning: true, proxy: false }),
        mtu: 1450,
        up: true,
        master: None,
        mac: None,
        alias: None,
    });
    assert_eq!(invalid_fields(&state(), &obs), vec!["networks[0].vni"]);
    let err = plan(&state(), &obs).unwrap_err().to_string();
    assert!(err.contains("vxlan id 4097 is already used by vx-ab12"), "{err}");
}

#[test]
fn missing_underlay_is_named() {
    let mut obs = bare();
    obs.addrs.clear();
    let err = plan(&state(), &obs).unwrap_err().to_string();
    assert!(err.contains("192.168.33.10") && err.contains("--netns"), "{err}");
}

/// A change to a valid state, and the field its error must name.
type Breakage = (&'static str, Box<dyn Fn(&mut DesiredNode)>);

#[test]
fn bad_input_names_the_field() {
    let cases: Vec<Breakage> = vec![
        ("networks[0].vni", Box::new(|s| s.networks[0].vni = 0)),
        ("networks[0].vni", Box::new(|s| s.networks[0].vni = 16_777_216)),
        ("networks[0].mtu", Box::new(|s| s.networks[0].mtu = Some(1279))),
        ("networks[0].subnet", Box::new(|s| s.networks[0].subnet = "192.168.33.0/24".parse().unwrap())),
        ("networks[0].gateway", Box::new(|s| s.networks[0].gateway = Some(ip("10.0.10.1")))),
        ("endpoints[1].node", Box::new(|s| s.endpoints[1].node = "snode9".into())),
        ("endpoints[1].network", Box::new(|s| s.endpoints[1].network = "nope".into())),
        ("endpoints[1].ip", Box::new(|s| s.endpoints[1].ip = ip("10.0.8.3"))),
        ("endpoints[1].ip", Box::new(|s| s.endpoints[1].ip = ip("10.0.9.1"))),
        ("endpoints[0].netns", Box::new(|s| s.endpoints[0].netns = None)),
        ("endpoints[2].ip", Box::new(|s| s.endpoints[2].ip = ip("10.0.9.3"))),
        ("node", Box::new(|s| s.node = "ghost".into())),
        ("nodes[1].address", Box::new(|s| s.nodes[1].address = ip("192.168.33.10"))),
    ];
    for (field, change) in cases {
        let mut s = state();
        change(&mut s);
        let fields = invalid_fields(&s, &bare());
        assert!(fields.iter().any(|f| f == field), "expected {field} in {fields:?}");
    }
}

#[test]
fn overlapping_and_duplicate_networks_are_refused() {
    let mut s = state();
    s.networks.push(Network {
        name: "other".into(),
        vni: 4097,
        subnet: "10.0.9.128/25".parse().unwrap(),
        gateway: None,
        mtu: None,
        lb_addresses: Default::default(),
        internal: false,
        local: false,
        encrypted: None,
    });
    let fields = invalid_fields(&s, &bare());
    assert!(fields.contains(&"networks[1].vni".to_string()), "{fields:?}");
    assert!(fields.contains(&"networks[1].subnet".to_string()), "{fields:?}");
    let err = plan(&s, &bare()).unwrap_err().to_string();
    assert!(err.contains("vni 4097 is already used by network 'backend'"), "{err}");
    assert!(err.contains("overlaps 10.0.9.0/24"), "{err}");
}

#[test]
fn networks_are_isolated_by_routing() {
    let mut s = state();
    s.networks.push(Network {
        name: "frontend".into(),
        vni: 4098,
        subnet: "10.0.10.0/24".parse().unwrap(),
        gateway: None,
        mtu: None,
        lb_addresses: Default::default(),
        internal: false,
        local: false,
        encrypted: None,
    });
    let sim = converge(&s, bare());
    // from each bridge: own table first, then the table that makes every overlay unreachable
    let rules: Vec<_> = sim.obs.rules.iter().map(|r| (r.priority, r.iif.as_str(), r.action)).collect();
    for (vni, br) in [(4097, "shb-4097"), (4098, "shb-4098")] {
        assert!(rules.contains(&(30_100, br, RuleAction::Lookup(names::network_table(vni)))));
        assert!(rules.contains(&(30_200, br, RuleAction::Lookup(names::ISOLATION_TABLE))));
    }
    let isolation: Vec<_> = sim.obs.routes.iter().filter(|r| r.table == names::ISOLATION_TABLE).collect();
    assert_eq!(isolation.iter().map(|r| r.dst).collect::<Vec<_>>(), vec![ip("10.0.9.0"), ip("10.0.10.0")]);
    assert!(isolation.iter().all(|r| r.is_unreachable()));
}

#[test]
fn service_vips_are_addresses_on_the_bridge() {
    let mut s = state();
    s.services.push(crate::state::Service {
        name: "vote".into(),
        vips: [("backend".to_string(), ip("10.0.9.100"))].into_iter().collect(),
        ..Default::default()
    });
    let sim = converge(&state(), bare());
    let ops = plan(&s, &sim.obs).unwrap();
    assert_eq!(ops, vec![Op::AddAddr { link: "shb-4097".into(), ip: ip("10.0.9.100"), prefix: 32 }]);
    let ops = plan(&state(), &converge(&s, bare()).obs).unwrap();
    assert_eq!(ops, vec![Op::DelAddr { link: "shb-4097".into(), ip: ip("10.0.9.100"), prefix: 32 }]);
}

#[test]
fn bridge_netfilter_is_turned_off_once_when_present() {
    let mut obs = bare();
    obs.bridge_nf = Some(true);
    let ops = plan(&state(), &obs).unwrap();
    assert_eq!(ops[1], Op::DisableBridgeNetfilter);
    let sim = converge(&state(), obs);
    assert!(plan(&state(), &sim.obs).unwrap().is_empty());
    // a kernel without bridge netfilter: nothing to do
    assert!(!plan(&state(), &bare()).unwrap().contains(&Op::DisableBridgeNetfilter));
}

/// `state()` with a second network, "front", that web.1's namespace also joins.
fn two_network_task() -> DesiredNode {
    let mut s = state();
    s.networks.push(Network {
        name: "front".into(),
        vni: 4098,
        subnet: "10.0.10.0/24".parse().unwrap(),
        gateway: None,
        mtu: None,
        lb_addresses: [("smgr".to_string(), ip("10.0.10.250"))].into_iter().collect(),
        internal: false,
        local: false,
        encrypted: None,
    });
    s.endpoints.push(ep("web.1.front", "front", "smgr", "10.0.10.2", Some("t-web1")));
    s
}

#[test]
fn a_task_on_two_networks_gets_eth0_with_the_default_route_and_eth1_without() {
    let s = two_network_task();
    s.validate().expect("two endpoints of one namespace on different networks are valid");
    let ops = plan(&s, &bare()).unwrap();
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert!(text.contains(&"configure t-web1:eth0 10.0.9.2/24 via 10.0.9.1 mtu 1450".to_string()), "{text:#?}");
    assert!(text.contains(&"configure t-web1:eth1 10.0.10.2/24 mtu 1450".to_string()), "{text:#?}");
    assert!(ops.contains(&Op::CreateVeth {
        host: names::veth("web.1.front"),
        netns: "t-web1".into(),
        ifname: "eth1".into(),
        mtu: 1450,
        mac: Mac::from_ipv4(ip("10.0.10.2")),
        alias: "shoal ep=web.1.front ns=t-web1 if=eth1".into()
    }));
    assert_eq!(count(&ops, |o| matches!(o, Op::CreateNetns { .. })), 1, "one namespace for both interfaces");
    let sim = converge(&s, bare());
    let t = &sim.obs.tasks["t-web1"];
    assert_eq!(t.ifaces.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["eth0", "eth1"]);
    assert_eq!(t.routes.len(), 1, "one default route, via eth0: {:?}", t.routes);
    assert_eq!(t.routes[0].oif, t.iface("eth0").map(|l| l.index));
    assert_eq!(plan(&s, &sim.obs).unwrap(), vec![], "applying twice changes nothing");
}

#[test]
fn leaving_the_second_network_removes_only_its_interface() {
    let sim = converge(&two_network_task(), bare());
    let ops = plan(&state(), &sim.obs).unwrap();
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert!(ops.contains(&Op::DeleteLink { name: names::veth("web.1.front") }), "{text:#?}");
    assert!(!ops.iter().any(|o| matches!(o, Op::DeleteNetns { .. } | Op::ConfigureTask { .. } | Op::CreateVeth { .. })), "{text:#?}");
}

#[test]
fn a_damaged_second_interface_is_repaired_alone() {
    let s = two_network_task();
    let mut sim = converge(&s, bare());
    let t = sim.obs.tasks.get_mut("t-web1").unwrap();
    let eth1 = t.iface("eth1").unwrap().index;
    t.addrs.retain(|a| a.ifindex != eth1);
    let ops = plan(&s, &sim.obs).unwrap();
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(text, vec!["configure t-web1:eth1 10.0.10.2/24 mtu 1450".to_string()]);
}

#[test]
fn one_namespace_joins_each_network_once() {
    let mut s = state();
    s.endpoints.push(ep("web.1b", "backend", "smgr", "10.0.9.9", Some("t-web1")));
    let err = s.validate().unwrap_err().to_string();
    assert!(
        err.contains("endpoints[3].netns") && err.contains("namespace 't-web1' already has endpoint 'web.1' on network 'backend'"),
        "{err}"
    );
    assert!(err.contains("one endpoint per network per namespace"), "{err}");
}

/// The gateway bridge (node-local) beside `backend`, with a task of this node and one of another.
fn with_gateway_bridge() -> DesiredNode {
    let mut s = state();
    s.networks.push(Network {
        name: "shoal_gwbridge".into(),
        vni: 4098,
        subnet: "172.18.0.0/16".parse().unwrap(),
        gateway: None,
        mtu: None,
        lb_addresses: Default::default(),
        internal: false,
        local: true,
        encrypted: None,
    });
    s.endpoints.push(ep("big.1", "shoal_gwbridge", "smgr", "172.18.0.2", Some("t-big1")));
    s.endpoints.push(ep("big.2", "shoal_gwbridge", "snode1", "172.18.0.3", None));
    s
}

#[test]
fn a_node_local_network_is_a_bridge_without_vxlan_and_knows_no_other_node() {
    let s = with_gateway_bridge();
    let sim = converge(&s, bare());
    assert!(sim.obs.link("shb-4098").is_some(), "the bridge is made");
    assert!(sim.obs.link("shv-4098").is_none(), "no VXLAN device for a node-local network");
    let gw_bridge = sim.obs.link("shb-4098").unwrap().index;
    assert!(
        sim.obs.links.iter().any(|l| l.master == Some(gw_bridge) && l.name.starts_with(names::VETH_PREFIX)),
        "the local task is attached"
    );
    assert!(!sim.obs.neighbours.iter().any(|n| n.ip == ip("172.18.0.3")), "the other node's task is not programmed");
    assert!(
        sim.obs.tasks["t-big1"].routes.iter().any(|r| r.prefix == 0 && r.gateway == Some(ip("172.18.0.1"))),
        "its default route is the bridge"
    );
    // Isolated from the overlays like any network.
    let isolation: Vec<_> = sim.obs.routes.iter().filter(|r| r.table == names::ISOLATION_TABLE).map(|r| r.dst).collect();
    assert!(isolation.contains(&ip("172.18.0.0")), "{isolation:?}");
    assert!(plan(&s, &sim.obs).unwrap().is_empty(), "re-apply changes nothing");
    // A VXLAN device left from when it was an overlay goes.
    let mut overlay = s.clone();
    overlay.networks[1].local = false;
    let sim = converge(&overlay, bare());
    assert!(sim.obs.link("shv-4098").is_some());
    let ops = plan(&s, &sim.obs).unwrap();
    assert!(ops.contains(&Op::DeleteLink { name: "shv-4098".into() }), "{ops:?}");
}

#[test]
fn a_node_local_network_balances_nothing() {
    let mut s = with_gateway_bridge();
    s.networks[1].lb_addresses.insert("smgr".into(), ip("172.18.0.250"));
    let fields = invalid_fields(&s, &bare());
    assert!(fields.contains(&"networks[1].lb_addresses".to_string()), "{fields:?}");
}

#[test]
fn an_internal_network_has_no_route_out_but_its_own_subnet() {
    let mut s = state();
    s.networks[0].internal = true;
    let sim = converge(&s, bare());
    let table = names::network_table(4097);
    let own: Vec<_> = sim.obs.routes.iter().filter(|r| r.table == table).collect();
    assert!(own.iter().any(|r| r.prefix == 24 && r.dst == ip("10.0.9.0") && r.oif.is_some()), "{own:?}");
    assert!(own.iter().any(|r| r.prefix == 0 && r.is_unreachable()), "{own:?}");
    assert!(plan(&s, &sim.obs).unwrap().is_empty());
    // Back to a network with egress: the unreachable default goes, nothing else changes.
    s.networks[0].internal = false;
    let ops = plan(&s, &sim.obs).unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(matches!(&ops[0], Op::DelRoute(r) if r.prefix == 0 && r.table == table), "{ops:?}");
}

/// `state()` plus an encrypted network `secure` (vni 4099) with a task on this node and one on
/// snode1, and every node's WireGuard key and tunnel address.
fn with_encrypted() -> DesiredNode {
    use crate::crypt::key::PrivateKey;
    let mut s = state();
    let keys: Vec<PrivateKey> = (1..=3u8).map(|i| PrivateKey::from_bytes([i; 32])).collect();
    for (i, n) in s.nodes.iter_mut().enumerate() {
        n.wireguard = Some(crate::state::NodeWireGuard {
            public_key: keys[i].public_key(),
            address: ip(&format!("10.254.0.{}", i + 1)),
            preshared_key: None,
        });
    }
    s.wireguard_private_key = Some(keys[0].clone());
    s.networks.push(Network {
        name: "secure".into(),
        vni: 4099,
        subnet: "10.0.11.0/24".parse().unwrap(),
        gateway: None,
        mtu: None,
        lb_addresses: Default::default(),
        internal: false,
        local: false,
        encrypted: Some(crate::state::Encryption::Wireguard),
    });
    s.endpoints.push(ep("sec.1", "secure", "smgr", "10.0.11.2", Some("t-sec1")));
    s.endpoints.push(ep("sec.2", "secure", "snode1", "10.0.11.3", None));
    s
}

/// A node namespace with its underlay interface and the tunnel device up.
fn bare_with_tunnel() -> Observed {
    let mut obs = bare();
    obs.links.push(Link {
        index: 3,
        name: "shw0".into(),
        kind: LinkKind::Other("tun".into()),
        mtu: 1440,
        up: true,
        master: None,
        mac: None,
        alias: None,
    });
    obs.addrs.push(Addr { ifindex: 3, ip: ip("10.254.0.1"), prefix: 32 });
    obs
}

#[test]
fn an_encrypted_network_runs_its_vxlan_between_tunnel_addresses_with_both_overheads_off() {
    let s = with_encrypted();
    let ops = plan(&s, &bare_with_tunnel()).unwrap();
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    // Its VXLAN: local = this node's tunnel address, over the tunnel, 1500 - 60 - 50.
    assert!(text.contains(&"create vxlan shv-4099 id 4099 local 10.254.0.1 dev shw0 mtu 1390".to_string()), "{text:#?}");
    assert!(text.contains(&"add fdb 02:42:0a:00:0b:03 dev shv-4099 dst 10.254.0.2".to_string()), "{text:#?}");
    assert!(text.iter().any(|t| t.starts_with("configure t-sec1:eth0 10.0.11.2/24") && t.ends_with("mtu 1390")), "{text:#?}");
    // Nothing of it points at an underlay address; the plain network is unchanged.
    assert!(!text.iter().any(|t| t.contains("shv-4099") && t.contains("192.168.33.")), "{text:#?}");
    assert!(text.contains(&"create vxlan shv-4097 id 4097 local 192.168.33.10 dev eth0 mtu 1450".to_string()), "{text:#?}");
    assert!(text.contains(&"add fdb 02:42:0a:00:09:03 dev shv-4097 dst 192.168.33.20".to_string()), "{text:#?}");
    // Converged, the next plan is empty.
    let sim = converge(&s, bare_with_tunnel());
    assert!(plan(&s, &sim.obs).unwrap().is_empty());
}

#[test]
fn an_encrypted_network_without_its_tunnel_is_refused_whole() {
    let err = plan(&with_encrypted(), &bare()).unwrap_err().to_string();
    assert!(err.contains("network 'secure' is encrypted") && err.contains("shw0"), "{err}");
}

#[test]
fn a_node_that_cannot_encrypt_plans_without_the_network_and_removes_what_it_had() {
    let s = with_encrypted();
    let sim = converge(&s, bare_with_tunnel());
    let gone = std::collections::HashSet::from(["secure"]);
    let without = s.without_networks(&gone);
    assert!(without.endpoints.iter().all(|e| e.network != "secure"));
    let text: Vec<String> = plan(&without, &sim.obs).unwrap().iter().map(|o| o.to_string()).collect();
    for want in ["delete link shv-4099", "delete link shb-4099", "delete netns t-sec1"] {
        assert!(text.contains(&want.to_string()), "{want} missing: {text:#?}");
    }
    assert!(!text.iter().any(|t| t.contains("4097")), "the plain network was touched: {text:#?}");
}

#[test]
fn encryption_fields_are_validated_by_name() {
    let mut s = with_encrypted();
    s.wireguard_private_key = Some(crate::crypt::key::PrivateKey::from_bytes([9; 32]));
    s.nodes[2].wireguard.as_mut().unwrap().address = ip("10.0.9.77");
    s.nodes[1].wireguard = None;
    let err = s.validate().unwrap_err().to_string();
    for want in [
        "nodes[0].wireguard.public_key: is not the public key of `wireguard_private_key`",
        "nodes[2].wireguard.address: 10.0.9.77 is inside 10.0.9.0/24 of network 'backend'",
        "endpoints[4].node: network 'secure' is encrypted but node 'snode1' has no WireGuard key",
    ] {
        assert!(err.contains(want), "{want}\nnot in:\n{err}");
    }
    let mut s = with_encrypted();
    s.wireguard_private_key = None;
    assert!(s.validate().unwrap_err().to_string().contains("wireguard_private_key: a network is encrypted"));
}
