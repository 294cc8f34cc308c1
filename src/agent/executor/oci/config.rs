//! The OCI runtime bundle's `config.json` for one task (pure: unit-tested without root), Docker's
//! sandbox: the default capability set, no_new_privs, the default seccomp filter, /proc with
//! Docker's masked and read-only paths, a read-only /sys, a minimal /dev with /dev/pts,
//! /dev/shm and /dev/mqueue, the device cgroup's default list, and the task's own network
//! namespace (made by the data plane) joined by path. Nothing of the node is mounted in but the
//! task's own resolv.conf, hosts and hostname files.

use std::path::Path;

use serde_json::json;

use super::seccomp;
use crate::agent::executor::spec::{OciImage, TaskRun, INIT_TARGET};

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's masked paths (moby `oci/defaults.go`).
pub const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `config.json` for `run` whose image is `img`, with its bundle in `dir` (rootfs at
/// `dir/rootfs`) and its network namespace at `netns`.
pub fn build(run: &TaskRun, img: &OciImage, dir: &Path, netns: &Path) -> serde_json::Value {
    let caps = capabilities(&run.cap_add, &run.cap_drop);
    let bind = |file: &str, dest: &str| json!({ "destination": dest, "type": "bind", "source": dir.join(file), "options": ["rbind", "rprivate", "rw"] });
    // `--init`: tini is PID 1 and runs the command as its child (`docker-init -- ARGS`).
    let args: Vec<String> = match &run.init {
        Some(_) => [INIT_TARGET.to_string(), "--".to_string()].into_iter().chain(img.argv.iter().cloned()).collect(),
        None => img.argv.clone(),
    };
    let mut c = json!({
        "ociVersion": "1.0.2",
        "hostname": run.name,
        "root": { "path": dir.join("rootfs"), "readonly": run.read_only },
        "process": {
            "terminal": false,
            "user": { "uid": img.uid, "gid": img.gid, "additionalGids": img.additional_gids },
            "args": args,
            "env": img.env,
            "cwd": if img.cwd.is_empty() { "/" } else { &img.cwd },
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": true,
            "rlimits": rlimits(&run.ulimits),
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            bind("resolv.conf", "/etc/resolv.conf"),
            bind("hosts", "/etc/hosts"),
            bind("hostname", "/etc/hostname"),
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
                { "type": "network", "path": netns },
            ],
            "cgroupsPath": img.cgroups_path,
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
            "seccomp": seccomp::for_task(&caps),
            "sysctl": run.sysctls,
        },
    });
    if let Some(m) = c["mounts"].as_array_mut() {
        if let Some(init) = &run.init {
            m.push(json!({ "destination": INIT_TARGET, "type": "bind", "source": init, "options": ["rbind", "rprivate", "ro", "nosuid", "nodev"] }));
        }
        m.extend(super::carry::task_mounts(&run.mounts));
        // After the mounts, so a secret may sit inside a mounted directory.
        m.extend(super::carry::mounts(&run.files, dir));
    }
    c
}

/// Docker's default set with `--cap-add` then `--cap-drop` applied (`ALL` is every capability).
pub fn capabilities(add: &[String], drop: &[String]) -> Vec<String> {
    let all = || shoal_control::model::CAPABILITIES.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") { all() } else { DEFAULT_CAPS.iter().map(|c| c.to_string()).collect() };
    for c in add.iter().filter(|c| *c != "ALL") {
        if !caps.contains(c) {
            caps.push(c.clone());
        }
    }
    if drop.iter().any(|c| c == "ALL") {
        caps.retain(|c| add.contains(c));
    }
    caps.retain(|c| !drop.contains(c));
    caps
}

/// Docker's default open-file limit, with the service's `--ulimit`s over it.
fn rlimits(ulimits: &[(String, u64, u64)]) -> Vec<serde_json::Value> {
    let mut out: Vec<(String, u64, u64)> = vec![("RLIMIT_NOFILE".into(), 20000, 20000)];
    for (name, soft, hard) in ulimits {
        let t = format!("RLIMIT_{}", name.to_ascii_uppercase());
        out.retain(|(n, _, _)| n != &t);
        out.push((t, *soft, *hard));
    }
    out.into_iter().map(|(t, soft, hard)| json!({ "type": t, "soft": soft, "hard": hard })).collect()
}

/// The runtime config we built does not fit the runtime spec's types (a bug here, named).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("runtime config: {0}")]
    Spec(#[source] serde_json::Error),
    #[error("render the runtime config: {0}")]
    Render(#[source] serde_json::Error),
}

/// Checks the document against the runtime spec's types (oci-spec) and renders it.
pub fn render(config: &serde_json::Value) -> Result<Vec<u8>, RenderError> {
    let spec: oci_spec::runtime::Spec = serde_json::from_value(config.clone()).map_err(RenderError::Spec)?;
    serde_json::to_vec_pretty(&spec).map_err(RenderError::Render)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn task() -> (TaskRun, OciImage) {
        let img = OciImage {
            image_id: "sha256:00".into(),
            layers: vec![PathBuf::from("/s/layers/b"), PathBuf::from("/s/layers/a")],
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/app".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![2000],
            cgroups_path: "/shoal/n1/t1".into(),
            stop_signal: None,
        };
        let run = TaskRun {
            id: "t1".into(),
            name: "web.1.t1".into(),
            netns: "shoal-t-t1".into(),
            image: crate::agent::executor::Image::Oci(img.clone()),
            env: vec![],
            resolv_conf: String::new(),
            hosts: String::new(),
            cgroups: Default::default(),
            hidden: vec![],
            seccomp: vec![],
            files: vec![],
            mounts: vec![],
            read_only: false,
            cap_add: vec![],
            cap_drop: vec![],
            stop_grace_ms: None,
            sysctls: Default::default(),
            ulimits: vec![],
            init: None,
        };
        (run, img)
    }

    #[test]
    fn the_sandbox_is_dockers() {
        let (run, img) = task();
        let c = build(&run, &img, Path::new("/s/tasks/t1"), Path::new("/run/netns/shoal-t-t1"));
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&render(&c).unwrap()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &img.argv);
        assert_eq!(p.cwd(), Path::new("/app"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.no_new_privileges(), Some(true));
        let eff = p.capabilities().as_ref().unwrap().effective().as_ref().unwrap();
        assert_eq!(eff.len(), 14);
        assert!(!eff.contains(&oci_spec::runtime::Capability::SysAdmin));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string()));
        assert!(linux.readonly_paths().as_ref().unwrap().contains(&"/proc/sys".to_string()));
        assert!(linux.seccomp().is_some());
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(ns.iter().any(|n| n.path().as_deref() == Some(Path::new("/run/netns/shoal-t-t1"))));
        let mounts = spec.mounts().as_ref().unwrap();
        let sys = mounts.iter().find(|m| m.destination() == Path::new("/sys")).unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
        // Only the task's own files are bound in: nothing of the node's state directory.
        let binds: Vec<_> = mounts.iter().filter(|m| m.typ().as_deref() == Some("bind")).map(|m| m.source().clone().unwrap()).collect();
        assert!(binds.iter().all(|s| s.starts_with("/s/tasks/t1")), "{binds:?}");
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("/s/tasks/t1/rootfs"));
    }

    #[test]
    fn init_is_pid_1_bound_read_only_with_the_command_as_its_child() {
        let (mut run, img) = task();
        run.init = Some(PathBuf::from("/usr/bin/tini-static"));
        let c = build(&run, &img, Path::new("/s/tasks/t1"), Path::new("/run/netns/shoal-t-t1"));
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&render(&c).unwrap()).unwrap();
        let args = spec.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, ["/sbin/docker-init", "--", "/bin/sh", "-c", "true"]);
        let m = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/sbin/docker-init")).unwrap();
        assert_eq!(m.source().as_deref(), Some(Path::new("/usr/bin/tini-static")));
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn a_missing_init_refuses_the_task_naming_the_file() {
        let (mut run, _) = task();
        assert_eq!(crate::agent::executor::missing_init(&run), None);
        run.init = Some(PathBuf::from("/nonexistent/tini-static"));
        assert_eq!(
            crate::agent::executor::missing_init(&run).as_deref(),
            Some("--init: /nonexistent/tini-static is missing on this node: install Debian's tini package")
        );
    }

    #[test]
    fn cap_add_and_drop_apply_over_dockers_default() {
        let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let c = capabilities(&s(&["CAP_NET_ADMIN"]), &s(&["CAP_NET_RAW", "CAP_CHOWN"]));
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && !c.contains(&"CAP_NET_RAW".to_string()) && c.len() == 13);
        assert_eq!(capabilities(&s(&["CAP_KILL"]), &s(&["ALL"])), s(&["CAP_KILL"]));
        assert_eq!(capabilities(&s(&["ALL"]), &[]).len(), 41);
    }
}
