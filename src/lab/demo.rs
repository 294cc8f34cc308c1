//! `shoal lab demo`: the README's main command. A 3-node lab, `shoal daemon` on every node,
//! `init` + `join`, an overlay network, a published service of `shoal/whoami`, curl through the
//! routing mesh on every node, DNS from inside a task, scaling, an application deployed as a
//! stack and updated while curl runs (`demo_stack`), and a worker killed while curl keeps
//! answering. The lab stays up for exploring.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::exec::command_in;
use super::{daemons, up, Topology};

pub(super) fn step(text: &str) {
    println!("\n==> {text}");
}

/// Runs a cluster verb of this binary against a lab node, showing its output.
pub(super) fn shoal(t: &Topology, node: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(args[0]).arg("--host").arg(daemons::host_arg(t, node)).args(&args[1..]);
    let out = cmd.output().with_context(|| format!("run shoal {}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("shoal {} failed: {}{}", args.join(" "), stdout, String::from_utf8_lossy(&out.stderr));
    }
    Ok(stdout)
}

pub(super) fn indent(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// One HTTP request from the client namespace; the replica's name, or None.
fn curl(t: &Topology, target: &str) -> Option<String> {
    let out = command_in(&t.client.netns, "curl").ok()?.args(["-s", "--max-time", "2", &format!("http://{target}:5000/")]).output().ok()?;
    let body = String::from_utf8_lossy(&out.stdout);
    body.lines().find_map(|l| l.strip_prefix("Name:")).map(|n| n.trim().to_string())
}

pub(super) fn wait(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

fn running(ps: &str) -> usize {
    ps.lines().filter(|l| l.matches("Running").count() == 2).count()
}

pub fn run(t: &Topology) -> anyhow::Result<()> {
    let started = Instant::now();
    step(&format!("lab '{}': {} nodes on 192.168.33.0/24, client at {}", t.lab, t.nodes.len(), t.client.address));
    up(t)?;
    for n in &t.nodes {
        daemons::start(t, n)?;
        println!("    {:<7} {}  shoal daemon running (netns {})", n.name, n.address, n.netns);
    }

    step("shoal init on smgr, shoal join on the others");
    let mgr = &t.nodes[0];
    if shoal(t, &mgr.name, &["node", "ls"]).is_err() {
        indent(&shoal(t, &mgr.name, &["init", "--advertise-addr", &mgr.address.to_string()])?);
    }
    let token = shoal(t, &mgr.name, &["join-token", "-q", "worker"])?.trim().to_string();
    for n in &t.nodes[1..] {
        if shoal(t, &n.name, &["node", "ls"]).is_err() {
            match shoal(t, &n.name, &["join", "--token", &token, &format!("{}:2377", mgr.address)]) {
                Ok(out) => indent(&out),
                Err(e) if e.to_string().contains("already part of a cluster") => {}
                Err(e) => return Err(e),
            }
        }
    }
    wait("every node ready", Duration::from_secs(20), || {
        shoal(t, &mgr.name, &["node", "ls"]).is_ok_and(|o| o.lines().filter(|l| l.contains("Ready")).count() == t.nodes.len())
    })?;
    indent(&shoal(t, &mgr.name, &["node", "ls"])?);

    step("shoal network create --driver overlay backend");
    if !shoal(t, &mgr.name, &["network", "ls"])?.contains("backend") {
        indent(&shoal(t, &mgr.name, &["network", "create", "--driver", "overlay", "backend"])?);
    }
    step("shoal service create --name vote --replicas 3 -p 5000:80 --network backend shoal/whoami");
    let created = Instant::now();
    if !shoal(t, &mgr.name, &["service", "ls"])?.contains("vote") {
        shoal(
            t,
            &mgr.name,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "vote",
                "--replicas",
                "3",
                "-p",
                "5000:80",
                "--network",
                "backend",
                "shoal/whoami",
            ],
        )?;
    }
    wait("3 running replicas", Duration::from_secs(30), || {
        shoal(t, &mgr.name, &["service", "ps", "vote"]).is_ok_and(|o| running(&o) == 3)
    })?;
    // Converged: every node's mesh has answered from all 3 replicas (names seen so far are
    // kept between tries), so the round below shows the balanced mesh, not a node still
    // learning of a remote task.
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    wait("every replica answering through every node", Duration::from_secs(30), || {
        for n in &t.nodes {
            if let Some(name) = curl(t, &n.address.to_string()) {
                seen.entry(n.name.clone()).or_default().insert(name);
            }
        }
        t.nodes.iter().all(|n| seen.get(&n.name).is_some_and(|s| s.len() == 3))
    })?;
    println!("    every replica reachable through every node {:.1} s after create", created.elapsed().as_secs_f64());
    indent(&shoal(t, &mgr.name, &["service", "ps", "vote"])?);

    step("curl anynode:5000 from the client (192.168.33.100): the routing mesh");
    for n in &t.nodes {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..12 {
            *seen.entry(curl(t, &n.address.to_string()).unwrap_or_else(|| "(no answer)".into())).or_default() += 1;
        }
        let list: Vec<String> = seen.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        println!("    curl {}:5000  ->  {}", n.address, list.join(", "));
    }

    step("DNS inside a task: dig vote (the VIP), dig tasks.vote (every replica)");
    if let Some(ns) = daemons::task_namespaces(t).first() {
        for name in ["vote", "tasks.vote"] {
            let out = command_in(ns, "dig")?.args(["@127.0.0.11", "+short", name]).output()?;
            let answers: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
            println!("    dig {name:<11} -> {}", answers.join(" "));
        }
    }

    step("shoal service scale vote=5");
    shoal(t, &mgr.name, &["service", "scale", "vote=5"])?;
    wait("5 running replicas", Duration::from_secs(30), || {
        shoal(t, &mgr.name, &["service", "ps", "vote"]).is_ok_and(|o| running(&o) == 5)
    })?;
    indent(&shoal(t, &mgr.name, &["service", "ps", "vote"])?);

    super::demo_stack::run(t, &mgr.name)?;

    let victim = t.nodes.last().context("a lab node")?;
    step(&format!("kill {}: its daemon dies and its underlay link goes down; curl keeps answering", victim.name));
    daemons::kill_daemon(t, &victim.name);
    super::set_underlay(t, victim, false)?;
    let killed = Instant::now();
    let mut errors = 0;
    let mut answered = 0;
    while killed.elapsed() < Duration::from_secs(20) {
        for n in &t.nodes[..t.nodes.len() - 1] {
            match curl(t, &n.address.to_string()) {
                Some(_) => answered += 1,
                None => errors += 1,
            }
        }
        if shoal(t, &mgr.name, &["node", "ls"]).is_ok_and(|o| o.lines().any(|l| l.contains(&victim.name) && l.contains("Down")))
            && shoal(t, &mgr.name, &["service", "ps", "vote"])
                .is_ok_and(|o| running(&o) == 5 && !o.lines().any(|l| l.contains(&victim.name) && l.matches("Running").count() == 2))
        {
            break;
        }
    }
    println!(
        "    {} marked down and its tasks rescheduled in {:.1} s; curl: {answered} answers, {errors} errors meanwhile",
        victim.name,
        killed.elapsed().as_secs_f64()
    );
    indent(&shoal(t, &mgr.name, &["service", "ps", "vote"])?);

    step(&format!("done in {:.0} s. The lab stays up:", started.elapsed().as_secs_f64()));
    println!("    ip netns exec {} curl -s {}:5000", t.client.netns, mgr.address);
    println!("    ip netns exec {} curl -s {}:8080", t.client.netns, mgr.address);
    println!("    shoal stack --host {} ps app", daemons::host_arg(t, &mgr.name));
    // -H/--host is an option of the cluster verbs, so it follows the verb.
    println!("    shoal service --host {} ps vote", daemons::host_arg(t, &mgr.name));
    println!("    shoal lab status   |   shoal lab down");
    Ok(())
}
