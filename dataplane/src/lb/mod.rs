//! Load balancing for service VIPs and published ports (the routing mesh), behind one trait
//! with eBPF, nftables and IPVS implementations, chosen by probing the kernel.
//!
//! [`plan::desired`] (pure) turns the desired state into an [`LbTable`]: every frontend (a VIP,
//! which carries every port, or a port published on the node's underlay address) with its
//! healthy backends. Each
//! implementation reads what the kernel holds, plans the difference (O(1) kernel operations per
//! backend change) and applies it:
//! - [`ebpf::EbpfLb`]: socket-level LB for VIPs in the tasks' cgroup, tc NAT for published ports
//!   (on the underlay) and for VIP packets no socket hook translated (on the overlay bridges);
//!   pinned under `/run/shoal/<instance>/bpf`, so flows survive the process.
//! - [`nft::NftLb`]: table `ip shoal` with verdict maps, one transaction per reconcile.
//! - [`ipvs::IpvsLb`]: nftables marks each frontend's packets (one map), one IPVS fwmark
//!   service per frontend balances them with NAT, nftables SNATs them (Docker's design).
//!
//! Choosing probes only what the choice needs ([`choose`]): a forced balancer alone, `auto`
//! in order (eBPF, nftables, IPVS) up to the first that can run; loading the eBPF programs
//! through the verifier is the slow part (seconds under emulation).

pub mod conntrack;
pub mod ebpf;
pub mod instance;
pub mod ipvs;
pub mod nft;
pub mod plan;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use instance::Instance;
pub use plan::{desired, diff, Frontend, Kind, LbOp, LbTable, Target};

use crate::state::DesiredNode;

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("load balancer {kind} cannot run here: {reason}")]
    Unavailable { kind: LbKind, reason: Unavailable },
    /// Every balancer, in the order `auto` tried them, with why it cannot run.
    #[error("no load balancer can run here: {}", .0.iter().map(|(k, r)| format!("{k}: {r}")).collect::<Vec<_>>().join("; "))]
    NoneAvailable(Vec<(LbKind, Unavailable)>),
    #[error("nftables: {what}: {detail}")]
    Nft { what: String, detail: String },
    #[error("nftables: read table ip {table}: {source}")]
    NftListing { table: &'static str, source: nft::ParseError },
    #[error("IPVS: read table ip {table}: {source}")]
    IpvsListing { table: &'static str, source: ipvs::table::ParseError },
    #[error("eBPF load balancer: {what}: {source}")]
    Ebpf { what: String, source: Box<shoal_ebpf::Error> },
    #[error("conntrack: {what}: {detail}")]
    Conntrack { what: String, detail: String },
    #[error("IPVS: {what}: {detail}")]
    Ipvs { what: String, detail: String },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("find the interface holding {addr}: {source}")]
    FindUnderlay { addr: std::net::Ipv4Addr, source: crate::netlink::NetlinkError },
    #[error("no interface holds the node's underlay address {addr}; is this the node's namespace?")]
    NoUnderlayInterface { addr: std::net::Ipv4Addr },
    #[error("teardown failed:{}", .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Many(Vec<LbError>),
}

/// Why one balancer cannot run here (what its probe found, or why it failed to open).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error(transparent)]
    Ebpf(#[from] shoal_ebpf::LbUnsupported),
    #[error("no cgroup v2 hierarchy is mounted")]
    NoCgroup2,
    #[error(transparent)]
    Nftables(#[from] nft::Unavailable),
    #[error(transparent)]
    Ipvs(#[from] ipvs::FamilyError),
    /// It probed fine but failed to open here earlier (kept as text: the error is not Clone).
    #[error("failed to open here: {why}")]
    FailedToOpen { why: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbKind {
    Ebpf,
    Nftables,
    Ipvs,
}

impl LbKind {
    pub const ALL: [LbKind; 3] = [LbKind::Ebpf, LbKind::Nftables, LbKind::Ipvs];
}

impl fmt::Display for LbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbKind::Ebpf => "ebpf",
            LbKind::Nftables => "nftables",
            LbKind::Ipvs => "ipvs",
        })
    }
}

/// `--lb auto|ebpf|nftables|ipvs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    #[default]
    Auto,
    Force(LbKind),
}

// clap's value parser takes FromStr with a String error, so this one stays a String.
impl FromStr for Choice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "ebpf" => Ok(Choice::Force(LbKind::Ebpf)),
            "nftables" | "nft" => Ok(Choice::Force(LbKind::Nftables)),
            "ipvs" => Ok(Choice::Force(LbKind::Ipvs)),
            other => Err(format!("'{other}' is not a load balancer: use auto, ebpf, nftables or ipvs")),
        }
    }
}

/// Frontends a balancer holds, with a label per backend (for `show`).
pub type Programmed = Vec<(Kind, plan::ServiceKey, Vec<String>)>;

/// One load balancer implementation.
pub trait LoadBalancer {
    fn kind(&self) -> LbKind;
    /// Brings the kernel to `desired`; returns the changes made (planned, when `dry_run`),
    /// one line each. Re-applying the same table returns nothing.
    fn reconcile(&mut self, desired: &LbTable, dry_run: bool) -> Result<Vec<String>, LbError>;
    /// The agent's incremental path: `ops` were planned (with [`diff`]) from the table this
    /// balancer was last brought to, and `desired` is that table with `ops` applied. Costs
    /// O(ops) kernel work and never re-reads the rest of the table.
    fn apply_ops(&mut self, desired: &LbTable, ops: &[LbOp]) -> Result<Vec<String>, LbError>;
    /// What the kernel holds.
    fn programmed(&mut self) -> Result<Programmed, LbError>;
    /// Removes everything this balancer made here.
    fn teardown(&mut self) -> Result<Vec<String>, LbError>;
    /// Follows a change of the interfaces it serves (`desired.underlay`, `desired.bridges`:
    /// networks came or went) without reloading. `Ok(false)` (the default): it cannot, so the
    /// caller reopens it, which is cheap for balancers that load nothing.
    fn rewire(&mut self, _desired: &LbTable) -> Result<bool, LbError> {
        Ok(false)
    }
}

/// What the kernel offers, per implementation (`Err` holds the reason it cannot run).
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub ebpf: Result<(), Unavailable>,
    pub nftables: Result<(), Unavailable>,
    pub ipvs: Result<(), Unavailable>,
}

impl ProbeReport {
    pub fn get(&self, kind: LbKind) -> &Result<(), Unavailable> {
        match kind {
            LbKind::Ebpf => &self.ebpf,
            LbKind::Nftables => &self.nftables,
            LbKind::Ipvs => &self.ipvs,
        }
    }

    /// The implementation to use and why: the first available of eBPF, nftables, IPVS, or the
    /// forced one when it can run.
    pub fn choose(&self, choice: Choice) -> Result<(LbKind, String), LbError> {
        choose_with(choice, |kind| self.get(kind).clone())
    }
}

/// The choice made with `probe` asked about each implementation only as needed: the forced one
/// alone, or for `auto` eBPF, nftables, IPVS in turn until one can run.
pub fn choose_with(choice: Choice, mut probe: impl FnMut(LbKind) -> Result<(), Unavailable>) -> Result<(LbKind, String), LbError> {
    match choice {
        Choice::Force(kind) => match probe(kind) {
            Ok(()) => Ok((kind, "forced by --lb".into())),
            Err(reason) => Err(LbError::Unavailable { kind, reason }),
        },
        Choice::Auto => {
            let mut skipped = Vec::new();
            let mut reasons = Vec::new();
            for kind in LbKind::ALL {
                match probe(kind) {
                    Ok(()) if skipped.is_empty() => return Ok((kind, "probed: best available".into())),
                    Ok(()) => return Ok((kind, format!("probed: {}", skipped.join("; ")))),
                    Err(reason) => {
                        skipped.push(format!("{kind} unavailable ({reason})"));
                        reasons.push((kind, reason));
                    }
                }
            }
            Err(LbError::NoneAvailable(reasons))
        }
    }
}

/// Whether implementation `kind` can run here (`Err` holds why not). eBPF loads its programs
/// with tiny maps (slow under emulation), nftables runs `nft`, IPVS asks generic netlink for
/// its family.
pub fn probe_kind(kind: LbKind) -> Result<(), Unavailable> {
    match kind {
        LbKind::Ebpf => shoal_ebpf::probe().load_balancer()?,
        LbKind::Nftables => nft::NftLb::probe()?,
        LbKind::Ipvs => ipvs::probe()?,
    }
    Ok(())
}

/// [`probe_kind`] for instance `inst`: an eBPF balancer already programmed there (its pins
/// exist, and bpffs keeps them for this boot only) has loaded on this kernel, so it is not
/// test-loaded again (a full load of both objects, as long as the real one). Opening it still
/// fails, and is reported, if it cannot run.
pub fn probe_here(kind: LbKind, inst: &Instance) -> Result<(), Unavailable> {
    match kind {
        LbKind::Ebpf if ebpf::EbpfLb::present(inst) => Ok(()),
        _ => probe_kind(kind),
    }
}

/// Probes every implementation (for `show` and the doctor; choosing probes only what it needs,
/// see [`open_choice`]).
pub fn probe() -> ProbeReport {
    ProbeReport { ebpf: probe_kind(LbKind::Ebpf), nftables: probe_kind(LbKind::Nftables), ipvs: probe_kind(LbKind::Ipvs) }
}

/// Probes every implementation, reusing an eBPF probe already run (a test load of both eBPF
/// objects is the slow part): what `shoal doctor` reports.
pub fn probe_with(ebpf: &shoal_ebpf::Probe) -> ProbeReport {
    ProbeReport { ebpf: ebpf.load_balancer().map_err(Into::into), nftables: probe_kind(LbKind::Nftables), ipvs: probe_kind(LbKind::Ipvs) }
}

/// Opens implementation `kind` for this namespace.
pub fn open(kind: LbKind, inst: &Instance, desired: &LbTable) -> Result<Box<dyn LoadBalancer>, LbError> {
    Ok(match kind {
        LbKind::Ebpf => Box::new(ebpf::EbpfLb::open(inst, desired)?),
        LbKind::Nftables => Box::new(nft::NftLb::new()),
        LbKind::Ipvs => Box::new(ipvs::IpvsLb::open()?),
    })
}

/// What one LB reconcile did.
#[derive(Debug, Clone)]
pub struct LbReport {
    /// None: there is nothing to balance (no service), so no balancer was set up.
    pub kind: Option<LbKind>,
    pub reason: String,
    pub changes: Vec<String>,
}

/// Chooses a balancer, brings it to `state` and removes what other balancers left here.
pub fn reconcile(state: &DesiredNode, choice: Choice, dry_run: bool) -> Result<LbReport, LbError> {
    let want = desired(state);
    let inst = Instance::here(&state.node);
    if want.is_empty() && !dry_run {
        // Nothing to balance: leave no program, table or cgroup behind.
        let changes = teardown_except(None, &inst)?;
        return Ok(LbReport { kind: None, reason: "no services".into(), changes });
    }
    if dry_run {
        // No fallback: cleaning up after a balancer that failed to open would change the kernel.
        let (kind, reason) = choose_with(choice, |k| probe_here(k, &inst))?;
        if kind == LbKind::Ebpf && !ebpf::EbpfLb::present(&inst) {
            // Nothing loaded yet: plan against an empty table without loading or attaching anything.
            let changes = diff(&LbTable::default(), &ebpf::normalize(&want)).iter().map(|o| o.to_string()).collect();
            return Ok(LbReport { kind: Some(kind), reason, changes });
        }
        let changes = open(kind, &inst, &want)?.reconcile(&want, true)?;
        return Ok(LbReport { kind: Some(kind), reason, changes });
    }
    let (mut lb, kind, reason) = open_choice(choice, &inst, &want, &mut BTreeMap::new())?;
    let mut changes = lb.reconcile(&want, false)?;
    changes.extend(teardown_except(Some(kind), &inst)?);
    Ok(LbReport { kind: Some(kind), reason, changes })
}

/// Chooses a balancer for `choice` and opens it. Under `auto`, one that probes fine but then
/// cannot open here (e.g. eBPF on a kernel whose tc attachment it cannot make, or whose pins say
/// it ran but which no longer loads) is cleaned up, recorded in `broken` (so a long-lived caller
/// does not try it again) and skipped for the next available one, loudly.
pub fn open_choice(
    choice: Choice,
    inst: &Instance,
    want: &LbTable,
    broken: &mut BTreeMap<LbKind, String>,
) -> Result<(Box<dyn LoadBalancer>, LbKind, String), LbError> {
    loop {
        let (kind, reason) = choose_with(choice, |k| match broken.get(&k) {
            Some(why) => Err(Unavailable::FailedToOpen { why: why.clone() }),
            None => probe_here(k, inst),
        })?;
        tracing::info!(lb = %kind, %reason, instance = %inst.name, "load balancer chosen");
        match open(kind, inst, want) {
            Ok(lb) => return Ok((lb, kind, reason)),
            Err(e) if choice == Choice::Auto => {
                tracing::warn!(lb = %kind, error = %e, "load balancer cannot run here: falling back to the next one");
                // Leave nothing half-attached that could steer traffic beside the next one.
                if let Err(t) = teardown_kind(kind, inst) {
                    tracing::warn!(lb = %kind, error = %t, "cleaning up after the failed load balancer");
                }
                broken.insert(kind, e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes what every balancer made here (all of them, continuing past failures).
pub fn teardown(node: &str) -> Result<Vec<String>, LbError> {
    teardown_except(None, &Instance::here(node))
}

/// Removes the state an instance keeps outside its network namespace (eBPF pins and cgroup),
/// from anywhere, e.g. after the node's namespace was deleted (`shoal lab down`).
pub fn teardown_instance(name: &str) -> Result<Vec<String>, LbError> {
    let inst = Instance::named(name);
    if ebpf::EbpfLb::present(&inst) || inst.run_dir.exists() {
        ebpf::EbpfLb::teardown_at(&inst)
    } else {
        Ok(vec![])
    }
}

/// Removes what balancer `kind` made here, e.g. after it failed to open halfway.
pub fn teardown_kind(kind: LbKind, inst: &Instance) -> Result<Vec<String>, LbError> {
    match kind {
        LbKind::Ebpf if ebpf::EbpfLb::present(inst) => ebpf::EbpfLb::teardown_at(inst),
        LbKind::Ebpf => Ok(vec![]),
        LbKind::Nftables => nft::NftLb::new().teardown(),
        LbKind::Ipvs if ipvs::probe().is_ok() => ipvs::IpvsLb::open()?.teardown(),
        LbKind::Ipvs => Ok(vec![]),
    }
}

fn teardown_except(keep: Option<LbKind>, inst: &Instance) -> Result<Vec<String>, LbError> {
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for kind in LbKind::ALL.into_iter().filter(|k| Some(*k) != keep) {
        match teardown_kind(kind, inst) {
            Ok(c) => changes.extend(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(LbError::Many(errors))
    }
}

/// `shoal dataplane show`: which balancer is programmed here and with what.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShowReport {
    /// The balancer found in the kernel (None: nothing programmed).
    pub active: Option<String>,
    /// What `--lb auto` would choose, and why.
    pub auto: String,
    pub probe: std::collections::BTreeMap<String, String>,
    pub frontends: Vec<String>,
}

pub fn show(node: &str) -> Result<ShowReport, LbError> {
    let inst = Instance::here(node);
    let report = probe();
    let auto = match report.choose(Choice::Auto) {
        Ok((k, why)) => format!("{k} ({why})"),
        Err(e) => e.to_string(),
    };
    let probe = LbKind::ALL
        .iter()
        .map(|k| (k.to_string(), report.get(*k).clone().err().map_or("available".into(), |r| format!("unavailable: {r}"))))
        .collect();
    let mut active = None;
    let mut programmed = Vec::new();
    if ebpf::EbpfLb::present(&inst) {
        active = Some(LbKind::Ebpf);
        programmed = ebpf::EbpfLb::open(&inst, &LbTable::default())?.programmed()?;
    } else {
        let mut n = nft::NftLb::new();
        if n.observe()?.table {
            active = Some(LbKind::Nftables);
            programmed = n.programmed()?;
        } else if report.ipvs.is_ok() {
            let mut lb = ipvs::IpvsLb::open()?;
            let obs = lb.observe()?;
            if obs.table.present || !obs.services.is_empty() {
                active = Some(LbKind::Ipvs);
                programmed = obs.summary();
            }
        }
    }
    let frontends = programmed.into_iter().map(|(kind, key, bes)| format!("{kind} {key} -> [{}]", bes.join(", "))).collect();
    Ok(ShowReport { active: active.map(|k| k.to_string()), auto, probe, frontends })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each balancer's probe says on a host without it.
    fn missing(kind: LbKind) -> Unavailable {
        match kind {
            LbKind::Ebpf => shoal_ebpf::LbUnsupported {
                sock_lb: shoal_ebpf::Support::Unavailable { reason: "no BTF".into() },
                tc_nat: shoal_ebpf::Support::Available,
            }
            .into(),
            LbKind::Nftables => {
                nft::Unavailable::CannotRun { binary: "nft", detail: "No such file or directory (os error 2)".into() }.into()
            }
            LbKind::Ipvs => ipvs::FamilyError::NotInKernel.into(),
        }
    }

    fn report(ebpf: bool, nft: bool) -> ProbeReport {
        let r = |ok: bool, kind: LbKind| if ok { Ok(()) } else { Err(missing(kind)) };
        ProbeReport { ebpf: r(ebpf, LbKind::Ebpf), nftables: r(nft, LbKind::Nftables), ipvs: Err(missing(LbKind::Ipvs)) }
    }

    #[test]
    fn auto_prefers_ebpf_then_nftables_and_says_why() {
        assert_eq!(report(true, true).choose(Choice::Auto).unwrap().0, LbKind::Ebpf);
        let (kind, why) = report(false, true).choose(Choice::Auto).unwrap();
        assert_eq!(kind, LbKind::Nftables);
        assert!(why.contains("ebpf unavailable (socket LB unavailable: no BTF; tc NAT available)"), "{why}");
        let err = report(false, false).choose(Choice::Auto).unwrap_err().to_string();
        assert!(err.contains("generic netlink family \"IPVS\" not found"), "{err}");
    }

    type Asked = std::rc::Rc<std::cell::RefCell<Vec<LbKind>>>;

    /// A probe that records what it was asked.
    fn recording(available: &'static [LbKind]) -> (impl FnMut(LbKind) -> Result<(), Unavailable>, Asked) {
        let asked = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = asked.clone();
        let probe = move |k: LbKind| {
            log.borrow_mut().push(k);
            if available.contains(&k) {
                Ok(())
            } else {
                Err(missing(k))
            }
        };
        (probe, asked)
    }

    #[test]
    fn a_forced_choice_probes_only_that_balancer() {
        let (probe, asked) = recording(&[LbKind::Ebpf, LbKind::Nftables, LbKind::Ipvs]);
        assert_eq!(choose_with(Choice::Force(LbKind::Ipvs), probe).unwrap().0, LbKind::Ipvs);
        assert_eq!(*asked.borrow(), vec![LbKind::Ipvs]);
        let (probe, asked) = recording(&[]);
        let err = choose_with(Choice::Force(LbKind::Nftables), probe).unwrap_err().to_string();
        assert_eq!(err, "load balancer nftables cannot run here: cannot run nft: No such file or directory (os error 2)");
        assert_eq!(*asked.borrow(), vec![LbKind::Nftables]);
    }

    #[test]
    fn auto_probes_in_order_and_stops_at_the_first_available() {
        let (probe, asked) = recording(&[LbKind::Ebpf, LbKind::Nftables]);
        assert_eq!(choose_with(Choice::Auto, probe).unwrap().0, LbKind::Ebpf);
        assert_eq!(*asked.borrow(), vec![LbKind::Ebpf]);
        let (probe, asked) = recording(&[LbKind::Nftables, LbKind::Ipvs]);
        let (kind, why) = choose_with(Choice::Auto, probe).unwrap();
        assert_eq!(kind, LbKind::Nftables);
        assert_eq!(why, "probed: ebpf unavailable (socket LB unavailable: no BTF; tc NAT available)");
        assert_eq!(*asked.borrow(), vec![LbKind::Ebpf, LbKind::Nftables]);
        let (probe, asked) = recording(&[LbKind::Ipvs]);
        assert_eq!(choose_with(Choice::Auto, probe).unwrap().0, LbKind::Ipvs);
        assert_eq!(asked.borrow().len(), 3);
        let (probe, _) = recording(&[]);
        let err = choose_with(Choice::Auto, probe).unwrap_err().to_string();
        assert_eq!(
            err,
            "no load balancer can run here: ebpf: socket LB unavailable: no BTF; tc NAT available; \
             nftables: cannot run nft: No such file or directory (os error 2); \
             ipvs: the kernel has no IPVS (generic netlink family \"IPVS\" not found: ip_vs is not built in or loaded)"
        );
    }

    #[test]
    fn a_forced_choice_that_cannot_run_is_an_error_naming_it() {
        let err = report(true, true).choose(Choice::Force(LbKind::Ipvs)).unwrap_err().to_string();
        assert_eq!(
            err,
            "load balancer ipvs cannot run here: the kernel has no IPVS (generic netlink family \"IPVS\" not found: ip_vs is not built in or loaded)"
        );
        assert_eq!(report(true, true).choose(Choice::Force(LbKind::Nftables)).unwrap().0, LbKind::Nftables);
        assert_eq!("nft".parse::<Choice>().unwrap(), Choice::Force(LbKind::Nftables));
        assert!("xdp".parse::<Choice>().unwrap_err().contains("auto, ebpf, nftables or ipvs"));
    }
}
