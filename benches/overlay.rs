//! Task-to-task TCP throughput over the VXLAN overlay against plain veth between the same two
//! namespaces, measured in one run (interleaved rounds, medians) and printed as a ratio.
//! Needs root and iperf3: `cargo bench --bench overlay`.
//! SHOAL_BENCH_SECS (default 3) and SHOAL_BENCH_ROUNDS (default 5) tune the run.

use std::process::{Child, Command, Output};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

struct Bench {
    lab: String,
    server: Option<Child>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new(SHOAL).args(["lab", "--name", &self.lab, "down"]).output();
    }
}

fn gbits(ns: &str, target: &str, secs: u32) -> f64 {
    let out = run(Command::new("ip").args(["netns", "exec", ns, "iperf3", "-c", target, "-t", &secs.to_string(), "-J"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    v["end"]["sum_received"]["bits_per_second"].as_f64().expect("bits_per_second") / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("overlay bench: needs root (network namespaces); skipped");
        return;
    }
    let secs: u32 = std::env::var("SHOAL_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let bench = Bench { lab: format!("b{}", std::process::id()), server: None };
    let lab = bench.lab.clone();
    run(Command::new(SHOAL).args(["lab", "--name", &lab, "up", "--nodes", "2"]));
    let (a, b, c) = (format!("shoal-{lab}-ta"), format!("shoal-{lab}-tb"), format!("shoal-{lab}-tc"));
    for node in ["smgr", "snode1"] {
        let state = serde_json::json!({
            "node": node,
            "nodes": [{"name": "smgr", "address": "192.168.33.10"}, {"name": "snode1", "address": "192.168.33.20"}],
            "networks": [{"name": "bench", "vni": 4200, "subnet": "10.0.42.0/24",
                          "lb_addresses": {"smgr": "10.0.42.250", "snode1": "10.0.42.249"}}],
            "endpoints": [
                {"id": "a", "network": "bench", "node": "smgr", "ip": "10.0.42.2", "netns": a},
                {"id": "b", "network": "bench", "node": "snode1", "ip": "10.0.42.3", "netns": b},
                {"id": "c", "network": "bench", "node": "smgr", "ip": "10.0.42.4", "netns": c},
            ],
        });
        let path = std::env::temp_dir().join(format!("{lab}-{node}.json"));
        std::fs::write(&path, state.to_string()).unwrap();
        run(Command::new(SHOAL).args(["--netns", &format!("shoal-{lab}-{node}"), "dataplane", "apply", "--state", path.to_str().unwrap()]));
        let _ = std::fs::remove_file(path);
    }
    // The baseline: one veth straight from task a to task b (dies with the namespaces).
    ip(&["link", "add", "bva", "netns", &a, "type", "veth", "peer", "name", "bvb", "netns", &b]);
    ip(&["-n", &a, "addr", "add", "172.31.0.1/30", "dev", "bva"]);
    ip(&["-n", &b, "addr", "add", "172.31.0.2/30", "dev", "bvb"]);
    ip(&["-n", &a, "link", "set", "bva", "up"]);
    ip(&["-n", &b, "link", "set", "bvb", "up"]);
    let mut bench = bench;
    bench.server = Some(
        Command::new("ip").args(["netns", "exec", &b, "iperf3", "-s"]).stdout(std::process::Stdio::null()).spawn().expect("iperf3 -s"),
    );
    let server_c =
        Command::new("ip").args(["netns", "exec", &c, "iperf3", "-s"]).stdout(std::process::Stdio::null()).spawn().expect("iperf3 -s");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server_c = Kill(server_c);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (mut veth, mut overlay, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        veth.push(gbits(&a, "172.31.0.2", secs));
        overlay.push(gbits(&a, "10.0.42.3", secs));
        local.push(gbits(&a, "10.0.42.4", secs));
        eprintln!("round {round}: veth {:.2}  overlay {:.2}  same-node bridge {:.2} Gbit/s", veth[round], overlay[round], local[round]);
    }
    let (v, o, l) = (median(veth), median(overlay), median(local));
    println!("overlay throughput, TCP, {rounds} rounds x {secs}s, medians:");
    println!("  plain veth (baseline)        {v:6.2} Gbit/s");
    println!("  overlay across nodes (VXLAN) {o:6.2} Gbit/s   ratio {:.2}", o / v);
    println!("  overlay same node (bridge)   {l:6.2} Gbit/s   ratio {:.2}", l / v);
}
