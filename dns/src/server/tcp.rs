//! The TCP side of one listener: length-prefixed queries, answered in order per connection.

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use super::listener::Listener;
use crate::query::{Action, Transport};

/// Accepts connections until the task is aborted (which aborts the connections too).
pub async fn serve(tcp: TcpListener, listener: Arc<Listener>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "DNS TCP accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = listener.tcp_connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS TCP connections; closing the new one");
            continue;
        };
        let listener = listener.clone();
        connections.spawn(async move {
            connection(stream, &listener).await;
            drop(permit);
        });
    }
}

async fn connection(mut stream: TcpStream, listener: &Listener) {
    let idle = listener.tcp_idle_timeout;
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(idle, stream.read_u16()).await else {
            return;
        };
        let mut raw = vec![0u8; usize::from(len)];
        let Ok(Ok(_)) = tokio::time::timeout(idle, stream.read_exact(&mut raw)).await else {
            return;
        };
        let bytes = match listener.respond(&raw, Transport::Tcp) {
            Action::Reply(bytes) => bytes,
            Action::Drop => continue,
            Action::Forward(query) => match listener.forward_permit() {
                None => query.refused(),
                Some(_permit) => listener.shared.forwarder.forward(&query).await,
            },
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
