//! The cluster's certificate authority and join tokens. The root CA is made at `init`; node
//! certificates carry the node id (CN), its role (OU) and the cluster id (O), like Swarm's.

mod identity;
mod token;

pub use identity::{peer_identity, pem_certs, pem_key, PeerIdentity};
pub use token::{ca_digest, digest_der, same_secret, JoinToken};

use crate::model::Role;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::time::Duration;

/// DNS name every manager certificate carries; clients check it when they connect.
pub const MANAGER_SAN: &str = "shoal-manager";
pub const WORKER_SAN: &str = "shoal-worker";

#[derive(thiserror::Error, Debug)]
pub enum CaError {
    #[error("making the root CA: {0}")]
    Generate(rcgen::Error),
    #[error("loading the root CA: {0}")]
    Load(rcgen::Error),
    #[error("certificate signing request is invalid: {0}")]
    BadCsr(rcgen::Error),
    #[error("signing the node certificate: {0}")]
    Sign(rcgen::Error),
    #[error("join token is malformed: expected SWMTKN-1-<CA digest>-<secret>")]
    BadToken,
}

pub fn role_ou(role: Role) -> &'static str {
    match role {
        Role::Manager => "shoal-manager",
        Role::Worker => "shoal-worker",
    }
}

/// The root CA (certificate and key, PEM).
#[derive(Clone, Debug)]
pub struct RootCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl RootCa {
    pub fn generate(cluster_id: &str) -> Result<RootCa, CaError> {
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CaError::Generate)?;
        params.distinguished_name.push(DnType::CommonName, "shoal-root-ca");
        params.distinguished_name.push(DnType::OrganizationName, cluster_id);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time_now();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(20 * 365 * 86400);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(RootCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    pub fn digest(&self) -> String {
        ca_digest(&self.cert_pem)
    }

    /// Sign a node's CSR. Only the public key is taken from the CSR: identity, role and
    /// validity come from the CA.
    pub fn issue(&self, csr_pem: &str, node_id: &str, role: Role, cluster_id: &str) -> Result<String, CaError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(CaError::Load)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(CaError::Load)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        let san = match role {
            Role::Manager => MANAGER_SAN,
            Role::Worker => WORKER_SAN,
        };
        let mut params = CertificateParams::new(vec![san.to_string(), node_id.to_string()]).map_err(CaError::Sign)?;
        params.distinguished_name.push(DnType::CommonName, node_id);
        params.distinguished_name.push(DnType::OrganizationalUnitName, role_ou(role));
        params.distinguished_name.push(DnType::OrganizationName, cluster_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = time_now();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(90 * 86400);
        let cert = params.signed_by(&csr.public_key, &issuer).map_err(CaError::Sign)?;
        Ok(cert.pem())
    }
}

/// A node's private key and a CSR for it (PEM).
pub fn new_node_key() -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(CaError::Generate)?;
    let params = CertificateParams::new(Vec::<String>::new()).map_err(CaError::Generate)?;
    let csr = params.serialize_request(&key).map_err(CaError::Generate)?;
    Ok((key.serialize_pem(), csr.pem().map_err(CaError::Generate)?))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_id_and_role() {
        let ca = RootCa::generate("c1").unwrap();
        let (_key, csr) = new_node_key().unwrap();
        let pem = ca.issue(&csr, "node123", Role::Manager, "c1").unwrap();
        let der = pem_certs(&pem).remove(0);
        let id = peer_identity(&der).unwrap();
        assert_eq!(id.node_id, "node123");
        assert_eq!(id.role, Role::Manager);
        assert_eq!(id.cluster_id, "c1");
        let pem = ca.issue(&csr, "node9", Role::Worker, "c1").unwrap();
        let der = pem_certs(&pem).remove(0);
        assert_eq!(peer_identity(&der).unwrap().role, Role::Worker);
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ca = RootCa::generate("c1").unwrap();
        assert!(matches!(ca.issue("not a csr", "n", Role::Worker, "c1"), Err(CaError::BadCsr(_))));
    }
}
