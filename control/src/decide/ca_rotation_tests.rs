//! A root CA rotation through commands, ending once every live node renewed (`state/ca_rotation.rs`).

use crate::ca::{ca_digest, JoinToken, RootCa};
use crate::model::{CaRotation, NodeState, Role};
use crate::state::{ClusterState, Command, Request};
use crate::testkit;

fn apply(s: &mut ClusterState, cmd: Command) {
    crate::decide::apply(s, &Request { now_ms: 1, cmd }).unwrap();
}

#[test]
fn a_rotation_ends_when_every_live_node_renewed_and_tokens_keep_their_secrets() {
    let old = RootCa::generate("testcluster").unwrap();
    let mut cluster = testkit::cluster();
    cluster.ca_cert_pem = old.cert_pem.clone();
    cluster.ca_key_pem = old.key_pem.clone();
    cluster.worker_token = JoinToken::new(&old.digest()).to_string();
    cluster.manager_token = JoinToken::new(&old.digest()).to_string();
    let worker_secret = JoinToken::parse(&cluster.worker_token).unwrap().secret;
    let mut s = ClusterState::default();
    apply(&mut s, Command::Init { cluster, node: testkit::node("m1", Role::Manager) });
    apply(&mut s, Command::AddNode { node: testkit::node("w1", Role::Worker) });
    apply(&mut s, Command::AddNode { node: testkit::node("w2", Role::Worker) });
    apply(&mut s, Command::SetNodeState { node: "w2".into(), state: NodeState::Down, message: String::new() });
    let (new, cross) = old.rotate("testcluster").unwrap();
    let rotation = CaRotation {
        cert_pem: new.cert_pem.clone(),
        key_pem: new.key_pem.clone(),
        cross_signed_pem: cross,
        started_ms: 1,
        renewed: Default::default(),
    };
    apply(&mut s, Command::StartCaRotation { rotation: rotation.clone() });
    let again = crate::decide::apply(&mut s, &Request { now_ms: 1, cmd: Command::StartCaRotation { rotation } });
    assert!(again.unwrap_err().to_string().contains("already in progress"));
    let trust = s.cluster.as_ref().unwrap().trust_bundle();
    assert_eq!(crate::ca::bundle_digests(&trust), [old.digest(), new.digest()].into_iter().collect(), "both roots trusted");
    // A certificate of the old root does not count; nor does an unknown node.
    apply(&mut s, Command::CertIssued { node: "m1".into(), ca_digest: old.digest() });
    apply(&mut s, Command::CertIssued { node: "ghost".into(), ca_digest: new.digest() });
    apply(&mut s, Command::CertIssued { node: "m1".into(), ca_digest: new.digest() });
    assert!(s.cluster.as_ref().unwrap().ca_rotation.is_some(), "w1 has not renewed yet");
    apply(&mut s, Command::CertIssued { node: "w1".into(), ca_digest: new.digest() });
    let c = s.cluster.as_ref().unwrap();
    assert!(c.ca_rotation.is_none(), "w2 is down and does not hold the rotation up");
    assert_eq!(ca_digest(&c.ca_cert_pem), new.digest());
    assert_eq!(c.trust_bundle(), new.cert_pem, "the old root is trusted no more");
    let t = JoinToken::parse(&c.worker_token).unwrap();
    assert_eq!((t.ca_digest.as_str(), t.secret.as_str()), (new.digest().as_str(), worker_secret.as_str()));
}
