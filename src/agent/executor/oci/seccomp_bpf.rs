//! The tasks' seccomp filter for the workloads the shim runs itself (the built-in `host` and
//! `shoal/whoami` images), which no OCI runtime compiles for us: the same resolved profile as
//! runc gets ([`super::seccomp::for_task`]), compiled to BPF with `seccompiler` (rust-vmm's
//! compiler, used by Firecracker) and installed by the workload's process just before exec.
//!
//! seccompiler gives a filter one action for matches and one for the rest, and the profile has
//! three (allow, EPERM, ENOSYS): so one filter per action. The allow list comes first, with the
//! profile's default for the rest; each errno group after it, with `allow` for the rest. The
//! kernel runs every filter and takes the strictest answer, and among equal ones (ERRNO) the
//! latest filter's: so a call the allow list refuses with ENOSYS but an EPERM rule names gets
//! EPERM, as libseccomp's single filter would answer.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

/// Why the task's seccomp filter cannot be built or installed, naming the profile entry at
/// fault. Clone: the default filter's result is computed once and handed to every task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp compiler for architecture {arch}")]
    Arch { arch: &'static str },
    #[error("unsupported seccomp default action {action}")]
    DefaultAction { action: Value },
    #[error("unsupported seccomp action {action}")]
    Action { action: Value },
    #[error("unsupported seccomp condition in {rule}")]
    Condition { rule: Value },
    /// seccompiler's complaint (text: its error is not Clone; an unknown syscall is read from it).
    #[error("{detail}")]
    Compile { detail: String },
    #[error("the compiler returned no filter")]
    NoFilter,
    #[error("no seccomp filter was given for the task")]
    NoneGiven,
    #[error("install the seccomp filter: {detail}")]
    Install { detail: String },
}

impl SeccompError {
    /// The syscall seccompiler does not know for this architecture, if that is the complaint.
    fn unknown_syscall(&self) -> Option<&str> {
        let SeccompError::Compile { detail } = self else { return None };
        detail.split_once("Invalid syscall name: ")?.1.split_once(" for given arch").map(|(n, _)| n)
    }
}

fn arch() -> Result<TargetArch, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        arch => Err(SeccompError::Arch { arch }),
    }
}

/// The profile's action as seccompiler's JSON spells it; `None` for one it has no use for.
fn action(name: &str, errno: Option<u64>) -> Option<Value> {
    match name {
        "SCMP_ACT_ALLOW" => Some(json!("allow")),
        "SCMP_ACT_ERRNO" => Some(json!({ "errno": errno.unwrap_or(1) })),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Some(json!("kill_thread")),
        "SCMP_ACT_KILL_PROCESS" => Some(json!("kill_process")),
        "SCMP_ACT_TRAP" => Some(json!("trap")),
        "SCMP_ACT_LOG" => Some(json!("log")),
        _ => None,
    }
}

fn condition(arg: &Value) -> Option<Value> {
    let (value, two) = (arg["value"].as_u64()?, arg["valueTwo"].as_u64().unwrap_or(0));
    let (op, val) = match arg["op"].as_str()? {
        "SCMP_CMP_EQ" => (json!("eq"), value),
        "SCMP_CMP_NE" => (json!("ne"), value),
        "SCMP_CMP_LT" => (json!("lt"), value),
        "SCMP_CMP_LE" => (json!("le"), value),
        "SCMP_CMP_GT" => (json!("gt"), value),
        "SCMP_CMP_GE" => (json!("ge"), value),
        // libseccomp: (arg & value) == valueTwo.
        "SCMP_CMP_MASKED_EQ" => (json!({ "masked_eq": value }), two),
        _ => return None,
    };
    Some(json!({ "index": arg["index"].as_u64()?, "type": "qword", "op": op, "val": val }))
}

fn compile(arch: TargetArch, mismatch: &Value, matched: &Value, rules: &[Value]) -> Result<BpfProgram, SeccompError> {
    let doc = json!({ "f": { "mismatch_action": mismatch, "match_action": matched, "filter": rules } });
    let mut map =
        seccompiler::compile_from_json(doc.to_string().as_bytes(), arch).map_err(|e| SeccompError::Compile { detail: e.to_string() })?;
    map.remove("f").ok_or(SeccompError::NoFilter)
}

/// [`compile`], leaving out calls seccompiler's table does not know on `arch` (the profile
/// names calls of newer kernels and other architectures): such a call cannot be named in a
/// filter and falls to the default action, as with a libseccomp that does not know it either.
/// The compiler names one unknown call per attempt; a profile has a handful.
fn compile_known(arch: TargetArch, mismatch: &Value, matched: &Value, mut rules: Vec<Value>) -> Result<BpfProgram, SeccompError> {
    loop {
        match compile(arch, mismatch, matched, &rules) {
            Ok(p) => return Ok(p),
            Err(e) => {
                let Some(name) = e.unknown_syscall().map(str::to_string) else { return Err(e) };
                let before = rules.len();
                rules.retain(|r| r["syscall"] != name.as_str());
                if rules.len() == before {
                    return Err(e);
                }
            }
        }
    }
}

/// The BPF programs for `profile` (an OCI `linux.seccomp`), in the order to install them.
pub fn programs(profile: &Value) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = arch()?;
    let default = action(profile["defaultAction"].as_str().unwrap_or(""), profile["defaultErrnoRet"].as_u64())
        .ok_or_else(|| SeccompError::DefaultAction { action: profile["defaultAction"].clone() })?;
    // Rules grouped by their action, allow first.
    let mut groups: BTreeMap<(u8, String), (Value, Vec<Value>)> = BTreeMap::new();
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        let Some(act) = action(rule["action"].as_str().unwrap_or(""), rule["errnoRet"].as_u64()) else {
            return Err(SeccompError::Action { action: rule["action"].clone() });
        };
        let args: Vec<Value> = rule["args"].as_array().map(|a| a.iter().filter_map(condition).collect()).unwrap_or_default();
        if rule["args"].as_array().is_some_and(|a| a.len() != args.len()) {
            return Err(SeccompError::Condition { rule: rule.clone() });
        }
        let key = (u8::from(act != json!("allow")), act.to_string());
        let entry = groups.entry(key).or_insert_with(|| (act.clone(), Vec::new()));
        for name in rule["names"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let mut r = json!({ "syscall": name });
            if !args.is_empty() {
                r["args"] = json!(args);
            }
            entry.1.push(r);
        }
    }
    let mut out = Vec::new();
    for ((refusing, _), (act, rules)) in groups {
        let mismatch = if refusing == 0 { default.clone() } else { json!("allow") };
        if rules.is_empty() && refusing == 1 {
            continue;
        }
        out.push(compile_known(arch, &mismatch, &act, rules)?);
    }
    if out.is_empty() {
        out.push(compile(arch, &default, &json!("allow"), &[])?);
    }
    Ok(out)
}

/// The programs of Docker's default profile for Docker's default capabilities, each
/// instruction packed in a u64 (code, jt, jf, k) as the task's spec.json carries them: compiled
/// once per daemon (it takes tens of milliseconds in a debug build), not once per task start.
pub fn default_packed() -> Result<Vec<Vec<u64>>, SeccompError> {
    static ONCE: std::sync::OnceLock<Result<Vec<Vec<u64>>, SeccompError>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let caps: Vec<String> = super::config::DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        let progs = programs(&super::seccomp::for_task(&caps))?;
        Ok(progs.iter().map(|p| p.iter().map(pack).collect()).collect())
    })
    .clone()
}

fn pack(i: &seccompiler::sock_filter) -> u64 {
    (u64::from(i.code) << 48) | (u64::from(i.jt) << 40) | (u64::from(i.jf) << 32) | u64::from(i.k)
}

fn unpack(v: u64) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code: (v >> 48) as u16, jt: (v >> 40) as u8, jf: (v >> 32) as u8, k: v as u32 }
}

/// Installs packed programs on the calling thread, in order (no_new_privs must be set, or
/// CAP_SYS_ADMIN held). No program at all is refused: a task is never left without a filter.
pub fn install(packed: &[Vec<u64>]) -> Result<(), SeccompError> {
    if packed.is_empty() {
        return Err(SeccompError::NoneGiven);
    }
    for p in packed {
        let prog: BpfProgram = p.iter().copied().map(unpack).collect();
        seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Install { detail: e.to_string() })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_profile() -> Value {
        let caps: Vec<String> = super::super::config::DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        super::super::seccomp::for_task(&caps)
    }

    #[test]
    fn docker_s_default_profile_compiles_to_one_program_per_action() {
        let p = programs(&default_profile()).unwrap();
        // allow (default ENOSYS), EPERM (the calls Docker gates on CAP_SYS_ADMIN), ENOSYS (clone3).
        assert_eq!(p.len(), 3, "{} programs", p.len());
        assert!(p.iter().all(|prog| !prog.is_empty() && prog.len() < 4096), "within the kernel's BPF_MAXINSNS");
    }

    #[test]
    fn packing_round_trips_and_an_empty_set_is_refused() {
        let prog = &programs(&default_profile()).unwrap()[0];
        for i in prog {
            let back = unpack(pack(i));
            assert_eq!((back.code, back.jt, back.jf, back.k), (i.code, i.jt, i.jf, i.k));
        }
        assert!(install(&[]).unwrap_err().to_string().contains("no seccomp filter"));
    }

    #[test]
    fn an_unknown_action_is_refused_not_dropped() {
        let mut prof = default_profile();
        prof["syscalls"][0]["action"] = json!("SCMP_ACT_NOTIFY");
        assert!(programs(&prof).unwrap_err().to_string().contains("SCMP_ACT_NOTIFY"));
    }

    /// In a forked child: the filter installed, a gated call (unshare of a user namespace)
    /// fails with EPERM, clone3 with ENOSYS, and ordinary calls work.
    #[test]
    fn installed_in_a_child_it_refuses_what_docker_refuses() {
        let progs = default_packed().unwrap();
        // SAFETY: the child only makes syscalls and exits; it touches no lock the parent holds
        // (the programs were built before the fork).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    nix::sys::prctl::set_no_new_privs().ok()?;
                    install(&progs).ok()?;
                    let userns = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER);
                    if userns != Err(nix::Error::EPERM) {
                        return Some(2);
                    }
                    // SAFETY: clone3 with a null argument only returns an error here.
                    let r = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
                    if r != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
                        return Some(3);
                    }
                    nix::unistd::getpid();
                    std::fs::read_to_string("/proc/self/status").ok().filter(|s| s.contains("Seccomp:\t2")).map(|_| 0)
                })()
                .unwrap_or(1);
                // SAFETY: _exit ends the child without running the parent's atexit handlers.
                unsafe { libc::_exit(code) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "1: install failed, 2: unshare allowed, 3: clone3 not ENOSYS"
                );
            }
        }
    }
}
