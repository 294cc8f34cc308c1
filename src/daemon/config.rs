//! `shoal daemon`'s settings: flags, a JSON config file (`/etc/shoal/daemon.json` when it
//! exists, or `--config-file`), and defaults. As with dockerd's daemon.json, the file uses the
//! flags' names as keys, and a setting given both ways is refused rather than silently
//! overridden: which one wins would otherwise depend on how the unit was written.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shoal_dataplane::lb::Choice;

use crate::agent::executor::logfile::LogLimits;

pub const DEFAULT_FILE: &str = "/etc/shoal/daemon.json";
/// Where the Docker Engine API is served unless `engine-socket` says otherwise.
pub const DEFAULT_ENGINE_SOCKET: &str = "/run/shoal/docker.sock";

/// What the file may set: every key is a `shoal daemon` flag name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub engine_socket: Option<String>,
    pub listen_addr: Option<String>,
    pub advertise_addr: Option<Ipv4Addr>,
    pub heartbeat_ms: Option<u64>,
    pub hostname: Option<String>,
    pub drain_seconds: Option<f64>,
    pub stop_grace_seconds: Option<f64>,
    pub dns_host_addr: Option<String>,
    pub dns_upstream: Option<Vec<SocketAddr>>,
    pub lb: Option<String>,
    pub no_dns_upstream: Option<bool>,
    /// "20m", as Docker's log-opts write it.
    pub log_max_size: Option<String>,
    pub log_max_file: Option<i64>,
    /// Registries pulled from over plain HTTP (Docker's key of the same name).
    pub insecure_registries: Option<Vec<String>>,
}

/// The flags as given (`None`: not on the command line).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub engine_socket: Option<String>,
    pub listen_addr: Option<String>,
    pub advertise_addr: Option<Ipv4Addr>,
    pub heartbeat_ms: Option<u64>,
    pub hostname: Option<String>,
    pub drain_seconds: Option<f64>,
    pub stop_grace_seconds: Option<f64>,
    pub dns_host_addr: Option<String>,
    pub dns_upstream: Vec<SocketAddr>,
    pub lb: Option<Choice>,
    pub no_dns_upstream: bool,
    pub log_max_size: Option<String>,
    pub log_max_file: Option<i64>,
    pub insecure_registries: Vec<String>,
}

/// The daemon's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The Docker Engine API's socket; None: not served ("off").
    pub engine_socket: Option<PathBuf>,
    pub listen_addr: SocketAddr,
    pub advertise_addr: Option<Ipv4Addr>,
    pub heartbeat_ms: u64,
    pub hostname: Option<String>,
    pub drain_seconds: f64,
    pub stop_grace_seconds: f64,
    /// None: no host DNS listener ("off").
    pub dns_host_addr: Option<SocketAddr>,
    pub dns_upstream: Vec<SocketAddr>,
    pub lb: Choice,
    pub no_dns_upstream: bool,
    /// Per task stream: rotate past this many bytes, keep this many files.
    pub log_limits: LogLimits,
    /// Registries pulled from over plain HTTP, host[:port].
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: String, source: ParseError },
    #[error("the following settings are given both as a flag and in {path}: {}; keep one", .keys.join(", "))]
    Both { path: String, keys: Vec<String> },
    #[error("{source_name} {key}: {source}")]
    Value { source_name: String, key: &'static str, source: BadValue },
}

/// What is wrong with one setting's value (the key and where it was given are around it).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadValue {
    #[error("{given:?} is not ip:port, e.g. 0.0.0.0:2377")]
    NotListenAddr { given: String },
    #[error("{given:?} is not ip:port or \"off\", e.g. 127.0.0.1:8600")]
    NotDnsHostAddr { given: String },
    #[error("{given:?} is not an absolute socket path or \"off\", e.g. /run/shoal/docker.sock")]
    NotSocketPath { given: String },
    /// `lb`: the load balancer choice's own message (it is also a flag's value parser).
    #[error("{0}")]
    Lb(String),
    #[error("cannot be combined with {other}: remove one of them")]
    Conflicts { other: &'static str },
    #[error("{value} is not a number of seconds between 0 and 3600")]
    NotSeconds { value: f64 },
    #[error("{ms} is outside 10..=60000 milliseconds")]
    HeartbeatRange { ms: u64 },
    #[error("{given:?} is not a size, e.g. 20m, 512k or 1g")]
    NotASize { given: String },
    #[error("{given:?} is too small: at least 1k")]
    SizeTooSmall { given: String },
    #[error("{n} is not a number of files between 1 and 100")]
    NotFileCount { n: i64 },
    #[error(transparent)]
    Registry(#[from] crate::image::pull::BadRegistry),
}

/// Reads the file: `explicit` must exist; the default path is used only when present.
pub fn load(explicit: Option<&Path>) -> Result<Option<(PathBuf, FileConfig)>, ConfigError> {
    let path = explicit.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigError::Read { path: path.display().to_string(), source }),
    };
    parse(&text).map(|c| Some((path.clone(), c))).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
}

/// The config file is not JSON of the daemon's keys; an unknown key gets a hint at the names.
#[derive(Debug, thiserror::Error)]
#[error("{json}{}", if .json.to_string().contains("unknown field") { " (keys are the `shoal daemon` flag names without --)" } else { "" })]
pub struct ParseError {
    json: serde_json::Error,
}

pub fn parse(text: &str) -> Result<FileConfig, ParseError> {
    serde_json::from_str(text).map_err(|json| ParseError { json })
}

/// Flags, then the file, then defaults; a setting in both is an error naming it.
pub fn resolve(flags: &Flags, file: Option<(&Path, &FileConfig)>) -> Result<Settings, ConfigError> {
    let empty = FileConfig::default();
    let (path, f) = match file {
        Some((p, f)) => (p.display().to_string(), f),
        None => (String::new(), &empty),
    };
    let given = [
        ("state-dir", flags.state_dir.is_some(), f.state_dir.is_some()),
        ("socket", flags.socket.is_some(), f.socket.is_some()),
        ("engine-socket", flags.engine_socket.is_some(), f.engine_socket.is_some()),
        ("listen-addr", flags.listen_addr.is_some(), f.listen_addr.is_some()),
        ("advertise-addr", flags.advertise_addr.is_some(), f.advertise_addr.is_some()),
        ("heartbeat-ms", flags.heartbeat_ms.is_some(), f.heartbeat_ms.is_some()),
        ("hostname", flags.hostname.is_some(), f.hostname.is_some()),
        ("drain-seconds", flags.drain_seconds.is_some(), f.drain_seconds.is_some()),
        ("stop-grace-seconds", flags.stop_grace_seconds.is_some(), f.stop_grace_seconds.is_some()),
        ("dns-host-addr", flags.dns_host_addr.is_some(), f.dns_host_addr.is_some()),
        ("dns-upstream", !flags.dns_upstream.is_empty(), f.dns_upstream.is_some()),
        ("lb", flags.lb.is_some(), f.lb.is_some()),
        ("no-dns-upstream", flags.no_dns_upstream, f.no_dns_upstream.is_some()),
        ("log-max-size", flags.log_max_size.is_some(), f.log_max_size.is_some()),
        ("log-max-file", flags.log_max_file.is_some(), f.log_max_file.is_some()),
        ("insecure-registries", !flags.insecure_registries.is_empty(), f.insecure_registries.is_some()),
    ];
    let both: Vec<String> = given.iter().filter(|(_, a, b)| *a && *b).map(|(k, _, _)| k.to_string()).collect();
    if !both.is_empty() {
        return Err(ConfigError::Both { path, keys: both });
    }
    let from_file = |key: &'static str, source: BadValue| ConfigError::Value { source_name: path.clone(), key, source };
    let flag = |key: &'static str, source: BadValue| ConfigError::Value { source_name: "flag".into(), key, source };
    let not_listen = |s: &String| BadValue::NotListenAddr { given: s.clone() };

    let listen_addr = match (&flags.listen_addr, &f.listen_addr) {
        (Some(s), _) => s.parse().map_err(|_| flag("--listen-addr", not_listen(s)))?,
        (None, Some(s)) => s.parse().map_err(|_| from_file("listen-addr", not_listen(s)))?,
        (None, None) => SocketAddr::from(([0, 0, 0, 0], 2377)),
    };
    let dns_host = |s: &str| -> Result<Option<SocketAddr>, BadValue> {
        match s {
            "off" => Ok(None),
            s => s.parse().map(Some).map_err(|_| BadValue::NotDnsHostAddr { given: s.to_string() }),
        }
    };
    let dns_host_addr = match (&flags.dns_host_addr, &f.dns_host_addr) {
        (Some(s), _) => dns_host(s).map_err(|m| flag("--dns-host-addr", m))?,
        (None, Some(s)) => dns_host(s).map_err(|m| from_file("dns-host-addr", m))?,
        (None, None) => Some(SocketAddr::from(([127, 0, 0, 1], 8600))),
    };
    let engine_socket = |s: &str| -> Result<Option<PathBuf>, BadValue> {
        match s {
            "off" => Ok(None),
            s if s.starts_with('/') => Ok(Some(PathBuf::from(s))),
            s => Err(BadValue::NotSocketPath { given: s.to_string() }),
        }
    };
    let engine_socket = match (&flags.engine_socket, &f.engine_socket) {
        (Some(s), _) => engine_socket(s).map_err(|m| flag("--engine-socket", m))?,
        (None, Some(s)) => engine_socket(s).map_err(|m| from_file("engine-socket", m))?,
        (None, None) => Some(PathBuf::from(DEFAULT_ENGINE_SOCKET)),
    };
    let lb = match (flags.lb, &f.lb) {
        (Some(c), _) => c,
        (None, Some(s)) => s.parse().map_err(|m| from_file("lb", BadValue::Lb(m)))?,
        (None, None) => Choice::Auto,
    };
    let dns_upstream = if flags.dns_upstream.is_empty() { f.dns_upstream.clone().unwrap_or_default() } else { flags.dns_upstream.clone() };
    let no_dns_upstream = flags.no_dns_upstream || f.no_dns_upstream.unwrap_or(false);
    if no_dns_upstream && !dns_upstream.is_empty() {
        return Err(from_file("no-dns-upstream", BadValue::Conflicts { other: "dns-upstream" }));
    }
    let seconds = |key: &'static str, flag_v: Option<f64>, file_v: Option<f64>, default: f64| -> Result<f64, ConfigError> {
        let v = flag_v.or(file_v).unwrap_or(default);
        if v.is_finite() && (0.0..=3600.0).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::Value {
                source_name: if flag_v.is_some() { "flag".into() } else { path.clone() },
                key,
                source: BadValue::NotSeconds { value: v },
            })
        }
    };
    let heartbeat_ms = flags.heartbeat_ms.or(f.heartbeat_ms).unwrap_or(1000);
    if !(10..=60_000).contains(&heartbeat_ms) {
        let src = if flags.heartbeat_ms.is_some() { "flag".to_string() } else { path.clone() };
        return Err(ConfigError::Value { source_name: src, key: "heartbeat-ms", source: BadValue::HeartbeatRange { ms: heartbeat_ms } });
    }
    let defaults = LogLimits::default();
    let max_size = match (&flags.log_max_size, &f.log_max_size) {
        (Some(s), _) => parse_size(s).map_err(|m| flag("--log-max-size", m))?,
        (None, Some(s)) => parse_size(s).map_err(|m| from_file("log-max-size", m))?,
        (None, None) => defaults.max_size,
    };
    let max_file = |n: i64| u32::try_from(n).ok().filter(|n| (1..=100).contains(n)).ok_or(BadValue::NotFileCount { n });
    let max_file = match (flags.log_max_file, f.log_max_file) {
        (Some(n), _) => max_file(n).map_err(|m| flag("--log-max-file", m))?,
        (None, Some(n)) => max_file(n).map_err(|m| from_file("log-max-file", m))?,
        (None, None) => defaults.max_file,
    };
    let insecure_registries = match (&flags.insecure_registries, &f.insecure_registries) {
        (v, _) if !v.is_empty() => {
            crate::image::pull::check_insecure(v).map_err(|m| flag("--insecure-registry", m.into()))?;
            v.clone()
        }
        (_, Some(v)) => {
            crate::image::pull::check_insecure(v).map_err(|m| from_file("insecure-registries", m.into()))?;
            v.clone()
        }
        _ => Vec::new(),
    };
    Ok(Settings {
        state_dir: flags.state_dir.clone().or(f.state_dir.clone()).unwrap_or_else(|| PathBuf::from("/var/lib/shoal")),
        socket: flags.socket.clone().or(f.socket.clone()).unwrap_or_else(|| PathBuf::from("/run/shoal/shoal.sock")),
        engine_socket,
        listen_addr,
        advertise_addr: flags.advertise_addr.or(f.advertise_addr),
        heartbeat_ms,
        hostname: flags.hostname.clone().or(f.hostname.clone()),
        drain_seconds: seconds("drain-seconds", flags.drain_seconds, f.drain_seconds, 2.0)?,
        stop_grace_seconds: seconds("stop-grace-seconds", flags.stop_grace_seconds, f.stop_grace_seconds, 10.0)?,
        dns_host_addr,
        dns_upstream,
        lb,
        no_dns_upstream,
        log_limits: LogLimits { max_size, max_file },
        insecure_registries,
    })
}

/// A size as Docker's `max-size` takes it: bytes, or with k, m or g (powers of 1024), an
/// optional trailing b, any case: "20m", "512k", "1GB", "4096".
pub fn parse_size(s: &str) -> Result<u64, BadValue> {
    let bad = || BadValue::NotASize { given: s.to_string() };
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(unit).ok_or_else(bad)?;
    // Below a few lines per file, rotation would churn for nothing.
    if bytes < 1024 {
        return Err(BadValue::SizeTooSmall { given: s.to_string() });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_dataplane::lb::LbKind;

    fn file(text: &str) -> FileConfig {
        parse(text).unwrap()
    }

    #[test]
    fn defaults_without_flags_or_file() {
        let s = resolve(&Flags::default(), None).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/shoal"));
        assert_eq!(s.listen_addr, "0.0.0.0:2377".parse().unwrap());
        assert_eq!(s.dns_host_addr, Some("127.0.0.1:8600".parse().unwrap()));
        assert_eq!(s.engine_socket, Some(PathBuf::from("/run/shoal/docker.sock")));
        assert_eq!((s.heartbeat_ms, s.drain_seconds, s.stop_grace_seconds, s.lb), (1000, 2.0, 10.0, Choice::Auto));
        assert_eq!(s.log_limits, LogLimits { max_size: 20 << 20, max_file: 5 });
    }

    #[test]
    fn log_limits_come_from_flags_or_the_file_not_both() {
        let p = Path::new("/etc/shoal/daemon.json");
        let f = file(r#"{"log-max-size": "512k", "log-max-file": 2}"#);
        let s = resolve(&Flags::default(), Some((p, &f))).unwrap();
        assert_eq!(s.log_limits, LogLimits { max_size: 512 << 10, max_file: 2 });
        let flags = Flags { log_max_size: Some("1g".into()), log_max_file: Some(1), ..Default::default() };
        assert_eq!(resolve(&flags, None).unwrap().log_limits, LogLimits { max_size: 1 << 30, max_file: 1 });
        let err = resolve(&flags, Some((p, &f))).unwrap_err().to_string();
        assert!(err.ends_with("log-max-size, log-max-file; keep one"), "{err}");
    }

    #[test]
    fn the_engine_socket_can_be_moved_or_turned_off() {
        let p = Path::new("/etc/shoal/daemon.json");
        let s = resolve(&Flags::default(), Some((p, &file(r#"{"engine-socket": "off"}"#)))).unwrap();
        assert_eq!(s.engine_socket, None);
        let flags = Flags { engine_socket: Some("/run/x/docker.sock".into()), ..Default::default() };
        assert_eq!(resolve(&flags, None).unwrap().engine_socket, Some(PathBuf::from("/run/x/docker.sock")));
        let flags = Flags { engine_socket: Some("docker.sock".into()), ..Default::default() };
        let err = resolve(&flags, None).unwrap_err().to_string();
        assert!(err.starts_with("flag --engine-socket: \"docker.sock\" is not an absolute socket path or \"off\""), "{err}");
    }

    #[test]
    fn bad_log_limits_name_the_key() {
        let p = Path::new("/etc/shoal/daemon.json");
        let err = |text: &str| resolve(&Flags::default(), Some((p, &file(text)))).unwrap_err().to_string();
        assert_eq!(err(r#"{"log-max-size": "20x"}"#), "/etc/shoal/daemon.json log-max-size: \"20x\" is not a size, e.g. 20m, 512k or 1g");
        assert!(err(r#"{"log-max-size": "10"}"#).contains("log-max-size: \"10\" is too small"));
        assert!(err(r#"{"log-max-file": 0}"#).contains("log-max-file: 0 is not a number of files between 1 and 100"));
        let flags = Flags { log_max_file: Some(-3), ..Default::default() };
        assert!(resolve(&flags, None).unwrap_err().to_string().starts_with("flag --log-max-file: -3 is not"));
        assert_eq!(parse_size("20M"), Ok(20 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2kb"), Ok(2048));
        assert!(parse_size("99999999999g").is_err());
        assert!(parse_size("m").is_err());
    }

    #[test]
    fn insecure_registries_come_from_a_flag_or_the_file() {
        let p = Path::new("/etc/shoal/daemon.json");
        let f = file(r#"{"insecure-registries": ["192.168.33.100:5050", "lab.local"]}"#);
        let s = resolve(&Flags::default(), Some((p, &f))).unwrap();
        assert_eq!(s.insecure_registries, vec!["192.168.33.100:5050".to_string(), "lab.local".into()]);
        assert!(resolve(&Flags::default(), None).unwrap().insecure_registries.is_empty());
        let err = resolve(&Flags::default(), Some((p, &file(r#"{"insecure-registries": ["http://lab:5000"]}"#)))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/shoal/daemon.json insecure-registries: \"http://lab:5000\" is not a registry host[:port], e.g. 192.168.33.100:5000"
        );
        let flags = Flags { insecure_registries: vec!["lab:5000".into()], ..Default::default() };
        assert!(resolve(&flags, Some((p, &f))).unwrap_err().to_string().ends_with("insecure-registries; keep one"));
    }

    #[test]
    fn the_file_sets_what_flags_do_not() {
        let f = file(
            r#"{"state-dir": "/srv/shoal", "lb": "nftables", "dns-host-addr": "off", "advertise-addr": "192.168.33.10",
                         "drain-seconds": 0.5, "dns-upstream": ["10.0.0.2:53"]}"#,
        );
        let flags = Flags { heartbeat_ms: Some(200), ..Default::default() };
        let s = resolve(&flags, Some((Path::new("/etc/shoal/daemon.json"), &f))).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/srv/shoal"));
        assert_eq!(s.lb, Choice::Force(LbKind::Nftables));
        assert_eq!(s.dns_host_addr, None);
        assert_eq!(s.advertise_addr, Some(Ipv4Addr::new(192, 168, 33, 10)));
        assert_eq!((s.heartbeat_ms, s.drain_seconds), (200, 0.5));
        assert_eq!(s.dns_upstream, vec!["10.0.0.2:53".parse().unwrap()]);
    }

    #[test]
    fn a_setting_in_both_places_is_refused_naming_every_one() {
        let f = file(r#"{"lb": "ebpf", "socket": "/x.sock", "hostname": "a"}"#);
        let flags = Flags { lb: Some(Choice::Auto), socket: Some("/y.sock".into()), ..Default::default() };
        let err = resolve(&flags, Some((Path::new("/etc/shoal/daemon.json"), &f))).unwrap_err().to_string();
        assert_eq!(err, "the following settings are given both as a flag and in /etc/shoal/daemon.json: socket, lb; keep one");
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let p = Path::new("/etc/shoal/daemon.json");
        let err = |text: &str| resolve(&Flags::default(), Some((p, &file(text)))).unwrap_err().to_string();
        assert_eq!(err(r#"{"lb": "xdp"}"#), "/etc/shoal/daemon.json lb: 'xdp' is not a load balancer: use auto, ebpf, nftables or ipvs");
        assert!(err(r#"{"listen-addr": "2377"}"#).contains("listen-addr: \"2377\" is not ip:port"));
        assert!(err(r#"{"drain-seconds": -1}"#).contains("drain-seconds: -1 is not a number of seconds"));
        assert!(err(r#"{"heartbeat-ms": 5}"#).contains("heartbeat-ms: 5 is outside"));
        assert!(err(r#"{"dns-host-addr": "x"}"#).contains("\"off\""));
        assert!(err(r#"{"no-dns-upstream": true, "dns-upstream": ["1.1.1.1:53"]}"#).contains("cannot be combined"));
        let flag_err = resolve(&Flags { listen_addr: Some("nope".into()), ..Default::default() }, None).unwrap_err().to_string();
        assert!(flag_err.starts_with("flag --listen-addr: \"nope\""), "{flag_err}");
    }

    #[test]
    fn unknown_keys_and_bad_json_are_errors_with_a_hint() {
        let e = parse(r#"{"log-driver": "json"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `log-driver`") && e.contains("flag names"), "{e}");
        assert!(parse("{").is_err());
        assert!(parse(r#"{"advertise-addr": "not-an-ip"}"#).is_err());
    }

    #[test]
    fn the_default_file_is_optional_but_an_explicit_one_is_not() {
        let err = load(Some(Path::new("/nonexistent/shoal.json"))).unwrap_err().to_string();
        assert!(err.starts_with("config file /nonexistent/shoal.json: "), "{err}");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, br#"{"hostname": "n1"}"#).unwrap();
        let (path, cfg) = load(Some(f.path())).unwrap().unwrap();
        assert_eq!((path.as_path(), cfg.hostname.as_deref()), (f.path(), Some("n1")));
    }
}
