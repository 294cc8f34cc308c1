//! TLS material and configs. Servers present `node cert + CA` and ask for (optional) client
//! certificates signed by the cluster CA; every RPC then checks the caller's role. Clients use
//! our own connector so that a joining node can pin the CA by the digest in its join token.
//! Both sides read the node's live `Credentials`, so a renewed certificate is used from the
//! next handshake on.

use super::creds::Credentials;
use super::verify::ClusterVerifier;
pub use super::verify::Trust;
use crate::ca::{digest_der, MANAGER_SAN};
use crate::rpc::ControlClient;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    #[error("TLS material: {0}")]
    Material(String),
    #[error("TLS config: {0}")]
    Config(#[from] rustls::Error),
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
}

/// A node's certificate, key and the cluster CA, PEM.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process default (tonic's server builds its config from the default).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Server config: presents the node's current certificate, verifies callers' certificates (when
/// they send one) against the current cluster CAs.
pub fn server_config(creds: &Arc<Credentials>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(ClusterVerifier::new(creds.clone(), Trust::AnyManager))
        .with_cert_resolver(creds.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config trusting only the cluster CAs (and, among their certificates, only current
/// managers), presenting the node's current certificate.
pub fn client_config(creds: &Arc<Credentials>, trust: Trust) -> Result<Arc<ClientConfig>, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(ClusterVerifier::new(creds.clone(), trust))
        .with_client_cert_resolver(creds.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config for joining: no client certificate; the server's chain must contain a CA
/// whose digest is `digest` and the server certificate must verify against that CA.
pub fn join_config(digest: &str) -> Result<(Arc<ClientConfig>, Arc<PinnedCa>), TlsError> {
    let pinned =
        Arc::new(PinnedCa { digest: digest.to_string(), provider: provider(), seen: Mutex::new(None), mismatch: Mutex::new(false) });
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(cfg), pinned))
}

#[derive(Debug)]
pub struct PinnedCa {
    digest: String,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<CertificateDer<'static>>>,
    mismatch: Mutex<bool>,
}

impl PinnedCa {
    /// The CA certificate that matched, PEM.
    pub fn ca_pem(&self) -> Option<String> {
        let der = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        Some(der_to_pem(der.as_ref()))
    }

    pub fn mismatched(&self) -> bool {
        *self.mismatch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| digest_der(c.as_ref()) == self.digest) else {
            *self.mismatch.lock().unwrap_or_else(|p| p.into_inner()) = true;
            return Err(rustls::Error::General("the manager's CA does not match the join token's digest".into()));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        // With the other certificates the server sent: during a CA rotation its certificate
        // comes from the new root, and the cross-signed certificate links it to the pinned one.
        v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

pub fn der_to_pem(der: &[u8]) -> String {
    use std::fmt::Write;
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A lazily-connecting gRPC client to a manager at `addr` (`ip:port`), over our TLS.
pub fn client(addr: &str, cfg: Arc<ClientConfig>) -> Result<ControlClient<Channel>, TlsError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| TlsError::Connect { addr: addr.to_string(), message: e.to_string() })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        // HTTP/2 pings: a manager that went silent (blackholed, frozen, half-open) is given up
        // within about 6 s, and the agent's session moves to another manager.
        .http2_keep_alive_interval(Duration::from_secs(3))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: http::Uri| {
        let cfg = cfg.clone();
        async move {
            let host = uri.host().unwrap_or("127.0.0.1").to_string();
            let port = uri.port_u16().unwrap_or(2377);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(MANAGER_SAN).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = endpoint.connect_with_connector_lazy(connector);
    Ok(ControlClient::new(channel).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20))
}
