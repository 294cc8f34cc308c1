//! End-to-end: `service update` and `service rollback` through the product, on the 3-node daemon
//! cluster. A rolling update of a published whoami service, stop-first then start-first, while
//! clients send requests without pause to every node's published port and to the VIP from a
//! task: not one request fails. An update whose new health check fails rolls itself back.
//! Run as root by tests/run.sh.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cluster::*;
use support::*;

/// One HTTP request to whoami; the answering task's name, or what went wrong.
fn get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| format!("read: {e}"))?;
    if !body.starts_with("HTTP/1.1 200") && !body.starts_with("HTTP/1.0 200") {
        return Err(format!("answer: {:?}", body.lines().next().unwrap_or("")));
    }
    body.lines().find_map(|l| l.strip_prefix("Name:")).map(|n| n.trim().to_string()).ok_or_else(|| "answer without a name".into())
}

/// A client thread's outcome: requests sent, and each failure.
type Outcome = (usize, Vec<String>);

/// Clients in the lab's client namespace, one per node, each sending requests to that node's
/// published port one after the other until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, std::thread::JoinHandle<Outcome>)>,
}

impl Load {
    fn start(c: &Cluster, port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = NODES
            .iter()
            .map(|(node, addr)| {
                let stop = stop.clone();
                let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
                let h = on_thread_in(&c.lab.node_ns("client"), move || {
                    let (mut sent, mut failures) = (0, vec![]);
                    while !stop.load(Ordering::SeqCst) {
                        sent += 1;
                        let at = Instant::now();
                        if let Err(e) = get(target) {
                            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                            failures.push(format!("{target} at {:.3} after {:?}: {e}", t.as_secs_f64(), at.elapsed()));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    (sent, failures)
                });
                (node.to_string(), h)
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients: (requests sent, failures) per node.
    fn finish(mut self) -> Vec<(String, usize, Vec<String>)> {
        self.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut self.threads)
            .into_iter()
            .map(|(n, h)| (n, h.join().expect("client thread")))
            .map(|(n, (s, f))| (n, s, f))
            .collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn inspect(c: &Cluster, service: &str) -> serde_json::Value {
    let out = c.cli("smgr", &["service", "inspect", service]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// The names the published port answers with, over `n` requests to every node.
fn answers(c: &Cluster, n: usize) -> std::collections::BTreeSet<String> {
    let h = on_thread_in(&c.lab.node_ns("client"), move || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..n {
            for (_, addr) in NODES {
                seen.insert(get(format!("{addr}:5000").parse().unwrap()).unwrap_or_else(|e| format!("error from {addr}: {e}")));
            }
        }
        seen
    });
    h.join().unwrap()
}

/// Names of the tasks meant to run (as whoami answers them).
fn live_names(c: &Cluster) -> std::collections::BTreeSet<String> {
    c.cli("smgr", &["service", "ps", "--format", "json", "web"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|t| t["desired_state"] == "running")
        .map(|t| format!("web.{}.{}", t["slot"], t["id"].as_str().unwrap()))
        .collect()
}

/// The VIP client task's verdicts (`ok`/`FAIL` lines) so far.
fn vip_verdicts(c: &Cluster) -> Vec<String> {
    let out = shoal(&["service", "--host", &c.host("smgr"), "logs", "--raw", "vipclient"]);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| *l == "ok" || l.starts_with("FAIL")).map(String::from).collect()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn update_rolling_update_of_a_published_service_fails_no_request() {
    require_root();
    let c = Cluster::up();
    join_all(&c);
    c.cli("smgr", &["network", "create", "--driver", "overlay", "backend"]);
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "web", "--replicas", "3", "-p", "5000:80", "--network", "backend", "shoal/whoami"],
    );
    wait_for("3 running replicas", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "web"])) == 3);
    wait_for("the mesh on every node", Duration::from_secs(30), || answers(&c, 1).iter().all(|n| n.starts_with("web.")));
    // A client task sends requests to the service's VIP (by name) without pause.
    let script = "while true; do if curl -sf --max-time 2 -o /dev/null http://web/; then echo ok; else echo FAIL $?; fi; sleep 0.02; done";
    c.cli("smgr", &["service", "create", "--detach", "--name", "vipclient", "--network", "backend", "host", "sh", "-c", script]);
    wait_for("the VIP client's first answers", Duration::from_secs(30), || vip_verdicts(&c).iter().filter(|v| *v == "ok").count() >= 5);
    let vip_before = vip_verdicts(&c).len();
    assert!(vip_verdicts(&c).iter().all(|v| v == "ok"), "the VIP failed before any update: {:?}", vip_verdicts(&c));

    let load = Load::start(&c, 5000);
    let started = Instant::now();
    // Stop-first, one task at a time (3 replicas: two serve while the third is replaced).
    let old = live_names(&c);
    let out = c.cli("smgr", &["service", "update", "--update-delay", "1s", "--update-monitor", "1s", "--env-add", "VERSION=2", "web"]);
    let stop_first = started.elapsed();
    assert!(out.starts_with("web\n"), "{out}");
    assert!(out.contains("overall progress: 3 out of 3 tasks") && out.contains("verify: Service converged"), "{out}");
    let new = live_names(&c);
    assert!(old.is_disjoint(&new), "every task was replaced: {old:?} -> {new:?}");
    let seen = answers(&c, 3);
    assert!(seen.is_subset(&new), "every node answers from the new tasks only: {seen:?}, tasks {new:?}");
    let svc = inspect(&c, "web");
    assert_eq!(svc["update_status"]["state"], "completed", "{svc:#}");
    assert_eq!(svc["previous_spec"]["env"], serde_json::json!([]), "{svc:#}");
    assert_eq!(svc["spec"]["env"], serde_json::json!(["VERSION=2"]), "{svc:#}");
    // Each slot shows its new task on top and the replaced one below it.
    let ps = c.cli("smgr", &["service", "ps", "web"]);
    assert_eq!(running(&ps), 3, "{ps}");
    for slot in 1..=3 {
        assert!(ps.contains(&format!("\\_ web.{slot}")), "slot {slot} has its history:\n{ps}");
    }
    // Start-first: the new task runs before the old one leaves.
    let started = Instant::now();
    let out = c.cli("smgr", &["service", "update", "--update-order", "start-first", "--update-monitor", "1s", "--image", "whoami", "web"]);
    let start_first = started.elapsed();
    assert!(out.contains("verify: Service converged"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    let results = load.finish();

    let vip = vip_verdicts(&c);
    let vip_during = &vip[vip_before.min(vip.len())..];
    let vip_failed: Vec<&String> = vip_during.iter().filter(|v| *v != "ok").collect();
    eprintln!("updates took {stop_first:?} (stop-first) and {start_first:?} (start-first)");
    for (node, sent, failed) in &results {
        eprintln!("{node}:5000: {sent} requests, {} failed", failed.len());
    }
    eprintln!("VIP from a task: {} requests, {} failed", vip_during.len(), vip_failed.len());
    let newer = live_names(&c);
    assert!(new.is_disjoint(&newer), "{new:?} -> {newer:?}");
    let seen = answers(&c, 3);
    if !seen.is_subset(&newer) {
        // What each node's data plane holds, to tell a stale backend from a missing peer.
        for (n, _) in NODES {
            eprintln!("=== {n}\n{}", c.lab.show(n));
        }
        eprintln!("{}", c.cli("smgr", &["service", "ps", "--format", "json", "web"]));
    }
    assert!(seen.is_subset(&newer), "every node answers from the new tasks only: {seen:?}, tasks {newer:?}");
    assert!(
        c.cli("smgr", &["service", "ps", "web"]).lines().filter(|l| l.contains("\\_ web.")).any(|l| l.contains("shoal/whoami")),
        "history rows show the image they ran"
    );
    for (node, sent, failed) in &results {
        assert!(*sent > 100, "{node}: only {sent} requests during the updates");
        assert!(failed.is_empty(), "{node}:5000 failed {} of {sent} requests during the rolling updates: {failed:#?}", failed.len());
    }
    assert!(vip_during.len() > 50, "only {} VIP requests during the updates", vip_during.len());
    assert!(vip_failed.is_empty(), "{} of {} VIP requests failed: {vip_failed:?}", vip_failed.len(), vip_during.len());
    c.cli("smgr", &["service", "rm", "vipclient", "web"]);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn update_whose_health_check_fails_rolls_back_by_itself() {
    require_root();
    let c = Cluster::up();
    join_all(&c);
    c.cli("smgr", &["service", "create", "--detach", "--name", "web", "--replicas", "2", "shoal/whoami"]);
    wait_for("2 running replicas", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "web"])) == 2);
    let before = inspect(&c, "web");

    // A stale update is refused and changes nothing.
    c.cli("smgr", &["service", "update", "--label-add", "team=a", "web"]);
    let stale = before["version"].to_string();
    let out = shoal(&["service", "--host", &c.host("smgr"), "update", "--version", &stale, "--replicas", "5", "web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("update out of sequence"), "{err}");
    assert_eq!(inspect(&c, "web")["spec"]["mode"]["replicated"]["replicas"], 2);

    // The new version's health check always fails: the update rolls itself back.
    let out = shoal(&[
        "service",
        "--host",
        &c.host("smgr"),
        "update",
        "--health-cmd",
        "false",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "2s",
        "--rollback-monitor",
        "1s",
        "web",
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the update command reports the rollback as a failure:\n{stdout}\n{stderr}");
    assert!(stderr.contains("service rolled back"), "{stderr}");
    assert!(stdout.contains("rollback: update rolled back due to failure or early termination of task"), "{stdout}");
    let svc = inspect(&c, "web");
    assert_eq!(svc["update_status"]["state"], "rollback_completed", "{svc:#}");
    assert!(svc["spec"]["healthcheck"].is_null(), "the spec is the old one again: {svc:#}");
    assert_eq!(svc["previous_spec"]["healthcheck"]["cmd"], "false");
    wait_for("2 running tasks of the old spec", Duration::from_secs(30), || {
        let ps = c.cli("smgr", &["service", "ps", "web"]);
        running(&ps) == 2 && !ps.lines().any(|l| l.contains("Running") && l.contains("health"))
    });
    let ps = c.cli("smgr", &["service", "ps", "web"]);
    assert!(ps.contains("unhealthy") || ps.contains("Failed"), "the failed new task is in the history:\n{ps}");

    // `service rollback` by hand: back to the previous spec (the failed one's previous is the
    // original), with Docker's output.
    let out = c.cli("smgr", &["service", "update", "--detach", "--image", "whoami", "web"]);
    assert_eq!(out, "web\n");
    wait_for("the update completed", Duration::from_secs(60), || inspect(&c, "web")["update_status"]["state"] == "completed");
    let out = c.cli("smgr", &["service", "rollback", "web"]);
    assert!(out.starts_with("web\n") && out.contains("verify: Service converged"), "{out}");
    let svc = inspect(&c, "web");
    assert_eq!(svc["spec"]["image"], "shoal/whoami");
    assert_eq!(svc["update_status"]["state"], "rollback_completed");
    assert_eq!(svc["update_status"]["message"], "rollback completed");
    let pretty = c.cli("smgr", &["service", "inspect", "--pretty", "web"]);
    assert!(
        pretty.contains("UpdateStatus:\n State:\t\trollback_completed\n") && pretty.contains(" Message:\trollback completed"),
        "{pretty}"
    );
}
