//! The nftables load balancer: one table owned by shoal, verdict maps for O(1) lookup, every
//! change of a reconcile committed in one transaction.
//!
//! Large changes (first programming, repairs) go through the `nft` binary, one `nft -f -` batch
//! per reconcile (what netavark does): a single transaction, nft's parser and error messages for
//! free, no libnftnl binding. Small changes (a backend joins or leaves) are encoded here as one
//! nfnetlink batch ([`netlink`]): `nft` must first load its cache of the whole table, O(services),
//! which this skips. The table is read back with `nft -j`.

mod netlink;
mod observe;
mod plan;

use std::io::Write;
use std::process::{Command, Stdio};

pub use plan::{frontend_chain, plan, plan_teardown, plan_touched, NftObserved, NftOp, MARK, TABLE};

use super::plan::LbTable;
use super::{conntrack, LbError, LbKind, LoadBalancer, Programmed};

const NFT: &str = "nft";
const NETLINK_NETFILTER: isize = 12;
/// Larger batches go through `nft -f` (one netlink send must fit the socket buffer).
const NETLINK_MAX_OPS: usize = 256;

pub struct NftLb {
    /// What the kernel holds, kept in step after each commit (read once per process).
    cache: Option<NftObserved>,
}

impl NftLb {
    pub fn new() -> Self {
        Self { cache: None }
    }

    /// Whether nftables can be used here (the nft binary runs and the kernel answers).
    pub fn probe() -> Result<(), String> {
        match Command::new(NFT).args(["list", "tables"]).output() {
            Err(e) => Err(format!("cannot run {NFT}: {e}")),
            Ok(o) if !o.status.success() => Err(format!("nft list tables: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Ok(_) => Ok(()),
        }
    }

    pub fn observe(&mut self) -> Result<NftObserved, LbError> {
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
        observe::parse(&String::from_utf8_lossy(&out.stdout))
            .map_err(|detail| LbError::Nft { what: "read table ip shoal".into(), detail })
    }

    fn observed(&mut self) -> Result<NftObserved, LbError> {
        match &self.cache {
            Some(c) => Ok(c.clone()),
            None => {
                let obs = self.observe()?;
                self.cache = Some(obs.clone());
                Ok(obs)
            }
        }
    }

    /// Commits `ops` as one transaction: in-process over nfnetlink when they are few and of
    /// the kinds [`netlink`] encodes, else through `nft -f` (which also words any error).
    pub fn commit(&mut self, ops: &[NftOp]) -> Result<(), LbError> {
        if ops.is_empty() {
            return Ok(());
        }
        if ops.len() <= NETLINK_MAX_OPS {
            match self.commit_netlink(ops) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                // Nothing was committed: let nft retry and explain.
                Err(e) => tracing::debug!(error = %e, "nfnetlink batch refused; retrying with nft"),
            }
        }
        self.commit_with_nft(ops)
    }

    /// Commits `ops` over nfnetlink from this process. Ok(false): an op it cannot encode.
    pub fn commit_netlink(&mut self, ops: &[NftOp]) -> Result<bool, LbError> {
        let Some((batch, acks)) = netlink::encode(ops, 1) else { return Ok(false) };
        let sent = super::wire::RawSocket::open(NETLINK_NETFILTER).map_err(|e| (0, e)).and_then(|mut s| s.transact_batch(&batch, acks));
        match sent {
            Ok(()) => {
                if let Some(c) = &mut self.cache {
                    c.apply(ops);
                }
                Ok(true)
            }
            Err((i, e)) => Err(LbError::Nft {
                what: format!("nfnetlink batch, message {i} ({})", ops.get(i).map(|o| o.to_string()).unwrap_or_default()),
                detail: e.to_string(),
            }),
        }
    }

    fn commit_with_nft(&mut self, ops: &[NftOp]) -> Result<(), LbError> {
        let mut batch = String::new();
        for op in ops {
            batch.push_str(&op.to_string());
            batch.push('\n');
        }
        let mut child = Command::new(NFT)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LbError::Nft { what: "run nft -f -".into(), detail: e.to_string() })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(batch.as_bytes())
                .map_err(|e| LbError::Nft { what: "write the nft batch".into(), detail: e.to_string() })?;
        }
        let out = child.wait_with_output().map_err(|e| LbError::Nft { what: "wait for nft".into(), detail: e.to_string() })?;
        if !out.status.success() {
            self.cache = None; // nothing was committed, but re-read to be sure
            return Err(LbError::Nft {
                what: format!("commit a batch of {} changes (nothing was changed)", ops.len()),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if let Some(c) = &mut self.cache {
            c.apply(ops);
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
        let obs = self.observed()?;
        let ops = plan(desired, &obs);
        if !dry_run {
            self.commit(&ops)?;
            // UDP has no end: flows tracked to a backend that left would go on to it. Forget
            // them so their next packet is balanced again (TCP flows drain on their own).
            let gone = udp_backends_removed(&obs, &ops);
            if !gone.is_empty() {
                let n = conntrack::forget_udp_flows_to(&gone)?;
                tracing::info!(flows = n, backends = gone.len(), "forgot UDP flows to removed backends");
            }
        }
        Ok(ops.iter().map(|o| o.to_string()).collect())
    }

    fn apply_ops(&mut self, desired: &LbTable, ops: &[super::LbOp]) -> Result<Vec<String>, LbError> {
        let obs = self.observed()?;
        let touched = ops.iter().map(|o| o.frontend()).collect();
        let batch = plan_touched(desired, &obs, &touched);
        self.commit(&batch)?;
        let gone = udp_backends_removed(&obs, &batch);
        if !gone.is_empty() {
            conntrack::forget_udp_flows_to(&gone)?;
        }
        Ok(batch.iter().map(|o| o.to_string()).collect())
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

/// UDP backend addresses a frontend chain jumped to before `ops` and no longer does after.
fn udp_backends_removed(before: &NftObserved, ops: &[NftOp]) -> Vec<std::net::SocketAddrV4> {
    let mut after = before.clone();
    after.apply(ops);
    let reached = |o: &NftObserved| -> std::collections::BTreeSet<std::net::SocketAddrV4> {
        o.elements
            .iter()
            .filter(|((_, k), _)| k.proto == super::plan::Proto::Udp)
            .flat_map(|(_, chain)| o.targets.get(chain).into_iter().flatten())
            .filter_map(|b| b.parse().ok())
            .collect()
    };
    let now = reached(&after);
    reached(before).into_iter().filter(|a| !now.contains(a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_udp_backends_are_found_from_the_batch() {
        let t = crate::lb::plan::desired(&crate::lb::plan::tests::state("a"));
        let mut obs = NftObserved::default();
        obs.apply(&plan(&t, &obs));
        let mut after = t.clone();
        for f in after.published.values_mut().chain(after.vips.values_mut()) {
            f.backends.retain(|b| b.addr.ip() != &std::net::Ipv4Addr::new(10, 0, 9, 3));
        }
        let ops = plan(&after, &obs);
        let gone = udp_backends_removed(&obs, &ops);
        assert_eq!(gone, vec!["10.0.9.3:53".parse().unwrap()]);
    }
}
