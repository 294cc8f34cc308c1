//! Dispatcher tests with simulated agents on loopback: assignments and the endpoint table
//! reach the nodes, task states come back, a silent node goes DOWN and its tasks move.

mod common;

use common::*;
use shoal_control::model::{NodeState, ServiceMode, ServiceSpec, TaskState};
use shoal_control::state::Command;

fn spec(name: &str, replicas: i64) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, "nginx");
    s.mode = ServiceMode::Replicated { replicas };
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_assignments_and_endpoints_and_report_back() {
    let (ms, ws, _, _) = cluster(1, 2).await;
    let mut agents = vec![sim_agent(ms[0].node.clone())];
    for w in &ws {
        agents.push(sim_agent(w.node.clone()));
    }
    eventually("all nodes ready", 20, || async {
        let st = ms[0].state().await;
        st.nodes.values().all(|n| n.state == NodeState::Ready).then_some(())
    })
    .await;
    ms[0].propose(Command::CreateService { spec: spec("web", 6) }).await.unwrap().unwrap();
    let st = eventually("all six tasks running", 20, || async {
        let st = ms[0].state().await;
        (st.tasks.values().filter(|t| t.status.state == TaskState::Running).count() == 6).then_some(st)
    })
    .await;
    // Spread over the three nodes.
    for n in st.nodes.keys() {
        assert_eq!(st.tasks.values().filter(|t| t.node_id.as_ref() == Some(n)).count(), 2);
    }
    // Every node's view: its own two assignments, and all six endpoints with the service VIP.
    for node in ms.iter().chain(ws.iter()) {
        let snap = eventually("the endpoint table reaches the node", 20, || async {
            let snap = node.node.view().borrow().clone();
            (snap.view.endpoints.len() == 6).then_some(snap)
        })
        .await;
        assert_eq!(snap.view.assignments.len(), 2, "{}", node.name);
        let svc = snap.view.services.values().find(|s| s.name == "web").unwrap();
        assert!(svc.vips.is_empty(), "no networks, no VIPs");
        assert!(snap.view.networks.values().any(|n| n.ingress && n.vni == 4096));
        assert!(snap.version > 0);
    }
    for a in agents {
        a.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_down_and_its_tasks_move() {
    let (ms, mut ws, _, _) = cluster(1, 2).await;
    let mut agents = vec![sim_agent(ms[0].node.clone())];
    for w in &ws {
        agents.push(sim_agent(w.node.clone()));
    }
    eventually("all nodes ready", 20, || async { ms[0].state().await.nodes.values().all(|n| n.state == NodeState::Ready).then_some(()) })
        .await;
    ms[0].propose(Command::CreateService { spec: spec("web", 3) }).await.unwrap().unwrap();
    eventually("three tasks running", 20, || async {
        (ms[0].state().await.tasks.values().filter(|t| t.status.state == TaskState::Running).count() == 3).then_some(())
    })
    .await;
    let victim = ws.pop().unwrap();
    let victim_id = victim.node.node_id().await.unwrap();
    victim.kill().await;
    let st = eventually("the silent node is marked down", 30, || async {
        let st = ms[0].state().await;
        (st.nodes[&victim_id].state == NodeState::Down).then_some(st)
    })
    .await;
    assert_eq!(st.nodes[&victim_id].message, "heartbeat failure");
    let st = eventually("its task runs elsewhere", 30, || async {
        let st = ms[0].state().await;
        let running: Vec<_> =
            st.tasks.values().filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running).collect();
        (running.len() == 3 && running.iter().all(|t| t.node_id.as_ref() != Some(&victim_id))).then_some(st)
    })
    .await;
    let orphaned = st.tasks.values().filter(|t| t.node_id.as_ref() == Some(&victim_id)).count();
    assert_eq!(orphaned, 1);
    assert!(st.tasks.values().filter(|t| t.node_id.as_ref() == Some(&victim_id)).all(|t| t.status.state == TaskState::Orphaned));
    for a in agents {
        a.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_tasks_and_agents_stop_them() {
    let (ms, ws, _, _) = cluster(1, 1).await;
    let agents = [sim_agent(ms[0].node.clone()), sim_agent(ws[0].node.clone())];
    eventually("all nodes ready", 20, || async { ms[0].state().await.nodes.values().all(|n| n.state == NodeState::Ready).then_some(()) })
        .await;
    ms[0].propose(Command::CreateService { spec: spec("web", 4) }).await.unwrap().unwrap();
    let wid = ws[0].node.node_id().await.unwrap();
    eventually("four running", 20, || async {
        (ms[0].state().await.tasks.values().filter(|t| t.status.state == TaskState::Running).count() == 4).then_some(())
    })
    .await;
    ms[0]
        .propose(Command::UpdateNode {
            node: wid.to_string(),
            availability: Some(shoal_control::model::Availability::Drain),
            role: None,
            label_add: Default::default(),
            label_rm: vec![],
        })
        .await
        .unwrap()
        .unwrap();
    let st = eventually("tasks moved off the drained node and stopped there", 20, || async {
        let st = ms[0].state().await;
        let on_worker_live = st.tasks.values().filter(|t| t.node_id.as_ref() == Some(&wid) && t.status.state == TaskState::Running).count();
        let running = st.tasks.values().filter(|t| t.status.state == TaskState::Running).count();
        (on_worker_live == 0 && running == 4).then_some(st)
    })
    .await;
    assert!(st.tasks.values().filter(|t| t.node_id.as_ref() == Some(&wid)).all(|t| t.status.state == TaskState::Shutdown));
    // The drained node's view no longer lists those tasks.
    eventually("the drained node has no assignment left", 20, || async {
        ws[0].node.view().borrow().view.assignments.is_empty().then_some(())
    })
    .await;
    for a in agents {
        a.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_follow_a_new_leader_and_get_a_full_snapshot() {
    let (mut ms, ws, _, _) = cluster(3, 1).await;
    let agent = sim_agent(ws[0].node.clone());
    let mut updates = ws[0].node.subscribe();
    ms[0].propose(Command::CreateService { spec: spec("web", 2) }).await.unwrap().unwrap();
    eventually("the worker's view has the service", 20, || async {
        ws[0].node.view().borrow().view.services.values().any(|s| s.name == "web").then_some(())
    })
    .await;
    // Forget what the first session sent.
    while updates.try_recv().is_ok() {}
    // Kill the leader.
    let mut li = None;
    for (i, m) in ms.iter().enumerate() {
        if m.node.manager().await.unwrap().is_leader() {
            li = Some(i);
        }
    }
    let dead = ms.remove(li.unwrap());
    dead.kill().await;
    // A new session opens on the new leader and starts with a full snapshot.
    let full = eventually("a full snapshot from the new leader", 40, || {
        let u = updates.try_recv();
        async move {
            match u {
                Ok(u) if u.full => Some(u),
                _ => None,
            }
        }
    })
    .await;
    assert!(full.services.iter().any(|s| s.name == "web"));
    // Writes through a survivor reach the worker.
    eventually("a write after failover", 40, || async {
        ms[0].propose(Command::CreateService { spec: spec("after", 1) }).await.ok().and_then(|r| r.ok())
    })
    .await;
    eventually("the new service reaches the worker", 20, || async {
        ws[0].node.view().borrow().view.services.values().any(|s| s.name == "after").then_some(())
    })
    .await;
    agent.abort();
}

/// A worker whose session opened while there was one manager learns of managers that join
/// later (over its open session), so it can find the leader when the first manager dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_learn_of_managers_that_join_after_their_session_opened() {
    let (ms, ws, _, mt) = cluster(1, 1).await;
    let known = |node: shoal_control::node::NodeControl| async move {
        match node.handle(shoal_control::node::LocalRequest::Info).await.unwrap() {
            shoal_control::node::LocalReply::Info(i) => i.managers,
            other => panic!("{other:?}"),
        }
    };
    eventually("the worker's session is up", 20, || async { (*ws[0].node.connected().borrow()).then_some(()) }).await;
    assert_eq!(known(ws[0].node.clone()).await, vec![ms[0].addr.clone()]);
    let mut addrs = vec![ms[0].addr.clone()];
    let mut more = vec![];
    for name in ["m2", "m3"] {
        let n = TestNode::start(name).await;
        n.join(&mt, &ms[0].addr).await.unwrap();
        addrs.push(n.addr.clone());
        more.push(n);
    }
    addrs.sort();
    eventually("the worker knows all three managers", 20, || {
        let node = ws[0].node.clone();
        let addrs = addrs.clone();
        async move {
            let mut k = known(node).await;
            k.sort();
            (k == addrs).then_some(())
        }
    })
    .await;
    // ... and remembers them: a restarted worker starts from the managers in its node.json.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(ws[0].dir.path().join("node.json")).unwrap()).unwrap();
    let mut saved: Vec<String> = serde_json::from_value(saved["managers"].clone()).unwrap();
    saved.sort();
    assert_eq!(saved, addrs, "the worker's node.json does not list the managers it learned");
}

/// A stop waits until every connected node's data plane holds the view without the task
/// (`NodeControl::settled`): not while one node has not applied it, at once when it has (a
/// node whose view did not change since counts), and no longer for a node that went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_every_node_to_apply_the_withdrawal() {
    use std::time::Duration;
    let (ms, mut ws, _, _) = cluster(1, 2).await;
    let mut agents = vec![sim_agent(ms[0].node.clone())];
    for w in &ws {
        agents.push(sim_agent(w.node.clone()));
    }
    eventually("all nodes ready", 20, || async { ms[0].state().await.nodes.values().all(|n| n.state == NodeState::Ready).then_some(()) })
        .await;
    ms[0].propose(Command::CreateService { spec: spec("web", 3) }).await.unwrap().unwrap();
    for n in ms.iter().chain(ws.iter()) {
        eventually("three endpoints on every node", 20, || async { (n.node.view().borrow().view.endpoints.len() == 3).then_some(()) })
            .await;
    }
    // Scale down: one task leaves the endpoint table.
    let service = ms[0].state().await.services.keys().next().unwrap().clone();
    ms[0].propose(Command::ScaleService { service: service.to_string(), replicas: 2 }).await.unwrap().unwrap();
    for n in ms.iter().chain(ws.iter()) {
        eventually("two endpoints on every node", 20, || async { (n.node.view().borrow().view.endpoints.len() == 2).then_some(()) }).await;
    }
    let withdrawn = ms[0].node.view().borrow().version;
    // The manager and the first worker applied it; the second worker has not said so.
    ms[0].node.applied(withdrawn);
    ws[0].node.applied(ws[0].node.view().borrow().version);
    assert!(!ms[0].node.settled(withdrawn, Duration::from_millis(1500)).await, "settled while a node has not applied the withdrawal");
    ws[1].node.applied(ws[1].node.view().borrow().version);
    assert!(ms[0].node.settled(withdrawn, Duration::from_secs(5)).await, "every node applied it: settled");

    // A later version that changed the second worker's view only after it applied: waited for;
    // then the node goes away and is no longer waited for.
    ms[0].propose(Command::CreateService { spec: spec("api", 3) }).await.unwrap().unwrap();
    for n in ms.iter().chain(ws.iter()) {
        eventually("five endpoints on every node", 20, || async { (n.node.view().borrow().view.endpoints.len() == 5).then_some(()) }).await;
    }
    let later = ms[0].node.view().borrow().version;
    ms[0].node.applied(later);
    ws[0].node.applied(ws[0].node.view().borrow().version);
    assert!(!ms[0].node.settled(later, Duration::from_millis(1500)).await, "settled while a node has not applied the later view");
    let gone = ws.pop().unwrap();
    gone.kill().await;
    assert!(ms[0].node.settled(later, Duration::from_secs(10)).await, "a node that went away is not waited for");
    for a in agents {
        a.abort();
    }
}
