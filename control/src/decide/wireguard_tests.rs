//! WireGuard identities and pair keys through commands (`state/wireguard.rs`).

use crate::model::{generate_private_key, NetworkSpec};
use crate::state::Command;
use crate::testkit::World;

fn encrypted(w: &mut World, name: &str) {
    let mut spec = NetworkSpec { name: name.into(), driver: "overlay".into(), ..Default::default() };
    spec.options.insert("encrypted".into(), String::new());
    w.ok(Command::CreateNetwork { spec });
}

#[test]
fn identities_are_wanted_only_once_a_network_is_encrypted_and_get_distinct_addresses() {
    let mut w = World::new(3);
    assert!(w.state.nodes_missing_wireguard().is_empty(), "no encrypted network: no keys");
    encrypted(&mut w, "secure");
    let missing = w.state.nodes_missing_wireguard();
    assert_eq!(missing.len(), 4);
    for n in &missing {
        w.ok(Command::IssueWireGuard { node: n.clone(), private_key: generate_private_key() });
    }
    assert!(w.state.nodes_missing_wireguard().is_empty());
    let mut addrs: Vec<_> = w.state.wireguard.values().map(|i| i.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 4);
    assert_eq!(addrs[0], "10.255.0.1".parse::<std::net::Ipv4Addr>().unwrap());
}

#[test]
fn reissue_keeps_the_address_and_bad_or_shared_keys_change_nothing() {
    let mut w = World::new(1);
    encrypted(&mut w, "secure");
    let key = generate_private_key();
    w.ok(Command::IssueWireGuard { node: "n1".into(), private_key: key.clone() });
    let first = w.state.wireguard["n1"].clone();
    w.ok(Command::IssueWireGuard { node: "n1".into(), private_key: generate_private_key() });
    let second = w.state.wireguard["n1"].clone();
    assert_eq!(first.address, second.address);
    assert_ne!(first.public_key, second.public_key);
    let before = w.state.clone();
    let err = w.apply(Command::IssueWireGuard { node: "n2".into(), private_key: "nope".into() }).unwrap_err().to_string();
    assert!(err.contains("private_key") && err.contains("not a WireGuard key"), "{err}");
    let err = w.apply(Command::IssueWireGuard { node: "n2".into(), private_key: second.private_key.clone() }).unwrap_err().to_string();
    assert!(err.contains("another node has this key"), "{err}");
    let err = w.apply(Command::IssueWireGuard { node: "ghost".into(), private_key: key }).unwrap_err().to_string();
    assert!(err.contains("ghost"), "{err}");
    assert_eq!(w.state, before);
}

#[test]
fn pair_keys_are_due_first_then_every_12_hours_and_on_request() {
    let mut w = World::new(1);
    assert!(!w.state.pair_keys_due(w.now));
    let err = w.apply(Command::RequestKeyRotation).unwrap_err().to_string();
    assert!(err.contains("no network is encrypted"), "{err}");
    encrypted(&mut w, "secure");
    assert!(w.state.pair_keys_due(w.now));
    w.ok(Command::RotatePairKeys { seed: crate::model::generate_seed() });
    let first = w.state.pair_keys.clone().unwrap();
    assert_eq!(first.generation, 1);
    assert!(!w.state.pair_keys_due(w.now));
    assert!(w.state.pair_keys_due(first.issued_ms + crate::model::PAIR_KEY_ROTATION_MS));
    w.ok(Command::RequestKeyRotation);
    assert!(w.state.pair_keys_due(w.now));
    w.ok(Command::RotatePairKeys { seed: crate::model::generate_seed() });
    assert_eq!(w.state.pair_keys.as_ref().unwrap().generation, 2);
    assert!(!w.state.pair_keys_due(w.now));
    let before = w.state.clone();
    let err = w.apply(Command::RotatePairKeys { seed: "c2hvcnQ=".into() }).unwrap_err().to_string();
    assert!(err.contains("seed") && err.contains("want 32"), "{err}");
    assert_eq!(w.state, before);
}

#[test]
fn a_removed_node_loses_its_identity() {
    let mut w = World::new(1);
    encrypted(&mut w, "secure");
    w.ok(Command::IssueWireGuard { node: "n2".into(), private_key: generate_private_key() });
    w.ok(Command::SetNodeState { node: "n2".into(), state: crate::model::NodeState::Down, message: String::new() });
    w.ok(Command::RemoveNode { node: "n2".into(), force: false });
    assert!(!w.state.wireguard.contains_key("n2"));
}
