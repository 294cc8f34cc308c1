//! A registry token server for the lab (Docker's token authentication, the bearer flow that
//! Docker Hub and most private registries use): `GET /token?service=..&scope=..` with HTTP basic
//! credentials answers a JWT signed with ES256, its certificate in the `x5c` header, which the
//! lab registry trusts through `rootcertbundle`. Wrong or missing credentials get a 401. Runs on
//! a thread inside the lab's client namespace; stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

pub const SERVICE: &str = "shoal-lab-registry";
pub const ISSUER: &str = "shoal-lab-token";

pub struct TokenServer {
    /// `http://ADDR/token`: the registry's realm.
    pub realm: String,
    /// The signing certificate (PEM), the registry's root bundle.
    pub cert_pem: String,
    /// Tokens issued (requests with good credentials).
    pub issued: Arc<AtomicUsize>,
    /// Requests refused for their credentials.
    pub refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Serves on `ip:port` in namespace `ns`, for `user`/`password`.
    pub fn start(ns: &str, ip: &str, port: u16, user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![ISSUER.to_string()]).unwrap().self_signed(&key).unwrap();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let x5c = STANDARD.encode(cert.der());
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let (stop, issued, refused) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let addr = format!("{ip}:{port}");
        let thread = {
            let (stop, issued, refused, addr) = (stop.clone(), issued.clone(), refused.clone(), addr.clone());
            super::on_thread_in(ns, move || {
                let listener = TcpListener::bind(&addr).expect("bind the token server");
                listener.set_nonblocking(true).unwrap();
                ready_tx.send(()).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let ok = serve(s, &expected, &signer, &x5c);
                            if let Some(ok) = ok {
                                (if ok { &issued } else { &refused }).fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("the token server listening");
        TokenServer { realm: format!("http://{addr}/token"), cert_pem: cert.pem(), issued, refused, stop, thread: Some(thread) }
    }

    /// The `auth:` section of the registry's config.yml, with the bundle written to `bundle`.
    pub fn registry_auth(&self, bundle: &std::path::Path) -> String {
        std::fs::write(bundle, &self.cert_pem).unwrap();
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            bundle.display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request. Some(true): a token was issued; Some(false): refused for credentials.
fn serve(stream: TcpStream, expected_auth: &str, signer: &ring::signature::EcdsaKeyPair, x5c: &str) -> Option<bool> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut w = stream;
    if auth.as_deref() != Some(expected_auth) {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad or missing credentials"}]}"#;
        let _ = write!(
            w,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Basic realm=\"{ISSUER}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return Some(false);
    }
    // scope=repository:NAME:ACTIONS, possibly several.
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .filter_map(|s| {
            let s = s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ",");
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?.to_string(), parts.next()?.to_string(), parts.next()?.to_string());
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "shoal", "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = signer.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).ok()?;
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}).to_string();
    let _ =
        write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    Some(true)
}
