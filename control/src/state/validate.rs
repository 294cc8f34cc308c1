//! Spec validation: every check names the field and the fix. Runs before anything changes.

use super::limits::*;
use super::{ClusterState, StateError};
use crate::model::{EndpointMode, NetworkSpec, PublishMode, ServiceMode, ServiceSpec};
use std::collections::{BTreeMap, BTreeSet};

/// A list's length, each entry's size and the total size, against the bounds in `limits`.
pub fn check_list<'a>(field: &str, items: impl ExactSizeIterator<Item = &'a str>) -> Result<(), StateError> {
    if items.len() > MAX_ENTRIES {
        return Err(StateError::invalid(field, format!("{} entries is more than the limit of {MAX_ENTRIES}", items.len())));
    }
    let mut total = 0usize;
    for (i, item) in items.enumerate() {
        if item.len() > MAX_STRING_BYTES {
            return Err(StateError::invalid(
                format!("{field}[{i}]"),
                format!("{} bytes is more than the limit of {MAX_STRING_BYTES}", item.len()),
            ));
        }
        total += item.len();
    }
    if total > MAX_LIST_BYTES {
        return Err(StateError::invalid(field, format!("{total} bytes in all is more than the limit of {MAX_LIST_BYTES}")));
    }
    Ok(())
}

/// A map (labels, options) as a list of `key=value` sizes.
pub fn check_map(field: &str, map: &BTreeMap<String, String>) -> Result<(), StateError> {
    if map.len() > MAX_ENTRIES {
        return Err(StateError::invalid(field, format!("{} entries is more than the limit of {MAX_ENTRIES}", map.len())));
    }
    let mut total = 0usize;
    for (k, v) in map {
        let size = k.len() + v.len();
        if size > MAX_STRING_BYTES {
            return Err(StateError::invalid(
                format!("{field}[{k:.32}]"),
                format!("{size} bytes is more than the limit of {MAX_STRING_BYTES}"),
            ));
        }
        total += size;
    }
    if total > MAX_LIST_BYTES {
        return Err(StateError::invalid(field, format!("{total} bytes in all is more than the limit of {MAX_LIST_BYTES}")));
    }
    Ok(())
}

/// A single string (image, health command, token, message).
pub fn check_string(field: &str, s: &str, max: usize) -> Result<(), StateError> {
    if s.len() > max {
        return Err(StateError::invalid(field, format!("{} bytes is more than the limit of {max}", s.len())));
    }
    Ok(())
}

fn at_most(field: &str, value: u64, max: u64, unit: &str) -> Result<(), StateError> {
    if value > max {
        return Err(StateError::invalid(field, format!("{value}{unit} is more than the limit of {max}{unit}")));
    }
    Ok(())
}

/// `replicas` of a replicated service, for create, update and scale alike.
pub fn check_replicas(replicas: i64) -> Result<(), StateError> {
    if replicas < 0 {
        return Err(StateError::invalid("replicas", format!("must be 0 or more, got {replicas}")));
    }
    if replicas > MAX_REPLICAS {
        return Err(StateError::invalid("replicas", format!("{replicas} is more than the limit of {MAX_REPLICAS}")));
    }
    Ok(())
}

/// Every count and size of a service spec (see `limits`), before anything looks inside it.
fn check_service_bounds(spec: &ServiceSpec) -> Result<(), StateError> {
    check_string("name", &spec.name, MAX_STRING_BYTES)?;
    check_string("image", &spec.image, MAX_STRING_BYTES)?;
    if let ServiceMode::Replicated { replicas } = spec.mode {
        check_replicas(replicas)?;
    }
    check_list("args", spec.args.iter().map(String::as_str))?;
    check_list("env", spec.env.iter().map(String::as_str))?;
    check_map("labels", &spec.labels)?;
    check_list("networks", spec.networks.iter().map(String::as_str))?;
    check_list("secrets", spec.secrets.iter().map(|r| r.source.as_str()))?;
    check_list("configs", spec.configs.iter().map(|r| r.source.as_str()))?;
    check_mounts(&spec.mounts)?;
    check_container(&spec.container)?;
    check_file_refs("secrets", &spec.secrets, crate::model::FileRef::secret_path)?;
    check_file_refs("configs", &spec.configs, crate::model::FileRef::config_path)?;
    let mut paths: Vec<String> = spec.secrets.iter().map(|r| r.secret_path()).collect();
    for (i, r) in spec.configs.iter().enumerate() {
        if paths.contains(&r.config_path()) {
            return Err(StateError::invalid(
                format!("configs[{i}].target"),
                format!("{} is also a secret's target: give one of them another target=", r.config_path()),
            ));
        }
        paths.push(r.config_path());
    }
    check_list("constraints", spec.placement.constraints.iter().map(String::as_str))?;
    if spec.placement.preferences.len() > crate::model::MAX_PREFERENCES {
        return Err(StateError::invalid("placement-pref", format!("at most {} preferences", crate::model::MAX_PREFERENCES)));
    }
    for (i, p) in spec.placement.preferences.iter().enumerate() {
        p.check().map_err(|why| StateError::invalid(format!("placement-pref[{i}]"), why.to_string()))?;
    }
    if spec.endpoint.ports.len() > MAX_ENTRIES {
        return Err(StateError::invalid("ports", format!("{} entries is more than the limit of {MAX_ENTRIES}", spec.endpoint.ports.len())));
    }
    at_most("max-replicas", spec.placement.max_replicas_per_node, MAX_REPLICAS_PER_NODE, "")?;
    at_most("limit-cpu", spec.limits.nano_cpus, MAX_NANO_CPUS, " nano-CPUs")?;
    at_most("limit-memory", spec.limits.memory_bytes, MAX_MEMORY_BYTES, " bytes")?;
    at_most("limit-pids", spec.limits.pids, MAX_PIDS, "")?;
    at_most("reserve-cpu", spec.reservations.nano_cpus, MAX_NANO_CPUS, " nano-CPUs")?;
    at_most("reserve-memory", spec.reservations.memory_bytes, MAX_MEMORY_BYTES, " bytes")?;
    at_most("restart-delay", spec.restart.delay_ms, MAX_DURATION_MS, " ms")?;
    at_most("restart-window", spec.restart.window_ms, MAX_WINDOW_MS, " ms")?;
    at_most("restart-max-attempts", spec.restart.max_attempts, MAX_RETRIES, "")?;
    check_update_config("update", &spec.update)?;
    check_update_config("rollback", &spec.rollback)?;
    if let Some(h) = &spec.healthcheck {
        check_string("health-cmd", &h.cmd, MAX_STRING_BYTES)?;
        at_most("health-retries", u64::from(h.retries), MAX_RETRIES, "")?;
    }
    // Last, as it costs an encoding: the whole spec as the state stores it.
    let size = serde_json::to_vec(spec).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_SPEC_BYTES {
        return Err(StateError::invalid("spec", format!("{size} bytes encoded is more than the limit of {MAX_SPEC_BYTES}")));
    }
    Ok(())
}

/// `--update-*` and `--rollback-*` (`which` is "update" or "rollback").
fn check_update_config(which: &str, c: &crate::model::UpdateConfig) -> Result<(), StateError> {
    at_most(&format!("{which}-parallelism"), c.parallelism, MAX_REPLICAS as u64, "")?;
    at_most(&format!("{which}-delay"), c.delay_ms, MAX_DURATION_MS, " ms")?;
    at_most(&format!("{which}-monitor"), c.monitor_ms, MAX_DURATION_MS, " ms")?;
    let r = c.max_failure_ratio.0;
    // -0.0 is refused with NaN: `Ratio` compares by bits, so only one zero may exist.
    if !(0.0..=1.0).contains(&r) || r.is_sign_negative() {
        return Err(StateError::invalid(format!("{which}-max-failure-ratio"), format!("{r} is not a fraction: use 0 to 1, e.g. 0.2")));
    }
    Ok(())
}

/// Docker's object-name rule: starts with a letter or digit, then letters, digits, `_.-`.
pub fn check_name(field: &str, name: &str) -> Result<(), StateError> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.is_empty() {
        return Err(StateError::invalid(field, "must not be empty"));
    }
    if !ok_first || !ok_rest || name.len() > 63 {
        return Err(StateError::invalid(
            field,
            format!("{name:?} is not a valid name: use up to 63 letters, digits, '_', '.', '-', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// The UDP port of VXLAN between nodes (the data plane's `VXLAN_PORT`).
const VXLAN_PORT: i64 = 4789;

/// Ports the cluster's own daemons listen on: publishing one would take it over on every node
/// (the mesh answers on all of them) and cut the cluster apart. The managers' API ports are
/// the ones they listen on (`--listen-addr`), read from their node records, and a worker's, where
/// it listens once promoted; VXLAN is fixed.
fn reserved_port(state: &ClusterState, proto: crate::model::Protocol, port: i64) -> Option<String> {
    use crate::model::Protocol::{Tcp, Udp};
    let manager_api = state.nodes.values().filter_map(|n| {
        let addr = n.manager_addr.as_deref()?;
        let port: i64 = addr.rsplit_once(':')?.1.parse().ok()?;
        Some((n, port))
    });
    match proto {
        Udp if port == VXLAN_PORT => Some("VXLAN between nodes".into()),
        Tcp => manager_api.into_iter().find(|(_, p)| *p == port).map(|(n, _)| match n.role {
            crate::model::Role::Manager => format!("the manager API of {}", n.hostname),
            crate::model::Role::Worker => format!("the manager API port of {}, once promoted", n.hostname),
        }),
        _ => None,
    }
}

pub fn check_service(spec: &ServiceSpec, state: &ClusterState) -> Result<(), StateError> {
    check_service_bounds(spec)?;
    check_name("name", &spec.name)?;
    if spec.image.trim().is_empty() {
        return Err(StateError::invalid("image", "must not be empty: give the image to run"));
    }
    for (i, e) in spec.env.iter().enumerate() {
        let key = e.split('=').next().unwrap_or("");
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(StateError::invalid(format!("env[{i}]"), format!("{e:?} is not KEY=VALUE")));
        }
    }
    let mut seen_targets = BTreeSet::new();
    for (i, p) in spec.endpoint.ports.iter().enumerate() {
        if p.protocol == crate::model::Protocol::Sctp {
            return Err(StateError::invalid(
                format!("ports[{i}].protocol"),
                "sctp is not carried by shoal's load balancers (eBPF, nftables, IPVS balance TCP and UDP): publish tcp or udp",
            ));
        }
        if !(1..=65535).contains(&p.target) {
            return Err(StateError::invalid(format!("ports[{i}].target"), format!("{} is not a port: use 1-65535", p.target)));
        }
        if let Some(published) = p.published {
            if !(1..=65535).contains(&published) {
                return Err(StateError::invalid(format!("ports[{i}].published"), format!("{published} is not a port: use 1-65535")));
            }
            if let Some(what) = reserved_port(state, p.protocol, published) {
                return Err(StateError::invalid(
                    format!("ports[{i}].published"),
                    format!("{published}/{} is shoal's own ({what}) on every node: choose another port", p.protocol.as_str()),
                ));
            }
        } else if p.mode == PublishMode::Host {
            return Err(StateError::invalid(format!("ports[{i}].published"), "host-mode ports need an explicit published port"));
        }
        if p.mode == PublishMode::Ingress && spec.endpoint.mode == EndpointMode::Dnsrr {
            return Err(StateError::invalid(
                "endpoint-mode",
                "dnsrr cannot publish ingress ports: use --endpoint-mode vip or publish in mode=host",
            ));
        }
        if let Some(published) = p.published {
            if !seen_targets.insert((p.protocol, published, p.mode == PublishMode::Host)) {
                return Err(StateError::invalid(
                    format!("ports[{i}].published"),
                    format!("port {published}/{} is published twice", p.protocol.as_str()),
                ));
            }
        }
    }
    let mut nets = BTreeSet::new();
    for (i, n) in spec.networks.iter().enumerate() {
        let net = state.find_network(n).map_err(|_| {
            StateError::invalid(format!("networks[{i}]"), format!("network {n:?} not found: create it with `shoal network create`"))
        })?;
        if !nets.insert(net.id.clone()) {
            return Err(StateError::invalid(format!("networks[{i}]"), format!("network {n:?} is listed twice")));
        }
    }
    check_network_aliases(spec)?;
    if let Err((i, e)) = crate::model::constraint::parse_all(&spec.placement.constraints) {
        return Err(StateError::invalid(format!("constraints[{i}]"), e.to_string()));
    }
    if spec.placement.max_replicas_per_node > 0 && spec.mode == ServiceMode::Global {
        return Err(StateError::invalid("max-replicas", "only replicated services take a per-node maximum"));
    }
    let l = &spec.limits;
    if l.memory_bytes > 0 && l.memory_bytes < 6 << 20 {
        return Err(StateError::invalid("limit-memory", format!("{} bytes is below the minimum of 6MiB", l.memory_bytes)));
    }
    if l.nano_cpus > 0 && l.nano_cpus < 10_000_000 {
        return Err(StateError::invalid("limit-cpu", "must be at least 0.01 CPU"));
    }
    let r = &spec.reservations;
    if l.memory_bytes > 0 && r.memory_bytes > l.memory_bytes {
        return Err(StateError::invalid("reserve-memory", "is above --limit-memory: a task cannot need more than it may use"));
    }
    if l.nano_cpus > 0 && r.nano_cpus > l.nano_cpus {
        return Err(StateError::invalid("reserve-cpu", "is above --limit-cpu: a task cannot need more than it may use"));
    }
    if let Some(h) = &spec.healthcheck {
        if h.cmd.trim().is_empty() {
            return Err(StateError::invalid("health-cmd", "must not be empty: give a shell command that exits 0 when the task is healthy"));
        }
        if !(1..=MAX_DURATION_MS).contains(&h.interval_ms) {
            return Err(StateError::invalid("health-interval", format!("{} ms: use 1ms to 24h", h.interval_ms)));
        }
        if !(1..=MAX_DURATION_MS).contains(&h.timeout_ms) {
            return Err(StateError::invalid("health-timeout", format!("{} ms: use 1ms to 24h", h.timeout_ms)));
        }
        if h.retries == 0 {
            return Err(StateError::invalid("health-retries", "must be 1 or more"));
        }
        if h.start_period_ms > MAX_DURATION_MS {
            return Err(StateError::invalid("health-start-period", format!("{} ms: use at most 24h", h.start_period_ms)));
        }
    }
    for (i, s) in spec.configs.iter().map(|r| &r.source).enumerate() {
        state.find_config(s).map_err(|_| {
            StateError::invalid(format!("configs[{i}]"), format!("config {s:?} not found: create it with `shoal config create`"))
        })?;
    }
    for (i, s) in spec.secrets.iter().map(|r| &r.source).enumerate() {
        state.find_secret(s).map_err(|_| {
            StateError::invalid(format!("secrets[{i}]"), format!("secret {s:?} not found: create it with `shoal secret create`"))
        })?;
    }
    Ok(())
}

/// Aliases name a network the service is on, and each is a DNS name the embedded DNS serves
/// (a bad one would fail the whole zone on every node).
fn check_network_aliases(spec: &ServiceSpec) -> Result<(), StateError> {
    check_map("network-aliases", &spec.network_aliases.iter().map(|(k, v)| (k.clone(), v.join(","))).collect())?;
    for (net, aliases) in &spec.network_aliases {
        let field = format!("network-aliases[{net:.32}]");
        if !spec.networks.contains(net) {
            return Err(StateError::invalid(field, format!("the service is not on network {net:?}: add it to the service's networks")));
        }
        check_list(&field, aliases.iter().map(String::as_str))?;
        for a in aliases {
            let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if a.len() > 253 || !a.split('.').all(label_ok) {
                return Err(StateError::invalid(
                    field,
                    format!("{a:?} is not a DNS name: use letters, digits, '-' and '_', up to 63 per dot-separated label"),
                ));
            }
        }
    }
    Ok(())
}

pub fn check_network(spec: &NetworkSpec) -> Result<(), StateError> {
    check_name("name", &spec.name)?;
    check_string("driver", &spec.driver, MAX_STRING_BYTES)?;
    check_map("opt", &spec.options)?;
    check_map("labels", &spec.labels)?;
    if !(spec.driver.is_empty() || spec.driver == "overlay") {
        return Err(StateError::invalid("driver", format!("{:?} is not supported: use overlay", spec.driver)));
    }
    if let (Some(gw), Some(subnet)) = (spec.gateway, spec.subnet) {
        if !subnet.contains(&gw) || gw == subnet.network() || gw == subnet.broadcast() {
            return Err(StateError::invalid("gateway", format!("{gw} is not a host address of subnet {subnet}")));
        }
    }
    if spec.gateway.is_some() && spec.subnet.is_none() {
        return Err(StateError::invalid("gateway", "a gateway needs an explicit --subnet"));
    }
    // Fail closed (Docker's CVE-2023-28841 ran "encrypted" overlays in plaintext): a backend
    // shoal cannot run is refused at create, never made in the clear.
    if let Some(v) = spec.options.get(crate::model::ENCRYPTED_OPTION) {
        let asked = if v.is_empty() { "--opt encrypted".to_string() } else { format!("--opt encrypted={v}") };
        crate::model::EncryptionBackend::from_option(v).map_err(|m| StateError::invalid("opt encrypted", format!("{asked}: {m}")))?;
        if spec.node_local {
            return Err(StateError::invalid(
                "opt encrypted",
                format!("{asked}: a node-local network never leaves the node: remove the option"),
            ));
        }
    }
    Ok(())
}

/// Each secret's (config's) file: a plain relative or absolute path, no `..`, one per file.
fn check_file_refs(what: &str, refs: &[crate::model::FileRef], path: fn(&crate::model::FileRef) -> String) -> Result<(), StateError> {
    let mut seen = BTreeSet::new();
    for (i, r) in refs.iter().enumerate() {
        let field = format!("{what}[{i}].target");
        let t = &r.target;
        if t.is_empty() || t.len() > 4096 || t.contains('\0') || t.split('/').any(|c| c == ".." || c == ".") || t.ends_with('/') {
            return Err(StateError::invalid(
                field,
                format!("{t:?} is not a file path: give a name like db_password or an absolute path without . or .."),
            ));
        }
        if r.mode > 0o7777 {
            return Err(StateError::invalid(format!("{what}[{i}].mode"), format!("{:o} is not permission bits: use e.g. 0400", r.mode)));
        }
        if !seen.insert(path(r)) {
            return Err(StateError::invalid(field, format!("{} is the target of two {what}: give one of them another target=", path(r))));
        }
    }
    Ok(())
}

/// `--mount`: absolute targets, one mount per target; a bind's source is an absolute host path,
/// a volume's a name, a tmpfs has none; options only of their own type.
fn check_mounts(mounts: &[crate::model::Mount]) -> Result<(), StateError> {
    use crate::model::MountKind;
    if mounts.len() > MAX_ENTRIES {
        return Err(StateError::invalid("mounts", format!("{} entries is more than the limit of {MAX_ENTRIES}", mounts.len())));
    }
    let mut seen = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let f = |what: &str| format!("mounts[{i}].{what}");
        let plain = |p: &str| p.starts_with('/') && p.len() <= 4096 && !p.contains('\0') && !p.split('/').any(|c| c == "..");
        if !plain(&m.target) || m.target == "/" {
            return Err(StateError::invalid(
                f("target"),
                format!("{:?} is not an absolute path inside the task: use e.g. dst=/data", m.target),
            ));
        }
        if !seen.insert(m.target.trim_end_matches('/')) {
            return Err(StateError::invalid(f("target"), format!("{} is the target of two mounts", m.target)));
        }
        let kind = m.kind.as_str();
        match m.kind {
            MountKind::Bind if !plain(&m.source) => {
                return Err(StateError::invalid(
                    f("source"),
                    format!("{:?}: a bind mount needs an absolute host path, e.g. src=/srv/data", m.source),
                ))
            }
            MountKind::Volume if !m.source.is_empty() => check_name(&f("source"), &m.source)?,
            MountKind::Tmpfs if !m.source.is_empty() => {
                return Err(StateError::invalid(f("source"), "a tmpfs mount has no source: remove src="));
            }
            _ => {}
        }
        let wrong = |opt: &str, for_kind: &str| StateError::invalid(f(opt), format!("{opt} is for type={for_kind}, not type={kind}"));
        if m.kind != MountKind::Bind && m.bind_propagation.is_some() {
            return Err(wrong("bind-propagation", "bind"));
        }
        if let Some(p) = &m.bind_propagation {
            if !crate::model::PROPAGATIONS.contains(&p.as_str()) {
                return Err(StateError::invalid(
                    f("bind-propagation"),
                    format!("{p:?}: use one of {}", crate::model::PROPAGATIONS.join(", ")),
                ));
            }
        }
        if m.kind != MountKind::Volume && (m.volume_nocopy || m.volume_driver.is_some()) {
            return Err(wrong(if m.volume_nocopy { "volume-nocopy" } else { "volume-driver" }, "volume"));
        }
        if let Some(d) = m.volume_driver.as_deref().filter(|d| *d != "local") {
            return Err(StateError::invalid(f("volume-driver"), format!("{d:?}: only the local driver exists")));
        }
        if m.kind != MountKind::Volume && (!m.volume_opts.is_empty() || !m.volume_labels.is_empty()) {
            return Err(wrong(if m.volume_opts.is_empty() { "volume-label" } else { "volume-opt" }, "volume"));
        }
        crate::model::check_volume_opts(&m.volume_opts).map_err(|(k, why)| StateError::invalid(f(&format!("volume-opt.{k}")), why))?;
        check_map(&f("volume-label"), &m.volume_labels)?;
        if m.kind != MountKind::Tmpfs && (m.tmpfs_size > 0 || m.tmpfs_mode.is_some()) {
            return Err(wrong(if m.tmpfs_size > 0 { "tmpfs-size" } else { "tmpfs-mode" }, "tmpfs"));
        }
        if m.tmpfs_size > MAX_MEMORY_BYTES {
            return Err(StateError::invalid(f("tmpfs-size"), format!("{} bytes is more than 1 PiB", m.tmpfs_size)));
        }
        if m.tmpfs_mode.is_some_and(|m| m > 0o7777) {
            return Err(StateError::invalid(f("tmpfs-mode"), "not permission bits: use e.g. 1777"));
        }
    }
    Ok(())
}

/// `--hostname`, `--user`, `--workdir`, `--entrypoint`, `--stop-grace-period`, `--cap-*`, `--dns*`.
fn check_container(c: &crate::model::ContainerOpts) -> Result<(), StateError> {
    if let Some(h) = &c.hostname {
        let ok = !h.is_empty()
            && h.len() <= crate::model::HOST_NAME_MAX
            && h.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-'));
        if !ok {
            return Err(StateError::invalid(
                "hostname",
                format!("{h:?} is not a hostname: use letters, digits, '-' and '.', at most 64 bytes"),
            ));
        }
    }
    if let Some(u) = &c.user {
        let ok = !u.is_empty()
            && u.len() <= 256
            && u.split(':').count() <= 2
            && u.split(':').all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
        if !ok {
            return Err(StateError::invalid("user", format!("{u:?} is not user[:group]: use e.g. app or 1000:1000")));
        }
    }
    if let Some(w) = &c.workdir {
        if !w.starts_with('/') || w.contains('\0') || w.len() > 4096 {
            return Err(StateError::invalid("workdir", format!("{w:?} is not an absolute path: use e.g. /app")));
        }
    }
    if let Some(e) = &c.entrypoint {
        check_list("entrypoint", e.iter().map(String::as_str))?;
    }
    if let Some(g) = c.stop_grace_ms {
        if g > MAX_DURATION_MS {
            return Err(StateError::invalid("stop-grace-period", format!("{g} ms: use at most 24h")));
        }
    }
    for (field, caps) in [("cap-add", &c.cap_add), ("cap-drop", &c.cap_drop)] {
        for cap in caps {
            if cap != "ALL" && !crate::model::CAPABILITIES.contains(&cap.as_str()) {
                return Err(StateError::invalid(field, format!("{cap:?} is not a capability: use a name like NET_ADMIN or ALL")));
            }
        }
    }
    for (name, soft, hard) in &c.ulimits {
        if !crate::model::ULIMITS.contains(&name.as_str()) {
            return Err(StateError::invalid("ulimit", format!("{name:?} is not a limit: use one of {}", crate::model::ULIMITS.join(", "))));
        }
        if soft > hard {
            return Err(StateError::invalid("ulimit", format!("{name}: soft limit {soft} is above the hard limit {hard}")));
        }
    }
    check_map("sysctl", &c.sysctls)?;
    for k in c.sysctls.keys() {
        let namespaced = k.starts_with("net.")
            || k.starts_with("kernel.shm")
            || k.starts_with("kernel.msg")
            || k.starts_with("fs.mqueue.")
            || k == "kernel.sem";
        if !namespaced {
            return Err(StateError::invalid(
                "sysctl",
                format!("{k:?} is not namespaced: a task may set net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*"),
            ));
        }
    }
    check_list("group", c.groups.iter().map(String::as_str))?;
    check_map("container-label", &c.labels)?;
    for d in &c.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(StateError::invalid("dns", format!("{d:?} is not an IP address: use e.g. 10.0.0.2")));
        }
    }
    for (field, list) in [("dns-search", &c.dns_search), ("dns-option", &c.dns_options)] {
        check_list(field, list.iter().map(String::as_str))?;
        if let Some(bad) = list.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return Err(StateError::invalid(field, format!("{bad:?}: one word each, e.g. ndots:2")));
        }
    }
    Ok(())
}
