//! Multi-manager tests on loopback: join, leader failover, partitions, refusals.

mod common;

use common::*;
use shoal_control::model::{ServiceMode, ServiceSpec};
use shoal_control::rpc::messages::ApiRequest;
use shoal_control::state::{Command, Response};

fn spec(name: &str, replicas: i64) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, "nginx");
    s.mode = ServiceMode::Replicated { replicas };
    s
}

async fn leader_index(ms: &[TestNode]) -> usize {
    let mut found = None;
    for (i, m) in ms.iter().enumerate() {
        if let Some(mgr) = m.node.manager().await {
            if mgr.is_leader() {
                found = Some(i);
            }
        }
    }
    found.expect("a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_survive_leader_loss_without_losing_writes() {
    let (mut ms, _ws, _, _) = cluster(3, 0).await;
    // Writes through any manager (followers forward to the leader).
    for (i, m) in ms.iter().enumerate() {
        let r = m.propose(Command::CreateService { spec: spec(&format!("svc{i}"), 1) }).await.unwrap();
        assert!(matches!(r, Ok(Response::Created { .. })), "{r:?}");
    }
    let old = leader_index(&ms).await;
    let old_id = ms[old].raft_id().await;
    let dead = ms.remove(old);
    dead.kill().await;
    let survivors = &ms;
    let new_leader = eventually("a new leader among the survivors", 30, || async {
        for m in survivors {
            let mgr = m.node.manager().await.unwrap();
            let l = mgr.raft().metrics().borrow().current_leader;
            if let Some(l) = l {
                if l != old_id {
                    return Some(l);
                }
            }
        }
        None
    })
    .await;
    assert_ne!(new_leader, old_id);
    // No committed write was lost (a follower applies them once the new leader commits in
    // its term), and writes go on.
    for m in survivors {
        // Reads are linearizable: they fail until the survivor reaches the new leader.
        eventually("every committed write on every survivor", 20, || async {
            let st = m.view().await.ok()?.state;
            (0..3).all(|i| st.find_service(&format!("svc{i}")).is_ok()).then_some(())
        })
        .await;
    }
    let r = eventually("a write after failover", 30, || async {
        survivors[0].propose(Command::CreateService { spec: spec("after", 1) }).await.ok()
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    for m in survivors {
        let st = eventually("the new write is applied everywhere", 10, || async {
            let st = m.view().await.ok()?.state;
            st.find_service("after").is_ok().then_some(st)
        })
        .await;
        assert_eq!(st.services.len(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_manager_cannot_commit() {
    let (ms, _ws, _, _) = cluster(3, 0).await;
    let li = leader_index(&ms).await;
    let isolated = &ms[li];
    let others: Vec<&TestNode> = ms.iter().enumerate().filter(|(i, _)| *i != li).map(|(_, m)| m).collect();
    // Cut the leader off both ways.
    let iso_mgr = isolated.node.manager().await.unwrap();
    for o in &others {
        iso_mgr.faults().block(&o.addr);
        o.node.manager().await.unwrap().faults().block(&isolated.addr);
    }
    let r = isolated.propose(Command::CreateService { spec: spec("split-brain", 1) }).await;
    assert!(r.is_err(), "the isolated manager committed a write: {r:?}");
    // The majority elects a leader and commits.
    let r = eventually("the majority commits", 30, || async {
        others[0].propose(Command::CreateService { spec: spec("majority", 1) }).await.ok()
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    // Heal: the isolated manager catches up; the split-brain write never shows up.
    iso_mgr.faults().heal();
    for o in &others {
        o.node.manager().await.unwrap().faults().heal();
    }
    // Its reads fail until it reaches the new leader, then come from its own replica once it
    // has caught up (`this_manager`).
    let iso_id = isolated.raft_id().await;
    let st = eventually("the isolated manager catches up", 30, || async {
        let v = isolated.view().await.ok()?;
        (v.this_manager == iso_id && v.state.find_service("majority").is_ok()).then_some(v.state)
    })
    .await;
    assert!(st.find_service("split-brain").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_wrong_ca_are_refused() {
    let (ms, _ws, wt, _) = cluster(1, 0).await;
    let other = TestNode::start("other").await;
    let (other_wt, _) = other.init().await;
    // Right CA digest, wrong secret.
    let n = TestNode::start("x").await;
    let digest = &wt["SWMTKN-1-".len().."SWMTKN-1-".len() + 50];
    let bad_secret = format!("SWMTKN-1-{digest}-{}", "0".repeat(25));
    let err = n.join(&bad_secret, &ms[0].addr).await.unwrap_err();
    assert!(err.contains("invalid join token"), "{err}");
    // Token of another cluster: its CA digest does not match this manager's CA.
    let err = n.join(&other_wt, &ms[0].addr).await.unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    // Malformed token.
    let err = n.join("SWMTKN-1-nope", &ms[0].addr).await.unwrap_err();
    assert!(err.contains("token"), "{err}");
    // Nothing was added.
    assert_eq!(ms[0].state().await.nodes.len(), 1);
    // And the right token still works.
    assert!(n.join(&wt, &ms[0].addr).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_certificates_cannot_call_manager_rpcs() {
    let (ms, ws, _, _) = cluster(1, 1).await;
    let dir = ws[0].dir.path();
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let id = shoal_control::rpc::tls::TlsIdentity {
        ca_pem: read("certs/ca.pem"),
        cert_pem: read("certs/node.pem"),
        key_pem: read("certs/node.key"),
    };
    let creds = shoal_control::rpc::creds::Credentials::new(id.clone()).unwrap();
    let cfg = shoal_control::rpc::tls::client_config(&creds, shoal_control::rpc::tls::Trust::AnyManager).unwrap();
    let mut client = shoal_control::rpc::tls::client(&ms[0].addr, cfg).unwrap();
    let err = client.api(ApiRequest::View).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("worker"), "{}", err.message());
    let err = client.api(ApiRequest::Propose(Command::Tick)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Without any certificate, manager calls are refused too.
    let (anon, _) = shoal_control::rpc::tls::join_config(&shoal_control::ca::ca_digest(&id.ca_pem)).unwrap();
    let mut client = shoal_control::rpc::tls::client(&ms[0].addr, anon).unwrap();
    let err = client.api(ApiRequest::View).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // A worker's local API refuses cluster calls with Docker's message.
    let err = ws[0].api(ApiRequest::View).await.unwrap_err();
    assert!(err.contains("not a manager"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_through_the_api_and_change_nothing() {
    let (ms, _ws, _, _) = cluster(1, 0).await;
    let before = ms[0].state().await;
    let mut s = spec("web", 1);
    s.networks = vec!["nope".into()];
    let err = ms[0].propose(Command::CreateService { spec: s }).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("networks[0]"), "{err}");
    let err = ms[0].propose(Command::CreateService { spec: spec("web", -1) }).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("replicas"), "{err}");
    let after = ms[0].state().await;
    assert_eq!(before.services, after.services);
    assert_eq!(before.tasks, after.tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_managers_keep_quorum_after_losing_two() {
    let (mut ms, _ws, _, _) = cluster(5, 0).await;
    ms[0].propose(Command::CreateService { spec: spec("before", 1) }).await.unwrap().unwrap();
    for _ in 0..2 {
        let li = leader_index(&ms).await;
        let dead = ms.remove(li);
        dead.kill().await;
        let survivors = &ms;
        eventually("writes with the remaining managers", 40, || async {
            survivors[0].propose(Command::Tick).await.ok().and_then(|r| r.ok())
        })
        .await;
        // Wait until one of the survivors leads before killing again.
        eventually("a leader among survivors", 20, || async {
            for m in survivors {
                if m.node.manager().await.unwrap().is_leader() {
                    return Some(());
                }
            }
            None
        })
        .await;
    }
    let st = eventually("the early write is everywhere", 20, || async {
        let st = ms[2].state().await;
        st.find_service("before").is_ok().then_some(st)
    })
    .await;
    assert_eq!(st.nodes.len(), 5);
}
