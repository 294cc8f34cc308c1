//! The managers' part in gossip: the leader issues and rotates the cluster's gossip key
//! (`state::gossip` says when; the key comes from the OS's random source here), and each
//! manager holds what gossip on its own node sees, for the liveness decision and `node ls`.

use super::Manager;
use crate::gossip::core::newest_per_node;
use crate::gossip::{MemberInfo, Status};
use crate::state::gossip::GossipKeyStep;
use crate::state::Command;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often the leader looks at the key ring's schedule (steps are 30 s apart at the least).
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub async fn issue_loop(mgr: Manager) {
    let mut shutdown = mgr.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        if !mgr.is_leader() {
            continue;
        }
        let Some(step) = mgr.shared().read(|s| s.gossip_key_step(super::now_ms())) else { continue };
        let cmd = command_for(step);
        match mgr.propose_as_leader(cmd).await {
            Ok((Ok(_), _)) => tracing::info!(?step, "gossip key ring: step done"),
            Ok((Err(e), _)) => tracing::warn!(?step, "gossip key ring: {e}"),
            Err(e) => tracing::warn!(?step, "gossip key ring: proposing: {e}"),
        }
    }
}

/// The command that carries out `step`; a new key is drawn here, never in the state machine.
pub fn command_for(step: GossipKeyStep) -> Command {
    match step {
        GossipKeyStep::Install => {
            Command::InstallGossipKey { key: base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()) }
        }
        GossipKeyStep::Use(id) => Command::UseGossipKey { id },
        GossipKeyStep::Retire(id) => Command::RetireGossipKey { id },
    }
}

/// What gossip on this manager's node sees: attached by the node once gossip runs.
#[derive(Default)]
pub struct GossipSeen {
    members: Mutex<Option<watch::Receiver<Arc<Vec<MemberInfo>>>>>,
}

impl GossipSeen {
    pub fn attach(&self, members: watch::Receiver<Arc<Vec<MemberInfo>>>) {
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = Some(members);
    }

    pub fn detach(&self) {
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Each node's status by node id; `None` while gossip does not run on this node.
    pub fn statuses(&self) -> Option<BTreeMap<String, Status>> {
        let g = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let list = g.as_ref()?.borrow().clone();
        Some(newest_per_node(&list).into_iter().map(|(n, m)| (n.to_string(), m.status)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_becomes_its_command_with_a_fresh_key() {
        let (Command::InstallGossipKey { key: a }, Command::InstallGossipKey { key: b }) =
            (command_for(GossipKeyStep::Install), command_for(GossipKeyStep::Install))
        else {
            panic!("install makes an InstallGossipKey")
        };
        assert_ne!(a, b);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&a).unwrap().len(), 32);
        assert_eq!(command_for(GossipKeyStep::Use(2)), Command::UseGossipKey { id: 2 });
        assert_eq!(command_for(GossipKeyStep::Retire(1)), Command::RetireGossipKey { id: 1 });
    }

    #[test]
    fn the_newest_generation_speaks_for_a_node() {
        let m =
            |node: &str, generation, status| MemberInfo { node: node.into(), addr: "10.0.0.1:7946".parse().unwrap(), generation, status };
        let seen = GossipSeen::default();
        assert_eq!(seen.statuses(), None, "no gossip: nothing known");
        let (tx, rx) = watch::channel(Arc::new(vec![m("a", 5, Status::Down), m("a", 9, Status::Alive), m("b", 1, Status::Suspect)]));
        seen.attach(rx);
        let s = seen.statuses().unwrap();
        assert_eq!(s["a"], Status::Alive, "the restarted node, not its former self");
        assert_eq!(s["b"], Status::Suspect);
        tx.send_replace(Arc::new(vec![m("a", 9, Status::Down)]));
        assert_eq!(seen.statuses().unwrap()["a"], Status::Down);
    }
}
