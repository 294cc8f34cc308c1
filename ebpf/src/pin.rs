//! Pinning to a shoal-owned bpffs directory, so programs, links and maps
//! outlive the agent: after a restart the agent loads fresh programs, reuses
//! the pinned maps (services, backends, tracked flows) and swaps the new
//! programs into the pinned links atomically. Traffic never stops.
//!
//! Layout under the pin directory given in [`crate::LoadOptions::pin_dir`]:
//! `sock/<map>` and `sock/link_<hook>_<cgroup id>` for the socket LB,
//! `nat/<map>` and `nat/link_{ingress,reply}_<ifname>` for the NAT (bpffs
//! refuses names with a dot: a dot in an interface name becomes a colon,
//! which interface names cannot contain). On kernels without tcx links the
//! NAT's legacy filters are recorded as `nat/tcf_{ingress,reply}_<netns
//! cookie>_<ifname>` (the program pinned; see `tc_legacy.rs`).

use std::{
    fs, io,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::programs::links::FdLink;

use crate::{
    error::Error,
    sys::{self, LinkTarget},
};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn sys_err(call: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Sys { call, object: path.display().to_string(), source }
}

/// True when `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> Result<bool, Error> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| sys_err("statfs", path, io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory
    // of the size statfs(2) fills.
    let ret = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if ret != 0 {
        return Err(sys_err("statfs", path, io::Error::last_os_error()));
    }
    // SAFETY: statfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // f_type is i64 on x86_64 but narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let f_type = st.f_type as i64;
    Ok(f_type == BPF_FS_MAGIC)
}

/// Make `root` a bpffs mount point unless it is on one already (creating
/// the directory). Returns true when it mounted one.
pub fn ensure_bpffs(root: &Path) -> Result<bool, Error> {
    fs::create_dir_all(root).map_err(|e| sys_err("mkdir", root, e))?;
    if is_bpffs(root)? {
        return Ok(false);
    }
    let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|e| sys_err("mount", root, io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::mount(c"bpf".as_ptr(), c.as_ptr(), c"bpf".as_ptr(), 0, c"mode=0700".as_ptr().cast()) };
    if ret != 0 {
        return Err(sys_err("mount bpffs", root, io::Error::last_os_error()));
    }
    Ok(true)
}

/// A pin directory of one object (`sock` or `nat`).
#[derive(Clone, Debug)]
pub(crate) struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// Create `<root>/<object>`; `root` must be (or be created) on a bpffs.
    pub(crate) fn create(root: &Path, object: &str) -> Result<Self, Error> {
        fs::create_dir_all(root).map_err(|e| sys_err("mkdir", root, e))?;
        if !is_bpffs(root)? {
            return Err(sys_err(
                "pin (not a bpffs; mount one with shoal_ebpf::ensure_bpffs)",
                root,
                io::Error::from(io::ErrorKind::Unsupported),
            ));
        }
        let dir = root.join(object);
        fs::create_dir_all(&dir).map_err(|e| sys_err("mkdir", &dir, e))?;
        Ok(Self { dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(crate) fn link(&self, hook: &str, target: &str) -> PathBuf {
        self.dir.join(format!("link_{hook}_{}", target.replace('.', ":")))
    }

    /// The names of the pins in the directory.
    pub(crate) fn names(&self) -> Vec<String> {
        fs::read_dir(&self.dir)
            .map(|entries| entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default()
    }

    /// Detach every pinned link, remove every pin and the directory; keeps
    /// going on errors and reports them all.
    pub(crate) fn remove(&self) -> Vec<Error> {
        let mut errors = Vec::new();
        match fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if entry.file_name().as_encoded_bytes().starts_with(b"link_") {
                        let detached = sys::obj_get(&path).and_then(|fd| sys::link_detach(fd.as_fd()));
                        if let Err(e) = detached {
                            errors.push(sys_err("BPF_LINK_DETACH", &path, e));
                        }
                    }
                    if let Err(e) = fs::remove_file(&path) {
                        errors.push(sys_err("unlink pin", &path, e));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return errors,
            Err(e) => errors.push(sys_err("readdir", &self.dir, e)),
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            errors.push(sys_err("rmdir", &self.dir, e));
        }
        errors
    }
}

/// Outcome of [`adopt_link`].
pub(crate) enum Adopted {
    /// The pinned link now runs the new program.
    Swapped,
    /// There was no usable pinned link (a stale one was removed).
    Absent,
}

/// If a link is pinned at `path` and still attached to `expected`, make it
/// run `prog` (atomic replacement, no packet sees a gap). A pinned link whose
/// cgroup or device is gone is unpinned.
pub(crate) fn adopt_link(path: &Path, expected: LinkTarget, prog: BorrowedFd<'_>) -> Result<Adopted, Error> {
    let link = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Adopted::Absent),
        Err(e) => return Err(sys_err("BPF_OBJ_GET", path, e)),
    };
    let target = sys::link_target(link.as_fd()).map_err(|e| sys_err("BPF_OBJ_GET_INFO_BY_FD", path, e))?;
    if target != expected {
        tracing::info!(pin = %path.display(), ?target, ?expected, "removing stale pinned link");
        fs::remove_file(path).map_err(|e| sys_err("unlink stale pin", path, e))?;
        return Ok(Adopted::Absent);
    }
    sys::link_update(link.as_fd(), prog).map_err(|e| sys_err("BPF_LINK_UPDATE", path, e))?;
    tracing::info!(pin = %path.display(), "adopted pinned link");
    Ok(Adopted::Swapped)
}

/// Pin a fresh link at `path` (the link then outlives this process).
pub(crate) fn pin_link(link: FdLink, path: &Path) -> Result<(), Error> {
    link.pin(path).map(drop).map_err(|e| sys_err("pin link", path, io::Error::other(e.to_string())))
}
