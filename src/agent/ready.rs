//! When a task without a health check may enter its service's load balancers. It enters when it
//! reports Running, and that used to be as soon as its process started, before its program
//! listened: in a rolling update the new task was sent connections that were refused for the
//! milliseconds (on a loaded node, longer) its program took to bind (1 to 9 refused per ~700
//! requests in `tests/update.rs` on a loaded machine). So a task of a service that declares TCP
//! target ports reports Running once something listens on each of them in its network namespace,
//! or after [`READY_LIMIT`], whichever comes first. Read from `/proc/<pid>/net/tcp` and `tcp6`,
//! which list the sockets of that process's network namespace.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_control::model::{Protocol, ServiceSpec};

/// How long a task may take to listen before it is reported Running anyway (a program that
/// listens on another port than the service declares is still run and reported, as before).
pub const READY_LIMIT: Duration = Duration::from_secs(10);

/// The TCP ports the service's load balancers send a task's connections to.
pub fn tcp_ports(spec: &ServiceSpec) -> BTreeSet<u16> {
    spec.endpoint.ports.iter().filter(|p| p.protocol == Protocol::Tcp).filter_map(|p| u16::try_from(p.target).ok()).collect()
}

/// Local ports in LISTEN state (st 0A) in a `/proc/net/tcp` or `tcp6` table.
pub fn listening(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            (state == "0A").then_some(())?;
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// Whether every port in `ports` is listened on in the network namespace of process `pid`.
pub fn ready(pid: i32, ports: &BTreeSet<u16>) -> bool {
    let mut open = BTreeSet::new();
    for t in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{t}")) {
            open.extend(listening(&text));
        }
    }
    ports.is_subset(&open)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2B4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_count() {
        assert_eq!(listening(TCP), [80].into(), "8080 is an established connection, not a listener");
        assert_eq!(listening(TCP6), [6379].into());
        assert!(listening("").is_empty() && listening("header only\n").is_empty());
    }

    #[test]
    fn the_service_s_tcp_target_ports() {
        let mut s = ServiceSpec::new("web", "nginx");
        s.endpoint.ports = vec![
            shoal_control::model::PortConfig {
                protocol: Protocol::Tcp,
                target: 80,
                published: Some(8080),
                mode: shoal_control::model::PublishMode::Ingress,
            },
            shoal_control::model::PortConfig {
                protocol: Protocol::Udp,
                target: 53,
                published: None,
                mode: shoal_control::model::PublishMode::Ingress,
            },
        ];
        assert_eq!(tcp_ports(&s), [80].into());
    }

    #[test]
    fn this_process_listening_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(ready(std::process::id() as i32, &[port].into()));
        drop(l);
        assert!(!ready(std::process::id() as i32, &[port].into()));
    }
}
