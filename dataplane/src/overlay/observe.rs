//! Reads what the kernel has, in the node's namespace and in the namespaces of its endpoints.

use std::collections::BTreeMap;

use crate::netlink::{Addr, Fdb, Link, Neigh, Netlink, Route, Rule};
use crate::netns;
use crate::state::DesiredNode;

use super::names;
use super::OverlayError;

/// A snapshot of the kernel objects the overlay planner cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub fdb: Vec<Fdb>,
    pub neighbours: Vec<Neigh>,
    /// Only routes with shoal's protocol number.
    pub routes: Vec<Route>,
    /// Only rules with shoal's protocol number.
    pub rules: Vec<Rule>,
    pub ip_forward: bool,
    /// None when the kernel has no bridge netfilter; Some(true) when any bridge-nf-call-* is on.
    pub bridge_nf: Option<bool>,
    /// Task namespaces that exist, by name, with what is inside.
    pub tasks: BTreeMap<String, TaskSide>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSide {
    /// The task's eth<n> interfaces.
    pub ifaces: Vec<Link>,
    /// Addresses on those interfaces.
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
}

impl TaskSide {
    pub fn iface(&self, name: &str) -> Option<&Link> {
        self.ifaces.iter().find(|l| l.name == name)
    }

    pub fn addrs_of(&self, name: &str) -> Vec<&Addr> {
        match self.iface(name) {
            Some(l) => self.addrs.iter().filter(|a| a.ifindex == l.index).collect(),
            None => Vec::new(),
        }
    }
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_name(&self, index: u32) -> Option<&str> {
        self.links.iter().find(|l| l.index == index).map(|l| l.name.as_str())
    }
}

/// Observes the node namespace (the calling thread's) and every task namespace named by the
/// desired state or by an existing shoal veth.
pub fn observe(nl: &mut Netlink, desired: &DesiredNode) -> Result<Observed, OverlayError> {
    let mut obs = Observed {
        links: nl.links()?,
        addrs: nl.addrs()?,
        fdb: nl.fdb_entries()?,
        neighbours: nl.permanent_neighbours()?,
        routes: nl.shoal_routes()?,
        rules: nl.shoal_rules()?,
        ip_forward: read_ip_forward(),
        bridge_nf: read_bridge_nf(),
        tasks: BTreeMap::new(),
    };
    let mut wanted: Vec<String> = desired.local_endpoints().filter_map(|e| e.netns.clone()).collect();
    for link in &obs.links {
        if let Some((_, ns, _)) = link.alias.as_deref().and_then(names::parse_endpoint_alias) {
            wanted.push(ns.to_string());
        }
    }
    wanted.sort();
    wanted.dedup();
    for ns in wanted {
        if netns::validate_name(&ns).is_err() || !netns::exists(&ns) {
            continue;
        }
        let side = netns::run_in(&ns, observe_task)?.map_err(OverlayError::Netlink)?;
        obs.tasks.insert(ns, side);
    }
    Ok(obs)
}

fn observe_task() -> Result<TaskSide, crate::netlink::NetlinkError> {
    let mut nl = Netlink::open()?;
    let ifaces: Vec<Link> = nl.links()?.into_iter().filter(|l| names::is_task_ifname(&l.name)).collect();
    let addrs = nl.addrs()?.into_iter().filter(|a| ifaces.iter().any(|l| l.index == a.ifindex)).collect();
    Ok(TaskSide { ifaces, addrs, routes: nl.shoal_routes()? })
}

fn read_ip_forward() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").map(|s| s.trim() == "1").unwrap_or(false)
}

pub const BRIDGE_NF_KEYS: [&str; 3] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
    "/proc/sys/net/bridge/bridge-nf-call-arptables",
];

fn read_bridge_nf() -> Option<bool> {
    let values: Vec<String> = BRIDGE_NF_KEYS.iter().filter_map(|k| std::fs::read_to_string(k).ok()).collect();
    if values.is_empty() {
        None
    } else {
        Some(values.iter().any(|v| v.trim() != "0"))
    }
}
