//! Names on the host-side listener, Consul style: `<svc>.service.<domain>` answers the healthy task
//! IPs of the service on every network, `<node>.node.<domain>` the node's address.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::RecordType,
};
use rand::seq::SliceRandom;

use super::{reply::Reply, AnswerConfig};
use crate::table::Tables;

/// The local answer, or `None` to forward upstream.
pub fn answer(tables: &Tables, cfg: &AnswerConfig, request: &Message, query: &Query, name: &str) -> Option<Reply> {
    let domain = cfg.host_domain.as_str();
    let inside = if name == domain { Some("") } else { name.strip_suffix(domain).and_then(|rest| rest.strip_suffix('.')) };
    let Some(rest) = inside else {
        if cfg.host_forward {
            return None;
        }
        return Some(Reply::new(request, ResponseCode::Refused, false));
    };
    let ips = if let Some(svc) = rest.strip_suffix(".service") {
        tables.service_backends(svc)
    } else if let Some(node) = rest.strip_suffix(".node") {
        tables.host().node(node).map(<[IpAddr]>::to_vec)
    } else {
        None
    };
    let Some(mut ips) = ips else {
        return Some(Reply::new(request, ResponseCode::NXDomain, true));
    };
    let mut reply = Reply::new(request, ResponseCode::NoError, true);
    ips.shuffle(&mut rand::rng());
    let qtype = query.query_type();
    for ip in ips {
        let wanted = match ip {
            IpAddr::V4(_) => matches!(qtype, RecordType::A | RecordType::ANY),
            IpAddr::V6(_) => matches!(qtype, RecordType::AAAA | RecordType::ANY),
        };
        if wanted {
            reply.address(query.name(), cfg.tasks_ttl, ip);
        }
    }
    Some(reply)
}
