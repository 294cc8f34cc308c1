//! The UDP loop of one listener: local answers inline, forwarded queries on their own tasks
//! (bounded by the listener's permits).
//!
//! Once the socket is readable, datagrams are read and answered in batches (recvmmsg/sendmmsg,
//! no await per packet); after a few batches the loop yields so one busy task cannot hold a
//! runtime thread.

use std::{io, net::SocketAddr, os::fd::AsRawFd, sync::Arc};

use nix::sys::socket::SockaddrStorage;
use tokio::{io::Interest, net::UdpSocket};

use super::{
    listener::Listener,
    mmsg::{self, BATCH},
};
use crate::query::{Action, ForwardQuery, Transport};

/// Batches handled before yielding to other tasks.
const BATCHES_PER_TURN: usize = 4;

/// Serves `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, listener: Arc<Listener>) {
    let socket = Arc::new(socket);
    let fd = socket.as_raw_fd();
    let mut replies: Vec<(SockaddrStorage, Vec<u8>)> = Vec::with_capacity(BATCH);
    let mut forwards: Vec<(SocketAddr, ForwardQuery)> = Vec::new();
    loop {
        if let Err(error) = socket.readable().await {
            tracing::debug!(%error, "DNS UDP socket failed");
            tokio::task::yield_now().await;
            continue;
        }
        for _ in 0..BATCHES_PER_TURN {
            let received = socket.try_io(Interest::READABLE, || {
                mmsg::recv_batch(fd, |raw, src, cut| {
                    if !mmsg::answerable(&src) {
                        return;
                    }
                    let action = if cut { listener.oversized(raw) } else { listener.respond(raw, Transport::Udp) };
                    match action {
                        Action::Reply(bytes) => replies.push((src, bytes)),
                        Action::Drop => {}
                        Action::Forward(query) => {
                            if let Some(addr) = mmsg::socket_addr(&src) {
                                forwards.push((addr, query));
                            }
                        }
                    }
                })
            });
            let count = match received {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                Err(error) => {
                    tracing::debug!(%error, "DNS UDP receive failed");
                    0
                }
            };
            for (src, query) in forwards.drain(..) {
                forward(&socket, &listener, src, query).await;
            }
            flush(&socket, fd, &mut replies).await;
            if count < BATCH {
                break;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Sends the batch of replies; what the kernel does not take at once is sent one by one.
async fn flush(socket: &UdpSocket, fd: i32, replies: &mut Vec<(SockaddrStorage, Vec<u8>)>) {
    let sent = socket.try_io(Interest::WRITABLE, || mmsg::send_batch(fd, replies)).unwrap_or(0);
    for (dst, bytes) in replies.drain(..).skip(sent) {
        if let Some(dst) = mmsg::socket_addr(&dst) {
            send(socket, &bytes, dst).await;
        }
    }
}

async fn forward(socket: &Arc<UdpSocket>, listener: &Arc<Listener>, src: SocketAddr, query: ForwardQuery) {
    match listener.forward_permit() {
        None => send(socket, &query.refused(), src).await,
        Some(permit) => {
            let socket = socket.clone();
            let listener = listener.clone();
            tokio::spawn(async move {
                let bytes = listener.shared.forwarder.forward(&query).await;
                send(&socket, &bytes, src).await;
                drop(permit);
            });
        }
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, dst).await {
        tracing::debug!(%error, %dst, "DNS UDP send failed");
    }
}
