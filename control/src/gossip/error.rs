//! The gossip module's one error type: each variant names the field or object and the fix.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("gossip config: {field} {problem}")]
    Config { field: &'static str, problem: String },
    #[error("gossip key: {0}")]
    Key(String),
    #[error("gossip key id {id} is not in the keyring (installed: {installed:?}); install it first")]
    UnknownKeyId { id: u32, installed: Vec<u32> },
    #[error("gossip key id {id} is the one used for sending; switch to another key (use_key) before retiring it")]
    RetireSendingKey { id: u32 },
    #[error("gossip datagram from {from}: {problem}")]
    Datagram { from: SocketAddr, problem: String },
    #[error("gossip protocol: {0}")]
    Foca(String),
    #[error("gossip socket {addr}: {what}: {source}")]
    Io { addr: SocketAddr, what: &'static str, source: std::io::Error },
    #[error("gossip driver has stopped")]
    Stopped,
}
