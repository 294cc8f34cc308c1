//! The userspace tunnel's UDP transport: gotatun's own socket (recvmmsg, UDP GRO) to receive,
//! and the same socket to send, with runs of sealed datagrams to one peer joined into UDP GSO
//! sends (`UDP_SEGMENT`), many per `sendmmsg`.
//!
//! gotatun 0.10 sends with one `sendmmsg` entry per datagram: every datagram then crosses the
//! whole stack on its own. With GSO the kernel carries a run as one buffer to the device (and
//! to the peer's socket when the peer is another namespace on this host). The kernel refuses
//! GSO where it cannot do it (a route through IPsec, a socket without checksums: EIO or
//! EINVAL); the transport then sends one datagram per entry from then on.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gotatun::packet::Packet;
use gotatun::udp::socket::{UdpSocket, UdpSocketFactory};
use gotatun::udp::{UdpSend, UdpTransportFactory, UdpTransportFactoryParams};
use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use tokio::io::Interest;

use super::batch::gso_runs;

/// How many datagrams gotatun hands over per [`UdpSend::send_many_to`].
const BATCH: usize = 256;
/// The most gotatun's own socket takes per `send_many_to` (one datagram per entry).
const ONE_BY_ONE: usize = 100;
/// The UDP socket's buffers.
const RECV_BUFFER: libc::c_int = 16 << 20;
const SEND_BUFFER: libc::c_int = 4 << 20;

fn set_buffer(socket: &UdpSocket, opt: libc::c_int, size: libc::c_int) -> io::Result<()> {
    let fd = socket.socket().as_raw_fd();
    // SAFETY: setsockopt with an int of the right size on a live socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[derive(Default)]
pub struct GsoUdpFactory {
    inner: UdpSocketFactory,
}

impl UdpTransportFactory for GsoUdpFactory {
    type Send = GsoSend;
    type Recv = UdpSocket;

    async fn bind(&mut self, params: &UdpTransportFactoryParams) -> io::Result<(GsoSend, UdpSocket)> {
        let (send, recv) = self.inner.bind(params).await?;
        // The default receive buffer (rmem_default, about 200 KiB) overflowed at 2 Gbit/s here
        // whenever the tunnel's thread was busy opening the last batch (UdpRcvbufErrors, and TCP
        // inside backing off). Root may set more than rmem_max with the FORCE options; where it
        // may not, the default stays, which only costs speed.
        for (opt, size, what) in [(libc::SO_RCVBUFFORCE, RECV_BUFFER, "receive"), (libc::SO_SNDBUFFORCE, SEND_BUFFER, "send")] {
            if let Err(e) = set_buffer(&recv, opt, size) {
                tracing::info!(error = %e, "the tunnel's UDP {what} buffer stays at the default");
            }
        }
        Ok((GsoSend { socket: send, gso: Arc::new(AtomicBool::new(true)) }, recv))
    }
}

#[derive(Clone)]
pub struct GsoSend {
    socket: UdpSocket,
    /// Cleared for good when the kernel refuses a GSO send.
    gso: Arc<AtomicBool>,
}

/// `CMSG_SPACE(sizeof(u16))` on 64-bit Linux: a 16-byte header and the value, padded to 8.
const CMSG_SPACE: usize = 24;

/// The `sendmmsg` entries and the buffers they point into (raw pointers: not `Send` by
/// themselves).
struct Msgs {
    headers: Vec<libc::mmsghdr>,
    _iovecs: Vec<libc::iovec>,
}

// SAFETY: the pointers lead into `packets`, `addrs` and `cmsgs` of the one `send_many_to` call
// that owns this value; they are used only there, on whichever thread runs it.
unsafe impl Send for Msgs {}

impl Msgs {
    /// One entry per run: its destination, its datagrams, and a `UDP_SEGMENT` of the first's
    /// size when there are several.
    fn new(
        packets: &[(Packet, SocketAddr)],
        shape: &[(usize, SocketAddr)],
        runs: &[Range<usize>],
        addrs: &[SockaddrStorage],
        cmsgs: &mut [[u64; CMSG_SPACE / 8]],
    ) -> Msgs {
        let iovecs: Vec<libc::iovec> =
            packets.iter().map(|(p, _)| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }).collect();
        let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(runs.len());
        for (i, run) in runs.iter().enumerate() {
            // SAFETY: mmsghdr is plain data; every pointer set below outlives the sendmmsg
            // calls (the vectors live to the end of this function and are not resized).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = addrs[i].len();
            h.msg_hdr.msg_iov = iovecs[run.start..].as_ptr() as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = run.len();
            if run.len() > 1 {
                let buf = cmsgs[i].as_mut_ptr() as *mut u8;
                let cmsg = buf as *mut libc::cmsghdr;
                // SAFETY: `buf` has CMSG_SPACE bytes, 8-aligned: a cmsghdr and a u16 fit.
                unsafe {
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, shape[run.start].0 as u16);
                }
                h.msg_hdr.msg_control = buf as *mut libc::c_void;
                h.msg_hdr.msg_controllen = CMSG_SPACE;
            }
            headers.push(h);
        }
        Msgs { headers, _iovecs: iovecs }
    }

    /// One `sendmmsg` of the entries from `from` on; how many went.
    fn send(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
        let rest = &mut self.headers[from..];
        // SAFETY: `rest` holds initialised entries whose buffers are alive (see `Msgs`).
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl UdpSend for GsoSend {
    type SendManyBuf = ();

    async fn send_to(&self, packet: Packet, destination: SocketAddr) -> io::Result<()> {
        self.socket.send_to(packet, destination).await
    }

    fn max_number_of_packets_to_send(&self) -> usize {
        BATCH
    }

    async fn send_many_to(&self, _: &mut (), packets: &mut Vec<(Packet, SocketAddr)>) -> io::Result<()> {
        let shape: Vec<(usize, SocketAddr)> = packets.iter().map(|(p, a)| (p.len(), *a)).collect();
        let runs = if self.gso.load(Ordering::Relaxed) { gso_runs(&shape) } else { (0..shape.len()).map(|i| i..i + 1).collect() };
        let addrs: Vec<SockaddrStorage> = runs.iter().map(|r| SockaddrStorage::from(shape[r.start].1)).collect();
        let mut cmsgs = vec![[0u64; CMSG_SPACE / 8]; runs.len()];
        let mut msgs = Msgs::new(packets, &shape, &runs, &addrs, &mut cmsgs);
        let sock = self.socket.socket();
        let fd = sock.as_raw_fd();
        let mut sent = 0;
        while sent < runs.len() {
            let msgs = &mut msgs;
            let result = sock.async_io(Interest::WRITABLE, || msgs.send(fd, sent)).await;
            match result {
                Ok(n) => sent += n,
                Err(e) if runs[sent].len() > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                    // The kernel cannot segment on this path: the rest goes one by one, and so
                    // does everything after.
                    if self.gso.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "UDP GSO refused: sealed datagrams go one per send from now on");
                    }
                    let start = runs[sent].start;
                    let mut rest: Vec<(Packet, SocketAddr)> = packets.drain(start..).collect();
                    packets.clear();
                    let mut buf = Default::default();
                    while !rest.is_empty() {
                        let mut chunk: Vec<(Packet, SocketAddr)> = rest.drain(..rest.len().min(ONE_BY_ONE)).collect();
                        self.socket.send_many_to(&mut buf, &mut chunk).await?;
                    }
                    return Ok(());
                }
                Err(e) => {
                    packets.clear();
                    return Err(e);
                }
            }
        }
        packets.clear();
        Ok(())
    }

    fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        self.socket.local_addr().map(Some)
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        UdpSend::set_fwmark(&self.socket, mark)
    }
}
