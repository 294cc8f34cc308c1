//! A parsed Compose file to the objects of one stack: `<stack>_<name>` networks, secrets and
//! services labelled `com.docker.stack.namespace=<stack>`, each service's own name an alias on
//! its networks. Pure: files it needs (env_file, secret files) come through `Context::read`.
//! Keys shoal cannot honour yet are collected and refused together, never dropped.

use super::compose::{self, ComposeFile, Port};
use super::de::{Duration, StringOrList};
use super::error::StackError;
use super::interpolate::Vars;
use crate::model::{
    EndpointMode, FailureAction, HealthCheck, NetworkSpec, PortConfig, Protocol, PublishMode, Ratio, RestartCondition, SecretSpec,
    ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Docker's label naming the stack an object belongs to.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// Docker's label recording the image a stack service was deployed with.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// What conversion may read: relative paths are relative to the project directory (the first
/// file's), as in Compose.
pub struct Context<'a> {
    pub project_dir: PathBuf,
    pub vars: &'a Vars,
    pub read: &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackNetwork {
    /// The key in the file (`default` when made for services that name no network).
    pub key: String,
    pub spec: NetworkSpec,
    /// Declared `external`: must exist, never created or removed by the stack.
    pub external: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSecret {
    pub key: String,
    /// For an external secret, only the name is meaningful.
    pub spec: SecretSpec,
    pub external: bool,
}

/// Everything one stack deploys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSpec {
    pub name: String,
    pub networks: Vec<StackNetwork>,
    pub secrets: Vec<StackSecret>,
    pub services: Vec<ServiceSpec>,
}

/// A stack name: it prefixes every object, so it follows Docker's object-name rule.
pub fn check_stack_name(stack: &str) -> Result<(), StackError> {
    let bad = |reason: &str| StackError::StackName { stack: stack.to_string(), reason: reason.to_string() };
    if stack.is_empty() {
        return Err(bad("give the stack a name"));
    }
    if !stack.starts_with(|c: char| c.is_ascii_alphanumeric()) || !stack.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(bad("use letters, digits, '_', '.', '-', starting with a letter or digit"));
    }
    if stack.len() > 40 {
        return Err(bad("use at most 40 characters: its objects' names are <stack>_<name>"));
    }
    Ok(())
}

fn check_key(path: &str, key: &str) -> Result<(), StackError> {
    let ok = key.starts_with(|c: char| c.is_ascii_alphanumeric()) && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(StackError::invalid(
            path,
            format!("{key:?} is not a valid name: use letters, digits, '_', '.', '-', starting with a letter or digit"),
        ));
    }
    Ok(())
}

fn labels(stack: &str, declared: &Option<super::de::ListOrMap>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> =
        declared.iter().flat_map(|l| l.0.iter()).map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    out.insert(NAMESPACE_LABEL.into(), stack.into());
    out
}

pub fn convert(stack: &str, file: &ComposeFile, ctx: &Context) -> Result<StackSpec, StackError> {
    check_stack_name(stack)?;
    let mut unsupported = Unsupported::default();
    top_level_unsupported(file, &mut unsupported);
    let mut services = vec![];
    let mut used_networks: BTreeSet<String> = BTreeSet::new();
    let mut used_secrets: BTreeSet<String> = BTreeSet::new();
    if file.services.is_empty() {
        return Err(StackError::invalid("services", "the file has no services: a stack needs at least one"));
    }
    let secret_names = secret_names(stack, file);
    let network_names = network_names(stack, file);
    for (key, svc) in &file.services {
        let path = format!("services.{key}");
        check_key(&path, key)?;
        let spec = service(stack, key, svc, &path, ctx, &network_names, &secret_names, &mut unsupported)?;
        for n in service_network_keys(svc) {
            used_networks.insert(n);
        }
        for s in &svc.secrets {
            used_secrets.insert(s.0.source.clone());
        }
        services.push(spec);
    }
    let mut networks = vec![];
    for key in &used_networks {
        networks.push(network(stack, key, file.networks.get(key).and_then(Option::as_ref), &mut unsupported)?);
    }
    let mut secrets = vec![];
    for key in &used_secrets {
        let def = &file.secrets[key];
        secrets.push(secret(stack, key, def, ctx, &mut unsupported)?);
    }
    unsupported.check()?;
    Ok(StackSpec { name: stack.to_string(), networks, secrets, services })
}

/// Paths of keys present in the file that shoal cannot honour yet, with why.
#[derive(Default)]
struct Unsupported(Vec<String>);

impl Unsupported {
    fn add(&mut self, path: impl Into<String>) {
        self.0.push(path.into());
    }

    fn check(self) -> Result<(), StackError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StackError::Unsupported { keys: self.0 })
        }
    }
}

fn top_level_unsupported(file: &ComposeFile, u: &mut Unsupported) {
    for k in file.volumes.keys() {
        u.add(format!("volumes.{k} (volumes and mounts)"));
    }
    for k in file.configs.keys() {
        u.add(format!("configs.{k} (configs)"));
    }
}

/// The name of a network or secret: `<stack>_<key>`, or its `name:`; an external one is
/// named by its key (or `name:`) alone.
fn object_name(stack: &str, key: &str, external: Option<&compose::External>, name: Option<&String>) -> String {
    match (external.filter(|e| e.external), name) {
        (Some(e), n) => e.name.clone().or_else(|| n.cloned()).unwrap_or_else(|| key.to_string()),
        (None, Some(n)) => n.clone(),
        (None, None) => format!("{stack}_{key}"),
    }
}

fn network_names(stack: &str, file: &ComposeFile) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = file
        .networks
        .iter()
        .map(|(k, d)| {
            (k.clone(), object_name(stack, k, d.as_ref().and_then(|d| d.external.as_ref()), d.as_ref().and_then(|d| d.name.as_ref())))
        })
        .collect();
    out.entry("default".into()).or_insert_with(|| format!("{stack}_default"));
    out
}

fn secret_names(stack: &str, file: &ComposeFile) -> BTreeMap<String, String> {
    file.secrets.iter().map(|(k, d)| (k.clone(), object_name(stack, k, d.external.as_ref(), d.name.as_ref()))).collect()
}

/// The network keys a service is on: its list, or `default` when it names none.
fn service_network_keys(svc: &compose::Service) -> Vec<String> {
    match &svc.networks {
        Some(n) if !n.0.is_empty() => n.0.keys().cloned().collect(),
        _ => vec!["default".into()],
    }
}

fn network(stack: &str, key: &str, def: Option<&compose::NetworkDef>, u: &mut Unsupported) -> Result<StackNetwork, StackError> {
    let path = format!("networks.{key}");
    let empty = compose::NetworkDef::default();
    let d = def.unwrap_or(&empty);
    let external = d.external.as_ref().is_some_and(|e| e.external);
    let name = object_name(stack, key, d.external.as_ref(), d.name.as_ref());
    let driver = d.driver.clone().unwrap_or_else(|| "overlay".into());
    if driver != "overlay" {
        return Err(StackError::invalid(
            format!("{path}.driver"),
            format!("{driver:?}: shoal networks are overlays: use driver: overlay or leave it out"),
        ));
    }
    let mut spec = NetworkSpec {
        name,
        driver,
        attachable: d.attachable.is_some_and(|a| a.0),
        internal: d.internal.is_some_and(|i| i.0),
        ..Default::default()
    };
    spec.options = d.driver_opts.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    spec.labels = labels(stack, &d.labels);
    if let Some(ipam) = &d.ipam {
        if ipam.driver.as_deref().is_some_and(|drv| drv != "default") {
            u.add(format!("{path}.ipam.driver (IPAM drivers)"));
        }
        if ipam.options.is_some() {
            u.add(format!("{path}.ipam.options (IPAM options)"));
        }
        if ipam.config.len() > 1 {
            u.add(format!("{path}.ipam.config[1] (more than one subnet per network)"));
        }
        if let Some(pool) = ipam.config.first() {
            let p = format!("{path}.ipam.config[0]");
            if let Some(s) = &pool.subnet {
                spec.subnet =
                    Some(s.parse().map_err(|_| {
                        StackError::invalid(format!("{p}.subnet"), format!("{s:?} is not an IPv4 subnet like 10.0.9.0/24"))
                    })?);
            }
            if let Some(g) = &pool.gateway {
                spec.gateway =
                    Some(g.parse().map_err(|_| StackError::invalid(format!("{p}.gateway"), format!("{g:?} is not an IPv4 address")))?);
            }
            if pool.ip_range.is_some() {
                u.add(format!("{p}.ip_range (address ranges)"));
            }
            if pool.aux_addresses.is_some() {
                u.add(format!("{p}.aux_addresses (reserved addresses)"));
            }
        }
    }
    if d.enable_ipv6.is_some_and(|b| b.0) {
        u.add(format!("{path}.enable_ipv6 (IPv6)"));
    }
    if d.enable_ipv4.is_some_and(|b| !b.0) {
        u.add(format!("{path}.enable_ipv4 (IPv6-only networks)"));
    }
    Ok(StackNetwork { key: key.to_string(), spec, external })
}

fn secret(stack: &str, key: &str, def: &compose::FileObjectDef, ctx: &Context, u: &mut Unsupported) -> Result<StackSecret, StackError> {
    let path = format!("secrets.{key}");
    let external = def.external.as_ref().is_some_and(|e| e.external);
    let name = object_name(stack, key, def.external.as_ref(), def.name.as_ref());
    for (set, what) in
        [(def.driver.is_some(), "driver"), (def.driver_opts.is_some(), "driver_opts"), (def.template_driver.is_some(), "template_driver")]
    {
        if set {
            u.add(format!("{path}.{what} (secret drivers)"));
        }
    }
    if def.content.is_some() {
        return Err(StackError::invalid(
            format!("{path}.content"),
            "content is for configs: give a secret a file or an environment variable",
        ));
    }
    let data = if external {
        vec![]
    } else if let Some(f) = &def.file {
        let p = ctx.project_dir.join(f);
        (ctx.read)(&p).map_err(|e| StackError::invalid(format!("{path}.file"), format!("reading {}: {e}", p.display())))?
    } else if let Some(var) = &def.environment {
        ctx.vars
            .get(var)
            .ok_or_else(|| {
                StackError::invalid(format!("{path}.environment"), format!("the variable {var} is not set: set it or use file:"))
            })?
            .clone()
            .into_bytes()
    } else {
        return Err(StackError::invalid(&path, "give the secret a file:, an environment: variable, or external: true"));
    };
    Ok(StackSecret { key: key.to_string(), spec: SecretSpec { name, labels: labels(stack, &def.labels), data }, external })
}

#[allow(clippy::too_many_arguments)]
fn service(
    stack: &str,
    key: &str,
    svc: &compose::Service,
    path: &str,
    ctx: &Context,
    network_names: &BTreeMap<String, String>,
    secret_names: &BTreeMap<String, String>,
    u: &mut Unsupported,
) -> Result<ServiceSpec, StackError> {
    let image = svc
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| StackError::invalid(format!("{path}.image"), "is required: a stack runs images, it does not build them"))?;
    let mut spec = ServiceSpec::new(format!("{stack}_{key}"), image.clone());
    service_unsupported(svc, path, u);
    if let Some(cmd) = &svc.command {
        spec.args = words(cmd, &format!("{path}.command"))?;
    }
    spec.env = environment(svc, path, ctx)?;
    // Networks, each with the service's own name as an alias (Docker's stack convention).
    for n in service_network_keys(svc) {
        let name = network_names.get(&n).ok_or_else(|| {
            StackError::invalid(
                format!("{path}.networks.{n}"),
                format!("network {n:?} is not declared: add it under the top-level networks key"),
            )
        })?;
        let mut aliases = vec![key.to_string()];
        if let Some(att) = svc.networks.as_ref().and_then(|m| m.0.get(&n)) {
            let p = format!("{path}.networks.{n}");
            for (set, what) in [
                (att.ipv4_address.is_some(), "ipv4_address"),
                (att.ipv6_address.is_some(), "ipv6_address"),
                (att.link_local_ips.is_some(), "link_local_ips"),
                (att.priority.is_some(), "priority"),
                (att.mac_address.is_some(), "mac_address"),
                (att.driver_opts.is_some(), "driver_opts"),
                (att.gw_priority.is_some(), "gw_priority"),
            ] {
                if set {
                    u.add(format!("{p}.{what} (per-network task settings)"));
                }
            }
            for a in &att.aliases {
                if !aliases.contains(a) {
                    aliases.push(a.clone());
                }
            }
        }
        spec.networks.push(name.clone());
        spec.network_aliases.insert(name.clone(), aliases);
    }
    for (i, p) in svc.ports.iter().enumerate() {
        spec.endpoint.ports.extend(ports(&p.0, &format!("{path}.ports[{i}]"), u)?);
    }
    for (i, s) in svc.secrets.iter().enumerate() {
        let p = format!("{path}.secrets[{i}]");
        let r = &s.0;
        let name = secret_names.get(&r.source).ok_or_else(|| {
            StackError::invalid(&p, format!("secret {:?} is not declared: add it under the top-level secrets key", r.source))
        })?;
        if r.target.as_ref().is_some_and(|t| t != &r.source) {
            u.add(format!("{p}.target (secret file names other than the secret's key)"));
        }
        for (set, what) in [(r.uid.is_some(), "uid"), (r.gid.is_some(), "gid"), (r.mode.is_some(), "mode")] {
            if set {
                u.add(format!("{p}.{what} (secret file ownership and mode)"));
            }
        }
        spec.secrets.push(name.clone());
    }
    if let Some(h) = &svc.healthcheck {
        spec.healthcheck = healthcheck(h, &format!("{path}.healthcheck"), u)?;
    }
    spec.labels.insert(IMAGE_LABEL.into(), image);
    if let Some(d) = &svc.deploy {
        deploy(&mut spec, d, &format!("{path}.deploy"), u)?;
    }
    spec.labels.insert(NAMESPACE_LABEL.into(), stack.into());
    Ok(spec)
}

fn service_unsupported(svc: &compose::Service, path: &str, u: &mut Unsupported) {
    let present = [
        (svc.entrypoint.is_some(), "entrypoint", "entrypoints"),
        (svc.hostname.is_some(), "hostname", "task hostnames"),
        (svc.user.is_some(), "user", "users"),
        (svc.working_dir.is_some(), "working_dir", "working directories"),
        (svc.stop_grace_period.is_some(), "stop_grace_period", "per-service stop grace periods"),
        (!svc.volumes.is_empty(), "volumes", "volumes and mounts"),
        (!svc.configs.is_empty(), "configs", "configs"),
        (svc.labels.as_ref().is_some_and(|l| !l.0.is_empty()), "labels", "container labels: service labels go under deploy.labels"),
        (svc.stop_signal.is_some(), "stop_signal", "stop signals"),
        (svc.tty.is_some(), "tty", "terminals"),
        (svc.stdin_open.is_some(), "stdin_open", "terminals"),
        (svc.init.is_some(), "init", "an init process"),
        (svc.read_only.is_some(), "read_only", "read-only root filesystems"),
        (svc.sysctls.is_some(), "sysctls", "sysctls"),
        (svc.ulimits.is_some(), "ulimits", "ulimits"),
        (svc.logging.is_some(), "logging", "log drivers"),
        (svc.dns.is_some(), "dns", "custom DNS servers"),
        (svc.dns_search.is_some(), "dns_search", "custom DNS search domains"),
        (svc.dns_opt.is_some(), "dns_opt", "custom DNS options"),
        (svc.extra_hosts.is_some(), "extra_hosts", "extra /etc/hosts entries"),
        (svc.cap_add.is_some(), "cap_add", "capability changes"),
        (svc.cap_drop.is_some(), "cap_drop", "capability changes"),
        (svc.tmpfs.is_some(), "tmpfs", "tmpfs mounts"),
        (svc.isolation.is_some(), "isolation", "isolation modes"),
        (svc.credential_spec.is_some(), "credential_spec", "credential specs"),
        (svc.group_add.is_some(), "group_add", "supplementary groups"),
        (svc.extends.is_some(), "extends", "extends"),
    ];
    for (set, key, what) in present {
        if set {
            u.add(format!("{path}.{key} ({what})"));
        }
    }
}

/// `command` as the task's argument list: a string is split as a shell would (no expansion).
fn words(cmd: &StringOrList, path: &str) -> Result<Vec<String>, StackError> {
    match cmd {
        StringOrList::List(l) => Ok(l.clone()),
        StringOrList::String(s) => shlex::split(s).ok_or_else(|| StackError::invalid(path, format!("{s:?} has an unclosed quote"))),
    }
}

/// `env_file` entries in order, then `environment` over them, as sorted `KEY=VALUE`.
fn environment(svc: &compose::Service, path: &str, ctx: &Context) -> Result<Vec<String>, StackError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (i, f) in svc.env_file.iter().flat_map(|e| e.0.iter()).enumerate() {
        let p = ctx.project_dir.join(&f.path);
        let text = match (ctx.read)(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !f.required.0 => continue,
            Err(e) => return Err(StackError::invalid(format!("{path}.env_file[{i}]"), format!("reading {}: {e}", p.display()))),
        };
        let text = String::from_utf8(text)
            .map_err(|_| StackError::invalid(format!("{path}.env_file[{i}]"), format!("{} is not UTF-8 text", p.display())))?;
        let parsed = super::envfile::parse(&text)
            .map_err(|e| StackError::invalid(format!("{path}.env_file[{i}]"), format!("{}: {e}", p.display())))?;
        env.extend(parsed);
    }
    for (k, v) in svc.environment.iter().flat_map(|e| e.0.iter()) {
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(StackError::invalid(format!("{path}.environment"), format!("{k:?} is not a variable name")));
        }
        match v {
            Some(v) => {
                env.insert(k.clone(), v.clone());
            }
            // `- KEY` / `KEY:` passes the deploying shell's value, or nothing when unset.
            None => match ctx.vars.get(k) {
                Some(v) => {
                    env.insert(k.clone(), v.clone());
                }
                None => {
                    env.remove(k);
                }
            },
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn ports(p: &Port, path: &str, u: &mut Unsupported) -> Result<Vec<PortConfig>, StackError> {
    let protocol = match p.protocol.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => return Err(StackError::invalid(format!("{path}.protocol"), format!("{other:?}: use tcp or udp"))),
    };
    let mode = match p.mode.as_deref() {
        None | Some("ingress") => PublishMode::Ingress,
        Some("host") => PublishMode::Host,
        Some(other) => return Err(StackError::invalid(format!("{path}.mode"), format!("{other:?}: use ingress or host"))),
    };
    if p.host_ip.is_some() {
        u.add(format!("{path}.host_ip (publishing on one host address)"));
    }
    if p.name.is_some() || p.app_protocol.is_some() {
        u.add(format!("{path}.name/app_protocol (named ports)"));
    }
    let check = |port: i64, field: &str| -> Result<i64, StackError> {
        if (1..=65535).contains(&port) {
            Ok(port)
        } else {
            Err(StackError::invalid(format!("{path}.{field}"), format!("{port} is not a port: use 1-65535")))
        }
    };
    let (t0, t1) = p.target;
    let count = t1.saturating_sub(t0).saturating_add(1);
    if count > 1024 {
        return Err(StackError::invalid(format!("{path}.target"), format!("a range of {count} ports: publish at most 1024 per entry")));
    }
    if let Some((p0, p1)) = p.published {
        if p0 < 0 {
            return Err(StackError::invalid(format!("{path}.published"), "is not a port or a range like 8000-8010"));
        }
        if p1.saturating_sub(p0).saturating_add(1) != count {
            return Err(StackError::invalid(format!("{path}.published"), "the published range and the target range differ in length"));
        }
    }
    let mut out = vec![];
    for i in 0..count {
        let target = check(t0 + i, "target")?;
        let published = p.published.map(|(p0, _)| check(p0 + i, "published")).transpose()?;
        out.push(PortConfig { protocol, target, published, mode });
    }
    Ok(out)
}

fn ms(d: &Option<Duration>) -> Option<u64> {
    d.map(|d| d.ms)
}

fn healthcheck(h: &compose::Healthcheck, path: &str, u: &mut Unsupported) -> Result<Option<HealthCheck>, StackError> {
    if h.disable.is_some_and(|d| d.0) {
        return Ok(None);
    }
    if h.start_interval.is_some() {
        u.add(format!("{path}.start_interval (health check start intervals)"));
    }
    let cmd = match &h.test {
        None => {
            return Err(StackError::invalid(
                format!("{path}.test"),
                "is required: give the command, e.g. [\"CMD\", \"curl\", \"-f\", \"http://localhost\"]",
            ))
        }
        Some(StringOrList::String(s)) => s.clone(),
        Some(StringOrList::List(l)) => match l.split_first() {
            Some((first, rest)) if first == "CMD" => {
                shlex::try_join(rest.iter().map(String::as_str)).map_err(|e| StackError::invalid(format!("{path}.test"), e.to_string()))?
            }
            Some((first, rest)) if first == "CMD-SHELL" && rest.len() == 1 => rest[0].clone(),
            Some((first, [])) if first == "NONE" => return Ok(None),
            _ => {
                return Err(StackError::invalid(
                    format!("{path}.test"),
                    "use [\"CMD\", args...], [\"CMD-SHELL\", \"command\"], [\"NONE\"] or a string",
                ))
            }
        },
    };
    let mut out = HealthCheck::new(cmd);
    out.interval_ms = ms(&h.interval).unwrap_or(out.interval_ms);
    out.timeout_ms = ms(&h.timeout).unwrap_or(out.timeout_ms);
    out.start_period_ms = ms(&h.start_period).unwrap_or(out.start_period_ms);
    if let Some(r) = h.retries {
        out.retries = u32::try_from(r.0)
            .ok()
            .filter(|r| *r >= 1)
            .ok_or_else(|| StackError::invalid(format!("{path}.retries"), format!("{}: use 1 or more", r.0)))?;
    }
    Ok(Some(out))
}

fn nonneg(v: i64, path: &str) -> Result<u64, StackError> {
    u64::try_from(v).map_err(|_| StackError::invalid(path, format!("{v} is negative: use 0 or more")))
}

fn cpus(v: f64, path: &str) -> Result<u64, StackError> {
    if !(v > 0.0 && v < 1e6) {
        return Err(StackError::invalid(path, format!("{v}: give a number of CPUs above 0, e.g. 0.5")));
    }
    Ok((v * 1e9).round() as u64)
}

fn deploy(spec: &mut ServiceSpec, d: &compose::Deploy, path: &str, u: &mut Unsupported) -> Result<(), StackError> {
    spec.mode = match d.mode.as_deref() {
        None | Some("replicated") => ServiceMode::Replicated { replicas: d.replicas.map_or(1, |r| r.0) },
        Some("global") => {
            if d.replicas.is_some() {
                return Err(StackError::invalid(format!("{path}.replicas"), "a global service runs one task per node: remove replicas"));
            }
            ServiceMode::Global
        }
        Some(job @ ("replicated-job" | "global-job")) => {
            u.add(format!("{path}.mode: {job} (jobs)"));
            ServiceMode::Replicated { replicas: 1 }
        }
        Some(other) => return Err(StackError::invalid(format!("{path}.mode"), format!("{other:?}: use replicated or global"))),
    };
    if let ServiceMode::Replicated { replicas } = spec.mode {
        if replicas < 0 {
            return Err(StackError::invalid(format!("{path}.replicas"), format!("{replicas} is negative: use 0 or more")));
        }
    }
    if let Some(p) = &d.placement {
        spec.placement.constraints = p.constraints.clone();
        if !p.preferences.is_empty() {
            u.add(format!("{path}.placement.preferences (placement preferences)"));
        }
        if let Some(m) = p.max_replicas_per_node {
            spec.placement.max_replicas_per_node = nonneg(m.0, &format!("{path}.placement.max_replicas_per_node"))?;
        }
    }
    if let Some(r) = &d.resources {
        for (set, name) in [(&r.limits, "limits"), (&r.reservations, "reservations")] {
            let Some(set) = set else { continue };
            let p = format!("{path}.resources.{name}");
            if set.generic_resources.is_some() {
                u.add(format!("{p}.generic_resources (generic resources)"));
            }
            if set.devices.is_some() {
                u.add(format!("{p}.devices (devices)"));
            }
            let nano = set.cpus.map(|c| cpus(c.0, &format!("{p}.cpus"))).transpose()?.unwrap_or(0);
            let mem = set.memory.map_or(0, |m| m.0);
            if name == "limits" {
                spec.limits.nano_cpus = nano;
                spec.limits.memory_bytes = mem;
                spec.limits.pids = set.pids.map(|n| nonneg(n.0, &format!("{p}.pids"))).transpose()?.unwrap_or(0);
            } else {
                if set.pids.is_some() {
                    return Err(StackError::invalid(format!("{p}.pids"), "pids is a limit: move it under resources.limits"));
                }
                spec.reservations.nano_cpus = nano;
                spec.reservations.memory_bytes = mem;
            }
        }
    }
    if let Some(r) = &d.restart_policy {
        let p = format!("{path}.restart_policy");
        if let Some(c) = &r.condition {
            spec.restart.condition = match c.as_str() {
                "none" => RestartCondition::None,
                "on-failure" => RestartCondition::OnFailure,
                "any" => RestartCondition::Any,
                other => return Err(StackError::invalid(format!("{p}.condition"), format!("{other:?}: use none, on-failure or any"))),
            };
        }
        spec.restart.delay_ms = ms(&r.delay).unwrap_or(spec.restart.delay_ms);
        spec.restart.window_ms = ms(&r.window).unwrap_or(spec.restart.window_ms);
        if let Some(m) = r.max_attempts {
            spec.restart.max_attempts = nonneg(m.0, &format!("{p}.max_attempts"))?;
        }
    }
    if let Some(c) = &d.update_config {
        spec.update = update_config(c, &format!("{path}.update_config"))?;
    }
    if let Some(c) = &d.rollback_config {
        spec.rollback = update_config(c, &format!("{path}.rollback_config"))?;
    }
    spec.endpoint.mode = match d.endpoint_mode.as_deref() {
        None | Some("vip") => EndpointMode::Vip,
        Some("dnsrr") => EndpointMode::Dnsrr,
        Some(other) => return Err(StackError::invalid(format!("{path}.endpoint_mode"), format!("{other:?}: use vip or dnsrr"))),
    };
    for (k, v) in d.labels.iter().flat_map(|l| l.0.iter()) {
        spec.labels.insert(k.clone(), v.clone().unwrap_or_default());
    }
    Ok(())
}

fn update_config(c: &compose::UpdateConfig, path: &str) -> Result<UpdateConfig, StackError> {
    let mut out = UpdateConfig::default();
    if let Some(p) = c.parallelism {
        out.parallelism = nonneg(p.0, &format!("{path}.parallelism"))?;
    }
    out.delay_ms = ms(&c.delay).unwrap_or(out.delay_ms);
    out.monitor_ms = ms(&c.monitor).unwrap_or(out.monitor_ms);
    if let Some(a) = &c.failure_action {
        out.failure_action = match a.as_str() {
            "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" => FailureAction::Rollback,
            other => {
                return Err(StackError::invalid(format!("{path}.failure_action"), format!("{other:?}: use pause, continue or rollback")))
            }
        };
    }
    if let Some(r) = c.max_failure_ratio {
        if !(0.0..=1.0).contains(&r.0) {
            return Err(StackError::invalid(format!("{path}.max_failure_ratio"), format!("{}: use a fraction from 0 to 1", r.0)));
        }
        // 0.0 and -0.0 compare by bits: keep the positive zero.
        out.max_failure_ratio = Ratio(r.0 + 0.0);
    }
    if let Some(o) = &c.order {
        out.order = match o.as_str() {
            "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => return Err(StackError::invalid(format!("{path}.order"), format!("{other:?}: use stop-first or start-first"))),
        };
    }
    Ok(out)
}
