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
