//! One Compose service to a service spec: command, environment, networks with aliases, ports,
//! secrets, health check; `deploy` is in `deploy.rs`.

use super::deploy::{deploy, ms};
use super::{service_network_keys, Context, Names, Unsupported, IMAGE_LABEL, NAMESPACE_LABEL};
use crate::model::{HealthCheck, PortConfig, Protocol, PublishMode, ServiceSpec};
use crate::stack::compose::{self, Port};
use crate::stack::de::StringOrList;
use crate::stack::error::StackError;
use std::collections::BTreeMap;

pub(super) fn service(
    stack: &str,
    key: &str,
    svc: &compose::Service,
    path: &str,
    ctx: &Context,
    names: &Names,
    u: &mut Unsupported,
) -> Result<ServiceSpec, StackError> {
    let image = svc
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| StackError::invalid(format!("{path}.image"), "is required: a stack runs images, it does not build them"))?;
    let Names { networks: network_names, secrets: secret_names, configs: config_names, volumes } = names;
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
    spec.secrets = super::refs::file_refs(&svc.secrets, "secrets", secret_names, path)?;
    spec.configs = super::refs::file_refs(&svc.configs, "configs", config_names, path)?;
    spec.mounts = super::mounts::mounts(svc, path, &ctx.project_dir, ctx.vars.get("HOME").map(String::as_str), volumes, u)?;
    if let Some(h) = &svc.healthcheck {
        spec.healthcheck = healthcheck(h, &format!("{path}.healthcheck"), u)?;
    }
    super::container::container(&mut spec.container, svc, path)?;
    spec.labels.insert(IMAGE_LABEL.into(), image);
    if let Some(d) = &svc.deploy {
        deploy(&mut spec, d, &format!("{path}.deploy"), u)?;
    }
    spec.labels.insert(NAMESPACE_LABEL.into(), stack.into());
    Ok(spec)
}

fn service_unsupported(svc: &compose::Service, path: &str, u: &mut Unsupported) {
    let present = [
        (svc.stop_signal.is_some(), "stop_signal", "stop signals"),
        (svc.tty.is_some(), "tty", "terminals"),
        (svc.stdin_open.is_some(), "stdin_open", "terminals"),
        (svc.logging.is_some(), "logging", "log drivers"),
        (svc.extra_hosts.is_some(), "extra_hosts", "extra /etc/hosts entries"),
        (svc.isolation.is_some(), "isolation", "isolation modes"),
        (svc.credential_spec.is_some(), "credential_spec", "credential specs"),
        (svc.extends.is_some(), "extends", "extends"),
    ];
    for (set, key, what) in present {
        if set {
            u.add(format!("{path}.{key} ({what})"));
        }
    }
}

/// `command` as the task's argument list: a string is split as a shell would (no expansion).
pub(super) fn words(cmd: &StringOrList, path: &str) -> Result<Vec<String>, StackError> {
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
        let parsed = crate::stack::envfile::parse(&text)
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

/// A Compose file's `mode: 0440` is octal (Docker's YAML 1.1 loader reads it so); a YAML 1.2
/// reader hands us 440, so digits that are all octal are read as octal, as the user wrote them.
pub(super) fn file_mode(v: i64) -> Option<u32> {
    let digits = v.to_string();
    let m = if digits.chars().all(|c| ('0'..='7').contains(&c)) { u32::from_str_radix(&digits, 8).ok()? } else { u32::try_from(v).ok()? };
    (m <= 0o7777).then_some(m)
}
