//! The host-side table: Consul-style `<svc>.service.<domain>` and `<node>.node.<domain>`.

use std::net::IpAddr;

use super::Map;
use crate::{error::ZoneError, table::name::normalize, zone::Zone};

/// Names answered on the host-side listener, without the domain suffix.
#[derive(Debug, Clone, Default)]
pub struct HostTable {
    services: Map<String, Vec<IpAddr>>,
    nodes: Map<String, Vec<IpAddr>>,
}

impl HostTable {
    /// Healthy task IPs of a service on every network, by lower-cased service name.
    pub fn service(&self, name: &str) -> Option<&[IpAddr]> {
        self.services.get(name).map(Vec::as_slice)
    }

    /// Addresses of a node, by lower-cased node name.
    pub fn node(&self, name: &str) -> Option<&[IpAddr]> {
        self.nodes.get(name).map(Vec::as_slice)
    }

    /// Builds the table; names are validated here too since the host side has its own view.
    pub fn build(zone: &Zone) -> Result<Self, ZoneError> {
        let mut table = Self::default();
        for net in &zone.networks {
            let place = format!(" in network {:?}", net.name);
            for svc in &net.services {
                let name = normalize("service name", &svc.name, &place)?;
                table.services.entry(name).or_default();
            }
            for task in net.tasks.iter().filter(|t| t.healthy) {
                let name = normalize("task service", &task.service, &place)?;
                let ips = table.services.entry(name).or_default();
                if !ips.contains(&task.ip) {
                    ips.push(task.ip);
                }
            }
        }
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
