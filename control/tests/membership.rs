//! Promote/demote change the Raft membership; `init --force-new-cluster` recovers a lost quorum; a
//! restarted node tells the managers what its (new) kernel offers encrypted networks.

mod common;

use common::*;
use shoal_control::model::{Role, ServiceSpec};
use shoal_control::node::{InitOptions, LocalReply, LocalRequest};
use shoal_control::state::Command;

fn role_cmd(node: &str, role: Role) -> Command {
    Command::UpdateNode { node: node.into(), availability: None, role: Some(role), label_add: Default::default(), label_rm: vec![] }
}

async fn voters(n: &TestNode) -> usize {
    let m = n.node.manager().await.unwrap();
    let met = m.raft().metrics().borrow().clone();
    let mem = met.membership_config.membership();
    if mem.get_joint_config().len() == 1 {
        mem.voter_ids().count()
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_demote_change_raft_membership() {
    let (ms, ws, _, _) = cluster(1, 2).await;
    for w in &ws {
        let id = w.node.node_id().await.unwrap();
        ms[0].propose(role_cmd(&id, Role::Manager)).await.unwrap().unwrap();
    }
    eventually("three voters after promoting two workers", 40, || async { (voters(&ms[0]).await == 3).then_some(()) }).await;
    // The promoted nodes run the manager role and answer API calls.
    for w in &ws {
        let st = eventually("the promoted node serves the API", 20, || async {
            w.api(shoal_control::rpc::messages::ApiRequest::View).await.ok()
        })
        .await;
        let _ = st;
    }
    // A write through a promoted manager commits.
    ws[0].propose(Command::CreateService { spec: ServiceSpec::new("via-promoted", "nginx") }).await.unwrap().unwrap();
    // Demote one back.
    let id = ws[1].node.node_id().await.unwrap();
    ms[0].propose(role_cmd(&id, Role::Worker)).await.unwrap().unwrap();
    eventually("two voters after a demote", 40, || async { (voters(&ms[0]).await == 2).then_some(()) }).await;
    eventually("the demoted node stops its manager role", 20, || async { ws[1].node.manager().await.is_none().then_some(()) }).await;
    let err = ws[1].api(shoal_control::rpc::messages::ApiRequest::View).await.unwrap_err();
    assert!(err.contains("not a manager"), "{err}");
    // The last manager cannot be demoted.
    let me = ms[0].node.node_id().await.unwrap();
    let other = ws[0].node.node_id().await.unwrap();
    ms[0].propose(role_cmd(&other, Role::Worker)).await.unwrap().unwrap();
    eventually("one voter", 40, || async { (voters(&ms[0]).await == 1).then_some(()) }).await;
    let err = ms[0].propose(role_cmd(&me, Role::Worker)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("last manager"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_recovers_a_lost_quorum() {
    let (mut ms, _ws, _, _) = cluster(3, 0).await;
    ms[0].propose(Command::CreateService { spec: ServiceSpec::new("kept", "nginx") }).await.unwrap().unwrap();
    let survivor = ms.remove(0);
    eventually("the survivor has applied the write", 20, || async { survivor.state().await.find_service("kept").is_ok().then_some(()) })
        .await;
    for m in ms {
        m.kill().await;
    }
    // No quorum: writes fail.
    let r = survivor.propose(Command::CreateService { spec: ServiceSpec::new("lost", "nginx") }).await;
    assert!(r.is_err() || r.as_ref().unwrap().is_err(), "{r:?}");
    let reply = survivor
        .node
        .handle(LocalRequest::Init(InitOptions {
            advertise_addr: survivor.addr.clone(),
            listen_addr: None,
            default_addr_pool: vec![],
            default_addr_pool_mask_length: 24,
            force_new_cluster: true,
            task_history_limit: None,
            cert_expiry_ms: None,
            autolock: false,
        }))
        .await
        .unwrap();
    assert!(matches!(reply, LocalReply::Initialized { .. }));
    let r = eventually("writes work again", 30, || async {
        survivor.propose(Command::CreateService { spec: ServiceSpec::new("after", "nginx") }).await.ok()
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    let st = survivor.state().await;
    assert!(st.find_service("kept").is_ok(), "committed state survived");
    assert_eq!(st.nodes.values().filter(|n| n.role == Role::Manager).count(), 1);
    assert_eq!(voters(&survivor).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_resumes_from_disk() {
    use shoal_control::manager::RaftTiming;
    use shoal_control::node::{NodeConfig, NodeControl};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = || {
        let mut c = NodeConfig::new(dir.path());
        c.socket = None;
        c.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
        c.advertise_addr = Some(format!("127.0.0.1:{port}"));
        c.heartbeat_period = Duration::from_millis(200);
        c.raft = RaftTiming { heartbeat_ms: 100, election_min_ms: 500, election_max_ms: 1000, snapshot_every: 5000 };
        c
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = NodeControl::start(cfg(), rx).await.unwrap();
    let t = TestNode { node, stop, addr: format!("127.0.0.1:{port}"), dir: tempfile::tempdir().unwrap(), name: "m".into() };
    t.init().await;
    t.propose(Command::CreateService { spec: ServiceSpec::new("durable", "nginx") }).await.unwrap().unwrap();
    t.stop.send_replace(true);
    t.node.stop().await;
    drop(t);
    // Same state directory, same port: the manager comes back with its log and leads again.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = eventually("the node restarts (port and database released)", 20, || {
        let rx = rx.clone();
        let c = cfg();
        async move { NodeControl::start(c, rx).await.ok() }
    })
    .await;
    let t = TestNode { node, stop, addr: format!("127.0.0.1:{port}"), dir: tempfile::tempdir().unwrap(), name: "m".into() };
    let r = eventually("writes after restart", 30, || async {
        t.propose(Command::CreateService { spec: ServiceSpec::new("later", "nginx") }).await.ok()
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    let st = t.state().await;
    assert!(st.find_service("durable").is_ok());
    assert!(st.find_service("later").is_ok());
}

/// A worker's daemon restarts on a kernel that offers more (a reboot into a kernel with
/// WireGuard): its agent says so when its session opens, the managers record it (`node
/// inspect`'s "encryption"), and the next `--opt encrypted` network picks with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_tells_its_new_kernels_encryption_support() {
    use shoal_control::model::{EncryptionBackend, EncryptionSupport, NetworkSpec};
    use shoal_control::node::{NodeConfig, NodeControl};
    use std::time::Duration;
    let (ms, _, wt, _) = cluster(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = |encryption: EncryptionSupport| {
        let mut c = NodeConfig::new(dir.path());
        c.socket = None;
        c.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
        c.advertise_addr = Some(format!("127.0.0.1:{port}"));
        c.heartbeat_period = Duration::from_millis(200);
        c.hostname = "w".into();
        c.encryption = encryption;
        c
    };
    let userspace_only = EncryptionSupport { kernel_wireguard: false, esp: false, tun: true };
    let everything = EncryptionSupport { kernel_wireguard: true, esp: true, tun: true };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = NodeControl::start(cfg(userspace_only), rx).await.unwrap();
    let w = TestNode { node, stop, addr: format!("127.0.0.1:{port}"), dir: tempfile::tempdir().unwrap(), name: "w".into() };
    w.join(&wt, &ms[0].addr).await.unwrap();
    let id = w.node.node_id().await.unwrap();
    assert_eq!(ms[0].state().await.nodes[&id].encryption, userspace_only, "reported at join");
    w.stop.send_replace(true);
    w.node.stop().await;
    drop(w);

    // The manager's own kernel offers everything too.
    let m_id = ms[0].node.node_id().await.unwrap();
    ms[0].propose(Command::SetNodeEncryption { node: m_id, encryption: everything }).await.unwrap().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = eventually("the worker restarts", 20, || {
        let rx = rx.clone();
        let c = cfg(everything);
        async move { NodeControl::start(c, rx).await.ok() }
    })
    .await;
    let _w = TestNode { node, stop, addr: format!("127.0.0.1:{port}"), dir: tempfile::tempdir().unwrap(), name: "w".into() };
    eventually("the new kernel's support is recorded", 20, || async {
        (ms[0].state().await.nodes[&id].encryption == everything).then_some(())
    })
    .await;
    let mut spec = NetworkSpec { name: "secure".into(), driver: "overlay".into(), ..Default::default() };
    spec.options.insert("encrypted".into(), String::new());
    ms[0].propose(Command::CreateNetwork { spec }).await.unwrap().unwrap();
    let st = ms[0].state().await;
    assert_eq!(st.find_network("secure").unwrap().encryption, Some(EncryptionBackend::Wireguard), "kernel WireGuard on every node now");
}
