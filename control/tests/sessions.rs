//! Bounded peers (issue 14 item 6), through the real gRPC session of a node: a second session
//! of a node closes the first, and a report about a task the node does not run never becomes
//! a Raft entry.

mod common;

use common::*;
use shoal_control::model::{NodeState, ServiceMode, ServiceSpec, TaskState, TaskStatus};
use shoal_control::rpc::session::{AgentMessage, SessionMessage};
use shoal_control::rpc::tls::{self, TlsIdentity};
use shoal_control::state::Command;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

type Inbound = tonic::Streaming<SessionMessage>;

/// The node's certificate, read from its state directory (as its agent does).
fn identity(node: &TestNode) -> TlsIdentity {
    let read = |p: &str| std::fs::read_to_string(node.dir.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    TlsIdentity { ca_pem: read("certs/ca.pem"), cert_pem: read("certs/node.pem"), key_pem: read("certs/node.key") }
}

/// Open a session to `addr` as the node with `id`; heartbeats are up to the caller.
async fn open(addr: &str, id: &TlsIdentity) -> (mpsc::Sender<AgentMessage>, Inbound) {
    let creds = shoal_control::rpc::creds::Credentials::new(id.clone()).unwrap();
    let mut client = tls::client(addr, tls::client_config(&creds, tls::Trust::AnyManager).unwrap()).unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(AgentMessage::Heartbeat).await.unwrap();
    let inbound = client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("session opens").into_inner();
    (tx, inbound)
}

/// Whether the session stream ends (or errs) within `secs`, reading past updates.
async fn ends_within(inbound: &mut Inbound, secs: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match inbound.next().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_replaces_the_first_and_foreign_reports_are_dropped() {
    let (ms, mut ws, _, _) = cluster(1, 1).await;
    let worker = ws.pop().unwrap();
    let wid = worker.node.node_id().await.unwrap();
    let id = identity(&worker);
    // The worker's own agent goes away; the test speaks for the node from here on.
    worker.kill().await;
    let leader = ms[0].addr.clone();
    let (first_tx, mut first) = open(&leader, &id).await;
    let (second_tx, mut second) = open(&leader, &id).await;
    assert!(ends_within(&mut first, 10).await, "the first session of a node must close when a second opens");
    drop(first_tx);
    // The second session stays and keeps the node alive.
    let beat = tokio::spawn(async move {
        loop {
            if second_tx.send(AgentMessage::Heartbeat).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eventually("the node is ready", 20, || async { (ms[0].state().await.nodes[&wid].state == NodeState::Ready).then_some(()) }).await;
    let mut spec = ServiceSpec::new("web", "nginx");
    spec.mode = ServiceMode::Replicated { replicas: 2 };
    ms[0].propose(Command::CreateService { spec }).await.unwrap().unwrap();
    let st = eventually("a task on each node", 20, || async {
        let st = ms[0].state().await;
        (st.tasks.values().filter(|t| t.node_id.is_some()).count() == 2).then_some(st)
    })
    .await;
    let theirs = st.tasks.values().find(|t| t.node_id.as_deref() != Some(wid.as_str())).unwrap().id.clone();
    let mine = st.tasks.values().find(|t| t.node_id.as_deref() == Some(wid.as_str())).unwrap().id.clone();
    let version = st.version;
    // A report about another node's task, then one about its own: only the second is an entry.
    let (tx, mut inbound) = open(&leader, &id).await;
    assert!(ends_within(&mut second, 10).await, "the third session replaces the second");
    beat.abort();
    let running = |id: &str| (id.into(), TaskStatus::new(TaskState::Running, "", 0));
    tx.send(AgentMessage::TaskStatus { updates: vec![running(&theirs)] }).await.unwrap();
    tx.send(AgentMessage::TaskStatus { updates: vec![running(&mine)] }).await.unwrap();
    let st = eventually("the node's own report is recorded", 20, || async {
        let st = ms[0].state().await;
        (st.tasks[&mine].status.state == TaskState::Running).then_some(st)
    })
    .await;
    assert_ne!(st.tasks[&theirs].status.state, TaskState::Running, "a node spoke for another node's task");
    assert_eq!(st.version, version + 1, "the foreign report became a Raft entry");
    drop(tx);
    assert!(ends_within(&mut inbound, 10).await);
}
