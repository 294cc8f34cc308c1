//! The Docker Engine API's swarm subset, so `docker` (and the Swarm visualizer, Portainer, CI
//! scripts) drive shoal unchanged: `DOCKER_HOST=unix:///run/shoal/docker.sock docker service ls`.
//!
//! It lives in `shoal-control` because it is a second face of the node's local API: it calls
//! [`NodeControl::handle`] exactly as the shoal CLI's socket does, and reads the cluster model.
//!
//! - [`route`]: version prefix and path to an endpoint (pure)
//! - [`filters`], [`resolve`]: Docker's `filters` parameter and name/ID/prefix lookup (pure)
//! - [`lists`]: the list endpoints' answers and the updates' commands from the state (pure)
//! - [`convert`], [`spec`]: the model to and from Docker's JSON (bollard-stubs' types; pure),
//!   with [`container`] and [`mounts`] for the container spec both ways, [`refuse`] for the
//!   fields shoal does not have, [`strict`] for keys no model knows and Go's spellings, and
//!   [`paths`] for the model's validation errors in Docker's field names
//! - [`handlers`]: one function per endpoint (asks the node)
//! - this file: HTTP/1.1 over the unix socket (hyper)

pub mod container;
pub mod convert;
pub mod error;
pub mod filters;
pub mod handlers;
pub mod lists;
pub mod mounts;
pub mod paths;
pub mod refuse;
pub mod resolve;
pub mod route;
pub mod spec;
pub mod strict;

pub use error::EngineError;
pub use handlers::{Engine, EngineConfig};

use crate::node::NodeControl;
use bytes::Bytes;
use handlers::Reply;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use tokio::net::UnixListener;
use tracing::Instrument;

/// Largest request body read (a service spec or a secret; Docker caps secrets at 500 KiB).
const MAX_BODY: usize = 4 << 20;

type Body = BoxBody<Bytes, Infallible>;

/// Bind the socket (replacing a stale one) with the local API's permissions.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    crate::node::local_socket::bind(path)
}

/// Serve until `shutdown` turns true; connections in flight are left to finish on their own.
pub async fn serve(node: NodeControl, cfg: EngineConfig, listener: UnixListener, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let engine = Engine { node, cfg };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let engine = engine.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let engine = engine.clone();
                            async move { Ok::<_, Infallible>(answer(&engine, req).await) }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                            tracing::debug!(error = %e, "engine API connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "engine API accept"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

pub fn query(q: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect()
}

async fn answer(engine: &Engine, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let span = tracing::debug_span!("engine", %method, %path);
    async move {
        let q = query(req.uri().query());
        let head = method == "HEAD";
        let result = match route::route(&method, &path) {
            Err(e) => Err(e),
            Ok(r) => match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Err(e) => Err(EngineError::bad(format!("request body: {e} (at most {MAX_BODY} bytes)"))),
                Ok(b) => engine.handle(r, &q, &b.to_bytes()).await,
            },
        };
        match result {
            Ok(reply) => http_reply(reply, head),
            Err(e) => {
                tracing::debug!(status = e.status(), error = %e, "engine API error");
                with_headers(Response::builder().status(e.status()).header("Content-Type", "application/json"))
                    .body(full(e.body()))
                    .unwrap_or_default()
            }
        }
    }
    .instrument(span)
    .await
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn with_headers(b: hyper::http::response::Builder) -> hyper::http::response::Builder {
    b.header("Api-Version", format!("{}.{}", route::API_VERSION.0, route::API_VERSION.1))
        .header("Docker-Experimental", "false")
        .header("Ostype", "linux")
        .header("Server", format!("shoal/{} (linux)", env!("CARGO_PKG_VERSION")))
}

fn http_reply(reply: Reply, head: bool) -> Response<Body> {
    let r = match reply {
        Reply::Json(status, b) => with_headers(Response::builder().status(status).header("Content-Type", "application/json")).body(full(b)),
        Reply::Empty(status) => with_headers(Response::builder().status(status)).body(full(Bytes::new())),
        Reply::Ping { swarm } => with_headers(Response::builder().status(200))
            .header("Swarm", swarm)
            .header("Cache-Control", "no-cache, no-store, must-revalidate")
            .header("Pragma", "no-cache")
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(full(if head { Bytes::new() } else { Bytes::from_static(b"OK") })),
        Reply::Stream(rx) => {
            let stream = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| Ok::<_, Infallible>(Frame::data(b)));
            with_headers(Response::builder().status(200).header("Content-Type", "application/vnd.docker.multiplexed-stream"))
                .body(BodyExt::boxed(StreamBody::new(stream)))
        }
    };
    r.unwrap_or_default()
}
