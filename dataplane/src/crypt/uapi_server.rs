//! The userspace tunnel's configuration socket. `get` requests go to gotatun's own UAPI
//! server; `set` requests are applied here, through gotatun's device API, because its UAPI
//! server removes and re-adds every peer a `set` names, which throws away the peer's
//! sessions: a packet in flight when a preshared key rotates was lost, and the next one
//! waited for a handshake. Applied in place (as kernel WireGuard does), a new preshared key
//! only takes part in the next handshake and the running session carries on.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::str::FromStr;

use gotatun::device::uapi::command::{Request, Set, SetUnset};
use gotatun::device::uapi::UapiClient;
use gotatun::device::{Device, DeviceTransports, Peer};
use gotatun::x25519::{PublicKey, StaticSecret};
use tokio::sync::{mpsc, oneshot};

/// A `set` waiting for the main task, which owns the device.
pub type SetJob = (Set, oneshot::Sender<i32>);

/// Serves one client connection until it hangs up: requests are blank-line terminated, each
/// answered by `errno=N` (and, for `get`, the configuration before it).
pub fn serve_connection(stream: UnixStream, gets: UapiClient, sets: mpsc::Sender<SetJob>) {
    let Ok(mut w) = stream.try_clone() else { return };
    let mut buf = String::new();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if !line.is_empty() {
            buf.push_str(&line);
            buf.push('\n');
            continue;
        }
        if buf.is_empty() {
            continue;
        }
        let answer = answer(&buf, &gets, &sets);
        buf.clear();
        if w.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(text: &str, gets: &UapiClient, sets: &mpsc::Sender<SetJob>) -> String {
    const EINVAL: i32 = 22;
    const EIO: i32 = 5;
    let errno = |n: i32| format!("errno={n}\n\n");
    match Request::from_str(text) {
        Err(e) => {
            tracing::warn!(error = %e, "unreadable UAPI request");
            errno(EINVAL)
        }
        Ok(get @ Request::Get(_)) => match gets.send_sync(get) {
            Ok(resp) => format!("{resp}\n"),
            Err(e) => {
                tracing::warn!(error = %e, "the tunnel did not answer a get");
                errno(EIO)
            }
        },
        Ok(Request::Set(set)) => {
            let (tx, rx) = oneshot::channel();
            if sets.blocking_send((set, tx)).is_err() {
                return errno(EIO);
            }
            errno(rx.blocking_recv().unwrap_or(EIO))
        }
    }
}

/// Applies a `set` to the device: keys, port and peers changed where they are, so existing
/// sessions survive. Returns the errno to answer with.
pub async fn apply_set<T: DeviceTransports>(device: &Device<T>, set: Set) -> i32 {
    let res = device
        .write(async |w| {
            if let Some(key) = &set.private_key {
                w.set_private_key(StaticSecret::from(key.0)).await;
            }
            if let Some(port) = set.listen_port {
                w.set_listen_port(port);
            }
            if set.replace_peers {
                w.clear_peers();
            }
            for sp in set.peers {
                let public_key = PublicKey::from(sp.peer.public_key.0);
                if sp.remove {
                    w.remove_peer(&public_key).await;
                    continue;
                }
                let psk = sp.peer.preshared_key.map(|p| match p {
                    SetUnset::Set(k) if k.0 != [0; 32] => Some(k.0),
                    _ => None,
                });
                let (endpoint, keepalive) = (sp.peer.endpoint, sp.peer.persistent_keepalive_interval);
                let allowed = sp.peer.allowed_ip;
                let replace = sp.replace_allowed_ips;
                let existed = w
                    .modify_peer(&public_key, |p| {
                        if let Some(psk) = psk {
                            p.set_preshared_key(psk);
                        }
                        if let Some(e) = endpoint {
                            p.set_endpoint(Some(e));
                        }
                        if let Some(k) = keepalive {
                            p.set_keepalive((k != 0).then_some(k));
                        }
                        if replace {
                            p.clear_allowed_ips();
                        }
                        p.add_allowed_ips(allowed.clone());
                    })
                    .await;
                if !existed && !sp.update_only {
                    let mut peer = Peer::new(public_key).with_allowed_ips(allowed);
                    peer.endpoint = endpoint;
                    peer.preshared_key = psk.flatten();
                    peer.keepalive = keepalive.filter(|k| *k != 0);
                    w.add_peer(peer);
                }
            }
        })
        .await;
    match res {
        Ok(()) => 0,
        Err(e) => {
            tracing::warn!(error = %e, "the tunnel could not take the configuration");
            5
        }
    }
}
