//! The nftables routing mesh for clients on the node itself: a process in a node's own
//! namespace (not in a task) reaching the node's underlay address:published port, or a service
//! VIP, is balanced over the tasks as a client from outside is (Docker's mesh answers
//! `curl <node ip>:5000` on the node). Run as root by tests/run.sh.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::mesh::*;
use support::*;

const NODES: [&str; 2] = ["smgr", "snode1"];
const VIP: &str = "10.0.9.100";

/// `web`: VIP and 5000 -> 80 through the mesh; web.1 on smgr, web.2 on snode1.
fn state(lab: &Lab, node: &str) -> Value {
    let endpoints: Vec<Value> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut e = json!({"id": format!("web.{}", i + 1), "network": "backend", "node": n, "ip": format!("10.0.9.{}", i + 2)});
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
                      "lb_addresses": {"smgr": "10.0.9.250", "snode1": "10.0.9.249"}}],
        "endpoints": endpoints,
        "services": [{"name": "web", "vips": {"backend": VIP}, "ports": [{"target": 80, "published": 5000}], "backends": ["web.1", "web.2"]}],
    })
}

/// Servers started by the test, and the data plane of every node: removed on drop, before the lab.
struct Local {
    procs: Vec<Child>,
    lab: Lab,
}

impl Drop for Local {
    fn drop(&mut self) {
        for p in &mut self.procs {
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

impl Local {
    fn apply(&self, node: &str) {
        let path = std::env::temp_dir().join(format!("{}-{node}-local.json", self.lab.name));
        std::fs::write(&path, serde_json::to_vec_pretty(&state(&self.lab, node)).unwrap()).unwrap();
        let out = shoal(&["--netns", &self.lab.node_ns(node), "dataplane", "apply", "--lb", "nftables", "--state", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "apply on {node}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    fn start_whoami(&mut self) {
        for n in NODES {
            let mut child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", self.lab.task_ns(&format!("{n}-web"))))
                .args([SHOAL, "whoami", "--name", &format!("{n}-web"), "--port", "80"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn whoami");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            assert!(line.contains("listening"), "whoami on {n} did not start: {line}");
            self.procs.push(child);
        }
    }
}

/// The `Name:` of a whoami answer to one HTTP request on a fresh connection from `ns`.
fn names_from(ns: &str, addr: SocketAddrV4, n: usize) -> BTreeSet<String> {
    on_thread_in(ns, move || {
        (0..n)
            .map(|_| {
                let mut s =
                    TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                let mut body = String::new();
                s.read_to_string(&mut body).unwrap_or_else(|e| panic!("read from {addr}: {e}"));
                body.lines()
                    .find_map(|l| l.strip_prefix("Name:"))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| panic!("bad answer from {addr}: {body:?}"))
            })
            .collect()
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn mesh_nftables_balances_clients_on_the_node_itself() {
    require_root();
    let mut t = Local { procs: Vec::new(), lab: Lab::up(2) };
    for n in NODES {
        t.apply(n);
    }
    t.start_whoami();
    let all: BTreeSet<String> = NODES.iter().map(|n| format!("{n}-web")).collect();
    for (i, n) in NODES.iter().enumerate() {
        let ns = t.lab.node_ns(n);
        let own: SocketAddrV4 = format!("{}:5000", node_addr(i)).parse().unwrap();
        assert_eq!(names_from(&ns, own, 20), all, "a client on {n} reaching its own {own}");
        let vip: SocketAddrV4 = format!("{VIP}:80").parse().unwrap();
        assert_eq!(names_from(&ns, vip, 20), all, "a client on {n} reaching the VIP");
    }
}
