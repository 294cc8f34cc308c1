//! A cluster of in-process nodes on 127.0.0.1, each with its own state directory, manager port
//! and dispatcher session.
#![allow(dead_code)]

use shoal_control::manager::RaftTiming;
use shoal_control::model::Role;
use shoal_control::node::{InitOptions, JoinOptions, LocalReply, LocalRequest, NodeConfig, NodeControl};
use shoal_control::rpc::messages::{ApiRequest, ApiResponse};
use shoal_control::state::{ClusterState, Command, Response, StateError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

// Not every suite uses both (each includes this module).
#[allow(unused_imports)]
pub use shoal_control::testkit::{free_port, sim_agent};

pub struct TestNode {
    pub node: NodeControl,
    pub stop: watch::Sender<bool>,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl TestNode {
    pub async fn start(name: &str) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = NodeConfig::new(dir.path());
        cfg.socket = None;
        cfg.listen_addr = SocketAddr::from(([127, 0, 0, 1], port));
        cfg.advertise_addr = Some(format!("127.0.0.1:{port}"));
        cfg.heartbeat_period = Duration::from_millis(200);
        cfg.hostname = name.to_string();
        cfg.raft = RaftTiming { heartbeat_ms: 100, election_min_ms: 500, election_max_ms: 1000, snapshot_every: 5000 };
        let (stop, rx) = watch::channel(false);
        let node = NodeControl::start(cfg, rx).await.unwrap();
        TestNode { node, stop, addr: format!("127.0.0.1:{port}"), dir, name: name.to_string() }
    }

    pub async fn init(&self) -> (String, String) {
        self.init_with(None).await
    }

    /// `init` with node certificates valid for `cert_expiry_ms`.
    pub async fn init_with(&self, cert_expiry_ms: Option<u64>) -> (String, String) {
        let r = self
            .node
            .handle(LocalRequest::Init(InitOptions {
                advertise_addr: self.addr.clone(),
                listen_addr: None,
                default_addr_pool: vec![],
                default_addr_pool_mask_length: 24,
                force_new_cluster: false,
                task_history_limit: None,
                cert_expiry_ms,
                autolock: false,
            }))
            .await
            .unwrap();
        match r {
            LocalReply::Initialized { worker_token, manager_token, .. } => (worker_token, manager_token),
            other => panic!("{other:?}"),
        }
    }

    pub async fn join(&self, token: &str, remote: &str) -> Result<Role, String> {
        let r = self
            .node
            .handle(LocalRequest::Join(JoinOptions { token: token.into(), remote: remote.into(), advertise_addr: None, listen_addr: None }))
            .await
            .map_err(|e| e.to_string())?;
        match r {
            LocalReply::Joined { role, .. } => Ok(role),
            other => panic!("{other:?}"),
        }
    }

    pub async fn api(&self, req: ApiRequest) -> Result<ApiResponse, String> {
        match self.node.handle(LocalRequest::Api(req)).await.map_err(|e| e.to_string())? {
            LocalReply::Api(a) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    pub async fn propose(&self, cmd: Command) -> Result<Result<Response, StateError>, String> {
        match self.api(ApiRequest::Propose(cmd)).await? {
            ApiResponse::Committed { result, .. } => Ok(result),
            other => panic!("{other:?}"),
        }
    }

    /// A read through this manager; fails while it reaches no leader (reads are linearizable).
    pub async fn view(&self) -> Result<shoal_control::manager::ClusterView, String> {
        match self.api(ApiRequest::View).await? {
            ApiResponse::View(v) => Ok(*v),
            other => panic!("{other:?}"),
        }
    }

    pub async fn state(&self) -> ClusterState {
        match self.api(ApiRequest::View).await.unwrap() {
            ApiResponse::View(v) => v.state,
            other => panic!("{other:?}"),
        }
    }

    pub async fn raft_id(&self) -> u64 {
        self.node.manager().await.unwrap().config().raft_id
    }

    pub async fn kill(self) {
        self.stop.send_replace(true);
        self.node.stop().await;
    }
}

/// Poll `f` until it returns Some, up to `secs`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Init one manager and join `managers - 1` more and `workers` workers; wait for all voters.
pub async fn cluster(managers: usize, workers: usize) -> (Vec<TestNode>, Vec<TestNode>, String, String) {
    let first = TestNode::start("m1").await;
    let (wt, mt) = first.init().await;
    let mut ms = vec![first];
    for i in 1..managers {
        let n = TestNode::start(&format!("m{}", i + 1)).await;
        assert_eq!(n.join(&mt, &ms[0].addr).await.unwrap(), Role::Manager);
        ms.push(n);
    }
    let mut ws = vec![];
    for i in 0..workers {
        let n = TestNode::start(&format!("w{}", i + 1)).await;
        assert_eq!(n.join(&wt, &ms[0].addr).await.unwrap(), Role::Worker);
        ws.push(n);
    }
    let m0 = ms[0].node.manager().await.unwrap();
    eventually("all managers are Raft voters", 30, || {
        let m0 = m0.clone();
        async move {
            let m = m0.raft().metrics().borrow().clone();
            let mem = m.membership_config.membership();
            // Uniform (not joint) config with every manager.
            (mem.get_joint_config().len() == 1 && mem.voter_ids().count() == managers).then_some(())
        }
    })
    .await;
    (ms, ws, wt, mt)
}
