//! A 3-node cluster of real `shoal daemon`s on a lab (the seeds' smgr, snode1, snode2): started
//! by `Cluster::up`, joined by `join_all`; daemons, task processes, shims and task namespaces
//! are ended by exact PID and name on drop, even when the test fails.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{shoal, Lab, SHOAL};

pub const NODES: [(&str, &str); 3] = [("smgr", "192.168.33.10"), ("snode1", "192.168.33.20"), ("snode2", "192.168.33.30")];

/// Daemons of one lab; killed by PID on drop, their files removed.
pub struct Cluster {
    pub lab: Lab,
    pub dir: PathBuf,
    pub daemons: Vec<Option<Child>>,
    /// Registries the daemons pull from over plain HTTP (`insecure-registries`).
    pub insecure_registries: Vec<String>,
}

impl Cluster {
    pub fn up() -> Cluster {
        Cluster::up_with_registries(&[])
    }

    /// A cluster whose daemons pull from these registries over plain HTTP (a lab registry).
    pub fn up_with_registries(insecure: &[&str]) -> Cluster {
        let lab = Lab::up(3);
        let dir = PathBuf::from(format!("/run/shoal/test-{}", lab.name));
        std::fs::create_dir_all(&dir).unwrap();
        let insecure_registries = insecure.iter().map(|s| s.to_string()).collect();
        let mut c = Cluster { lab, dir, daemons: Vec::new(), insecure_registries };
        for i in 0..NODES.len() {
            let d = c.start_daemon(i);
            c.daemons.push(Some(d));
        }
        for (node, _) in NODES {
            wait_for(&format!("{node}'s socket"), Duration::from_secs(10), || c.sock(node).exists());
        }
        c
    }

    pub fn sock(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.sock"))
    }

    /// The node's Docker Engine API socket (`DOCKER_HOST=unix://...`).
    pub fn engine_sock(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}-docker.sock"))
    }

    pub fn host(&self, node: &str) -> String {
        format!("unix://{}", self.sock(node).display())
    }

    pub fn start_daemon(&self, i: usize) -> Child {
        let (node, addr) = NODES[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{node}.log"))).unwrap();
        let mut cmd = Command::new(SHOAL);
        cmd.args(["--netns", &self.lab.node_ns(node), "--log-level", "info", "daemon"]);
        let state = self.dir.join(node);
        let sock = self.sock(node);
        let engine = self.engine_sock(node);
        if i == NODES.len() - 1 {
            // The last node takes its settings from a config file (daemon.json), the rest by flag.
            let file = self.dir.join(format!("{node}.json"));
            let mut json = serde_json::json!({
                "state-dir": state, "socket": sock, "engine-socket": engine, "listen-addr": format!("{addr}:2377"), "hostname": node,
                "heartbeat-ms": 500, "drain-seconds": 0.2, "stop-grace-seconds": 2, "no-dns-upstream": true,
            });
            if !self.insecure_registries.is_empty() {
                json["insecure-registries"] = serde_json::json!(self.insecure_registries);
            }
            std::fs::write(&file, json.to_string()).unwrap();
            cmd.arg("--config-file").arg(&file);
        } else {
            cmd.args(["--state-dir", state.to_str().unwrap()])
                .args(["--socket", sock.to_str().unwrap()])
                .args(["--engine-socket", engine.to_str().unwrap()])
                .args(["--listen-addr", &format!("{addr}:2377"), "--hostname", node])
                .args(["--heartbeat-ms", "500", "--drain-seconds", "0.2", "--stop-grace-seconds", "2"])
                // Lab rule: nothing is addressed outside the lab, not even forwarded DNS.
                .arg("--no-dns-upstream");
            for r in &self.insecure_registries {
                cmd.args(["--insecure-registry", r]);
            }
        }
        cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn shoal daemon")
    }

    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut d) = self.daemons[i].take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// Runs a cluster verb against a node's daemon.
    pub fn cli(&self, node: &str, args: &[&str]) -> String {
        let (full, out) = self.run_cli(node, args);
        assert!(
            out.status.success(),
            "shoal {full:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Like [`Cluster::cli`], but `None` when the command fails: for polls inside [`wait_for`],
    /// where a read refused during an election (reads are linearizable) means "not yet".
    pub fn try_cli(&self, node: &str, args: &[&str]) -> Option<String> {
        let (_, out) = self.run_cli(node, args);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `shoal <command> --host <node's API> <rest>`: the full argument list and what it did.
    fn run_cli(&self, node: &str, args: &[&str]) -> (Vec<String>, std::process::Output) {
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        full.insert(1.min(full.len()), "--host".to_string());
        full.insert(2.min(full.len()), self.host(node));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = shoal(&refs);
        (full, out)
    }

    /// Host PID of a task's init, from the executor's records.
    pub fn task_pid(&self, task_id: &str) -> String {
        NODES
            .iter()
            .find_map(|(n, _)| std::fs::read_to_string(self.dir.join(n).join("tasks").join(task_id).join("pid")).ok())
            .unwrap_or_else(|| panic!("no record of task {task_id}"))
            .trim()
            .to_string()
    }

    pub fn logs(&self) -> String {
        NODES
            .iter()
            .map(|(n, _)| format!("--- {n}\n{}", std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.daemons.len() {
            self.kill_daemon(i);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // Task processes live in task namespaces; end them by the PIDs the executor recorded.
        for (node, _) in NODES {
            let tasks = self.dir.join(node).join("tasks");
            for entry in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
                if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
        super::shims::end_task_shims(&self.dir);
        // Task namespaces the daemons made and had no time to remove (a daemon killed while it
        // started a task), by the names in their logs.
        for ns in created_task_namespaces(&self.logs()) {
            if std::path::Path::new("/run/netns").join(&ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The task namespaces named in daemon logs' "creating a task namespace" lines.
pub fn created_task_namespaces(logs: &str) -> BTreeSet<String> {
    logs.lines()
        .filter(|l| l.contains("creating a task namespace"))
        .filter_map(|l| {
            let at = l.find("shoal-t-")?;
            let name: String = l[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            Some(name)
        })
        .collect()
}

pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Namespaces of this cluster's tasks, from its daemons' executor records (other tests' labs run
/// at the same time and have tasks too).
pub fn task_namespaces(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = NODES
        .iter()
        .flat_map(|(n, _)| std::fs::read_dir(c.dir.join(n).join("tasks")).into_iter().flatten().flatten())
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|id| format!("shoal-t-{id}"))
        .filter(|ns| std::path::Path::new("/run/netns").join(ns).exists())
        .collect();
    v.sort();
    v
}

pub fn task_ip(ns: &str) -> Option<String> {
    // `ip -n` only enters the namespace for netlink: `ip netns exec` also makes a mount
    // namespace and remounts /sys, which failed now and then under the kernel lab's load (a task
    // that was there read as gone).
    let out = Command::new("ip").args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]).output().expect("run ip -n");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(|a| a.split('/').next().unwrap().to_string())
}

/// Tasks whose current state is Running (the desired-state column says Running too).
pub fn running(ps: &str) -> usize {
    ps.lines().filter(|l| l.matches("Running").count() == 2).count()
}

pub fn join_all(c: &Cluster) {
    let out = c.cli("smgr", &["init", "--advertise-addr", "192.168.33.10"]);
    assert!(out.contains("Cluster initialized"), "{out}");
    let token = c.cli("smgr", &["join-token", "-q", "worker"]).trim().to_string();
    assert!(token.starts_with("SWMTKN-1-"), "{token}");
    for (node, _) in &NODES[1..] {
        let out = c.cli(node, &["join", "--token", &token, "192.168.33.10:2377"]);
        assert!(out.contains("joined a cluster as a worker"), "{out}");
    }
    wait_for("3 ready nodes", Duration::from_secs(20), || {
        c.cli("smgr", &["node", "ls"]).lines().filter(|l| l.contains("Ready")).count() == 3
    });
}
