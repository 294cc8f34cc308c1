//! Raft's network: append, vote and snapshot RPCs over the mutual-TLS gRPC channel.

use super::faults::Faults;
use crate::rpc::messages::{RaftReply, RaftRpc};
use crate::rpc::{tls, ControlClient};
use crate::store::TypeConfig;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use std::sync::Arc;
use tonic::transport::Channel;

#[derive(Clone)]
pub struct NetworkFactory {
    pub tls: Arc<rustls::ClientConfig>,
    pub faults: Arc<Faults>,
}

pub struct Connection {
    target: u64,
    addr: String,
    client: Option<ControlClient<Channel>>,
    faults: Arc<Faults>,
}

#[derive(thiserror::Error, Debug)]
#[error("{0}")]
struct Cut(String);

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection { target, addr: node.addr.clone(), client: tls::client(&node.addr, self.tls.clone()).ok(), faults: self.faults.clone() }
    }
}

impl Connection {
    async fn call<E: std::error::Error>(&mut self, rpc: RaftRpc) -> Result<RaftReply, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        if self.faults.is_blocked(&self.addr) {
            return Err(RPCError::Unreachable(Unreachable::new(&Cut(format!("{} is cut off (fault injection)", self.addr)))));
        }
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&Cut(format!("bad manager address {}", self.addr)))));
        };
        match client.raft(rpc).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::Unknown => {
                Err(RPCError::Unreachable(Unreachable::new(&Cut(format!("{}: {}", self.addr, status.message())))))
            }
            Err(status) => Err(RPCError::Network(NetworkError::new(&Cut(format!("{}: {}", self.addr, status.message()))))),
        }
    }
}

fn wrong_reply<E: std::error::Error>() -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    RPCError::Network(NetworkError::new(&Cut("peer answered a different Raft call".into())))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(RaftRpc::Append(rpc)).await? {
            RaftReply::Append(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(wrong_reply()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        match self.call(RaftRpc::Snapshot(rpc)).await? {
            RaftReply::Snapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(wrong_reply()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(RaftRpc::Vote(rpc)).await? {
            RaftReply::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(wrong_reply()),
        }
    }
}
