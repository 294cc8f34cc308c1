//! Node certificates (issue 14 item 2): renewed by every node before they expire, with no link
//! dropped; and refused once the cluster state says the node was demoted or removed, for `raft`,
//! for `api`, and by agents looking for a manager.

mod common;

use common::*;
use shoal_control::model::{Role, ServiceMode, ServiceSpec, TaskState};
use shoal_control::rpc::creds::Credentials;
use shoal_control::rpc::messages::{ApiRequest, RaftRpc};
use shoal_control::rpc::tls::{self, TlsIdentity, Trust};
use shoal_control::state::Command;
use std::time::Duration;

/// A node's certificate files, as its agent reads them.
fn files(node: &TestNode) -> TlsIdentity {
    let read = |p: &str| std::fs::read_to_string(node.dir.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    TlsIdentity { ca_pem: read("certs/ca.pem"), cert_pem: read("certs/node.pem"), key_pem: read("certs/node.key") }
}

fn not_after(id: &TlsIdentity) -> u64 {
    shoal_control::ca::validity_ms(&id.cert_pem).expect("a certificate").1
}

fn now_ms() -> u64 {
    shoal_control::manager::now_ms()
}

fn client(addr: &str, id: &TlsIdentity, trust: Trust) -> shoal_control::rpc::ControlClient<tonic::transport::Channel> {
    let creds = Credentials::new(id.clone()).unwrap();
    tls::client(addr, tls::client_config(&creds, trust).unwrap()).unwrap()
}

/// A one-minute certificate lifetime: every node renews (managers and workers), the cluster
/// keeps working past the first certificates' expiry, and new connections with the renewed
/// certificates are accepted while the expired ones are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_minute_certificates_are_renewed_and_no_link_drops() {
    let m1 = TestNode::start("m1").await;
    let (wt, mt) = m1.init_with(Some(60_000)).await;
    let m2 = TestNode::start("m2").await;
    assert_eq!(m2.join(&mt, &m1.addr).await.unwrap(), Role::Manager);
    let w1 = TestNode::start("w1").await;
    assert_eq!(w1.join(&wt, &m1.addr).await.unwrap(), Role::Worker);
    let agent = sim_agent(w1.node.clone());
    let nodes = [&m1, &m2, &w1];
    let first: Vec<TlsIdentity> = nodes.iter().map(|n| files(n)).collect();
    for id in &first {
        let left = not_after(id).saturating_sub(now_ms());
        assert!((55_000..=62_000).contains(&left), "issued for a minute: {left} ms left");
    }
    // Every node renews between 50% and 80% of the lifetime (a minute plus 15 s backdated).
    eventually("every node renewed its certificate", 75, || async {
        nodes.iter().zip(&first).all(|(n, old)| not_after(&files(n)) > not_after(old)).then_some(())
    })
    .await;
    // Past the first certificates' expiry.
    let expiry = first.iter().map(not_after).max().unwrap();
    tokio::time::sleep(Duration::from_millis(expiry.saturating_sub(now_ms()) + 1_500)).await;
    // The existing links still carry work: a write through the follower (forwarded to the
    // leader), and a task that reaches the worker's agent over its session.
    let mut s = ServiceSpec::new("web", "shoal/whoami");
    s.mode = ServiceMode::Replicated { replicas: 1 };
    s.placement.constraints = vec!["node.role==worker".into()];
    m2.propose(Command::CreateService { spec: s }).await.unwrap().unwrap();
    eventually("the worker runs the new task", 20, || async {
        m1.state().await.tasks.values().any(|t| t.status.state == TaskState::Running).then_some(())
    })
    .await;
    // New connections: the renewed certificates are accepted, the expired ones are not.
    for (n, old) in nodes.iter().zip(&first) {
        let role = if n.name == "w1" { Role::Worker } else { Role::Manager };
        let mut renewed = client(&m1.addr, &files(n), Trust::AnyManager);
        let r = renewed.api(ApiRequest::View).await;
        match role {
            Role::Manager => assert!(r.is_ok(), "{}: renewed certificate refused: {r:?}", n.name),
            Role::Worker => assert_eq!(r.unwrap_err().code(), tonic::Code::PermissionDenied, "a worker's renewed certificate says worker"),
        }
        let mut expired = client(&m1.addr, old, Trust::AnyManager);
        let err = expired.api(ApiRequest::View).await.expect_err("an expired certificate must be refused");
        assert_ne!(err.code(), tonic::Code::PermissionDenied, "refused by the TLS handshake, not by a role check: {err:?}");
    }
    agent.abort();
    for n in [w1, m2, m1] {
        n.kill().await;
    }
}

fn demote(node: &str) -> Command {
    Command::UpdateNode { node: node.into(), availability: None, role: Some(Role::Worker), label_add: Default::default(), label_rm: vec![] }
}

fn vote() -> RaftRpc {
    RaftRpc::Vote(openraft::raft::VoteRequest { vote: openraft::Vote::new(0, 0), last_log_id: None })
}

/// A demoted manager's certificate, and then a removed one's, are refused for `raft` and `api`
/// although they are still valid; agents take only current managers for managers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demoted_and_removed_nodes_certificates_are_refused() {
    let (mut ms, ws, _, _) = cluster(2, 1).await;
    let agent = sim_agent(ws[0].node.clone());
    let m2_id = ms[1].node.node_id().await.unwrap();
    let m1_id = ms[0].node.node_id().await.unwrap();
    let old = files(&ms[1]);
    // Before anything: the manager certificate works for both calls.
    assert!(client(&ms[0].addr, &old, Trust::AnyManager).api(ApiRequest::View).await.is_ok());

    // An agent that knows m1 as the only manager does not take m2 for one, though m2's
    // certificate is a valid manager certificate of the cluster CA.
    let worker = files(&ws[0]);
    let creds = Credentials::new(worker.clone()).unwrap();
    creds.set_managers([m1_id.clone()].into_iter().collect());
    let cfg = tls::client_config(&creds, Trust::CurrentManagers).unwrap();
    let err = tls::client(&ms[1].addr, cfg.clone()).unwrap().api(ApiRequest::View).await.expect_err("m2 is not in the set");
    assert_eq!(err.code(), tonic::Code::Unavailable, "the handshake fails: {err:?}");
    let err = tls::client(&ms[0].addr, cfg).unwrap().api(ApiRequest::View).await.expect_err("a worker may not call api");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "m1 is accepted (the worker is then refused by role): {err:?}");

    // Demoted: the old manager certificate no longer opens `api` or `raft`.
    ms[0].propose(demote(&m2_id)).await.unwrap().unwrap();
    eventually("m2 stops its manager role", 40, || async { ms[1].node.manager().await.is_none().then_some(()) }).await;
    let mut c = client(&ms[0].addr, &old, Trust::AnyManager);
    let err = c.api(ApiRequest::View).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("demoted"), "{}", err.message());
    let err = c.raft(vote()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // The agents are told the managers are m1 alone.
    eventually("the worker's agent hears of one manager", 20, || async {
        (ms[0].node.manager().await.unwrap().manager_ids() == vec![m1_id.clone()]).then_some(())
    })
    .await;

    // Removed: refused for good, whatever the certificate says.
    ms.remove(1).kill().await;
    ms[0].propose(Command::RemoveNode { node: m2_id.to_string(), force: true }).await.unwrap().unwrap();
    let err = c.api(ApiRequest::View).await.unwrap_err();
    assert!(err.message().contains("removed"), "{}", err.message());
    let err = c.raft(vote()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("removed"), "{}", err.message());
    // Nor can it renew its certificate or open a session.
    let err = c.renew(shoal_control::rpc::messages::RenewRequest { csr_pem: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    agent.abort();
}

/// `shoal ca --rotate` (through a follower): every node renews from the new root while every
/// link stays up, the rotation ends by itself, the old root's certificates are refused
/// afterwards, and the join tokens carry the new root's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_reaches_every_node_with_no_link_dropped_and_retires_the_old_root() {
    let (ms, ws, old_worker_token, _) = cluster(2, 1).await;
    let agent = sim_agent(ws[0].node.clone());
    let nodes = [&ms[0], &ms[1], &ws[0]];
    let old: Vec<TlsIdentity> = nodes.iter().map(|n| files(n)).collect();
    let old_root = ms[0].state().await.cluster.unwrap().ca_cert_pem;
    eventually("the worker's session is up", 20, || async { (*ws[0].node.connected().borrow()).then_some(()) }).await;
    // Any drop of the worker's session during the rotation is seen here.
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let (mut connected, dropped) = (ws[0].node.connected(), dropped.clone());
        tokio::spawn(async move {
            while connected.changed().await.is_ok() {
                if !*connected.borrow() {
                    dropped.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    match ms[1].api(ApiRequest::RotateCa).await.unwrap() {
        shoal_control::rpc::messages::ApiResponse::Committed { result, .. } => result.unwrap(),
        other => panic!("{other:?}"),
    };
    let again = match ms[0].api(ApiRequest::RotateCa).await.unwrap() {
        shoal_control::rpc::messages::ApiResponse::Committed { result, .. } => result,
        other => panic!("{other:?}"),
    };
    // Refused unless the first one already ended (it may: three nodes renew fast).
    if let Err(e) = again {
        assert!(e.to_string().contains("already in progress"), "{e}");
    }
    eventually("the rotation ends", 40, || async { ms[0].state().await.cluster.unwrap().ca_rotation.is_none().then_some(()) }).await;
    let new_root = ms[0].state().await.cluster.unwrap().ca_cert_pem;
    assert_ne!(new_root, old_root);
    let want: std::collections::BTreeSet<String> = [shoal_control::ca::ca_digest(&new_root)].into_iter().collect();
    eventually("every node trusts the new root alone", 30, || async {
        nodes.iter().all(|n| shoal_control::ca::bundle_digests(&files(n).ca_pem) == want).then_some(())
    })
    .await;
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst), "the worker's session dropped during the rotation");
    watch.abort();
    // Work still flows to the worker over its session.
    let mut s = ServiceSpec::new("web", "shoal/whoami");
    s.placement.constraints = vec!["node.role==worker".into()];
    ms[0].propose(Command::CreateService { spec: s }).await.unwrap().unwrap();
    eventually("the worker runs the new task", 20, || async {
        ms[0].state().await.tasks.values().any(|t| t.status.state == TaskState::Running).then_some(())
    })
    .await;
    // New connections: the new certificates are accepted, the old root's are not.
    for (n, old) in nodes.iter().zip(&old) {
        if n.name.starts_with('m') {
            assert!(client(&ms[0].addr, &files(n), Trust::AnyManager).api(ApiRequest::View).await.is_ok(), "{}", n.name);
            let err = client(&ms[0].addr, old, Trust::AnyManager).api(ApiRequest::View).await.expect_err("the old root is retired");
            assert_ne!(err.code(), tonic::Code::PermissionDenied, "refused by the handshake: {err:?}");
        }
    }
    // Tokens: the old one (old digest) is refused, the current one joins.
    let w2 = TestNode::start("w2").await;
    let err = w2.join(&old_worker_token, &ms[0].addr).await.unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    let tokens = ms[0].api(ApiRequest::JoinTokens { rotate: None }).await.unwrap();
    let shoal_control::rpc::messages::ApiResponse::JoinTokens { worker, .. } = tokens else { panic!("{tokens:?}") };
    assert_eq!(w2.join(&worker, &ms[0].addr).await.unwrap(), Role::Worker);
    agent.abort();
}
