//! `init --force-new-cluster`: a manager that lost its quorum restarts Raft as the only voter,
//! keeping the cluster state it has. Other managers become down workers and must rejoin.

use super::{InitOptions, LocalReply, NodeControl, NodeError};
use crate::model::Role;
use crate::rpc::messages::ApiRequest;
use std::time::Duration;

pub async fn force_new_cluster(node: &NodeControl, _o: InitOptions) -> Result<LocalReply, NodeError> {
    let mut g = node.inner.joined.lock().await;
    let j = g.as_mut().ok_or(NodeError::Recover("--force-new-cluster needs a node that was a manager of a cluster".into()))?;
    if j.id.role != Role::Manager {
        return Err(NodeError::Recover("--force-new-cluster only works on a manager".into()));
    }
    if let Some(m) = j.manager.take() {
        m.shutdown().await;
    }
    let dir = node.inner.paths.raft();
    crate::store::recover::rebuild_single_member(&dir, j.id.raft_id, &j.id.manager_addr, &j.id.node_id, crate::manager::now_ms())
        .await
        .map_err(|e| NodeError::Recover(e.to_string()))?;
    let (id, creds) = (j.id.clone(), j.creds.clone());
    let manager = node.start_manager(&id, &creds).await?;
    let mut metrics = manager.raft().metrics();
    let _ = tokio::time::timeout(Duration::from_secs(15), metrics.wait_for(|m| m.current_leader == Some(id.raft_id))).await;
    j.managers.lock().unwrap_or_else(|p| p.into_inner()).clone_from(&vec![id.manager_addr.clone()]);
    j.id.managers = vec![id.manager_addr.clone()];
    node.inner.paths.save_identity(&j.id)?;
    let tokens = manager.handle_api(ApiRequest::JoinTokens { rotate: None }).await?;
    j.manager = Some(manager);
    let (worker_token, manager_token) = match tokens {
        crate::rpc::messages::ApiResponse::JoinTokens { worker, manager } => (worker, manager),
        _ => Default::default(),
    };
    tracing::warn!(node = %id.node_id, "forced a new one-manager cluster from this manager's state");
    Ok(LocalReply::Initialized {
        node_id: id.node_id.to_string(),
        worker_token,
        manager_token,
        manager_addr: id.manager_addr,
        unlock_key: None,
    })
}
