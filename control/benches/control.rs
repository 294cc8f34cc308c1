//! Control-plane benchmarks (harness = false; prints numbers and ratios against baselines
//! measured in the same run):
//! - placement: 10,000 tasks on 1,000 simulated nodes (goal: >= 5,000 placements/s);
//! - Raft commit latency and throughput with fsync, 1 and 3 managers on loopback, against
//!   the latency of a bare fsync on the same disk;
//! - leader failover time, against the election timeout (goal: within 1 s after it).
//!
//! `cargo bench -p shoal-control --bench control [-- placement|commit|failover]`

use shoal_control::manager::{Manager, RaftTiming};
use shoal_control::model::{Availability, Cluster, Node, NodeState, Role, ServiceMode, ServiceSpec};
use shoal_control::node::{InitOptions, JoinOptions, LocalReply, LocalRequest, NodeConfig, NodeControl};
use shoal_control::state::{ClusterState, Command, Request};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if want("placement") {
        placement();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if want("commit") {
        rt.block_on(commit(1));
        rt.block_on(commit(3));
    }
    if want("failover") {
        rt.block_on(failover(3));
    }
}

fn node(i: usize) -> Node {
    Node {
        id: format!("node{i:05}").into(),
        raft_id: i as u64 + 1,
        hostname: format!("host{i}"),
        addr: format!("192.168.{}.{}", i / 250, i % 250 + 1),
        manager_addr: None,
        role: if i == 0 { Role::Manager } else { Role::Worker },
        availability: Availability::Active,
        state: NodeState::Ready,
        message: String::new(),
        labels: BTreeMap::new(),
        created_ms: 0,
        updated_ms: 0,
        resources: Default::default(),
        encryption: Default::default(),
    }
}

fn placement() {
    let mut st = ClusterState::default();
    let cluster = Cluster {
        id: "bench".into(),
        created_ms: 0,
        default_addr_pool: vec!["10.0.0.0/8".parse().unwrap()],
        subnet_size: 24,
        worker_token: String::new(),
        manager_token: String::new(),
        ca_cert_pem: String::new(),
        ca_key_pem: String::new(),
        task_history_limit: 5,
        heartbeat_period_ms: 1000,
        cert_expiry_ms: shoal_control::ca::DEFAULT_CERT_EXPIRY.as_millis() as u64,
        ca_rotation: None,
        autolock_key: None,
    };
    shoal_control::decide::apply(&mut st, &Request { now_ms: 1, cmd: Command::Init { cluster, node: node(0) } }).unwrap();
    for i in 1..1000 {
        shoal_control::decide::apply(&mut st, &Request { now_ms: 1, cmd: Command::AddNode { node: node(i) } }).unwrap();
    }
    // Baseline: a reconcile pass with nothing to do over the same state size, measured after.
    let mut spec = ServiceSpec::new("big", "nginx");
    spec.mode = ServiceMode::Replicated { replicas: 10_000 };
    let t = Instant::now();
    shoal_control::decide::apply(&mut st, &Request { now_ms: 2, cmd: Command::CreateService { spec } }).unwrap();
    let took = t.elapsed();
    let placed = st.tasks.values().filter(|t| t.node_id.is_some()).count();
    let per_s = placed as f64 / took.as_secs_f64();
    let t = Instant::now();
    shoal_control::decide::apply(&mut st, &Request { now_ms: 3, cmd: Command::Tick }).unwrap();
    let idle = t.elapsed();
    // A second service, spread across the same loaded nodes.
    let mut spec = ServiceSpec::new("second", "nginx");
    spec.mode = ServiceMode::Replicated { replicas: 10_000 };
    let t = Instant::now();
    shoal_control::decide::apply(&mut st, &Request { now_ms: 4, cmd: Command::CreateService { spec } }).unwrap();
    let took2 = t.elapsed();
    let max = st.nodes.keys().map(|n| st.tasks.values().filter(|t| t.node_id.as_ref() == Some(n)).count()).max().unwrap_or(0);
    println!(
        "placement: {placed} tasks on 1000 nodes in {:.1} ms = {per_s:.0} placements/s ({:.1}x the 5000/s goal)",
        took.as_secs_f64() * 1e3,
        per_s / 5000.0
    );
    println!(
        "placement: second 10000-task service on loaded nodes in {:.1} ms = {:.0} placements/s; max tasks per node {max}",
        took2.as_secs_f64() * 1e3,
        10_000.0 / took2.as_secs_f64()
    );
    println!(
        "placement: baseline idle reconcile over 10000 tasks {:.2} ms (placement costs {:.1}x an idle pass)",
        idle.as_secs_f64() * 1e3,
        took.as_secs_f64() / idle.as_secs_f64().max(1e-9)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct BenchNode {
    node: NodeControl,
    stop: tokio::sync::watch::Sender<bool>,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn start_node(timing: RaftTiming) -> BenchNode {
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench")
        .tempdir_in(std::env::var("SHOAL_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let port = free_port();
    let mut cfg = NodeConfig::new(dir.path());
    cfg.socket = None;
    cfg.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.advertise_addr = Some(format!("127.0.0.1:{port}"));
    cfg.heartbeat_period = Duration::from_millis(500);
    cfg.raft = timing;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = NodeControl::start(cfg, rx).await.unwrap();
    BenchNode { node, stop, addr: format!("127.0.0.1:{port}"), _dir: dir }
}

async fn cluster(n: usize, timing: RaftTiming) -> Vec<BenchNode> {
    let first = start_node(timing.clone()).await;
    let r = first
        .node
        .handle(LocalRequest::Init(InitOptions {
            advertise_addr: first.addr.clone(),
            listen_addr: None,
            default_addr_pool: vec![],
            default_addr_pool_mask_length: 24,
            force_new_cluster: false,
            task_history_limit: None,
            cert_expiry_ms: None,
            autolock: false,
        }))
        .await
        .unwrap();
    let LocalReply::Initialized { manager_token, .. } = r else { panic!("init") };
    let mut nodes = vec![first];
    for _ in 1..n {
        let b = start_node(timing.clone()).await;
        b.node
            .handle(LocalRequest::Join(JoinOptions {
                token: manager_token.clone(),
                remote: nodes[0].addr.clone(),
                advertise_addr: None,
                listen_addr: None,
            }))
            .await
            .unwrap();
        nodes.push(b);
    }
    let m0 = nodes[0].node.manager().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = m0.raft().metrics().borrow().clone();
        let mem = m.membership_config.membership();
        if mem.get_joint_config().len() == 1 && mem.voter_ids().count() == n {
            break;
        }
        assert!(Instant::now() < deadline, "cluster did not form");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}

async fn leader(nodes: &[BenchNode]) -> Option<(usize, Manager)> {
    for (i, b) in nodes.iter().enumerate() {
        if let Some(m) = b.node.manager().await {
            if m.is_leader() {
                return Some((i, m));
            }
        }
    }
    None
}

fn fsync_baseline() -> Duration {
    use std::io::Write;
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench")
        .tempdir_in(std::env::var("SHOAL_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&[0u8; 256]).unwrap();
        f.sync_data().unwrap();
    }
    t.elapsed() / n
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

async fn commit(n: usize) {
    let timing = RaftTiming::default();
    let nodes = cluster(n, timing).await;
    let (_, m) = leader(&nodes).await.expect("leader");
    let fsync = fsync_baseline();
    // Latency: one write at a time.
    let mut lat = vec![];
    for _ in 0..300 {
        let t = Instant::now();
        m.propose(Command::Tick).await.unwrap().0.unwrap();
        lat.push(t.elapsed());
    }
    let p50 = pct(&mut lat, 0.5);
    let p99 = pct(&mut lat, 0.99);
    // Throughput: 64 concurrent writers.
    let total = 3000;
    let t = Instant::now();
    let mut handles = vec![];
    for _ in 0..64 {
        let m = m.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..total / 64 {
                m.propose(Command::Tick).await.unwrap().0.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let tput = (total / 64 * 64) as f64 / t.elapsed().as_secs_f64();
    println!(
        "commit ({n} manager{}): latency p50 {:.2} ms, p99 {:.2} ms ({:.1}x a bare fsync of {:.2} ms); throughput {tput:.0} commits/s with 64 writers",
        if n > 1 { "s" } else { "" },
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        p50.as_secs_f64() / fsync.as_secs_f64().max(1e-9),
        fsync.as_secs_f64() * 1e3
    );
    for b in nodes {
        b.stop.send_replace(true);
        b.node.stop().await;
    }
}

async fn failover(n: usize) {
    let timing = RaftTiming::default();
    let election_max = Duration::from_millis(timing.election_max_ms);
    let mut results = vec![];
    for _round in 0..3 {
        let mut nodes = cluster(n, timing.clone()).await;
        let (li, m) = leader(&nodes).await.expect("leader");
        m.propose(Command::Tick).await.unwrap().0.unwrap();
        let old_id = m.config().raft_id;
        let dead = nodes.remove(li);
        let t = Instant::now();
        dead.stop.send_replace(true);
        dead.node.stop().await;
        // Until a survivor is leader and has committed a write.
        loop {
            if let Some((_, m)) = leader(&nodes).await {
                if m.config().raft_id != old_id && m.propose(Command::Tick).await.map(|r| r.0.is_ok()).unwrap_or(false) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        results.push(t.elapsed());
        for b in nodes {
            b.stop.send_replace(true);
            b.node.stop().await;
        }
    }
    let worst = results.iter().max().copied().unwrap_or_default();
    let ms: Vec<String> = results.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e3)).collect();
    println!(
        "failover ({n} managers): leader killed -> new leader committed a write in [{}] ms; worst {:.0} ms = election timeout max {} ms + {:.0} ms (goal: +1000 ms; swarmkit: 10-19 s)",
        ms.join(", "),
        worst.as_secs_f64() * 1e3,
        election_max.as_millis(),
        worst.as_secs_f64() * 1e3 - election_max.as_millis() as f64
    );
}
