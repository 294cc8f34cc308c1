//! Egress: tasks reach addresses outside the cluster's networks through their node, their source
//! rewritten to the node's address on the way out and replies translated back by conntrack
//! (what Swarm's `docker_gwbridge` does). Networks made `--internal` get none: they are left
//! out here, and the overlay planner gives them no route out either, so they fail closed even
//! where nftables cannot run.
//!
//! One nftables table of its own, `ip shoal_egress`, whatever the load balancer: the subnets
//! whose tasks have egress, and one masquerade rule for their packets that leave through an
//! interface that is not an overlay bridge (so traffic between tasks, VXLAN-carried or local,
//! is never rewritten). [`plan`] compares (pure) what is wanted with what the kernel holds; a
//! change replaces the whole table in one `nft -f` transaction (networks come and go rarely).

mod plan;

pub use plan::{desired, plan, script, Egress, EgressOp, Observed, RULE_TAG, TABLE};

use std::process::Command;

use crate::state::DesiredNode;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress: cannot read table ip {TABLE}: {0}")]
    Observe(String),
    #[error("egress: {0}")]
    Apply(String),
}

/// Reads table `ip shoal_egress` back (one netlink request when it is absent; `nft -j`
/// otherwise).
pub fn observe() -> Result<Observed, EgressError> {
    match crate::lb::nft::table_exists(TABLE) {
        Ok(false) => return Ok(Observed::Absent),
        Ok(true) => {}
        Err(e) => return Err(EgressError::Observe(format!("nftables over netlink: {e}"))),
    }
    let out = Command::new(crate::lb::nft::NFT)
        .args(["-j", "list", "table", "ip", TABLE])
        .output()
        .map_err(|e| EgressError::Observe(format!("run nft: {e}")))?;
    if !out.status.success() {
        return Err(EgressError::Observe(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| EgressError::Observe(format!("nft -j printed no JSON: {e}")))?;
    Ok(plan::parse(&json))
}

/// Brings table `ip shoal_egress` to what `desired` asks; returns the operation it ran.
pub fn reconcile(desired: &DesiredNode) -> Result<Option<EgressOp>, EgressError> {
    let want = plan::desired(desired);
    let op = plan::plan(&want, &observe()?);
    if let Some(op) = &op {
        apply(op)?;
    }
    Ok(op)
}

/// What [`reconcile`] would do, without doing it.
pub fn dry_run(desired: &DesiredNode) -> Result<Option<EgressOp>, EgressError> {
    Ok(plan::plan(&plan::desired(desired), &observe()?))
}

pub fn apply(op: &EgressOp) -> Result<(), EgressError> {
    crate::lb::nft::run_batch(&script(op), &op.to_string()).map_err(|e| EgressError::Apply(e.to_string()))
}

/// Removes the table (teardown); nothing when it is absent.
pub fn teardown() -> Result<(), EgressError> {
    match plan::plan(&Egress::default(), &observe()?) {
        Some(op) => apply(&op),
        None => Ok(()),
    }
}
