//! Batching writes: concurrent proposals on the leader go into one log entry, so one fsync
//! (and one replication round) commits them all. Each command keeps its own result. The leader
//! proposes nothing while its disk is below the reserve (`disk`).

use super::disk::{DiskError, DiskGuard};
use crate::state::{Command, Request, Response, StateError};
use crate::store::Raft;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot};

pub enum Outcome {
    Done(Result<Response, StateError>, u64),
    /// Not the leader: send it to this address.
    Forward(Option<String>),
    /// Raft refused or failed the write (its core stopped).
    Failed(RaftError<u64, ClientWriteError<u64, BasicNode>>),
    /// Refused before anything was proposed: the leader's disk is nearly full.
    Refused(DiskError),
}

pub type Proposal = (Command, oneshot::Sender<Outcome>);

const MAX_BATCH: usize = 256;
/// Batches in flight at once: while they commit, the next one fills up.
const IN_FLIGHT: usize = 2;

/// What the batcher needs to know of its manager.
#[derive(Clone)]
pub struct Proposer {
    pub raft: Raft,
    pub raft_id: u64,
    pub disk: DiskGuard,
}

pub async fn run(p: Proposer, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Submit and go on collecting the next batch while this one commits.
        let p = p.clone();
        tokio::spawn(async move {
            submit(p, batch).await;
            drop(permit);
        });
    }
}

async fn submit(p: Proposer, batch: Vec<Proposal>) {
    let (cmds, waiters): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) = batch.into_iter().unzip();
    // Only the leader appends here: a follower forwards, whatever its own disk.
    if p.raft.metrics().borrow().current_leader == Some(p.raft_id) {
        if let Err(e) = p.disk.check() {
            tracing::warn!(commands = waiters.len(), "refusing writes: {e}");
            for w in waiters {
                let _ = w.send(Outcome::Refused(e.clone()));
            }
            return;
        }
    }
    let raft = p.raft;
    let single = cmds.len() == 1;
    let cmd = if single { cmds.into_iter().next().unwrap_or(Command::Tick) } else { Command::Batch(cmds) };
    let res = raft.client_write(Request { now_ms: super::now_ms(), cmd }).await;
    match res {
        Ok(resp) => {
            let index = resp.log_id.index;
            match (single, resp.data) {
                (false, Ok(Response::Batch(results))) => {
                    for (w, r) in waiters.into_iter().zip(results) {
                        let _ = w.send(Outcome::Done(r, index));
                    }
                }
                (_, other) => {
                    for w in waiters {
                        let _ = w.send(Outcome::Done(other.clone(), index));
                    }
                }
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            let addr = f.leader_node.map(|n| n.addr);
            for w in waiters {
                let _ = w.send(Outcome::Forward(addr.clone()));
            }
        }
        Err(e) => {
            for w in waiters {
                let _ = w.send(Outcome::Failed(e.clone()));
            }
        }
    }
}
