//! The VXLAN overlay on one node: a bridge and a VXLAN device per network, static forwarding and
//! neighbour entries for remote endpoints, veths into task namespaces, and policy routing that
//! keeps networks apart.

mod apply;
pub mod names;
mod observe;
mod op;
mod plan;
#[cfg(test)]
mod plan_tests;
mod show;

pub use apply::{apply, ApplyErrors, Mode};
pub use observe::{observe, Observed, TaskSide};
pub use op::{Op, RouteSpec};
pub use plan::{plan, plan_teardown, PlanError};
pub use show::describe;

use crate::netlink::{Netlink, NetlinkError};
use crate::netns::NetnsError;
use crate::state::DesiredNode;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("link {0} does not exist")]
    MissingLink(String),
    #[error("cannot set {key}: {source}")]
    Sysctl { key: &'static str, source: std::io::Error },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Apply(#[from] ApplyErrors),
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
}

/// What one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ops: Vec<Op>,
}

/// Observe, plan, apply: brings this namespace's overlay to `desired`. Bad input changes nothing.
pub fn reconcile(desired: &DesiredNode) -> Result<Report, OverlayError> {
    let mut nl = Netlink::open()?;
    let obs = observe(&mut nl, desired)?;
    let ops = plan(desired, &obs)?;
    apply(&mut nl, &ops, Mode::StopOnError)?;
    Ok(Report { ops })
}

/// Plans without applying.
pub fn dry_run(desired: &DesiredNode) -> Result<Vec<Op>, OverlayError> {
    let mut nl = Netlink::open()?;
    let obs = observe(&mut nl, desired)?;
    Ok(plan(desired, &obs)?)
}

/// Removes everything shoal made in this namespace, continuing past failures: networks,
/// endpoints, then the encrypted networks' tunnel and fail-closed table.
pub fn teardown() -> Result<Report, OverlayError> {
    let mut nl = Netlink::open()?;
    let empty = DesiredNode::empty();
    let obs = observe(&mut nl, &empty)?;
    let ops = plan_teardown(&obs);
    let applied = apply(&mut nl, &ops, Mode::Continue);
    let crypt = crate::crypt::teardown();
    applied?;
    crypt?;
    Ok(Report { ops })
}

/// What the kernel holds now, in the desired-state format.
pub fn show(node: &str) -> Result<DesiredNode, OverlayError> {
    let mut nl = Netlink::open()?;
    let empty = DesiredNode::empty();
    let obs = observe(&mut nl, &empty)?;
    Ok(describe(&obs, node))
}
