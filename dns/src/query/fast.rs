//! The common case without building hickory messages: one A or AAAA question (class IN), no
//! records but an optional EDNS OPT, for a name the task's view knows. The answer is written
//! straight into bytes, exactly as the general path would write it (the differential test in
//! `tests/query_props.rs` holds them equal). Anything else returns `None` and takes the general
//! path.

use std::net::IpAddr;

use rand::seq::SliceRandom;

use super::{reply::MAX_UDP_PAYLOAD, task, AnswerConfig, Transport};
use crate::table::{Tables, TtlClass};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// Longest name in presentation form the fast path handles.
const MAX_NAME: usize = 253;

/// The encoded answer, or `None` for the general path.
pub fn try_answer(tables: &Tables, networks: &[String], cfg: &AnswerConfig, raw: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let header = raw.get(..12)?;
    let be16 = |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?])) };
    // A standard query (QR 0, opcode 0), one question, no answers or authority, at most one
    // additional record (the OPT).
    if header[2] & 0xf8 != 0 || be16(4)? != 1 || be16(6)? != 0 || be16(8)? != 0 || be16(10)? > 1 {
        return None;
    }

    // The question name, lower-cased into `name`, plain labels only.
    let mut name = [0u8; MAX_NAME];
    let mut len = 0;
    let mut at = 12;
    loop {
        let label = usize::from(*raw.get(at)?);
        at += 1;
        if label == 0 {
            break;
        }
        if label > 63 || len + label + usize::from(len > 0) > MAX_NAME {
            return None;
        }
        if len > 0 {
            name[len] = b'.';
            len += 1;
        }
        for &byte in raw.get(at..at + label)? {
            if !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_') {
                return None;
            }
            name[len] = byte.to_ascii_lowercase();
            len += 1;
        }
        at += label;
    }
    let qtype = be16(at)?;
    if be16(at + 2)? != CLASS_IN || !(qtype == TYPE_A || qtype == TYPE_AAAA) {
        return None;
    }
    let question_end = at + 4;

    // The OPT record, when there is one, must be the rest of the packet.
    let edns_payload = if be16(10)? == 1 {
        let opt = raw.get(question_end..)?;
        if opt.len() < 11 || opt[0] != 0 || be16(question_end + 1)? != TYPE_OPT || opt[6] != 0 {
            // Not an OPT at the root, or an EDNS version other than 0.
            return None;
        }
        let rdlen = usize::from(be16(question_end + 9)?);
        if opt.len() != 11 + rdlen || !plain_options(&opt[11..]) {
            return None;
        }
        Some(be16(question_end + 3)?)
    } else {
        if raw.len() != question_end {
            return None;
        }
        None
    };

    let name = std::str::from_utf8(&name[..len]).ok()?;
    if name.is_empty() || name.ends_with(".arpa") || name == "arpa" {
        return None;
    }
    let (_, entry) = task::find(tables, networks, name)?;
    let ttl = match entry.ttl {
        TtlClass::Stable => cfg.ttl,
        TtlClass::Tasks => cfg.tasks_ttl,
    };
    let mut ips: Vec<IpAddr> = if qtype == TYPE_A {
        entry.v4.iter().map(|ip| IpAddr::V4(*ip)).collect()
    } else {
        entry.v6.iter().map(|ip| IpAddr::V6(*ip)).collect()
    };
    ips.shuffle(&mut rand::rng());

    let mut out = Vec::with_capacity(question_end + ips.len() * 28 + 11);
    out.extend_from_slice(&raw[..2]);
    // QR, opcode 0, AA, RD as asked; RA, CD as asked, NOERROR.
    out.push(0x80 | 0x04 | (raw[2] & 0x01));
    out.push(0x80 | (raw[3] & 0x10));
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::try_from(ips.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&u16::from(edns_payload.is_some()).to_be_bytes());
    out.extend_from_slice(&raw[12..question_end]);
    for ip in &ips {
        // Owner: a pointer to the question name at offset 12.
        out.extend_from_slice(&[0xc0, 0x0c]);
        match ip {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&TYPE_A.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&TYPE_AAAA.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    if edns_payload.is_some() {
        // OPT at the root: our payload size, extended rcode 0, version 0, no flags, no options.
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    let limit = match edns_payload {
        Some(payload) => usize::from(payload.clamp(512, MAX_UDP_PAYLOAD)),
        None => 512,
    };
    if transport == Transport::Udp && out.len() > limit {
        // Truncation is the general path's job.
        return None;
    }
    Some(out)
}

/// Whether EDNS option data is a well-formed list of options that need no decoding (NSID and
/// Client Subnet, which the general path decodes, are left to it).
fn plain_options(mut data: &[u8]) -> bool {
    const NSID: u16 = 3;
    const SUBNET: u16 = 8;
    while !data.is_empty() {
        let [c0, c1, l0, l1, rest @ ..] = data else {
            return false;
        };
        let code = u16::from_be_bytes([*c0, *c1]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        if code == NSID || code == SUBNET || rest.len() < len {
            return false;
        }
        data = &rest[len..];
    }
    true
}
