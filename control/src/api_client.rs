//! A client of a node's local API (the unix socket the daemon serves): the cluster CLI
//! (`shoal` binary, `src/cli/cluster/`) talks to its node through it, like `docker` to dockerd.

use crate::manager::ClusterView;
use crate::node::local_socket;
use crate::node::{LocalError, LocalReply, LocalRequest};
use crate::rpc::messages::{ApiRequest, ApiResponse};
use crate::state::{Command, Response, StateError};
use std::path::PathBuf;

/// Why a call to the node failed, worded as `docker` words its own.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--host {host:?}: only unix:///path sockets are supported")]
    NotUnixSocket { host: String },
    #[error("Cannot connect to the shoal node at unix://{}. Is the shoal daemon running?", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The node refused the request.
    #[error("Error response from daemon: {0}")]
    Daemon(LocalError),
    /// The cluster refused the command (it was not committed).
    #[error("Error response from daemon: {0}")]
    Refused(StateError),
    /// The node answered with a reply of another request (a client/daemon version mismatch).
    #[error("unexpected reply {0}")]
    Unexpected(String),
}

#[derive(Clone, Debug)]
pub struct Client {
    pub socket: PathBuf,
}

impl Client {
    pub fn from_host(host: &str) -> Result<Client, ClientError> {
        let path = host.strip_prefix("unix://").ok_or_else(|| ClientError::NotUnixSocket { host: host.to_string() })?;
        Ok(Client { socket: PathBuf::from(path) })
    }

    pub async fn call(&self, req: LocalRequest) -> Result<LocalReply, ClientError> {
        let resp =
            local_socket::call(&self.socket, &req).await.map_err(|source| ClientError::Connect { socket: self.socket.clone(), source })?;
        resp.map_err(ClientError::Daemon)
    }

    pub async fn api(&self, req: ApiRequest) -> Result<ApiResponse, ClientError> {
        match self.call(LocalRequest::Api(req)).await? {
            LocalReply::Api(a) => Ok(a),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn view(&self) -> Result<ClusterView, ClientError> {
        match self.api(ApiRequest::View).await? {
            ApiResponse::View(v) => Ok(*v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Commit a command; a refused command becomes Docker's "Error response from daemon".
    pub async fn propose(&self, cmd: Command) -> Result<Response, ClientError> {
        match self.api(ApiRequest::Propose(cmd)).await? {
            ApiResponse::Committed { result, .. } => result.map_err(ClientError::Refused),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
