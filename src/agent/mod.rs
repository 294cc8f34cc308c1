//! The node agent: runs the tasks assigned to this node and wires the overlay, the load
//! balancers and DNS from the dispatcher's stream.
//!
//! Each pass is decided without I/O (`pass`: what to stop, the DNS zone, the data plane, what
//! to start, what to report) and carried out by `runner` through seams (`seams`, the executor,
//! the data-plane worker), so the agent is tested with fakes under a paused clock. The data
//! plane is reconciled from the whole view each time (plan-then-apply makes that cheap and
//! idempotent), so a missed update or a restart repairs itself.

pub mod desired;
pub mod executor;
pub mod health;
pub mod images;
pub mod lb_step;
pub mod logs;
pub mod pass;
pub mod ready;
pub mod runner;
pub mod seams;
pub mod task_run;
pub mod volumes;
pub mod worker;
pub mod zone;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_control::model::{Health, TaskState, TaskStatus};
use shoal_control::node::NodeControl;
use shoal_control::rpc::session::Assignment;
use tokio::sync::watch;

use executor::Executor;

pub struct AgentConfig {
    pub node_id: String,
    pub self_addr: Ipv4Addr,
    /// Time between withdrawing a task from load balancers/DNS and sending it SIGTERM.
    pub drain: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The host's cgroup mounts and this node's cgroup path under them (`shoal/<instance>`):
    /// each task gets its own cgroup there (the eBPF socket LB attaches at the instance's).
    pub cgroups: (executor::cgroups::Layout, PathBuf),
    /// Which load balancer (auto probes the kernel).
    pub lb: shoal_dataplane::lb::Choice,
    /// The node's own control ports, which its tasks must not reach.
    pub control_ports: shoal_dataplane::guard::ControlPorts,
    /// The node's images (and the pulls under way).
    pub images: Arc<images::Images>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn status(state: TaskState, message: &str, err: Option<String>) -> TaskStatus {
    let mut s = TaskStatus::new(state, message, now_ms());
    s.err = err;
    s
}

/// The task's health check: the service's, else its image's HEALTHCHECK (as Docker does).
pub fn healthcheck(a: &Assignment, cfg: &AgentConfig) -> Option<shoal_control::model::HealthCheck> {
    a.spec.healthcheck.clone().or_else(|| cfg.images.healthcheck(&a.spec.image))
}

/// A running task's status; with a health check it starts as `starting` (not yet an endpoint).
pub fn running_status(a: &Assignment, cfg: &AgentConfig, message: &str) -> TaskStatus {
    let mut s = status(TaskState::Running, message, None);
    if healthcheck(a, cfg).is_some() {
        s.health = Some(a.task.status.health.filter(|h| *h != Health::Unhealthy).unwrap_or(Health::Starting));
    }
    s
}

/// Runs the agent until `shutdown`: the data-plane worker on its own thread, passes on every
/// view.
pub async fn run(
    ctl: NodeControl,
    cfg: AgentConfig,
    exec: Arc<dyn Executor>,
    dns: Arc<shoal_dns::DnsServer>,
    shutdown: watch::Receiver<bool>,
) {
    let data_plane = match worker::Worker::spawn(cfg.lb, cfg.control_ports.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the data plane worker");
            return;
        }
    };
    runner::Runner { ctl, cfg: Arc::new(cfg), exec, dns, data_plane }.run(shutdown).await;
}
