//! What one listener (a task's 127.0.0.11:53, or the host side) needs to answer: the shared tables
//! and forwarder, its view, and its own bound on forwarded queries in flight.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stats::{ListenerStats, Outcome};
use crate::{
    forward::Forwarder,
    query::{self, Action, AnswerConfig, Transport, View},
    table::Tables,
};

/// State shared by every listener of a server.
pub struct Shared {
    /// The current tables, swapped whole on every zone change.
    pub tables: ArcSwap<Tables>,
    /// Answering parameters.
    pub answer: AnswerConfig,
    /// Upstream forwarding.
    pub forwarder: Forwarder,
}

/// Whose names a listener answers.
pub enum Scope {
    /// A task, attached to these lower-cased networks (replaceable while serving).
    Task {
        /// Task id, for logs.
        id: String,
        /// Networks in attachment order.
        networks: Arc<ArcSwap<Vec<String>>>,
    },
    /// The host-side Consul-style names.
    Host,
}

/// One listener's context.
pub struct Listener {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Scope.
    pub scope: Scope,
    /// Forwarded queries in flight (and TCP connections) are bounded per listener.
    pub inflight: Arc<Semaphore>,
    /// Open TCP connections are bounded per listener.
    pub tcp_connections: Arc<Semaphore>,
    /// TCP idle timeout.
    pub tcp_idle_timeout: std::time::Duration,
    /// Counters.
    pub stats: Arc<ListenerStats>,
}

impl Listener {
    /// Answers one request from the current tables.
    pub fn respond(&self, raw: &[u8], transport: Transport) -> Action {
        let tables = self.shared.tables.load();
        let action = match &self.scope {
            Scope::Task { networks, .. } => {
                let networks = networks.load();
                query::respond(&tables, View::Task(&networks), &self.shared.answer, raw, transport)
            }
            Scope::Host => query::respond(&tables, View::Host, &self.shared.answer, raw, transport),
        };
        match action {
            Action::Reply(_) => self.stats.count(Outcome::Local),
            Action::Drop => self.stats.count(Outcome::Dropped),
            // Counted when the permit is taken or refused.
            Action::Forward(_) => {}
        }
        action
    }

    /// The answer to a UDP query longer than the server reads: FORMERR (never a guess from its
    /// first bytes), nothing when even the header is missing or it is a response.
    pub fn oversized(&self, start: &[u8]) -> Action {
        let action = match start {
            [a, b, flags, ..] if start.len() >= 12 && flags & 0x80 == 0 => {
                Action::Reply(query::Reply::header_only(u16::from_be_bytes([*a, *b]), hickory_proto::op::ResponseCode::FormErr))
            }
            _ => Action::Drop,
        };
        self.stats.count(match action {
            Action::Reply(_) => Outcome::Local,
            _ => Outcome::Dropped,
        });
        action
    }

    /// A permit to forward one more query, or `None` when this listener has too many in flight.
    pub fn forward_permit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.inflight.clone().try_acquire_owned().ok();
        self.stats.count(match permit {
            Some(_) => Outcome::Forwarded,
            None => Outcome::RefusedBusy,
        });
        if permit.is_none() {
            match &self.scope {
                Scope::Task { id, .. } => {
                    tracing::debug!(task = %id, "too many forwarded queries in flight; refusing")
                }
                Scope::Host => tracing::debug!("too many forwarded host queries in flight; refusing"),
            }
        }
        permit
    }
}
