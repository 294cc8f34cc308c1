//! The node-side control runtime the daemon embeds. It serves the local API (init, join,
//! leave, and cluster calls forwarded to the managers), runs the manager role when this node
//! is a manager, and keeps the agent's dispatcher session, publishing `AgentUpdate`s and
//! taking task reports.

pub mod api;
pub mod gossip;
mod identity;
pub mod local_socket;
mod recover;
mod renew;
mod session;

pub use api::{
    default_advertise, InitOptions, JoinOptions, LocalError, LocalErrorKind, LocalReply, LocalRequest, LocalResponse, NodeInfo, SessionInfo,
};
pub use session::ViewSnapshot;

use crate::ca::{self, JoinToken, RootCa};
use crate::manager::{Manager, ManagerConfig, ManagerError, RaftTiming};
use crate::model::{random_id, Availability, Cluster, Node, NodeState, Role, TaskStatus};
use crate::rpc::creds::Credentials;
use crate::rpc::messages::{ApiRequest, ApiResponse, JoinRequest, RenewRequest};
use crate::rpc::session::AgentUpdate;
use crate::rpc::tls::{self, TlsIdentity};
use crate::state::Command;
use identity::{Identity, Paths};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Identity, certificates and (on managers) the Raft data.
    pub state_dir: PathBuf,
    /// Local API socket; `None` to serve none (tests call `handle`).
    pub socket: Option<PathBuf>,
    /// Default manager listen address when `init`/`join` give none.
    pub listen_addr: SocketAddr,
    /// Default advertise address when `init`/`join` give none.
    pub advertise_addr: Option<String>,
    pub heartbeat_period: Duration,
    pub hostname: String,
    pub raft: RaftTiming,
    /// Where this node's task logs are read for `service logs` (`None`: the node answers that
    /// it keeps no logs).
    pub logs: Option<crate::logs::LogSourceRef>,
    /// Free space a manager keeps on its Raft log's disk; below it, it refuses writes.
    pub disk_reserve: u64,
    /// Run gossip on this UDP port of the advertise address (the daemon: 7946); `None`: no
    /// gossip (in-process test clusters share one address).
    pub gossip_port: Option<u16>,
    /// What this node's kernel offers encrypted networks (the daemon probes it); reported when
    /// the node joins, so the managers pick a backend every node runs.
    pub encryption: crate::model::EncryptionSupport,
}

impl NodeConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            state_dir: state_dir.into(),
            socket: Some(PathBuf::from("/run/shoal/shoal.sock")),
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 2377)),
            advertise_addr: None,
            heartbeat_period: Duration::from_millis(1000),
            hostname: nix_hostname(),
            raft: RaftTiming::default(),
            logs: None,
            disk_reserve: crate::manager::disk::DEFAULT_RESERVE,
            gossip_port: None,
            encryption: Default::default(),
        }
    }
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

#[derive(thiserror::Error, Debug)]
pub enum NodeError {
    #[error("This node is already part of a cluster. Use `shoal leave` to leave it first.")]
    AlreadyJoined,
    #[error("This node is not part of a cluster: run `shoal init` or `shoal join` first.")]
    NotJoined,
    #[error("This node is not a manager. Worker nodes can't be used to view or modify cluster state: run this on a manager, or promote this node.")]
    NotManager,
    #[error("You are leaving the cluster on a manager: this may cost the managers their quorum. Use `shoal leave --force` to do it anyway, or demote this node first.")]
    LeaveManager,
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("joining {remote}: {message}")]
    Join { remote: String, message: String },
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("local API socket {path}: {source}")]
    Socket { path: String, source: std::io::Error },
    #[error("{0}")]
    Recover(String),
    #[error("Swarm is encrypted and needs to be unlocked before it can be used. Please use `shoal unlock` to unlock it.")]
    Locked,
    #[error("Error: swarm is not locked")]
    NotLocked,
    #[error("invalid key: the unlock key is wrong (or was rotated: use the key that was current when this manager stopped)")]
    BadUnlockKey,
}

struct Joined {
    id: Identity,
    /// The node's certificate, key and CA, live: renewal and role changes swap them here.
    creds: Arc<Credentials>,
    manager: Option<Manager>,
    agent_stop: watch::Sender<bool>,
    managers: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
pub struct NodeControl {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NodeConfig,
    paths: Paths,
    joined: tokio::sync::Mutex<Option<Joined>>,
    /// A manager restarted with autolock on: its identity and certificates, its key still
    /// sealed. It serves nothing until `unlock`.
    locked: tokio::sync::Mutex<Option<(Identity, TlsIdentity)>>,
    updates: broadcast::Sender<AgentUpdate>,
    view: watch::Sender<Arc<ViewSnapshot>>,
    connected: watch::Sender<bool>,
    session: watch::Sender<Option<SessionInfo>>,
    reports_tx: mpsc::Sender<Reports>,
    reports_rx: Mutex<Option<mpsc::Receiver<Reports>>>,
    /// Settling (see `dispatcher::settle`): what this node's data plane applied, what a stop
    /// waits for, what the leader says every node holds.
    applied: watch::Sender<u64>,
    await_settled: watch::Sender<u64>,
    settled: watch::Sender<u64>,
    /// What gossip on this node sees (empty while it does not run).
    members: watch::Sender<Arc<Vec<crate::gossip::MemberInfo>>>,
}

/// A batch of task states from the agent: (task id, status).
type Reports = Vec<(crate::model::TaskId, TaskStatus)>;

impl NodeControl {
    /// Start the runtime: resume the cluster membership found in the state directory, serve
    /// the local API, and stop everything when `shutdown` turns true.
    pub async fn start(config: NodeConfig, shutdown: watch::Receiver<bool>) -> Result<NodeControl, NodeError> {
        tls::install_provider();
        let (reports_tx, reports_rx) = mpsc::channel(1024);
        let node = NodeControl {
            inner: Arc::new(Inner {
                paths: Paths { dir: config.state_dir.clone(), unlock: Default::default() },
                cfg: config,
                joined: tokio::sync::Mutex::new(None),
                locked: tokio::sync::Mutex::new(None),
                updates: broadcast::channel(1024).0,
                view: watch::channel(Arc::new(ViewSnapshot::default())).0,
                connected: watch::channel(false).0,
                session: watch::channel(None).0,
                reports_tx,
                reports_rx: Mutex::new(Some(reports_rx)),
                applied: watch::channel(0).0,
                await_settled: watch::channel(0).0,
                settled: watch::channel(0).0,
                members: watch::channel(Arc::new(Vec::new())).0,
            }),
        };
        if let Some((id, tls)) = node.inner.paths.load()?.filter(|(_, tls)| {
            let sealed = crate::store::crypto::is_sealed(tls.key_pem.as_bytes());
            if sealed {
                tracing::warn!("this manager is locked (autolock): run `shoal unlock` with the cluster's unlock key");
            }
            !sealed
        }) {
            let mut g = node.inner.joined.lock().await;
            let creds = Credentials::new(tls)?;
            let manager = if id.role == Role::Manager { Some(node.start_manager(&id, &creds).await?) } else { None };
            *g = Some(node.start_agent(id, creds, manager));
        }
        if let Some((id, tls)) = node.inner.paths.load()?.filter(|(_, tls)| crate::store::crypto::is_sealed(tls.key_pem.as_bytes())) {
            *node.inner.locked.lock().await = Some((id, tls));
        }
        if let Some(path) = node.inner.cfg.socket.clone() {
            let listener = local_socket::bind(&path).map_err(|source| NodeError::Socket { path: path.display().to_string(), source })?;
            tokio::spawn(local_socket::serve(node.clone(), listener, shutdown.clone()));
        }
        {
            let node = node.clone();
            let mut shutdown = shutdown;
            tokio::spawn(async move {
                let _ = shutdown.wait_for(|s| *s).await;
                node.stop().await;
            });
        }
        Ok(node)
    }

    /// Stop the manager and the agent session (the state directory is kept).
    pub async fn stop(&self) {
        let mut g = self.inner.joined.lock().await;
        if let Some(j) = g.as_mut() {
            j.agent_stop.send_replace(true);
            if let Some(m) = j.manager.take() {
                m.shutdown().await;
            }
        }
        *g = None;
    }

    /// Every update received from the dispatcher, in order (full snapshot first after each
    /// reconnect).
    pub fn subscribe(&self) -> broadcast::Receiver<AgentUpdate> {
        self.inner.updates.subscribe()
    }

    /// The current folded view (assignments + endpoint table) and its version.
    pub fn view(&self) -> watch::Receiver<Arc<ViewSnapshot>> {
        self.inner.view.subscribe()
    }

    /// Every member gossip on this node sees (node, address, generation, status); empty while
    /// gossip does not run here.
    pub fn gossip_members(&self) -> watch::Receiver<Arc<Vec<crate::gossip::MemberInfo>>> {
        self.inner.members.subscribe()
    }

    /// Whether the dispatcher session is up.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.inner.connected.subscribe()
    }

    /// Report task states (and health) observed by the agent.
    pub async fn report(&self, updates: Vec<(crate::model::TaskId, TaskStatus)>) {
        let _ = self.inner.reports_tx.send(updates).await;
    }

    /// This node's data plane holds the view of `version` (told to the leader, which waits for
    /// every node's before it lets a withdrawn task stop).
    pub fn applied(&self, version: u64) {
        self.inner.applied.send_if_modified(|v| std::mem::replace(v, version) != version);
    }

    /// Waits until every connected node's data plane holds the view of `version`, at most
    /// `limit`; whether they do. Without a session the answer is false after `limit`.
    pub async fn settled(&self, version: u64, limit: Duration) -> bool {
        let mut settled = self.inner.settled.subscribe();
        if *settled.borrow() >= version {
            return true;
        }
        self.inner.await_settled.send_if_modified(|v| std::mem::replace(v, version.max(*v)) < version);
        let reached = tokio::time::timeout(limit, settled.wait_for(|s| *s >= version)).await.is_ok_and(|r| r.is_ok());
        reached
    }

    /// The manager role, when this node runs it.
    pub async fn manager(&self) -> Option<Manager> {
        self.inner.joined.lock().await.as_ref().and_then(|j| j.manager.clone())
    }

    pub async fn node_id(&self) -> Option<crate::model::NodeId> {
        self.inner.joined.lock().await.as_ref().map(|j| j.id.node_id.clone())
    }

    /// Serve one local API request.
    pub async fn handle(&self, req: LocalRequest) -> Result<LocalReply, NodeError> {
        if self.inner.locked.lock().await.is_some() {
            match req {
                LocalRequest::Unlock { key } => return self.unlock(&key).await,
                LocalRequest::Info | LocalRequest::Members => {}
                _ => return Err(NodeError::Locked),
            }
        }
        match req {
            LocalRequest::Unlock { .. } => Err(NodeError::NotLocked),
            LocalRequest::Init(o) => self.init(o).await,
            LocalRequest::Join(o) => self.join(o).await,
            LocalRequest::Leave { force } => self.leave(force).await,
            LocalRequest::Api(a) => {
                let m = {
                    let g = self.inner.joined.lock().await;
                    let j = g.as_ref().ok_or(NodeError::NotJoined)?;
                    j.manager.clone().ok_or(NodeError::NotManager)?
                };
                Ok(LocalReply::Api(m.handle_api(a).await?))
            }
            LocalRequest::Members => Ok(LocalReply::Members(self.inner.members.borrow().to_vec())),
            LocalRequest::Info => {
                let g = self.inner.joined.lock().await;
                let j = g.as_ref();
                Ok(LocalReply::Info(NodeInfo {
                    node_id: j.map(|j| j.id.node_id.to_string()),
                    cluster_id: j.map(|j| j.id.cluster_id.clone()),
                    role: j.map(|j| j.id.role),
                    managers: j.map(|j| j.managers.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default(),
                    manager_addr: j.map(|j| j.id.manager_addr.clone()),
                    connected: *self.inner.connected.borrow(),
                    view_version: self.inner.view.borrow().version,
                    session: self.inner.session.borrow().clone(),
                }))
            }
        }
    }

    fn addrs(&self, advertise: Option<&str>, listen: Option<&str>) -> Result<(String, String, SocketAddr), NodeError> {
        let listen: SocketAddr = match listen {
            Some(l) => parse_listen(l)?,
            None => self.inner.cfg.listen_addr,
        };
        let adv = advertise.map(str::to_string).or_else(|| self.inner.cfg.advertise_addr.clone()).ok_or(NodeError::Invalid {
            field: "advertise-addr",
            message: "give the address other nodes reach this one on, e.g. --advertise-addr 192.168.1.10".into(),
        })?;
        let (ip, port) = match adv.parse::<SocketAddr>() {
            Ok(sa) => (sa.ip().to_string(), sa.port()),
            Err(_) => match adv.parse::<std::net::IpAddr>() {
                Ok(ip) => (ip.to_string(), listen.port()),
                Err(_) => {
                    return Err(NodeError::Invalid { field: "advertise-addr", message: format!("{adv:?} is not an IP address or ip:port") })
                }
            },
        };
        Ok((ip.clone(), format!("{ip}:{port}"), listen))
    }

    async fn start_manager(&self, id: &Identity, creds: &Arc<Credentials>) -> Result<Manager, NodeError> {
        let cfg = ManagerConfig {
            raft_id: id.raft_id,
            node_id: id.node_id.clone(),
            cluster_id: id.cluster_id.clone(),
            listen: id.listen,
            advertise: id.manager_addr.clone(),
            dir: self.inner.paths.raft(),
            creds: creds.clone(),
            heartbeat_period: Duration::from_millis(id.heartbeat_period_ms.max(10)),
            raft: self.inner.cfg.raft.clone(),
            write_timeout: Duration::from_secs(5),
            unlock: self.inner.paths.unlock.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            disk_reserve: self.inner.cfg.disk_reserve,
        };
        let manager = Manager::start(cfg).await?;
        manager.gossip().attach(self.inner.members.subscribe());
        tokio::spawn(autolock_watch(self.clone(), manager.clone()));
        Ok(manager)
    }

    fn start_agent(&self, id: Identity, creds: Arc<Credentials>, manager: Option<Manager>) -> Joined {
        let (agent_stop, stop_rx) = watch::channel(false);
        let managers = Arc::new(Mutex::new(id.managers.clone()));
        let reports = self.inner.reports_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (role_tx, role_rx) = watch::channel(Some(id.role));
        let (trust_tx, trust_rx) = watch::channel(String::new());
        if let Some(reports) = reports {
            // Versions of another cluster's log (before a leave and join) mean nothing here.
            for w in [&self.inner.applied, &self.inner.await_settled, &self.inner.settled] {
                w.send_replace(0);
            }
            let ch = session::SessionChannels {
                updates: self.inner.updates.clone(),
                view: self.inner.view.clone(),
                reports,
                role: role_tx,
                connected: self.inner.connected.clone(),
                session: self.inner.session.clone(),
                applied: self.inner.applied.subscribe(),
                await_settled: self.inner.await_settled.subscribe(),
                settled: self.inner.settled.clone(),
            };
            let cfg = session::SessionConfig {
                creds: creds.clone(),
                managers: managers.clone(),
                heartbeat_period: Duration::from_millis(id.heartbeat_period_ms.max(10)),
                logs: self.inner.cfg.logs.clone(),
                on_managers: Some(Box::new({
                    let paths = Paths { dir: self.inner.paths.dir.clone(), unlock: Default::default() };
                    move |managers| {
                        if let Err(e) = paths.save_managers(managers) {
                            tracing::warn!("remembering the managers: {e}");
                        }
                    }
                })),
                trust: trust_tx,
                encryption: self.inner.cfg.encryption,
            };
            let inner = self.inner.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let reports = session::run(cfg, ch, stop).await;
                // Give the report channel back for the next session (after leave + join).
                *inner.reports_rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(reports);
            });
        }
        if let Some(port) = self.inner.cfg.gossip_port {
            let params = gossip::GossipParams { node_id: id.node_id.clone(), addr: id.addr.clone(), port };
            tokio::spawn(gossip::run(params, self.inner.view.subscribe(), self.inner.members.clone(), stop_rx.clone()));
        }
        tokio::spawn(renew::run(self.clone(), creds.clone(), trust_rx, stop_rx.clone()));
        tokio::spawn(role_watch(self.clone(), role_rx, stop_rx));
        Joined { id, creds, manager, agent_stop, managers }
    }

    async fn init(&self, o: InitOptions) -> Result<LocalReply, NodeError> {
        if o.force_new_cluster {
            return recover::force_new_cluster(self, o).await;
        }
        let mut g = self.inner.joined.lock().await;
        if g.is_some() {
            return Err(NodeError::AlreadyJoined);
        }
        // Empty: the daemon's own advertise address (`swarm init` with neither flag).
        let advertise = Some(o.advertise_addr.as_str()).filter(|a| !a.is_empty());
        let (ip, manager_addr, listen) = self.addrs(advertise, o.listen_addr.as_deref())?;
        let mut pools = vec![];
        for p in if o.default_addr_pool.is_empty() { vec!["10.0.0.0/8".to_string()] } else { o.default_addr_pool.clone() } {
            let net: ipnet::Ipv4Net = p.parse().map_err(|_| NodeError::Invalid {
                field: "default-addr-pool",
                message: format!("{p:?} is not an IPv4 CIDR like 10.0.0.0/8"),
            })?;
            pools.push(net);
        }
        let mask = if o.default_addr_pool_mask_length == 0 { 24 } else { o.default_addr_pool_mask_length };
        if !(8..=29).contains(&mask) || pools.iter().any(|p| p.prefix_len() > mask) {
            return Err(NodeError::Invalid {
                field: "default-addr-pool-mask-length",
                message: format!("{mask} must be 8-29 and not shorter than every pool's prefix"),
            });
        }
        let cert_expiry = match o.cert_expiry_ms {
            None => ca::DEFAULT_CERT_EXPIRY,
            Some(ms) => ca::check_cert_expiry(ms).map_err(|e| NodeError::Invalid { field: "cert-expiry", message: e.to_string() })?,
        };
        let unlock = o.autolock.then(crate::store::crypto::UnlockKey::random);
        let cluster_id: String = random_id();
        let node_id: crate::model::NodeId = random_id();
        let raft_id = (rand::random::<u64>() >> 1).max(1);
        let ca = RootCa::generate(&cluster_id)?;
        let digest = ca.digest();
        let (key_pem, csr) = ca::new_node_key()?;
        let cert_pem = ca.issue(&csr, &node_id, Role::Manager, &cluster_id, cert_expiry)?;
        let creds = Credentials::new(TlsIdentity { ca_pem: ca.cert_pem.clone(), cert_pem, key_pem })?;
        let heartbeat_period_ms = self.inner.cfg.heartbeat_period.as_millis() as u64;
        let id = Identity {
            node_id: node_id.clone(),
            raft_id,
            cluster_id: cluster_id.clone(),
            role: Role::Manager,
            addr: ip.clone(),
            manager_addr: manager_addr.clone(),
            listen,
            managers: vec![manager_addr.clone()],
            heartbeat_period_ms,
        };
        let _ = std::fs::remove_dir_all(self.inner.paths.raft());
        let manager = self.start_manager(&id, &creds).await?;
        manager.initialize().await?;
        let mut metrics = manager.raft().metrics();
        let _ = tokio::time::timeout(Duration::from_secs(10), metrics.wait_for(|m| m.current_leader == Some(raft_id))).await;
        let now = crate::manager::now_ms();
        let cluster = Cluster {
            id: cluster_id.clone(),
            created_ms: now,
            default_addr_pool: pools,
            subnet_size: mask,
            worker_token: JoinToken::new(&digest).to_string(),
            manager_token: JoinToken::new(&digest).to_string(),
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            task_history_limit: o.task_history_limit.unwrap_or(5),
            heartbeat_period_ms,
            cert_expiry_ms: cert_expiry.as_millis() as u64,
            ca_rotation: None,
            autolock_key: unlock.as_ref().map(|k| k.to_string()),
        };
        let node = Node {
            id: node_id.clone(),
            raft_id,
            hostname: self.inner.cfg.hostname.clone(),
            addr: ip,
            manager_addr: Some(manager_addr.clone()),
            role: Role::Manager,
            availability: Availability::Active,
            state: NodeState::Unknown,
            message: String::new(),
            labels: Default::default(),
            created_ms: now,
            updated_ms: now,
            resources: crate::model::NodeResources::of_this_host(),
            encryption: self.inner.cfg.encryption,
        };
        let (worker_token, manager_token) = (cluster.worker_token.clone(), cluster.manager_token.clone());
        let (r, _) = manager.propose(Command::Init { cluster, node }).await?;
        r.map_err(|e| NodeError::Recover(e.to_string()))?;
        self.inner.paths.save(&id, &creds.identity())?;
        *g = Some(self.start_agent(id, creds, Some(manager)));
        tracing::info!(node = %node_id, cluster = %cluster_id, "cluster initialised");
        Ok(LocalReply::Initialized {
            node_id: node_id.into_string(),
            worker_token,
            manager_token,
            manager_addr,
            unlock_key: unlock.map(|k| k.to_string()),
        })
    }

    async fn join(&self, o: JoinOptions) -> Result<LocalReply, NodeError> {
        let mut g = self.inner.joined.lock().await;
        if g.is_some() {
            return Err(NodeError::AlreadyJoined);
        }
        let token = JoinToken::parse(&o.token).map_err(|e| NodeError::Invalid { field: "token", message: e.to_string() })?;
        let (ip, manager_addr, listen) = self.addrs(o.advertise_addr.as_deref(), o.listen_addr.as_deref())?;
        let remote = if o.remote.contains(':') { o.remote.clone() } else { format!("{}:2377", o.remote) };
        let (client_cfg, pinned) = tls::join_config(&token.ca_digest)?;
        let mut client = tls::client(&remote, client_cfg)?;
        let (key_pem, csr_pem) = ca::new_node_key()?;
        let req = JoinRequest {
            token: o.token.clone(),
            csr_pem,
            hostname: self.inner.cfg.hostname.clone(),
            addr: ip.clone(),
            manager_addr: manager_addr.clone(),
            resources: crate::model::NodeResources::of_this_host(),
            encryption: self.inner.cfg.encryption,
        };
        let resp = match tokio::time::timeout(Duration::from_secs(20), client.join(req)).await {
            Err(_) => return Err(NodeError::Join { remote, message: "timed out".into() }),
            Ok(Err(status)) => {
                let message = if pinned.mismatched() {
                    "the manager's certificate authority does not match the CA digest in the token: wrong cluster, or someone in between"
                        .to_string()
                } else {
                    status.message().to_string()
                };
                return Err(NodeError::Join { remote, message });
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        // The roots to trust: the one the token pins (first), and a new one during a rotation.
        let ca_pem = if resp.ca_cert_pem.is_empty() { pinned.ca_pem().unwrap_or_default() } else { resp.ca_cert_pem.clone() };
        if ca::ca_digest(&ca_pem) != token.ca_digest {
            return Err(NodeError::Join { remote, message: "the cluster CA in the reply does not match the token".into() });
        }
        let tls = TlsIdentity { ca_pem, cert_pem: resp.cert_pem, key_pem };
        let mut managers: Vec<String> = resp.managers.iter().map(|m| m.addr.clone()).collect();
        if managers.is_empty() {
            managers.push(remote.clone());
        }
        let id = Identity {
            node_id: resp.node_id.clone(),
            raft_id: resp.raft_id,
            cluster_id: resp.cluster_id,
            role: resp.role,
            addr: ip,
            manager_addr,
            listen,
            managers,
            heartbeat_period_ms: resp.heartbeat_period_ms,
        };
        self.inner.paths.save(&id, &tls)?;
        let creds = Credentials::new(tls)?;
        let manager = if id.role == Role::Manager {
            let _ = std::fs::remove_dir_all(self.inner.paths.raft());
            Some(self.start_manager(&id, &creds).await?)
        } else {
            None
        };
        *g = Some(self.start_agent(id, creds, manager));
        tracing::info!(node = %resp.node_id, role = resp.role.as_str(), "joined cluster");
        Ok(LocalReply::Joined { node_id: resp.node_id.into_string(), role: resp.role })
    }

    async fn leave(&self, force: bool) -> Result<LocalReply, NodeError> {
        let mut g = self.inner.joined.lock().await;
        let j = g.as_mut().ok_or(NodeError::NotJoined)?;
        if j.id.role == Role::Manager && !force {
            return Err(NodeError::LeaveManager);
        }
        j.agent_stop.send_replace(true);
        if let Some(m) = j.manager.take() {
            m.shutdown().await;
        }
        *g = None;
        self.inner.paths.wipe()?;
        self.inner.view.send_replace(Arc::new(ViewSnapshot::default()));
        Ok(LocalReply::Left)
    }

    /// `shoal unlock`: open the node key and the Raft data key with the cluster's unlock key,
    /// then start the manager and the agent as a restart would have.
    async fn unlock(&self, key: &str) -> Result<LocalReply, NodeError> {
        let mut locked = self.inner.locked.lock().await;
        let Some((id, mut tls)) = locked.clone() else { return Err(NodeError::NotLocked) };
        let unlock = crate::store::crypto::UnlockKey::parse(key).ok_or(NodeError::BadUnlockKey)?;
        let plain = unlock.unseal(tls.key_pem.as_bytes()).ok_or(NodeError::BadUnlockKey)?;
        tls.key_pem = String::from_utf8(plain).map_err(|_| NodeError::BadUnlockKey)?;
        *self.inner.paths.unlock.lock().unwrap_or_else(|p| p.into_inner()) = Some(unlock);
        let creds = Credentials::new(tls)?;
        let mut g = self.inner.joined.lock().await;
        let manager = if id.role == Role::Manager { Some(self.start_manager(&id, &creds).await?) } else { None };
        *g = Some(self.start_agent(id, creds, manager));
        *locked = None;
        tracing::info!("unlocked: manager and agent started");
        Ok(LocalReply::Unlocked)
    }

    /// Autolock turned on, off, or its key rotated: write the node key and the Raft data key
    /// again, sealed under the new key or plain.
    async fn reseal(&self, unlock: Option<crate::store::crypto::UnlockKey>) -> Result<(), NodeError> {
        let g = self.inner.joined.lock().await;
        let Some(j) = g.as_ref().filter(|j| j.id.role == Role::Manager) else { return Ok(()) };
        *self.inner.paths.unlock.lock().unwrap_or_else(|p| p.into_inner()) = unlock.clone();
        self.inner.paths.save(&j.id, &j.creds.identity())?;
        if let Some(m) = &j.manager {
            m.store_data_key(unlock.as_ref())?;
        }
        tracing::info!(autolock = unlock.is_some(), "node key and Raft data key written again");
        Ok(())
    }

    /// A fresh certificate for `creds` (renewal). None when nothing was changed: the node left,
    /// or its role changed meanwhile (the role change brings its own certificate).
    async fn renew_certificate(&self, creds: &Arc<Credentials>) -> Result<Option<u64>, NodeError> {
        let (managers, role) = {
            let g = self.inner.joined.lock().await;
            let Some(j) = g.as_ref().filter(|j| Arc::ptr_eq(&j.creds, creds)) else { return Ok(None) };
            let managers = j.managers.lock().unwrap_or_else(|p| p.into_inner()).clone();
            (managers, j.id.role)
        };
        let r = fetch_certificate(creds, &managers).await?;
        let g = self.inner.joined.lock().await;
        let Some(j) = g.as_ref().filter(|j| Arc::ptr_eq(&j.creds, creds) && j.id.role == role && r.role == role) else { return Ok(None) };
        let mut tls = creds.identity();
        tls.cert_pem = r.cert_pem;
        if !r.ca_pem.is_empty() {
            tls.ca_pem = r.ca_pem;
        }
        creds.replace(tls)?;
        self.inner.paths.save(&j.id, &creds.identity())?;
        Ok(ca::validity_ms(&creds.identity().cert_pem).map(|(_, na)| na))
    }

    /// After a promote or demote: get a certificate with the new role, then start or stop the
    /// manager role. The leader adds or removes the Raft voter.
    async fn change_role(&self, role: Role) -> Result<(), NodeError> {
        let mut g = self.inner.joined.lock().await;
        let Some(j) = g.as_mut() else { return Ok(()) };
        if j.id.role == role {
            return Ok(());
        }
        let managers = j.managers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let r = fetch_certificate(&j.creds, &managers).await?;
        if r.role != role {
            return Ok(());
        }
        let mut tls = j.creds.identity();
        tls.cert_pem = r.cert_pem;
        if !r.ca_pem.is_empty() {
            tls.ca_pem = r.ca_pem;
        }
        j.creds.replace(tls)?;
        j.id.role = role;
        if role == Role::Worker {
            // Autolock is for managers: a worker's key is kept plain.
            *self.inner.paths.unlock.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        // The managers the agent learned since the join (saved by it), not those of the join.
        j.id.managers = j.managers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.inner.paths.save(&j.id, &j.creds.identity())?;
        match role {
            Role::Manager => {
                let _ = std::fs::remove_dir_all(self.inner.paths.raft());
                let (id, creds) = (j.id.clone(), j.creds.clone());
                j.manager = Some(self.start_manager(&id, &creds).await?);
                tracing::info!("promoted: manager role started");
            }
            Role::Worker => {
                if let Some(m) = j.manager.take() {
                    m.shutdown().await;
                }
                let _ = std::fs::remove_dir_all(self.inner.paths.raft());
                tracing::info!("demoted: manager role stopped");
            }
        }
        Ok(())
    }
}

/// Keeps the manager's key files sealed under the cluster's current unlock key (or plain when
/// autolock is off), following the replicated state, until the manager stops.
async fn autolock_watch(node: NodeControl, manager: Manager) {
    let shared = manager.shared();
    let mut applied = shared.subscribe();
    let mut shutdown = manager.shutdown_signal();
    loop {
        let want = shared.read(|s| s.cluster.as_ref().and_then(|c| c.autolock_key.clone()));
        let have = node.inner.paths.unlock.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|k| k.to_string());
        if want != have && shared.read(|s| s.cluster.is_some()) {
            let key = want.as_deref().and_then(crate::store::crypto::UnlockKey::parse);
            if let Err(e) = node.reseal(key).await {
                tracing::warn!("autolock: writing the key files again: {e}");
            }
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// A fresh certificate for this node's key from any manager that answers, with the role the
/// cluster gives the node now.
async fn fetch_certificate(creds: &Arc<Credentials>, managers: &[String]) -> Result<crate::rpc::messages::RenewResponse, NodeError> {
    let csr = {
        let key = rcgen::KeyPair::from_pem(&creds.identity().key_pem).map_err(ca::CaError::Load)?;
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(ca::CaError::Generate)?;
        params.serialize_request(&key).and_then(|c| c.pem()).map_err(ca::CaError::Generate)?
    };
    let cfg = tls::client_config(creds, tls::Trust::AnyManager)?;
    let mut last = String::from("no manager known");
    for addr in managers {
        let mut client = tls::client(addr, cfg.clone())?;
        match tokio::time::timeout(Duration::from_secs(5), client.renew(RenewRequest { csr_pem: csr.clone() })).await {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(status)) => last = format!("{addr}: {}", status.message()),
            Err(_) => last = format!("{addr}: timed out"),
        }
    }
    Err(NodeError::Join { remote: managers.join(","), message: format!("could not renew the node certificate: {last}") })
}

async fn role_watch(node: NodeControl, mut role: watch::Receiver<Option<Role>>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = role.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let Some(r) = *role.borrow_and_update() else { continue };
        // Retry until the certificate is renewed (the leader may be changing).
        for _ in 0..20 {
            match node.change_role(r).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("changing role to {}: {e}", r.as_str());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

fn parse_listen(l: &str) -> Result<SocketAddr, NodeError> {
    l.parse::<SocketAddr>()
        .or_else(|_| l.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 2377)))
        .map_err(|_| NodeError::Invalid { field: "listen-addr", message: format!("{l:?} is not ip:port") })
}

/// Helper for forwarding a raw API call through a manager (used by tests and the CLI path).
pub async fn api_via(manager: &Manager, req: ApiRequest) -> Result<ApiResponse, ManagerError> {
    manager.handle_api(req).await
}
