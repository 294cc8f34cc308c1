//! Unit tests of the name logic over a fixed two-network zone.

use std::{collections::HashSet, net::IpAddr};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};

use super::*;
use crate::{
    table::Tables,
    zone::{EndpointMode, NetworkZone, NodeRecord, PortRecord, Protocol, ServiceRecord, TaskRecord, Zone},
};

fn service(name: &str, vip: Option<&str>, mode: EndpointMode) -> ServiceRecord {
    ServiceRecord { name: name.into(), aliases: Vec::new(), endpoint_mode: mode, vip: vip.map(|v| v.parse().unwrap()), ports: Vec::new() }
}

fn task(service: &str, slot: u64, id: &str, ip: &str, healthy: bool) -> TaskRecord {
    TaskRecord {
        id: id.into(),
        service: service.into(),
        slot: Some(slot),
        name: None,
        ip: ip.parse().unwrap(),
        healthy,
        aliases: Vec::new(),
    }
}

pub(crate) fn fixture() -> Zone {
    let mut web = service("web", Some("10.0.1.2"), EndpointMode::Vip);
    web.aliases = vec!["www".into()];
    web.ports = vec![PortRecord { name: Some("http".into()), protocol: Protocol::Tcp, port: 80 }];
    let mut db = service("db", None, EndpointMode::Dnsrr);
    db.ports = vec![PortRecord { name: None, protocol: Protocol::Tcp, port: 5432 }];
    let mut web1 = task("web", 1, "aaa", "10.0.1.3", true);
    web1.aliases = vec!["web-primary".into()];
    let mut web3 = task("web", 3, "ccc", "10.0.1.5", false);
    web3.aliases = vec!["web-sick".into()];
    Zone {
        networks: vec![
            NetworkZone {
                name: "front".into(),
                services: vec![web, db],
                tasks: vec![
                    web1,
                    task("web", 2, "bbb", "10.0.1.4", true),
                    web3,
                    task("db", 1, "ddd", "10.0.1.10", true),
                    task("db", 2, "eee", "10.0.1.11", true),
                ],
            },
            NetworkZone {
                name: "back".into(),
                services: vec![service("api", Some("10.0.2.2"), EndpointMode::Vip)],
                tasks: vec![task("api", 1, "fff", "10.0.2.3", true)],
            },
        ],
        nodes: vec![NodeRecord { name: "node1".into(), address: "192.168.1.1".parse().unwrap() }],
    }
}

fn tables() -> Tables {
    Tables::build(&fixture(), None).unwrap()
}

fn query_bytes(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut msg = Message::new(0x1234, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

fn run(tables: &Tables, view: View<'_>, raw: &[u8], transport: Transport) -> Option<Message> {
    match respond(tables, view, &AnswerConfig::default(), raw, transport) {
        Action::Reply(bytes) => Some(Message::from_vec(&bytes).expect("reply parses")),
        Action::Forward(_) => None,
        Action::Drop => panic!("dropped"),
    }
}

/// Asks `name` from a task on `networks`: (rcode, answer data, ttls) or None when forwarded.
fn ask(networks: &[&str], name: &str, qtype: RecordType) -> Option<(ResponseCode, Vec<RData>, Vec<u32>)> {
    let nets: Vec<String> = networks.iter().map(|s| s.to_string()).collect();
    let msg = run(&tables(), View::Task(&nets), &query_bytes(name, qtype, false), Transport::Udp)?;
    assert_eq!(msg.metadata.id, 0x1234);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    let data = msg.answers.iter().map(|r| r.data.clone()).collect();
    let ttls = msg.answers.iter().map(|r| r.ttl).collect();
    Some((msg.metadata.response_code, data, ttls))
}

fn ips(data: &[RData]) -> HashSet<IpAddr> {
    data.iter()
        .map(|d| match d {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            other => panic!("not an address: {other:?}"),
        })
        .collect()
}

fn set(list: &[&str]) -> HashSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn vip_service_answers_its_vip_with_the_stable_ttl() {
    let (code, data, ttls) = ask(&["front"], "web", RecordType::A).unwrap();
    assert_eq!(code, ResponseCode::NoError);
    assert_eq!(ips(&data), set(&["10.0.1.2"]));
    assert_eq!(ttls, vec![5]);
}

#[test]
fn tasks_name_answers_healthy_tasks_only_with_the_short_ttl() {
    let (code, data, ttls) = ask(&["front"], "tasks.web", RecordType::A).unwrap();
    assert_eq!(code, ResponseCode::NoError);
    assert_eq!(ips(&data), set(&["10.0.1.3", "10.0.1.4"]));
    assert!(ttls.iter().all(|t| *t == 2), "{ttls:?}");
}

#[test]
fn dnsrr_service_answers_task_ips() {
    let (_, data, _) = ask(&["front"], "db", RecordType::A).unwrap();
    assert_eq!(ips(&data), set(&["10.0.1.10", "10.0.1.11"]));
}

#[test]
fn service_alias_answers_like_the_service() {
    assert_eq!(ips(&ask(&["front"], "www", RecordType::A).unwrap().1), set(&["10.0.1.2"]));
    assert_eq!(ips(&ask(&["front"], "tasks.www", RecordType::A).unwrap().1), set(&["10.0.1.3", "10.0.1.4"]));
}

#[test]
fn task_names_resolve_and_task_aliases_only_while_healthy() {
    assert_eq!(ips(&ask(&["front"], "web.1.aaa", RecordType::A).unwrap().1), set(&["10.0.1.3"]));
    // The unhealthy task keeps its own name but is no backend and its alias is gone.
    assert_eq!(ips(&ask(&["front"], "web.3.ccc", RecordType::A).unwrap().1), set(&["10.0.1.5"]));
    assert_eq!(ips(&ask(&["front"], "web-primary", RecordType::A).unwrap().1), set(&["10.0.1.3"]));
    assert_eq!(ask(&["front"], "web-sick", RecordType::A).unwrap().0, ResponseCode::NXDomain);
}

#[test]
fn network_suffix_and_case_do_not_matter() {
    for name in ["web.front", "WeB.FrOnT.", "WEB"] {
        assert_eq!(ips(&ask(&["front"], name, RecordType::A).unwrap().1), set(&["10.0.1.2"]), "{name}");
    }
    assert_eq!(ips(&ask(&["front"], "tasks.web.front", RecordType::A).unwrap().1), set(&["10.0.1.3", "10.0.1.4"]));
    assert_eq!(ips(&ask(&["front"], "web.2.bbb.front", RecordType::A).unwrap().1), set(&["10.0.1.4"]));
}

#[test]
fn aaaa_and_other_types_of_a_known_name_are_empty_noerror() {
    for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let (code, data, _) = ask(&["front"], "web", qtype).unwrap();
        assert_eq!(code, ResponseCode::NoError, "{qtype}");
        assert!(data.is_empty(), "{qtype}: {data:?}");
    }
}

#[test]
fn names_of_other_networks_are_nxdomain_and_never_forwarded() {
    for name in ["web", "tasks.web", "web.front", "web.1.aaa.front", "www"] {
        let (code, data, _) = ask(&["back"], name, RecordType::A).unwrap_or_else(|| panic!("{name} forwarded"));
        assert_eq!(code, ResponseCode::NXDomain, "{name}");
        assert!(data.is_empty());
    }
    assert_eq!(ips(&ask(&["back"], "api", RecordType::A).unwrap().1), set(&["10.0.2.2"]));
    assert_eq!(ask(&["front"], "api", RecordType::A).unwrap().0, ResponseCode::NXDomain);
}

#[test]
fn a_task_on_two_networks_sees_both() {
    assert_eq!(ips(&ask(&["back", "front"], "web", RecordType::A).unwrap().1), set(&["10.0.1.2"]));
    assert_eq!(ips(&ask(&["back", "front"], "api", RecordType::A).unwrap().1), set(&["10.0.2.2"]));
}

#[test]
fn unknown_dotted_names_are_forwarded() {
    assert!(ask(&["front"], "example.com", RecordType::A).is_none());
    assert!(ask(&["front"], "web.1.unknown", RecordType::A).is_none());
    assert!(ask(&["front"], "1.2.3.4.in-addr.arpa", RecordType::PTR).is_none());
}

#[test]
fn ptr_answers_task_and_vip_names_of_own_networks_only() {
    let ptr = |networks: &[&str], name: &str| {
        ask(networks, name, RecordType::PTR).map(|(code, data, _)| {
            assert_eq!(code, ResponseCode::NoError);
            data.iter().map(|d| d.to_string()).collect::<Vec<_>>()
        })
    };
    assert_eq!(ptr(&["front"], "3.1.0.10.in-addr.arpa"), Some(vec!["web.1.aaa.front.".to_string()]));
    assert_eq!(ptr(&["front"], "2.1.0.10.in-addr.arpa"), Some(vec!["web.front.".to_string()]));
    // Another network's address: not answered locally.
    assert_eq!(ptr(&["back"], "3.1.0.10.in-addr.arpa"), None);
}

#[test]
fn srv_answers_ports_with_targets_and_addresses() {
    let nets = vec!["front".to_string()];
    let raw = query_bytes("_http._tcp.web", RecordType::SRV, false);
    let msg = run(&tables(), View::Task(&nets), &raw, Transport::Udp).unwrap();
    assert_eq!(msg.answers.len(), 1);
    let RData::SRV(srv) = &msg.answers[0].data else { panic!("not SRV") };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target.to_string(), "web.front.");
    assert_eq!(msg.additionals.len(), 1);

    // dnsrr: one SRV per healthy task, port name defaults to the number.
    let raw = query_bytes("_5432._tcp.db", RecordType::SRV, false);
    let msg = run(&tables(), View::Task(&nets), &raw, Transport::Udp).unwrap();
    let targets: HashSet<String> = msg
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => s.target.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(targets, ["db.1.ddd.front.", "db.2.eee.front."].iter().map(|s| s.to_string()).collect());
}

#[test]
fn several_answers_come_in_random_order() {
    let mut orders = HashSet::new();
    for _ in 0..200 {
        let (_, data, _) = ask(&["front"], "tasks.web", RecordType::A).unwrap();
        orders.insert(format!("{data:?}"));
    }
    assert_eq!(orders.len(), 2, "both orders of two answers appear");
}

fn big_zone(tasks: usize) -> Tables {
    let mut zone = Zone::default();
    let mut net = NetworkZone { name: "big".into(), services: vec![service("many", None, EndpointMode::Dnsrr)], tasks: Vec::new() };
    for i in 0..tasks {
        net.tasks.push(task("many", i as u64, &format!("t{i}"), &format!("10.9.{}.{}", i / 250, i % 250 + 1), true));
    }
    zone.networks.push(net);
    Tables::build(&zone, None).unwrap()
}

#[test]
fn large_answers_truncate_on_udp_and_fit_on_tcp() {
    let tables = big_zone(100);
    let nets = vec!["big".to_string()];
    let raw = query_bytes("many", RecordType::A, false);
    let udp = run(&tables, View::Task(&nets), &raw, Transport::Udp).unwrap();
    assert!(udp.metadata.truncation);
    assert!(udp.answers.is_empty());
    let tcp = run(&tables, View::Task(&nets), &raw, Transport::Tcp).unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
    // EDNS lifts the UDP limit to 1232 bytes: 60 answers fit (about 16 bytes each).
    let tables = big_zone(60);
    let raw = query_bytes("many", RecordType::A, true);
    let edns = run(&tables, View::Task(&nets), &raw, Transport::Udp).unwrap();
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 60);
    assert_eq!(edns.edns.map(|e| e.max_payload()), Some(reply::MAX_UDP_PAYLOAD));
}

#[test]
fn malformed_requests_get_formerr_notimp_or_nothing() {
    let tables = tables();
    let nets = vec!["front".to_string()];
    let act = |raw: &[u8]| respond(&tables, View::Task(&nets), &AnswerConfig::default(), raw, Transport::Udp);
    assert!(matches!(act(&[]), Action::Drop));
    assert!(matches!(act(&[1, 2, 3]), Action::Drop));
    // Header claims one question that is not there.
    let Action::Reply(bytes) = act(&[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]) else { panic!() };
    let msg = Message::from_vec(&bytes).unwrap();
    assert_eq!((msg.metadata.id, msg.metadata.response_code), (0xabcd, ResponseCode::FormErr));
    // A response is never answered.
    let mut response = query_bytes("web", RecordType::A, false);
    response[2] |= 0x80;
    assert!(matches!(act(&response), Action::Drop));
    // Two questions.
    let mut two = Message::new(7, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(Name::from_ascii("web").unwrap(), RecordType::A));
    two.add_query(Query::query(Name::from_ascii("db").unwrap(), RecordType::A));
    let Action::Reply(bytes) = act(&two.to_vec().unwrap()) else { panic!() };
    assert_eq!(Message::from_vec(&bytes).unwrap().metadata.response_code, ResponseCode::FormErr);
    // Not a query opcode.
    let mut status = Message::new(8, MessageType::Query, OpCode::Status);
    status.add_query(Query::query(Name::from_ascii("web").unwrap(), RecordType::A));
    let Action::Reply(bytes) = act(&status.to_vec().unwrap()) else { panic!() };
    assert_eq!(Message::from_vec(&bytes).unwrap().metadata.response_code, ResponseCode::NotImp);
    // Chaos class.
    let mut chaos = Message::new(9, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("version.bind").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    let Action::Reply(bytes) = act(&chaos.to_vec().unwrap()) else { panic!() };
    assert_eq!(Message::from_vec(&bytes).unwrap().metadata.response_code, ResponseCode::Refused);
}

#[test]
fn host_view_answers_consul_style_names() {
    let tables = tables();
    let host = |name: &str, qtype| run(&tables, View::Host, &query_bytes(name, qtype, false), Transport::Udp).unwrap();
    let msg = host("web.service.shoal", RecordType::A);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    let data: Vec<RData> = msg.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(ips(&data), set(&["10.0.1.3", "10.0.1.4"]));
    let msg = host("API.service.shoal.", RecordType::A);
    let data: Vec<RData> = msg.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(ips(&data), set(&["10.0.2.3"]));
    let msg = host("node1.node.shoal", RecordType::A);
    let data: Vec<RData> = msg.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(ips(&data), set(&["192.168.1.1"]));
    assert!(host("node1.node.shoal", RecordType::AAAA).answers.is_empty());
    assert_eq!(host("nope.service.shoal", RecordType::A).metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(host("web", RecordType::A).metadata.response_code, ResponseCode::Refused);
    assert_eq!(host("example.com", RecordType::A).metadata.response_code, ResponseCode::Refused);
}
