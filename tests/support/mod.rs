//! Shared pieces of the root end-to-end tests: a lab per test (unique name, removed in Drop even
//! when the test fails), running commands in namespaces, TCP across namespaces.
#![allow(dead_code)]

pub mod cluster;
pub mod images;
pub mod mesh;
pub mod registry;
pub mod shims;
pub mod token;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root: run it through tests/run.sh");
}

/// Reports a test that cannot run here, loudly: stderr and the skip log CI reads.
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

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A lab with a name unique to this process and test; `down` runs on drop.
pub struct Lab {
    pub name: String,
}

impl Lab {
    pub fn up(nodes: usize) -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}x{n}", std::process::id());
        let lab = Lab { name };
        let out = shoal(&["lab", "--name", &lab.name, "up", "--nodes", &nodes.to_string()]);
        assert!(out.status.success(), "lab up failed: {}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    pub fn node_ns(&self, node: &str) -> String {
        format!("shoal-{}-{node}", self.name)
    }

    pub fn task_ns(&self, task: &str) -> String {
        format!("shoal-{}-{task}", self.name)
    }

    /// `shoal --netns NODE dataplane apply --state FILE` with `state` written to a file.
    pub fn apply(&self, node: &str, state: &serde_json::Value) -> Output {
        let path = std::env::temp_dir().join(format!("{}-{node}-state.json", self.name));
        std::fs::write(&path, serde_json::to_vec_pretty(state).unwrap()).unwrap();
        let out = shoal(&["--netns", &self.node_ns(node), "dataplane", "apply", "--state", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        out
    }

    pub fn apply_ok(&self, node: &str, state: &serde_json::Value) -> usize {
        let out = self.apply(node, state);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "apply on {node} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        changes(&stdout)
    }

    pub fn show(&self, node: &str) -> String {
        let out = shoal(&["--netns", &self.node_ns(node), "dataplane", "show"]);
        assert!(out.status.success(), "show failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = shoal(&["lab", "--name", &self.name, "down"]);
        if !out.status.success() {
            eprintln!("lab down {} failed: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

pub fn changes(stdout: &str) -> usize {
    let line = stdout.lines().last().unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no change count in {stdout}"))
}

pub fn shoal(args: &[&str]) -> Output {
    Command::new(SHOAL).args(args).output().expect("run shoal")
}

/// Runs a program inside a namespace (tests may use iproute2; the product does not).
pub fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("run ip netns exec")
}

/// Loads an nft `script` (`nft -f -`) in namespace `ns`; panics with nft's reason and the
/// script when it is refused.
pub fn nft_in(ns: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().expect("nft's stdin").write_all(script.as_bytes())?;
            ch.wait_with_output()
        })
        .expect("run nft");
    assert!(out.status.success(), "nft in {ns}: {}\n{script}", String::from_utf8_lossy(&out.stderr));
}

pub fn ping(ns: &str, ip: &str) -> bool {
    // nsenter enters the network namespace alone: `ip netns exec` also makes a mount namespace
    // and remounts /sys, which failed now and then under the kernel lab's load (a ping that
    // never ran read as a lost one).
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["ping", "-c", "1", "-W", "2", ip])
        .output()
        .expect("run nsenter ping")
        .status
        .success()
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn on_thread_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Opens a TCP listener in `server_ns`, connects from `client_ns`, and checks that bytes make the
/// round trip. Returns false when the connection cannot be made.
pub fn tcp_round_trip(client_ns: &str, server_ns: &str, server_ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{server_ip}:{port}").parse().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // The server gives up once the client has (a refused connection must not cost the server's
    // whole wait).
    let client_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server_stop = client_done.clone();
    let server = on_thread_in(server_ns, move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        listener.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < deadline && !server_stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((mut s, _)) = listener.accept() {
                s.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    ready_rx.recv().unwrap();
    let client = on_thread_in(client_ns, move || -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 5];
        s.write_all(b"shoal").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"shoal"
    });
    let ok = client.join().unwrap();
    client_done.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().unwrap();
    ok
}
