//! The CLI's connection to the local node API.

use crate::manager::ClusterView;
use crate::node::local_socket;
use crate::node::{LocalReply, LocalRequest};
use crate::rpc::messages::{ApiRequest, ApiResponse};
use crate::state::{Command, Response};
use anyhow::{anyhow, bail, Context};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Client {
    pub socket: PathBuf,
}

impl Client {
    pub fn from_host(host: &str) -> anyhow::Result<Client> {
        let path = host.strip_prefix("unix://").ok_or_else(|| anyhow!("--host {host:?}: only unix:///path sockets are supported"))?;
        Ok(Client { socket: PathBuf::from(path) })
    }

    pub async fn call(&self, req: LocalRequest) -> anyhow::Result<LocalReply> {
        let resp = local_socket::call(&self.socket, &req).await.with_context(|| {
            format!("Cannot connect to the shoal node at unix://{}. Is the shoal daemon running?", self.socket.display())
        })?;
        resp.map_err(|e| anyhow!("Error response from daemon: {e}"))
    }

    pub async fn api(&self, req: ApiRequest) -> anyhow::Result<ApiResponse> {
        match self.call(LocalRequest::Api(req)).await? {
            LocalReply::Api(a) => Ok(a),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    pub async fn view(&self) -> anyhow::Result<ClusterView> {
        match self.api(ApiRequest::View).await? {
            ApiResponse::View(v) => Ok(*v),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// Commit a command; a refused command becomes Docker's "Error response from daemon".
    pub async fn propose(&self, cmd: Command) -> anyhow::Result<Response> {
        match self.api(ApiRequest::Propose(cmd)).await? {
            ApiResponse::Committed { result, .. } => result.map_err(|e| anyhow!("Error response from daemon: {e}")),
            other => bail!("unexpected reply {other:?}"),
        }
    }
}
