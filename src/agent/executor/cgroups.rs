//! Each task's cgroups: where its processes live and what limits them. A task gets its own
//! cgroup v2 directory under the node's instance cgroup (where the eBPF socket load balancer
//! attaches, inherited by children), and, for every limit, the controller's directory: in the
//! cgroup v2 tree when the controller is there (pure v2 hosts, e.g. Debian 12), else in the
//! controller's v1 hierarchy (hybrid hosts like the build machine, where memory, cpu and pids
//! are v1). A limit that no controller can enforce is an error, never silently dropped.
//!
//! [`plan`] is pure (layout + limits -> directories, files, joins); the executor applies it
//! before the shim starts, the shim joins, and [`remove`] cleans up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A task's limits, as the service spec gives them (0 = none).
pub use shoal_control::model::ResourceLimits as Limits;

/// What went wrong with a task's cgroups, naming the flag, directory or file.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{flag} cannot be enforced: this host has no {controller} cgroup controller (neither in cgroup v2 nor as a v1 hierarchy)")]
    NoController { flag: &'static str, controller: &'static str },
    #[error("create cgroup {}: {source}", .dir.display())]
    Create { dir: PathBuf, source: std::io::Error },
    #[error("write {value:?} to {}: {source}", .file.display())]
    Write { file: PathBuf, value: String, source: std::io::Error },
    #[error("remove cgroup {}: {source}", .dir.display())]
    Remove { dir: PathBuf, source: std::io::Error },
}

/// The host's cgroup mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub v2: Option<PathBuf>,
    /// Controllers available in the v2 tree (its root's `cgroup.controllers`).
    pub v2_controllers: BTreeSet<String>,
    /// v1 controller -> its hierarchy's mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// The other v1 hierarchies (devices, freezer, cpuset, ...): the OCI runtime puts image
    /// tasks in them too, so cleanup looks there as well.
    pub v1_other: Vec<PathBuf>,
}

const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// CFS period for CPU limits (Docker's).
const CPU_PERIOD_US: u64 = 100_000;

impl Layout {
    /// The mounts this process sees. When it sees none (`ip netns exec` remounts /sys without
    /// them), cgroup2 is mounted at /sys/fs/cgroup in this mount namespace first: without a
    /// cgroup the socket load balancer and the limits have nowhere to live.
    pub fn detect_or_mount() -> Layout {
        let l = Layout::detect();
        if l.v2.is_some() || !l.v1.is_empty() {
            return l;
        }
        let at = Path::new("/sys/fs/cgroup");
        match nix::mount::mount(Some("cgroup2"), at, Some("cgroup2"), nix::mount::MsFlags::empty(), None::<&str>) {
            Ok(()) => tracing::warn!(at = %at.display(), "no cgroup filesystem was visible: mounted cgroup2"),
            Err(e) => {
                tracing::warn!(at = %at.display(), error = %e, "no cgroup filesystem is visible and mounting cgroup2 failed: tasks get no cgroup, limits cannot be enforced")
            }
        }
        Layout::detect()
    }

    pub fn detect() -> Layout {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut l = Layout::parse_mountinfo(&mountinfo);
        if let Some(root) = &l.v2 {
            let c = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            l.v2_controllers = c.split_whitespace().map(String::from).collect();
        }
        l
    }

    /// The cgroup mounts of a `/proc/self/mountinfo`.
    pub fn parse_mountinfo(text: &str) -> Layout {
        let mut l = Layout::default();
        for line in text.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mount_point = left.split(' ').nth(4).map(PathBuf::from);
            let mut r = right.split(' ');
            let (fstype, _source, superopts) = (r.next(), r.next(), r.next().unwrap_or(""));
            let Some(mp) = mount_point else { continue };
            match fstype {
                Some("cgroup2") if l.v2.is_none() => l.v2 = Some(mp),
                Some("cgroup") => {
                    let mut ours = false;
                    for opt in superopts.split(',') {
                        if CONTROLLERS.contains(&opt) {
                            l.v1.entry(opt.to_string()).or_insert_with(|| mp.clone());
                            ours = true;
                        }
                    }
                    if !ours && !l.v1_other.contains(&mp) {
                        l.v1_other.push(mp);
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// What to do for one task, in order: make `mkdirs`, write `writes` (controller enabling, then
/// limits), then the shim writes its PID into each of `join`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPlan {
    pub mkdirs: Vec<PathBuf>,
    pub writes: Vec<(PathBuf, String)>,
    pub join: Vec<PathBuf>,
}

/// `instance` is the node's cgroup path relative to the cgroup roots (`shoal/<instance>`).
pub fn plan(layout: &Layout, instance: &Path, task: &str, limits: &Limits) -> Result<CgroupPlan, CgroupError> {
    let mut p = CgroupPlan::default();
    let v2_task = layout.v2.as_ref().map(|root| root.join(instance).join(task));
    if let Some(dir) = &v2_task {
        p.mkdirs.push(dir.clone());
        p.join.push(dir.clone());
    }
    // (controller, flag, files in a v2 directory, files in a v1 one)
    type Files = Vec<(&'static str, String)>;
    let wanted: Vec<(&str, &str, Files, Files)> = [
        (
            limits.memory_bytes > 0,
            "memory",
            "--limit-memory",
            vec![("memory.max", limits.memory_bytes.to_string())],
            vec![("memory.limit_in_bytes", limits.memory_bytes.to_string())],
        ),
        (
            limits.nano_cpus > 0,
            "cpu",
            "--limit-cpu",
            vec![("cpu.max", format!("{} {CPU_PERIOD_US}", cpu_quota(limits.nano_cpus)))],
            vec![("cpu.cfs_period_us", CPU_PERIOD_US.to_string()), ("cpu.cfs_quota_us", cpu_quota(limits.nano_cpus).to_string())],
        ),
        (limits.pids > 0, "pids", "--limit-pids", vec![("pids.max", limits.pids.to_string())], vec![("pids.max", limits.pids.to_string())]),
    ]
    .into_iter()
    .filter(|w| w.0)
    .map(|(_, c, flag, v2, v1)| (c, flag, v2, v1))
    .collect();
    for (ctrl, flag, v2_files, v1_files) in wanted {
        match (&layout.v2, &v2_task) {
            (Some(root), Some(dir)) if layout.v2_controllers.contains(ctrl) => {
                // Each ancestor must hand the controller down (cgroup.subtree_control).
                let mut at = root.clone();
                for part in std::iter::once(None).chain(instance.components().map(Some)) {
                    if let Some(part) = part {
                        at = at.join(part);
                    }
                    let enable = (at.join("cgroup.subtree_control"), format!("+{ctrl}"));
                    if !p.writes.contains(&enable) {
                        p.writes.push(enable);
                    }
                }
                p.writes.extend(v2_files.into_iter().map(|(f, v)| (dir.join(f), v)));
            }
            _ => match layout.v1.get(ctrl) {
                Some(mount) => {
                    let dir = mount.join(instance).join(task);
                    if !p.mkdirs.contains(&dir) {
                        p.mkdirs.push(dir.clone());
                        p.join.push(dir.clone());
                    }
                    p.writes.extend(v1_files.into_iter().map(|(f, v)| (dir.join(f), v)));
                }
                None => return Err(CgroupError::NoController { flag, controller: ctrl }),
            },
        }
    }
    // Enabling comes before the limits that need it.
    p.writes.sort_by_key(|(f, _)| !f.ends_with("cgroup.subtree_control"));
    Ok(p)
}

fn cpu_quota(nano_cpus: u64) -> u64 {
    (nano_cpus.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(1000)
}

/// Makes the directories and writes the files of `p`; names the file on failure.
pub fn apply(p: &CgroupPlan) -> Result<(), CgroupError> {
    for d in &p.mkdirs {
        std::fs::create_dir_all(d).map_err(|source| CgroupError::Create { dir: d.clone(), source })?;
    }
    for (file, value) in &p.writes {
        if file.ends_with("cgroup.subtree_control") {
            let on = std::fs::read_to_string(file).unwrap_or_default();
            if on.split_whitespace().any(|c| Some(c) == value.strip_prefix('+')) {
                continue;
            }
        }
        std::fs::write(file, value).map_err(|source| CgroupError::Write { file: file.clone(), value: value.clone(), source })?;
    }
    Ok(())
}

/// Removes an instance's cgroups: every task directory, then the instance's own, in v2 and in
/// every v1 hierarchy. Returns what could not be removed.
pub fn remove_instance(layout: &Layout, instance: &Path) -> Vec<CgroupError> {
    let mut failures = Vec::new();
    let mut roots: Vec<&PathBuf> = layout.v2.iter().chain(layout.v1.values()).chain(&layout.v1_other).collect();
    roots.sort();
    roots.dedup();
    for root in roots {
        let dir = root.join(instance);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Err(e) = std::fs::remove_dir(entry.path()) {
                    failures.push(CgroupError::Remove { dir: entry.path(), source: e });
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                failures.push(CgroupError::Remove { dir, source: e });
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
";
    const PURE_V2: &str = "29 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    fn limits() -> Limits {
        Limits { memory_bytes: 32 << 20, nano_cpus: 500_000_000, pids: 64 }
    }

    #[test]
    fn mountinfo_gives_the_v2_root_and_the_v1_controllers() {
        let l = Layout::parse_mountinfo(HYBRID);
        assert_eq!(l.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(l.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(l.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.v1["pids"], PathBuf::from("/sys/fs/cgroup/pids"));
        let l = Layout::parse_mountinfo(PURE_V2);
        assert_eq!((l.v2, l.v1.len()), (Some(PathBuf::from("/sys/fs/cgroup")), 0));
    }

    #[test]
    fn no_limits_is_just_the_task_cgroup_under_the_instance() {
        let l = Layout::parse_mountinfo(HYBRID);
        let p = plan(&l, Path::new("shoal/n1"), "t1", &Limits::default()).unwrap();
        assert_eq!(p.join, vec![PathBuf::from("/sys/fs/cgroup/unified/shoal/n1/t1")]);
        assert!(p.writes.is_empty());
    }

    #[test]
    fn a_hybrid_host_limits_through_the_v1_hierarchies() {
        let l = Layout::parse_mountinfo(HYBRID);
        let p = plan(&l, Path::new("shoal/n1"), "t1", &limits()).unwrap();
        assert_eq!(p.join.len(), 4, "{p:#?}");
        let w: Vec<(String, String)> = p.writes.iter().map(|(f, v)| (f.display().to_string(), v.clone())).collect();
        assert!(w.contains(&("/sys/fs/cgroup/memory/shoal/n1/t1/memory.limit_in_bytes".into(), "33554432".into())), "{w:#?}");
        assert!(w.contains(&("/sys/fs/cgroup/cpu,cpuacct/shoal/n1/t1/cpu.cfs_quota_us".into(), "50000".into())), "{w:#?}");
        assert!(w.contains(&("/sys/fs/cgroup/pids/shoal/n1/t1/pids.max".into(), "64".into())), "{w:#?}");
    }

    #[test]
    fn a_v2_host_enables_controllers_down_the_path_then_limits() {
        let mut l = Layout::parse_mountinfo(PURE_V2);
        l.v2_controllers = ["cpu", "memory", "pids", "io"].into_iter().map(String::from).collect();
        let p = plan(&l, Path::new("shoal/n1"), "t1", &limits()).unwrap();
        assert_eq!(p.join, vec![PathBuf::from("/sys/fs/cgroup/shoal/n1/t1")]);
        let w: Vec<(String, String)> = p.writes.iter().map(|(f, v)| (f.display().to_string(), v.clone())).collect();
        assert_eq!(w[0], ("/sys/fs/cgroup/cgroup.subtree_control".into(), "+memory".into()));
        assert!(w.contains(&("/sys/fs/cgroup/shoal/n1/cgroup.subtree_control".into(), "+pids".into())));
        let first_limit = w.iter().position(|(f, _)| !f.ends_with("subtree_control")).unwrap();
        assert!(w[..first_limit].iter().all(|(f, _)| f.ends_with("subtree_control")));
        assert_eq!(w.len() - first_limit, 3);
        assert!(w.contains(&("/sys/fs/cgroup/shoal/n1/t1/memory.max".into(), "33554432".into())));
        assert!(w.contains(&("/sys/fs/cgroup/shoal/n1/t1/cpu.max".into(), "50000 100000".into())));
    }

    #[test]
    fn a_limit_without_a_controller_is_an_error_naming_the_flag() {
        let l = Layout::parse_mountinfo(PURE_V2); // no controllers listed
        let err = plan(&l, Path::new("shoal/n1"), "t1", &Limits { memory_bytes: 1 << 30, ..Default::default() }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--limit-memory cannot be enforced: this host has no memory cgroup controller (neither in cgroup v2 nor as a v1 hierarchy)"
        );
    }

    #[test]
    fn tiny_cpu_limits_keep_the_kernels_minimum_quota() {
        assert_eq!(cpu_quota(1), 1000);
        assert_eq!(cpu_quota(2_000_000_000), 200_000);
    }
}
