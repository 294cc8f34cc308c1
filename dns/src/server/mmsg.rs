//! Batched UDP I/O: recvmmsg(2) and sendmmsg(2) through nix, so a busy listener pays one system
//! call per batch instead of two per query.

use std::{
    cell::RefCell,
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::RawFd,
};

use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage};

/// Datagrams per batch.
pub const BATCH: usize = 32;
/// Largest UDP query read (4 KiB: a question plus EDNS options fit many times over); a longer
/// datagram is cut and answered FORMERR.
pub const MAX_QUERY: usize = 4096;

/// Receive buffers, one set per runtime thread (used only between awaits).
struct RecvBuffers {
    bufs: Vec<u8>,
}

thread_local! {
    static RECV: RefCell<RecvBuffers> = RefCell::new(RecvBuffers { bufs: vec![0u8; BATCH * MAX_QUERY] });
}

/// Receives up to [`BATCH`] datagrams without blocking and calls `each(bytes, source, cut)` for
/// every one (`cut`: the datagram was longer than [`MAX_QUERY`] and `bytes` is its start);
/// returns how many. `WouldBlock` when none is waiting.
pub fn recv_batch(fd: RawFd, mut each: impl FnMut(&[u8], SockaddrStorage, bool)) -> io::Result<usize> {
    RECV.with(|recv| {
        let mut recv = recv.borrow_mut();
        let mut got = [(0usize, None::<SockaddrStorage>, false); BATCH];
        let count = {
            // Fresh headers each call: the kernel shrinks each slot's address length to the last
            // sender's, and nix does not reset it (an IPv6 listener on the same thread would
            // then read cut addresses).
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = recv.bufs.chunks_mut(MAX_QUERY).map(|c| [IoSliceMut::new(c)]).collect();
            let results = recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None).map_err(io::Error::from)?;
            let mut count = 0;
            for (slot, msg) in got.iter_mut().zip(results) {
                *slot = (msg.bytes, msg.address, msg.flags.contains(MsgFlags::MSG_TRUNC));
                count += 1;
            }
            count
        };
        for (i, (len, addr, cut)) in got.iter().take(count).enumerate() {
            if let Some(addr) = addr {
                let start = i * MAX_QUERY;
                each(&recv.bufs[start..start + len.min(&MAX_QUERY)], *addr, *cut);
            }
        }
        Ok(count)
    })
}

/// Sends `replies` without blocking; returns how many went out (the rest must be sent later).
pub fn send_batch(fd: RawFd, replies: &[(SockaddrStorage, Vec<u8>)]) -> io::Result<usize> {
    if replies.is_empty() {
        return Ok(0);
    }
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(replies.len(), None);
    let slices: Vec<[IoSlice<'_>; 1]> = replies.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = replies.iter().map(|(a, _)| Some(*a)).collect();
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let results = sendmmsg(fd, &mut headers, slices.iter(), &addrs, cmsgs, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)?;
    Ok(results.count())
}

/// The socket address of a received datagram's source.
pub fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Whether the address can be answered (not port 0: nothing to reply to).
pub fn answerable(addr: &SockaddrStorage) -> bool {
    socket_addr(addr).is_some_and(|a| a.port() != 0) && addr.len() > 0
}
