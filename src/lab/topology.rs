//! Names and addresses of a lab, derived from its name alone, so `down` after a crash finds every
//! object by exact name.

use std::net::Ipv4Addr;

pub const MAX_NODES: usize = 9;
pub const UNDERLAY_PREFIX: u8 = 24;
pub const UNDERLAY_BRIDGE: &str = "br0";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Topology {
    pub lab: String,
    pub underlay_ns: String,
    pub nodes: Vec<LabHost>,
    pub client: LabHost,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabHost {
    pub name: String,
    pub netns: String,
    pub address: Ipv4Addr,
    /// The host's port on the underlay bridge, inside the underlay namespace.
    pub port: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("--nodes {0}: a lab has 1 to {MAX_NODES} nodes")]
    Nodes(usize),
    #[error("--name '{0}': use 1-20 characters of [a-z0-9]")]
    Name(String),
}

/// Node names follow the seeds' Vagrant lab: smgr, snode1, snode2, ...
pub fn node_name(i: usize) -> String {
    if i == 0 {
        "smgr".to_string()
    } else {
        format!("snode{i}")
    }
}

pub fn topology(lab: &str, nodes: usize) -> Result<Topology, TopologyError> {
    if lab.is_empty() || lab.len() > 20 || !lab.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(TopologyError::Name(lab.to_string()));
    }
    if nodes == 0 || nodes > MAX_NODES {
        return Err(TopologyError::Nodes(nodes));
    }
    let ns = |host: &str| format!("shoal-{lab}-{host}");
    let host =
        |name: String, last: u8| LabHost { netns: ns(&name), address: Ipv4Addr::new(192, 168, 33, last), port: format!("u-{name}"), name };
    Ok(Topology {
        lab: lab.to_string(),
        underlay_ns: ns("underlay"),
        nodes: (0..nodes).map(|i| host(node_name(i), 10 * (i as u8 + 1))).collect(),
        client: host("client".to_string(), 100),
    })
}

impl Topology {
    /// Every namespace of the lab, hosts first, the underlay last.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().map(|n| n.netns.clone()).collect();
        v.push(self.client.netns.clone());
        v.push(self.underlay_ns.clone());
        v
    }

    pub fn hosts(&self) -> impl Iterator<Item = &LabHost> {
        self.nodes.iter().chain(std::iter::once(&self.client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_addresses_and_names() {
        let t = topology("lab", 3).unwrap();
        let got: Vec<_> = t.nodes.iter().map(|n| (n.name.as_str(), n.address.to_string(), n.netns.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("smgr", "192.168.33.10".to_string(), "shoal-lab-smgr"),
                ("snode1", "192.168.33.20".to_string(), "shoal-lab-snode1"),
                ("snode2", "192.168.33.30".to_string(), "shoal-lab-snode2"),
            ]
        );
        assert_eq!(t.client.address.to_string(), "192.168.33.100");
        assert_eq!(t.namespaces().last().unwrap(), "shoal-lab-underlay");
    }

    #[test]
    fn bad_sizes_and_names_are_refused() {
        assert!(topology("lab", 0).is_err());
        assert!(topology("lab", 10).is_err());
        assert!(topology("Lab", 3).is_err());
        assert!(topology("a-b", 3).is_err());
        assert!(topology(&"a".repeat(21), 3).is_err());
        assert!(topology("lab", 9).is_ok());
    }
}
