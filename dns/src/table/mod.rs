//! The name tables: one per network plus the host-side (Consul-style) table, built from a
//! [`Zone`] by pure code and swapped whole by the server.

mod host;
pub mod name;
mod network;
mod service;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

pub use host::HostTable;
pub use network::{NameEntry, NetworkTable, SrvTarget, TtlClass};

use crate::{error::ZoneError, zone::Zone};

/// Hash maps of the tables: fast hashing (lookups are on the query path; the keys come from the
/// control plane, not from clients).
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Every table the server answers from. Immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    networks: Map<String, Arc<NetworkTable>>,
    host: HostTable,
}

impl Tables {
    /// Validates `zone` and compiles it. Networks whose input equals the one in `previous` keep
    /// their table (an unchanged network costs nothing). On error nothing is built.
    pub fn build(zone: &Zone, previous: Option<&Tables>) -> Result<Self, ZoneError> {
        let mut networks = Map::default();
        let mut seen = HashSet::new();
        for net in &zone.networks {
            let key = name::normalize("network name", &net.name, "")?;
            if !seen.insert(key.clone()) {
                return Err(ZoneError::DuplicateNetwork(net.name.clone()));
            }
            let table = NetworkTable::update(net, previous.and_then(|p| p.networks.get(&key)))?;
            networks.insert(key, table);
        }
        let host = HostTable::build(zone)?;
        Ok(Self { networks, host })
    }

    /// Healthy task IPs of a service on every network (the host side's `<svc>.service`), or
    /// `None` when no network has the service.
    pub fn service_backends(&self, service: &str) -> Option<Vec<IpAddr>> {
        let mut found = false;
        let mut ips = Vec::new();
        for table in self.networks.values() {
            if let Some(backends) = table.service_backends(service) {
                found = true;
                for ip in backends {
                    if !ips.contains(ip) {
                        ips.push(*ip);
                    }
                }
            }
        }
        found.then_some(ips)
    }

    /// The table of a network, by lower-cased name.
    pub fn network(&self, name: &str) -> Option<&NetworkTable> {
        self.networks.get(name).map(Arc::as_ref)
    }

    /// Every network with its table (in no particular order).
    pub fn networks(&self) -> impl Iterator<Item = (&str, &NetworkTable)> {
        self.networks.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{EndpointMode, NetworkZone, ServiceRecord, TaskRecord};

    fn zone() -> Zone {
        Zone {
            networks: vec![
                NetworkZone {
                    name: "a".into(),
                    services: vec![ServiceRecord {
                        name: "web".into(),
                        aliases: vec![],
                        endpoint_mode: EndpointMode::Vip,
                        vip: Some("10.0.0.2".parse().unwrap()),
                        ports: vec![],
                    }],
                    tasks: vec![TaskRecord {
                        id: "t1".into(),
                        service: "web".into(),
                        slot: Some(1),
                        name: None,
                        ip: "10.0.0.3".parse().unwrap(),
                        healthy: true,
                        aliases: vec![],
                    }],
                },
                NetworkZone { name: "b".into(), ..Default::default() },
            ],
            nodes: vec![],
        }
    }

    #[test]
    fn unchanged_networks_keep_their_table() {
        let first = Tables::build(&zone(), None).unwrap();
        let mut changed = zone();
        changed.networks[1].services.push(ServiceRecord {
            name: "x".into(),
            aliases: vec![],
            endpoint_mode: EndpointMode::Dnsrr,
            vip: None,
            ports: vec![],
        });
        let second = Tables::build(&changed, Some(&first)).unwrap();
        assert!(second.shares_network(&first, "a"));
        assert!(!second.shares_network(&first, "b"));
        assert!(second.network("b").unwrap().lookup("x").is_some());
    }

    #[test]
    fn bad_zones_are_rejected_with_the_object_and_the_fix() {
        type Mutate = Box<dyn Fn(&mut Zone)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (Box::new(|z| z.networks[0].services[0].vip = None), "has endpoint_mode vip but no vip"),
            (
                Box::new(|z| {
                    let dup = z.networks[0].services[0].clone();
                    z.networks[0].services.push(dup)
                }),
                "appears twice in network \"a\"",
            ),
            (Box::new(|z| z.networks[0].tasks[0].service = "nope".into()), "belongs to service \"nope\""),
            (Box::new(|z| z.networks[1].name = "A".into()), "network \"A\" appears twice"),
            (Box::new(|z| z.networks[0].services[0].aliases.push("bad name".into())), "service alias \"bad name\" in network \"a\""),
            (Box::new(|z| z.networks[0].tasks[0].id = "x/y".into()), "task name \"web.1.x/y\""),
        ];
        for (mutate, needle) in cases {
            let mut z = zone();
            mutate(&mut z);
            let err = Tables::build(&z, None).unwrap_err().to_string();
            assert!(err.contains(needle), "want {needle:?} in {err:?}");
        }
    }

    #[test]
    fn zone_round_trips_through_json_with_defaults() {
        let json = r#"{"networks":[{"name":"a","services":[{"name":"web","vip":"10.0.0.2"}],
            "tasks":[{"id":"t1","service":"web","slot":1,"ip":"10.0.0.3"}]}]}"#;
        let zone: Zone = serde_json::from_str(json).unwrap();
        assert!(zone.networks[0].tasks[0].healthy, "healthy defaults to true");
        assert_eq!(zone.networks[0].services[0].endpoint_mode, EndpointMode::Vip);
        assert_eq!(zone.networks[0].tasks[0].task_name(), "web.1.t1");
        let err = serde_json::from_str::<Zone>(r#"{"networkz":[]}"#).unwrap_err().to_string();
        assert!(err.contains("networkz"), "{err}");
    }
}
