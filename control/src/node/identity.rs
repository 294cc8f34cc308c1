//! What a node remembers across restarts: who it is, its cluster, its certificates.

use crate::model::Role;
use crate::rpc::tls::TlsIdentity;
use crate::store::crypto::UnlockKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: crate::model::NodeId,
    pub raft_id: u64,
    pub cluster_id: String,
    pub role: Role,
    /// Underlay IP other nodes reach this node on.
    pub addr: String,
    /// `ip:port` of this node's manager API (when a manager).
    pub manager_addr: String,
    pub listen: std::net::SocketAddr,
    /// Known manager addresses, refreshed from every session.
    pub managers: Vec<String>,
    pub heartbeat_period_ms: u64,
}

#[derive(thiserror::Error, Debug)]
#[error("{what} {path}: {source}")]
pub struct IdentityError {
    pub what: &'static str,
    pub path: String,
    pub source: std::io::Error,
}

pub struct Paths {
    pub dir: PathBuf,
    /// The cluster's unlock key while autolock is on (managers only): the node key is written
    /// sealed under it.
    pub unlock: std::sync::Mutex<Option<UnlockKey>>,
}

impl Paths {
    pub fn identity(&self) -> PathBuf {
        self.dir.join("node.json")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("certs/ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("certs/node.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("certs/node.key")
    }
    pub fn raft(&self) -> PathBuf {
        self.dir.join("raft")
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write;
    let err = |what, source| IdentityError { what, path: path.display().to_string(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err("creating directory for", e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(|e| err("creating", e))?;
    f.write_all(data).map_err(|e| err("writing", e))?;
    f.sync_all().map_err(|e| err("syncing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("renaming", e))
}

fn read(p: PathBuf) -> Result<String, IdentityError> {
    std::fs::read_to_string(&p).map_err(|source| IdentityError { what: "reading", path: p.display().to_string(), source })
}

impl Paths {
    pub fn save(&self, id: &Identity, tls: &TlsIdentity) -> Result<(), IdentityError> {
        write_private(&self.ca(), tls.ca_pem.as_bytes())?;
        write_private(&self.cert(), tls.cert_pem.as_bytes())?;
        let unlock = self.unlock.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match unlock {
            Some(k) => write_private(&self.key(), &k.seal(tls.key_pem.as_bytes()))?,
            None => write_private(&self.key(), tls.key_pem.as_bytes())?,
        }
        self.save_identity(id)
    }

    pub fn save_identity(&self, id: &Identity) -> Result<(), IdentityError> {
        write_private(&self.identity(), &serde_json::to_vec_pretty(id).unwrap_or_default())
    }

    /// Remember the managers an agent learned (from its sessions), so a restarted node can find
    /// the cluster after the managers it joined through are gone. Nothing to do once the node
    /// has left (no identity).
    pub fn save_managers(&self, managers: &[String]) -> Result<(), IdentityError> {
        let Some(mut id) = self.load_identity()? else { return Ok(()) };
        if id.managers == managers {
            return Ok(());
        }
        id.managers = managers.to_vec();
        self.save_identity(&id)
    }

    /// The identity and certificates; the key as on disk (sealed text while autolock is on).
    pub fn load(&self) -> Result<Option<(Identity, TlsIdentity)>, IdentityError> {
        let Some(id) = self.load_identity()? else { return Ok(None) };
        let tls = TlsIdentity { ca_pem: read(self.ca())?, cert_pem: read(self.cert())?, key_pem: read(self.key())? };
        Ok(Some((id, tls)))
    }

    /// `node.json` alone (None: the node is in no cluster).
    fn load_identity(&self) -> Result<Option<Identity>, IdentityError> {
        let path = self.identity();
        if !path.exists() {
            return Ok(None);
        }
        let id = serde_json::from_str(&read(path.clone())?).map_err(|e| IdentityError {
            what: "parsing",
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        Ok(Some(id))
    }

    /// Forget the cluster: identity, certificates and Raft data.
    pub fn wipe(&self) -> Result<(), IdentityError> {
        for p in [self.identity(), self.ca(), self.cert(), self.key()] {
            let _ = std::fs::remove_file(p);
        }
        let raft = self.raft();
        if raft.exists() {
            std::fs::remove_dir_all(&raft).map_err(|source| IdentityError {
                what: "removing",
                path: raft.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}
