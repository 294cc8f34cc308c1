//! The IPsec planner against an in-memory XFRM table: the first pass builds every SA and policy
//! and the second is empty, a rotation goes inbound first, then outbound, then retires the old
//! generation without a moment where a sender uses an SPI its receiver lacks, a node leaving is
//! its SAs and policies, and nothing encrypted with IPsec leaves nothing of ours.

use std::net::Ipv4Addr;

use serde_json::json;

use super::plan::*;
use crate::crypt::key::PrivateKey;
use crate::state::DesiredNode;

const NAMES: [&str; 3] = ["smgr", "snode1", "snode2"];

fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 33, 10 * (i as u8 + 1))
}

/// The pair key of nodes `a` and `b` at generation `g` (the same from either side).
fn pair(a: usize, b: usize, g: u8) -> PrivateKey {
    PrivateKey::from_bytes([(a.min(b) * 16 + a.max(b)) as u8 + 100 * g; 32])
}

/// Node `me`'s desired state, with an IPsec network (or a WireGuard one) beside a plain one.
fn state(me: usize, backend: &str, generation: impl Fn(usize, usize) -> u8) -> DesiredNode {
    let keys: Vec<PrivateKey> = (1..=3u8).map(|i| PrivateKey::from_bytes([i; 32])).collect();
    let nodes: Vec<_> = (0..3)
        .map(|i| {
            let mut wg = json!({"public_key": keys[i].public_key(), "address": format!("10.254.0.{}", i + 1)});
            if i != me {
                wg["preshared_key"] = json!(pair(me, i, generation(me, i)).expose().to_base64());
            }
            json!({"name": NAMES[i], "address": addr(i).to_string(), "wireguard": wg})
        })
        .collect();
    let s: DesiredNode = serde_json::from_value(json!({
        "node": NAMES[me], "nodes": nodes,
        "wireguard_private_key": keys[me].expose().to_base64(),
        "networks": [{"name": "secure", "vni": 4099, "subnet": "10.0.11.0/24", "encrypted": backend},
                     {"name": "plain", "vni": 4097, "subnet": "10.0.9.0/24"}],
    }))
    .unwrap();
    s.validate().unwrap();
    s
}

fn ipsec(me: usize) -> DesiredNode {
    state(me, "ipsec", |_, _| 1)
}

/// Carries out `ops` on an in-memory kernel at `now`, as the kernel would.
fn run(k: &mut Observed, ops: &[XfrmOp], now: u64) {
    for op in ops {
        match op {
            XfrmOp::AddSa { sa, .. } => {
                assert!(!k.sas.iter().any(|s| (s.dst, s.spi) == (sa.dst, sa.spi)), "the kernel refuses a duplicate SA: {op}");
                k.sas.push(SaSeen { src: sa.src, dst: sa.dst, spi: sa.spi, added: now });
            }
            XfrmOp::DelSa { src, dst, spi } => {
                let before = k.sas.len();
                k.sas.retain(|s| (s.src, s.dst, s.spi) != (*src, *dst, *spi));
                assert_eq!(k.sas.len(), before - 1, "deleting an SA that is not there: {op}");
            }
            XfrmOp::SetPolicy(p) => {
                k.policies.insert(*p);
            }
            XfrmOp::DelPolicy(p) => assert!(k.policies.remove(p), "{op}"),
        }
    }
}

fn pass(s: &DesiredNode, k: &mut Observed, now: u64) -> Plan {
    let want = desired(s).unwrap();
    let p = plan(want.as_ref(), k, now);
    run(k, &p.ops, now);
    p
}

#[test]
fn first_pass_adds_two_sas_and_two_policies_per_peer_and_the_second_is_empty() {
    let mut k = Observed::default();
    let p = pass(&ipsec(0), &mut k, 1000);
    let text: Vec<String> = p.ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(text.len(), 8, "{text:#?}");
    assert!(text[0].starts_with("xfrm: add inbound ESP SA 192.168.33.20->192.168.33.10 spi 0x"), "{text:#?}");
    assert!(text[0].ends_with("(rfc4106(gcm(aes)), peer snode1)"), "{text:#?}");
    assert!(text.contains(&"xfrm: policy out 192.168.33.10->192.168.33.20 udp dport 4799: ESP transport required".to_string()));
    assert!(text.contains(&"xfrm: policy in 192.168.33.30->192.168.33.10 udp dport 4799: ESP transport required".to_string()));
    // Outbound SAs come last: the policies are in place before anything is sent with ESP.
    assert!(text[6].starts_with("xfrm: add outbound") && text[7].starts_with("xfrm: add outbound"), "{text:#?}");
    assert_eq!(p.next_step_at, None);
    assert_eq!(pass(&ipsec(0), &mut k, 1001), Plan::default(), "re-plan is empty");
}

#[test]
fn both_ends_of_a_pair_derive_the_same_sa_and_no_key_shows() {
    let a = desired(&ipsec(0)).unwrap().unwrap();
    let b = desired(&ipsec(1)).unwrap().unwrap();
    let a_to_b = &a.peers.iter().find(|p| p.node == "snode1").unwrap().outbound;
    let b_from_a = &b.peers.iter().find(|p| p.node == "smgr").unwrap().inbound;
    assert_eq!(a_to_b, b_from_a, "the sender's outbound SA is the receiver's inbound SA");
    assert_ne!(a_to_b.spi, b.peers.iter().find(|p| p.node == "smgr").unwrap().outbound.spi);
    let plan = plan(Some(&a), &Observed::default(), 0);
    for op in &plan.ops {
        let secret: String = a_to_b.key.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!format!("{op:?}").contains(&secret) && !format!("{op:?}").contains(&format!("{:?}", a_to_b.key.0)), "{op:?}");
    }
}

/// Every SPI a sender sends with (its newest outbound SA to the receiver, as the kernel picks)
/// is one the receiver has an inbound SA for.
fn no_loss(kernels: &[Observed; 3]) {
    for (i, k) in kernels.iter().enumerate() {
        for j in (0..3).filter(|j| *j != i) {
            let sending = k.sas.iter().filter(|s| s.src == addr(i) && s.dst == addr(j)).max_by_key(|s| (s.added, s.spi));
            if let Some(s) = sending {
                assert!(
                    kernels[j].sas.iter().any(|r| (r.src, r.dst, r.spi) == (s.src, s.dst, s.spi)),
                    "{} sends with spi 0x{:08x} that {} cannot receive",
                    NAMES[i],
                    s.spi,
                    NAMES[j]
                );
            }
        }
    }
}

#[test]
fn a_rotation_adds_inbound_then_switches_outbound_then_retires_and_never_loses_a_packet() {
    let mut kernels: [Observed; 3] = Default::default();
    for (i, k) in kernels.iter_mut().enumerate() {
        pass(&ipsec(i), k, 1000);
    }
    no_loss(&kernels);
    // Node 0 sees generation 2 of its pair with snode1 at t=2000, snode1 two seconds later.
    let gen2 = |i: usize| state(i, "ipsec", |a, b| if a.min(b) == 0 && a.max(b) == 1 { 2 } else { 1 });
    let first = pass(&gen2(0), &mut kernels[0], 2000);
    assert_eq!(first.ops.len(), 1, "only the new inbound SA: {:#?}", first.ops);
    assert!(matches!(&first.ops[0], XfrmOp::AddSa { dir: Dir::In, node, .. } if node == "snode1"));
    assert_eq!(first.next_step_at, Some(2000 + GRACE_SECS));
    no_loss(&kernels);
    let mut steps = vec![first.ops.len()];
    for t in 2001..2040 {
        for i in 0..3 {
            let s = if i == 0 || t >= 2002 { gen2(i) } else { ipsec(i) };
            let p = pass(&s, &mut kernels[i], t);
            if i == 0 && !p.ops.is_empty() {
                steps.push(p.ops.len());
                assert_eq!(t, if steps.len() == 2 { 2010 } else { 2020 }, "step {} at {t}: {:?}", steps.len(), p.ops);
            }
            no_loss(&kernels);
        }
    }
    assert_eq!(steps, [1, 1, 2], "inbound, then outbound, then both old SAs");
    for (i, k) in kernels.iter().enumerate() {
        assert_eq!(k.sas.len(), 4, "{}: two peers, two SAs each, nothing old left", NAMES[i]);
        assert_eq!(plan(desired(&gen2(i)).unwrap().as_ref(), k, 3000), Plan::default());
    }
}

#[test]
fn a_node_leaving_is_its_two_sas_and_two_policies_and_no_ipsec_removes_all() {
    let mut k = Observed::default();
    let s = ipsec(0);
    pass(&s, &mut k, 1000);
    let mut fewer = s.clone();
    fewer.nodes.retain(|n| n.name != "snode2");
    let p = pass(&fewer, &mut k, 1001);
    let text: Vec<String> = p.ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    assert!(text.iter().all(|t| t.contains("192.168.33.30") && t.contains("delete")), "{text:#?}");
    let wg = state(0, "wireguard", |_, _| 1);
    assert_eq!(desired(&wg).unwrap(), None, "a WireGuard network wants no SA");
    let p = pass(&wg, &mut k, 1002);
    assert_eq!(p.ops.len(), 4);
    assert_eq!(k, Observed::default());
    assert_eq!(plan(None, &k, 1003), Plan::default(), "nothing of ours: nothing to do");
}

#[test]
fn a_peer_without_its_pair_key_is_refused_naming_the_field() {
    let mut s = ipsec(0);
    s.nodes[2].wireguard.as_mut().unwrap().preshared_key = None;
    let e = desired(&s).unwrap_err().to_string();
    assert!(e.starts_with("nodes[2].wireguard.preshared_key: node 'snode2' has no pair key"), "{e}");
    assert!(e.contains("network 'secure' is encrypted with IPsec"), "{e}");
}

#[test]
fn the_network_mtu_is_the_largest_packet_esp_fits_in_the_underlay() {
    // Outer IPv4 packet of an inner packet of m bytes: IP 20, ESP 8, IV 8, then UDP 8 + VXLAN 8
    // + Ethernet 14 + m, padded with the 2 trailer bytes to 4, then the ICV 16.
    let wire = |m: u32| 20 + 8 + 8 + (30 + m + 2).div_ceil(4) * 4 + 16;
    for underlay in [1500, 1450, 1499, 9000, 1401, 1402, 1403] {
        let mtu = network_mtu(underlay);
        assert!(wire(mtu) <= underlay, "{underlay}: {mtu} must fit");
        assert!(wire(mtu + 1) > underlay, "{underlay}: {} must not", mtu + 1);
    }
    assert_eq!(network_mtu(1500), 1416);
}
