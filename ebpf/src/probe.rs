//! What the running kernel supports, so the dataplane can pick the eBPF
//! load balancer or fall back (to nftables) with a reason.

use std::fmt;

use crate::{loader::LoadOptions, SockLb, TcNat};

/// Whether one part of the eBPF LB can run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// Loads and verifies.
    Available,
    /// Cannot run; the reason names the missing piece.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl Support {
    /// True when available.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available)
    }

    /// `Ok` when available, else why not.
    pub fn to_result(&self) -> Result<(), PartUnavailable> {
        match self {
            Self::Available => Ok(()),
            Self::Unavailable { reason } => Err(PartUnavailable { reason: reason.clone() }),
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Available => f.write_str("available"),
            Self::Unavailable { reason } => write!(f, "unavailable: {reason}"),
        }
    }
}

/// Why one part of the eBPF load balancer cannot run here (the reason names the missing piece).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PartUnavailable {
    /// Why.
    pub reason: String,
}

/// Why the whole eBPF load balancer cannot run here: each part's support, one of them missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("socket LB {sock_lb}; tc NAT {tc_nat}")]
pub struct LbUnsupported {
    /// The socket-level half (VIPs).
    pub sock_lb: Support,
    /// The tc half (published ports, VIP packets no socket hook translated).
    pub tc_nat: Support,
}

/// The probe's findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// cgroup connect4/sendmsg4/recvmsg4/getpeername4 programs load and a
    /// cgroup v2 hierarchy is mounted.
    pub sock_lb: Support,
    /// The tc classifiers load (BPF_PROG_TYPE_SCHED_CLS with the checksum helpers).
    pub tc_nat: Support,
    /// Where cgroup v2 is mounted, if anywhere.
    pub cgroup2: Option<std::path::PathBuf>,
}

impl Probe {
    /// Whether the whole eBPF load balancer (both parts) can run here, with
    /// the reason when not: what the dataplane's probe and `shoal doctor` say.
    pub fn load_balancer(&self) -> Result<(), LbUnsupported> {
        match (&self.sock_lb, &self.tc_nat) {
            (Support::Available, Support::Available) => Ok(()),
            (s, t) => Err(LbUnsupported { sock_lb: s.clone(), tc_nat: t.clone() }),
        }
    }
}

fn tiny() -> LoadOptions {
    LoadOptions {
        max_services: 4,
        max_backends: 4,
        max_backends_per_service: 4,
        max_slots_per_service: 4,
        max_flows: 4,
        ..LoadOptions::default()
    }
}

/// Load (and drop) every program with tiny maps. Needs CAP_BPF/root.
pub fn probe() -> Probe {
    let cgroup2 = cgroup2_mount();
    let sock_lb = match (SockLb::load(&tiny()), &cgroup2) {
        (Err(e), _) => Support::Unavailable { reason: e.to_string() },
        (Ok(_), None) => Support::Unavailable { reason: "no cgroup v2 hierarchy is mounted".into() },
        (Ok(_), Some(_)) => Support::Available,
    };
    let tc_nat = match TcNat::load(&tiny()) {
        Err(e) => Support::Unavailable { reason: e.to_string() },
        Ok(_) => Support::Available,
    };
    Probe { sock_lb, tc_nat, cgroup2 }
}

/// The first cgroup2 mount point of this mount namespace.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4).map(Into::into))?
    })
}
