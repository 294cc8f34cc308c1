//! Property test of the query path (the fuzz target's invariants, run in `cargo test`): mutated,
//! truncated and random packets never panic, every reply carries the request's id, and a task on
//! network `front` never gets an address or name of network `back`.

mod common;

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RData, Record, RecordType},
};
use proptest::prelude::*;
use shoal_dns::{
    query::{respond, respond_general, Action, AnswerConfig, Transport, View},
    table::Tables,
};

const NAMES: &[&str] = &[
    "web",
    "tasks.web",
    "web.front",
    "api",
    "tasks.api",
    "api.back",
    "api.1.a1",
    "api.1.a1.back",
    "web.1.w0",
    "example.com",
    "3.2.0.10.in-addr.arpa",
    "2.2.0.10.in-addr.arpa",
    "2.1.0.10.in-addr.arpa",
    "_http._tcp.web",
    "x.service.shoal",
    "web.service.shoal",
    "node1.node.shoal",
    ".",
];
const TYPES: &[RecordType] = &[RecordType::A, RecordType::AAAA, RecordType::ANY, RecordType::PTR, RecordType::SRV, RecordType::TXT];

fn seed(name: usize, qtype: usize, id: u16, edns: bool) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = id.is_multiple_of(2);
    msg.metadata.checking_disabled = id.is_multiple_of(3);
    let mut text = NAMES[name].to_string();
    if id.is_multiple_of(5) {
        text.make_ascii_uppercase();
    }
    msg.add_query(Query::query(Name::from_ascii(&text).unwrap(), TYPES[qtype]));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(if id.is_multiple_of(7) { 256 } else { 4096 });
        if !id.is_multiple_of(2) {
            // A client cookie, as dig sends.
            e.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]));
        }
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(mut raw: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip(i, b) if !raw.is_empty() => {
                let i = i % raw.len();
                raw[i] ^= b;
            }
            Mutation::Truncate(n) => raw.truncate(n % (raw.len() + 1)),
            Mutation::Insert(i, bytes) => {
                let i = i % (raw.len() + 1);
                raw.splice(i..i, bytes.iter().copied());
            }
            _ => {}
        }
    }
    raw
}

fn is_back(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 0, 2])
}

fn check_record(record: &Record) {
    match &record.data {
        RData::A(a) => assert!(!is_back(IpAddr::V4(a.0)), "leaked {record}"),
        RData::AAAA(_) => {}
        RData::PTR(p) => assert!(!p.0.to_ascii().contains("back"), "leaked {record}"),
        RData::SRV(s) => assert!(!s.target.to_ascii().contains("back"), "leaked {record}"),
        _ => {}
    }
}

/// A reply with its answers in a canonical order (answers come shuffled).
fn canonical(bytes: &[u8]) -> Message {
    let mut msg = Message::from_vec(bytes).expect("reply parses");
    msg.answers.sort_by_key(|r| r.to_string());
    msg
}

/// The full path (with the fast path for plain A/AAAA questions) answers exactly like the general
/// path alone.
fn check_fast_path(tables: &Tables, view: View<'_>, cfg: &AnswerConfig, raw: &[u8], transport: Transport) {
    let fast = respond(tables, view, cfg, raw, transport);
    let general = respond_general(tables, view, cfg, raw, transport);
    match (&fast, &general) {
        (Action::Reply(a), Action::Reply(b)) => {
            assert_eq!(canonical(a), canonical(b), "fast and general replies differ for {raw:02x?}");
            assert_eq!(a.len(), b.len(), "fast and general reply sizes differ for {raw:02x?}");
        }
        (Action::Forward(_), Action::Forward(_)) | (Action::Drop, Action::Drop) => {}
        _ => panic!("fast path {fast:?} vs general {general:?} for {raw:02x?}"),
    }
}

fn check(tables: &Tables, raw: &[u8]) {
    let networks = vec!["front".to_string()];
    let cfg = AnswerConfig::default();
    for view in [View::Task(&networks), View::Host] {
        for transport in [Transport::Udp, Transport::Tcp] {
            check_fast_path(tables, view, &cfg, raw, transport);
            match respond(tables, view, &cfg, raw, transport) {
                Action::Drop => {}
                Action::Forward(query) => {
                    assert!(matches!(view, View::Task(_)), "host view never forwards by default");
                    assert_eq!(query.raw, raw);
                    // Both fallbacks encode.
                    Message::from_vec(&query.servfail()).unwrap();
                    Message::from_vec(&query.refused()).unwrap();
                }
                Action::Reply(bytes) => {
                    assert!(bytes.len() >= 12);
                    assert_eq!(bytes[..2], raw[..2], "reply id");
                    if transport == Transport::Udp {
                        assert!(bytes.len() <= 1232, "UDP reply of {} bytes", bytes.len());
                    }
                    let msg = Message::from_vec(&bytes).expect("reply parses");
                    assert_eq!(msg.metadata.message_type, MessageType::Response);
                    if matches!(view, View::Task(_)) {
                        msg.answers.iter().chain(&msg.additionals).for_each(check_record);
                    }
                }
            }
        }
    }
}

fn tables() -> &'static Tables {
    static TABLES: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    TABLES.get_or_init(build_tables)
}

fn build_tables() -> Tables {
    let mut zone = common::zone(&["10.0.1.3", "10.0.1.4"]);
    zone.networks[1].services[0].ports.push(shoal_dns::PortRecord {
        name: Some("http".into()),
        protocol: shoal_dns::Protocol::Tcp,
        port: 80,
    });
    Tables::build(&zone, None).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_queries_never_panic_or_leak(
        name in 0..NAMES.len(),
        qtype in 0..TYPES.len(),
        id in any::<u16>(),
        edns in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 0..6),
    ) {
        let tables = tables();
        let raw = apply(seed(name, qtype, id, edns), &mutations);
        check(tables, &raw);
    }

    #[test]
    fn random_packets_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(tables(), &raw);
    }
}

#[test]
fn unmutated_seeds_from_front_never_see_back() {
    let tables = tables();
    for name in 0..NAMES.len() {
        for qtype in 0..TYPES.len() {
            check(tables, &seed(name, qtype, 7, false));
        }
    }
}
