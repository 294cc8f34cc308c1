//! The compiled name table of one network: lower-cased names to addresses, PTR and SRV data,
//! assembled from per-service tables.
//!
//! Updates are incremental: a new zone is compared service by service with the previous table;
//! unchanged services keep their compiled table, and only the names the changed services
//! contribute (before or after) are recomputed in a copy of the previous maps (cheap: keys and
//! entries are shared). An unchanged network keeps its table as is.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use super::{
    name::{normalize, normalized},
    service::ServiceTable,
    Map,
};
use crate::{
    error::ZoneError,
    zone::{NetworkZone, TaskRecord},
};

/// Which configured TTL an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TtlClass {
    /// Names that change when backends change (`tasks.<svc>`, dnsrr services, task aliases).
    Tasks,
    /// Names that stay put (VIPs, task names, PTR, SRV of VIP services).
    Stable,
}

/// One SRV answer: a target name (fully qualified, with trailing dot) and port, plus the
/// target's addresses for the additional section.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SrvTarget {
    /// Target host name, fully qualified.
    pub target: String,
    /// Port.
    pub port: u16,
    /// The target's addresses.
    pub addrs: Vec<IpAddr>,
}

/// What one name answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// A records.
    pub v4: Vec<Ipv4Addr>,
    /// AAAA records.
    pub v6: Vec<Ipv6Addr>,
    /// SRV records.
    pub srv: Vec<SrvTarget>,
    /// TTL class (the shortest of the merged sources).
    pub ttl: TtlClass,
}

impl NameEntry {
    pub(crate) fn new(ttl: TtlClass) -> Self {
        Self { v4: Vec::new(), v6: Vec::new(), srv: Vec::new(), ttl }
    }

    pub(crate) fn add_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) if !self.v4.contains(&v4) => self.v4.push(v4),
            IpAddr::V6(v6) if !self.v6.contains(&v6) => self.v6.push(v6),
            _ => {}
        }
    }

    fn merge(&mut self, other: &NameEntry) {
        for ip in &other.v4 {
            self.add_ip(IpAddr::V4(*ip));
        }
        for ip in &other.v6 {
            self.add_ip(IpAddr::V6(*ip));
        }
        self.srv.extend(other.srv.iter().cloned());
        self.ttl = self.ttl.min(other.ttl);
    }
}

/// A name's answer merged over the services contributing it.
#[derive(Debug)]
struct Merged<T> {
    value: T,
    /// Keys of the contributing services.
    owners: Vec<Arc<str>>,
}

/// The names one network answers.
#[derive(Debug, Clone)]
pub struct NetworkTable {
    /// Lower-cased network name.
    pub name: String,
    services: Arc<Map<Arc<str>, Arc<ServiceTable>>>,
    names: Arc<Map<Arc<str>, Arc<Merged<NameEntry>>>>,
    ptr: Arc<Map<IpAddr, Arc<Merged<Vec<String>>>>>,
}

impl NetworkTable {
    /// Looks up a lower-cased name without network suffix or trailing dot.
    pub fn lookup(&self, name: &str) -> Option<&NameEntry> {
        self.names.get(name).map(|m| &m.value)
    }

    /// Reverse names (fully qualified) of an address on this network.
    pub fn ptr(&self, ip: &IpAddr) -> Option<&[String]> {
        self.ptr.get(ip).map(|m| m.value.as_slice())
    }

    /// Healthy task IPs of a service (lower-cased name), if the service is on this network.
    pub fn service_backends(&self, service: &str) -> Option<&[IpAddr]> {
        self.services.get(service).map(|s| s.healthy.as_slice())
    }

    /// Number of names (for logs and tests).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the network declares no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every name with its answer, for tests comparing tables.
    pub fn names(&self) -> impl Iterator<Item = (&str, &NameEntry)> {
        self.names.iter().map(|(k, v)| (k.as_ref(), &v.value))
    }

    /// Every address with its reverse names, for tests comparing tables.
    pub fn ptrs(&self) -> impl Iterator<Item = (&IpAddr, &[String])> {
        self.ptr.iter().map(|(k, v)| (k, v.value.as_slice()))
    }

    /// Validates one network's zone and compiles it from scratch.
    pub fn build(zone: &NetworkZone) -> Result<Self, ZoneError> {
        Self::update(zone, None).map(Arc::unwrap_or_clone)
    }

    /// Validates one network's zone and compiles it, reusing what did not change since
    /// `previous` (the same `Arc` when nothing did).
    pub fn update(zone: &NetworkZone, previous: Option<&Arc<NetworkTable>>) -> Result<Arc<Self>, ZoneError> {
        let net = normalize("network name", &zone.name, "")?;
        let place = format!(" in network {:?}", zone.name);

        // Services by key, then their tasks.
        let mut index: Map<Arc<str>, usize> = Map::with_capacity_and_hasher(zone.services.len(), Default::default());
        let mut keys: Vec<Arc<str>> = Vec::with_capacity(zone.services.len());
        for svc in &zone.services {
            let key: Arc<str> = Arc::from(normalized("service name", &svc.name, &place)?.as_ref());
            if index.insert(key.clone(), keys.len()).is_some() {
                return Err(ZoneError::DuplicateService { network: zone.name.clone(), service: svc.name.clone() });
            }
            keys.push(key);
        }
        let mut groups: Vec<Vec<&TaskRecord>> = vec![Vec::new(); zone.services.len()];
        for task in &zone.tasks {
            let service = normalized("task service", &task.service, &place)?;
            let Some(&i) = index.get(service.as_ref()) else {
                return Err(ZoneError::UnknownService { network: zone.name.clone(), task: task.id.clone(), service: task.service.clone() });
            };
            groups[i].push(task);
        }

        // Per service: reuse or rebuild.
        let prev = previous.filter(|p| p.name == net);
        let mut services: Map<Arc<str>, Arc<ServiceTable>> = Map::with_capacity_and_hasher(zone.services.len(), Default::default());
        let mut changed: Vec<Arc<str>> = Vec::new();
        for ((key, record), tasks) in keys.iter().zip(&zone.services).zip(&groups) {
            let reused = prev.and_then(|p| p.services.get(key)).filter(|t| t.built_from(record, tasks)).cloned();
            let table = match reused {
                Some(table) => table,
                None => {
                    changed.push(key.clone());
                    Arc::new(ServiceTable::build(&net, &zone.name, key, record, tasks)?)
                }
            };
            services.insert(key.clone(), table);
        }
        if let Some(p) = prev {
            changed.extend(p.services.keys().filter(|k| !services.contains_key(*k)).cloned());
        }

        let Some(p) = prev else {
            return Ok(Arc::new(Self::assemble(net, services, &keys)));
        };
        if changed.is_empty() {
            return Ok(p.clone());
        }
        Ok(Arc::new(Self::patch(p, net, services, &changed)))
    }

    /// A table from scratch: every service's names merged, in zone order.
    fn assemble(net: String, services: Map<Arc<str>, Arc<ServiceTable>>, order: &[Arc<str>]) -> Self {
        let mut names: Map<Arc<str>, Merged<NameEntry>> = Map::default();
        let mut ptr: Map<IpAddr, Merged<Vec<String>>> = Map::default();
        for key in order {
            let Some(service) = services.get(key) else { continue };
            for (name, entry) in &service.names {
                match names.get_mut(name.as_ref()) {
                    Some(merged) => {
                        merged.value.merge(entry);
                        merged.owners.push(key.clone());
                    }
                    None => {
                        names.insert(name.clone(), Merged { value: entry.clone(), owners: vec![key.clone()] });
                    }
                }
            }
            for (ip, targets) in &service.ptr {
                let merged = ptr.entry(*ip).or_insert_with(|| Merged { value: Vec::new(), owners: Vec::new() });
                merge_targets(&mut merged.value, targets);
                merged.owners.push(key.clone());
            }
        }
        Self {
            name: net,
            services: Arc::new(services),
            names: Arc::new(names.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
            ptr: Arc::new(ptr.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
        }
    }

    /// `previous` with the names and PTRs of the `changed` services recomputed.
    fn patch(previous: &NetworkTable, net: String, services: Map<Arc<str>, Arc<ServiceTable>>, changed: &[Arc<str>]) -> Self {
        // Every name and address a changed service contributes, before or after.
        let mut affected_names: Vec<Arc<str>> = Vec::new();
        let mut affected_ips: Vec<IpAddr> = Vec::new();
        for key in changed {
            for table in [previous.services.get(key), services.get(key)].into_iter().flatten() {
                affected_names.extend(table.names.keys().cloned());
                affected_ips.extend(table.ptr.keys().copied());
            }
        }
        affected_names.sort_unstable();
        affected_names.dedup();
        affected_ips.sort_unstable();
        affected_ips.dedup();

        let is_changed = |key: &Arc<str>| changed.contains(key);
        let mut names = (*previous.names).clone();
        for name in affected_names {
            // Unchanged owners stay; changed services own it if their new table has it.
            let mut owners: Vec<Arc<str>> = previous
                .names
                .get(name.as_ref())
                .map(|m| m.owners.iter().filter(|o| !is_changed(o)).cloned().collect())
                .unwrap_or_default();
            owners.extend(changed.iter().filter(|k| services.get(*k).is_some_and(|t| t.names.contains_key(name.as_ref()))).cloned());
            let mut value: Option<NameEntry> = None;
            for owner in &owners {
                if let Some(entry) = services.get(owner).and_then(|t| t.names.get(name.as_ref())) {
                    match &mut value {
                        Some(v) => v.merge(entry),
                        None => value = Some(entry.clone()),
                    }
                }
            }
            match value {
                Some(value) => names.insert(name, Arc::new(Merged { value, owners })),
                None => names.remove(name.as_ref()),
            };
        }
        let mut ptr = (*previous.ptr).clone();
        for ip in affected_ips {
            let mut owners: Vec<Arc<str>> =
                previous.ptr.get(&ip).map(|m| m.owners.iter().filter(|o| !is_changed(o)).cloned().collect()).unwrap_or_default();
            owners.extend(changed.iter().filter(|k| services.get(*k).is_some_and(|t| t.ptr.contains_key(&ip))).cloned());
            let mut value = Vec::new();
            for owner in &owners {
                if let Some(targets) = services.get(owner).and_then(|t| t.ptr.get(&ip)) {
                    merge_targets(&mut value, targets);
                }
            }
            if value.is_empty() {
                ptr.remove(&ip);
            } else {
                ptr.insert(ip, Arc::new(Merged { value, owners }));
            }
        }
        Self { name: net, services: Arc::new(services), names: Arc::new(names), ptr: Arc::new(ptr) }
    }
}

fn merge_targets(into: &mut Vec<String>, targets: &[String]) {
    for target in targets {
        if !into.contains(target) {
            into.push(target.clone());
        }
    }
}
