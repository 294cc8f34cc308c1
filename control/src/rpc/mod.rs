//! The control plane's gRPC service (tonic, JSON-coded messages) and its mutual TLS.

pub mod accept;
pub mod codec;
pub mod conn;
pub mod creds;
pub mod messages;
pub mod session;
pub mod tls;
mod verify;

#[allow(clippy::all, missing_docs, unused_qualifications)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/shoal.control.Control.rs"));
}

pub use generated::control_client::ControlClient;
pub use generated::control_server::{Control, ControlServer};

use crate::ca::{peer_identity, PeerIdentity};
use crate::model::Role;
use tonic::{Request, Status};

/// Who is calling, from the client certificate the TLS layer verified against the cluster CA.
pub fn caller<T>(req: &Request<T>, cluster_id: &str) -> Result<PeerIdentity, Status> {
    let certs = req
        .extensions()
        .get::<conn::PeerInfo>()
        .and_then(|p| p.certs.clone())
        .ok_or_else(|| Status::unauthenticated("a node certificate is required: join the cluster first"))?;
    let leaf = certs.first().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let id = peer_identity(leaf).ok_or_else(|| Status::unauthenticated("the client certificate is not a shoal node certificate"))?;
    if !cluster_id.is_empty() && id.cluster_id != cluster_id {
        return Err(Status::permission_denied(format!("certificate is for cluster {}, not this one", id.cluster_id)));
    }
    Ok(id)
}

/// Like `caller`, and the certificate must say manager.
pub fn manager_caller<T>(req: &Request<T>, cluster_id: &str) -> Result<PeerIdentity, Status> {
    let id = caller(req, cluster_id)?;
    if id.role != Role::Manager {
        return Err(Status::permission_denied(format!("node {} is a worker: this call needs a manager certificate", id.node_id)));
    }
    Ok(id)
}
