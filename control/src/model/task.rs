//! Tasks: one container slot of a service, and its life.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Swarm's task states, in order. A task only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub message: String,
    pub err: Option<String>,
    pub timestamp_ms: u64,
    pub health: Option<Health>,
}

impl TaskStatus {
    pub fn new(state: TaskState, message: impl Into<String>, now_ms: u64) -> TaskStatus {
        TaskStatus { state, message: message.into(), err: None, timestamp_ms: now_ms, health: None }
    }
}

/// A task's address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network_id: super::NetworkId,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub mac: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: super::TaskId,
    pub service_id: super::ServiceId,
    /// Replica slot (1-based) for replicated services; 0 for global ones.
    pub slot: u64,
    pub node_id: Option<super::NodeId>,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    pub service_version: u64,
    pub networks: Vec<NetworkAttachment>,
    /// Do not start before this time (restart delay).
    pub not_before_ms: u64,
    pub created_ms: u64,
    /// Endpoint weight for load balancing.
    pub weight: u32,
    /// Creation order (the id generator's counter), to tell newest from oldest in a slot.
    pub seq: u64,
    /// Times this slot was restarted by the restart policy (within its window).
    pub restarts: Vec<u64>,
}

impl Task {
    /// `<svc>.<slot>.<taskid>` for replicated, `<svc>.<nodeid>.<taskid>` for global.
    pub fn name(&self, service_name: &str) -> String {
        if self.slot > 0 {
            format!("{service_name}.{}.{}", self.slot, self.id)
        } else {
            format!("{service_name}.{}.{}", self.node_id.as_deref().unwrap_or(""), self.id)
        }
    }

    /// Whether this task should be in load balancers and DNS: running and, when it has a
    /// health check, healthy (a starting task gets no traffic yet).
    pub fn is_endpoint(&self) -> bool {
        self.status.state == TaskState::Running
            && self.desired_state == TaskState::Running
            && matches!(self.status.health, None | Some(Health::Healthy))
    }
}

/// The MAC Docker derives from an IPv4 address: 02:42 followed by the address.
pub fn mac_for(addr: Ipv4Addr) -> String {
    let o = addr.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}
