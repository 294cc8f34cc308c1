//! Convergence benchmarks on a 3-node lab cluster.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::percentiles;
use crate::lab::{self, daemons, exec::command_in, Topology};

pub(super) struct LabGuard(pub(super) Topology);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.0) {
            eprintln!("bench: lab down: {e:#}");
        }
    }
}

pub(super) fn shoal(t: &Topology, node: &str, args: &[&str]) -> anyhow::Result<String> {
    let out =
        Command::new(std::env::current_exe()?).arg(args[0]).arg("--host").arg(daemons::host_arg(t, node)).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!("shoal {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn curl_ok(t: &Topology, addr: &str, port: u16) -> bool {
    command_in(&t.client.netns, "curl")
        .and_then(|mut c| Ok(c.args(["-s", "-o", "/dev/null", "--max-time", "1", &format!("http://{addr}:{port}/")]).status()?))
        .is_ok_and(|s| s.success())
}

fn dig(ns: &str, name: &str) -> BTreeSet<String> {
    command_in(ns, "dig")
        .and_then(|mut c| Ok(c.args(["@127.0.0.11", "+short", "+time=1", "+tries=1", name]).output()?))
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect())
        .unwrap_or_default()
}

pub(super) fn poll(limit: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return Ok(start.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("no convergence within {limit:?}")
}

/// Task namespace on each node with its IP, from the executors' records.
/// Running tasks: (node, namespace, every IPv4 address it has: a published service's task is on
/// ingress (eth0) and its own network (eth1), and DNS answers with the latter).
fn tasks_by_node(t: &Topology) -> Vec<(String, String, Vec<String>)> {
    let mut v = Vec::new();
    for n in &t.nodes {
        let dir = daemons::node_dir(t, &n.name).join("state").join("tasks");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(id) = e.file_name().into_string() else { continue };
            let ns = crate::agent::desired::task_netns(&id);
            if !shoal_dataplane::netns::exists(&ns) || e.path().join("exit").exists() {
                continue;
            }
            let out = command_in(&ns, "ip").and_then(|mut c| Ok(c.args(["-4", "-o", "addr", "show", "scope", "global"]).output()?));
            let ips: Vec<String> = out
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter_map(|l| {
                            l.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(|a| a.split('/').next().unwrap_or("").to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !ips.is_empty() {
                v.push((n.name.clone(), ns, ips));
            }
        }
    }
    v
}

/// A 3-node lab with a daemon on each, joined into one cluster, and an overlay `backend`.
/// The lab goes down when the guard drops.
pub(super) fn cluster_up(prefix: &str) -> anyhow::Result<(Topology, LabGuard)> {
    let t = lab::topology(&format!("{prefix}{}", std::process::id() % 100_000), 3)?;
    let guard = LabGuard(t.clone());
    lab::up(&t)?;
    for n in &t.nodes {
        daemons::start(&t, n)?;
    }
    let mgr = t.nodes[0].name.clone();
    shoal(&t, &mgr, &["init", "--advertise-addr", &t.nodes[0].address.to_string()])?;
    let token = shoal(&t, &mgr, &["join-token", "-q", "worker"])?.trim().to_string();
    for n in &t.nodes[1..] {
        shoal(&t, &n.name, &["join", "--token", &token, &format!("{}:2377", t.nodes[0].address)])?;
    }
    poll(Duration::from_secs(20), || shoal(&t, &mgr, &["node", "ls"]).is_ok_and(|o| o.matches("Ready").count() == 3))?;
    shoal(&t, &mgr, &["network", "create", "--driver", "overlay", "backend"])?;
    Ok((t, guard))
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let (t, guard) = cluster_up("bench")?;
    let mgr = t.nodes[0].name.clone();

    // 1. service create -> answering through every node.
    let mut create = Vec::new();
    for r in 0..rounds {
        let port = 5100 + r as u16;
        let name = format!("svc{r}");
        let start = Instant::now();
        shoal(
            &t,
            &mgr,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                &name,
                "--replicas",
                "3",
                "-p",
                &format!("{port}:80"),
                "--network",
                "backend",
                "shoal/whoami",
            ],
        )?;
        poll(Duration::from_secs(30), || t.nodes.iter().all(|n| curl_ok(&t, &n.address.to_string(), port)))?;
        create.push(start.elapsed().as_secs_f64() * 1000.0);
        shoal(&t, &mgr, &["service", "rm", &name])?;
        poll(Duration::from_secs(30), || tasks_by_node(&t).is_empty())?;
    }

    // 2. a killed task gone from DNS (and with it the LB: one reconcile programs both) on every node.
    shoal(
        &t,
        &mgr,
        &["service", "create", "--detach", "--name", "vote", "--replicas", "3", "-p", "5000:80", "--network", "backend", "shoal/whoami"],
    )?;
    poll(Duration::from_secs(30), || tasks_by_node(&t).len() == 3 && t.nodes.iter().all(|n| curl_ok(&t, &n.address.to_string(), 5000)))?;
    let mut task_gone = Vec::new();
    for _ in 0..rounds {
        // Three live tasks, each an answer from every task (the last victim may still be listed
        // until its shim records the exit).
        let mut tasks = Vec::new();
        poll(Duration::from_secs(30), || {
            tasks = tasks_by_node(&t);
            tasks.len() == 3
                && tasks.iter().all(|(_, ns, _)| {
                    let answers = dig(ns, "tasks.vote");
                    answers.len() == 3 && tasks.iter().all(|(_, _, ips)| answers.iter().any(|a| ips.contains(a)))
                })
        })?;
        let (node, victim_ns, victim_ips) = tasks[0].clone();
        let id = victim_ns.trim_start_matches("shoal-t-");
        let pid: i32 = std::fs::read_to_string(daemons::node_dir(&t, &node).join("state/tasks").join(id).join("pid"))?.trim().parse()?;
        let others: Vec<String> = tasks.iter().filter(|(_, ns, _)| *ns != victim_ns).map(|(_, ns, _)| ns.clone()).collect();
        let start = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).context("kill task")?;
        // The victim's address is in every answer now (polled above); wait until it is in none.
        poll(Duration::from_secs(30), || others.iter().all(|ns| !dig(ns, "tasks.vote").iter().any(|ip| victim_ips.contains(ip))))?;
        task_gone.push(start.elapsed().as_secs_f64() * 1000.0);
        // let the orchestrator replace it before the next round
        poll(Duration::from_secs(30), || tasks_by_node(&t).len() == 3)?;
    }

    // 3. a node dies: its endpoints withdrawn everywhere, and curl through the mesh error-free.
    let tasks = tasks_by_node(&t);
    let victim = t.nodes[2].clone();
    let dead_ips: Vec<String> = tasks.iter().filter(|(n, _, _)| *n == victim.name).flat_map(|(_, _, ips)| ips.clone()).collect();
    let observers: Vec<String> = tasks.iter().filter(|(n, _, _)| *n != victim.name).map(|(_, ns, _)| ns.clone()).collect();
    poll(Duration::from_secs(30), || observers.iter().all(|ns| dig(ns, "tasks.vote").iter().any(|ip| dead_ips.contains(ip))))
        .context("the victim node's tasks never became answers")?;
    let start = Instant::now();
    daemons::kill_daemon(&t, &victim.name);
    lab::set_underlay(&t, &victim, false)?;
    let withdrawn =
        poll(Duration::from_secs(60), || observers.iter().all(|ns| dig(ns, "tasks.vote").iter().all(|ip| !dead_ips.contains(ip))))?;
    let live: Vec<String> = t.nodes[..2].iter().map(|n| n.address.to_string()).collect();
    let mut streak = 0;
    let clean = poll(Duration::from_secs(60), || {
        if live.iter().all(|a| curl_ok(&t, a, 5000)) {
            streak += 1;
        } else {
            streak = 0;
        }
        streak >= 20
    })? - 20.0 * 10.0;
    let _ = start;

    let (c50, c99) = percentiles(&mut create);
    let (k50, k99) = percentiles(&mut task_gone);
    println!("cluster convergence on a 3-node lab, {rounds} rounds:");
    println!("  service create -> reachable through every node  p50 {c50:7.0} ms  p99 {c99:7.0} ms   (goal < 1000 ms)");
    println!(
        "  killed task gone from every node's LB and DNS    p50 {k50:7.0} ms  p99 {k99:7.0} ms   (goal < 500 ms; Swarm drains 2000 ms)"
    );
    println!(
        "  killed node's endpoints withdrawn everywhere     {withdrawn:7.0} ms                  (goal < 3000 ms; Swarm 13500-16500 ms)"
    );
    println!("  curl through the mesh error-free again after     {:7.0} ms", clean.max(0.0));
    drop(guard);
    Ok(())
}
