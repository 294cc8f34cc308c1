//! Reading who a peer is from its certificate.

use crate::model::Role;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
}

/// Node id (CN), role (OU) and cluster (O) of a node certificate; None if it is not one.
pub fn peer_identity(der: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let ou = subject.iter_organizational_unit().next()?.as_str().ok()?;
    let o = subject.iter_organization().next()?.as_str().ok()?.to_string();
    let role = match ou {
        "shoal-manager" => Role::Manager,
        "shoal-worker" => Role::Worker,
        _ => return None,
    };
    Some(PeerIdentity { node_id: cn, role, cluster_id: o })
}

/// All certificates in a PEM text.
pub fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).collect()
}

/// The first private key in a PEM text.
pub fn pem_key(pem: &str) -> Option<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).ok()
}
