//! A node's live TLS material. Renewal swaps it whole; every new connection, served or made,
//! reads the current one (rustls cert resolvers), so a renewal never restarts a listener, a
//! Raft channel or an agent session, and no link drops when a certificate is replaced.

use super::tls::{provider, TlsError, TlsIdentity};
use crate::ca::{pem_certs, pem_key};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls::SignatureScheme;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Credentials {
    current: RwLock<Current>,
    /// Node ids this node accepts as managers when it connects to one (learned from its
    /// sessions); `None` until known (a joining node trusts any manager certificate of its CA).
    managers: RwLock<Option<BTreeSet<crate::model::NodeId>>>,
}

#[derive(Debug)]
struct Current {
    identity: TlsIdentity,
    /// The node certificate followed by the CA, with the signing key.
    certified: Arc<CertifiedKey>,
    /// Every CA certificate in `identity.ca_pem` (two during a CA rotation).
    roots: Arc<RootCertStore>,
}

fn roots(id: &TlsIdentity) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in pem_certs(&id.ca_pem) {
        roots.add(c)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Material("no CA certificate".into()));
    }
    Ok(Arc::new(roots))
}

fn certified(id: &TlsIdentity) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut chain = pem_certs(&id.cert_pem);
    if chain.is_empty() {
        return Err(TlsError::Material("the node certificate is not PEM".into()));
    }
    chain.extend(pem_certs(&id.ca_pem));
    let key = pem_key(&id.key_pem).ok_or_else(|| TlsError::Material("node key is not a PEM private key".into()))?;
    let signer = provider().key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

impl Credentials {
    pub fn new(identity: TlsIdentity) -> Result<Arc<Credentials>, TlsError> {
        let (certified, roots) = (certified(&identity)?, roots(&identity)?);
        Ok(Arc::new(Credentials { current: RwLock::new(Current { identity, certified, roots }), managers: RwLock::new(None) }))
    }

    /// The current material (for saving it, or for a CSR with the same key).
    pub fn identity(&self) -> TlsIdentity {
        self.current.read().unwrap_or_else(|p| p.into_inner()).identity.clone()
    }

    /// Swap in new material; refused (nothing changes) when it does not parse.
    pub fn replace(&self, identity: TlsIdentity) -> Result<(), TlsError> {
        let (certified, roots) = (certified(&identity)?, roots(&identity)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Current { identity, certified, roots };
        Ok(())
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).certified.clone()
    }

    pub(super) fn roots(&self) -> Arc<RootCertStore> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).roots.clone()
    }

    /// The managers' node ids, as the cluster state gives them now.
    pub fn set_managers(&self, ids: BTreeSet<crate::model::NodeId>) {
        *self.managers.write().unwrap_or_else(|p| p.into_inner()) = Some(ids);
    }

    /// Whether `node_id` may serve as a manager to this node.
    pub(super) fn accepts_manager(&self, node_id: &str) -> bool {
        self.managers.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_none_or(|m| m.contains(node_id))
    }
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for Credentials {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
