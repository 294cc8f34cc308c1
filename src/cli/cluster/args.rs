//! Parsing Docker-style flag values.

use shoal_control::model::{PortConfig, Protocol, PublishMode};

/// A `--publish` value (or one of its parts) that does not parse, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("{part:?} is not key=value")]
    NotKeyValue { part: String },
    #[error("mode {mode:?}: use ingress or host")]
    Mode { mode: String },
    #[error("unknown key {key:?}: use published, target, protocol or mode")]
    UnknownKey { key: String },
    #[error("{publish:?} has no target port")]
    NoTarget { publish: String },
    #[error("{given:?} is not a port number")]
    NotAPort { given: String },
    #[error("protocol {given:?}: use tcp, udp or sctp")]
    Protocol { given: String },
}

/// A `--ulimit` value that does not parse, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    #[error("invalid --ulimit {given:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")]
    Shape { given: String },
    #[error("invalid --ulimit {given:?}: {number:?} is not a number")]
    NotANumber { given: String, number: String },
}

/// `-p published:target[/proto]`, `-p target[/proto]` (published picked automatically), or the
/// long form `published=8080,target=80,protocol=udp,mode=host`.
pub fn parse_publish(s: &str) -> Result<PortConfig, PublishError> {
    if s.contains('=') {
        let mut p = PortConfig { protocol: Protocol::Tcp, target: 0, published: None, mode: PublishMode::Ingress };
        for kv in s.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(|| PublishError::NotKeyValue { part: kv.to_string() })?;
            match k {
                "published" => p.published = Some(parse_port(v)?),
                "target" => p.target = parse_port(v)?,
                "protocol" => p.protocol = parse_proto(v)?,
                "mode" => {
                    p.mode = match v {
                        "ingress" => PublishMode::Ingress,
                        "host" => PublishMode::Host,
                        _ => return Err(PublishError::Mode { mode: v.to_string() }),
                    }
                }
                _ => return Err(PublishError::UnknownKey { key: k.to_string() }),
            }
        }
        if p.target == 0 {
            return Err(PublishError::NoTarget { publish: s.to_string() });
        }
        return Ok(p);
    }
    let (ports, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, parse_proto(proto)?),
        None => (s, Protocol::Tcp),
    };
    let (published, target) = match ports.split_once(':') {
        Some((p, t)) => (Some(parse_port(p)?), parse_port(t)?),
        None => (None, parse_port(ports)?),
    };
    Ok(PortConfig { protocol: proto, target, published, mode: PublishMode::Ingress })
}

/// A port number as typed; range checks happen in the manager so the error names the field.
pub fn parse_port(s: &str) -> Result<i64, PublishError> {
    s.trim().parse::<i64>().map_err(|_| PublishError::NotAPort { given: s.to_string() })
}

fn parse_proto(s: &str) -> Result<Protocol, PublishError> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(PublishError::Protocol { given: s.to_string() }),
    }
}

/// `k=v` (or `k` alone, value empty).
pub fn parse_kv(s: &str) -> (String, String) {
    match s.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (s.to_string(), String::new()),
    }
}

/// A duration flag's value (`--update-delay 5x`) that does not parse, as given. The flag is
/// named by whoever reads it (clap, or the `invalid --restart-delay: ...` wrappers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{given:?} is not a duration like 5s or 1m30s")]
    NotADuration { given: String },
    #[error("{given:?}: unknown unit {unit:?} (use ms, s, m, h)")]
    Unit { given: String, unit: String },
    #[error("{given:?} is missing a unit (ms, s, m, h)")]
    NoUnit { given: String },
}

/// A size flag's value (`--limit-memory 3x`) that does not parse, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{given:?} is not a size like 256M or 1G")]
    NotASize { given: String },
    #[error("{given:?}: unknown unit {unit:?} (use b, k, m, g or t)")]
    Unit { given: String, unit: String },
}

/// A `--secret`/`--config` value (`flag` says which) that does not parse, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefError {
    #[error("invalid {flag} {given:?}: give a name, or source=NAME[,target=FILE,uid=0,gid=0,mode=0444]")]
    Shape { flag: String, given: String },
    #[error("invalid {flag} {given:?}: {part:?} is not key=value")]
    NotKeyValue { flag: String, given: String, part: String },
    #[error("invalid {flag} {key} {value:?}: give a number, e.g. {key}=1000")]
    NotANumber { flag: String, key: &'static str, value: String },
    #[error("invalid {flag} mode {value:?}: give octal permission bits, e.g. mode=0400")]
    Mode { flag: String, value: String },
    #[error("invalid {flag} {given:?}: unknown key {key:?} (source, target, uid, gid, mode)")]
    UnknownKey { flag: String, given: String, key: String },
    #[error("invalid {flag} {given:?}: source=NAME is missing")]
    NoSource { flag: String, given: String },
}

/// A `--mount` value (`flag` says which: `--mount`, `--mount-add`) that does not parse, as given.
/// A size's error is part of the message, not a `#[source]`: the binary prints chains with `{:#}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// One key's value is wrong; `fix` says what it takes.
    #[error("invalid {flag} {key} {value:?}: {fix}")]
    Value { flag: String, key: &'static str, value: String, fix: &'static str },
    #[error("invalid {flag} tmpfs-size {value:?}: {error}")]
    TmpfsSize { flag: String, value: String, error: SizeError },
    #[error("invalid {flag} {given:?}: {key} needs a value ({key}=...)")]
    NoValue { flag: String, given: String, key: String },
    #[error("invalid {flag} {given:?}: {key} takes NAME=VALUE, e.g. {key}=type=tmpfs")]
    NotNameValue { flag: String, given: String, key: String },
    #[error(
        "invalid {flag} {given:?}: unknown key {key:?} (type, source, target, readonly, volume-driver, volume-opt, volume-label, volume-nocopy, tmpfs-size, tmpfs-mode, bind-propagation)"
    )]
    UnknownKey { flag: String, given: String, key: String },
    #[error("invalid {flag} {given:?}: target=PATH is missing")]
    NoTarget { flag: String, given: String },
}

/// Docker durations: `5s`, `100ms`, `1m30s`, `2h`; a bare number is seconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, DurationError> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n * 1000);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().map_err(|_| DurationError::NotADuration { given: s.to_string() })?;
        num.clear();
        total += v * match unit.as_str() {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(DurationError::Unit { given: s.to_string(), unit }),
        };
    }
    if !num.is_empty() {
        return Err(DurationError::NoUnit { given: s.to_string() });
    }
    Ok(total as u64)
}

/// Docker's memory sizes: `512`, `64k`, `256M`, `1g`, `1.5GiB` (binary units, case-insensitive).
pub fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: f64 = num.parse().map_err(|_| SizeError::NotASize { given: s.to_string() })?;
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(SizeError::Unit { given: s.to_string(), unit: unit.to_string() }),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
        assert_eq!(parse_bytes("256M").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("32mb").unwrap(), 32 << 20);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3x").unwrap_err().to_string().contains("unknown unit"));
    }

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!((p.published, p.target, p.protocol), (Some(8080), 80, Protocol::Tcp));
        let p = parse_publish("53:53/udp").unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        let p = parse_publish("80").unwrap();
        assert_eq!((p.published, p.target), (None, 80));
        let p = parse_publish("published=8080,target=80,mode=host").unwrap();
        assert_eq!((p.published, p.target, p.mode), (Some(8080), 80, PublishMode::Host));
        // Out-of-range numbers parse; the manager refuses them naming the field.
        assert_eq!(parse_publish("70000:80").unwrap().published, Some(70000));
        assert!(parse_publish("a:80").is_err());
        assert!(parse_publish("80/xyz").is_err());
        assert!(parse_publish("published=1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s").unwrap(), 5000);
        assert_eq!(parse_duration_ms("100ms").unwrap(), 100);
        assert_eq!(parse_duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("7").unwrap(), 7000);
        assert!(parse_duration_ms("5x").is_err());
        assert!(parse_duration_ms("5s3").is_err());
    }
}

/// `--secret NAME` or `--secret source=NAME,target=FILE,uid=U,gid=G,mode=0400` (mode in octal),
/// as Docker reads it; `flag` names the option in errors.
pub fn parse_file_ref(s: &str, flag: &str) -> Result<shoal_control::model::FileRef, FileRefError> {
    let (flag_, given) = (|| flag.to_string(), || s.to_string());
    if !s.contains('=') {
        if s.is_empty() || s.contains(',') {
            return Err(FileRefError::Shape { flag: flag_(), given: given() });
        }
        return Ok(shoal_control::model::FileRef::named(s));
    }
    let mut r = shoal_control::model::FileRef::named("");
    let mut target = None;
    for part in s.split(',') {
        let (k, v) =
            part.split_once('=').ok_or_else(|| FileRefError::NotKeyValue { flag: flag_(), given: given(), part: part.to_string() })?;
        let num = |key: &'static str| v.parse::<u32>().map_err(|_| FileRefError::NotANumber { flag: flag_(), key, value: v.to_string() });
        match k.trim().to_ascii_lowercase().as_str() {
            "source" | "src" => r.source = v.to_string(),
            "target" => target = Some(v.to_string()),
            "uid" => r.uid = num("uid")?,
            "gid" => r.gid = num("gid")?,
            "mode" => {
                r.mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| FileRefError::Mode { flag: flag_(), value: v.to_string() })?
            }
            other => return Err(FileRefError::UnknownKey { flag: flag_(), given: given(), key: other.to_string() }),
        }
    }
    if r.source.is_empty() {
        return Err(FileRefError::NoSource { flag: flag_(), given: given() });
    }
    r.target = target.unwrap_or_else(|| r.source.clone());
    Ok(r)
}

/// `--config NAME` or its long form: as [`parse_file_ref`], with Docker's default target `/NAME`.
pub fn parse_config_ref(s: &str, flag: &str) -> Result<shoal_control::model::FileRef, FileRefError> {
    let mut r = parse_file_ref(s, flag)?;
    let explicit = s.split(',').any(|p| p.trim_start().to_ascii_lowercase().starts_with("target="));
    if !explicit {
        r.target = format!("/{}", r.source);
    }
    Ok(r)
}

/// `--ulimit nofile=1024:2048` (one number sets both).
pub fn parse_ulimit(s: &str) -> Result<(String, u64, u64), UlimitError> {
    let (name, v) = s.split_once('=').ok_or_else(|| UlimitError::Shape { given: s.to_string() })?;
    let num = |x: &str| x.parse::<u64>().map_err(|_| UlimitError::NotANumber { given: s.to_string(), number: x.to_string() });
    let (soft, hard) = match v.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(v)?, num(v)?),
    };
    Ok((name.to_string(), soft, hard))
}

#[cfg(test)]
mod file_ref_tests {
    use super::*;
    use shoal_control::model::FileRef;

    #[test]
    fn secrets_read_in_short_and_long_form() {
        assert_eq!(parse_file_ref("pw", "--secret").unwrap(), FileRef::named("pw"));
        let r = parse_file_ref("source=pw,target=db/pass,uid=70,gid=71,mode=0400", "--secret").unwrap();
        assert_eq!(r, FileRef { source: "pw".into(), target: "db/pass".into(), uid: 70, gid: 71, mode: 0o400 });
        assert_eq!(parse_file_ref("src=pw", "--secret").unwrap(), FileRef::named("pw"));
        assert_eq!(parse_config_ref("site.conf", "--config").unwrap(), FileRef::config_named("site.conf"));
        assert_eq!(parse_config_ref("source=c,target=/etc/app.conf", "--config").unwrap().target, "/etc/app.conf");
        for (bad, says) in [
            ("target=x", "source=NAME is missing"),
            ("source=pw,mode=999", "mode"),
            ("source=pw,uid=-1", "uid"),
            ("source=pw,owner=1", "unknown key \"owner\""),
        ] {
            let e = parse_file_ref(bad, "--secret").unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--secret"), "{bad}: {e}");
        }
    }
}

/// `--mount type=bind|volume|tmpfs,src=...,dst=...,readonly,...` as Docker reads it.
pub fn parse_mount(s: &str, flag: &str) -> Result<shoal_control::model::Mount, MountError> {
    use shoal_control::model::{Mount, MountKind};
    let mut m = Mount::new(MountKind::Volume, "", "");
    let mut kind = None;
    let (flag_, given) = (|| flag.to_string(), || s.to_string());
    let bad = |key: &'static str, v: &str, fix: &'static str| MountError::Value { flag: flag_(), key, value: v.to_string(), fix };
    let boolean = |what: &'static str, v: Option<&str>| match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(bad(what, v.unwrap_or(""), "use true or false")),
    };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
            None => (part.trim().to_ascii_lowercase(), None),
        };
        let val = || v.ok_or_else(|| MountError::NoValue { flag: flag_(), given: given(), key: k.clone() });
        match k.as_str() {
            "type" => {
                kind = Some(match val()? {
                    "bind" => MountKind::Bind,
                    "volume" => MountKind::Volume,
                    "tmpfs" => MountKind::Tmpfs,
                    other => return Err(bad("type", other, "use bind, volume or tmpfs")),
                })
            }
            "source" | "src" => m.source = val()?.to_string(),
            "target" | "destination" | "dst" => m.target = val()?.to_string(),
            "readonly" | "ro" => m.readonly = boolean("readonly", v)?,
            "volume-nocopy" => m.volume_nocopy = boolean("volume-nocopy", v)?,
            "volume-driver" => m.volume_driver = Some(val()?.to_string()),
            "bind-propagation" => m.bind_propagation = Some(val()?.to_string()),
            "tmpfs-size" => {
                let v = val()?;
                m.tmpfs_size = parse_bytes(v).map_err(|error| MountError::TmpfsSize { flag: flag_(), value: v.to_string(), error })?
            }
            "tmpfs-mode" => {
                let v = val()?;
                m.tmpfs_mode = Some(
                    u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| bad("tmpfs-mode", v, "give octal bits, e.g. 1770"))?,
                )
            }
            "volume-opt" | "volume-label" => {
                // `volume-opt=o=size=64m`: the first `=` ends the option's name.
                let (name, value) =
                    val()?.split_once('=').ok_or_else(|| MountError::NotNameValue { flag: flag_(), given: given(), key: k.clone() })?;
                if k == "volume-opt" {
                    if !shoal_control::model::VOLUME_OPTS.contains(&name) {
                        return Err(bad("volume-opt", name, "the local driver takes type, device and o"));
                    }
                    m.volume_opts.insert(name.to_string(), value.to_string());
                } else {
                    m.volume_labels.insert(name.to_string(), value.to_string());
                }
            }
            other => return Err(MountError::UnknownKey { flag: flag_(), given: given(), key: other.to_string() }),
        }
    }
    m.kind = kind.unwrap_or(MountKind::Volume);
    if m.target.is_empty() {
        return Err(MountError::NoTarget { flag: flag_(), given: given() });
    }
    Ok(m)
}

#[cfg(test)]
mod mount_tests {
    use super::*;
    use shoal_control::model::MountKind;

    #[test]
    fn mounts_read_like_docker() {
        let m = parse_mount("type=bind,src=/srv/data,dst=/data,readonly", "--mount").unwrap();
        assert_eq!((m.kind, m.source.as_str(), m.target.as_str(), m.readonly), (MountKind::Bind, "/srv/data", "/data", true));
        let m = parse_mount("source=db-data,target=/var/lib/postgresql/data,volume-nocopy", "--mount").unwrap();
        assert_eq!((m.kind, m.volume_nocopy), (MountKind::Volume, true));
        let m = parse_mount(
            "type=volume,src=fast,dst=/v,volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=64m,volume-label=tier=db",
            "--mount",
        )
        .unwrap();
        assert_eq!(m.volume_opts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["device=tmpfs", "o=size=64m", "type=tmpfs"]);
        assert_eq!(m.volume_labels["tier"], "db");
        let m = parse_mount("type=tmpfs,dst=/cache,tmpfs-size=1m,tmpfs-mode=1770", "--mount").unwrap();
        assert_eq!((m.tmpfs_size, m.tmpfs_mode), (1 << 20, Some(0o1770)));
        for (bad, says) in [
            ("type=nfs,dst=/x", "type"),
            ("type=bind,src=/x", "target=PATH is missing"),
            ("type=tmpfs,dst=/x,tmpfs-mode=99", "tmpfs-mode"),
            ("type=bind,src=/x,dst=/y,readonly=maybe", "readonly"),
            ("type=volume,dst=/y,color=red", "unknown key \"color\""),
            ("type=volume,src=v,dst=/y,volume-opt=size=1m", "volume-opt \"size\""),
            ("type=volume,src=v,dst=/y,volume-opt=type", "volume-opt takes NAME=VALUE"),
        ] {
            let e = parse_mount(bad, "--mount").unwrap_err().to_string();
            assert!(e.contains("--mount") && e.contains(says), "{bad}: {e}");
        }
    }
}
