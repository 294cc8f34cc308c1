//! The rolling updater (swarmkit's semantics): when a service's spec changes what its tasks run,
//! replace the tasks of older specs slot by slot, `parallelism` at a time with `delay` between
//! batches, stop-first or start-first; a new task counts as updated once it runs and, with a
//! health check, is healthy; new tasks that fail before or within `monitor` of that count
//! against `max_failure_ratio`, past which the update pauses, rolls back or continues.
//!
//! Pure and deterministic like the rest of the orchestrator: it runs inside every manager's
//! apply with the leader's clock, and keeps its progress in `Service::update_status`, so a new
//! leader carries on where the old one was. Its only clock is `now`; `progress.due_ms` tells the
//! leader when to propose a `Tick` for a delay or a monitor window that no report will end.

mod slots;

use super::{new_task, SlotKey};
use crate::model::{
    FailureAction, Replacement, Service, ServiceMode, TaskId, TaskState, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
};
use crate::state::{ClusterState, StateError};
use slots::{ended, failed, ready};
use std::collections::{BTreeMap, BTreeSet};

/// Runs one pass of the updater of service `sid` over its `slots` (task ids per slot, oldest
/// first). Returns the slots it holds empty on purpose (stop-first replacements waiting for their
/// old tasks to end), which the orchestrator must not fill.
pub(super) fn run(state: &mut ClusterState, sid: &str, slots: &mut BTreeMap<SlotKey, Vec<TaskId>>, now: u64) -> BTreeSet<SlotKey> {
    let Some(svc) = state.services.get(sid) else { return BTreeSet::new() };
    let Some(mut status) = svc.update_status.clone() else { return BTreeSet::new() };
    if !status.is_active() {
        return BTreeSet::new();
    }
    let rollback = status.is_rollback();
    let cfg = if rollback { svc.spec.rollback } else { svc.spec.update };
    let span = tracing::debug_span!("update", service = %svc.spec.name, service_id = %sid, rollback);
    let _enter = span.enter();

    let p = &mut status.progress;
    if p.total == 0 && p.done.is_empty() && p.batch.is_empty() {
        // The first pass: how many slots this update replaces (the failure ratio's denominator).
        p.total = slots::dirty(state, sid, slots, svc.spec_version, &[]).len() as u64;
    }
    // Watch the new tasks: failures within their window, and the moment each counts as updated.
    let watched: Vec<(TaskId, u64)> = p.watched.iter().map(|(k, v)| (k.clone(), *v)).collect();
    for (id, at) in watched {
        let Some(t) = state.tasks.get(&id) else {
            p.watched.remove(&id);
            continue;
        };
        if at > 0 && now > at.saturating_add(cfg.monitor_ms) {
            p.watched.remove(&id);
        } else if failed(t) {
            p.watched.remove(&id);
            if !p.failed.contains(&id) {
                tracing::info!(task = %id, state = t.status.state.as_str(), "a new task failed");
                p.failed.push(id);
            }
        } else if at == 0 && ready(svc, t) {
            p.watched.insert(id, now);
        }
    }
    if let Some(last) = p.failed.last().cloned() {
        let ratio = p.failed.len() as f64 / p.total.max(1) as f64;
        if ratio > cfg.max_failure_ratio.0 {
            match (cfg.failure_action, rollback) {
                (FailureAction::Continue, _) => {}
                (FailureAction::Pause, _) | (FailureAction::Rollback, true) => {
                    // A rollback that fails is never rolled back again: it pauses.
                    let (state_, what) = if rollback { (UpdateState::RollbackPaused, "rollback") } else { (UpdateState::Paused, "update") };
                    tracing::warn!(task = %last, "{what} paused: a new task failed");
                    return pause(
                        state,
                        sid,
                        status,
                        state_,
                        format!("{what} paused due to failure or early termination of task {last}"),
                        now,
                    );
                }
                (FailureAction::Rollback, false) => {
                    tracing::warn!(task = %last, "update rolled back: a new task failed");
                    let message = format!("update rolled back due to failure or early termination of task {last}");
                    if let Err(e) = roll_back(state, sid, now, message) {
                        let message = format!("update paused: it could not roll back: {e}");
                        return pause(state, sid, status, UpdateState::Paused, message, now);
                    }
                    // The rollback's first batch starts in this same pass (a rollback never
                    // rolls back, so this recurses once).
                    return run(state, sid, slots, now);
                }
            }
        }
    }

    // Move the batch forward, and start the next ones as they come due.
    let spec_version = svc.spec_version;
    for _ in 0..=slots.len() + 1 {
        advance_batch(state, sid, slots, &mut status, cfg, now);
        let p = &mut status.progress;
        if !p.batch.is_empty() || now < p.next_batch_ms {
            break;
        }
        let todo = slots::dirty(state, sid, slots, spec_version, &p.done);
        if todo.is_empty() {
            break;
        }
        let n = if cfg.parallelism == 0 { todo.len() } else { todo.len().min(usize::try_from(cfg.parallelism).unwrap_or(usize::MAX)) };
        for key in todo.into_iter().take(n) {
            let r = start_replacement(state, sid, slots, &key, cfg.order, spec_version, now);
            if let Some(new) = &r.new {
                status.progress.watched.entry(new.clone()).or_insert(0);
            }
            status.progress.batch.push(r);
        }
    }

    let p = &mut status.progress;
    let remaining = !slots::dirty(state, sid, slots, spec_version, &p.done).is_empty();
    p.due_ms = None;
    if p.batch.is_empty() {
        if remaining {
            p.due_ms = Some(p.next_batch_ms);
        } else {
            let end = p.last_batch_done_ms.saturating_add(cfg.monitor_ms);
            if now >= end {
                let message = if rollback { "rollback completed" } else { "update completed" };
                tracing::info!("{message}");
                status.state = if rollback { UpdateState::RollbackCompleted } else { UpdateState::Completed };
                status.completed_ms = Some(now);
                status.message = message.into();
                status.progress = Default::default();
            } else {
                p.due_ms = Some(end);
            }
        }
    }
    let held = status
        .progress
        .batch
        .iter()
        .filter(|r| r.new.is_none())
        .map(|r| if r.node.is_some() && r.slot == 0 { SlotKey::Node(r.node.clone().unwrap_or_default()) } else { SlotKey::Replica(r.slot) })
        .collect();
    if let Some(s) = state.services.get_mut(sid) {
        s.update_status = Some(status);
    }
    held
}

/// Stops the update where it is. Stop-first slots waiting for their new task get it (from the
/// orchestrator, as any empty slot), so no slot is left without a task.
fn pause(state: &mut ClusterState, sid: &str, mut status: UpdateStatus, to: UpdateState, message: String, now: u64) -> BTreeSet<SlotKey> {
    status.state = to;
    status.message = message;
    status.completed_ms = Some(now);
    status.progress.batch.clear();
    status.progress.due_ms = None;
    if let Some(s) = state.services.get_mut(sid) {
        s.update_status = Some(status);
    }
    BTreeSet::new()
}

/// Checks the batch in flight: a stop-first slot gets its new task once its old ones ended; a
/// start-first slot ends its old tasks once the new one is ready. A replacement is done when its
/// new task is ready or failed; the batch is done when all are, and the next waits `delay`.
fn advance_batch(
    state: &mut ClusterState,
    sid: &str,
    slots: &mut BTreeMap<SlotKey, Vec<TaskId>>,
    status: &mut UpdateStatus,
    cfg: UpdateConfig,
    now: u64,
) {
    if status.progress.batch.is_empty() {
        return;
    }
    let spec_version = state.services[sid].spec_version;
    let mut batch = std::mem::take(&mut status.progress.batch);
    for r in batch.iter_mut() {
        let key = slots::key_of(r);
        if r.new.is_none() {
            if r.old.iter().all(|id| ended(state, id)) {
                let id = slots::current_version_task(state, slots.get(&key), spec_version)
                    .unwrap_or_else(|| new_task(state, sid, r.slot, r.node.clone(), now, 0, vec![]));
                if !slots.get(&key).is_some_and(|ids| ids.contains(&id)) {
                    slots.entry(key.clone()).or_default().push(id.clone());
                }
                status.progress.watched.entry(id.clone()).or_insert(0);
                r.new = Some(id);
            }
            continue;
        }
        let new = r.new.clone().unwrap_or_default();
        let svc = &state.services[sid];
        let is_ready = state.tasks.get(&new).is_some_and(|t| ready(svc, t));
        if cfg.order == UpdateOrder::StartFirst && is_ready {
            slots::shut_down_all(state, &r.old, now, "replaced by a service update");
        }
    }
    let svc = &state.services[sid];
    let done = |r: &Replacement| {
        r.new.as_ref().is_some_and(|id| match state.tasks.get(id) {
            None => true,
            Some(t) => ready(svc, t) || failed(t) || t.status.state.is_terminal() || t.desired_state > TaskState::Running,
        })
    };
    if batch.iter().all(done) {
        for r in &batch {
            status.progress.done.push((r.slot, r.node.clone()));
        }
        status.progress.last_batch_done_ms = now;
        status.progress.next_batch_ms = now.saturating_add(cfg.delay_ms);
        tracing::debug!(slots = batch.len(), "batch updated");
    } else {
        status.progress.batch = batch;
    }
}

/// Begins replacing one slot: adopt a task of the current spec it already has (a restart made
/// one, or an earlier start-first attempt), else make one; stop-first ends the old tasks first.
fn start_replacement(
    state: &mut ClusterState,
    sid: &str,
    slots: &mut BTreeMap<SlotKey, Vec<TaskId>>,
    key: &SlotKey,
    order: UpdateOrder,
    spec_version: u64,
    now: u64,
) -> Replacement {
    let (slot, node) = match key {
        SlotKey::Replica(n) => (*n, None),
        SlotKey::Node(n) => (0, Some(n.clone())),
    };
    let ids = slots.get(key).cloned().unwrap_or_default();
    let old: Vec<TaskId> = ids
        .iter()
        .filter(|id| state.tasks.get(*id).is_some_and(|t| t.desired_state <= TaskState::Running && t.service_version != spec_version))
        .cloned()
        .collect();
    let existing = slots::current_version_task(state, slots.get(key), spec_version);
    let mut r = Replacement { slot, node: node.clone(), old: old.clone(), new: existing };
    tracing::debug!(slot, node = node.as_deref().unwrap_or(""), old = old.len(), "replacing a slot");
    if order == UpdateOrder::StopFirst
        || r.new.is_some() && state.tasks.get(r.new.as_deref().unwrap_or("")).is_some_and(|t| ready(&state.services[sid], t))
    {
        slots::shut_down_all(state, &old, now, "replaced by a service update");
    }
    if r.new.is_none() && (order == UpdateOrder::StartFirst || old.iter().all(|id| ended(state, id))) {
        let id = new_task(state, sid, slot, node, now, 0, vec![]);
        slots.entry(key.clone()).or_default().push(id.clone());
        r.new = Some(id);
    }
    r
}

/// Rolls service `sid` back to its previous spec (`service rollback`, or an update whose
/// failure action is rollback): the specs swap, and the updater replaces tasks by the
/// rollback settings. All or nothing: the previous spec must still be valid (its networks,
/// ports and secrets may have gone since).
pub fn roll_back(state: &mut ClusterState, sid: &str, now: u64, message: String) -> Result<(), StateError> {
    let old = state.services.get(sid).ok_or_else(|| StateError::not_found("service", sid))?.clone();
    let Some(prev) = old.previous_spec.clone() else {
        return Err(StateError::FailedPrecondition(format!("service {} has no previous spec to roll back to", old.spec.name)));
    };
    crate::state::validate::check_service(&prev, state)?;
    if let (ServiceMode::Global, ServiceMode::Replicated { .. }) | (ServiceMode::Replicated { .. }, ServiceMode::Global) =
        (&old.spec.mode, &prev.mode)
    {
        return Err(StateError::FailedPrecondition("a service's mode cannot change".into()));
    }
    let network_ids = crate::allocator::service_networks(state, &prev)?;
    let (ports, vips) = crate::allocator::plan_service_endpoint(state, &prev, &network_ids, Some(&old))?;
    let s: &mut Service = state.services.get_mut(sid).ok_or_else(|| StateError::not_found("service", sid))?;
    let current = s.spec.clone();
    s.version += 1;
    let fresh = s.version;
    s.set_spec(*prev, fresh);
    s.previous_spec = Some(Box::new(current));
    s.network_ids = network_ids;
    s.ports = ports;
    s.vips = vips;
    s.updated_ms = now;
    let mut status = UpdateStatus::new(UpdateState::RollbackStarted, message, now);
    status.progress.last_batch_done_ms = now;
    status.progress.due_ms = Some(now);
    s.update_status = Some(status);
    Ok(())
}

/// Starts an update of `s` after its spec changed what tasks run (`spec_version` moved).
pub fn start(s: &mut Service, now: u64) {
    let mut status = UpdateStatus::new(UpdateState::Updating, "update in progress", now);
    status.progress.last_batch_done_ms = now;
    status.progress.due_ms = Some(now);
    s.update_status = Some(status);
}

#[cfg(test)]
mod tests;
