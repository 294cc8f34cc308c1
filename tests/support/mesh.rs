//! Pieces the routing-mesh tests share: the lab's addresses and an HTTP GET over a stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Where cgroup v2 is mounted, as shoal finds it (hybrid hosts: /sys/fs/cgroup/unified; v2
/// hosts and the kernel lab's guest: /sys/fs/cgroup).
pub fn cgroup2() -> String {
    shoal_ebpf::cgroup2_mount().expect("no cgroup2 mount: the eBPF balancer needs one").display().to_string()
}

/// Node `i`'s underlay address (smgr .10, snode1 .20, ...).
pub fn node_addr(i: usize) -> String {
    format!("192.168.33.{}", 10 * (i + 1))
}

/// Node `i`'s LB address on network 10.0.9.0/24.
pub fn lb_addr(i: usize) -> String {
    format!("10.0.9.{}", 250 - i)
}

/// Task `i`'s address on network 10.0.9.0/24.
pub fn task_ip(i: usize) -> String {
    format!("10.0.9.{}", i + 2)
}

/// One HTTP GET on `stream`; the body.
pub fn http_get(stream: &mut TcpStream) -> Result<String, String> {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut len = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|e| format!("read: {e}"))? == 0 {
            return Err("closed".into());
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if h == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
    Ok(String::from_utf8_lossy(&body).to_string())
}

/// `shoal --netns NODE dataplane apply --lb LB --state FILE` with `state` written to a file (a
/// new process each time: it adopts what the last one left); (changes, stdout, stderr).
pub fn apply_with(lab: &super::Lab, node: &str, lb: &str, state: &serde_json::Value) -> (usize, String, String) {
    let path = std::env::temp_dir().join(format!("{}-{node}-{lb}.json", lab.name));
    std::fs::write(&path, serde_json::to_vec_pretty(state).unwrap()).unwrap();
    let out = super::shoal(&["--netns", &lab.node_ns(node), "dataplane", "apply", "--lb", lb, "--state", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "apply on {node} with {lb} failed:\n{stdout}\n{stderr}");
    (super::changes(&stdout), stdout, stderr)
}

/// A lab with one load balancer and the processes a test started in it. On drop: the
/// processes are killed, then the data plane of every node is torn down (eBPF pins and cgroups
/// live outside the namespaces), then the lab goes.
pub struct MeshLab {
    pub procs: Vec<std::process::Child>,
    pub lab: super::Lab,
    pub lb: &'static str,
    pub nodes: &'static [&'static str],
}

impl Drop for MeshLab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in self.nodes {
            let out = super::shoal(&["--netns", &self.lab.node_ns(n), "dataplane", "teardown"]);
            if !out.status.success() {
                eprintln!("teardown {n}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

impl MeshLab {
    /// The node's task cgroup, where the eBPF balancer's socket hooks apply.
    pub fn cgroup(&self, node: &str) -> String {
        format!("{}/shoal/{}", cgroup2(), self.lab.node_ns(node))
    }

    /// [`apply_with`] this lab's balancer; (changes, stderr).
    pub fn apply(&self, node: &str, state: &serde_json::Value) -> (usize, String) {
        let (n, _, stderr) = apply_with(&self.lab, node, self.lb, state);
        (n, stderr)
    }

    /// A command in task `task`'s network namespace and, when the eBPF balancer made one, in
    /// the node's task cgroup, as a task runs.
    pub fn task_command(&self, node: &str, task: &str, args: &[&str]) -> std::process::Command {
        let ns = format!("/run/netns/{}", self.lab.task_ns(task));
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(
                r#"cg=$1; ns=$2; shift 2; if [ -d "$cg" ]; then echo $$ > "$cg/cgroup.procs" || exit 1; fi; exec nsenter --net="$ns" "$@""#,
            )
            .arg("sh")
            .arg(self.cgroup(node))
            .arg(&ns)
            .args(args);
        c
    }
}
