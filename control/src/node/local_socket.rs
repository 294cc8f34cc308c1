//! Serving the local API on a unix socket.

use super::api::{LocalError, LocalRequest, LocalResponse};
use super::NodeControl;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // A stale socket from a previous run would make bind fail.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

pub async fn serve(node: NodeControl, listener: UnixListener, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => { tokio::spawn(handle(node.clone(), stream)); }
                Err(e) => { tracing::warn!("local API accept: {e}"); }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(node: NodeControl, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let resp: LocalResponse = match serde_json::from_str::<LocalRequest>(&line) {
            Ok(req) => node.handle(req).await.map_err(LocalError::from),
            Err(e) => Err(LocalError::bad_request(e)),
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Client side: one request, one reply.
pub async fn call(path: &Path, req: &LocalRequest) -> Result<LocalResponse, std::io::Error> {
    let stream = UnixStream::connect(path).await?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut lines = BufReader::new(r).lines();
    let reply = lines.next_line().await?.ok_or_else(|| std::io::Error::other("the node closed the connection"))?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}
