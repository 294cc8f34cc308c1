//! Finding objects by id, unique id prefix or name, like the Docker CLI does.

use super::{ClusterState, StateError};
use crate::model::{Network, Node, Secret, Service};
use std::collections::BTreeMap;

fn find<'a, K: std::borrow::Borrow<str> + Ord, T>(
    map: &'a BTreeMap<K, T>,
    kind: &str,
    key: &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<&'a T, StateError> {
    if let Some(v) = map.get(key) {
        return Ok(v);
    }
    if let Some(v) = map.values().find(|v| name_of(v) == key) {
        return Ok(v);
    }
    let mut by_prefix = map.iter().filter(|(id, _)| !key.is_empty() && (*id).borrow().starts_with(key));
    match (by_prefix.next(), by_prefix.next()) {
        (Some((_, v)), None) => Ok(v),
        (Some(_), Some(_)) => Err(StateError::Conflict(format!("{kind} {key:?} is ambiguous: give more of the id"))),
        _ => Err(StateError::not_found(kind, key)),
    }
}

impl ClusterState {
    pub fn find_node(&self, key: &str) -> Result<&Node, StateError> {
        find(&self.nodes, "node", key, |n| &n.hostname)
    }

    pub fn find_network(&self, key: &str) -> Result<&Network, StateError> {
        find(&self.networks, "network", key, |n| &n.spec.name)
    }

    pub fn find_service(&self, key: &str) -> Result<&Service, StateError> {
        find(&self.services, "service", key, |s| &s.spec.name)
    }

    pub fn find_config(&self, key: &str) -> Result<&crate::model::Config, StateError> {
        find(&self.configs, "config", key, |s| &s.spec.name)
    }

    pub fn find_secret(&self, key: &str) -> Result<&Secret, StateError> {
        find(&self.secrets, "secret", key, |s| &s.spec.name)
    }

    pub fn ingress_network(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.spec.ingress)
    }
}
