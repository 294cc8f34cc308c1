//! A blocking rtnetlink socket: send one request, collect its ACK or dump.
//!
//! A netlink socket belongs to the network namespace it was opened in, so a socket for a task's
//! namespace is opened on a short-lived thread that entered it (see [`crate::netns`]) and then used
//! from anywhere.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use shoal_netlink::{Frame, NETLINK_ROUTE, NLMSG_DONE, NLMSG_ERROR};

pub use shoal_netlink::{bound_receives, timed_out, RECV_TIMEOUT};

use super::error::{KernelError, NetlinkError};

/// An rtnetlink socket: requests and answers typed by netlink-packet-route, framed, sent and
/// read by the one netlink layer (`shoal-netlink`), which also reads the kernel's refusals.
pub struct Netlink {
    socket: shoal_netlink::Socket,
}

/// The data plane's error for what the netlink layer said about request `seq` (`what`).
fn layer_error(e: shoal_netlink::Error, seq: u32, what: impl FnOnce() -> String) -> NetlinkError {
    match e {
        shoal_netlink::Error::Open(e) => NetlinkError::Open(e),
        shoal_netlink::Error::Io(source) => NetlinkError::Io { what: what(), source },
        shoal_netlink::Error::TimedOut { after } => NetlinkError::TimedOut { seq, after },
        shoal_netlink::Error::Truncated => NetlinkError::Decode("truncated netlink message".into()),
        shoal_netlink::Error::Kernel(r) => NetlinkError::Kernel(KernelError { what: what(), errno: r.errno, extack: r.message }),
    }
}

/// The refusal in an NLMSG_ERROR frame, if it is one (an ACK is None).
fn refusal(frame: &Frame<'_>) -> Result<Option<shoal_netlink::Refusal>, shoal_netlink::Error> {
    match shoal_netlink::parse_ack(frame.flags, frame.payload) {
        Some(ack) if ack.errno != 0 => Ok(Some(shoal_netlink::Refusal { errno: ack.errno, message: ack.message })),
        Some(_) => Ok(None),
        None => Err(shoal_netlink::Error::Truncated),
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_with_timeout(RECV_TIMEOUT)
    }

    /// [`Netlink::open`] with another bound on receives (tests use a short one).
    pub fn open_with_timeout(timeout: std::time::Duration) -> Result<Self, NetlinkError> {
        // The layer asks for the kernel's extended ack (a sentence like "VXLAN device with the
        // specified VNI already exists") and for errors without our whole request echoed back.
        let socket = shoal_netlink::Socket::open_with_timeout(NETLINK_ROUTE, timeout).map_err(|e| layer_error(e, 0, String::new))?;
        Ok(Self { socket })
    }

    /// Sends a request that changes the kernel and waits for its ACK.
    /// `what` names the operation for the error ("add vxlan shv4097").
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, what: impl FnOnce() -> String) -> Result<(), NetlinkError> {
        let seq = match self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags) {
            Ok(seq) => seq,
            Err(e) => return Err(layer_error(e, 0, what)),
        };
        let mut refused = None;
        self.socket
            .receive(|frame| {
                if frame.seq != seq || frame.msg_type != NLMSG_ERROR {
                    return Ok(false); // a stale answer to an earlier request
                }
                refused = refusal(&frame)?;
                Ok(true)
            })
            .and_then(|()| refused.map_or(Ok(()), |r| Err(shoal_netlink::Error::Kernel(r))))
            .map_err(|e| layer_error(e, seq, what))
    }

    /// Sends a dump request and returns every message of the answer.
    pub fn dump(&mut self, msg: RouteNetlinkMessage, what: &str) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP).map_err(|e| layer_error(e, 0, || what.to_string()))?;
        let mut out = Vec::new();
        let mut refused = None;
        let mut undecodable = None;
        self.socket
            .receive(|frame| {
                if frame.seq != seq {
                    return Ok(false); // a stale answer to an earlier request
                }
                match frame.msg_type {
                    NLMSG_DONE => Ok(true),
                    NLMSG_ERROR => {
                        refused = refusal(&frame)?;
                        Ok(true)
                    }
                    _ => {
                        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame.bytes) {
                            Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(m), .. }) => out.push(m),
                            Ok(_) => {}
                            Err(e) => {
                                undecodable.get_or_insert(e.to_string());
                            }
                        }
                        Ok(false)
                    }
                }
            })
            .map_err(|e| layer_error(e, seq, || what.to_string()))?;
        if let Some(r) = refused {
            return Err(layer_error(shoal_netlink::Error::Kernel(r), seq, || what.to_string()));
        }
        match undecodable {
            Some(e) => Err(NetlinkError::Decode(e)),
            None => Ok(out),
        }
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, shoal_netlink::Error> {
        let seq = self.socket.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes)?;
        Ok(seq)
    }
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
            let t0 = std::time::Instant::now();
            // No NLM_F_ACK asked for: `request` adds it, so send the request bare.
            let seq = nl.send(RouteNetlinkMessage::SetLink(link), NLM_F_REQUEST).unwrap();
            let err = nl.socket.receive(|_| Ok(true)).map_err(|e| layer_error(e, seq, || "set lo".into())).unwrap_err();
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

    /// The kernel's refusal reaches the user with the operation named and the kernel's words.
    #[test]
    #[ignore = "needs root: run by tests/run.sh"]
    fn a_refusal_names_the_operation_and_carries_the_kernels_words() {
        assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
            let mut nl = Netlink::open().unwrap();
            let mut link = netlink_packet_route::link::LinkMessage::default();
            link.attributes.push(netlink_packet_route::link::LinkAttribute::IfName("shoal-t0".into()));
            link.attributes.push(netlink_packet_route::link::LinkAttribute::LinkInfo(vec![netlink_packet_route::link::LinkInfo::Kind(
                netlink_packet_route::link::InfoKind::Other("no-such-kind".into()),
            )]));
            let err = nl
                .request(RouteNetlinkMessage::NewLink(link), netlink_packet_core::NLM_F_CREATE, || "add link shoal-t0".into())
                .unwrap_err();
            let k = err.kernel().expect("a refusal");
            assert_eq!(k.extack.as_deref(), Some("Unknown device type"), "{err}");
            assert!(err.to_string().starts_with("add link shoal-t0: "), "{err}");
        })
        .join()
        .unwrap();
    }
}
