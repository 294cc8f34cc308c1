//! The membership core on the in-memory network (`sim.rs`): virtual time, set loss and latency,
//! deterministic for a seed. Bounds are from `GossipConfig::lan`: probe 300 ms, suspicion 0.5-5 s.

use super::config::GossipConfig;
use super::core::{MemberEvent, Status};
use super::seal::{GossipKey, Keyring};
use super::sim::{addr_of, NetConfig, Sim};
use std::time::Duration;

fn key(id: u32) -> GossipKey {
    GossipKey::from_bytes(id, &[id as u8; 32])
}

/// `n` nodes on key 1, each joined through node 0, run until every one sees all `n` alive.
fn cluster(n: usize, net: NetConfig, seed: u64) -> Sim {
    let mut sim = Sim::new(net, seed);
    for _ in 0..n {
        sim.add_node(GossipConfig::lan(n as u32), Keyring::new(key(1)));
    }
    for i in 1..n {
        sim.join(i, &[0]);
    }
    let converged = sim.run_until_true(Duration::from_secs(60), |s| (0..n).all(|i| alive_seen(s, i) == n));
    assert!(converged, "{n} nodes did not converge in 60 s: {:?}", (0..n).map(|i| alive_seen(&sim, i)).collect::<Vec<_>>());
    sim
}

/// How many members (itself included) node `i` sees alive.
fn alive_seen(sim: &Sim, i: usize) -> usize {
    sim.core(i).map_or(0, |c| c.members().iter().filter(|m| m.status == Status::Alive).count())
}

fn status_at(sim: &Sim, observer: usize, node: usize) -> Option<Status> {
    let name = sim.name(node).to_string();
    sim.core(observer)?.members().into_iter().find(|m| m.node == name).map(|m| m.status)
}

fn downs_of(sim: &Sim, node: usize) -> Vec<(Duration, usize)> {
    let name = sim.name(node);
    sim.events()
        .iter()
        .filter_map(|e| match &e.event {
            MemberEvent::Down(m) if m.node == name => Some((e.at, e.observer)),
            _ => None,
        })
        .collect()
}

fn any_down(sim: &Sim) -> Vec<String> {
    sim.events().iter().filter(|e| matches!(e.event, MemberEvent::Down(_))).map(|e| format!("{} saw {:?}", e.observer, e.event)).collect()
}

#[test]
fn a_cluster_converges_and_stays_up_under_loss() {
    let mut sim = cluster(12, NetConfig { loss: 0.05, ..NetConfig::default() }, 1);
    sim.run_for(Duration::from_secs(120));
    assert!(any_down(&sim).is_empty(), "false positives at 5% loss: {:?}", any_down(&sim));
    for i in 0..12 {
        assert_eq!(alive_seen(&sim, i), 12, "node {i}");
    }
}

#[test]
fn a_dead_node_is_declared_down_within_bounds() {
    let n = 16;
    let mut sim = cluster(n, NetConfig { loss: 0.05, ..NetConfig::default() }, 2);
    let dead = 5;
    let t0 = sim.elapsed();
    sim.stop(dead);
    let all = sim.run_until_true(Duration::from_secs(30), |s| downs_of(s, dead).len() == n - 1);
    assert!(all, "only {:?} saw node{dead} down", downs_of(&sim, dead));
    let last = downs_of(&sim, dead).iter().map(|(at, _)| *at - t0).max().unwrap();
    let first = downs_of(&sim, dead).iter().map(|(at, _)| *at - t0).min().unwrap();
    // Probed within a few periods, suspicion at most 5 s (less once others confirm), then spread.
    assert!(last <= Duration::from_secs(8), "last observer saw it down after {last:?}");
    assert!(first >= Duration::from_millis(500), "down after {first:?}: faster than suspicion allows");
    assert_eq!(downs_of(&sim, dead).len(), n - 1, "each observer reports it once");
    assert_eq!(any_down(&sim).len(), n - 1, "nobody else went down: {:?}", any_down(&sim));
}

#[test]
fn a_suspected_live_node_refutes() {
    let n = 10;
    let mut sim = cluster(n, NetConfig::default(), 3);
    let victim = 4;
    // Cut the victim off long enough to fail probes, short of any suspicion timeout.
    for j in (0..n).filter(|&j| j != victim) {
        sim.cut(victim, j);
    }
    let suspected =
        sim.run_until_true(Duration::from_secs(3), |s| (0..n).any(|o| o != victim && status_at(s, o, victim) == Some(Status::Suspect)));
    assert!(suspected, "nobody suspected the cut-off node");
    for j in 0..n {
        sim.heal(victim, j);
    }
    let refuted = sim.run_until_true(Duration::from_secs(10), |s| (0..n).all(|o| status_at(s, o, victim) == Some(Status::Alive)));
    assert!(refuted, "suspicion not refuted: {:?}", (0..n).map(|o| status_at(&sim, o, victim)).collect::<Vec<_>>());
    sim.run_for(Duration::from_secs(10));
    assert!(downs_of(&sim, victim).is_empty(), "declared down although it refuted: {:?}", downs_of(&sim, victim));
    let gen = sim.core(victim).unwrap().identity().generation;
    assert_eq!(gen, 1, "refuted in place, no new generation needed");
}

#[test]
fn a_node_that_comes_back_rejoins() {
    let n = 8;
    let mut sim = cluster(n, NetConfig { loss: 0.02, ..NetConfig::default() }, 4);
    let node = 3;
    sim.stop(node);
    assert!(sim.run_until_true(Duration::from_secs(30), |s| downs_of(s, node).len() == n - 1));
    sim.restart(node, &[0]);
    let back = sim.run_until_true(Duration::from_secs(30), |s| (0..n).all(|o| status_at(s, o, node) == Some(Status::Alive)));
    assert!(back, "restarted node not alive everywhere");
    let rejoined: Vec<usize> = sim
        .events()
        .iter()
        .filter(|e| matches!(&e.event, MemberEvent::Rejoined(m) if m.node == sim.name(node) && m.generation == 2))
        .map(|e| e.observer)
        .collect();
    assert_eq!(rejoined.len(), n - 1, "every other node reports the rejoin once: {rejoined:?}");
    assert_eq!(alive_seen(&sim, node), n, "the restarted node sees everyone");
}

#[test]
fn a_partitioned_node_rejoins_when_the_partition_heals() {
    let n = 6;
    let mut sim = cluster(n, NetConfig::default(), 5);
    let node = 2;
    for j in (0..n).filter(|&j| j != node) {
        sim.cut(node, j);
    }
    assert!(sim.run_until_true(Duration::from_secs(30), |s| downs_of(s, node).len() == n - 1), "partitioned node not declared down");
    for j in 0..n {
        sim.heal(node, j);
    }
    // Announces to down members (every 15 s) bring both sides back together.
    let back = sim
        .run_until_true(Duration::from_secs(60), |s| (0..n).all(|o| status_at(s, o, node) == Some(Status::Alive) && alive_seen(s, o) == n));
    assert!(back, "after healing: {:?}", (0..n).map(|o| alive_seen(&sim, o)).collect::<Vec<_>>());
    assert!(sim.core(node).unwrap().identity().generation > 1, "it rejoined as a new generation");
}

#[test]
fn datagrams_under_an_unknown_or_retired_key_are_dropped() {
    let n = 4;
    let mut sim = cluster(n, NetConfig::default(), 6);
    // A node with another key cannot join.
    let outsider = sim.add_node(GossipConfig::lan(4), Keyring::new(key(9)));
    sim.join(outsider, &[0, 1]);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(alive_seen(&sim, outsider), 1, "the outsider learned nobody");
    assert!((0..n).all(|i| alive_seen(&sim, i) == n), "the outsider joined nobody");
    assert!(sim.core(0).unwrap().stats().dropped_unknown_key > 0);
    // Rotate the cluster to key 2 and retire key 1: a node left on key 1 is dropped.
    for i in 0..n {
        sim.with_core(i, |c, _| c.install_key(key(2)).unwrap());
    }
    for i in 0..n {
        sim.with_core(i, |c, _| c.use_key(2).unwrap());
    }
    for i in 0..n {
        sim.with_core(i, |c, _| c.retire_key(1).unwrap());
    }
    let stale = sim.add_node(GossipConfig::lan(4), Keyring::new(key(1)));
    sim.join(stale, &[0]);
    let before = sim.core(0).unwrap().stats().dropped_unknown_key;
    sim.run_for(Duration::from_secs(5));
    assert!(sim.core(0).unwrap().stats().dropped_unknown_key > before);
    assert_eq!(alive_seen(&sim, stale), 1);
    // Garbage and forged datagrams are refused without harm.
    sim.inject(0, addr_of(99), vec![1, 2, 3]);
    sim.inject(0, addr_of(99), vec![0; 100]);
    let forged = Keyring::new(GossipKey::from_bytes(2, &[7; 32]))
        .seal(b"not foca", &mut <rand10::rngs::StdRng as rand10::SeedableRng>::seed_from_u64(1));
    sim.inject(0, addr_of(99), forged);
    let sealed_garbage = Keyring::new(key(2)).seal(&[0xff; 64], &mut <rand10::rngs::StdRng as rand10::SeedableRng>::seed_from_u64(2));
    sim.inject(0, addr_of(99), sealed_garbage);
    sim.run_for(Duration::from_secs(2));
    let stats = sim.core(0).unwrap().stats().clone();
    assert!(stats.dropped_malformed >= 2 && stats.dropped_forged >= 1 && stats.refused >= 1, "{stats:?}");
    assert!((0..n).all(|i| alive_seen(&sim, i) == n));
}

#[test]
fn a_key_rotation_loses_no_member() {
    let n = 10;
    let mut sim = cluster(n, NetConfig { loss: 0.05, ..NetConfig::default() }, 7);
    // Each step reaches the nodes one by one, with gossip in between, as the managers' pushes would.
    for i in 0..n {
        sim.with_core(i, |c, _| c.install_key(key(2)).unwrap());
        sim.run_for(Duration::from_millis(300));
    }
    for i in 0..n {
        sim.with_core(i, |c, _| c.use_key(2).unwrap());
        sim.run_for(Duration::from_millis(300));
    }
    sim.run_for(Duration::from_secs(2));
    for i in 0..n {
        sim.with_core(i, |c, _| c.retire_key(1).unwrap());
        sim.run_for(Duration::from_millis(300));
    }
    sim.run_for(Duration::from_secs(20));
    assert!(any_down(&sim).is_empty(), "lost during rotation: {:?}", any_down(&sim));
    for i in 0..n {
        assert_eq!(alive_seen(&sim, i), n, "node {i}");
        assert_eq!(sim.core(i).unwrap().keyring().ids(), vec![2]);
        assert_eq!(sim.core(i).unwrap().stats().dropped_unknown_key, 0, "node {i} dropped a datagram during the rotation");
    }
}

#[test]
fn local_health_stretches_when_own_probes_fail_and_recovers() {
    let n = 6;
    let mut sim = cluster(n, NetConfig::default(), 8);
    let node = 1;
    for j in (0..n).filter(|&j| j != node) {
        sim.cut(node, j);
    }
    sim.run_for(Duration::from_secs(2));
    let score = sim.core(node).unwrap().health_score();
    assert!(score >= 1, "failed probes raised no health score");
    for j in 0..n {
        sim.heal(node, j);
    }
    assert!(sim.run_until_true(Duration::from_secs(120), |s| s.core(node).unwrap().health_score() == 0), "health never recovered");
}
