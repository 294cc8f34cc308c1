//! Health checks of this node's tasks: one loop per running task whose service has a check,
//! running it inside the task every interval and reporting when the task's health changes.
//! The agent turns a verdict into a task status: `starting`/`healthy` keep the task running
//! (only healthy tasks are endpoints); `unhealthy` fails the task, which is then replaced.

pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_control::model::{Health, HealthCheck};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::executor::Executor;
pub use state::HealthState;

/// A change of one task's health, with the last check's result.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub task_id: String,
    pub health: Health,
    pub failures: u32,
    pub last: String,
}

/// A task to check: its id, the check, and where its state starts.
pub struct Wanted {
    pub task_id: String,
    pub check: HealthCheck,
    pub initial: HealthState,
}

pub struct Monitor {
    loops: HashMap<String, JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Verdict>,
}

impl Monitor {
    pub fn new() -> (Monitor, mpsc::UnboundedReceiver<Verdict>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Monitor { loops: HashMap::new(), tx }, rx)
    }

    /// Runs a loop for exactly the tasks in `wanted` (those already checked keep their loop and
    /// state).
    pub fn sync(&mut self, wanted: Vec<Wanted>, exec: &Arc<dyn Executor>) {
        let ids: std::collections::HashSet<String> = wanted.iter().map(|w| w.task_id.clone()).collect();
        self.loops.retain(|id, h| {
            let keep = ids.contains(id) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for w in wanted {
            if self.loops.contains_key(&w.task_id) {
                continue;
            }
            let handle = tokio::spawn(check_loop(w.task_id.clone(), w.check, w.initial, exec.clone(), self.tx.clone()));
            self.loops.insert(w.task_id, handle);
        }
    }

    pub fn stop(&mut self, task_id: &str) {
        if let Some(h) = self.loops.remove(task_id) {
            h.abort();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for h in self.loops.values() {
            h.abort();
        }
    }
}

async fn check_loop(id: String, check: HealthCheck, mut state: HealthState, exec: Arc<dyn Executor>, tx: mpsc::UnboundedSender<Verdict>) {
    let interval = Duration::from_millis(check.interval_ms);
    let timeout = Duration::from_millis(check.timeout_ms);
    loop {
        tokio::time::sleep(interval).await;
        let (e, tid, cmd) = (exec.clone(), id.clone(), check.cmd.clone());
        let outcome = tokio::task::spawn_blocking(move || e.run_inside(&tid, &cmd, timeout)).await;
        let (passed, last) = match outcome {
            Ok(Ok(o)) => (o.passed(), o.describe(timeout)),
            Ok(Err(e)) => (false, e.to_string()),
            Err(e) => (false, format!("health check panicked: {e}")),
        };
        tracing::debug!(task = %id, passed, %last, "health check");
        if let Some(health) = state.record(passed, super::now_ms(), &check) {
            tracing::info!(task = %id, ?health, %last, "task health changed");
            if tx.send(Verdict { task_id: id.clone(), health, failures: state.failures(), last }).is_err() || health == Health::Unhealthy {
                return;
            }
        }
    }
}
