//! What whoami answers: who it is and who it sees.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
}

impl Identity {
    pub fn discover(name: Option<String>) -> anyhow::Result<Self> {
        let hostname = nix::unistd::gethostname()?.to_string_lossy().into_owned();
        let mut ips: Vec<IpAddr> =
            nix::ifaddrs::getifaddrs()?.filter_map(|i| i.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip()))).collect();
        ips.sort();
        ips.dedup();
        Ok(Self { name: name.unwrap_or_else(|| hostname.clone()), hostname, ips })
    }

    pub fn text(&self, remote: SocketAddr) -> String {
        let mut s = format!("Name: {}\nHostname: {}\n", self.name, self.hostname);
        for ip in &self.ips {
            s.push_str(&format!("IP: {ip}\n"));
        }
        s.push_str(&format!("RemoteAddr: {remote}\n"));
        s
    }
}

#[cfg(test)]
pub fn parse(text: &str) -> Option<(String, SocketAddr)> {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    Some((field("Name:")?.to_string(), field("RemoteAddr:")?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_back() {
        let me = Identity { name: "web.1".into(), hostname: "h".into(), ips: vec!["10.0.9.2".parse().unwrap()] };
        let text = me.text("192.168.33.100:4000".parse().unwrap());
        assert_eq!(text, "Name: web.1\nHostname: h\nIP: 10.0.9.2\nRemoteAddr: 192.168.33.100:4000\n");
        assert_eq!(parse(&text), Some(("web.1".into(), "192.168.33.100:4000".parse().unwrap())));
    }
}
