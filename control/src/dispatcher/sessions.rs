//! One session per node: a node that opens a second session (an agent that reconnected before
//! its old stream timed out, or a copy of its certificate) replaces the first, which is told
//! to close, so two streams never report for one node side by side. Each session's progress
//! (`settle`) says which view version the cluster's data planes all hold.

use super::settle::{self, Progress};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

struct Open {
    session: String,
    close: watch::Sender<bool>,
    progress: Progress,
}

pub struct Sessions {
    open: Mutex<HashMap<String, Open>>,
    /// The version every open session's data plane holds.
    settled: watch::Sender<u64>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { open: Mutex::default(), settled: watch::channel(0).0 }
    }
}

impl Sessions {
    /// Close every open session (the manager stepped down: agents go find the leader).
    pub fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for (_, o) in open.drain() {
            o.close.send_replace(true);
        }
        self.resettle(&open);
    }

    /// Record `session` as `node`'s only one, closing the one it replaces. The receiver turns
    /// true when this session is replaced in turn.
    pub fn register(&self, node: &str, session: &str) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let new = Open { session: session.to_string(), close: tx, progress: Progress::default() };
        if let Some(old) = open.insert(node.to_string(), new) {
            tracing::warn!(node = %node, old = %old.session, new = %session, "a second session of the node replaces the first");
            old.close.send_replace(true);
        }
        self.resettle(&open);
        rx
    }

    /// Forget `session` when it ends, unless a newer one has taken its place.
    pub fn unregister(&self, node: &str, session: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(node).is_some_and(|o| o.session == session) {
            open.remove(node);
            self.resettle(&open);
        }
    }

    /// The session `node` has open, if any.
    pub fn current(&self, node: &str) -> Option<String> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(node).map(|o| o.session.clone())
    }

    /// Record a step of `session`'s progress (see `settle`).
    pub fn progress(&self, node: &str, session: &str, step: impl FnOnce(&mut Progress)) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = open.get_mut(node).filter(|o| o.session == session) {
            step(&mut o.progress);
            self.resettle(&open);
        }
    }

    /// The version every open session's data plane holds, as it moves.
    pub fn settled(&self) -> watch::Receiver<u64> {
        self.settled.subscribe()
    }

    /// The nodes whose data plane has not reached `version` yet.
    pub fn lagging(&self, version: u64) -> Vec<String> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut nodes: Vec<String> = open.iter().filter(|(_, o)| o.progress.reached() < version).map(|(n, _)| n.clone()).collect();
        nodes.sort();
        nodes
    }

    fn resettle(&self, open: &HashMap<String, Open>) {
        let v = settle::settled(open.values().map(|o| &o.progress));
        self.settled.send_if_modified(|s| std::mem::replace(s, v) != v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_session_closes_the_first() {
        let s = Sessions::default();
        let first = s.register("n1", "a");
        let other = s.register("n2", "c");
        assert!(!*first.borrow());
        let second = s.register("n1", "b");
        assert!(*first.borrow(), "the first session is told to close");
        assert!(!*second.borrow() && !*other.borrow());
        // The old session ending does not forget the new one.
        s.unregister("n1", "a");
        assert_eq!(s.current("n1").as_deref(), Some("b"));
        s.unregister("n1", "b");
        assert_eq!(s.current("n1"), None);
    }

    #[test]
    fn the_cluster_settles_when_every_open_session_applied() {
        let s = Sessions::default();
        let settled = s.settled();
        s.register("n1", "a");
        s.register("n2", "b");
        s.progress("n1", "a", |p| p.sent(7));
        s.progress("n2", "b", |p| p.sent(7));
        s.progress("n1", "a", |p| p.acked(7));
        assert_eq!((*settled.borrow(), s.lagging(7)), (0, vec!["n2".to_string()]));
        s.progress("n2", "b", |p| p.acked(7));
        assert_eq!(*settled.borrow(), 7);
        // A replaced session's progress is not taken: the new one starts from nothing.
        s.progress("n2", "old", |p| p.acked(9));
        s.register("n2", "c");
        assert_eq!(*settled.borrow(), 0);
        // A node that goes away is no longer waited for.
        s.unregister("n2", "c");
        assert_eq!(*settled.borrow(), 7);
    }
}
