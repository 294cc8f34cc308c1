//! The manager port before authentication (issue 14 item 4): a peer without a node
//! certificate can only `join`, and its connection may carry 64 KiB in all, so it cannot make a
//! manager buffer a large message; a known node's large request still passes, and the manager
//! goes on serving joins.

mod common;

use common::*;
use shoal_control::ca::JoinToken;
use shoal_control::model::SecretSpec;
use shoal_control::rpc::messages::{ApiRequest, JoinRequest};
use shoal_control::rpc::tls::{self, TlsIdentity, Trust};
use shoal_control::state::Command;

fn join_request(token: &str, padding: usize) -> JoinRequest {
    JoinRequest {
        token: token.into(),
        csr_pem: "x".repeat(padding),
        hostname: "stranger".into(),
        addr: "127.0.0.1".into(),
        manager_addr: String::new(),
        resources: Default::default(),
        encryption: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_may_send_only_a_small_join() {
    let (ms, _, worker_token, _) = cluster(1, 0).await;
    let digest = JoinToken::parse(&worker_token).unwrap().ca_digest;

    // 1 MiB in a join: the connection is closed before the manager reads it all.
    let (cfg, _) = tls::join_config(&digest).unwrap();
    let err = tls::client(&ms[0].addr, cfg).unwrap().join(join_request(&worker_token, 1 << 20)).await.unwrap_err();
    // (Without the budget the manager read all of it and answered InvalidArgument.) Cut off,
    // the client sees the transport fail: a reset, or a broken pipe while it still sends.
    assert!(
        err.code() != tonic::Code::InvalidArgument && err.message().contains("transport error"),
        "the join was read and judged, not cut off: {err:?}"
    );

    // A small join from a stranger is read and answered (here: its CSR is refused by name).
    let (cfg, _) = tls::join_config(&digest).unwrap();
    let err = tls::client(&ms[0].addr, cfg).unwrap().join(join_request(&worker_token, 100)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A real node still joins, and a known manager's 1 MiB request passes.
    let w = TestNode::start("w1").await;
    w.join(&worker_token, &ms[0].addr).await.expect("a real join");
    let read = |p: &str| std::fs::read_to_string(ms[0].dir.path().join(p)).unwrap();
    let id = TlsIdentity { ca_pem: read("certs/ca.pem"), cert_pem: read("certs/node.pem"), key_pem: read("certs/node.key") };
    let creds = shoal_control::rpc::creds::Credentials::new(id).unwrap();
    let mut c = tls::client(&ms[0].addr, tls::client_config(&creds, Trust::AnyManager).unwrap()).unwrap();
    let spec = SecretSpec { name: "big".into(), labels: Default::default(), data: vec![b'x'; 400 << 10] };
    let big = ApiRequest::Propose(Command::CreateSecret { spec });
    let r = c.api(big).await;
    assert!(r.is_ok(), "a known peer's large request: {r:?}");
}
