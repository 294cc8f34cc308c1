//! Image task benchmarks, one run, on a 3-node lab cluster with a lab registry (needs root:
//! `cargo bench --bench images`):
//!
//! 1. Task start: `service create` (one replica, on a node whose store has the image) until the
//!    CLI sees it running, p50/p99, against the runtime's own bare start in the same run: `runc
//!    run --detach` of the same image's root (a flat copy) with the same sandbox (the
//!    `config.json` shoal writes, without the task's network namespace and cgroups). Docker
//!    (containerd + runc) typically takes 300-600 ms per container.
//! 2. Pull throughput from the lab registry (`shoal image pull` into an empty store) against
//!    `skopeo copy` of the same image from the same registry to a local directory.
//! 3. Disk used by 20 tasks of one image on one node: the store's layers (once) and the tasks'
//!    own upper directories, against 20 copies of the image.
//!
//! SHOAL_BENCH_ROUNDS (default 20) sets the samples of 1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::{join_all, running, wait_for, Cluster};
use support::images;
use support::registry::Registry;

const PORT: u16 = 5051;

fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

fn du(path: &Path) -> u64 {
    let out = Command::new("du").args(["-s", "-B1", "-x"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let registry = format!("192.168.33.100:{PORT}");
    let c = Cluster::up_with_registries(&[&registry]);
    join_all(&c);
    let reg = Registry::start(&c.lab, PORT);
    let tmp = PathBuf::from(format!("/tmp/shoal-bench-images-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let busybox = tmp.join("busybox.tar");
    images::busybox_image(&busybox, "bench/busybox:1");
    let busybox = reg.push(&busybox, "bench/busybox:1");
    let redis = tmp.join("redis.tar");
    images::redis_image(&redis, "bench/redis:7");
    let redis = reg.push(&redis, "bench/redis:7");

    // Warm snode1: the first task pulls, the rest find the image in the store.
    c.cli("smgr", &["service", "create", "--name", "warm", "--constraint", "node.hostname==snode1", &busybox]);
    c.cli("smgr", &["service", "rm", "warm"]);

    // 1. Task start: `service create --detach`, then `service ps` every few ms until it runs
    //    (the CLI's own wait polls every 200 ms, too coarse to measure with). Interleaved with
    //    the built-in `host` image, which has no image runtime: the control plane's share.
    let mut shoal_ms = Vec::new();
    let mut host_ms = Vec::new();
    for i in 0..rounds {
        for (image, samples) in [(busybox.as_str(), &mut shoal_ms), ("host", &mut host_ms)] {
            let name = format!("s{i}{}", if image == "host" { "h" } else { "" });
            let mut args = vec!["service", "create", "--detach", "--name", &name, "--constraint", "node.hostname==snode1", image];
            if image == "host" {
                args.extend(["sleep", "3600"]);
            }
            let t = Instant::now();
            c.cli("smgr", &args);
            while running(&c.cli("smgr", &["service", "ps", &name])) != 1 {
                assert!(t.elapsed() < Duration::from_secs(30), "{name} did not start");
                std::thread::sleep(Duration::from_millis(2));
            }
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            c.cli("smgr", &["service", "rm", &name]);
            // Each sample on a quiet node: the task gone (its address may be handed out again)
            // before the next one is created.
            let tasks = c.dir.join("snode1/tasks");
            wait_for("the task gone", Duration::from_secs(30), || std::fs::read_dir(&tasks).map(|d| d.count()).unwrap_or(0) == 0);
        }
    }
    let runc_ms = bare_runc(&c, &tmp, rounds);
    let (s50, s99) = percentiles(&mut shoal_ms);
    let (h50, h99) = percentiles(&mut host_ms);
    let mut runc_sorted = runc_ms.clone();
    let (r50, r99) = percentiles(&mut runc_sorted);
    println!("task start (service create -> running in service ps, warm node), {rounds} samples each:");
    println!("  shoal, image task   p50 {s50:7.1} ms  p99 {s99:7.1} ms   (goal: p50 < 150 ms; Docker+containerd+runc: 300-600 ms)");
    println!("  shoal, host task    p50 {h50:7.1} ms  p99 {h99:7.1} ms   (no image runtime: the control plane and network)");
    println!("  bare runc           p50 {r50:7.1} ms  p99 {r99:7.1} ms   (runc run --detach, same sandbox, no network/cgroup)");
    println!("  image task / bare runc p50 {:5.1}x;  image task - host task p50 {:+.1} ms", s50 / r50, s50 - h50);

    // 2. Pull throughput.
    let node = c.lab.node_ns("snode2");
    let state = tmp.join("pull-state");
    let t = Instant::now();
    let out = Command::new(support::SHOAL)
        .args(["--netns", &node, "image", "--state-dir", state.to_str().unwrap(), "pull", "--insecure-registry", &registry, &redis])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shoal_s = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: f64 = text.split(" bytes").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0.0);
    let dir = tmp.join("skopeo-dir");
    let t = Instant::now();
    let sk = Command::new("ip")
        .args(["netns", "exec", &node, "skopeo", "copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{redis}"))
        .arg(format!("dir:{}", dir.display()))
        .output()
        .unwrap();
    assert!(sk.status.success(), "{}", String::from_utf8_lossy(&sk.stderr));
    let skopeo_s = t.elapsed().as_secs_f64();
    let mb = bytes / 1e6;
    println!("pull of {redis} ({mb:.1} MB compressed) from the lab registry:");
    println!("  shoal image pull   {:7.1} MB/s ({shoal_s:.2} s, verify + unpack included)", mb / shoal_s);
    println!("  skopeo copy (dir:) {:7.1} MB/s ({skopeo_s:.2} s, no unpack)", mb / skopeo_s);
    println!("  ratio              {:7.2}x the time", shoal_s / skopeo_s);

    // 3. Disk used by 20 tasks of one image.
    c.cli("smgr", &["service", "create", "--name", "twenty", "--replicas", "20", "--constraint", "node.hostname==snode1", &busybox]);
    wait_for("20 tasks", Duration::from_secs(120), || running(&c.cli("smgr", &["service", "ps", "twenty"])) == 20);
    std::thread::sleep(Duration::from_secs(1));
    let snode1 = c.dir.join("snode1");
    let layers = du(&snode1.join("imagestore/layers"));
    let uppers: u64 =
        std::fs::read_dir(snode1.join("tasks")).unwrap().flatten().map(|e| du(&e.path().join("upper")) + du(&e.path().join("work"))).sum();
    let tasks_total = du(&snode1.join("tasks"));
    println!("disk for 20 tasks of {busybox} on one node:");
    println!("  image layers (once)       {:8.1} kB", layers as f64 / 1e3);
    println!(
        "  20 tasks' upper+work dirs {:8.1} kB  (task dirs with logs and bundles: {:.1} kB)",
        uppers as f64 / 1e3,
        tasks_total as f64 / 1e3
    );
    println!(
        "  20 copies of the image    {:8.1} kB  -> shoal uses {:.3}x of that",
        20.0 * layers as f64 / 1e3,
        (layers + tasks_total) as f64 / (20.0 * layers as f64)
    );
    c.cli("smgr", &["service", "rm", "twenty"]);
    wait_for("the 20 tasks gone", Duration::from_secs(60), || std::fs::read_dir(snode1.join("tasks")).map(|d| d.count()).unwrap_or(0) == 0);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `runc run --detach` of a flat copy of the image with shoal's sandbox, `rounds` times.
fn bare_runc(c: &Cluster, tmp: &Path, rounds: usize) -> Vec<f64> {
    let store = c.dir.join("snode1/imagestore/layers");
    let bundle = tmp.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in std::fs::read_dir(&store).unwrap().flatten().filter(|e| e.path().is_dir()) {
        assert!(Command::new("cp").arg("-a").arg(format!("{}/.", layer.path().display())).arg(&rootfs).status().unwrap().success());
    }
    // The config shoal wrote for a task of this image, minus its network namespace and cgroup.
    let any_task = std::fs::read_dir(c.dir.join("snode1/tasks")).ok().and_then(|mut d| d.next()).map(|e| e.unwrap().path());
    let mut config: serde_json::Value = match any_task {
        Some(t) => serde_json::from_slice(&std::fs::read(t.join("config.json")).unwrap()).unwrap(),
        None => {
            c.cli(
                "smgr",
                &[
                    "service",
                    "create",
                    "--name",
                    "cfg",
                    "--constraint",
                    "node.hostname==snode1",
                    "--detach",
                    &format!("{}/bench/busybox:1", format_args!("192.168.33.100:{PORT}")),
                ],
            );
            wait_for("cfg task", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "cfg"])) == 1);
            let t = std::fs::read_dir(c.dir.join("snode1/tasks")).unwrap().next().unwrap().unwrap().path();
            let v = serde_json::from_slice(&std::fs::read(t.join("config.json")).unwrap()).unwrap();
            c.cli("smgr", &["service", "rm", "cfg"]);
            v
        }
    };
    config["root"]["path"] = serde_json::json!(rootfs);
    config["mounts"] = serde_json::json!(config["mounts"].as_array().unwrap().iter().filter(|m| m["type"] != "bind").collect::<Vec<_>>());
    config["linux"]["namespaces"] = serde_json::json!(config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| serde_json::json!({"type": n["type"]}))
        .collect::<Vec<_>>());
    config["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    config["linux"].as_object_mut().unwrap().remove("resources");
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    let root = tmp.join("runc-state");
    let mut ms = Vec::new();
    for i in 0..rounds {
        let id = format!("bench-{}-{i}", std::process::id());
        let t = Instant::now();
        let st = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(st.success(), "runc run --detach failed");
        let _ = Command::new("runc").arg("--root").arg(&root).args(["delete", "--force", &id]).status();
    }
    ms
}
