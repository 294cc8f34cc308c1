//! Who a member is on the wire: node id, gossip address and a generation.
//!
//! foca keys members by `Identity::Addr`; ours is the gossip socket address, since that is all a
//! joining node knows of its seeds (an announce is addressed to `addr` with an empty node id).
//! The generation is the identity's incarnation across restarts (foca's own `Incarnation` is the
//! SWIM refutation counter inside one identity): a restarted node starts with a higher one, and
//! when the cluster declares a node down while it lives, `renew` bumps it so the node rejoins at
//! once instead of staying defunct (foca calls `renew` and announces the new identity).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GossipId {
    /// The cluster's node id (`Node::id`); empty only in the announce to a seed we know by address.
    pub node: String,
    pub addr: SocketAddr,
    pub generation: u64,
}

impl GossipId {
    pub fn new(node: impl Into<String>, addr: SocketAddr, generation: u64) -> GossipId {
        GossipId { node: node.into(), addr, generation }
    }

    /// The destination of an announce to a seed known by address only.
    pub(crate) fn seed(addr: SocketAddr) -> GossipId {
        GossipId { node: String::new(), addr, generation: 0 }
    }
}

impl foca::Identity for GossipId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(GossipId { node: self.node.clone(), addr: self.addr, generation: self.generation.wrapping_add(1) })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The newer process wins; at equal generations (two nodes configured with one address)
        // the order of node ids decides, so every member picks the same one.
        (self.generation, &self.node) > (adversary.generation, &adversary.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_identity_wins_over_the_old_one() {
        let a = GossipId::new("n1", "127.0.0.1:7946".parse().unwrap(), 5);
        let b = a.renew().unwrap();
        assert_eq!(b.generation, 6);
        assert_eq!(a.addr(), b.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }
}
