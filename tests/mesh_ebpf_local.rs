//! End-to-end test of node-local clients through the eBPF load balancer: a process in a node's
//! own network namespace (not a task) reaches every replica through a VIP, through
//! `<node address>:<published port>` and through `127.0.0.1:<published port>`, as Docker's routing
//! mesh answers `curl localhost:5000` on a node. The hooks doing it sit on the root cgroup, so the
//! test also checks that they change nothing for processes of other namespaces: another lab node
//! without a balancer of its own, and the host (this test process). Run as root by tests/run.sh.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::mesh::*;
use support::*;

const NODES: [&str; 3] = ["smgr", "snode1", "snode2"];
const VIP: &str = "10.0.9.100";

/// `web`: VIP:80, 5000 -> 80 (TCP and UDP) and `host_port` -> 81 through the mesh; web.1..3 one
/// per node, those in `unhealthy` marked so.
fn state(lab: &Lab, node: &str, host_port: u16, unhealthy: &[&str]) -> Value {
    let endpoints: Vec<Value> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let id = format!("web.{}", i + 1);
            let mut e = json!({"id": id, "network": "backend", "node": n, "ip": task_ip(i), "healthy": !unhealthy.contains(&id.as_str())});
            if *n == node {
                e["netns"] = json!(lab.task_ns(&format!("{n}-web")));
            }
            e
        })
        .collect();
    json!({
        "node": node,
        "nodes": NODES.iter().enumerate().map(|(i, n)| json!({"name": n, "address": node_addr(i)})).collect::<Vec<_>>(),
        "networks": [{"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24",
                      "lb_addresses": {"smgr": lb_addr(0), "snode1": lb_addr(1), "snode2": lb_addr(2)}}],
        "endpoints": endpoints,
        "services": [{
            "name": "web", "vips": {"backend": VIP},
            "ports": [
                {"target": 80, "published": 5000},
                {"target": 80, "published": 5000, "protocol": "udp"},
                {"target": 81, "published": host_port},
            ],
            "backends": ["web.1", "web.2", "web.3"],
        }],
    })
}

/// The lab plus what the test started in it; on drop: kill the servers, tear the data plane down
/// on every node (eBPF pins, cgroups and root-cgroup links live outside the namespaces).
struct Mesh {
    /// (node, process) of every task process started.
    procs: Vec<(&'static str, Child)>,
    lab: Lab,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, p) in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in NODES {
            let out = shoal(&["--netns", &self.lab.node_ns(n), "dataplane", "teardown"]);
            if !out.status.success() {
                eprintln!("teardown {n}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

impl Mesh {
    /// Applies `state` on `node` with the eBPF balancer; returns the number of changes.
    fn apply(&self, node: &str, state: &Value) -> usize {
        let path = std::env::temp_dir().join(format!("{}-{node}-local.json", self.lab.name));
        std::fs::write(&path, serde_json::to_vec_pretty(state).unwrap()).unwrap();
        let out = shoal(&["--netns", &self.lab.node_ns(node), "dataplane", "apply", "--lb", "ebpf", "--state", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "apply on {node} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        changes(&String::from_utf8_lossy(&out.stdout))
    }

    /// `shoal whoami` in each node's task namespace and cgroup, on ports 80 and 81.
    fn start_whoami(&mut self) {
        for (n, port) in NODES.into_iter().flat_map(|n| [(n, "80"), (n, "81")]) {
            let ns = format!("/run/netns/{}", self.lab.task_ns(&format!("{n}-web")));
            let cg = format!("{}/shoal/{}", cgroup2(), self.lab.node_ns(n));
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(r#"cg=$1; ns=$2; shift 2; if [ -d "$cg" ]; then echo $$ > "$cg/cgroup.procs" || exit 1; fi; exec nsenter --net="$ns" "$@""#)
                .args(["sh", &cg, &ns, SHOAL, "whoami", "--name", &format!("{n}-web"), "--port", port])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn whoami");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            assert!(line.contains("listening"), "whoami on {n} did not start: {line}");
            self.procs.push((n, child));
        }
    }

    /// Kills the task processes of `node` (so its cgroup can go).
    fn stop_tasks(&mut self, node: &str) {
        for (_, p) in self.procs.iter_mut().filter(|(n, _)| *n == node) {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// The name in a whoami answer.
fn parse(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("Name:")).map(|n| n.trim().to_string())
}

/// `n` HTTP requests from namespace `ns` (on a thread of this process, so in no shoal cgroup),
/// one connection each: the answering replica, or the error.
fn tcp_requests(ns: &str, addr: SocketAddrV4, n: usize) -> Vec<Result<String, String>> {
    on_thread_in(ns, move || {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let body = http_get(&mut s)?;
                parse(&body).ok_or_else(|| format!("bad answer {body:?}"))
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// `n` UDP requests, a new socket each; the answer must come from `addr` as the client sent it.
fn udp_requests(ns: &str, addr: SocketAddrV4, n: usize) -> Vec<Result<String, String>> {
    on_thread_in(ns, move || {
        (0..n)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.send_to(b"hi", addr).map_err(|e| format!("send: {e}"))?;
                let mut buf = [0u8; 2048];
                let (len, from) = s.recv_from(&mut buf).map_err(|e| format!("recv from {addr}: {e}"))?;
                if from != std::net::SocketAddr::V4(addr) {
                    return Err(format!("answer came from {from}, not {addr}"));
                }
                parse(&String::from_utf8_lossy(&buf[..len])).ok_or("bad answer".into())
            })
            .collect()
    })
    .join()
    .unwrap()
}

fn names(answers: &[Result<String, String>], what: &str) -> BTreeSet<String> {
    answers.iter().map(|a| a.clone().unwrap_or_else(|e| panic!("{what}: {e}"))).collect()
}

fn all_replicas() -> BTreeSet<String> {
    NODES.iter().map(|n| format!("{n}-web")).collect()
}

/// A TCP listener in namespace `ns` on 127.0.0.1:`port` answering `id` to each connection, for
/// `conns` connections (its thread ends after them or after 20 s).
fn loopback_server(ns: &str, port: u16, id: &'static str, conns: usize) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = on_thread_in(ns, move || {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1 in the other node");
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while served < conns && std::time::Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let _ = s.write_all(id.as_bytes());
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ready_rx.recv().unwrap();
    h
}

/// What a plain TCP connection from `ns` to `addr` reads until the peer closes, or the error.
fn read_all(ns: &str, addr: SocketAddrV4) -> Result<String, String> {
    on_thread_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| format!("read: {e}"))?;
        Ok(out)
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_ebpf_node_local_clients_are_balanced_and_other_namespaces_untouched() {
    const TEST: &str = "mesh_ebpf_node_local_clients_are_balanced_and_other_namespaces_untouched";
    require_root();
    let probe = shoal_ebpf::probe();
    if !probe.sock_lb.is_available() || !probe.tc_nat.is_available() {
        skip(TEST, &format!("eBPF: socket LB {}; tc NAT {}", probe.sock_lb, probe.tc_nat));
        return;
    }
    // A port of the host's own loopback (this process) that the lab also publishes.
    let host_listener = TcpListener::bind("127.0.0.1:0").expect("bind on the host's loopback");
    let host_port = host_listener.local_addr().unwrap().port();

    let lab = Lab::up(3);
    let mut mesh = Mesh { procs: Vec::new(), lab };
    for n in NODES {
        mesh.apply(n, &state(&mesh.lab, n, host_port, &[]));
    }
    mesh.start_whoami();
    let smgr = mesh.lab.node_ns("smgr");

    // A restart finding the options file older builds kept beside the pins (here a wrong one)
    // reads the options from the maps instead, changes nothing, and removes the file.
    let legacy = std::path::Path::new("/run/shoal").join(&smgr).join("ebpf-keep-client-ip.json");
    std::fs::write(&legacy, format!(r#"{{"{}:5000/tcp":true}}"#, node_addr(0))).unwrap();
    assert_eq!(mesh.apply("smgr", &state(&mesh.lab, "smgr", host_port, &[])), 0, "{TEST}: re-apply with an old options file");
    assert!(!legacy.exists(), "{TEST}: the old options file was left behind");
    let at = |ip: &str, port: u16| -> SocketAddrV4 { SocketAddrV4::new(ip.parse().unwrap(), port) };
    let loopback = |port: u16| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);

    // From the node's own namespace (a process in no shoal cgroup): every replica answers.
    for (what, addr) in [
        ("node address:5000", at(&node_addr(0), 5000)),
        ("127.0.0.1:5000", loopback(5000)),
        ("VIP:80", at(VIP, 80)),
        ("127.0.0.1:<host port>", loopback(host_port)),
    ] {
        assert_eq!(names(&tcp_requests(&smgr, addr, 30), what), all_replicas(), "{TEST}: {what} from smgr's namespace");
    }
    assert_eq!(names(&udp_requests(&smgr, loopback(5000), 30), "UDP 127.0.0.1:5000"), all_replicas(), "{TEST}: UDP from smgr");

    // The host's own namespace is untouched: this process reaches its own listener.
    let conn = TcpStream::connect(loopback(host_port)).expect("connect on the host's loopback");
    let (accepted, peer) = host_listener.accept().expect("the host's listener gets the connection");
    assert_eq!(peer, conn.local_addr().unwrap(), "{TEST}: the host's connection to 127.0.0.1:{host_port} went elsewhere");
    drop((conn, accepted));

    // Another lab node without a balancer of its own: the root-cgroup hooks of smgr and snode1
    // run for its processes too, and must change nothing there. (Its teardown also removes its
    // overlay, so smgr stops sending to its task.)
    mesh.apply("smgr", &state(&mesh.lab, "smgr", host_port, &["web.3"]));
    let snode2 = mesh.lab.node_ns("snode2");
    mesh.stop_tasks("snode2");
    let out = shoal(&["--netns", &snode2, "dataplane", "teardown"]);
    assert!(out.status.success(), "teardown on snode2: {}", String::from_utf8_lossy(&out.stderr));
    let server = loopback_server(&snode2, 5000, "snode2-own", 5);
    for _ in 0..5 {
        assert_eq!(read_all(&snode2, loopback(5000)).as_deref(), Ok("snode2-own"), "{TEST}: snode2's own 127.0.0.1:5000");
    }
    server.join().unwrap();
    for a in tcp_requests(&snode2, at(VIP, 80), 3) {
        assert!(a.is_err(), "{TEST}: the VIP was balanced in snode2's namespace, which has no balancer: {a:?}");
    }
    // ...while smgr's own processes still are: snode2's teardown detached only its own hooks.
    let two: BTreeSet<String> = ["smgr-web", "snode1-web"].into_iter().map(String::from).collect();
    assert_eq!(names(&tcp_requests(&smgr, loopback(5000), 30), "after snode2's teardown"), two, "{TEST}: smgr after snode2's teardown");
}
