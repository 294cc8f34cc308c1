//! The host-side table: Consul-style `<node>.node.<domain>`; `<svc>.service.<domain>` is answered
//! from the network tables ([`super::Tables::service_backends`]).

use std::net::IpAddr;

use super::Map;
use crate::{error::ZoneError, table::name::normalize, zone::Zone};

/// Node names answered on the host-side listener, without the domain suffix.
#[derive(Debug, Clone, Default)]
pub struct HostTable {
    nodes: Map<String, Vec<IpAddr>>,
}

impl HostTable {
    /// Addresses of a node, by lower-cased node name.
    pub fn node(&self, name: &str) -> Option<&[IpAddr]> {
        self.nodes.get(name).map(Vec::as_slice)
    }

    /// Builds the table.
    pub fn build(zone: &Zone) -> Result<Self, ZoneError> {
        let mut table = Self::default();
        for node in &zone.nodes {
            let name = normalize("node name", &node.name, "")?;
            let ips = table.nodes.entry(name).or_default();
            if !ips.contains(&node.address) {
                ips.push(node.address);
            }
        }
        Ok(table)
    }
}
