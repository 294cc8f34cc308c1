//! The cluster's certificate authority and join tokens. The root CA is made at `init`; node
//! certificates carry the node id (CN), its role (OU) and the cluster id (O), like Swarm's.

mod identity;
mod token;

pub use identity::{peer_identity, pem_certs, pem_key, PeerIdentity};
pub use token::{ca_digest, digest_der, same_secret, JoinToken};

/// Node certificates' lifetime unless `--cert-expiry` says otherwise (Swarm's default).
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 86400);
/// The shortest `--cert-expiry`: renewal starts at half of it, so a minute leaves 30 s to renew
/// (Docker's floor is an hour; a minute lets tests watch renewals).
pub const MIN_CERT_EXPIRY: Duration = Duration::from_secs(60);
/// The longest: the root CA's own lifetime.
pub const MAX_CERT_EXPIRY: Duration = Duration::from_secs(20 * 365 * 86400);

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
    #[error("{ms} ms is out of range: give 1m to 7300d (20 years), e.g. --cert-expiry 2160h")]
    CertExpiryOutOfRange { ms: u64 },
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
        let cert = root_params(cluster_id)?.self_signed(&key).map_err(CaError::Generate)?;
        Ok(RootCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A new root for `swarm ca --rotate`, and its certificate cross-signed by this (old) root:
    /// a node certificate from the new root, presented with the cross-signed one, verifies
    /// against the old root too, so nodes that have not yet learnt the new root keep talking
    /// to the nodes that renewed first.
    pub fn rotate(&self, cluster_id: &str) -> Result<(RootCa, String), CaError> {
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let params = root_params(cluster_id)?;
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        let old_key = KeyPair::from_pem(&self.key_pem).map_err(CaError::Load)?;
        let old = Issuer::from_ca_cert_pem(&self.cert_pem, old_key).map_err(CaError::Load)?;
        let cross = params.signed_by(&key, &old).map_err(CaError::Sign)?;
        Ok((RootCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() }, cross.pem()))
    }

    pub fn digest(&self) -> String {
        ca_digest(&self.cert_pem)
    }

    /// Sign a node's CSR, valid for `validity` from now. Only the public key is taken from the
    /// CSR: identity, role and validity come from the CA.
    pub fn issue(&self, csr_pem: &str, node_id: &str, role: Role, cluster_id: &str, validity: Duration) -> Result<String, CaError> {
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
        // Backdated for clock skew between nodes, by at most a quarter of the lifetime so that
        // renewal (from half the lifetime on) still comes after the issue.
        params.not_before = now - (validity / 4).min(Duration::from_secs(3600));
        params.not_after = now + validity;
        let cert = params.signed_by(&csr.public_key, &issuer).map_err(CaError::Sign)?;
        Ok(cert.pem())
    }
}

/// A root CA's certificate parameters. Each root gets a name of its own (a random suffix), so
/// that during a rotation the old root, the new one and the cross-signed certificate never
/// share a subject with a different key.
fn root_params(cluster_id: &str) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CaError::Generate)?;
    let suffix: u32 = rand::random();
    params.distinguished_name.push(DnType::CommonName, format!("shoal-root-ca-{suffix:08x}"));
    params.distinguished_name.push(DnType::OrganizationName, cluster_id);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time_now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + MAX_CERT_EXPIRY;
    Ok(params)
}

/// The digests of every certificate in a PEM bundle (what a node trusts, order aside).
pub fn bundle_digests(pem: &str) -> std::collections::BTreeSet<String> {
    pem_certs(pem).iter().map(|c| digest_der(c.as_ref())).collect()
}

/// A node's private key and a CSR for it (PEM).
pub fn new_node_key() -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(CaError::Generate)?;
    let params = CertificateParams::new(Vec::<String>::new()).map_err(CaError::Generate)?;
    let csr = params.serialize_request(&key).map_err(CaError::Generate)?;
    Ok((key.serialize_pem(), csr.pem().map_err(CaError::Generate)?))
}

/// `--cert-expiry` in milliseconds, checked: the duration, or why not.
pub fn check_cert_expiry(ms: u64) -> Result<Duration, CaError> {
    let d = Duration::from_millis(ms);
    if d < MIN_CERT_EXPIRY || d > MAX_CERT_EXPIRY {
        return Err(CaError::CertExpiryOutOfRange { ms });
    }
    Ok(d)
}

/// A certificate's validity window in Unix milliseconds (not before, not after).
pub fn validity_ms(cert_pem: &str) -> Option<(u64, u64)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = pem_certs(cert_pem).into_iter().next()?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let v = cert.validity();
    let ms = |t: i64| u64::try_from(t).ok().map(|s| s.saturating_mul(1000));
    Some((ms(v.not_before.timestamp())?, ms(v.not_after.timestamp())?))
}

/// When to renew a certificate valid from `not_before` to `not_after` (ms): at a point between
/// half and 80% of its lifetime, spread by `jitter` (0 to 1) so a cluster's nodes do not renew
/// all at once, as swarmkit does.
pub fn renew_at_ms(not_before: u64, not_after: u64, jitter: f64) -> u64 {
    let life = not_after.saturating_sub(not_before) as f64;
    let share = 0.5 + 0.3 * if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    not_before.saturating_add((life * share) as u64)
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
        let pem = ca.issue(&csr, "node123", Role::Manager, "c1", DEFAULT_CERT_EXPIRY).unwrap();
        let der = pem_certs(&pem).remove(0);
        let id = peer_identity(&der).unwrap();
        assert_eq!(id.node_id, "node123");
        assert_eq!(id.role, Role::Manager);
        assert_eq!(id.cluster_id, "c1");
        let pem = ca.issue(&csr, "node9", Role::Worker, "c1", DEFAULT_CERT_EXPIRY).unwrap();
        let der = pem_certs(&pem).remove(0);
        assert_eq!(peer_identity(&der).unwrap().role, Role::Worker);
    }

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_lifetime() {
        assert_eq!(renew_at_ms(1_000, 11_000, 0.0), 6_000);
        assert_eq!(renew_at_ms(1_000, 11_000, 1.0), 9_000);
        assert_eq!(renew_at_ms(1_000, 11_000, 7.0), 9_000, "jitter is clamped");
        assert_eq!(renew_at_ms(1_000, 11_000, f64::NAN), 6_000);
        assert_eq!(renew_at_ms(11_000, 1_000, 0.5), 11_000, "an inverted window renews at once");
    }

    #[test]
    fn a_one_minute_certificate_is_renewed_after_it_was_issued_and_before_it_expires() {
        let ca = RootCa::generate("c1").unwrap();
        let (_key, csr) = new_node_key().unwrap();
        let before = time_now().unix_timestamp() as u64 * 1000;
        let pem = ca.issue(&csr, "n1", Role::Worker, "c1", MIN_CERT_EXPIRY).unwrap();
        let (nb, na) = validity_ms(&pem).unwrap();
        assert!(na >= before + 59_000 && na <= before + 62_000, "expires a minute after issue: {na} vs {before}");
        for jitter in [0.0, 0.5, 1.0] {
            let at = renew_at_ms(nb, na, jitter);
            assert!(at > before && at < na, "renews at {at}, issued {before}, expires {na}");
        }
        let pem = ca.issue(&csr, "n1", Role::Worker, "c1", DEFAULT_CERT_EXPIRY).unwrap();
        let (nb, na) = validity_ms(&pem).unwrap();
        assert_eq!(na - nb, DEFAULT_CERT_EXPIRY.as_millis() as u64 + 3_600_000, "backdated an hour");
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ca = RootCa::generate("c1").unwrap();
        assert!(matches!(ca.issue("not a csr", "n", Role::Worker, "c1", DEFAULT_CERT_EXPIRY), Err(CaError::BadCsr(_))));
    }
}
