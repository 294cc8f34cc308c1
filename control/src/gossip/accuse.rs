//! Accusations: "`accuser`'s probe of `target` (at SWIM incarnation `incarnation`) failed",
//! spread as foca custom broadcasts. foca's member updates carry no accuser, so without these a
//! node cannot tell an independent confirmation from the same rumour relayed; Lifeguard's
//! shrinking suspicion timeout counts only independent ones.

use super::identity::GossipId;
use foca::{BroadcastHandler, Incarnation, Invalidates};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Accusation {
    pub target: GossipId,
    pub incarnation: Incarnation,
    pub accuser: String,
}

impl Accusation {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// foca keeps one pending broadcast per key; an accusation is its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccusationKey(Accusation);

impl Invalidates for AccusationKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable accusation: {0}")]
pub struct AccusationError(postcard::Error);

/// Remembers recent accusations (so each is relayed once) and hands new ones to the core.
pub struct AccusationHandler {
    seen: HashSet<Accusation>,
    order: VecDeque<Accusation>,
    inbox: Arc<Mutex<Vec<Accusation>>>,
}

/// How many accusations a node remembers to avoid relaying one twice: far more than can be in
/// flight (each lives for `max_transmissions` sends).
const REMEMBER: usize = 4096;

impl AccusationHandler {
    pub fn new(inbox: Arc<Mutex<Vec<Accusation>>>) -> AccusationHandler {
        AccusationHandler { seen: HashSet::new(), order: VecDeque::new(), inbox }
    }
}

impl BroadcastHandler<GossipId> for AccusationHandler {
    type Key = AccusationKey;
    type Error = AccusationError;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&GossipId>) -> Result<Option<AccusationKey>, AccusationError> {
        let acc: Accusation = postcard::from_bytes(data).map_err(AccusationError)?;
        if !self.seen.insert(acc.clone()) {
            return Ok(None);
        }
        self.order.push_back(acc.clone());
        if self.order.len() > REMEMBER {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        // A poisoned lock means the core panicked already; dropping one accusation is harmless.
        if let Ok(mut inbox) = self.inbox.lock() {
            inbox.push(acc.clone());
        }
        Ok(Some(AccusationKey(acc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_accusation_is_taken_once_and_garbage_is_an_error() {
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let mut h = AccusationHandler::new(inbox.clone());
        let acc = Accusation { target: GossipId::new("x", "127.0.0.1:1".parse().unwrap(), 1), incarnation: 2, accuser: "a".into() };
        assert!(h.receive_item(&acc.encode(), None).unwrap().is_some());
        assert!(h.receive_item(&acc.encode(), None).unwrap().is_none());
        assert_eq!(inbox.lock().unwrap().as_slice(), &[acc]);
        assert!(h.receive_item(&[0xff, 0xff, 0xff], None).is_err());
    }
}
