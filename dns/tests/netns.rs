//! Root tests: the DNS served at 127.0.0.11:53 inside task namespaces, checked with `dig` and
//! glibc (`getent`) from inside them; forwarding to a dnsmasq upstream in another namespace over a
//! veth; malformed packets sent inside a task namespace.
//!
//! Layout: the server's runtime runs in a "node" namespace (as `shoal daemon` does in the lab); the
//! upstream namespace is linked to it by a veth; task namespaces only have lo.

mod common;
mod lab;

use std::{net::UdpSocket, time::Duration};

use lab::{have, link, require_root, skip, Dnsmasq, Netns};
use shoal_dns::{resolv_conf_for_task, DnsConfig, DnsServer};

fn tools_present(test: &str) -> bool {
    for tool in ["dig", "dnsmasq", "getent"] {
        if !have(tool) {
            skip(test, &format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn tasks_resolve_their_networks_and_forward_the_rest() {
    require_root();
    if !tools_present("tasks_resolve_their_networks_and_forward_the_rest") {
        return;
    }
    let node = Netns::new("node");
    let upstream_ns = Netns::new("up");
    link(&node, &upstream_ns, "10.254.7");
    let _upstream =
        Dnsmasq::start(Some(&upstream_ns), "10.254.7.2", 53, &[("ext.test".into(), "10.9.9.9".into())], &["--local=/test/".into()]);
    let front = Netns::new("tfront");
    let back = Netns::new("tback");
    let both = Netns::new("tboth");
    for task in [&front, &back, &both] {
        task.set_resolv_conf(&resolv_conf_for_task());
    }
    let (front_path, back_path, both_path) = (front.path(), back.path(), both.path());

    // The server runs on a runtime whose threads live in the node namespace.
    let front_ref = std::sync::Arc::new(front);
    let back_ref = std::sync::Arc::new(back);
    let both_ref = std::sync::Arc::new(both);
    let (f, b, fb) = (front_ref.clone(), back_ref.clone(), both_ref.clone());
    node.run(move || {
        runtime().block_on(async move {
            let server = DnsServer::new(DnsConfig {
                upstreams: vec!["10.254.7.2:53".parse().unwrap()],
                upstream_timeout: Duration::from_secs(2),
                ..DnsConfig::default()
            })
            .unwrap();
            server.set_zone(&common::zone(&["10.0.1.3", "10.0.1.4"])).unwrap();
            server.attach_task("front", &front_path, vec!["front".into()]).await.unwrap();
            server.attach_task("back", &back_path, vec!["back".into()]).await.unwrap();
            server.attach_task("both", &both_path, vec!["front".into(), "back".into()]).await.unwrap();
            let dig = |ns: std::sync::Arc<Netns>, name: &'static str, qtype: &'static str, extra: &'static [&'static str]| {
                tokio::task::spawn_blocking(move || ns.dig(name, qtype, extra))
            };
            let ok = |answers: &[&str]| ("NOERROR".to_string(), answers.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            let nx = || ("NXDOMAIN".to_string(), Vec::<String>::new());

            assert_eq!(dig(f.clone(), "web", "A", &[]).await.unwrap(), ok(&["10.0.1.2"]));
            assert_eq!(dig(f.clone(), "tasks.web", "A", &[]).await.unwrap(), ok(&["10.0.1.3", "10.0.1.4"]));
            assert_eq!(dig(f.clone(), "TASKS.Web.front", "A", &["+tcp"]).await.unwrap(), ok(&["10.0.1.3", "10.0.1.4"]));
            assert_eq!(dig(f.clone(), "web.2.w1", "A", &[]).await.unwrap(), ok(&["10.0.1.4"]));
            assert_eq!(dig(f.clone(), "web", "AAAA", &[]).await.unwrap(), ok(&[]));
            assert_eq!(dig(f.clone(), "3.1.0.10.in-addr.arpa", "PTR", &[]).await.unwrap(), ok(&["web.1.w0.front."]));
            // Other networks' names are invisible.
            assert_eq!(dig(f.clone(), "api", "A", &[]).await.unwrap(), nx());
            assert_eq!(dig(f.clone(), "api.back", "A", &[]).await.unwrap(), nx());
            assert_eq!(dig(b.clone(), "web", "A", &[]).await.unwrap(), nx());
            assert_eq!(dig(b.clone(), "api", "A", &[]).await.unwrap(), ok(&["10.0.2.2"]));
            assert_eq!(dig(fb.clone(), "api", "A", &[]).await.unwrap(), ok(&["10.0.2.2"]));
            assert_eq!(dig(fb.clone(), "web", "A", &[]).await.unwrap(), ok(&["10.0.1.2"]));
            // Forwarded to the upstream namespace, over UDP and TCP.
            assert_eq!(dig(f.clone(), "ext.test", "A", &[]).await.unwrap(), ok(&["10.9.9.9"]));
            assert_eq!(dig(b.clone(), "ext.test", "A", &["+tcp"]).await.unwrap(), ok(&["10.9.9.9"]));
            assert_eq!(dig(f.clone(), "missing.test", "A", &[]).await.unwrap(), nx());

            // glibc in the task, through the resolv.conf shoal writes (ndots:0).
            let fr = f.clone();
            let getent = tokio::task::spawn_blocking(move || fr.exec(&["getent", "hosts", "web"])).await.unwrap();
            assert!(getent.starts_with("10.0.1.2 "), "getent hosts web: {getent:?}");

            // A backend change is answered by the next query.
            server.set_zone(&common::zone(&["10.0.1.9"])).unwrap();
            assert_eq!(dig(f.clone(), "tasks.web", "A", &[]).await.unwrap(), ok(&["10.0.1.9"]));
            assert_eq!(dig(fb.clone(), "tasks.web", "A", &[]).await.unwrap(), ok(&["10.0.1.9"]));

            // Detached: nothing listens any more.
            server.detach_task("back").await.unwrap();
            let bb = b.clone();
            let out = tokio::task::spawn_blocking(move || bb.exec(&["dig", "@127.0.0.11", "+tries=1", "+time=1", "web"])).await.unwrap();
            assert!(!out.contains("status:"), "detached task still answered: {out}");
        });
    });
    drop((front_ref, back_ref, both_ref));
}

/// Malformed, truncated and random packets sent inside a task namespace: the server answers
/// FORMERR or nothing, keeps serving, and never answers another network's names.
#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn malformed_packets_inside_a_task_namespace_do_not_hurt() {
    require_root();
    if !tools_present("malformed_packets_inside_a_task_namespace_do_not_hurt") {
        return;
    }
    let task = std::sync::Arc::new(Netns::new("tmal"));
    let path = task.path();
    let t = task.clone();
    runtime().block_on(async move {
        let server = DnsServer::new(DnsConfig::default()).unwrap();
        server.set_zone(&common::zone(&["10.0.1.3"])).unwrap();
        server.attach_task("mal", &path, vec!["front".into()]).await.unwrap();
        let t2 = t.clone();
        let formerr = tokio::task::spawn_blocking(move || {
            t2.run(|| {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let good = common::query(0x4242, "api.back", hickory_proto::rr::RecordType::A);
                let mut seed: u64 = 0x5eed;
                let mut next = || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                for i in 0..2000usize {
                    let mut packet = good.clone();
                    match i % 3 {
                        0 => packet.truncate((next() as usize) % packet.len()),
                        1 => {
                            let at = (next() as usize) % packet.len();
                            packet[at] ^= next() as u8;
                        }
                        _ => packet = (0..(next() % 300)).map(|_| next() as u8).collect(),
                    }
                    socket.send_to(&packet, "127.0.0.11:53").unwrap();
                    // Read what came back so far (checked below too).
                    socket.set_nonblocking(true).unwrap();
                    let mut buf = [0u8; 1500];
                    while let Ok(n) = socket.recv(&mut buf) {
                        let msg = hickory_proto::op::Message::from_vec(&buf[..n]).expect("answers parse");
                        for record in &msg.answers {
                            assert!(!record.to_string().contains("10.0.2."), "leaked {record}");
                        }
                    }
                    socket.set_nonblocking(false).unwrap();
                }
                // A header with a missing question: FORMERR with the same id. Sent again if the
                // flood above filled the server's receive queue and the kernel dropped it.
                let mut buf = [0u8; 1500];
                let mut got_formerr = false;
                'attempts: for _ in 0..10 {
                    socket.send_to(&[0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0], "127.0.0.11:53").unwrap();
                    while let Ok(n) = socket.recv(&mut buf) {
                        let msg = hickory_proto::op::Message::from_vec(&buf[..n]).expect("answers parse");
                        for record in &msg.answers {
                            assert!(!record.to_string().contains("10.0.2."), "leaked {record}");
                        }
                        if msg.metadata.id == 0xbeef {
                            got_formerr = msg.metadata.response_code == hickory_proto::op::ResponseCode::FormErr;
                            break 'attempts;
                        }
                    }
                }
                got_formerr
            })
        })
        .await
        .unwrap();
        assert!(formerr, "a header without its question gets FORMERR");
        // Still serving.
        let t3 = t.clone();
        let answer = tokio::task::spawn_blocking(move || t3.dig("web", "A", &[])).await.unwrap();
        assert_eq!(answer, ("NOERROR".to_string(), vec!["10.0.1.2".to_string()]));
    });
}

/// A namespace whose lo is down cannot get 127.0.0.11: the error says how to fix it.
#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn attaching_a_task_with_lo_down_names_the_fix() {
    require_root();
    let task = Netns::without_lo("tlodown");
    let path = task.path();
    let err = runtime().block_on(async move {
        let server = DnsServer::new(DnsConfig::default()).unwrap();
        server.attach_task("lodown", &path, vec![]).await.unwrap_err().to_string()
    });
    assert!(err.contains("127.0.0.11:53") && err.contains("ip link set lo up"), "{err}");
}

/// Two nodes, each with its own server and task; both answer from the same zone and both follow a
/// zone change.
#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn tasks_on_two_nodes_get_the_same_answers() {
    require_root();
    if !tools_present("tasks_on_two_nodes_get_the_same_answers") {
        return;
    }
    let (node1, node2) = (Netns::new("node1"), Netns::new("node2"));
    let (t1, t2, t3) = (Netns::new("t1"), Netns::new("t2"), Netns::new("t3"));
    let zone = common::zone(&["10.0.1.3", "10.0.1.4"]);
    let n1 = lab::NodeServer::start(&node1, DnsConfig::default(), vec![("t1".into(), t1.path(), vec!["front".into()])]);
    let n2 = lab::NodeServer::start(
        &node2,
        DnsConfig::default(),
        vec![("t2".into(), t2.path(), vec!["front".into()]), ("t3".into(), t3.path(), vec!["back".into()])],
    );
    for node in [&n1, &n2] {
        node.server.set_zone(&zone).unwrap();
    }
    let ok = |answers: &[&str]| ("NOERROR".to_string(), answers.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for task in [&t1, &t2] {
        assert_eq!(task.dig("web", "A", &[]), ok(&["10.0.1.2"]), "{}", task.name);
        assert_eq!(task.dig("tasks.web", "A", &[]), ok(&["10.0.1.3", "10.0.1.4"]), "{}", task.name);
        assert_eq!(task.dig("api", "A", &[]).0, "NXDOMAIN", "{}", task.name);
    }
    assert_eq!(t3.dig("web", "A", &[]).0, "NXDOMAIN");
    assert_eq!(t3.dig("api", "A", &[]), ok(&["10.0.2.2"]));

    let changed = common::zone(&["10.0.1.5"]);
    for node in [&n1, &n2] {
        node.server.set_zone(&changed).unwrap();
    }
    for task in [&t1, &t2] {
        assert_eq!(task.dig("tasks.web", "A", &[]), ok(&["10.0.1.5"]), "{}", task.name);
    }
    assert_eq!(n2.server.attached_tasks().len(), 2);
    drop((n1, n2));
}
