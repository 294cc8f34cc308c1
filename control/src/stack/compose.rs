//! The Compose file as typed data: every key `docker stack deploy` reads (version 3.x and the
//! Compose Specification), each with the shapes Compose allows. Unknown keys are refused by
//! `deny_unknown_fields`; keys Swarm ignores are taken out before (see `keys`), and keys shoal
//! cannot honour yet are parsed here all the same and refused when the file is converted.

use super::de::{Bool, Bytes, Duration, Either, Int, ListOrMap, Num, Scalar, ShortOrLong, StringOrList};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    /// Informative only (obsolete in the Compose Specification).
    #[serde(default)]
    pub version: Option<Scalar>,
    /// The project name; a stack takes its name from the command line instead.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<NetworkDef>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<VolumeDef>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, FileObjectDef>,
    #[serde(default)]
    pub configs: BTreeMap<String, FileObjectDef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<StringOrList>,
    pub entrypoint: Option<StringOrList>,
    pub environment: Option<ListOrMap>,
    pub env_file: Option<EnvFiles>,
    #[serde(default)]
    pub ports: Vec<Either<Port>>,
    pub networks: Option<ServiceNetworks>,
    #[serde(default)]
    pub volumes: Vec<Either<ServiceVolume>>,
    #[serde(default)]
    pub secrets: Vec<Either<FileRef>>,
    #[serde(default)]
    pub configs: Vec<Either<FileRef>>,
    pub healthcheck: Option<Healthcheck>,
    pub deploy: Option<Deploy>,
    pub hostname: Option<String>,
    pub user: Option<Scalar>,
    pub working_dir: Option<String>,
    pub stop_grace_period: Option<Duration>,
    /// Labels of the tasks' containers (`deploy.labels` are the service's).
    pub labels: Option<ListOrMap>,
    pub init: Option<Bool>,
    /// `- net.core.somaxconn=1024` or `net.core.somaxconn: 1024`.
    pub sysctls: Option<ListOrMap>,
    /// `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
    pub ulimits: Option<BTreeMap<String, Either<Ulimit>>>,
    /// Supplementary groups (Compose Specification; names or numbers).
    pub group_add: Option<Vec<Scalar>>,
    /// `tmpfs: /run` or a list, each `PATH[:size=...,mode=...]`.
    pub tmpfs: Option<StringOrList>,
    // Keys Swarm honours that shoal does not run yet: kept as data so the refusal names them.
    pub stop_signal: Option<serde_json::Value>,
    pub tty: Option<serde_json::Value>,
    pub stdin_open: Option<serde_json::Value>,
    pub read_only: Option<serde_json::Value>,
    pub logging: Option<serde_json::Value>,
    pub dns: Option<serde_json::Value>,
    pub dns_search: Option<serde_json::Value>,
    pub dns_opt: Option<serde_json::Value>,
    pub extra_hosts: Option<serde_json::Value>,
    pub cap_add: Option<serde_json::Value>,
    pub cap_drop: Option<serde_json::Value>,
    pub isolation: Option<serde_json::Value>,
    pub credential_spec: Option<serde_json::Value>,
    pub extends: Option<serde_json::Value>,
}

/// One resource limit: a number (soft and hard alike) or `{soft, hard}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UlimitLong {
    pub soft: Int,
    pub hard: Int,
}

/// A short form (`"8080:80"`, `"data:/path:ro"`, `"1024"`) that does not parse, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortError {
    #[error("{given:?} is not a whole number")]
    NotWholeNumber { given: String },
    #[error("{given:?} is not a port or a range like 8000-8010")]
    NotPortRange { given: String },
    #[error("{port:?}: unclosed [ in the host address")]
    UnclosedBracket { port: String },
    #[error("{given:?} is not [host_ip:][published:]target[/protocol]")]
    NotPort { given: String },
    #[error("{port:?}: {source}")]
    InPort { port: String, source: Box<ShortError> },
    #[error("{port:?}: the published and target ranges differ in length")]
    RangesDiffer { port: String },
    #[error("{mount:?}: empty section between colons: write [source:]target[:options]")]
    EmptySection { mount: String },
    #[error("{given:?} is not [source:]target[:options]")]
    NotMount { given: String },
    #[error("{mount:?}: the target {target:?} must be an absolute path")]
    RelativeTarget { mount: String, target: String },
    #[error("{mount:?}: unknown option {option:?}: use ro, rw, nocopy or a bind propagation (rprivate, rshared, rslave, ...)")]
    UnknownOption { mount: String, option: String },
}

impl ShortOrLong for Ulimit {
    type Long = UlimitLong;
    const EXPECTING: &'static str = "a number or {soft: N, hard: N}";
    type Error = ShortError;
    fn short(s: &str) -> Result<Ulimit, ShortError> {
        let n: i64 = s.trim().parse().map_err(|_| ShortError::NotWholeNumber { given: s.to_string() })?;
        Ok(Ulimit { soft: n, hard: n })
    }
    fn long(l: UlimitLong) -> Ulimit {
        Ulimit { soft: l.soft.0, hard: l.hard.0 }
    }
}

/// `env_file: a.env`, `[a.env, b.env]`, or `[{path: a.env, required: false}]`.
#[derive(Debug)]
pub struct EnvFiles(pub Vec<EnvFile>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    pub path: String,
    #[serde(default = "yes")]
    pub required: Bool,
    /// `raw` or the default.
    pub format: Option<String>,
}

fn yes() -> Bool {
    Bool(true)
}

impl ShortOrLong for EnvFile {
    type Long = EnvFile;
    const EXPECTING: &'static str = "a file name or {path, required}";
    type Error = std::convert::Infallible;
    fn short(s: &str) -> Result<EnvFile, Self::Error> {
        Ok(EnvFile { path: s.to_string(), required: Bool(true), format: None })
    }
    fn long(l: EnvFile) -> EnvFile {
        l
    }
}

impl<'de> Deserialize<'de> for EnvFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EnvFiles, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EnvFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a file name or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EnvFiles, E> {
                Ok(EnvFiles(vec![EnvFile::short(v).map_err(E::custom)?]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EnvFiles, A::Error> {
                let mut out = vec![];
                while let Some(e) = seq.next_element::<Either<EnvFile>>()? {
                    out.push(e.0);
                }
                Ok(EnvFiles(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A published port, short (`"8080:80/udp"`, `"127.0.0.1:8080:80"`, `"8000-8001:80-81"`) or long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// First and last target port (a range when written as one).
    pub target: (i64, i64),
    pub published: Option<(i64, i64)>,
    pub protocol: String,
    pub mode: Option<String>,
    pub host_ip: Option<String>,
    pub name: Option<String>,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortLong {
    pub target: Int,
    pub published: Option<Scalar>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
    pub host_ip: Option<String>,
    pub name: Option<String>,
    pub app_protocol: Option<String>,
}

fn port_range(s: &str) -> Result<(i64, i64), ShortError> {
    let bad = || ShortError::NotPortRange { given: s.to_string() };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a: i64 = a.trim().parse().map_err(|_| bad())?;
    let b: i64 = b.trim().parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    Ok((a, b))
}

impl ShortOrLong for Port {
    type Long = PortLong;
    const EXPECTING: &'static str = "a port like \"8080:80\" or a mapping with target and published";
    type Error = ShortError;
    fn short(s: &str) -> Result<Port, ShortError> {
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((p, proto)) => (p, proto.to_string()),
            None => (s, "tcp".to_string()),
        };
        // [host_ip:][published:]target; an IPv6 host address is in brackets.
        let (host_ip, rest) = match spec.strip_prefix('[') {
            Some(v6) => {
                let (ip, rest) = v6.split_once("]:").ok_or_else(|| ShortError::UnclosedBracket { port: s.to_string() })?;
                (Some(ip.to_string()), rest)
            }
            None => {
                let parts: Vec<&str> = spec.split(':').collect();
                match parts.len() {
                    1 | 2 => (None, spec),
                    3 => (Some(parts[0].to_string()), &spec[parts[0].len() + 1..]),
                    _ => return Err(ShortError::NotPort { given: s.to_string() }),
                }
            }
        };
        let range = |r: &str| port_range(r).map_err(|e| ShortError::InPort { port: s.to_string(), source: Box::new(e) });
        let (published, target) = match rest.split_once(':') {
            Some((p, t)) => (if p.is_empty() { None } else { Some(range(p)?) }, range(t)?),
            None => (None, range(rest)?),
        };
        if let Some(p) = published {
            if p.1.saturating_sub(p.0) != target.1.saturating_sub(target.0) && target.0 != target.1 {
                return Err(ShortError::RangesDiffer { port: s.to_string() });
            }
        }
        Ok(Port { target, published, protocol, mode: None, host_ip: host_ip.filter(|h| !h.is_empty()), name: None, app_protocol: None })
    }
    fn long(l: PortLong) -> Port {
        Port {
            target: (l.target.0, l.target.0),
            // A bad published range is caught at conversion, with the port's path.
            published: l.published.map(|p| port_range(&p.0).unwrap_or((-1, -1))),
            protocol: l.protocol.unwrap_or_else(|| "tcp".into()),
            mode: l.mode,
            host_ip: l.host_ip,
            name: l.name,
            app_protocol: l.app_protocol,
        }
    }
}

/// `networks: [a, b]` or `networks: {a: {aliases: [x]}, b: }`.
#[derive(Debug, Default)]
pub struct ServiceNetworks(pub BTreeMap<String, ServiceNetwork>);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub link_local_ips: Option<serde_json::Value>,
    pub priority: Option<Int>,
    pub mac_address: Option<String>,
    pub driver_opts: Option<serde_json::Value>,
    pub gw_priority: Option<Int>,
}

impl<'de> Deserialize<'de> for ServiceNetworks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ServiceNetworks, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ServiceNetworks;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of network names or a map of network name to its settings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ServiceNetworks, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(n) = seq.next_element::<String>()? {
                    out.insert(n, ServiceNetwork::default());
                }
                Ok(ServiceNetworks(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ServiceNetworks, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Option<ServiceNetwork>>()? {
                    out.insert(k, v.unwrap_or_default());
                }
                Ok(ServiceNetworks(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mount: `"data:/var/lib/x:ro"`, `"./src:/src"`, or the long form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    pub read_only: Option<Bool>,
    pub consistency: Option<String>,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeOptions>,
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindOptions {
    pub propagation: Option<String>,
    pub create_host_path: Option<Bool>,
    pub selinux: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    pub nocopy: Option<Bool>,
    pub subpath: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    pub size: Option<Bytes>,
    pub mode: Option<Int>,
}

impl ShortOrLong for ServiceVolume {
    type Long = ServiceVolume;
    const EXPECTING: &'static str = "a mount like \"data:/path[:ro]\" or a mapping with type, source and target";
    /// Docker's reading: `target`, `source:target` or `source:target:options`; a source that
    /// starts with `/`, `.` or `~` is a host path (bind), any other a volume's name.
    type Error = ShortError;
    fn short(s: &str) -> Result<ServiceVolume, ShortError> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ShortError::EmptySection { mount: s.to_string() });
        }
        let (source, target, options) = match parts.as_slice() {
            [t] => (None, *t, None),
            [s, t] => (Some(*s), *t, None),
            [s, t, m] => (Some(*s), *t, Some(*m)),
            _ => return Err(ShortError::NotMount { given: s.to_string() }),
        };
        if !target.starts_with('/') {
            return Err(ShortError::RelativeTarget { mount: s.to_string(), target: target.to_string() });
        }
        let kind = match source {
            None => "volume",
            Some(src) if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') => "bind",
            Some(_) => "volume",
        };
        let mut v = ServiceVolume {
            kind: kind.into(),
            source: source.map(String::from),
            target: target.into(),
            read_only: None,
            consistency: None,
            bind: None,
            volume: None,
            tmpfs: None,
        };
        for o in options.iter().flat_map(|m| m.split(',')) {
            match o {
                "ro" => v.read_only = Some(Bool(true)),
                "rw" => v.read_only = Some(Bool(false)),
                "nocopy" => v.volume = Some(VolumeOptions { nocopy: Some(Bool(true)), subpath: None }),
                p if crate::model::PROPAGATIONS.contains(&p) => {
                    v.bind = Some(BindOptions { propagation: Some(p.into()), create_host_path: None, selinux: None })
                }
                // SELinux relabelling and macOS consistency hints: nothing to do on these hosts.
                "z" | "Z" | "cached" | "delegated" | "consistent" => {}
                other => return Err(ShortError::UnknownOption { mount: s.to_string(), option: other.to_string() }),
            }
        }
        Ok(v)
    }
    fn long(l: ServiceVolume) -> ServiceVolume {
        l
    }
}

/// A secret or config a service uses: `db_pass` or `{source, target, uid, gid, mode}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<Scalar>,
    pub gid: Option<Scalar>,
    pub mode: Option<Int>,
}

impl ShortOrLong for FileRef {
    type Long = FileRef;
    const EXPECTING: &'static str = "a name or a mapping with source and target";
    type Error = std::convert::Infallible;
    fn short(s: &str) -> Result<FileRef, Self::Error> {
        Ok(FileRef { source: s.into(), target: None, uid: None, gid: None, mode: None })
    }
    fn long(l: FileRef) -> FileRef {
        l
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub test: Option<StringOrList>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<Int>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub disable: Option<Bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub mode: Option<String>,
    pub replicas: Option<Int>,
    pub placement: Option<Placement>,
    pub resources: Option<Resources>,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub endpoint_mode: Option<String>,
    pub labels: Option<ListOrMap>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<PlacementPreference>,
    pub max_replicas_per_node: Option<Int>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementPreference {
    pub spread: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub limits: Option<ResourceSet>,
    pub reservations: Option<ResourceSet>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSet {
    pub cpus: Option<Num>,
    pub memory: Option<Bytes>,
    pub pids: Option<Int>,
    pub generic_resources: Option<serde_json::Value>,
    pub devices: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub condition: Option<String>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<Int>,
    pub window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    pub parallelism: Option<Int>,
    pub delay: Option<Duration>,
    pub failure_action: Option<String>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<Num>,
    pub order: Option<String>,
}

/// `external: true` or, in version 3.0-3.3 files, `external: {name: x}`.
#[derive(Debug, Default)]
pub struct External {
    pub external: bool,
    pub name: Option<String>,
}

impl<'de> Deserialize<'de> for External {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<External, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = External;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or {name: NAME}")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<External, E> {
                Ok(External { external: v, name: None })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<External, E> {
                let b = Bool::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(External { external: b.0, name: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<External, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Named {
                    name: String,
                }
                let n = Named::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(External { external: true, name: Some(n.name) })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, Scalar>>,
    pub external: Option<External>,
    pub attachable: Option<Bool>,
    pub internal: Option<Bool>,
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
    pub ipam: Option<Ipam>,
    pub enable_ipv6: Option<Bool>,
    pub enable_ipv4: Option<Bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamPool>,
    pub options: Option<BTreeMap<String, Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamPool {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDef {
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, Scalar>>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
}

/// A top-level secret or config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObjectDef {
    pub file: Option<String>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
    /// Compose Specification: the value of this variable is the content.
    pub environment: Option<String>,
    /// Configs only (Compose Specification): inline content.
    pub content: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, Scalar>>,
    pub template_driver: Option<String>,
}
