//! IPv4 addresses on links.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl Netlink {
    pub fn addrs(&mut self) -> Result<Vec<Addr>, NetlinkError> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetAddress(req), "list addresses")?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else { continue };
            if a.header.family != AddressFamily::Inet {
                continue;
            }
            let local = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                out.push(Addr { ifindex: a.header.index, ip, prefix: a.header.prefix_len });
            }
        }
        Ok(out)
    }

    pub fn add_addr(&mut self, addr: Addr, link_name: &str) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::NewAddress(addr_message(addr)), NLM_F_CREATE | NLM_F_EXCL, || {
            format!("add address {}/{} to {link_name}", addr.ip, addr.prefix)
        })
    }

    pub fn delete_addr(&mut self, addr: Addr, link_name: &str) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::DelAddress(addr_message(addr)), 0, || {
            format!("delete address {}/{} from {link_name}", addr.ip, addr.prefix)
        })
    }
}

fn addr_message(addr: Addr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = addr.prefix;
    msg.header.index = addr.ifindex;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr.ip)));
    msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr.ip)));
    msg
}
