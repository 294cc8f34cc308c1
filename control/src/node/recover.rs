//! `init --force-new-cluster`: a manager that lost its quorum restarts Raft as the only voter,
//! keeping the cluster state it has.

use super::{InitOptions, LocalReply, NodeControl, NodeError};

pub async fn force_new_cluster(_node: &NodeControl, _o: InitOptions) -> Result<LocalReply, NodeError> {
    Err(NodeError::Recover("--force-new-cluster is not implemented yet".into()))
}
