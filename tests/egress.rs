//! End-to-end tests of task egress on a 3-node lab: tasks reach a host outside the cluster (the
//! lab's client, 192.168.33.100, on the underlay) through their node, which rewrites their
//! source to its own address; an `internal` network's tasks cannot; the gateway bridge (the
//! node-local network of services without one) gives egress too; networks stay isolated. Once
//! per load balancer, with a published service on `backend`, so egress is checked beside each
//! balancer's own NAT (the mesh's published port answers too). Run as root by tests/run.sh.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const NODES: [&str; 3] = ["smgr", "snode1", "snode2"];
const CLIENT_IP: &str = "192.168.33.100";

/// `backend` (egress), `db` (internal), and the gateway bridge (node-local); one task of each
/// per node.
fn state(lab: &Lab, node: &str) -> Value {
    let mut endpoints = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        for (net, prefix) in [("backend", "10.0.9"), ("db", "10.0.10"), ("gw", "172.18.0")] {
            endpoints.push(json!({
                "id": format!("{net}.{}", i + 1),
                "network": net,
                "node": n,
                "ip": format!("{prefix}.{}", i + 2),
                "netns": lab.task_ns(&format!("{n}-{net}")),
            }));
        }
    }
    json!({
        "node": node,
        "nodes": [
            {"name": "smgr", "address": "192.168.33.10"},
            {"name": "snode1", "address": "192.168.33.20"},
            {"name": "snode2", "address": "192.168.33.30"},
        ],
        "networks": [
            {"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24",
             "lb_addresses": {"smgr": "10.0.9.250", "snode1": "10.0.9.249", "snode2": "10.0.9.248"}},
            {"name": "db", "vni": 4098, "subnet": "10.0.10.0/24", "internal": true},
            {"name": "gw", "vni": 4099, "subnet": "172.18.0.0/16", "local": true},
        ],
        "endpoints": endpoints,
        "services": [{"name": "web", "vips": {"backend": "10.0.9.100"}, "ports": [{"target": 80, "published": 5000}],
                      "backends": ["backend.1", "backend.2", "backend.3"]}],
    })
}

/// `shoal --netns NODE dataplane apply --lb LB`; (stdout, changes).
fn apply(lab: &Lab, node: &str, lb: &str) -> (String, usize) {
    let (n, stdout, _) = support::mesh::apply_with(lab, node, lb, &state(lab, node));
    (stdout, n)
}

/// Connects from `from_ns` to a server in the client namespace; the address the server saw,
/// or why the connection failed.
fn seen_by_client(lab: &Lab, from_ns: &str, port: u16) -> Result<IpAddr, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let server = on_thread_in(&lab.node_ns("client"), move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        listener.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((mut s, peer)) = listener.accept() {
                s.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
                return Some(peer.ip());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    ready_rx.recv().unwrap();
    let addr: SocketAddr = format!("{CLIENT_IP}:{port}").parse().unwrap();
    let client = on_thread_in(from_ns, move || -> Result<(), String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
        Ok(())
    })
    .join()
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = server.join().unwrap();
    client?;
    seen.ok_or_else(|| "the server saw no connection".into())
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn tasks_reach_the_outside_through_their_node_unless_their_network_is_internal() {
    require_root();
    egress("ebpf");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn egress_beside_the_nftables_balancer() {
    require_root();
    egress("nftables");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn egress_beside_the_ipvs_balancer() {
    require_root();
    if let Err(reason) = shoal_dataplane::lb::ipvs::probe() {
        skip("egress_beside_the_ipvs_balancer", &format!("IPVS: {reason}"));
        return;
    }
    egress("ipvs");
}

fn egress(lb: &str) {
    let lab = Lab::up(3);
    for n in NODES {
        let (stdout, _) = apply(&lab, n, lb);
        assert!(stdout.contains("egress: masquerade 10.0.9.0/24, 172.18.0.0/16 leaving the overlay"), "{stdout}");
    }
    // The task (a whoami on each backend task) answers through the mesh from outside.
    let mut servers = Vec::new();
    for n in NODES {
        let mut child = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.task_ns(&format!("{n}-backend"))))
            .args([SHOAL, "whoami", "--name", n, "--port", "80"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("whoami");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        servers.push(Kill(child));
    }
    let published = in_ns(&lab.node_ns("client"), &["curl", "-s", "--max-time", "3", "http://192.168.33.20:5000/"]);
    assert!(String::from_utf8_lossy(&published.stdout).contains("Name:"), "{lb}: the published port does not answer beside egress");
    let mut port = 7000;
    for (i, n) in NODES.iter().enumerate() {
        let node_addr: IpAddr = format!("192.168.33.{}", 10 * (i + 1)).parse().unwrap();
        for net in ["backend", "gw"] {
            port += 1;
            let seen = seen_by_client(&lab, &lab.task_ns(&format!("{n}-{net}")), port)
                .unwrap_or_else(|e| panic!("{lb}: {net} task on {n}: no egress: {e}"));
            assert_eq!(seen, node_addr, "{lb}: a {net} task on {n} reaches the outside as its node");
        }
        port += 1;
        let internal = seen_by_client(&lab, &lab.task_ns(&format!("{n}-db")), port);
        assert!(internal.is_err(), "{lb}: a task of the internal network on {n} reached the outside as {internal:?}");
    }
    // Still isolated: no network reaches another, on this node or across.
    for (from, to_ip) in [
        ("smgr-backend", "10.0.10.3"),
        ("smgr-backend", "172.18.0.2"),
        ("smgr-gw", "10.0.9.3"),
        ("smgr-db", "10.0.9.2"),
        ("smgr-gw", "172.18.0.3"),
    ] {
        assert!(!ping(&lab.task_ns(from), to_ip), "{from} reached {to_ip}");
    }
    // Inside each network all is as before: the internal one too.
    assert!(ping(&lab.task_ns("smgr-db"), "10.0.10.4"), "the internal network's tasks talk to each other");
    assert!(ping(&lab.task_ns("smgr-backend"), "10.0.9.4"));
    // Applying again changes nothing, egress included.
    for n in NODES {
        assert_eq!(apply(&lab, n, lb).1, 0, "{lb}: re-apply on {n} changed something");
    }
    // Teardown removes the egress table with the rest.
    let out = shoal(&["--netns", &lab.node_ns("smgr"), "dataplane", "teardown"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tables = in_ns(&lab.node_ns("smgr"), &["nft", "list", "tables"]);
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("shoal_egress"), "the egress table outlived teardown");
}

/// A child process killed on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
