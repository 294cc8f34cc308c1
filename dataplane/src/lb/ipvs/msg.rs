//! The IPVS generic netlink family, encoded by hand (no crate speaks it). Constants from the
//! kernel's uapi `include/uapi/linux/ip_vs.h`; attribute order and forms as Docker's
//! `moby/ipvs` (`netlink.go`: `fillService`, `fillDestination`) writes them, which the kernel's
//! `ip_vs_ctl.c` parses with `nla_parse_nested_deprecated` (nests without NLA_F_NESTED).
//! Also the read side: the dumps of services and destinations (`ip_vs_genl_fill_service`,
//! `ip_vs_genl_fill_dest`) decoded into [`ServiceInfo`] and [`DestInfo`].

use std::net::SocketAddrV4;

use shoal_netlink::{self as wire, MsgBuilder, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

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
pub const CMD_SET_SERVICE: u8 = 2;
pub const CMD_DEL_SERVICE: u8 = 3;
pub const CMD_GET_SERVICE: u8 = 4;
pub const CMD_NEW_DEST: u8 = 5;
pub const CMD_SET_DEST: u8 = 6;
pub const CMD_DEL_DEST: u8 = 7;
pub const CMD_GET_DEST: u8 = 8;

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
pub const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub const DEST_ATTR_INACT_CONNS: u16 = 8;
pub const DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// IP_VS_CONN_F_FWD_MASK: the forwarding method bits of a destination's flags.
pub const CONN_F_FWD_MASK: u32 = 0x7;

/// IP_VS_CONN_F_MASQ: NAT forwarding (the only one that works across an overlay).
pub const CONN_F_MASQ: u32 = 0;
pub const AF_INET: u16 = 2;

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

/// GET_SERVICE as a dump: every service of this network namespace.
pub fn dump_services(family: u16, seq: u32) -> Vec<u8> {
    MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_DUMP, seq, &genl_header(CMD_GET_SERVICE)).finish()
}

/// GET_DEST as a dump: the destinations of the fwmark service `fwmark`.
pub fn dump_dests(family: u16, seq: u32, fwmark: u32) -> Vec<u8> {
    let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_DUMP, seq, &genl_header(CMD_GET_DEST));
    m.begin_nest(CMD_ATTR_SERVICE);
    m.u16_ne(SVC_ATTR_AF, AF_INET).u32_ne(SVC_ATTR_FWMARK, fwmark);
    m.end_nested();
    m.finish()
}

/// One service of a GET_SERVICE dump (address services have `fwmark` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub af: u16,
    pub fwmark: u32,
    pub scheduler: String,
}

/// One destination of a GET_DEST dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestInfo {
    pub addr: SocketAddrV4,
    /// IP_VS_CONN_F_* forwarding method ([`CONN_F_MASQ`] is NAT).
    pub fwd_method: u32,
    pub weight: u32,
    /// Established TCP connections.
    pub active: u32,
    /// Every other connection (closing TCP, all UDP).
    pub inactive: u32,
}

/// The nested attribute `kind` of a generic netlink message (the bytes after nlmsghdr).
fn nest<'a>(payload: &'a [u8], kind: u16) -> Option<Vec<wire::Attr<'a>>> {
    let top = wire::attrs(payload.get(4..)?);
    Some(wire::find(&top, kind)?.nested())
}

pub fn parse_service(payload: &[u8]) -> Option<ServiceInfo> {
    let a = nest(payload, CMD_ATTR_SERVICE)?;
    let scheduler = wire::find(&a, SVC_ATTR_SCHED_NAME)
        .map(|s| String::from_utf8_lossy(s.data.split(|b| *b == 0).next().unwrap_or_default()).to_string())
        .unwrap_or_default();
    Some(ServiceInfo {
        af: wire::find(&a, SVC_ATTR_AF)?.u16_ne()?,
        fwmark: wire::find(&a, SVC_ATTR_FWMARK).and_then(|m| m.u32_ne()).unwrap_or(0),
        scheduler,
    })
}

/// An IPv4 destination (the kernel sends the address as a 16-byte union nf_inet_addr).
pub fn parse_dest(payload: &[u8]) -> Option<DestInfo> {
    let a = nest(payload, CMD_ATTR_DEST)?;
    if wire::find(&a, DEST_ATTR_ADDR_FAMILY).and_then(|f| f.u16_ne()).is_some_and(|f| f != AF_INET) {
        return None;
    }
    let u32_of = |kind| wire::find(&a, kind).and_then(|x| x.u32_ne());
    Some(DestInfo {
        addr: SocketAddrV4::new(wire::find(&a, DEST_ATTR_ADDR)?.ipv4()?, wire::find(&a, DEST_ATTR_PORT)?.u16_be()?),
        fwd_method: u32_of(DEST_ATTR_FWD_METHOD)? & CONN_F_FWD_MASK,
        weight: u32_of(DEST_ATTR_WEIGHT)?,
        active: u32_of(DEST_ATTR_ACTIVE_CONNS).unwrap_or(0),
        inactive: u32_of(DEST_ATTR_INACT_CONNS).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected bytes written out by hand from ip_vs.h and moby/ipvs' attribute order
    /// (x86_64, little endian): family id 0x21, seq 1, fwmark 0x100, scheduler "rr".
    const NEW_SERVICE: &[u8] = &[
        0x4c, 0x00, 0x00, 0x00, 0x21, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, // nlmsghdr: len 76, type 0x21, REQUEST|ACK, seq 1
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
            0x20, 0x00, 0x00, 0x00, 0x10, 0x00, 0x05, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00,
            0x00, // CTRL_CMD_GETFAMILY, version 1
            0x09, 0x00, 0x02, 0x00, b'I', b'P', b'V', b'S', 0x00, 0x00, 0x00, 0x00, // CTRL_ATTR_FAMILY_NAME
        ];
        assert_eq!(get_family(7), expected);
    }

    #[test]
    fn dumps_ask_for_every_service_and_one_services_destinations() {
        let m = dump_services(0x21, 3);
        assert_eq!(m.len(), 20);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(m[16], CMD_GET_SERVICE);
        let d = dump_dests(0x21, 4, 0x5e00_0001);
        assert_eq!(d[16], CMD_GET_DEST);
        // IPVS_CMD_ATTR_SERVICE { AF_INET, FWMARK }: enough for ip_vs_genl_find_service
        assert_eq!(
            &d[20..],
            &[0x14, 0x00, 0x01, 0x00, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x5e]
        );
    }

    /// A dump answer as ip_vs_genl_fill_service / ip_vs_genl_fill_dest write it (payload only).
    fn answer(cmd: u8, nest: u16, fill: impl FnOnce(&mut MsgBuilder)) -> Vec<u8> {
        let mut m = MsgBuilder::new(0x21, 2, 1, &genl_header(cmd));
        m.begin_nest(nest);
        fill(&mut m);
        m.end_nested();
        m.finish()[wire::NLMSG_HDR_LEN..].to_vec()
    }

    #[test]
    fn service_and_destination_answers_decode() {
        let svc = answer(CMD_NEW_SERVICE, CMD_ATTR_SERVICE, |m| {
            m.u16_ne(SVC_ATTR_AF, AF_INET).u32_ne(SVC_ATTR_FWMARK, 0x5e12_3456).str(SVC_ATTR_SCHED_NAME, "wrr");
            m.attr(SVC_ATTR_FLAGS, &[0; 8]).u32_ne(SVC_ATTR_TIMEOUT, 0).u32_ne(SVC_ATTR_NETMASK, u32::MAX);
        });
        assert_eq!(parse_service(&svc), Some(ServiceInfo { af: AF_INET, fwmark: 0x5e12_3456, scheduler: "wrr".into() }));
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 0, 9, 3]);
        let dest = answer(CMD_NEW_DEST, CMD_ATTR_DEST, |m| {
            m.attr(DEST_ATTR_ADDR, &addr).u16_be(DEST_ATTR_PORT, 80).u32_ne(DEST_ATTR_FWD_METHOD, CONN_F_MASQ);
            m.u32_ne(DEST_ATTR_WEIGHT, 0).u32_ne(DEST_ATTR_U_THRESH, 0).u32_ne(DEST_ATTR_L_THRESH, 0);
            m.u32_ne(DEST_ATTR_ACTIVE_CONNS, 1).u32_ne(DEST_ATTR_INACT_CONNS, 7).u32_ne(9, 0).u16_ne(DEST_ATTR_ADDR_FAMILY, AF_INET);
        });
        let d = parse_dest(&dest).unwrap();
        assert_eq!(d, DestInfo { addr: "10.0.9.3:80".parse().unwrap(), fwd_method: CONN_F_MASQ, weight: 0, active: 1, inactive: 7 });
        let v6 = answer(CMD_NEW_DEST, CMD_ATTR_DEST, |m| {
            m.attr(DEST_ATTR_ADDR, &addr).u16_be(DEST_ATTR_PORT, 80).u32_ne(DEST_ATTR_FWD_METHOD, 0).u32_ne(DEST_ATTR_WEIGHT, 1);
            m.u16_ne(DEST_ATTR_ADDR_FAMILY, 10);
        });
        assert_eq!(parse_dest(&v6), None, "an IPv6 destination is not ours");
        assert_eq!(parse_dest(&svc), None);
    }
}
