//! Builders for tests of the pure core, and a simulated agent for tests of whole nodes (control's
//! integration tests and the binary's CLI tests share it).

pub mod scale;

use crate::model::{Availability, Cluster, Node, NodeState, Role, ServiceSpec, TaskState, TaskStatus};
use crate::state::{ClusterState, Command, Request, Response};
use std::collections::BTreeMap;

pub fn cluster() -> Cluster {
    Cluster {
        id: "testcluster".into(),
        created_ms: 0,
        default_addr_pool: vec!["10.0.0.0/8".parse().unwrap()],
        subnet_size: 24,
        worker_token: "w".into(),
        manager_token: "m".into(),
        ca_cert_pem: String::new(),
        ca_key_pem: String::new(),
        task_history_limit: 5,
        heartbeat_period_ms: 1000,
        cert_expiry_ms: crate::ca::DEFAULT_CERT_EXPIRY.as_millis() as u64,
        ca_rotation: None,
        autolock_key: None,
    }
}

pub fn node(id: &str, role: Role) -> Node {
    Node {
        id: id.into(),
        raft_id: 0,
        hostname: format!("host-{id}"),
        addr: "192.168.1.1".into(),
        manager_addr: None,
        role,
        availability: Availability::Active,
        state: NodeState::Ready,
        message: String::new(),
        labels: BTreeMap::new(),
        created_ms: 0,
        updated_ms: 0,
        resources: crate::model::NodeResources { nano_cpus: 4_000_000_000, memory_bytes: 8 << 30 },
        encryption: Default::default(),
    }
}

pub struct World {
    pub state: ClusterState,
    pub now: u64,
}

impl World {
    /// A cluster with one manager `n1` and `workers` more nodes `n2..`.
    pub fn new(workers: usize) -> World {
        let mut w = World { state: ClusterState::default(), now: 1000 };
        w.ok(Command::Init { cluster: cluster(), node: node("n1", Role::Manager) });
        for i in 0..workers {
            w.ok(Command::AddNode { node: node(&format!("n{}", i + 2), Role::Worker) });
        }
        w
    }

    pub fn apply(&mut self, cmd: Command) -> Result<Response, crate::state::StateError> {
        self.now += 1;
        crate::decide::apply(&mut self.state, &Request { now_ms: self.now, cmd })
    }

    pub fn ok(&mut self, cmd: Command) -> Response {
        let dbg = format!("{cmd:?}");
        self.apply(cmd).unwrap_or_else(|e| panic!("{dbg}: {e}"))
    }

    pub fn create(&mut self, spec: ServiceSpec) -> crate::model::ServiceId {
        match self.ok(Command::CreateService { spec }) {
            Response::Created { id } => id.into(),
            r => panic!("unexpected {r:?}"),
        }
    }

    /// Live (desired running) tasks of a service.
    pub fn live(&self, sid: &str) -> Vec<&crate::model::Task> {
        self.state.tasks.values().filter(|t| t.service_id == sid && t.desired_state == TaskState::Running).collect()
    }

    /// The agent of each node reports its assigned tasks as `state`.
    pub fn report_all(&mut self, state: TaskState) {
        let mut by_node: BTreeMap<crate::model::NodeId, Vec<(crate::model::TaskId, TaskStatus)>> = BTreeMap::new();
        for t in self.state.tasks.values() {
            if let Some(n) = &t.node_id {
                if t.desired_state == TaskState::Running && !t.status.state.is_terminal() && t.status.state < state {
                    by_node.entry(n.clone()).or_default().push((t.id.clone(), TaskStatus::new(state, "", self.now)));
                }
            }
        }
        for (node, updates) in by_node {
            self.ok(Command::TaskStatus { node, updates });
        }
    }

    pub fn report(&mut self, task: &str, state: TaskState) {
        let node = self.state.tasks[task].node_id.clone().unwrap();
        self.ok(Command::TaskStatus { node, updates: vec![(task.into(), TaskStatus::new(state, "", self.now))] });
    }
}

/// A free TCP port on loopback (bound once and released: a test binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A simulated agent: runs every task it is assigned (reports RUNNING) and stops those it is
/// told to stop (reports SHUTDOWN).
pub fn sim_agent(node: crate::node::NodeControl) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut view = node.view();
        let mut reported: std::collections::HashMap<crate::model::TaskId, TaskState> = Default::default();
        loop {
            let snap = view.borrow_and_update().clone();
            let mut updates = vec![];
            for a in snap.view.assignments.values() {
                let t = &a.task;
                let want = if t.desired_state == TaskState::Running { TaskState::Running } else { TaskState::Shutdown };
                if t.status.state < want && reported.get(&t.id) != Some(&want) {
                    reported.insert(t.id.clone(), want);
                    updates.push((t.id.clone(), TaskStatus::new(want, "simulated", 0)));
                }
            }
            if !updates.is_empty() {
                node.report(updates).await;
            }
            if view.changed().await.is_err() {
                return;
            }
        }
    })
}
