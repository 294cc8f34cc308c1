//! The IPVS load balancer over generic netlink (family "IPVS"), fwmark-based as Docker's: the
//! message encoding ([`msg`]) and the probe are here; this kernel has no IPVS, so the data path
//! (marking VIP and published-port packets, then one fwmark service per frontend) is not wired
//! yet and `IpvsLb` refuses to run rather than pretend.

pub mod msg;

use super::wire::{self, RawSocket};
use super::{LbError, LbKind, LbTable, LoadBalancer, Programmed};

const NETLINK_GENERIC: isize = 16;
const ENOENT: i32 = 2;

/// The IPVS family id, or why there is none.
pub fn family_id() -> Result<u16, String> {
    let mut sock = RawSocket::open(NETLINK_GENERIC).map_err(|e| format!("open generic netlink: {e}"))?;
    let seq = sock.next_seq();
    match sock.transact(&msg::get_family(seq), seq) {
        Ok(answers) => answers
            .iter()
            .find_map(|a| wire::find(&wire::attrs(a.payload.get(4..)?), msg::CTRL_ATTR_FAMILY_ID)?.u16_ne())
            .ok_or_else(|| "the controller answered without a family id".to_string()),
        Err(e) if e.errno() == Some(ENOENT) => {
            Err("the kernel has no IPVS (generic netlink family \"IPVS\" not found: ip_vs is not built in or loaded)".into())
        }
        Err(e) => Err(format!("ask generic netlink for IPVS: {e}")),
    }
}

pub fn probe() -> Result<(), String> {
    family_id()?;
    Err("IPVS is present, but shoal's IPVS data path is not wired yet (message encoding only)".into())
}

pub struct IpvsLb {
    _family: u16,
}

impl IpvsLb {
    pub fn open() -> Result<Self, LbError> {
        probe().map_err(|reason| LbError::Unavailable { kind: LbKind::Ipvs, reason })?;
        Err(LbError::Unavailable { kind: LbKind::Ipvs, reason: "not wired".into() })
    }
}

impl LoadBalancer for IpvsLb {
    fn kind(&self) -> LbKind {
        LbKind::Ipvs
    }

    fn reconcile(&mut self, _desired: &LbTable, _dry_run: bool) -> Result<Vec<String>, LbError> {
        Err(LbError::Unavailable { kind: LbKind::Ipvs, reason: "the IPVS data path is not wired yet".into() })
    }

    fn apply_ops(&mut self, _desired: &LbTable, _ops: &[super::LbOp]) -> Result<Vec<String>, LbError> {
        Err(LbError::Unavailable { kind: LbKind::Ipvs, reason: "the IPVS data path is not wired yet".into() })
    }

    fn programmed(&mut self) -> Result<Programmed, LbError> {
        Ok(vec![])
    }

    fn teardown(&mut self) -> Result<Vec<String>, LbError> {
        Ok(vec![])
    }
}
