//! Legacy tc filters (cls_bpf on a clsact qdisc) over rtnetlink: list the
//! filters of an interface's ingress and delete one by priority and handle.
//! aya 0.14 attaches and replaces them; it cannot list them with their
//! program, nor delete one by handle without a link object of the process
//! that attached it.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`.
const PARENT_INGRESS: u32 = 0xffff_fff2;
const ETH_P_ALL: u16 = 0x0003;

const NLMSGHDR_LEN: usize = 16;
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
    let sock = Socket::open()?;
    let req = request(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, ifindex, 0, 0);
    let mut filters = Vec::new();
    match sock.transact(&req, |payload| {
        if let Some(f) = parse_filter(payload) {
            filters.push(f);
        }
    }) {
        Ok(()) => Ok(filters),
        // No clsact qdisc: nothing is attached.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Delete the filter at (`priority`, `handle`) on the ingress of `ifindex`.
/// `NotFound` when there is none.
pub fn delete_ingress(ifindex: u32, priority: u16, handle: u32) -> io::Result<()> {
    let sock = Socket::open()?;
    let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be());
    let req = request(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, ifindex, handle, info);
    sock.transact(&req, |_| {})
}

/// An RTM_*TFILTER request: nlmsghdr + tcmsg on the clsact ingress parent.
fn request(kind: u16, flags: u16, ifindex: u32, handle: u32, info: u32) -> Vec<u8> {
    let len = (NLMSGHDR_LEN + TCMSG_LEN) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes()); // seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    b.extend_from_slice(&handle.to_ne_bytes());
    b.extend_from_slice(&PARENT_INGRESS.to_ne_bytes());
    b.extend_from_slice(&info.to_ne_bytes());
    b
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Netlink attributes of `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & NLA_TYPE_MASK;
        let payload = b.get(4..len)?;
        b = b.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, payload))
    })
}

fn c_string(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or_default()).into_owned()
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
    for (kind, value) in attrs(payload.get(TCMSG_LEN..)?) {
        match kind {
            TCA_KIND => f.kind = c_string(value),
            TCA_OPTIONS => {
                for (kind, value) in attrs(value) {
                    match kind {
                        TCA_BPF_NAME => f.name = Some(c_string(value)),
                        TCA_BPF_ID => f.prog_id = u32_at(value, 0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(f)
}

/// The error of an NLMSG_ERROR payload (`None` for an ack), with the
/// kernel's extended-ack message when it gave one.
pub(crate) fn parse_error(flags: u16, payload: &[u8]) -> Option<io::Error> {
    let errno = -(u32_at(payload, 0)? as i32);
    if errno == 0 {
        return None;
    }
    let err = io::Error::from_raw_os_error(errno);
    if flags & NLM_F_ACK_TLVS == 0 {
        return Some(err);
    }
    let orig_len = if flags & NLM_F_CAPPED != 0 { NLMSGHDR_LEN } else { u32_at(payload, 4).unwrap_or(0) as usize };
    let msg = payload
        .get((4 + orig_len).next_multiple_of(4)..)
        .and_then(|tlvs| attrs(tlvs).find(|(k, _)| *k == NLMSGERR_ATTR_MSG))
        .map(|(_, v)| c_string(v));
    Some(match msg {
        Some(m) if !m.is_empty() => io::Error::new(err.kind(), format!("{err}: {m}")),
        _ => err,
    })
}

/// How long a receive waits for the kernel's answer.
const RECV_TIMEOUT_SECS: i64 = 10;

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socket(2) returned a new descriptor that nothing else owns.
        let sock = Self(unsafe { OwnedFd::from_raw_fd(fd) });
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live c_int and its size is passed. Failure only
        // loses the extended-ack text, so the result is ignored.
        unsafe {
            libc::setsockopt(
                sock.0.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // A lost answer fails the pass after 10 s instead of hanging it (as the data plane's
        // other netlink sockets).
        let tv = libc::timeval { tv_sec: RECV_TIMEOUT_SECS, tv_usec: 0 };
        // SAFETY: `tv` is a live timeval and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// Send `req`, hand every RTM_NEWTFILTER payload to `each`, until the
    /// ack, the end of the dump or an error.
    fn transact(&self, req: &[u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
        // SAFETY: `req` is a live buffer of the length passed.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is a live, writable buffer of the length passed.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    let msg = format!("the kernel did not answer a tc filter request within {RECV_TIMEOUT_SECS} s (receive timed out)");
                    return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
                }
                return Err(e);
            }
            let mut msgs = &buf[..n as usize];
            while let (Some(len), Some(kind), Some(flags)) = (u32_at(msgs, 0), u16_at(msgs, 4), u16_at(msgs, 6)) {
                let len = len as usize;
                let Some(payload) = msgs.get(NLMSGHDR_LEN..len) else { break };
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return parse_error(flags, payload).map_or(Ok(()), Err),
                    _ => each(payload),
                }
                msgs = msgs.get(len.next_multiple_of(4)..).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(value);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    fn tcmsg(handle: u32, priority: u16) -> Vec<u8> {
        request(0, 0, 7, handle, (u32::from(priority) << 16) | 0x0300)[NLMSGHDR_LEN..].to_vec()
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
    fn errors_carry_the_kernel_extack_text() {
        assert!(parse_error(0, &0i32.to_ne_bytes()).is_none(), "0 is an ack");
        let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
        payload.extend(request(RTM_DELTFILTER, 0, 1, 1, 1)[..NLMSGHDR_LEN].iter());
        payload.extend(attr(NLMSGERR_ATTR_MSG, b"Filter already exists\0"));
        let e = parse_error(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload).expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("Filter already exists"), "{e}");
        let e = parse_error(0, &(-libc::ENOENT).to_ne_bytes()).expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
