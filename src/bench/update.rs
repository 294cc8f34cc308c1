//! Rolling updates on a 3-node lab cluster (issue 18, item 7): a published whoami service of 10
//! replicas updated 2 at a time with a delay between batches, while clients send requests
//! without pause through every node's published port. Printed: the requests that failed (goal
//! 0), and how long each update took against what its settings make it wait (the delays
//! between its 5 batches and the last monitor window), from the same run: the difference is
//! the updater's own overhead, per batch (goal under 1 s).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::{cluster_up, poll, shoal};
use super::percentiles;
use crate::lab::exec::command_in;

const REPLICAS: u64 = 10;
const PARALLELISM: u64 = 2;
const DELAY_MS: u64 = 1_000;
const MONITOR_MS: u64 = 1_000;
const PORT: u16 = 5300;

/// Clients in the lab's client namespace, one per node, one request after the other.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    /// curl's exit code of each failure (7 refused, 28 timed out, 52/56 cut off), with when
    /// (UTC, as the daemons' logs), the address asked and how long the request took.
    codes: Arc<std::sync::Mutex<Vec<(i32, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(client_ns: &str, addrs: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let codes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = addrs
            .iter()
            .map(|addr| {
                let (stop, sent, failed, codes) = (stop.clone(), sent.clone(), failed.clone(), codes.clone());
                let (ns, url) = (client_ns.to_string(), format!("http://{addr}:{PORT}/"));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let out = command_in(&ns, "curl").and_then(|mut c| {
                            let timing = "connected after %{time_connect} s, ended after %{time_total} s";
                            Ok(c.args(["-sf", "-o", "/dev/null", "-w", timing, "--max-time", "2", &url]).output()?)
                        });
                        sent.fetch_add(1, Ordering::SeqCst);
                        if !out.as_ref().is_ok_and(|o| o.status.success()) {
                            failed.fetch_add(1, Ordering::SeqCst);
                            let code = out.as_ref().ok().and_then(|o| o.status.code()).unwrap_or(-1);
                            let timing = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                            let what = format!("at {} asking {url} ({timing})", chrono_now());
                            codes.lock().unwrap_or_else(|p| p.into_inner()).push((code, what));
                        }
                    }
                })
            })
            .collect();
        Load { stop, sent, failed, codes, threads }
    }

    /// (requests, failed) so far.
    fn counts(&self) -> (usize, usize) {
        (self.sent.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn update_state(t: &crate::lab::Topology, mgr: &str) -> String {
    shoal(t, mgr, &["service", "inspect", "web"])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v[0]["update_status"]["state"].as_str().map(String::from))
        .unwrap_or_default()
}

pub fn run(rounds: usize, health_check: bool) -> anyhow::Result<()> {
    let (t, guard) = cluster_up("bupd")?;
    let out = measure(&t, rounds, health_check);
    if !matches!(out, Ok(0)) {
        // Keep what explains the failures: the daemons' logs go with the lab.
        let keep = std::path::Path::new("/tmp/shoal-bench-update");
        std::fs::create_dir_all(keep)?;
        for n in &t.nodes {
            let _ = std::fs::copy(crate::lab::daemons::node_dir(&t, &n.name).join("daemon.log"), keep.join(format!("{}.log", n.name)));
        }
        println!("  the daemons' logs are kept in {}", keep.display());
    }
    drop(guard);
    out.map(|_| ())
}

/// Runs the rounds on the lab; the number of failed requests.
fn measure(t: &crate::lab::Topology, rounds: usize, health_check: bool) -> anyhow::Result<usize> {
    let mgr = t.nodes[0].name.clone();
    let replicas = REPLICAS.to_string();
    let publish = format!("{PORT}:80");
    let (parallelism, delay, monitor) = (PARALLELISM.to_string(), format!("{DELAY_MS}ms"), format!("{MONITOR_MS}ms"));
    let health: &[&str] = if health_check {
        &["--health-cmd", "curl -sf -o /dev/null --max-time 1 http://127.0.0.1/", "--health-interval", "100ms"]
    } else {
        &[]
    };
    let create: Vec<&str> = [
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        &replicas,
        "-p",
        &publish,
        "--network",
        "backend",
        "--update-parallelism",
        &parallelism,
        "--update-delay",
        &delay,
        "--update-monitor",
        &monitor,
    ]
    .into_iter()
    .chain(health.iter().copied())
    .chain(["shoal/whoami"])
    .collect();
    shoal(t, &mgr, &create)?;
    let addrs: Vec<String> = t.nodes.iter().map(|n| n.address.to_string()).collect();
    poll(Duration::from_secs(60), || {
        shoal(t, &mgr, &["service", "ls"]).is_ok_and(|o| o.contains(&format!("{REPLICAS}/{REPLICAS}")))
            && addrs.iter().all(|a| super::cluster::curl_ok(t, a, PORT))
    })?;

    let batches = REPLICAS.div_ceil(PARALLELISM);
    // The updater waits `delay` after every batch but the last, then the monitor window.
    let configured_ms = (batches - 1) * DELAY_MS + MONITOR_MS;
    let load = Load::start(&t.client.netns, &addrs);
    let mut totals = Vec::new();
    for r in 0..rounds {
        let start = Instant::now();
        shoal(t, &mgr, &["service", "update", "--detach", "--env-add", &format!("ROUND={r}"), "web"])?;
        poll(Duration::from_secs(120), || update_state(t, &mgr) == "completed")?;
        totals.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let (sent, failed) = load.counts();
    let failures = load.codes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let codes: Vec<i32> = failures.iter().map(|f| f.0).collect();
    drop(load);

    let (p50, p99) = percentiles(&mut totals);
    let per_batch = |total: f64| (total - configured_ms as f64) / batches as f64;
    println!(
        "rolling update of {REPLICAS} published replicas on a 3-node lab, parallelism {PARALLELISM}, delay {DELAY_MS} ms, monitor {MONITOR_MS} ms, {}, {rounds} rounds:",
        if health_check { "health check every 100 ms" } else { "no health check" }
    );
    println!("  failed requests through every node's published port   {failed} of {sent}   (goal 0; curl exit codes {codes:?})");
    println!(
        "  update time            p50 {p50:7.0} ms  p99 {p99:7.0} ms   against {configured_ms} ms configured (ratio p50 {:.2})",
        p50 / configured_ms as f64
    );
    println!(
        "  overhead per batch     p50 {:7.0} ms  p99 {:7.0} ms   (goal < 1000 ms; {batches} batches; stop-first includes the lab's 500 ms --drain-seconds)",
        per_batch(p50),
        per_batch(p99)
    );
    for (code, what) in &failures {
        println!("  failed: curl exit {code} {what}");
    }
    Ok(failures.len())
}

/// The wall clock in UTC as the daemons' logs print it (RFC 3339, microseconds).
fn chrono_now() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = (d.as_secs(), d.subsec_micros());
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{micros:06}Z")
}
