//! Services in the desired state: VIPs per network, ports (published or VIP-only), backends. The
//! load balancers read these; the overlay reads only the VIPs (they are addresses on the bridge).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{is_host_of, valid_name, DesiredNode, Endpoint, Errors};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// The service's virtual IP on each network it is attached to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vips: BTreeMap<String, Ipv4Addr>,
    /// `vip` (default): one virtual IP per network, load-balanced by the node. `dnsrr`: no VIP,
    /// DNS answers with the task addresses (only `mode: host` ports can be published).
    #[serde(default, skip_serializing_if = "is_default")]
    pub endpoint_mode: EndpointMode,
    /// Ports of the service. Each `target` is served on every VIP; a `published` port is also
    /// served on the node's underlay address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    /// Endpoint ids (from `endpoints`) of the service's tasks. Unhealthy ones get no new flows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// The network published ports reach the tasks on. Defaults to the one network of the
    /// backends; required when backends are on several networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_network: Option<String>,
}

/// Declared once for control, the data plane and the DNS (`shoal-types`), with the serde names
/// this module used. The balancers carry TCP and UDP: an SCTP port is refused by validation.
pub use shoal_types::{EndpointMode, Protocol, PublishMode};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The port the tasks listen on (also the port served on the VIPs).
    pub target: u16,
    /// The port every node (ingress) or every node with a task (host) answers on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: PublishMode,
    /// Ingress only: when this node runs a task of the service, new flows go to a local task
    /// without SNAT, so the task sees the client's address.
    #[serde(default, skip_serializing_if = "is_default")]
    pub keep_client_ip: bool,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl DesiredNode {
    /// VIPs that live on network `network`'s bridge on this node.
    pub fn service_vips(&self, network: &str) -> Vec<Ipv4Addr> {
        self.services.iter().filter_map(|s| s.vips.get(network).copied()).collect()
    }

    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    /// The network published ports of `svc` reach its tasks on (None: no backend says).
    pub fn ingress_network<'a>(&'a self, svc: &'a Service) -> Option<&'a str> {
        if let Some(n) = &svc.ingress_network {
            return Some(n);
        }
        let nets: BTreeSet<&str> = svc.backends.iter().filter_map(|id| self.endpoint(id)).map(|e| e.network.as_str()).collect();
        match (nets.len(), svc.vips.len()) {
            (1, _) => nets.into_iter().next(),
            (0, 1) => svc.vips.keys().next().map(String::as_str),
            _ => None,
        }
    }

    pub(super) fn validate_services(&self, errs: &mut Errors) {
        let mut names = HashSet::new();
        let mut vips: HashMap<(&str, Ipv4Addr), &str> = HashMap::new();
        let mut published: HashMap<(u16, Protocol), &str> = HashMap::new();
        let endpoint_ips: HashSet<(&str, Ipv4Addr)> = self.endpoints.iter().map(|e| (e.network.as_str(), e.ip)).collect();
        for (i, svc) in self.services.iter().enumerate() {
            let at = |f: &str| format!("services[{i}].{f}");
            if !valid_name(&svc.name) {
                errs.push(at("name"), format!("'{}' is not a valid service name", svc.name), "use 1-64 characters of [A-Za-z0-9_.-]");
            }
            if !names.insert(&svc.name) {
                errs.push(at("name"), format!("service '{}' is defined twice", svc.name), "define each service once");
            }
            if svc.endpoint_mode == EndpointMode::Dnsrr && !svc.vips.is_empty() {
                errs.push(at("vips"), "a dnsrr service has no VIP", "remove `vips` or use endpoint_mode vip");
            }
            for (net_name, vip) in &svc.vips {
                let f = at(&format!("vips.{net_name}"));
                let Some(net) = self.network(net_name) else {
                    errs.push(&f, format!("network '{net_name}' is unknown"), "add it to `networks` or fix the VIP's network");
                    continue;
                };
                if !is_host_of(net.subnet.trunc(), *vip) || *vip == net.gateway() || net.lb_addresses.values().any(|a| a == vip) {
                    errs.push(
                        &f,
                        format!("{vip} is not a free host address of {}", net.subnet),
                        "pick an address of the subnet that is not the gateway or a node's LB address",
                    );
                } else if endpoint_ips.contains(&(net_name.as_str(), *vip)) {
                    errs.push(&f, format!("{vip} is also an endpoint's address on network '{net_name}'"), "give the VIP its own address");
                }
                if let Some(other) = vips.insert((net_name.as_str(), *vip), &svc.name) {
                    errs.push(&f, format!("{vip} is also the VIP of service '{other}'"), "give every service its own VIP");
                }
                if !net.lb_addresses.contains_key(&self.node) {
                    errs.push(
                        format!("networks[{}].lb_addresses.{}", self.network_index(net_name), self.node),
                        format!(
                            "service '{}' has a VIP on network '{net_name}' but node '{}' has no LB address there",
                            svc.name, self.node
                        ),
                        "give this node an LB address on the network",
                    );
                }
            }
            self.validate_ports(i, svc, &mut published, errs);
            self.validate_backends(i, svc, errs);
        }
    }

    fn network_index(&self, name: &str) -> usize {
        self.networks.iter().position(|n| n.name == name).unwrap_or(0)
    }

    fn validate_ports<'a>(&'a self, i: usize, svc: &'a Service, published: &mut HashMap<(u16, Protocol), &'a str>, errs: &mut Errors) {
        let mut targets = HashSet::new();
        for (j, p) in svc.ports.iter().enumerate() {
            let at = |f: &str| format!("services[{i}].ports[{j}].{f}");
            if p.protocol == Protocol::Sctp {
                errs.push(at("protocol"), "the load balancers carry tcp and udp only", "use tcp or udp, or leave the port out");
            }
            if p.target == 0 {
                errs.push(at("target"), "port 0 is not a port", "use the port the tasks listen on (1-65535)");
            } else if !targets.insert((p.target, p.protocol)) {
                errs.push(at("target"), format!("{}/{} is listed twice", p.target, p.protocol), "list each target port once per protocol");
            }
            match p.published {
                Some(0) => errs.push(at("published"), "port 0 is not a port", "use 1-65535, or leave it unset for a VIP-only port"),
                Some(port) => {
                    if let Some(other) = published.insert((port, p.protocol), &svc.name) {
                        errs.push(
                            at("published"),
                            format!("{port}/{} is already published by service '{other}'", p.protocol),
                            "publish each port and protocol once per cluster",
                        );
                    }
                }
                None => {
                    if p.mode == PublishMode::Host {
                        errs.push(at("mode"), "mode host needs a published port", "set `published` or remove `mode`");
                    }
                    if p.keep_client_ip {
                        errs.push(
                            at("keep_client_ip"),
                            "only published ports keep the client address",
                            "set `published` or remove `keep_client_ip`",
                        );
                    }
                }
            }
            if p.published.is_some_and(|port| port != 0) && p.mode == PublishMode::Ingress {
                if svc.endpoint_mode == EndpointMode::Dnsrr {
                    errs.push(at("mode"), "a dnsrr service cannot publish through the routing mesh", "use mode host or endpoint_mode vip");
                }
                if let Some(net) = self.ingress_network(svc).and_then(|n| self.network(n)) {
                    if !net.lb_addresses.contains_key(&self.node) {
                        errs.push(
                            format!("networks[{}].lb_addresses.{}", self.network_index(&net.name), self.node),
                            format!(
                                "service '{}' publishes {} through network '{}' but node '{}' has no LB address there",
                                svc.name,
                                p.published.unwrap_or(0),
                                net.name,
                                self.node
                            ),
                            "give this node an LB address on the network (the source of mesh traffic)",
                        );
                    }
                }
            }
        }
    }

    fn validate_backends(&self, i: usize, svc: &Service, errs: &mut Errors) {
        let mut seen = HashSet::new();
        let mut nets = BTreeSet::new();
        for (j, id) in svc.backends.iter().enumerate() {
            let f = format!("services[{i}].backends[{j}]");
            if !seen.insert(id) {
                errs.push(&f, format!("endpoint '{id}' is listed twice"), "list each backend once");
            }
            let Some(ep) = self.endpoint(id) else {
                errs.push(&f, format!("endpoint '{id}' is not in `endpoints`"), "add the endpoint or remove it from the backends");
                continue;
            };
            nets.insert(ep.network.as_str());
            if ep.weight == 0 {
                errs.push(
                    &f,
                    format!("endpoint '{id}' has weight 0"),
                    "use a weight of 1 or more, or mark the endpoint unhealthy to drain it",
                );
            }
            if svc.endpoint_mode == EndpointMode::Vip && !svc.vips.is_empty() && !svc.vips.contains_key(&ep.network) {
                errs.push(
                    &f,
                    format!("endpoint '{id}' is on network '{}', where service '{}' has no VIP", ep.network, svc.name),
                    "attach the service to that network (`vips`) or pick an endpoint on one of its networks",
                );
            }
        }
        let publishes = svc.ports.iter().any(|p| p.published.is_some());
        match &svc.ingress_network {
            Some(n) if self.network(n).is_none() => {
                errs.push(format!("services[{i}].ingress_network"), format!("network '{n}' is unknown"), "name one of `networks`");
            }
            None if publishes && nets.len() > 1 => {
                errs.push(
                    format!("services[{i}].ingress_network"),
                    format!("backends are on {} networks", nets.len()),
                    "set ingress_network to the network published ports should use",
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(services: serde_json::Value) -> DesiredNode {
        let mut v = serde_json::json!({
            "node": "a",
            "nodes": [{"name": "a", "address": "192.168.33.10"}, {"name": "b", "address": "192.168.33.20"}],
            "networks": [
                {"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24", "lb_addresses": {"a": "10.0.9.250", "b": "10.0.9.249"}},
                {"name": "front", "vni": 4098, "subnet": "10.0.10.0/24"},
            ],
            "endpoints": [
                {"id": "web.1", "network": "backend", "node": "a", "ip": "10.0.9.2", "netns": "t1"},
                {"id": "web.2", "network": "backend", "node": "b", "ip": "10.0.9.3", "healthy": false},
                {"id": "f.1", "network": "front", "node": "b", "ip": "10.0.10.3"},
            ],
        });
        v["services"] = services;
        serde_json::from_value(v).unwrap()
    }

    fn fields(s: &DesiredNode) -> Vec<String> {
        match s.validate() {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|f| format!("{}: {}", f.field, f.problem)).collect(),
        }
    }

    #[test]
    fn a_full_service_is_valid_and_round_trips() {
        let s = state(serde_json::json!([{
            "name": "web", "vips": {"backend": "10.0.9.100"},
            "ports": [{"target": 80, "published": 5000}, {"target": 53, "published": 5353, "protocol": "udp", "mode": "host"},
                      {"target": 81, "published": 5001, "keep_client_ip": true}, {"target": 9000}],
            "backends": ["web.1", "web.2"],
        }]));
        assert_eq!(fields(&s), Vec::<String>::new());
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(DesiredNode::from_json(&text).unwrap(), s);
        assert!(!text.contains("endpoint_mode") && !text.contains("\"mode\":\"ingress\""), "defaults are not written: {text}");
        assert!(text.contains("\"healthy\":false") && !text.contains("\"weight\""), "{text}");
        assert_eq!(s.service_vips("backend"), vec!["10.0.9.100".parse::<Ipv4Addr>().unwrap()]);
    }

    #[test]
    fn every_mistake_names_its_field() {
        let s = state(serde_json::json!([
            {"name": "web", "vips": {"backend": "10.0.9.1", "nope": "10.9.9.9"},
             "ports": [{"target": 0}, {"target": 80, "published": 5000}, {"target": 81, "mode": "host"}, {"target": 82, "keep_client_ip": true}],
             "backends": ["web.1", "web.1", "ghost", "f.1"]},
            {"name": "web", "endpoint_mode": "dnsrr", "vips": {"backend": "10.0.9.2"},
             "ports": [{"target": 80, "published": 5000}, {"target": 80, "published": 0}]},
            {"name": "front", "vips": {"front": "10.0.10.100"}, "backends": ["f.1"]},
        ]));
        let got = fields(&s);
        let want = [
            "services[0].vips.backend: 10.0.9.1 is not a free host address",
            "services[0].vips.nope: network 'nope' is unknown",
            "services[0].ports[0].target: port 0",
            "services[0].ports[2].mode: mode host needs a published port",
            "services[0].ports[3].keep_client_ip",
            "services[0].backends[1]: endpoint 'web.1' is listed twice",
            "services[0].backends[2]: endpoint 'ghost' is not in `endpoints`",
            "services[0].backends[3]: endpoint 'f.1' is on network 'front'",
            "services[0].ingress_network: backends are on 2 networks",
            "services[1].name: service 'web' is defined twice",
            "services[1].vips: a dnsrr service has no VIP",
            "services[1].vips.backend: 10.0.9.2 is also an endpoint's address",
            "services[1].ports[0].published: 5000/tcp is already published by service 'web'",
            "services[1].ports[0].mode: a dnsrr service cannot publish",
            "services[1].ports[1].target: 80/tcp is listed twice",
            "services[1].ports[1].published: port 0",
            "networks[1].lb_addresses.a: service 'front' has a VIP on network 'front'",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "missing `{w}` in:\n{}", got.join("\n"));
        }
        assert_eq!(got.len(), want.len(), "unexpected errors:\n{}", got.join("\n"));
    }

    /// The shared Protocol has SCTP (control accepts it in a spec); the balancers do not carry
    /// it, so the desired state refuses such a port by name instead of planning it.
    #[test]
    fn an_sctp_port_is_refused_with_its_field_named() {
        let s = state(serde_json::json!([
            {"name": "web", "vips": {"backend": "10.0.9.100"}, "ports": [{"target": 80, "protocol": "sctp", "published": 5000}]},
        ]));
        let got = fields(&s);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("services[0].ports[0].protocol: the load balancers carry tcp and udp only"), "{got:?}");
        // The planner, handed such a state anyway, leaves the port out rather than failing.
        assert!(crate::lb::plan::desired(&s).published.is_empty());
    }

    #[test]
    fn ingress_network_defaults_to_the_backends_network() {
        let s = state(serde_json::json!([{"name": "web", "vips": {"backend": "10.0.9.100"}, "backends": ["web.1", "web.2"]}]));
        assert_eq!(s.ingress_network(&s.services[0]), Some("backend"));
        let s = state(serde_json::json!([{"name": "web", "vips": {"backend": "10.0.9.100"}}]));
        assert_eq!(s.ingress_network(&s.services[0]), Some("backend"));
    }
}
