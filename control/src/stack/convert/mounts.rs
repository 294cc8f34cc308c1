//! A service's `volumes` and `tmpfs` keys to mounts, as `docker stack deploy` makes them: a
//! named volume is the stack's (`<stack>_<key>`, or its `name:`; an external one keeps its own
//! name) and carries its top-level definition's driver options and labels to the node that
//! makes it; a relative bind source is a path from the project directory; a tmpfs has a size
//! and a mode.

use super::{check_key, labels, Unsupported};
use crate::model::{Mount, MountKind};
use crate::stack::compose::{self, ComposeFile, ServiceVolume};
use crate::stack::de::StringOrList;
use crate::stack::error::StackError;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// A top-level volume as its services mount it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StackVolume {
    pub name: String,
    pub external: bool,
    pub opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// The top-level `volumes`: local ones only (a node makes each on first use), `driver_opts`
/// the local driver's (`type`, `device`, `o`).
pub(super) fn declared(stack: &str, file: &ComposeFile) -> Result<BTreeMap<String, StackVolume>, StackError> {
    let mut out = BTreeMap::new();
    let empty = compose::VolumeDef::default();
    for (key, def) in &file.volumes {
        let path = format!("volumes.{key}");
        check_key(&path, key)?;
        let d = def.as_ref().unwrap_or(&empty);
        let external = d.external.as_ref().is_some_and(|e| e.external);
        if let Some(drv) = d.driver.as_deref().filter(|drv| *drv != "local") {
            return Err(StackError::invalid(
                format!("{path}.driver"),
                format!("{drv:?}: shoal's volumes are the nodes' own (the local driver): use driver: local or leave it out"),
            ));
        }
        if external {
            for (set, what) in [(d.driver.is_some(), "driver"), (d.driver_opts.is_some(), "driver_opts"), (d.labels.is_some(), "labels")] {
                if set {
                    return Err(StackError::invalid(
                        format!("{path}.{what}"),
                        format!(
                            "an external volume is used as it is: remove {what}, or remove external: true to let the stack describe it"
                        ),
                    ));
                }
            }
        }
        let opts: BTreeMap<String, String> = d.driver_opts.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        crate::model::check_volume_opts(&opts).map_err(|(k, why)| StackError::invalid(format!("{path}.driver_opts.{k}"), why))?;
        let name = super::object_name(stack, key, d.external.as_ref(), d.name.as_ref());
        let labels = if external { BTreeMap::new() } else { labels(stack, &d.labels) };
        out.insert(key.clone(), StackVolume { name, external, opts, labels });
    }
    Ok(out)
}

/// The service's mounts: its `volumes` in order, then its `tmpfs` paths.
pub(super) fn mounts(
    svc: &compose::Service,
    path: &str,
    project_dir: &Path,
    home: Option<&str>,
    volumes: &BTreeMap<String, StackVolume>,
    u: &mut Unsupported,
) -> Result<Vec<Mount>, StackError> {
    let mut out = vec![];
    for (i, v) in svc.volumes.iter().enumerate() {
        out.push(mount(&v.0, &format!("{path}.volumes[{i}]"), project_dir, home, volumes, u)?);
    }
    let tmpfs = match &svc.tmpfs {
        None => vec![],
        Some(StringOrList::String(s)) => vec![s.clone()],
        Some(StringOrList::List(l)) => l.clone(),
    };
    for (i, t) in tmpfs.iter().enumerate() {
        out.push(tmpfs_entry(t, &format!("{path}.tmpfs[{i}]"))?);
    }
    Ok(out)
}

fn mount(
    v: &ServiceVolume,
    path: &str,
    project_dir: &Path,
    home: Option<&str>,
    volumes: &BTreeMap<String, StackVolume>,
    u: &mut Unsupported,
) -> Result<Mount, StackError> {
    let incompatible = |what: &str, kind: &str| {
        StackError::invalid(format!("{path}.{what}"), format!("{what} options are for type {what}, not type {kind}: remove them"))
    };
    let source = v.source.as_deref().filter(|s| !s.is_empty());
    let mut m = match v.kind.as_str() {
        "volume" => {
            if v.bind.is_some() {
                return Err(incompatible("bind", "volume"));
            }
            if v.tmpfs.is_some() {
                return Err(incompatible("tmpfs", "volume"));
            }
            let mut m = Mount::new(MountKind::Volume, "", &v.target);
            if let Some(src) = source {
                let vol = volumes.get(src).ok_or_else(|| {
                    StackError::invalid(
                        format!("{path}.source"),
                        format!("volume {src:?} is not declared: add it under the top-level volumes key"),
                    )
                })?;
                m.source = vol.name.clone();
                m.volume_opts = vol.opts.clone();
                m.volume_labels = vol.labels.clone();
            }
            if let Some(o) = &v.volume {
                m.volume_nocopy = o.nocopy.is_some_and(|n| n.0);
                if o.subpath.is_some() {
                    u.add(format!("{path}.volume.subpath (mounting part of a volume)"));
                }
            }
            m
        }
        "bind" => {
            if v.volume.is_some() {
                return Err(incompatible("volume", "bind"));
            }
            if v.tmpfs.is_some() {
                return Err(incompatible("tmpfs", "bind"));
            }
            let src = source.ok_or_else(|| StackError::invalid(format!("{path}.source"), "a bind mount needs the host path to mount"))?;
            let host = host_path(src, project_dir, home).ok_or_else(|| {
                StackError::invalid(
                    format!("{path}.source"),
                    format!("{src:?}: HOME is not set, so ~ cannot be expanded: write the full path"),
                )
            })?;
            let mut m = Mount::new(MountKind::Bind, &host.to_string_lossy(), &v.target);
            if let Some(b) = &v.bind {
                m.bind_propagation = b.propagation.clone();
                if b.create_host_path.is_some_and(|c| c.0) {
                    u.add(format!("{path}.bind.create_host_path (a swarm task never creates its bind source)"));
                }
                if let Some(l) = b.selinux.as_deref().filter(|l| !matches!(*l, "z" | "Z")) {
                    return Err(StackError::invalid(format!("{path}.bind.selinux"), format!("{l:?}: use z or Z")));
                }
            }
            m
        }
        "tmpfs" => {
            if source.is_some() {
                return Err(StackError::invalid(format!("{path}.source"), "a tmpfs mount has no source: remove it"));
            }
            if v.bind.is_some() {
                return Err(incompatible("bind", "tmpfs"));
            }
            if v.volume.is_some() {
                return Err(incompatible("volume", "tmpfs"));
            }
            let mut m = Mount::new(MountKind::Tmpfs, "", &v.target);
            if let Some(t) = &v.tmpfs {
                m.tmpfs_size = t.size.map_or(0, |s| s.0);
                if let Some(mode) = t.mode {
                    m.tmpfs_mode = Some(super::service::file_mode(mode.0).ok_or_else(|| {
                        StackError::invalid(
                            format!("{path}.tmpfs.mode"),
                            format!("{} is not permission bits: write them in octal, e.g. 1777", mode.0),
                        )
                    })?);
                }
            }
            m
        }
        other => {
            return Err(StackError::invalid(format!("{path}.type"), format!("{other:?}: use volume, bind or tmpfs")));
        }
    };
    m.readonly = v.read_only.is_some_and(|r| r.0);
    Ok(m)
}

/// A bind source as the node sees it: `~` is the deploying user's home, a relative path is
/// from the project directory (the first Compose file's), `.` and `..` resolved in the text.
fn host_path(src: &str, project_dir: &Path, home: Option<&str>) -> Option<PathBuf> {
    let joined = if src == "~" || src.starts_with("~/") {
        Path::new(home?).join(src.trim_start_matches('~').trim_start_matches('/'))
    } else {
        project_dir.join(src)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// `PATH` or `PATH:size=64m,mode=1770` (Docker's `--tmpfs` syntax; `rw` is the default).
fn tmpfs_entry(entry: &str, path: &str) -> Result<Mount, StackError> {
    let (target, options) = entry.split_once(':').unwrap_or((entry, ""));
    if !target.starts_with('/') {
        return Err(StackError::invalid(path, format!("{target:?} is not an absolute path inside the task")));
    }
    let mut m = Mount::new(MountKind::Tmpfs, "", target);
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => {
                m.tmpfs_size = crate::stack::de::parse_bytes(v).map_err(|e| StackError::invalid(path, format!("size: {e}")))?;
            }
            Some(("mode", v)) => {
                m.tmpfs_mode = Some(
                    u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|b| *b <= 0o7777)
                        .ok_or_else(|| StackError::invalid(path, format!("mode {v:?}: give octal bits, e.g. 1777")))?,
                );
            }
            None if o == "rw" => {}
            None if o == "ro" => m.readonly = true,
            _ => return Err(StackError::invalid(path, format!("{o:?}: a tmpfs takes size=, mode=, ro or rw"))),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_resolve_from_the_project_directory() {
        let dir = Path::new("/srv/app");
        assert_eq!(host_path("./data", dir, None).unwrap(), Path::new("/srv/app/data"));
        assert_eq!(host_path("../shared/x", dir, None).unwrap(), Path::new("/srv/shared/x"));
        assert_eq!(host_path("/etc/hosts", dir, None).unwrap(), Path::new("/etc/hosts"));
        assert_eq!(host_path("~/conf", dir, Some("/home/op")).unwrap(), Path::new("/home/op/conf"));
        assert_eq!(host_path("~", dir, Some("/home/op")).unwrap(), Path::new("/home/op"));
        assert_eq!(host_path("/../../x", dir, None).unwrap(), Path::new("/x"), "never above /");
        assert!(host_path("~/conf", dir, None).is_none());
    }

    #[test]
    fn tmpfs_entries_take_size_and_mode() {
        let m = tmpfs_entry("/run:size=64m,mode=1770", "p").unwrap();
        assert_eq!((m.target.as_str(), m.tmpfs_size, m.tmpfs_mode), ("/run", 64 << 20, Some(0o1770)));
        assert_eq!(tmpfs_entry("/cache", "p").unwrap().tmpfs_size, 0);
        assert!(tmpfs_entry("/x:noexec", "p").unwrap_err().to_string().contains("\"noexec\""));
        assert!(tmpfs_entry("rel", "p").is_err());
        assert!(tmpfs_entry("/x:mode=99", "p").is_err());
    }
}
