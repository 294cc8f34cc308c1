//! The leader's side of `service logs`: which node to ask for which task ([`plan`], pure), and
//! the [`Broker`] that sends those questions down the nodes' session streams and matches the
//! answers that come back on them.

use super::{LogRead, LogsReply, LogsRequest, TaskLog, TaskOutput};
use crate::model::{NodeId, TaskId};
use crate::rpc::session::SessionMessage;
use crate::state::{ClusterState, StateError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// How long a node may take to answer before its tasks are reported as unavailable.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// The tasks to read, grouped by node, with how the CLI names them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogPlan {
    pub by_node: BTreeMap<NodeId, Vec<LogRead>>,
    /// task id -> (task name, node hostname, slot)
    pub names: BTreeMap<TaskId, (String, String, u64)>,
    /// node id -> hostname
    pub hosts: BTreeMap<NodeId, String>,
}

/// Resolves `req.target` (a service by name, id or id prefix, else a task by id) to reads per
/// node. Every task that was placed on a node is included, finished ones too, as `docker
/// service logs` shows the history a node still holds.
pub fn plan(state: &ClusterState, req: &LogsRequest) -> Result<LogPlan, StateError> {
    let tasks: Vec<_> = match state.find_service(&req.target) {
        Ok(svc) => state.tasks.values().filter(|t| t.service_id == svc.id).collect(),
        Err(not_service) => match state.tasks.get(req.target.as_str()) {
            Some(t) => vec![t],
            None => return Err(not_service),
        },
    };
    let mut plan = LogPlan::default();
    for t in tasks {
        let Some(node_id) = &t.node_id else { continue };
        let svc_name = state.services.get(&t.service_id).map(|s| s.spec.name.as_str()).unwrap_or("?");
        let host = state.nodes.get(node_id).map(|n| n.hostname.clone()).unwrap_or_else(|| node_id.to_string());
        plan.names.insert(t.id.clone(), (t.name(svc_name), host.clone(), t.slot));
        plan.hosts.insert(node_id.clone(), host);
        let from = req.cursors.get(&t.id).copied().or(if req.follow_up { Some((0, 0)) } else { None });
        plan.by_node.entry(node_id.clone()).or_default().push(LogRead { task_id: t.id.clone(), from, tail: req.tail });
    }
    Ok(plan)
}

/// Puts the nodes' answers together in the order the CLI prints them (by slot, then name).
pub fn assemble(plan: &LogPlan, answers: Vec<TaskLog>, warnings: Vec<String>) -> LogsReply {
    let mut tasks: Vec<TaskOutput> = answers
        .into_iter()
        .filter_map(|log| {
            let (task_name, node, slot) = plan.names.get(&log.task_id)?.clone();
            Some(TaskOutput { task_name, node, slot, log })
        })
        .collect();
    tasks.sort_by(|a, b| (a.slot, &a.task_name).cmp(&(b.slot, &b.task_name)));
    LogsReply { tasks, warnings }
}

/// Why one node's logs are missing from a reply (the CLI prints it as a warning).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("node {host} has no session with the leader (down?): logs of its {tasks} task(s) are not available")]
    NoSession { host: String, tasks: usize },
    #[error("node {host}: its session closed while asking for logs of {tasks} task(s)")]
    SessionClosed { host: String, tasks: usize },
    #[error("node {host} did not answer within {}s: logs of its {tasks} task(s) are missing", .within.as_secs())]
    NoAnswer { host: String, tasks: usize, within: std::time::Duration },
}

type SessionTx = mpsc::Sender<Result<SessionMessage, Status>>;
/// A node's session: its id and (weakly) its stream.
type Session = (String, mpsc::WeakSender<Result<SessionMessage, Status>>);

/// Open sessions (node -> its stream) and questions waiting for an answer. Streams are held
/// weakly: the session's own sender decides when the stream ends (a strong one here would keep
/// a finished session's stream open, and the agent would never move to a new leader).
#[derive(Default)]
pub struct Broker {
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Vec<TaskLog>>>>,
}

impl Broker {
    pub fn attach(&self, node: &str, session: &str, tx: SessionTx) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), (session.to_string(), tx.downgrade()));
    }

    /// Forgets the node's stream, unless a newer session replaced it already.
    pub fn detach(&self, node: &str, session: &str) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if s.get(node).is_some_and(|(id, _)| id == session) {
            s.remove(node);
        }
    }

    /// An agent's answer (unknown or late ones are dropped).
    pub fn answer(&self, request_id: &str, logs: Vec<TaskLog>) {
        if let Some(tx) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(request_id) {
            let _ = tx.send(logs);
        }
    }

    /// Asks one node; the error says why its tasks' logs are missing.
    pub async fn ask(&self, node: &str, host: &str, reads: Vec<LogRead>) -> Result<Vec<TaskLog>, AskError> {
        let tx = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(node).and_then(|(_, tx)| tx.upgrade());
        let Some(tx) = tx else {
            return Err(AskError::NoSession { host: host.to_string(), tasks: reads.len() });
        };
        let request_id: String = crate::model::random_id();
        let (done, wait) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(request_id.clone(), done);
        let n = reads.len();
        let sent = tx.send(Ok(SessionMessage::Logs { request_id: request_id.clone(), reads })).await;
        let outcome = match sent {
            Err(_) => Err(AskError::SessionClosed { host: host.to_string(), tasks: n }),
            Ok(()) => match tokio::time::timeout(NODE_TIMEOUT, wait).await {
                Ok(Ok(logs)) => Ok(logs),
                Ok(Err(_)) | Err(_) => Err(AskError::NoAnswer { host: host.to_string(), tasks: n, within: NODE_TIMEOUT }),
            },
        };
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&request_id);
        outcome
    }

    /// Serves one planned request on the leader: asks every node concurrently.
    pub async fn fetch(&self, plan: &LogPlan) -> LogsReply {
        let asks = plan.by_node.iter().map(|(node, reads)| {
            let host = plan.hosts.get(node).cloned().unwrap_or_else(|| node.to_string());
            async move { self.ask(node, &host, reads.clone()).await }
        });
        let mut answers = vec![];
        let mut warnings = vec![];
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(logs) => answers.extend(logs),
                Err(w) => warnings.push(w.to_string()),
            }
        }
        assemble(plan, answers, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServiceMode, ServiceSpec, TaskState};
    use crate::testkit::World;

    fn world() -> (World, crate::model::ServiceId) {
        let mut w = World::new(2);
        let mut spec = ServiceSpec::new("web", "shoal/whoami");
        spec.mode = ServiceMode::Replicated { replicas: 3 };
        let sid = w.create(spec);
        w.report_all(TaskState::Running);
        (w, sid)
    }

    fn req(target: &str) -> LogsRequest {
        LogsRequest { target: target.into(), tail: Some(5), cursors: BTreeMap::new(), follow_up: false }
    }

    #[test]
    fn a_service_is_read_on_every_node_that_ran_one_of_its_tasks() {
        let (w, _) = world();
        let p = plan(&w.state, &req("web")).unwrap();
        assert_eq!(p.by_node.len(), 3, "{p:?}");
        assert_eq!(p.names.len(), 3);
        for reads in p.by_node.values() {
            assert!(reads.iter().all(|r| r.from.is_none() && r.tail == Some(5)));
        }
        let names: Vec<_> = p.names.values().map(|(n, h, _)| (n.split('.').take(2).collect::<Vec<_>>().join("."), h.clone())).collect();
        assert!(names.iter().any(|(n, h)| n == "web.1" && h.starts_with("host-n")), "{names:?}");
    }

    #[test]
    fn one_task_by_id_and_unknown_targets_are_errors_naming_them() {
        let (w, _) = world();
        let tid = w.state.tasks.keys().next().unwrap().clone();
        let p = plan(&w.state, &req(&tid)).unwrap();
        assert_eq!(p.names.len(), 1);
        let err = plan(&w.state, &req("nope")).unwrap_err().to_string();
        assert_eq!(err, "service \"nope\" not found");
    }

    #[test]
    fn follow_ups_carry_offsets_and_read_new_tasks_whole() {
        let (w, _) = world();
        let ids: Vec<TaskId> = w.state.tasks.keys().cloned().collect();
        let mut r = req("web");
        r.follow_up = true;
        r.cursors.insert(ids[0].clone(), (10, 3));
        let p = plan(&w.state, &r).unwrap();
        let reads: Vec<&LogRead> = p.by_node.values().flatten().collect();
        assert_eq!(reads.iter().find(|x| x.task_id == ids[0]).unwrap().from, Some((10, 3)));
        assert_eq!(reads.iter().find(|x| x.task_id == ids[1]).unwrap().from, Some((0, 0)));
    }

    #[test]
    fn answers_are_ordered_by_slot_and_unknown_tasks_dropped() {
        let (w, _) = world();
        let p = plan(&w.state, &req("web")).unwrap();
        let mut answers: Vec<TaskLog> = p.names.keys().rev().map(|id| TaskLog { task_id: id.clone(), ..Default::default() }).collect();
        answers.push(TaskLog { task_id: "stranger".into(), ..Default::default() });
        let r = assemble(&p, answers, vec!["node x down".into()]);
        assert_eq!(r.tasks.iter().map(|t| t.slot).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(r.warnings, vec!["node x down".to_string()]);
    }

    #[tokio::test]
    async fn a_node_without_session_is_a_warning_and_an_answer_is_matched() {
        let (w, _) = world();
        let b = std::sync::Arc::new(Broker::default());
        let node = w.state.tasks.values().next().unwrap().node_id.clone().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        b.attach(&node, "s1", tx.clone());
        let b2 = b.clone();
        tokio::spawn(async move {
            while let Some(Ok(SessionMessage::Logs { request_id, reads })) = rx.recv().await {
                let logs =
                    reads.iter().map(|r| TaskLog { task_id: r.task_id.clone(), stdout: "hi\n".into(), ..Default::default() }).collect();
                b2.answer(&request_id, logs);
            }
        });
        let reply = b.fetch(&plan(&w.state, &req("web")).unwrap()).await;
        assert_eq!(reply.tasks.len(), 1, "{reply:?}");
        assert_eq!(reply.tasks[0].log.stdout, "hi\n");
        assert_eq!(reply.warnings.len(), 2, "{:?}", reply.warnings);
        assert!(reply.warnings[0].contains("has no session with the leader"), "{:?}", reply.warnings);
        // A replaced session is not detached by the old one.
        let (tx2, _rx2) = mpsc::channel(1);
        b.attach(&node, "s2", tx2.clone());
        b.detach(&node, "s1");
        assert!(b.sessions.lock().unwrap().contains_key(node.as_str()));
        // The broker never keeps a stream open by itself.
        drop(tx);
        drop(tx2);
        let r = b.ask(&node, "h", vec![]).await;
        assert!(r.unwrap_err().to_string().contains("has no session"), "a dropped session is gone");
    }
}
