//! Secrets in tasks that run the host's binaries (`host`, `shoal/whoami`): the same promise as
//! in image tasks (files on a tmpfs, only in that task, never on the node's disk), kept inside
//! the task's own mount namespace. Such a task sees the host's filesystem, where shoal makes
//! nothing, so its files can only live under /run: the task gets a /run of its own (a tmpfs
//! holding a bind of every entry of the host's /run, so it sees what it saw before), the files
//! are written to a tmpfs in the task directory, and each is bound read-only at its target.
//! Targets outside /run (configs at /<name>, a secret given an absolute target elsewhere) are
//! refused before the task starts ([`outside_run`]).

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{mount, MsFlags};

use super::spec::CarriedFile;

const RUN: &str = "/run";

/// The first file whose target a host task cannot have: one outside /run.
pub fn outside_run(files: &[CarriedFile]) -> Option<&str> {
    files.iter().map(|f| f.target.as_str()).find(|t| !under_run(t))
}

fn under_run(target: &str) -> bool {
    let p = Path::new(target);
    p.is_absolute() && p.starts_with(RUN) && p != Path::new(RUN) && !p.components().any(|c| c == std::path::Component::ParentDir)
}

/// `secrets` for `/run/secrets/db/pass`.
fn first_under_run(target: &str) -> Option<String> {
    Path::new(target).strip_prefix(RUN).ok()?.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned())
}

/// An entry of the host's /run, as the task's own /run shows it again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir(String),
    /// A file, socket, FIFO or device: bound onto an empty file.
    File(String),
    Symlink(String, PathBuf),
}

/// In the task's mount namespace (the caller's, which must be private): /run of its own, the
/// files on a tmpfs at `dir/carry`, each bound read-only at its target.
pub fn carry(dir: &Path, files: &[CarriedFile]) -> anyhow::Result<()> {
    if let Some(t) = outside_run(files) {
        anyhow::bail!("{t}: a task of the host's binaries has files under /run only");
    }
    // The task's own /run/secrets (or wherever under /run the files go) replaces the host's:
    // nothing is ever written into a directory of the host.
    let own: Vec<String> = files.iter().filter_map(|f| first_under_run(&f.target)).collect();
    own_run(&own)?;
    let store = dir.join(super::oci::carry::DIR);
    super::oci::carry::write(&store, files)?;
    for (i, f) in files.iter().enumerate() {
        let target = Path::new(&f.target);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(target, b"").with_context(|| format!("make the mount point {}", f.target))?;
        let src = store.join(i.to_string());
        mount(Some(&src), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).with_context(|| format!("bind {}", f.target))?;
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(None::<&str>, target, None::<&str>, ro, None::<&str>).with_context(|| format!("make {} read-only", f.target))?;
    }
    Ok(())
}

/// A tmpfs over /run that binds back every entry of the host's /run: the task may make
/// directories in it (/run/secrets) without touching the host's.
fn own_run(skip: &[String]) -> anyhow::Result<()> {
    let mut entries = read_run()?;
    entries.retain(|e| {
        let (Entry::Dir(n) | Entry::File(n) | Entry::Symlink(n, _)) = e;
        !skip.contains(n)
    });
    // The host's /run stays reachable through this descriptor once the tmpfs covers the path.
    let old = std::fs::File::open(RUN).context("open /run")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("tmpfs"), RUN, Some("tmpfs"), flags, Some("mode=755,size=1m")).context("mount a tmpfs of the task's own on /run")?;
    let fd = old.as_raw_fd();
    for e in &entries {
        let (name, is_dir) = match e {
            Entry::Symlink(name, to) => {
                std::os::unix::fs::symlink(to, Path::new(RUN).join(name)).with_context(|| format!("link /run/{name}"))?;
                continue;
            }
            Entry::Dir(name) => (name, true),
            Entry::File(name) => (name, false),
        };
        let target = Path::new(RUN).join(name);
        if is_dir { std::fs::create_dir(&target) } else { std::fs::write(&target, b"") }
            .with_context(|| format!("make the mount point {}", target.display()))?;
        let src = format!("/proc/self/fd/{fd}/{name}");
        mount(Some(src.as_str()), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .with_context(|| format!("bind the host's {} back", target.display()))?;
    }
    Ok(())
}

fn read_run() -> anyhow::Result<Vec<Entry>> {
    let mut out = vec![];
    for e in std::fs::read_dir(RUN).context("read /run")? {
        let e = e.context("read /run")?;
        let name = e.file_name().to_string_lossy().into_owned();
        let t = e.file_type().with_context(|| format!("/run/{name}"))?;
        out.push(if t.is_symlink() {
            Entry::Symlink(
                name,
                std::fs::read_link(e.path()).with_context(|| format!("read the link /run/{}", e.file_name().to_string_lossy()))?,
            )
        } else if t.is_dir() {
            Entry::Dir(name)
        } else if t.is_file() || t.is_socket() || t.is_fifo() || t.is_char_device() || t.is_block_device() {
            Entry::File(name)
        } else {
            continue;
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(target: &str) -> CarriedFile {
        CarriedFile { target: target.into(), uid: 0, gid: 0, mode: 0o444, data: vec![] }
    }

    #[test]
    fn host_tasks_have_files_under_run_only() {
        assert_eq!(outside_run(&[file("/run/secrets/pw"), file("/run/secrets/db/pass")]), None);
        assert_eq!(outside_run(&[file("/run/secrets/pw"), file("/app.conf")]), Some("/app.conf"));
        assert_eq!(outside_run(&[file("/run/../etc/passwd")]), Some("/run/../etc/passwd"));
        assert_eq!(outside_run(&[file("/run")]), Some("/run"));
        assert_eq!(outside_run(&[file("/runner/x")]), Some("/runner/x"));
    }

    #[test]
    fn the_task_s_own_directories_replace_the_host_s() {
        assert_eq!(first_under_run("/run/secrets/db/pass").as_deref(), Some("secrets"));
        assert_eq!(first_under_run("/run/app.key").as_deref(), Some("app.key"));
        assert_eq!(first_under_run("/etc/x"), None);
    }

    #[test]
    fn the_host_s_run_is_read_whole() {
        let entries = read_run().unwrap();
        assert!(entries.iter().any(|e| matches!(e, Entry::Dir(_))), "{entries:?}");
    }
}
