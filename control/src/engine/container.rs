//! `TaskTemplate.ContainerSpec` both ways: the image and its command, env, secrets, configs,
//! mounts, health check and the container options (`--hostname`, `--user`, `--workdir`,
//! `--entrypoint`, `--stop-grace-period`, `--read-only`, `--cap-*`, `--dns*`, `--sysctl`,
//! `--ulimit`, `--group`, `--container-label`). Fields shoal has no counterpart for are refused
//! in `refuse`; values are checked by the model's validation (`paths` names them).

use super::error::EngineError;
use super::mounts;
use crate::model::{normalize_cap, ContainerOpts, FileRef, HealthCheck, ServiceSpec};
use bollard_stubs::models as d;
use std::collections::HashMap;

const P: &str = "TaskTemplate.ContainerSpec";

/// Docker's nanoseconds as shoal's milliseconds (`path` names a negative one).
pub fn ms(ns: Option<i64>, path: &str) -> Result<Option<u64>, EngineError> {
    match ns {
        None => Ok(None),
        Some(n) if n < 0 => Err(EngineError::bad(format!("{path}: {n} is negative; give a duration of 0 or more"))),
        Some(n) => Ok(Some((n / 1_000_000) as u64)),
    }
}

/// Shoal's milliseconds as Docker's nanoseconds (saturating: stored values are bounded anyway).
pub fn ns(ms: u64) -> i64 {
    i64::try_from(ms).ok().and_then(|m| m.checked_mul(1_000_000)).unwrap_or(i64::MAX)
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.is_empty())
}

fn list(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn map(m: &std::collections::BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A ulimit value: -1 is Docker's "unlimited" (RLIM_INFINITY, all ones in 64 bits).
fn rlimit(v: Option<i64>, path: &str) -> Result<u64, EngineError> {
    match v {
        None => Err(EngineError::bad(format!("{path} is missing: give a number, or -1 for unlimited"))),
        Some(-1) => Ok(u64::MAX),
        Some(n) => u64::try_from(n).map_err(|_| EngineError::bad(format!("{path}: {n} is negative; give a number, or -1 for unlimited"))),
    }
}

fn rlimit_to_docker(v: u64) -> i64 {
    if v == u64::MAX {
        -1
    } else {
        i64::try_from(v).unwrap_or(i64::MAX)
    }
}

/// A secret's or config's File (Name, UID, GID, Mode) over `r`'s defaults.
fn file(
    r: &mut FileRef,
    path: &str,
    name: &Option<String>,
    uid: &Option<String>,
    gid: &Option<String>,
    mode: Option<u32>,
) -> Result<(), EngineError> {
    let num = |what: &str, v: &str| {
        v.parse::<u32>().map_err(|_| EngineError::bad(format!("{path}.File.{what}: {v:?} is not a number: give e.g. \"1000\"")))
    };
    if let Some(t) = name.as_ref().filter(|t| !t.is_empty()) {
        r.target = t.clone();
    }
    if let Some(u) = uid.as_ref().filter(|u| !u.is_empty()) {
        r.uid = num("UID", u)?;
    }
    if let Some(g) = gid.as_ref().filter(|g| !g.is_empty()) {
        r.gid = num("GID", g)?;
    }
    if let Some(m) = mode {
        r.mode = m;
    }
    Ok(())
}

fn health(h: &d::HealthConfig) -> Result<Option<HealthCheck>, EngineError> {
    let p = format!("{P}.HealthCheck");
    let test = h.test.clone().unwrap_or_default();
    let cmd = match test.first().map(String::as_str) {
        None | Some("NONE") => return Ok(None),
        Some("CMD-SHELL") => test[1..].join(" "),
        Some("CMD") => shlex::try_join(test[1..].iter().map(String::as_str)).map_err(|e| EngineError::bad(format!("{p}.Test: {e}")))?,
        Some(other) => return Err(EngineError::bad(format!("{p}.Test: {other:?} is not CMD, CMD-SHELL or NONE"))),
    };
    if h.start_interval.is_some_and(|n| n != 0) {
        return Err(EngineError::bad(format!(
            "{p}.StartInterval is not supported by shoal: checks run every Interval from the start; leave --health-start-interval out"
        )));
    }
    let mut hc = HealthCheck::new(cmd);
    hc.interval_ms = ms(h.interval, &format!("{p}.Interval"))?.filter(|v| *v > 0).unwrap_or(hc.interval_ms);
    hc.timeout_ms = ms(h.timeout, &format!("{p}.Timeout"))?.filter(|v| *v > 0).unwrap_or(hc.timeout_ms);
    hc.start_period_ms = ms(h.start_period, &format!("{p}.StartPeriod"))?.unwrap_or(0);
    match h.retries {
        Some(r) if r < 0 => return Err(EngineError::bad(format!("{p}.Retries: {r} is negative"))),
        Some(r) if r > 0 => hc.retries = u32::try_from(r).map_err(|_| EngineError::bad(format!("{p}.Retries: {r} is too large")))?,
        _ => {}
    }
    Ok(Some(hc))
}

/// The container options (`spec.container`).
fn opts(c: &d::TaskSpecContainerSpec) -> Result<ContainerOpts, EngineError> {
    let dns = c.dns_config.clone().unwrap_or_default();
    let mut k = ContainerOpts {
        hostname: nonempty(&c.hostname),
        user: nonempty(&c.user),
        workdir: nonempty(&c.dir),
        // Docker's Command replaces the image's ENTRYPOINT (and with it its CMD), as
        // `--entrypoint` does; Args are the arguments after it, as the CLI's `IMAGE ARGS...`.
        entrypoint: c.command.clone().filter(|v| !v.is_empty()),
        stop_grace_ms: ms(c.stop_grace_period, &format!("{P}.StopGracePeriod"))?,
        read_only: c.read_only.unwrap_or(false),
        cap_add: c.capability_add.iter().flatten().map(|s| normalize_cap(s)).collect(),
        cap_drop: c.capability_drop.iter().flatten().map(|s| normalize_cap(s)).collect(),
        dns: dns.nameservers.unwrap_or_default(),
        dns_search: dns.search.unwrap_or_default(),
        dns_options: dns.options.unwrap_or_default(),
        sysctls: c.sysctls.clone().unwrap_or_default().into_iter().collect(),
        ulimits: vec![],
        groups: c.groups.clone().unwrap_or_default(),
        labels: c.labels.clone().unwrap_or_default().into_iter().collect(),
        init: c.init.unwrap_or(false),
    };
    for (i, u) in c.ulimits.iter().flatten().enumerate() {
        let p = format!("{P}.Ulimits[{i}]");
        let name = nonempty(&u.name).ok_or_else(|| EngineError::bad(format!("{p}.Name is missing: give e.g. nofile")))?;
        k.ulimits.push((name, rlimit(u.soft, &format!("{p}.Soft"))?, rlimit(u.hard, &format!("{p}.Hard"))?));
    }
    Ok(k)
}

/// Reads the container spec into `spec` (image, command, env, secrets, configs, mounts,
/// health check, options). A missing image is an error; unknown fields were refused before.
pub fn from_docker(c: &d::TaskSpecContainerSpec, spec: &mut ServiceSpec) -> Result<(), EngineError> {
    spec.image = c.image.clone().filter(|i| !i.is_empty()).ok_or_else(|| EngineError::bad(format!("{P}.Image is missing")))?;
    spec.args = c.args.clone().unwrap_or_default();
    spec.env = c.env.clone().unwrap_or_default();
    spec.container = opts(c)?;
    for (i, s) in c.secrets.iter().flatten().enumerate() {
        let p = format!("{P}.Secrets[{i}]");
        let n = nonempty(&s.secret_name)
            .or_else(|| nonempty(&s.secret_id))
            .ok_or_else(|| EngineError::bad(format!("{p}.SecretName is missing")))?;
        let mut r = FileRef::named(n);
        if let Some(f) = &s.file {
            file(&mut r, &p, &f.name, &f.uid, &f.gid, f.mode)?;
        }
        spec.secrets.push(r);
    }
    for (i, s) in c.configs.iter().flatten().enumerate() {
        let p = format!("{P}.Configs[{i}]");
        if s.runtime.is_some() {
            return Err(EngineError::bad(format!(
                "{p}.Runtime is not supported by shoal: a config is a file in the task (give File); runtime configs are Windows credential specs"
            )));
        }
        let n = nonempty(&s.config_name)
            .or_else(|| nonempty(&s.config_id))
            .ok_or_else(|| EngineError::bad(format!("{p}.ConfigName is missing")))?;
        let mut r = FileRef::config_named(n);
        if let Some(f) = &s.file {
            file(&mut r, &p, &f.name, &f.uid, &f.gid, f.mode)?;
        }
        spec.configs.push(r);
    }
    spec.mounts = c.mounts.iter().flatten().enumerate().map(|(i, m)| mounts::from_docker(i, m)).collect::<Result<_, _>>()?;
    spec.healthcheck = match &c.health_check {
        Some(h) => health(h)?,
        None => None,
    };
    Ok(())
}

/// The container spec `docker service inspect` shows: every field shoal has, and what the CLI
/// sends back unchanged on `service update` (so it reads back to the same spec).
pub fn to_docker(s: &ServiceSpec) -> d::TaskSpecContainerSpec {
    let k = &s.container;
    let dns = (!k.dns.is_empty() || !k.dns_search.is_empty() || !k.dns_options.is_empty()).then(|| d::TaskSpecContainerSpecDnsConfig {
        nameservers: list(&k.dns),
        search: list(&k.dns_search),
        options: list(&k.dns_options),
    });
    d::TaskSpecContainerSpec {
        image: Some(s.image.clone()),
        labels: map(&k.labels),
        command: k.entrypoint.clone(),
        args: list(&s.args),
        hostname: k.hostname.clone(),
        env: list(&s.env),
        dir: k.workdir.clone(),
        user: k.user.clone(),
        groups: list(&k.groups),
        read_only: k.read_only.then_some(true),
        init: k.init.then_some(true),
        mounts: (!s.mounts.is_empty()).then(|| s.mounts.iter().map(mounts::to_docker).collect()),
        stop_grace_period: k.stop_grace_ms.map(ns),
        health_check: s.healthcheck.as_ref().map(|h| d::HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), h.cmd.clone()]),
            interval: Some(ns(h.interval_ms)),
            timeout: Some(ns(h.timeout_ms)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(ns(h.start_period_ms)),
            start_interval: None,
        }),
        dns_config: dns,
        secrets: (!s.secrets.is_empty()).then(|| {
            s.secrets
                .iter()
                .map(|r| d::TaskSpecContainerSpecSecrets {
                    file: Some(d::TaskSpecContainerSpecFile {
                        name: Some(r.target.clone()),
                        uid: Some(r.uid.to_string()),
                        gid: Some(r.gid.to_string()),
                        mode: Some(r.mode),
                    }),
                    secret_id: None,
                    secret_name: Some(r.source.clone()),
                })
                .collect()
        }),
        configs: (!s.configs.is_empty()).then(|| {
            s.configs
                .iter()
                .map(|r| d::TaskSpecContainerSpecConfigs {
                    file: Some(d::TaskSpecContainerSpecFile1 {
                        name: Some(r.target.clone()),
                        uid: Some(r.uid.to_string()),
                        gid: Some(r.gid.to_string()),
                        mode: Some(r.mode),
                    }),
                    runtime: None,
                    config_id: None,
                    config_name: Some(r.source.clone()),
                })
                .collect()
        }),
        sysctls: map(&k.sysctls),
        capability_add: list(&k.cap_add),
        capability_drop: list(&k.cap_drop),
        ulimits: (!k.ulimits.is_empty()).then(|| {
            k.ulimits
                .iter()
                .map(|(n, soft, hard)| d::ResourcesUlimits {
                    name: Some(n.clone()),
                    soft: Some(rlimit_to_docker(*soft)),
                    hard: Some(rlimit_to_docker(*hard)),
                })
                .collect()
        }),
        ..Default::default()
    }
}
