//! Encrypted networks in the desired state: which networks are encrypted, each node's WireGuard
//! public key and tunnel address, and this node's private key.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{DesiredNode, Errors};
use crate::crypt::key::{Key, PrivateKey};

/// How a network's traffic between nodes is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// Inside the node's WireGuard tunnel `shw0`, between tunnel addresses.
    Wireguard,
    /// ESP in transport mode (XFRM) between underlay addresses, on its own VXLAN port
    /// (`crypt::ipsec::plan::VXLAN_PORT`), with per-pair SAs derived from the pair key.
    Ipsec,
}

/// What the other nodes need to reach this one through WireGuard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeWireGuard {
    pub public_key: Key,
    /// The node's address inside the tunnels: encrypted networks' VXLAN runs between these.
    pub address: Ipv4Addr,
    /// The key this node shares with that peer alone (WireGuard's preshared key), mixed into
    /// every handshake between the two: the managers issue one per node pair and rotate it.
    /// Changing it keeps the current session, so the next handshake takes the new key and no
    /// packet is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<PrivateKey>,
}

impl DesiredNode {
    /// Whether any network of the desired state is encrypted (the tunnel is wanted).
    pub fn wants_encryption(&self) -> bool {
        self.networks.iter().any(|n| n.encrypted.is_some())
    }

    /// The desired state without these networks: their endpoints (local and remote) and VIPs go
    /// too, and services published through one of them. What a node applies when it cannot
    /// encrypt: it attaches nothing of an encrypted network rather than carry it in the clear.
    pub fn without_networks(&self, gone: &HashSet<&str>) -> DesiredNode {
        let mut s = self.clone();
        s.networks.retain(|n| !gone.contains(n.name.as_str()));
        let removed: HashSet<String> = s.endpoints.iter().filter(|e| gone.contains(e.network.as_str())).map(|e| e.id.clone()).collect();
        s.endpoints.retain(|e| !removed.contains(&e.id));
        s.services.retain(|svc| svc.ingress_network.as_deref().is_none_or(|n| !gone.contains(n)));
        for svc in &mut s.services {
            svc.vips.retain(|n, _| !gone.contains(n.as_str()));
            svc.backends.retain(|b| !removed.contains(b));
        }
        s
    }

    pub(super) fn validate_wireguard(&self, errs: &mut Errors) {
        let mut addrs: HashMap<Ipv4Addr, &str> = HashMap::new();
        let mut keys: HashMap<Key, &str> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(wg) = &n.wireguard else { continue };
            let at = |f: &str| format!("nodes[{i}].wireguard.{f}");
            let a = wg.address;
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                errs.push(
                    at("address"),
                    format!("{a} cannot be a tunnel address"),
                    "use a unicast address outside the underlay and the networks (e.g. 10.254.0.x)",
                );
            }
            if let Some(other) = addrs.insert(a, &n.name) {
                errs.push(
                    at("address"),
                    format!("{a} is also the tunnel address of node '{other}'"),
                    "give every node its own tunnel address",
                );
            }
            if let Some(m) = self.nodes.iter().find(|m| m.address == a) {
                errs.push(
                    at("address"),
                    format!("{a} is the underlay address of node '{}'", m.name),
                    "pick a tunnel address outside the underlay",
                );
            }
            for net in &self.networks {
                if net.subnet.trunc().contains(&a) {
                    errs.push(
                        at("address"),
                        format!("{a} is inside {} of network '{}'", net.subnet, net.name),
                        "pick a tunnel address outside every network",
                    );
                }
            }
            if let Some(other) = keys.insert(wg.public_key, &n.name) {
                errs.push(at("public_key"), format!("node '{other}' has the same public key"), "give every node its own key pair");
            }
        }
        for (i, net) in self.networks.iter().enumerate() {
            if net.encrypted.is_some() && net.local {
                errs.push(
                    format!("networks[{i}].encrypted"),
                    format!("network '{}' is node-local: nothing of it leaves the node", net.name),
                    "remove `encrypted` or `local`",
                );
            }
        }
        if let Some(net) = self.networks.iter().find(|n| n.encrypted == Some(Encryption::Ipsec)) {
            // IPsec's SAs with every other node are derived from the pair key shared with it.
            for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.name != self.node) {
                if n.wireguard.as_ref().and_then(|w| w.preshared_key.as_ref()).is_none() {
                    errs.push(
                        format!("nodes[{i}].wireguard.preshared_key"),
                        format!("network '{}' is encrypted with IPsec but node '{}' has no pair key with this node", net.name, n.name),
                        "give it the pair key the managers issue (base64, 32 bytes)",
                    );
                }
            }
        }
        // The rest is WireGuard's: this node's identity and the peers' keys.
        if !self.networks.iter().any(|n| n.encrypted == Some(Encryption::Wireguard)) {
            return;
        }
        let me = self.nodes.iter().position(|n| n.name == self.node);
        match (me.map(|i| (i, &self.nodes[i].wireguard)), &self.wireguard_private_key) {
            (Some((i, None)), _) => errs.push(
                format!("nodes[{i}].wireguard"),
                format!("this node ('{}') has no WireGuard public key and tunnel address, and a network is encrypted", self.node),
                "give the node `wireguard: {public_key, address}`",
            ),
            (Some(_), None) => errs.push(
                "wireguard_private_key",
                "a network is encrypted but this node's private key is missing",
                "set it (base64, as `shoal dataplane wg-key` or `wg genkey` prints)",
            ),
            (Some((i, Some(wg))), Some(private)) if private.public_key() != wg.public_key => errs.push(
                format!("nodes[{i}].wireguard.public_key"),
                "is not the public key of `wireguard_private_key`",
                "use the public key derived from this node's private key",
            ),
            _ => {}
        }
        let encrypted: HashSet<&str> = self.networks.iter().filter(|n| n.encrypted.is_some()).map(|n| n.name.as_str()).collect();
        for (i, ep) in self.endpoints.iter().enumerate() {
            if !encrypted.contains(ep.network.as_str()) {
                continue;
            }
            if let Some(n) = self.nodes.iter().find(|n| n.name == ep.node && n.wireguard.is_none()) {
                errs.push(
                    format!("endpoints[{i}].node"),
                    format!("network '{}' is encrypted but node '{}' has no WireGuard key", ep.network, n.name),
                    "give that node `wireguard: {public_key, address}`",
                );
            }
        }
    }
}
