//! A blocking netlink socket of one protocol, in the network namespace of the thread that opened
//! it: send a request, collect its answer, every receive bounded in time.

use std::time::Duration;

use netlink_sys::SocketAddr;

use crate::ack::parse_ack;
use crate::consts::{NLMSG_DONE, NLMSG_ERROR};
use crate::error::{Error, Refusal};
use crate::frame::{frames, Frame};

/// How long a netlink receive waits for the kernel. The kernel answers a request while it is
/// sent, so a longer wait means a lost answer (or a request that asked for none): the pass fails
/// with this in its error instead of hanging the data plane worker forever.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds every receive on `fd` by `after` (SO_RCVTIMEO): a receive that waits longer fails
/// with `WouldBlock`.
pub fn bound_receives(fd: &impl std::os::fd::AsFd, after: Duration) -> std::io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(after.as_secs() as _, after.subsec_micros() as _);
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv).map_err(std::io::Error::from)
}

/// Whether a receive error is [`bound_receives`]' timeout.
pub fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// One message of an answer: its type, and the bytes after the netlink header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub msg_type: u16,
    pub payload: Vec<u8>,
}

pub struct Socket {
    socket: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
    /// What a receive waits at most (see [`RECV_TIMEOUT`]).
    timeout: Duration,
}

impl Socket {
    /// Opens a socket of `protocol` (e.g. [`crate::NETLINK_ROUTE`]) in the calling thread's
    /// network namespace, its receives bounded by [`RECV_TIMEOUT`].
    pub fn open(protocol: isize) -> Result<Self, Error> {
        Self::open_with_timeout(protocol, RECV_TIMEOUT)
    }

    /// [`Socket::open`] with another bound on receives (tests use a short one).
    pub fn open_with_timeout(protocol: isize, timeout: Duration) -> Result<Self, Error> {
        let mut socket = netlink_sys::Socket::new(protocol).map_err(Error::Open)?;
        socket.bind_auto().map_err(Error::Open)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(Error::Open)?;
        // Best effort: the kernel's reason in words with an error (extended ack), and errors
        // without our whole request echoed back (only its header).
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        bound_receives(&socket, timeout).map_err(Error::Open)?;
        Ok(Self { socket, seq: 0, buf: vec![0; 1 << 16], timeout })
    }

    /// The sequence number for the next request (never 0: the kernel's own notifications use it).
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Reserves `n` sequence numbers (a batch) and returns the first.
    pub fn next_seqs(&mut self, n: u32) -> u32 {
        let first = self.next_seq();
        self.seq = first.wrapping_add(n.saturating_sub(1)).max(1);
        first
    }

    /// What a receive waits at most.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn send(&self, msg: &[u8]) -> Result<(), Error> {
        self.socket.send(msg, 0).map(drop).map_err(Error::Io)
    }

    /// Receives until `each` says the answer is complete (`Ok(true)`) or fails, handing it every
    /// message in order. The rest of a datagram after the last message is dropped.
    pub fn receive(&mut self, mut each: impl FnMut(Frame<'_>) -> Result<bool, Error>) -> Result<(), Error> {
        loop {
            let n = loop {
                match self.socket.recv(&mut &mut self.buf[..], 0) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if timed_out(&e) => return Err(Error::TimedOut { after: self.timeout }),
                    Err(e) => return Err(Error::Io(e)),
                }
            };
            for frame in frames(&self.buf[..n.min(self.buf.len())]) {
                if each(frame.map_err(|()| Error::Truncated)?)? {
                    return Ok(());
                }
            }
        }
    }

    /// Sends `msg` (built with sequence `seq`) and collects the messages of its answer until the
    /// ACK or the end of the dump. A refusal is [`Error::Kernel`] with the kernel's words.
    pub fn transact(&mut self, msg: &[u8], seq: u32) -> Result<Vec<Received>, Error> {
        self.send(msg)?;
        let mut out = Vec::new();
        self.receive(|frame| {
            if frame.seq != seq {
                return Ok(false); // a stale answer to an earlier request
            }
            match frame.msg_type {
                NLMSG_DONE => Ok(true),
                NLMSG_ERROR => match parse_ack(frame.flags, frame.payload) {
                    Some(ack) if ack.errno != 0 => Err(Error::Kernel(Refusal { errno: ack.errno, message: ack.message })),
                    Some(_) => Ok(true),
                    None => Err(Error::Truncated),
                },
                msg_type => {
                    out.push(Received { msg_type, payload: frame.payload.to_vec() });
                    Ok(false)
                }
            }
        })?;
        Ok(out)
    }
}

impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Errno, MsgBuilder, NETLINK_ROUTE, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

    const RTM_GETLINK: u16 = 18;
    const RTM_SETLINK: u16 = 19;
    const RTM_NEWLINK: u16 = 16;
    const RTM_DELLINK: u16 = 17;
    const IFLA_IFNAME: u16 = 3;

    /// `struct ifinfomsg` for interface `index`.
    fn ifinfomsg(index: i32) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        b
    }

    /// Runs `f` on a thread of its own in a new network namespace, which goes away with it.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
            f()
        })
        .join()
        .unwrap()
    }

    /// The kernel's words reach the caller: deleting a link that does not exist is refused
    /// with ENODEV, and a dump ends at NLMSG_DONE with every link of the namespace (lo).
    #[test]
    #[ignore = "needs root: run by tests/run.sh"]
    fn a_refusal_carries_its_errno_and_a_dump_ends_at_done() {
        in_new_netns(|| {
            let mut nl = Socket::open(NETLINK_ROUTE).unwrap();
            let seq = nl.next_seq();
            let mut m = MsgBuilder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, &ifinfomsg(0));
            m.str(IFLA_IFNAME, "shoal-nothere");
            let err = nl.transact(&m.finish(), seq).unwrap_err();
            assert!(err.is(Errno::NoDevice), "{err}");
            // A refusal with the kernel's text: a link of an unknown kind.
            let seq = nl.next_seq();
            let mut m = MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | 0x400, seq, &ifinfomsg(0));
            m.str(IFLA_IFNAME, "shoal-t0").begin_nested(18).str(1, "no-such-kind").end_nested();
            let err = nl.transact(&m.finish(), seq).unwrap_err();
            let Error::Kernel(refusal) = &err else { panic!("a refusal: {err}") };
            assert_eq!(refusal.message.as_deref(), Some("Unknown device type"), "the kernel's words: {err}");
            let seq = nl.next_seq();
            let links = nl.transact(&MsgBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, &ifinfomsg(0)).finish(), seq).unwrap();
            assert_eq!(links.len(), 1, "only lo in a new namespace");
        });
    }

    /// A request the kernel never answers (a successful change sent without NLM_F_ACK) fails
    /// the receive with the timeout instead of hanging, and the socket still works after it.
    #[test]
    #[ignore = "needs root: run by tests/run.sh"]
    fn a_receive_the_kernel_never_answers_times_out() {
        in_new_netns(|| {
            let mut nl = Socket::open_with_timeout(NETLINK_ROUTE, Duration::from_millis(300)).unwrap();
            let seq = nl.next_seq();
            nl.send(&MsgBuilder::new(RTM_SETLINK, NLM_F_REQUEST, seq, &ifinfomsg(1)).finish()).unwrap();
            let t0 = std::time::Instant::now();
            let err = nl.receive(|_| Ok(true)).unwrap_err();
            assert!(matches!(err, Error::TimedOut { .. }), "{err}");
            assert!(err.to_string().contains("did not answer"), "{err}");
            // Liveness, not speed: it returned rather than waiting for ever.
            assert!(t0.elapsed() < Duration::from_secs(10));
            let seq = nl.next_seq();
            assert!(!nl
                .transact(&MsgBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, &ifinfomsg(0)).finish(), seq)
                .unwrap()
                .is_empty());
        });
    }

    #[test]
    fn sequence_numbers_skip_zero_and_a_batch_reserves_its_range() {
        let mut nl =
            Socket { socket: netlink_sys::Socket::new(NETLINK_ROUTE).unwrap(), seq: u32::MAX - 1, buf: vec![], timeout: RECV_TIMEOUT };
        assert_eq!(nl.next_seq(), u32::MAX);
        assert_eq!(nl.next_seq(), 1, "0 is skipped");
        assert_eq!(nl.next_seqs(5), 2);
        assert_eq!(nl.next_seq(), 7);
    }
}
