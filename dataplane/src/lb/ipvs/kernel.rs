//! The kernel side of the IPVS balancer (thin): the IPVS generic netlink family, the `nft`
//! binary for its table, and the `net.ipv4.vs.*` sysctls of the calling thread's network
//! namespace. Reads what is there ([`observe`]) and runs planned operations ([`run`]).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use super::msg::{self, Dest, FwmarkService};
use super::plan::{self, IpvsOp, Observed, ObservedDest, ObservedService};
use super::table::{self, NftLine, TableObserved};
use crate::lb::{LbError, LbKind};
use shoal_netlink::{self as wire, Socket};

const NFT: &str = "nft";
const SYSCTL_DIR: &str = "/proc/sys/net/ipv4/vs";

fn ipvs_err(what: impl Into<String>, e: impl std::fmt::Display) -> LbError {
    LbError::Ipvs { what: what.into(), detail: e.to_string() }
}

/// Why the IPVS generic netlink family cannot be found. Details are kept as text: probe
/// reports are cloned, and the netlink error is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FamilyError {
    #[error("open generic netlink: {detail}")]
    Open { detail: String },
    #[error("the kernel has no IPVS (generic netlink family \"IPVS\" not found: ip_vs is not built in or loaded)")]
    NotInKernel,
    #[error("the controller answered without a family id for IPVS")]
    NoFamilyId,
    #[error("ask generic netlink for IPVS: {detail}")]
    Ask { detail: String },
}

/// The IPVS family id, or why there is none.
pub fn family_id() -> Result<u16, FamilyError> {
    let mut sock = Socket::open(wire::NETLINK_GENERIC).map_err(|e| FamilyError::Open { detail: e.to_string() })?;
    family_on(&mut sock)
}

fn family_on(sock: &mut Socket) -> Result<u16, FamilyError> {
    let seq = sock.next_seq();
    match sock.transact(&msg::get_family(seq), seq) {
        Ok(answers) => answers
            .iter()
            .find_map(|a| wire::find(&wire::attrs(a.payload.get(4..)?), msg::CTRL_ATTR_FAMILY_ID)?.u16_ne())
            .ok_or(FamilyError::NoFamilyId),
        Err(e) if e.is(wire::Errno::NotFound) => Err(FamilyError::NotInKernel),
        Err(e) => Err(FamilyError::Ask { detail: e.to_string() }),
    }
}

/// A generic netlink socket speaking the IPVS family, in the calling thread's namespace.
pub struct Genl {
    sock: Socket,
    family: u16,
}

/// What an errno means to IPVS (ip_vs_ctl.c), so the user reads the object's problem.
fn ipvs_errno(e: &wire::Error) -> String {
    let meaning = match e.errno() {
        Some(libc::ESRCH) => " (no such service)",
        Some(libc::ENOENT) => " (no such destination)",
        Some(libc::EEXIST) => " (already exists)",
        Some(libc::EINVAL) => " (the kernel refused the attributes)",
        _ => "",
    };
    format!("{e}{meaning}")
}

impl Genl {
    pub fn open() -> Result<Self, LbError> {
        let mut sock = Socket::open(wire::NETLINK_GENERIC).map_err(|e| ipvs_err("open generic netlink", e))?;
        let family = family_on(&mut sock).map_err(|source| LbError::Unavailable { kind: LbKind::Ipvs, reason: source.into() })?;
        Ok(Self { sock, family })
    }

    /// Our fwmark services and their schedulers (not their destinations).
    pub fn services(&mut self) -> Result<BTreeMap<u32, String>, LbError> {
        let seq = self.sock.next_seq();
        let answers =
            self.sock.transact(&msg::dump_services(self.family, seq), seq).map_err(|e| ipvs_err("dump services", ipvs_errno(&e)))?;
        Ok(answers
            .iter()
            .filter_map(|a| msg::parse_service(&a.payload))
            .filter(|s| s.af == msg::AF_INET && plan::is_ours(s.fwmark))
            .map(|s| (s.fwmark, s.scheduler))
            .collect())
    }

    pub fn dests(&mut self, mark: u32) -> Result<BTreeMap<std::net::SocketAddrV4, ObservedDest>, LbError> {
        let seq = self.sock.next_seq();
        let answers = self
            .sock
            .transact(&msg::dump_dests(self.family, seq, mark), seq)
            .map_err(|e| ipvs_err(format!("dump the destinations of fwmark {mark:#010x}"), ipvs_errno(&e)))?;
        Ok(answers
            .iter()
            .filter_map(|a| msg::parse_dest(&a.payload))
            .map(|d| {
                (d.addr, ObservedDest { weight: d.weight, masq: d.fwd_method == msg::CONN_F_MASQ, active: d.active, inactive: d.inactive })
            })
            .collect())
    }

    /// Our services with their destinations.
    pub fn observe(&mut self) -> Result<BTreeMap<u32, ObservedService>, LbError> {
        let mut out = BTreeMap::new();
        for (mark, scheduler) in self.services()? {
            let dests = self.dests(mark)?;
            out.insert(mark, ObservedService { scheduler, dests });
        }
        Ok(out)
    }

    fn send(&mut self, what: String, build: impl FnOnce(u16, u32) -> Vec<u8>) -> Result<(), LbError> {
        let seq = self.sock.next_seq();
        let m = build(self.family, seq);
        self.sock.transact(&m, seq).map(drop).map_err(|e| ipvs_err(what, ipvs_errno(&e)))
    }

    /// Runs one IPVS operation (not Nft or Sysctl ones).
    pub fn exec(&mut self, op: &IpvsOp) -> Result<(), LbError> {
        let svc = |mark: u32| FwmarkService { fwmark: mark, scheduler: plan::SCHEDULER.to_string() };
        let what = op.to_string();
        match op {
            IpvsOp::NewService { mark, .. } => self.send(what, |f, s| msg::service_message(f, msg::CMD_NEW_SERVICE, s, &svc(*mark))),
            IpvsOp::SetService { mark, .. } => self.send(what, |f, s| msg::service_message(f, msg::CMD_SET_SERVICE, s, &svc(*mark))),
            IpvsOp::DelService { mark, .. } => self.send(what, |f, s| msg::service_message(f, msg::CMD_DEL_SERVICE, s, &svc(*mark))),
            IpvsOp::NewDest { mark, dest, weight, .. } => {
                let d = Dest { addr: *dest, weight: *weight };
                self.send(what, |f, s| msg::dest_message(f, msg::CMD_NEW_DEST, s, &svc(*mark), &d))
            }
            IpvsOp::SetDest { mark, dest, weight, .. } => {
                let d = Dest { addr: *dest, weight: *weight };
                self.send(what, |f, s| msg::dest_message(f, msg::CMD_SET_DEST, s, &svc(*mark), &d))
            }
            IpvsOp::DelDest { mark, dest, .. } => {
                let d = Dest { addr: *dest, weight: 0 };
                self.send(what, |f, s| msg::dest_message(f, msg::CMD_DEL_DEST, s, &svc(*mark), &d))
            }
            IpvsOp::Sysctl { .. } | IpvsOp::Nft(_) => Ok(()),
        }
    }
}

pub fn read_sysctls() -> BTreeMap<String, Option<String>> {
    plan::SYSCTLS
        .iter()
        .map(|(name, _)| (name.to_string(), std::fs::read_to_string(format!("{SYSCTL_DIR}/{name}")).ok().map(|v| v.trim().to_string())))
        .collect()
}

fn write_sysctl(name: &str, value: &str) -> Result<(), LbError> {
    let path = format!("{SYSCTL_DIR}/{name}");
    std::fs::write(&path, value).map_err(|source| LbError::Io { what: "write IPVS sysctl", path, source })
}

/// `nft -j list table ip shoal_ipvs` (absent: the default).
pub fn nft_list() -> Result<TableObserved, LbError> {
    let nft_err = |what: &str, detail: String| LbError::Nft { what: what.to_string(), detail };
    if !crate::lb::nft::table_exists(table::TABLE).map_err(|e| nft_err("look for table ip shoal_ipvs", e.to_string()))? {
        return Ok(TableObserved::default());
    }
    let out = Command::new(NFT)
        .args(["-j", "list", "table", "ip", table::TABLE])
        .output()
        .map_err(|e| nft_err("run nft -j list table ip shoal_ipvs", e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(TableObserved::default());
        }
        return Err(nft_err("nft -j list table ip shoal_ipvs", err.trim().to_string()));
    }
    table::parse(&String::from_utf8_lossy(&out.stdout)).map_err(|source| LbError::IpvsListing { table: table::TABLE, source })
}

/// Commits `lines` as one `nft -f -` transaction (nothing changes when it fails).
pub fn nft_commit(lines: &[NftLine]) -> Result<(), LbError> {
    if lines.is_empty() {
        return Ok(());
    }
    let batch: String = lines.iter().map(|l| format!("{l}\n")).collect();
    crate::lb::nft::run_batch(&batch, &format!("commit a batch of {} changes to table ip shoal_ipvs", lines.len()))
}

/// Everything the balancer holds here.
pub fn observe(genl: &mut Genl) -> Result<Observed, LbError> {
    Ok(Observed { table: nft_list()?, services: genl.observe()?, sysctls: read_sysctls() })
}

/// Runs `ops` in order; consecutive nft lines go as one transaction. Returns how many ran
/// (all of them, or those before the failure with the error).
pub fn run(genl: &mut Genl, ops: &[IpvsOp]) -> Result<(), (usize, LbError)> {
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            IpvsOp::Nft(_) => {
                let lines: Vec<NftLine> =
                    ops[i..].iter().map_while(|o| if let IpvsOp::Nft(l) = o { Some(l.clone()) } else { None }).collect();
                nft_commit(&lines).map_err(|e| (i, e))?;
                i += lines.len();
            }
            IpvsOp::Sysctl { name, value } => {
                write_sysctl(name, value).map_err(|e| (i, e))?;
                i += 1;
            }
            op => {
                genl.exec(op).map_err(|e| (i, e))?;
                i += 1;
            }
        }
    }
    Ok(())
}

/// The marks whose destinations a scoped plan needs fresh (connection counts change).
pub fn refresh(genl: &mut Genl, cache: &mut Observed, marks: &BTreeSet<u32>) -> Result<(), LbError> {
    for mark in marks {
        if cache.services.contains_key(mark) {
            let dests = genl.dests(*mark)?;
            if let Some(s) = cache.services.get_mut(mark) {
                s.dests = dests;
            }
        }
    }
    Ok(())
}
