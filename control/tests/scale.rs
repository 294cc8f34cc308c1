//! The scale harness at a size a test run affords: three real managers on runtimes of their
//! own and 40 agents, each a whole node with its own certificate and dispatcher session over
//! TLS. Every node holds every endpoint of a new service, and what each holds is exactly the
//! view the leader builds for it; the leader is killed and, once the agents are with the new
//! leader, they hold the next service's endpoints too and nothing is doubled.

use shoal_control::dispatcher::{AgentView, EndpointTable};
use shoal_control::model::{NodeState, ServiceMode, ServiceSpec, TaskState};
use shoal_control::state::Command;
use shoal_control::testkit::scale::Harness;
use std::time::Duration;

const AGENTS: usize = 40;

fn spec(name: &str, replicas: i64) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, "nginx");
    s.mode = ServiceMode::Replicated { replicas };
    s
}

async fn eventually<T, F: FnMut() -> Fut, Fut: std::future::Future<Output = Option<T>>>(what: &str, secs: u64, mut f: F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many nodes hold `n` running endpoints of the service named `svc`.
fn holding(h: &Harness, svc: &str, n: usize) -> usize {
    h.nodes()
        .filter(|node| {
            let snap = node.view().borrow().clone();
            let Some(id) = snap.view.services.values().find(|s| s.name == svc).map(|s| s.id.clone()) else { return false };
            snap.view.endpoints.values().filter(|e| e.service_id == id && !e.draining).count() == n
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_holds_the_endpoints_and_its_own_view_through_a_leader_kill() {
    let dir = std::env::temp_dir().join(format!("shoal-scale-test-{}", std::process::id()));
    let mut h = Harness::start(&dir, 3, AGENTS, 8).await.expect("the harness starts");
    let total = AGENTS + 3;
    let leader = h.leader().await.expect("a leader").node.manager().await.unwrap();
    eventually("every node ready", 60, || async {
        leader.shared().read(|s| (s.nodes.len() == total && s.nodes.values().all(|n| n.state == NodeState::Ready)).then_some(()))
    })
    .await;

    h.managers[0].propose(Command::CreateService { spec: spec("web", 20) }).await.unwrap().expect("web is created");
    eventually("every node holds web's 20 endpoints", 60, || async { (holding(&h, "web", 20) == total).then_some(()) }).await;
    // Each node's folded deltas are the view the leader builds for that node alone.
    eventually("every node's view is the leader's view of it", 30, || async {
        let same = leader.shared().read(|s| {
            let table = EndpointTable::from_state(s);
            h.agents.iter().all(|a| {
                let want = AgentView::for_node(s, &a.id, &table);
                let got = a.node.view().borrow().view.clone();
                got.assignments == want.assignments
                    && got.endpoints == want.endpoints
                    && got.services == want.services
                    && got.networks == want.networks
            })
        });
        same.then_some(())
    })
    .await;

    // The leader dies (as a killed node): a new one is elected and the agents move to it.
    let at = {
        let mut at = 0;
        for (i, m) in h.managers.iter().enumerate() {
            if m.is_leader().await {
                at = i;
            }
        }
        at
    };
    let dead = h.managers.remove(at);
    drop(leader);
    dead.shutdown().await;
    let (new_at, leader) = eventually("a new leader", 60, || async {
        for (i, m) in h.managers.iter().enumerate() {
            if m.is_leader().await {
                return m.node.manager().await.map(|mgr| (i, mgr));
            }
        }
        None
    })
    .await;
    // Through the new leader: a follower may not know yet who won the election it just saw
    // (it refuses with "no leader is reachable", as Docker's managers do for a moment).
    h.managers[new_at].propose(Command::CreateService { spec: spec("api", 10) }).await.unwrap().expect("api is created");
    eventually("every live node holds api's 10 endpoints", 90, || async { (holding(&h, "api", 10) == total - 1).then_some(()) }).await;
    let st = leader.shared().read(|s| s.clone());
    let running = |name: &str| {
        let id = st.find_service(name).unwrap().id.clone();
        st.tasks
            .values()
            .filter(|t| t.service_id == id && t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
            .count()
    };
    assert_eq!((running("web"), running("api")), (20, 10), "nothing doubled, nothing lost");
    h.shutdown().await;
}
