//! The seccomp filter of every task: Docker's default profile in the form containers-common
//! ships it (`seccomp-default.json`, from Debian's golang-github-containers-common 0.50, the
//! profile podman uses; it is Docker's default with unknown syscalls answered ENOSYS instead of
//! EPERM, so newer libcs fall back rather than fail). Docker's profile format has per-rule
//! conditions (`includes`/`excludes` on capabilities and architectures) that the OCI runtime
//! spec does not: [`for_task`] resolves them for the task's capabilities on this architecture,
//! as dockerd does before it hands the filter to runc.
//!
//! containers-common's profile allows the mount family, setns, unshare and namespace-making
//! clone to every task (podman leans on the kernel's capability checks). Docker's allows them
//! only with CAP_SYS_ADMIN, which keeps, for one, unprivileged user namespaces (and the mount
//! and network powers they bring) out of a task. [`for_task`] restores Docker's rule: without
//! CAP_SYS_ADMIN those calls fail with EPERM, clone may not make namespaces, and clone3 (whose
//! flags seccomp cannot read) answers ENOSYS so libcs fall back to clone.

use serde_json::{json, Value};

const PROFILE: &str = include_str!("seccomp-default.json");

/// Docker's name for this machine's architecture in `arches`.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn native() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        _ => "SCMP_ARCH_NATIVE",
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Syscalls Docker's default profile allows only to a task holding a capability (clone and
/// clone3 are handled apart: clone is allowed without the namespace flags).
pub const GATED: [(&str, &[&str]); 4] = [
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy"]),
];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET: clone may set none of them without CAP_SYS_ADMIN (Docker's mask).
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
const EPERM: i64 = 1;
const ENOSYS: i64 = 38;

/// The OCI `linux.seccomp` object for a task holding `caps` (`CAP_...`); the filter for a
/// capability set is worked out once per process.
pub fn for_task(caps: &[String]) -> Value {
    static CACHE: std::sync::Mutex<Vec<(Vec<String>, Value)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, v)) = cache.iter().find(|(c, _)| c == caps) {
        return v.clone();
    }
    let v = resolve(caps);
    cache.push((caps.to_vec(), v.clone()));
    v
}

fn resolve(caps: &[String]) -> Value {
    let profile: Value = serde_json::from_str(PROFILE).expect("the vendored seccomp profile is JSON");
    let arch_names: Vec<String> = profile["archMap"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["architecture"] == native())
        .map(|m| std::iter::once(native().to_string()).chain(strings(m.get("subArchitectures"))).collect())
        .unwrap_or_else(|| vec![native().to_string()]);
    let has = |cap: &str| caps.iter().any(|c| c == cap);
    let denied: Vec<&str> = GATED.iter().filter(|(cap, _)| !has(cap)).flat_map(|(_, calls)| calls.iter().copied()).collect();
    let mut syscalls = Vec::new();
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        let inc = &rule["includes"];
        let exc = &rule["excludes"];
        let inc_caps = strings(inc.get("caps"));
        let inc_arches = strings(inc.get("arches"));
        if !inc_caps.iter().all(|c| caps.contains(c)) || (!inc_arches.is_empty() && !inc_arches.iter().any(|a| a == arch())) {
            continue;
        }
        if strings(exc.get("caps")).iter().any(|c| caps.contains(c)) || strings(exc.get("arches")).iter().any(|a| a == arch()) {
            continue;
        }
        let mut names = strings(rule.get("names"));
        if rule["action"] == "SCMP_ACT_ALLOW" {
            names.retain(|n| !denied.contains(&n.as_str()) && !matches!(n.as_str(), "clone" | "clone3"));
            if names.is_empty() {
                continue;
            }
        }
        let mut r = json!({ "names": names, "action": rule["action"] });
        if let Some(e) = rule.get("errnoRet") {
            r["errnoRet"] = e.clone();
        }
        if let Some(a) = rule.get("args").filter(|a| a.as_array().is_some_and(|a| !a.is_empty())) {
            r["args"] = a.clone();
        }
        syscalls.push(r);
    }
    if !denied.is_empty() {
        syscalls.push(json!({ "names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM }));
    }
    if !has("CAP_SYS_ADMIN") {
        syscalls.push(json!({ "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] }));
        syscalls.push(json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }));
    } else {
        syscalls.push(json!({ "names": ["clone", "clone3"], "action": "SCMP_ACT_ALLOW" }));
    }
    let mut out = json!({ "defaultAction": profile["defaultAction"], "architectures": arch_names, "syscalls": syscalls });
    if let Some(e) = profile.get("defaultErrnoRet") {
        out["defaultErrnoRet"] = e.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &Value, action: &str) -> Vec<String> {
        v["syscalls"].as_array().unwrap().iter().filter(|r| r["action"] == action).flat_map(|r| strings(r.get("names"))).collect()
    }

    #[test]
    fn docker_default_caps_do_not_allow_mount_or_modules() {
        let caps: Vec<String> = super::super::config::DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        let f = for_task(&caps);
        assert_eq!(f["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed = names(&f, "SCMP_ACT_ALLOW");
        for ok in ["read", "socket", "chroot", "execve"] {
            assert!(allowed.contains(&ok.to_string()), "{ok} is allowed");
        }
        for denied in ["mount", "umount2", "init_module", "reboot", "kexec_load", "open_by_handle_at", "bpf", "setns", "unshare"] {
            assert!(!allowed.contains(&denied.to_string()), "{denied} is not allowed without its capability");
        }
        assert!(names(&f, "SCMP_ACT_ERRNO").contains(&"mount".to_string()), "mount answers EPERM");
        let clone = f["syscalls"].as_array().unwrap().iter().find(|r| r["names"][0] == "clone").unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ", "clone may not make namespaces");
        // The filter is what oci-spec reads as a runtime seccomp section.
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(f).unwrap();
    }

    #[test]
    fn sys_admin_opens_mount() {
        let f = for_task(&["CAP_SYS_ADMIN".to_string()]);
        assert!(names(&f, "SCMP_ACT_ALLOW").contains(&"mount".to_string()));
    }
}
