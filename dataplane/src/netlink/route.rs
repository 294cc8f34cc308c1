//! IPv4 routes. Routes shoal makes carry its own protocol number, so observation never mistakes
//! a route somebody else made for one of ours.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError};

/// Route protocol number that labels shoal's routes (`ip route show proto 83`).
pub const SHOAL_PROTO: u8 = 83;
pub const MAIN_TABLE: u32 = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub table: u32,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// None for an `unreachable` route.
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    pub src: Option<Ipv4Addr>,
}

impl Route {
    pub fn is_unreachable(&self) -> bool {
        self.oif.is_none() && self.gateway.is_none()
    }
}

impl Netlink {
    /// Every IPv4 route that shoal made, in any table.
    pub fn shoal_routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetRoute(req), "list routes")?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            if r.header.protocol != RouteProtocol::Other(SHOAL_PROTO) {
                continue;
            }
            let mut route = Route {
                table: r.header.table as u32,
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: r.header.destination_prefix_length,
                oif: None,
                gateway: None,
                src: None,
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => route.table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst = *ip,
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                    RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => route.src = Some(*ip),
                    _ => {}
                }
            }
            out.push(route);
        }
        Ok(out)
    }

    pub fn add_route(&mut self, route: Route) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::NewRoute(route_message(route)), NLM_F_CREATE | NLM_F_EXCL, || {
            format!("add route {}/{} table {}", route.dst, route.prefix, route.table)
        })
    }

    pub fn delete_route(&mut self, route: Route) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::DelRoute(route_message(route)), 0, || {
            format!("delete route {}/{} table {}", route.dst, route.prefix, route.table)
        })
    }
}

fn route_message(route: Route) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header = RouteHeader {
        address_family: AddressFamily::Inet,
        destination_prefix_length: route.prefix,
        table: if route.table < 256 {
            route.table as u8
        } else {
            252 /* RT_TABLE_COMPAT */
        },
        protocol: RouteProtocol::Other(SHOAL_PROTO),
        scope: if route.gateway.is_none() && route.oif.is_some() { RouteScope::Link } else { RouteScope::Universe },
        kind: if route.is_unreachable() { RouteType::Unreachable } else { RouteType::Unicast },
        ..Default::default()
    };
    msg.attributes.push(RouteAttribute::Table(route.table));
    if route.prefix > 0 {
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(route.dst)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(gw) = route.gateway {
        msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    if let Some(src) = route.src {
        msg.attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
    }
    msg
}
