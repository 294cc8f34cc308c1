//! BPF_PROG_TEST_RUN of the NAT classifiers on crafted packets.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::PacketBuilder;
use shoal_ebpf::{Backend, LoadOptions, ServiceKey, ServiceOptions, TcHook, TcNat};

const TC_ACT_OK: i32 = 0;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 9);
const SNAT: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);

fn backend(last: u8) -> Backend {
    Backend::nat(SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, last), 80), SNAT, false)
}

fn load() -> TcNat {
    let opts = LoadOptions { max_services: 64, max_backends: 256, max_flows: 1024, ..LoadOptions::default() };
    TcNat::load(&opts).expect("load tc_nat")
}

fn tcp(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), 1000, 64240)
        .syn()
        .write(&mut out, b"hello")
        .unwrap();
    out
}

fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port())
        .write(&mut out, b"ping")
        .unwrap();
    out
}

/// (source, destination) of an IPv4 TCP/UDP frame without IP options.
fn tuple(p: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    let port = |o: usize| u16::from_be_bytes([p[o], p[o + 1]]);
    (SocketAddrV4::new(ip(26), port(34)), SocketAddrV4::new(ip(30), port(36)))
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

/// Both the IPv4 header checksum and the TCP/UDP checksum verify.
fn assert_checksums(p: &[u8]) {
    let ip = &p[14..34];
    assert_eq!(fold(sum16(ip)), 0xffff, "bad IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &p[34..14 + total];
    let proto = ip[9];
    if proto == 17 && l4[6..8] == [0, 0] {
        return; // no UDP checksum
    }
    let pseudo = sum16(&ip[12..20]) + u32::from(proto) + l4.len() as u32;
    assert_eq!(fold(pseudo + sum16(l4)), 0xffff, "bad L4 checksum (proto {proto})");
}

fn published(nat: &mut TcNat, port: u16, backends: &[Backend]) -> ServiceKey {
    let key = ServiceKey::tcp(NODE, port);
    nat.upsert_service(key, ServiceOptions::default()).unwrap();
    nat.set_backends(&key, backends).unwrap();
    key
}

fn run(nat: &mut TcNat, hook: TcHook, p: &[u8]) -> Vec<u8> {
    let (verdict, out) = nat.test_run(hook, p).expect("test run");
    assert_eq!(verdict, TC_ACT_OK);
    out
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn dnat_snat_and_reply_rewrite_with_valid_checksums() {
    common::require_root("dnat_snat_and_reply_rewrite_with_valid_checksums");
    let mut nat = load();
    published(&mut nat, 8080, &[backend(5)]);
    let client = SocketAddrV4::new(CLIENT, 40000);
    let front = SocketAddrV4::new(NODE, 8080);

    let input = tcp(client, front);
    assert_checksums(&input);
    let out = run(&mut nat, TcHook::Ingress, &input);
    assert_eq!(tuple(&out), (SocketAddrV4::new(SNAT, 40000), backend(5).addr));
    assert_checksums(&out);
    assert_eq!(out[54..], input[54..], "payload changed");

    let reply = run(&mut nat, TcHook::Reply, &tcp(backend(5).addr, SocketAddrV4::new(SNAT, 40000)));
    assert_eq!(tuple(&reply), (front, client));
    assert_checksums(&reply);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn udp_rewrite_keeps_checksums_valid() {
    common::require_root("udp_rewrite_keeps_checksums_valid");
    let mut nat = load();
    let key = ServiceKey::udp(Ipv4Addr::UNSPECIFIED, 5353); // every node address
    nat.upsert_service(key, ServiceOptions::default()).unwrap();
    nat.set_backends(&key, &[backend(7)]).unwrap();
    let client = SocketAddrV4::new(CLIENT, 41000);
    let out = run(&mut nat, TcHook::Ingress, &udp(client, SocketAddrV4::new(NODE, 5353)));
    assert_eq!(tuple(&out), (SocketAddrV4::new(SNAT, 41000), backend(7).addr));
    assert_checksums(&out);

    // A UDP packet without checksum keeps having none.
    let mut nocsum = udp(SocketAddrV4::new(CLIENT, 41001), SocketAddrV4::new(NODE, 5353));
    nocsum[40] = 0;
    nocsum[41] = 0;
    let out = run(&mut nat, TcHook::Ingress, &nocsum);
    assert_eq!(tuple(&out).1, backend(7).addr);
    assert_eq!(out[40..42], [0, 0]);
    assert_checksums(&out);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn flows_stick_to_their_backend_and_spread_over_all() {
    common::require_root("flows_stick_to_their_backend_and_spread_over_all");
    let mut nat = load();
    published(&mut nat, 8080, &[backend(5), backend(6), backend(7)]);
    let front = SocketAddrV4::new(NODE, 8080);
    let mut seen = std::collections::HashSet::new();
    for sport in 20000..20060 {
        let client = SocketAddrV4::new(CLIENT, sport);
        let first = tuple(&run(&mut nat, TcHook::Ingress, &tcp(client, front))).1;
        for _ in 0..5 {
            assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &tcp(client, front))).1, first, "flow moved");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "60 flows reached only {seen:?}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn removed_backend_keeps_tcp_flows_but_gets_no_new_ones() {
    common::require_root("removed_backend_keeps_tcp_flows_but_gets_no_new_ones");
    let mut nat = load();
    let key = published(&mut nat, 8080, &[backend(5), backend(6)]);
    let front = SocketAddrV4::new(NODE, 8080);
    // Find a flow on backend 5.
    let (flow, _) = (30000..30100)
        .map(|p| {
            let c = SocketAddrV4::new(CLIENT, p);
            (c, tuple(&run(&mut nat, TcHook::Ingress, &tcp(c, front))).1)
        })
        .find(|(_, b)| *b == backend(5).addr)
        .expect("some flow lands on backend 5");

    nat.remove_backend(&key, backend(5).addr).unwrap();
    // The flow's next segment (an ACK: it is established) still goes to its backend.
    let segment = tcp_flags(flow, front, false, true);
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &segment)).1, backend(5).addr, "TCP flow dropped");
    for p in 31000..31050 {
        let c = SocketAddrV4::new(CLIENT, p);
        assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &tcp(c, front))).1, backend(6).addr);
    }
    // A new connection (SYN) that reuses the tuple once the client's port comes round again is a
    // new flow: it must not follow the old one to the backend that left (a rolling update timed
    // such connections out).
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &tcp(flow, front))).1, backend(6).addr, "a new connection went to a removed backend");
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &segment)).1, backend(6).addr, "and its next segments follow it");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn udp_flow_moves_when_its_backend_is_removed() {
    common::require_root("udp_flow_moves_when_its_backend_is_removed");
    let mut nat = load();
    let key = ServiceKey::udp(NODE, 53);
    nat.upsert_service(key, ServiceOptions::default()).unwrap();
    nat.set_backends(&key, &[backend(5)]).unwrap();
    let client = SocketAddrV4::new(CLIENT, 45000);
    let front = SocketAddrV4::new(NODE, 53);
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &udp(client, front))).1, backend(5).addr);
    nat.set_backends(&key, &[backend(6)]).unwrap();
    let out = run(&mut nat, TcHook::Ingress, &udp(client, front));
    assert_eq!(tuple(&out).1, backend(6).addr);
    let reply = run(&mut nat, TcHook::Reply, &udp(backend(6).addr, tuple(&out).0));
    assert_eq!(tuple(&reply), (front, client));
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn clients_sharing_a_source_port_get_distinct_reply_tuples() {
    common::require_root("clients_sharing_a_source_port_get_distinct_reply_tuples");
    let mut nat = load();
    published(&mut nat, 8080, &[backend(5)]);
    let front = SocketAddrV4::new(NODE, 8080);
    let a = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 20), 50000);
    let b = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 21), 50000);
    let sa = tuple(&run(&mut nat, TcHook::Ingress, &tcp(a, front))).0;
    let sb = tuple(&run(&mut nat, TcHook::Ingress, &tcp(b, front))).0;
    assert_ne!(sa, sb);
    assert_eq!(tuple(&run(&mut nat, TcHook::Reply, &tcp(backend(5).addr, sa))).1, a);
    assert_eq!(tuple(&run(&mut nat, TcHook::Reply, &tcp(backend(5).addr, sb))).1, b);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn keep_client_ip_prefers_a_local_backend_without_snat() {
    common::require_root("keep_client_ip_prefers_a_local_backend_without_snat");
    let mut nat = load();
    let key = ServiceKey::tcp(NODE, 8443);
    nat.upsert_service(key, ServiceOptions { keep_client_ip: true, ..ServiceOptions::default() }).unwrap();
    let local = Backend::nat(SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 8), 443), SNAT, true);
    nat.set_backends(&key, &[backend(5), backend(6), local]).unwrap();
    let front = SocketAddrV4::new(NODE, 8443);
    for p in 33000..33020 {
        let c = SocketAddrV4::new(CLIENT, p);
        let out = run(&mut nat, TcHook::Ingress, &tcp(c, front));
        assert_eq!(tuple(&out), (c, local.addr));
        assert_checksums(&out);
        let reply = run(&mut nat, TcHook::Reply, &tcp(local.addr, c));
        assert_eq!(tuple(&reply), (front, c));
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn other_packets_pass_untouched() {
    common::require_root("other_packets_pass_untouched");
    let mut nat = load();
    published(&mut nat, 8080, &[backend(5)]);
    let client = SocketAddrV4::new(CLIENT, 40000);
    let cases = [
        tcp(client, SocketAddrV4::new(NODE, 22)),                             // other port
        udp(client, SocketAddrV4::new(NODE, 8080)),                           // other protocol
        tcp(client, SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 3), 8080)), // other address
        {
            let mut frag = tcp(client, SocketAddrV4::new(NODE, 8080)); // a fragment
            frag[20] = 0x20; // MF
            frag
        },
    ];
    for p in &cases {
        assert_eq!(&run(&mut nat, TcHook::Ingress, p), p);
        assert_eq!(&run(&mut nat, TcHook::Reply, p), p);
    }
    let mut arp = vec![0u8; 60];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(run(&mut nat, TcHook::Ingress, &arp), arp);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn nat_backend_without_snat_is_refused_and_nothing_changes() {
    common::require_root("nat_backend_without_snat_is_refused_and_nothing_changes");
    let mut nat = load();
    let key = published(&mut nat, 8080, &[backend(5)]);
    let bad = Backend::new(SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 6), 80));
    let err = nat.set_backends(&key, &[backend(5), bad]).unwrap_err();
    assert!(err.to_string().contains("10.0.9.6:80 has no SNAT address"), "{err}");
    assert_eq!(nat.table().backends(&key).unwrap(), &[backend(5)]);
    let out = run(&mut nat, TcHook::Ingress, &tcp(SocketAddrV4::new(CLIENT, 40000), SocketAddrV4::new(NODE, 8080)));
    assert_eq!(tuple(&out).1, backend(5).addr);
}

/// Backend of each of `n` new TCP flows (client ports from `first`).
fn spread(nat: &mut TcNat, port: u16, first: u16, n: u16) -> std::collections::BTreeMap<SocketAddrV4, u32> {
    let front = SocketAddrV4::new(NODE, port);
    let mut hits = std::collections::BTreeMap::new();
    for sport in first..first + n {
        let out = run(nat, TcHook::Ingress, &tcp(SocketAddrV4::new(CLIENT, sport), front));
        *hits.entry(tuple(&out).1).or_default() += 1;
    }
    hits
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn new_flows_follow_the_weights_and_weight_zero_drains() {
    common::require_root("new_flows_follow_the_weights_and_weight_zero_drains");
    let opts = LoadOptions { max_services: 8, max_backends: 64, max_flows: 8192, ..LoadOptions::default() };
    let mut nat = TcNat::load(&opts).expect("load tc_nat");
    let key = published(&mut nat, 8080, &[backend(5).with_weight(3), backend(6), backend(7).with_weight(0)]);
    let (slots, _) = nat.table().slots(&key).unwrap();
    assert_eq!(slots.iter().filter(|a| **a == backend(5).addr).count(), 3, "slots: {slots:?}");
    assert_eq!(slots.len(), 4, "slots: {slots:?}");

    // 2000 flows: 3/4 expected on backend 5 (standard deviation ~1%).
    let hits = spread(&mut nat, 8080, 10000, 2000);
    assert_eq!(hits.get(&backend(7).addr), None, "drained backend got new flows: {hits:?}");
    let share = f64::from(hits[&backend(5).addr]) / 2000.0;
    assert!((0.65..0.85).contains(&share), "weight 3 of 4 got {share:.3} of the flows: {hits:?}");

    // Draining a backend keeps its tracked flows (TCP and UDP) but gives it no new one.
    let client = SocketAddrV4::new(CLIENT, 10000);
    let front = SocketAddrV4::new(NODE, 8080);
    let before = tuple(&run(&mut nat, TcHook::Ingress, &tcp(client, front))).1;
    nat.add_backend(&key, Backend::nat(before, SNAT, false).with_weight(0)).unwrap();
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &tcp(client, front))).1, before, "tracked flow moved");
    let hits = spread(&mut nat, 8080, 20000, 200);
    assert_eq!(hits.get(&before), None, "drained {before} got new flows: {hits:?}");
    assert_eq!(hits.len(), 1, "{hits:?}");

    let udp_key = ServiceKey::udp(NODE, 53);
    nat.upsert_service(udp_key, ServiceOptions::default()).unwrap();
    nat.set_backends(&udp_key, &[backend(5)]).unwrap();
    let uclient = SocketAddrV4::new(CLIENT, 45000);
    let ufront = SocketAddrV4::new(NODE, 53);
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &udp(uclient, ufront))).1, backend(5).addr);
    nat.set_backends(&udp_key, &[backend(5).with_weight(0), backend(6)]).unwrap();
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &udp(uclient, ufront))).1, backend(5).addr, "UDP flow left a draining backend");
    let other = SocketAddrV4::new(CLIENT, 45001);
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &udp(other, ufront))).1, backend(6).addr);
}

// The packet path of VIPs (nat_reply on the overlay bridge) and flow creation rules.

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);
/// A process in a task's network namespace, outside the task cgroup.
const TASK: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 30);

fn any_port_backend(last: u8) -> Backend {
    Backend::nat(SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, last), shoal_ebpf::ANY_PORT), SNAT, false)
}

fn at(b: &Backend, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(*b.addr.ip(), port)
}

/// A VIP on every port (TCP and UDP) with `backends`, as the eBPF balancer writes it to the NAT.
fn vip(nat: &mut TcNat, backends: &[Backend]) -> [ServiceKey; 2] {
    let keys = [ServiceKey::tcp(VIP, shoal_ebpf::ANY_PORT), ServiceKey::udp(VIP, shoal_ebpf::ANY_PORT)];
    for key in keys {
        nat.upsert_service(key, ServiceOptions { vip: true, ..ServiceOptions::default() }).unwrap();
        nat.set_backends(&key, backends).unwrap();
    }
    keys
}

/// A TCP segment with the given SYN and ACK flags.
fn tcp_flags(src: SocketAddrV4, dst: SocketAddrV4, syn: bool, ack: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src.ip().octets(), dst.ip().octets(), 64).tcp(
        src.port(),
        dst.port(),
        1000,
        64240,
    );
    let b = if syn { b.syn() } else { b };
    let b = if ack { b.ack(7) } else { b };
    b.write(&mut out, b"hello").unwrap();
    out
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn vip_packets_on_the_bridge_are_balanced_keeping_the_port_and_replies_come_from_the_vip() {
    common::require_root("vip_packets_on_the_bridge_are_balanced_keeping_the_port_and_replies_come_from_the_vip");
    let mut nat = load();
    vip(&mut nat, &[any_port_backend(5)]);
    let client = SocketAddrV4::new(TASK, 40000);
    for port in [80, 6379] {
        let front = SocketAddrV4::new(VIP, port);
        let out = run(&mut nat, TcHook::Reply, &tcp(client, front));
        assert_eq!(tuple(&out), (SocketAddrV4::new(SNAT, 40000), at(&any_port_backend(5), port)), "TCP to {front}");
        assert_checksums(&out);
        let reply = run(&mut nat, TcHook::Reply, &tcp(at(&any_port_backend(5), port), SocketAddrV4::new(SNAT, 40000)));
        assert_eq!(tuple(&reply), (front, client), "reply from {front}");
        assert_checksums(&reply);
        // Later segments of the flow (ACK, no SYN) follow it.
        let ack = run(&mut nat, TcHook::Reply, &tcp_flags(client, front, false, true));
        assert_eq!(tuple(&ack).1, at(&any_port_backend(5), port));
    }
    let uclient = SocketAddrV4::new(TASK, 41000);
    let ufront = SocketAddrV4::new(VIP, 5353);
    let out = run(&mut nat, TcHook::Reply, &udp(uclient, ufront));
    assert_eq!(tuple(&out), (SocketAddrV4::new(SNAT, 41000), at(&any_port_backend(5), 5353)));
    assert_checksums(&out);
    let reply = run(&mut nat, TcHook::Reply, &udp(at(&any_port_backend(5), 5353), SocketAddrV4::new(SNAT, 41000)));
    assert_eq!(tuple(&reply), (ufront, uclient));
    assert_checksums(&reply);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn an_exact_vip_port_wins_over_the_any_port_entry() {
    common::require_root("an_exact_vip_port_wins_over_the_any_port_entry");
    let mut nat = load();
    vip(&mut nat, &[any_port_backend(5)]);
    let exact = ServiceKey::tcp(VIP, 8080);
    nat.upsert_service(exact, ServiceOptions { vip: true, ..ServiceOptions::default() }).unwrap();
    nat.set_backends(&exact, &[backend(6)]).unwrap();
    let client = SocketAddrV4::new(TASK, 40000);
    let out = run(&mut nat, TcHook::Reply, &tcp(client, SocketAddrV4::new(VIP, 8080)));
    assert_eq!(tuple(&out).1, backend(6).addr, "the exact entry (to port 80) must win");
    let out = run(&mut nat, TcHook::Reply, &tcp(SocketAddrV4::new(TASK, 40001), SocketAddrV4::new(VIP, 9000)));
    assert_eq!(tuple(&out).1, at(&any_port_backend(5), 9000), "other ports take the any-port entry");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn vips_are_balanced_only_on_the_bridge_and_published_ports_only_on_the_underlay() {
    common::require_root("vips_are_balanced_only_on_the_bridge_and_published_ports_only_on_the_underlay");
    let mut nat = load();
    vip(&mut nat, &[any_port_backend(5)]);
    published(&mut nat, 8080, &[backend(6)]);
    let to_vip = tcp(SocketAddrV4::new(CLIENT, 40000), SocketAddrV4::new(VIP, 80));
    assert_eq!(run(&mut nat, TcHook::Ingress, &to_vip), to_vip, "a VIP was balanced on the underlay");
    let to_node = tcp(SocketAddrV4::new(TASK, 40000), SocketAddrV4::new(NODE, 8080));
    assert_eq!(run(&mut nat, TcHook::Reply, &to_node), to_node, "a published port was balanced on the bridge");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn vip_flows_keep_a_drained_tcp_backend_and_udp_moves_when_its_backend_leaves() {
    common::require_root("vip_flows_keep_a_drained_tcp_backend_and_udp_moves_when_its_backend_leaves");
    let mut nat = load();
    let [tcp_key, udp_key] = vip(&mut nat, &[any_port_backend(5), any_port_backend(6)]);
    let front = SocketAddrV4::new(VIP, 6379);
    let (flow, on) = (30000..30100)
        .map(|p| {
            let c = SocketAddrV4::new(TASK, p);
            (c, tuple(&run(&mut nat, TcHook::Reply, &tcp(c, front))).1)
        })
        .find(|(_, b)| *b == at(&any_port_backend(5), 6379))
        .expect("some flow lands on backend 5");
    nat.add_backend(&tcp_key, any_port_backend(5).with_weight(0)).unwrap();
    assert_eq!(tuple(&run(&mut nat, TcHook::Reply, &tcp_flags(flow, front, false, true))).1, on, "drained TCP flow moved");
    for p in 31000..31040 {
        let out = run(&mut nat, TcHook::Reply, &tcp(SocketAddrV4::new(TASK, p), front));
        assert_eq!(tuple(&out).1, at(&any_port_backend(6), 6379), "a drained backend got a new flow");
    }
    nat.remove_backend(&tcp_key, any_port_backend(5).addr).unwrap();
    assert_eq!(tuple(&run(&mut nat, TcHook::Reply, &tcp_flags(flow, front, false, true))).1, on, "removed backend's TCP flow moved");

    let uclient = SocketAddrV4::new(TASK, 45000);
    let ufront = SocketAddrV4::new(VIP, 53);
    nat.set_backends(&udp_key, &[any_port_backend(5)]).unwrap();
    assert_eq!(tuple(&run(&mut nat, TcHook::Reply, &udp(uclient, ufront))).1, at(&any_port_backend(5), 53));
    nat.set_backends(&udp_key, &[any_port_backend(6)]).unwrap();
    let out = run(&mut nat, TcHook::Reply, &udp(uclient, ufront));
    assert_eq!(tuple(&out).1, at(&any_port_backend(6), 53), "the UDP flow stayed on the removed backend");
    let reply = run(&mut nat, TcHook::Reply, &udp(at(&any_port_backend(6), 53), tuple(&out).0));
    assert_eq!(tuple(&reply), (ufront, uclient));
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn only_a_tcp_syn_opens_a_flow() {
    common::require_root("only_a_tcp_syn_opens_a_flow");
    let mut nat = load();
    published(&mut nat, 8080, &[backend(5)]);
    let front = SocketAddrV4::new(NODE, 8080);
    // An established connection to the node's own port 8080 (opened before the port was
    // published): its segments carry ACK and must reach the node untouched.
    let open = SocketAddrV4::new(CLIENT, 40000);
    for (syn, ack) in [(false, true), (true, true), (false, false)] {
        let p = tcp_flags(open, front, syn, ack);
        assert_eq!(run(&mut nat, TcHook::Ingress, &p), p, "syn {syn} ack {ack} opened a flow");
    }
    // A SYN opens one; the flow's later segments follow it.
    let new = SocketAddrV4::new(CLIENT, 40001);
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &tcp_flags(new, front, true, false))).1, backend(5).addr);
    assert_eq!(tuple(&run(&mut nat, TcHook::Ingress, &tcp_flags(new, front, false, true))).1, backend(5).addr);
    // The same rule on the bridge.
    vip(&mut nat, &[any_port_backend(6)]);
    let p = tcp_flags(SocketAddrV4::new(TASK, 40000), SocketAddrV4::new(VIP, 80), false, true);
    assert_eq!(run(&mut nat, TcHook::Reply, &p), p, "an ACK opened a VIP flow");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_udp_packet_of_a_connected_local_socket_is_not_taken() {
    common::require_root("a_udp_packet_of_a_connected_local_socket_is_not_taken");
    // In a namespace of its own: the lookup finds sockets of the namespace the test run is in.
    let ns = common::netns::Netns::new("sebu");
    let (owned, other) = ns.run(|| {
        let node = Ipv4Addr::LOCALHOST;
        let peer = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 5300);
        // The node talks with `peer` from its port 5353 (connected: no packet is sent).
        let sock = std::net::UdpSocket::bind((node, 5353)).expect("bind");
        sock.connect(peer).expect("connect");
        let mut nat = load();
        let key = ServiceKey::udp(node, 5353);
        nat.upsert_service(key, ServiceOptions::default()).unwrap();
        nat.set_backends(&key, &[backend(7)]).unwrap();
        let owned = udp(peer, SocketAddrV4::new(node, 5353));
        let owned_out = run(&mut nat, TcHook::Ingress, &owned);
        let other_out = run(&mut nat, TcHook::Ingress, &udp(SocketAddrV4::new(*peer.ip(), 5301), SocketAddrV4::new(node, 5353)));
        drop(sock);
        (owned_out == owned, tuple(&other_out).1)
    });
    assert!(owned, "a packet of the node's connected socket was taken by the published port");
    assert_eq!(other, backend(7).addr, "another peer's packet to the published port was not balanced");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn pinned_vip_services_and_flows_are_adopted_by_a_new_loader() {
    common::require_root("pinned_vip_services_and_flows_are_adopted_by_a_new_loader");
    let bpffs = common::netns::BpfMount::new();
    let opts = LoadOptions {
        pin_dir: Some(bpffs.path.join("node")),
        max_services: 64,
        max_backends: 256,
        max_flows: 1024,
        ..LoadOptions::default()
    };
    let client = SocketAddrV4::new(TASK, 40000);
    let front = SocketAddrV4::new(VIP, 6379);
    let snat_side = {
        let mut nat = TcNat::load(&opts).expect("load");
        vip(&mut nat, &[any_port_backend(5)]);
        tuple(&run(&mut nat, TcHook::Reply, &tcp(client, front))).0
    };
    let mut nat = TcNat::load(&opts).expect("reload");
    let key = ServiceKey::tcp(VIP, shoal_ebpf::ANY_PORT);
    assert_eq!(nat.table().backends(&key), Some(&[any_port_backend(5)][..]), "any-port backends adopted");
    assert!(nat.table().options(&key).is_some_and(|o| o.vip), "the VIP tag was not read back");
    let reply = run(&mut nat, TcHook::Reply, &tcp(at(&any_port_backend(5), 6379), snat_side));
    assert_eq!(tuple(&reply), (front, client), "a flow of the earlier loader lost its reverse translation");
    assert!(nat.teardown().is_empty());
}
