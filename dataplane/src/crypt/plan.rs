//! The pure half of encryption: the tunnel a node wants (from the desired state), the difference
//! from what its WireGuard device holds, the tunnel link's addresses and routes, and the
//! fail-closed nftables table. No I/O here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::ipsec::plan::VXLAN_PORT as IPSEC_VXLAN_PORT;
use super::key::{Key, PrivateKey};
use crate::state::{DesiredNode, Encryption, VXLAN_PORT};

/// The tunnel device, one per node whatever the number of encrypted networks.
pub const DEVICE: &str = "shw0";
pub const DEVICE_ALIAS: &str = "shoal wireguard";
/// WireGuard's UDP port on every node's underlay address (not VXLAN's 4789 nor gossip's 7946).
pub const PORT: u16 = 51820;
/// What WireGuard adds to a packet on an IPv4 underlay: outer IPv4 (20) + UDP (8) + the data
/// message header (type 4, receiver index 4, counter 8 = 16) + the Poly1305 tag (16). WireGuard
/// also pads the plaintext to 16 bytes but never past the device MTU, so a tunnel MTU of
/// `underlay - 60` always fits.
pub const WG_OVERHEAD: u32 = 60;
/// nftables table that keeps encrypted networks' VXLAN off the underlay.
pub const TABLE: &str = "shoal_crypt";

/// The tunnel this node wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub private_key: PrivateKey,
    pub port: u16,
    /// This node's tunnel address (/32 on the device).
    pub address: Ipv4Addr,
    pub peers: BTreeMap<Key, Peer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    pub endpoint: SocketAddrV4,
    /// The peer's tunnel address: its only allowed IP (/32).
    pub address: Ipv4Addr,
    /// The key shared with this peer alone (none: no preshared key).
    pub psk: Option<PrivateKey>,
}

/// The tunnel `state` asks for: None when no network is encrypted. Expects a validated state.
pub fn desired(state: &DesiredNode) -> Option<Tunnel> {
    if !state.networks.iter().any(|n| n.encrypted == Some(Encryption::Wireguard)) {
        return None;
    }
    let me = state.self_node()?;
    let address = me.wireguard.as_ref()?.address;
    let private_key = state.wireguard_private_key.clone()?;
    let peers = state
        .nodes
        .iter()
        .filter(|n| n.name != state.node)
        .filter_map(|n| {
            let wg = n.wireguard.as_ref()?;
            let peer = Peer {
                node: n.name.clone(),
                endpoint: SocketAddrV4::new(n.address, PORT),
                address: wg.address,
                psk: wg.preshared_key.clone(),
            };
            Some((wg.public_key, peer))
        })
        .collect();
    Some(Tunnel { private_key, port: PORT, address, peers })
}

/// The WireGuard configuration a device holds (read over generic netlink or the configuration
/// protocol).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: Option<PrivateKey>,
    pub port: u16,
    pub peers: BTreeMap<Key, ObservedPeer>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPeer {
    pub endpoint: Option<SocketAddrV4>,
    pub allowed_ips: BTreeSet<(Ipv4Addr, u8)>,
    /// None when unset (the device reads it back as zeros).
    pub psk: Option<PrivateKey>,
}

/// One change to the device's WireGuard configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WgOp {
    SetPrivateKey(PrivateKey),
    SetPort(u16),
    /// Add the peer, or make it exactly this (its allowed IPs replaced).
    SetPeer {
        key: Key,
        node: String,
        endpoint: SocketAddrV4,
        address: Ipv4Addr,
        /// Set as given; `None` clears it.
        psk: Option<PrivateKey>,
    },
    RemovePeer {
        key: Key,
    },
}

impl fmt::Display for WgOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WgOp::SetPrivateKey(k) => write!(f, "wireguard {DEVICE}: set private key (public key {})", k.public_key()),
            WgOp::SetPort(p) => write!(f, "wireguard {DEVICE}: listen port {p}"),
            WgOp::SetPeer { key, node, endpoint, address, psk } => {
                let psk = if psk.is_some() { " preshared-key (secret)" } else { "" };
                write!(f, "wireguard {DEVICE}: peer {node} {key} endpoint {endpoint} allowed-ips {address}/32{psk}")
            }
            WgOp::RemovePeer { key } => write!(f, "wireguard {DEVICE}: remove peer {key}"),
        }
    }
}

/// The changes that bring the device from `have` to `want`; empty when they agree.
pub fn plan_device(want: &Tunnel, have: &DeviceConfig) -> Vec<WgOp> {
    let mut ops = Vec::new();
    if have.private_key.as_ref() != Some(&want.private_key) {
        ops.push(WgOp::SetPrivateKey(want.private_key.clone()));
    }
    if have.port != want.port {
        ops.push(WgOp::SetPort(want.port));
    }
    for key in have.peers.keys().filter(|k| !want.peers.contains_key(*k)) {
        ops.push(WgOp::RemovePeer { key: *key });
    }
    for (key, p) in &want.peers {
        let ok = have
            .peers
            .get(key)
            .is_some_and(|h| h.endpoint == Some(p.endpoint) && h.allowed_ips == BTreeSet::from([(p.address, 32)]) && h.psk == p.psk);
        if !ok {
            ops.push(WgOp::SetPeer { key: *key, node: p.node.clone(), endpoint: p.endpoint, address: p.address, psk: p.psk.clone() });
        }
    }
    ops
}

/// The tunnel link as the kernel shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkObserved {
    pub mtu: u32,
    pub up: bool,
    pub addrs: BTreeSet<(Ipv4Addr, u8)>,
    /// Destinations (/32) of shoal's routes through the device.
    pub routes: BTreeSet<Ipv4Addr>,
}

/// One change to the tunnel link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    SetMtu(u32),
    SetUp,
    AddAddr(Ipv4Addr),
    DelAddr(Ipv4Addr, u8),
    /// A peer's tunnel address through the device, from ours.
    AddRoute {
        dst: Ipv4Addr,
        src: Ipv4Addr,
    },
    DelRoute(Ipv4Addr),
}

impl fmt::Display for LinkOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkOp::SetMtu(m) => write!(f, "set {DEVICE} mtu {m}"),
            LinkOp::SetUp => write!(f, "set {DEVICE} up"),
            LinkOp::AddAddr(a) => write!(f, "add address {a}/32 dev {DEVICE}"),
            LinkOp::DelAddr(a, p) => write!(f, "delete address {a}/{p} dev {DEVICE}"),
            LinkOp::AddRoute { dst, src } => write!(f, "add route {dst}/32 dev {DEVICE} src {src}"),
            LinkOp::DelRoute(d) => write!(f, "delete route {d}/32 dev {DEVICE}"),
        }
    }
}

pub fn plan_link(want: &Tunnel, mtu: u32, have: &LinkObserved) -> Vec<LinkOp> {
    let mut ops = Vec::new();
    if have.mtu != mtu {
        ops.push(LinkOp::SetMtu(mtu));
    }
    for (a, p) in &have.addrs {
        if (*a, *p) != (want.address, 32) {
            ops.push(LinkOp::DelAddr(*a, *p));
        }
    }
    if !have.addrs.contains(&(want.address, 32)) {
        ops.push(LinkOp::AddAddr(want.address));
    }
    if !have.up {
        ops.push(LinkOp::SetUp);
    }
    let routes: BTreeSet<Ipv4Addr> = want.peers.values().map(|p| p.address).collect();
    for d in have.routes.difference(&routes) {
        ops.push(LinkOp::DelRoute(*d));
    }
    // A fresh address (or a link that just came up) loses nothing: routes are added after it.
    for d in routes.difference(&have.routes) {
        ops.push(LinkOp::AddRoute { dst: *d, src: want.address });
    }
    ops
}

/// What the fail-closed table must hold: the WireGuard-encrypted VNIs and this node's tunnel
/// address, and the IPsec-encrypted VNIs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailClosed {
    pub vnis: BTreeSet<u32>,
    pub address: Option<Ipv4Addr>,
    pub ipsec_vnis: BTreeSet<u32>,
}

impl FailClosed {
    pub fn from_state(state: &DesiredNode) -> Self {
        let with = |e: Encryption| state.networks.iter().filter(|n| n.encrypted == Some(e)).map(|n| n.vni).collect();
        let vnis: BTreeSet<u32> = with(Encryption::Wireguard);
        Self {
            address: (!vnis.is_empty()).then(|| state.self_node().and_then(|n| n.wireguard.as_ref()).map(|w| w.address)).flatten(),
            vnis,
            ipsec_vnis: with(Encryption::Ipsec),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.vnis.is_empty() && self.ipsec_vnis.is_empty()
    }

    /// The comment on the table's first rule: the table is current when it carries this.
    pub fn tag(&self) -> String {
        let list = |v: &BTreeSet<u32>| v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
        let addr = self.address.map(|a| a.to_string()).unwrap_or_default();
        let tag = format!("shoal crypt v1 vni={} addr={addr}", list(&self.vnis));
        if self.ipsec_vnis.is_empty() {
            tag
        } else {
            format!("{tag} ipsec={}", list(&self.ipsec_vnis))
        }
    }
}

/// The `nft -f` script that replaces the table with `want` (or removes it when empty), in one
/// transaction. The VNI sits 24 bits into the VXLAN header, after the 8-byte UDP header:
/// transport-header bits 96..120.
pub fn nft_script(want: &FailClosed) -> String {
    let mut s = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
    if want.is_empty() {
        return s;
    }
    let tag = want.tag();
    s.push_str(&format!("table ip {TABLE} {{\n\tchain input {{\n\t\ttype filter hook input priority -300; policy accept;\n"));
    let mut first = true;
    let mut comment = || if std::mem::take(&mut first) { format!(" comment \"{tag}\"") } else { String::new() };
    for vni in &want.vnis {
        // Plaintext VXLAN of an encrypted network that did not come out of the tunnel.
        s.push_str(&format!("\t\tiifname != \"{DEVICE}\" udp dport {VXLAN_PORT} @th,96,24 {vni} drop{}\n", comment()));
    }
    // IPsec networks' VXLAN never travels on 4789, and on its own port only out of ESP.
    for vni in &want.ipsec_vnis {
        s.push_str(&format!("\t\tudp dport {VXLAN_PORT} @th,96,24 {vni} drop{}\n", comment()));
    }
    if !want.ipsec_vnis.is_empty() {
        s.push_str(&format!("\t\tudp dport {IPSEC_VXLAN_PORT} meta ipsec missing drop{}\n", comment()));
    }
    if let Some(a) = want.address {
        s.push_str(&format!("\t\tiifname != {{ \"{DEVICE}\", \"lo\" }} ip daddr {a} drop\n"));
    }
    s.push_str("\t}\n\tchain output {\n\t\ttype filter hook output priority -300; policy accept;\n");
    for vni in &want.vnis {
        s.push_str(&format!("\t\toifname != \"{DEVICE}\" udp dport {VXLAN_PORT} @th,96,24 {vni} drop\n"));
    }
    for vni in &want.ipsec_vnis {
        s.push_str(&format!("\t\tudp dport {VXLAN_PORT} @th,96,24 {vni} drop\n"));
    }
    if !want.ipsec_vnis.is_empty() {
        // The XFRM policy already holds back what has no SA; this holds back what has no policy.
        s.push_str(&format!("\t\toifname != \"lo\" udp dport {IPSEC_VXLAN_PORT} rt ipsec missing drop\n"));
    }
    if let Some(a) = want.address {
        // Whatever leaves from the tunnel address leaves through the tunnel, or not at all (a
        // tunnel that is down must not turn into a route through the underlay).
        s.push_str(&format!("\t\toifname != {{ \"{DEVICE}\", \"lo\" }} ip saddr {a} drop\n"));
    }
    s.push_str("\t}\n}\n");
    s
}
