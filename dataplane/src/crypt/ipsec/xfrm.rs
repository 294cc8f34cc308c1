//! XFRM netlink messages (`linux/xfrm.h`), encoded and decoded byte by byte at the offsets of the
//! C structs on Linux (sizes asserted in the tests against what the kernel's headers give):
//! `xfrm_usersa_info` 224, `xfrm_usersa_id` 24, `xfrm_userpolicy_info` 168,
//! `xfrm_userpolicy_id` 64, `xfrm_user_tmpl` 64, `xfrm_algo_aead` 72 + key. Explicit encoding
//! rather than `#[repr(C)]` casts: no unsafe, and the padding the kernel expects is written as
//! zeros on purpose. Pure.

use std::net::Ipv4Addr;

use shoal_netlink::{self as wire, MsgBuilder, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

use super::plan::{Dir, PolicySeen, Sa, SaSeen, AEAD, ICV_BITS, PRIORITY, REQID, VXLAN_PORT};

pub const XFRM_MSG_NEWSA: u16 = 0x10;
pub const XFRM_MSG_DELSA: u16 = 0x11;
pub const XFRM_MSG_GETSA: u16 = 0x12;
pub const XFRM_MSG_NEWPOLICY: u16 = 0x13;
pub const XFRM_MSG_DELPOLICY: u16 = 0x14;
pub const XFRM_MSG_GETPOLICY: u16 = 0x15;
/// Add or replace a policy.
pub const XFRM_MSG_UPDPOLICY: u16 = 0x19;

const XFRMA_TMPL: u16 = 5;
const XFRMA_ALG_AEAD: u16 = 18;
const XFRMA_REPLAY_ESN_VAL: u16 = 23;

pub const USERSA_INFO_LEN: usize = 224;
pub const USERSA_ID_LEN: usize = 24;
pub const USERPOLICY_INFO_LEN: usize = 168;
pub const USERPOLICY_ID_LEN: usize = 64;
pub const USER_TMPL_LEN: usize = 64;
const SELECTOR_LEN: usize = 56;
const ALGO_AEAD_LEN: usize = 72;

const AF_INET: u16 = libc::AF_INET as u16;
const IPPROTO_ESP: u8 = libc::IPPROTO_ESP as u8;
const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;
const XFRM_MODE_TRANSPORT: u8 = 0;
/// 64-bit sequence numbers: a busy SA's 32-bit counter would run out before 12 hours do.
const XFRM_STATE_ESN: u8 = 128;
/// The anti-replay window of inbound SAs, in packets (a multiple of 32).
const REPLAY_WINDOW: u32 = 128;
const XFRM_INF: u64 = u64::MAX;
const XFRM_POLICY_ALLOW: u8 = 0;

fn dir_byte(d: Dir) -> u8 {
    match d {
        Dir::In => 0,
        Dir::Out => 1,
    }
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(o.into())
}

fn u32_ne_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_ne_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// `struct xfrm_selector` for VXLAN on our port from `src` to `dst` (both /32).
fn selector(src: Ipv4Addr, dst: Ipv4Addr) -> [u8; SELECTOR_LEN] {
    let mut s = [0u8; SELECTOR_LEN];
    put(&mut s, 0, &dst.octets()); // daddr
    put(&mut s, 16, &src.octets()); // saddr
    put(&mut s, 32, &VXLAN_PORT.to_be_bytes()); // dport
    put(&mut s, 34, &0xffffu16.to_be_bytes()); // dport_mask
    put(&mut s, 40, &AF_INET.to_ne_bytes()); // family
    s[42] = 32; // prefixlen_d
    s[43] = 32; // prefixlen_s
    s[44] = IPPROTO_UDP;
    s
}

/// `struct xfrm_lifetime_cfg` with no limit (the plan rotates keys itself).
fn no_limits() -> [u8; 64] {
    let mut l = [0u8; 64];
    for i in 0..4 {
        put(&mut l, i * 8, &XFRM_INF.to_ne_bytes());
    }
    l
}

/// XFRM_MSG_NEWSA for `sa`: ESP transport mode, AES-GCM with the full ICV, 64-bit sequence
/// numbers, our request id.
pub fn new_sa(seq: u32, sa: &Sa) -> Vec<u8> {
    let mut info = [0u8; USERSA_INFO_LEN];
    // sel (0..56): zeros, any traffic the policies hand it.
    put(&mut info, 56, &sa.dst.octets()); // id.daddr
    put(&mut info, 72, &sa.spi.to_be_bytes()); // id.spi
    info[76] = IPPROTO_ESP; // id.proto
    put(&mut info, 80, &sa.src.octets()); // saddr
    put(&mut info, 96, &no_limits()); // lft
    put(&mut info, 208, &REQID.to_ne_bytes());
    put(&mut info, 212, &AF_INET.to_ne_bytes());
    info[214] = XFRM_MODE_TRANSPORT;
    info[215] = 0; // replay_window: given in the ESN attribute instead
    info[216] = XFRM_STATE_ESN;
    let mut m = MsgBuilder::new(XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK, seq, &info);
    let mut aead = vec![0u8; ALGO_AEAD_LEN];
    put(&mut aead, 0, AEAD.as_bytes());
    put(&mut aead, 64, &((sa.key.0.len() * 8) as u32).to_ne_bytes());
    put(&mut aead, 68, &ICV_BITS.to_ne_bytes());
    aead.extend_from_slice(&sa.key.0);
    m.attr(XFRMA_ALG_AEAD, &aead);
    // struct xfrm_replay_state_esn: bmp_len, oseq, seq, oseq_hi, seq_hi, replay_window, bmp[].
    let words = REPLAY_WINDOW / 32;
    let mut esn = vec![0u8; 24 + 4 * words as usize];
    put(&mut esn, 0, &words.to_ne_bytes());
    put(&mut esn, 20, &REPLAY_WINDOW.to_ne_bytes());
    m.attr(XFRMA_REPLAY_ESN_VAL, &esn);
    m.finish()
}

/// XFRM_MSG_DELSA of the ESP SA to `dst` with `spi` (the kernel finds an SA by those).
pub fn del_sa(seq: u32, dst: Ipv4Addr, spi: u32) -> Vec<u8> {
    let mut id = [0u8; USERSA_ID_LEN];
    put(&mut id, 0, &dst.octets());
    put(&mut id, 16, &spi.to_be_bytes());
    put(&mut id, 20, &AF_INET.to_ne_bytes());
    id[22] = IPPROTO_ESP;
    MsgBuilder::new(XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK, seq, &id).finish()
}

/// A dump of every SA (XFRM_MSG_GETSA) or policy (XFRM_MSG_GETPOLICY): the header alone, as
/// `ip xfrm state list` sends it.
pub fn dump(seq: u32, msg_type: u16) -> Vec<u8> {
    MsgBuilder::new(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, &[]).finish()
}

/// XFRM_MSG_UPDPOLICY (add or replace) of the policy making VXLAN `p.src` -> `p.dst` ESP-only:
/// one template, ESP in transport mode with our request id, required.
pub fn set_policy(seq: u32, p: &PolicySeen) -> Vec<u8> {
    let mut info = [0u8; USERPOLICY_INFO_LEN];
    put(&mut info, 0, &selector(p.src, p.dst));
    put(&mut info, 56, &no_limits());
    put(&mut info, 152, &PRIORITY.to_ne_bytes());
    info[160] = dir_byte(p.dir);
    info[161] = XFRM_POLICY_ALLOW;
    let mut m = MsgBuilder::new(XFRM_MSG_UPDPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq, &info);
    let mut tmpl = [0u8; USER_TMPL_LEN];
    // id.daddr and saddr stay zero: transport mode takes the packet's own addresses.
    tmpl[20] = IPPROTO_ESP; // id.proto
    put(&mut tmpl, 24, &AF_INET.to_ne_bytes());
    put(&mut tmpl, 44, &REQID.to_ne_bytes());
    tmpl[48] = XFRM_MODE_TRANSPORT;
    tmpl[50] = 0; // optional = 0: level required
    for at in [52, 56, 60] {
        put(&mut tmpl, at, &u32::MAX.to_ne_bytes()); // any algorithm (the SA fixes it)
    }
    m.attr(XFRMA_TMPL, &tmpl);
    m.finish()
}

/// XFRM_MSG_DELPOLICY of the policy with `p`'s selector and direction.
pub fn del_policy(seq: u32, p: &PolicySeen) -> Vec<u8> {
    let mut id = [0u8; USERPOLICY_ID_LEN];
    put(&mut id, 0, &selector(p.src, p.dst));
    id[60] = dir_byte(p.dir);
    MsgBuilder::new(XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq, &id).finish()
}

/// One SA of a dump, with its counters (what `ip -s xfrm state` shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaDumped {
    pub sa: SaSeen,
    pub reqid: u32,
    pub bytes: u64,
    pub packets: u64,
}

/// Reads an XFRM_MSG_NEWSA (the bytes after the netlink header): None when it is not an IPv4
/// ESP SA or too short.
pub fn parse_sa(payload: &[u8]) -> Option<SaDumped> {
    if payload.len() < USERSA_INFO_LEN || payload[76] != IPPROTO_ESP {
        return None;
    }
    if u16::from_ne_bytes([payload[212], payload[213]]) != AF_INET {
        return None;
    }
    let sa = SaSeen {
        dst: ip_at(payload, 56)?,
        spi: u32::from_be_bytes(payload[72..76].try_into().ok()?),
        src: ip_at(payload, 80)?,
        added: u64_ne_at(payload, 176)?, // curlft.add_time
    };
    Some(SaDumped { sa, reqid: u32_ne_at(payload, 208)?, bytes: u64_ne_at(payload, 160)?, packets: u64_ne_at(payload, 168)? })
}

/// Reads an XFRM_MSG_NEWPOLICY: Some when it is one of ours (an IPv4 selector for UDP to our
/// VXLAN port, a template with our request id).
pub fn parse_policy(payload: &[u8]) -> Option<PolicySeen> {
    if payload.len() < USERPOLICY_INFO_LEN {
        return None;
    }
    let ours_sel = u16::from_ne_bytes([payload[40], payload[41]]) == AF_INET
        && payload[44] == IPPROTO_UDP
        && u16::from_be_bytes([payload[32], payload[33]]) == VXLAN_PORT;
    let tmpl = wire::find(&wire::attrs(&payload[USERPOLICY_INFO_LEN..]), XFRMA_TMPL)?;
    let ours_tmpl = tmpl.data.chunks_exact(USER_TMPL_LEN).any(|t| u32_ne_at(t, 44) == Some(REQID));
    let dir = match payload[160] {
        0 => Dir::In,
        1 => Dir::Out,
        _ => return None,
    };
    (ours_sel && ours_tmpl).then_some(PolicySeen { dir, dst: ip_at(payload, 0)?, src: ip_at(payload, 16)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::ipsec::derive::SaKey;
    use shoal_netlink::NLMSG_HDR_LEN;

    fn sa() -> Sa {
        Sa { src: "192.168.33.10".parse().unwrap(), dst: "192.168.33.20".parse().unwrap(), spi: 0x1234_5678, key: SaKey([7; 36]) }
    }

    #[test]
    fn an_sa_message_has_the_kernels_layout_and_reads_back() {
        let msg = new_sa(9, &sa());
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), XFRM_MSG_NEWSA);
        let payload = &msg[NLMSG_HDR_LEN..];
        // The kernel would answer a dump with the same info struct (its counters filled in).
        let back = parse_sa(payload).unwrap();
        assert_eq!((back.sa.src, back.sa.dst, back.sa.spi, back.reqid), (sa().src, sa().dst, 0x1234_5678, REQID));
        assert_eq!(&payload[72..76], &[0x12, 0x34, 0x56, 0x78], "the SPI is in network order");
        let attrs = wire::attrs(&payload[USERSA_INFO_LEN..]);
        let aead = wire::find(&attrs, XFRMA_ALG_AEAD).unwrap();
        assert_eq!(aead.data.len(), ALGO_AEAD_LEN + 36);
        assert_eq!(wire::Attr { kind: 0, data: &aead.data[..64] }.c_string(), "rfc4106(gcm(aes))");
        assert_eq!(u32_ne_at(aead.data, 64), Some(288), "256-bit key + 32-bit salt, in bits");
        assert_eq!(u32_ne_at(aead.data, 68), Some(128), "the full 16-byte ICV");
        let esn = wire::find(&attrs, XFRMA_REPLAY_ESN_VAL).unwrap();
        assert_eq!((esn.data.len(), u32_ne_at(esn.data, 0), u32_ne_at(esn.data, 20)), (40, Some(4), Some(128)));
        assert_eq!(payload[216], XFRM_STATE_ESN);
        assert_eq!(payload[215], 0, "with ESN the window is in the attribute only");
    }

    #[test]
    fn a_policy_message_reads_back_as_ours_and_others_do_not() {
        let p = PolicySeen { dir: Dir::Out, src: sa().src, dst: sa().dst };
        let msg = set_policy(3, &p);
        assert_eq!(parse_policy(&msg[NLMSG_HDR_LEN..]), Some(p));
        let mut other = msg[NLMSG_HDR_LEN..].to_vec();
        other[32..34].copy_from_slice(&4789u16.to_be_bytes());
        assert_eq!(parse_policy(&other), None, "a policy for another port is not ours");
        let del = del_policy(4, &p);
        assert_eq!(del.len(), NLMSG_HDR_LEN + USERPOLICY_ID_LEN);
        assert_eq!(del[NLMSG_HDR_LEN + 60], 1, "direction out");
        assert_eq!(&del[NLMSG_HDR_LEN..NLMSG_HDR_LEN + 56], &msg[NLMSG_HDR_LEN..NLMSG_HDR_LEN + 56], "the same selector");
        let d = del_sa(5, sa().dst, sa().spi);
        assert_eq!(d.len(), NLMSG_HDR_LEN + USERSA_ID_LEN);
        assert_eq!(parse_sa(&d[NLMSG_HDR_LEN..]), None, "too short for an SA");
    }
}
