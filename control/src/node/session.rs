//! The dispatcher session client, every node's side of `dispatcher::session` (the agent that
//! runs tasks is the binary's `src/agent/`): keep one session with the leader (following
//! redirects, trying every known manager), heartbeat, send task reports, and publish the
//! assignments and endpoint table it receives.

use crate::dispatcher::AgentView;
use crate::model::{Role, TaskStatus};
use crate::rpc::session::{AgentMessage, AgentUpdate, SessionMessage};
use crate::rpc::tls;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// The folded view the session holds (what the agent acts on), with the version of the last update.
#[derive(Clone, Debug, Default)]
pub struct ViewSnapshot {
    pub version: u64,
    pub view: AgentView,
}

/// Channels between the session loop and its users (the node runtime and, through it, the agent).
pub struct SessionChannels {
    pub updates: broadcast::Sender<AgentUpdate>,
    pub view: watch::Sender<Arc<ViewSnapshot>>,
    pub reports: mpsc::Receiver<Vec<(crate::model::TaskId, TaskStatus)>>,
    pub role: watch::Sender<Option<Role>>,
    /// Whether a session is up right now.
    pub connected: watch::Sender<bool>,
    /// The session that is up, and with which manager.
    pub session: watch::Sender<Option<super::SessionInfo>>,
    /// Settling (see `dispatcher::settle`): the view version this node's data plane applied,
    /// the highest version a stop waits for every node to hold, and the version the leader
    /// last said they all hold.
    pub applied: watch::Receiver<u64>,
    pub await_settled: watch::Receiver<u64>,
    pub settled: watch::Sender<u64>,
}

/// Told the managers when a session brings a different set.
pub type ManagersHook = Box<dyn Fn(&[String]) + Send + Sync>;

/// What the session loop needs: credentials, where the managers are, and how often to heartbeat.
pub struct SessionConfig {
    pub creds: Arc<crate::rpc::creds::Credentials>,
    pub managers: Arc<Mutex<Vec<String>>>,
    pub heartbeat_period: Duration,
    pub logs: Option<crate::logs::LogSourceRef>,
    /// Called with the managers when a session tells of a different set (to persist them).
    pub on_managers: Option<ManagersHook>,
    /// The CA roots the cluster says to trust (the renewal loop compares them with its own).
    pub trust: watch::Sender<String>,
    /// What this node's kernel offers encrypted networks (told at the start of each session).
    pub encryption: crate::model::EncryptionSupport,
}

impl SessionConfig {
    fn learn_managers(&self, managers: Vec<String>, ids: Vec<crate::model::NodeId>) {
        if !ids.is_empty() {
            self.creds.set_managers(ids.into_iter().collect());
        }
        if managers.is_empty() {
            return;
        }
        let mut known = self.managers.lock().unwrap_or_else(|p| p.into_inner());
        if *known != managers {
            *known = managers;
            if let Some(f) = &self.on_managers {
                f(&known);
            }
        }
    }
}

/// Run sessions until `shutdown`; gives the report receiver back.
pub async fn run(
    cfg: SessionConfig,
    mut ch: SessionChannels,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Vec<(crate::model::TaskId, TaskStatus)>> {
    let client_cfg = match tls::client_config(&cfg.creds, tls::Trust::CurrentManagers) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("agent TLS config: {e}");
            return ch.reports;
        }
    };
    let mut next: Option<String> = None;
    // The manager whose session just failed: tried last, since it is likely still gone.
    let mut failed: Option<String> = None;
    let mut rotation = 0usize;
    let mut pending: Vec<(crate::model::TaskId, TaskStatus)> = vec![];
    let mut period = cfg.heartbeat_period;
    loop {
        if *shutdown.borrow() {
            return ch.reports;
        }
        let addr = match next.take() {
            Some(a) => a,
            None => {
                let list = cfg.managers.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if list.is_empty() {
                    tracing::warn!("no manager known");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                rotation += 1;
                pick(&list, rotation, failed.as_deref())
            }
        };
        let outcome = session(&addr, client_cfg.clone(), &cfg, &mut ch, &mut pending, &mut period, &mut shutdown).await;
        ch.connected.send_replace(false);
        ch.session.send_replace(None);
        failed = matches!(outcome, Ended::Failed).then(|| addr.clone());
        match outcome {
            Ended::Redirect(Some(leader)) if leader != addr => next = Some(leader),
            Ended::Shutdown => return ch.reports,
            Ended::Redirect(_) | Ended::Failed => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => return ch.reports,
                }
            }
        }
    }
}

/// The next manager to try: the `rotation`th of the list, passing over the one that just
/// failed while there is another (after a leader vanished, the agent goes to a live manager
/// first, which redirects it to the new leader, instead of waiting out a connect timeout).
fn pick(list: &[String], rotation: usize, failed: Option<&str>) -> String {
    let candidates: Vec<&String> = list.iter().filter(|a| Some(a.as_str()) != failed).collect();
    if candidates.is_empty() {
        return list[rotation % list.len()].clone();
    }
    candidates[rotation % candidates.len()].clone()
}

enum Ended {
    Redirect(Option<String>),
    Failed,
    Shutdown,
}

async fn session(
    addr: &str,
    client_cfg: Arc<rustls::ClientConfig>,
    cfg: &SessionConfig,
    ch: &mut SessionChannels,
    pending: &mut Vec<(crate::model::TaskId, TaskStatus)>,
    period: &mut Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let Ok(mut client) = tls::client(addr, client_cfg) else { return Ended::Failed };
    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(64);
    let _ = out_tx.try_send(AgentMessage::Heartbeat);
    let _ = out_tx.try_send(AgentMessage::Describe { encryption: cfg.encryption });
    let resp = tokio::select! {
        r = client.session(tokio_stream::wrappers::ReceiverStream::new(out_rx)) => r,
        _ = tokio::time::sleep(Duration::from_secs(5)) => return Ended::Failed,
    };
    let mut inbound = match resp {
        Ok(r) => r.into_inner(),
        Err(e) => {
            tracing::debug!(%addr, "session refused: {e}");
            return Ended::Failed;
        }
    };
    if !pending.is_empty() {
        let _ = out_tx.try_send(AgentMessage::TaskStatus { updates: std::mem::take(pending) });
    }
    // A new leader knows nothing of this node's progress, nor of the stops waiting on it.
    let applied = *ch.applied.borrow_and_update();
    if applied > 0 {
        let _ = out_tx.try_send(AgentMessage::Applied { version: applied });
    }
    let wanted = *ch.await_settled.borrow_and_update();
    if wanted > *ch.settled.borrow() {
        let _ = out_tx.try_send(AgentMessage::AwaitSettled { version: wanted });
    }
    let mut heartbeat = tokio::time::interval(*period);
    let mut view = ch.view.borrow().view.clone();
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if out_tx.send(AgentMessage::Heartbeat).await.is_err() { return Ended::Failed; }
            }
            r = ch.applied.changed() => {
                let version = *ch.applied.borrow_and_update();
                if r.is_err() || out_tx.send(AgentMessage::Applied { version }).await.is_err() { return Ended::Failed; }
            }
            r = ch.await_settled.changed() => {
                let version = *ch.await_settled.borrow_and_update();
                if r.is_err() || out_tx.send(AgentMessage::AwaitSettled { version }).await.is_err() { return Ended::Failed; }
            }
            r = ch.reports.recv() => match r {
                Some(updates) => {
                    if out_tx.send(AgentMessage::TaskStatus { updates: updates.clone() }).await.is_err() {
                        pending.extend(updates);
                        return Ended::Failed;
                    }
                }
                None => return Ended::Shutdown,
            },
            m = inbound.message() => match m {
                Ok(Some(SessionMessage::Hello { managers, manager_ids, heartbeat_period_ms, session_id, .. })) => {
                    ch.connected.send_replace(true);
                    ch.session.send_replace(Some(super::SessionInfo {
                        manager: addr.to_string(),
                        session_id,
                        since_ms: crate::manager::now_ms(),
                    }));
                    cfg.learn_managers(managers, manager_ids);
                    let p = Duration::from_millis(heartbeat_period_ms.max(10));
                    if p != *period {
                        *period = p;
                        heartbeat = tokio::time::interval(p);
                    }
                }
                Ok(Some(SessionMessage::Update(u))) => {
                    view.apply(&u);
                    if view.role != *ch.role.borrow() {
                        ch.role.send_replace(view.role);
                    }
                    ch.view.send_replace(Arc::new(ViewSnapshot { version: u.version, view: view.clone() }));
                    let _ = ch.updates.send(*u);
                }
                Ok(Some(SessionMessage::Managers { managers, manager_ids })) => cfg.learn_managers(managers, manager_ids),
                Ok(Some(SessionMessage::Trust { ca_pem })) => {
                    cfg.trust.send_replace(ca_pem);
                }
                Ok(Some(SessionMessage::Redirect { leader })) => return Ended::Redirect(leader),
                Ok(Some(SessionMessage::Logs { request_id, reads })) => answer_logs(cfg.logs.clone(), request_id, reads, out_tx.clone()),
                Ok(Some(SessionMessage::Settled { version })) => {
                    ch.settled.send_if_modified(|s| std::mem::replace(s, version.max(*s)) < version);
                }
                Ok(None) => return Ended::Failed,
                Err(e) => {
                    tracing::debug!(%addr, "session ended: {e}");
                    return Ended::Failed;
                }
            },
            _ = shutdown.changed() => return Ended::Shutdown,
        }
    }
}

/// Reads the logs off the session loop (file I/O) and answers on the stream.
fn answer_logs(
    source: Option<crate::logs::LogSourceRef>,
    request_id: String,
    reads: Vec<crate::logs::LogRead>,
    out: mpsc::Sender<AgentMessage>,
) {
    tokio::spawn(async move {
        let read = tokio::task::spawn_blocking(move || {
            reads
                .iter()
                .map(|r| match &source {
                    Some(s) => s.0.read(r),
                    None => crate::logs::TaskLog {
                        task_id: r.task_id.clone(),
                        error: Some("this node keeps no task logs (its agent was started without a log source)".into()),
                        ..Default::default()
                    },
                })
                .collect::<Vec<_>>()
        })
        .await;
        match read {
            Ok(logs) => {
                let _ = out.send(AgentMessage::Logs { request_id, logs }).await;
            }
            Err(e) => tracing::warn!("reading task logs: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn the_manager_that_just_failed_is_tried_last() {
        let list: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        for rotation in 0..6 {
            assert_ne!(pick(&list, rotation, Some("b")), "b");
        }
        let picked: std::collections::BTreeSet<String> = (0..6).map(|r| pick(&list, r, Some("b"))).collect();
        assert_eq!(picked.len(), 2, "the others are both tried");
        assert_eq!(pick(&list[..1], 3, Some("a")), "a", "the only manager is tried again");
        assert_eq!(pick(&list, 4, None), "b");
    }
}
