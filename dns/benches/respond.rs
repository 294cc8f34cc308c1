//! `cargo bench -p shoal-dns --bench respond`: CPU time of the query path without I/O, fast path
//! against the general path (hickory messages), for a `tasks.<svc>` A query with three answers.

use std::{hint::black_box, time::Instant};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};
use shoal_dns::{
    bench::bench_zone,
    query::{respond, respond_general, AnswerConfig, Transport, View},
    table::Tables,
};

fn main() {
    let tables = Tables::build(&bench_zone(100, 3), None).expect("zone");
    let networks = vec!["bench".to_string()];
    let mut msg = Message::new(1, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii("tasks.svc10").expect("name"), RecordType::A));
    let raw = msg.to_vec().expect("query");
    let cfg = AnswerConfig::default();
    let rounds = 1_000_000u32;
    let time = |general: bool| {
        let start = Instant::now();
        for _ in 0..rounds {
            let view = View::Task(&networks);
            let action = if general {
                respond_general(&tables, view, &cfg, &raw, Transport::Udp)
            } else {
                respond(&tables, view, &cfg, &raw, Transport::Udp)
            };
            black_box(action);
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(rounds)
    };
    let general = time(true);
    let fast = time(false);
    println!("respond tasks.<svc> A (3 answers): fast path {fast:.0} ns, general path {general:.0} ns, ratio {:.1}", general / fast);
}
