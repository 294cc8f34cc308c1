//! Namespaces, links, cgroups and bpffs mounts made by the root tests, each
//! removed by exact name when its guard drops; and small servers run inside
//! namespaces on dedicated threads.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

/// Run a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = super::unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// `ip -n <ns> <args...>`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// Set an IPv4 sysctl (e.g. "ip_forward") inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        sh(&["ip", "netns", "exec", &self.name, "sysctl", "-qw", &format!("{key}={value}")]);
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Run `f` on a fresh thread that entered this namespace, and return its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Move the calling thread into the network namespace at `path`. Only for
/// threads dedicated to that namespace.
pub fn enter(path: &Path) {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: `f` is an open namespace file; setns only changes this thread's
    // network namespace, and callers use dedicated threads.
    let ret = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
}

/// A veth pair `a` (in ns_a) / `b` (in ns_b).
pub fn veth(a: &str, ns_a: &Netns, b: &str, ns_b: &Netns) {
    sh(&["ip", "link", "add", a, "netns", &ns_a.name, "type", "veth", "peer", "name", b, "netns", &ns_b.name]);
    ns_a.ip(&["link", "set", a, "up"]);
    ns_b.ip(&["link", "set", b, "up"]);
}

/// A cgroup v2 child directory, removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn new(root: &Path) -> Self {
        let path = root.join(super::unique("shoal-ebpf-test-"));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.path) {
            eprintln!("rmdir {}: {e}", self.path.display());
        }
    }
}

/// A private bpffs mount, unmounted and removed on drop.
pub struct BpfMount {
    pub path: PathBuf,
}

impl BpfMount {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(super::unique("shoal-ebpf-bpffs-"));
        assert!(shoal_ebpf::ensure_bpffs(&path).expect("mount bpffs"), "fresh dir was already bpffs");
        Self { path }
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path; MNT_DETACH unmounts lazily.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = fs::remove_dir(&self.path);
    }
}

/// TCP and UDP servers answering their `id` (TCP: once per line received),
/// inside a namespace; the listeners stop on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
}

impl Servers {
    pub fn start(ns: &Netns, id: &str, tcp_port: u16, udp_port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (path, id, flag) = (ns.path(), id.to_owned(), stop.clone());
        thread::spawn(move || {
            enter(&path);
            let tcp = TcpListener::bind(("0.0.0.0", tcp_port)).expect("bind tcp");
            let udp = UdpSocket::bind(("0.0.0.0", udp_port)).expect("bind udp");
            tcp.set_nonblocking(true).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((s, _)) = tcp.accept() {
                    let id = id.clone();
                    // One line in, one id line out, until the client closes.
                    thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        let mut w = s.try_clone().unwrap();
                        for line in BufReader::new(s).lines() {
                            if line.is_err() || w.write_all(format!("{id}\n").as_bytes()).is_err() {
                                break;
                            }
                        }
                    });
                }
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{id}\n").as_bytes(), peer);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("servers did not start");
        Self { stop }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
