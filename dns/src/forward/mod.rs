//! Forwarding names the cluster does not own to the node's upstream resolvers, one after the
//! other, each with a timeout; SERVFAIL when all fail.
//!
//! Each forwarded query gets its own socket (a fresh random source port, `connect`ed so only the
//! upstream's datagrams are read) and a fresh random id; the answer must echo the question. The
//! sockets live in the network namespace of the runtime's threads (the node's).

pub mod resolv_conf;

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use hickory_proto::op::{Message, ResponseCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::query::{ForwardQuery, Transport};

/// At most this many upstreams are used (as glibc's MAXNS).
pub const MAX_UPSTREAMS: usize = 3;

/// Why one upstream did not answer (logged, then the next is tried).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Socket error talking to the upstream.
    #[error("upstream {upstream}: {source}")]
    Io {
        /// The upstream.
        upstream: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// No valid answer in time.
    #[error("upstream {upstream}: no answer within {timeout:?}")]
    Timeout {
        /// The upstream.
        upstream: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The upstream answered with a failure code.
    #[error("upstream {upstream} answered {code}")]
    Failed {
        /// The upstream.
        upstream: SocketAddr,
        /// Its response code.
        code: ResponseCode,
    },
    /// The upstream answered something that does not match the question.
    #[error("upstream {upstream}: bad answer: {reason}")]
    BadAnswer {
        /// The upstream.
        upstream: SocketAddr,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Sends queries to the upstream resolvers.
///
/// Upstreams are tried in order starting from the last one that answered, so a dead first
/// upstream costs one timeout, not one per query.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    preferred: Arc<AtomicUsize>,
}

impl Forwarder {
    /// A forwarder over the first [`MAX_UPSTREAMS`] of `upstreams`, waiting `timeout` for each.
    pub fn new(upstreams: &[SocketAddr], timeout: Duration) -> Self {
        Self { upstreams: upstreams.iter().take(MAX_UPSTREAMS).copied().collect(), timeout, preferred: Arc::new(AtomicUsize::new(0)) }
    }

    /// The upstreams in use.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The answer to send to the client: the first upstream's valid answer (with the client's id),
    /// or SERVFAIL.
    pub async fn forward(&self, query: &ForwardQuery) -> Vec<u8> {
        let count = self.upstreams.len();
        let first = self.preferred.load(Ordering::Relaxed);
        for i in (0..count).map(|k| (first + k) % count) {
            match self.ask(self.upstreams[i], query).await {
                Ok(bytes) => {
                    if i != first {
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return bytes;
                }
                Err(error) => tracing::debug!(%error, "forwarding failed, trying the next upstream"),
            }
        }
        tracing::debug!(upstreams = ?self.upstreams, "all upstreams failed; answering SERVFAIL");
        query.servfail()
    }

    async fn ask(&self, upstream: SocketAddr, query: &ForwardQuery) -> Result<Vec<u8>, ForwardError> {
        let id: u16 = rand::random();
        let mut raw = query.raw.clone();
        raw[..2].copy_from_slice(&id.to_be_bytes());
        let exchange = async {
            match query.transport {
                Transport::Udp => udp_exchange(upstream, &raw, id, &query.request).await,
                Transport::Tcp => tcp_exchange(upstream, &raw, id, &query.request).await,
            }
        };
        let mut answer =
            tokio::time::timeout(self.timeout, exchange).await.map_err(|_| ForwardError::Timeout { upstream, timeout: self.timeout })??;
        let code = ResponseCode::from_low(answer[3] & 0x0f);
        if matches!(code, ResponseCode::ServFail | ResponseCode::Refused) {
            return Err(ForwardError::Failed { upstream, code });
        }
        answer[..2].copy_from_slice(&query.request.metadata.id.to_be_bytes());
        Ok(answer)
    }
}

async fn udp_exchange(upstream: SocketAddr, raw: &[u8], id: u16, request: &Message) -> Result<Vec<u8>, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(raw).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        // Stray or spoofed datagrams are skipped; the timeout bounds the wait.
        if check(&buf[..n], id, request).is_ok() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, raw: &[u8], id: u16, request: &Message) -> Result<Vec<u8>, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let len = u16::try_from(raw.len()).map_err(|_| ForwardError::BadAnswer { upstream, reason: "query longer than 65535 bytes" })?;
    let mut framed = Vec::with_capacity(raw.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(raw);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(io)?;
    check(&buf, id, request).map_err(|reason| ForwardError::BadAnswer { upstream, reason })?;
    Ok(buf)
}

/// Whether `answer` is the upstream's response to our query: our id, a response, the same question.
fn check(answer: &[u8], id: u16, request: &Message) -> Result<(), &'static str> {
    if answer.len() < 12 {
        return Err("shorter than a DNS header");
    }
    if u16::from_be_bytes([answer[0], answer[1]]) != id {
        return Err("wrong id");
    }
    if answer[2] & 0x80 == 0 {
        return Err("not a response");
    }
    let message = Message::from_vec(answer).map_err(|_| "does not parse")?;
    let same = message.queries.len() == request.queries.len()
        && message
            .queries
            .iter()
            .zip(&request.queries)
            .all(|(a, b)| a.query_type() == b.query_type() && a.query_class() == b.query_class() && a.name() == b.name());
    if !same {
        return Err("question differs");
    }
    Ok(())
}
