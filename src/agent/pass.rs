//! One agent pass, decided without I/O: from the node's view, its processes and what the agent
//! is doing already, it says what to stop, the DNS zone, the data plane, what to start, what to
//! report and which health checks to run. `runner` carries the plan out in that order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use shoal_control::dispatcher::AgentView;
use shoal_control::gossip::core::newest_per_node;
use shoal_control::gossip::{MemberInfo, Status};
use shoal_control::model::{Health, HealthCheck, TaskState};
use shoal_control::rpc::session::Assignment;
use shoal_dataplane::state::DesiredNode;
use shoal_dns::Zone;

use super::executor::ProcessState;
use super::{desired, health, zone};

/// What a pass starts from.
pub struct Inputs<'a> {
    pub view: &'a AgentView,
    pub node_id: &'a str,
    pub self_addr: Ipv4Addr,
    /// Every task the executor has records of, with its process state.
    pub processes: &'a BTreeMap<String, ProcessState>,
    /// Tasks being stopped (draining) already.
    pub stopping: &'a HashSet<String>,
    /// Started tasks that wait to listen before they report Running.
    pub awaiting: &'a HashSet<String>,
    /// The last state reported for each task.
    pub reported: &'a HashMap<String, TaskState>,
    /// Each task's health check: the service's, else its image's HEALTHCHECK.
    pub healthcheck: &'a dyn Fn(&Assignment) -> Option<HealthCheck>,
    pub now_ms: u64,
    /// Nodes gossip on this node holds dead (`held_dead`): their endpoints leave this node's
    /// load balancer and DNS at once, before the managers hear of it.
    pub dead_nodes: &'a BTreeSet<String>,
}

/// The nodes whose newest gossip member is down (a node that restarted and rejoined under a
/// new generation is not, though its former self stays listed down); never this node.
pub fn held_dead(members: &[MemberInfo], me: &str) -> BTreeSet<String> {
    newest_per_node(members).into_iter().filter(|(node, m)| *node != me && m.status == Status::Down).map(|(n, _)| n.to_string()).collect()
}

/// A state to report for a task, once the runner has the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Running (after a restart of the agent, or a start whose report was lost).
    Running(String),
    /// The process ended with this code.
    Exited(String, i32),
}

/// What a pass does, in order.
pub struct Plan {
    /// Running tasks no longer wanted. They left the endpoint table already; the runner stops
    /// each once every node let go of it and the drain period passed.
    pub stop: Vec<String>,
    /// The names DNS answers (set first: in memory, a withdrawn task stops being an answer at
    /// once).
    pub zone: Zone,
    /// The kernel's state, from the whole view. Tasks still stopping keep their network.
    pub data_plane: DesiredNode,
    /// Live tasks that DNS does not serve in their namespace (adopted after a restart: their
    /// sockets died with the old process).
    pub attach_dns: Vec<String>,
    /// Tasks to start: wanted, with no process here, and past their restart delay.
    pub start: Vec<String>,
    pub reports: Vec<Report>,
    /// Health checks to run: running tasks that have one and are not being stopped.
    pub checks: Vec<health::Wanted>,
    /// Tasks whose records go: no longer assigned here, and not running.
    pub forget: Vec<String>,
}

pub fn plan(i: &Inputs<'_>, dns_attached: &HashSet<String>) -> Plan {
    let v = i.view;
    // The endpoint table without the endpoints of nodes gossip holds dead: the load balancer
    // and DNS are built from it. Only the endpoints go; the view's own tasks are this node's.
    let served = if v.endpoints.values().any(|e| i.dead_nodes.contains(e.node_id.as_str()) && e.node_id != i.node_id) {
        let mut s = v.clone();
        s.endpoints =
            s.endpoints.into_iter().filter(|(_, e)| !i.dead_nodes.contains(e.node_id.as_str()) || e.node_id == i.node_id).collect();
        std::borrow::Cow::Owned(s)
    } else {
        std::borrow::Cow::Borrowed(v)
    };
    let running: BTreeSet<String> = i.processes.iter().filter(|(_, s)| **s == ProcessState::Running).map(|(id, _)| id.clone()).collect();
    let wanted = |id: &str| v.assignments.get(id).is_some_and(|a| a.task.desired_state <= TaskState::Running);
    let stop = running.iter().filter(|id| !wanted(id) && !i.stopping.contains(*id)).cloned().collect();
    let attach_dns = running.iter().filter(|id| !dns_attached.contains(*id) && v.assignments.contains_key(id.as_str())).cloned().collect();

    let mut start = Vec::new();
    let mut reports = Vec::new();
    for a in v.assignments.values() {
        let id = &a.task.id;
        if a.task.desired_state > TaskState::Running || a.task.status.state.is_terminal() {
            continue;
        }
        match i.processes.get(id.as_str()).copied().unwrap_or(ProcessState::Unknown) {
            ProcessState::Unknown if a.task.not_before_ms <= i.now_ms => start.push(id.to_string()),
            ProcessState::Unknown => {}
            ProcessState::Running => {
                if a.task.status.state < TaskState::Running
                    && i.reported.get(id.as_str()) != Some(&TaskState::Running)
                    && !i.awaiting.contains(id.as_str())
                {
                    reports.push(Report::Running(id.to_string()));
                }
            }
            ProcessState::Exited(code) => {
                if i.reported.get(id.as_str()).is_none_or(|s| !s.is_terminal()) {
                    reports.push(Report::Exited(id.to_string(), code));
                }
            }
        }
    }

    let checks = v
        .assignments
        .values()
        .filter(|a| a.task.desired_state == TaskState::Running && !a.task.status.state.is_terminal())
        .filter(|a| running.contains(a.task.id.as_str()) && !i.stopping.contains(a.task.id.as_str()))
        .filter_map(|a| {
            let check = (i.healthcheck)(a)?;
            let started = if a.task.status.timestamp_ms > 0 { a.task.status.timestamp_ms } else { i.now_ms };
            let initial = match a.task.status.health {
                Some(h @ Health::Healthy) => health::HealthState::adopted(h, started),
                _ => health::HealthState::new(started),
            };
            Some(health::Wanted { task_id: a.task.id.to_string(), check, initial })
        })
        .collect();

    let forget = i.processes.keys().filter(|id| !v.assignments.contains_key(id.as_str()) && !running.contains(*id)).cloned().collect();

    Plan {
        stop,
        zone: zone::zone(&served),
        data_plane: desired::desired_node(&served, i.node_id, i.self_addr, &running),
        attach_dns,
        start,
        reports,
        checks,
        forget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_control::model::{ServiceSpec, Task};

    fn assignment(id: &str, desired: TaskState, status: TaskState) -> Assignment {
        Assignment {
            task: Task::in_slot(id, "svc", 1, Some("n1"), desired, status),
            service_name: "web".into(),
            spec: ServiceSpec::new("web", "shoal/whoami"),
            secrets: Default::default(),
            configs: Default::default(),
        }
    }

    struct World {
        view: AgentView,
        processes: BTreeMap<String, ProcessState>,
        stopping: HashSet<String>,
        awaiting: HashSet<String>,
        reported: HashMap<String, TaskState>,
        attached: HashSet<String>,
        checked: bool,
        dead: BTreeSet<String>,
    }

    impl World {
        fn new(assignments: Vec<Assignment>) -> World {
            let mut view = AgentView::default();
            for a in assignments {
                view.assignments.insert(a.task.id.clone(), a);
            }
            World {
                view,
                processes: BTreeMap::new(),
                stopping: HashSet::new(),
                awaiting: HashSet::new(),
                reported: HashMap::new(),
                attached: HashSet::new(),
                checked: false,
                dead: BTreeSet::new(),
            }
        }

        fn plan(&self, now_ms: u64) -> Plan {
            let check = |_: &Assignment| self.checked.then(|| HealthCheck::new("true"));
            let i = Inputs {
                view: &self.view,
                node_id: "n1",
                self_addr: Ipv4Addr::new(10, 0, 0, 1),
                processes: &self.processes,
                stopping: &self.stopping,
                awaiting: &self.awaiting,
                reported: &self.reported,
                healthcheck: &check,
                now_ms,
                dead_nodes: &self.dead,
            };
            plan(&i, &self.attached)
        }
    }

    #[test]
    fn a_new_task_is_started_and_nothing_else_happens() {
        let w = World::new(vec![assignment("t1", TaskState::Running, TaskState::Assigned)]);
        let p = w.plan(1);
        assert_eq!(p.start, vec!["t1".to_string()]);
        assert!(p.stop.is_empty() && p.reports.is_empty() && p.forget.is_empty() && p.attach_dns.is_empty());
    }

    #[test]
    fn a_task_waits_out_its_restart_delay() {
        let mut a = assignment("t1", TaskState::Running, TaskState::Assigned);
        a.task.not_before_ms = 5_000;
        let w = World::new(vec![a]);
        assert!(w.plan(4_999).start.is_empty());
        assert_eq!(w.plan(5_000).start, vec!["t1".to_string()]);
    }

    #[test]
    fn a_task_no_longer_wanted_is_stopped_once() {
        let mut w = World::new(vec![assignment("t1", TaskState::Shutdown, TaskState::Running)]);
        w.processes.insert("t1".into(), ProcessState::Running);
        w.attached.insert("t1".into());
        assert_eq!(w.plan(1).stop, vec!["t1".to_string()]);
        // While it drains, the next passes leave it be; its network stays for the drain.
        w.stopping.insert("t1".into());
        let p = w.plan(2);
        assert!(p.stop.is_empty() && p.start.is_empty());
        // A running task no longer assigned at all is stopped too.
        let mut w = World::new(vec![]);
        w.processes.insert("gone".into(), ProcessState::Running);
        assert_eq!(w.plan(1).stop, vec!["gone".to_string()]);
        assert!(w.plan(1).forget.is_empty(), "a running task's records stay until it stopped");
    }

    #[test]
    fn a_task_found_running_after_a_restart_is_adopted_not_started_again() {
        let mut w = World::new(vec![assignment("t1", TaskState::Running, TaskState::Starting)]);
        w.processes.insert("t1".into(), ProcessState::Running);
        let p = w.plan(1);
        assert!(p.start.is_empty(), "a live process is never started twice");
        assert_eq!(p.reports, vec![Report::Running("t1".into())]);
        assert_eq!(p.attach_dns, vec!["t1".to_string()], "its DNS sockets died with the old agent");
        // Reported once; not while it waits to listen after a start.
        w.reported.insert("t1".into(), TaskState::Running);
        assert!(w.plan(2).reports.is_empty());
        w.reported.clear();
        w.awaiting.insert("t1".into());
        assert!(w.plan(2).reports.is_empty());
    }

    #[test]
    fn an_exit_is_reported_once_and_an_unassigned_ended_task_is_forgotten() {
        let mut w = World::new(vec![assignment("t1", TaskState::Running, TaskState::Running)]);
        w.processes.insert("t1".into(), ProcessState::Exited(3));
        w.processes.insert("old".into(), ProcessState::Exited(0));
        let p = w.plan(1);
        assert_eq!(p.reports, vec![Report::Exited("t1".into(), 3)]);
        assert_eq!(p.forget, vec!["old".to_string()]);
        assert!(p.start.is_empty(), "an exited task is replaced by the managers, not restarted here");
        w.reported.insert("t1".into(), TaskState::Failed);
        assert!(w.plan(2).reports.is_empty());
    }

    #[test]
    fn health_checks_run_for_running_tasks_that_are_not_stopping() {
        let mut w = World::new(vec![
            assignment("t1", TaskState::Running, TaskState::Running),
            assignment("t2", TaskState::Running, TaskState::Running),
            assignment("t3", TaskState::Running, TaskState::Assigned),
        ]);
        w.checked = true;
        for id in ["t1", "t2"] {
            w.processes.insert(id.into(), ProcessState::Running);
        }
        w.stopping.insert("t2".into());
        let ids: Vec<String> = w.plan(1).checks.into_iter().map(|c| c.task_id).collect();
        assert_eq!(ids, vec!["t1".to_string()]);
        w.checked = false;
        assert!(w.plan(1).checks.is_empty(), "no check, no loop");
    }

    /// Tasks of `web` on n1, n2 and n3 (one each), on the overlay `app`, as n1 sees them.
    fn three_node_view() -> AgentView {
        use shoal_control::model::{EndpointMode, NetworkAttachment};
        use shoal_control::rpc::session::{NetworkInfo, ServiceEndpoint, TaskEndpoint};
        let mut v = AgentView::default();
        let nodes: Vec<(String, String)> = (1..=3).map(|i| (format!("n{i}"), format!("192.168.33.{i}"))).collect();
        v.networks.insert(
            "net1".into(),
            NetworkInfo {
                id: "net1".into(),
                name: "app".into(),
                vni: 4097,
                subnet: "10.0.1.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 0, 1, 1),
                ingress: false,
                internal: false,
                node_local: false,
                options: Default::default(),
                lb_addrs: Default::default(),
                peers: nodes.iter().map(|(n, a)| (shoal_control::model::NodeId::from(n.as_str()), a.clone())).collect(),
            },
        );
        v.services.insert(
            "svc".into(),
            ServiceEndpoint {
                id: "svc".into(),
                name: "web".into(),
                mode: EndpointMode::Dnsrr,
                vips: vec![],
                ports: vec![],
                networks: vec!["net1".into()],
                aliases: Default::default(),
            },
        );
        for (i, (node, addr)) in nodes.iter().enumerate() {
            let task = format!("t{}", i + 1);
            v.endpoints.insert(
                task.as_str().into(),
                TaskEndpoint {
                    task_id: task.as_str().into(),
                    service_id: "svc".into(),
                    name: format!("web.{}.{task}", i + 1),
                    node_id: node.as_str().into(),
                    node_addr: addr.clone(),
                    addresses: vec![NetworkAttachment {
                        network_id: "net1".into(),
                        addr: Ipv4Addr::new(10, 0, 1, 10 + i as u8),
                        prefix: 24,
                        mac: String::new(),
                    }],
                    health: None,
                    weight: 1,
                    draining: false,
                },
            );
        }
        v
    }

    fn served(p: &Plan) -> (BTreeSet<String>, BTreeSet<String>) {
        let dns = p.zone.networks.iter().flat_map(|n| n.tasks.iter().map(|t| t.ip.to_string())).collect();
        let lb = p.data_plane.endpoints.iter().map(|e| e.ip.to_string()).collect();
        (dns, lb)
    }

    fn member(node: &str, generation: u64, status: Status) -> MemberInfo {
        MemberInfo { node: node.into(), addr: "10.0.0.3:7946".parse().unwrap(), generation, status }
    }

    #[test]
    fn endpoints_of_a_node_gossip_holds_dead_leave_dns_and_the_load_balancer_and_come_back_on_rejoin() {
        let mut w = World::new(vec![]);
        w.view = three_node_view();
        let n3: BTreeSet<String> =
            w.view.endpoints.values().filter(|e| e.node_id == "n3").flat_map(|e| e.addresses.iter().map(|a| a.addr.to_string())).collect();
        assert_eq!(n3.len(), 1, "one task on n3: {:?}", w.view.endpoints);
        let (dns, lb) = served(&w.plan(1));
        assert_eq!(dns.len(), 3);
        assert!(n3.is_subset(&dns) && n3.is_subset(&lb), "all alive: n3's task is served");

        let members = [member("n1", 1, Status::Alive), member("n2", 1, Status::Alive), member("n3", 1, Status::Down)];
        w.dead = held_dead(&members, "n1");
        assert_eq!(w.dead, BTreeSet::from(["n3".to_string()]));
        let p = w.plan(1);
        let (dns, lb) = served(&p);
        assert_eq!(dns.len(), 2, "n3's task is no DNS answer: {dns:?}");
        assert!(n3.is_disjoint(&dns) && n3.is_disjoint(&lb), "n3 dead: its task left DNS and the load balancer");
        assert!(p.start.is_empty() && p.stop.is_empty(), "nothing else changes");

        // n3 restarts and rejoins under a new generation; its former self stays listed down.
        let members =
            [member("n1", 1, Status::Alive), member("n2", 1, Status::Alive), member("n3", 1, Status::Down), member("n3", 2, Status::Alive)];
        w.dead = held_dead(&members, "n1");
        assert!(w.dead.is_empty());
        let (dns, lb) = served(&w.plan(1));
        assert!(n3.is_subset(&dns) && n3.is_subset(&lb), "rejoined: served again");
        assert!(held_dead(&[member("n1", 1, Status::Down)], "n1").is_empty(), "a node never holds itself dead");
    }
}
