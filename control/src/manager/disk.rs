//! Disk admission for the Raft log. A manager whose disk fills up would fail halfway through an
//! append, and a storage error stops its Raft core for good. So it looks first: the leader
//! before it proposes an entry, a follower before it takes entries from the leader. Below the
//! reserve, the write is refused with an error naming the disk, nothing is written, and writes
//! are taken again as soon as space returns (no restart).

use std::path::{Path, PathBuf};

/// Free space a manager keeps on the disk of its Raft log, unless configured otherwise.
pub const DEFAULT_RESERVE: u64 = 32 << 20;

#[derive(thiserror::Error, Debug, Clone)]
pub enum DiskError {
    #[error(
        "the disk holding {dir} has {} free, below the {} this manager keeps in reserve for its Raft log: the write was refused and nothing changed; free space on that disk",
        size(*free),
        size(*reserve)
    )]
    Full { dir: String, free: u64, reserve: u64 },
}

/// The check, for one directory and reserve.
#[derive(Clone, Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
}

impl DiskGuard {
    pub fn new(dir: &Path, reserve: u64) -> DiskGuard {
        DiskGuard { dir: dir.to_path_buf(), reserve }
    }

    /// Whether an entry may be written now. A disk whose free space cannot be read is let
    /// through (with a warning): the append itself will say what is wrong.
    pub fn check(&self) -> Result<(), DiskError> {
        match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(st) => admit(&self.dir, st.blocks_available().saturating_mul(st.fragment_size()), self.reserve),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "reading the free space of the Raft log's disk: {e}");
                Ok(())
            }
        }
    }
}

/// Pure: refuse when `free` is below `reserve`.
pub fn admit(dir: &Path, free: u64, reserve: u64) -> Result<(), DiskError> {
    if free < reserve {
        return Err(DiskError::Full { dir: dir.display().to_string(), free, reserve });
    }
    Ok(())
}

fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_reserve_is_refused_naming_the_disk_and_sizes() {
        let dir = Path::new("/var/lib/shoal/raft");
        assert!(admit(dir, 64 << 20, 32 << 20).is_ok());
        assert!(admit(dir, 32 << 20, 32 << 20).is_ok(), "exactly the reserve is enough");
        let e = admit(dir, 3 << 19, 32 << 20).unwrap_err().to_string();
        assert!(e.contains("/var/lib/shoal/raft") && e.contains("1.5 MiB free") && e.contains("32.0 MiB"), "{e}");
        assert!(e.contains("nothing changed") && e.contains("free space on that disk"), "{e}");
        let e = admit(dir, 0, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("0 KiB free"), "{e}");
    }

    #[test]
    fn a_real_directory_with_room_is_admitted_and_an_impossible_reserve_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskGuard::new(dir.path(), 0).check().is_ok());
        assert!(matches!(DiskGuard::new(dir.path(), u64::MAX).check(), Err(DiskError::Full { .. })));
    }
}
