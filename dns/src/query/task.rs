//! Names seen from inside a task: its networks' services, tasks and aliases, each also with a
//! `.<network>` suffix; PTR for their addresses; SRV for service ports.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::RecordType,
};
use rand::seq::SliceRandom;

use super::{reply::Reply, reverse, AnswerConfig};
use crate::table::{NameEntry, Tables, TtlClass};

/// The local answer, or `None` to forward upstream.
pub fn answer(tables: &Tables, networks: &[String], cfg: &AnswerConfig, request: &Message, query: &Query, name: &str) -> Option<Reply> {
    let qtype = query.query_type();
    if let Some(ip) = reverse::parse(name) {
        return reverse_answer(tables, networks, cfg, request, query, ip);
    }
    let Some((network, entry)) = find(tables, networks, name) else {
        if looks_internal(tables, name) {
            return Some(Reply::new(request, ResponseCode::NXDomain, true));
        }
        return None;
    };
    tracing::trace!(%name, %network, "local DNS answer");
    let ttl = match entry.ttl {
        TtlClass::Stable => cfg.ttl,
        TtlClass::Tasks => cfg.tasks_ttl,
    };
    let mut reply = Reply::new(request, ResponseCode::NoError, true);
    let owner = query.name();
    let mut rng = rand::rng();
    if matches!(qtype, RecordType::A | RecordType::ANY) {
        let mut v4 = entry.v4.clone();
        v4.shuffle(&mut rng);
        for ip in v4 {
            reply.address(owner, ttl, IpAddr::V4(ip));
        }
    }
    if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
        let mut v6 = entry.v6.clone();
        v6.shuffle(&mut rng);
        for ip in v6 {
            reply.address(owner, ttl, IpAddr::V6(ip));
        }
    }
    if matches!(qtype, RecordType::SRV | RecordType::ANY) {
        let mut srv: Vec<_> = entry.srv.iter().collect();
        srv.shuffle(&mut rng);
        for target in srv {
            reply.srv(owner, ttl, &target.target, target.port, &target.addrs);
        }
    }
    Some(reply)
}

/// The first network of the task (suffixed form first) that knows `name`.
pub(super) fn find<'t>(tables: &'t Tables, networks: &[String], name: &str) -> Option<(&'t str, &'t NameEntry)> {
    for net in networks {
        let Some(bare) = name.strip_suffix(net.as_str()).and_then(|rest| rest.strip_suffix('.')) else {
            continue;
        };
        if let Some(table) = tables.network(net) {
            if let Some(entry) = table.lookup(bare) {
                return Some((table.name.as_str(), entry));
            }
        }
    }
    for net in networks {
        if let Some(table) = tables.network(net) {
            if let Some(entry) = table.lookup(name) {
                return Some((table.name.as_str(), entry));
            }
        }
    }
    None
}

/// Names that only make sense inside the cluster: answered NXDOMAIN locally when unknown, never
/// sent upstream (so a name of another network neither resolves nor leaks out): single labels,
/// `tasks.<x>`, and names ending in any network's name.
fn looks_internal(tables: &Tables, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    if !name.contains('.') {
        return true;
    }
    if let Some(rest) = name.strip_prefix("tasks.") {
        if !rest.contains('.') {
            return true;
        }
    }
    name.match_indices('.').any(|(i, _)| tables.is_network_name(&name[i + 1..]))
}

fn reverse_answer(tables: &Tables, networks: &[String], cfg: &AnswerConfig, request: &Message, query: &Query, ip: IpAddr) -> Option<Reply> {
    let targets = networks.iter().filter_map(|net| tables.network(net)).find_map(|table| table.ptr(&ip))?;
    let mut reply = Reply::new(request, ResponseCode::NoError, true);
    if matches!(query.query_type(), RecordType::PTR | RecordType::ANY) {
        for target in targets {
            reply.ptr(query.name(), cfg.ttl, target);
        }
    }
    Some(reply)
}
