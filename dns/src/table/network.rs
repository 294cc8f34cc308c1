//! The compiled name table of one network: lower-cased names to addresses, PTR and SRV data.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::Map;
use crate::{
    error::ZoneError,
    table::name::normalize,
    zone::{EndpointMode, NetworkZone, TaskRecord},
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    fn new(ttl: TtlClass) -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
            srv: Vec::new(),
            ttl,
        }
    }

    fn add_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) if !self.v4.contains(&v4) => self.v4.push(v4),
            IpAddr::V6(v6) if !self.v6.contains(&v6) => self.v6.push(v6),
            _ => {}
        }
    }
}

/// The names one network answers, built from its [`NetworkZone`].
#[derive(Debug, Clone)]
pub struct NetworkTable {
    /// Lower-cased network name.
    pub name: String,
    /// The input it was built from (to reuse the table when a new zone leaves it unchanged).
    pub source: NetworkZone,
    names: Map<String, NameEntry>,
    ptr: Map<IpAddr, Vec<String>>,
}

impl NetworkTable {
    /// Looks up a lower-cased name without network suffix or trailing dot.
    pub fn lookup(&self, name: &str) -> Option<&NameEntry> {
        self.names.get(name)
    }

    /// Reverse names (fully qualified) of an address on this network.
    pub fn ptr(&self, ip: &IpAddr) -> Option<&[String]> {
        self.ptr.get(ip).map(Vec::as_slice)
    }

    /// Number of names (for logs and tests).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the network declares no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Validates one network's zone and compiles it.
    pub fn build(zone: &NetworkZone) -> Result<Self, ZoneError> {
        let net = normalize("network name", &zone.name, "")?;
        let place = format!(" in network {:?}", zone.name);
        let mut table = Self {
            name: net.clone(),
            source: zone.clone(),
            names: Map::with_capacity_and_hasher(zone.services.len() * 3 + zone.tasks.len() * 2, Default::default()),
            ptr: Map::with_capacity_and_hasher(zone.tasks.len() + zone.services.len(), Default::default()),
        };

        // Services first, so tasks can be checked against them.
        let mut services: Map<String, ServiceView<'_>> = Map::default();
        for svc in &zone.services {
            let name = normalize("service name", &svc.name, &place)?;
            if services.contains_key(&name) {
                return Err(ZoneError::DuplicateService {
                    network: zone.name.clone(),
                    service: svc.name.clone(),
                });
            }
            let mut names = vec![name.clone()];
            for alias in &svc.aliases {
                names.push(normalize("service alias", alias, &place)?);
            }
            let mut ports = Vec::new();
            for port in &svc.ports {
                let label = normalize("port name", &port.label(), &place)?;
                ports.push((format!("_{label}._{}", port.protocol.label()), port.port));
            }
            if svc.endpoint_mode == EndpointMode::Vip && svc.vip.is_none() {
                return Err(ZoneError::MissingVip {
                    network: zone.name.clone(),
                    service: svc.name.clone(),
                });
            }
            services.insert(
                name.clone(),
                ServiceView {
                    name,
                    names,
                    mode: svc.endpoint_mode,
                    vip: svc.vip,
                    ports,
                    healthy: Vec::new(),
                },
            );
        }

        // Tasks: names, PTR, and healthy backends of their service.
        for task in &zone.tasks {
            let service = normalize("task service", &task.service, &place)?;
            let Some(view) = services.get_mut(&service) else {
                return Err(ZoneError::UnknownService {
                    network: zone.name.clone(),
                    task: task.id.clone(),
                    service: task.service.clone(),
                });
            };
            let task_name = normalize("task name", &task.task_name(), &place)?;
            table.add_ip(&task_name, task.ip, TtlClass::Stable);
            table.add_ptr(task.ip, format!("{task_name}.{net}."));
            if task.healthy {
                for alias in &task.aliases {
                    let alias = normalize("task alias", alias, &place)?;
                    table.add_ip(&alias, task.ip, TtlClass::Tasks);
                }
                view.healthy.push((task_name, task));
            }
        }

        for view in services.values() {
            table.add_service(view, &net);
        }
        Ok(table)
    }

    fn entry(&mut self, name: &str, ttl: TtlClass) -> &mut NameEntry {
        if !self.names.contains_key(name) {
            self.names.insert(name.to_string(), NameEntry::new(ttl));
        }
        let entry = self.names.get_mut(name).expect("inserted above");
        entry.ttl = entry.ttl.min(ttl);
        entry
    }

    fn add_ip(&mut self, name: &str, ip: IpAddr, ttl: TtlClass) {
        self.entry(name, ttl).add_ip(ip);
    }

    fn add_ptr(&mut self, ip: IpAddr, target: String) {
        let targets = self.ptr.entry(ip).or_default();
        if !targets.contains(&target) {
            targets.push(target);
        }
    }

    fn add_service(&mut self, view: &ServiceView<'_>, net: &str) {
        for name in &view.names {
            // tasks.<name>: every healthy task, whatever the endpoint mode.
            let entry = self.entry(&format!("tasks.{name}"), TtlClass::Tasks);
            for (_, task) in &view.healthy {
                entry.add_ip(task.ip);
            }
            match (view.mode, view.vip) {
                (EndpointMode::Vip, Some(vip)) => self.add_ip(name, vip, TtlClass::Stable),
                _ => {
                    let entry = self.entry(name, TtlClass::Tasks);
                    for (_, task) in &view.healthy {
                        entry.add_ip(task.ip);
                    }
                }
            }
        }
        if let (EndpointMode::Vip, Some(vip)) = (view.mode, view.vip) {
            self.add_ptr(vip, format!("{}.{net}.", view.name));
        }
        for (prefix, port) in &view.ports {
            let targets: Vec<SrvTarget> = match (view.mode, view.vip) {
                (EndpointMode::Vip, Some(vip)) => vec![SrvTarget {
                    target: format!("{}.{net}.", view.name),
                    port: *port,
                    addrs: vec![vip],
                }],
                _ => view
                    .healthy
                    .iter()
                    .map(|(task_name, task)| SrvTarget {
                        target: format!("{task_name}.{net}."),
                        port: *port,
                        addrs: vec![task.ip],
                    })
                    .collect(),
            };
            let ttl = match view.mode {
                EndpointMode::Vip => TtlClass::Stable,
                EndpointMode::Dnsrr => TtlClass::Tasks,
            };
            for name in &view.names {
                let entry = self.entry(&format!("{prefix}.{name}"), ttl);
                entry.srv.extend(targets.iter().cloned());
            }
        }
    }
}

/// A service while its network table is being built.
struct ServiceView<'a> {
    name: String,
    names: Vec<String>,
    mode: EndpointMode,
    vip: Option<IpAddr>,
    ports: Vec<(String, u16)>,
    healthy: Vec<(String, &'a TaskRecord)>,
}
