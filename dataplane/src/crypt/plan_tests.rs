//! The encryption planner against in-memory devices: the first pass builds everything, the
//! second is empty, one node leaving is one peer removal, and the fail-closed rules name every
//! encrypted VNI and nothing else.

use std::collections::BTreeSet;

use serde_json::json;

use super::key::PrivateKey;
use super::plan::*;
use crate::state::DesiredNode;

fn keys() -> Vec<PrivateKey> {
    (1..=3u8).map(|i| PrivateKey::from_bytes([i; 32])).collect()
}

fn state(node: usize, encrypted: bool) -> DesiredNode {
    let k = keys();
    let names = ["smgr", "snode1", "snode2"];
    let nodes: Vec<_> = (0..3)
        .map(|i| {
            json!({"name": names[i], "address": format!("192.168.33.{}", 10 * (i + 1)),
                        "wireguard": {"public_key": k[i].public_key(), "address": format!("10.254.0.{}", i + 1)}})
        })
        .collect();
    let mut secure = json!({"name": "secure", "vni": 4099, "subnet": "10.0.11.0/24"});
    if encrypted {
        secure["encrypted"] = json!("wireguard");
    }
    let s: DesiredNode = serde_json::from_value(json!({
        "node": names[node], "nodes": nodes,
        "wireguard_private_key": k[node].expose().to_base64(),
        "networks": [secure, {"name": "plain", "vni": 4097, "subnet": "10.0.9.0/24"}],
    }))
    .unwrap();
    s.validate().unwrap();
    s
}

/// Applies WireGuard operations to a device the way the kernel (or gotatun) would.
fn run(dev: &mut DeviceConfig, ops: &[WgOp]) {
    for op in ops {
        match op {
            WgOp::SetPrivateKey(k) => dev.private_key = Some(k.clone()),
            WgOp::SetPort(p) => dev.port = *p,
            WgOp::RemovePeer { key } => {
                dev.peers.remove(key);
            }
            WgOp::SetPeer { key, endpoint, address, psk, .. } => {
                let p = dev.peers.entry(*key).or_default();
                p.endpoint = Some(*endpoint);
                p.allowed_ips = BTreeSet::from([(*address, 32)]);
                p.psk = psk.clone();
            }
        }
    }
}

fn run_link(link: &mut LinkObserved, ops: &[LinkOp]) {
    for op in ops {
        match op {
            LinkOp::SetMtu(m) => link.mtu = *m,
            LinkOp::SetUp => link.up = true,
            LinkOp::AddAddr(a) => {
                link.addrs.insert((*a, 32));
            }
            LinkOp::DelAddr(a, p) => {
                link.addrs.remove(&(*a, *p));
            }
            LinkOp::AddRoute { dst, .. } => {
                link.routes.insert(*dst);
            }
            LinkOp::DelRoute(d) => {
                link.routes.remove(d);
            }
        }
    }
}

#[test]
fn nothing_encrypted_wants_no_tunnel() {
    assert_eq!(desired(&state(0, false)), None);
    assert!(FailClosed::from_state(&state(0, false)).is_empty());
}

#[test]
fn first_pass_builds_the_tunnel_and_the_second_is_empty() {
    let t = desired(&state(0, true)).unwrap();
    assert_eq!(t.address, "10.254.0.1".parse::<std::net::Ipv4Addr>().unwrap());
    assert_eq!(t.peers.len(), 2);
    let p = &t.peers[&keys()[1].public_key()];
    assert_eq!(
        (p.node.as_str(), p.endpoint.to_string(), p.address.to_string()),
        ("snode1", "192.168.33.20:51820".into(), "10.254.0.2".into())
    );
    let mut dev = DeviceConfig::default();
    let ops = plan_device(&t, &dev);
    assert_eq!(ops.len(), 4, "key, port, two peers: {ops:#?}");
    run(&mut dev, &ops);
    assert!(plan_device(&t, &dev).is_empty());

    let mut link = LinkObserved { mtu: 1500, ..Default::default() };
    let ops = plan_link(&t, 1440, &link);
    let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        text,
        [
            "set shw0 mtu 1440",
            "add address 10.254.0.1/32 dev shw0",
            "set shw0 up",
            "add route 10.254.0.2/32 dev shw0 src 10.254.0.1",
            "add route 10.254.0.3/32 dev shw0 src 10.254.0.1"
        ]
    );
    run_link(&mut link, &ops);
    assert!(plan_link(&t, 1440, &link).is_empty());
}

#[test]
fn a_node_leaving_is_one_peer_and_one_route_and_a_changed_endpoint_one_peer() {
    let s = state(0, true);
    let t = desired(&s).unwrap();
    let mut dev = DeviceConfig::default();
    let ops = plan_device(&t, &dev);
    run(&mut dev, &ops);
    let mut link = LinkObserved::default();
    let ops = plan_link(&t, 1440, &link);
    run_link(&mut link, &ops);

    let mut fewer = s.clone();
    fewer.nodes.retain(|n| n.name != "snode2");
    let t2 = desired(&fewer).unwrap();
    assert_eq!(plan_device(&t2, &dev), vec![WgOp::RemovePeer { key: keys()[2].public_key() }]);
    assert_eq!(plan_link(&t2, 1440, &link), vec![LinkOp::DelRoute("10.254.0.3".parse().unwrap())]);

    let mut moved = s.clone();
    moved.nodes[1].address = "192.168.33.21".parse().unwrap();
    let ops = plan_device(&desired(&moved).unwrap(), &dev);
    assert_eq!(ops.len(), 1);
    assert!(matches!(&ops[0], WgOp::SetPeer { endpoint, .. } if endpoint.to_string() == "192.168.33.21:51820"));
}

#[test]
fn the_private_key_never_shows_in_an_operation() {
    let t = desired(&state(0, true)).unwrap();
    let secret = keys()[0].expose().to_base64();
    for op in plan_device(&t, &DeviceConfig::default()) {
        assert!(!op.to_string().contains(&secret), "{op}");
        assert!(!format!("{op:?}").contains(&secret), "{op:?}");
    }
}

#[test]
fn fail_closed_rules_drop_only_encrypted_vnis_off_the_tunnel() {
    let f = FailClosed::from_state(&state(0, true));
    assert_eq!(f.vnis, BTreeSet::from([4099]));
    let script = nft_script(&f);
    assert!(
        script.contains("iifname != \"shw0\" udp dport 4789 @th,96,24 4099 drop comment \"shoal crypt v1 vni=4099 addr=10.254.0.1\""),
        "{script}"
    );
    assert!(script.contains("oifname != \"shw0\" udp dport 4789 @th,96,24 4099 drop"), "{script}");
    assert!(script.contains("oifname != { \"shw0\", \"lo\" } ip saddr 10.254.0.1 drop"), "{script}");
    assert!(!script.contains("4097"), "the plain network's VXLAN must pass: {script}");
    // Nothing encrypted: the table goes.
    assert_eq!(nft_script(&FailClosed::default()), format!("add table ip {TABLE}\ndelete table ip {TABLE}\n"));
}

#[test]
fn a_rotated_preshared_key_is_one_set_peer_per_peer_and_never_shows() {
    let mut s = state(0, true);
    let t = desired(&s).unwrap();
    let mut dev = DeviceConfig::default();
    let ops = plan_device(&t, &dev);
    run(&mut dev, &ops);
    let psk = crate::crypt::key::PrivateKey::from_bytes([42; 32]);
    s.nodes[1].wireguard.as_mut().unwrap().preshared_key = Some(psk.clone());
    let ops = plan_device(&desired(&s).unwrap(), &dev);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(matches!(&ops[0], WgOp::SetPeer { node, psk: Some(_), .. } if node == "snode1"));
    let secret = psk.expose().to_base64();
    assert!(!ops[0].to_string().contains(&secret) && !format!("{:?}", ops[0]).contains(&secret));
    run(&mut dev, &ops);
    assert!(plan_device(&desired(&s).unwrap(), &dev).is_empty(), "re-plan after the rotation is empty");
}

#[test]
fn ipsec_networks_are_fail_closed_on_both_ports_and_want_no_tunnel() {
    let mut s = state(0, true);
    s.networks[0].encrypted = Some(crate::state::Encryption::Ipsec);
    for (i, n) in s.nodes.iter_mut().enumerate().skip(1) {
        n.wireguard.as_mut().unwrap().preshared_key = Some(PrivateKey::from_bytes([40 + i as u8; 32]));
    }
    s.validate().unwrap();
    assert_eq!(desired(&s), None, "no WireGuard network: no tunnel");
    let f = FailClosed::from_state(&s);
    assert_eq!((f.vnis.len(), f.address, f.ipsec_vnis.clone()), (0, None, BTreeSet::from([4099])));
    let script = nft_script(&f);
    assert!(script.contains("udp dport 4789 @th,96,24 4099 drop comment \"shoal crypt v1 vni= addr= ipsec=4099\""), "{script}");
    assert!(script.contains("udp dport 4799 meta ipsec missing drop"), "plaintext on the IPsec port never arrives: {script}");
    assert!(script.contains("oifname != \"lo\" udp dport 4799 rt ipsec missing drop"), "nor leaves: {script}");
    assert!(!script.contains("4097"), "the plain network's VXLAN must pass: {script}");
    // A peer without its pair key is refused naming the field.
    s.nodes[1].wireguard.as_mut().unwrap().preshared_key = None;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("nodes[1].wireguard.preshared_key: network 'secure' is encrypted with IPsec"), "{e}");
}
