//! The decision pipeline: apply one replicated [`Request`] to the [`ClusterState`], then
//! reconcile (orchestrator -> allocator -> scheduler -> load-balancer addresses).
//!
//! It sits above everything it calls: `state` is data, lookups and validation and knows
//! nothing of the decision makers; `allocator`, `orchestrator` and `scheduler` read and change
//! the state; this module strings them together. Nothing below imports it: the Raft state
//! machine (`store`) and the tests call it.
//!
//! It runs inside the replicated apply on every manager, so it must be deterministic: the same
//! requests in the same order give the same state everywhere (time comes only from the
//! request's `now_ms`, ids from the state's counter). Placement is therefore part of the log's
//! meaning, not a leader-side side effect: a new leader holds the same placements as the old
//! one without re-running anything.

mod command;

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod ca_rotation_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wireguard_tests;

use crate::state::{ClusterState, Command, Request, Response, StateError};

/// Apply one request: all or nothing, then one reconcile pass. A batch applies each command
/// all-or-nothing on its own and reconciles once at the end.
pub fn apply(state: &mut ClusterState, req: &Request) -> Result<Response, StateError> {
    if let Command::Batch(cmds) = &req.cmd {
        let mut results = Vec::with_capacity(cmds.len());
        for c in cmds {
            let r = command::apply_command(state, req.now_ms, c);
            if r.is_ok() {
                state.version += 1;
            }
            results.push(r);
        }
        state.finish_ca_rotation();
        reconcile(state, req.now_ms);
        return Ok(Response::Batch(results));
    }
    let resp = command::apply_command(state, req.now_ms, &req.cmd)?;
    state.version += 1;
    state.finish_ca_rotation();
    reconcile(state, req.now_ms);
    Ok(resp)
}

/// Bring tasks in line with services and nodes: make/stop tasks, give them addresses,
/// place them. Never fails: problems are written into task status messages.
pub fn reconcile(state: &mut ClusterState, now_ms: u64) {
    if state.cluster.is_none() {
        return;
    }
    state.reconciled_ms = state.reconciled_ms.max(now_ms);
    crate::orchestrator::reconcile(state, now_ms);
    crate::allocator::allocate_tasks(state, now_ms);
    crate::scheduler::schedule(state, now_ms);
    crate::allocator::allocate_lb_addrs(state);
}
