//! Named network namespaces (`/run/netns/NAME`, compatible with `ip netns`) and running work
//! inside one.
//!
//! Entering a namespace happens only on a thread made for it, which exits afterwards: the
//! caller's threads never change namespace, so a forgotten "setns back" cannot leak one.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace name '{0}' is invalid: use 1-64 characters of [A-Za-z0-9_.-]")]
    BadName(String),
    #[error("network namespace {name}: {what}: {source}")]
    Sys { name: String, what: &'static str, source: nix::Error },
    #[error("network namespace {name}: {what}: {source}")]
    Io { name: String, what: &'static str, source: std::io::Error },
    #[error("network namespace {0} does not exist")]
    Missing(String),
    #[error("the thread working in network namespace {0} panicked")]
    ThreadPanicked(String),
}

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetnsError::BadName(name.to_string()))
    }
}

/// True when `/run/netns/NAME` is a mounted namespace (not a leftover empty file).
pub fn exists(name: &str) -> bool {
    open(name).is_ok()
}

/// Opens a named namespace; the fd keeps it alive and can be handed to netlink.
pub fn open(name: &str) -> Result<File, NetnsError> {
    validate_name(name)?;
    let p = path(name);
    let file = File::open(&p).map_err(|_| NetnsError::Missing(name.to_string()))?;
    // An unmounted leftover file is a plain empty file on the parent filesystem, not nsfs.
    let st = nix::sys::statfs::fstatfs(&file).map_err(|e| NetnsError::Sys { name: name.into(), what: "statfs", source: e })?;
    if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(NetnsError::Missing(name.to_string()));
    }
    Ok(file)
}

/// Creates `/run/netns/NAME` holding a new network namespace. Idempotent.
pub fn create(name: &str) -> Result<(), NetnsError> {
    validate_name(name)?;
    if exists(name) {
        return Ok(());
    }
    prepare_dir(name)?;
    let p = path(name);
    File::create(&p).map_err(|e| NetnsError::Io { name: name.into(), what: "create mount point", source: e })?;
    let owned = name.to_string();
    let result =
        std::thread::spawn(move || -> Result<(), NetnsError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Sys { name: owned.clone(), what: "unshare", source: e })?;
            mount(Some("/proc/thread-self/ns/net"), &path(&owned), None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| NetnsError::Sys { name: owned.clone(), what: "bind mount", source: e })
        })
        .join()
        .map_err(|_| NetnsError::ThreadPanicked(name.to_string()))?;
    if result.is_err() {
        let _ = std::fs::remove_file(&p);
    }
    result?;
    // A new namespace starts with loopback down; every user of ours wants it up.
    run_in(name, || -> Result<(), crate::netlink::NetlinkError> { crate::netlink::Netlink::open()?.set_up("lo") })?
        .map_err(|e| NetnsError::Io { name: name.into(), what: "set lo up", source: std::io::Error::other(e.to_string()) })
}

/// Removes a named namespace. Missing is fine (teardown is idempotent).
pub fn delete(name: &str) -> Result<(), NetnsError> {
    validate_name(name)?;
    let p = path(name);
    match umount2(&p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(NetnsError::Sys { name: name.into(), what: "unmount", source: e }),
    }
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetnsError::Io { name: name.into(), what: "remove", source: e }),
    }
}

/// Names of all namespaces under /run/netns.
pub fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else { return Vec::new() };
    let mut names: Vec<String> = dir.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    names
}

/// Runs `f` on a fresh thread inside namespace `name` and returns its result.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
    let file = open(name)?;
    run_in_fd(name, file, f)
}

pub fn run_in_fd<T: Send + 'static>(name: &str, file: File, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
    let owned = name.to_string();
    std::thread::spawn(move || -> Result<T, NetnsError> {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Sys { name: owned, what: "setns", source: e })?;
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::ThreadPanicked(name.to_string()))?
}

/// Moves the calling thread into a namespace for good. For the binary's `--netns` flag, called
/// before any other thread exists.
pub fn enter_for_process(name: &str) -> Result<(), NetnsError> {
    let file = open(name)?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Sys { name: name.into(), what: "setns", source: e })
}

/// `ip netns` makes /run/netns a shared mount so that namespaces made by one mount namespace
/// are seen by others; do the same so both tools interoperate.
fn prepare_dir(name: &str) -> Result<(), NetnsError> {
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| NetnsError::Io { name: name.into(), what: "create /run/netns", source: e })?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>).is_err() {
        mount(Some(NETNS_DIR), NETNS_DIR, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(|e| NetnsError::Sys {
            name: name.into(),
            what: "bind /run/netns",
            source: e,
        })?;
        mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>).map_err(|e| NetnsError::Sys {
            name: name.into(),
            what: "share /run/netns",
            source: e,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("shoal-lab-smgr").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
