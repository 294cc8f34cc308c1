//! Fuzzes `shoal_dns::query::respond` with a task on network `front` of a two-network zone: it must
//! never panic, every reply must parse and carry the request id, and no answer may hold an address
//! of network `back` (10.0.2.0/24). The same invariants run in `cargo test` (tests/query_props.rs).
#![no_main]

use std::sync::OnceLock;

use hickory_proto::{op::Message, rr::RData};
use libfuzzer_sys::fuzz_target;
use shoal_dns::{
    query::{respond, Action, AnswerConfig, Transport, View},
    table::Tables,
    Zone,
};

const ZONE: &str = r#"{"networks":[
  {"name":"front","services":[{"name":"web","vip":"10.0.1.2","ports":[{"name":"http","port":80}]}],
   "tasks":[{"id":"w0","service":"web","slot":1,"ip":"10.0.1.3"}]},
  {"name":"back","services":[{"name":"api","vip":"10.0.2.2"}],
   "tasks":[{"id":"a1","service":"api","slot":1,"ip":"10.0.2.3"}]}]}"#;

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let zone: Zone = serde_json::from_str(ZONE).expect("zone");
        Tables::build(&zone, None).expect("tables")
    })
}

fuzz_target!(|data: &[u8]| {
    let networks = vec!["front".to_string()];
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Action::Reply(bytes) = respond(tables(), View::Task(&networks), &AnswerConfig::default(), data, transport) {
            assert_eq!(bytes[..2], data[..2]);
            let msg = Message::from_vec(&bytes).expect("reply parses");
            for record in msg.answers.iter().chain(&msg.additionals) {
                if let RData::A(a) = &record.data {
                    assert!(a.0.octets()[..3] != [10, 0, 2], "leaked {record}");
                }
            }
        }
    }
});
