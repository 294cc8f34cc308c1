//! Joining: check the token, sign the node's CSR with the role the token grants, record the
//! node. Runs on the leader (followers forward the call).

use super::{now_ms, Manager};
use crate::ca::{same_secret, JoinToken};
use crate::model::{random_id, Availability, Cluster, Node, NodeState, Role};
use crate::rpc::messages::{JoinRequest, JoinResponse, ManagerInfo, RenewRequest, RenewResponse};
use crate::state::Command;
use tonic::Status;

impl Manager {
    pub async fn handle_join(&self, req: JoinRequest) -> Result<JoinResponse, Status> {
        if !self.is_leader() {
            let addr = self.leader_addr().ok_or_else(|| Status::unavailable("no leader elected: try again"))?;
            let mut client = self.client_for(&addr).map_err(|e| Status::unavailable(e.to_string()))?;
            return client.join(req).await.map(|r| r.into_inner());
        }
        let cluster =
            self.shared().read(|s| s.cluster.clone()).ok_or_else(|| Status::failed_precondition("this manager has no cluster yet"))?;
        let token = JoinToken::parse(&req.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if token.ca_digest != crate::ca::ca_digest(&cluster.ca_cert_pem) {
            return Err(Status::permission_denied("the join token's CA digest does not match this cluster"));
        }
        let text = token.to_string();
        let role = if same_secret(&text, &cluster.worker_token) {
            Role::Worker
        } else if same_secret(&text, &cluster.manager_token) {
            Role::Manager
        } else {
            return Err(Status::permission_denied("invalid join token: get a current one with `shoal join-token worker|manager`"));
        };
        if req.addr.parse::<std::net::IpAddr>().is_err() {
            return Err(Status::invalid_argument(format!("advertise address {:?} is not an IP address", req.addr)));
        }
        let node_id: crate::model::NodeId = random_id();
        let raft_id = loop {
            let id = rand::random::<u64>() >> 1;
            if id != 0 {
                break id;
            }
        };
        let cert_pem = sign(&cluster, &req.csr_pem, &node_id, role)?;
        let now = now_ms();
        let node = Node {
            id: node_id.clone(),
            raft_id,
            hostname: req.hostname.clone(),
            addr: req.addr.clone(),
            manager_addr: Some(req.manager_addr.clone()),
            role,
            availability: Availability::Active,
            state: NodeState::Unknown,
            message: String::new(),
            labels: Default::default(),
            created_ms: now,
            updated_ms: now,
            resources: req.resources,
            encryption: req.encryption,
        };
        let (result, _) = self.propose(Command::AddNode { node }).await.map_err(|e| Status::unavailable(e.to_string()))?;
        result.map_err(|e| Status::failed_precondition(e.to_string()))?;
        self.record_new_root(&cluster, &node_id).await;
        tracing::info!(node = %node_id, role = role.as_str(), hostname = %req.hostname, "node joined");
        Ok(JoinResponse {
            node_id,
            raft_id,
            role,
            cert_pem,
            ca_cert_pem: cluster.trust_bundle(),
            cluster_id: cluster.id,
            managers: self.managers(),
            heartbeat_period_ms: cluster.heartbeat_period_ms,
        })
    }

    /// Managers in the Raft membership, with their node ids when known.
    pub fn managers(&self) -> Vec<ManagerInfo> {
        let m = self.raft().metrics().borrow().clone();
        let members: Vec<(u64, String)> = m.membership_config.membership().nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
        self.shared().read(|s| {
            members
                .into_iter()
                .map(|(raft_id, addr)| ManagerInfo {
                    raft_id,
                    node_id: s.nodes.values().find(|n| n.raft_id == raft_id).map(|n| n.id.clone()).unwrap_or_default(),
                    addr,
                })
                .collect()
        })
    }

    /// A fresh certificate for a known node, with the role the cluster state gives it now
    /// (after a promote or demote).
    pub async fn handle_renew(&self, node_id: &str, req: RenewRequest) -> Result<RenewResponse, Status> {
        let (cluster, node) = self.shared().read(|s| (s.cluster.clone(), s.nodes.get(node_id).cloned()));
        let cluster = cluster.ok_or_else(|| Status::failed_precondition("no cluster"))?;
        let node = node.ok_or_else(|| Status::permission_denied(format!("node {node_id} is not part of the cluster (removed?)")))?;
        let cert_pem = sign(&cluster, &req.csr_pem, node_id, node.role)?;
        self.record_new_root(&cluster, node_id).await;
        Ok(RenewResponse { cert_pem, role: node.role, ca_pem: cluster.trust_bundle() })
    }

    /// During a rotation: record that `node_id` now holds a certificate of the new root.
    async fn record_new_root(&self, cluster: &Cluster, node_id: &str) {
        let Some(r) = &cluster.ca_rotation else { return };
        let cmd = Command::CertIssued { node: node_id.into(), ca_digest: crate::ca::ca_digest(&r.cert_pem) };
        if let Err(e) = self.handle_api(crate::rpc::messages::ApiRequest::Propose(cmd)).await {
            // The rotation waits for this node; its next renewal records it.
            tracing::warn!(node = %node_id, "recording a certificate of the new root: {e}");
        }
    }
}

/// A node certificate signed by the CA that signs now, followed by the certificates to present
/// with it (the cross-signed new root during a rotation).
fn sign(cluster: &Cluster, csr_pem: &str, node_id: &str, role: Role) -> Result<String, Status> {
    let (ca, chain) = cluster.signing_ca();
    let cert = ca.issue(csr_pem, node_id, role, &cluster.id, cluster.cert_expiry()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(if chain.is_empty() { cert } else { format!("{}\n{}", cert.trim_end(), chain) })
}
