//! A stack's networks, secrets and configs from their top-level definitions.

use super::{labels, object_name, Context, StackConfig, StackNetwork, StackSecret, Unsupported};
use crate::model::{ConfigSpec, NetworkSpec, SecretSpec};
use crate::stack::compose;
use crate::stack::error::StackError;

pub(super) fn network(stack: &str, key: &str, def: Option<&compose::NetworkDef>, u: &mut Unsupported) -> Result<StackNetwork, StackError> {
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

pub(super) fn secret(
    stack: &str,
    key: &str,
    def: &compose::FileObjectDef,
    ctx: &Context,
    u: &mut Unsupported,
) -> Result<StackSecret, StackError> {
    let path = format!("secrets.{key}");
    if def.content.is_some() {
        return Err(StackError::invalid(
            format!("{path}.content"),
            "content is for configs: give a secret a file or an environment variable",
        ));
    }
    let (name, external, data) = file_object(stack, key, def, ctx, &path, "secret", u)?;
    Ok(StackSecret { key: key.to_string(), spec: SecretSpec { name, labels: labels(stack, &def.labels), data }, external })
}

pub(super) fn config(
    stack: &str,
    key: &str,
    def: &compose::FileObjectDef,
    ctx: &Context,
    u: &mut Unsupported,
) -> Result<StackConfig, StackError> {
    let path = format!("configs.{key}");
    let (name, external, data) = file_object(stack, key, def, ctx, &path, "config", u)?;
    Ok(StackConfig { key: key.to_string(), spec: ConfigSpec { name, labels: labels(stack, &def.labels), data }, external })
}

/// A secret's or config's name, whether it is external, and its content: from `file:` (a path
/// from the project directory), `environment:` (a variable's value) or, for a config,
/// `content:` (inline, interpolated like the rest of the file).
fn file_object(
    stack: &str,
    key: &str,
    def: &compose::FileObjectDef,
    ctx: &Context,
    path: &str,
    what: &str,
    u: &mut Unsupported,
) -> Result<(String, bool, Vec<u8>), StackError> {
    let external = def.external.as_ref().is_some_and(|e| e.external);
    let name = object_name(stack, key, def.external.as_ref(), def.name.as_ref());
    for (set, field, why) in [
        (def.driver.is_some(), "driver", "drivers"),
        (def.driver_opts.is_some(), "driver_opts", "drivers"),
        (def.template_driver.is_some(), "template_driver", "templates"),
    ] {
        if set {
            u.add(format!("{path}.{field} ({what} {why})"));
        }
    }
    let sources = [def.file.is_some(), def.environment.is_some(), def.content.is_some()].iter().filter(|s| **s).count();
    if external && sources > 0 {
        return Err(StackError::invalid(path, format!("an external {what} exists already: remove file, environment or content")));
    }
    if sources > 1 {
        return Err(StackError::invalid(path, format!("give the {what} one of file, environment or content")));
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
    } else if let Some(c) = &def.content {
        c.clone().into_bytes()
    } else if what == "secret" {
        return Err(StackError::invalid(path, "give the secret a file:, an environment: variable, or external: true"));
    } else {
        return Err(StackError::invalid(path, "give the config a file:, content:, an environment: variable, or external: true"));
    };
    Ok((name, external, data))
}
