//! Liveness (issue 14 item 5): a leader whose Raft core dies (a storage error, a full disk, a
//! panic) steps down instead of holding its agents' sessions while the others elect a new
//! leader and reschedule their tasks: the agents move to the new leader, and no task runs twice.

mod common;

use common::*;
use shoal_control::model::{ServiceMode, ServiceSpec, TaskState};
use shoal_control::state::Command;
use std::time::{Duration, Instant};

fn live_tasks(s: &shoal_control::state::ClusterState, service: &str) -> usize {
    let Some(sid) = s.services.values().find(|x| x.spec.name == service).map(|x| x.id.clone()) else { return 0 };
    s.tasks.values().filter(|t| t.service_id == sid && t.desired_state == TaskState::Running && !t.status.state.is_terminal()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_raft_core_dies_steps_down_and_its_agents_move_with_no_task_twice() {
    let (ms, ws, _, _) = cluster(3, 1).await;
    let agent = sim_agent(ws[0].node.clone());
    let mut s = ServiceSpec::new("web", "shoal/whoami");
    s.mode = ServiceMode::Replicated { replicas: 2 };
    s.placement.constraints = vec!["node.role==worker".into()];
    ms[0].propose(Command::CreateService { spec: s }).await.unwrap().unwrap();
    eventually("2 tasks running on the worker", 20, || async {
        let st = ms[0].state().await;
        (st.tasks.values().filter(|t| t.status.state == TaskState::Running).count() == 2).then_some(())
    })
    .await;
    let mut leader = None;
    for (i, m) in ms.iter().enumerate() {
        if m.node.manager().await.unwrap().is_leader() {
            leader = Some(i);
        }
    }
    let leader = leader.expect("a leader");
    let dead = ms[leader].node.manager().await.unwrap();
    let killed = Instant::now();
    dead.kill_raft_core().await;
    assert!(!dead.is_leader(), "a stopped Raft core is no leader, whatever its last metrics said");
    assert_eq!(dead.leader_addr(), None);
    let others: Vec<&TestNode> = ms.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, m)| m).collect();
    let new = eventually("another manager leads", 15, || async {
        for m in &others {
            if m.node.manager().await.unwrap().is_leader() {
                return Some(*m);
            }
        }
        None
    })
    .await;
    // The worker's agent is on the new leader: a task created now reaches it and runs.
    let mut s = ServiceSpec::new("after", "shoal/whoami");
    s.placement.constraints = vec!["node.role==worker".into()];
    new.propose(Command::CreateService { spec: s }).await.unwrap().unwrap();
    eventually("the new service's task runs", 20, || async { (live_tasks(&new.state().await, "after") == 1).then_some(()) }).await;
    let moved = killed.elapsed();
    assert!(moved < Duration::from_secs(30), "took {moved:?}");
    // The worker stayed Ready and its two tasks were neither lost nor doubled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = new.state().await;
    let worker = ws[0].node.node_id().await.unwrap();
    assert_eq!(st.nodes[&worker].state, shoal_control::model::NodeState::Ready, "the worker must not be marked down");
    assert_eq!(live_tasks(&st, "web"), 2, "no task of web ran twice or was lost");
    assert_eq!(st.tasks.values().filter(|t| t.status.state == TaskState::Orphaned).count(), 0);
    eprintln!("agents on the new leader {moved:?} after the Raft core stopped");
    agent.abort();
}
