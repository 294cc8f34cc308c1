//! The node's guard: what may reach the node itself. VXLAN is accepted only from the cluster's
//! VTEPs and only for the VNIs each of them shares with this node, so a crafted packet (from a
//! task, from any underlay host) cannot land in a network it is not part of (Docker's
//! CVE-2023-28840: policy routing isolates networks only for packets that were never
//! encapsulated); and tasks cannot reach their own node's control ports (the manager API,
//! gossip) through their gateway or any of the node's addresses.
//!
//! One nftables table of its own, `ip shoal_guard`, whatever the load balancer, replaced whole in
//! one `nft -f` transaction when what it should hold changes (peers and networks come and go
//! rarely); its rule's comment carries a digest of the content, so a repair pass that reads it
//! back knows whether the kernel still holds this content.

mod plan;

pub use plan::{desired, plan, script, ControlPorts, Guard, GuardOp, Observed, TABLE};

use std::process::Command;

use crate::state::DesiredNode;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("guard: cannot read table ip {TABLE}: {0}")]
    Observe(String),
    #[error("guard: {0}")]
    Apply(String),
}

/// Reads table `ip shoal_guard` back: absent, or the digest its rule carries.
pub fn observe() -> Result<Observed, GuardError> {
    match crate::lb::nft::table_exists(TABLE) {
        Ok(false) => return Ok(Observed::Absent),
        Ok(true) => {}
        Err(e) => return Err(GuardError::Observe(format!("nftables over netlink: {e}"))),
    }
    let out = Command::new(crate::lb::nft::NFT)
        .args(["-j", "list", "table", "ip", TABLE])
        .output()
        .map_err(|e| GuardError::Observe(format!("run nft: {e}")))?;
    if !out.status.success() {
        return Err(GuardError::Observe(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| GuardError::Observe(format!("nft -j printed no JSON: {e}")))?;
    Ok(plan::parse(&json))
}

/// Brings table `ip shoal_guard` to what `desired` asks; returns the operation it ran.
pub fn reconcile(desired: &DesiredNode, ports: &ControlPorts) -> Result<Option<GuardOp>, GuardError> {
    let want = plan::desired(desired, ports);
    let op = plan::plan(&want, &observe()?);
    if let Some(op) = &op {
        apply(op)?;
    }
    Ok(op)
}

pub fn apply(op: &GuardOp) -> Result<(), GuardError> {
    crate::lb::nft::run_batch(&script(op), &op.to_string()).map_err(|e| GuardError::Apply(e.to_string()))
}

/// Removes the table (teardown); nothing when it is absent.
pub fn teardown() -> Result<(), GuardError> {
    match observe()? {
        Observed::Absent => Ok(()),
        Observed::Present { .. } => apply(&GuardOp::Delete),
    }
}
