//! The UDP loop of one listener: local answers inline, forwarded queries on their own tasks
//! (bounded by the listener's permits).

use std::sync::Arc;

use tokio::net::UdpSocket;

use super::listener::Listener;
use crate::query::{Action, Transport};

/// Serves `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, listener: Arc<Listener>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "DNS UDP receive failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        match listener.respond(&buf[..n], Transport::Udp) {
            Action::Reply(bytes) => send(&socket, &bytes, src).await,
            Action::Drop => {}
            Action::Forward(query) => match listener.forward_permit() {
                None => send(&socket, &query.refused(), src).await,
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
}

async fn send(socket: &UdpSocket, bytes: &[u8], dst: std::net::SocketAddr) {
    if let Err(error) = socket.send_to(bytes, dst).await {
        tracing::debug!(%error, %dst, "DNS UDP send failed");
    }
}
