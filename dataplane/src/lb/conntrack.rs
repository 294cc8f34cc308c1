//! Forgetting conntrack entries over ctnetlink: UDP flows NATed to a backend that left would
//! otherwise keep going to it (UDP has no close), so the nftables and IPVS balancers delete them
//! and the flow's next packet is balanced again. kube-proxy does the same.

use std::net::SocketAddrV4;

use super::plan::ANY_PORT;
use super::LbError;
use shoal_netlink::{self as wire, MsgBuilder, Socket, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const IPPROTO_UDP: u8 = 17;

/// nfgenmsg: family AF_INET, version 0, resource id 0.
const NFGEN_INET: [u8; 4] = [2, 0, 0, 0];

fn msg_type(cmd: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | cmd
}

/// The original-direction tuple attribute (raw) of an entry whose reply comes over UDP from a
/// backend in `backends` (port [`ANY_PORT`]: any port of that address) that is not in `keep`.
pub fn matches<'a>(entry: &'a [u8], backends: &[SocketAddrV4], keep: &[SocketAddrV4]) -> Option<&'a [u8]> {
    let top = wire::attrs(entry.get(4..)?);
    let reply = wire::find(&top, CTA_TUPLE_REPLY)?.nested();
    let ip = wire::find(&reply, CTA_TUPLE_IP)?.nested();
    let proto = wire::find(&reply, CTA_TUPLE_PROTO)?.nested();
    if wire::find(&proto, CTA_PROTO_NUM)?.u8()? != IPPROTO_UDP {
        return None;
    }
    let src = SocketAddrV4::new(wire::find(&ip, CTA_IP_V4_SRC)?.ipv4()?, wire::find(&proto, CTA_PROTO_SRC_PORT)?.u16_be()?);
    let any = SocketAddrV4::new(*src.ip(), ANY_PORT);
    if !(backends.contains(&src) || backends.contains(&any)) || keep.contains(&src) {
        return None;
    }
    wire::find(&top, CTA_TUPLE_ORIG).map(|a| a.data)
}

/// The delete request for the entry with original tuple `orig` (the attribute's payload).
pub fn delete_message(orig: &[u8], seq: u32) -> Vec<u8> {
    let mut m = MsgBuilder::new(msg_type(IPCTNL_MSG_CT_DELETE), NLM_F_REQUEST | NLM_F_ACK, seq, &NFGEN_INET);
    m.begin_nested(CTA_TUPLE_ORIG);
    let mut raw = m.finish();
    // Append the tuple's attributes as they came, then fix the nest and message lengths.
    let nest_start = raw.len() - 4;
    raw.extend_from_slice(orig);
    while !raw.len().is_multiple_of(4) {
        raw.push(0);
    }
    let nest_len = (raw.len() - nest_start) as u16;
    raw[nest_start..nest_start + 2].copy_from_slice(&nest_len.to_ne_bytes());
    let len = raw.len() as u32;
    raw[0..4].copy_from_slice(&len.to_ne_bytes());
    raw
}

/// Deletes every UDP conntrack entry of this namespace whose reply comes from one of
/// `backends` (port [`ANY_PORT`]: any port of the address) and not from one in `keep`.
/// Returns how many were deleted. Entries that vanish meanwhile are fine.
pub fn forget_udp_flows_to(backends: &[SocketAddrV4], keep: &[SocketAddrV4]) -> Result<usize, LbError> {
    let err = |what: &str, e: wire::Error| LbError::Conntrack { what: what.to_string(), detail: e.to_string() };
    let mut sock = Socket::open(wire::NETLINK_NETFILTER).map_err(|e| err("open ctnetlink", e))?;
    let seq = sock.next_seq();
    let dump = MsgBuilder::new(msg_type(IPCTNL_MSG_CT_GET), NLM_F_REQUEST | NLM_F_DUMP, seq, &NFGEN_INET).finish();
    let entries = sock.transact(&dump, seq).map_err(|e| err("dump conntrack", e))?;
    let mut deleted = 0;
    for e in &entries {
        let Some(orig) = matches(&e.payload, backends, keep) else { continue };
        let seq = sock.next_seq();
        match sock.transact(&delete_message(orig, seq), seq) {
            Ok(_) => deleted += 1,
            Err(e) if e.is(wire::Errno::NotFound) => {}
            Err(e) => return Err(err("delete a conntrack entry", e)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(m: &mut MsgBuilder, kind: u16, src: SocketAddrV4, proto: u8) {
        m.begin_nested(kind).begin_nested(CTA_TUPLE_IP).attr(CTA_IP_V4_SRC, &src.ip().octets()).attr(2, &[10, 0, 9, 250]).end_nested();
        m.begin_nested(CTA_TUPLE_PROTO)
            .u8(CTA_PROTO_NUM, proto)
            .u16_be(CTA_PROTO_SRC_PORT, src.port())
            .u16_be(3, 4000)
            .end_nested()
            .end_nested();
    }

    fn entry(reply_src: &str, proto: u8) -> Vec<u8> {
        let mut m = MsgBuilder::new(msg_type(IPCTNL_MSG_CT_GET), 0, 1, &NFGEN_INET);
        tuple(&mut m, CTA_TUPLE_ORIG, "192.168.33.100:4000".parse().unwrap(), proto);
        tuple(&mut m, CTA_TUPLE_REPLY, reply_src.parse().unwrap(), proto);
        m.finish()[wire::NLMSG_HDR_LEN..].to_vec()
    }

    #[test]
    fn only_udp_entries_replied_by_a_removed_backend_match() {
        let gone: Vec<SocketAddrV4> = vec!["10.0.9.3:53".parse().unwrap()];
        assert!(matches(&entry("10.0.9.3:53", IPPROTO_UDP), &gone, &[]).is_some());
        assert!(matches(&entry("10.0.9.3:53", 6), &gone, &[]).is_none());
        assert!(matches(&entry("10.0.9.2:53", IPPROTO_UDP), &gone, &[]).is_none());
        assert!(matches(&entry("10.0.9.3:54", IPPROTO_UDP), &gone, &[]).is_none());
    }

    #[test]
    fn a_vip_backend_matches_every_port_of_its_address_but_the_kept_ones() {
        let gone: Vec<SocketAddrV4> = vec!["10.0.9.3:0".parse().unwrap()];
        let keep: Vec<SocketAddrV4> = vec!["10.0.9.3:53".parse().unwrap()];
        assert!(matches(&entry("10.0.9.3:5353", IPPROTO_UDP), &gone, &keep).is_some());
        assert!(matches(&entry("10.0.9.3:9", IPPROTO_UDP), &gone, &[]).is_some());
        assert!(matches(&entry("10.0.9.3:53", IPPROTO_UDP), &gone, &keep).is_none());
        assert!(matches(&entry("10.0.9.3:53", 6), &gone, &[]).is_none());
        assert!(matches(&entry("10.0.9.2:53", IPPROTO_UDP), &gone, &[]).is_none());
    }

    #[test]
    fn delete_carries_the_original_tuple_verbatim() {
        let e = entry("10.0.9.3:53", IPPROTO_UDP);
        let orig = matches(&e, &["10.0.9.3:53".parse().unwrap()], &[]).unwrap().to_vec();
        let msg = delete_message(&orig, 9);
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), 0x0102);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        let top = wire::attrs(&msg[wire::NLMSG_HDR_LEN + 4..]);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].kind, CTA_TUPLE_ORIG);
        assert_eq!(top[0].data, &orig[..]);
    }
}
