//! Tasks from OCI images, run by `runc` (Debian's 1.1.5) from a bundle whose `config.json` is
//! [`config::build`]'s, checked against oci-spec's runtime types.
//!
//! Why runc: measured on the build host (Debian 12, kernel 6.18, hybrid cgroups), `runc run` of a
//! busybox bundle takes 15-16 ms at p50 (25 ms p90) when the machine is quiet. crun 1.8.1 would
//! be faster (~4 ms for its failure path) but refuses this host outright ("cgroups in hybrid mode
//! not supported, drop all controllers from cgroupv2"), whatever cgroup manager it is given.
//! youki's libcontainer in process would bring a second namespace/mount implementation into
//! the daemon, which the crash-only design wants out of it: with runc, every task lives in its
//! own processes (shim, runc, the container) and a killed daemon takes none of them down.
//!
//! Each task's root is an overlayfs over the image's shared layers with an upper directory of
//! its own in the task directory; the shim mounts it in a mount namespace of its own, so it
//! never shows in the node's.

pub mod carry;
pub mod config;
pub mod process;
pub mod seccomp;
pub mod seccomp_bpf;
pub mod shim;

use std::path::{Path, PathBuf};

/// The runtime binary.
pub const RUNC: &str = "runc";

/// runc's state directory for a node whose tasks live under `tasks` (`<state>/tasks`).
pub fn runtime_root(tasks: &Path) -> PathBuf {
    tasks.parent().unwrap_or(tasks).join("runc")
}

/// mount(2) takes one page of options.
const MAX_OPTIONS: usize = 4095;

/// An image whose layers do not fit one overlayfs mount's options.
#[derive(Debug, thiserror::Error)]
#[error("the image's {layers} layers are more than one overlayfs mount can stack")]
pub struct TooManyLayers {
    pub layers: usize,
}

/// overlayfs options for `layers` (top first) with the task's upper and work directories, and
/// the directory to mount from: layers that share a directory (the store's) are named relative
/// to it, so an image of up to ~60 layers fits in the page mount(2) takes.
pub fn overlay_options(layers: &[PathBuf], dir: &Path) -> Result<(String, Option<PathBuf>), TooManyLayers> {
    let base = layers.first().and_then(|l| l.parent()).filter(|b| layers.iter().all(|l| l.parent() == Some(*b)));
    let lower: Vec<String> = layers
        .iter()
        .map(|l| match base {
            Some(b) => l.strip_prefix(b).unwrap_or(l).display().to_string(),
            None => l.display().to_string(),
        })
        .collect();
    let options = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), dir.join("upper").display(), dir.join("work").display());
    if options.len() > MAX_OPTIONS {
        return Err(TooManyLayers { layers: layers.len() });
    }
    Ok((options, base.map(Path::to_path_buf)))
}

/// The file the image has at `path` (e.g. `etc/passwd`), looking through the layers top first;
/// a whiteout (0:0 character device) hides it.
pub fn read_from_layers(layers: &[PathBuf], path: &str) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    for l in layers {
        let p = l.join(path);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_char_device() => return None,
            Ok(_) => return std::fs::read_to_string(&p).ok(),
            Err(_) => continue,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_stacks_layers_top_first() {
        let (o, base) = overlay_options(&[PathBuf::from("/s/l/top"), PathBuf::from("/s/l/base")], Path::new("/s/tasks/t1")).unwrap();
        assert_eq!(o, "lowerdir=top:base,upperdir=/s/tasks/t1/upper,workdir=/s/tasks/t1/work");
        assert_eq!(base, Some(PathBuf::from("/s/l")));
        let (o, base) = overlay_options(&[PathBuf::from("/a/top"), PathBuf::from("/b/base")], Path::new("/t")).unwrap();
        assert_eq!((o.as_str(), base), ("lowerdir=/a/top:/b/base,upperdir=/t/upper,workdir=/t/work", None));
        let many: Vec<PathBuf> = (0..70).map(|i| PathBuf::from(format!("/var/lib/shoal/imagestore/layers/{i:064}"))).collect();
        let err = overlay_options(&many, Path::new("/t")).unwrap_err().to_string();
        assert_eq!(err, "the image's 70 layers are more than one overlayfs mount can stack");
        assert!(overlay_options(&many[..50], Path::new("/t")).is_ok());
        assert_eq!(runtime_root(Path::new("/var/lib/shoal/tasks")), PathBuf::from("/var/lib/shoal/runc"));
    }

    #[test]
    fn files_are_read_through_the_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, base) = (tmp.path().join("top"), tmp.path().join("base"));
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(base.join("etc/passwd"), "base").unwrap();
        std::fs::write(base.join("etc/group"), "g").unwrap();
        let layers = vec![top.clone(), base];
        assert_eq!(read_from_layers(&layers, "etc/passwd").as_deref(), Some("base"));
        std::fs::write(top.join("etc/passwd"), "top").unwrap();
        assert_eq!(read_from_layers(&layers, "etc/passwd").as_deref(), Some("top"));
        assert_eq!(read_from_layers(&layers, "etc/shadow"), None);
    }
}
