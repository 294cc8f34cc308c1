//! One function per endpoint: decode the request, ask the node (the same local API the shoal
//! CLI uses), answer in Docker's shape. The decisions live in the pure modules beside.

use super::convert;
use super::error::EngineError;
use super::lists;
use super::route::{Route, API_VERSION, MIN_API_VERSION};
use crate::logs::LogsRequest;
use crate::manager::ClusterView;
use crate::model::{NetworkSpec, NodeId, Role, SecretSpec, ServiceId, TaskId};
use crate::node::{InitOptions, JoinOptions, LocalReply, LocalRequest, NodeControl, NodeInfo};
use crate::rpc::messages::{ApiRequest, ApiResponse};
use crate::state::{Command, Response};
use base64::Engine as _;
use bollard_stubs::models as d;
use bytes::Bytes;
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the daemon knows about itself that the cluster state does not say.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub hostname: String,
    /// This node's underlay address (`--advertise-addr`), the default for `swarm init`.
    pub advertise_addr: String,
}

#[derive(Clone)]
pub struct Engine {
    pub node: NodeControl,
    pub cfg: EngineConfig,
}

/// An answer before it becomes HTTP.
pub enum Reply {
    Json(u16, Vec<u8>),
    Empty(u16),
    Ping {
        swarm: String,
    },
    /// Docker's multiplexed log stream, written as it comes.
    Stream(mpsc::Receiver<Bytes>),
}

fn json<T: serde::Serialize>(status: u16, v: &T) -> Result<Reply, EngineError> {
    serde_json::to_vec(v).map(|b| Reply::Json(status, b)).map_err(|e| EngineError::Internal(format!("encode reply: {e}")))
}

fn body<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, EngineError> {
    let b = if b.is_empty() { b"{}".as_slice() } else { b };
    serde_json::from_slice(b).map_err(|e| EngineError::bad(format!("invalid {what} in the request body: {e}")))
}

fn filters(q: &BTreeMap<String, String>) -> Option<&str> {
    q.get("filters").map(String::as_str)
}

fn flag(q: &BTreeMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
}

impl Engine {
    async fn call(&self, req: LocalRequest) -> Result<LocalReply, EngineError> {
        Ok(self.node.handle(req).await?)
    }

    async fn api(&self, req: ApiRequest) -> Result<ApiResponse, EngineError> {
        match self.call(LocalRequest::Api(req)).await? {
            LocalReply::Api(a) => Ok(a),
            other => Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn view(&self) -> Result<ClusterView, EngineError> {
        match self.api(ApiRequest::View).await? {
            ApiResponse::View(v) => Ok(*v),
            other => Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn propose(&self, cmd: Command) -> Result<Response, EngineError> {
        match self.api(ApiRequest::Propose(cmd)).await? {
            ApiResponse::Committed { result, .. } => Ok(result?),
            other => Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// A service command: the model's validation (run by the state machine, as for the shoal
    /// CLI) names what is wrong by Docker's path in `spec`.
    async fn propose_spec(&self, cmd: Command, spec: &crate::model::ServiceSpec) -> Result<Response, EngineError> {
        match self.api(ApiRequest::Propose(cmd)).await? {
            ApiResponse::Committed { result, .. } => result.map_err(|e| super::paths::in_docker_terms(e, spec)),
            other => Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn info_local(&self) -> Result<NodeInfo, EngineError> {
        match self.call(LocalRequest::Info).await? {
            LocalReply::Info(i) => Ok(i),
            other => Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    pub async fn handle(&self, route: Route, q: &BTreeMap<String, String>, b: &[u8]) -> Result<Reply, EngineError> {
        use Route::*;
        match route {
            Ping => {
                let i = self.info_local().await?;
                let swarm = match (i.node_id, i.role) {
                    (Some(_), Some(Role::Manager)) => "active/manager",
                    (Some(_), _) => "active/worker",
                    _ => "inactive",
                };
                Ok(Reply::Ping { swarm: swarm.into() })
            }
            Version => json(200, &self.version()),
            Info => json(200, &self.info().await?),
            SwarmInspect => self.swarm_inspect().await,
            SwarmInit => self.swarm_init(b).await,
            SwarmJoin => self.swarm_join(b).await,
            SwarmLeave => {
                self.call(LocalRequest::Leave { force: flag(q, "force") }).await?;
                Ok(Reply::Empty(200))
            }
            SwarmUpdate => self.swarm_update(q, b).await,
            SwarmUnlockKey => match self.api(ApiRequest::UnlockKey { rotate: false }).await? {
                ApiResponse::UnlockKey(Some(key)) => json(200, &serde_json::json!({ "UnlockKey": key })),
                _ => Err(EngineError::NotFound("no unlock key is set".into())),
            },
            SwarmUnlock => {
                let r: serde_json::Value = body(b, "swarm unlock request")?;
                let key = r["UnlockKey"].as_str().unwrap_or_default().to_string();
                self.call(LocalRequest::Unlock { key }).await?;
                Ok(Reply::Empty(200))
            }
            NodeList => {
                let v = self.view().await?;
                json(200, &lists::nodes(&v.state, v.leader, filters(q))?)
            }
            NodeInspect(n) => {
                let v = self.view().await?;
                let node = lists::find_node(&v.state, &n)?;
                json(200, &convert::node(node, v.leader == Some(node.raft_id)))
            }
            NodeUpdate(n) => self.node_update(&n, q, b).await,
            NodeDelete(n) => {
                let v = self.view().await?;
                let id = lists::find_node(&v.state, &n)?.id.to_string();
                self.propose(Command::RemoveNode { node: id, force: flag(q, "force") }).await?;
                Ok(Reply::Empty(200))
            }
            ServiceList => {
                let v = self.view().await?;
                json(200, &lists::services(&v.state, filters(q), flag(q, "status"))?)
            }
            ServiceCreate => {
                let spec = super::spec::parse(b)?;
                match self.propose_spec(Command::CreateService { spec: spec.clone() }, &spec).await? {
                    Response::Created { id } => json(201, &d::ServiceCreateResponse { id: Some(id), warnings: None }),
                    other => Err(EngineError::Internal(format!("unexpected result {other:?}"))),
                }
            }
            ServiceInspect(s) => {
                let v = self.view().await?;
                let svc = lists::find_service(&v.state, &s)?;
                json(200, &convert::service(&v.state, svc, false))
            }
            ServiceUpdate(s) => self.service_update(&s, q, b).await,
            ServiceDelete(s) => {
                let v = self.view().await?;
                let id = lists::find_service(&v.state, &s)?.id.to_string();
                self.propose(Command::RemoveService { service: id }).await?;
                Ok(Reply::Empty(200))
            }
            ServiceLogs(s) => {
                let v = self.view().await?;
                let id = lists::find_service(&v.state, &s)?.id.to_string();
                self.logs(id, v, q).await
            }
            TaskList => {
                let v = self.view().await?;
                json(200, &lists::tasks(&v.state, filters(q))?)
            }
            TaskInspect(t) => {
                let v = self.view().await?;
                let task = lists::find_task(&v.state, &t)?;
                json(200, &convert::task(&v.state, task))
            }
            TaskLogs(t) => {
                let v = self.view().await?;
                let id = lists::find_task(&v.state, &t)?.id.to_string();
                self.logs(id, v, q).await
            }
            NetworkList => {
                let v = self.view().await?;
                json(200, &lists::networks(&v.state, filters(q))?)
            }
            NetworkCreate => self.network_create(b).await,
            NetworkInspect(n) => {
                let v = self.view().await?;
                json(200, &convert::network(lists::find_network(&v.state, &n)?))
            }
            NetworkDelete(n) => {
                let v = self.view().await?;
                let id = lists::find_network(&v.state, &n)?.id.to_string();
                self.propose(Command::RemoveNetwork { network: id }).await?;
                Ok(Reply::Empty(204))
            }
            SecretList => {
                let v = self.view().await?;
                json(200, &lists::secrets(&v.state, filters(q))?)
            }
            SecretCreate => {
                let s: d::SecretSpec = body(b, "secret spec")?;
                if s.driver.is_some() || s.templating.is_some() {
                    return Err(EngineError::bad("Driver and Templating are not supported by shoal: leave them out of the secret spec"));
                }
                let data = base64::engine::general_purpose::STANDARD
                    .decode(s.data.unwrap_or_default())
                    .map_err(|e| EngineError::bad(format!("Data is not base64: {e}")))?;
                let spec =
                    SecretSpec { name: s.name.unwrap_or_default(), labels: s.labels.unwrap_or_default().into_iter().collect(), data };
                match self.propose(Command::CreateSecret { spec }).await? {
                    Response::Created { id } => json(201, &serde_json::json!({ "ID": id })),
                    other => Err(EngineError::Internal(format!("unexpected result {other:?}"))),
                }
            }
            SecretInspect(s) => {
                let v = self.view().await?;
                json(200, &convert::secret(lists::find_secret(&v.state, &s)?))
            }
            SecretUpdate(_) => {
                Err(EngineError::NotImplemented("shoal cannot update a secret in place: remove it and create it again".into()))
            }
            SecretDelete(s) => {
                let v = self.view().await?;
                let id = lists::find_secret(&v.state, &s)?.id.to_string();
                self.propose(Command::RemoveSecret { secret: id }).await?;
                Ok(Reply::Empty(204))
            }
            ConfigList => {
                let v = self.view().await?;
                json(200, &lists::configs(&v.state, filters(q))?)
            }
            ConfigCreate => {
                let s: d::ConfigSpec = body(b, "config spec")?;
                if s.templating.is_some() {
                    return Err(EngineError::bad("Templating is not supported by shoal: leave it out of the config spec"));
                }
                let data = base64::engine::general_purpose::STANDARD
                    .decode(s.data.unwrap_or_default())
                    .map_err(|e| EngineError::bad(format!("Data is not base64: {e}")))?;
                let spec = crate::model::ConfigSpec {
                    name: s.name.unwrap_or_default(),
                    labels: s.labels.unwrap_or_default().into_iter().collect(),
                    data,
                };
                match self.propose(Command::CreateConfig { spec }).await? {
                    Response::Created { id } => json(201, &serde_json::json!({ "ID": id })),
                    other => Err(EngineError::Internal(format!("unexpected result {other:?}"))),
                }
            }
            ConfigInspect(c) => {
                let v = self.view().await?;
                json(200, &convert::config(lists::find_config(&v.state, &c)?))
            }
            ConfigUpdate(_) => {
                Err(EngineError::NotImplemented("shoal cannot update a config in place: remove it and create it again".into()))
            }
            ConfigDelete(c) => {
                let v = self.view().await?;
                let id = lists::find_config(&v.state, &c)?.id.to_string();
                self.propose(Command::RemoveConfig { config: id }).await?;
                Ok(Reply::Empty(204))
            }
            Distribution(image) => Err(EngineError::NotFound(format!(
                "shoal does not query registries: no digest for {image}; each node uses {image} as it finds it"
            ))),
        }
    }

    fn version(&self) -> d::SystemVersion {
        let ver = format!("shoal-{}", env!("CARGO_PKG_VERSION"));
        d::SystemVersion {
            platform: Some(d::SystemVersionPlatform { name: "shoal".into() }),
            components: Some(vec![d::SystemVersionComponents { name: "Engine".into(), version: ver.clone(), details: None }]),
            version: Some(ver),
            api_version: Some(format!("{}.{}", API_VERSION.0, API_VERSION.1)),
            min_api_version: Some(format!("{}.{}", MIN_API_VERSION.0, MIN_API_VERSION.1)),
            os: Some("linux".into()),
            arch: Some(go_arch().into()),
            kernel_version: Some(kernel_version()),
            experimental: Some(false),
            ..Default::default()
        }
    }

    async fn info(&self) -> Result<d::SystemInfo, EngineError> {
        let i = self.info_local().await?;
        let mut swarm = d::SwarmInfo {
            node_id: Some(i.node_id.clone().unwrap_or_default()),
            node_addr: Some(if i.node_id.is_some() { self.cfg.advertise_addr.clone() } else { String::new() }),
            local_node_state: Some(if i.node_id.is_some() { d::LocalNodeState::ACTIVE } else { d::LocalNodeState::INACTIVE }),
            control_available: Some(i.role == Some(Role::Manager)),
            error: Some(String::new()),
            remote_managers: Some(i.managers.iter().map(|a| d::PeerNode { node_id: None, addr: Some(a.clone()) }).collect()),
            ..Default::default()
        };
        if i.role == Some(Role::Manager) {
            if let Ok(v) = self.view().await {
                swarm.nodes = Some(v.state.nodes.len() as i64);
                swarm.managers = Some(v.state.nodes.values().filter(|n| n.role == Role::Manager).count() as i64);
                swarm.remote_managers = Some(
                    v.state
                        .nodes
                        .values()
                        .filter(|n| n.role == Role::Manager)
                        .map(|n| d::PeerNode { node_id: Some(n.id.to_string()), addr: n.manager_addr.clone() })
                        .collect(),
                );
                if let Some(c) = &v.state.cluster {
                    swarm.cluster = Some(d::ClusterInfo {
                        id: Some(c.id.clone()),
                        version: Some(d::ObjectVersion { index: Some(c.created_ms) }),
                        created_at: Some(convert::date(c.created_ms)),
                        updated_at: Some(convert::date(c.created_ms)),
                        spec: Some(swarm_spec(c)),
                        root_rotation_in_progress: Some(c.ca_rotation.is_some()),
                        default_addr_pool: Some(c.default_addr_pool.iter().map(|p| p.to_string()).collect()),
                        subnet_size: Some(c.subnet_size as u32),
                        data_path_port: Some(4789),
                        tls_info: None,
                    });
                }
            }
        }
        let ver = format!("shoal-{}", env!("CARGO_PKG_VERSION"));
        Ok(d::SystemInfo {
            id: Some(i.node_id.unwrap_or_default()),
            name: Some(self.cfg.hostname.clone()),
            server_version: Some(ver),
            operating_system: Some(os_name()),
            os_type: Some("linux".into()),
            architecture: Some(std::env::consts::ARCH.into()),
            kernel_version: Some(kernel_version()),
            ncpu: Some(std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1)),
            containers: Some(0),
            images: Some(0),
            swarm: Some(swarm),
            ..Default::default()
        })
    }

    async fn swarm_inspect(&self) -> Result<Reply, EngineError> {
        let v = self.view().await?;
        let c = v.state.cluster.as_ref().ok_or_else(|| EngineError::Unavailable(super::error::NOT_IN_SWARM.into()))?;
        let (worker, manager) = match self.api(ApiRequest::JoinTokens { rotate: None }).await? {
            ApiResponse::JoinTokens { worker, manager } => (worker, manager),
            other => return Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        };
        json(
            200,
            &d::Swarm {
                id: Some(c.id.clone()),
                version: Some(d::ObjectVersion { index: Some(c.created_ms) }),
                created_at: Some(convert::date(c.created_ms)),
                updated_at: Some(convert::date(c.created_ms)),
                spec: Some(swarm_spec(c)),
                root_rotation_in_progress: Some(c.ca_rotation.is_some()),
                default_addr_pool: Some(c.default_addr_pool.iter().map(|p| p.to_string()).collect()),
                subnet_size: Some(c.subnet_size as u32),
                data_path_port: Some(4789),
                join_tokens: Some(d::JoinTokens { worker: Some(worker), manager: Some(manager) }),
                tls_info: None,
            },
        )
    }

    async fn swarm_init(&self, b: &[u8]) -> Result<Reply, EngineError> {
        let r: d::SwarmInitRequest = body(b, "swarm init request")?;
        let spec = r.spec.clone().unwrap_or_default();
        let autolock = spec.encryption_config.and_then(|e| e.auto_lock_managers).unwrap_or(false);
        if r.data_path_addr.as_deref().is_some_and(|a| !a.is_empty()) {
            return Err(EngineError::NotImplemented("--data-path-addr is not supported by shoal: VXLAN uses the advertise address".into()));
        }
        let expiry = spec.ca_config.and_then(|c| c.node_cert_expiry).filter(|n| *n > 0);
        let opts = InitOptions {
            advertise_addr: r
                .advertise_addr
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| crate::node::default_advertise(r.listen_addr.as_deref())),
            listen_addr: r.listen_addr.filter(|a| !a.is_empty()),
            default_addr_pool: r.default_addr_pool.unwrap_or_default(),
            default_addr_pool_mask_length: match r.subnet_size {
                None | Some(0) => 24,
                Some(n) => u8::try_from(n).map_err(|_| EngineError::bad(format!("SubnetSize: {n} is not a prefix length (8 to 29)")))?,
            },
            force_new_cluster: r.force_new_cluster.unwrap_or(false),
            task_history_limit: spec.orchestration.and_then(|o| o.task_history_retention_limit).filter(|n| *n >= 0).map(|n| n as usize),
            cert_expiry_ms: expiry.map(|n| n as u64 / 1_000_000),
            autolock,
        };
        match self.call(LocalRequest::Init(opts)).await? {
            LocalReply::Initialized { node_id, .. } => json(200, &node_id),
            other => Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn swarm_join(&self, b: &[u8]) -> Result<Reply, EngineError> {
        let r: d::SwarmJoinRequest = body(b, "swarm join request")?;
        let remote = r
            .remote_addrs
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::bad("RemoteAddrs is empty: give a manager's address"))?;
        let token = r.join_token.filter(|t| !t.is_empty()).ok_or_else(|| EngineError::bad("JoinToken is missing: give --token"))?;
        let opts = JoinOptions {
            token,
            remote,
            advertise_addr: r.advertise_addr.filter(|a| !a.is_empty()),
            listen_addr: r.listen_addr.filter(|a| !a.is_empty()),
        };
        self.call(LocalRequest::Join(opts)).await?;
        Ok(Reply::Empty(200))
    }

    async fn swarm_update(&self, q: &BTreeMap<String, String>, b: &[u8]) -> Result<Reply, EngineError> {
        let spec: d::SwarmSpec = body(b, "swarm spec")?;
        let v = self.view().await?;
        let c = v.state.cluster.as_ref().ok_or_else(|| EngineError::Unavailable(super::error::NOT_IN_SWARM.into()))?;
        // `?version=` is not compared: the cluster object has no version of its own (the
        // state's moves with every task report, which would refuse most updates), and the
        // settings this applies are each set whole.
        if let Some(on) = spec.encryption_config.as_ref().and_then(|e| e.auto_lock_managers) {
            if on != c.autolock_key.is_some() {
                self.api(ApiRequest::SetAutolock(on)).await?;
            }
        }
        if flag(q, "rotateManagerUnlockKey") {
            self.api(ApiRequest::UnlockKey { rotate: true }).await?;
        }
        let ca = spec.ca_config.clone().unwrap_or_default();
        if ca.external_cas.as_ref().is_some_and(|e| !e.is_empty()) || ca.signing_ca_cert.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(EngineError::NotImplemented("external or supplied root CAs are not supported by shoal; use --rotate".into()));
        }
        if let Some(ns) = ca.node_cert_expiry.filter(|n| *n > 0) {
            let ms = ns as u64 / 1_000_000;
            if ms != c.cert_expiry_ms {
                self.propose(Command::UpdateCluster { cert_expiry_ms: Some(ms), autolock: None }).await?;
            }
        }
        for (k, role) in [("rotateWorkerToken", Role::Worker), ("rotateManagerToken", Role::Manager)] {
            if flag(q, k) {
                self.api(ApiRequest::JoinTokens { rotate: Some(role) }).await?;
            }
        }
        if ca.force_rotate.unwrap_or(0) > 0 {
            self.api(ApiRequest::RotateCa).await?;
        }
        Ok(Reply::Empty(200))
    }

    async fn node_update(&self, n: &str, q: &BTreeMap<String, String>, b: &[u8]) -> Result<Reply, EngineError> {
        let spec: d::NodeSpec = body(b, "node spec")?;
        let v = self.view().await?;
        let node = lists::find_node(&v.state, n)?;
        lists::check_version(q.get("version").map(String::as_str), node.updated_ms, "node", &node.hostname)?;
        if let Some(cmd) = lists::node_update(node, &spec) {
            self.propose(cmd).await?;
        }
        Ok(Reply::Empty(200))
    }

    async fn service_update(&self, s: &str, q: &BTreeMap<String, String>, b: &[u8]) -> Result<Reply, EngineError> {
        let v = self.view().await?;
        let svc = lists::find_service(&v.state, s)?;
        let cmd = lists::service_update(svc, q.get("version").map(String::as_str), q.get("rollback").map(String::as_str), || {
            super::spec::parse(b)
        })?;
        let spec = match &cmd {
            Command::UpdateServiceAt { spec, .. } => spec.clone(),
            _ => svc.spec.clone(),
        };
        self.propose_spec(cmd, &spec).await?;
        json(200, &serde_json::json!({ "Warnings": null }))
    }

    async fn network_create(&self, b: &[u8]) -> Result<Reply, EngineError> {
        let r: d::NetworkCreateRequest = body(b, "network create request")?;
        if r.enable_ipv6.unwrap_or(false) {
            return Err(EngineError::NotImplemented("IPv6 networks are not supported by shoal".into()));
        }
        if r.config_only.unwrap_or(false) || r.config_from.is_some() {
            return Err(EngineError::NotImplemented("--config-only and --config-from are not supported by shoal".into()));
        }
        if r.scope.as_deref().is_some_and(|s| !s.is_empty() && s != "swarm") {
            return Err(EngineError::bad(format!(
                "scope {:?}: shoal networks are swarm-scoped; leave --scope out",
                r.scope.unwrap_or_default()
            )));
        }
        let ipam = r.ipam.clone().unwrap_or_default();
        let cfgs = ipam.config.unwrap_or_default();
        if cfgs.len() > 1 {
            return Err(EngineError::bad("IPAM.Config: shoal takes one --subnet per network"));
        }
        let (subnet, gateway) = match cfgs.first() {
            None => (None, None),
            Some(c) => {
                let subnet = c
                    .subnet
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|e| EngineError::bad(format!("--subnet {s:?}: {e}"))))
                    .transpose()?;
                let gateway = c
                    .gateway
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|e| EngineError::bad(format!("--gateway {s:?}: {e}"))))
                    .transpose()?;
                (subnet, gateway)
            }
        };
        let spec = NetworkSpec {
            name: r.name.clone(),
            // Docker's default driver is bridge; on a swarm-scoped network it means overlay.
            driver: r.driver.filter(|d| !d.is_empty() && d != "bridge").unwrap_or_else(|| "overlay".into()),
            subnet,
            gateway,
            attachable: r.attachable.unwrap_or(false),
            ingress: r.ingress.unwrap_or(false),
            internal: r.internal.unwrap_or(false),
            node_local: false,
            options: r.options.unwrap_or_default().into_iter().collect(),
            labels: r.labels.unwrap_or_default().into_iter().collect(),
        };
        match self.propose(Command::CreateNetwork { spec }).await? {
            Response::Created { id } => json(201, &serde_json::json!({ "Id": id, "Warning": "" })),
            other => Err(EngineError::Internal(format!("unexpected result {other:?}"))),
        }
    }

    /// `service logs` / `task logs`: the node's log broker read (once, or in rounds with
    /// `follow`), written in Docker's multiplexed format with the details prefix the docker CLI
    /// parses to name each line's task and node.
    async fn logs(&self, target: String, v: ClusterView, q: &BTreeMap<String, String>) -> Result<Reply, EngineError> {
        if flag(q, "timestamps") {
            return Err(EngineError::NotImplemented("shoal does not record log timestamps: leave out --timestamps".into()));
        }
        if q.get("since").is_some_and(|s| !s.is_empty() && s != "0") || q.get("until").is_some_and(|s| !s.is_empty() && s != "0") {
            return Err(EngineError::NotImplemented("shoal does not record log timestamps: leave out --since and --until".into()));
        }
        let tail = match q.get("tail").map(String::as_str) {
            None | Some("") | Some("all") => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| EngineError::bad(format!("tail {n:?}: give a number of lines or \"all\"")))?),
        };
        let (out, err) = (flag(q, "stdout"), flag(q, "stderr"));
        if !out && !err {
            return Err(EngineError::bad("you must choose at least one stream: stdout=1 or stderr=1"));
        }
        let details = flag(q, "details");
        let follow = flag(q, "follow");
        let mut req = LogsRequest { target, tail, cursors: BTreeMap::new(), follow_up: false };
        // The first read is made before answering, so a failure is an HTTP error, not a
        // stream that ends empty.
        let first = match self.api(ApiRequest::Logs(req.clone())).await? {
            ApiResponse::Logs(r) => r,
            other => return Err(EngineError::Internal(format!("unexpected reply {other:?}"))),
        };
        let (tx, rx) = mpsc::channel(64);
        let engine = self.clone();
        let mut tasks: BTreeMap<TaskId, (NodeId, ServiceId)> =
            v.state.tasks.values().map(|t| (t.id.clone(), (t.node_id.clone().unwrap_or_default(), t.service_id.clone()))).collect();
        let span = tracing::debug_span!("service_logs", target = %req.target);
        tokio::spawn(
            async move {
                let mut next = Some(first);
                loop {
                    let reply = match next.take() {
                        Some(r) => r,
                        None => match engine.api(ApiRequest::Logs(req.clone())).await {
                            Ok(ApiResponse::Logs(r)) => r,
                            Ok(other) => {
                                tracing::warn!(reply = ?other, "unexpected reply to a log read");
                                return;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "log follow ended");
                                return;
                            }
                        },
                    };
                    for t in &reply.tasks {
                        if t.log.error.is_some() {
                            continue;
                        }
                        if !tasks.contains_key(&t.log.task_id) {
                            if let Ok(v) = engine.view().await {
                                tasks.extend(
                                    v.state
                                        .tasks
                                        .values()
                                        .map(|t| (t.id.clone(), (t.node_id.clone().unwrap_or_default(), t.service_id.clone()))),
                                );
                            }
                        }
                        let (node, service) = tasks.get(&t.log.task_id).cloned().unwrap_or_default();
                        let prefix = details.then(|| log_details(&node, &service, &t.log.task_id));
                        for (stream, text, on) in [(1u8, &t.log.stdout, out), (2u8, &t.log.stderr, err)] {
                            if !on {
                                continue;
                            }
                            for line in text.lines() {
                                if tx.send(frame(stream, prefix.as_deref(), line)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        req.cursors.insert(t.log.task_id.clone(), t.log.next);
                    }
                    // A follower that went away with nothing new to send is noticed here.
                    if !follow || tx.is_closed() {
                        return;
                    }
                    req.follow_up = true;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            .instrument(span),
        );
        Ok(Reply::Stream(rx))
    }
}

/// Docker's `--details` prefix of a service log line (the CLI parses it to name the task).
pub fn log_details(node: &str, service: &str, task: &str) -> String {
    format!("com.docker.swarm.node.id={node},com.docker.swarm.service.id={service},com.docker.swarm.task.id={task}")
}

/// One line in Docker's stdcopy framing: stream byte, three zeros, big-endian length, payload.
pub fn frame(stream: u8, details: Option<&str>, line: &str) -> Bytes {
    let mut payload = String::with_capacity(line.len() + 1);
    if let Some(d) = details {
        payload.push_str(d);
        payload.push(' ');
    }
    payload.push_str(line);
    payload.push('\n');
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload.as_bytes());
    Bytes::from(out)
}

fn swarm_spec(c: &crate::model::Cluster) -> d::SwarmSpec {
    d::SwarmSpec {
        name: Some("default".into()),
        labels: Some(Default::default()),
        orchestration: Some(d::SwarmSpecOrchestration { task_history_retention_limit: Some(c.task_history_limit as i64) }),
        dispatcher: Some(d::SwarmSpecDispatcher { heartbeat_period: Some(c.heartbeat_period_ms as i64 * 1_000_000) }),
        ca_config: Some(d::SwarmSpecCaConfig { node_cert_expiry: Some(c.cert_expiry_ms as i64 * 1_000_000), ..Default::default() }),
        encryption_config: Some(d::SwarmSpecEncryptionConfig { auto_lock_managers: Some(c.autolock_key.is_some()) }),
        ..Default::default()
    }
}

fn kernel_version() -> String {
    nix_uname().map(|u| u.1).unwrap_or_default()
}

fn nix_uname() -> Option<(String, String)> {
    let s = std::fs::read_to_string("/proc/sys/kernel/ostype").ok()?;
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some((s.trim().to_string(), r.trim().to_string()))
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

/// Go's GOARCH names, which Docker reports.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdcopy_frames_with_details() {
        let f = frame(1, Some(&log_details("n1", "s1", "t1")), "hello");
        let payload = "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello\n";
        assert_eq!(&f[..4], &[1, 0, 0, 0]);
        assert_eq!(u32::from_be_bytes(f[4..8].try_into().unwrap()) as usize, payload.len());
        assert_eq!(&f[8..], payload.as_bytes());
        let e = frame(2, None, "oops");
        assert_eq!((e[0], &e[8..]), (2, b"oops\n".as_slice()));
    }
}
