//! Building response messages: flags, EDNS, records, and truncation to what the client accepts.

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, Message, OpCode, ResponseCode},
    rr::{
        rdata::{A, AAAA, PTR, SRV},
        Name, RData, Record,
    },
};

use super::Transport;

/// Largest UDP answer shoal sends, whatever the client offers (the 2020 DNS flag day value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Classic DNS UDP limit for clients without EDNS.
const CLASSIC_UDP_PAYLOAD: usize = 512;

/// A response under construction for one request.
pub struct Reply {
    message: Message,
}

impl Reply {
    /// An empty response to `request` with `code`: same id, opcode, RD and question; RA set;
    /// an OPT record when the request had one.
    pub fn new(request: &Message, code: ResponseCode, authoritative: bool) -> Self {
        let mut message = Message::response(request.metadata.id, request.metadata.op_code);
        message.metadata.response_code = code;
        message.metadata.recursion_desired = request.metadata.recursion_desired;
        message.metadata.recursion_available = true;
        message.metadata.authoritative = authoritative;
        message.metadata.checking_disabled = request.metadata.checking_disabled;
        message.queries = request.queries.clone();
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            message.set_edns(edns);
        }
        Self { message }
    }

    /// A bare error response when the request could not be parsed beyond its id.
    pub fn header_only(id: u16, code: ResponseCode) -> Vec<u8> {
        let message = Message::error_msg(id, OpCode::Query, code);
        message.to_vec().unwrap_or_default()
    }

    /// Adds an address record for `owner`.
    pub fn address(&mut self, owner: &Name, ttl: u32, ip: IpAddr) {
        self.message.add_answer(address_record(owner, ttl, ip));
    }

    /// Adds a PTR record.
    pub fn ptr(&mut self, owner: &Name, ttl: u32, target: &str) {
        if let Ok(target) = Name::from_ascii(target) {
            self.message.add_answer(Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target))));
        }
    }

    /// Adds an SRV record and the target's addresses in the additional section.
    pub fn srv(&mut self, owner: &Name, ttl: u32, target: &str, port: u16, addrs: &[IpAddr]) {
        let Ok(target) = Name::from_ascii(target) else {
            return;
        };
        for ip in addrs {
            self.message.add_additional(address_record(&target, ttl, *ip));
        }
        let srv = SRV::new(0, 10, port, target);
        self.message.add_answer(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
    }

    /// Encodes the response; on UDP, a response larger than the client accepts is replaced by
    /// its truncated form (TC set, question only) so the client retries over TCP.
    pub fn encode(self, request: &Message, transport: Transport) -> Vec<u8> {
        let bytes = match self.message.to_vec() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "cannot encode DNS response; answering SERVFAIL");
                return Self::header_only(request.metadata.id, ResponseCode::ServFail);
            }
        };
        if transport == Transport::Tcp || bytes.len() <= udp_limit(request) {
            return bytes;
        }
        self.message.truncate().to_vec().unwrap_or_default()
    }
}

/// How many bytes a UDP response to `request` may have.
pub fn udp_limit(request: &Message) -> usize {
    match &request.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
        None => CLASSIC_UDP_PAYLOAD,
    }
}

fn address_record(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, rdata)
}
