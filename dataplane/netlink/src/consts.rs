//! The numbers of `linux/netlink.h` the families here share.

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDR_LEN: usize = 16;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
/// On an NLMSG_ERROR: the request was not echoed whole, only its header (NETLINK_CAP_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;
/// On an NLMSG_ERROR: extended-ack attributes follow the echoed request (NETLINK_EXT_ACK).
pub const NLM_F_ACK_TLVS: u16 = 0x200;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLA_F_NESTED: u16 = 0x8000;
/// An attribute's type without the nested and byte-order flags.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// The extended-ack attribute with the kernel's human-readable reason.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

pub const NETLINK_ROUTE: isize = 0;
/// XFRM (IPsec SAs and policies), `linux/xfrm.h`.
pub const NETLINK_XFRM: isize = 6;
pub const NETLINK_NETFILTER: isize = 12;
pub const NETLINK_GENERIC: isize = 16;

/// Netlink messages and attributes are aligned to 4 bytes.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}
