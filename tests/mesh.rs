//! End-to-end tests of the routing mesh and service VIPs on a 3-node lab, once per load
//! balancer: three `shoal whoami` replicas (one per node) behind a VIP and published ports,
//! reached from the client namespace and from a task. Run as root by tests/run.sh.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::mesh::*;
use support::*;

const NODES: [&str; 3] = ["smgr", "snode1", "snode2"];
const VIP: &str = "10.0.9.100";
const CLIENT_IP: &str = "192.168.33.100";
/// Services besides `web`, each with a VIP and ports and the `other.N` tasks as backends, so a
/// change of one `web` backend is measured against a table that is not tiny.
const EXTRA_SERVICES: usize = 40;

/// `web`: VIP, 5000 -> 80 TCP and UDP through the mesh, 5001 -> 80 keeping the client address,
/// 6000 -> 80 in host mode; web.1..3 one per node.
fn state(lab: &Lab, node: &str, unhealthy: &[&str]) -> Value {
    let endpoints: Vec<Value> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let id = format!("web.{}", i + 1);
            let mut e = json!({"id": id, "network": "backend", "node": n, "ip": task_ip(i)});
            if *n == node {
                e["netns"] = json!(lab.task_ns(&format!("{n}-web")));
            }
            if unhealthy.contains(&id.as_str()) {
                e["healthy"] = json!(false);
            }
            e
        })
        .chain(NODES.iter().enumerate().map(|(i, n)| {
            let mut e = json!({"id": format!("other.{}", i + 1), "network": "backend", "node": n, "ip": format!("10.0.9.{}", 20 + i)});
            if *n == node {
                e["netns"] = json!(lab.task_ns(&format!("{n}-other")));
            }
            e
        }))
        .collect();
    let mut services = vec![json!({
        "name": "web", "vips": {"backend": VIP},
        "ports": [
            {"target": 80, "published": 5000},
            {"target": 80, "published": 5000, "protocol": "udp"},
            {"target": 81, "published": 5001, "keep_client_ip": true},
            {"target": 82, "published": 6000, "mode": "host"},
        ],
        "backends": ["web.1", "web.2", "web.3"],
    })];
    for s in 0..EXTRA_SERVICES {
        services.push(json!({
            "name": format!("extra{s}"), "vips": {"backend": format!("10.0.9.{}", 110 + s)},
            "ports": [{"target": 80}, {"target": 90, "published": 7000 + s}],
            "backends": ["other.1", "other.2", "other.3"],
        }));
    }
    json!({
        "node": node,
        "nodes": NODES.iter().enumerate().map(|(i, n)| json!({"name": n, "address": node_addr(i)})).collect::<Vec<_>>(),
        "networks": [{"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24",
                      "lb_addresses": {"smgr": lb_addr(0), "snode1": lb_addr(1), "snode2": lb_addr(2)}}],
        "endpoints": endpoints,
        "services": services,
    })
}

/// The lab and what the test started in it (see [`MeshLab`]).
type Mesh = MeshLab;

impl MeshLab {
    fn apply_all(&self, unhealthy: &[&str]) -> Vec<usize> {
        NODES.iter().map(|n| self.apply(n, &state(&self.lab, n, unhealthy)).0).collect()
    }

    fn start_whoami(&mut self) {
        for n in NODES {
            for port in ["80", "81", "82"] {
                let mut child = self
                    .task_command(n, &format!("{n}-web"), &[SHOAL, "whoami", "--name", &format!("{n}-web"), "--port", port])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("spawn whoami");
                let mut line = String::new();
                BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
                assert!(line.contains("listening"), "whoami on {n}:{port} did not start: {line}");
                self.procs.push(child);
            }
        }
    }
}

/// (name, remote address) from a whoami answer.
fn parse(text: &str) -> Option<(String, SocketAddrV4)> {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    Some((field("Name:")?.to_string(), field("RemoteAddr:")?.parse().ok()?))
}

/// `n` HTTP requests from namespace `ns`, one connection each: (name, remote) per answer.
fn tcp_requests(ns: &str, addr: SocketAddrV4, n: usize) -> Vec<Result<(String, SocketAddrV4), String>> {
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

fn udp_requests(ns: &str, addr: SocketAddrV4, n: usize) -> Vec<Result<(String, SocketAddrV4), String>> {
    on_thread_in(ns, move || {
        (0..n)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                udp_ask(&s, addr)
            })
            .collect()
    })
    .join()
    .unwrap()
}

fn udp_ask(s: &UdpSocket, addr: SocketAddrV4) -> Result<(String, SocketAddrV4), String> {
    s.send_to(b"hi", addr).map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 2048];
    let (len, from) = s.recv_from(&mut buf).map_err(|e| format!("recv from {addr}: {e}"))?;
    if from != std::net::SocketAddr::V4(addr) {
        return Err(format!("answer came from {from}, not {addr}"));
    }
    parse(&String::from_utf8_lossy(&buf[..len])).ok_or("bad answer".into())
}

fn names(answers: &[Result<(String, SocketAddrV4), String>], what: &str) -> BTreeSet<String> {
    answers.iter().map(|a| a.clone().unwrap_or_else(|e| panic!("{what}: {e}")).0).collect()
}

fn all_replicas() -> BTreeSet<String> {
    NODES.iter().map(|n| format!("{n}-web")).collect()
}

/// Every replica answers through a VIP from a task (curl, in the task's cgroup).
fn vip_names(mesh: &Mesh, from: &str, n: usize) -> BTreeSet<String> {
    // One curl for all n requests (a process per request costs 0.2 s under the kernel lab's
    // emulation), each on a connection of its own ("Connection: close", and curl's count of the
    // connections it opened is checked), so each is balanced on its own.
    const END: &str = "--shoal-transfer-end--";
    let url = format!("http://{VIP}:80/");
    let write_out = format!("\n%{{num_connects}} {END}\n");
    let mut args = vec!["curl", "-s", "-m", "3", "-H", "Connection: close", "-w", &write_out];
    args.extend(std::iter::repeat_n(url.as_str(), n));
    let out = mesh.task_command(from, &format!("{from}-web"), &args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let transfers: Vec<&str> = text.split_terminator(&format!("{END}\n")).collect();
    assert_eq!(
        transfers.len(),
        n,
        "VIP from {from}: {n} requests, {} answers:\n{text}\n{}",
        transfers.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = BTreeSet::new();
    for t in transfers {
        let (body, connects) = t.trim_end().rsplit_once('\n').unwrap_or(("", t.trim()));
        assert_eq!(connects.trim(), "1", "VIP from {from}: a request did not open a connection of its own: {t:?}");
        let (name, _) = parse(body).unwrap_or_else(|| panic!("VIP from {from}: no answer ({})", String::from_utf8_lossy(&out.stderr)));
        seen.insert(name);
    }
    seen
}

/// A keep-alive HTTP connection from the client namespace.
fn open_conn(ns: &str, addr: SocketAddrV4) -> TcpStream {
    let s = on_thread_in(ns, move || TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)).expect("connect")).join().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn routing_mesh(test: &str, lb: &'static str) {
    let lab = Lab::up(3);
    let mut mesh = MeshLab { procs: Vec::new(), lab, lb, nodes: &NODES };
    let first = NODES.iter().map(|n| mesh.apply(n, &state(&mesh.lab, n, &[]))).collect::<Vec<_>>();
    for (n, (changes, stderr)) in NODES.iter().zip(&first) {
        assert!(*changes > 0, "first apply on {n} changed nothing");
        assert!(stderr.contains(&format!("load balancer: {lb}")), "the choice is not reported on {n}: {stderr}");
    }
    mesh.start_whoami();
    let client = mesh.lab.node_ns("client");
    let client_ip: std::net::Ipv4Addr = CLIENT_IP.parse().unwrap();

    // The routing mesh: every node's :5000 reaches all 3 replicas, SNATed to that node's LB address.
    for (i, n) in NODES.iter().enumerate() {
        let addr: SocketAddrV4 = format!("{}:5000", node_addr(i)).parse().unwrap();
        let answers = tcp_requests(&client, addr, 30);
        assert_eq!(names(&answers, &format!("TCP via {n}")), all_replicas(), "{test}: TCP via {n}");
        for a in answers.iter().flatten() {
            assert_eq!(a.1.ip().to_string(), lb_addr(i), "{test}: mesh traffic via {n} must come from its LB address");
        }
        let answers = udp_requests(&client, addr, 30);
        assert_eq!(names(&answers, &format!("UDP via {n}")), all_replicas(), "{test}: UDP via {n}");
    }
    // Host mode: only the local task, and it sees the client's address.
    for (i, n) in NODES.iter().enumerate() {
        let addr: SocketAddrV4 = format!("{}:6000", node_addr(i)).parse().unwrap();
        for a in tcp_requests(&client, addr, 5) {
            let (name, remote) = a.unwrap_or_else(|e| panic!("{test}: host mode on {n}: {e}"));
            assert_eq!(name, format!("{n}-web"), "{test}: host mode on {n} answered by another node's task");
            assert_eq!(*remote.ip(), client_ip, "{test}: host mode must keep the client address");
        }
        // keep_client_ip through the mesh: the local task, client address kept.
        let addr: SocketAddrV4 = format!("{}:5001", node_addr(i)).parse().unwrap();
        for a in tcp_requests(&client, addr, 5) {
            let (name, remote) = a.unwrap_or_else(|e| panic!("{test}: keep_client_ip on {n}: {e}"));
            assert_eq!(name, format!("{n}-web"), "{test}: keep_client_ip on {n} must prefer the local task");
            assert_eq!(*remote.ip(), client_ip, "{test}: keep_client_ip lost the client address");
        }
    }
    // From a task, the VIP reaches every replica.
    assert_eq!(vip_names(&mesh, "snode1", 30), all_replicas(), "{test}: VIP from a task on snode1");

    // Re-apply: nothing to do.
    assert_eq!(mesh.apply_all(&[]), vec![0, 0, 0], "{test}: re-apply changed the kernel");

    // Graceful drain: open a TCP flow and a UDP socket to smgr:5000, then mark that backend unhealthy.
    let smgr: SocketAddrV4 = format!("{}:5000", node_addr(0)).parse().unwrap();
    let mut conn = open_conn(&client, smgr);
    let (drained, _) = parse(&http_get(&mut conn).unwrap()).unwrap();
    let udp = on_thread_in(&client, move || {
        // a UDP socket whose flow is on the backend to be drained
        for _ in 0..100 {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            if udp_ask(&s, smgr).map(|a| a.0).as_deref() == Ok(drained.as_str()) {
                return s;
            }
        }
        panic!("no UDP flow landed on {drained} in 100 tries");
    });
    let (drained, _) = parse(&http_get(&mut conn).unwrap()).unwrap();
    let udp = udp.join().unwrap();
    let id = format!("web.{}", NODES.iter().position(|n| format!("{n}-web") == drained).unwrap() + 1);
    let changed = mesh.apply_all(&[id.as_str()]);
    // One backend change touches the frontends of its service that held it (at most 6: the VIP's
    // any-port tcp and udp; published 5000/tcp, 5000/udp, 5001, 6000), never the other services'.
    let frontends_with_backend = 6;
    for (n, c) in NODES.iter().zip(&changed) {
        assert!(*c > 0 && *c <= 3 * frontends_with_backend, "{test}: removing one backend on {n} took {c} changes");
    }
    for (i, n) in NODES.iter().enumerate() {
        let addr: SocketAddrV4 = format!("{}:5000", node_addr(i)).parse().unwrap();
        let fresh = names(&tcp_requests(&client, addr, 30), "after drain");
        assert!(!fresh.contains(&drained), "{test}: removed backend {drained} got a new flow via {n}: {fresh:?}");
        assert_eq!(fresh.len(), 2, "{test}: via {n}: {fresh:?}");
    }
    let fresh = vip_names(&mesh, "snode2", 20);
    assert!(!fresh.contains(&drained), "{test}: removed backend {drained} got a new VIP flow");
    assert_eq!(
        parse(&http_get(&mut conn).unwrap()).unwrap().0,
        drained,
        "{test}: the open TCP flow moved or broke after its backend was removed"
    );
    // The UDP flow moves on instead of being black-holed.
    let moved = on_thread_in(&client, move || udp_ask(&udp, smgr)).join().unwrap();
    let (to, _) = moved.unwrap_or_else(|e| panic!("{test}: the UDP flow to the removed backend was black-holed: {e}"));
    assert_ne!(to, drained, "{test}: the UDP flow stayed on the removed backend");

    // Restart: a new process adopts what is there (no change) and the open flow goes on.
    assert_eq!(mesh.apply_all(&[id.as_str()]), vec![0, 0, 0], "{test}: a second process changed the kernel");
    assert_eq!(parse(&http_get(&mut conn).unwrap()).unwrap().0, drained, "{test}: the open TCP flow broke across a restart");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_ebpf_routing_mesh_vip_drain_restart() {
    require_root();
    let probe = shoal_ebpf::probe();
    if !probe.sock_lb.is_available() || !probe.tc_nat.is_available() {
        skip("mesh_ebpf_routing_mesh_vip_drain_restart", &format!("eBPF: socket LB {}; tc NAT {}", probe.sock_lb, probe.tc_nat));
        return;
    }
    routing_mesh("ebpf", "ebpf");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_nftables_routing_mesh_vip_drain_restart() {
    require_root();
    routing_mesh("nftables", "nftables");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_ipvs_routing_mesh_vip_drain_restart() {
    require_root();
    let test = "mesh_ipvs_routing_mesh_vip_drain_restart";
    if let Err(reason) = shoal_dataplane::lb::ipvs::probe() {
        skip(test, &format!("IPVS: {reason}"));
        return;
    }
    routing_mesh("ipvs", "ipvs");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_bad_service_input_names_the_field_and_changes_nothing() {
    let lab = Lab::up(3);
    let mesh = MeshLab { procs: Vec::new(), lab, lb: "nftables", nodes: &NODES };
    mesh.apply("smgr", &state(&mesh.lab, "smgr", &[]));
    let before = mesh.lab.show("smgr");
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "services[0].backends[3]",
            "endpoint 'ghost' is not in `endpoints`",
            Box::new(|s| s["services"][0]["backends"].as_array_mut().unwrap().push(json!("ghost"))),
        ),
        (
            "services[1].ports[1].published",
            "5000/tcp is already published by service 'web'",
            Box::new(|s| s["services"][1]["ports"][1]["published"] = json!(5000)),
        ),
        ("services[0].vips.backend", "is not a free host address", Box::new(|s| s["services"][0]["vips"]["backend"] = json!("10.0.9.1"))),
        (
            "services[0].ports[3].mode",
            "needs a published port",
            Box::new(|s| s["services"][0]["ports"][3].as_object_mut().unwrap().remove("published").map(drop).unwrap_or(())),
        ),
    ];
    for (field, problem, edit) in cases {
        let mut s = state(&mesh.lab, "smgr", &[]);
        edit(&mut s);
        let path = std::env::temp_dir().join(format!("{}-bad.json", mesh.lab.name));
        std::fs::write(&path, serde_json::to_vec(&s).unwrap()).unwrap();
        let out =
            shoal(&["--netns", &mesh.lab.node_ns("smgr"), "dataplane", "apply", "--lb", "nftables", "--state", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field}: bad input was accepted");
        assert!(stderr.contains(field) && stderr.contains(problem), "{field}: error does not name it:\n{stderr}");
        assert_eq!(mesh.lab.show("smgr"), before, "{field}: state changed");
    }
}

/// Unmounts a bpffs the test mounted, should the code under test not have.
struct Mounted(String);

impl Drop for Mounted {
    fn drop(&mut self) {
        if shoal_ebpf::is_bpffs(std::path::Path::new(&self.0)).unwrap_or(false) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `--lb auto` where eBPF's pins say it ran (so it is not test-loaded again) but what is pinned
/// cannot be adopted: eBPF is cleaned up and nftables takes over, with the reason reported.
#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_auto_falls_back_when_pinned_ebpf_cannot_be_adopted() {
    require_root();
    let test = "mesh_auto_falls_back_when_pinned_ebpf_cannot_be_adopted";
    let probe = shoal_ebpf::probe();
    if !probe.sock_lb.is_available() || !probe.tc_nat.is_available() {
        skip(test, &format!("eBPF (auto would not choose it): socket LB {}; tc NAT {}", probe.sock_lb, probe.tc_nat));
        return;
    }
    let lab = Lab::up(3);
    let mesh = MeshLab { procs: Vec::new(), lab, lb: "auto", nodes: &NODES };
    // A pin directory whose service map is not a map.
    let pins = format!("/run/shoal/{}/bpf", mesh.lab.node_ns("smgr"));
    std::fs::create_dir_all(&pins).unwrap();
    assert!(Command::new("mount").args(["-t", "bpf", "bpf", &pins]).status().unwrap().success(), "mount bpffs on {pins}");
    let _mounted = Mounted(pins.clone());
    std::fs::create_dir_all(format!("{pins}/sock/sock_svc")).unwrap();

    let (changes, stderr) = mesh.apply("smgr", &state(&mesh.lab, "smgr", &[]));
    assert!(stderr.contains("load balancer: nftables"), "{test}: nftables did not take over: {stderr}");
    assert!(stderr.contains("ebpf unavailable (failed to open here"), "{test}: the reason is not reported: {stderr}");
    assert!(changes > 0, "{test}: nothing was programmed");
    let table = in_ns(&mesh.lab.node_ns("smgr"), &["nft", "list", "table", "ip", "shoal"]);
    assert!(table.status.success() && String::from_utf8_lossy(&table.stdout).contains("5000"), "{test}: no nftables frontend for :5000");
    assert!(!std::path::Path::new(&format!("{pins}/sock/sock_svc")).exists(), "{test}: the failed eBPF balancer was not cleaned up");
}
