//! The pure half of load balancing: which frontends (VIPs, published ports) this node serves
//! with which backends, from the desired state; and the difference between two such tables as a
//! list of operations, each O(1) in the number of services.
//!
//! A VIP carries every port (Swarm's semantics: the front end reaches `redis:6379` whether or
//! not the service lists or publishes 6379): its frontends are keyed by [`ANY_PORT`], one per
//! protocol, and their backends' ports are [`ANY_PORT`] too, meaning "the port the client
//! asked for". Every balancer turns that into a wildcard of its own kind. Published ports map
//! published -> target as before.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

pub use shoal_ebpf::{Proto, ServiceKey};

use crate::overlay::names;
use crate::state::{DesiredNode, Endpoint, EndpointMode, Protocol, PublishMode};

/// The port of a VIP frontend's key and of its backends: every destination port, kept as it is
/// (the eBPF maps' own wildcard, so one value means it everywhere).
pub use shoal_ebpf::ANY_PORT;

/// The protocols a VIP carries (SCTP is refused when a service is created).
pub const VIP_PROTOCOLS: [Proto; 2] = [Proto::Tcp, Proto::Udp];

/// What a frontend is: a service VIP (reached from tasks), or a port published on the
/// node's underlay address (reached from outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Vip,
    Published,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Vip => "vip",
            Kind::Published => "published",
        })
    }
}

/// One backend of a frontend: a healthy task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Task address and target port ([`ANY_PORT`] for a VIP's backend: the client's port).
    pub addr: SocketAddrV4,
    /// Source address of NATed flows towards it: this node's LB address on the task's network.
    pub snat: Ipv4Addr,
    /// The task runs on this node.
    pub local: bool,
    pub weight: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if !self.snat.is_unspecified() {
            write!(f, " snat {}", self.snat)?;
        }
        if self.local {
            f.write_str(" local")?;
        }
        if self.weight != 1 {
            write!(f, " weight {}", self.weight)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontend {
    /// New flows go to a local backend without SNAT when one exists (ingress `keep_client_ip`,
    /// and every `mode: host` port, whose backends are all local).
    pub keep_client_ip: bool,
    /// Sorted by address, no duplicates. Empty: the service exists but has no healthy task.
    pub backends: Vec<Target>,
}

impl Frontend {
    /// The backends new flows of this frontend go to, and whether they are SNATed (the nftables
    /// and IPVS balancers decide alike): a published port keeping the client address goes to
    /// its local backends only, unSNATed, when it has any; everything else goes to every
    /// backend, SNATed to the node's LB address, so replies come back through this node.
    pub fn chosen(&self, kind: Kind) -> (Vec<&Target>, bool) {
        if kind == Kind::Published && self.keep_client_ip && self.backends.iter().any(|b| b.local) {
            (self.backends.iter().filter(|b| b.local).collect(), false)
        } else {
            (self.backends.iter().collect(), true)
        }
    }
}

/// Everything this node's load balancer serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbTable {
    pub vips: BTreeMap<ServiceKey, Frontend>,
    pub published: BTreeMap<ServiceKey, Frontend>,
    /// The node's underlay address (where published ports are served).
    pub underlay: Option<Ipv4Addr>,
    /// Overlay bridge name -> this node's LB address on that network (the SNAT source).
    pub bridges: BTreeMap<String, Ipv4Addr>,
}

impl LbTable {
    pub fn frontends(&self, kind: Kind) -> &BTreeMap<ServiceKey, Frontend> {
        match kind {
            Kind::Vip => &self.vips,
            Kind::Published => &self.published,
        }
    }

    pub fn frontends_mut(&mut self, kind: Kind) -> &mut BTreeMap<ServiceKey, Frontend> {
        match kind {
            Kind::Vip => &mut self.vips,
            Kind::Published => &mut self.published,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.vips.is_empty() && self.published.is_empty()
    }

    /// Applies `ops` to this table (what a backend does to its mirror after the kernel took them).
    pub fn apply(&mut self, ops: &[LbOp]) {
        for op in ops {
            match op {
                LbOp::AddFrontend { kind, key, keep_client_ip } => {
                    self.frontends_mut(*kind).insert(*key, Frontend { keep_client_ip: *keep_client_ip, backends: vec![] });
                }
                LbOp::SetOptions { kind, key, keep_client_ip } => {
                    if let Some(f) = self.frontends_mut(*kind).get_mut(key) {
                        f.keep_client_ip = *keep_client_ip;
                    }
                }
                LbOp::RemoveFrontend { kind, key } => {
                    self.frontends_mut(*kind).remove(key);
                }
                LbOp::AddBackend { kind, key, target } => {
                    if let Some(f) = self.frontends_mut(*kind).get_mut(key) {
                        match f.backends.binary_search_by_key(&target.addr, |t| t.addr) {
                            Ok(i) => f.backends[i] = *target,
                            Err(i) => f.backends.insert(i, *target),
                        }
                    }
                }
                LbOp::RemoveBackend { kind, key, addr } => {
                    if let Some(f) = self.frontends_mut(*kind).get_mut(key) {
                        f.backends.retain(|t| t.addr != *addr);
                    }
                }
            }
        }
    }
}

/// The balancers' protocol of a port; None for SCTP, which validation refuses.
fn proto(p: Protocol) -> Option<Proto> {
    match p {
        Protocol::Tcp => Some(Proto::Tcp),
        Protocol::Udp => Some(Proto::Udp),
        Protocol::Sctp => None,
    }
}

fn target(ep: &Endpoint, port: u16, snat: Ipv4Addr, node: &str) -> Target {
    Target { addr: SocketAddrV4::new(ep.ip, port), snat, local: ep.node == node, weight: ep.weight.max(1) }
}

fn insert(map: &mut BTreeMap<ServiceKey, Frontend>, key: ServiceKey, keep_client_ip: bool, mut backends: Vec<Target>) {
    backends.sort();
    backends.dedup_by_key(|t| t.addr);
    map.insert(key, Frontend { keep_client_ip, backends });
}

/// The frontends this node serves for `state` (validated). Only healthy endpoints are backends.
pub fn desired(state: &DesiredNode) -> LbTable {
    let mut t = LbTable { underlay: state.self_node().map(|n| n.address), ..LbTable::default() };
    for net in &state.networks {
        if let Some(lb) = net.lb_addresses.get(&state.node) {
            t.bridges.insert(names::bridge(net.vni), *lb);
        } else if net.local {
            // The gateway bridge balances nothing of its own, but host-mode ports of its tasks
            // are translated there (replies, on the NAT's bridge hook); its gateway is the
            // node's address on it.
            t.bridges.insert(names::bridge(net.vni), net.gateway());
        }
    }
    for svc in &state.services {
        let healthy: Vec<&Endpoint> = svc.backends.iter().filter_map(|id| state.endpoint(id)).filter(|e| e.healthy).collect();
        if svc.endpoint_mode == EndpointMode::Vip {
            for (net_name, vip) in &svc.vips {
                let Some(lb) = state.network(net_name).and_then(|n| n.lb_addresses.get(&state.node)) else { continue };
                for proto in VIP_PROTOCOLS {
                    let key = ServiceKey { addr: *vip, port: ANY_PORT, proto };
                    let bes = healthy.iter().filter(|e| &e.network == net_name).map(|e| target(e, ANY_PORT, *lb, &state.node)).collect();
                    insert(&mut t.vips, key, false, bes);
                }
            }
        }
        let (Some(addr), Some(ingress)) = (t.underlay, state.ingress_network(svc).and_then(|n| state.network(n))) else {
            continue;
        };
        let snat = ingress.lb_addresses.get(&state.node).copied();
        for p in &svc.ports {
            let (Some(published), Some(proto)) = (p.published, proto(p.protocol)) else { continue };
            let key = ServiceKey { addr, port: published, proto };
            let on_net = healthy.iter().filter(|e| e.network == ingress.name);
            match p.mode {
                PublishMode::Ingress => {
                    let Some(snat) = snat else { continue };
                    let bes = on_net.map(|e| target(e, p.target, snat, &state.node)).collect();
                    insert(&mut t.published, key, p.keep_client_ip, bes);
                }
                PublishMode::Host => {
                    // Never SNATed (local backends with keep_client_ip); the address is only a
                    // fallback source for a backend that needs one.
                    let src = snat.unwrap_or_else(|| ingress.gateway());
                    let bes: Vec<Target> = on_net.filter(|e| e.node == state.node).map(|e| target(e, p.target, src, &state.node)).collect();
                    if !bes.is_empty() {
                        insert(&mut t.published, key, true, bes);
                    }
                }
            }
        }
    }
    t
}

impl LbOp {
    pub fn frontend(&self) -> (Kind, ServiceKey) {
        match self {
            LbOp::AddFrontend { kind, key, .. }
            | LbOp::SetOptions { kind, key, .. }
            | LbOp::RemoveFrontend { kind, key }
            | LbOp::AddBackend { kind, key, .. }
            | LbOp::RemoveBackend { kind, key, .. } => (*kind, *key),
        }
    }
}

/// One change of a load balancer's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbOp {
    AddFrontend {
        kind: Kind,
        key: ServiceKey,
        keep_client_ip: bool,
    },
    SetOptions {
        kind: Kind,
        key: ServiceKey,
        keep_client_ip: bool,
    },
    /// Removes the frontend and its backends.
    RemoveFrontend {
        kind: Kind,
        key: ServiceKey,
    },
    /// Adds a backend, or updates the one with the same address.
    AddBackend {
        kind: Kind,
        key: ServiceKey,
        target: Target,
    },
    RemoveBackend {
        kind: Kind,
        key: ServiceKey,
        addr: SocketAddrV4,
    },
}

impl fmt::Display for LbOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keep = |k: bool| if k { " keep-client-ip" } else { "" };
        match self {
            LbOp::AddFrontend { kind, key, keep_client_ip } => write!(f, "lb add {kind} {key}{}", keep(*keep_client_ip)),
            LbOp::SetOptions { kind, key, keep_client_ip } => write!(f, "lb set {kind} {key} keep-client-ip {keep_client_ip}"),
            LbOp::RemoveFrontend { kind, key } => write!(f, "lb remove {kind} {key}"),
            LbOp::AddBackend { kind, key, target } => write!(f, "lb add backend {kind} {key} -> {target}"),
            LbOp::RemoveBackend { kind, key, addr } => write!(f, "lb remove backend {kind} {key} -> {addr}"),
        }
    }
}

/// The operations that turn `observed` into `desired`: frontends and backends are added before
/// anything is removed, so no flow finds a half-made service. Unchanged frontends cost nothing;
/// one backend change is one operation.
pub fn diff(observed: &LbTable, desired: &LbTable) -> Vec<LbOp> {
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for kind in [Kind::Vip, Kind::Published] {
        let (have, want) = (observed.frontends(kind), desired.frontends(kind));
        for (key, w) in want {
            let old = match have.get(key) {
                None => {
                    adds.push(LbOp::AddFrontend { kind, key: *key, keep_client_ip: w.keep_client_ip });
                    &[][..]
                }
                Some(h) => {
                    if h.keep_client_ip != w.keep_client_ip {
                        adds.push(LbOp::SetOptions { kind, key: *key, keep_client_ip: w.keep_client_ip });
                    }
                    &h.backends[..]
                }
            };
            for t in &w.backends {
                if !old.contains(t) {
                    adds.push(LbOp::AddBackend { kind, key: *key, target: *t });
                }
            }
            for t in old {
                if !w.backends.iter().any(|b| b.addr == t.addr) {
                    removes.push(LbOp::RemoveBackend { kind, key: *key, addr: t.addr });
                }
            }
        }
        for key in have.keys().filter(|k| !want.contains_key(k)) {
            removes.push(LbOp::RemoveFrontend { kind, key: *key });
        }
    }
    adds.extend(removes);
    adds
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    /// Three nodes, web.1..3 one per node on `backend`; `web` has a VIP, 5000->80 ingress,
    /// 5353->53/udp ingress and 6000->80 host.
    pub(crate) fn state(node: &str) -> DesiredNode {
        let s: DesiredNode = serde_json::from_value(json!({
            "node": node,
            "nodes": [{"name": "a", "address": "192.168.33.10"}, {"name": "b", "address": "192.168.33.20"}, {"name": "c", "address": "192.168.33.30"}],
            "networks": [{"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24",
                          "lb_addresses": {"a": "10.0.9.250", "b": "10.0.9.249", "c": "10.0.9.248"}}],
            "endpoints": [
                {"id": "web.1", "network": "backend", "node": "a", "ip": "10.0.9.2", "netns": "t1"},
                {"id": "web.2", "network": "backend", "node": "b", "ip": "10.0.9.3", "netns": "t2"},
                {"id": "web.3", "network": "backend", "node": "c", "ip": "10.0.9.4", "netns": "t3"},
            ],
            "services": [{"name": "web", "vips": {"backend": "10.0.9.100"},
                          "ports": [{"target": 80, "published": 5000}, {"target": 53, "published": 5353, "protocol": "udp"},
                                    {"target": 8080, "published": 6000, "mode": "host"}],
                          "backends": ["web.1", "web.2", "web.3"]}],
        }))
        .unwrap();
        s.validate().unwrap();
        s
    }

    #[test]
    fn desired_has_any_port_vips_published_ports_and_local_host_ports() {
        let t = desired(&state("a"));
        assert_eq!(t.underlay, Some(ip("192.168.33.10")));
        assert_eq!(t.bridges, [("shb-4097".to_string(), ip("10.0.9.250"))].into_iter().collect());
        // One frontend per protocol carries every port, whatever the service lists.
        assert_eq!(
            t.vips.keys().copied().collect::<Vec<_>>(),
            vec![ServiceKey::tcp(ip("10.0.9.100"), ANY_PORT), ServiceKey::udp(ip("10.0.9.100"), ANY_PORT)]
        );
        for vip in t.vips.values() {
            assert_eq!(vip.backends.iter().map(|b| b.addr).collect::<Vec<_>>(), vec![sa("10.0.9.2:0"), sa("10.0.9.3:0"), sa("10.0.9.4:0")]);
            assert!(vip.backends.iter().all(|b| b.snat == ip("10.0.9.250")));
            assert_eq!(vip.backends.iter().filter(|b| b.local).count(), 1);
            assert!(!vip.keep_client_ip);
        }
        let p = &t.published[&ServiceKey::tcp(ip("192.168.33.10"), 5000)];
        assert!(!p.keep_client_ip);
        assert_eq!(p.backends.len(), 3);
        assert_eq!(t.published[&ServiceKey::udp(ip("192.168.33.10"), 5353)].backends[0].addr, sa("10.0.9.2:53"));
        let host = &t.published[&ServiceKey::tcp(ip("192.168.33.10"), 6000)];
        assert!(host.keep_client_ip);
        assert_eq!(host.backends.iter().map(|b| (b.addr, b.local)).collect::<Vec<_>>(), vec![(sa("10.0.9.2:8080"), true)]);
    }

    #[test]
    fn the_gateway_bridge_is_wired_for_host_mode_ports_with_its_gateway_as_the_node_address() {
        let mut s = state("a");
        s.networks.push(serde_json::from_value(json!({"name": "gw", "vni": 4098, "subnet": "172.18.0.0/16", "local": true})).unwrap());
        let t = desired(&s);
        assert_eq!(t.bridges.get("shb-4098"), Some(&ip("172.18.0.1")));
        assert_eq!(t.bridges.get("shb-4097"), Some(&ip("10.0.9.250")));
    }

    #[test]
    fn a_service_without_ports_still_has_a_vip_on_every_port() {
        let mut s = state("a");
        s.services[0].ports.clear();
        let t = desired(&s);
        assert_eq!(t.vips.len(), 2);
        assert!(t.vips.values().all(|f| f.backends.len() == 3));
        assert!(t.published.is_empty());
    }

    #[test]
    fn host_mode_is_served_only_where_a_task_runs() {
        let mut s = state("a");
        s.endpoints[0].node = "b".into();
        s.endpoints[0].netns = None;
        let t = desired(&s);
        assert!(!t.published.contains_key(&ServiceKey::tcp(ip("192.168.33.10"), 6000)));
        assert!(t.published.contains_key(&ServiceKey::tcp(ip("192.168.33.10"), 5000)));
    }

    #[test]
    fn unhealthy_endpoints_are_not_backends() {
        let mut s = state("a");
        s.endpoints[1].healthy = false;
        let t = desired(&s);
        let p = &t.published[&ServiceKey::tcp(ip("192.168.33.10"), 5000)];
        assert!(!p.backends.iter().any(|b| b.addr.ip() == &ip("10.0.9.3")));
        assert_eq!(p.backends.len(), 2);
    }

    #[test]
    fn dnsrr_services_have_no_vip_frontends() {
        let mut s = state("a");
        s.services[0].endpoint_mode = EndpointMode::Dnsrr;
        s.services[0].vips.clear();
        s.services[0].ports.retain(|p| p.mode == PublishMode::Host);
        let t = desired(&s);
        assert!(t.vips.is_empty());
        assert_eq!(t.published.len(), 1);
    }

    #[test]
    fn diff_of_equal_tables_is_empty_and_from_empty_builds_everything() {
        let t = desired(&state("a"));
        assert!(diff(&t, &t).is_empty());
        let ops = diff(&LbTable::default(), &t);
        let frontends = ops.iter().filter(|o| matches!(o, LbOp::AddFrontend { .. })).count();
        assert_eq!(frontends, t.vips.len() + t.published.len());
        let mut rebuilt = LbTable { underlay: t.underlay, bridges: t.bridges.clone(), ..LbTable::default() };
        rebuilt.apply(&ops);
        assert_eq!(rebuilt, t);
        let back = diff(&t, &LbTable::default());
        assert!(back.iter().all(|o| matches!(o, LbOp::RemoveFrontend { .. })), "{back:?}");
    }

    #[test]
    fn one_backend_change_is_one_op_whatever_the_number_of_services() {
        let mut s = state("a");
        for i in 0..500u32 {
            let mut other = s.services[0].clone();
            other.name = format!("other{i}");
            other.vips.insert("backend".into(), Ipv4Addr::from(u32::from(ip("10.0.10.0")) + i));
            other.ports.clear();
            other.backends.clear();
            s.services.push(other);
        }
        let before = desired(&s);
        let mut after_state = s.clone();
        after_state.endpoints[2].healthy = false;
        let ops = diff(&before, &desired(&after_state));
        // web.3 leaves the frontends it served (2 VIP protocols, 2 ingress ports; host mode is
        // local only): one op each, none for the 500 other services.
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(ops.iter().all(|o| matches!(o, LbOp::RemoveBackend { addr, .. } if addr.ip() == &ip("10.0.9.4"))));
        let key = ServiceKey::tcp(ip("10.0.9.100"), ANY_PORT);
        let mut one = before.clone();
        one.vips.get_mut(&key).unwrap().backends.pop();
        assert_eq!(diff(&before, &one), vec![LbOp::RemoveBackend { kind: Kind::Vip, key, addr: sa("10.0.9.4:0") }]);
    }

    #[test]
    fn adds_come_before_removes_and_updates_replace_in_place() {
        let t = desired(&state("a"));
        let mut w = t.clone();
        let key = ServiceKey::tcp(ip("192.168.33.10"), 5000);
        let f = w.published.get_mut(&key).unwrap();
        f.backends.remove(0);
        f.backends.push(Target { addr: sa("10.0.9.9:80"), snat: ip("10.0.9.250"), local: false, weight: 1 });
        f.backends[0].weight = 3;
        f.backends.sort();
        f.keep_client_ip = true;
        let ops = diff(&t, &w);
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(matches!(ops[0], LbOp::SetOptions { keep_client_ip: true, .. }));
        assert!(matches!(ops.last().unwrap(), LbOp::RemoveBackend { addr, .. } if *addr == sa("10.0.9.2:80")));
        let mut applied = t.clone();
        applied.apply(&ops);
        assert_eq!(applied, w);
    }
}
