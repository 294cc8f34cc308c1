//! Benchmark: dnsperf against shoal's task listener and against dnsmasq serving the same records,
//! in the same run, on loopback. Also times a zone swap of a large zone.
//!
//! Called by `cargo bench -p shoal-dns` (benches/dnsperf.rs) and available to `shoal bench`.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{DnsConfig, DnsServer, EndpointMode, NetworkZone, ServiceRecord, TaskRecord, Zone};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Services in the zone (each with a VIP and `tasks_per_service` tasks).
    pub services: usize,
    /// Tasks per service.
    pub tasks_per_service: usize,
    /// Seconds per dnsperf run.
    pub seconds: u32,
    /// Rounds (shoal then dnsmasq, alternating).
    pub rounds: usize,
    /// Outstanding queries dnsperf keeps (`-q`).
    pub outstanding: u32,
    /// Services in the zone-swap timing.
    pub swap_services: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { services: 100, tasks_per_service: 3, seconds: 3, rounds: 4, outstanding: 100, swap_services: 5000 }
    }
}

/// One dnsperf result.
#[derive(Debug, Clone, Default)]
pub struct PerfResult {
    /// Queries per second.
    pub qps: f64,
    /// Average latency in microseconds.
    pub avg_latency_us: f64,
    /// Queries lost.
    pub lost: u64,
    /// Server CPU time (user + system) per answered query, microseconds: less sensitive to other
    /// load on the machine than qps.
    pub cpu_us_per_query: f64,
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// shoal runs.
    pub shoal: Vec<PerfResult>,
    /// dnsmasq runs.
    pub dnsmasq: Vec<PerfResult>,
    /// Backend change in the benchmark zone (`services` services): set_zone call to the first
    /// answer with the new backend, microseconds.
    pub change_visible_small_us: f64,
    /// The same in a zone of `swap_services` services in one network.
    pub change_visible_us: f64,
    /// Of which set_zone (build + swap) took, microseconds.
    pub swap_us: f64,
    /// Services in the large zone.
    pub swap_services: usize,
    /// dnsperf's outstanding queries.
    pub outstanding: u32,
}

impl BenchReport {
    /// shoal's median qps over dnsmasq's (rounds alternate, so both see the same machine load).
    pub fn ratio(&self) -> f64 {
        median(&self.shoal, |r| r.qps) / median(&self.dnsmasq, |r| r.qps).max(1.0)
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, runs) in [("shoal", &self.shoal), ("dnsmasq", &self.dnsmasq)] {
            for (i, r) in runs.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name:8} round {i}: {:>9.0} qps  avg latency {:>7.1} us  cpu {:>5.2} us/query  lost {}",
                    r.qps, r.avg_latency_us, r.cpu_us_per_query, r.lost
                );
            }
        }
        let _ = writeln!(
            out,
            "median qps: shoal {:.0}, dnsmasq {:.0}, ratio shoal/dnsmasq {:.2} (best rounds: {:.0} vs {:.0})",
            median(&self.shoal, |r| r.qps),
            median(&self.dnsmasq, |r| r.qps),
            self.ratio(),
            best(&self.shoal, |r| r.qps),
            best(&self.dnsmasq, |r| r.qps),
        );
        let _ = writeln!(
            out,
            "median server cpu per query: shoal {:.2} us, dnsmasq {:.2} us, ratio dnsmasq/shoal {:.2}",
            median(&self.shoal, |r| r.cpu_us_per_query),
            median(&self.dnsmasq, |r| r.cpu_us_per_query),
            median(&self.dnsmasq, |r| r.cpu_us_per_query) / median(&self.shoal, |r| r.cpu_us_per_query).max(1e-9),
        );
        let _ = writeln!(
            out,
            "median latency: shoal {:.1} us, dnsmasq {:.1} us (with {} queries outstanding)",
            median(&self.shoal, |r| r.avg_latency_us),
            median(&self.dnsmasq, |r| r.avg_latency_us),
            self.outstanding
        );
        let _ = writeln!(
            out,
            "backend change, set_zone to first new answer: {:.0} us (benchmark zone); {:.0} us with {} services in one network (set_zone {:.0} us of it)",
            self.change_visible_small_us, self.change_visible_us, self.swap_services, self.swap_us
        );
        out
    }
}

fn median(runs: &[PerfResult], f: impl Fn(&PerfResult) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(f).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn best(runs: &[PerfResult], f: impl Fn(&PerfResult) -> f64) -> f64 {
    runs.iter().map(f).fold(0.0, f64::max)
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A tool is missing or failed.
    #[error("{tool}: {reason}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What happened.
        reason: String,
    },
    /// The DNS server failed.
    #[error(transparent)]
    Dns(#[from] crate::DnsError),
    /// File I/O in the scratch folder.
    #[error("scratch file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The benchmark zone: network `bench`, services `svc<i>` with VIP 10.<i/250>.<i%250>.1 ... and
/// tasks at .2, .3, ...
pub fn bench_zone(services: usize, tasks_per_service: usize) -> Zone {
    let mut net = NetworkZone { name: "bench".into(), ..NetworkZone::default() };
    for i in 0..services {
        let base = |host: usize| Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8, host as u8);
        net.services.push(ServiceRecord {
            name: format!("svc{i}"),
            aliases: vec![],
            endpoint_mode: EndpointMode::Vip,
            vip: Some(base(1).into()),
            ports: vec![],
        });
        for t in 0..tasks_per_service {
            net.tasks.push(TaskRecord {
                id: format!("t{i}x{t}"),
                service: format!("svc{i}"),
                slot: Some(t as u64 + 1),
                name: None,
                ip: base(t + 2).into(),
                healthy: true,
                aliases: vec![],
            });
        }
    }
    Zone { networks: vec![net], nodes: vec![] }
}

/// Runs the comparison. Needs `dnsperf` and `dnsmasq` on PATH; uses only loopback.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let scratch = Scratch::new()?;
    let zone = bench_zone(opts.services, opts.tasks_per_service);

    // Same records for both: hosts file for dnsmasq, queries for dnsperf.
    let mut hosts = String::new();
    let mut queries = String::new();
    for (i, svc) in zone.networks[0].services.iter().enumerate() {
        if let Some(vip) = svc.vip {
            let _ = writeln!(hosts, "{vip} {}", svc.name);
        }
        for task in zone.networks[0].tasks.iter().filter(|t| t.service == svc.name) {
            let _ = writeln!(hosts, "{} tasks.{}", task.ip, svc.name);
        }
        let _ = writeln!(queries, "{} A", svc.name);
        if i % 2 == 0 {
            let _ = writeln!(queries, "tasks.{} A", svc.name);
        }
    }
    let hosts_path = scratch.write("hosts", &hosts)?;
    let queries_path = scratch.write("queries", &queries)?;

    let server = DnsServer::new(DnsConfig::default())?;
    server.set_zone(&zone)?;
    let shoal_addr = server.attach_task_at("bench", "127.0.0.1:0".parse().expect("addr"), vec!["bench".into()]).await?;
    let dnsmasq_port = free_udp_port()?;
    let mut dnsmasq = tokio::process::Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
            "--listen-address=127.0.0.1",
            "--local=/bench.invalid/",
        ])
        .arg(format!("--port={dnsmasq_port}"))
        .arg(format!("--addn-hosts={}", hosts_path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Tool { tool: "dnsmasq", reason: e.to_string() })?;
    let dnsmasq_addr: SocketAddr = ([127, 0, 0, 1], dnsmasq_port).into();
    // Ready when it answers.
    let mut ready = false;
    for _ in 0..100 {
        if probe_tasks_svc0(dnsmasq_addr, "10.0.0.2").await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        return Err(BenchError::Tool { tool: "dnsmasq", reason: format!("never answered on {dnsmasq_addr}") });
    }

    let mut report = BenchReport { outstanding: opts.outstanding, ..BenchReport::default() };
    for _ in 0..opts.rounds {
        report.shoal.push(dnsperf(shoal_addr, &queries_path, opts, std::process::id()).await?);
        let pid = dnsmasq.id().ok_or_else(|| BenchError::Tool { tool: "dnsmasq", reason: "exited".into() })?;
        report.dnsmasq.push(dnsperf(dnsmasq_addr, &queries_path, opts, pid).await?);
    }
    let _ = dnsmasq.kill().await;

    // A backend change, and how soon the next query sees it: benchmark zone, then a large one.
    report.change_visible_small_us = change_latency(&server, shoal_addr, zone).await?.1;
    let big = bench_zone(opts.swap_services, opts.tasks_per_service);
    server.set_zone(&big)?;
    let (swap, visible) = change_latency(&server, shoal_addr, big).await?;
    report.swap_us = swap;
    report.change_visible_us = visible;
    report.swap_services = opts.swap_services;
    Ok(report)
}

/// Moves task 0 of svc0 to 10.255.255.254 and returns (set_zone time, time until the next
/// `tasks.svc0` answer holds it), in microseconds.
async fn change_latency(server: &DnsServer, addr: SocketAddr, zone: Zone) -> Result<(f64, f64), BenchError> {
    let mut changed = zone;
    changed.networks[0].tasks[0].ip = Ipv4Addr::new(10, 255, 255, 254).into();
    let start = Instant::now();
    server.set_zone(&changed)?;
    let swap = start.elapsed().as_secs_f64() * 1e6;
    let seen = probe_tasks_svc0(addr, "10.255.255.254").await;
    let visible = start.elapsed().as_secs_f64() * 1e6;
    if !seen {
        return Err(BenchError::Tool { tool: "shoal", reason: "the changed backend was not in the next answer".into() });
    }
    Ok((swap, visible))
}

/// Asks `tasks.svc0` once and says whether `want` is in the answer.
async fn probe_tasks_svc0(addr: SocketAddr, want: &str) -> bool {
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RecordType},
    };
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return false;
    };
    let mut msg = Message::new(1, MessageType::Query, OpCode::Query);
    let Ok(name) = Name::from_ascii("tasks.svc0") else {
        return false;
    };
    msg.add_query(Query::query(name, RecordType::A));
    let Ok(bytes) = msg.to_vec() else { return false };
    if socket.send_to(&bytes, addr).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await else {
        return false;
    };
    Message::from_vec(&buf[..n]).map(|m| m.answers.iter().any(|r| r.data.to_string() == want)).unwrap_or(false)
}

/// CPU time (user + system) of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok())).sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

async fn dnsperf(addr: SocketAddr, queries: &std::path::Path, opts: &BenchOptions, server_pid: u32) -> Result<PerfResult, BenchError> {
    let cpu_before = cpu_seconds(server_pid);
    let out = tokio::process::Command::new("dnsperf")
        .args(["-s", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &opts.seconds.to_string(), "-q", &opts.outstanding.to_string(), "-c", "4"])
        .output()
        .await
        .map_err(|e| BenchError::Tool { tool: "dnsperf", reason: e.to_string() })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let qps = field("Queries per second").ok_or_else(|| BenchError::Tool {
        tool: "dnsperf",
        reason: format!("no result in output: {text}{}", String::from_utf8_lossy(&out.stderr)),
    })?;
    let cpu = cpu_seconds(server_pid) - cpu_before;
    let completed = field("Queries completed").unwrap_or(0.0);
    Ok(PerfResult {
        qps,
        avg_latency_us: field("Average Latency (s)").unwrap_or(0.0) * 1e6,
        lost: field("Queries lost").unwrap_or(0.0) as u64,
        cpu_us_per_query: if completed > 0.0 { cpu * 1e6 / completed } else { 0.0 },
    })
}

fn free_udp_port() -> Result<u16, BenchError> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|source| BenchError::Io { path: "127.0.0.1:0".into(), source })?;
    socket.local_addr().map(|a| a.port()).map_err(|source| BenchError::Io { path: "127.0.0.1:0".into(), source })
}

/// A scratch folder with a unique name, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Result<Self, BenchError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("shoal-dns-bench-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io { path: dir.clone(), source })?;
        Ok(Self { dir })
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, BenchError> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Io { path: path.clone(), source })?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
