//! `shoal image import NAME rootfs.tar`: flat root filesystems (no image config) kept from before
//! the image store; listed and removed by `shoal image ls|rm` with the store's images.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::agent::executor::spec::IMAGE_DIR;

/// Where image `name` lives; the executor resolves names the same way.
pub fn dir(name: &str) -> PathBuf {
    Path::new(IMAGE_DIR).join(name.replace('/', "_"))
}

pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !matches!(name, "host" | "whoami" | "shoal/whoami")
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/'));
    if !ok {
        bail!("image name '{name}': use lowercase letters, digits and . _ - / (not host or shoal/whoami)");
    }
    Ok(())
}

/// Unpacks a root filesystem tarball as image NAME (replacing one of that name at once).
pub fn import(name: &str, tarball: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    if !tarball.is_file() {
        bail!("tarball {}: no such file", tarball.display());
    }
    let dest = dir(name);
    let staging = dest.with_extension("importing");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("create {}", staging.display()))?;
    let out = Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&staging).output().context("run tar")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!("unpack {}: {}", tarball.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    // Swap in whole: a failed import leaves the old image as it was.
    let old = dest.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dest.exists() {
        std::fs::rename(&dest, &old)?;
    }
    std::fs::rename(&staging, &dest)?;
    let _ = std::fs::remove_dir_all(&old);
    println!("imported {name} ({})", dest.display());
    Ok(())
}

/// Names of the imported root filesystems.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(IMAGE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.ends_with(".importing") && !n.ends_with(".old"))
        .collect();
    names.sort();
    names.into_iter().map(|n| n.replace('_', "/")).collect()
}

/// Removes an imported root filesystem.
pub fn remove(name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    let d = dir(name);
    if !d.is_dir() {
        bail!("image '{name}' is not here (shoal image ls)");
    }
    std::fs::remove_dir_all(&d).with_context(|| format!("remove {}", d.display()))?;
    println!("removed {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("busybox").is_ok());
        assert!(check_name("library/busybox").is_ok());
        assert!(check_name("host").is_err());
        assert!(check_name("Busybox").is_err());
        assert!(check_name("../etc").is_err());
        assert!(check_name("").is_err());
        assert_eq!(dir("library/busybox"), Path::new(IMAGE_DIR).join("library_busybox"));
    }
}
