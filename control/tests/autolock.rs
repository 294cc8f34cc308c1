//! Autolock (issue 14 item 3): with `init --autolock` the managers' node key and Raft data key
//! are sealed under the unlock key; a restarted manager serves nothing (no local API, no manager
//! port) until `unlock` with the right key; the key can be rotated and autolock turned off, and
//! the files follow.

mod common;

use common::*;
use shoal_control::manager::RaftTiming;
use shoal_control::model::Role;
use shoal_control::node::{InitOptions, LocalReply, LocalRequest, NodeConfig, NodeControl};
use shoal_control::rpc::messages::{ApiRequest, ApiResponse};
use shoal_control::store::crypto::{is_sealed, UnlockKey};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

fn sealed(dir: &Path) -> (bool, bool) {
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap_or_default();
    (is_sealed(&read("certs/node.key")), is_sealed(&read("raft/data.key")))
}

async fn start_at(dir: &Path, port: u16, name: &str) -> (NodeControl, watch::Sender<bool>) {
    let mut cfg = NodeConfig::new(dir);
    cfg.socket = None;
    cfg.listen_addr = SocketAddr::from(([127, 0, 0, 1], port));
    cfg.advertise_addr = Some(format!("127.0.0.1:{port}"));
    cfg.heartbeat_period = Duration::from_millis(200);
    cfg.hostname = name.to_string();
    cfg.raft = RaftTiming { heartbeat_ms: 100, election_min_ms: 500, election_max_ms: 1000, snapshot_every: 5000 };
    let (stop, rx) = watch::channel(false);
    (NodeControl::start(cfg, rx).await.unwrap(), stop)
}

async fn unlock_key(n: &TestNode, rotate: bool) -> String {
    match n.api(ApiRequest::UnlockKey { rotate }).await.unwrap() {
        ApiResponse::UnlockKey(Some(k)) => k,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_manager_serves_nothing_until_unlocked_and_the_key_rotates_and_turns_off() {
    let m1 = TestNode::start("m1").await;
    let reply = m1
        .node
        .handle(LocalRequest::Init(InitOptions {
            advertise_addr: m1.addr.clone(),
            listen_addr: None,
            default_addr_pool: vec![],
            default_addr_pool_mask_length: 24,
            force_new_cluster: false,
            task_history_limit: None,
            cert_expiry_ms: None,
            autolock: true,
        }))
        .await
        .unwrap();
    let LocalReply::Initialized { unlock_key: Some(key), manager_token, worker_token, .. } = reply else { panic!("{reply:?}") };
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    let m2 = TestNode::start("m2").await;
    assert_eq!(m2.join(&manager_token, &m1.addr).await.unwrap(), Role::Manager);
    let w1 = TestNode::start("w1").await;
    assert_eq!(w1.join(&worker_token, &m1.addr).await.unwrap(), Role::Worker);
    eventually("both managers' keys sealed", 20, || async {
        (sealed(m1.dir.path()) == (true, true) && sealed(m2.dir.path()) == (true, true)).then_some(())
    })
    .await;
    assert!(!sealed(w1.dir.path()).0, "a worker's key stays plain: autolock is for managers");
    assert_eq!(unlock_key(&m2, false).await, key, "every manager gives the same key");
    let view = m1.state().await;
    assert_eq!(view.cluster.unwrap().autolock_key.as_deref(), Some(""), "the view says autolock is on, not the key");

    // m2 restarts: locked. Nothing is served: no cluster calls, no manager port.
    let (dir, port) = (m2.dir.path().to_path_buf(), m2.addr.rsplit_once(':').unwrap().1.parse::<u16>().unwrap());
    m2.stop.send_replace(true);
    m2.node.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (node, stop) = start_at(&dir, port, "m2").await;
    let err = node.handle(LocalRequest::Api(ApiRequest::View)).await.unwrap_err().to_string();
    assert!(err.contains("unlock"), "{err}");
    assert!(node.manager().await.is_none());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "a locked manager listens on nothing");
    let err = node.handle(LocalRequest::Unlock { key: UnlockKey::random().to_string() }).await.unwrap_err().to_string();
    assert!(err.contains("invalid key"), "{err}");
    let err = node.handle(LocalRequest::Unlock { key: "not a key".into() }).await.unwrap_err().to_string();
    assert!(err.contains("invalid key"), "{err}");
    assert!(matches!(node.handle(LocalRequest::Unlock { key: key.clone() }).await.unwrap(), LocalReply::Unlocked));
    assert!(node.manager().await.is_some(), "unlocked: the manager runs");
    eventually("the unlocked manager serves the cluster again", 20, || async {
        match node.handle(LocalRequest::Api(ApiRequest::View)).await {
            Ok(LocalReply::Api(ApiResponse::View(v))) => (v.state.nodes.len() == 3).then_some(()),
            _ => None,
        }
    })
    .await;
    let err = node.handle(LocalRequest::Unlock { key: key.clone() }).await.unwrap_err().to_string();
    assert!(err.contains("not locked"), "{err}");

    // Rotation: the files follow the new key; the old one opens them no more.
    let new = unlock_key(&m1, true).await;
    assert_ne!(new, key);
    let old_key = UnlockKey::parse(&key).unwrap();
    let new_key = UnlockKey::parse(&new).unwrap();
    eventually("both managers' files sealed under the new key", 20, || async {
        let ok = [m1.dir.path(), dir.as_path()].iter().all(|d| {
            let f = std::fs::read(d.join("certs/node.key")).unwrap_or_default();
            new_key.unseal(&f).is_some() && old_key.unseal(&f).is_none()
        });
        ok.then_some(())
    })
    .await;

    // Off: plain files again.
    match m1.api(ApiRequest::SetAutolock(false)).await.unwrap() {
        ApiResponse::UnlockKey(None) => {}
        other => panic!("{other:?}"),
    }
    eventually("both managers' files plain", 20, || async {
        (sealed(m1.dir.path()) == (false, false) && sealed(&dir) == (false, false)).then_some(())
    })
    .await;
    stop.send_replace(true);
    node.stop().await;
}
