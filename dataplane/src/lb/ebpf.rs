//! The eBPF load balancer, over shoal-ebpf: VIPs by the socket-level balancer attached to the
//! tasks' cgroup (connect/sendmsg rewrite to a backend, nothing to NAT), published ports by the
//! tc NAT on the underlay interface (DNAT + SNAT, conntrack in maps) with its reply half on every
//! overlay bridge. Maps and links are pinned under `/run/shoal/<instance>/bpf`: the programs keep
//! running between `shoal` processes and the next one adopts them.
//!
//! # Node-local clients: hooks on the ROOT cgroup
//! The node's own processes (in no shoal cgroup) are balanced too, as Docker's routing mesh
//! answers `curl localhost:5000` on a node: VIPs, `<node address>:<published port>` and
//! `127.0.0.1:<published port>`. For that the socket LB's second set of hooks is attached to the
//! root of the cgroup v2 hierarchy (as Cilium's socket LB is), which **every process of the
//! machine runs**. Each hook first compares the socket's network namespace cookie with this
//! node's and returns at once, changing nothing, for any other namespace: the host and the other
//! nodes (other labs) on the same machine are never translated. The links are pinned in this
//! instance's pin directory and teardown detaches exactly those. Published ports are mirrored
//! into the socket LB (tagged `published`, so they are not mistaken for VIPs), which also lets a
//! task reach its own node's `<node address>:<published port>`.
//!
//! # VIPs carry every port, on the socket path and on the packet path
//! A VIP frontend is keyed by `ANY_PORT` and its backends' port is `ANY_PORT`: the socket LB
//! looks the exact port up first, then the VIP's every-port entry, and keeps the port the client
//! used. A process in a task's network namespace but not in the task cgroup (`nsenter --net`)
//! gets no socket translation: its packets to the VIP come up the overlay bridge, where the NAT's
//! `nat_reply` balances them (DNAT keeping the port, SNAT to the node's LB address on that
//! network, tracked like the mesh's flows). So every VIP frontend is written twice: to the socket
//! LB (the record: no SNAT) and to the NAT as a copy tagged `vip` with the SNAT addresses. The
//! observed table reads both, and a backend on which they disagree (an interrupted run) reads as
//! one the planner must write again, which rewrites both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use shoal_ebpf::{Backend, LoadOptions, ServiceOptions, SockLb, TcHook, TcNat};

use super::plan::{diff, Frontend, Kind, LbOp, LbTable, Target};
use super::{Instance, LbError, LbKind, LoadBalancer, Programmed};
use crate::netlink::Netlink;

/// Where builds before `ServiceTable::options` recorded `keep_client_ip` beside the pins. The
/// maps' service flags say it now; a leftover file is removed when found.
const LEGACY_OPTIONS_FILE: &str = "ebpf-keep-client-ip.json";

pub struct EbpfLb {
    sock: SockLb,
    nat: TcNat,
    inst: Instance,
}

fn ebpf_err(what: impl Into<String>) -> impl FnOnce(shoal_ebpf::Error) -> LbError {
    let what = what.into();
    move |source| LbError::Ebpf { what, source: Box::new(source) }
}

impl EbpfLb {
    /// True when an earlier run left pinned state for this instance.
    pub fn present(inst: &Instance) -> bool {
        inst.pin_dir().join("sock").exists() || inst.pin_dir().join("nat").exists()
    }

    fn cgroup(inst: &Instance) -> Result<PathBuf, LbError> {
        let root = shoal_ebpf::cgroup2_mount()
            .ok_or_else(|| LbError::Unavailable { kind: LbKind::Ebpf, reason: super::Unavailable::NoCgroup2 })?;
        Ok(inst.cgroup(&root))
    }

    /// Loads (adopting pinned maps and links) and attaches: the socket LB to the instance's
    /// cgroup (created), the NAT to the interface holding the node's underlay address and to
    /// every overlay bridge of `desired`. Must run in the node's network namespace.
    pub fn open(inst: &Instance, desired: &LbTable) -> Result<Self, LbError> {
        let pins = inst.pin_dir();
        shoal_ebpf::ensure_bpffs(&pins).map_err(ebpf_err("mount bpffs"))?;
        let opts = LoadOptions { pin_dir: Some(pins.clone()), ..LoadOptions::default() };
        let cgroup = Self::cgroup(inst)?;
        std::fs::create_dir_all(&cgroup).map_err(|source| LbError::Io {
            what: "create cgroup",
            path: cgroup.display().to_string(),
            source,
        })?;
        let sock = SockLb::load(&opts).map_err(ebpf_err("load the socket LB"))?;
        let mut sock = sock.attach(&cgroup).map_err(ebpf_err(format!("attach the socket LB to {}", cgroup.display())))?;
        // `show` opens with an empty table: keep the published address an apply wrote.
        let published_addr = desired.underlay.or_else(|| sock.host_node().ok().flatten().and_then(|(_, a)| a));
        let root = shoal_ebpf::cgroup2_mount().unwrap_or_default();
        sock.attach_host(&root, published_addr)
            .map_err(ebpf_err(format!("attach the socket LB for the node's own processes to the root cgroup {}", root.display())))?;
        let mut nat = TcNat::load(&opts).map_err(ebpf_err("load the NAT"))?;
        if let Some(addr) = desired.underlay {
            let ifname = interface_with(addr)?;
            nat.attach_hook(TcHook::Ingress, &ifname).map_err(ebpf_err(format!("attach the NAT to {ifname}")))?;
        }
        for bridge in desired.bridges.keys() {
            nat.attach_hook(TcHook::Reply, bridge).map_err(ebpf_err(format!("attach the reply NAT to {bridge}")))?;
        }
        remove_legacy_options(inst);
        let mut lb = Self { sock, nat, inst: inst.clone() };
        lb.sync_mirrors()?;
        Ok(lb)
    }

    /// The NAT's published ports (not its copies of VIPs).
    fn nat_published(&self) -> impl Iterator<Item = &shoal_ebpf::ServiceKey> {
        self.nat.table().services().filter(|k| !self.nat.table().options(k).is_some_and(|o| o.vip))
    }

    /// Makes the socket LB's copy of every published port equal to the NAT's, and removes copies
    /// of ports no longer published (no kernel write when they agree).
    fn sync_mirrors(&mut self) -> Result<(), LbError> {
        let published: Vec<_> = self.nat_published().copied().collect();
        for key in &published {
            self.sync_mirror(key)?;
        }
        let stale: Vec<_> = self
            .sock
            .table()
            .services()
            .filter(|k| self.sock.table().options(k).is_some_and(|o| o.published) && !published.contains(k))
            .copied()
            .collect();
        for key in stale {
            self.sock.remove_service(&key).map_err(ebpf_err(format!("remove the node-local copy of {key}")))?;
        }
        Ok(())
    }

    /// The socket LB's copy of published port `key`, for node-local clients: same backends,
    /// weights and local preference as the NAT's, no SNAT (the socket connects to the backend).
    fn sync_mirror(&mut self, key: &shoal_ebpf::ServiceKey) -> Result<(), LbError> {
        let err = |what: &str| ebpf_err(format!("{what} the node-local copy of {key}"));
        let Some(opts) = self.nat.table().options(key) else {
            return self.sock.remove_service(key).map_err(err("remove"));
        };
        let backends: Vec<Backend> =
            self.nat.table().backends(key).unwrap_or_default().iter().map(|b| Backend { snat: None, ..*b }).collect();
        self.sock.upsert_service(*key, ServiceOptions { published: true, ..opts }).map_err(err("publish"))?;
        self.sock.set_backends(key, &backends).map(drop).map_err(err("set the backends of"))
    }

    /// The table the maps hold, in planner terms. A VIP is what the socket LB and the NAT's copy
    /// hold together (see the module docs).
    pub fn observed(&self) -> LbTable {
        let mut t = LbTable::default();
        let target = |b: &Backend| Target { addr: b.addr, snat: b.snat.unwrap_or(Ipv4Addr::UNSPECIFIED), local: b.local, weight: b.weight };
        let sock_vips = self.sock.table().services().filter(|k| !self.sock.table().options(k).is_some_and(|o| o.published));
        let nat_vips = self.nat.table().services().filter(|k| self.nat.table().options(k).is_some_and(|o| o.vip));
        let keys: BTreeSet<_> = sock_vips.chain(nat_vips).copied().collect();
        for key in keys {
            let sock = self.sock.table().backends(&key).unwrap_or_default();
            let nat = self.nat.table().backends(&key).unwrap_or_default();
            t.vips.insert(key, Frontend { keep_client_ip: false, backends: sorted(vip_targets(sock, nat)) });
        }
        for key in self.nat_published() {
            let backends = sorted(self.nat.table().backends(key).unwrap_or_default().iter().map(target).collect());
            let keep_client_ip = self.nat.table().options(key).is_some_and(|o| o.keep_client_ip);
            t.published.insert(*key, Frontend { keep_client_ip, backends });
        }
        t
    }

    /// One operation; a published port's change is then copied to the socket LB.
    fn run(&mut self, op: &LbOp) -> Result<(), LbError> {
        match op.frontend() {
            (Kind::Published, key) => {
                self.run_one(op)?;
                self.sync_mirror(&key)
            }
            (Kind::Vip, _) => self.run_vip(op),
        }
    }

    /// A VIP operation, on the socket LB and on the NAT's copy. A backend added to a VIP one of
    /// them lacks (an interrupted run) creates it there first.
    fn run_vip(&mut self, op: &LbOp) -> Result<(), LbError> {
        let e = |what: &str| ebpf_err(format!("{what}: {op}"));
        let nat_opts = ServiceOptions { vip: true, ..ServiceOptions::default() };
        match op {
            LbOp::AddFrontend { key, .. } | LbOp::SetOptions { key, .. } => {
                self.sock.upsert_service(*key, ServiceOptions::default()).map_err(e("add VIP"))?;
                self.nat.upsert_service(*key, nat_opts).map_err(e("add VIP to the packet path"))
            }
            LbOp::RemoveFrontend { key, .. } => {
                self.sock.remove_service(key).map_err(e("remove VIP"))?;
                self.nat.remove_service(key).map_err(e("remove VIP from the packet path"))
            }
            LbOp::AddBackend { key, target, .. } => {
                self.sock.upsert_service(*key, ServiceOptions::default()).map_err(e("add VIP"))?;
                self.nat.upsert_service(*key, nat_opts).map_err(e("add VIP to the packet path"))?;
                self.sock.add_backend(key, Backend::new(target.addr).with_weight(target.weight)).map_err(e("add backend"))?;
                let nat = Backend::nat(target.addr, target.snat, false).with_weight(target.weight);
                self.nat.add_backend(key, nat).map(drop).map_err(e("add backend to the packet path"))
            }
            LbOp::RemoveBackend { key, addr, .. } => {
                if self.sock.table().options(key).is_some() {
                    self.sock.remove_backend(key, *addr).map_err(e("remove backend"))?;
                }
                if self.nat.table().options(key).is_some() {
                    self.nat.remove_backend(key, *addr).map_err(e("remove backend from the packet path"))?;
                }
                Ok(())
            }
        }
    }

    fn run_one(&mut self, op: &LbOp) -> Result<(), LbError> {
        let e = |what: &str| ebpf_err(format!("{what}: {op}"));
        match op {
            LbOp::AddFrontend { kind: Kind::Vip, .. }
            | LbOp::SetOptions { kind: Kind::Vip, .. }
            | LbOp::RemoveFrontend { kind: Kind::Vip, .. }
            | LbOp::AddBackend { kind: Kind::Vip, .. }
            | LbOp::RemoveBackend { kind: Kind::Vip, .. } => self.run_vip(op),
            LbOp::AddFrontend { kind: Kind::Published, key, keep_client_ip }
            | LbOp::SetOptions { kind: Kind::Published, key, keep_client_ip } => self
                .nat
                .upsert_service(*key, ServiceOptions { keep_client_ip: *keep_client_ip, ..ServiceOptions::default() })
                .map_err(e("publish")),
            LbOp::RemoveFrontend { kind: Kind::Published, key } => self.nat.remove_service(key).map_err(e("unpublish")),
            LbOp::AddBackend { kind: Kind::Published, key, target } => self
                .nat
                .add_backend(key, Backend::nat(target.addr, target.snat, target.local).with_weight(target.weight))
                .map(drop)
                .map_err(e("add backend")),
            LbOp::RemoveBackend { kind: Kind::Published, key, addr } => {
                self.nat.remove_backend(key, *addr).map(drop).map_err(e("remove backend"))
            }
        }
    }

    /// Follows the interfaces of `desired` with the programs already loaded (no verifier pass):
    /// the reply NAT onto new bridges and off bridges no longer wanted, the ingress NAT onto the
    /// interface now holding the underlay address, and the node-local clients' published
    /// address. Must run in the node's network namespace.
    fn rewire_to(&mut self, desired: &LbTable) -> Result<(), LbError> {
        let underlay_if = desired.underlay.map(interface_with).transpose()?;
        let want = wanted(underlay_if.as_deref(), desired.bridges.keys());
        let have = self.nat.attachments().map_err(ebpf_err("list the NAT's attachments"))?;
        let plan = rewire_plan(&have, &want);
        for (hook, ifname) in &plan.attach {
            self.nat.attach_hook(*hook, ifname).map_err(ebpf_err(format!("attach {} to {ifname}", hook.program())))?;
        }
        for (hook, ifname) in &plan.detach {
            self.nat.detach_hook(*hook, ifname).map_err(ebpf_err(format!("detach {} from {ifname}", hook.program())))?;
        }
        let host = self.sock.host_node().map_err(ebpf_err("read the node-local clients' settings"))?;
        if desired.underlay.is_some() && host.and_then(|(_, a)| a) != desired.underlay {
            let root = shoal_ebpf::cgroup2_mount().unwrap_or_default();
            self.sock.attach_host(&root, desired.underlay).map_err(ebpf_err("set the published address of the node-local clients"))?;
        }
        tracing::info!(attached = plan.attach.len(), detached = plan.detach.len(), "eBPF balancer rewired");
        Ok(())
    }

    /// Detaches and unpins everything of `inst`, unmounts its bpffs and removes its cgroup.
    pub fn teardown_at(inst: &Instance) -> Result<Vec<String>, LbError> {
        let mut errors = Vec::new();
        let opts = LoadOptions { pin_dir: Some(inst.pin_dir()), ..LoadOptions::default() };
        let mut changes = Vec::new();
        if shoal_ebpf::is_bpffs(&inst.pin_dir()).unwrap_or(false) {
            match SockLb::load(&opts) {
                Ok(s) => errors.extend(
                    s.teardown().into_iter().map(|e| LbError::Ebpf { what: "tear down the socket LB".into(), source: Box::new(e) }),
                ),
                Err(e) => errors.push(LbError::Ebpf { what: "load the socket LB for teardown".into(), source: Box::new(e) }),
            }
            match TcNat::load(&opts) {
                Ok(n) => {
                    errors.extend(n.teardown().into_iter().map(|e| LbError::Ebpf { what: "tear down the NAT".into(), source: Box::new(e) }))
                }
                Err(e) => errors.push(LbError::Ebpf { what: "load the NAT for teardown".into(), source: Box::new(e) }),
            }
            changes.push(format!("lb remove ebpf pins {}", inst.pin_dir().display()));
            unmount(&inst.pin_dir(), &mut errors);
        }
        if let Ok(cg) = Self::cgroup(inst) {
            if cg.exists() {
                match std::fs::remove_dir(&cg) {
                    Ok(()) => changes.push(format!("lb remove cgroup {}", cg.display())),
                    Err(source) => {
                        errors.push(LbError::Io { what: "remove cgroup (tasks still in it?)", path: cg.display().to_string(), source })
                    }
                }
            }
        }
        remove_legacy_options(inst);
        let _ = std::fs::remove_dir(inst.pin_dir());
        let _ = std::fs::remove_dir(&inst.run_dir);
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(LbError::Many(errors))
        }
    }
}

/// The options file of older builds is ignored (the maps hold the options) and removed.
fn remove_legacy_options(inst: &Instance) {
    let path = inst.run_dir.join(LEGACY_OPTIONS_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed the options file of an older build; options are read from the maps"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove the options file of an older build"),
    }
}

fn unmount(path: &std::path::Path, errors: &mut Vec<LbError>) {
    if let Err(e) = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        errors.push(LbError::Io { what: "unmount bpffs", path: path.display().to_string(), source: std::io::Error::from(e) });
    }
}

fn sorted(mut v: Vec<Target>) -> Vec<Target> {
    v.sort();
    v
}

/// What the eBPF balancer can express: VIP backends need no locality (both paths pick by weight
/// alone); their SNAT address is the packet path's. Weights are kept: new flows go to backends in
/// proportion to them, and weight 0 drains (no new flows, tracked ones stay).
pub fn normalize(t: &LbTable) -> LbTable {
    let mut t = t.clone();
    for f in t.vips.values_mut() {
        for b in &mut f.backends {
            b.local = false;
        }
    }
    t
}

/// A VIP's backends from the socket LB's record and the NAT's copy: a backend both hold alike
/// reads with the copy's SNAT address; one they disagree on (held by one only, or with other
/// weights) reads without, which no desired table has, so the planner writes it again.
fn vip_targets(sock: &[Backend], nat: &[Backend]) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for b in sock.iter().chain(nat.iter().filter(|n| !sock.iter().any(|s| s.addr == n.addr))) {
        let copy = nat.iter().find(|n| n.addr == b.addr && n.weight == b.weight);
        let in_sock = sock.iter().any(|s| s.addr == b.addr);
        let snat = match copy.and_then(|c| c.snat) {
            Some(snat) if in_sock => snat,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        out.push(Target { addr: b.addr, snat, local: false, weight: b.weight });
    }
    out
}

/// The NAT attachments a table asks for: ingress on the underlay interface, reply on each bridge.
fn wanted<'a>(underlay_if: Option<&str>, bridges: impl Iterator<Item = &'a String>) -> BTreeSet<(TcHook, String)> {
    let ingress = underlay_if.map(|i| (TcHook::Ingress, i.to_owned()));
    ingress.into_iter().chain(bridges.map(|b| (TcHook::Reply, b.clone()))).collect()
}

/// What a rewire does.
#[derive(Debug, Default, PartialEq, Eq)]
struct RewirePlan {
    /// Wanted and not live (new, or its interface was made anew).
    attach: Vec<(TcHook, String)>,
    /// Recorded (live or not) and no longer wanted.
    detach: Vec<(TcHook, String)>,
}

/// From the attachments there are (`have`: live or not) to `want`. New attachments come first
/// (a moved underlay interface is served before the old one is left).
fn rewire_plan(have: &BTreeMap<(TcHook, String), bool>, want: &BTreeSet<(TcHook, String)>) -> RewirePlan {
    RewirePlan {
        attach: want.iter().filter(|w| have.get(*w) != Some(&true)).cloned().collect(),
        detach: have.keys().filter(|h| !want.contains(*h)).cloned().collect(),
    }
}

/// The interface (in this namespace) that holds `addr`.
fn interface_with(addr: Ipv4Addr) -> Result<String, LbError> {
    let err = |source| LbError::FindUnderlay { addr, source };
    let mut nl = Netlink::open().map_err(err)?;
    let index = nl.addrs().map_err(err)?.into_iter().find(|a| a.ip == addr).map(|a| a.ifindex);
    let links = nl.links().map_err(err)?;
    index.and_then(|i| links.into_iter().find(|l| l.index == i)).map(|l| l.name).ok_or(LbError::NoUnderlayInterface { addr })
}

impl LoadBalancer for EbpfLb {
    fn kind(&self) -> LbKind {
        LbKind::Ebpf
    }

    fn reconcile(&mut self, desired: &LbTable, dry_run: bool) -> Result<Vec<String>, LbError> {
        let ops = diff(&self.observed(), &normalize(desired));
        if !dry_run {
            for op in &ops {
                self.run(op)?;
            }
        }
        Ok(ops.iter().map(|o| o.to_string()).collect())
    }

    fn apply_ops(&mut self, _desired: &LbTable, ops: &[LbOp]) -> Result<Vec<String>, LbError> {
        for op in ops {
            self.run(op)?;
        }
        Ok(ops.iter().map(|o| o.to_string()).collect())
    }

    fn programmed(&mut self) -> Result<Programmed, LbError> {
        let t = self.observed();
        let mut out = Vec::new();
        for kind in [Kind::Vip, Kind::Published] {
            for (key, f) in t.frontends(kind) {
                out.push((kind, *key, f.backends.iter().map(|b| b.addr.to_string()).collect()));
            }
        }
        Ok(out)
    }

    fn teardown(&mut self) -> Result<Vec<String>, LbError> {
        Self::teardown_at(&self.inst)
    }

    fn rewire(&mut self, desired: &LbTable) -> Result<bool, LbError> {
        self.rewire_to(desired)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(hook: TcHook, ifname: &str) -> (TcHook, String) {
        (hook, ifname.to_owned())
    }

    fn be(addr: &str, snat: Option<&str>, weight: u16) -> Backend {
        Backend { addr: addr.parse().unwrap(), snat: snat.map(|s| s.parse().unwrap()), local: false, weight }
    }

    #[test]
    fn a_vip_reads_as_the_socket_record_with_the_copys_snat_and_disagreements_read_unfinished() {
        let lb = "10.0.9.250".parse().unwrap();
        let sock = [be("10.0.9.2:0", None, 1), be("10.0.9.3:0", None, 2), be("10.0.9.4:0", None, 1)];
        let nat =
            [be("10.0.9.2:0", Some("10.0.9.250"), 1), be("10.0.9.3:0", Some("10.0.9.250"), 1), be("10.0.9.5:0", Some("10.0.9.250"), 1)];
        let t = sorted(vip_targets(&sock, &nat));
        let got: Vec<_> = t.iter().map(|t| (t.addr.to_string(), t.snat, t.weight)).collect();
        let none = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            got,
            [
                ("10.0.9.2:0".to_string(), lb, 1),   // both alike
                ("10.0.9.3:0".to_string(), none, 2), // weights differ
                ("10.0.9.4:0".to_string(), none, 1), // not in the copy
                ("10.0.9.5:0".to_string(), none, 1), // only in the copy
            ]
        );
        assert!(t.iter().all(|t| !t.local));
    }

    #[test]
    fn normalized_vips_keep_their_snat_and_drop_locality_and_read_back_equal() {
        let want = normalize(&super::super::plan::desired(&super::super::plan::tests::state("a")));
        for f in want.vips.values() {
            assert!(f.backends.iter().all(|b| !b.local && !b.snat.is_unspecified() && b.addr.port() == 0), "{f:?}");
            let sock: Vec<Backend> = f.backends.iter().map(|b| Backend::new(b.addr).with_weight(b.weight)).collect();
            let nat: Vec<Backend> = f.backends.iter().map(|b| Backend::nat(b.addr, b.snat, false).with_weight(b.weight)).collect();
            assert_eq!(sorted(vip_targets(&sock, &nat)), f.backends, "a programmed VIP must read back as desired");
        }
    }

    #[test]
    fn the_tables_interfaces_are_wanted() {
        let bridges = ["shb-4097".to_owned(), "shb-4098".to_owned()];
        let w = wanted(Some("eth0"), bridges.iter());
        assert_eq!(w, [att(TcHook::Ingress, "eth0"), att(TcHook::Reply, "shb-4097"), att(TcHook::Reply, "shb-4098")].into());
        assert_eq!(wanted(None, bridges[..1].iter()), [att(TcHook::Reply, "shb-4097")].into());
    }

    #[test]
    fn rewire_attaches_new_and_dead_and_detaches_unwanted() {
        let have: BTreeMap<_, _> = [
            (att(TcHook::Ingress, "eth0"), true),
            (att(TcHook::Reply, "shb-1"), true),
            (att(TcHook::Reply, "shb-2"), false), // bridge made anew since: its attachment went
            (att(TcHook::Reply, "shb-3"), true),
        ]
        .into();
        let want: BTreeSet<_> =
            [att(TcHook::Ingress, "eth1"), att(TcHook::Reply, "shb-1"), att(TcHook::Reply, "shb-2"), att(TcHook::Reply, "shb-4")].into();
        let plan = rewire_plan(&have, &want);
        assert_eq!(plan.attach, [att(TcHook::Ingress, "eth1"), att(TcHook::Reply, "shb-2"), att(TcHook::Reply, "shb-4")]);
        assert_eq!(plan.detach, [att(TcHook::Ingress, "eth0"), att(TcHook::Reply, "shb-3")]);
        let live: BTreeMap<_, _> = want.iter().map(|w| (w.clone(), true)).collect();
        assert_eq!(rewire_plan(&live, &want), RewirePlan::default(), "nothing to do when all is attached");
    }
}
