//! A blocking rtnetlink socket: send one request, collect its ACK or dump.
//!
//! A netlink socket belongs to the network namespace it was opened in, so a socket for a task's
//! namespace is opened on a short-lived thread that entered it (see [`crate::netns`]) and then used
//! from anywhere.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::error::{KernelError, NetlinkError};

/// How long a netlink receive waits for the kernel. The kernel answers a request while it is
/// sent, so a longer wait means a lost answer (or a request that asked for none): the pass fails
/// with this in its error instead of hanging the data plane worker forever.
pub const RECV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bounds every receive on `fd` by `after` (SO_RCVTIMEO): a receive that waits longer fails
/// with `WouldBlock`.
pub fn bound_receives(fd: &impl std::os::fd::AsFd, after: std::time::Duration) -> std::io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(after.as_secs() as _, after.subsec_micros() as _);
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv).map_err(std::io::Error::from)
}

/// Whether a receive error is [`bound_receives`]' timeout.
pub fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Attribute of an NLMSG_ERROR message carrying the kernel's human-readable reason.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr` echoed back in an error when the socket has CAP_ACK set.
const NLMSG_HDR_LEN: usize = 16;

pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// What a receive waits at most (see [`RECV_TIMEOUT`]).
    timeout: std::time::Duration,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_with_timeout(RECV_TIMEOUT)
    }

    /// [`Netlink::open`] with another bound on receives (tests use a short one).
    pub fn open_with_timeout(timeout: std::time::Duration) -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(NetlinkError::Open)?;
        // Ask for the kernel's extended ack (a sentence like "VXLAN device with the specified VNI
        // already exists") and for errors without our whole request echoed back.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        bound_receives(&socket, timeout).map_err(NetlinkError::Open)?;
        Ok(Self { socket, seq: 0, buf: vec![0; 1 << 16], timeout })
    }

    /// Sends a request that changes the kernel and waits for its ACK.
    /// `what` names the operation for the error ("add vxlan shv4097").
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, what: impl FnOnce() -> String) -> Result<(), NetlinkError> {
        let seq = match self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags) {
            Ok(seq) => seq,
            Err(e) => return Err(NetlinkError::Io { what: what(), source: e }),
        };
        let mut outcome = Ok(());
        let mut what = Some(what);
        self.receive(seq, |payload| match payload {
            NetlinkPayload::Error(err) => {
                if let Some(code) = err.code {
                    outcome = Err(NetlinkError::Kernel(KernelError {
                        what: what.take().map(|f| f()).unwrap_or_default(),
                        errno: code.get().abs(),
                        extack: parse_extack(&err.header),
                    }));
                }
                true
            }
            _ => false,
        })?;
        outcome
    }

    /// Sends a dump request and returns every message of the answer.
    pub fn dump(&mut self, msg: RouteNetlinkMessage, what: &str) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP).map_err(|e| NetlinkError::Io { what: what.to_string(), source: e })?;
        let mut out = Ok(Vec::new());
        self.receive(seq, |payload| match payload {
            NetlinkPayload::InnerMessage(m) => {
                if let Ok(v) = &mut out {
                    v.push(m);
                }
                false
            }
            NetlinkPayload::Done(_) => true,
            NetlinkPayload::Error(err) => {
                if let Some(code) = err.code {
                    out = Err(NetlinkError::Kernel(KernelError {
                        what: what.to_string(),
                        errno: code.get().abs(),
                        extack: parse_extack(&err.header),
                    }));
                }
                true
            }
            _ => false,
        })?;
        out
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(self.seq)
    }

    /// Reads messages of sequence `seq`, handing each payload to `each` until it says the answer
    /// is complete.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> bool) -> Result<(), NetlinkError> {
        loop {
            let n = loop {
                self.buf.clear();
                match self.socket.recv(&mut self.buf, 0) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if timed_out(&e) => return Err(NetlinkError::TimedOut { seq, after: self.timeout }),
                    Err(e) => return Err(NetlinkError::Io { what: "receive".into(), source: e }),
                }
            };
            let mut offset = 0;
            let mut finished = false;
            while offset < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a stale answer to an earlier request
                }
                finished |= each(msg.payload);
            }
            if finished {
                return Ok(());
            }
        }
    }
}

/// The kernel appends TLVs after the echoed request header when NLM_F_ACK_TLVS is set.
fn parse_extack(echoed: &[u8]) -> Option<String> {
    if echoed.len() < NLMSG_HDR_LEN {
        return None;
    }
    let mut tlvs = &echoed[NLMSG_HDR_LEN..];
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = &tlvs[(len + 3) & !3..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request the kernel never answers (a successful change sent without NLM_F_ACK) fails
    /// the receive with the timeout, instead of hanging the data plane worker. In a network
    /// namespace of the test thread's own, which goes away with the thread.
    #[test]
    #[ignore = "needs root: run by tests/run.sh"]
    fn a_receive_the_kernel_never_answers_times_out() {
        assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
            let mut nl = Netlink::open_with_timeout(std::time::Duration::from_millis(300)).unwrap();
            let mut link = netlink_packet_route::link::LinkMessage::default();
            link.header.index = 1; // lo, changed in nothing
            let seq = nl.send(RouteNetlinkMessage::SetLink(link), NLM_F_REQUEST).unwrap();
            let t0 = std::time::Instant::now();
            let err = nl.receive(seq, |_| true).unwrap_err();
            assert!(matches!(err, NetlinkError::TimedOut { .. }), "{err}");
            assert!(err.to_string().contains("did not answer"), "{err}");
            // Liveness, not speed: it returned rather than waiting for ever.
            assert!(t0.elapsed() < std::time::Duration::from_secs(10));
            // The socket still works after a timeout.
            assert!(!nl.dump(RouteNetlinkMessage::GetLink(Default::default()), "dump links").unwrap().is_empty());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn extack_message_is_found_after_the_echoed_header() {
        let mut bytes = vec![0u8; NLMSG_HDR_LEN];
        let text = b"VXLAN device with the specified VNI already exists\0";
        let len = (4 + text.len()) as u16;
        bytes.extend_from_slice(&len.to_ne_bytes());
        bytes.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        bytes.extend_from_slice(text);
        assert_eq!(parse_extack(&bytes).as_deref(), Some("VXLAN device with the specified VNI already exists"));
    }

    #[test]
    fn no_extack_gives_none() {
        assert_eq!(parse_extack(&[0u8; NLMSG_HDR_LEN]), None);
        assert_eq!(parse_extack(&[]), None);
    }
}
