//! Image references as Docker reads them: `redis:alpine` is `docker.io/library/redis:alpine`,
//! `registry:5000/app` is `registry:5000/app:latest`, `app@sha256:...` names one manifest.

use super::error::ImageError;

/// A parsed reference, kept in its full (normalized) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef(pub oci_client::Reference);

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let bad = |message: String| ImageError::Reference { reference: s.to_string(), message };
        if s.is_empty() || s.len() > 512 {
            return Err(bad("give a name such as redis:alpine or registry:5000/app:1.0".into()));
        }
        if s.chars().any(|c| c.is_ascii_uppercase() && !s.contains('@')) && !has_uppercase_only_in_tag(s) {
            return Err(bad("repository names are lowercase".into()));
        }
        s.parse::<oci_client::Reference>().map(ImageRef).map_err(|e| bad(e.to_string()))
    }

    /// Compiles the reference grammar now. Its regexes are built on first use (seconds of CPU in
    /// an unoptimised build, tens of milliseconds optimised); the daemon calls this before its
    /// runtime starts, so that cost never lands on a runtime worker, where it held up the agent
    /// session's heartbeats until the managers marked the node down.
    pub fn warm_up() {
        let _ = ImageRef::parse("busybox:latest");
    }

    /// `docker.io/library/redis:alpine`, or `...@sha256:...` for a digest reference.
    pub fn full(&self) -> String {
        self.0.whole()
    }

    pub fn registry(&self) -> &str {
        self.0.resolve_registry()
    }

    /// The repository and tag as `docker image ls` shows them (`redis`, `alpine`).
    pub fn familiar(&self) -> (String, String) {
        let repo = self.0.repository();
        let repo = match self.0.registry() {
            "docker.io" | "index.docker.io" => repo.strip_prefix("library/").unwrap_or(repo).to_string(),
            reg => format!("{reg}/{repo}"),
        };
        (repo, self.0.tag().map(str::to_string).unwrap_or_else(|| "<none>".into()))
    }

    /// `registry/repository@digest`: how `RepoDigests` name a pulled manifest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.0.registry(), self.0.repository())
    }
}

/// A tag may hold uppercase letters (`app:V1`); the repository may not.
fn has_uppercase_only_in_tag(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => !repo.chars().any(|c| c.is_ascii_uppercase()),
        _ => false,
    }
}

/// A full image id or a unique-looking prefix of one (`sha256:ab12...`, `ab12cd34ef56`).
pub fn looks_like_id(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() >= 12 && hex.len() <= 64 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_normalized() {
        let r = ImageRef::parse("redis:alpine").unwrap();
        assert_eq!(r.full(), "docker.io/library/redis:alpine");
        assert_eq!(r.familiar(), ("redis".into(), "alpine".into()));
        assert_eq!(ImageRef::parse("selenium/hub").unwrap().full(), "docker.io/selenium/hub:latest");
        assert_eq!(ImageRef::parse("postgres").unwrap().familiar(), ("postgres".into(), "latest".into()));
    }

    #[test]
    fn lab_registries_keep_host_and_port() {
        let r = ImageRef::parse("192.168.33.100:5050/shoal/busybox:1").unwrap();
        assert_eq!(r.registry(), "192.168.33.100:5050");
        assert_eq!(r.full(), "192.168.33.100:5050/shoal/busybox:1");
        assert_eq!(r.familiar(), ("192.168.33.100:5050/shoal/busybox".into(), "1".into()));
        assert_eq!(r.with_digest("sha256:ab"), "192.168.33.100:5050/shoal/busybox@sha256:ab");
    }

    #[test]
    fn bad_references_say_why() {
        for bad in ["", "Redis", "redis:", "a b"] {
            let e = ImageRef::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("image reference '{bad}'")), "{e}");
        }
        assert!(ImageRef::parse("app:V1").is_ok());
    }

    #[test]
    fn ids_are_told_from_names() {
        assert_eq!(looks_like_id("sha256:0123456789ab"), Some("0123456789ab"));
        assert_eq!(looks_like_id("0123456789abcdef"), Some("0123456789abcdef"));
        assert_eq!(looks_like_id("busybox"), None);
        assert_eq!(looks_like_id("0123"), None);
    }
}
