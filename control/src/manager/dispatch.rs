//! The manager as the dispatcher sessions' [`Leader`].

use super::{Manager, ManagerError};
use crate::dispatcher::{Leader, Liveness, Sessions, ViewCache};
use crate::logs::broker::Broker;
use crate::state::Command;
use crate::store::SharedState;
use std::sync::Arc;
use tokio::sync::watch;

impl Leader for Manager {
    type ProposeError = ManagerError;

    fn is_leader(&self) -> bool {
        Manager::is_leader(self)
    }

    fn leader_addr(&self) -> Option<String> {
        Manager::leader_addr(self)
    }

    fn managers(&self) -> (Vec<String>, Vec<crate::model::NodeId>) {
        (self.manager_addrs(), self.manager_ids())
    }

    fn voters(&self) -> Vec<u64> {
        self.raft().metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    fn shared(&self) -> Arc<SharedState> {
        Manager::shared(self)
    }

    fn liveness(&self) -> &Liveness {
        Manager::liveness(self)
    }

    fn sessions(&self) -> &Sessions {
        Manager::sessions(self)
    }

    fn views(&self) -> &ViewCache {
        Manager::views(self)
    }

    fn logs(&self) -> &Broker {
        Manager::logs(self)
    }

    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        Manager::shutdown_signal(self)
    }

    async fn propose(&self, cmd: Command) -> Result<(), ManagerError> {
        Manager::propose(self, cmd).await.map(|_| ())
    }
}
