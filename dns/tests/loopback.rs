//! The server end to end on loopback (no root): listeners, zone swaps, forwarding, flood bounds.

mod common;
mod lab;

use std::{net::SocketAddr, time::Duration};

use common::*;
use hickory_proto::{op::ResponseCode, rr::RecordType};
use shoal_dns::{DnsConfig, DnsServer};

fn config(upstreams: Vec<SocketAddr>) -> DnsConfig {
    DnsConfig { upstreams, upstream_timeout: Duration::from_millis(500), ..DnsConfig::default() }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn task_listener_answers_its_networks_and_follows_zone_changes() {
    let server = DnsServer::new(config(vec![])).unwrap();
    server.set_zone(&zone(&["10.0.1.3", "10.0.1.4"])).unwrap();
    let front = server.attach_task_at("t-front", any_port(), vec!["front".into()]).await.unwrap();
    let back = server.attach_task_at("t-back", any_port(), vec!["Back".into()]).await.unwrap();

    assert_eq!(a_records(&ask_udp(front, "web", RecordType::A).await), ips(&["10.0.1.2"]));
    assert_eq!(a_records(&ask_udp(front, "tasks.web", RecordType::A).await), ips(&["10.0.1.3", "10.0.1.4"]));
    assert_eq!(a_records(&ask_tcp(front, "tasks.web.front", RecordType::A).await), ips(&["10.0.1.3", "10.0.1.4"]));
    let aaaa = ask_udp(front, "web", RecordType::AAAA).await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());

    // Another network's names are invisible.
    assert_eq!(ask_udp(back, "web", RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(a_records(&ask_udp(back, "api", RecordType::A).await), ips(&["10.0.2.2"]));

    // A backend change is answered by the next query.
    server.set_zone(&zone(&["10.0.1.7"])).unwrap();
    assert_eq!(a_records(&ask_udp(front, "tasks.web", RecordType::A).await), ips(&["10.0.1.7"]));

    // An invalid zone is refused and the old one stays.
    let mut bad = zone(&["10.0.1.8"]);
    bad.networks[0].services[0].vip = None;
    let err = server.set_zone(&bad).unwrap_err().to_string();
    assert!(err.contains("no vip"), "{err}");
    assert_eq!(a_records(&ask_udp(front, "tasks.web", RecordType::A).await), ips(&["10.0.1.7"]));

    // Networks of a task can change; detaching closes its listener.
    server.set_task_networks("t-back", vec!["front".into(), "back".into()]).unwrap();
    assert_eq!(a_records(&ask_udp(back, "web", RecordType::A).await), ips(&["10.0.1.2"]));
    server.detach_task("t-back").await.unwrap();
    assert!(server.detach_task("t-back").await.is_err());
    // Its sockets are closed: the address can be bound again.
    std::net::UdpSocket::bind(back).expect("detached task's UDP port is free");
    std::net::TcpListener::bind(back).expect("detached task's TCP port is free");
    let names: Vec<String> = server.attached_tasks().into_iter().map(|(id, _)| id).collect();
    assert_eq!(names, vec!["t-front".to_string()]);
}

#[tokio::test]
async fn forwarding_uses_the_upstreams_in_order_and_servfails_when_all_fail() {
    let upstream = FakeUpstream::start().await;
    // A port nobody listens on: the first upstream fails at once (ICMP port unreachable).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = DnsServer::new(config(vec![dead, upstream.addr])).unwrap();
    server.set_zone(&zone(&[])).unwrap();
    let task = server.attach_task_at("t", any_port(), vec!["front".into()]).await.unwrap();

    let answer = ask_udp(task, "www.ext.test", RecordType::A).await;
    assert_eq!(a_records(&answer), ips(&["10.9.9.9"]));
    // TCP queries are forwarded over TCP (the dead upstream refuses the connection).
    let answer = ask_tcp(task, "tcp.ext.test", RecordType::A).await;
    assert_eq!(a_records(&answer), ips(&["10.9.9.9"]));

    let nx = ask_udp(task, "nothing.example", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    // Upstream SERVFAIL and silence both end in SERVFAIL.
    assert_eq!(ask_udp(task, "fail.test", RecordType::A).await.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ask_udp(task, "slow.test", RecordType::A).await.metadata.response_code, ResponseCode::ServFail);
    // Internal-looking names never reach the upstream.
    assert_eq!(ask_udp(task, "api", RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.count("api."), 0);

    let none = DnsServer::new(config(vec![])).unwrap();
    let t = none.attach_task_at("t", any_port(), vec![]).await.unwrap();
    assert_eq!(ask_udp(t, "www.ext.test", RecordType::A).await.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn a_flooding_task_is_bounded_and_does_not_starve_others() {
    let upstream = FakeUpstream::start().await;
    let server = DnsServer::new(DnsConfig {
        upstreams: vec![upstream.addr],
        upstream_timeout: Duration::from_secs(60),
        max_inflight_per_task: 4,
        ..DnsConfig::default()
    })
    .unwrap();
    server.set_zone(&zone(&[])).unwrap();
    let flooder = server.attach_task_at("flooder", any_port(), vec!["front".into()]).await.unwrap();
    let victim = server.attach_task_at("victim", any_port(), vec!["front".into()]).await.unwrap();

    // 50 queries the upstream never answers: 4 go upstream, 46 are refused at once.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in 0..50u16 {
        socket.send_to(&query(id, "slow.test", RecordType::A), flooder).await.unwrap();
    }
    let mut buf = vec![0u8; 512];
    for _ in 0..46 {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf)).await.unwrap().unwrap();
        let msg = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    }
    // Wait until the 4 admitted queries reached the upstream.
    while upstream.count("slow.test.") < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The other task still gets forwarded answers, and local ones.
    assert_eq!(a_records(&ask_udp(victim, "ok.ext.test", RecordType::A).await), ips(&["10.9.9.9"]));
    assert_eq!(a_records(&ask_udp(victim, "web", RecordType::A).await), ips(&["10.0.1.2"]));
    // The flooder too gets local answers while its forwards are stuck.
    assert_eq!(a_records(&ask_udp(flooder, "web", RecordType::A).await), ips(&["10.0.1.2"]));
    assert_eq!(upstream.count("slow.test."), 4, "no more than max_inflight_per_task went upstream");
    let stats = server.task_stats("flooder").unwrap();
    assert_eq!((stats.forwarded, stats.refused_busy, stats.local), (4, 46, 1), "{stats:?}");
    assert_eq!(server.task_stats("victim").unwrap().queries, 2);
}

#[tokio::test]
async fn host_listener_answers_consul_style_names() {
    let server = DnsServer::new(config(vec![])).unwrap();
    server.set_zone(&zone(&["10.0.1.3", "10.0.1.4"])).unwrap();
    let host = server.serve_host(any_port()).unwrap();
    assert_eq!(a_records(&ask_udp(host, "web.service.shoal", RecordType::A).await), ips(&["10.0.1.3", "10.0.1.4"]));
    assert_eq!(a_records(&ask_tcp(host, "node1.node.shoal", RecordType::A).await), ips(&["127.0.0.1"]));
    assert_eq!(ask_udp(host, "web", RecordType::A).await.metadata.response_code, ResponseCode::Refused);
    assert_eq!(ask_udp(host, "x.service.shoal", RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn bad_config_and_double_attach_are_clear_errors() {
    let err = DnsServer::new(DnsConfig { max_inflight_per_task: 0, ..DnsConfig::default() }).err().unwrap().to_string();
    assert!(err.contains("max_inflight_per_task"), "{err}");
    let server = DnsServer::new(DnsConfig::default()).unwrap();
    server.attach_task_at("t", any_port(), vec![]).await.unwrap();
    let err = server.attach_task_at("t", any_port(), vec![]).await.unwrap_err().to_string();
    assert!(err.contains("already attached"), "{err}");
    let err = server.attach_task("u", std::path::Path::new("/nonexistent/netns"), vec![]).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/netns"), "{err}");
}

#[tokio::test]
async fn ttls_follow_the_config() {
    let server = DnsServer::new(DnsConfig { ttl: 30, tasks_ttl: 1, ..DnsConfig::default() }).unwrap();
    server.set_zone(&zone(&["10.0.1.3"])).unwrap();
    let task = server.attach_task_at("t", any_port(), vec!["front".into()]).await.unwrap();
    let ttls = |m: &hickory_proto::op::Message| m.answers.iter().map(|r| r.ttl).collect::<Vec<_>>();
    assert_eq!(ttls(&ask_udp(task, "web", RecordType::A).await), vec![30]);
    assert_eq!(ttls(&ask_udp(task, "tasks.web", RecordType::A).await), vec![1]);
    assert_eq!(ttls(&ask_udp(task, "web.1.w0", RecordType::A).await), vec![30]);
}

#[tokio::test]
async fn a_silent_upstream_costs_one_timeout_then_the_next_one_is_preferred() {
    let upstream = FakeUpstream::start().await;
    // Reads queries and never answers; counts them.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (count_tx, mut count_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while silent.recv(&mut buf).await.is_ok() {
            let _ = count_tx.send(());
        }
    });
    let server = DnsServer::new(config(vec![silent_addr, upstream.addr])).unwrap();
    let task = server.attach_task_at("t", any_port(), vec![]).await.unwrap();
    for i in 0..5 {
        let name = format!("q{i}.ext.test");
        assert_eq!(a_records(&ask_udp(task, &name, RecordType::A).await), ips(&["10.9.9.9"]));
    }
    reader.abort();
    let mut silent_saw = 0;
    while count_rx.try_recv().is_ok() {
        silent_saw += 1;
    }
    assert_eq!(silent_saw, 1, "only the first query tried the silent upstream");
}

#[tokio::test]
async fn tcp_connections_per_task_are_bounded() {
    let server = DnsServer::new(DnsConfig { max_tcp_connections_per_task: 2, ..DnsConfig::default() }).unwrap();
    server.set_zone(&zone(&["10.0.1.3"])).unwrap();
    let task = server.attach_task_at("t", any_port(), vec!["front".into()]).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(task).await.unwrap();
        let q = query(1, "web", RecordType::A);
        stream.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        stream.write_all(&q).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; len as usize];
        stream.read_exact(&mut buf).await.unwrap();
        held.push(stream);
    }
    // A third connection is closed without an answer while two are held open.
    let mut third = tokio::net::TcpStream::connect(task).await.unwrap();
    let q = query(2, "web", RecordType::A);
    let _ = third.write_all(&(q.len() as u16).to_be_bytes()).await;
    let _ = third.write_all(&q).await;
    let mut buf = [0u8; 2];
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "third connection got {read:?}");
    // Closing one frees a slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut answered = false;
    for _ in 0..100 {
        let mut stream = tokio::net::TcpStream::connect(task).await.unwrap();
        let _ = stream.write_all(&(q.len() as u16).to_be_bytes()).await;
        let _ = stream.write_all(&q).await;
        if let Ok(Ok(len)) = tokio::time::timeout(Duration::from_secs(10), stream.read_u16()).await {
            let mut buf = vec![0u8; len as usize];
            stream.read_exact(&mut buf).await.unwrap();
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "a freed slot serves a new connection");
}

#[tokio::test]
async fn an_oversized_udp_query_gets_formerr() {
    let server = DnsServer::new(config(vec![])).unwrap();
    server.set_zone(&zone(&["10.0.1.3"])).unwrap();
    let task = server.attach_task_at("t", any_port(), vec!["front".into()]).await.unwrap();
    // A valid query followed by 5000 bytes of padding: longer than the 4 KiB the server reads.
    let mut big = query(0x7777, "web", RecordType::A);
    big.extend(std::iter::repeat_n(0u8, 5000));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&big, task).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf)).await.unwrap().unwrap();
    let msg = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((msg.metadata.id, msg.metadata.response_code), (0x7777, ResponseCode::FormErr));
    // Still serving.
    assert_eq!(a_records(&ask_udp(task, "web", RecordType::A).await), ips(&["10.0.1.2"]));
}

#[tokio::test]
async fn ipv4_and_ipv6_listeners_on_one_thread_both_answer() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        lab::skip("ipv4_and_ipv6_listeners_on_one_thread_both_answer", "no IPv6 loopback");
        return;
    }
    let server = DnsServer::new(config(vec![])).unwrap();
    server.set_zone(&zone(&["10.0.1.3"])).unwrap();
    let v4 = server.attach_task_at("t", any_port(), vec!["front".into()]).await.unwrap();
    let v6 = server.serve_host("[::1]:0".parse().unwrap()).unwrap();
    for _ in 0..3 {
        assert_eq!(a_records(&ask_udp(v4, "web", RecordType::A).await), ips(&["10.0.1.2"]));
        let socket = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        socket.send_to(&query(9, "web.service.shoal", RecordType::A), v6).await.unwrap();
        let mut buf = vec![0u8; 1500];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf)).await.unwrap().unwrap();
        let msg = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(a_records(&msg), ips(&["10.0.1.3"]));
    }
}

#[tokio::test]
async fn host_listener_forwards_other_names_only_when_asked() {
    let upstream = FakeUpstream::start().await;
    let forwarding = DnsServer::new(DnsConfig { host_forward: true, ..config(vec![upstream.addr]) }).unwrap();
    let host = forwarding.serve_host(any_port()).unwrap();
    assert_eq!(a_records(&ask_udp(host, "www.ext.test", RecordType::A).await), ips(&["10.9.9.9"]));
    let refusing = DnsServer::new(config(vec![upstream.addr])).unwrap();
    let host = refusing.serve_host(any_port()).unwrap();
    assert_eq!(ask_udp(host, "www.ext.test", RecordType::A).await.metadata.response_code, ResponseCode::Refused);
    assert_eq!(upstream.count("www.ext.test."), 1);
}
