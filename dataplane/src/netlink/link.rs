//! Links: bridges, VXLAN devices, veth pairs; their MTU, master, state, MAC and alias.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Mac, Netlink, NetlinkError};

/// What the data plane needs to know about an existing link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    pub up: bool,
    pub master: Option<u32>,
    pub mac: Option<Mac>,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Vxlan(VxlanInfo),
    Veth,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
    pub proxy: bool,
}

/// How to make a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub underlay_index: Option<u32>,
    pub mtu: u32,
    pub alias: String,
}

impl Netlink {
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), "list links")?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    pub fn add_bridge(&mut self, name: &str, mtu: u32, mac: Option<Mac>, alias: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            // STP off and no forward delay: ports forward as soon as they come up.
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::StpState(BridgeStpState::Disabled), InfoBridge::ForwardDelay(0)])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, || format!("add bridge {name}"))?;
        self.set_alias(name, alias)
    }

    pub fn add_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        let mut data = vec![
            InfoVxlan::Id(spec.vni),
            InfoVxlan::Local(spec.local),
            InfoVxlan::Port(spec.port),
            // Endpoints are programmed from the control plane: no learning, and the device answers
            // ARP for remote endpoints from its neighbour table instead of flooding.
            InfoVxlan::Learning(false),
            InfoVxlan::Proxy(true),
            InfoVxlan::L2Miss(false),
            InfoVxlan::L3Miss(false),
            InfoVxlan::Ttl(64),
        ];
        if let Some(index) = spec.underlay_index {
            data.push(InfoVxlan::Link(index));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(spec.name.clone()));
        msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Vxlan), LinkInfo::Data(InfoData::Vxlan(data))]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, || {
            format!("add vxlan {} (vni {}, local {})", spec.name, spec.vni, spec.local)
        })?;
        self.set_alias(&spec.name, &spec.alias)
    }

    /// Makes a kernel WireGuard device (configured afterwards over the "wireguard" generic
    /// netlink family).
    pub fn add_wireguard(&mut self, name: &str, mtu: u32, alias: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Wireguard)]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, || format!("add wireguard {name}"))?;
        self.set_alias(name, alias)
    }

    /// Makes a veth pair: `name` here, `peer` inside the namespace `peer_netns` with `peer_mac`.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        mtu: u32,
        peer_mac: Option<Mac>,
        alias: &str,
    ) -> Result<(), NetlinkError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        if let Some(mac) = peer_mac {
            peer_msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth), LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg)))]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, || {
            format!("add veth {name} (peer {peer} in the task namespace)")
        })?;
        self.set_alias(name, alias)
    }

    pub fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.request(RouteNetlinkMessage::DelLink(msg), 0, || format!("delete link {name}"))
    }

    fn set_link(
        &mut self,
        name: &str,
        attrs: Vec<LinkAttribute>,
        up: Option<bool>,
        what: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.extend(attrs);
        if let Some(up) = up {
            msg.header.change_mask = LinkFlags::Up;
            msg.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0, what)
    }

    pub fn set_up(&mut self, name: &str) -> Result<(), NetlinkError> {
        self.set_link(name, vec![], Some(true), || format!("set {name} up"))
    }

    pub fn set_down(&mut self, name: &str) -> Result<(), NetlinkError> {
        self.set_link(name, vec![], Some(false), || format!("set {name} down"))
    }

    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        self.set_link(name, vec![LinkAttribute::Mtu(mtu)], None, || format!("set mtu {mtu} on {name}"))
    }

    pub fn set_mac(&mut self, name: &str, mac: Mac) -> Result<(), NetlinkError> {
        self.set_link(name, vec![LinkAttribute::Address(mac.0.to_vec())], None, || format!("set mac {mac} on {name}"))
    }

    pub fn set_master(&mut self, name: &str, master_index: u32) -> Result<(), NetlinkError> {
        self.set_link(name, vec![LinkAttribute::Controller(master_index)], None, || format!("attach {name} to bridge #{master_index}"))
    }

    /// The alias is shoal's label on a kernel object: it is how a restarted agent knows what a
    /// link belongs to.
    pub fn set_alias(&mut self, name: &str, alias: &str) -> Result<(), NetlinkError> {
        self.set_link(name, vec![LinkAttribute::IfAlias(alias.to_string())], None, || format!("set alias of {name}"))
    }
}

fn parse_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: LinkKind::Other(String::new()),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        mac: None,
        alias: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac = Some(Mac([a[0], a[1], a[2], a[3], a[4], a[5]])),
            LinkAttribute::LinkInfo(infos) => link.kind = parse_kind(infos),
            _ => {}
        }
    }
    link
}

fn parse_kind(infos: Vec<LinkInfo>) -> LinkKind {
    let mut kind = None;
    let mut vxlan = None;
    for info in infos {
        match info {
            LinkInfo::Kind(k) => kind = Some(k),
            LinkInfo::Data(InfoData::Vxlan(data)) => {
                let mut v = VxlanInfo { vni: 0, local: None, port: 0, learning: true, proxy: false };
                for d in data {
                    match d {
                        InfoVxlan::Id(id) => v.vni = id,
                        InfoVxlan::Local(ip) => v.local = Some(ip),
                        InfoVxlan::Port(p) => v.port = p,
                        InfoVxlan::Learning(l) => v.learning = l,
                        InfoVxlan::Proxy(p) => v.proxy = p,
                        _ => {}
                    }
                }
                vxlan = Some(v);
            }
            _ => {}
        }
    }
    match kind {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Veth) => LinkKind::Veth,
        Some(InfoKind::Vxlan) => LinkKind::Vxlan(vxlan.unwrap_or(VxlanInfo { vni: 0, local: None, port: 0, learning: true, proxy: false })),
        Some(other) => LinkKind::Other(format!("{other:?}").to_lowercase()),
        None => LinkKind::Other(String::new()),
    }
}
