//! The pure planner: (desired, observed) -> kernel operations. No I/O here, so every rule of
//! the overlay is unit-tested without root.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use crate::netlink::{LinkKind, Mac};
use crate::state::{DesiredNode, FieldError, InvalidState, VXLAN_OVERHEAD, VXLAN_PORT};

use super::names;
use super::observe::Observed;
use super::op::{Op, RouteSpec};

use crate::crypt::plan::{DEVICE as TUNNEL_DEVICE, WG_OVERHEAD};
use crate::netlink::MAIN_TABLE;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(#[from] InvalidState),
    #[error(
        "node '{node}': no interface in this network namespace has its underlay address {address}; \
         run shoal in the node's namespace (--netns) or fix the node's address in `nodes`"
    )]
    NoUnderlay { node: String, address: Ipv4Addr },
    #[error(
        "network '{network}' is encrypted but the tunnel device {device} is not here: bring \
         encryption up first (nothing of the network is attached without it)"
    )]
    NoTunnel { network: String, device: &'static str },
}

/// What one overlay network looks like on this node.
struct NetPlan {
    bridge: String,
    /// None for a node-local network (a bridge only).
    vxlan: Option<String>,
    vni: u32,
    mtu: u32,
    bridge_mac: Option<Mac>,
    alias: String,
    /// The VXLAN device's local address and lower device: the node's underlay address and
    /// interface, or for an encrypted network its tunnel address and the tunnel device.
    local: Ipv4Addr,
    lower: String,
    /// Runs inside the WireGuard tunnel (IPsec networks run on the underlay, on their own port).
    encrypted: bool,
    /// The VXLAN UDP port: 4789, or IPsec networks' own (see `crypt::ipsec::plan`).
    port: u16,
}

/// Plans the changes that bring the kernel from `obs` to `desired`. Validates first: an invalid
/// state yields an error and no operation.
pub fn plan(desired: &DesiredNode, obs: &Observed) -> Result<Vec<Op>, PlanError> {
    desired.validate()?;
    let me = desired.self_node().expect("validated: node is in nodes");
    let underlay = obs.addrs.iter().find(|a| a.ip == me.address).and_then(|a| obs.links.iter().find(|l| l.index == a.ifindex));
    let underlay = match underlay {
        Some(l) => l,
        None if desired.networks.is_empty() => return Ok(Planner::new(obs).finish(desired, &[], false)),
        None => return Err(PlanError::NoUnderlay { node: me.name.clone(), address: me.address }),
    };

    let mut errs = Vec::new();
    let mut nets = Vec::new();
    let tunnel = crate::crypt::tunnel(desired);
    for (i, net) in desired.networks.iter().enumerate() {
        let encrypted = net.encrypted == Some(crate::state::Encryption::Wireguard);
        let ipsec = net.encrypted == Some(crate::state::Encryption::Ipsec);
        // An encrypted network's VXLAN travels inside WireGuard: both overheads come off. IPsec
        // wraps it in ESP, whose padding makes the MTU a multiple of 4.
        let max_mtu = if ipsec {
            crate::crypt::ipsec::plan::network_mtu(underlay.mtu)
        } else {
            underlay.mtu.saturating_sub(VXLAN_OVERHEAD + if encrypted { WG_OVERHEAD } else { 0 })
        };
        let overhead = underlay.mtu - max_mtu;
        let port = if ipsec { crate::crypt::ipsec::plan::VXLAN_PORT } else { VXLAN_PORT };
        let mtu = net.mtu.unwrap_or(max_mtu);
        if net.mtu.is_some_and(|m| m > max_mtu) {
            errs.push(FieldError {
                field: format!("networks[{i}].mtu"),
                problem: format!("{mtu} needs an underlay MTU of {}, but {} has {}", mtu + overhead, underlay.name, underlay.mtu),
                fix: format!("use {max_mtu} or less, or leave it unset"),
            });
        }
        let (local, lower) = match (&tunnel, encrypted) {
            (Some(t), true) => {
                if obs.link(TUNNEL_DEVICE).is_none() {
                    return Err(PlanError::NoTunnel { network: net.name.clone(), device: TUNNEL_DEVICE });
                }
                (t.address, TUNNEL_DEVICE.to_string())
            }
            _ => (me.address, underlay.name.clone()),
        };
        let (bridge, vxlan) = (names::bridge(net.vni), names::vxlan(net.vni));
        for l in obs.links.iter().filter(|_| !net.local) {
            let ours = names::is_shoal_alias(l.alias.as_deref());
            if let LinkKind::Vxlan(v) = &l.kind {
                if v.vni == net.vni && (v.port == VXLAN_PORT || v.port == 0) && !(ours && l.name == vxlan) {
                    errs.push(FieldError {
                        field: format!("networks[{i}].vni"),
                        problem: format!("vxlan id {} is already used by {}", net.vni, l.name),
                        fix: "pick another VNI or remove that device".into(),
                    });
                }
            }
            if (l.name == bridge || l.name == vxlan) && !ours {
                errs.push(FieldError {
                    field: format!("networks[{i}].vni"),
                    problem: format!("a link named {} exists and was not made by shoal", l.name),
                    fix: "remove that link or pick another VNI".into(),
                });
            }
        }
        let local_lb = net.lb_addresses.get(&desired.node).copied();
        nets.push(NetPlan {
            bridge,
            vxlan: (!net.local).then_some(vxlan),
            vni: net.vni,
            mtu,
            bridge_mac: local_lb.map(Mac::from_ipv4),
            alias: names::network_alias(net),
            local,
            lower,
            encrypted,
            port,
        });
    }
    if !errs.is_empty() {
        return Err(InvalidState(errs).into());
    }
    Ok(Planner::new(obs).finish(desired, &nets, true))
}

/// Plans removing everything shoal made on this node: networks, endpoints and their namespaces.
pub fn plan_teardown(obs: &Observed) -> Vec<Op> {
    let empty = DesiredNode::empty();
    Planner::new(obs).finish(&empty, &[], false)
}

#[derive(Default)]
struct Ops {
    first: Vec<Op>,
    delete: Vec<Op>,
    links: Vec<Op>,
    add: Vec<Op>,
    endpoints: Vec<Op>,
}

struct Planner<'a> {
    obs: &'a Observed,
    ops: Ops,
    /// Links that will be created fresh: what the kernel has on them now does not count.
    fresh: HashSet<String>,
    /// Links that will be deleted: what hangs off them goes with them.
    doomed: HashSet<String>,
}

impl<'a> Planner<'a> {
    fn new(obs: &'a Observed) -> Self {
        Self { obs, ops: Ops::default(), fresh: HashSet::new(), doomed: HashSet::new() }
    }

    fn finish(mut self, desired: &DesiredNode, nets: &[NetPlan], has_underlay: bool) -> Vec<Op> {
        if !nets.is_empty() && !self.obs.ip_forward {
            self.ops.first.push(Op::EnableForwarding);
        }
        if !nets.is_empty() && self.obs.bridge_nf == Some(true) {
            self.ops.first.push(Op::DisableBridgeNetfilter);
        }
        self.stale_links(nets);
        if has_underlay {
            for n in nets {
                self.bridge(n);
                self.vxlan(n);
            }
        }
        self.tables(desired, nets);
        self.endpoints(desired, nets);
        let Ops { first, delete, links, add, endpoints } = self.ops;
        first.into_iter().chain(delete).chain(links).chain(add).chain(endpoints).collect()
    }

    fn stale_links(&mut self, nets: &[NetPlan]) {
        let wanted: HashSet<&str> = nets.iter().flat_map(|n| [Some(n.bridge.as_str()), n.vxlan.as_deref()]).flatten().collect();
        for l in &self.obs.links {
            let ours = names::is_shoal_alias(l.alias.as_deref());
            let overlay_link = l.name.starts_with(names::BRIDGE_PREFIX) || l.name.starts_with(names::VXLAN_PREFIX);
            if ours && overlay_link && !wanted.contains(l.name.as_str()) {
                self.doomed.insert(l.name.clone());
                self.ops.delete.push(Op::DeleteLink { name: l.name.clone() });
            }
        }
    }

    fn bridge(&mut self, n: &NetPlan) {
        match self.obs.link(&n.bridge) {
            Some(l) if l.kind == LinkKind::Bridge => {
                if l.mtu != n.mtu {
                    self.ops.links.push(Op::SetMtu { link: n.bridge.clone(), mtu: n.mtu });
                }
                if let Some(mac) = n.bridge_mac.filter(|m| l.mac != Some(*m)) {
                    self.ops.links.push(Op::SetMac { link: n.bridge.clone(), mac });
                }
                if !l.up {
                    self.ops.links.push(Op::SetUp { link: n.bridge.clone() });
                }
            }
            existing => {
                if existing.is_some() {
                    self.ops.delete.push(Op::DeleteLink { name: n.bridge.clone() });
                }
                self.fresh.insert(n.bridge.clone());
                self.ops.links.push(Op::CreateBridge { name: n.bridge.clone(), mtu: n.mtu, mac: n.bridge_mac, alias: n.alias.clone() });
                self.ops.links.push(Op::SetUp { link: n.bridge.clone() });
            }
        }
    }

    fn vxlan(&mut self, n: &NetPlan) {
        let local = n.local;
        let Some(vxlan) = &n.vxlan else { return };
        let bridge_index = self.obs.link(&n.bridge).map(|l| l.index);
        let bridge_fresh = self.fresh.contains(&n.bridge);
        let current = self.obs.link(vxlan).filter(|l| match &l.kind {
            LinkKind::Vxlan(v) => v.vni == n.vni && v.local == Some(local) && v.port == n.port && !v.learning && v.proxy,
            _ => false,
        });
        match current {
            Some(l) => {
                if l.mtu != n.mtu {
                    self.ops.links.push(Op::SetMtu { link: vxlan.clone(), mtu: n.mtu });
                }
                if bridge_fresh || l.master != bridge_index {
                    self.ops.links.push(Op::SetMaster { link: vxlan.clone(), master: n.bridge.clone() });
                }
                if !l.up {
                    self.ops.links.push(Op::SetUp { link: vxlan.clone() });
                }
            }
            None => {
                if self.obs.link(vxlan).is_some() {
                    self.ops.delete.push(Op::DeleteLink { name: vxlan.clone() });
                }
                self.fresh.insert(vxlan.clone());
                self.ops.links.push(Op::CreateVxlan {
                    name: vxlan.clone(),
                    vni: n.vni,
                    local,
                    underlay: n.lower.clone(),
                    mtu: n.mtu,
                    alias: n.alias.clone(),
                    port: n.port,
                });
                self.ops.links.push(Op::SetMaster { link: vxlan.clone(), master: n.bridge.clone() });
                self.ops.links.push(Op::SetUp { link: vxlan.clone() });
            }
        }
    }

    /// Does an observed object on link `index` still count, or does its link go away or get
    /// made anew?
    fn counts(&self, index: u32) -> Option<&'a str> {
        let name = self.obs.link_name(index)?;
        (!self.fresh.contains(name) && !self.doomed.contains(name)).then_some(name)
    }

    fn tables(&mut self, desired: &DesiredNode, nets: &[NetPlan]) {
        // A remote node's VTEP: its underlay address, or its tunnel address for an encrypted
        // network (its VXLAN then exists only inside the tunnel).
        let vtep_of = |name: &str, encrypted: bool| {
            let node = desired.nodes.iter().find(|n| n.name == name)?;
            if encrypted {
                node.wireguard.as_ref().map(|w| w.address)
            } else {
                Some(node.address)
            }
        };
        let mut addrs = BTreeSet::new();
        let mut routes = BTreeSet::new();
        let mut rules = BTreeSet::new();
        let mut fdb = BTreeSet::new();
        let mut neigh = BTreeSet::new();
        for (net, n) in desired.networks.iter().zip(nets) {
            let subnet = net.subnet.trunc();
            let gw = net.gateway();
            let local_lb = net.lb_addresses.get(&desired.node).copied();
            addrs.insert((n.bridge.clone(), gw, 32));
            if let Some(lb) = local_lb {
                addrs.insert((n.bridge.clone(), lb, 32));
            }
            for vip in desired.service_vips(&net.name) {
                addrs.insert((n.bridge.clone(), vip, 32));
            }
            let table = names::network_table(net.vni);
            for t in [MAIN_TABLE, table] {
                routes.insert(RouteSpec {
                    table: t,
                    dst: subnet.network(),
                    prefix: subnet.prefix_len(),
                    dev: Some(n.bridge.clone()),
                    src: Some(local_lb.unwrap_or(gw)),
                });
            }
            routes.insert(RouteSpec {
                table: names::ISOLATION_TABLE,
                dst: subnet.network(),
                prefix: subnet.prefix_len(),
                dev: None,
                src: None,
            });
            rules.insert((names::PRIO_NETWORK, n.bridge.clone(), table));
            rules.insert((names::PRIO_ISOLATION, n.bridge.clone(), names::ISOLATION_TABLE));
            if net.internal {
                // No egress: past its own subnet (and the node's local addresses, looked up
                // before any of this), everything from this network is unreachable.
                routes.insert(RouteSpec { table, dst: Ipv4Addr::UNSPECIFIED, prefix: 0, dev: None, src: None });
            }
            // A node-local network has no VXLAN device: nothing of other nodes is programmed.
            let Some(vxlan) = &n.vxlan else { continue };
            let remote_lbs = net.lb_addresses.iter().filter(|(node, _)| **node != desired.node);
            for (node, ip) in remote_lbs {
                if let Some(vtep) = vtep_of(node, n.encrypted) {
                    fdb.insert((vxlan.clone(), Mac::from_ipv4(*ip), vtep));
                    neigh.insert((vxlan.clone(), *ip, Mac::from_ipv4(*ip)));
                }
            }
            let remote = desired.endpoints.iter().filter(|e| e.network == net.name && e.node != desired.node);
            for ep in remote {
                if let Some(vtep) = vtep_of(&ep.node, n.encrypted) {
                    fdb.insert((vxlan.clone(), ep.mac(), vtep));
                    neigh.insert((vxlan.clone(), ep.ip, ep.mac()));
                }
            }
        }

        let shoal_link = |name: &str| name.starts_with(names::BRIDGE_PREFIX) || name.starts_with(names::VXLAN_PREFIX);
        let have_addrs: BTreeSet<_> = self
            .obs
            .addrs
            .iter()
            .filter_map(|a| self.counts(a.ifindex).filter(|l| l.starts_with(names::BRIDGE_PREFIX)).map(|l| (l.to_string(), a.ip, a.prefix)))
            .collect();
        let have_fdb: BTreeSet<_> = self
            .obs
            .fdb
            .iter()
            .filter_map(|f| self.counts(f.ifindex).filter(|l| l.starts_with(names::VXLAN_PREFIX)).map(|l| (l.to_string(), f.mac, f.dst)))
            .collect();
        let have_neigh: BTreeSet<_> = self
            .obs
            .neighbours
            .iter()
            .filter_map(|nb| self.counts(nb.ifindex).filter(|l| l.starts_with(names::VXLAN_PREFIX)).map(|l| (l.to_string(), nb.ip, nb.mac)))
            .collect();
        let mut have_routes = BTreeSet::new();
        for r in &self.obs.routes {
            let dev = match r.oif {
                Some(i) => match self.counts(i) {
                    Some(name) if shoal_link(name) => Some(name.to_string()),
                    _ => continue, // goes with its link, or not a route of the overlay
                },
                None if r.gateway.is_none() => None,
                None => continue,
            };
            have_routes.insert(RouteSpec { table: r.table, dst: r.dst, prefix: r.prefix, dev, src: r.src });
        }
        let have_rules: BTreeSet<_> = self
            .obs
            .rules
            .iter()
            .map(|r| {
                let crate::netlink::RuleAction::Lookup(t) = r.action;
                (r.priority, r.iif.clone(), t)
            })
            .collect();

        let ops = &mut self.ops;
        for (priority, iif, table) in have_rules.difference(&rules) {
            ops.delete.push(Op::DelRule { priority: *priority, iif: iif.clone(), table: *table });
        }
        for r in have_routes.difference(&routes) {
            ops.delete.push(Op::DelRoute(r.clone()));
        }
        for (link, ip, mac) in have_neigh.difference(&neigh) {
            ops.delete.push(Op::DelNeigh { link: link.clone(), ip: *ip, mac: *mac });
        }
        for (link, mac, dst) in have_fdb.difference(&fdb) {
            ops.delete.push(Op::DelFdb { link: link.clone(), mac: *mac, dst: *dst });
        }
        for (link, ip, prefix) in have_addrs.difference(&addrs) {
            ops.delete.push(Op::DelAddr { link: link.clone(), ip: *ip, prefix: *prefix });
        }
        for (link, ip, prefix) in addrs.difference(&have_addrs) {
            ops.add.push(Op::AddAddr { link: link.clone(), ip: *ip, prefix: *prefix });
        }
        for r in routes.difference(&have_routes) {
            ops.add.push(Op::AddRoute(r.clone()));
        }
        for (priority, iif, table) in rules.difference(&have_rules) {
            ops.add.push(Op::AddRule { priority: *priority, iif: iif.clone(), table: *table });
        }
        for (link, mac, dst) in fdb.difference(&have_fdb) {
            ops.add.push(Op::AddFdb { link: link.clone(), mac: *mac, dst: *dst });
        }
        for (link, ip, mac) in neigh.difference(&have_neigh) {
            ops.add.push(Op::AddNeigh { link: link.clone(), ip: *ip, mac: *mac });
        }
    }

    fn endpoints(&mut self, desired: &DesiredNode, nets: &[NetPlan]) {
        let wanted: HashSet<(&str, &str)> =
            desired.local_endpoints().filter_map(|e| e.netns.as_deref().map(|ns| (e.id.as_str(), ns))).collect();
        let wanted_ns: HashSet<&str> = wanted.iter().map(|(_, ns)| *ns).collect();
        let mut gone = HashSet::new();
        for l in &self.obs.links {
            let Some((id, ns, _)) = l.alias.as_deref().and_then(names::parse_endpoint_alias) else { continue };
            if !l.name.starts_with(names::VETH_PREFIX) || wanted.contains(&(id, ns)) {
                continue;
            }
            gone.insert(l.name.clone());
            self.ops.delete.push(Op::DeleteLink { name: l.name.clone() });
            if !wanted_ns.contains(ns) && crate::netns::validate_name(ns).is_ok() {
                self.ops.delete.push(Op::DeleteNetns { name: ns.to_string() });
            }
        }

        let ifnames = desired.task_ifnames();
        let mut created: HashSet<String> = HashSet::new();
        for ep in desired.local_endpoints() {
            let Some(ns) = ep.netns.clone() else { continue };
            let Some(ifname) = ifnames.get(ep.id.as_str()).cloned() else { continue };
            let Some((net, n)) = desired.networks.iter().zip(nets).find(|(net, _)| net.name == ep.network) else {
                continue;
            };
            let host = names::veth(&ep.id);
            let alias = names::endpoint_alias(ep, &ifname);
            let task = self.obs.tasks.get(&ns);
            let link = self.obs.link(&host).filter(|_| !gone.contains(&host));
            let intact =
                link.is_some_and(|l| l.alias.as_deref() == Some(alias.as_str())) && task.is_some_and(|t| t.iface(&ifname).is_some());
            // Only the first network routes the task's other traffic.
            let gateway = (ifname == names::TASK_IFNAME).then(|| net.gateway());
            let prefix = net.subnet.prefix_len();
            let mac = ep.mac();
            let configure = Op::ConfigureTask { netns: ns.clone(), ifname: ifname.clone(), ip: ep.ip, prefix, gateway, mtu: n.mtu, mac };
            let out = &mut self.ops.endpoints;
            // A task on several networks has one namespace: made once, for its first endpoint.
            if task.is_none() && created.insert(ns.clone()) {
                out.push(Op::CreateNetns { name: ns.clone() });
            }
            match (link, intact) {
                (Some(l), true) => {
                    let bridge_index = self.obs.link(&n.bridge).map(|b| b.index);
                    if l.mtu != n.mtu {
                        out.push(Op::SetMtu { link: host.clone(), mtu: n.mtu });
                    }
                    if self.fresh.contains(&n.bridge) || l.master != bridge_index {
                        out.push(Op::SetMaster { link: host.clone(), master: n.bridge.clone() });
                    }
                    if !l.up {
                        out.push(Op::SetUp { link: host.clone() });
                    }
                    let t = task.expect("intact implies the task side was observed");
                    let iface = t.iface(&ifname).expect("intact implies the interface");
                    let addrs = t.addrs_of(&ifname);
                    let addr_ok = addrs.len() == 1 && addrs[0].ip == ep.ip && addrs[0].prefix == prefix;
                    let route_ok = gateway.is_none_or(|gw| t.routes.iter().any(|r| r.prefix == 0 && r.gateway == Some(gw)));
                    if !(iface.up && iface.mtu == n.mtu && iface.mac == Some(mac) && addr_ok && route_ok) {
                        out.push(configure);
                    }
                }
                (existing, _) => {
                    if existing.is_some() {
                        out.push(Op::DeleteLink { name: host.clone() });
                    }
                    out.push(Op::CreateVeth { host: host.clone(), netns: ns.clone(), ifname: ifname.clone(), mtu: n.mtu, mac, alias });
                    out.push(Op::SetMaster { link: host.clone(), master: n.bridge.clone() });
                    out.push(Op::SetUp { link: host.clone() });
                    out.push(configure);
                }
            }
        }
    }
}
