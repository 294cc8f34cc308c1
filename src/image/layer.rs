//! Unpacking one layer (a tar, plain, gzip or zstd) into a directory that overlayfs can stack as
//! a lowerdir: the image's whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlayfs's own
//! (a 0:0 character device, the `trusted.overlay.opaque` xattr), as Docker's and containerd's
//! overlay drivers do. While it unpacks, the uncompressed stream is hashed: it must be the
//! layer's diff id from the image config, or the layer is refused.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::ImageError;

/// What the first bytes say a blob is compressed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// A reader that hashes what passes through it.
pub struct Hashing<R> {
    inner: R,
    hash: Sha256,
    pub bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing { inner, hash: Sha256::new(), bytes: 0 }
    }

    /// `sha256:<hex>` of everything read (the rest is read first).
    pub fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hash.finalize())))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Opens `file` uncompressed, whatever it was compressed with.
pub fn open_uncompressed(file: &Path) -> Result<Box<dyn Read>, ImageError> {
    let f = std::fs::File::open(file).map_err(ImageError::io(file, "open"))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let head = r.fill_buf().map_err(ImageError::io(file, "read"))?.to_vec();
    Ok(match sniff(&head) {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(r).map_err(|e| ImageError::format(file.display(), format!("zstd: {e}")))?)
        }
    })
}

/// Unpacks the layer in `blob` into `dest` (which must not exist) and checks its diff id.
/// Returns the bytes its files take. A failure leaves nothing at `dest`.
pub fn unpack(blob: &Path, diff_id: &str, dest: &Path) -> Result<u64, ImageError> {
    let staging = dest.with_extension(format!("unpacking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let r = unpack_into(blob, diff_id, &staging);
    match r {
        Ok(size) => {
            if let Err(e) = std::fs::rename(&staging, dest) {
                let _ = std::fs::remove_dir_all(&staging);
                // Another pull unpacked the same layer meanwhile: theirs is as good as ours.
                if !dest.is_dir() {
                    return Err(ImageError::io(dest, "move the unpacked layer into place")(e));
                }
            }
            Ok(size)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn unpack_into(blob: &Path, diff_id: &str, dir: &Path) -> Result<u64, ImageError> {
    std::fs::create_dir_all(dir).map_err(ImageError::io(dir, "create"))?;
    let mut hashing = Hashing::new(open_uncompressed(blob)?);
    let mut size = 0u64;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_permissions(true);
        archive.set_unpack_xattrs(true);
        archive.set_preserve_mtime(true);
        let bad = |e: std::io::Error| ImageError::format(blob.display(), format!("layer tar: {e}"));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = entry.path().map_err(bad)?.into_owned();
            let Some(rel) = relative(&path) else {
                return Err(ImageError::format(blob.display(), format!("entry {} leaves the layer", path.display())));
            };
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let parent = dir.join(rel.parent().unwrap_or(Path::new("")));
                std::fs::create_dir_all(&parent).map_err(ImageError::io(&parent, "create"))?;
                whiteout(&parent, hidden)?;
                continue;
            }
            size += entry.header().size().unwrap_or(0);
            entry
                .unpack_in(dir)
                .map_err(|e| ImageError::format(blob.display(), format!("unpack {}: {}", path.display(), with_cause(&e))))?;
        }
    }
    let actual = hashing.finish().map_err(ImageError::io(blob, "read"))?;
    if actual != diff_id {
        return Err(ImageError::Digest { what: "layer (uncompressed)", digest: diff_id.to_string(), actual });
    }
    Ok(size)
}

/// tar's errors keep the reason (ENOSPC, EPERM, ...) as their source.
fn with_cause(e: &std::io::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The entry's path inside the layer, or None when it would climb out.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// `.wh..wh..opq` makes `parent` opaque; `.wh.NAME` hides NAME of the layers below.
fn whiteout(parent: &Path, hidden: &str) -> Result<(), ImageError> {
    if hidden == ".wh..opq" {
        return xattr::set(parent, "trusted.overlay.opaque", b"y").map_err(ImageError::io(parent, "mark opaque (trusted.overlay.opaque)"));
    }
    let target = parent.join(hidden);
    let _ = std::fs::remove_file(&target);
    nix::sys::stat::mknod(&target, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .map_err(|e| ImageError::io(&target, "make an overlay whiteout (mknod 0:0)")(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(sniff(b"bin/"), Compression::None);
        assert_eq!(sniff(&[]), Compression::None);
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        assert_eq!(relative(Path::new("./bin/sh")), Some(PathBuf::from("bin/sh")));
        assert_eq!(relative(Path::new("/etc/passwd")), Some(PathBuf::from("etc/passwd")));
        assert_eq!(relative(Path::new("../../etc/shadow")), None);
        assert_eq!(relative(Path::new("a/../../b")), None);
        assert_eq!(relative(Path::new("./")), None);
    }

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn a_gzip_layer_unpacks_and_its_diff_id_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = layer_tar(&[("etc/motd", b"hello\n"), ("bin/app", b"#!/bin/sh\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let blob = tmp.path().join("blob");
        std::fs::write(&blob, gz.finish().unwrap()).unwrap();
        let dest = tmp.path().join("layer");
        let size = unpack(&blob, &sha(&tar), &dest).unwrap();
        assert_eq!(size, 6 + 10);
        assert_eq!(std::fs::read_to_string(dest.join("etc/motd")).unwrap(), "hello\n");
        // The same bytes under another diff id: refused, nothing left behind.
        let other = tmp.path().join("other");
        let err = unpack(&blob, &sha(b"something else"), &other).unwrap_err().to_string();
        assert!(err.contains("refusing it"), "{err}");
        assert!(!other.exists());
    }
}
