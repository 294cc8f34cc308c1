//! The IPVS load balancer, Docker-style: nftables marks the packets of each frontend, one IPVS
//! fwmark service per frontend balances them over its tasks with NAT, and nftables SNATs the
//! forwarded flows so that replies come back through this node.
//!
//! ```text
//! task / client ──> VIP:any port or node:5000 ── prerouting (mangle): mark = map[daddr.proto]
//!       (VIPs) or map[daddr.proto.dport] (published ports)
//!   ──> LOCAL_IN (the VIP and the node address are local): IPVS fwmark service `mark`, wrr,
//!       masq: daddr rewritten to a task (a VIP's destinations have port 0: the packet's own
//!       port is kept, as Docker's VIPs do), sent out of shb-<vni>
//!   ──> postrouting (srcnat): mark in @snat_marks -> snat to this node's LB address on that bridge
//! reply ──> the LB address: conntrack undoes the SNAT, IPVS (FORWARD) restores the VIP as source
//! ```
//!
//! Why fwmark services rather than one IPVS service per address and port: the frontends are
//! already keyed in one nftables map per kind (`ip daddr . meta l4proto [. th dport]`), so adding or
//! removing a frontend is one map element and one IPVS service, a backend change is one IPVS
//! destination operation (no nft at all), and marks let nftables decide per frontend whether to
//! SNAT (set `snat_marks`), which IPVS itself cannot do. Marks are `0x5e` in the top byte and a
//! hash of the frontend below (probing past collisions); a new process reads the map back and
//! adopts its marks, so IPVS services with other marks (Docker's, kube-proxy's) are never
//! touched, and services whose map element was lost are re-adopted when their mark comes up.
//!
//! SNAT: IPVS' NAT only rewrites the destination. With `net.ipv4.vs.conntrack=1` the IPVS
//! connection has a conntrack entry, so nft's `snat to <LB address>` in postrouting (the same
//! LB address as the nftables balancer: this node's address on the overlay) applies to it; the
//! task answers the LB address, conntrack reverses the SNAT, and IPVS' FORWARD hook rewrites
//! the source back to the VIP or node address. A published port that keeps the client address
//! goes to local tasks only, unSNATed (their default route is this node, so replies still pass
//! through it); host-mode ports likewise.
//!
//! Removed backends: a TCP destination with established connections is set to weight 0
//! (quiescent: IPVS schedules nothing new to it, its connections go on, also across a restart
//! since the weight is in the kernel) and deleted by a later reconcile once it has none.
//! Deleting it at once would break those connections (`expire_nodest_conn` expires them);
//! keeping quiescent destinations forever would pile them up with every rolling update. UDP
//! destinations, and TCP ones without established connections, are deleted at once: with
//! `expire_nodest_conn=1` the kernel expires their connections (and conntrack entries), so a
//! UDP flow's next packet is scheduled to a live task instead of being black-holed.
//!
//! Sysctls (per network namespace, set before the first service): `conntrack=1`,
//! `expire_nodest_conn=1`, `expire_quiescent_template=1`. `conn_reuse_mode` stays at the
//! kernel's 1: a new connection that reuses the ports of an old one is scheduled anew (not sent
//! to a quiescent task), at the cost of one SYN retransmit when conntrack still holds the old
//! entry; Docker's 0 would send it to the old, possibly drained, task.
//!
//! Planning is pure ([`plan`]: desired [`LbTable`] + [`plan::Observed`] -> [`plan::IpvsOp`]s);
//! [`kernel`] reads the kernel (GET_SERVICE/GET_DEST dumps, `nft -j`, sysctls) and runs them.

pub mod kernel;
#[cfg(test)]
mod kernel_tests;
pub mod msg;
pub mod plan;
pub mod table;

use std::collections::BTreeSet;

use self::plan::{IpvsOp, Observed};
use super::{LbError, LbKind, LbOp, LbTable, LoadBalancer, Programmed};

pub use kernel::{family_id, FamilyError};

/// Ok when the kernel has IPVS (the generic netlink family answers).
pub fn probe() -> Result<(), kernel::FamilyError> {
    family_id().map(drop)
}

pub struct IpvsLb {
    genl: kernel::Genl,
    /// What the kernel holds, kept in step after each apply (read once per process, and
    /// again after a failure).
    cache: Option<Observed>,
}

impl IpvsLb {
    pub fn open() -> Result<Self, LbError> {
        probe().map_err(|reason| LbError::Unavailable { kind: LbKind::Ipvs, reason: reason.into() })?;
        Ok(Self { genl: kernel::Genl::open()?, cache: None })
    }

    /// What the kernel holds now (read fresh).
    pub fn observe(&mut self) -> Result<Observed, LbError> {
        kernel::observe(&mut self.genl)
    }

    fn run(&mut self, mut obs: Observed, ops: &[IpvsOp]) -> Result<Vec<String>, LbError> {
        match kernel::run(&mut self.genl, ops) {
            Ok(()) => {
                obs.apply(ops);
                self.cache = Some(obs);
                Ok(ops.iter().map(|o| o.to_string()).collect())
            }
            Err((done, e)) => {
                self.cache = None;
                tracing::warn!(applied = done, planned = ops.len(), error = %e, "IPVS apply stopped; the next reconcile repairs the rest");
                Err(e)
            }
        }
    }
}

impl LoadBalancer for IpvsLb {
    fn kind(&self) -> LbKind {
        LbKind::Ipvs
    }

    fn reconcile(&mut self, desired: &LbTable, dry_run: bool) -> Result<Vec<String>, LbError> {
        let obs = self.observe()?;
        let ops = plan::plan(desired, &obs, None);
        if dry_run {
            return Ok(ops.iter().map(|o| o.to_string()).collect());
        }
        self.run(obs, &ops)
    }

    fn apply_ops(&mut self, desired: &LbTable, ops: &[LbOp]) -> Result<Vec<String>, LbError> {
        let touched: BTreeSet<plan::FrontendId> = ops.iter().map(|o| o.frontend()).collect();
        let mut obs = match self.cache.take() {
            Some(c) => c,
            None => self.observe()?,
        };
        // Connection counts move on their own: read the touched services' destinations again.
        let marks = touched.iter().filter_map(|fe| obs.table.elements.get(fe).copied()).collect();
        if kernel::refresh(&mut self.genl, &mut obs, &marks).is_err() {
            obs = self.observe()?;
        }
        let planned = plan::plan(desired, &obs, Some(&touched));
        self.run(obs, &planned)
    }

    fn programmed(&mut self) -> Result<Programmed, LbError> {
        Ok(self.observe()?.summary())
    }

    /// Keeps going past a failure (one stuck service does not leave the rest behind) and
    /// reports every one.
    fn teardown(&mut self) -> Result<Vec<String>, LbError> {
        self.cache = None;
        let obs = self.observe()?;
        let mut done = Vec::new();
        let mut errors = Vec::new();
        for op in plan::plan_teardown(&obs) {
            match kernel::run(&mut self.genl, std::slice::from_ref(&op)) {
                Ok(()) => done.push(op.to_string()),
                Err((_, e)) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(LbError::Many(errors))
        }
    }
}
