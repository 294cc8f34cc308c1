//! The gRPC service of a manager. Every call checks the caller: `join` needs a valid token,
//! `raft` and `api` a manager certificate (and, for `api`, a node the state still calls a
//! manager), `session` and `renew` any current node certificate.

use super::{Manager, ManagerError};
use crate::model::Role;
use crate::rpc::messages::{
    AgentMessage, ApiRequest, ApiResponse, JoinRequest, JoinResponse, RaftReply, RaftRpc, RenewRequest, RenewResponse, SessionMessage,
};
use crate::rpc::{caller, manager_caller, tls, Control, ControlServer};
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

struct Service {
    mgr: Manager,
}

pub fn serve(mgr: Manager, listener: tokio::net::TcpListener) -> Result<tokio::task::JoinHandle<()>, ManagerError> {
    let addr = listener.local_addr().map_err(|e| ManagerError::Listen { addr: mgr.config().listen, message: e.to_string() })?;
    let tls_cfg = tls::server_config(&mgr.config().creds)?;
    let mut shutdown = mgr.shutdown_signal();
    let svc = ControlServer::new(Service { mgr: mgr.clone() }).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20);
    // HTTP/2 keepalive: a peer that vanished without a FIN (half-open) is dropped in ~30 s.
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(svc);
    let incoming = crate::rpc::accept::incoming(listener, tls_cfg, mgr.shutdown_signal());
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(%addr, "manager gRPC server: {e}");
        }
    }))
}

/// A manager certificate is honoured only while the cluster state agrees: a demoted node keeps
/// its certificate until it expires, and a removed one is refused for good (as etcd refuses
/// removed members). A node the state does not know yet (a manager joining, its entry not yet
/// replicated here) is let through: its certificate was issued by a manager just now.
fn still_a_manager(mgr: &Manager, node_id: &str) -> Result<(), Status> {
    let (removed, role) = mgr.shared().read(|s| (s.removed_nodes.contains(node_id), s.nodes.get(node_id).map(|n| n.role)));
    if removed {
        return Err(Status::permission_denied(format!(
            "node {node_id} was removed from the cluster: its certificate is no longer accepted"
        )));
    }
    if role == Some(Role::Worker) {
        return Err(Status::permission_denied(format!("node {node_id} was demoted: it is no longer a manager")));
    }
    Ok(())
}

fn cluster_id(mgr: &Manager) -> String {
    mgr.config().cluster_id.clone()
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Control for Service {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.mgr.handle_join(request.into_inner()).await.map(Response::new)
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let id = caller(&request, &cluster_id(&self.mgr))?;
        self.mgr.handle_renew(&id.node_id, request.into_inner()).await.map(Response::new)
    }

    async fn raft(&self, request: Request<RaftRpc>) -> Result<Response<RaftReply>, Status> {
        let id = manager_caller(&request, &cluster_id(&self.mgr))?;
        still_a_manager(&self.mgr, &id.node_id)?;
        let raft = self.mgr.raft();
        let rpc = request.into_inner();
        // A follower takes no entries it may not be able to write (see `disk`); the leader
        // retries them, and they land once space returns.
        let writes = match &rpc {
            RaftRpc::Append(r) => !r.entries.is_empty(),
            RaftRpc::Snapshot(_) => true,
            RaftRpc::Vote(_) => false,
        };
        if writes {
            if let Err(e) = self.mgr.disk().check() {
                tracing::warn!(leader = %id.node_id, "refusing Raft entries: {e}");
                return Err(Status::resource_exhausted(format!("manager {}: {e}", self.mgr.config().advertise)));
            }
        }
        let reply = match rpc {
            RaftRpc::Append(r) => RaftReply::Append(raft.append_entries(r).await),
            RaftRpc::Vote(r) => RaftReply::Vote(raft.vote(r).await),
            RaftRpc::Snapshot(r) => RaftReply::Snapshot(raft.install_snapshot(r).await),
        };
        Ok(Response::new(reply))
    }

    async fn api(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let id = manager_caller(&request, &cluster_id(&self.mgr))?;
        still_a_manager(&self.mgr, &id.node_id)?;
        self.mgr.handle_peer_api(request.into_inner()).await.map(Response::new).map_err(|e| Status::unavailable(e.to_string()))
    }

    type SessionStream = SessionStream;

    async fn session(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<SessionStream>, Status> {
        let id = caller(&request, &cluster_id(&self.mgr))?;
        let peer = crate::rpc::conn::remote_addr(&request);
        let stream = crate::dispatcher::session::open(self.mgr.clone(), id.node_id.into(), peer, request.into_inner())?;
        Ok(Response::new(stream))
    }
}
