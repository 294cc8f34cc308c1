//! What an agent session needs of the manager it runs on, and nothing more: Raft facts
//! (leadership, membership), the applied state, the dispatcher's own registries, and a way to
//! propose. `Manager` implements it (`manager/dispatch.rs`); the session tests use a fake
//! under a paused clock (`session_tests.rs`).

use super::{Liveness, Sessions, ViewCache};
use crate::logs::broker::Broker;
use crate::state::Command;
use crate::store::SharedState;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

pub trait Leader: Clone + Send + Sync + 'static {
    /// Why a proposal did not commit (the command's own refusal is not an error here: the
    /// session only reports, it has no one to answer).
    type ProposeError: std::fmt::Display + Send;

    /// Whether this manager leads now.
    fn is_leader(&self) -> bool;
    /// The leader's address, if known: where a session opened here is sent.
    fn leader_addr(&self) -> Option<String>;
    /// The managers' addresses and node ids (the Raft membership), as agents keep them.
    fn managers(&self) -> (Vec<String>, Vec<crate::model::NodeId>);
    /// Raft ids of the voters: a demoted manager keeps its role until it has left them.
    fn voters(&self) -> Vec<u64>;
    /// The applied cluster state.
    fn shared(&self) -> Arc<SharedState>;
    fn liveness(&self) -> &Liveness;
    fn sessions(&self) -> &Sessions;
    /// The views built per applied version, shared by every session.
    fn views(&self) -> &ViewCache;
    fn logs(&self) -> &Broker;
    /// Turns true when the manager shuts down.
    fn shutdown_signal(&self) -> watch::Receiver<bool>;
    /// Propose a command through Raft and wait for it to be applied.
    fn propose(&self, cmd: Command) -> impl Future<Output = Result<(), Self::ProposeError>> + Send;
}
