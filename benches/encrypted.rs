//! Single-stream TCP task-to-task over the encrypted overlay against the plain overlay between
//! the same nodes, for every encryption backend the running kernel can do: kernel WireGuard,
//! IPsec (XFRM ESP, AES-GCM) and userspace WireGuard (gotatun on TUN); and the bare WireGuard
//! tunnels node to node, with shoal's userspace WireGuard against `boringtun-cli` (crates.io)
//! with its default four threads and with one, whose 2.5x is the goal. Interleaved
//! rounds, medians, printed as ratios.
//!
//! The two WireGuards cannot share a node (one tunnel device, `shw0`), so they run one after
//! the other in phases, each with its own plain-overlay rows to compare with: kernel WireGuard
//! (with IPsec beside it, on its own VXLAN port) first, then the same state re-applied with
//! `--wireguard userspace` (and boringtun-cli's own tunnel). A backend the kernel cannot run is
//! skipped with the missing feature printed; it is probed as `shoal doctor` does, by making the
//! real thing in a throwaway network namespace (`unshare --net`).
//!
//! Needs root and iperf3; boringtun-cli from `cargo install boringtun-cli` in PATH or
//! SHOAL_BORINGTUN (skipped, and said, without it): `cargo bench --bench encrypted`.
//! SHOAL_BENCH_ENCRYPTION (comma-separated: kernel, ipsec, userspace; default every one the
//! kernel can run), SHOAL_BENCH_SECS (default 3) and SHOAL_BENCH_ROUNDS (default 3) tune the run.
//! In the kernel lab (kernel WireGuard and ESP): tests/kernel-lab/bench-encrypted.sh.

use std::process::{Child, Command, Output, Stdio};

use shoal_dataplane::crypt::key::PrivateKey;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
const NODES: [&str; 2] = ["smgr", "snode1"];

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Kernel,
    Ipsec,
    Userspace,
}

impl Backend {
    const ALL: [Backend; 3] = [Backend::Kernel, Backend::Ipsec, Backend::Userspace];

    /// Its name in SHOAL_BENCH_ENCRYPTION.
    fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Ipsec => "ipsec",
            Backend::Userspace => "userspace",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel WireGuard",
            Backend::Ipsec => "IPsec (ESP, AES-GCM)",
            Backend::Userspace => "userspace WireGuard",
        }
    }

    /// What `dataplane apply` says it brought up (its "encryption: ..." line).
    fn applied(self) -> &'static str {
        match self {
            Backend::Kernel => "encryption: kernel WireGuard",
            Backend::Ipsec => "encryption: IPsec",
            Backend::Userspace => "encryption: userspace WireGuard",
        }
    }

    /// Makes the real thing in a throwaway network namespace, as `shoal doctor` does; `Err`
    /// names the missing feature and carries the kernel's answer.
    fn probe(self) -> Result<(), String> {
        let (feature, script) = match self {
            Backend::Kernel => ("no kernel WireGuard", "ip link add bench-wg type wireguard".to_string()),
            Backend::Ipsec => (
                "no ESP (XFRM, rfc4106 AES-GCM)",
                "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x101 mode transport \
                 aead 'rfc4106(gcm(aes))' 0x000102030405060708090a0b0c0d0e0f10111213 128"
                    .to_string(),
            ),
            Backend::Userspace => ("no TUN device", "ip tuntap add dev bench-tun mode tun".to_string()),
        };
        let out = Command::new("unshare").args(["--net", "sh", "-c", &script]).output().map_err(|e| format!("{feature}: unshare: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{feature} (`{script}`: {})", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

/// The backends SHOAL_BENCH_ENCRYPTION asks for (every one by default).
fn wanted() -> Vec<Backend> {
    let Ok(list) = std::env::var("SHOAL_BENCH_ENCRYPTION") else { return Backend::ALL.to_vec() };
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for n in &names {
        assert!(
            Backend::ALL.iter().any(|b| b.name() == *n),
            "SHOAL_BENCH_ENCRYPTION: unknown backend '{n}' (use kernel, ipsec, userspace, comma-separated)"
        );
    }
    Backend::ALL.into_iter().filter(|b| names.contains(&b.name())).collect()
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
        for s in BORINGTUN_RUNS.iter().flat_map(|r| r.devices) {
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

/// The node keys, and the key the two nodes share (WireGuard's preshared key; IPsec derives
/// its SAs from it).
struct Keys {
    nodes: [PrivateKey; 2],
    pair: PrivateKey,
}

/// Node `i`'s desired state: the plain network, the WireGuard network when `wireguard`, the
/// IPsec network when `ipsec`; one task per node on each.
fn state(ns: &dyn Fn(&str) -> String, keys: &Keys, i: usize, wireguard: bool, ipsec: bool) -> serde_json::Value {
    let mut networks = vec![serde_json::json!({"name": "plain", "vni": 4200, "subnet": "10.0.42.0/24"})];
    let mut endpoints = vec![
        serde_json::json!({"id": "pa", "network": "plain", "node": "smgr", "ip": "10.0.42.2", "netns": ns("pa")}),
        serde_json::json!({"id": "pb", "network": "plain", "node": "snode1", "ip": "10.0.42.3", "netns": ns("pb")}),
    ];
    if wireguard {
        networks.push(serde_json::json!({"name": "secure", "vni": 4201, "subnet": "10.0.43.0/24", "encrypted": "wireguard"}));
        endpoints.push(serde_json::json!({"id": "sa", "network": "secure", "node": "smgr", "ip": "10.0.43.2", "netns": ns("sa")}));
        endpoints.push(serde_json::json!({"id": "sb", "network": "secure", "node": "snode1", "ip": "10.0.43.3", "netns": ns("sb")}));
    }
    if ipsec {
        networks.push(serde_json::json!({"name": "esp", "vni": 4202, "subnet": "10.0.44.0/24", "encrypted": "ipsec"}));
        endpoints.push(serde_json::json!({"id": "ia", "network": "esp", "node": "smgr", "ip": "10.0.44.2", "netns": ns("ia")}));
        endpoints.push(serde_json::json!({"id": "ib", "network": "esp", "node": "snode1", "ip": "10.0.44.3", "netns": ns("ib")}));
    }
    let nodes: Vec<serde_json::Value> = NODES
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let mut wg = serde_json::json!({"public_key": keys.nodes[j].public_key(), "address": format!("10.254.0.{}", j + 1)});
            if j != i {
                wg["preshared_key"] = serde_json::json!(keys.pair.expose().to_base64());
            }
            serde_json::json!({"name": name, "address": format!("192.168.33.{}", 10 * (j + 1)), "wireguard": wg})
        })
        .collect();
    serde_json::json!({
        "node": NODES[i],
        "nodes": nodes,
        "wireguard_private_key": keys.nodes[i].expose().to_base64(),
        "networks": networks,
        "endpoints": endpoints,
    })
}

/// `dataplane apply` on both nodes; checks it brought up each of `expect`.
fn apply_all(lab: &str, ns: &dyn Fn(&str) -> String, keys: &Keys, wireguard: Option<Backend>, ipsec: bool) {
    let wg = wireguard.map_or("auto", Backend::name);
    for (i, node) in NODES.iter().enumerate() {
        let path = std::env::temp_dir().join(format!("{lab}-{node}.json"));
        std::fs::write(&path, state(ns, keys, i, wireguard.is_some(), ipsec).to_string()).unwrap();
        let out = run(Command::new(SHOAL).args([
            "--netns",
            &ns(node),
            "dataplane",
            "apply",
            "--wireguard",
            wg,
            "--state",
            path.to_str().unwrap(),
        ]));
        let _ = std::fs::remove_file(path);
        let said = String::from_utf8_lossy(&out.stderr);
        // The report names the WireGuard backend when one runs, else IPsec.
        let expect = wireguard.or(ipsec.then_some(Backend::Ipsec));
        if let Some(b) = expect {
            assert!(said.contains(b.applied()), "apply on {} did not bring up {}: {said}", node, b.label());
        }
    }
}

/// How boringtun-cli runs: with its default of four threads, and with one (faster on this
/// two-core machine: both ends of the tunnel share the cores).
#[derive(Clone, Copy)]
struct BoringtunRun {
    threads: u32,
    /// Its tunnel: devices, the /30's second octet, the second node's address, the UDP port.
    devices: [&'static str; 2],
    net: u8,
    peer: &'static str,
    port: u16,
}

const BORINGTUN_RUNS: [BoringtunRun; 2] = [
    BoringtunRun { threads: 4, devices: ["bta", "btb"], net: 253, peer: "10.253.0.2", port: 51821 },
    BoringtunRun { threads: 1, devices: ["btc", "btd"], net: 252, peer: "10.252.0.2", port: 51822 },
];

/// boringtun-cli's own tunnel between the same two nodes (10.<net>.0.0/30), run as `how`
/// says; its version, or why it cannot run.
fn boringtun(bench: &mut Bench, ns: &dyn Fn(&str) -> String, how: BoringtunRun) -> Result<String, String> {
    let boringtun = std::env::var("SHOAL_BORINGTUN").unwrap_or_else(|_| "boringtun-cli".into());
    let version = match Command::new(&boringtun).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => return Err(format!("no {boringtun} (cargo install boringtun-cli, or set SHOAL_BORINGTUN)")),
    };
    let bk = [PrivateKey::generate(), PrivateKey::generate()];
    let addr = |host: u8| format!("10.{}.0.{host}", how.net);
    for (i, (node, dev, addr, peer_addr, peer_ul)) in
        [("smgr", how.devices[0], addr(1), addr(2), "192.168.33.20"), ("snode1", how.devices[1], addr(2), addr(1), "192.168.33.10")]
            .into_iter()
            .enumerate()
    {
        // In the foreground, as our child: ended by PID when the bench ends (daemonized, it
        // would outlive the bench).
        let child = Command::new("ip")
            .args(["netns", "exec", &ns(node), &boringtun, "--foreground", "--disable-drop-privileges", "-l", "/dev/null"])
            .args(["--threads", &how.threads.to_string(), dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start boringtun-cli");
        bench.children.push(child);
        let sock = std::path::PathBuf::from(format!("/var/run/wireguard/{dev}.sock"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !sock.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let req = format!(
            "set=1\nprivate_key={}\nlisten_port={port}\npublic_key={}\nendpoint={peer_ul}:{port}\nallowed_ip={peer_addr}/32\n\n",
            bk[i].expose().to_hex(),
            bk[1 - i].public_key().to_hex(),
            port = how.port,
        );
        let answer = shoal_dataplane::crypt::uapi::exchange(&sock, &req).expect("configure boringtun");
        assert!(answer.contains("errno=0"), "boringtun refused: {answer}");
        run(Command::new("ip").args(["-n", &ns(node), "addr", "add", &format!("{addr}/30"), "dev", dev]));
        run(Command::new("ip").args(["-n", &ns(node), "link", "set", dev, "mtu", "1440", "up"]));
    }
    Ok(version)
}

/// One measured row: its label, where iperf3 runs and what it reaches.
struct Case {
    label: String,
    from: String,
    to: &'static str,
}

/// Interleaved rounds over `cases`; the medians, in Gbit/s.
fn measure(cases: &[Case], rounds: usize, secs: u32) -> Vec<f64> {
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, c) in cases.iter().enumerate() {
            results[i].push(gbits(&c.from, c.to, secs));
        }
    }
    let med: Vec<f64> = results.into_iter().map(median).collect();
    for (c, g) in cases.iter().zip(&med) {
        println!("  {:<52} {g:>8.3} Gbit/s", c.label);
    }
    med
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("encrypted bench: needs root (network namespaces); skipped");
        return;
    }
    let secs: u32 = std::env::var("SHOAL_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("encrypted bench: kernel {}, {rounds} interleaved rounds of {secs} s, medians", kernel.trim());
    let mut runnable = Vec::new();
    let mut skipped = Vec::new();
    for b in wanted() {
        match b.probe() {
            Ok(()) => runnable.push(b),
            Err(why) => skipped.push(format!("{}: skipped: {why}", b.label())),
        }
    }
    for s in &skipped {
        println!("{s}");
    }
    let ipsec = runnable.contains(&Backend::Ipsec);
    // Phases: one per WireGuard (they share the device name), IPsec in the first.
    let mut phases: Vec<Option<Backend>> =
        [Backend::Kernel, Backend::Userspace].into_iter().filter(|b| runnable.contains(b)).map(Some).collect();
    if phases.is_empty() && ipsec {
        phases.push(None);
    }
    if phases.is_empty() {
        println!("encrypted bench: no encryption backend to measure on this kernel");
        return;
    }

    let mut bench = Bench { lab: format!("e{}", std::process::id()), children: Vec::new() };
    let lab = bench.lab.clone();
    run(Command::new(SHOAL).args(["lab", "--name", &lab, "up", "--nodes", "2"]));
    let ns = |h: &str| format!("shoal-{lab}-{h}");
    let keys = Keys { nodes: [PrivateKey::generate(), PrivateKey::generate()], pair: PrivateKey::generate() };
    let mut summary = Vec::new();
    let mut servers_started = false;
    for (p, wireguard) in phases.iter().enumerate() {
        apply_all(&lab, &ns, &keys, *wireguard, ipsec);
        if !servers_started {
            // The task namespaces exist from the first apply on, and stay.
            bench.children.push(iperf_server(&ns("pb")));
            bench.children.push(iperf_server(&ns("snode1")));
            if phases.iter().any(Option::is_some) {
                bench.children.push(iperf_server(&ns("sb")));
            }
            if ipsec {
                bench.children.push(iperf_server(&ns("ib")));
            }
            servers_started = true;
        }
        let mut cases = vec![Case { label: "plain overlay (task to task)".into(), from: ns("pa"), to: "10.0.42.3" }];
        if let Some(wg) = wireguard {
            cases.push(Case { label: format!("{} overlay (task to task)", wg.label()), from: ns("sa"), to: "10.0.43.3" });
            cases.push(Case { label: format!("{} tunnel (node to node)", wg.label()), from: ns(NODES[0]), to: "10.254.0.2" });
        }
        let ipsec_row = (ipsec && p == 0).then_some(cases.len());
        if ipsec_row.is_some() {
            cases.push(Case { label: format!("{} overlay (task to task)", Backend::Ipsec.label()), from: ns("ia"), to: "10.0.44.3" });
        }
        let mut boringtun_rows = Vec::new();
        if *wireguard == Some(Backend::Userspace) {
            for how in BORINGTUN_RUNS {
                match boringtun(&mut bench, &ns, how) {
                    Ok(version) => {
                        boringtun_rows.push((how.threads, cases.len()));
                        cases.push(Case {
                            label: format!("{version} tunnel, {} thread(s) (node to node)", how.threads),
                            from: ns(NODES[0]),
                            to: how.peer,
                        });
                    }
                    Err(why) => {
                        let s = format!("boringtun-cli: skipped: {why}");
                        println!("{s}");
                        skipped.push(s);
                        break;
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        println!("phase {}: {}", p + 1, wireguard.map_or("IPsec".to_string(), |w| format!("--wireguard {}", w.name())));
        let med = measure(&cases, rounds, secs);
        if let Some(wg) = wireguard {
            summary.push(format!("{:<46} {:.2}", format!("{} overlay / plain overlay:", wg.label()), med[1] / med[0]));
        }
        if let Some(i) = ipsec_row {
            summary.push(format!("{:<46} {:.2}", format!("{} overlay / plain overlay:", Backend::Ipsec.label()), med[i] / med[0]));
        }
        for (threads, i) in &boringtun_rows {
            let against = format!("boringtun-cli --threads {threads}{}", if *threads == 4 { " (its default)" } else { "" });
            summary.push(format!("{:<46} {:.2} (goal 2.5)", format!("userspace WireGuard tunnel / {against}:"), med[2] / med[*i]));
            summary.push(format!("{:<46} {:.2}", format!("userspace WireGuard overlay / {against}:"), med[1] / med[*i]));
        }
    }
    println!("ratios (each against the plain overlay of its own phase):");
    for s in &summary {
        println!("  {s}");
    }
    for s in &skipped {
        println!("  {s}");
    }
}
