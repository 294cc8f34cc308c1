use std::time::Instant;
fn main() {
    let zone = shoal_dns::bench::bench_zone(100, 3);
    let nets = vec!["bench".to_string()];
    let tables = shoal_dns::table::Tables::build(&zone, None).unwrap();
    let mut msg = hickory_proto::op::Message::new(1, hickory_proto::op::MessageType::Query, hickory_proto::op::OpCode::Query);
    msg.add_query(hickory_proto::op::Query::query(hickory_proto::rr::Name::from_ascii("tasks.svc10").unwrap(), hickory_proto::rr::RecordType::A));
    let raw = msg.to_vec().unwrap();
    let cfg = shoal_dns::query::AnswerConfig::default();
    let t = Instant::now();
    for _ in 0..3_000_000 {
        let a = shoal_dns::query::respond(&tables, shoal_dns::query::View::Task(&nets), &cfg, &raw, shoal_dns::query::Transport::Udp);
        std::hint::black_box(a);
    }
    println!("respond: {:?} per query", t.elapsed() / 3_000_000);
}
