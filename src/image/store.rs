//! The node's image store, under `<state-dir>/imagestore`:
//!
//! ```text
//! blobs/sha256/<hex>     manifests and image configs, by the digest of their bytes (verified)
//! layers/<hex>/          one unpacked layer per diff id: an overlayfs lowerdir shared by every
//!                        image and every task that uses it
//! layers/<hex>.size      the bytes its files take
//! images/<hex>.json      one record per image (by config digest): its tags, digests, layers
//! tmp/                   downloads and archives being read
//! lock                   flock(2) held while records change (CLI and daemon share the store)
//! ```
//!
//! A layer or blob gets its final name only once its digest checked out, by rename, so a crash
//! leaves nothing half-written under a real name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::ImageError;
use super::reference::{looks_like_id, ImageRef};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config's digest (`docker image ls`'s IMAGE ID).
    pub id: String,
    /// Full references (`docker.io/library/redis:alpine`).
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:...` of the manifests it was pulled by.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Diff ids, bottom layer first.
    pub layers: Vec<String>,
    /// Bytes of the layers' files.
    pub size: u64,
}

pub struct Store {
    root: PathBuf,
}

/// The store's lock; released on drop.
pub struct Locked(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub fn hex_of(digest: &str) -> Result<&str, ImageError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| ImageError::format(digest, "only sha256 digests are supported"))?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ImageError::format(digest, "not a sha256 digest"));
    }
    Ok(hex)
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Store {
    /// The store of the node whose state directory is `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, ImageError> {
        let root = state_dir.join("imagestore");
        for d in ["blobs/sha256", "layers", "images", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(ImageError::io(&p, "create"))?;
        }
        Ok(Store { root })
    }

    /// The node's store when it has one (reading commands do not make it).
    pub fn existing(state_dir: &Path) -> Option<Store> {
        let root = state_dir.join("imagestore");
        root.join("images").is_dir().then_some(Store { root })
    }

    /// A store whose directories exist already (from [`Store::root`]).
    pub fn at(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock(&self) -> Result<Locked, ImageError> {
        let path = self.root.join("lock");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(ImageError::io(&path, "open"))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map(Locked)
            .map_err(|(_, e)| ImageError::io(&path, "lock")(e.into()))
    }

    /// A fresh directory for one download or archive; the caller removes it.
    pub fn scratch(&self, what: &str) -> Result<PathBuf, ImageError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = self.root.join("tmp").join(format!("{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(ImageError::io(&p, "create"))?;
        Ok(p)
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    /// Stores `bytes` as blob `digest`, refusing them when their digest differs.
    pub fn put_blob(&self, what: &'static str, digest: &str, bytes: &[u8]) -> Result<PathBuf, ImageError> {
        let actual = sha256(bytes);
        if actual != digest {
            return Err(ImageError::Digest { what, digest: digest.to_string(), actual });
        }
        let path = self.blob_path(digest)?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(ImageError::io(&tmp, "write"))?;
        std::fs::rename(&tmp, &path).map_err(ImageError::io(&path, "rename"))?;
        Ok(path)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).map_err(ImageError::io(&path, "read"))?;
        let actual = sha256(&bytes);
        if actual != digest {
            return Err(ImageError::Digest { what: "stored blob", digest: digest.to_string(), actual });
        }
        Ok(bytes)
    }

    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers").join(hex_of(diff_id)?))
    }

    pub fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id).is_ok_and(|d| d.is_dir())
    }

    /// Unpacks `blob` as layer `diff_id` unless it is here already. Returns the layer's size.
    pub fn add_layer(&self, blob: &Path, diff_id: &str) -> Result<u64, ImageError> {
        let dir = self.layer_dir(diff_id)?;
        if dir.is_dir() {
            return Ok(self.layer_size(diff_id));
        }
        let size = super::layer::unpack(blob, diff_id, &dir)?;
        let _ = std::fs::write(dir.with_extension("size"), size.to_string());
        Ok(size)
    }

    pub fn layer_size(&self, diff_id: &str) -> u64 {
        self.layer_dir(diff_id)
            .ok()
            .and_then(|d| std::fs::read_to_string(d.with_extension("size")).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        let dir = self.root.join("images");
        let mut v: Vec<ImageRecord> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        v.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags).then(a.id.cmp(&b.id)));
        v
    }

    /// The image a reference, `name@digest` or (a prefix of) an id names.
    pub fn find(&self, what: &str) -> Option<ImageRecord> {
        let images = self.list();
        if let Some(hex) = looks_like_id(what) {
            let mut hits = images.iter().filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
            if let (Some(one), None) = (hits.next(), hits.next()) {
                return Some(one.clone());
            }
        }
        let r = ImageRef::parse(what).ok()?;
        let full = r.full();
        images.into_iter().find(|i| i.repo_tags.contains(&full) || i.repo_digests.contains(&full))
    }

    pub fn config(&self, image: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        let bytes = self.read_blob(&image.id)?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::format(&image.id, format!("image config: {e}")))
    }

    /// Records an image whose config blob and layers are in the store; `tags` move to it from
    /// whatever image had them (that one stays, untagged, as with Docker).
    pub fn commit(&self, id: &str, layers: Vec<String>, tags: &[String], digests: &[String]) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        for l in &layers {
            if !self.has_layer(l) {
                return Err(ImageError::format(id, format!("layer {l} is missing from the store")));
            }
        }
        let mut record = self.read_record(id).unwrap_or(ImageRecord {
            id: id.to_string(),
            repo_tags: vec![],
            repo_digests: vec![],
            layers: layers.clone(),
            size: 0,
        });
        record.layers = layers;
        record.size = record.layers.iter().map(|l| self.layer_size(l)).sum();
        for t in tags {
            if !record.repo_tags.contains(t) {
                record.repo_tags.push(t.clone());
            }
        }
        for d in digests {
            if !record.repo_digests.contains(d) {
                record.repo_digests.push(d.clone());
            }
        }
        for mut other in self.list().into_iter().filter(|o| o.id != id) {
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !tags.contains(t));
            if other.repo_tags.len() != before {
                self.write_record(&other)?;
            }
        }
        self.write_record(&record)?;
        Ok(record)
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("images").join(format!("{}.json", hex_of(id)?)))
    }

    fn read_record(&self, id: &str) -> Option<ImageRecord> {
        serde_json::from_slice(&std::fs::read(self.record_path(id).ok()?).ok()?).ok()
    }

    fn write_record(&self, r: &ImageRecord) -> Result<(), ImageError> {
        let path = self.record_path(&r.id)?;
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(r).map_err(|e| ImageError::format(&r.id, e))?;
        std::fs::write(&tmp, json).map_err(ImageError::io(&tmp, "write"))?;
        std::fs::rename(&tmp, &path).map_err(ImageError::io(&path, "rename"))
    }

    /// `docker rmi`: a tag is removed; the image goes with its last tag (or when named by id),
    /// and its layers go when no other image uses them. `used_by` names a task still using an
    /// image id, which makes it stay.
    pub fn remove(&self, what: &str, used_by: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, ImageError> {
        let _lock = self.lock()?;
        let mut image = self.find(what).ok_or_else(|| ImageError::NotFound(what.to_string()))?;
        let by_tag =
            looks_like_id(what).is_none() || !image.id.trim_start_matches("sha256:").starts_with(looks_like_id(what).unwrap_or(""));
        let mut said = Vec::new();
        if by_tag {
            let full = ImageRef::parse(what)?.full();
            image.repo_tags.retain(|t| *t != full);
            image.repo_digests.retain(|t| *t != full);
            if !image.repo_tags.is_empty() {
                self.write_record(&image)?;
                return Ok(vec![format!("Untagged: {what}")]);
            }
            said.push(format!("Untagged: {what}"));
        }
        if let Some(task) = used_by(&image.id) {
            return Err(ImageError::InUse { reference: what.to_string(), task });
        }
        let path = self.record_path(&image.id)?;
        std::fs::remove_file(&path).map_err(ImageError::io(&path, "remove"))?;
        let _ = std::fs::remove_file(self.blob_path(&image.id)?);
        said.push(format!("Deleted: {}", image.id));
        let kept: BTreeSet<String> = self.list().into_iter().flat_map(|i| i.layers).collect();
        for l in image.layers.iter().filter(|l| !kept.contains(*l)) {
            let dir = self.layer_dir(l)?;
            std::fs::remove_dir_all(&dir).map_err(ImageError::io(&dir, "remove layer"))?;
            let _ = std::fs::remove_file(dir.with_extension("size"));
            said.push(format!("Deleted: {l}"));
        }
        Ok(said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(store: &Store, name: &str) -> String {
        let id = sha256(name.as_bytes());
        let d = store.layer_dir(&id).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.with_extension("size"), "10").unwrap();
        id
    }

    fn image(store: &Store, config: &str, layers: Vec<String>, tag: &str) -> ImageRecord {
        let id = sha256(config.as_bytes());
        store.put_blob("config", &id, config.as_bytes()).unwrap();
        store.commit(&id, layers, &[ImageRef::parse(tag).unwrap().full()], &[]).unwrap()
    }

    #[test]
    fn blobs_are_verified_on_the_way_in_and_out() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let d = sha256(b"{}");
        let err = s.put_blob("config", &d, b"{ }").unwrap_err().to_string();
        assert!(err.starts_with(&format!("config {d}: content has digest")), "{err}");
        s.put_blob("config", &d, b"{}").unwrap();
        std::fs::write(s.blob_path(&d).unwrap(), "{\"x\":1}").unwrap();
        assert!(s.read_blob(&d).unwrap_err().to_string().contains("refusing it"));
    }

    #[test]
    fn images_share_layers_and_removal_keeps_what_others_use() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let (base, app, other) = (layer(&s, "base"), layer(&s, "app"), layer(&s, "other"));
        let a = image(&s, "{\"a\":1}", vec![base.clone(), app.clone()], "app:1");
        let b = image(&s, "{\"b\":1}", vec![base.clone(), other.clone()], "other");
        assert_eq!((a.size, b.size), (20, 20));
        assert_eq!(s.find("app:1").unwrap().id, a.id);
        assert_eq!(s.find("docker.io/library/other:latest").unwrap().id, b.id);
        assert_eq!(s.find(&a.id[7..19]).unwrap().id, a.id);
        assert!(s.find("app:2").is_none());

        let err = s.remove("app:1", |_| Some("t1".into())).unwrap_err().to_string();
        assert_eq!(err, "image app:1 is used by task t1 on this node: remove its service first");
        let said = s.remove("app:1", |_| None).unwrap();
        assert_eq!(said[0], "Untagged: app:1");
        assert!(said.contains(&format!("Deleted: {app}")), "{said:?}");
        assert!(!said.contains(&format!("Deleted: {base}")), "base is still used by other: {said:?}");
        assert!(s.has_layer(&base) && !s.has_layer(&app) && s.has_layer(&other));
        assert!(matches!(s.remove("app:1", |_| None), Err(ImageError::NotFound(_))));
    }

    #[test]
    fn a_tag_moves_to_the_newer_image() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let l = layer(&s, "l");
        let old = image(&s, "{\"v\":1}", vec![l.clone()], "app");
        let new = image(&s, "{\"v\":2}", vec![l.clone()], "app");
        assert_eq!(s.find("app").unwrap().id, new.id);
        let list = s.list();
        assert_eq!(list.len(), 2);
        assert!(list.iter().any(|i| i.id == old.id && i.repo_tags.is_empty()));
        // Removing the tag removes the image; the shared layer goes with the last user only.
        s.remove("app", |_| None).unwrap();
        assert!(s.has_layer(&l));
        s.remove(&old.id, |_| None).unwrap();
        assert!(!s.has_layer(&l));
    }
}
