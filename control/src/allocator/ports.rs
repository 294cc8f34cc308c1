//! Published ports of the routing mesh: explicit ones are checked for conflicts, missing ones
//! are picked from 30000-32767 like Swarm does.

use crate::model::{PortConfig, Protocol, PublishMode};
use crate::state::StateError;
use std::collections::BTreeMap;

pub const AUTO_FIRST: u16 = 30000;
pub const AUTO_LAST: u16 = 32767;

/// Ingress ports in use: (protocol, port) -> service name.
pub type UsedPorts = BTreeMap<(Protocol, u16), String>;

/// Fill in the published ports of a service's ingress ports. Host-mode ports are left as they
/// are (the scheduler keeps them apart per node). Errors name the field.
pub fn plan_ports(ports: &[PortConfig], used: &UsedPorts, service: &str) -> Result<Vec<PortConfig>, StateError> {
    let mut out = Vec::with_capacity(ports.len());
    let mut mine: UsedPorts = BTreeMap::new();
    // Explicit ports first, so automatic ones never take a port asked for later in the list.
    for (i, p) in ports.iter().enumerate() {
        if p.mode != PublishMode::Ingress {
            continue;
        }
        if let Some(published) = p.published {
            let port = published as u16;
            if let Some(owner) = used.get(&(p.protocol, port)) {
                if owner != service {
                    return Err(StateError::Conflict(format!(
                        "ports[{i}].published: port {port}/{} is already published by service {owner}: choose another port or leave it out to get one from {AUTO_FIRST}-{AUTO_LAST}",
                        p.protocol.as_str()
                    )));
                }
            }
            if mine.insert((p.protocol, port), service.to_string()).is_some() {
                return Err(StateError::invalid(
                    format!("ports[{i}].published"),
                    format!("port {port}/{} is published twice in this service", p.protocol.as_str()),
                ));
            }
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let mut p = p.clone();
        if p.mode == PublishMode::Ingress && p.published.is_none() {
            let free =
                (AUTO_FIRST..=AUTO_LAST).find(|port| !used.contains_key(&(p.protocol, *port)) && !mine.contains_key(&(p.protocol, *port)));
            let Some(port) = free else {
                return Err(StateError::Exhausted(format!(
                    "ports[{i}]: no free port left in {AUTO_FIRST}-{AUTO_LAST}: publish an explicit port"
                )));
            };
            mine.insert((p.protocol, port), service.to_string());
            p.published = Some(i64::from(port));
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(target: i64, published: Option<i64>) -> PortConfig {
        PortConfig { protocol: Protocol::Tcp, target, published, mode: PublishMode::Ingress }
    }

    #[test]
    fn automatic_ports_come_from_30000() {
        let out = plan_ports(&[port(80, None), port(443, None)], &UsedPorts::new(), "web").unwrap();
        assert_eq!(out[0].published, Some(30000));
        assert_eq!(out[1].published, Some(30001));
    }

    #[test]
    fn automatic_skips_explicit_later_in_list() {
        let out = plan_ports(&[port(80, None), port(443, Some(30000))], &UsedPorts::new(), "web").unwrap();
        assert_eq!(out[0].published, Some(30001));
        assert_eq!(out[1].published, Some(30000));
    }

    #[test]
    fn conflict_names_the_owner() {
        let mut used = UsedPorts::new();
        used.insert((Protocol::Tcp, 8080), "api".into());
        let err = plan_ports(&[port(80, Some(8080))], &used, "web").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("8080/tcp") && msg.contains("api") && msg.contains("ports[0].published"), "{msg}");
    }

    #[test]
    fn same_port_other_protocol_is_fine() {
        let mut used = UsedPorts::new();
        used.insert((Protocol::Tcp, 53), "dns".into());
        let mut p = port(53, Some(53));
        p.protocol = Protocol::Udp;
        assert!(plan_ports(&[p], &used, "web").is_ok());
    }

    #[test]
    fn duplicate_in_one_spec() {
        assert!(plan_ports(&[port(80, Some(8080)), port(81, Some(8080))], &UsedPorts::new(), "web").is_err());
    }

    #[test]
    fn own_ports_are_not_a_conflict_on_update() {
        let mut used = UsedPorts::new();
        used.insert((Protocol::Tcp, 8080), "web".into());
        assert!(plan_ports(&[port(80, Some(8080))], &used, "web").is_ok());
    }

    #[test]
    fn exhausted_range() {
        let used: UsedPorts = (AUTO_FIRST..=AUTO_LAST).map(|p| ((Protocol::Tcp, p), "x".to_string())).collect();
        assert!(matches!(plan_ports(&[port(80, None)], &used, "web"), Err(StateError::Exhausted(_))));
    }
}
