//! systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` once the
//! local API socket accepts calls, so `systemctl start shoal` returns when the CLI works.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. "READY=1") when systemd asked for it; a no-op otherwise.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        match path.strip_prefix('@') {
            Some(name) => sock.send_to_addr(state.as_bytes(), &SocketAddr::from_abstract_name(name.as_bytes())?)?,
            None => sock.send_to(state.as_bytes(), &path)?,
        };
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(socket = %path, error = %e, "could not tell systemd the daemon is ready");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test is the only one in the crate touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        super::notify("READY=1");
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
