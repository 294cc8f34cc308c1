//! The names one service contributes to its network: the service and its aliases, `tasks.*`,
//! SRV, and its tasks' names and aliases, with their PTR records. Built from the service's part of
//! the zone alone, so an unchanged service is never rebuilt.

use std::{net::IpAddr, sync::Arc};

use super::{
    name::{normalize, normalized},
    Map, NameEntry, SrvTarget, TtlClass,
};
use crate::{
    error::ZoneError,
    zone::{EndpointMode, ServiceRecord, TaskRecord},
};

/// One service on one network, compiled.
#[derive(Debug)]
pub struct ServiceTable {
    /// The input (to detect changes).
    pub record: ServiceRecord,
    /// The service's tasks on this network, in zone order (to detect changes).
    pub tasks: Vec<TaskRecord>,
    /// Healthy task IPs (for the host-side `<svc>.service` names).
    pub healthy: Vec<IpAddr>,
    /// Names this service contributes and what each answers.
    pub names: Map<Arc<str>, NameEntry>,
    /// PTR targets this service contributes.
    pub ptr: Map<IpAddr, Vec<String>>,
}

impl ServiceTable {
    /// Whether this table was built from exactly `record` and `tasks`.
    pub fn built_from(&self, record: &ServiceRecord, tasks: &[&TaskRecord]) -> bool {
        self.record == *record && self.tasks.len() == tasks.len() && self.tasks.iter().zip(tasks).all(|(a, b)| a == *b)
    }

    /// Validates and compiles service `key` (its normalised name) of network `net` (normalised;
    /// `display` is the network as the user wrote it).
    pub fn build(net: &str, display: &str, key: &str, record: &ServiceRecord, tasks: &[&TaskRecord]) -> Result<Self, ZoneError> {
        let place = format!(" in network {display:?}");
        if record.endpoint_mode == EndpointMode::Vip && record.vip.is_none() {
            return Err(ZoneError::MissingVip { network: display.to_string(), service: record.name.clone() });
        }
        let mut table = Self {
            record: record.clone(),
            tasks: tasks.iter().map(|t| (*t).clone()).collect(),
            healthy: Vec::new(),
            names: Map::with_capacity_and_hasher(4 + tasks.len() * 2, Default::default()),
            ptr: Map::with_capacity_and_hasher(1 + tasks.len(), Default::default()),
        };
        let mut service_names = vec![key.to_string()];
        for alias in &record.aliases {
            service_names.push(normalize("service alias", alias, &place)?);
        }
        let mut ports = Vec::new();
        for port in &record.ports {
            let label = normalize("port name", &port.label(), &place)?;
            ports.push((format!("_{label}._{}", port.protocol.as_str()), port.port));
        }

        // Tasks: their own names and PTR always, aliases and backend membership while healthy.
        let mut healthy: Vec<(String, IpAddr)> = Vec::new();
        for task in tasks {
            let full = task.task_name();
            let task_name = normalized("task name", &full, &place)?;
            table.add_ip(&task_name, task.ip, TtlClass::Stable);
            table.add_ptr(task.ip, format!("{task_name}.{net}."));
            if task.healthy {
                for alias in &task.aliases {
                    let alias = normalized("task alias", alias, &place)?;
                    table.add_ip(&alias, task.ip, TtlClass::Tasks);
                }
                if !table.healthy.contains(&task.ip) {
                    table.healthy.push(task.ip);
                }
                healthy.push((task_name.into_owned(), task.ip));
            }
        }

        let vip = match record.endpoint_mode {
            EndpointMode::Vip => record.vip,
            EndpointMode::Dnsrr => None,
        };
        for name in &service_names {
            // tasks.<name>: every healthy task, whatever the endpoint mode.
            let entry = table.entry(&format!("tasks.{name}"), TtlClass::Tasks);
            for (_, ip) in &healthy {
                entry.add_ip(*ip);
            }
            match vip {
                Some(vip) => table.add_ip(name, vip, TtlClass::Stable),
                None => {
                    let entry = table.entry(name, TtlClass::Tasks);
                    for (_, ip) in &healthy {
                        entry.add_ip(*ip);
                    }
                }
            }
        }
        if let Some(vip) = vip {
            table.add_ptr(vip, format!("{key}.{net}."));
        }
        for (prefix, port) in &ports {
            let targets: Vec<SrvTarget> = match vip {
                Some(vip) => vec![SrvTarget { target: format!("{key}.{net}."), port: *port, addrs: vec![vip] }],
                None => healthy
                    .iter()
                    .map(|(task_name, ip)| SrvTarget { target: format!("{task_name}.{net}."), port: *port, addrs: vec![*ip] })
                    .collect(),
            };
            let ttl = if vip.is_some() { TtlClass::Stable } else { TtlClass::Tasks };
            for name in &service_names {
                let entry = table.entry(&format!("{prefix}.{name}"), ttl);
                entry.srv.extend(targets.iter().cloned());
            }
        }
        Ok(table)
    }

    fn entry(&mut self, name: &str, ttl: TtlClass) -> &mut NameEntry {
        if !self.names.contains_key(name) {
            self.names.insert(Arc::from(name), NameEntry::new(ttl));
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
}
