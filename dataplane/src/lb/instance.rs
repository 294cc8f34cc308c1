//! Where one node's load-balancer state lives outside its network namespace: the bpffs pin
//! directory and the tasks' cgroup. Several lab nodes share one machine, so the instance is
//! named after the network namespace the process runs in (found by inode under /run/netns),
//! or after the node when it runs in an unnamed one (a real host).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const RUN_DIR: &str = "/run/shoal";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    /// `/run/shoal/<name>`.
    pub run_dir: PathBuf,
}

impl Instance {
    pub fn named(name: &str) -> Self {
        Self { name: name.to_string(), run_dir: Path::new(RUN_DIR).join(name) }
    }

    /// The instance of the calling process's network namespace.
    pub fn here(node: &str) -> Self {
        Self::named(&current_netns_name().unwrap_or_else(|| if node.is_empty() { "local".into() } else { node.to_string() }))
    }

    /// bpffs mount point for pinned maps and links.
    pub fn pin_dir(&self) -> PathBuf {
        self.run_dir.join("bpf")
    }

    /// The cgroup (v2) whose processes get the socket-level VIP balancer: tasks of this node
    /// run in it. `<cgroup2 mount>/shoal/<name>`.
    pub fn cgroup(&self, cgroup2_root: &Path) -> PathBuf {
        cgroup2_root.join("shoal").join(&self.name)
    }
}

/// The name under /run/netns of the namespace this process is in, if it has one.
pub fn current_netns_name() -> Option<String> {
    let me = std::fs::metadata("/proc/self/ns/net").ok()?;
    let dir = std::fs::read_dir(crate::netns::NETNS_DIR).ok()?;
    dir.filter_map(|e| e.ok())
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == me.ino() && m.dev() == me.dev()))
        .and_then(|e| e.file_name().into_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_name() {
        let i = Instance::named("shoal-lab-smgr");
        assert_eq!(i.pin_dir(), PathBuf::from("/run/shoal/shoal-lab-smgr/bpf"));
        assert_eq!(i.cgroup(Path::new("/sys/fs/cgroup/unified")), PathBuf::from("/sys/fs/cgroup/unified/shoal/shoal-lab-smgr"));
    }
}
