//! VXLAN forwarding entries (MAC -> remote VTEP) and permanent neighbour entries (IP -> MAC).

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Mac, Netlink, NetlinkError};

/// `bridge fdb add MAC dev VXLAN dst VTEP self permanent`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fdb {
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// `ip neigh add IP lladdr MAC dev LINK nud permanent`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neigh {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

impl Netlink {
    /// Static FDB entries with a remote destination (those of VXLAN devices).
    pub fn fdb_entries(&mut self) -> Result<Vec<Fdb>, NetlinkError> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(req), "list fdb entries")?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
            if let Some((mac, dst)) = mac_and_ip(&n) {
                out.push(Fdb { ifindex: n.header.ifindex, mac, dst });
            }
        }
        Ok(out)
    }

    pub fn add_fdb(&mut self, fdb: Fdb, link: &str) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::NewNeighbour(fdb_message(fdb)), NLM_F_CREATE | NLM_F_REPLACE, || {
            format!("add fdb {} dst {} on {link}", fdb.mac, fdb.dst)
        })
    }

    pub fn delete_fdb(&mut self, fdb: Fdb, link: &str) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::DelNeighbour(fdb_message(fdb)), 0, || format!("delete fdb {} dst {} on {link}", fdb.mac, fdb.dst))
    }

    /// Permanent IPv4 neighbour entries.
    pub fn permanent_neighbours(&mut self) -> Result<Vec<Neigh>, NetlinkError> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(req), "list neighbours")?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
            if n.header.state != NeighbourState::Permanent {
                continue;
            }
            if let Some((mac, ip)) = mac_and_ip(&n) {
                out.push(Neigh { ifindex: n.header.ifindex, ip, mac });
            }
        }
        Ok(out)
    }

    pub fn add_neigh(&mut self, neigh: Neigh, link: &str) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::NewNeighbour(neigh_message(neigh)), NLM_F_CREATE | NLM_F_EXCL, || {
            format!("add neighbour {} lladdr {} on {link}", neigh.ip, neigh.mac)
        })
    }

    pub fn delete_neigh(&mut self, neigh: Neigh, link: &str) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::DelNeighbour(neigh_message(neigh)), 0, || format!("delete neighbour {} on {link}", neigh.ip))
    }
}

/// The link-layer address and the IPv4 destination of a neighbour or FDB entry.
fn mac_and_ip(n: &NeighbourMessage) -> Option<(Mac, Ipv4Addr)> {
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => Some(Mac([l[0], l[1], l[2], l[3], l[4], l[5]])),
        _ => None,
    })?;
    // In AF_BRIDGE messages the destination is not typed by family, so it may arrive raw.
    let ip = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        _ => None,
    })?;
    Some((mac, ip))
}

fn fdb_message(fdb: Fdb) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = fdb.ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(fdb.mac.0.to_vec()));
    msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(fdb.dst)));
    msg
}

fn neigh_message(neigh: Neigh) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = neigh.ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(neigh.ip)));
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(neigh.mac.0.to_vec()));
    msg
}
