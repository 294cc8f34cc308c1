//! What the agent talks to, as traits: the control plane (its view, reports, settling) and the
//! embedded DNS. The daemon passes the real ones; the runner's tests pass fakes and run the
//! agent under a paused clock. (The executor and the data-plane worker have their seams
//! already: `executor::Executor` and `worker::Pass`.)

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_control::gossip::MemberInfo;
use shoal_control::model::TaskStatus;
use shoal_control::node::{NodeControl, ViewSnapshot};
use shoal_dns::{DnsError, DnsServer, Zone};
use tokio::sync::watch;

/// The node's side of the dispatcher.
pub trait Control: Clone + Send + Sync + 'static {
    /// The folded view from the leader, and its version.
    fn view(&self) -> watch::Receiver<Arc<ViewSnapshot>>;
    /// Report task states.
    fn report(&self, updates: Vec<(String, TaskStatus)>) -> impl Future<Output = ()> + Send;
    /// This node's data plane holds the view of `version`.
    fn applied(&self, version: u64);
    /// Whether every connected node's data plane holds `version` (waits at most `limit`).
    fn settled(&self, version: u64, limit: Duration) -> impl Future<Output = bool> + Send;
    /// What gossip on this node sees; by default nothing (no gossip: the managers' view alone).
    fn gossip_members(&self) -> watch::Receiver<Arc<Vec<MemberInfo>>> {
        watch::channel(Arc::new(Vec::new())).1
    }
}

impl Control for NodeControl {
    fn view(&self) -> watch::Receiver<Arc<ViewSnapshot>> {
        NodeControl::view(self)
    }

    fn report(&self, updates: Vec<(String, TaskStatus)>) -> impl Future<Output = ()> + Send {
        NodeControl::report(self, updates.into_iter().map(|(id, s)| (id.into(), s)).collect())
    }

    fn applied(&self, version: u64) {
        NodeControl::applied(self, version)
    }

    fn settled(&self, version: u64, limit: Duration) -> impl Future<Output = bool> + Send {
        NodeControl::settled(self, version, limit)
    }

    fn gossip_members(&self) -> watch::Receiver<Arc<Vec<MemberInfo>>> {
        NodeControl::gossip_members(self)
    }
}

/// The embedded DNS: the zone it answers, and the tasks it serves in their namespace.
pub trait Names: Send + Sync + 'static {
    fn set_zone(&self, zone: &Zone) -> Result<(), DnsError>;
    fn attach_task(&self, task_id: &str, netns: &Path, networks: Vec<String>) -> impl Future<Output = Result<(), DnsError>> + Send;
    fn detach_task(&self, task_id: &str) -> impl Future<Output = Result<(), DnsError>> + Send;
    fn attached_tasks(&self) -> HashSet<String>;
}

impl Names for DnsServer {
    fn set_zone(&self, zone: &Zone) -> Result<(), DnsError> {
        DnsServer::set_zone(self, zone)
    }

    fn attach_task(&self, task_id: &str, netns: &Path, networks: Vec<String>) -> impl Future<Output = Result<(), DnsError>> + Send {
        DnsServer::attach_task(self, task_id, netns, networks)
    }

    fn detach_task(&self, task_id: &str) -> impl Future<Output = Result<(), DnsError>> + Send {
        DnsServer::detach_task(self, task_id)
    }

    fn attached_tasks(&self) -> HashSet<String> {
        DnsServer::attached_tasks(self).into_iter().map(|(id, _)| id).collect()
    }
}

/// The data-plane worker: one pass over a desired state at a time.
pub trait DataPlane: Send + Sync + 'static {
    fn apply(&self, desired: shoal_dataplane::state::DesiredNode) -> impl Future<Output = super::worker::Applied> + Send;
    /// Why this node cannot run encrypted networks, as the last pass found.
    fn encryption_refused(&self) -> Option<String>;
}

impl DataPlane for super::worker::Worker {
    fn apply(&self, desired: shoal_dataplane::state::DesiredNode) -> impl Future<Output = super::worker::Applied> + Send {
        super::worker::Worker::apply(self, desired)
    }

    fn encryption_refused(&self) -> Option<String> {
        super::worker::Worker::encryption_refused(self)
    }
}
