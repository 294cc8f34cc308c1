//! The manager role: a Raft member serving the control gRPC API over mutual TLS. Writes go
//! through Raft (forwarded to the leader when this manager is not it); the leader also runs
//! the dispatcher's liveness checks, restart-delay ticks and Raft membership changes.

mod batch;
pub mod disk;
mod dispatch;
mod error;
pub mod faults;
pub mod gossip;
mod join;
mod leader;
mod network;
mod read;
mod server;
mod view;
mod wireguard;

pub use error::ManagerError;
pub use faults::Faults;
pub use view::redact;
// The view is the API's wire type; the manager builds it and its callers (CLI, engine) know it from here.
pub use crate::rpc::messages::ClusterView;

use crate::dispatcher::Liveness;
use crate::rpc::messages::{ApiRequest, ApiResponse};
use crate::rpc::tls;
use crate::rpc::ControlClient;
use crate::state::{Command, Response, StateError};
use crate::store::crypto::DataKey;
use crate::store::{LogStore, Raft, SharedState, StateMachineStore};
use openraft::BasicNode;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Raft timing. Failover takes about one election timeout after the leader's last heartbeat.
/// openraft also uses the heartbeat interval as the AppendEntries timeout, so it must cover an
/// fsync on a busy disk.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> RaftTiming {
        RaftTiming { heartbeat_ms: 100, election_min_ms: 400, election_max_ms: 800, snapshot_every: 5000 }
    }
}

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub raft_id: u64,
    pub node_id: crate::model::NodeId,
    pub cluster_id: String,
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// `ip:port` other managers and agents use.
    pub advertise: String,
    /// Raft log, snapshots and the data key live here.
    pub dir: PathBuf,
    /// The node's live certificate and trust (renewed in place).
    pub creds: Arc<crate::rpc::creds::Credentials>,
    pub heartbeat_period: Duration,
    pub raft: RaftTiming,
    /// How long a write may wait for a commit.
    pub write_timeout: Duration,
    /// The unlock key while autolock is on: the Raft data key is sealed under it.
    pub unlock: Option<crate::store::crypto::UnlockKey>,
    /// Free space kept on the Raft log's disk: below it, writes are refused (`disk`).
    pub disk_reserve: u64,
}

#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ManagerConfig,
    raft: Raft,
    shared: Arc<SharedState>,
    client_tls: Arc<rustls::ClientConfig>,
    faults: Arc<Faults>,
    liveness: Liveness,
    sessions: crate::dispatcher::Sessions,
    views: crate::dispatcher::ViewCache,
    clients: Mutex<HashMap<String, ControlClient<Channel>>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    proposals: tokio::sync::mpsc::UnboundedSender<batch::Proposal>,
    logs: crate::logs::broker::Broker,
    data_key: DataKey,
    disk: disk::DiskGuard,
    gossip: gossip::GossipSeen,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Manager {
    /// Open storage, start Raft and the gRPC server.
    pub async fn start(cfg: ManagerConfig) -> Result<Manager, ManagerError> {
        tls::install_provider();
        std::fs::create_dir_all(&cfg.dir).map_err(|source| crate::store::StoreError::Io {
            what: "creating",
            path: cfg.dir.display().to_string(),
            source,
        })?;
        let key = DataKey::load_or_create_locked(&cfg.dir.join("data.key"), cfg.unlock.as_ref())?;
        let data_key = key.clone();
        let log = LogStore::open(&cfg.dir.join("raft.redb"), key.clone())?;
        let sm = StateMachineStore::open(&cfg.dir.join("snapshots"), key)?;
        let shared = sm.shared();
        let raft_cfg = openraft::Config {
            cluster_name: cfg.cluster_id.clone(),
            heartbeat_interval: cfg.raft.heartbeat_ms,
            election_timeout_min: cfg.raft.election_min_ms,
            election_timeout_max: cfg.raft.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.raft.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|error| ManagerError::RaftConfig { raft_id: cfg.raft_id, error: Box::new(error) })?;
        let client_tls = tls::client_config(&cfg.creds, tls::Trust::AnyManager)?;
        let faults = Arc::new(Faults::default());
        let net = network::NetworkFactory { tls: client_tls.clone(), faults: faults.clone() };
        let raft = Raft::new(cfg.raft_id, Arc::new(raft_cfg), net, log, sm)
            .await
            .map_err(|error| ManagerError::RaftStart { raft_id: cfg.raft_id, error: Box::new(error) })?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| ManagerError::Listen { addr: cfg.listen, message: e.to_string() })?;
        let (shutdown, _) = watch::channel(false);
        let (proposals, proposals_rx) = tokio::sync::mpsc::unbounded_channel();
        let disk = disk::DiskGuard::new(&cfg.dir, cfg.disk_reserve);
        let proposer = batch::Proposer { raft: raft.clone(), raft_id: cfg.raft_id, disk: disk.clone() };
        let batcher = tokio::spawn(batch::run(proposer, proposals_rx));
        let mgr = Manager {
            inner: Arc::new(Inner {
                liveness: Liveness::new(cfg.heartbeat_period),
                sessions: Default::default(),
                views: Default::default(),
                cfg,
                raft,
                shared,
                client_tls,
                faults,
                clients: Mutex::new(HashMap::new()),
                shutdown,
                tasks: Mutex::new(vec![batcher]),
                proposals,
                logs: Default::default(),
                data_key,
                disk,
                gossip: Default::default(),
            }),
        };
        let server = server::serve(mgr.clone(), listener)?;
        let loops = leader::spawn_loops(mgr.clone());
        {
            let mut t = mgr.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            t.push(server);
            t.extend(loops);
        }
        tracing::info!(raft_id = mgr.inner.cfg.raft_id, addr = %mgr.inner.cfg.advertise, "manager started");
        Ok(mgr)
    }

    /// Make this manager the only member of a new cluster.
    pub async fn initialize(&self) -> Result<(), ManagerError> {
        let mut members = BTreeMap::new();
        members.insert(self.inner.cfg.raft_id, BasicNode::new(&self.inner.cfg.advertise));
        let raft_id = self.inner.cfg.raft_id;
        self.inner.raft.initialize(members).await.map_err(|e| match e {
            openraft::error::RaftError::APIError(source) => ManagerError::Initialize { raft_id, error: Box::new(source) },
            openraft::error::RaftError::Fatal(source) => ManagerError::fatal(&self.inner.cfg.advertise, source),
        })
    }

    /// Stop Raft and the server, and wait for them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let _ = self.inner.raft.shutdown().await;
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }

    /// Write the Raft data key again, sealed under `unlock` (autolock) or plain.
    pub fn store_data_key(&self, unlock: Option<&crate::store::crypto::UnlockKey>) -> Result<(), ManagerError> {
        Ok(self.inner.data_key.store(&self.inner.cfg.dir.join("data.key"), unlock)?)
    }

    /// Fault injection for tests: stop the Raft core alone, as a storage error or a panic in it
    /// would, leaving the server, the sessions and everything else running.
    pub async fn kill_raft_core(&self) {
        let _ = self.inner.raft.shutdown().await;
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.inner.shared.clone()
    }

    pub fn faults(&self) -> Arc<Faults> {
        self.inner.faults.clone()
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.inner.cfg
    }

    /// The free-space check of this manager's Raft log disk.
    pub fn disk(&self) -> &disk::DiskGuard {
        &self.inner.disk
    }

    pub fn liveness(&self) -> &Liveness {
        &self.inner.liveness
    }

    /// What gossip on this manager's node sees (attached by the node).
    pub fn gossip(&self) -> &gossip::GossipSeen {
        &self.inner.gossip
    }

    /// The agent session each node has open (one per node).
    pub fn sessions(&self) -> &crate::dispatcher::Sessions {
        &self.inner.sessions
    }

    /// The agents' views, built once per applied version for every session.
    pub fn views(&self) -> &crate::dispatcher::ViewCache {
        &self.inner.views
    }

    /// Agents' session streams, for questions about their tasks' logs.
    pub fn logs(&self) -> &crate::logs::broker::Broker {
        &self.inner.logs
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Whether this manager leads. Never from a Raft core that has stopped (a storage error, a
    /// full disk, a panic): its last metrics would still say leader while nothing commits.
    pub fn is_leader(&self) -> bool {
        self.raft_alive() && self.inner.raft.metrics().borrow().current_leader == Some(self.inner.cfg.raft_id)
    }

    /// Whether the Raft core still runs (its metrics channel closes when it stops).
    pub fn raft_alive(&self) -> bool {
        self.inner.raft.metrics().has_changed().is_ok()
    }

    /// Address of the current leader, if known (none from a stopped Raft core).
    pub fn leader_addr(&self) -> Option<String> {
        if !self.raft_alive() {
            return None;
        }
        let m = self.inner.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
    }

    /// Manager addresses in the Raft membership.
    pub fn manager_addrs(&self) -> Vec<String> {
        let m = self.inner.raft.metrics().borrow().clone();
        m.membership_config.membership().nodes().map(|(_, n)| n.addr.clone()).collect()
    }

    /// Node ids of the Raft members: the nodes agents may take for managers.
    pub fn manager_ids(&self) -> Vec<crate::model::NodeId> {
        let raft_ids: Vec<u64> = self.inner.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        self.inner.shared.read(|s| s.nodes.values().filter(|n| raft_ids.contains(&n.raft_id)).map(|n| n.id.clone()).collect())
    }

    /// A gRPC client to another manager, authenticated as this node.
    pub fn client_for(&self, addr: &str) -> Result<ControlClient<Channel>, ManagerError> {
        if self.inner.faults.is_blocked(addr) {
            return Err(ManagerError::Remote { addr: addr.into(), message: "cut off (fault injection)".into() });
        }
        let mut clients = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c = tls::client(addr, self.inner.client_tls.clone())?;
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Commit a command: locally when leader, else forwarded to the leader. Returns the
    /// command's result and its log index; when forwarded, waits until this manager has
    /// applied that index too, so a read right after sees the write. Concurrent writes on the
    /// leader are batched into one log entry (one fsync).
    pub async fn propose(&self, cmd: Command) -> Result<(Result<Response, StateError>, u64), ManagerError> {
        self.propose_from(cmd, true).await
    }

    /// Commit a decision only the leader may take (a node is down, a key is issued): never
    /// forwarded, since a manager that lost the leadership meanwhile decided on what it saw as
    /// leader (its agents gone to the new leader look dead from here), and the new leader
    /// would commit that.
    pub async fn propose_as_leader(&self, cmd: Command) -> Result<(Result<Response, StateError>, u64), ManagerError> {
        self.propose_from(cmd, false).await
    }

    async fn propose_from(&self, cmd: Command, forward: bool) -> Result<(Result<Response, StateError>, u64), ManagerError> {
        let timeout = self.inner.cfg.write_timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shutting_down = || ManagerError::ShuttingDown { manager: self.inner.cfg.advertise.clone() };
        self.inner.proposals.send((cmd.clone(), tx)).map_err(|_| shutting_down())?;
        let outcome = tokio::time::timeout(timeout, rx).await.map_err(|_| ManagerError::Timeout(timeout))?.map_err(|_| shutting_down())?;
        match outcome {
            batch::Outcome::Done(result, index) => Ok((result, index)),
            batch::Outcome::Failed(e) => Err(ManagerError::write(&self.inner.cfg.advertise, "proposing a write", e)),
            batch::Outcome::Refused(e) => Err(ManagerError::Disk(e)),
            batch::Outcome::Forward(_) if !forward => Err(ManagerError::NotLeader),
            batch::Outcome::Forward(leader) => {
                let addr = leader.ok_or(ManagerError::NoLeader)?;
                let mut client = self.client_for(&addr)?;
                let reply = tokio::time::timeout(timeout, client.api(ApiRequest::Propose(cmd)))
                    .await
                    .map_err(|_| ManagerError::Timeout(timeout))?
                    .map_err(|s| ManagerError::Remote { addr: addr.clone(), message: s.message().to_string() })?
                    .into_inner();
                match reply {
                    ApiResponse::Committed { result, index } => {
                        self.wait_applied(index, timeout).await;
                        Ok((result, index))
                    }
                    other => Err(ManagerError::Remote { addr, message: format!("unexpected reply {other:?}") }),
                }
            }
        }
    }

    /// Wait (bounded) until the local state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) {
        let mut rx = self.inner.shared.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| *v >= index)).await;
    }

    pub fn view(&self) -> ClusterView {
        let m = self.inner.raft.metrics().borrow().clone();
        ClusterView {
            state: self.inner.shared.read(|s| redact(s.clone())),
            leader: m.current_leader,
            voters: m.membership_config.membership().voter_ids().collect(),
            this_manager: self.inner.cfg.raft_id,
            applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            membership: self.inner.gossip.statuses().unwrap_or_default().into_iter().map(|(n, s)| (n, s.as_str().to_string())).collect(),
        }
    }

    /// Agents keep their sessions with the leader, so only the leader can ask them.
    async fn logs_request(&self, req: crate::logs::LogsRequest) -> Result<ApiResponse, ManagerError> {
        if self.is_leader() {
            let plan = match self.inner.shared.read(|s| crate::logs::broker::plan(s, &req)) {
                Ok(p) => p,
                Err(e) => return Err(ManagerError::State(e)),
            };
            return Ok(ApiResponse::Logs(self.inner.logs.fetch(&plan).await));
        }
        let addr = self.leader_addr().ok_or(ManagerError::NoLeader)?;
        let mut client = self.client_for(&addr)?;
        let timeout = crate::logs::broker::NODE_TIMEOUT * 2;
        tokio::time::timeout(timeout, client.api(ApiRequest::Logs(req)))
            .await
            .map_err(|_| ManagerError::Remote { addr: addr.clone(), message: format!("no answer about logs within {timeout:?}") })?
            .map(|r| r.into_inner())
            .map_err(|s| ManagerError::Remote { addr, message: s.message().to_string() })
    }

    /// Serve one API request from another manager: as `handle_api`, except that a read is
    /// answered only by the leader (the manager that asks is reading through it: see `read`).
    pub async fn handle_peer_api(&self, req: ApiRequest) -> Result<ApiResponse, ManagerError> {
        match req {
            ApiRequest::View => Ok(ApiResponse::View(Box::new(self.leader_view().await?))),
            other => self.handle_api(other).await,
        }
    }

    /// Serve one API request (from the local socket or another manager).
    pub async fn handle_api(&self, req: ApiRequest) -> Result<ApiResponse, ManagerError> {
        match req {
            ApiRequest::Propose(cmd) => {
                let (result, index) = self.propose(cmd).await?;
                Ok(ApiResponse::Committed { result, index })
            }
            ApiRequest::View => Ok(ApiResponse::View(Box::new(self.read_view().await?))),
            ApiRequest::JoinTokens { rotate } => {
                if let Some(role) = rotate {
                    let digest = self.inner.shared.read(|s| s.cluster.as_ref().map(|c| crate::ca::ca_digest(&c.ca_cert_pem)));
                    let digest = digest.ok_or(ManagerError::NoCluster)?;
                    let token = crate::ca::JoinToken::new(&digest).to_string();
                    let (r, _) = self.propose(Command::SetJoinToken { role, token }).await?;
                    r?;
                }
                let (worker, manager) = self
                    .inner
                    .shared
                    .read(|s| s.cluster.as_ref().map(|c| (c.worker_token.clone(), c.manager_token.clone())))
                    .unwrap_or_default();
                Ok(ApiResponse::JoinTokens { worker, manager })
            }
            ApiRequest::AddVoter { raft_id, addr } => {
                leader::add_voter(self, raft_id, addr).await?;
                Ok(ApiResponse::Done)
            }
            ApiRequest::RemoveVoter { raft_id } => {
                leader::remove_voter(self, raft_id).await?;
                Ok(ApiResponse::Done)
            }
            ApiRequest::Logs(req) => self.logs_request(req).await,
            ApiRequest::SetAutolock(on) => {
                let key = on.then(|| crate::store::crypto::UnlockKey::random().to_string());
                let setting = match &key {
                    Some(k) => crate::state::Autolock::Key(k.clone()),
                    None => crate::state::Autolock::Off,
                };
                let (result, _) = self.propose(Command::UpdateCluster { cert_expiry_ms: None, autolock: Some(setting) }).await?;
                result?;
                Ok(ApiResponse::UnlockKey(key))
            }
            ApiRequest::UnlockKey { rotate } => {
                let current = self.inner.shared.read(|s| s.cluster.as_ref().and_then(|c| c.autolock_key.clone()));
                if current.is_none() || !rotate {
                    return Ok(ApiResponse::UnlockKey(current));
                }
                let key = crate::store::crypto::UnlockKey::random().to_string();
                let (result, _) = self
                    .propose(Command::UpdateCluster { cert_expiry_ms: None, autolock: Some(crate::state::Autolock::Key(key.clone())) })
                    .await?;
                result?;
                Ok(ApiResponse::UnlockKey(Some(key)))
            }
            ApiRequest::RotateCa => {
                let cluster = self.inner.shared.read(|s| s.cluster.clone()).ok_or(ManagerError::NoCluster)?;
                let old = crate::ca::RootCa { cert_pem: cluster.ca_cert_pem.clone(), key_pem: cluster.ca_key_pem.clone() };
                let (new, cross_signed_pem) = old.rotate(&cluster.id)?;
                let rotation = crate::model::CaRotation {
                    cert_pem: new.cert_pem,
                    key_pem: new.key_pem,
                    cross_signed_pem,
                    started_ms: now_ms(),
                    renewed: Default::default(),
                };
                let (result, index) = self.propose(Command::StartCaRotation { rotation }).await?;
                Ok(ApiResponse::Committed { result, index })
            }
        }
    }
}
