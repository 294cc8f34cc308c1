//! The query path, sans I/O: request bytes in, an [`Action`] out (bytes to send back, or a query
//! to forward upstream). Pure and deterministic apart from the answer order, so it is unit- and
//! property-tested without sockets.

mod fast;
mod host;
pub mod reply;
pub mod reverse;
mod task;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::DNSClass,
};

use crate::table::Tables;
pub use reply::Reply;

/// Which names a query may see.
#[derive(Debug, Clone, Copy)]
pub enum View<'a> {
    /// A task attached to these networks (lower-cased names, in attachment order).
    Task(&'a [String]),
    /// The host-side Consul-style listener.
    Host,
}

/// How the request arrived (limits the response size on UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP datagram.
    Udp,
    /// TCP stream.
    Tcp,
}

/// Answering parameters taken from the server configuration.
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// TTL of stable names (VIPs, task names, PTR).
    pub ttl: u32,
    /// TTL of names that follow backends (`tasks.<svc>`, dnsrr services, task aliases).
    pub tasks_ttl: u32,
    /// Domain of the host-side listener, lower-case, without dots around (`shoal`).
    pub host_domain: String,
    /// Whether the host-side listener forwards names outside its domain (else REFUSED).
    pub host_forward: bool,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self { ttl: 5, tasks_ttl: 2, host_domain: "shoal".into(), host_forward: false }
    }
}

/// What to do with one request.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes back to the client.
    Reply(Vec<u8>),
    /// Not a local name: forward upstream.
    Forward(ForwardQuery),
    /// Send nothing (a response packet, or too short to carry an id).
    Drop,
}

/// A query to forward: the raw bytes (re-sent with a fresh id) and the parsed request (to check the
/// upstream's answer and to build SERVFAIL).
#[derive(Debug, Clone)]
pub struct ForwardQuery {
    /// The request as received.
    pub raw: Vec<u8>,
    /// The parsed request.
    pub request: Message,
    /// How it arrived.
    pub transport: Transport,
}

impl ForwardQuery {
    /// The response sent when every upstream failed.
    pub fn servfail(&self) -> Vec<u8> {
        Reply::new(&self.request, ResponseCode::ServFail, false).encode(&self.request, self.transport)
    }

    /// The response sent when the task has too many queries in flight.
    pub fn refused(&self) -> Vec<u8> {
        Reply::new(&self.request, ResponseCode::Refused, false).encode(&self.request, self.transport)
    }
}

/// Answers one request in `view`. Never panics, whatever the bytes.
pub fn respond(tables: &Tables, view: View<'_>, cfg: &AnswerConfig, raw: &[u8], transport: Transport) -> Action {
    if let View::Task(networks) = view {
        if let Some(bytes) = fast::try_answer(tables, networks, cfg, raw, transport) {
            return Action::Reply(bytes);
        }
    }
    respond_general(tables, view, cfg, raw, transport)
}

/// [`respond`] without its fast path for plain A/AAAA questions (the reference the fast path is
/// tested against).
pub fn respond_general(tables: &Tables, view: View<'_>, cfg: &AnswerConfig, raw: &[u8], transport: Transport) -> Action {
    if raw.len() < 12 {
        return Action::Drop;
    }
    if raw[2] & 0x80 != 0 {
        // A response: never answer it (no reflection loops).
        return Action::Drop;
    }
    let id = u16::from_be_bytes([raw[0], raw[1]]);
    let request = match Message::from_vec(raw) {
        Ok(message) => message,
        Err(_) => return Action::Reply(Reply::header_only(id, ResponseCode::FormErr)),
    };
    if request.metadata.message_type != MessageType::Query {
        return Action::Drop;
    }
    if request.metadata.op_code != OpCode::Query {
        return reply_code(&request, ResponseCode::NotImp, transport);
    }
    let [query] = request.queries.as_slice() else {
        return reply_code(&request, ResponseCode::FormErr, transport);
    };
    if query.query_class() != DNSClass::IN {
        return reply_code(&request, ResponseCode::Refused, transport);
    }
    let mut name = query.name().to_ascii();
    name.make_ascii_lowercase();
    if name.ends_with('.') {
        name.pop();
    }
    let query = query.clone();
    let answer = match view {
        View::Task(networks) => task::answer(tables, networks, cfg, &request, &query, &name),
        View::Host => host::answer(tables, cfg, &request, &query, &name),
    };
    match answer {
        Some(reply) => Action::Reply(reply.encode(&request, transport)),
        None => Action::Forward(ForwardQuery { raw: raw.to_vec(), request, transport }),
    }
}

fn reply_code(request: &Message, code: ResponseCode, transport: Transport) -> Action {
    Action::Reply(Reply::new(request, code, false).encode(request, transport))
}

#[cfg(test)]
mod tests;
