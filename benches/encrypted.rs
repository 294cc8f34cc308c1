//! Single-stream TCP task-to-task over the encrypted overlay (userspace WireGuard, gotatun on
//! TUN, under VXLAN) against the plain overlay between the same nodes; and the bare tunnels
//! node to node: shoal's userspace WireGuard against `boringtun-cli` (crates.io), whose 2.5x is
//! the goal. Interleaved rounds, medians, printed as ratios. Needs root and iperf3;
//! boringtun-cli from `cargo install boringtun-cli` in PATH or SHOAL_BORINGTUN (skipped, and
//! said, without it): `cargo bench --bench encrypted`. SHOAL_BENCH_SECS (default 3) and
//! SHOAL_BENCH_ROUNDS (default 3) tune the run.

use std::process::{Child, Command, Output, Stdio};

use shoal_dataplane::crypt::key::PrivateKey;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

struct Bench {
    lab: String,
    children: Vec<Child>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(SHOAL).args(["lab", "--name", &self.lab, "down"]).output();
        for s in ["bta", "btb"] {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{s}.sock"));
        }
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

fn iperf_server(ns: &str) -> Child {
    Command::new("ip").args(["netns", "exec", ns, "iperf3", "-s"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("iperf3 -s")
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("encrypted bench: needs root (network namespaces); skipped");
        return;
    }
    let secs: u32 = std::env::var("SHOAL_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut bench = Bench { lab: format!("e{}", std::process::id()), children: Vec::new() };
    let lab = bench.lab.clone();
    run(Command::new(SHOAL).args(["lab", "--name", &lab, "up", "--nodes", "2"]));
    let ns = |h: &str| format!("shoal-{lab}-{h}");
    let keys = [PrivateKey::generate(), PrivateKey::generate()];
    for (i, node) in ["smgr", "snode1"].iter().enumerate() {
        let state = serde_json::json!({
            "node": node,
            "nodes": [
                {"name": "smgr", "address": "192.168.33.10", "wireguard": {"public_key": keys[0].public_key(), "address": "10.254.0.1"}},
                {"name": "snode1", "address": "192.168.33.20", "wireguard": {"public_key": keys[1].public_key(), "address": "10.254.0.2"}},
            ],
            "wireguard_private_key": keys[i].expose().to_base64(),
            "networks": [
                {"name": "plain", "vni": 4200, "subnet": "10.0.42.0/24"},
                {"name": "secure", "vni": 4201, "subnet": "10.0.43.0/24", "encrypted": "wireguard"},
            ],
            "endpoints": [
                {"id": "pa", "network": "plain", "node": "smgr", "ip": "10.0.42.2", "netns": ns("pa")},
                {"id": "pb", "network": "plain", "node": "snode1", "ip": "10.0.42.3", "netns": ns("pb")},
                {"id": "sa", "network": "secure", "node": "smgr", "ip": "10.0.43.2", "netns": ns("sa")},
                {"id": "sb", "network": "secure", "node": "snode1", "ip": "10.0.43.3", "netns": ns("sb")},
            ],
        });
        let path = std::env::temp_dir().join(format!("{lab}-{node}.json"));
        std::fs::write(&path, state.to_string()).unwrap();
        run(Command::new(SHOAL).args([
            "--netns",
            &ns(node),
            "dataplane",
            "apply",
            "--wireguard",
            "userspace",
            "--state",
            path.to_str().unwrap(),
        ]));
        let _ = std::fs::remove_file(path);
    }
    let mut cases: Vec<(&str, String, String)> = vec![
        ("plain overlay (task to task)", ns("pa"), "10.0.42.3".into()),
        ("encrypted overlay (task to task)", ns("sa"), "10.0.43.3".into()),
        ("shoal userspace WireGuard (node to node)", ns("smgr"), "10.254.0.2".into()),
    ];
    bench.children.push(iperf_server(&ns("pb")));
    bench.children.push(iperf_server(&ns("sb")));
    bench.children.push(iperf_server(&ns("snode1")));
    let boringtun = std::env::var("SHOAL_BORINGTUN").unwrap_or_else(|_| "boringtun-cli".into());
    if Command::new(&boringtun).arg("--version").output().is_ok_and(|o| o.status.success()) {
        // Its own tunnel between the same two nodes (10.253.0.0/30, port 51821).
        let bk = [PrivateKey::generate(), PrivateKey::generate()];
        for (i, (node, dev, addr, peer_addr, peer_ul)) in
            [("smgr", "bta", "10.253.0.1", "10.253.0.2", "192.168.33.20"), ("snode1", "btb", "10.253.0.2", "10.253.0.1", "192.168.33.10")]
                .into_iter()
                .enumerate()
        {
            // In the foreground, as our child: ended by PID when the bench ends (daemonized, it
            // would outlive the bench).
            let child = Command::new("ip")
                .args(["netns", "exec", &ns(node), &boringtun, "--foreground", "--disable-drop-privileges", "-l", "/dev/null", dev])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start boringtun-cli");
            bench.children.push(child);
            let sock = std::path::PathBuf::from(format!("/var/run/wireguard/{dev}.sock"));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !sock.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let req = format!(
                "set=1\nprivate_key={}\nlisten_port=51821\npublic_key={}\nendpoint={peer_ul}:51821\nallowed_ip={peer_addr}/32\n\n",
                bk[i].expose().to_hex(),
                bk[1 - i].public_key().to_hex()
            );
            let answer = shoal_dataplane::crypt::uapi::exchange(&sock, &req).expect("configure boringtun");
            assert!(answer.contains("errno=0"), "boringtun refused: {answer}");
            run(Command::new("ip").args(["-n", &ns(node), "addr", "add", &format!("{addr}/30"), "dev", dev]));
            run(Command::new("ip").args(["-n", &ns(node), "link", "set", dev, "mtu", "1440", "up"]));
        }
        cases.push(("boringtun-cli 0.7.1 (node to node)", ns("smgr"), "10.253.0.2".into()));
    } else {
        eprintln!("encrypted bench: no {boringtun} (cargo install boringtun-cli, or set SHOAL_BORINGTUN): its row is skipped");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, from, to)) in cases.iter().enumerate() {
            results[i].push(gbits(from, to, secs));
        }
    }
    let med: Vec<f64> = results.into_iter().map(median).collect();
    for ((name, _, _), g) in cases.iter().zip(&med) {
        println!("{name:<45} {g:>7.2} Gbit/s");
    }
    println!("encrypted / plain overlay:                 {:.2}", med[1] / med[0]);
    if med.len() > 3 {
        println!("shoal userspace WG / boringtun-cli:        {:.2} (goal 2.5)", med[2] / med[3]);
        println!("encrypted overlay / boringtun-cli tunnel:  {:.2}", med[1] / med[3]);
    }
}
