//! Namespaces, veths, dnsmasq and dig for the root tests. Every object has a unique name
//! (prefix + pid + counter) and is removed by exact name on drop, even when the test fails.
#![allow(dead_code)]

use std::{
    fs::File,
    io::Write,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for this process and call.
pub fn unique() -> String {
    format!("{}{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Prints `SHOAL-SKIP <test>: <reason>` and appends it to `$SHOAL_SKIP_LOG`.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SHOAL-SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("SHOAL_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            // One write: parallel tests append to the same file (O_APPEND keeps a write whole).
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Panics unless root (root tests never pass silently).
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Runs a command, panics with its output on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace with lo up; deleted on drop (with its /etc/netns/<name> folder).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        let ns = Self::without_lo(role);
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A namespace whose loopback interface stays down.
    pub fn without_lo(role: &str) -> Self {
        let name = format!("sdns-{role}-{}", unique());
        sh(&["ip", "netns", "add", &name]);
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// Makes `ip netns exec` show `text` as /etc/resolv.conf in this namespace.
    pub fn set_resolv_conf(&self, text: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), text).unwrap();
    }

    /// Runs a command inside the namespace and returns stdout (no status check).
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.name]).args(args).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dig` against 127.0.0.11 inside the namespace: (status, answer data).
    pub fn dig(&self, name: &str, qtype: &str, extra: &[&str]) -> (String, Vec<String>) {
        let mut args = vec!["dig", "@127.0.0.11", "+noall", "+answer", "+comments", "+tries=1", "+time=3", name, qtype];
        args.extend_from_slice(extra);
        let out = self.exec(&args);
        let status = out
            .lines()
            .find_map(|l| l.split("status: ").nth(1))
            .and_then(|s| s.split(',').next())
            .unwrap_or_else(|| panic!("no answer to {name} {qtype} in {}: {out}", self.name))
            .to_string();
        let mut answers: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        answers.sort();
        (status, answers)
    }

    /// Runs `f` on a fresh thread inside this namespace.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Links two namespaces with a veth and gives each end an address of `prefix`.0/30 (.1 and .2).
pub fn link(a: &Netns, b: &Netns, prefix: &str) {
    let tag = unique();
    let (ea, eb) = (format!("sdA{tag}"), format!("sdB{tag}"));
    sh(&["ip", "link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns", &b.name]);
    for (ns, dev, host) in [(a, &ea, 1), (b, &eb, 2)] {
        sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{prefix}.{host}/30"), "dev", dev]);
        sh(&["ip", "-n", &ns.name, "link", "set", dev, "up"]);
    }
}

/// dnsmasq in a namespace, killed by PID on drop.
pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// Serves `records` (name, ipv4) on `listen`:`port` inside `ns` (or the current namespace).
    pub fn start(ns: Option<&Netns>, listen: &str, port: u16, records: &[(String, String)], extra: &[String]) -> Self {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, "dnsmasq"]);
                c
            }
            None => Command::new("dnsmasq"),
        };
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
            &format!("--listen-address={listen}"),
            &format!("--port={port}"),
        ]);
        for (name, ip) in records {
            cmd.arg(format!("--host-record={name},{ip}"));
        }
        cmd.args(extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("dnsmasq starts");
        let dnsmasq = Self { child };
        // Ready when it answers (it binds after parsing its options).
        let server = format!("@{listen}");
        let port = format!("-p{port}");
        for _ in 0..200 {
            let probe = ["dig", server.as_str(), port.as_str(), "+tries=1", "+time=1", "ready.probe"];
            let out = match ns {
                Some(ns) => ns.exec(&probe),
                None => String::from_utf8_lossy(&Command::new("dig").args(&probe[1..]).output().unwrap().stdout).into_owned(),
            };
            if out.contains("status:") {
                return dnsmasq;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("dnsmasq on {listen}:{port} never answered");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DnsServer running on its own runtime whose threads live in a node namespace, like
/// `shoal daemon` inside a lab node. Stopped on drop.
pub struct NodeServer {
    pub server: std::sync::Arc<shoal_dns::DnsServer>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeServer {
    /// Starts the server in `node` with `config`, and attaches each (task id, netns path, networks).
    pub fn start(node: &Netns, config: shoal_dns::DnsConfig, tasks: Vec<(String, PathBuf, Vec<String>)>) -> Self {
        let path = node.path();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let server = std::sync::Arc::new(shoal_dns::DnsServer::new(config).unwrap());
                for (id, netns, networks) in tasks {
                    server.attach_task(&id, &netns, networks).await.unwrap();
                }
                ready_tx.send(server.clone()).unwrap();
                let _ = stop_rx.await;
                server.shutdown().await;
            });
        });
        let server = ready_rx.recv().expect("node server started");
        Self { server, stop: Some(stop_tx), thread: Some(thread) }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
