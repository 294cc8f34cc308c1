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
    /// Task `id` of `service_id` in `slot` (0 for a global service's), on `node_id`, wanted in
    /// state `desired` and last reported `state`; version 1, no networks, no restart delay.
    pub fn in_slot(id: &str, service_id: &str, slot: u64, node_id: Option<&str>, desired: TaskState, state: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: service_id.into(),
            slot,
            node_id: node_id.map(super::NodeId::from),
            desired_state: desired,
            status: TaskStatus::new(state, "", 0),
            service_version: 1,
            networks: vec![],
            not_before_ms: 0,
            created_ms: 0,
            weight: 1,
            seq: 1,
            restarts: vec![],
        }
    }

    /// `<svc>.<slot>.<taskid>` for replicated, `<svc>.<nodeid>.<taskid>` for global.
    pub fn name(&self, service_name: &str) -> String {
        if self.slot > 0 {
            format!("{service_name}.{}.{}", self.slot, self.id)
        } else {
            format!("{service_name}.{}.{}", self.node_id.as_deref().unwrap_or(""), self.id)
        }
    }

    /// The hostname inside the task: its name when that fits Linux's 64 bytes
    /// (`HOST_NAME_MAX`), else the name with the service part cut short, so the slot (or
    /// node) and the task id, which make it unique, always stay. Docker never meets this: its
    /// tasks' hostname is the 12-character container id unless `--hostname` says otherwise;
    /// shoal keeps the readable name and shortens it.
    pub fn hostname(&self, service_name: &str) -> String {
        let full = self.name(service_name);
        if full.len() <= HOST_NAME_MAX {
            return full;
        }
        let suffix = &full[service_name.len()..];
        let mut keep = HOST_NAME_MAX.saturating_sub(suffix.len()).min(service_name.len());
        while !service_name.is_char_boundary(keep) {
            keep -= 1;
        }
        // A label may not end in '-' or '.' (RFC 1123), nor be empty: drop what the cut left.
        let prefix = service_name[..keep].trim_end_matches(['-', '.', '_']);
        let mut h = format!("{prefix}{suffix}");
        if prefix.is_empty() {
            h = suffix.trim_start_matches('.').to_string();
        }
        h.truncate(HOST_NAME_MAX);
        h
    }

    /// Whether this task should be in load balancers and DNS: running and, when it has a
    /// health check, healthy (a starting task gets no traffic yet).
    pub fn is_endpoint(&self) -> bool {
        self.status.state == TaskState::Running
            && self.desired_state == TaskState::Running
            && matches!(self.status.health, None | Some(Health::Healthy))
    }
}

/// Linux's limit on a hostname (`sethostname(2)` refuses longer ones).
pub const HOST_NAME_MAX: usize = 64;

/// The MAC Docker derives from an IPv4 address: 02:42 followed by the address.
pub fn mac_for(addr: Ipv4Addr) -> String {
    let o = addr.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: u64, node: Option<&str>) -> Task {
        Task::in_slot("abcdefghijklmnopqrstuvwxy", "s", slot, node, TaskState::Running, TaskState::New)
    }

    #[test]
    fn hostnames_fit_in_64_bytes_and_keep_slot_and_id() {
        let t = task(3, None);
        assert_eq!(t.hostname("web"), "web.3.abcdefghijklmnopqrstuvwxy", "short names are unchanged");
        let long = "a".repeat(40) + "-" + &"b".repeat(22); // 63 bytes, the longest valid name
        let h = t.hostname(&long);
        assert!(h.len() <= HOST_NAME_MAX, "{h} is {} bytes", h.len());
        assert!(h.ends_with(".3.abcdefghijklmnopqrstuvwxy") && h.starts_with("aaaa"), "{h}");
        // Cut just after the '-': it is dropped, not left at the end of the label.
        let dash = "a".repeat(35) + "-" + &"b".repeat(27);
        let h = t.hostname(&dash);
        assert!(h.starts_with(&"a".repeat(35)) && !h.contains("-."), "{h}");
        let global = task(0, Some("nodeidnodeidnodeidnodeid1"));
        let h = global.hostname(&long);
        assert!(h.len() <= HOST_NAME_MAX && h.ends_with(".nodeidnodeidnodeidnodeid1.abcdefghijklmnopqrstuvwxy"), "{h}");
        let h = task(u64::MAX, None).hostname(&long);
        assert!(h.len() <= HOST_NAME_MAX, "{h}");
    }
}
