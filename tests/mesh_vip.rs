//! End-to-end tests of VIPs that carry every port (issue 12), once per load balancer, on a 3-node
//! lab: `web` publishes no port and lists none, its replicas (one per node) listen on TCP 80 and
//! 6379 and UDP 6379, and a task of another service reaches each of those ports on every replica
//! through the VIP: a process in the task's cgroup (the eBPF balancer's socket path) and a process
//! that joined only the task's network namespace (`nsenter --net`: the packet path). Then an open
//! connection survives a restart and a drain. Run as root by tests/run.sh.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::mesh::*;
use support::*;

const NODES: [&str; 3] = ["smgr", "snode1", "snode2"];
const VIP: &str = "10.0.9.100";
/// The client task (service `probe`) runs here, where `web` has a replica too.
const CLIENT_NODE: &str = "snode2";
const CLIENT_IP: &str = "10.0.9.20";
const TCP_PORTS: [u16; 2] = [80, 6379];
const UDP_PORT: u16 = 6379;

/// `web` (VIP, no ports) with web.1..3 one per node; `probe` (VIP, no ports) with probe.1 on
/// CLIENT_NODE. Endpoints in `unhealthy` are marked so.
fn state(lab: &Lab, node: &str, unhealthy: &[&str]) -> Value {
    let mut endpoints: Vec<Value> = NODES
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
    let mut probe = json!({"id": "probe.1", "network": "backend", "node": CLIENT_NODE, "ip": CLIENT_IP});
    if node == CLIENT_NODE {
        probe["netns"] = json!(lab.task_ns(&format!("{CLIENT_NODE}-probe")));
    }
    endpoints.push(probe);
    json!({
        "node": node,
        "nodes": NODES.iter().enumerate().map(|(i, n)| json!({"name": n, "address": node_addr(i)})).collect::<Vec<_>>(),
        "networks": [{"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24",
                      "lb_addresses": {"smgr": lb_addr(0), "snode1": lb_addr(1), "snode2": lb_addr(2)}}],
        "endpoints": endpoints,
        "services": [
            {"name": "web", "vips": {"backend": VIP}, "ports": [], "backends": ["web.1", "web.2", "web.3"]},
            {"name": "probe", "vips": {"backend": "10.0.9.101"}, "ports": [], "backends": ["probe.1"]},
        ],
    })
}

impl MeshLab {
    fn apply_all(&self, unhealthy: &[&str]) -> Vec<usize> {
        NODES.iter().map(|n| self.apply(n, &state(&self.lab, n, unhealthy)).0).collect()
    }

    /// whoami on every web replica, on each TCP port (each also answers UDP on its port).
    fn start_whoami(&mut self) {
        for n in NODES {
            for port in TCP_PORTS {
                let mut child = self
                    .task_command(n, &format!("{n}-web"), &[SHOAL, "whoami", "--name", &format!("{n}-web"), "--port", &port.to_string()])
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

    /// `n` requests to each of `targets` ("tcp PORT" / "udp PORT" to the VIP, a new socket
    /// each) from a process in the client task, as a task's own process is (its cgroup): the
    /// replica that answered each, per target. The process checks that it saw the VIP and the
    /// port it used as its peer.
    fn ask_from_task(&self, targets: &[(&str, u16)], n: usize) -> Vec<BTreeSet<String>> {
        let task = format!("{CLIENT_NODE}-probe");
        let mut args = vec!["python3".to_string(), "-c".into(), CLIENT.into(), VIP.into(), n.to_string()];
        args.extend(targets.iter().map(|(p, port)| format!("{p}:{port}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.task_command(CLIENT_NODE, &task, &args).output().expect("run the client");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "client in {task} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), targets.len(), "one line per target:\n{text}");
        lines
            .iter()
            .zip(targets)
            .map(|(l, (p, port))| {
                assert!(!l.contains("ERR"), "{p} {VIP}:{port} from {task}'s cgroup: {l}");
                l.split_whitespace().map(str::to_owned).collect()
            })
            .collect()
    }
}

/// The client run in a task: `CLIENT VIP N proto:port...`; one line per target with the name of
/// the replica of each answer, or `ERR:<what>`.
const CLIENT: &str = r#"
import socket, sys
vip, n = sys.argv[1], int(sys.argv[2])
def name(text):
    for l in text.splitlines():
        if l.startswith("Name:"):
            return l.split(":", 1)[1].strip()
    raise Exception("no name in %r" % text)
for t in sys.argv[3:]:
    proto, port = t.split(":")
    port = int(port)
    out = []
    try:
        for _ in range(n):
            if proto == "tcp":
                s = socket.create_connection((vip, port), timeout=3)
                peer = s.getpeername()
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(3)
                s.sendto(b"hi", (vip, port))
                data, peer = s.recvfrom(4096)
            s.close()
            if peer != (vip, port):
                raise Exception("peer %s:%d, not the VIP and port used" % peer)
            out.append(name(data.decode()))
    except Exception as e:
        out = ["ERR:%s" % str(e).replace(" ", "_")]
    print(" ".join(out), flush=True)
"#;

/// (name, remote address) from a whoami answer.
fn parse(text: &str) -> Option<(String, SocketAddrV4)> {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    Some((field("Name:")?.to_string(), field("RemoteAddr:")?.parse().ok()?))
}

/// `n` HTTP requests, one connection each, from a thread that joined only namespace `ns`.
fn tcp_names(ns: &str, addr: SocketAddrV4, n: usize) -> BTreeSet<String> {
    on_thread_in(ns, move || {
        (0..n)
            .map(|_| {
                let mut s =
                    TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let body = http_get(&mut s).unwrap_or_else(|e| panic!("GET {addr}: {e}"));
                parse(&body).unwrap_or_else(|| panic!("bad answer from {addr}: {body:?}")).0
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// `n` UDP requests, a socket each, from a thread that joined only namespace `ns`; each answer
/// must come from `addr` itself.
fn udp_names(ns: &str, addr: SocketAddrV4, n: usize) -> BTreeSet<String> {
    on_thread_in(ns, move || {
        (0..n)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.send_to(b"hi", addr).unwrap_or_else(|e| panic!("send to {addr}: {e}"));
                let mut buf = [0u8; 2048];
                let (len, from) = s.recv_from(&mut buf).unwrap_or_else(|e| panic!("no UDP answer from {addr}: {e}"));
                assert_eq!(from, std::net::SocketAddr::V4(addr), "the UDP answer came from {from}, not {addr}");
                parse(&String::from_utf8_lossy(&buf[..len])).unwrap_or_else(|| panic!("bad UDP answer from {addr}")).0
            })
            .collect()
    })
    .join()
    .unwrap()
}

fn all_replicas() -> BTreeSet<String> {
    NODES.iter().map(|n| format!("{n}-web")).collect()
}

fn vip(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(VIP.parse().unwrap(), port)
}

fn vip_carries_every_port(test: &str, lb: &'static str) {
    let lab = Lab::up(3);
    let mut mesh = MeshLab { procs: Vec::new(), lab, lb, nodes: &NODES };
    for (n, c) in NODES.iter().zip(mesh.apply_all(&[])) {
        assert!(c > 0, "{test}: first apply on {n} changed nothing");
    }
    mesh.start_whoami();
    let all = all_replicas();

    // A process of the client task (in its cgroup): both TCP ports and the UDP port reach every
    // replica, and it sees the VIP and the port it used.
    let targets = [("tcp", TCP_PORTS[0]), ("tcp", TCP_PORTS[1]), ("udp", UDP_PORT)];
    for ((proto, port), seen) in targets.iter().zip(mesh.ask_from_task(&targets, 30)) {
        assert_eq!(seen, all, "{test}: {proto} {VIP}:{port} from a task");
    }

    // A process that joined only the task's network namespace (not its cgroup).
    let ns = mesh.lab.task_ns(&format!("{CLIENT_NODE}-probe"));
    for port in TCP_PORTS {
        assert_eq!(tcp_names(&ns, vip(port), 30), all, "{test}: TCP {VIP}:{port} from the task's namespace only");
    }
    assert_eq!(udp_names(&ns, vip(UDP_PORT), 30), all, "{test}: UDP {VIP}:{UDP_PORT} from the task's namespace only");

    // Re-apply in new processes (a restart): nothing to do, and an open connection goes on.
    let mut conn =
        on_thread_in(&ns, || TcpStream::connect_timeout(&vip(6379).into(), Duration::from_secs(3)).expect("connect")).join().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (held, _) = parse(&http_get(&mut conn).unwrap()).unwrap();
    assert_eq!(mesh.apply_all(&[]), vec![0, 0, 0], "{test}: re-apply changed the kernel");
    assert_eq!(parse(&http_get(&mut conn).unwrap()).unwrap().0, held, "{test}: the open connection broke across a restart");

    // Drain the replica that connection is on: it keeps the connection, gets no new one.
    let id = format!("web.{}", NODES.iter().position(|n| format!("{n}-web") == held).unwrap() + 1);
    mesh.apply_all(&[id.as_str()]);
    let fresh = tcp_names(&ns, vip(6379), 30);
    assert_eq!(fresh.len(), 2, "{test}: after draining {held}: {fresh:?}");
    assert!(!fresh.contains(&held), "{test}: drained {held} got a new connection");
    let fresh = mesh.ask_from_task(&[("tcp", 80)], 20).remove(0);
    assert!(!fresh.contains(&held) && fresh.len() == 2, "{test}: from a task after draining {held}: {fresh:?}");
    assert_eq!(
        parse(&http_get(&mut conn).unwrap()).unwrap().0,
        held,
        "{test}: the open connection moved or broke when its replica was drained"
    );
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_vip_ebpf_every_port_from_tasks_and_their_namespaces() {
    require_root();
    let probe = shoal_ebpf::probe();
    if !probe.sock_lb.is_available() || !probe.tc_nat.is_available() {
        skip(
            "mesh_vip_ebpf_every_port_from_tasks_and_their_namespaces",
            &format!("eBPF: socket LB {}; tc NAT {}", probe.sock_lb, probe.tc_nat),
        );
        return;
    }
    vip_carries_every_port("ebpf", "ebpf");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_vip_nftables_every_port_from_tasks_and_their_namespaces() {
    require_root();
    vip_carries_every_port("nftables", "nftables");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_vip_ipvs_every_port_from_tasks_and_their_namespaces() {
    require_root();
    let test = "mesh_vip_ipvs_every_port_from_tasks_and_their_namespaces";
    if let Err(reason) = shoal_dataplane::lb::ipvs::probe() {
        skip(test, &format!("IPVS: {reason}"));
        return;
    }
    vip_carries_every_port("ipvs", "ipvs");
}
