//! End-to-end (issue 14 item 4): the node guard. A crafted VXLAN packet for a network's VNI,
//! sent from an underlay host outside the cluster, or from a peer for a VNI that peer does not
//! share with the node, never reaches that network's tasks (Docker's CVE-2023-28840); the same
//! packet from a real peer of the network does (the filter is exact, not a wall). A task cannot
//! reach its own node's manager port through its gateway or the node's address. Run as root by
//! tests/run.sh.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::cluster::*;
use support::*;

/// Sends one VXLAN packet from namespace `from` to `node:4789`: VNI `vni`, carrying an Ethernet
/// frame to `mac` with an IPv4/UDP datagram from `src_ip` to `dst_ip:port` saying `payload`.
#[allow(clippy::too_many_arguments)] // one crafted packet's every field, named at the call
fn inject(from: &str, node: &str, vni: u32, mac: &str, src_ip: &str, dst_ip: &str, port: u16, payload: &str) {
    let script = r#"
import socket, struct, sys
node, vni, mac, src, dst, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7].encode()
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex(mac.replace(":", "")) + bytes.fromhex("02deadbeef01") + b"\x08\x00"
vxlan = struct.pack("!II", 0x08000000, vni << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(vxlan + eth + ip + udp, (node, 4789))
"#;
    let out = in_ns(from, &["python3", "-c", script, node, &vni.to_string(), mac, src_ip, dst_ip, &port.to_string(), payload]);
    assert!(out.status.success(), "inject: {}", String::from_utf8_lossy(&out.stderr));
}

/// A UDP listener in a task's namespace; `received` ends it and returns what it printed.
struct Listener(std::process::Child);

impl Listener {
    fn start(ns: &str, port: u16) -> Listener {
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nwhile True:\n    d,_=s.recvfrom(2048)\n    print(d.decode(errors='replace'),flush=True)\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-u", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("listener");
        std::thread::sleep(Duration::from_millis(300));
        Listener(child)
    }

    fn received(mut self) -> String {
        std::thread::sleep(Duration::from_millis(800));
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut s = String::new();
        if let Some(mut out) = self.0.stdout.take() {
            let _ = out.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running task of `service` on `node`: (namespace, address, MAC) on its first network.
fn task_on(c: &Cluster, service: &str, node_id: &str) -> (String, String, String) {
    let ps = c.cli("smgr", &["service", "ps", "--format", "json", service]);
    let t = ps
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|t| t["desired_state"] == "running" && t["status"]["state"] == "running" && t["node_id"] == node_id)
        .unwrap_or_else(|| panic!("no running task of {service} on {node_id}:\n{ps}"));
    let net = &t["networks"][0];
    (format!("shoal-t-{}", t["id"].as_str().unwrap()), net["addr"].as_str().unwrap().into(), net["mac"].as_str().unwrap().into())
}

fn node_id(c: &Cluster, hostname: &str) -> String {
    let ls = c.cli("smgr", &["node", "ls", "--format", "json"]);
    ls.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|n| n["hostname"] == hostname)
        .and_then(|n| n["id"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no node {hostname}:\n{ls}"))
}

fn vni(c: &Cluster, network: &str) -> u32 {
    let v: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["network", "inspect", network])).unwrap();
    v[0]["vni"].as_u64().unwrap() as u32
}

fn connects(ns: &str, addr: &str, port: u16) -> bool {
    in_ns(ns, &["timeout", "3", "bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")]).status.success()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn crafted_vxlan_reaches_no_network_it_is_not_sent_by_a_peer_of_and_tasks_stay_off_control_ports() {
    let c = Cluster::up();
    join_all(&c);
    let (smgr, snode1) = (node_id(&c, "smgr"), node_id(&c, "snode1"));
    c.cli("smgr", &["network", "create", "--driver", "overlay", "red"]);
    c.cli("smgr", &["network", "create", "--driver", "overlay", "blue"]);
    // red has a task on snode1 and one on snode2 (peers); blue only on snode1; a task on smgr.
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "red",
            "--mode",
            "global",
            "--constraint",
            "node.role==worker",
            "--network",
            "red",
            "shoal/whoami",
        ],
    );
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "blue",
            "--constraint",
            &format!("node.id=={snode1}"),
            "--network",
            "blue",
            "shoal/whoami",
        ],
    );
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "mgr",
            "--constraint",
            &format!("node.id=={smgr}"),
            "--network",
            "blue",
            "shoal/whoami",
        ],
    );
    wait_for("4 running tasks", Duration::from_secs(40), || {
        ["red", "blue", "mgr"].iter().map(|s| running(&c.cli("smgr", &["service", "ps", s]))).sum::<usize>() == 4
    });
    let (red_ns, red_ip, red_mac) = task_on(&c, "red", &snode1);
    let (blue_ns, blue_ip, blue_mac) = task_on(&c, "blue", &snode1);
    let (red_vni, blue_vni) = (vni(&c, "red"), vni(&c, "blue"));
    let snode1_addr = NODES[1].1;
    let outsider = c.lab.node_ns("client");
    let snode2_ns = c.lab.node_ns("snode2");

    // A peer of red (snode2) reaches red's task on snode1: the filter lets real peers through.
    let l = Listener::start(&red_ns, 9999);
    inject(&snode2_ns, snode1_addr, red_vni, &red_mac, "10.99.0.1", &red_ip, 9999, "from-a-peer");
    assert!(l.received().contains("from-a-peer"), "a crafted packet from a real peer of red must arrive (the test's packet is valid)");
    // An underlay host outside the cluster does not.
    let l = Listener::start(&red_ns, 9999);
    inject(&outsider, snode1_addr, red_vni, &red_mac, "10.99.0.1", &red_ip, 9999, "from-outside");
    assert_eq!(l.received(), "", "VXLAN from a host that is no VTEP of the cluster reached a task");
    // A cluster node that shares no network blue with snode1 does not reach blue.
    let l = Listener::start(&blue_ns, 9999);
    inject(&snode2_ns, snode1_addr, blue_vni, &blue_mac, "10.99.0.1", &blue_ip, 9999, "wrong-vni");
    assert_eq!(l.received(), "", "VXLAN for a VNI the sender does not share with the node reached a task");
    // Nor does a task, sending to its own node's underlay address.
    let l = Listener::start(&blue_ns, 9999);
    inject(&red_ns, snode1_addr, blue_vni, &blue_mac, "10.99.0.1", &blue_ip, 9999, "from-a-task");
    assert_eq!(l.received(), "", "VXLAN sent by a task of another network reached blue");

    // A task on the manager cannot open the manager port of its own node, by the node's
    // address or its gateway; the node's own processes still can.
    let (mgr_ns, mgr_ip, _) = task_on(&c, "mgr", &smgr);
    let blue: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["network", "inspect", "blue"])).unwrap();
    let gateway = blue[0]["gateway"].as_str().unwrap().to_string();
    assert!(!mgr_ip.is_empty());
    assert!(!connects(&mgr_ns, NODES[0].1, 2377), "a task reached its node's manager port");
    assert!(!connects(&mgr_ns, &gateway, 2377), "a task reached its node's manager port through its gateway");
    assert!(connects(&c.lab.node_ns("smgr"), NODES[0].1, 2377), "the node itself still reaches its manager port");
    assert!(connects(&c.lab.node_ns("snode1"), NODES[0].1, 2377), "other nodes still reach the manager");
}
