//! WireGuard's cross-platform configuration protocol (UAPI), which the userspace tunnel speaks
//! on a unix socket: the text of a `set` request for planned changes and the parse of a `get`
//! answer (pure), and a blocking client.

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::key::{Key, PrivateKey};
use super::plan::{DeviceConfig, ObservedPeer, WgOp};
use super::wg_error::WgError;

/// The `set=1` request carrying `ops` (keys in hex, as the protocol wants).
pub fn set_request(ops: &[WgOp]) -> String {
    let mut s = String::from("set=1\n");
    for op in ops {
        match op {
            WgOp::SetPrivateKey(k) => s.push_str(&format!("private_key={}\n", k.expose().to_hex())),
            WgOp::SetPort(p) => s.push_str(&format!("listen_port={p}\n")),
            _ => {}
        }
    }
    // Peers after the device's own keys: a `public_key=` line starts a peer section.
    for op in ops {
        match op {
            WgOp::RemovePeer { key } => s.push_str(&format!("public_key={}\nremove=true\n", key.to_hex())),
            WgOp::SetPeer { key, endpoint, address, psk, .. } => s.push_str(&format!(
                "public_key={}\npreshared_key={}\nendpoint={endpoint}\nreplace_allowed_ips=true\nallowed_ip={address}/32\n",
                key.to_hex(),
                psk.as_ref().map_or(Key([0; 32]), |k| *k.expose()).to_hex()
            )),
            _ => {}
        }
    }
    s.push('\n');
    s
}

/// Parses a `get=1` answer (up to its blank line). Lines shoal does not use are skipped.
pub fn parse_get(text: &str) -> Result<DeviceConfig, WgError> {
    let mut cfg = DeviceConfig::default();
    let mut peer: Option<Key> = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let bad = |what| WgError::BadAnswer { what, line: line.to_string() };
        let Some((k, v)) = line.split_once('=') else { return Err(bad("no key=value")) };
        match k {
            "errno" if v != "0" => return Err(WgError::Refused { errno: v.parse().map_err(|_| bad("a bad errno"))? }),
            "private_key" => {
                let key = Key::from_hex(v).ok_or_else(|| bad("a bad private_key"))?;
                cfg.private_key = Some(PrivateKey::from_bytes(key.0));
            }
            "listen_port" => cfg.port = v.parse().map_err(|_| bad("a bad listen_port"))?,
            "public_key" => {
                let key = Key::from_hex(v).ok_or_else(|| bad("a bad public_key"))?;
                cfg.peers.insert(key, ObservedPeer::default());
                peer = Some(key);
            }
            "preshared_key" => {
                let p = peer.and_then(|k| cfg.peers.get_mut(&k)).ok_or_else(|| bad("preshared_key before public_key"))?;
                let key = Key::from_hex(v).ok_or_else(|| bad("a bad preshared_key"))?;
                p.psk = (key.0 != [0; 32]).then(|| PrivateKey::from_bytes(key.0));
            }
            "endpoint" => {
                let p = peer.and_then(|k| cfg.peers.get_mut(&k)).ok_or_else(|| bad("endpoint before public_key"))?;
                // IPv6 endpoints are not shoal's: they read as none, and get replaced.
                p.endpoint = v.parse::<SocketAddrV4>().ok();
            }
            "allowed_ip" => {
                let p = peer.and_then(|k| cfg.peers.get_mut(&k)).ok_or_else(|| bad("allowed_ip before public_key"))?;
                if let Some((ip, len)) = v.split_once('/') {
                    if let (Ok(ip), Ok(len)) = (ip.parse(), len.parse()) {
                        p.allowed_ips.insert((ip, len));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(cfg)
}

/// Sends one request and returns the answer up to its blank line.
pub fn exchange(socket: &Path, request: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(b"\n\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).map_err(|_| std::io::Error::other("the tunnel answered non-UTF-8"))
}

pub fn get(socket: &Path) -> Result<DeviceConfig, WgError> {
    let text = exchange(socket, "get=1\n\n").map_err(|source| WgError::Socket { what: "ask", socket: socket.into(), source })?;
    parse_get(&text)
}

pub fn set(socket: &Path, ops: &[WgOp]) -> Result<(), WgError> {
    let text =
        exchange(socket, &set_request(ops)).map_err(|source| WgError::Socket { what: "configure", socket: socket.into(), source })?;
    match text.lines().find_map(|l| l.strip_prefix("errno=")) {
        Some("0") => Ok(()),
        Some(e) => Err(WgError::Refused { errno: e.parse().unwrap_or(0) }),
        None => Err(WgError::NoAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_set_request_reads_back_as_the_same_configuration() {
        let private = PrivateKey::from_bytes([7; 32]);
        let peer = Key([9; 32]);
        let endpoint: SocketAddrV4 = "192.168.33.20:51820".parse().unwrap();
        let ops = vec![
            WgOp::SetPort(51820),
            WgOp::SetPeer { key: peer, node: "snode1".into(), endpoint, address: "10.254.0.2".parse().unwrap(), psk: None },
            WgOp::SetPrivateKey(private.clone()),
            WgOp::RemovePeer { key: Key([1; 32]) },
        ];
        let req = set_request(&ops);
        // Device keys first, then peers; the request ends with a blank line.
        assert!(req.starts_with(&format!("set=1\nlisten_port=51820\nprivate_key={}\n", "07".repeat(32))), "{req}");
        assert!(req.ends_with("\n\n"));
        assert!(req.contains(&format!("preshared_key={}\n", "00".repeat(32))), "no preshared key clears it: {req}");
        let answer = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\npreshared_key={}\nendpoint=192.168.33.20:51820\nallowed_ip=10.254.0.2/32\nlast_handshake_time_sec=0\nerrno=0\n\n",
            "07".repeat(32),
            "09".repeat(32),
            "08".repeat(32)
        );
        let cfg = parse_get(&answer).unwrap();
        assert_eq!(cfg.private_key, Some(private));
        assert_eq!(cfg.port, 51820);
        let p = &cfg.peers[&peer];
        assert_eq!(p.endpoint, Some(endpoint));
        assert_eq!(p.allowed_ips, BTreeSet::from([("10.254.0.2".parse().unwrap(), 32)]));
        assert_eq!(p.psk, Some(PrivateKey::from_bytes([8; 32])));
        assert!(matches!(parse_get("errno=19\n\n"), Err(WgError::Refused { errno: 19 })));
        let err = parse_get("public_key=zz\n\n").unwrap_err();
        assert_eq!(err.to_string(), "the tunnel's answer has a bad public_key in line \"public_key=zz\"");
    }
}
