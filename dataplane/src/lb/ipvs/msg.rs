//! The IPVS generic netlink family, encoded by hand (no crate speaks it). Constants from the
//! kernel's uapi `include/uapi/linux/ip_vs.h`; attribute order and forms as Docker's
//! `moby/ipvs` (`netlink.go`: `fillService`, `fillDestination`) writes them, which the kernel's
//! `ip_vs_ctl.c` parses with `nla_parse_nested_deprecated` (nests without NLA_F_NESTED).

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::lb::wire::{MsgBuilder, NLM_F_ACK, NLM_F_REQUEST};

pub const GENL_NAME: &str = "IPVS";
pub const GENL_VERSION: u8 = 1;

// Generic netlink controller (linux/genetlink.h).
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

// enum { IPVS_CMD_UNSPEC = 0, IPVS_CMD_NEW_SERVICE, SET_SERVICE, DEL_SERVICE, GET_SERVICE,
//        NEW_DEST, SET_DEST, DEL_DEST, GET_DEST, ..., FLUSH = 17 }
pub const CMD_NEW_SERVICE: u8 = 1;
pub const CMD_DEL_SERVICE: u8 = 3;
pub const CMD_NEW_DEST: u8 = 5;
pub const CMD_SET_DEST: u8 = 6;
pub const CMD_DEL_DEST: u8 = 7;
pub const CMD_FLUSH: u8 = 17;

pub const CMD_ATTR_SERVICE: u16 = 1;
pub const CMD_ATTR_DEST: u16 = 2;

pub const SVC_ATTR_AF: u16 = 1;
pub const SVC_ATTR_FWMARK: u16 = 5;
pub const SVC_ATTR_SCHED_NAME: u16 = 6;
pub const SVC_ATTR_FLAGS: u16 = 7;
pub const SVC_ATTR_TIMEOUT: u16 = 8;
pub const SVC_ATTR_NETMASK: u16 = 9;

pub const DEST_ATTR_ADDR: u16 = 1;
pub const DEST_ATTR_PORT: u16 = 2;
pub const DEST_ATTR_FWD_METHOD: u16 = 3;
pub const DEST_ATTR_WEIGHT: u16 = 4;
pub const DEST_ATTR_U_THRESH: u16 = 5;
pub const DEST_ATTR_L_THRESH: u16 = 6;
pub const DEST_ATTR_ADDR_FAMILY: u16 = 11;

/// IP_VS_CONN_F_MASQ: NAT forwarding (the only one that works across an overlay).
pub const CONN_F_MASQ: u32 = 0;
const AF_INET: u16 = 2;

/// A fwmark service (Docker's form: iptables/nft marks the VIP's packets, IPVS balances the mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwmarkService {
    pub fwmark: u32,
    pub scheduler: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub addr: SocketAddrV4,
    pub weight: u32,
}

fn genl_header(cmd: u8) -> [u8; 4] {
    [cmd, GENL_VERSION, 0, 0]
}

/// CTRL_CMD_GETFAMILY "IPVS": answers with the family id, or ENOENT when the kernel has none.
pub fn get_family(seq: u32) -> Vec<u8> {
    let mut m = MsgBuilder::new(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
    m.str(CTRL_ATTR_FAMILY_NAME, GENL_NAME);
    m.finish()
}

fn service_attr(m: &mut MsgBuilder, s: &FwmarkService) {
    m.begin_nest(CMD_ATTR_SERVICE);
    m.u16_ne(SVC_ATTR_AF, AF_INET).u32_ne(SVC_ATTR_FWMARK, s.fwmark).str(SVC_ATTR_SCHED_NAME, &s.scheduler);
    let mut flags = [0u8; 8]; // struct ip_vs_flags { __u32 flags; __u32 mask; }
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    m.attr(SVC_ATTR_FLAGS, &flags).u32_ne(SVC_ATTR_TIMEOUT, 0).u32_ne(SVC_ATTR_NETMASK, u32::MAX);
    m.end_nested();
}

fn dest_attr(m: &mut MsgBuilder, d: &Dest) {
    m.begin_nest(CMD_ATTR_DEST);
    m.attr(DEST_ATTR_ADDR, &d.addr.ip().octets()).u16_be(DEST_ATTR_PORT, d.addr.port());
    m.u32_ne(DEST_ATTR_FWD_METHOD, CONN_F_MASQ).u32_ne(DEST_ATTR_WEIGHT, d.weight);
    m.u16_ne(DEST_ATTR_ADDR_FAMILY, AF_INET).u32_ne(DEST_ATTR_U_THRESH, 0).u32_ne(DEST_ATTR_L_THRESH, 0);
    m.end_nested();
}

pub fn service_message(family: u16, cmd: u8, seq: u32, s: &FwmarkService) -> Vec<u8> {
    let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, &genl_header(cmd));
    service_attr(&mut m, s);
    m.finish()
}

pub fn dest_message(family: u16, cmd: u8, seq: u32, s: &FwmarkService, d: &Dest) -> Vec<u8> {
    let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, &genl_header(cmd));
    service_attr(&mut m, s);
    dest_attr(&mut m, d);
    m.finish()
}

pub fn flush_message(family: u16, seq: u32) -> Vec<u8> {
    MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, &genl_header(CMD_FLUSH)).finish()
}

/// The fwmark of a frontend: stable, never 0, below the bits shoal's nftables table uses.
pub fn fwmark_for(addr: Ipv4Addr, port: u16, udp: bool) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in addr.octets().iter().chain(port.to_be_bytes().iter()).chain([udp as u8].iter()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x0100_0000 | (h & 0x00ff_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected bytes written out by hand from ip_vs.h and moby/ipvs' attribute order
    /// (x86_64, little endian): family id 0x21, seq 1, fwmark 0x100, scheduler "rr".
    const NEW_SERVICE: &[u8] = &[
        0x4c, 0x00, 0x00, 0x00, 0x21, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nlmsghdr: len 76, type 0x21, REQUEST|ACK, seq 1
        0x01, 0x01, 0x00, 0x00, // genlmsghdr: IPVS_CMD_NEW_SERVICE, version 1
        0x38, 0x00, 0x01, 0x00, // IPVS_CMD_ATTR_SERVICE, len 56
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // IPVS_SVC_ATTR_AF = AF_INET (u16) + pad
        0x08, 0x00, 0x05, 0x00, 0x00, 0x01, 0x00, 0x00, // IPVS_SVC_ATTR_FWMARK = 0x100
        0x07, 0x00, 0x06, 0x00, b'r', b'r', 0x00, 0x00, // IPVS_SVC_ATTR_SCHED_NAME = "rr\0" + pad
        0x0c, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, // FLAGS {flags 0, mask ~0}
        0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // IPVS_SVC_ATTR_TIMEOUT = 0
        0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, // IPVS_SVC_ATTR_NETMASK = /32
    ];

    /// The destination part of NEW_DEST for 10.0.9.2:80, masquerade, weight 1.
    const DEST_ATTR: &[u8] = &[
        0x3c, 0x00, 0x02, 0x00, // IPVS_CMD_ATTR_DEST, len 60
        0x08, 0x00, 0x01, 0x00, 10, 0, 9, 2, // IPVS_DEST_ATTR_ADDR (4 bytes for IPv4)
        0x06, 0x00, 0x02, 0x00, 0x00, 0x50, 0x00, 0x00, // IPVS_DEST_ATTR_PORT = 80, network order
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // FWD_METHOD = IP_VS_CONN_F_MASQ
        0x08, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // WEIGHT = 1
        0x06, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00, // ADDR_FAMILY = AF_INET
        0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, // U_THRESH = 0
        0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, // L_THRESH = 0
    ];

    fn svc() -> FwmarkService {
        FwmarkService { fwmark: 0x100, scheduler: "rr".into() }
    }

    #[test]
    fn new_service_matches_known_good_bytes() {
        assert_eq!(service_message(0x21, CMD_NEW_SERVICE, 1, &svc()), NEW_SERVICE);
    }

    #[test]
    fn new_dest_is_the_service_then_the_destination() {
        let d = Dest { addr: "10.0.9.2:80".parse().unwrap(), weight: 1 };
        let msg = dest_message(0x21, CMD_NEW_DEST, 1, &svc(), &d);
        assert_eq!(msg.len(), NEW_SERVICE.len() + DEST_ATTR.len());
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        assert_eq!(msg[16], CMD_NEW_DEST);
        assert_eq!(&msg[20..NEW_SERVICE.len()], &NEW_SERVICE[20..]);
        assert_eq!(&msg[NEW_SERVICE.len()..], DEST_ATTR);
    }

    #[test]
    fn get_family_asks_the_controller_for_ipvs() {
        let expected: &[u8] = &[
            0x20, 0x00, 0x00, 0x00, 0x10, 0x00, 0x05, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x03, 0x01, 0x00, 0x00, // CTRL_CMD_GETFAMILY, version 1
            0x09, 0x00, 0x02, 0x00, b'I', b'P', b'V', b'S', 0x00, 0x00, 0x00, 0x00, // CTRL_ATTR_FAMILY_NAME
        ];
        assert_eq!(get_family(7), expected);
    }

    #[test]
    fn fwmarks_are_stable_nonzero_and_distinct_per_frontend() {
        let a = fwmark_for(Ipv4Addr::new(10, 0, 9, 100), 80, false);
        assert_eq!(a, fwmark_for(Ipv4Addr::new(10, 0, 9, 100), 80, false));
        assert_ne!(a, fwmark_for(Ipv4Addr::new(10, 0, 9, 100), 80, true));
        assert_ne!(a, 0);
        assert_eq!(a & 0xff00, 0, "fwmarks stay clear of the SNAT mark bits");
    }
}
