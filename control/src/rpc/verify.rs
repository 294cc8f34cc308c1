//! Who a node trusts, read at each handshake from its live `Credentials`: peers whose
//! certificate chains to a cluster CA it holds now (both roots during a CA rotation), and, when it
//! connects to a manager, only a node the cluster still calls a manager: a demoted or removed
//! node keeps a manager certificate until it expires, and must not be taken for one.

use super::creds::Credentials;
use super::tls::provider;
use crate::ca::peer_identity;
use crate::model::Role;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::sync::Arc;

/// Verifies peers against the node's current trust (both as client and as server).
#[derive(Debug)]
pub struct ClusterVerifier {
    creds: Arc<Credentials>,
    trust: Trust,
}

/// Which managers a client accepts (servers verify callers the same way either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Any certificate of the cluster CA that says manager: Raft and forwarding between
    /// managers, whose membership changes before every node's view of it does.
    AnyManager,
    /// Only the managers the node's sessions last named (agents' sessions).
    CurrentManagers,
}

impl ClusterVerifier {
    pub fn new(creds: Arc<Credentials>, trust: Trust) -> Arc<ClusterVerifier> {
        Arc::new(ClusterVerifier { creds, trust })
    }
}

fn general(e: impl std::fmt::Display) -> Error {
    Error::General(e.to_string())
}

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let v = WebPkiServerVerifier::builder_with_provider(self.creds.roots(), provider()).build().map_err(general)?;
        v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let id = peer_identity(end_entity).ok_or_else(|| general("the manager's certificate is not a shoal node certificate"))?;
        if id.role != Role::Manager || (self.trust == Trust::CurrentManagers && !self.creds.accepts_manager(&id.node_id)) {
            return Err(general(format!("node {} is not a manager of this cluster (demoted or removed)", id.node_id)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for ClusterVerifier {
    /// Joining nodes have no certificate yet: `join` is the one call that takes none, and every
    /// other call checks the caller (`rpc::caller`).
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: the CA set changes during a rotation, and clients hold one certificate anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let v = WebPkiClientVerifier::builder_with_provider(self.creds.roots(), provider()).build().map_err(general)?;
        v.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
