//! A manager-port connection after its TLS handshake, with who the peer is. A peer without a
//! node certificate (a node joining with a token) can only call `join`, whose request is a
//! token and a CSR: its connection may carry at most [`UNKNOWN_PEER_BUDGET`] bytes in all, so
//! nobody unauthenticated can make a manager buffer the 256 MiB a known peer's message may be.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Bytes (decrypted) a peer without a certificate may send over its whole connection.
pub const UNKNOWN_PEER_BUDGET: usize = 64 << 10;

/// Who is on the other end, put into every request's extensions (read by [`super::caller`]).
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The peer's certificate chain, leaf first; `None`: it presented none.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The peer's address (tonic's own `remote_addr` cannot see through the wrapper).
    pub remote: Option<std::net::SocketAddr>,
}

/// The address of the peer that sent `request`, if it came over the manager port.
pub fn remote_addr<T>(request: &tonic::Request<T>) -> Option<std::net::SocketAddr> {
    request.extensions().get::<PeerInfo>().and_then(|p| p.remote)
}

pub struct Conn {
    inner: TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Bytes an unknown peer may still send; `None` for a peer with a certificate.
    budget: Option<usize>,
}

impl Conn {
    pub fn new(inner: TlsStream<TcpStream>) -> Conn {
        let certs = inner.get_ref().1.peer_certificates().filter(|c| !c.is_empty()).map(|c| Arc::new(c.to_vec()));
        let budget = certs.is_none().then_some(UNKNOWN_PEER_BUDGET);
        let remote = inner.get_ref().0.peer_addr().ok();
        Conn { inner, peer: PeerInfo { certs, remote }, budget }
    }
}

/// Takes `n` bytes from an unknown peer's budget: an error once it is spent.
fn spend(budget: &mut Option<usize>, n: usize) -> io::Result<()> {
    let Some(left) = budget else { return Ok(()) };
    *left = left.checked_sub(n).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a peer without a node certificate sent more than {UNKNOWN_PEER_BUDGET} bytes: connection closed"),
        )
    })?;
    Ok(())
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => Poll::Ready(spend(&mut this.budget, buf.filled().len() - before)),
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_peers_budget_is_spent_then_refused_and_a_known_peer_has_none() {
        let mut b = Some(100);
        assert!(spend(&mut b, 60).is_ok());
        assert!(spend(&mut b, 40).is_ok());
        let e = spend(&mut b, 1).unwrap_err();
        assert!(e.to_string().contains("without a node certificate"), "{e}");
        let mut known = None;
        assert!(spend(&mut known, usize::MAX).is_ok());
    }
}
