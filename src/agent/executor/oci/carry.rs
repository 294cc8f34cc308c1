//! Secrets and configs in a task: the shim mounts a tmpfs in the task's private mount namespace
//! (never in the node's mount table, never on its disk), writes each file there with its owner
//! and mode, and `config.json` binds each one read-only at its target, as dockerd binds the
//! files of its per-container tmpfs. The tmpfs goes with the task's mount namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use nix::mount::{mount, MsFlags};
use serde_json::{json, Value};

use crate::agent::executor::spec::{CarriedFile, TaskMount};
use shoal_control::model::MountKind;

/// The tmpfs in the task directory (a mount point only: empty on the disk).
pub const DIR: &str = "carry";

/// The file of the `i`th carried file in the tmpfs.
fn name(i: usize) -> String {
    i.to_string()
}

/// The bind mounts of the carried files, for `config.json` (pure).
pub fn mounts(files: &[CarriedFile], dir: &Path) -> Vec<Value> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({ "destination": f.target, "type": "bind", "source": dir.join(DIR).join(name(i)),
                    "options": ["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"] })
        })
        .collect()
}

/// The task's `--mount`s for `config.json` (pure): binds and volumes as binds of their host
/// directory, tmpfs with Docker's options (noexec, nosuid, nodev, mode 1777 unless told).
pub fn task_mounts(mounts: &[TaskMount]) -> Vec<Value> {
    mounts
        .iter()
        .map(|m| {
            let rw = if m.spec.readonly { "ro" } else { "rw" };
            match m.spec.kind {
                MountKind::Tmpfs => {
                    let mut o = vec!["nosuid".to_string(), "nodev".into(), "noexec".into(), rw.into()];
                    if m.spec.tmpfs_size > 0 {
                        o.push(format!("size={}", m.spec.tmpfs_size));
                    }
                    o.push(format!("mode={:o}", m.spec.tmpfs_mode.unwrap_or(0o1777)));
                    json!({ "destination": m.spec.target, "type": "tmpfs", "source": "tmpfs", "options": o })
                }
                MountKind::Bind | MountKind::Volume => {
                    let propagation = m.spec.bind_propagation.as_deref().unwrap_or("rprivate");
                    json!({ "destination": m.spec.target, "type": "bind", "source": m.host, "options": ["rbind", propagation, rw] })
                }
            }
        })
        .collect()
}

/// Fills new volumes from the image's content at their targets (under the mounted `rootfs`), as
/// Docker copies an image's directory into an empty volume.
pub fn populate(rootfs: &Path, mounts: &[TaskMount]) -> anyhow::Result<()> {
    for m in mounts.iter().filter(|m| m.populate) {
        let from = rootfs.join(m.spec.target.trim_start_matches('/'));
        if !from.is_dir() {
            continue;
        }
        let out =
            std::process::Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(&m.host).output().context("run cp")?;
        if !out.status.success() {
            anyhow::bail!(
                "fill volume {} from the image's {}: {}",
                m.host.display(),
                m.spec.target,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Size of the tmpfs: the files, a page each for rounding, and room for the inodes.
fn tmpfs_bytes(files: &[CarriedFile]) -> usize {
    files.iter().map(|f| f.data.len().div_ceil(4096) * 4096 + 4096).sum::<usize>() + 64 * 1024
}

/// Mounts the tmpfs at `at` (in the caller's mount namespace, which must be the task's own) and
/// writes the files.
pub fn write(at: &Path, files: &[CarriedFile]) -> anyhow::Result<()> {
    std::fs::create_dir_all(at).with_context(|| format!("create {}", at.display()))?;
    let options = format!("size={},mode=0700", tmpfs_bytes(files));
    mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, Some(options.as_str()))
        .with_context(|| format!("mount the tmpfs for secrets and configs at {}", at.display()))?;
    for (i, f) in files.iter().enumerate() {
        let path = at.join(name(i));
        std::fs::write(&path, &f.data).with_context(|| format!("write {}", f.target))?;
        std::os::unix::fs::chown(&path, Some(f.uid), Some(f.gid)).with_context(|| format!("chown {} to {}:{}", f.target, f.uid, f.gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .with_context(|| format!("chmod {} {:o}", f.target, f.mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_is_bound_read_only_from_the_tasks_tmpfs() {
        let f = CarriedFile { target: "/run/secrets/pw".into(), uid: 70, gid: 70, mode: 0o400, data: b"s3cret".to_vec() };
        let m = mounts(std::slice::from_ref(&f), Path::new("/s/tasks/t1"));
        assert_eq!(m[0]["source"], "/s/tasks/t1/carry/0");
        assert_eq!(m[0]["destination"], "/run/secrets/pw");
        assert!(m[0]["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(tmpfs_bytes(&[f]) >= 4096 * 2);
        // The data never reaches the node's disk through spec.json.
        let run_json = serde_json::to_string(&CarriedFile {
            data: b"s3cret".to_vec(),
            ..CarriedFile { target: "/x".into(), uid: 0, gid: 0, mode: 0, data: vec![] }
        })
        .unwrap();
        assert!(!run_json.contains("s3cret") && !run_json.contains("115,51"), "{run_json}");
    }

    #[test]
    fn files_cross_the_pipe_in_order_and_bounded() {
        let mk = |t: &str, d: &[u8]| CarriedFile { target: t.into(), uid: 0, gid: 0, mode: 0o444, data: d.to_vec() };
        let files = vec![mk("/a", b"one"), mk("/b", b""), mk("/c", &[7; 5000])];
        let mut buf = vec![];
        crate::agent::executor::spec::write_files(&mut buf, &files).unwrap();
        let mut back: Vec<CarriedFile> = files.iter().map(|f| CarriedFile { data: vec![], ..f.clone() }).collect();
        crate::agent::executor::spec::read_files(&mut buf.as_slice(), &mut back, 1 << 20).unwrap();
        assert_eq!(back, files);
        let e = crate::agent::executor::spec::read_files(&mut buf.as_slice(), &mut back, 10).unwrap_err();
        assert!(e.to_string().contains("/a") || e.to_string().contains("/c"), "{e}");
    }
}
