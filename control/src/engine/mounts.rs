//! `ContainerSpec.Mounts` both ways: Docker's Mount (what `docker service create --mount`
//! sends) and shoal's bind, volume and tmpfs mounts. The shape is read here; what a value may
//! be (absolute targets, the local driver, permission bits) is the model's validation, which
//! the state machine runs and `paths` names in Docker's words.

use super::error::EngineError;
use crate::model::{Mount, MountKind};
use bollard_stubs::models as d;

fn refused(path: &str, why: &str) -> EngineError {
    EngineError::bad(format!("{path} is not supported by shoal: {why}"))
}

/// Mount `i` of the spec, named `TaskTemplate.ContainerSpec.Mounts[i]` in errors.
pub fn from_docker(i: usize, m: &d::Mount) -> Result<Mount, EngineError> {
    let p = format!("TaskTemplate.ContainerSpec.Mounts[{i}]");
    let kind = match m.typ {
        Some(d::MountType::BIND) => MountKind::Bind,
        Some(d::MountType::VOLUME) => MountKind::Volume,
        Some(d::MountType::TMPFS) => MountKind::Tmpfs,
        Some(other) => return Err(refused(&format!("{p}.Type"), &format!("type={other}: use bind, volume or tmpfs"))),
        None => return Err(EngineError::bad(format!("{p}.Type is missing: give bind, volume or tmpfs"))),
    };
    let target = m.target.clone().unwrap_or_default();
    if target.is_empty() {
        return Err(EngineError::bad(format!("{p}.Target is missing: give the absolute path inside the task, e.g. dst=/data")));
    }
    let mut out = Mount::new(kind, m.source.as_deref().unwrap_or(""), &target);
    out.readonly = m.read_only.unwrap_or(false);
    // Consistency tunes Docker Desktop's file sharing; on Linux every value is "default".
    if let Some(c) = m.consistency.as_deref().filter(|c| !c.is_empty() && *c != "default") {
        return Err(refused(&format!("{p}.Consistency"), &format!("{c:?} has no meaning on Linux: leave consistency out")));
    }
    if let Some(b) = &m.bind_options {
        out.bind_propagation = b.propagation.filter(|p| *p != d::MountBindOptionsPropagationEnum::EMPTY).map(|p| p.to_string());
        for (set, field, flag) in [
            (b.non_recursive, "NonRecursive", "bind-nonrecursive"),
            (b.create_mountpoint, "CreateMountpoint", "bind-create-src"),
            (b.read_only_non_recursive, "ReadOnlyNonRecursive", "readonly=non-recursive"),
            (b.read_only_force_recursive, "ReadOnlyForceRecursive", "readonly=recursive"),
        ] {
            if set == Some(true) {
                return Err(refused(&format!("{p}.BindOptions.{field}"), &format!("leave {flag} out")));
            }
        }
    }
    if let Some(v) = &m.volume_options {
        out.volume_nocopy = v.no_copy.unwrap_or(false);
        out.volume_labels = v.labels.clone().unwrap_or_default().into_iter().collect();
        if v.subpath.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(refused(&format!("{p}.VolumeOptions.Subpath"), "mount the whole volume (leave volume-subpath out)"));
        }
        if let Some(dc) = &v.driver_config {
            out.volume_driver = dc.name.clone().filter(|n| !n.is_empty());
            out.volume_opts = dc.options.clone().unwrap_or_default().into_iter().collect();
        }
    }
    if let Some(t) = &m.tmpfs_options {
        if let Some(size) = t.size_bytes {
            out.tmpfs_size = u64::try_from(size)
                .map_err(|_| EngineError::bad(format!("{p}.TmpfsOptions.SizeBytes: {size} is negative; give a size in bytes")))?;
        }
        if let Some(mode) = t.mode {
            out.tmpfs_mode =
                Some(u32::try_from(mode).map_err(|_| {
                    EngineError::bad(format!("{p}.TmpfsOptions.Mode: {mode} is not permission bits: use e.g. 1023 (0o1777)"))
                })?);
        }
        if t.options.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(refused(&format!("{p}.TmpfsOptions.Options"), "give tmpfs-size and tmpfs-mode only"));
        }
    }
    if m.image_options.as_ref().is_some_and(|o| o.subpath.as_deref().is_some_and(|s| !s.is_empty())) {
        return Err(refused(&format!("{p}.ImageOptions"), "image mounts do not exist in shoal"));
    }
    Ok(out)
}

/// A shoal mount as Docker shows it in `service inspect` (and reads it back on update).
pub fn to_docker(m: &Mount) -> d::Mount {
    let kind = match m.kind {
        MountKind::Bind => d::MountType::BIND,
        MountKind::Volume => d::MountType::VOLUME,
        MountKind::Tmpfs => d::MountType::TMPFS,
    };
    d::Mount {
        target: Some(m.target.clone()),
        source: (!m.source.is_empty()).then(|| m.source.clone()),
        typ: Some(kind),
        read_only: m.readonly.then_some(true),
        bind_options: m.bind_propagation.as_ref().map(|p| d::MountBindOptions {
            // An unknown mode cannot be stored (validation refuses it); EMPTY is Docker's default.
            propagation: Some(p.parse().unwrap_or(d::MountBindOptionsPropagationEnum::EMPTY)),
            ..Default::default()
        }),
        volume_options: (m.volume_nocopy || m.volume_driver.is_some() || !m.volume_opts.is_empty() || !m.volume_labels.is_empty()).then(
            || d::MountVolumeOptions {
                no_copy: m.volume_nocopy.then_some(true),
                labels: (!m.volume_labels.is_empty()).then(|| m.volume_labels.clone().into_iter().collect()),
                driver_config: (m.volume_driver.is_some() || !m.volume_opts.is_empty()).then(|| d::MountVolumeOptionsDriverConfig {
                    name: m.volume_driver.clone(),
                    options: (!m.volume_opts.is_empty()).then(|| m.volume_opts.clone().into_iter().collect()),
                }),
                ..Default::default()
            },
        ),
        tmpfs_options: (m.tmpfs_size > 0 || m.tmpfs_mode.is_some()).then(|| d::MountTmpfsOptions {
            size_bytes: (m.tmpfs_size > 0).then(|| i64::try_from(m.tmpfs_size).unwrap_or(i64::MAX)),
            mode: m.tmpfs_mode.map(i64::from),
            options: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Mount, EngineError> {
        from_docker(0, &serde_json::from_str(json).unwrap())
    }

    #[test]
    fn what_docker_sends_for_each_type() {
        // docker 20.10's bodies for --mount type=volume,src=data,dst=/data,volume-nocopy,volume-driver=local,
        // type=bind,...,readonly,bind-propagation=rslave and type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770.
        let v = parse(r#"{"Type":"volume","Source":"data","Target":"/data","VolumeOptions":{"NoCopy":true,"Labels":{},"DriverConfig":{"Name":"local"}}}"#)
            .unwrap();
        assert_eq!(
            (v.kind, v.source.as_str(), v.volume_nocopy, v.volume_driver.as_deref()),
            (MountKind::Volume, "data", true, Some("local"))
        );
        let b = parse(r#"{"Type":"bind","Source":"/srv","Target":"/srv","ReadOnly":true,"BindOptions":{"Propagation":"rslave"}}"#).unwrap();
        assert_eq!((b.readonly, b.bind_propagation.as_deref()), (true, Some("rslave")));
        let t = parse(r#"{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":1048576,"Mode":1016}}"#).unwrap();
        assert_eq!((t.tmpfs_size, t.tmpfs_mode), (1 << 20, Some(0o1770)));
        // An empty DriverConfig (the CLI adds one with any volume-* option) is the local driver.
        let v = parse(r#"{"Type":"volume","Target":"/x","VolumeOptions":{"NoCopy":true,"DriverConfig":{}}}"#).unwrap();
        assert_eq!(v.volume_driver, None);
        for m in [v, b, t] {
            assert_eq!(from_docker(0, &to_docker(&m)).unwrap(), m);
        }
    }

    #[test]
    fn volume_labels_and_driver_options_are_carried_both_ways() {
        let v = parse(
            r#"{"Type":"volume","Source":"fast","Target":"/x","VolumeOptions":{"Labels":{"tier":"hot"},"DriverConfig":{"Name":"local","Options":{"type":"tmpfs","device":"tmpfs","o":"size=64m"}}}}"#,
        )
        .unwrap();
        assert_eq!(v.volume_labels.get("tier").map(String::as_str), Some("hot"));
        assert_eq!(v.volume_opts.get("o").map(String::as_str), Some("size=64m"));
        let back = to_docker(&v);
        let vo = back.volume_options.unwrap();
        assert_eq!(vo.labels.unwrap().get("tier").map(String::as_str), Some("hot"));
        assert_eq!(vo.driver_config.unwrap().options.unwrap().get("type").map(String::as_str), Some("tmpfs"));
    }

    #[test]
    fn what_shoal_cannot_do_is_refused_by_path() {
        for (json, path) in [
            (r#"{"Type":"npipe","Source":"/a","Target":"/b"}"#, "Mounts[0].Type"),
            (r#"{"Type":"cluster","Source":"a","Target":"/b"}"#, "Mounts[0].Type"),
            (r#"{"Source":"a","Target":"/b"}"#, "Mounts[0].Type is missing"),
            (r#"{"Type":"volume","Source":"a"}"#, "Mounts[0].Target is missing"),
            (r#"{"Type":"bind","Source":"/a","Target":"/b","BindOptions":{"NonRecursive":true}}"#, "Mounts[0].BindOptions.NonRecursive"),
            (r#"{"Type":"tmpfs","Target":"/b","Consistency":"cached"}"#, "Mounts[0].Consistency"),
            (r#"{"Type":"tmpfs","Target":"/b","TmpfsOptions":{"SizeBytes":-1}}"#, "Mounts[0].TmpfsOptions.SizeBytes"),
            (r#"{"Type":"tmpfs","Target":"/b","TmpfsOptions":{"Mode":-1}}"#, "Mounts[0].TmpfsOptions.Mode"),
            (r#"{"Type":"tmpfs","Target":"/b","TmpfsOptions":{"Options":[["noexec"]]}}"#, "Mounts[0].TmpfsOptions.Options"),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains(&format!("TaskTemplate.ContainerSpec.{path}")), "{json}: {e}");
        }
    }
}
