//! Encrypted overlay networks (`--opt encrypted`): one WireGuard tunnel per node, `shw0`, whose
//! peers are the other nodes (allowed IP: their tunnel address /32, endpoint: their underlay
//! address, port 51820). An encrypted network's VXLAN device runs between tunnel addresses, so
//! its packets exist only inside the tunnel; the table `ip shoal_crypt` drops its VXLAN that
//! would leave or arrive any other way (fail closed).
//!
//! The backend is probed like the balancer's: kernel WireGuard where the kernel has it, else
//! userspace WireGuard (gotatun) on a TUN device in a helper process ([`userspace`]). When
//! neither can come up, [`reconcile`] says why and the caller attaches nothing of the encrypted
//! networks: there is no plaintext fallback.

pub mod ipsec;
pub mod kernel;
pub mod key;
mod nft;
pub mod offload;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod uapi;
mod uapi_server;
pub mod userspace;
pub mod wg_error;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use crate::lb::Instance;
use crate::netlink::{Addr, LinkKind, Netlink, NetlinkError, Route, MAIN_TABLE};
use crate::state::DesiredNode;

use plan::{FailClosed, LinkObserved, LinkOp, Tunnel, WgOp, DEVICE, DEVICE_ALIAS, WG_OVERHEAD};

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// Encryption cannot run on this node; the text says what is missing.
    #[error("{0}")]
    Unavailable(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("encryption: {0}")]
    WireGuard(#[from] wg_error::WgError),
    #[error("encryption: {0}")]
    Xfrm(#[from] ipsec::kernel::XfrmError),
    /// The fail-closed nftables table could not be read or written.
    #[error("encryption: {what}: {message}")]
    FailClosedTable { what: String, message: String },
    /// The WireGuard tunnel was asked to run on a backend that is not WireGuard (a bug: the
    /// backend pick chooses between the two WireGuards only).
    #[error("encryption: the WireGuard tunnel cannot run on {0}")]
    NotWireGuard(Backend),
    /// Removing what encryption made failed in places; the rest was removed.
    #[error("encryption: {what}: {}", failures.join("; "))]
    Teardown { what: &'static str, failures: Vec<String> },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Kernel,
    Userspace,
    /// ESP in transport mode over XFRM (`--opt encrypted=ipsec`).
    Ipsec,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel WireGuard",
            Backend::Userspace => "userspace WireGuard (gotatun on TUN)",
            Backend::Ipsec => "IPsec (XFRM ESP, AES-GCM)",
        })
    }
}

/// Which WireGuard to run: probe (kernel, else userspace), or force one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    #[default]
    Auto,
    Kernel,
    Userspace,
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "kernel" => Ok(Choice::Kernel),
            "userspace" => Ok(Choice::Userspace),
            _ => Err(format!("'{s}': use auto, kernel or userspace")),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// None when no network is encrypted. The WireGuard backend when a network uses it, else
    /// [`Backend::Ipsec`] when one uses IPsec.
    pub backend: Option<Backend>,
    pub reason: String,
    pub changes: Vec<String>,
    /// When an IPsec key rotation's next step is due (seconds since the epoch): run a pass then.
    pub next_pass_at: Option<u64>,
}

/// Where the userspace helper of this namespace keeps its pid file, socket and log.
pub fn helper_dir(node: &str) -> PathBuf {
    let name = thread_netns_name().unwrap_or_else(|| if node.is_empty() { "local".into() } else { node.to_string() });
    Instance::named(&name).run_dir.join("wg")
}

/// The name under /run/netns of the calling thread's network namespace (teardown runs on a
/// thread moved into the node's namespace: /proc/self would name the process's).
fn thread_netns_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
    std::fs::read_dir(crate::netns::NETNS_DIR)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == me.ino() && m.dev() == me.dev()))
        .and_then(|e| e.file_name().into_string().ok())
}

fn pick(choice: Choice) -> Result<(Backend, String), CryptError> {
    let kernel = kernel::probe();
    let tun = std::path::Path::new("/dev/net/tun").exists();
    match (choice, kernel) {
        (Choice::Kernel, Err(e)) => Err(CryptError::Unavailable(format!("--wireguard kernel: {e}"))),
        (Choice::Kernel | Choice::Auto, Ok(())) => Ok((Backend::Kernel, "the kernel has WireGuard".into())),
        (Choice::Userspace, _) if tun => Ok((Backend::Userspace, "asked for".into())),
        (Choice::Auto, Err(e)) if tun => Ok((Backend::Userspace, format!("{e}; /dev/net/tun is there"))),
        (_, Err(e)) => Err(CryptError::Unavailable(format!("no WireGuard: {e}, and no TUN device (/dev/net/tun is missing)"))),
        (Choice::Userspace, Ok(())) => {
            Err(CryptError::Unavailable("--wireguard userspace: no TUN device (/dev/net/tun is missing)".into()))
        }
    }
}

/// Brings this namespace's encryption to what `desired` asks: the fail-closed table first (so no
/// moment lets an encrypted VNI out in the clear), then the tunnel device, its WireGuard keys and
/// peers, its address and routes. `Err(Unavailable)` means the node cannot encrypt: attach none
/// of the encrypted networks. `desired` must be valid.
pub fn reconcile(desired: &DesiredNode, choice: Choice, dry_run: bool) -> Result<Report, CryptError> {
    let fail = FailClosed::from_state(desired);
    let ipsec_want = ipsec::plan::desired(desired).map_err(|e| CryptError::Unavailable(e.to_string()))?;
    let wg_want = plan::desired(desired);
    if fail.is_empty() {
        let changes = if dry_run { Vec::new() } else { remove_all(&helper_dir(&desired.node))? };
        return Ok(Report { backend: None, reason: "no network is encrypted".into(), changes, next_pass_at: None });
    }
    let mut changes = Vec::new();
    if !nft::current(&fail)? {
        changes.push(format!("fail closed: table ip {}: {}", plan::TABLE, fail.tag()));
        if !dry_run {
            nft::apply(&fail)?;
        }
    }
    let mut report = match &ipsec_want {
        Some(_) => Report { backend: Some(Backend::Ipsec), reason: "asked for (--opt encrypted=ipsec)".into(), ..Default::default() },
        None => Report::default(),
    };
    // IPsec first: a node that cannot run it refuses every encrypted network, as for WireGuard.
    let (ipsec_changes, next) = reconcile_ipsec(ipsec_want.as_ref(), dry_run)?;
    changes.extend(ipsec_changes);
    report.next_pass_at = next;
    let Some(want) = wg_want else {
        if !dry_run {
            changes.extend(remove_tunnel(&helper_dir(&desired.node))?);
        }
        return Ok(Report { changes, ..report });
    };
    let (backend, reason) = pick(choice)?;
    let mut nl = Netlink::open()?;
    let underlay_mtu = underlay_mtu(&mut nl, desired)?;
    let mtu = underlay_mtu - WG_OVERHEAD;
    if dry_run {
        changes.push(format!("bring up {backend} on {DEVICE} mtu {mtu}"));
        return Ok(Report { backend: Some(backend), reason, changes, ..report });
    }
    let dir = helper_dir(&desired.node);
    let existing = nl.link_by_name(DEVICE)?;
    match backend {
        Backend::Kernel => {
            if userspace::stop(&dir)? {
                changes.push("stop the userspace WireGuard helper".into());
            }
            let existing = nl.link_by_name(DEVICE)?;
            if existing.as_ref().is_some_and(|l| l.kind != LinkKind::Other("wireguard".into())) {
                nl.delete_link(DEVICE)?;
                changes.push(format!("delete link {DEVICE} (not a kernel WireGuard device)"));
            }
            if nl.link_by_name(DEVICE)?.is_none() {
                nl.add_wireguard(DEVICE, mtu, DEVICE_ALIAS)?;
                changes.push(format!("create wireguard {DEVICE} mtu {mtu}"));
            }
            let mut genl = kernel::Genl::open().map_err(|e| CryptError::Unavailable(e.to_string()))?;
            let have = genl.get(DEVICE)?;
            let ops = plan::plan_device(&want, &have);
            if !ops.is_empty() {
                genl.set(DEVICE, &ops)?;
            }
            changes.extend(ops.iter().map(WgOp::to_string));
        }
        Backend::Userspace => {
            if existing.as_ref().is_some_and(|l| l.kind == LinkKind::Other("wireguard".into())) {
                nl.delete_link(DEVICE)?;
                changes.push(format!("delete link {DEVICE} (kernel WireGuard, now userspace)"));
            }
            let (pid, started) = userspace::ensure(&dir)?;
            if started {
                changes.push(format!("start userspace WireGuard on {DEVICE} (helper pid {pid}, {})", dir.display()));
            }
            let socket = userspace::socket(&dir);
            let have = uapi::get(&socket)?;
            let ops = plan::plan_device(&want, &have);
            if !ops.is_empty() {
                uapi::set(&socket, &ops)?;
            }
            changes.extend(ops.iter().map(WgOp::to_string));
        }
        // `pick` chooses between the two WireGuards only.
        Backend::Ipsec => return Err(CryptError::NotWireGuard(Backend::Ipsec)),
    }
    let ops = plan::plan_link(&want, mtu, &observe_link(&mut nl)?);
    for op in &ops {
        apply_link(&mut nl, op)?;
    }
    changes.extend(ops.iter().map(LinkOp::to_string));
    Ok(Report { backend: Some(backend), reason, changes, ..report })
}

/// Brings this namespace's XFRM SAs and policies to `want` (None: none of ours). Returns what it
/// did and when a rotation's next step is due.
fn reconcile_ipsec(want: Option<&ipsec::plan::Want>, dry_run: bool) -> Result<(Vec<String>, Option<u64>), CryptError> {
    let xfrm = ipsec::kernel::Xfrm::open();
    let mut x = match (xfrm, want) {
        (Ok(x), _) => x,
        // No XFRM at all: there is nothing of ours to remove either.
        (Err(_), None) => return Ok((Vec::new(), None)),
        (Err(e), Some(_)) => return Err(CryptError::Unavailable(format!("IPsec: {e}"))),
    };
    let have = x.observe()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let plan = ipsec::plan::plan(want, &have, now);
    if !dry_run {
        x.apply(&plan.ops).map_err(|e| if e.is_unavailable() { CryptError::Unavailable(e.to_string()) } else { CryptError::Xfrm(e) })?;
    }
    Ok((plan.ops.iter().map(|o| o.to_string()).collect(), plan.next_step_at))
}

fn underlay_mtu(nl: &mut Netlink, desired: &DesiredNode) -> Result<u32, CryptError> {
    let me = desired.self_node().ok_or_else(|| CryptError::Unavailable(format!("node '{}' is not in `nodes`", desired.node)))?;
    let addrs = nl.addrs()?;
    let links = nl.links()?;
    addrs.iter().find(|a| a.ip == me.address).and_then(|a| links.iter().find(|l| l.index == a.ifindex)).map(|l| l.mtu).ok_or_else(|| {
        CryptError::Unavailable(format!(
            "node '{}': no interface in this network namespace has its underlay address {}",
            me.name, me.address
        ))
    })
}

fn observe_link(nl: &mut Netlink) -> Result<LinkObserved, CryptError> {
    let link =
        nl.link_by_name(DEVICE)?.ok_or_else(|| CryptError::Unavailable(format!("{DEVICE} vanished while it was being configured")))?;
    let addrs: BTreeSet<_> = nl.addrs()?.into_iter().filter(|a| a.ifindex == link.index).map(|a| (a.ip, a.prefix)).collect();
    let routes = nl
        .shoal_routes()?
        .into_iter()
        .filter(|r| r.oif == Some(link.index) && r.prefix == 32 && r.table == MAIN_TABLE)
        .map(|r| r.dst)
        .collect();
    Ok(LinkObserved { mtu: link.mtu, up: link.up, addrs, routes })
}

fn apply_link(nl: &mut Netlink, op: &LinkOp) -> Result<(), CryptError> {
    let index = || -> Result<u32, CryptError> {
        Ok(Netlink::open()?.link_by_name(DEVICE)?.ok_or_else(|| CryptError::Unavailable(format!("{DEVICE} vanished")))?.index)
    };
    match op {
        LinkOp::SetMtu(m) => nl.set_mtu(DEVICE, *m)?,
        LinkOp::SetUp => nl.set_up(DEVICE)?,
        LinkOp::AddAddr(a) => nl.add_addr(Addr { ifindex: index()?, ip: *a, prefix: 32 }, DEVICE)?,
        LinkOp::DelAddr(a, p) => nl.delete_addr(Addr { ifindex: index()?, ip: *a, prefix: *p }, DEVICE)?,
        LinkOp::AddRoute { dst, src } => nl.add_route(route(index()?, *dst, Some(*src)))?,
        LinkOp::DelRoute(dst) => nl.delete_route(route(index()?, *dst, None))?,
    }
    Ok(())
}

fn route(oif: u32, dst: std::net::Ipv4Addr, src: Option<std::net::Ipv4Addr>) -> Route {
    Route { table: MAIN_TABLE, dst, prefix: 32, oif: Some(oif), gateway: None, src }
}

/// Removes the WireGuard tunnel (helper or kernel device) alone.
fn remove_tunnel(dir: &std::path::Path) -> Result<Vec<String>, CryptError> {
    let mut changes = Vec::new();
    let mut failures = Vec::new();
    remove_tunnel_into(dir, &mut changes, &mut failures)?;
    if failures.is_empty() {
        Ok(changes)
    } else {
        Err(CryptError::Teardown { what: "remove the WireGuard tunnel", failures })
    }
}

/// Removes the tunnel, our SAs and policies, and the fail-closed table. Keeps going past
/// failures; returns what it did.
fn remove_all(dir: &std::path::Path) -> Result<Vec<String>, CryptError> {
    let mut changes = Vec::new();
    let mut failures = Vec::new();
    remove_tunnel_into(dir, &mut changes, &mut failures)?;
    match reconcile_ipsec(None, false) {
        Ok((done, _)) => changes.extend(done),
        Err(e) => failures.push(e.to_string()),
    }
    let empty = FailClosed::default();
    match nft::current(&empty) {
        Ok(true) => {}
        Ok(false) => match nft::apply(&empty) {
            Ok(()) => changes.push(format!("remove table ip {}", plan::TABLE)),
            Err(e) => failures.push(e.to_string()),
        },
        // No nftables here: there is no table of ours either.
        Err(CryptError::Unavailable(_)) => {}
        Err(e) => failures.push(e.to_string()),
    }
    if failures.is_empty() {
        Ok(changes)
    } else {
        Err(CryptError::Teardown { what: "teardown", failures })
    }
}

fn remove_tunnel_into(dir: &std::path::Path, changes: &mut Vec<String>, failures: &mut Vec<String>) -> Result<(), CryptError> {
    match userspace::stop(dir) {
        Ok(true) => changes.push("stop the userspace WireGuard helper".to_string()),
        Ok(false) => {}
        Err(e) => failures.push(e.to_string()),
    }
    let mut nl = Netlink::open()?;
    if let Some(l) = nl.link_by_name(DEVICE)? {
        if l.alias.as_deref() == Some(DEVICE_ALIAS) || l.kind == LinkKind::Other("wireguard".into()) {
            match nl.delete_link(DEVICE) {
                Ok(()) => changes.push(format!("delete link {DEVICE}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    Ok(())
}

/// Removes everything encryption made in this namespace (teardown).
pub fn teardown() -> Result<Vec<String>, CryptError> {
    remove_all(&helper_dir(""))
}

/// The desired tunnel, for callers that need its addresses (the overlay planner).
pub fn tunnel(desired: &DesiredNode) -> Option<Tunnel> {
    plan::desired(desired)
}
