//! `shoal lab`: a cluster of network namespaces on one machine. An underlay namespace holds a
//! bridge; every node and the client hang off it by a veth. Nothing is added to the root
//! namespace, so no lab packet can leave the machine.

pub mod daemons;
pub mod demo;
mod demo_stack;
pub mod exec;
pub mod overlay_demo;
pub mod topology;

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use shoal_dataplane::netlink::{Addr, Netlink};
use shoal_dataplane::{netns, overlay};

pub use topology::{topology, LabHost, Topology};

const RECORD_DIR: &str = "/run/shoal/lab";

fn record_path(lab: &str) -> PathBuf {
    PathBuf::from(RECORD_DIR).join(format!("{lab}.json"))
}

/// The lab as recorded by `up`; without a record, the largest lab of that name, so `down` still
/// finds everything by exact name after a crash.
pub fn load(lab: &str) -> anyhow::Result<Topology> {
    match std::fs::read_to_string(record_path(lab)) {
        Ok(text) => serde_json::from_str(&text).context("read lab record"),
        Err(_) => Ok(topology(lab, topology::MAX_NODES)?),
    }
}

/// Builds (or completes) the lab. Idempotent.
pub fn up(t: &Topology) -> anyhow::Result<()> {
    // Write the record first: a crash half-way must still leave `down` the names.
    std::fs::create_dir_all(RECORD_DIR)?;
    std::fs::write(record_path(&t.lab), serde_json::to_vec_pretty(t)?)?;
    netns::create(&t.underlay_ns)?;
    let underlay = t.underlay_ns.clone();
    netns::run_in(&underlay, || -> anyhow::Result<()> {
        let mut nl = Netlink::open()?;
        if nl.link_by_name(topology::UNDERLAY_BRIDGE)?.is_none() {
            nl.add_bridge(topology::UNDERLAY_BRIDGE, 1500, None, "shoal lab underlay")?;
        }
        nl.set_up(topology::UNDERLAY_BRIDGE)?;
        Ok(())
    })??;
    for host in t.hosts() {
        attach_host(t, host).with_context(|| format!("lab host {}", host.name))?;
    }
    Ok(())
}

fn attach_host(t: &Topology, host: &LabHost) -> anyhow::Result<()> {
    netns::create(&host.netns)?;
    let host_fd = netns::open(&host.netns)?;
    let h = host.clone();
    netns::run_in(&t.underlay_ns, move || -> anyhow::Result<()> {
        let mut nl = Netlink::open()?;
        if nl.link_by_name(&h.port)?.is_none() {
            nl.add_veth(&h.port, "eth0", host_fd.as_fd(), 1500, None, &format!("shoal lab {}", h.name))?;
        }
        let bridge = nl.link_by_name(topology::UNDERLAY_BRIDGE)?.context("underlay bridge")?;
        nl.set_master(&h.port, bridge.index)?;
        nl.set_up(&h.port)?;
        Ok(())
    })??;
    let address = host.address;
    netns::run_in(&host.netns, move || -> anyhow::Result<()> {
        let mut nl = Netlink::open()?;
        let eth0 = nl.link_by_name("eth0")?.context("eth0 of lab host")?;
        let want = Addr { ifindex: eth0.index, ip: address, prefix: topology::UNDERLAY_PREFIX };
        if !nl.addrs()?.contains(&want) {
            nl.add_addr(want, "eth0")?;
        }
        nl.set_up("eth0")?;
        Ok(())
    })??;
    Ok(())
}

/// Removes every object of the lab by exact name: first what shoal made inside each node (task
/// namespaces included), then the namespaces. Keeps going past failures and reports them all.
pub fn down(t: &Topology) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for node in &t.nodes {
        failures.extend(daemons::stop(t, &node.name));
    }
    for node in &t.nodes {
        if !netns::exists(&node.netns) {
            continue;
        }
        let name = node.name.clone();
        match netns::run_in(&node.netns, move || shoal_dataplane::lb::teardown(&name)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(format!("load balancer teardown in {}: {e}", node.netns)),
            Err(e) => failures.push(e.to_string()),
        }
        match netns::run_in(&node.netns, overlay::teardown) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(format!("teardown in {}: {e}", node.netns)),
            Err(e) => failures.push(e.to_string()),
        }
        failures.extend(remove_lb_instance(&node.netns));
    }
    for ns in t.namespaces() {
        if let Err(e) = netns::delete(&ns) {
            failures.push(e.to_string());
        }
    }
    let state_files = t.nodes.iter().map(|n| PathBuf::from(RECORD_DIR).join(format!("{}-{}.json", t.lab, n.name)));
    for file in state_files.chain(std::iter::once(record_path(&t.lab))) {
        if let Err(e) = std::fs::remove_file(&file) {
            if e.kind() != std::io::ErrorKind::NotFound {
                failures.push(format!("remove {}: {e}", file.display()));
            }
        }
    }
    let lab_dir = PathBuf::from(RECORD_DIR).join(&t.lab);
    if let Err(e) = std::fs::remove_dir_all(&lab_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            failures.push(format!("remove {}: {e}", lab_dir.display()));
        }
    }
    if !failures.is_empty() {
        bail!("lab down finished with {} failures:\n  - {}", failures.len(), failures.join("\n  - "));
    }
    Ok(())
}

/// One line per host: namespace, address, whether it is there.
pub fn status(t: &Topology) -> String {
    let mut out = format!("lab '{}': underlay {} {}\n", t.lab, t.underlay_ns, present(&t.underlay_ns));
    out.push_str(&format!("{:<8} {:<16} {:<24} {}\n", "HOST", "ADDRESS", "NAMESPACE", "STATE"));
    for h in t.hosts() {
        out.push_str(&format!("{:<8} {:<16} {:<24} {}\n", h.name, h.address, h.netns, present(&h.netns)));
    }
    out
}

fn present(ns: &str) -> &'static str {
    if netns::exists(ns) {
        "up"
    } else {
        "absent"
    }
}

/// Takes a host's underlay link down (a cut cable) or up again.
pub fn set_underlay(t: &Topology, host: &LabHost, up: bool) -> anyhow::Result<()> {
    let port = host.port.clone();
    netns::run_in(&t.underlay_ns, move || -> anyhow::Result<()> {
        let mut nl = Netlink::open()?;
        if up {
            nl.set_up(&port)?;
        } else {
            nl.set_down(&port)?;
        }
        Ok(())
    })?
}

/// The node's load-balancer instance outside the namespace: its bpffs mount and run directory
/// (`/run/shoal/<netns>`) and its task cgroup, all named after the node's namespace.
fn remove_lb_instance(node_ns: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let inst = shoal_dataplane::lb::Instance::named(node_ns);
    let pin_dir = inst.pin_dir();
    if shoal_ebpf::is_bpffs(&pin_dir).unwrap_or(false) {
        if let Err(e) = nix::mount::umount2(&pin_dir, nix::mount::MntFlags::MNT_DETACH) {
            failures.push(format!("unmount {}: {e}", pin_dir.display()));
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&inst.run_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            failures.push(format!("remove {}: {e}", inst.run_dir.display()));
        }
    }
    // Task cgroups first (v2 and v1 hierarchies), then the node's own.
    let layout = crate::agent::executor::cgroups::Layout::detect();
    let cgroups = crate::agent::executor::cgroups::remove_instance(&layout, &std::path::Path::new("shoal").join(&inst.name));
    failures.extend(cgroups.iter().map(ToString::to_string));
    failures
}
