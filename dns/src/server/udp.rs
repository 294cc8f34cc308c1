//! The UDP loop of one listener: local answers inline, forwarded queries on their own tasks
//! (bounded by the listener's permits).
//!
//! Once the socket is readable, datagrams are drained with non-blocking calls (no await per
//! packet) and answers sent the same way; after a batch the loop yields so one busy task cannot
//! hold a runtime thread.

use std::{io, net::SocketAddr, sync::Arc};

use tokio::net::UdpSocket;

use super::listener::Listener;
use crate::query::{Action, Transport};

/// Largest UDP query read (4 KiB: a question plus EDNS options fit many times over).
const MAX_QUERY: usize = 4096;
/// Datagrams handled before yielding to other tasks.
const BATCH: usize = 64;

/// Serves `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, listener: Arc<Listener>) {
    let socket = Arc::new(socket);
    // Queries are small; a longer datagram is cut and answered FORMERR.
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        if let Err(error) = socket.readable().await {
            tracing::debug!(%error, "DNS UDP socket failed");
            tokio::task::yield_now().await;
            continue;
        }
        for _ in 0..BATCH {
            let (n, src) = match socket.try_recv_from(&mut buf) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!(%error, "DNS UDP receive failed");
                    break;
                }
            };
            handle(&socket, &listener, &buf[..n], src).await;
        }
        tokio::task::yield_now().await;
    }
}

async fn handle(socket: &Arc<UdpSocket>, listener: &Arc<Listener>, raw: &[u8], src: SocketAddr) {
    match listener.respond(raw, Transport::Udp) {
        Action::Reply(bytes) => send(socket, &bytes, src).await,
        Action::Drop => {}
        Action::Forward(query) => match listener.forward_permit() {
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
        },
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    let result = match socket.try_send_to(bytes, dst) {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => socket.send_to(bytes, dst).await,
        other => other,
    };
    if let Err(error) = result {
        tracing::debug!(%error, %dst, "DNS UDP send failed");
    }
}
