//! The control plane at 1,000 nodes (issue 20, items 4 and 6): the scale harness
//! (`shoal_control::testkit::scale`) starts 3 real managers, each on a runtime of its own, and
//! 1,000 simulated agents, each a whole node with its own certificate and dispatcher session
//! over TLS on loopback. Printed:
//! - joining: how long 1,000 joins took;
//! - steady state: each manager's CPU (its runtime's threads) over a quiet period with every
//!   session heartbeating, in cores (goal for the leader: under a third of a core), against
//!   the followers' in the same run;
//! - service create -> every node holds the new endpoint: p50/p99/max over all nodes and
//!   services (goal p99 under 1 s), against the create's own commit time in the same run.
//!
//! `cargo bench --bench scale`. SHOAL_BENCH_AGENTS (1000), SHOAL_BENCH_SERVICES (5),
//! SHOAL_BENCH_STEADY_SECS (30) tune it. Needs about 4 file descriptors per agent (it raises
//! its soft limit to the hard one).

use shoal_control::model::{NodeState, ServiceMode, ServiceSpec};
use shoal_control::node::NodeControl;
use shoal_control::state::Command;
use shoal_control::testkit::scale::{threads_cpu, Harness};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Resolves with the time since `t0` at which `node` holds a running endpoint of `name`.
async fn holds(node: NodeControl, name: String, t0: Instant) -> Duration {
    let mut rx = node.view();
    let _ = rx
        .wait_for(|snap| {
            let Some(id) = snap.view.services.values().find(|s| s.name == name).map(|s| s.id.clone()) else { return false };
            snap.view.endpoints.values().any(|e| e.service_id == id && !e.draining)
        })
        .await;
    t0.elapsed()
}

fn main() {
    let agents = env("SHOAL_BENCH_AGENTS", 1000).max(1);
    let services = env("SHOAL_BENCH_SERVICES", 5).max(1);
    let steady = Duration::from_secs(env("SHOAL_BENCH_STEADY_SECS", 30) as u64);
    let nofile = raise_nofile();
    // Warnings and errors of the managers and agents (RUST_LOG overrides).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    // The agents' runtime; each manager runs on its own (named mgrN-).
    let rt = tokio::runtime::Builder::new_multi_thread().thread_name("agents").enable_all().build().expect("a runtime");
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("shoal-scale-bench-{}", std::process::id()));
        println!("scale bench: 3 managers, {agents} agents (file descriptor limit {nofile})");
        let t0 = Instant::now();
        let h = match Harness::start(&dir, 3, agents, 16).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("scale bench: the harness did not start: {e}");
                std::process::exit(1);
            }
        };
        let joined = t0.elapsed();
        let total = agents + 3;
        let leader = h.leader().await.expect("a leader").node.manager().await.expect("its manager");
        let t1 = Instant::now();
        loop {
            let ready = leader.shared().read(|s| s.nodes.values().filter(|n| n.state == NodeState::Ready).count());
            if ready == total {
                break;
            }
            if t1.elapsed() > Duration::from_secs(120) {
                eprintln!("scale bench: only {ready} of {total} nodes ready after 120 s");
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("joined:        {total} nodes in {:.1} s ({:.1} ms per node, 16 at a time)", joined.as_secs_f64(), joined.as_secs_f64() * 1000.0 / agents as f64);

        // Steady state: nothing proposed, every session heartbeating once a second.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before: Vec<Duration> = h.managers.iter().map(|m| m.cpu()).collect();
        let agents_before = threads_cpu("agents");
        let s0 = Instant::now();
        tokio::time::sleep(steady).await;
        let secs = s0.elapsed().as_secs_f64();
        let mut leader_cores = 0.0;
        let mut followers = Vec::new();
        for (m, b) in h.managers.iter().zip(&before) {
            let cores = m.cpu().saturating_sub(*b).as_secs_f64() / secs;
            if m.is_leader().await {
                leader_cores = cores;
            } else {
                followers.push(cores);
            }
        }
        let agents_cores = threads_cpu("agents").saturating_sub(agents_before).as_secs_f64() / secs;
        let follower = followers.iter().copied().fold(0.0, f64::max);
        println!(
            "steady state:  leader {leader_cores:.3} cores (goal < 0.333), busiest follower {follower:.3}, leader / follower {:.1}x; all {agents} agents {agents_cores:.3} cores (over {secs:.0} s)",
            leader_cores / follower.max(1e-6)
        );

        // Service create -> every node holds its endpoint.
        let mut all = Vec::new();
        let mut commits = Vec::new();
        for k in 0..services {
            let name = format!("scale{k}");
            let mut spec = ServiceSpec::new(name.clone(), "nginx");
            spec.mode = ServiceMode::Replicated { replicas: 1 };
            let t0 = Instant::now();
            let waits: Vec<_> = h.nodes().map(|n| tokio::spawn(holds(n.clone(), name.clone(), t0))).collect();
            h.managers[0].propose(Command::CreateService { spec }).await.expect("reaches the leader").expect("created");
            commits.push(t0.elapsed());
            for w in waits {
                match tokio::time::timeout(Duration::from_secs(60), w).await {
                    Ok(Ok(d)) => all.push(d),
                    _ => {
                        eprintln!("scale bench: a node did not hold {name}'s endpoint within 60 s");
                        std::process::exit(1);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        all.sort();
        commits.sort();
        let commit = pct(&commits, 0.5);
        println!(
            "create -> all {total} nodes hold the endpoint: p50 {:.0} ms, p99 {:.0} ms (goal < 1000), max {:.0} ms over {services} services; the create's commit p50 {:.0} ms; p99 / commit {:.1}x",
            pct(&all, 0.5).as_secs_f64() * 1000.0,
            pct(&all, 0.99).as_secs_f64() * 1000.0,
            all.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            commit.as_secs_f64() * 1000.0,
            pct(&all, 0.99).as_secs_f64() / commit.as_secs_f64().max(1e-6),
        );
        println!("view builds on the leader: {}", leader.views().builds());
        h.shutdown().await;
    });
}
