//! The incremental path without the `nft` binary: element changes of the slot maps and the
//! `masq` sets, and the rules of the balancing chains, encoded as one nfnetlink batch (one
//! transaction) and sent from this process. `nft` must load its cache of the table before it
//! applies anything; this costs O(ops).
//!
//! The socket stays open between batches ([`Session`]): when an nfnetlink socket closes, the
//! kernel first finishes freeing what earlier transactions deleted, after an RCU grace period
//! (`nft_rcv_nl_event` flushes the destroy work). Measured on 6.18: closing after a batch that
//! deleted an element took 5-8 ms, the batch itself ~0.1 ms.
//!
//! Element keys and values are laid out as nft 1.0.6 writes them (`nft --debug=netlink`): each
//! field of a concatenation padded to 4 bytes, ports big-endian, the slot (a `numgen` result)
//! in host order. The balancing rules are always encoded here: nft 1.0.6, evaluating
//! `dnat ip to <concat> map @m` against a map whose value is typed `ip daddr . tcp dport`,
//! sometimes adds a `meta l4proto tcp` dependency (UDP would then not be balanced), and with
//! `th dport` it refuses rules that name an existing map ("conflicting protocols"). The bytes
//! here are those nft writes without the dependency. Other ops make [`encode`] return None.

use std::net::SocketAddrV4;

use shoal_netlink::{self as wire, MsgBuilder, NETLINK_NETFILTER, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};

use super::plan::{masq_set, slot_map, NftOp, TABLE};
use crate::lb::plan::{Kind, ServiceKey};
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NFPROTO_IPV4: u8 = 2;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
/// 128-bit register 1 (32-bit registers 8..11), and 32-bit registers 9, 10, 11.
const NFT_REG_1: u32 = 1;
const NFT_REG32_01: u32 = 9;
const NFT_REG32_02: u32 = 10;
const NFT_REG32_03: u32 = 11;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_MARK: u32 = 3;
const NFT_META_L4PROTO: u32 = 16;
const NFT_NG_RANDOM: u32 = 1;
const NFT_NAT_DNAT: u32 = 1;
/// NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED.
const NAT_FLAGS: u32 = 0x3;

/// A batch larger than this goes through `nft -f` (a netlink send must fit the socket buffer).
pub const MAX_BATCH_BYTES: usize = 128 * 1024;

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// The key of a frontend, each field padded to 4 bytes as nft writes it: addr . proto . port
/// for a published port, addr . proto for a VIP (every port).
pub fn frontend_key(kind: Kind, key: &ServiceKey) -> Vec<u8> {
    let mut k = vec![0u8; 8];
    k[0..4].copy_from_slice(&key.addr.octets());
    k[4] = key.proto.number();
    if kind == Kind::Published {
        k.extend_from_slice(&u32::from(key.port).to_be_bytes()[2..]);
        k.extend_from_slice(&[0, 0]);
    }
    k
}

/// The key of a slot: the frontend, then the slot number in host order (`numgen` writes it so).
pub fn slot_key(kind: Kind, key: &ServiceKey, slot: u32) -> Vec<u8> {
    let mut k = frontend_key(kind, key);
    k.extend_from_slice(&slot.to_ne_bytes());
    k
}

/// A slot's value: the backend's addr . port (the port padded to 4 bytes) for a published
/// port, its address alone for a VIP (`dnat` keeps the client's port).
pub fn backend_value(kind: Kind, to: &SocketAddrV4) -> Vec<u8> {
    let mut v = to.ip().octets().to_vec();
    if kind == Kind::Published {
        v.extend_from_slice(&to.port().to_be_bytes());
        v.extend_from_slice(&[0, 0]);
    }
    v
}

fn value(m: &mut MsgBuilder, kind: u16, bytes: &[u8]) {
    m.begin_nested(kind).attr(NFTA_DATA_VALUE, bytes).end_nested();
}

/// One NEWSETELEM or DELSETELEM message for `set` with `elems` (key, value for adds).
fn elements_message(seq: u32, add: bool, ack: bool, set: &str, elems: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
    let (t, mut flags) = if add { (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE) } else { (NFT_MSG_DELSETELEM, NLM_F_REQUEST) };
    if ack {
        flags |= NLM_F_ACK;
    }
    let mut m = MsgBuilder::new(nft_type(t), flags, seq, &[NFPROTO_IPV4, 0, 0, 0]);
    m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE).str(NFTA_SET_ELEM_LIST_SET, set).begin_nested(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (key, data) in elems {
        m.begin_nested(NFTA_LIST_ELEM);
        value(&mut m, NFTA_SET_ELEM_KEY, key);
        if let Some(d) = data {
            value(&mut m, NFTA_SET_ELEM_DATA, d);
        }
        m.end_nested();
    }
    m.end_nested();
    m.finish()
}

/// A balancing rule, as `plan` writes it. `port`: the frontend is keyed with `th dport` (a
/// published port), else it is a VIP's (every port) and `dnat` maps the address alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatRule {
    /// `ip daddr . meta l4proto [. th dport] @<set> meta mark set meta mark | <mark>`
    Mark { set: String, mark: u32, port: bool },
    /// `dnat ip to ip daddr . meta l4proto [. th dport] . numgen random mod <n> map @<map>`
    Dnat { modulus: u32, map: String, port: bool },
}

/// The frontend part of a rule: with or without the port, and the rest.
fn strip_frontend(rule: &str) -> Option<(bool, &str)> {
    let r = rule.strip_prefix("ip daddr . meta l4proto ")?;
    Some(match r.strip_prefix(". th dport ") {
        Some(r) => (true, r),
        None => (false, r),
    })
}

pub fn parse_rule(rule: &str) -> Option<NatRule> {
    if let Some((port, r)) = strip_frontend(rule) {
        let (set, r) = r.strip_prefix('@')?.split_once(' ')?;
        let mark = r.strip_prefix("meta mark set meta mark | 0x")?;
        return Some(NatRule::Mark { set: set.to_string(), mark: u32::from_str_radix(mark, 16).ok()?, port });
    }
    let (port, r) = strip_frontend(rule.strip_prefix("dnat ip to ")?)?;
    let (modulus, map) = r.strip_prefix(". numgen random mod ")?.split_once(" map @")?;
    if map.contains(' ') {
        return None;
    }
    Some(NatRule::Dnat { modulus: modulus.parse().ok()?, map: map.to_string(), port })
}

fn be32(m: &mut MsgBuilder, kind: u16, v: u32) {
    m.attr(kind, &v.to_be_bytes());
}

fn expr(m: &mut MsgBuilder, name: &str, data: impl FnOnce(&mut MsgBuilder)) {
    m.begin_nested(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, name).begin_nested(NFTA_EXPR_DATA);
    data(m);
    m.end_nested().end_nested();
}

fn payload(m: &mut MsgBuilder, dreg: u32, base: u32, offset: u32, len: u32) {
    expr(m, "payload", |m| {
        be32(m, 1, dreg);
        be32(m, 2, base);
        be32(m, 3, offset);
        be32(m, 4, len);
    });
}

fn meta_load(m: &mut MsgBuilder, key: u32, dreg: u32) {
    expr(m, "meta", |m| {
        be32(m, 2, key);
        be32(m, 1, dreg);
    });
}

/// ip daddr => reg 1, meta l4proto => reg 9, and with `port` th dport => reg 10. Returns the
/// next free 32-bit register.
fn frontend_exprs(m: &mut MsgBuilder, port: bool) -> u32 {
    payload(m, NFT_REG_1, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
    meta_load(m, NFT_META_L4PROTO, NFT_REG32_01);
    if !port {
        return NFT_REG32_02;
    }
    payload(m, NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    NFT_REG32_03
}

fn lookup(m: &mut MsgBuilder, set: &str, dreg: Option<u32>) {
    expr(m, "lookup", |m| {
        m.str(1, set);
        be32(m, 2, NFT_REG_1);
        if let Some(d) = dreg {
            be32(m, 3, d);
        }
    });
}

fn rule_message(seq: u32, ack: bool, chain: &str, rule: &NatRule, comment: &str) -> Vec<u8> {
    let mut flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND;
    if ack {
        flags |= NLM_F_ACK;
    }
    let mut m = MsgBuilder::new(nft_type(NFT_MSG_NEWRULE), flags, seq, &[NFPROTO_IPV4, 0, 0, 0]);
    m.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain).begin_nested(NFTA_RULE_EXPRESSIONS);
    match rule {
        NatRule::Mark { set, mark, port } => {
            frontend_exprs(&mut m, *port);
            lookup(&mut m, set, None);
            meta_load(&mut m, NFT_META_MARK, NFT_REG_1);
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
        NatRule::Dnat { modulus, map, port } => {
            let slot = frontend_exprs(&mut m, *port);
            expr(&mut m, "numgen", |m| {
                be32(m, 1, slot);
                be32(m, 2, *modulus);
                be32(m, 3, NFT_NG_RANDOM);
                be32(m, 4, 0);
            });
            lookup(&mut m, map, Some(NFT_REG_1));
            expr(&mut m, "nat", |m| {
                be32(m, 1, NFT_NAT_DNAT);
                be32(m, 2, u32::from(NFPROTO_IPV4));
                be32(m, 3, NFT_REG_1);
                // A VIP's map gives the address alone: the packet keeps its port (nft writes
                // addr_min only, and the kernel maps the address).
                if *port {
                    be32(m, 4, NFT_REG_1);
                    be32(m, 5, NFT_REG32_01);
                    be32(m, 6, NFT_REG32_01);
                    be32(m, 7, NAT_FLAGS);
                }
            });
        }
    }
    m.end_nested();
    // userdata: NFTNL_UDATA_RULE_COMMENT (0), length, "comment\0"
    let mut ud = vec![0u8, (comment.len() + 1) as u8];
    ud.extend_from_slice(comment.as_bytes());
    ud.push(0);
    m.attr(NFTA_RULE_USERDATA, &ud);
    m.finish()
}

/// Deletes every rule of `chain` (DELRULE without a handle).
fn flush_message(seq: u32, ack: bool, chain: &str) -> Vec<u8> {
    let flags = if ack { NLM_F_REQUEST | NLM_F_ACK } else { NLM_F_REQUEST };
    let mut m = MsgBuilder::new(nft_type(NFT_MSG_DELRULE), flags, seq, &[NFPROTO_IPV4, 0, 0, 0]);
    m.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain);
    m.finish()
}

fn op_message(seq: u32, ack: bool, op: &NftOp) -> Option<Vec<u8>> {
    Some(match op {
        NftOp::FlushChain(chain) => flush_message(seq, ack, chain),
        NftOp::AddRule { chain, rule, comment } if comment.len() < 250 => rule_message(seq, ack, chain, &parse_rule(rule)?, comment),
        NftOp::AddSlots { kind, key, size, slots } => {
            let e: Vec<_> = slots.iter().map(|(s, to)| (slot_key(*kind, key, *s), Some(backend_value(*kind, to)))).collect();
            elements_message(seq, true, ack, &slot_map(*kind, *size), &e)
        }
        NftOp::DeleteSlots { kind, key, size, slots } => {
            let e: Vec<_> = slots.iter().map(|s| (slot_key(*kind, key, *s), None)).collect();
            elements_message(seq, false, ack, &slot_map(*kind, *size), &e)
        }
        NftOp::AddMasq((kind, key)) => elements_message(seq, true, ack, masq_set(*kind), &[(frontend_key(*kind, key), None)]),
        NftOp::DeleteMasq((kind, key)) => elements_message(seq, false, ack, masq_set(*kind), &[(frontend_key(*kind, key), None)]),
        _ => return None,
    })
}

/// The batch for `ops`, messages numbered from `first_seq + 1`; only the last asks for an ACK
/// (the kernel reports every refused message anyway, and processes the batch before `send`
/// returns). None when an op is not an element change, a balancing rule or a chain flush, or
/// when the batch is too large.
pub fn encode(ops: &[NftOp], first_seq: u32) -> Option<Vec<u8>> {
    let end = |seq| MsgBuilder::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, &[0, 0, 0, NFNL_SUBSYS_NFTABLES as u8]).finish();
    let mut out = MsgBuilder::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first_seq, &[0, 0, 0, NFNL_SUBSYS_NFTABLES as u8]).finish();
    for (i, op) in ops.iter().enumerate() {
        out.extend_from_slice(&op_message(first_seq.wrapping_add(1 + i as u32), i + 1 == ops.len(), op)?);
        if out.len() > MAX_BATCH_BYTES {
            return None;
        }
    }
    out.extend_from_slice(&end(first_seq.wrapping_add(1 + ops.len() as u32)));
    Some(out)
}

/// Why a batch was refused: which op, errno, and the kernel's extended-ack text when any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub op: usize,
    pub errno: i32,
    pub message: Option<String>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

/// An nfnetlink socket of the calling thread's network namespace, kept open across batches
/// (closing one waits for an RCU grace period after deletes, see the module doc). After a
/// refusal or an I/O error it may still hold answers: drop it and open another.
pub struct Session {
    socket: wire::Socket,
}

fn io_refused(e: wire::Error) -> Refused {
    match e {
        wire::Error::Kernel(r) => Refused { op: 0, errno: r.errno, message: r.message },
        wire::Error::TimedOut { after } => Refused {
            op: 0,
            errno: libc::ETIMEDOUT,
            message: Some(format!("the kernel did not answer the nftables batch within {after:?} (receive timed out)")),
        },
        wire::Error::Truncated => Refused { op: 0, errno: libc::EIO, message: Some("truncated netlink answer".into()) },
        e => Refused { op: 0, errno: e.errno().unwrap_or(libc::EIO), message: Some(e.to_string()) },
    }
}

impl Session {
    pub fn open() -> Result<Self, Refused> {
        Ok(Self { socket: wire::Socket::open(NETLINK_NETFILTER).map_err(io_refused)? })
    }

    /// Commits `ops` (element changes, balancing rules, chain flushes) as one nfnetlink
    /// transaction. Ok(false): an op of another kind, or the batch is too large (nothing was
    /// sent). A refusal means nothing was committed.
    pub fn commit(&mut self, ops: &[NftOp]) -> Result<bool, Refused> {
        if ops.is_empty() {
            return Ok(true);
        }
        // BEGIN, one message per op, END.
        let first = self.socket.next_seqs(ops.len() as u32 + 2);
        let Some(batch) = encode(ops, first) else { return Ok(false) };
        self.socket.send(&batch).map_err(io_refused)?;
        let last = first.wrapping_add(ops.len() as u32);
        let mut refused = None;
        self.socket
            .receive(|frame| {
                if frame.msg_type != NLMSG_ERROR {
                    return Ok(false);
                }
                let Some(ack) = wire::parse_ack(frame.flags, frame.payload) else { return Ok(false) };
                if ack.errno != 0 {
                    let op = ack.seq.wrapping_sub(first.wrapping_add(1)) as usize;
                    refused = Some(Refused { op: op.min(ops.len() - 1), errno: ack.errno, message: ack.message });
                    return Ok(true);
                }
                Ok(ack.seq == last)
            })
            .map_err(io_refused)?;
        match refused {
            Some(r) => Err(r),
            None => Ok(true),
        }
    }
}

/// Whether table `ip NAME` exists in the calling process's network namespace: one netlink
/// round trip, where `nft list table` is a process that loads libnftables (0.2 s under the
/// kernel lab's emulation, on every apply of another balancer, which makes sure no table of
/// ours is left).
pub fn table_exists(name: &str) -> Result<bool, std::io::Error> {
    let mut socket = wire::Socket::open(NETLINK_NETFILTER)?;
    let seq = socket.next_seq();
    let mut msg = MsgBuilder::new(nft_type(NFT_MSG_GETTABLE), NLM_F_REQUEST | NLM_F_ACK, seq, &[NFPROTO_IPV4, 0, 0, 0]);
    msg.str(NFTA_TABLE_NAME, name);
    match socket.transact(&msg.finish(), seq) {
        Ok(_) => Ok(true),
        Err(e) if e.is(wire::Errno::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The map an op writes to (for error messages).
pub fn target_set(op: &NftOp) -> String {
    match op {
        NftOp::AddSlots { kind, size, .. } | NftOp::DeleteSlots { kind, size, .. } => slot_map(*kind, *size),
        NftOp::AddMasq((kind, _)) | NftOp::DeleteMasq((kind, _)) => masq_set(*kind).into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::plan::ANY_PORT;
    use shoal_netlink::NLMSG_HDR_LEN;
    use std::net::Ipv4Addr;

    const VIP: ServiceKey = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
    const PUB: ServiceKey = ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5000);

    fn messages(batch: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut b = batch;
        while !b.is_empty() {
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            let t = u16::from_ne_bytes([b[4], b[5]]);
            let flags = u16::from_ne_bytes([b[6], b[7]]);
            let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
            out.push((t, flags, seq, b[NLMSG_HDR_LEN..len].to_vec()));
            b = &b[len..];
        }
        out
    }

    fn words(b: &[u8]) -> Vec<u32> {
        b.chunks(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn keys_and_values_are_laid_out_as_nft_writes_them() {
        // nft --debug=netlink: element 6409000a 00000011 00003500 00000005 : 0409000a 00003500
        let k = slot_key(Kind::Published, &ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), 53), 5);
        if cfg!(target_endian = "little") {
            assert_eq!(words(&k), vec![0x6409000a, 0x00000011, 0x00003500, 0x00000005]);
            assert_eq!(words(&backend_value(Kind::Published, &"10.0.9.4:53".parse().unwrap())), vec![0x0409000a, 0x00003500]);
            // a VIP's, without ports: element 6409000a 00000011 00000005 : 0409000a
            let k = slot_key(Kind::Vip, &ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT), 5);
            assert_eq!(words(&k), vec![0x6409000a, 0x00000011, 0x00000005]);
            assert_eq!(words(&backend_value(Kind::Vip, &"10.0.9.4:0".parse().unwrap())), vec![0x0409000a]);
        }
        assert_eq!(frontend_key(Kind::Published, &PUB), [192, 168, 33, 10, 6, 0, 0, 0, 0x13, 0x88, 0, 0]);
        assert_eq!(frontend_key(Kind::Vip, &VIP), [10, 0, 9, 100, 6, 0, 0, 0]);
    }

    #[test]
    fn a_batch_is_begin_one_message_per_op_end_and_only_the_last_asks_for_an_ack() {
        let ops = vec![
            NftOp::DeleteSlots { kind: Kind::Vip, key: VIP, size: 3, slots: vec![0, 1, 2] },
            NftOp::AddSlots {
                kind: Kind::Vip,
                key: VIP,
                size: 2,
                slots: vec![(0, "10.0.9.2:0".parse().unwrap()), (1, "10.0.9.4:0".parse().unwrap())],
            },
            NftOp::AddMasq((Kind::Vip, VIP)),
        ];
        let batch = encode(&ops, 100).unwrap();
        let msgs = messages(&batch);
        assert_eq!(msgs.iter().map(|m| m.0).collect::<Vec<_>>(), vec![0x10, 0x0a0e, 0x0a0c, 0x0a0c, 0x11]);
        assert_eq!(msgs.iter().map(|m| m.2).collect::<Vec<_>>(), vec![100, 101, 102, 103, 104]);
        assert_eq!(msgs.iter().map(|m| m.1 & NLM_F_ACK != 0).collect::<Vec<_>>(), vec![false, false, false, true, false]);
        // the add: table, set "vip_any_2", two elements with key and data
        let top = wire::attrs(&msgs[2].3[4..]);
        assert_eq!(wire::find(&top, NFTA_SET_ELEM_LIST_TABLE).unwrap().data, b"shoal\0");
        assert_eq!(wire::find(&top, NFTA_SET_ELEM_LIST_SET).unwrap().data, b"vip_any_2\0");
        let elems = wire::find(&top, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap().nested();
        assert_eq!(elems.len(), 2);
        let e1 = elems[1].nested();
        assert_eq!(wire::find(&e1, NFTA_SET_ELEM_KEY).unwrap().nested()[0].data, &slot_key(Kind::Vip, &VIP, 1)[..]);
        assert_eq!(wire::find(&e1, NFTA_SET_ELEM_DATA).unwrap().nested()[0].data, &[10, 0, 9, 4]);
        // the VIP's masq element goes to masq_any, keyed without a port
        let masq = wire::attrs(&msgs[3].3[4..]);
        assert_eq!(wire::find(&masq, NFTA_SET_ELEM_LIST_SET).unwrap().data, b"masq_any\0");
        let elems = wire::find(&masq, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap().nested();
        assert_eq!(wire::find(&elems[0].nested(), NFTA_SET_ELEM_KEY).unwrap().nested()[0].data, &[10, 0, 9, 100, 6, 0, 0, 0]);
        // the delete has keys only
        let del = wire::attrs(&msgs[1].3[4..]);
        let elems = wire::find(&del, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap().nested();
        assert_eq!(elems.len(), 3);
        assert!(wire::find(&elems[0].nested(), NFTA_SET_ELEM_DATA).is_none());
        assert!(encode(&[NftOp::AddTable], 1).is_none());
        assert!(encode(
            &[NftOp::AddRule { chain: "mesh_snat".into(), rule: "oifname \"x\" snat to 10.0.9.250".into(), comment: "c".into() }],
            1
        )
        .is_none());
    }

    #[test]
    fn balancing_rules_parse_and_encode_as_nft_lays_them_out() {
        let mark = parse_rule("ip daddr . meta l4proto . th dport @masq meta mark set meta mark | 0x5300").unwrap();
        assert_eq!(mark, NatRule::Mark { set: "masq".into(), mark: 0x5300, port: true });
        let dnat = parse_rule("dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @pub_3").unwrap();
        assert_eq!(dnat, NatRule::Dnat { modulus: 3, map: "pub_3".into(), port: true });
        assert!(parse_rule("meta mark & 0x5300 == 0x5300 jump mesh_snat").is_none());
        let msg = rule_message(5, false, "prerouting", &dnat, "shoal-pub_3");
        let top = wire::attrs(&msg[NLMSG_HDR_LEN + 4..]);
        assert_eq!(wire::find(&top, NFTA_RULE_CHAIN).unwrap().data, b"prerouting\0");
        assert_eq!(wire::find(&top, NFTA_RULE_USERDATA).unwrap().data, b"\x00\x0cshoal-pub_3\x00");
        // nft --debug=netlink: payload, meta, payload, numgen, lookup, nat (no l4proto cmp)
        let exprs = wire::find(&top, NFTA_RULE_EXPRESSIONS).unwrap().nested();
        let names: Vec<Vec<u8>> = exprs.iter().map(|e| wire::find(&e.nested(), NFTA_EXPR_NAME).unwrap().data.to_vec()).collect();
        assert_eq!(names, ["payload\0", "meta\0", "payload\0", "numgen\0", "lookup\0", "nat\0"].map(|s| s.as_bytes().to_vec()));
        let nat = wire::find(&exprs[5].nested(), NFTA_EXPR_DATA).unwrap().nested();
        assert_eq!(
            nat.iter().map(|a| (a.kind, u32::from_be_bytes(a.data.try_into().unwrap()))).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2), (3, 1), (4, 1), (5, 9), (6, 9), (7, 3)]
        );
        let msg = rule_message(5, false, "output", &mark, "shoal-mark");
        let exprs = wire::find(&wire::attrs(&msg[NLMSG_HDR_LEN + 4..]), NFTA_RULE_EXPRESSIONS).unwrap().nested();
        assert_eq!(exprs.len(), 7, "payload, meta, payload, lookup, meta, bitwise, meta");
    }

    /// The expressions of a rule message: (name, the attributes of its data as (kind, u32)).
    fn exprs(msg: &[u8]) -> Vec<(String, Vec<(u16, u32)>)> {
        let top = wire::attrs(&msg[NLMSG_HDR_LEN + 4..]);
        wire::find(&top, NFTA_RULE_EXPRESSIONS)
            .unwrap()
            .nested()
            .iter()
            .map(|e| {
                let e = e.nested();
                let name = String::from_utf8_lossy(wire::find(&e, NFTA_EXPR_NAME).unwrap().data).trim_end_matches('\0').to_string();
                let data = wire::find(&e, NFTA_EXPR_DATA).unwrap().nested();
                (name, data.iter().filter_map(|a| Some((a.kind, u32::from_be_bytes(a.data.try_into().ok()?)))).collect())
            })
            .collect()
    }

    #[test]
    fn vip_rules_leave_the_port_out_and_dnat_to_the_address_alone() {
        let mark = parse_rule("ip daddr . meta l4proto @masq_any meta mark set meta mark | 0x5300").unwrap();
        assert_eq!(mark, NatRule::Mark { set: "masq_any".into(), mark: 0x5300, port: false });
        let dnat = parse_rule("dnat ip to ip daddr . meta l4proto . numgen random mod 3 map @vip_any_3").unwrap();
        assert_eq!(dnat, NatRule::Dnat { modulus: 3, map: "vip_any_3".into(), port: false });
        // nft --debug=netlink: [ payload load 4b @ network header + 16 => reg 1 ]
        //   [ meta load l4proto => reg 9 ] [ numgen reg 10 = random mod 3 ]
        //   [ lookup reg 1 set vip_any_3 dreg 1 ] [ nat dnat ip addr_min reg 1 ]
        let e = exprs(&rule_message(5, false, "prerouting", &dnat, "shoal-vip_any_3"));
        assert_eq!(e.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["payload", "meta", "numgen", "lookup", "nat"]);
        assert_eq!(e[2].1, vec![(1, 10), (2, 3), (3, NFT_NG_RANDOM), (4, 0)]);
        assert_eq!(e[4].1, vec![(1, NFT_NAT_DNAT), (2, 2), (3, 1)], "addr_min only: the port is kept");
        // [ payload ... => reg 1 ] [ meta load l4proto => reg 9 ] [ lookup reg 1 set masq_any ]
        let e = exprs(&rule_message(5, false, "prerouting", &mark, "shoal-mark-any"));
        assert_eq!(e.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["payload", "meta", "lookup", "meta", "bitwise", "meta"]);
    }

    #[test]
    fn a_batch_too_large_for_one_send_falls_back() {
        let big: Vec<NftOp> =
            (0..5000u32).map(|i| NftOp::AddMasq((Kind::Vip, ServiceKey::tcp(Ipv4Addr::from(0x0a60_0000 + i), ANY_PORT)))).collect();
        assert!(encode(&big, 1).is_none());
    }

    #[test]
    fn a_refusal_reads_as_the_errno_then_the_kernels_words() {
        // Reading the answer is shoal_netlink::parse_ack's (tested there); what is left here is
        // how a refusal reads.
        let r = Refused { op: 1, errno: 2, message: Some("no such set".into()) };
        assert_eq!(r.to_string(), "No such file or directory (os error 2) (no such set)");
    }
}
