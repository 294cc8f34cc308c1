//! The manager port's TLS acceptor. Handshakes run off the accept loop with a deadline, and the
//! connections still in their handshake are capped, so peers that are not yet known (nothing
//! authenticated) cannot stall the port or pile up sockets.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::conn::Conn;

/// A handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in their handshake at once; more wait in the kernel's accept queue.
pub const MAX_HANDSHAKES: usize = 256;

/// Accepted, handshaken connections, until `shutdown`.
pub fn incoming(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!("manager port: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => continue,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(Conn::new(tls))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "manager port: TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "manager port: TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
