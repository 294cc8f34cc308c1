//! `shoal image load -i FILE`: the `docker save` format (manifest.json, old and new layouts) and
//! OCI image layouts (oci-layout, index.json, blobs/), as a tar that may be gzip or zstd
//! compressed. Every blob is checked against its digest and every layer against its diff id.

use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use super::error::ImageError;
use super::layer::{open_uncompressed, Hashing};
use super::reference::ImageRef;
use super::store::{hex_of, ImageRecord, Store};

/// One entry of `docker save`'s manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Loads every image in the archive; returns what was loaded.
pub fn load(store: &Store, file: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let dir = store.scratch("load")?;
    let r = load_from(store, file, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn load_from(store: &Store, file: &Path, dir: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let mut archive = tar::Archive::new(open_uncompressed(file)?);
    archive.unpack(dir).map_err(|e| ImageError::format(file.display(), format!("not a tar archive of an image: {e}")))?;
    if dir.join("manifest.json").is_file() {
        load_docker(store, dir)
    } else if dir.join("index.json").is_file() {
        load_oci(store, dir)
    } else {
        Err(ImageError::format(file.display(), "neither a `docker save` archive (manifest.json) nor an OCI image layout (index.json)"))
    }
}

fn read(dir: &Path, rel: &str) -> Result<(PathBuf, Vec<u8>), ImageError> {
    let path = inside(dir, rel)?;
    let bytes = std::fs::read(&path).map_err(ImageError::io(&path, "read"))?;
    Ok((path, bytes))
}

/// `rel` under `dir`, refusing names that climb out of it, by `..` or through a symlink the
/// archive holds.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    if Path::new(rel).components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
        return Err(ImageError::format(rel, "path leaves the archive"));
    }
    let path = dir.join(rel);
    let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) else {
        return Err(ImageError::format(rel, "not in the archive"));
    };
    if !real.starts_with(&root) {
        return Err(ImageError::format(rel, "path leaves the archive"));
    }
    Ok(real)
}

fn parse_config(name: &str, bytes: &[u8]) -> Result<ImageConfiguration, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::format(name, format!("image config: {e}")))
}

fn load_docker(store: &Store, dir: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let (_, bytes) = read(dir, "manifest.json")?;
    let saved: Vec<SavedImage> = serde_json::from_slice(&bytes).map_err(|e| ImageError::format("manifest.json", e))?;
    let mut out = Vec::new();
    for image in saved {
        let (_, config_bytes) = read(dir, &image.config)?;
        let id = super::store::sha256(&config_bytes);
        // Old layouts name the config <hex>.json, new ones blobs/sha256/<hex>: either way its
        // name, when it is a digest, must be the content's.
        let stem = Path::new(&image.config).file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem.len() == 64 && stem.chars().all(|c| c.is_ascii_hexdigit()) && id != format!("sha256:{stem}") {
            return Err(ImageError::Digest { what: "image config", digest: format!("sha256:{stem}"), actual: id });
        }
        let config = parse_config(&image.config, &config_bytes)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != image.layers.len() {
            return Err(ImageError::format(
                &image.config,
                format!("{} layers in manifest.json, {} diff ids in the config", image.layers.len(), diff_ids.len()),
            ));
        }
        store.put_blob("image config", &id, &config_bytes)?;
        for (layer, diff_id) in image.layers.iter().zip(&diff_ids) {
            store.add_layer(&inside(dir, layer)?, diff_id)?;
        }
        let tags: Vec<String> =
            image.repo_tags.unwrap_or_default().iter().map(|t| ImageRef::parse(t).map(|r| r.full())).collect::<Result<_, _>>()?;
        out.push(store.commit(&id, diff_ids, &tags, &[])?);
    }
    Ok(out)
}

fn blob(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    inside(dir, &format!("blobs/sha256/{}", hex_of(digest)?))
}

/// A blob of the layout, checked against its digest.
fn verified(dir: &Path, what: &'static str, digest: &str) -> Result<PathBuf, ImageError> {
    let path = blob(dir, digest)?;
    let f = std::fs::File::open(&path).map_err(ImageError::io(&path, "open"))?;
    let actual = Hashing::new(f).finish().map_err(ImageError::io(&path, "read"))?;
    if actual != digest {
        return Err(ImageError::Digest { what, digest: digest.to_string(), actual });
    }
    Ok(path)
}

fn load_oci(store: &Store, dir: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let (_, bytes) = read(dir, "index.json")?;
    let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| ImageError::format("index.json", e))?;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let annotations = desc.annotations().clone().unwrap_or_default();
        let name = annotations.get("io.containerd.image.name").or_else(|| annotations.get("org.opencontainers.image.ref.name"));
        // A bare ref.name is only a tag ("latest"): without a repository it names nothing.
        let tag = match name {
            Some(n) if n.contains('/') || n.contains(':') || !n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) => {
                Some(ImageRef::parse(n)?.full())
            }
            _ => None,
        };
        let manifest_digest = desc.digest().to_string();
        let manifest_path = match desc.media_type() {
            MediaType::ImageIndex => pick_platform(dir, &manifest_digest)?,
            _ => verified(dir, "manifest", &manifest_digest)?,
        };
        let manifest: ImageManifest =
            serde_json::from_slice(&std::fs::read(&manifest_path).map_err(ImageError::io(&manifest_path, "read"))?)
                .map_err(|e| ImageError::format(&manifest_digest, format!("manifest: {e}")))?;
        let id = manifest.config().digest().to_string();
        let config_bytes = std::fs::read(verified(dir, "image config", &id)?).map_err(ImageError::io(blob(dir, &id)?, "read"))?;
        let config = parse_config(&id, &config_bytes)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::format(&manifest_digest, "the manifest's layers and the config's diff ids differ in number"));
        }
        store.put_blob("image config", &id, &config_bytes)?;
        for (layer, diff_id) in manifest.layers().iter().zip(&diff_ids) {
            if !store.has_layer(diff_id) {
                store.add_layer(&verified(dir, "layer", layer.digest().as_ref())?, diff_id)?;
            }
        }
        out.push(store.commit(&id, diff_ids, tag.as_slice(), &[])?);
    }
    Ok(out)
}

/// The linux/amd64 (this host's) manifest of a nested index.
fn pick_platform(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let path = verified(dir, "image index", digest)?;
    let index: ImageIndex = serde_json::from_slice(&std::fs::read(&path).map_err(ImageError::io(&path, "read"))?)
        .map_err(|e| ImageError::format(digest, format!("image index: {e}")))?;
    let ours = index.manifests().iter().find(|m| {
        m.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux"
                && p.architecture().to_string() == std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")
        })
    });
    let m = ours.ok_or_else(|| ImageError::format(digest, format!("no manifest for linux/{} in the index", std::env::consts::ARCH)))?;
    verified(dir, "manifest", m.digest().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::sha256;

    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(nix::unistd::geteuid().as_raw().into());
            h.set_gid(nix::unistd::getegid().as_raw().into());
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A `docker save` archive of one image with one layer; `tamper` changes the layer after its
    /// diff id was taken.
    fn saved(tamper: bool) -> (Vec<u8>, String) {
        let layer = tar_of(&[("etc/motd", b"from the layer\n".to_vec())]);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Cmd": ["/bin/sh"], "WorkingDir": "/srv" },
            "rootfs": { "type": "layers", "diff_ids": [sha256(&layer)] },
        }))
        .unwrap();
        let id = sha256(&config);
        let layer = if tamper { tar_of(&[("etc/motd", b"from somebody else\n".to_vec())]) } else { layer };
        let manifest = serde_json::to_vec(&serde_json::json!([
            { "Config": format!("{}.json", &id[7..]), "RepoTags": ["app:1"], "Layers": ["l1/layer.tar"] }
        ]))
        .unwrap();
        let archive = tar_of(&[(&format!("{}.json", &id[7..]), config), ("l1/layer.tar", layer), ("manifest.json", manifest)]);
        (archive, id)
    }

    #[test]
    fn a_docker_save_archive_loads_with_its_tags_and_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (archive, id) = saved(false);
        let file = tmp.path().join("app.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &archive).unwrap();
        std::fs::write(&file, gz.finish().unwrap()).unwrap();
        let loaded = load(&store, &file).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, id);
        assert_eq!(loaded[0].repo_tags, vec!["docker.io/library/app:1".to_string()]);
        let layer = store.layer_dir(&loaded[0].layers[0]).unwrap();
        assert_eq!(std::fs::read_to_string(layer.join("etc/motd")).unwrap(), "from the layer\n");
        let config = store.config(&store.find("app:1").unwrap()).unwrap();
        assert_eq!(config.config().as_ref().unwrap().working_dir().as_deref(), Some("/srv"));
        assert!(std::fs::read_dir(store.root().join("tmp")).unwrap().next().is_none(), "scratch space is cleaned up");
    }

    #[test]
    fn a_tampered_layer_is_refused_and_nothing_is_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (archive, _) = saved(true);
        let file = tmp.path().join("app.tar");
        std::fs::write(&file, archive).unwrap();
        let err = load(&store, &file).unwrap_err().to_string();
        assert!(err.contains("refusing it"), "{err}");
        assert!(store.list().is_empty());
        assert!(std::fs::read_dir(store.root().join("layers")).unwrap().next().is_none());
    }

    #[test]
    fn other_files_are_not_images() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let file = tmp.path().join("x.tar");
        std::fs::write(&file, tar_of(&[("hello.txt", b"hi".to_vec())])).unwrap();
        let err = load(&store, &file).unwrap_err().to_string();
        assert!(err.contains("neither a `docker save` archive"), "{err}");
        std::fs::write(&file, b"not a tar at all").unwrap();
        assert!(load(&store, &file).is_err());
    }
}
