//! Reading upstream resolvers from a resolv.conf, and writing the one tasks get.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

use crate::{error::DnsError, forward::MAX_UPSTREAMS};

/// The address the DNS answers on inside every task namespace.
pub const TASK_DNS_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 11);

/// The resolv.conf a task gets: the embedded DNS only, and `ndots:0` so single names
/// (`web`) are asked as they are, without search domains.
pub fn resolv_conf_for_task() -> String {
    format!(
        "# written by shoal: the embedded DNS answers service names and forwards the rest\nnameserver {TASK_DNS_ADDR}\noptions ndots:0\n"
    )
}

/// The `nameserver` lines of a resolv.conf, port 53, at most [`MAX_UPSTREAMS`]; entries that are
/// not plain addresses (a scoped `fe80::1%eth0`) are skipped with a warning.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else {
            continue;
        };
        match addr.parse::<IpAddr>() {
            Ok(ip) => {
                let upstream = SocketAddr::new(ip, 53);
                if !upstreams.contains(&upstream) {
                    upstreams.push(upstream);
                }
            }
            Err(_) => tracing::warn!(nameserver = addr, "skipping nameserver that is not a plain IP address"),
        }
        if upstreams.len() == MAX_UPSTREAMS {
            break;
        }
    }
    upstreams
}

/// [`parse_resolv_conf`] of a file (the node's `/etc/resolv.conf` usually).
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DnsError::ResolvConf { path: path.to_path_buf(), source })?;
    Ok(parse_resolv_conf(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_first_three_plain_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\n\
                    nameserver 10.0.0.1\nnameserver 2001:db8::53\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> =
            vec!["10.0.0.1:53".parse().unwrap(), "[2001:db8::53]:53".parse().unwrap(), "10.0.0.3:53".parse().unwrap()];
        assert_eq!(got, want);
    }

    #[test]
    fn task_resolv_conf_points_at_the_embedded_dns() {
        let text = resolv_conf_for_task();
        assert!(text.contains("nameserver 127.0.0.11\n"));
        assert!(text.contains("options ndots:0\n"));
        assert_eq!(parse_resolv_conf(&text), vec!["127.0.0.11:53".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = upstreams_from_resolv_conf(Path::new("/nonexistent/shoal-resolv.conf")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/shoal-resolv.conf"), "{err}");
    }
}
