//! Routing mesh benchmarks, one run, printed as ratios against a baseline measured in the same
//! run. Needs root: `cargo bench --bench mesh`.
//!
//! 1. Data path, per load balancer (eBPF, nftables, IPVS) on a 3-node lab with 3 `shoal whoami`
//!    replicas: new connections per second and request latency (connect + one HTTP request,
//!    p50/p99) through a published port (client -> node:5000) against the client going straight
//!    to the tasks (each routed through the node it runs on); through the VIP from a task against that
//!    task going straight to the tasks, on a port the service publishes (80) and on one it does
//!    not list at all (8080: a VIP carries every port); with eBPF, the VIP again from a process
//!    in the task's namespace but not its cgroup (the packet path, which the socket hooks do not
//!    see); and egress: a task's connections to a server outside the cluster (the lab's client)
//!    through its node's masquerade, against the same path with a plain route back instead.
//! 2. Programming, per load balancer, in a throwaway namespace: 10,000 services x 3 backends
//!    from empty; one backend change at 10,000 services (the agent's incremental path, and a
//!    full reconcile as a fresh `shoal dataplane apply` process does), with 100 services as the
//!    O(1) reference.
//!
//! SHOAL_BENCH_CONNS (default 3000) sets the connections per data-path measurement,
//! SHOAL_BENCH_ROUNDS (default 3) the interleaved rounds, SHOAL_BENCH_ONLY=datapath|programming
//! one half, SHOAL_BENCH_SERVICES (default 10000) the large service count of the programming
//! half, SHOAL_BENCH_LB=ebpf,nftables,ipvs the balancers (default: every one the kernel can
//! run; the others are named with the reason and skipped; one named here that cannot run is an
//! error). This machine's kernel has no IPVS: `tests/kernel-lab/bench-mesh.sh` runs the
//! benchmark under Debian's stock kernel (qemu, software emulation), where only the ratios
//! within one run mean anything.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_dataplane::lb::plan::{ServiceKey, ANY_PORT};
use shoal_dataplane::lb::{self, diff, Frontend, LbTable, LoadBalancer, Target};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
const CLIENT_ENV: &str = "SHOAL_MESH_BENCH_CLIENT";
const NODES: [&str; 3] = ["smgr", "snode1", "snode2"];

fn main() {
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        client(&spec);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the mesh benchmark needs root (network namespaces, eBPF, nftables)");
        std::process::exit(1);
    }
    let conns: usize = std::env::var("SHOAL_BENCH_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let services: u32 = std::env::var("SHOAL_BENCH_SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let only = std::env::var("SHOAL_BENCH_ONLY").unwrap_or_default();
    let kinds = balancers();
    if kinds.is_empty() {
        eprintln!("no load balancer can run here: nothing to measure");
        std::process::exit(1);
    }
    if only != "programming" {
        datapath(&kinds, conns);
    }
    if only != "datapath" {
        programming(&kinds, services);
    }
}

/// The balancers to measure: SHOAL_BENCH_LB (comma-separated; each must be able to run here),
/// or every one the kernel can run (the others are named with the reason).
fn balancers() -> Vec<lb::LbKind> {
    let asked = std::env::var("SHOAL_BENCH_LB").unwrap_or_default();
    let (kinds, forced): (Vec<lb::LbKind>, bool) = if asked.trim().is_empty() || asked.trim() == "auto" {
        (lb::LbKind::ALL.to_vec(), false)
    } else {
        let kinds = asked
            .split(',')
            .map(|k| match k.trim().parse::<lb::Choice>() {
                Ok(lb::Choice::Force(kind)) => kind,
                _ => {
                    eprintln!("SHOAL_BENCH_LB: '{k}' is not a load balancer: use a comma-separated list of ebpf, nftables, ipvs");
                    std::process::exit(2);
                }
            })
            .collect();
        (kinds, true)
    };
    let mut usable = Vec::new();
    for kind in kinds {
        if usable.contains(&kind) {
            continue;
        }
        match lb::probe_kind(kind) {
            Ok(()) => usable.push(kind),
            Err(reason) if forced => {
                eprintln!("SHOAL_BENCH_LB names {kind}, which cannot run here: {reason}");
                std::process::exit(1);
            }
            Err(reason) => println!("mesh: {kind} skipped: cannot run here: {reason}"),
        }
    }
    println!("mesh: load balancers measured: {}", usable.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "));
    usable
}

// ---------------------------------------------------------------------------------------------
// Client mode: a subprocess (so it can run in a task namespace and cgroup) that opens `n`
// connections round-robin over the targets, one HTTP request each, and prints the timings.

fn client(spec: &str) {
    let (targets, n) = spec.split_once(';').expect("targets;n");
    let targets: Vec<SocketAddrV4> = targets.split(',').map(|t| t.parse().expect("target")).collect();
    let n: usize = n.parse().expect("n");
    let one = |t: SocketAddrV4| -> Duration {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&t.into(), Duration::from_secs(3)).expect("connect");
        s.set_nodelay(true).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        assert!(buf.starts_with(b"HTTP/1.1 200"), "bad answer from {t}");
        start.elapsed()
    };
    for i in 0..50 {
        one(targets[i % targets.len()]);
    }
    let start = Instant::now();
    let mut lat: Vec<Duration> = (0..n).map(|i| one(targets[i % targets.len()])).collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    println!("RESULT {} {} {}", n as f64 / secs, pct(0.50), pct(0.99));
}

#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    conns_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

// ---------------------------------------------------------------------------------------------
// Data path.

struct Lab {
    name: String,
    procs: Vec<Child>,
}

impl Lab {
    fn ns(&self, host: &str) -> String {
        format!("shoal-{}-{host}", self.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in NODES {
            let _ = Command::new(SHOAL).args(["--netns", &self.ns(n), "dataplane", "teardown"]).output();
        }
        let _ = Command::new(SHOAL).args(["lab", "--name", &self.name, "down"]).output();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn state(lab: &Lab, node: &str) -> serde_json::Value {
    serde_json::json!({
        "node": node,
        "nodes": NODES.iter().enumerate().map(|(i, n)| serde_json::json!({"name": n, "address": format!("192.168.33.{}", 10 * (i + 1))})).collect::<Vec<_>>(),
        "networks": [{"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24",
                      "lb_addresses": {"smgr": "10.0.9.250", "snode1": "10.0.9.249", "snode2": "10.0.9.248"}}],
        "endpoints": NODES.iter().enumerate().map(|(i, n)| {
            let mut e = serde_json::json!({"id": format!("web.{}", i + 1), "network": "backend", "node": n, "ip": format!("10.0.9.{}", i + 2)});
            if *n == node { e["netns"] = serde_json::json!(lab.ns(&format!("{n}-web"))); }
            e
        }).collect::<Vec<_>>(),
        "services": [{"name": "web", "vips": {"backend": "10.0.9.100"},
                      "ports": [{"target": 80, "published": 5000}], "backends": ["web.1", "web.2", "web.3"]}],
    })
}

fn apply(lab: &Lab, lb: &str) {
    for n in NODES {
        let path = std::env::temp_dir().join(format!("{}-{n}.json", lab.name));
        std::fs::write(&path, serde_json::to_vec(&state(lab, n)).unwrap()).unwrap();
        run(Command::new(SHOAL).args(["--netns", &lab.ns(n), "dataplane", "apply", "--lb", lb, "--state", path.to_str().unwrap()]));
        let _ = std::fs::remove_file(&path);
    }
}

/// Runs the client in `ns` (and in `cgroup` when given and present).
fn measure(ns: &str, cgroup: Option<&str>, targets: &[&str], n: usize) -> Rate {
    let exe = std::env::current_exe().unwrap();
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(r#"cg=$1; ns=$2; shift 2; if [ -n "$cg" ] && [ -d "$cg" ]; then echo $$ > "$cg/cgroup.procs" || exit 1; fi; exec nsenter --net="$ns" "$@""#)
        .arg("sh")
        .arg(cgroup.unwrap_or(""))
        .arg(format!("/run/netns/{ns}"))
        .arg(exe)
        .env(CLIENT_ENV, format!("{};{n}", targets.join(","))));
    let line = out.lines().find(|l| l.starts_with("RESULT")).unwrap_or_else(|| panic!("client printed {out}"));
    let v: Vec<f64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    Rate { conns_per_sec: v[0], p50_us: v[1], p99_us: v[2] }
}

/// A fresh 3-node lab programmed with balancer `lb`, its servers running. A fresh one per
/// balancer: switching balancers in one lab leaves the kernel's conntrack entries of packets the
/// previous balancer let through (the eBPF NAT passes a TCP segment that opens no flow to the
/// node's stack), and a later connection on the same 4-tuple would meet them instead of the
/// new balancer's NAT.
fn lab_up(n: usize, lb: &str) -> Lab {
    let mut lab = Lab { name: format!("mb{}x{n}", std::process::id() % 100_000), procs: Vec::new() };
    run(Command::new(SHOAL).args(["lab", "--name", &lab.name, "up", "--nodes", "3"]));
    apply(&lab, lb);
    // Every task listens on 80 (listed and published) and 8080 (listed nowhere); a server
    // outside the cluster, in the client's namespace, for egress.
    let servers = NODES
        .iter()
        .flat_map(|n| [(lab.ns(&format!("{n}-web")), n.to_string(), "80"), (lab.ns(&format!("{n}-web")), n.to_string(), "8080")]);
    for (ns, name, port) in servers.chain([(lab.ns("client"), "outside".to_string(), "80")]).collect::<Vec<_>>() {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args([SHOAL, "whoami", "--name", &name, "--port", port])
            .stdout(Stdio::piped())
            .spawn()
            .expect("whoami");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        lab.procs.push(child);
    }
    // The direct baseline from outside: the client routes each task's address via the node it
    // runs on (client -> node -> task, no LB). Through one node (smgr) for all, as before egress,
    // the replies of remote tasks left their own node straight to the client, which that node's
    // egress masquerade now rightly rewrites (it never saw the connection open).
    for (i, _) in NODES.iter().enumerate() {
        let (task, node) = (format!("10.0.9.{}/32", i + 2), format!("192.168.33.{}", 10 * (i + 1)));
        run(Command::new("ip").args(["-n", &lab.ns("client"), "route", "replace", &task, "via", &node]));
    }
    lab
}

fn datapath(kinds: &[lb::LbKind], conns: usize) {
    let tasks = ["10.0.9.2:80", "10.0.9.3:80", "10.0.9.4:80"];
    let tasks_8080 = ["10.0.9.2:8080", "10.0.9.3:8080", "10.0.9.4:8080"];
    egress(&lab_up(0, &kinds[0].to_string()), conns, rounds_of_env());
    let rounds = rounds_of_env();
    println!("mesh data path: {conns} new connections per measurement (one HTTP request each), median of {rounds} interleaved rounds");
    // Where the eBPF balancer puts the node's tasks (its socket-level VIP balancing applies to
    // processes there); the other balancers make no cgroup.
    let cgroup2 = shoal_ebpf::cgroup2_mount().unwrap_or_default();
    for (i, lb) in kinds.iter().map(|k| k.to_string()).enumerate() {
        let lab = lab_up(i + 1, &lb);
        let (client, task) = (lab.ns("client"), lab.ns("snode1-web"));
        let cg = lb::Instance::named(&lab.ns("snode1")).cgroup(&cgroup2).to_string_lossy().into_owned();
        let ebpf = lb == "ebpf";
        let mut m: [Vec<Rate>; 7] = Default::default();
        for _ in 0..rounds {
            m[0].push(measure(&client, None, &tasks, conns));
            m[1].push(measure(&client, None, &["192.168.33.10:5000"], conns));
            m[2].push(measure(&task, None, &tasks, conns));
            m[3].push(measure(&task, Some(&cg), &["10.0.9.100:80"], conns));
            m[4].push(measure(&task, None, &tasks_8080, conns));
            m[5].push(measure(&task, Some(&cg), &["10.0.9.100:8080"], conns));
            if ebpf {
                // Not in the cgroup: no socket hook runs, the tc program on the bridge balances.
                m[6].push(measure(&task, None, &["10.0.9.100:8080"], conns));
            }
        }
        let mut rows = vec![
            ("published :5000 vs client->tasks      ", median_rate(m[1].clone()), median_rate(m[0].clone())),
            ("VIP :80 from a task vs task->tasks    ", median_rate(m[3].clone()), median_rate(m[2].clone())),
            ("VIP :8080 (unlisted) vs task->tasks   ", median_rate(m[5].clone()), median_rate(m[4].clone())),
        ];
        if ebpf {
            rows.push(("VIP :8080 packet path vs task->tasks  ", median_rate(m[6].clone()), median_rate(m[4].clone())));
        }
        for (what, r, base) in rows {
            println!("  {lb:<8} {what}: {}", against(r, base));
        }
    }
}

fn rounds_of_env() -> usize {
    std::env::var("SHOAL_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// Egress: the task on smgr opens connections to the server in the client namespace through
/// its node's masquerade, against the same path with the masquerade removed and a plain route
/// back to the overlay subnet in the client (the direct route).
fn egress(lab: &Lab, conns: usize, rounds: usize) {
    use shoal_dataplane::egress;
    let task = lab.ns("smgr-web");
    let node = lab.ns("smgr");
    let target = ["192.168.33.100:80"];
    let desired: shoal_dataplane::state::DesiredNode = serde_json::from_value(state(lab, "smgr")).unwrap();
    let set = move |on: bool| {
        let d = desired.clone();
        // In smgr's namespace: the table is that node's.
        let op = move || if on { egress::reconcile(&d).map(drop) } else { egress::teardown() };
        shoal_dataplane::netns::run_in(&node, op).expect("enter smgr").expect("egress table");
    };
    let mut via_nat = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..rounds {
        set(true);
        via_nat.push(measure(&task, None, &target, conns));
        set(false);
        direct.push(measure(&task, None, &target, conns));
    }
    set(true);
    println!(
        "mesh egress: task -> outside server through the node's masquerade vs a direct route: {}",
        against(median_rate(via_nat), median_rate(direct))
    );
}

/// "r vs base (ratio)" for the rate and both latencies.
fn against(r: Rate, base: Rate) -> String {
    format!(
        "{:>6.0} vs {:>6.0} conn/s ({:.2}x)  p50 {:>5.0} vs {:>5.0} us ({:.2}x)  p99 {:>6.0} vs {:>6.0} us ({:.2}x)",
        r.conns_per_sec,
        base.conns_per_sec,
        r.conns_per_sec / base.conns_per_sec,
        r.p50_us,
        base.p50_us,
        r.p50_us / base.p50_us,
        r.p99_us,
        base.p99_us,
        r.p99_us / base.p99_us
    )
}

fn median_rate(v: Vec<Rate>) -> Rate {
    let med = |f: fn(&Rate) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        x[x.len() / 2]
    };
    Rate { conns_per_sec: med(|r| r.conns_per_sec), p50_us: med(|r| r.p50_us), p99_us: med(|r| r.p99_us) }
}

// ---------------------------------------------------------------------------------------------
// Programming cost.

fn table(services: u32) -> LbTable {
    let mut t = LbTable::default();
    for i in 0..services {
        let key = ServiceKey::tcp(Ipv4Addr::from(0x0a60_0000 + i), ANY_PORT);
        let backends = (0..3)
            .map(|j| Target {
                addr: SocketAddrV4::new(Ipv4Addr::from(0x0a80_0000 + i * 3 + j), ANY_PORT),
                snat: Ipv4Addr::new(10, 0, 9, 250),
                local: false,
                weight: 1,
            })
            .collect();
        t.vips.insert(key, Frontend { keep_client_ip: false, backends });
    }
    t
}

/// Service `i`'s first backend replaced by a new address (one remove + one add).
fn changed(t: &LbTable, i: u32, round: u32) -> LbTable {
    let mut t = t.clone();
    let key = ServiceKey::tcp(Ipv4Addr::from(0x0a60_0000 + i), ANY_PORT);
    let f = t.vips.get_mut(&key).unwrap();
    f.backends.remove(0);
    f.backends.push(Target {
        addr: SocketAddrV4::new(Ipv4Addr::from(0x0ac0_0000 + round), ANY_PORT),
        snat: Ipv4Addr::new(10, 0, 9, 250),
        local: false,
        weight: 1,
    });
    f.backends.sort();
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Cost {
    program: Duration,
    incremental: Duration,
    full: Duration,
    ops: usize,
}

/// Programs `services` x 3 and measures one backend change (median of `rounds`).
fn cost(kind: lb::LbKind, inst: &lb::Instance, services: u32, rounds: u32) -> Cost {
    let base = table(services);
    let open = || lb::open(kind, inst, &LbTable::default()).expect("open balancer");
    let mut b: Box<dyn LoadBalancer> = open();
    let start = Instant::now();
    b.reconcile(&base, false).expect("program");
    let program = start.elapsed();
    let mut cur = base.clone();
    let mut inc = Vec::new();
    let mut ops_n = 0;
    for r in 0..rounds {
        let next = changed(&cur, services / 2, r);
        let ops = diff(&cur, &next);
        let start = Instant::now();
        ops_n = b.apply_ops(&next, &ops).expect("apply ops").len();
        inc.push(start.elapsed());
        cur = next;
    }
    drop(b);
    let mut full = Vec::new();
    for r in 0..rounds.min(3) {
        let next = changed(&cur, services / 3, 1000 + r);
        let start = Instant::now();
        let mut fresh = open(); // a new process: adopt what the kernel holds, diff, apply
        fresh.reconcile(&next, false).expect("reconcile");
        full.push(start.elapsed());
        cur = next;
    }
    open().teardown().expect("teardown");
    Cost { program, incremental: median(inc), full: median(full), ops: ops_n }
}

fn programming(kinds: &[lb::LbKind], services: u32) {
    let ns = format!("shoal-mbp{}", std::process::id() % 100_000);
    shoal_dataplane::netns::create(&ns).expect("create bench namespace");
    let inst = lb::Instance::named(&ns);
    println!("mesh programming: {services} services (any-port VIPs) x 3 backends; one change = replace one backend of one service");
    let mut results = Vec::new();
    for &kind in kinds {
        let inst = inst.clone();
        let (large, small) = shoal_dataplane::netns::run_in(&ns, move || (cost(kind, &inst, services, 21), cost(kind, &inst, 100, 21)))
            .expect("run in namespace");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  {:<8} program {services} services: {:>8.1} ms | one change at {services}: incremental {:>6.3} ms ({} kernel ops, {:.2}x the 100-service time), full reconcile {:>7.1} ms",
            kind.to_string(),
            ms(large.program),
            ms(large.incremental),
            large.ops,
            large.incremental.as_secs_f64() / small.incremental.as_secs_f64(),
            ms(large.full),
        );
        results.push((kind, large));
    }
    // Each balancer against nftables (the first measured when nftables was not).
    let base = results.iter().position(|(k, _)| *k == lb::LbKind::Nftables).unwrap_or(0);
    let (bk, b) = &results[base];
    for (k, c) in results.iter().filter(|(k, _)| k != bk) {
        println!(
            "  {k} / {bk}: program {:.2}x, incremental change {:.3}x, full reconcile {:.2}x",
            c.program.as_secs_f64() / b.program.as_secs_f64(),
            c.incremental.as_secs_f64() / b.incremental.as_secs_f64(),
            c.full.as_secs_f64() / b.full.as_secs_f64()
        );
    }
    let _ = lb::teardown_instance(&ns);
    let _ = shoal_dataplane::netns::delete(&ns);
}
