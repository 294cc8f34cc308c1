//! One session per node: a node that opens a second session (an agent that reconnected before
//! its old stream timed out, or a copy of its certificate) replaces the first, which is told
//! to close, so two streams never report for one node side by side.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, (String, watch::Sender<bool>)>>,
}

impl Sessions {
    /// Record `session` as `node`'s only one, closing the one it replaces. The receiver turns
    /// true when this session is replaced in turn.
    /// Close every open session (the manager stepped down: agents go find the leader).
    pub fn close_all(&self) {
        for (_, (_, close)) in self.open.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            close.send_replace(true);
        }
    }

    pub fn register(&self, node: &str, session: &str) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let old = self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), (session.to_string(), tx));
        if let Some((old_session, close)) = old {
            tracing::warn!(node = %node, old = %old_session, new = %session, "a second session of the node replaces the first");
            close.send_replace(true);
        }
        rx
    }

    /// Forget `session` when it ends, unless a newer one has taken its place.
    pub fn unregister(&self, node: &str, session: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(node).is_some_and(|(s, _)| s == session) {
            open.remove(node);
        }
    }

    /// The session `node` has open, if any.
    pub fn current(&self, node: &str) -> Option<String> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(node).map(|(s, _)| s.clone())
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
}
