//! End-to-end, through the daemons and the CLI (issue 14 item 2): a cluster initialised with
//! one-minute node certificates keeps its links and its routing mesh past their expiry (every
//! node renews by itself), and `shoal ca --rotate` moves every node to a new root while the mesh
//! keeps answering; a node left without a task of the published service still answers on the
//! mesh. Run as root by tests/run.sh.

mod support;

use std::time::{Duration, Instant};

use support::cluster::*;
use support::*;

fn cert(c: &Cluster, node: &str, file: &str) -> String {
    std::fs::read_to_string(c.dir.join(node).join("certs").join(file)).unwrap_or_default()
}

fn not_after(pem: &str) -> u64 {
    shoal_control::ca::validity_ms(pem).map(|v| v.1).unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn curl(c: &Cluster, node_addr: &str) -> bool {
    let out = in_ns(&c.lab.node_ns("client"), &["curl", "-s", "--max-time", "2", &format!("http://{node_addr}:5000/")]);
    String::from_utf8_lossy(&out.stdout).contains("Name:")
}

fn ready(c: &Cluster) -> usize {
    c.cli("smgr", &["node", "ls"]).lines().filter(|l| l.contains("Ready")).count()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn one_minute_certificates_renew_and_a_root_rotation_keeps_the_mesh_answering() {
    let c = Cluster::up();
    let out = c.cli("smgr", &["init", "--advertise-addr", "192.168.33.10", "--cert-expiry", "1m"]);
    assert!(out.contains("Cluster initialized"), "{out}");
    let token = c.cli("smgr", &["join-token", "-q", "worker"]).trim().to_string();
    for (node, _) in &NODES[1..] {
        c.cli(node, &["join", "--token", &token, "192.168.33.10:2377"]);
    }
    wait_for("3 ready nodes", Duration::from_secs(20), || ready(&c) == 3);
    // A lifetime too short for renewal is refused, naming the setting; nothing changes.
    let host = c.host("smgr");
    let bad = shoal(&["update", "--host", &host, "--cert-expiry", "10s"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("cert-expiry"), "{err}");

    c.cli("smgr", &["service", "create", "--detach", "--name", "vote", "--replicas", "3", "-p", "5000:80", "shoal/whoami"]);
    wait_for("the mesh on every node", Duration::from_secs(40), || NODES.iter().all(|(_, a)| curl(&c, a)));
    let first: Vec<String> = NODES.iter().map(|(n, _)| cert(&c, n, "node.pem")).collect();
    let expiry = first.iter().map(|p| not_after(p)).max().unwrap();
    assert!(expiry > now_ms() && expiry < now_ms() + 61_000, "one-minute certificates");

    // Every node renews by itself; past the first certificates' expiry the cluster and the
    // mesh still work and every node is still Ready.
    wait_for("every node renewed its certificate", Duration::from_secs(60), || {
        NODES.iter().zip(&first).all(|((n, _), old)| not_after(&cert(&c, n, "node.pem")) > not_after(old))
    });
    let start = Instant::now();
    while now_ms() < expiry + 2_000 && start.elapsed() < Duration::from_secs(70) {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ready(&c), 3, "{}", c.cli("smgr", &["node", "ls"]));
    assert!(NODES.iter().all(|(_, a)| curl(&c, a)), "the mesh answers past the first certificates' expiry");
    c.cli("smgr", &["service", "scale", "vote=2"]);
    wait_for("a change reaches the nodes", Duration::from_secs(20), || {
        c.cli("smgr", &["service", "ps", "vote"]).lines().filter(|l| l.matches("Running").count() == 2).count() == 2
    });

    // The node that lost its task still answers on the mesh (it stays a peer of ingress).
    std::thread::sleep(Duration::from_secs(2));
    let answers: Vec<(&str, usize)> = NODES.iter().map(|(n, a)| (*n, (0..10).filter(|_| curl(&c, a)).count())).collect();
    assert!(
        answers.iter().all(|(_, k)| *k == 10),
        "the mesh answers after the scale-down: {answers:?}\n{}",
        c.cli("smgr", &["service", "ps", "vote"])
    );
    // Root rotation through the CLI: it follows the rotation to its end.
    let old_root = c.cli("smgr", &["ca"]);
    let out = c.cli("smgr", &["ca", "--rotate"]).replace("\r", "");
    assert!(out.contains("root CA rotated"), "{out}");
    let new_root = c.cli("smgr", &["ca"]);
    assert_ne!(old_root, new_root);
    let want = shoal_control::ca::bundle_digests(&new_root);
    wait_for("every node trusts the new root alone", Duration::from_secs(30), || {
        NODES.iter().all(|(n, _)| shoal_control::ca::bundle_digests(&cert(&c, n, "ca.pem")) == want)
    });
    assert_eq!(ready(&c), 3);
    let answers: Vec<(&str, usize)> = NODES.iter().map(|(n, a)| (*n, (0..10).filter(|_| curl(&c, a)).count())).collect();
    assert!(
        answers.iter().all(|(_, k)| *k == 10),
        "the mesh answers after the rotation: {answers:?}\n{}",
        c.cli("smgr", &["service", "ps", "vote"])
    );
}
