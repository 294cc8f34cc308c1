use std::fmt;

use serde::{Deserialize, Serialize};

/// The transport protocol of a service port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The lowercase name (`tcp`), as users write it and as SRV labels carry it (`_tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service is reached (Docker's `--endpoint-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP per network, load-balanced by every node; `<svc>` answers the VIP.
    #[default]
    Vip,
    /// No VIP: `<svc>` answers the healthy task addresses (DNS round robin), and only
    /// `mode: host` ports can be published.
    Dnsrr,
}

/// How a published port is offered (Docker's `mode=ingress|host`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// The routing mesh: every node answers and forwards to any task (DNAT + SNAT).
    #[default]
    Ingress,
    /// Only nodes running a task answer, straight to their local task: no SNAT, the client
    /// address is kept.
    Host,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These strings are in Raft logs and snapshots on disk and in desired data plane files:
    /// each variant's JSON must stay what it was when the enums were declared in each crate.
    #[test]
    fn the_json_of_every_variant_is_unchanged() {
        assert_eq!(json(Protocol::Tcp), "\"tcp\"");
        assert_eq!(json(Protocol::Udp), "\"udp\"");
        assert_eq!(json(Protocol::Sctp), "\"sctp\"");
        assert_eq!(json(EndpointMode::Vip), "\"vip\"");
        assert_eq!(json(EndpointMode::Dnsrr), "\"dnsrr\"");
        assert_eq!(json(PublishMode::Ingress), "\"ingress\"");
        assert_eq!(json(PublishMode::Host), "\"host\"");
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(serde_json::from_str::<Protocol>(&format!("\"{p}\"")).unwrap(), p);
            assert_eq!(p.to_string(), p.as_str());
        }
        for m in [EndpointMode::Vip, EndpointMode::Dnsrr] {
            assert_eq!(serde_json::from_str::<EndpointMode>(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        }
        for m in [PublishMode::Ingress, PublishMode::Host] {
            assert_eq!(serde_json::from_str::<PublishMode>(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        }
        assert!(serde_json::from_str::<Protocol>("\"TCP\"").is_err(), "names are lowercase only");
    }

    #[test]
    fn defaults_are_what_an_absent_field_meant() {
        assert_eq!(Protocol::default(), Protocol::Tcp);
        assert_eq!(EndpointMode::default(), EndpointMode::Vip);
        assert_eq!(PublishMode::default(), PublishMode::Ingress);
    }

    fn json(v: impl Serialize) -> String {
        serde_json::to_string(&v).unwrap()
    }
}
