//! `shoal image pull REF` and the agent's pull before a task starts: the OCI distribution
//! protocol through `oci-client` (HTTPS with the system's CAs; anonymous, basic and bearer-token
//! auth; plain HTTP only for the registries in the daemon's `insecure-registries`). Layers the
//! store has already are not downloaded; every blob is verified by digest, every layer by diff id.

use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tokio::io::AsyncWriteExt;

use super::error::ImageError;
use super::reference::ImageRef;
use super::store::{ImageRecord, Store};

/// What a pull did, for the CLI and benchmarks.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: ImageRecord,
    pub digest: String,
    /// Layers downloaded (the rest were in the store) and their compressed bytes.
    pub fetched_layers: usize,
    pub fetched_bytes: u64,
}

/// An `insecure-registries` entry that is not a registry's `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is not a registry host[:port], e.g. 192.168.33.100:5000")]
pub struct BadRegistry {
    pub entry: String,
}

/// Registries reached over plain HTTP, as `host[:port]` (Docker's `insecure-registries`).
pub fn check_insecure(entries: &[String]) -> Result<(), BadRegistry> {
    for e in entries {
        let ok = !e.is_empty()
            && !e.contains('/')
            && !e.contains("://")
            && e.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            && e.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_ok());
        if !ok {
            return Err(BadRegistry { entry: e.clone() });
        }
    }
    Ok(())
}

fn client(insecure: &[String]) -> Client {
    // reqwest is built without a bundled crypto provider: the workspace's rustls uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
        platform_resolver: Some(Box::new(oci_client::client::current_platform_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    })
}

/// Credentials `docker login` saved for `registry` (`$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`), else anonymous; a registry that wants a bearer token gets one
/// from its token service with these.
pub fn auth_for(registry: &str) -> RegistryAuth {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
        .unwrap_or_else(|| PathBuf::from("/root/.docker"));
    let Ok(text) = std::fs::read(dir.join("config.json")) else { return RegistryAuth::Anonymous };
    auth_from_config(&text, registry).unwrap_or(RegistryAuth::Anonymous)
}

fn auth_from_config(text: &[u8], registry: &str) -> Option<RegistryAuth> {
    let v: serde_json::Value = serde_json::from_slice(text).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let keys: Vec<String> = match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()]
        }
        r => vec![r.to_string(), format!("https://{r}"), format!("http://{r}")],
    };
    let entry = keys.iter().find_map(|k| auths.get(k))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(entry.get("auth")?.as_str()?).ok()?;
    let (user, pass) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_string(), pass.to_string()))
}

fn failed(r: &ImageRef, e: impl std::fmt::Display) -> ImageError {
    ImageError::Pull { reference: r.full(), message: e.to_string() }
}

/// Whether `registry` (`host[:port]`) is on this host's loopback: Docker reaches those over
/// plain HTTP without being told.
fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| if p.parse::<u16>().is_ok() { h } else { registry });
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Pulls `reference` into the store (layers it has are kept, not fetched).
pub async fn pull(store: &Store, reference: &str, insecure: &[String]) -> Result<Pulled, ImageError> {
    use tracing::Instrument;
    let r = ImageRef::parse(reference)?;
    let span = tracing::info_span!("pull", image = %r.full());
    let mut insecure = insecure.to_vec();
    if is_loopback(r.registry()) {
        insecure.push(r.registry().to_string());
    }
    pull_ref(store, r, &insecure).instrument(span).await
}

async fn pull_ref(store: &Store, r: ImageRef, insecure: &[String]) -> Result<Pulled, ImageError> {
    let client = client(insecure);
    let auth = auth_for(r.registry());
    let (manifest, manifest_digest, list_digest) =
        client.pull_image_manifest_and_list_digest(&r.0, &auth).await.map_err(|e| failed(&r, e))?;
    let id = manifest.config.digest.clone();
    let mut config = Vec::new();
    client.pull_blob(&r.0, &manifest.config, &mut config).await.map_err(|e| refused(&r, "image config", &id, e))?;
    store.put_blob("image config", &id, &config)?;
    let parsed: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&config).map_err(|e| ImageError::format(&id, format!("image config: {e}")))?;
    let diff_ids = parsed.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers.len() {
        return Err(failed(
            &r,
            format!("manifest {manifest_digest} has {} layers, its config {} diff ids", manifest.layers.len(), diff_ids.len()),
        ));
    }
    let scratch = store.scratch("pull")?;
    let result = async {
        let (mut fetched_layers, mut fetched_bytes) = (0, 0u64);
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            if store.has_layer(diff_id) {
                continue;
            }
            let file = scratch.join(layer.digest.replace(':', "-"));
            let mut out = tokio::fs::File::create(&file).await.map_err(ImageError::io(&file, "create"))?;
            client.pull_blob(&r.0, layer, &mut out).await.map_err(|e| refused(&r, "layer", &layer.digest, e))?;
            out.flush().await.map_err(ImageError::io(&file, "write"))?;
            drop(out);
            fetched_bytes += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            // oci-client checked the blob digest while it streamed; unpacking checks the diff id.
            let (st, f, d) = (store.root().to_path_buf(), file.clone(), diff_id.clone());
            tokio::task::spawn_blocking(move || Store::at(st).add_layer(&f, &d)).await.map_err(|e| failed(&r, e))??;
            let _ = std::fs::remove_file(&file);
            fetched_layers += 1;
        }
        Ok::<_, ImageError>((fetched_layers, fetched_bytes))
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let (fetched_layers, fetched_bytes) = result?;
    let digest = list_digest.unwrap_or(manifest_digest);
    let tags = if r.0.digest().is_some() { vec![] } else { vec![r.full()] };
    let image = store.commit(&id, diff_ids, &tags, &[r.with_digest(&digest)])?;
    tracing::info!(id = %image.id, fetched_layers, fetched_bytes, "pulled");
    Ok(Pulled { image, digest, fetched_layers, fetched_bytes })
}

/// A digest mismatch reads as a refused blob; anything else as the registry's answer.
fn refused(r: &ImageRef, what: &'static str, digest: &str, e: oci_client::errors::OciDistributionError) -> ImageError {
    match e {
        oci_client::errors::OciDistributionError::DigestError(d) => {
            ImageError::Pull { reference: r.full(), message: format!("{what} {digest}: {d}: refusing it (corrupted or tampered)") }
        }
        e => failed(r, format!("{what} {digest}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_are_host_and_port() {
        assert!(check_insecure(&["192.168.33.100:5000".into(), "registry.lab".into()]).is_ok());
        for bad in ["http://x:5000", "x:port", "10.0.0.0/8", ""] {
            let e = check_insecure(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("is not a registry host[:port]"), "{e}");
        }
    }

    #[test]
    fn loopback_registries_are_plain_http_as_with_docker() {
        assert!(is_loopback("localhost:5000") && is_loopback("127.0.0.1:5000") && is_loopback("127.0.0.1"));
        assert!(!is_loopback("192.168.33.100:5000") && !is_loopback("docker.io") && !is_loopback("localhost.example:5000"));
    }

    #[test]
    fn docker_login_credentials_are_used() {
        let cfg = br#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}, "lab:5000": {"auth": "YTpi"}}}"#;
        assert!(matches!(auth_from_config(cfg, "docker.io"), Some(RegistryAuth::Basic(u, p)) if u == "user" && p == "pass"));
        assert!(matches!(auth_from_config(cfg, "lab:5000"), Some(RegistryAuth::Basic(u, p)) if u == "a" && p == "b"));
        assert!(auth_from_config(cfg, "other:5000").is_none());
        assert!(auth_from_config(b"not json", "docker.io").is_none());
    }
}
