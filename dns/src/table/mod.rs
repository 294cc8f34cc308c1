//! The name tables: one per network plus the host-side (Consul-style) table, built from a
//! [`Zone`] by pure code and swapped whole by the server.

mod host;
pub mod name;
mod network;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

pub use host::HostTable;
pub use network::{NameEntry, NetworkTable, SrvTarget, TtlClass};

use crate::{error::ZoneError, zone::Zone};

/// Every table the server answers from. Immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    networks: HashMap<String, Arc<NetworkTable>>,
    host: HostTable,
}

impl Tables {
    /// Validates `zone` and compiles it. Networks whose input equals the one in `previous` keep
    /// their table (an unchanged network costs nothing). On error nothing is built.
    pub fn build(zone: &Zone, previous: Option<&Tables>) -> Result<Self, ZoneError> {
        let mut networks = HashMap::new();
        let mut seen = HashSet::new();
        for net in &zone.networks {
            let key = name::normalize("network name", &net.name, "")?;
            if !seen.insert(key.clone()) {
                return Err(ZoneError::DuplicateNetwork(net.name.clone()));
            }
            let reused = previous
                .and_then(|p| p.networks.get(&key))
                .filter(|t| t.source == *net)
                .cloned();
            let table = match reused {
                Some(table) => table,
                None => Arc::new(NetworkTable::build(net)?),
            };
            networks.insert(key, table);
        }
        let host = HostTable::build(zone)?;
        Ok(Self { networks, host })
    }

    /// The table of a network, by lower-cased name.
    pub fn network(&self, name: &str) -> Option<&NetworkTable> {
        self.networks.get(name).map(Arc::as_ref)
    }

    /// Whether `name` (lower-cased) is the name of any network in the zone.
    pub fn is_network_name(&self, name: &str) -> bool {
        self.networks.contains_key(name)
    }

    /// The host-side table.
    pub fn host(&self) -> &HostTable {
        &self.host
    }

    /// Whether the two tables share the same compiled table for `network` (test helper for reuse).
    pub fn shares_network(&self, other: &Tables, network: &str) -> bool {
        match (self.networks.get(network), other.networks.get(network)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
