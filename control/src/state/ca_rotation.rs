//! The end of a root CA rotation, checked after every command.

use super::ClusterState;
use crate::ca::{ca_digest, JoinToken};
use crate::model::NodeState;

impl ClusterState {
    /// Ends a CA rotation once every node that is not down holds a certificate of the new root:
    /// the new root replaces the old one, which no node trusts any more once it has renewed
    /// again, and the join tokens take the new root's digest and keep their secrets (Swarm's
    /// tokens change the same way). A node that was down throughout must rejoin.
    pub(crate) fn finish_ca_rotation(&mut self) {
        let Some(c) = self.cluster.as_mut() else { return };
        let Some(r) = c.ca_rotation.as_ref() else { return };
        if self.nodes.values().any(|n| n.state != NodeState::Down && !r.renewed.contains(&n.id)) {
            return;
        }
        let Some(r) = c.ca_rotation.take() else { return };
        c.ca_cert_pem = r.cert_pem;
        c.ca_key_pem = r.key_pem;
        let digest = ca_digest(&c.ca_cert_pem);
        for token in [&mut c.worker_token, &mut c.manager_token] {
            if let Ok(mut t) = JoinToken::parse(token) {
                t.ca_digest = digest.clone();
                *token = t.to_string();
            }
        }
    }
}
