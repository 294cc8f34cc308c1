//! The node's gossip member (SWIM on UDP 7946, `crate::gossip`): started once the node has
//! joined and its dispatcher session brought the cluster's gossip key ring, bound to the node's
//! advertise address, with the other nodes of the view as seeds. It follows the view: the key
//! ring's rotation steps, and a join when the view brings nodes gossip does not know. What it
//! sees is published on the node's member list (the agent and the manager read it there).
//!
//! `plan` is the pure step from (view, what runs, what gossip sees) to actions; `run` carries
//! them out.

use crate::gossip::udp::{Gossip, GossipOptions};
use crate::gossip::{GossipConfig, GossipError, GossipKey, MemberInfo};
use crate::rpc::session::GossipView;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Swarm's gossip port (memberlist's default), kept off tasks by the agent's port guard.
pub const GOSSIP_PORT: u16 = 7946;

/// How often the node looks again for view nodes gossip has not found (a seed that was down).
const REJOIN_EVERY: Duration = Duration::from_secs(5);

/// What the running member holds, as far as the planner needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Running {
    pub keys: BTreeSet<u32>,
    pub sending: u32,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    InstallKey(u32, String),
    UseKey(u32),
    RetireKey(u32),
    /// Announce to these nodes (id, gossip address): the view has them and gossip does not.
    Join(Vec<(String, SocketAddr)>),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::InstallKey(id, _) => write!(f, "InstallKey({id})"),
            Step::UseKey(id) => write!(f, "UseKey({id})"),
            Step::RetireKey(id) => write!(f, "RetireKey({id})"),
            Step::Join(seeds) => write!(f, "Join({seeds:?})"),
        }
    }
}

/// The gossip address of a node of the view (its underlay address, port 7946); `None` when the
/// address is not an IP (the node then cannot be a seed).
pub fn gossip_addr(addr: &str, port: u16) -> Option<SocketAddr> {
    addr.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port))
}

/// The steps that bring the running member to `view`, in the order a rotation needs: new keys
/// installed, then sending switched, then old keys retired; then a join to every other node of
/// the view that gossip does not list (alive or not: a down one is announced to by gossip itself).
pub fn plan(view: &GossipView, me: &str, port: u16, running: &Running, members: &[MemberInfo]) -> Vec<Step> {
    let mut steps = Vec::new();
    for (id, key) in view.keys.iter().filter(|(id, _)| !running.keys.contains(id)) {
        steps.push(Step::InstallKey(*id, key.clone()));
    }
    if view.sending != running.sending && view.keys.contains_key(&view.sending) {
        steps.push(Step::UseKey(view.sending));
    }
    for id in running.keys.iter().filter(|id| !view.keys.contains_key(id) && **id != view.sending) {
        steps.push(Step::RetireKey(*id));
    }
    let known: BTreeSet<&str> = members.iter().map(|m| m.node.as_str()).collect();
    let seeds: Vec<(String, SocketAddr)> = view
        .nodes
        .iter()
        .filter(|(id, _)| id.as_str() != me && !known.contains(id.as_str()))
        .filter_map(|(id, addr)| Some((id.to_string(), gossip_addr(addr, port)?)))
        .collect();
    if !seeds.is_empty() {
        steps.push(Step::Join(seeds));
    }
    steps
}

/// Who this node is on the gossip network.
#[derive(Clone, Debug)]
pub struct GossipParams {
    pub node_id: crate::model::NodeId,
    /// The node's advertise address (its underlay IP).
    pub addr: String,
    pub port: u16,
}

/// Start gossip once the view has a key ring, follow the view until `stop`, publishing the
/// member list on `members` (empty while gossip does not run).
pub async fn run(
    params: GossipParams,
    mut view: watch::Receiver<Arc<super::ViewSnapshot>>,
    members: watch::Sender<Arc<Vec<MemberInfo>>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(ip) = params.addr.parse::<IpAddr>().ok() else {
        tracing::warn!(addr = %params.addr, "gossip: the node's advertise address is not an IP: gossip does not run on this node");
        return;
    };
    let bind = SocketAddr::new(ip, params.port);
    // Wait for the first key ring, then start; a failed start (the port taken) is retried.
    let (gossip, mut running) = loop {
        let ring = view.borrow().view.gossip.clone();
        if let Some(ring) = ring {
            match start(&params, bind, &ring, stop.clone()).await {
                Ok(started) => break started,
                Err(e) => tracing::warn!(node = %params.node_id, %bind, "gossip: not started, retrying in 5 s: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REJOIN_EVERY) => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    };
    let mut seen = gossip.members();
    members.send_replace(seen.borrow().clone());
    let mut rejoin = tokio::time::interval(REJOIN_EVERY);
    loop {
        let ring = view.borrow().view.gossip.clone();
        if let Some(ring) = ring {
            let list = seen.borrow().clone();
            for step in plan(&ring, &params.node_id, params.port, &running, &list) {
                if let Err(e) = carry_out(&gossip, &mut running, &step).await {
                    tracing::warn!(node = %params.node_id, ?step, "gossip: {e}");
                }
            }
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { break },
            r = seen.changed() => {
                if r.is_err() { break }
                members.send_replace(seen.borrow_and_update().clone());
            }
            _ = rejoin.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // The driver saw the same stop signal and leaves the cluster (members mark this node down
    // at once); wait for its goodbye to go out.
    gossip.stopped().await;
    members.send_replace(Arc::new(Vec::new()));
}

async fn start(
    params: &GossipParams,
    bind: SocketAddr,
    ring: &GossipView,
    stop: watch::Receiver<bool>,
) -> Result<(Gossip, Running), GossipError> {
    let text = ring
        .keys
        .get(&ring.sending)
        .ok_or(GossipError::UnknownKeyId { id: ring.sending, installed: ring.keys.keys().copied().collect() })?;
    let key = GossipKey::from_base64(ring.sending, text)?;
    let seeds: Vec<SocketAddr> =
        ring.nodes.iter().filter(|(id, _)| **id != params.node_id).filter_map(|(_, addr)| gossip_addr(addr, params.port)).collect();
    let expected = u32::try_from(ring.nodes.len()).unwrap_or(u32::MAX);
    let opts = GossipOptions::new(params.node_id.clone(), bind, key).seeds(seeds.clone()).config(GossipConfig::lan(expected));
    let gossip = Gossip::start(opts, stop).await?;
    tracing::info!(node = %params.node_id, %bind, seeds = ?seeds, generation = gossip.identity().generation, "gossip: member started");
    Ok((gossip, Running { keys: BTreeSet::from([ring.sending]), sending: ring.sending }))
}

async fn carry_out(gossip: &Gossip, running: &mut Running, step: &Step) -> Result<(), GossipError> {
    match step {
        Step::InstallKey(id, text) => {
            gossip.install_key(GossipKey::from_base64(*id, text)?).await?;
            running.keys.insert(*id);
            tracing::info!(key = id, "gossip: key installed");
        }
        Step::UseKey(id) => {
            gossip.use_key(*id).await?;
            running.sending = *id;
            tracing::info!(key = id, "gossip: sending under the new key");
        }
        Step::RetireKey(id) => {
            gossip.retire_key(*id).await?;
            running.keys.remove(id);
            tracing::info!(key = id, "gossip: key retired");
        }
        Step::Join(seeds) => {
            tracing::debug!(?seeds, "gossip: announcing to nodes it does not know yet");
            gossip.join(seeds.iter().map(|(_, a)| *a).collect()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::Status;

    fn ring(sending: u32, keys: &[u32], nodes: &[(&str, &str)]) -> GossipView {
        GossipView {
            sending,
            keys: keys.iter().map(|id| (*id, format!("key{id}"))).collect(),
            nodes: nodes.iter().map(|(id, a)| (crate::model::NodeId::from(id.to_string()), a.to_string())).collect(),
        }
    }

    fn member(node: &str) -> MemberInfo {
        MemberInfo { node: node.into(), addr: "10.0.0.9:7946".parse().unwrap(), generation: 1, status: Status::Alive }
    }

    fn running(sending: u32, keys: &[u32]) -> Running {
        Running { keys: keys.iter().copied().collect(), sending }
    }

    #[test]
    fn a_rotation_is_followed_in_its_three_steps_and_a_steady_view_plans_nothing() {
        let nodes = [("n1", "10.0.0.1"), ("n2", "10.0.0.2")];
        let all = [member("n1"), member("n2")];
        assert!(plan(&ring(1, &[1], &nodes), "n1", 7946, &running(1, &[1]), &all).is_empty());
        let s = plan(&ring(1, &[1, 2], &nodes), "n1", 7946, &running(1, &[1]), &all);
        assert_eq!(s, vec![Step::InstallKey(2, "key2".into())], "step 1: install only");
        let s = plan(&ring(2, &[1, 2], &nodes), "n1", 7946, &running(1, &[1, 2]), &all);
        assert_eq!(s, vec![Step::UseKey(2)]);
        let s = plan(&ring(2, &[2], &nodes), "n1", 7946, &running(2, &[1, 2]), &all);
        assert_eq!(s, vec![Step::RetireKey(1)]);
        // A node that missed steps (its session was down) catches up in the safe order.
        let s = plan(&ring(2, &[2], &nodes), "n1", 7946, &running(1, &[1]), &all);
        assert_eq!(s, vec![Step::InstallKey(2, "key2".into()), Step::UseKey(2), Step::RetireKey(1)]);
    }

    #[test]
    fn nodes_of_the_view_that_gossip_does_not_list_are_joined() {
        let nodes = [("n1", "10.0.0.1"), ("n2", "10.0.0.2"), ("n3", "10.0.0.3"), ("bad", "not-an-ip")];
        let s = plan(&ring(1, &[1], &nodes), "n1", 7946, &running(1, &[1]), &[member("n1"), member("n2")]);
        assert_eq!(s, vec![Step::Join(vec![("n3".into(), "10.0.0.3:7946".parse().unwrap())])]);
        assert!(!format!("{:?}", Step::InstallKey(1, "secret".into())).contains("secret"));
    }
}
