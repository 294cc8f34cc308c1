//! `shoal service logs`: a task's output stays on the node that ran it (the executor keeps
//! `stdout.log` and `stderr.log` per task) and is fetched through the leader, as Swarm's log
//! broker does: the CLI asks its manager, the leader asks every node with a task of the service
//! over that node's session stream ([`broker`]), and each agent answers on the same stream from
//! its [`LogSource`]. No node listens for anything new, and a worker never talks to another.
//!
//! Reads are by byte offset per stream, so `--follow` is a loop of requests carrying the offsets
//! the previous answer ended at, and an answer never splits a line. The offsets count bytes
//! since the task started, across the shim's log rotation ([`read`]).

pub mod broker;
pub mod read;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where to start reading one task's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRead {
    pub task_id: crate::model::TaskId,
    /// Offsets in the stdout and stderr streams to read from (bytes since the task started,
    /// rotated files included); `None`: see `tail`.
    pub from: Option<(u64, u64)>,
    /// With no offsets: only the last `tail` lines of each stream (`None`: everything).
    pub tail: Option<u64>,
}

/// What a node holds of one task's log from the requested offsets (whole lines only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLog {
    pub task_id: crate::model::TaskId,
    pub stdout: String,
    pub stderr: String,
    /// Offsets to read from next time.
    pub next: (u64, u64),
    /// Why nothing could be read (e.g. the node never ran this task or removed its files).
    pub error: Option<String>,
}

/// `ApiRequest::Logs`: logs of a service (name, id or id prefix) or of one task (id).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogsRequest {
    pub target: String,
    pub tail: Option<u64>,
    /// Offsets per task id from the previous answer (`--follow`); tasks not listed are read
    /// from the start (new tasks), or by `tail` on the first request.
    pub cursors: BTreeMap<crate::model::TaskId, (u64, u64)>,
    /// Whether this is a follow-up request: new tasks are read whole, not by `tail`.
    pub follow_up: bool,
}

/// One task's output with the names the CLI prints (`vote.1.abc@snode1 | ...`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskOutput {
    pub task_name: String,
    pub node: String,
    pub slot: u64,
    pub log: TaskLog,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogsReply {
    pub tasks: Vec<TaskOutput>,
    /// Nodes that could not be asked or did not answer, one line each.
    pub warnings: Vec<String>,
}

/// Reads task logs on a node (the binary's executor knows where they are).
pub trait LogSource: Send + Sync {
    fn read(&self, req: &LogRead) -> TaskLog;
}

/// A shared [`LogSource`] that can sit in `Clone + Debug` configs.
#[derive(Clone)]
pub struct LogSourceRef(pub Arc<dyn LogSource>);

impl std::fmt::Debug for LogSourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSource")
    }
}
