//! Opening the listening sockets inside a task's network namespace.
//!
//! A fresh thread enters the namespace (setns) and binds; the sockets keep their namespace after
//! the thread exits and are served by the runtime. No runtime thread ever changes namespace.

use std::{
    fs::File,
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
};

use nix::sched::CloneFlags;

use crate::error::DnsError;

/// A bound UDP socket and TCP listener, both non-blocking.
pub struct Sockets {
    /// The UDP socket.
    pub udp: UdpSocket,
    /// The TCP listener.
    pub tcp: TcpListener,
}

/// Binds UDP and TCP on `addr` in the current namespace.
pub fn bind(addr: SocketAddr) -> Result<Sockets, DnsError> {
    let hint = |e: &io::Error| {
        if e.kind() == io::ErrorKind::AddrNotAvailable {
            " (is the loopback interface up in this namespace? `ip link set lo up`)"
        } else {
            ""
        }
    };
    let udp = UdpSocket::bind(addr).map_err(|source| DnsError::Bind { proto: "udp", addr, hint: hint(&source), source })?;
    // TCP on the port UDP got (when asked for port 0).
    let tcp_addr = udp.local_addr().unwrap_or(addr);
    let tcp = TcpListener::bind(tcp_addr).map_err(|source| DnsError::Bind { proto: "tcp", addr: tcp_addr, hint: hint(&source), source })?;
    for (proto, result) in [("udp", udp.set_nonblocking(true)), ("tcp", tcp.set_nonblocking(true))] {
        result.map_err(|source| DnsError::Bind { proto, addr, hint: "", source })?;
    }
    Ok(Sockets { udp, tcp })
}

/// Binds UDP and TCP on `addr` inside the network namespace at `netns` (e.g. `/var/run/netns/x`
/// or `/proc/<pid>/ns/net`), on a dedicated short-lived thread.
pub async fn bind_in_netns(netns: &Path, addr: SocketAddr) -> Result<Sockets, DnsError> {
    let path: PathBuf = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("shoal-dns-netns".into())
        .spawn(move || {
            let _ = tx.send(enter_and_bind(&thread_path, addr));
        })
        .map_err(|e| DnsError::OpenerThread { path: path.clone(), reason: e.to_string() })?;
    rx.await.map_err(|_| DnsError::OpenerThread { path, reason: "the thread ended without a result".into() })?
}

/// Runs on the dedicated thread: this thread alone moves into the namespace, then ends.
fn enter_and_bind(path: &Path, addr: SocketAddr) -> Result<Sockets, DnsError> {
    let file = File::open(path).map_err(|source| DnsError::OpenNetns { path: path.to_path_buf(), source })?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| DnsError::EnterNetns { path: path.to_path_buf(), source })?;
    if addr.ip().is_loopback() && !loopback_is_up() {
        return Err(DnsError::Bind {
            proto: "udp",
            addr,
            hint: " (the loopback interface is down in this namespace: `ip link set lo up`)",
            source: io::Error::from(io::ErrorKind::AddrNotAvailable),
        });
    }
    bind(addr)
}

/// Whether `lo` is up in the calling thread's namespace (a socket on 127.0.0.11 binds even when it
/// is down, but then no query ever arrives).
fn loopback_is_up() -> bool {
    use nix::net::if_::InterfaceFlags;
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs.filter(|a| a.interface_name == "lo").any(|a| a.flags.contains(InterfaceFlags::IFF_UP)),
        // Cannot tell: let the bind decide.
        Err(_) => true,
    }
}
