//! Services: the desired state a user declares.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// Signed so that a negative count reaches validation and gets a clear error.
    Replicated {
        replicas: i64,
    },
    Global,
}

/// Declared once for control, the data plane and the DNS; their serde names are those this
/// module used (they are in the Raft log and snapshots): see the test below.
pub use shoal_types::{EndpointMode, Protocol, PublishMode};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    pub protocol: Protocol,
    /// Port inside the task. Signed/wide so that bad input reaches validation.
    pub target: i64,
    /// Published port; `None` = pick one from 30000-32767 (ingress mode only).
    pub published: Option<i64>,
    pub mode: PublishMode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EndpointSpec {
    pub mode: EndpointMode,
    pub ports: Vec<PortConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Placement {
    /// `node.id==x`, `node.hostname!=y`, `node.role==manager`, `node.labels.k==v`.
    pub constraints: Vec<String>,
    /// 0 = unlimited.
    pub max_replicas_per_node: u64,
    /// `--placement-pref`: spread over node labels, in order (after the constraints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<super::PlacementPreference>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    /// 0 = unlimited.
    pub max_attempts: u64,
    /// Window in which attempts are counted; 0 = forever.
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy { condition: RestartCondition::Any, delay_ms: 5_000, max_attempts: 0, window_ms: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub mode: ServiceMode,
    /// Network names or ids.
    pub networks: Vec<String>,
    /// Extra DNS names of the service on some of its networks, keyed by the network as written
    /// in `networks` (Docker's NetworkAttachmentConfig.Aliases; a stack makes each service's
    /// short name an alias on its networks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_aliases: BTreeMap<String, Vec<String>>,
    pub endpoint: EndpointSpec,
    pub placement: Placement,
    pub restart: RestartPolicy,
    /// Secrets as files in the tasks (`--secret`).
    pub secrets: Vec<super::FileRef>,
    /// How the task's process runs (`--hostname`, `--user`, `--workdir`, `--entrypoint`...).
    #[serde(default, skip_serializing_if = "super::ContainerOpts::is_default")]
    pub container: super::ContainerOpts,
    /// Bind mounts, volumes and tmpfs mounts of each task (`--mount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<super::Mount>,
    /// Configs as files in the tasks (`--config`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<super::FileRef>,
    /// Docker's HEALTHCHECK: a task is an endpoint only once healthy, and is replaced when it
    /// turns unhealthy. Absent in specs written before health checks existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    /// What each task may use (`--limit-*`); enforced with cgroups on the node.
    #[serde(default)]
    pub limits: ResourceLimits,
    /// What each task needs free on its node (`--reserve-*`); the scheduler places by it.
    #[serde(default)]
    pub reservations: ResourceReservations,
    /// How tasks are replaced when this spec changes (`--update-*`).
    #[serde(default)]
    pub update: UpdateConfig,
    /// How tasks are replaced on a rollback (`--rollback-*`).
    #[serde(default)]
    pub rollback: UpdateConfig,
    /// Bumped by `service update --force` (Docker's ForceUpdate): a spec that differs only in
    /// it still replaces every task.
    #[serde(default)]
    pub force_update: u64,
}

/// swarmkit's UpdateConfig, used for both updates and rollbacks (Docker's defaults for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0 = all at once.
    pub parallelism: u64,
    /// Wait between batches.
    pub delay_ms: u64,
    pub failure_action: FailureAction,
    /// How long a new task is watched for failure after it counts as updated.
    pub monitor_ms: u64,
    /// Share of updated tasks that may fail before `failure_action` applies (0.0 to 1.0).
    pub max_failure_ratio: Ratio,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> UpdateConfig {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: 5_000,
            max_failure_ratio: Ratio(0.0),
            order: UpdateOrder::StopFirst,
        }
    }
}

/// What an update does when too many new tasks fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

/// Stop the old task before starting its replacement, or start the new one first (overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

/// A fraction (Docker's `max_failure_ratio` is a float). Compared by bits so specs stay `Eq`:
/// validation refuses NaN, so equal values have equal bits (except 0.0 and -0.0, also refused).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ratio(pub f64);

impl PartialEq for Ratio {
    fn eq(&self, other: &Ratio) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Ratio {}

/// Where a service's last update or rollback stands (swarmkit's UpdateStatus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_ms: u64,
    /// Set once the update completed, paused or was rolled back.
    pub completed_ms: Option<u64>,
    pub message: String,
    /// The updater's own bookkeeping. swarmkit keeps it in the leader's memory; here it is
    /// replicated state, so a new leader carries on the same update from the same point.
    #[serde(default)]
    pub progress: UpdateProgress,
}

impl UpdateStatus {
    pub fn new(state: UpdateState, message: impl Into<String>, now_ms: u64) -> UpdateStatus {
        UpdateStatus { state, started_ms: now_ms, completed_ms: None, message: message.into(), progress: UpdateProgress::default() }
    }

    /// An update or a rollback is replacing tasks.
    pub fn is_active(&self) -> bool {
        matches!(self.state, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    pub fn is_rollback(&self) -> bool {
        matches!(self.state, UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
    }
}

/// How far an update has come: the batch in flight, the new tasks being watched, the failures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateProgress {
    /// Slots that needed new tasks when the update started (the denominator of the failure ratio).
    pub total: u64,
    /// The batch being replaced.
    pub batch: Vec<Replacement>,
    /// No batch starts before this (`delay` after the previous one).
    pub next_batch_ms: u64,
    /// When the last batch finished; the update completes `monitor` after it.
    pub last_batch_done_ms: u64,
    /// New tasks still in their monitor window: task id -> when it counted as updated (running
    /// and healthy), 0 while it has not yet.
    pub watched: BTreeMap<super::TaskId, u64>,
    /// New tasks that failed before or within their monitor window.
    pub failed: Vec<super::TaskId>,
    /// Slots already replaced by this update (replica slot, or node of a global service):
    /// each slot is replaced once, even when its new task failed.
    pub done: Vec<(u64, Option<super::NodeId>)>,
    /// When the update next needs a pass that no task report will bring (a delay or the last
    /// monitor window ending): the leader proposes a `Tick` then.
    pub due_ms: Option<u64>,
}

/// One slot being replaced: its old tasks and its new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// The replica slot (0 for a global service's task).
    pub slot: u64,
    /// The node of a global service's slot.
    pub node: Option<super::NodeId>,
    /// Tasks of the older spec that this replacement ends.
    pub old: Vec<super::TaskId>,
    /// The new task; `None` while a stop-first replacement waits for the old ones to end.
    pub new: Option<super::TaskId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

/// Per-task reservations; 0 = none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReservations {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// Per-task limits; 0 = none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// CPUs in billionths (Docker's NanoCPUs).
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    pub pids: u64,
}

/// A command run in the task's namespaces (`/bin/sh -c`, Docker's CMD-SHELL); exit 0 = healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub cmd: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failures that make the task unhealthy.
    pub retries: u32,
    /// Failures in this time after start do not count, until the first success.
    pub start_period_ms: u64,
}

impl HealthCheck {
    /// Docker's defaults: every 30 s, 30 s timeout, 3 retries, no start period.
    pub fn new(cmd: impl Into<String>) -> HealthCheck {
        HealthCheck { cmd: cmd.into(), interval_ms: 30_000, timeout_ms: 30_000, retries: 3, start_period_ms: 0 }
    }
}

impl ServiceSpec {
    /// A replicated service with one replica and defaults elsewhere.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            image: image.into(),
            args: vec![],
            env: vec![],
            labels: BTreeMap::new(),
            mode: ServiceMode::Replicated { replicas: 1 },
            networks: vec![],
            network_aliases: BTreeMap::new(),
            endpoint: EndpointSpec::default(),
            placement: Placement::default(),
            restart: RestartPolicy::default(),
            secrets: vec![],
            configs: vec![],
            mounts: vec![],
            container: Default::default(),
            healthcheck: None,
            limits: ResourceLimits::default(),
            reservations: ResourceReservations::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            force_update: 0,
        }
    }

    /// Whether tasks made from `self` and from `other` are the same, so that moving from one to
    /// the other replaces no task (swarmkit compares the TaskSpec and the endpoint). The name,
    /// the replica count, the service labels and the update and rollback settings are the
    /// service's own, not its tasks'.
    pub fn same_tasks(&self, other: &ServiceSpec) -> bool {
        let strip = |s: &ServiceSpec| ServiceSpec {
            name: String::new(),
            mode: match s.mode {
                ServiceMode::Replicated { .. } => ServiceMode::Replicated { replicas: 0 },
                ServiceMode::Global => ServiceMode::Global,
            },
            labels: BTreeMap::new(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            ..s.clone()
        };
        strip(self) == strip(other)
    }
}

/// A virtual IP of a service on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    pub network_id: super::NetworkId,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: super::ServiceId,
    pub spec: ServiceSpec,
    /// Bumped on every spec change.
    pub version: u64,
    /// Resolved network ids (from the spec's names), ingress first when ports are published.
    pub network_ids: Vec<super::NetworkId>,
    /// Ports with the published port filled in by the allocator.
    pub ports: Vec<PortConfig>,
    pub vips: Vec<Vip>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The spec before the last update, for `service rollback` (swarmkit's PreviousSpec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<Box<ServiceSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    /// Which tasks `spec` makes: tasks carry it as their `service_version`, and a task whose
    /// number differs is replaced by the updater. It changes only when what tasks run changes
    /// (`ServiceSpec::same_tasks`), so a scale or a new update delay replaces nothing; a spec
    /// that returns to one still run by some task (a rollback) takes that spec's number back.
    #[serde(default)]
    pub spec_version: u64,
    /// Older specs that some task still runs, by spec version: each task runs the spec it was
    /// made from until the updater replaces it. Dropped once no task refers to them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_specs: BTreeMap<u64, ServiceSpec>,
}

impl Service {
    /// The spec a task of this service runs: the one of its `service_version`.
    pub fn spec_for(&self, service_version: u64) -> &ServiceSpec {
        if service_version == self.spec_version {
            return &self.spec;
        }
        self.task_specs.get(&service_version).unwrap_or(&self.spec)
    }

    /// Make `spec` the service's spec, keeping the current one for the tasks that still run
    /// it, and give it its spec version: the current one if its tasks are the same, the one of
    /// an older spec still run by tasks if it is that one, else `fresh`.
    pub fn set_spec(&mut self, spec: ServiceSpec, fresh: u64) {
        if self.spec.same_tasks(&spec) {
            self.spec = spec;
            return;
        }
        let old = std::mem::replace(&mut self.spec, spec);
        self.task_specs.insert(self.spec_version, old);
        let back = self.task_specs.iter().find(|(_, s)| s.same_tasks(&self.spec)).map(|(v, _)| *v);
        self.spec_version = match back {
            Some(v) => {
                self.task_specs.remove(&v);
                v
            }
            None => fresh,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol, PublishMode and EndpointMode moved to `shoal-types`: the JSON of every variant,
    /// as the Raft log and snapshots on disk hold it, is what it was when this module declared
    /// them (lowercase names), and old entries read back.
    #[test]
    fn the_json_of_every_protocol_and_mode_is_unchanged() {
        let port = |protocol, mode| PortConfig { protocol, target: 53, published: Some(30053), mode };
        let spec = EndpointSpec {
            mode: EndpointMode::Dnsrr,
            ports: vec![
                port(Protocol::Tcp, PublishMode::Ingress),
                port(Protocol::Udp, PublishMode::Host),
                port(Protocol::Sctp, PublishMode::Host),
            ],
        };
        let json = r#"{"mode":"dnsrr","ports":[{"protocol":"tcp","target":53,"published":30053,"mode":"ingress"},{"protocol":"udp","target":53,"published":30053,"mode":"host"},{"protocol":"sctp","target":53,"published":30053,"mode":"host"}]}"#;
        assert_eq!(serde_json::to_string(&spec).unwrap(), json);
        assert_eq!(serde_json::from_str::<EndpointSpec>(json).unwrap(), spec);
        let vip = EndpointSpec { mode: EndpointMode::Vip, ports: vec![] };
        assert_eq!(serde_json::to_string(&vip).unwrap(), r#"{"mode":"vip","ports":[]}"#);
        assert_eq!(EndpointSpec::default(), vip, "an endpoint spec defaults to a VIP");
        assert_eq!(Protocol::Sctp.as_str(), "sctp");
    }
}
