//! The incremental path without the `nft` binary: the ops of a small change (flush a frontend
//! chain, add its cascade rules, add or delete map elements and chains) encoded as one nfnetlink
//! batch (one transaction) and sent from this process. `nft` must load its cache of the whole
//! table before it applies anything, which costs O(services); this costs O(ops).
//!
//! Expressions are laid out exactly as nft 1.0.6 compiles the same rule text
//! (`nft --debug=netlink`), so `nft list` shows them back as the text [`super::plan`] writes.
//! Ops this encoder does not know make it return None and the caller uses `nft -f`.

use std::net::SocketAddrV4;

use super::plan::{NftOp, TABLE};
use crate::lb::plan::{Kind, Proto, ServiceKey};
use crate::lb::wire::{MsgBuilder, NLM_F_ACK, NLM_F_REQUEST};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NFPROTO_IPV4: u8 = 2;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_GOTO: i32 = -4;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_META_MARK: u32 = 3;
const NFT_META_L4PROTO: u32 = 16;

/// One parsed cascade rule (the grammar `plan::frontend_rules` writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CascadeRule {
    pub proto: Proto,
    /// `numgen random mod M < W`.
    pub pick: Option<(u32, u32)>,
    pub mark: Option<u32>,
    pub to: SocketAddrV4,
}

pub fn parse_rule(rule: &str) -> Option<CascadeRule> {
    let mut rest = rule.strip_prefix("meta l4proto ")?;
    let proto = match rest.split(' ').next()? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    rest = rest.split_once(' ')?.1;
    let mut pick = None;
    if let Some(r) = rest.strip_prefix("numgen random mod ") {
        let (m, r) = r.split_once(" < ")?;
        let (w, r) = r.split_once(' ')?;
        pick = Some((m.parse().ok()?, w.parse().ok()?));
        rest = r;
    }
    let mut mark = None;
    if let Some(r) = rest.strip_prefix("meta mark set meta mark | 0x") {
        let (m, r) = r.split_once(' ')?;
        mark = Some(u32::from_str_radix(m, 16).ok()?);
        rest = r;
    }
    let to = rest.strip_prefix("dnat ip to ")?.parse().ok()?;
    Some(CascadeRule { proto, pick, mark, to })
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn expr(m: &mut MsgBuilder, name: &str, data: impl FnOnce(&mut MsgBuilder)) {
    m.begin_nested(NFTA_LIST_ELEM).str(1, name).begin_nested(2);
    data(m);
    m.end_nested().end_nested();
}

fn be32(m: &mut MsgBuilder, kind: u16, v: u32) {
    m.attr(kind, &v.to_be_bytes());
}

fn value(m: &mut MsgBuilder, kind: u16, bytes: &[u8]) {
    m.begin_nested(kind).attr(NFTA_DATA_VALUE, bytes).end_nested();
}

fn rule_message(seq: u32, chain: &str, r: &CascadeRule, comment: &str) -> Vec<u8> {
    let mut m = MsgBuilder::new(nft_type(NFT_MSG_NEWRULE), NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq, &[NFPROTO_IPV4, 0, 0, 0]);
    m.str(1, TABLE).str(2, chain).begin_nested(4);
    // meta load l4proto => reg 1; cmp eq reg 1 proto
    expr(&mut m, "meta", |m| {
        be32(m, 2, NFT_META_L4PROTO);
        be32(m, 1, NFT_REG_1);
    });
    expr(&mut m, "cmp", |m| {
        be32(m, 1, NFT_REG_1);
        be32(m, 2, 0);
        value(m, 3, &[r.proto.number()]);
    });
    if let Some((modulus, below)) = r.pick {
        expr(&mut m, "numgen", |m| {
            be32(m, 1, NFT_REG_1);
            be32(m, 2, modulus);
            be32(m, 3, 1); // NFT_NG_RANDOM
            be32(m, 4, 0);
        });
        expr(&mut m, "byteorder", |m| {
            be32(m, 1, NFT_REG_1);
            be32(m, 2, NFT_REG_1);
            be32(m, 3, 1); // NFT_BYTEORDER_HTON
            be32(m, 4, 4);
            be32(m, 5, 4);
        });
        expr(&mut m, "cmp", |m| {
            be32(m, 1, NFT_REG_1);
            be32(m, 2, 2); // NFT_CMP_LT
            value(m, 3, &below.to_be_bytes());
        });
    }
    if let Some(mark) = r.mark {
        expr(&mut m, "meta", |m| {
            be32(m, 2, NFT_META_MARK);
            be32(m, 1, NFT_REG_1);
        });
        expr(&mut m, "bitwise", |m| {
            be32(m, 1, NFT_REG_1);
            be32(m, 2, NFT_REG_1);
            be32(m, 3, 4);
            value(m, 4, &(!mark).to_ne_bytes());
            value(m, 5, &mark.to_ne_bytes());
        });
        expr(&mut m, "meta", |m| {
            be32(m, 2, NFT_META_MARK);
            be32(m, 3, NFT_REG_1);
        });
    }
    expr(&mut m, "immediate", |m| {
        be32(m, 1, NFT_REG_1);
        value(m, 2, &r.to.ip().octets());
    });
    expr(&mut m, "immediate", |m| {
        be32(m, 1, NFT_REG_2);
        value(m, 2, &r.to.port().to_be_bytes());
    });
    expr(&mut m, "nat", |m| {
        be32(m, 1, 1); // NFT_NAT_DNAT
        be32(m, 2, u32::from(NFPROTO_IPV4));
        be32(m, 3, NFT_REG_1);
        be32(m, 5, NFT_REG_2);
        be32(m, 7, 0x2); // NF_NAT_RANGE_PROTO_SPECIFIED
    });
    m.end_nested();
    // userdata: NFTNL_UDATA_RULE_COMMENT (0), length, "comment\0"
    let mut ud = vec![0u8, (comment.len() + 1) as u8];
    ud.extend_from_slice(comment.as_bytes());
    ud.push(0);
    m.attr(7, &ud);
    m.finish()
}

fn element_key(key: &ServiceKey) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[0..4].copy_from_slice(&key.addr.octets());
    k[4] = key.proto.number();
    k[8..10].copy_from_slice(&key.port.to_be_bytes());
    k
}

fn map_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Vip => "vips",
        Kind::Published => "published",
    }
}

fn element_message(seq: u32, kind: Kind, key: &ServiceKey, goto: Option<&str>) -> Vec<u8> {
    let (t, flags) = match goto {
        Some(_) => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
        None => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let mut m = MsgBuilder::new(nft_type(t), flags, seq, &[NFPROTO_IPV4, 0, 0, 0]);
    m.str(1, TABLE).str(2, map_name(kind)).begin_nested(3).begin_nested(NFTA_LIST_ELEM);
    value(&mut m, 1, &element_key(key));
    if let Some(chain) = goto {
        m.begin_nested(2).begin_nested(NFTA_DATA_VERDICT);
        m.attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes()).str(NFTA_VERDICT_CHAIN, chain);
        m.end_nested().end_nested();
    }
    m.end_nested().end_nested();
    m.finish()
}

fn chain_message(seq: u32, t: u16, chain: &str) -> Vec<u8> {
    let flags = if t == NFT_MSG_NEWCHAIN { NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK } else { NLM_F_REQUEST | NLM_F_ACK };
    let mut m = MsgBuilder::new(nft_type(t), flags, seq, &[NFPROTO_IPV4, 0, 0, 0]);
    let name_attr = if t == NFT_MSG_DELRULE { 2 } else { 3 };
    m.str(1, TABLE).str(name_attr, chain);
    m.finish()
}

/// The batch for `ops` (and how many ACKs it asks for), or None when an op is not supported.
pub fn encode(ops: &[NftOp], first_seq: u32) -> Option<(Vec<u8>, usize)> {
    let mut out = MsgBuilder::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first_seq, &[0, 0, 0, NFNL_SUBSYS_NFTABLES as u8]).finish();
    let mut seq = first_seq;
    for op in ops {
        seq += 1;
        let msg = match op {
            NftOp::FlushChain(c) => chain_message(seq, NFT_MSG_DELRULE, c),
            NftOp::AddChain(c) => chain_message(seq, NFT_MSG_NEWCHAIN, c),
            NftOp::DeleteChain(c) => chain_message(seq, NFT_MSG_DELCHAIN, c),
            NftOp::AddRule { chain, rule, comment } => rule_message(seq, chain, &parse_rule(rule)?, comment),
            NftOp::AddElement { kind, key, chain } => element_message(seq, *kind, key, Some(chain)),
            NftOp::DeleteElement { kind, key } => element_message(seq, *kind, key, None),
            _ => return None,
        };
        out.extend_from_slice(&msg);
    }
    out.extend_from_slice(&MsgBuilder::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, &[0, 0, 0, NFNL_SUBSYS_NFTABLES as u8]).finish());
    Some((out, ops.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::wire;

    #[test]
    fn cascade_rules_parse_back() {
        let r = parse_rule("meta l4proto tcp numgen random mod 3 < 1 meta mark set meta mark | 0x5300 dnat ip to 10.0.9.2:80").unwrap();
        assert_eq!(r, CascadeRule { proto: Proto::Tcp, pick: Some((3, 1)), mark: Some(0x5300), to: "10.0.9.2:80".parse().unwrap() });
        let r = parse_rule("meta l4proto udp dnat ip to 10.0.9.4:53").unwrap();
        assert_eq!((r.pick, r.mark), (None, None));
        assert!(parse_rule("ip daddr . meta l4proto . th dport vmap @vips").is_none());
    }

    #[test]
    fn a_batch_is_begin_messages_end_and_unknown_ops_fall_back() {
        let ops = vec![
            NftOp::FlushChain("v_x".into()),
            NftOp::AddRule { chain: "v_x".into(), rule: "meta l4proto tcp dnat ip to 10.0.9.2:80".into(), comment: "h1".into() },
            NftOp::AddElement { kind: Kind::Vip, key: ServiceKey::tcp("10.0.9.100".parse().unwrap(), 80), chain: "v_x".into() },
        ];
        let (batch, acks) = encode(&ops, 100).unwrap();
        assert_eq!(acks, 3);
        let mut types = Vec::new();
        let mut b = &batch[..];
        while !b.is_empty() {
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            types.push(u16::from_ne_bytes([b[4], b[5]]));
            b = &b[len..];
        }
        assert_eq!(types, vec![0x10, 0x0a08, 0x0a06, 0x0a0c, 0x11]);
        // the element key is addr . proto . port, each padded to 4 bytes, as nft writes it
        assert_eq!(element_key(&ServiceKey::tcp("10.0.9.100".parse().unwrap(), 80)), [10, 0, 9, 100, 6, 0, 0, 0, 0, 0x50, 0, 0]);
        let rule = rule_message(1, "v_x", &parse_rule("meta l4proto tcp dnat ip to 10.0.9.2:80").unwrap(), "h1");
        let top = wire::attrs(&rule[wire::NLMSG_HDR_LEN + 4..]);
        assert_eq!(wire::find(&top, 7).unwrap().data, b"\x00\x03h1\x00");
        assert_eq!(wire::find(&top, 4).unwrap().nested().len(), 5, "meta, cmp, immediate x2, nat");
        assert!(encode(&[NftOp::AddTable], 1).is_none());
    }
}
