//! One command at a time. Every fallible step comes before the first change.

use crate::model::{CaRotation, Config, Network, NodeState, Role, Secret, Service, ServiceMode, ServiceSpec, TaskState, UpdateState};
use crate::state::{limits, validate, ClusterState, Command, Response, StateError};

pub(super) fn apply_command(cs: &mut ClusterState, now: u64, cmd: &Command) -> Result<Response, StateError> {
    if cs.cluster.is_none() && !matches!(cmd, Command::Init { .. }) {
        return Err(StateError::NotInitialised);
    }
    match cmd {
        Command::Init { cluster, node } => {
            if cs.cluster.is_some() {
                return Err(StateError::AlreadyInitialised);
            }
            cs.ids = crate::model::IdGen::new(cluster.id.clone());
            cs.cluster = Some(cluster.clone());
            cs.nodes.insert(node.id.clone(), node.clone());
            // The routing-mesh network, like Swarm's `ingress`.
            let spec = crate::model::NetworkSpec { name: "ingress".into(), driver: "overlay".into(), ingress: true, ..Default::default() };
            let (vni, subnet, gateway) = crate::allocator::plan_network(cs, &spec)?;
            let id: crate::model::NetworkId = cs.ids.next_id();
            cs.networks.insert(
                id.clone(),
                Network {
                    id,
                    spec,
                    vni,
                    subnet,
                    gateway,
                    lb_addrs: Default::default(),
                    created_ms: now,
                    last_task_addr: None,
                    encryption: None,
                },
            );
            // The gateway bridge, like Swarm's `docker_gwbridge`: tasks of services that
            // name no network get loopback and egress through it.
            let (spec, vni, subnet, gateway) = crate::allocator::plan_gateway_network(cs)?;
            let id: crate::model::NetworkId = cs.ids.next_id();
            cs.networks.insert(
                id.clone(),
                Network {
                    id,
                    spec,
                    vni,
                    subnet,
                    gateway,
                    lb_addrs: Default::default(),
                    created_ms: now,
                    last_task_addr: None,
                    encryption: None,
                },
            );
            Ok(Response::Ok)
        }
        Command::AddNode { node } => {
            validate::check_string("hostname", &node.hostname, limits::MAX_STRING_BYTES)?;
            validate::check_map("labels", &node.labels)?;
            if cs.nodes.contains_key(&node.id) {
                return Err(StateError::exists("node", node.id.as_str()));
            }
            cs.nodes.insert(node.id.clone(), node.clone());
            Ok(Response::Created { id: node.id.to_string() })
        }
        Command::RemoveNode { node, force } => {
            let n = cs.find_node(node)?;
            if n.role == Role::Manager {
                return Err(StateError::FailedPrecondition(format!(
                    "node {} is a manager: demote it first with `shoal node demote {}`",
                    n.hostname, n.hostname
                )));
            }
            if n.state != NodeState::Down && !force {
                return Err(StateError::FailedPrecondition(format!(
                    "node {} is not down and can't be removed: stop it, or use --force",
                    n.hostname
                )));
            }
            let id = n.id.clone();
            cs.nodes.remove(&id);
            cs.wireguard.remove(&id);
            cs.removed_nodes.insert(id.clone());
            for net in cs.networks.values_mut() {
                net.lb_addrs.remove(&id);
            }
            Ok(Response::Ok)
        }
        Command::UpdateNode { node, availability, role, label_add, label_rm } => {
            validate::check_map("label-add", label_add)?;
            validate::check_list("label-rm", label_rm.iter().map(String::as_str))?;
            let id = cs.find_node(node)?.id.clone();
            if *role == Some(Role::Worker) {
                let managers = cs.nodes.values().filter(|n| n.role == Role::Manager).count();
                let is_manager = cs.nodes[&id].role == Role::Manager;
                if is_manager && managers == 1 {
                    return Err(StateError::FailedPrecondition("cannot demote the last manager: promote another node first".into()));
                }
            }
            let n = cs.nodes.get_mut(&id).ok_or_else(|| StateError::not_found("node", node))?;
            if let Some(a) = availability {
                n.availability = *a;
            }
            if let Some(r) = role {
                n.role = *r;
            }
            // Each change is bounded, and so is what they add up to.
            let mut labels = n.labels.clone();
            for (k, v) in label_add {
                labels.insert(k.clone(), v.clone());
            }
            for k in label_rm {
                labels.remove(k);
            }
            validate::check_map("label-add", &labels)?;
            n.labels = labels;
            n.updated_ms = now;
            Ok(Response::Ok)
        }
        Command::SetNodeState { node, state, message } => {
            validate::check_string("message", message, limits::MAX_MESSAGE_BYTES)?;
            let id = cs.find_node(node)?.id.clone();
            let n = cs.nodes.get_mut(&id).ok_or_else(|| StateError::not_found("node", node))?;
            n.state = *state;
            n.message = message.clone();
            n.updated_ms = now;
            Ok(Response::Ok)
        }
        Command::SetNodeEncryption { node, encryption } => {
            let n = cs.nodes.get_mut(node).ok_or_else(|| StateError::not_found("node", node.as_str()))?;
            n.encryption = *encryption;
            n.updated_ms = now;
            Ok(Response::Ok)
        }
        Command::SetJoinToken { role, token } => {
            validate::check_string("token", token, limits::MAX_TOKEN_BYTES)?;
            let c = cs.cluster.as_mut().ok_or(StateError::NotInitialised)?;
            match role {
                Role::Worker => c.worker_token = token.clone(),
                Role::Manager => c.manager_token = token.clone(),
            }
            Ok(Response::Ok)
        }
        Command::UpdateCluster { cert_expiry_ms, autolock } => {
            let expiry = cert_expiry_ms
                .map(crate::ca::check_cert_expiry)
                .transpose()
                .map_err(|m| StateError::invalid("cert-expiry", m.to_string()))?;
            if let Some(crate::state::Autolock::Key(k)) = autolock {
                if crate::store::crypto::UnlockKey::parse(k).is_none() {
                    return Err(StateError::invalid("autolock", "the unlock key is not SWMKEY-1-<key>"));
                }
            }
            let c = cs.cluster.as_mut().ok_or(StateError::NotInitialised)?;
            if let Some(e) = expiry {
                c.cert_expiry_ms = e.as_millis() as u64;
            }
            match autolock {
                Some(crate::state::Autolock::Key(k)) => c.autolock_key = Some(k.clone()),
                Some(crate::state::Autolock::Off) => c.autolock_key = None,
                None => {}
            }
            Ok(Response::Ok)
        }
        Command::StartCaRotation { rotation } => {
            let c = cs.cluster.as_mut().ok_or(StateError::NotInitialised)?;
            if c.ca_rotation.is_some() {
                return Err(StateError::FailedPrecondition("a CA rotation is already in progress: wait for it to finish".into()));
            }
            if crate::ca::pem_certs(&rotation.cert_pem).len() != 1 || crate::ca::pem_certs(&rotation.cross_signed_pem).len() != 1 {
                return Err(StateError::invalid(
                    "rotation",
                    "the new root and its cross-signed certificate must be one PEM certificate each",
                ));
            }
            c.ca_rotation = Some(CaRotation { renewed: Default::default(), ..rotation.clone() });
            Ok(Response::Ok)
        }
        Command::CertIssued { node, ca_digest } => {
            let c = cs.cluster.as_mut().ok_or(StateError::NotInitialised)?;
            if let Some(r) = c.ca_rotation.as_mut() {
                if crate::ca::ca_digest(&r.cert_pem) == *ca_digest && cs.nodes.contains_key(node) {
                    r.renewed.insert(node.clone());
                }
            }
            Ok(Response::Ok)
        }
        Command::CreateNetwork { spec } => {
            validate::check_network(spec)?;
            if spec.ingress {
                return Err(StateError::invalid("ingress", "the cluster already has its ingress network"));
            }
            if spec.node_local {
                return Err(StateError::invalid("driver", "the cluster already has its gateway bridge: create overlay networks"));
            }
            if cs.find_network(&spec.name).is_ok_and(|n| n.spec.name == spec.name) {
                return Err(StateError::exists("network", &spec.name));
            }
            let (vni, subnet, gateway) = crate::allocator::plan_network(cs, spec)?;
            let mut spec = spec.clone();
            if spec.driver.is_empty() {
                spec.driver = "overlay".into();
            }
            // `--opt encrypted` alone: the best backend every node runs now (see `pick`); the
            // choice is kept with the network, shown by `network inspect`.
            let encryption = match spec.options.get(crate::model::ENCRYPTED_OPTION) {
                None => None,
                Some(v) => Some(
                    crate::model::EncryptionBackend::from_option(v)
                        .map_err(|m| StateError::invalid("opt encrypted", m.to_string()))?
                        .unwrap_or_else(|| crate::model::EncryptionBackend::pick(cs.nodes.values().map(|n| &n.encryption))),
                ),
            };
            let id: crate::model::NetworkId = cs.ids.next_id();
            cs.networks.insert(
                id.clone(),
                Network {
                    id: id.clone(),
                    encryption,
                    spec,
                    vni,
                    subnet,
                    gateway,
                    lb_addrs: Default::default(),
                    created_ms: now,
                    last_task_addr: None,
                },
            );
            Ok(Response::Created { id: id.into_string() })
        }
        Command::RemoveNetwork { network } => {
            let net = cs.find_network(network)?;
            if net.spec.ingress {
                return Err(StateError::FailedPrecondition("the ingress network cannot be removed".into()));
            }
            if net.spec.node_local {
                return Err(StateError::FailedPrecondition(format!("{} (the gateway bridge) cannot be removed", net.spec.name)));
            }
            if let Some(s) = cs.services.values().find(|s| s.network_ids.contains(&net.id)) {
                return Err(StateError::FailedPrecondition(format!(
                    "network {} is in use by service {}: remove the service first",
                    net.spec.name, s.spec.name
                )));
            }
            let id = net.id.clone();
            cs.networks.remove(&id);
            Ok(Response::Ok)
        }
        Command::CreateService { spec } => {
            validate::check_service(spec, cs)?;
            if cs.services.values().any(|s| s.spec.name == spec.name) {
                return Err(StateError::exists("service", &spec.name));
            }
            let network_ids = crate::allocator::service_networks(cs, spec)?;
            let (ports, vips) = crate::allocator::plan_service_endpoint(cs, spec, &network_ids, None)?;
            let id: crate::model::ServiceId = cs.ids.next_id();
            cs.services.insert(
                id.clone(),
                Service {
                    id: id.clone(),
                    spec: spec.clone(),
                    version: 1,
                    network_ids,
                    ports,
                    vips,
                    created_ms: now,
                    updated_ms: now,
                    previous_spec: None,
                    update_status: None,
                    spec_version: 1,
                    task_specs: Default::default(),
                },
            );
            Ok(Response::Created { id: id.into_string() })
        }
        Command::UpdateService { service, spec } => update_service(cs, service, spec, None, now),
        Command::UpdateServiceAt { service, version, spec } => update_service(cs, service, spec, Some(*version), now),
        Command::RollbackService { service, version } => {
            let s = cs.find_service(service)?;
            check_version(s, *version)?;
            let id = s.id.clone();
            crate::orchestrator::update::roll_back(cs, &id, now, "manually requested rollback".into())?;
            Ok(Response::Ok)
        }
        Command::ScaleService { service, replicas } => {
            let s = cs.find_service(service)?;
            if s.spec.mode == ServiceMode::Global {
                return Err(StateError::FailedPrecondition(format!(
                    "service {} is global: only replicated services can be scaled",
                    s.spec.name
                )));
            }
            validate::check_replicas(*replicas)?;
            let id = s.id.clone();
            let s = cs.services.get_mut(&id).ok_or_else(|| StateError::not_found("service", service))?;
            s.spec.mode = ServiceMode::Replicated { replicas: *replicas };
            s.version += 1;
            s.updated_ms = now;
            Ok(Response::Ok)
        }
        Command::RemoveService { service } => {
            let id = cs.find_service(service)?.id.clone();
            cs.services.remove(&id);
            Ok(Response::Ok)
        }
        Command::CreateConfig { spec } => {
            check_file_object(&spec.name, &spec.data, &spec.labels)?;
            if cs.configs.values().any(|s| s.spec.name == spec.name) {
                return Err(StateError::exists("config", &spec.name));
            }
            let id: crate::model::ConfigId = cs.ids.next_id();
            cs.configs.insert(id.clone(), Config { id: id.clone(), spec: spec.clone(), created_ms: now });
            Ok(Response::Created { id: id.into_string() })
        }
        Command::RemoveConfig { config } => {
            let s = cs.find_config(config)?;
            if let Some(svc) = cs.services.values().find(|svc| svc.spec.configs.iter().any(|r| r.source == s.spec.name)) {
                return Err(StateError::FailedPrecondition(format!("config {} is in use by service {}", s.spec.name, svc.spec.name)));
            }
            let id = s.id.clone();
            cs.configs.remove(&id);
            Ok(Response::Ok)
        }
        Command::CreateSecret { spec } => {
            check_file_object(&spec.name, &spec.data, &spec.labels)?;
            if cs.secrets.values().any(|s| s.spec.name == spec.name) {
                return Err(StateError::exists("secret", &spec.name));
            }
            let id: crate::model::SecretId = cs.ids.next_id();
            cs.secrets.insert(id.clone(), Secret { id: id.clone(), spec: spec.clone(), created_ms: now });
            Ok(Response::Created { id: id.into_string() })
        }
        Command::RemoveSecret { secret } => {
            let s = cs.find_secret(secret)?;
            if let Some(svc) = cs.services.values().find(|svc| svc.spec.secrets.iter().any(|r| r.source == s.spec.name)) {
                return Err(StateError::FailedPrecondition(format!("secret {} is in use by service {}", s.spec.name, svc.spec.name)));
            }
            let id = s.id.clone();
            cs.secrets.remove(&id);
            Ok(Response::Ok)
        }
        Command::TaskStatus { node, updates } => {
            // The dispatcher caps and trims reports before they get here; this is the
            // replicated backstop, so that no entry can carry more.
            if updates.len() > limits::MAX_REPORT_UPDATES {
                return Err(StateError::invalid(
                    "updates",
                    format!("{} task states is more than the limit of {}", updates.len(), limits::MAX_REPORT_UPDATES),
                ));
            }
            for (i, (_, status)) in updates.iter().enumerate() {
                validate::check_string(&format!("updates[{i}].message"), &status.message, limits::MAX_MESSAGE_BYTES)?;
                validate::check_string(&format!("updates[{i}].err"), status.err.as_deref().unwrap_or(""), limits::MAX_MESSAGE_BYTES)?;
            }
            for (task_id, status) in updates {
                let Some(t) = cs.tasks.get_mut(task_id) else { continue };
                // Only the node running a task speaks for it, and states only move forward.
                if t.node_id.as_deref() != Some(node.as_str()) || status.state < t.status.state {
                    continue;
                }
                if t.status.state.is_terminal() && status.state != t.status.state {
                    continue;
                }
                t.status = status.clone();
                if status.state == TaskState::Running && t.status.timestamp_ms == 0 {
                    t.status.timestamp_ms = now;
                }
            }
            Ok(Response::Ok)
        }
        Command::IssueWireGuard { node, private_key } => cs.issue_wireguard(now, node, private_key),
        Command::RotatePairKeys { seed } => cs.rotate_pair_keys(now, seed),
        Command::RequestKeyRotation => {
            if !cs.networks.values().any(|n| n.is_encrypted()) {
                return Err(StateError::FailedPrecondition("no network is encrypted: there are no keys to rotate".into()));
            }
            cs.key_rotation_requested_ms = Some(now);
            Ok(Response::Ok)
        }
        Command::InstallGossipKey { key } => cs.install_gossip_key(now, key),
        Command::UseGossipKey { id } => cs.use_gossip_key(now, *id),
        Command::RetireGossipKey { id } => cs.retire_gossip_key(*id),
        Command::RequestGossipKeyRotation => cs.request_gossip_key_rotation(now),
        Command::Tick => Ok(Response::Ok),
        Command::Batch(_) => Err(StateError::invalid("batch", "batches do not nest")),
    }
}

/// `service update` and a stack's redeploy: the whole new spec, guarded by the version it
/// was read at when one is given. When what tasks run changed, an update starts (and any
/// update or rollback in progress gives way to it); the old spec is kept for rollback.
fn update_service(
    cs: &mut ClusterState,
    service: &str,
    spec: &ServiceSpec,
    version: Option<u64>,
    now: u64,
) -> Result<Response, StateError> {
    let old = cs.find_service(service)?.clone();
    check_version(&old, version)?;
    validate::check_service(spec, cs)?;
    if spec.name != old.spec.name {
        return Err(StateError::invalid("name", "a service cannot be renamed"));
    }
    if matches!(
        (&old.spec.mode, &spec.mode),
        (ServiceMode::Global, ServiceMode::Replicated { .. }) | (ServiceMode::Replicated { .. }, ServiceMode::Global)
    ) {
        return Err(StateError::invalid("mode", "a service's mode cannot change: remove it and create it again"));
    }
    // A paused update resumes with the next `service update`, even one that changes nothing
    // (as Docker's).
    let paused = old.update_status.as_ref().is_some_and(|st| matches!(st.state, UpdateState::Paused | UpdateState::RollbackPaused));
    if *spec == old.spec && !paused {
        return Ok(Response::Ok);
    }
    let network_ids = crate::allocator::service_networks(cs, spec)?;
    let (ports, vips) = crate::allocator::plan_service_endpoint(cs, spec, &network_ids, Some(&old))?;
    let s = cs.services.get_mut(&old.id).ok_or_else(|| StateError::not_found("service", service))?;
    s.version += 1;
    let fresh = s.version;
    s.set_spec(spec.clone(), fresh);
    s.previous_spec = Some(Box::new(old.spec.clone()));
    s.network_ids = network_ids;
    s.ports = ports;
    s.vips = vips;
    s.updated_ms = now;
    if s.spec_version != old.spec_version || paused {
        crate::orchestrator::update::start(s, now);
    } else if s.update_status.as_ref().is_some_and(|st| !st.is_active()) {
        // As swarmkit: a new spec clears the last update's outcome (a paused update stays
        // paused only until the next `service update`).
        s.update_status = None;
    }
    Ok(Response::Ok)
}

/// Optimistic concurrency (the Engine API's `?version=`): a change made from an older read of
/// the service would silently undo what happened since.
fn check_version(s: &Service, version: Option<u64>) -> Result<(), StateError> {
    match version {
        Some(v) if v != s.version => Err(StateError::Conflict(format!(
            "update out of sequence: service {} is at version {}, this change was made from version {v}: inspect it again and retry",
            s.spec.name, s.version
        ))),
        _ => Ok(()),
    }
}

/// What a secret and a config must both be: a valid name, at most 500 KiB of data (as
/// Docker), labels within the limits.
fn check_file_object(name: &str, data: &[u8], labels: &std::collections::BTreeMap<String, String>) -> Result<(), StateError> {
    validate::check_name("name", name)?;
    if data.len() > limits::MAX_SECRET_BYTES {
        return Err(StateError::invalid(
            "data",
            format!("{} bytes is more than the limit of {} (500 KiB, as Docker)", data.len(), limits::MAX_SECRET_BYTES),
        ));
    }
    validate::check_map("labels", labels)
}
