//! The thin layer that runs planned operations against the kernel.

use std::collections::HashMap;

use crate::netlink::{Addr, Errno, Fdb, Neigh, Netlink, NetlinkError, Route, Rule, RuleAction, VxlanSpec};
use crate::netns;

use super::op::{Op, RouteSpec};
use super::OverlayError;

/// Stop at the first failure (reconcile: the next pass repairs the rest), or keep going and
/// report every failure (teardown: one stuck link must not leave the rest behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    StopOnError,
    Continue,
}

#[derive(Debug, thiserror::Error)]
#[error("{} of {total} operations failed:{}", failures.len(), failures.iter().map(|(op, e)| format!("\n  - {op}: {e}")).collect::<String>())]
pub struct ApplyErrors {
    pub total: usize,
    pub failures: Vec<(Op, OverlayError)>,
}

/// Runs `ops` in order in the calling thread's namespace. Returns how many were applied.
pub fn apply(nl: &mut Netlink, ops: &[Op], mode: Mode) -> Result<usize, ApplyErrors> {
    let mut index = Indexes::default();
    let mut failures = Vec::new();
    let mut done = 0;
    for op in ops {
        if let Op::CreateNetns { name } = op {
            // Before it exists: whoever cleans up after a killed agent finds every namespace it
            // may have made in its log.
            tracing::info!(netns = %name, "creating a task namespace");
        } else {
            tracing::debug!(%op, "apply");
        }
        match run(nl, &mut index, op) {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::warn!(%op, error = %e, "kernel operation failed");
                failures.push((op.clone(), e));
                if mode == Mode::StopOnError {
                    break;
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(done)
    } else {
        Err(ApplyErrors { total: ops.len(), failures })
    }
}

/// Link name -> ifindex, refreshed lazily after links come and go.
#[derive(Default)]
struct Indexes {
    map: Option<HashMap<String, u32>>,
}

impl Indexes {
    fn get(&mut self, nl: &mut Netlink, name: &str) -> Result<u32, OverlayError> {
        if self.map.as_ref().is_none_or(|m| !m.contains_key(name)) {
            self.map = Some(nl.links()?.into_iter().map(|l| (l.name, l.index)).collect());
        }
        self.map.as_ref().and_then(|m| m.get(name).copied()).ok_or_else(|| OverlayError::MissingLink(name.to_string()))
    }

    fn forget(&mut self) {
        self.map = None;
    }
}

fn run(nl: &mut Netlink, idx: &mut Indexes, op: &Op) -> Result<(), OverlayError> {
    match op {
        Op::EnableForwarding => std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| OverlayError::Sysctl { key: "net.ipv4.ip_forward", source: e })?,
        Op::DisableBridgeNetfilter => {
            for key in super::observe::BRIDGE_NF_KEYS {
                std::fs::write(key, "0").map_err(|e| OverlayError::Sysctl { key: "net.bridge.bridge-nf-call-*", source: e })?;
            }
        }
        Op::CreateBridge { name, mtu, mac, alias } => {
            nl.add_bridge(name, *mtu, *mac, alias)?;
            idx.forget();
        }
        Op::CreateVxlan { name, vni, local, underlay, mtu, alias, port } => {
            let underlay_index = Some(idx.get(nl, underlay)?);
            nl.add_vxlan(&VxlanSpec {
                name: name.clone(),
                vni: *vni,
                local: *local,
                port: *port,
                underlay_index,
                mtu: *mtu,
                alias: alias.clone(),
            })?;
            idx.forget();
        }
        Op::DeleteLink { name } => {
            match nl.delete_link(name) {
                Err(e) if e.is(Errno::NoDevice) => {} // already gone: the goal is reached
                other => other?,
            }
            idx.forget();
        }
        Op::SetMtu { link, mtu } => nl.set_mtu(link, *mtu)?,
        Op::SetMac { link, mac } => nl.set_mac(link, *mac)?,
        Op::SetMaster { link, master } => {
            let m = idx.get(nl, master)?;
            nl.set_master(link, m)?
        }
        Op::SetUp { link } => nl.set_up(link)?,
        Op::AddAddr { link, ip, prefix } => {
            let ifindex = idx.get(nl, link)?;
            nl.add_addr(Addr { ifindex, ip: *ip, prefix: *prefix }, link)?
        }
        Op::DelAddr { link, ip, prefix } => {
            let ifindex = idx.get(nl, link)?;
            nl.delete_addr(Addr { ifindex, ip: *ip, prefix: *prefix }, link)?
        }
        Op::AddFdb { link, mac, dst } => {
            let ifindex = idx.get(nl, link)?;
            nl.add_fdb(Fdb { ifindex, mac: *mac, dst: *dst }, link)?
        }
        Op::DelFdb { link, mac, dst } => {
            let ifindex = idx.get(nl, link)?;
            nl.delete_fdb(Fdb { ifindex, mac: *mac, dst: *dst }, link)?
        }
        Op::AddNeigh { link, ip, mac } => {
            let ifindex = idx.get(nl, link)?;
            nl.add_neigh(Neigh { ifindex, ip: *ip, mac: *mac }, link)?
        }
        Op::DelNeigh { link, ip, mac } => {
            let ifindex = idx.get(nl, link)?;
            nl.delete_neigh(Neigh { ifindex, ip: *ip, mac: *mac }, link)?
        }
        Op::AddRoute(r) => {
            let route = route(nl, idx, r)?;
            nl.add_route(route)?
        }
        Op::DelRoute(r) => {
            let route = route(nl, idx, r)?;
            nl.delete_route(route)?
        }
        Op::AddRule { priority, iif, table } => {
            nl.add_rule(&Rule { priority: *priority, iif: iif.clone(), action: RuleAction::Lookup(*table) })?
        }
        Op::DelRule { priority, iif, table } => {
            nl.delete_rule(&Rule { priority: *priority, iif: iif.clone(), action: RuleAction::Lookup(*table) })?
        }
        Op::CreateNetns { name } => netns::create(name)?,
        Op::DeleteNetns { name } => netns::delete(name)?,
        Op::CreateVeth { host, netns: ns, ifname, mtu, mac, alias } => {
            let fd = netns::open(ns)?;
            use std::os::fd::AsFd;
            nl.add_veth(host, ifname, fd.as_fd(), *mtu, Some(*mac), alias)?;
            idx.forget();
        }
        Op::ConfigureTask { netns: ns, ifname, ip, prefix, gateway, mtu, mac } => {
            let (ifname, ip, prefix, gateway, mtu, mac) = (ifname.clone(), *ip, *prefix, *gateway, *mtu, *mac);
            netns::run_in(ns, move || configure_task(&ifname, ip, prefix, gateway, mtu, mac))??
        }
    }
    Ok(())
}

fn route(nl: &mut Netlink, idx: &mut Indexes, r: &RouteSpec) -> Result<Route, OverlayError> {
    let oif = match &r.dev {
        Some(dev) => Some(idx.get(nl, dev)?),
        None => None,
    };
    Ok(Route { table: r.table, dst: r.dst, prefix: r.prefix, oif, gateway: None, src: r.src })
}

/// Inside a task namespace: make interface `ifname` look exactly as desired. Each step checks
/// first, so a repair touches only what differs. Only the first interface (with a gateway)
/// owns the default route.
fn configure_task(
    ifname: &str,
    ip: std::net::Ipv4Addr,
    prefix: u8,
    gateway: Option<std::net::Ipv4Addr>,
    mtu: u32,
    mac: crate::netlink::Mac,
) -> Result<(), OverlayError> {
    let mut nl = Netlink::open()?;
    let link = nl.links()?.into_iter().find(|l| l.name == ifname).ok_or_else(|| OverlayError::MissingLink(ifname.into()))?;
    if link.mtu != mtu {
        nl.set_mtu(ifname, mtu)?;
    }
    if link.mac != Some(mac) {
        nl.set_mac(ifname, mac)?;
    }
    let want = Addr { ifindex: link.index, ip, prefix };
    let mut have_addr = false;
    for a in nl.addrs()?.into_iter().filter(|a| a.ifindex == link.index) {
        if a == want {
            have_addr = true;
        } else {
            nl.delete_addr(a, ifname)?;
        }
    }
    if !have_addr {
        nl.add_addr(want, ifname)?;
    }
    if !link.up {
        nl.set_up(ifname)?;
    }
    let Some(gateway) = gateway else { return Ok(()) };
    let default = Route {
        table: crate::netlink::MAIN_TABLE,
        dst: std::net::Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        oif: Some(link.index),
        gateway: Some(gateway),
        src: None,
    };
    let mut have_route = false;
    for r in nl.shoal_routes()? {
        if r.prefix == 0 && r.gateway == Some(gateway) {
            have_route = true;
        } else if r.prefix == 0 {
            nl.delete_route(r)?;
        }
    }
    if !have_route {
        match nl.add_route(default) {
            Err(e) if e.is(Errno::Exists) => {
                return Err(OverlayError::Netlink(NetlinkError::Kernel(crate::netlink::KernelError {
                    what: "add default route in the task namespace".into(),
                    errno: Errno::Exists as i32,
                    extack: Some("another default route exists that shoal did not make".into()),
                })))
            }
            other => other?,
        }
    }
    Ok(())
}
