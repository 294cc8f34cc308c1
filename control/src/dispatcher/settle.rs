//! Settling: which view version every connected node's data plane holds, so a node stops a
//! withdrawn task only once no load balancer in the cluster can still pick it.
//!
//! Each agent acknowledges the version of the view its data plane applied. The leader cannot
//! just take the minimum of those acks: a node whose view did not change at version `v` is
//! never sent `v`, so it never acks it. It holds `v` all the same once it applied everything it
//! was sent, so the leader also records, per session, the last version it sent and the last it
//! computed (sent or found unchanged). Pure bookkeeping: the sessions registry drives it.

/// One session's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last version the agent says its data plane applied.
    acked: u64,
    /// The version of the last update sent to it.
    sent: u64,
    /// The last version its view was computed at (sent, or unchanged and not sent).
    computed: u64,
}

impl Progress {
    /// An update at `version` went out on the session.
    pub fn sent(&mut self, version: u64) {
        self.sent = self.sent.max(version);
        self.computed = self.computed.max(version);
    }

    /// The view was computed at `version` and had not changed: nothing was sent.
    pub fn unchanged(&mut self, version: u64) {
        self.computed = self.computed.max(version);
    }

    /// The agent applied the view of `version`.
    pub fn acked(&mut self, version: u64) {
        self.acked = self.acked.max(version);
    }

    /// The version this node's data plane is known to hold: the last one computed once it has
    /// applied all it was sent, else what it acknowledged.
    pub fn reached(&self) -> u64 {
        if self.sent > 0 && self.acked >= self.sent {
            self.computed
        } else {
            self.acked
        }
    }
}

/// The version every session has reached (0 when there is none: nothing is known).
pub fn settled<'a>(sessions: impl IntoIterator<Item = &'a Progress>) -> u64 {
    sessions.into_iter().map(Progress::reached).min().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reaches_what_it_acked_until_it_applied_all_it_was_sent() {
        let mut p = Progress::default();
        assert_eq!(p.reached(), 0, "a new session has reached nothing");
        p.sent(10);
        assert_eq!(p.reached(), 0);
        p.acked(10);
        assert_eq!(p.reached(), 10);
        p.sent(12);
        assert_eq!(p.reached(), 10, "version 12 is on its way, not applied");
        p.acked(12);
        assert_eq!(p.reached(), 12);
    }

    #[test]
    fn versions_that_did_not_change_the_view_count_once_the_rest_is_applied() {
        let mut p = Progress::default();
        p.sent(10);
        p.unchanged(11);
        p.unchanged(14);
        assert_eq!(p.reached(), 0, "10 not applied yet: nor is anything after it");
        p.acked(10);
        assert_eq!(p.reached(), 14, "nothing sent after 10: the node holds the views of 11..14 too");
    }

    #[test]
    fn acks_and_versions_never_go_back() {
        let mut p = Progress::default();
        p.sent(20);
        p.acked(20);
        p.acked(5);
        p.sent(7);
        p.unchanged(3);
        assert_eq!(p.reached(), 20);
    }

    #[test]
    fn the_cluster_is_settled_at_its_slowest_node() {
        let (mut a, mut b) = (Progress::default(), Progress::default());
        a.sent(30);
        a.acked(30);
        b.sent(28);
        b.acked(28);
        b.unchanged(30);
        assert_eq!(settled([&a, &b]), 30);
        a.sent(31);
        assert_eq!(settled([&a, &b]), 30);
        b.unchanged(31);
        a.acked(31);
        assert_eq!(settled([&a, &b]), 31);
        assert_eq!(settled([]), 0);
    }
}
