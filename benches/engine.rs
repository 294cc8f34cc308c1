//! The Engine API against the shoal CLI, in one run: wall time of `docker service ls` and
//! `docker node ls` (Debian's 20.10 client on the daemon's engine socket) against `shoal service
//! ls` and `shoal node ls` (the local API), on the 3-node daemon lab with a 3-replica service.
//! Printed as medians and p90s and as ratios to the shoal CLI measured in the same rounds.
//! Needs root and the docker client of tests/prereqs.sh: `cargo bench --bench engine`.
//! SHOAL_BENCH_ROUNDS (default 5) interleaved rounds of SHOAL_BENCH_RUNS (default 20) runs each.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::{join_all, wait_for, Cluster};

fn docker_bin() -> PathBuf {
    std::env::var("SHOAL_DOCKER").map(PathBuf::from).unwrap_or_else(|_| {
        let debian = PathBuf::from("/usr/local/lib/shoal/docker.io/docker");
        if debian.exists() {
            debian
        } else {
            "docker".into()
        }
    })
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn time(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("run");
    let d = t.elapsed();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    d
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("engine bench: needs root (network namespaces for the lab)");
        std::process::exit(1);
    }
    let rounds = env_usize("SHOAL_BENCH_ROUNDS", 5);
    let runs = env_usize("SHOAL_BENCH_RUNS", 20);
    let docker = docker_bin();
    let config = tempfile::tempdir().unwrap();
    let c = Cluster::up();
    join_all(&c);
    c.cli("smgr", &["service", "create", "--name", "vote", "--replicas", "3", "-p", "5000:80", "shoal/whoami"]);
    wait_for("vote 3/3", Duration::from_secs(60), || c.cli("smgr", &["service", "ls"]).contains("3/3"));

    let docker_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&docker);
        cmd.args(args).env("DOCKER_HOST", format!("unix://{}", c.engine_sock("smgr").display())).env("DOCKER_CONFIG", config.path());
        cmd
    };
    let shoal_cmd = |args: &[&str]| {
        let mut cmd = Command::new(support::SHOAL);
        cmd.args(&args[..1]).args(["--host", &c.host("smgr")]).args(&args[1..]);
        cmd
    };
    let cases: [(&str, &[&str]); 2] = [("service ls", &["service", "ls"]), ("node ls", &["node", "ls"])];
    let version =
        Command::new(&docker).args(["version", "--format", "{{.Client.Version}}"]).env("DOCKER_HOST", "unix:///nonexistent").output();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    println!("engine bench: docker client {version} ({}), {rounds} rounds x {runs} runs, 3 nodes, 1 service x 3 tasks", docker.display());
    for (name, args) in cases {
        let (mut d, mut s) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for _ in 0..runs {
                s.push(time(shoal_cmd(args)));
                d.push(time(docker_cmd(args)));
            }
        }
        let (d50, s50) = (pct(&mut d, 0.5), pct(&mut s, 0.5));
        let (d90, s90) = (pct(&mut d, 0.9), pct(&mut s, 0.9));
        println!(
            "{name:<11} shoal CLI p50 {:>7.2} ms p90 {:>7.2} ms | docker CLI p50 {:>7.2} ms p90 {:>7.2} ms | docker/shoal p50 {:.2}x p90 {:.2}x",
            s50.as_secs_f64() * 1e3,
            s90.as_secs_f64() * 1e3,
            d50.as_secs_f64() * 1e3,
            d90.as_secs_f64() * 1e3,
            d50.as_secs_f64() / s50.as_secs_f64(),
            d90.as_secs_f64() / s90.as_secs_f64()
        );
    }
    // The engine's share, without either client's start-up: one HTTP request on the socket.
    let mut h = Vec::new();
    for _ in 0..rounds * runs {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "--unix-socket"]).arg(c.engine_sock("smgr")).arg("http://localhost/v1.41/services?status=true");
        h.push(time(cmd));
    }
    println!("curl GET /services?status=true p50 {:.2} ms (the request alone)", pct(&mut h, 0.5).as_secs_f64() * 1e3);
}
