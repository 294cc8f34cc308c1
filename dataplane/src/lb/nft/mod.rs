//! The nftables load balancer: one table owned by shoal, data maps from (frontend . slot) to
//! backend (see [`plan`] for the layout), every change of a reconcile committed in one
//! transaction.
//!
//! Backend changes are element changes only, encoded here as one nfnetlink batch
//! ([`netlink`]): O(ops), with no table validation in the kernel and no cache load in `nft`.
//! The balancing chains' rules are encoded here too (nft 1.0.6 gets them wrong, see
//! [`netlink`]). Tables, sets, maps, chains and the SNAT rules go through the `nft` binary, one
//! `nft -f -` batch (what netavark does): nft's parser and error messages for free, no
//! libnftnl binding. So a reconcile that adds a slot count is up to three transactions: maps
//! and chains first (unused, so harmless), then rules and elements, then maps nothing uses
//! any more are deleted. The table is read back with `nft -j`.

mod netlink;
pub use netlink::table_exists;
mod observe;
pub use observe::ParseError;
mod plan;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};

pub use plan::{
    batch_text, describe, masq_set, parse_slot_map, plan, plan_teardown, plan_touched, slot_layout, slot_map, FrontendId, NftObserved,
    NftOp, MARK, MASQ_ANY_SET, MASQ_SET, MAX_SLOTS, TABLE, WEIGHTED_SLOTS,
};

use super::plan::LbTable;
use super::{conntrack, LbError, LbKind, LoadBalancer, Programmed};

pub(crate) const NFT: &str = "nft";
/// The chains whose rules are encoded in-process.
const NAT_CHAINS: [&str; 2] = ["prerouting", "output"];

/// Why nftables cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("cannot run {binary}: {detail}")]
    CannotRun { binary: &'static str, detail: String },
    #[error("{command}: {stderr}")]
    Refused { command: &'static str, stderr: String },
}

pub struct NftLb {
    /// What the kernel holds, kept in step after each commit (read once per process).
    cache: Option<NftObserved>,
    /// The nfnetlink socket of the in-process commits, kept open (closing it costs a grace
    /// period after deletes); opened on first use, dropped after a failure.
    session: Option<netlink::Session>,
}

impl NftLb {
    pub fn new() -> Self {
        Self { cache: None, session: None }
    }

    /// Whether nftables can be used here (the nft binary runs and the kernel answers).
    pub fn probe() -> Result<(), Unavailable> {
        match Command::new(NFT).args(["list", "tables"]).output() {
            // io::Error is not Clone and probe reports are: keep its text.
            Err(e) => Err(Unavailable::CannotRun { binary: NFT, detail: e.to_string() }),
            Ok(o) if !o.status.success() => {
                Err(Unavailable::Refused { command: "nft list tables", stderr: String::from_utf8_lossy(&o.stderr).trim().to_string() })
            }
            Ok(_) => Ok(()),
        }
    }

    /// Reads table `ip shoal` from the kernel (`nft -j`).
    pub fn observe(&mut self) -> Result<NftObserved, LbError> {
        if !netlink::table_exists(TABLE).map_err(|e| LbError::Nft { what: format!("look for table ip {TABLE}"), detail: e.to_string() })? {
            return Ok(NftObserved::default());
        }
        let out = Command::new(NFT)
            .args(["-j", "list", "table", "ip", TABLE])
            .output()
            .map_err(|e| LbError::Nft { what: "run nft -j list table".into(), detail: e.to_string() })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file or directory") {
                return Ok(NftObserved::default());
            }
            return Err(LbError::Nft { what: "nft -j list table ip shoal".into(), detail: err.trim().to_string() });
        }
        observe::parse(&String::from_utf8_lossy(&out.stdout)).map_err(|source| LbError::NftListing { table: TABLE, source })
    }

    fn cache(&mut self) -> Result<&NftObserved, LbError> {
        if self.cache.is_none() {
            self.cache = Some(self.observe()?);
        }
        Ok(self.cache.get_or_insert_with(NftObserved::default))
    }

    /// Commits `ops`: element changes and the balancing chains' rules in-process over
    /// nfnetlink (see [`netlink`] for why the rules never go through nft), the rest (tables,
    /// sets, maps, chains, the SNAT rules) through `nft -f` before them, and maps to delete
    /// after them. A backend change is one nfnetlink transaction. Returns the UDP backends no
    /// slot reaches any more (port ANY_PORT: every port of the address), whose flows must be
    /// forgotten, and the backends at those addresses that slots still reach.
    pub fn commit(&mut self, ops: &[NftOp]) -> Result<(Vec<SocketAddrV4>, Vec<SocketAddrV4>), LbError> {
        if ops.is_empty() {
            return Ok((vec![], vec![]));
        }
        let candidates = self.cache.as_ref().map(|c| c.udp_backends_in(ops)).unwrap_or_default();
        if let Err(e) = self.commit_phases(ops) {
            self.cache = None; // re-read: an earlier phase may have been committed
            return Err(e);
        }
        Ok(match &mut self.cache {
            Some(c) => {
                c.apply(ops);
                c.udp_gone(candidates)
            }
            None => (vec![], vec![]),
        })
    }

    fn commit_phases(&mut self, ops: &[NftOp]) -> Result<(), LbError> {
        let nat_chain = |c: &str| NAT_CHAINS.contains(&c);
        let in_process = |o: &NftOp| o.is_element() || matches!(o, NftOp::FlushChain(c) | NftOp::AddRule { chain: c, .. } if nat_chain(c));
        let after = |o: &NftOp| matches!(o, NftOp::DeleteSlotMap { .. });
        let before: Vec<NftOp> = ops.iter().filter(|o| !in_process(o) && !after(o)).cloned().collect();
        let middle: Vec<NftOp> = ops.iter().filter(|o| in_process(o)).cloned().collect();
        let last: Vec<NftOp> = ops.iter().filter(|o| after(o)).cloned().collect();
        self.commit_with_nft(&before)?;
        if !self.commit_netlink(&middle)? {
            // Too large for one send (a first programming): elements through nft, rules here.
            let (elements, rules): (Vec<NftOp>, Vec<NftOp>) = middle.into_iter().partition(NftOp::is_element);
            self.commit_with_nft(&elements)?;
            if !self.commit_netlink(&rules)? {
                return Err(LbError::Nft { what: "encode the balancing rules".into(), detail: format!("{rules:?}") });
            }
        }
        self.commit_with_nft(&last)
    }

    /// Commits `ops` over nfnetlink from this process, as one transaction. Ok(false): an op
    /// it does not encode, or too many for one send (nothing was sent). Does not update the
    /// cache.
    pub fn commit_netlink(&mut self, ops: &[NftOp]) -> Result<bool, LbError> {
        if ops.is_empty() {
            return Ok(true);
        }
        let session = match self.session.take() {
            Some(s) => Ok(s),
            None => netlink::Session::open(),
        };
        let result = session.and_then(|mut s| {
            let r = s.commit(ops);
            self.session = Some(s);
            r
        });
        if result.is_err() {
            self.session = None; // it may hold more answers to the refused batch
        }
        result.map_err(|r| {
            let op = ops.get(r.op);
            LbError::Nft {
                what: format!(
                    "nfnetlink batch of {} changes, refused at change {} ({}, set {}; nothing was changed)",
                    ops.len(),
                    r.op + 1,
                    op.map(|o| o.to_string()).unwrap_or_default(),
                    op.map(netlink::target_set).unwrap_or_default()
                ),
                detail: r.to_string(),
            }
        })
    }

    fn commit_with_nft(&mut self, ops: &[NftOp]) -> Result<(), LbError> {
        if ops.is_empty() {
            return Ok(());
        }
        run_batch(&batch_text(ops), &format!("commit a batch of {} changes", ops.len()))
    }

    /// Forgets UDP flows to backends that left (UDP has no end: they would go on to them),
    /// but those to `keep`, which slots still reach.
    fn forget((gone, keep): &(Vec<SocketAddrV4>, Vec<SocketAddrV4>)) -> Result<(), LbError> {
        if !gone.is_empty() {
            let n = conntrack::forget_udp_flows_to(gone, keep)?;
            tracing::info!(flows = n, backends = gone.len(), "forgot UDP flows to removed backends");
        }
        Ok(())
    }
}

impl Default for NftLb {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadBalancer for NftLb {
    fn kind(&self) -> LbKind {
        LbKind::Nftables
    }

    fn reconcile(&mut self, desired: &LbTable, dry_run: bool) -> Result<Vec<String>, LbError> {
        let ops = plan(desired, self.cache()?);
        if !dry_run {
            let gone = self.commit(&ops)?;
            Self::forget(&gone)?;
        }
        Ok(describe(&ops))
    }

    fn apply_ops(&mut self, desired: &LbTable, ops: &[super::LbOp]) -> Result<Vec<String>, LbError> {
        let touched: BTreeSet<FrontendId> = ops.iter().map(|o| o.frontend()).collect();
        let batch = plan_touched(desired, self.cache()?, &touched);
        let gone = self.commit(&batch)?;
        Self::forget(&gone)?;
        Ok(describe(&batch))
    }

    fn programmed(&mut self) -> Result<Programmed, LbError> {
        let obs = self.observe()?;
        Ok(obs.summary().into_iter().map(|((kind, key), bes)| (kind, key, bes.into_iter().collect())).collect())
    }

    fn teardown(&mut self) -> Result<Vec<String>, LbError> {
        let obs = self.observe()?;
        let ops = plan_teardown(&obs);
        self.commit(&ops)?;
        self.cache = None;
        Ok(ops.iter().map(|o| o.to_string()).collect())
    }
}

/// Runs one `nft -f -` batch (one transaction); `what` names it in the error, which carries
/// nft's own words. Shared by every balancer that keeps an nftables table.
pub fn run_batch(batch: &str, what: &str) -> Result<(), LbError> {
    let err = |what: String, detail: String| LbError::Nft { what, detail };
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err("run nft -f -".into(), e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(batch.as_bytes()).map_err(|e| err("write the nft batch".into(), e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err("wait for nft".into(), e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!("{what} (nothing was changed)"), String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}
