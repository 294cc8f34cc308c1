//! Legacy tc filters (cls_bpf on a clsact qdisc) over rtnetlink: list the
//! filters of an interface's ingress and delete one by priority and handle.
//! aya 0.14 attaches and replaces them; it cannot list them with their
//! program, nor delete one by handle without a link object of the process
//! that attached it.

use std::io;

use shoal_netlink::{self as netlink, Errno, MsgBuilder, Socket, NETLINK_ROUTE, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`.
const PARENT_INGRESS: u32 = 0xffff_fff2;
const ETH_P_ALL: u16 = 0x0003;

const TCMSG_LEN: usize = 20;

/// One filter on an interface's ingress, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    /// Priority (lower runs first).
    pub priority: u16,
    /// Handle within the priority.
    pub handle: u32,
    /// Classifier kind (`bpf` for cls_bpf).
    pub kind: String,
    /// For cls_bpf: the name given when it was attached (aya gives the program's name).
    pub name: Option<String>,
    /// For cls_bpf: the id of the program it runs.
    pub prog_id: Option<u32>,
}

/// The filters on the ingress hook (clsact) of interface `ifindex`. Empty
/// when the interface has no clsact qdisc.
pub fn list_ingress(ifindex: u32) -> io::Result<Vec<TcFilter>> {
    let mut sock = Socket::open(NETLINK_ROUTE)?;
    let seq = sock.next_seq();
    match sock.transact(&request(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, seq, ifindex, 0, 0), seq) {
        Ok(answers) => Ok(answers.iter().filter_map(|a| parse_filter(&a.payload)).collect()),
        // No clsact qdisc: nothing is attached.
        Err(e) if e.is(Errno::Invalid) || e.is(Errno::NotFound) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Delete the filter at (`priority`, `handle`) on the ingress of `ifindex`.
/// `NotFound` when there is none.
pub fn delete_ingress(ifindex: u32, priority: u16, handle: u32) -> io::Result<()> {
    let mut sock = Socket::open(NETLINK_ROUTE)?;
    let seq = sock.next_seq();
    let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be());
    sock.transact(&request(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, seq, ifindex, handle, info), seq)?;
    Ok(())
}

/// An RTM_*TFILTER request: nlmsghdr + tcmsg on the clsact ingress parent.
fn request(kind: u16, flags: u16, seq: u32, ifindex: u32, handle: u32, info: u32) -> Vec<u8> {
    let mut tcmsg = Vec::with_capacity(TCMSG_LEN);
    tcmsg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    tcmsg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    tcmsg.extend_from_slice(&handle.to_ne_bytes());
    tcmsg.extend_from_slice(&PARENT_INGRESS.to_ne_bytes());
    tcmsg.extend_from_slice(&info.to_ne_bytes());
    MsgBuilder::new(kind, flags, seq, &tcmsg).finish()
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A filter from an RTM_NEWTFILTER payload (tcmsg + attributes); `None` for
/// the entries the dump gives for a priority as a whole (handle 0).
pub(crate) fn parse_filter(payload: &[u8]) -> Option<TcFilter> {
    let handle = u32_at(payload, 8)?;
    let info = u32_at(payload, 16)?;
    if handle == 0 {
        return None;
    }
    let mut f = TcFilter { priority: (info >> 16) as u16, handle, kind: String::new(), name: None, prog_id: None };
    for a in netlink::attrs(payload.get(TCMSG_LEN..)?) {
        match a.kind {
            TCA_KIND => f.kind = a.c_string(),
            TCA_OPTIONS => {
                for o in a.nested() {
                    match o.kind {
                        TCA_BPF_NAME => f.name = Some(o.c_string()),
                        TCA_BPF_ID => f.prog_id = o.u32_ne(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut m = MsgBuilder::new(0, 0, 0, &[]);
        m.attr(kind, value);
        m.finish()[netlink::NLMSG_HDR_LEN..].to_vec()
    }

    fn tcmsg(handle: u32, priority: u16) -> Vec<u8> {
        request(0, 0, 1, 7, handle, (u32::from(priority) << 16) | 0x0300)[netlink::NLMSG_HDR_LEN..].to_vec()
    }

    #[test]
    fn a_cls_bpf_filter_reads_back_with_its_program() {
        let mut opts = attr(TCA_BPF_NAME, b"nat_reply\0");
        opts.extend(attr(TCA_BPF_ID, &42u32.to_ne_bytes()));
        let mut payload = tcmsg(2, 0x5348);
        payload.extend(attr(TCA_KIND, b"bpf\0"));
        payload.extend(attr(TCA_OPTIONS | 0x8000, &opts));
        let f = parse_filter(&payload).expect("a filter");
        assert_eq!(f, TcFilter { priority: 0x5348, handle: 2, kind: "bpf".into(), name: Some("nat_reply".into()), prog_id: Some(42) });
    }

    #[test]
    fn the_entry_of_a_whole_priority_is_not_a_filter() {
        let mut payload = tcmsg(0, 0x5348);
        payload.extend(attr(TCA_KIND, b"bpf\0"));
        assert_eq!(parse_filter(&payload), None);
        assert_eq!(parse_filter(&payload[..10]), None, "truncated");
    }

    #[test]
    fn a_request_is_a_header_and_a_tcmsg_on_the_ingress_parent() {
        let r = request(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, 9, 7, 2, 0x5348_0300);
        assert_eq!(r.len(), netlink::NLMSG_HDR_LEN + TCMSG_LEN);
        let f = netlink::frames(&r).next().unwrap().unwrap();
        assert_eq!((f.msg_type, f.flags, f.seq), (RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, 9));
        assert_eq!(u32_at(f.payload, 4), Some(7));
        assert_eq!(u32_at(f.payload, 12), Some(PARENT_INGRESS));
    }

    /// A refusal reads through the netlink layer's one parser and keeps the kernel's words and
    /// its errno's kind when it becomes an `io::Error` (callers here match `NotFound`).
    #[test]
    fn errors_carry_the_kernel_extack_text() {
        let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
        payload.extend(request(RTM_DELTFILTER, 0, 1, 1, 1, 1)[..netlink::NLMSG_HDR_LEN].iter());
        payload.extend(attr(netlink::NLMSGERR_ATTR_MSG, b"Filter already exists\0"));
        let ack = netlink::parse_ack(netlink::NLM_F_ACK_TLVS | netlink::NLM_F_CAPPED, &payload).expect("an error");
        let e: io::Error = netlink::Error::Kernel(netlink::Refusal { errno: ack.errno, message: ack.message }).into();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("Filter already exists"), "{e}");
        let e: io::Error = netlink::Error::Kernel(netlink::Refusal { errno: libc::ENOENT, message: None }).into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
