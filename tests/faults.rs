//! Fault tests at packet level (issue 14, items 8 and 5). Three managers (smgr, snode1, snode2,
//! each also running an agent and a task of `web`) take faults made inside the lab's own
//! namespaces: nft drop rules in a node's namespace (the leader partitioned both ways, one way
//! out, one way in; one agent's established session flow silenced from the leader's side),
//! `kill -9` of each manager in turn, and a manager's state directory on a small loop-mounted
//! ext4 that fills up (the leader's, then a follower's).
//!
//! Throughout, a client per manager writes and reads per-key registers through that manager's
//! API socket (the node labels `node update --label-add` sets, and the state `node ls` reads),
//! and records what it saw: every operation's interval and outcome (a timeout is "maybe"). At
//! the end the history is checked for linearizability (`support/linearizable.rs`), every
//! acknowledged write must still be there, no read may show a slot of `web` running twice, the
//! kernel must hold exactly one task namespace per replica, and the agents must be back on a
//! leader within 10 s of the fault (measured from each node's `Info`: which manager its
//! session is with). Run as root by tests/run.sh.

mod support;

#[path = "support/linearizable.rs"]
mod linearizable;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linearizable::{Event, Op, Outcome};
use shoal_control::manager::ClusterView;
use shoal_control::model::TaskState;
use shoal_control::node::{LocalReply, LocalRequest, LocalResponse, NodeInfo, SessionInfo};
use shoal_control::rpc::messages::{ApiRequest, ApiResponse};
use shoal_control::state::Command;
use support::cluster::*;

/// The registers: labels of one node.
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const REPLICAS: usize = 3;
/// The goal: agents back on a leader within this of any single fault.
const AGENTS_BACK: Duration = Duration::from_secs(10);
/// A client gives up on an operation after this (it is then "maybe"); the daemon's own bounds
/// (a forwarded write: 5 s to commit, 5 s for the leader's answer) are below it.
const OP_TIMEOUT: Duration = Duration::from_secs(12);
/// Between two operations of a client: the machine is shared.
const PACE: Duration = Duration::from_millis(25);
/// What a manager says when its disk is below the reserve (control/src/manager/disk.rs).
const DISK_REFUSAL: &str = "keeps in reserve for its Raft log";

// ---------------------------------------------------------------------------------------------
// The product's API: one JSON request and one JSON reply per line on a node's socket.

enum CallError {
    /// Nothing reached the daemon (it is down): the operation did not happen.
    NotSent(String),
    /// Sent, but no answer came: it may have happened.
    NoAnswer(String),
}

fn call(sock: &Path, req: &LocalRequest, timeout: Duration) -> Result<LocalResponse, CallError> {
    let mut stream = UnixStream::connect(sock).map_err(|e| CallError::NotSent(e.to_string()))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| CallError::NotSent(e.to_string()))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| CallError::NotSent(e.to_string()))?;
    let mut line = serde_json::to_vec(req).expect("a request serializes");
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| CallError::NoAnswer(e.to_string()))?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(|e| CallError::NoAnswer(e.to_string()))?;
    if reply.is_empty() {
        return Err(CallError::NoAnswer("the daemon closed the connection".into()));
    }
    serde_json::from_str(&reply).map_err(|e| CallError::NoAnswer(format!("bad reply: {e}")))
}

fn read_view(sock: &Path, timeout: Duration) -> Result<ClusterView, String> {
    match call(sock, &LocalRequest::Api(ApiRequest::View), timeout) {
        Ok(Ok(LocalReply::Api(ApiResponse::View(v)))) => Ok(*v),
        Ok(Ok(other)) => Err(format!("unexpected reply {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(CallError::NotSent(e) | CallError::NoAnswer(e)) => Err(e),
    }
}

fn info(sock: &Path) -> Option<NodeInfo> {
    match call(sock, &LocalRequest::Info, Duration::from_secs(3)) {
        Ok(Ok(LocalReply::Info(i))) => Some(i),
        _ => None,
    }
}

fn try_cli(c: &Cluster, node: &str, args: &[&str]) -> Option<String> {
    let host = c.host(node);
    let mut full: Vec<&str> = args.to_vec();
    full.insert(1.min(full.len()), "--host");
    full.insert(2.min(full.len()), &host);
    let out = support::shoal(&full);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn node_index(node: &str) -> usize {
    NODES.iter().position(|(n, _)| *n == node).expect("a lab node")
}

fn addr_of(node: &str) -> &'static str {
    NODES[node_index(node)].1
}

// ---------------------------------------------------------------------------------------------
// The cluster under test: three managers, `web` with a task on each node.

struct Setup {
    /// Node id whose labels are the registers.
    reg: shoal_control::model::NodeId,
    raft_ids: BTreeMap<String, u64>,
}

fn three_managers_and_web(c: &Cluster) -> Setup {
    let out = c.cli("smgr", &["init", "--advertise-addr", "192.168.33.10"]);
    assert!(out.contains("Cluster initialized"), "{out}");
    let token = c.cli("smgr", &["join-token", "-q", "manager"]).trim().to_string();
    for (node, _) in &NODES[1..] {
        let out = c.cli(node, &["join", "--token", &token, "192.168.33.10:2377"]);
        assert!(out.contains("joined a cluster as a manager"), "{out}");
    }
    wait_for("3 managers, one leading", Duration::from_secs(60), || {
        try_cli(c, "smgr", &["node", "ls"])
            .is_some_and(|ls| ls.contains("Leader") && ls.matches("Reachable").count() == 2 && ls.matches("Ready").count() == 3)
    });
    c.cli("smgr", &["service", "create", "--detach", "--name", "web", "--replicas", &REPLICAS.to_string(), "shoal/whoami"]);
    wait_for("web's tasks running", Duration::from_secs(60), || {
        try_cli(c, "smgr", &["service", "ps", "web"]).is_some_and(|ps| running(&ps) == REPLICAS)
    });
    let v = read_view(&c.sock("smgr"), Duration::from_secs(5)).expect("a view");
    let raft_ids: BTreeMap<String, u64> = v.state.nodes.values().map(|n| (n.hostname.clone(), n.raft_id)).collect();
    let reg = v.state.nodes.values().find(|n| n.hostname == "smgr").expect("smgr").id.clone();
    // Every manager answers reads from its own replica once caught up.
    for (node, _) in NODES {
        wait_for(&format!("{node} serving reads"), Duration::from_secs(20), || {
            read_view(&c.sock(node), Duration::from_secs(5)).is_ok_and(|v| v.this_manager == raft_ids[node])
        });
    }
    Setup { reg, raft_ids }
}

fn leader_of(v: &ClusterView) -> Option<(String, String)> {
    let l = v.leader?;
    v.state.nodes.values().find(|n| n.raft_id == l).and_then(|n| Some((n.hostname.clone(), n.manager_addr.clone()?)))
}

/// The leader (hostname, manager address) as the managers in `via` know it: a read, so only a
/// manager that reaches a quorum answers.
fn leader(c: &Cluster, via: &[&str]) -> Option<(String, String)> {
    via.iter().find_map(|n| read_view(&c.sock(n), Duration::from_secs(3)).ok().and_then(|v| leader_of(&v)))
}

fn session(c: &Cluster, node: &str) -> Option<SessionInfo> {
    info(&c.sock(node)).and_then(|i| i.session)
}

/// How long after `since` every agent of `agents` had a session with the leader (as the
/// managers in `via` know it) that `ok(node, session, leader)` accepts; None if not within 30 s.
fn agents_back(
    c: &Cluster,
    since: Instant,
    agents: &[&str],
    via: &[&str],
    ok: impl Fn(&str, &SessionInfo, &(String, String)) -> bool,
) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(30) {
        if let Some(l) = leader(c, via) {
            if agents.iter().all(|n| session(c, n).is_some_and(|s| s.manager == l.1 && ok(n, &s, &l))) {
                return Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The workload.

#[derive(Default)]
struct Shared {
    events: Vec<Event>,
    /// Writes refused for a full disk: (client, when, message).
    refusals: Vec<(usize, Duration, String)>,
    /// Reads that showed a slot of web running twice.
    duplicates: Vec<String>,
    /// Reads that succeeded: (client, when it ended, raft id of the manager that answered).
    served: Vec<(usize, Duration, u64)>,
    failed_reads: usize,
    /// Replies that were no answer to the call: a bug, whatever the fault.
    odd: Vec<String>,
}

struct Workload {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
    epoch: Instant,
    reg: String,
}

/// Slots of `web` with more than one task desired and running, in a state.
fn doubled(v: &ClusterView) -> Vec<String> {
    let Some(web) = v.state.services.values().find(|s| s.spec.name == "web") else { return vec![] };
    let mut per_slot: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for t in v.state.tasks.values() {
        if t.service_id == web.id && t.desired_state == TaskState::Running && t.status.state == TaskState::Running {
            per_slot.entry(t.slot).or_default().push(&t.id);
        }
    }
    per_slot.into_iter().filter(|(_, ts)| ts.len() > 1).map(|(slot, ts)| format!("web.{slot} running as {ts:?}")).collect()
}

impl Workload {
    fn start(c: &Cluster, setup: &Setup) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let epoch = Instant::now();
        let clients = NODES
            .iter()
            .enumerate()
            .map(|(client, (node, _))| {
                let (sock, stop, shared, reg) = (c.sock(node), stop.clone(), shared.clone(), setup.reg.clone());
                std::thread::spawn(move || run_client(client, &sock, &reg, epoch, &stop, &shared))
            })
            .collect();
        Workload { stop, clients, shared, epoch, reg: setup.reg.to_string() }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Acknowledged writes that began after `from` (and ended before `to`).
    fn acked_writes(&self, from: Duration, to: Duration) -> usize {
        let s = self.shared.lock().unwrap();
        s.events.iter().filter(|e| matches!(e.op, Op::Write(_)) && e.outcome == Outcome::Ok && e.start >= from && e.end <= to).count()
    }

    /// Stops the clients, reads every key through every manager (retrying until each answers),
    /// and checks the history.
    fn finish(self, c: &Cluster, fault: &str) -> Summary {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.clients {
            t.join().expect("a workload client panicked");
        }
        let mut shared = Arc::try_unwrap(self.shared).ok().expect("clients are done").into_inner().unwrap();
        let mut finals: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut final_served = vec![];
        for (i, (node, _)) in NODES.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let start = self.epoch.elapsed();
                match read_view(&c.sock(node), Duration::from_secs(10)) {
                    Ok(v) => {
                        let end = self.epoch.elapsed();
                        for key in KEYS {
                            let value = v.state.nodes.get(self.reg.as_str()).and_then(|n| n.labels.get(key).cloned());
                            shared.events.push(Event {
                                client: 100 + i,
                                key: key.into(),
                                op: Op::Read(value.clone()),
                                start,
                                end,
                                outcome: Outcome::Ok,
                            });
                            finals.insert(key.to_string(), value);
                        }
                        shared.duplicates.extend(doubled(&v));
                        final_served.push((node.to_string(), v.this_manager));
                        break;
                    }
                    Err(e) => {
                        assert!(Instant::now() < deadline, "{node} never answered a read after the fault: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        }
        let report = linearizable::check(&shared.events);
        let lost = linearizable::lost_writes(&shared.events, &finals);
        let count = |write: bool, outcome: Outcome| {
            shared.events.iter().filter(|e| e.client < 100 && matches!(e.op, Op::Write(_)) == write && e.outcome == outcome).count()
        };
        Summary {
            fault: fault.to_string(),
            writes_ok: count(true, Outcome::Ok),
            writes_maybe: count(true, Outcome::Maybe),
            writes_failed: count(true, Outcome::Failed),
            reads_ok: shared.served.len(),
            reads_failed: shared.failed_reads,
            checked: report.checked,
            violations: report.violations.iter().map(|v| format!("key {}: {}", v.key, v.explanation)).collect(),
            lost,
            duplicates: shared.duplicates,
            odd: shared.odd,
            refusals: shared.refusals,
            final_served,
        }
    }
}

fn run_client(client: usize, sock: &Path, reg: &str, epoch: Instant, stop: &AtomicBool, shared: &Mutex<Shared>) {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (client as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = KEYS[(rng % KEYS.len() as u64) as usize];
        let start = epoch.elapsed();
        let mut unsent = false;
        if rng & (1 << 20) == 0 {
            seq += 1;
            let value = format!("c{client}-{seq}");
            let cmd = Command::UpdateNode {
                node: reg.to_string(),
                availability: None,
                role: None,
                label_add: [(key.to_string(), value.clone())].into(),
                label_rm: vec![],
            };
            let reply = call(sock, &LocalRequest::Api(ApiRequest::Propose(cmd)), OP_TIMEOUT);
            let end = epoch.elapsed();
            let mut s = shared.lock().unwrap();
            let outcome = match reply {
                Err(CallError::NotSent(_)) => {
                    unsent = true;
                    Outcome::Failed
                }
                Err(CallError::NoAnswer(_)) => Outcome::Maybe,
                Ok(Ok(LocalReply::Api(ApiResponse::Committed { result: Ok(_), .. }))) => Outcome::Ok,
                // Committed, and refused by the state machine: no effect.
                Ok(Ok(LocalReply::Api(ApiResponse::Committed { result: Err(e), .. }))) => {
                    s.odd.push(format!("client {client}: write refused by the state: {e}"));
                    Outcome::Failed
                }
                Ok(Err(msg)) if msg.message.contains(DISK_REFUSAL) => {
                    s.refusals.push((client, end, msg.message));
                    Outcome::Failed
                }
                Ok(Err(_)) => Outcome::Maybe,
                Ok(Ok(other)) => {
                    s.odd.push(format!("client {client}: a write answered {other:?}"));
                    Outcome::Maybe
                }
            };
            s.events.push(Event { client, key: key.into(), op: Op::Write(value), start, end, outcome });
        } else {
            let reply = read_view(sock, OP_TIMEOUT);
            let end = epoch.elapsed();
            let mut s = shared.lock().unwrap();
            match reply {
                Ok(v) => {
                    // One read of the state reads every register.
                    for k in KEYS {
                        let value = v.state.nodes.get(reg).and_then(|n| n.labels.get(k).cloned());
                        s.events.push(Event { client, key: k.into(), op: Op::Read(value), start, end, outcome: Outcome::Ok });
                    }
                    let d = doubled(&v);
                    s.duplicates.extend(d);
                    s.served.push((client, end, v.this_manager));
                }
                Err(_) => {
                    s.failed_reads += 1;
                    unsent = UnixStream::connect(sock).is_err();
                }
            }
        }
        std::thread::sleep(if unsent { Duration::from_millis(200) } else { PACE });
    }
}

struct Summary {
    fault: String,
    writes_ok: usize,
    writes_maybe: usize,
    writes_failed: usize,
    reads_ok: usize,
    reads_failed: usize,
    checked: usize,
    violations: Vec<String>,
    lost: Vec<String>,
    duplicates: Vec<String>,
    odd: Vec<String>,
    refusals: Vec<(usize, Duration, String)>,
    final_served: Vec<(String, u64)>,
}

impl Summary {
    fn print(&self, agents: &str) {
        eprintln!(
            "FAULT {}: writes {} acknowledged, {} maybe, {} refused or unsent; reads {} answered, {} failed; \
             {} operations checked: {} lost writes, {} linearizability violations, {} doubled tasks; agents {agents}",
            self.fault,
            self.writes_ok,
            self.writes_maybe,
            self.writes_failed,
            self.reads_ok,
            self.reads_failed,
            self.checked,
            self.lost.len(),
            self.violations.len(),
            self.duplicates.len()
        );
    }

    /// The goals: 0 acknowledged writes lost, 0 violations, 0 tasks running twice.
    fn assert_goals(&self, c: &Cluster) {
        assert!(self.lost.is_empty(), "{}: acknowledged writes lost:\n{}", self.fault, self.lost.join("\n"));
        assert!(self.violations.is_empty(), "{}: not linearizable:\n{}", self.fault, self.violations.join("\n"));
        assert!(self.duplicates.is_empty(), "{}: a slot ran twice:\n{}", self.fault, self.duplicates.join("\n"));
        assert!(self.odd.is_empty(), "{}: unexpected answers:\n{}", self.fault, self.odd.join("\n"));
        assert!(self.writes_ok > 0 && self.reads_ok > 0, "{}: the workload made no progress", self.fault);
        // What the kernel holds: one task namespace per replica, once the cluster settled.
        wait_for("web settled: one running task and one task namespace per replica", Duration::from_secs(40), || {
            try_cli(c, "smgr", &["service", "ps", "web"]).is_some_and(|ps| running(&ps) == REPLICAS) && task_namespaces(c).len() == REPLICAS
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// An nft table in a node's namespace that drops packets; removed on drop, by exact name.
struct NftFault {
    ns: String,
}

const FAULT_TABLE: &str = "shoal_test_fault";

impl NftFault {
    /// `input`/`output`: rules of the input and output hooks (before conntrack: established
    /// flows are cut too).
    fn apply(c: &Cluster, node: &str, input: &[String], output: &[String]) -> NftFault {
        let ns = c.lab.node_ns(node);
        let chain = |name: &str, hook: &str, rules: &[String]| {
            let rules: String = rules.iter().map(|r| format!("{r}; ")).collect();
            format!("chain {name} {{ type filter hook {hook} priority -400; policy accept; {rules}}}\n")
        };
        let script = format!("table inet {FAULT_TABLE} {{\n{}{}}}\n", chain("in", "input", input), chain("out", "output", output));
        nft(&ns, &script);
        NftFault { ns }
    }
}

impl Drop for NftFault {
    fn drop(&mut self) {
        let out = support::in_ns(&self.ns, &["nft", "delete", "table", "inet", FAULT_TABLE]);
        if !out.status.success() {
            eprintln!("removing the fault table in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn nft(ns: &str, script: &str) {
    support::nft_in(ns, script);
}

fn peers_of(node: &str) -> Vec<&'static str> {
    NODES.iter().filter(|(n, _)| *n != node).map(|(n, _)| *n).collect()
}

fn addr_set(nodes: &[&str]) -> String {
    format!("{{ {} }}", nodes.iter().map(|n| addr_of(n)).collect::<Vec<_>>().join(", "))
}

/// A leader cut off from the other managers by `rules` (input, output) for 12 s, then healed:
/// the other two elect a leader and their agents move to it, the old leader rejoins, and the
/// workload saw nothing lost, nothing stale and nothing doubled.
fn partition_test(fault: &str, rules: impl Fn(&str) -> (Vec<String>, Vec<String>)) {
    let c = Cluster::up();
    let setup = three_managers_and_web(&c);
    let w = Workload::start(&c, &setup);
    std::thread::sleep(Duration::from_secs(3));
    let (old, old_addr) = leader(&c, &["smgr"]).expect("a leader");
    let others = peers_of(&old);
    let (input, output) = rules(&old);
    let cut = NftFault::apply(&c, &old, &input, &output);
    let t0 = Instant::now();
    let cut_at = w.now();
    let back = agents_back(&c, t0, &others, &others, |_, _, l| l.1 != old_addr);
    let back = back.unwrap_or_else(|| panic!("{fault}: the agents of {others:?} found no new leader within 30 s"));
    // Held past the agents' return (writes go on through the new leader), shorter than the 15 s
    // a new leader gives nodes before marking them down.
    while t0.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let acked_during = w.acked_writes(cut_at, w.now());
    drop(cut);
    let t1 = Instant::now();
    let all: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
    let healed = agents_back(&c, t1, &all, &all, |_, _, _| true)
        .unwrap_or_else(|| panic!("{fault}: after the heal, the agents were not all on the leader within 30 s"));
    std::thread::sleep(Duration::from_secs(3));
    let s = w.finish(&c, fault);
    s.print(&format!("of the other nodes on the new leader {back:?} after the cut, all three on the leader {healed:?} after the heal"));
    assert!(back <= AGENTS_BACK, "{fault}: the agents took {back:?} to reach the new leader (goal: {AGENTS_BACK:?})");
    assert!(healed <= AGENTS_BACK, "{fault}: after the heal the agents took {healed:?} to be on the leader (goal: {AGENTS_BACK:?})");
    assert!(acked_during > 0, "{fault}: no write was acknowledged while {old} was cut off: the other two managers should have gone on");
    s.assert_goals(&c);
    let ls = c.cli(others[0], &["node", "ls"]);
    assert_eq!(ls.matches("Ready").count(), 3, "{fault}: no node may be marked down:\n{ls}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn faults_a_leader_partitioned_both_ways_from_the_managers_loses_no_write_and_its_agents_move() {
    partition_test("leader partitioned both ways", |old| {
        let set = addr_set(&peers_of(old));
        (vec![format!("ip saddr {set} drop")], vec![format!("ip daddr {set} drop")])
    });
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn faults_a_leader_whose_outbound_packets_are_dropped_is_replaced_with_no_stale_read() {
    partition_test("leader's outbound dropped", |old| (vec![], vec![format!("ip daddr {} drop", addr_set(&peers_of(old)))]));
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn faults_a_leader_whose_inbound_packets_are_dropped_serves_no_stale_read() {
    partition_test("leader's inbound dropped", |old| (vec![format!("ip saddr {} drop", addr_set(&peers_of(old)))], vec![]));
}

/// The agent's port of its session with the leader, from the leader's log line
/// "agent session opened ... peer=IP:PORT" for that node.
fn session_port(c: &Cluster, leader: &str, node_id: &str, agent_addr: &str) -> Option<u16> {
    let log = std::fs::read_to_string(c.dir.join(format!("{leader}.log"))).ok()?;
    let plain = strip_ansi(&log);
    plain
        .lines()
        .filter(|l| l.contains("agent session opened") && l.contains(node_id))
        .rev()
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(&format!("peer={agent_addr}:")).and_then(|p| p.parse().ok())))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for x in chars.by_ref() {
                if x.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn faults_a_half_open_agent_session_is_given_up_and_the_agent_is_back_within_seconds() {
    let fault = "half-open agent session";
    let c = Cluster::up();
    let setup = three_managers_and_web(&c);
    let w = Workload::start(&c, &setup);
    std::thread::sleep(Duration::from_secs(3));
    let (lead, lead_addr) = leader(&c, &["smgr"]).expect("a leader");
    let agent = peers_of(&lead)[0];
    let before = session(&c, agent).expect("the agent has a session");
    assert_eq!(before.manager, lead_addr, "{agent}'s agent is on the leader");
    let agent_id = info(&c.sock(agent)).and_then(|i| i.node_id).expect("a node id");
    // The agent knows its session before the manager has logged it: wait for the line.
    let mut port = None;
    wait_for("the session's line in the leader's log", Duration::from_secs(10), || {
        port = session_port(&c, &lead, &agent_id, addr_of(agent));
        port.is_some()
    });
    let port = port.unwrap_or_else(|| panic!("no session of {agent} in {lead}'s log"));
    // Only that flow, only from the leader to the agent: the agent's socket stays open and its
    // heartbeats still reach the leader, but nothing comes back.
    let cut = NftFault::apply(&c, &lead, &[], &[format!("ip daddr {} tcp sport 2377 tcp dport {port} drop", addr_of(agent))]);
    let t0 = Instant::now();
    let back = agents_back(&c, t0, &[agent], &[&lead], |_, s, _| s.session_id != before.session_id);
    let back = back.unwrap_or_else(|| panic!("{fault}: {agent}'s agent did not open a new session with the leader within 30 s"));
    std::thread::sleep(Duration::from_secs(3));
    drop(cut);
    std::thread::sleep(Duration::from_secs(2));
    let s = w.finish(&c, fault);
    s.print(&format!("{agent} on a new session with the leader {back:?} after its flow {port} went silent"));
    assert!(back <= AGENTS_BACK, "{fault}: {agent}'s agent took {back:?} to be back (goal: {AGENTS_BACK:?})");
    s.assert_goals(&c);
    let ls = c.cli(&lead, &["node", "ls"]);
    assert_eq!(ls.matches("Ready").count(), 3, "{fault}: no node may be marked down:\n{ls}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn faults_kill_9_of_each_manager_in_turn_loses_no_acknowledged_write() {
    let fault = "kill -9 of each manager in turn";
    let mut c = Cluster::up();
    let setup = three_managers_and_web(&c);
    let w = Workload::start(&c, &setup);
    std::thread::sleep(Duration::from_secs(3));
    let mut notes = vec![];
    for (i, (node, _)) in NODES.iter().enumerate() {
        let others = peers_of(node);
        let (was_leading, _) = leader(&c, &others).expect("a leader");
        let killed_at = w.now();
        c.kill_daemon(i);
        let t0 = Instant::now();
        // The other agents are on a leader (a new one if the leader was killed).
        let back = agents_back(&c, t0, &others, &others, |_, _, l| l.0 != *node)
            .unwrap_or_else(|| panic!("{fault}: with {node} killed, the other agents found no leader within 30 s"));
        std::thread::sleep(Duration::from_secs(3));
        let acked = w.acked_writes(killed_at, w.now());
        assert!(acked > 0, "{fault}: no write was acknowledged while {node} was down");
        c.daemons[i] = Some(c.start_daemon(i));
        let t1 = Instant::now();
        let returned = agents_back(&c, t1, &[node], &others, |_, _, _| true)
            .unwrap_or_else(|| panic!("{fault}: restarted {node}'s agent was not on the leader within 30 s"));
        wait_for(&format!("restarted {node} serving reads from its own replica"), Duration::from_secs(30), || {
            read_view(&c.sock(node), Duration::from_secs(5)).is_ok_and(|v| v.this_manager == setup.raft_ids[*node])
        });
        notes.push(format!(
            "{node} killed{}: the others on a leader after {back:?}, its own agent back {returned:?} after its restart",
            if was_leading == *node { " (the leader)" } else { "" }
        ));
        assert!(back <= AGENTS_BACK, "{fault}: with {node} killed the agents took {back:?} (goal: {AGENTS_BACK:?})");
        assert!(returned <= AGENTS_BACK, "{fault}: restarted {node}'s agent took {returned:?} (goal: {AGENTS_BACK:?})");
    }
    std::thread::sleep(Duration::from_secs(2));
    let s = w.finish(&c, fault);
    s.print(&notes.join("; "));
    s.assert_goals(&c);
}

// ---------------------------------------------------------------------------------------------
// Full disks.

/// A node's state directory on its own small ext4 (a loop-mounted file in the cluster's
/// directory), made before the node joins. The lab and its daemons go first on drop (field
/// order), then the file system is unmounted by exact path and the cluster's directory removed.
struct DiskLab {
    c: Cluster,
    disk: SmallDisk,
}

struct SmallDisk {
    mount: PathBuf,
    image: PathBuf,
    cluster_dir: PathBuf,
}

impl SmallDisk {
    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mount).expect("statvfs");
        st.blocks_available().saturating_mul(st.fragment_size())
    }

    fn fillers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.mount)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("filler-")))
            .collect()
    }

    /// Fills the disk with filler files until about `leave` bytes are free.
    fn fill(&self, leave: u64) {
        for n in 0.. {
            let free = self.free();
            if free <= leave + (256 << 10) {
                return;
            }
            let mut len = free - leave;
            let file = self.mount.join(format!("filler-{n}"));
            // The file system needs some of what it calls free for the file's own metadata.
            while !Process::new("fallocate").args(["-l", &len.to_string()]).arg(&file).output().is_ok_and(|o| o.status.success()) {
                len /= 2;
                if len < (64 << 10) {
                    return;
                }
            }
        }
    }

    fn unfill(&self) {
        for f in self.fillers() {
            std::fs::remove_file(&f).expect("removing a filler");
        }
    }
}

impl DiskLab {
    /// A lab whose node `i` keeps its state on an ext4 of `mib` MiB.
    fn up(i: usize, mib: u64) -> DiskLab {
        let c = Cluster::up();
        let node = NODES[i].0;
        let mount = c.dir.join(node);
        let image = c.dir.join(format!("{node}-disk.img"));
        let disk = SmallDisk { mount: mount.clone(), image: image.clone(), cluster_dir: c.dir.clone() };
        let mut lab = DiskLab { c, disk };
        lab.c.kill_daemon(i);
        let aside = lab.c.dir.join(format!("{node}.before-disk"));
        std::fs::File::create(&image).and_then(|f| f.set_len(mib << 20)).expect("the disk image");
        let ok = |out: std::process::Output, what: &str| assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        ok(Process::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image).output().expect("mkfs.ext4"), "mkfs.ext4");
        if mount.exists() {
            std::fs::rename(&mount, &aside).expect("moving the state aside");
        }
        std::fs::create_dir_all(&mount).unwrap();
        ok(Process::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount).output().expect("mount"), "mount -o loop");
        if aside.exists() {
            ok(Process::new("cp").arg("-a").arg(format!("{}/.", aside.display())).arg(&mount).output().expect("cp"), "cp -a");
            std::fs::remove_dir_all(&aside).unwrap();
        }
        lab.c.daemons[i] = Some(lab.c.start_daemon(i));
        wait_for(&format!("{node}'s daemon on its small disk"), Duration::from_secs(20), || info(&lab.c.sock(node)).is_some());
        lab
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // The cluster (dropped first) killed the daemons and tasks that used it.
        let out = Process::new("umount").arg(&self.mount).output();
        if !out.is_ok_and(|o| o.status.success()) {
            let _ = Process::new("umount").arg("-l").arg(&self.mount).output();
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir_all(&self.cluster_dir);
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn faults_a_leader_whose_disk_fills_refuses_writes_naming_the_disk_and_takes_them_again_when_space_returns() {
    let fault = "the leader's disk fills up";
    let lab = DiskLab::up(0, 128);
    let c = &lab.c;
    let setup = three_managers_and_web(c);
    let pid = c.daemons[0].as_ref().map(|d| d.id()).expect("smgr's daemon");
    let w = Workload::start(c, &setup);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(leader(c, &["smgr"]).map(|l| l.0).as_deref(), Some("smgr"), "smgr leads: it made the cluster");
    lab.disk.fill(4 << 20);
    let full_at = w.now();
    std::thread::sleep(Duration::from_secs(6));
    let unfill_at = w.now();
    lab.disk.unfill();
    wait_for("a write acknowledged once space returned", Duration::from_secs(15), || w.acked_writes(unfill_at, w.now()) > 0);
    let again = w.now() - unfill_at;
    std::thread::sleep(Duration::from_secs(2));
    // A write that began after the disk filled (and a moment for the one in flight) was refused.
    let written_while_full = w.acked_writes(full_at + Duration::from_millis(500), unfill_at);
    let s = w.finish(c, fault);
    s.print(&format!("not moved; writes acknowledged again {again:?} after space returned, {} refused", s.refusals.len()));
    assert_eq!(written_while_full, 0, "{fault}: writes were acknowledged while the leader's disk was full");
    let raft_dir = lab.disk.mount.join("raft");
    for (client, (node, _)) in NODES.iter().enumerate() {
        let msg = s.refusals.iter().find(|(c, _, _)| *c == client).map(|(_, _, m)| m.clone());
        let msg = msg.unwrap_or_else(|| panic!("{fault}: a write through {node} was never refused"));
        assert!(msg.contains(&raft_dir.display().to_string()), "{fault}: the refusal names the disk: {msg}");
    }
    assert!(s.refusals.iter().all(|(_, at, _)| *at >= full_at && *at <= unfill_at + Duration::from_secs(1)), "refusals only while full");
    assert_eq!(c.daemons[0].as_ref().map(|d| d.id()), Some(pid), "smgr was not restarted");
    assert_eq!(leader(c, &["snode1"]).map(|l| l.0).as_deref(), Some("smgr"), "{fault}: smgr still leads, its Raft core alive");
    s.assert_goals(c);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn faults_a_follower_whose_disk_fills_keeps_its_log_whole_and_serves_every_write_after_a_restart() {
    let fault = "a follower's disk fills up";
    let mut lab = DiskLab::up(1, 128);
    let setup = three_managers_and_web(&lab.c);
    let w = Workload::start(&lab.c, &setup);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(leader(&lab.c, &["smgr"]).map(|l| l.0).as_deref(), Some("smgr"), "smgr leads: it made the cluster");
    lab.disk.fill(0);
    let full_at = w.now();
    std::thread::sleep(Duration::from_secs(8));
    let acked_while_full = w.acked_writes(full_at, w.now());
    lab.disk.unfill();
    // Restarted with its disk back: its redb opens, its log is whole, and it catches up.
    lab.c.kill_daemon(1);
    lab.c.daemons[1] = Some(lab.c.start_daemon(1));
    let t1 = Instant::now();
    let back = agents_back(&lab.c, t1, &["snode1"], &["smgr", "snode2"], |_, _, _| true)
        .unwrap_or_else(|| panic!("{fault}: snode1's agent was not back on the leader within 30 s of its restart"));
    let restarted_at = w.now();
    wait_for("snode1 serving reads from its own replica after the restart", Duration::from_secs(30), || {
        let s = w.shared.lock().unwrap();
        s.served.iter().any(|(client, at, by)| *client == 1 && *at > restarted_at && *by == setup.raft_ids["snode1"])
    });
    std::thread::sleep(Duration::from_secs(2));
    let log = strip_ansi(&std::fs::read_to_string(lab.c.dir.join("snode1.log")).unwrap_or_default());
    let refused = log.lines().filter(|l| l.contains("refusing Raft entries")).count();
    let stopped = log.contains("the Raft core stopped");
    let s = w.finish(&lab.c, fault);
    s.print(&format!(
        "snode1 refused {refused} appends while full (Raft core stopped: {stopped}); its agent back {back:?} after its restart"
    ));
    assert!(acked_while_full > 0, "{fault}: the other two managers went on acknowledging writes");
    assert!(!log.contains("opening the Raft log"), "{fault}: snode1's Raft log did not open after the restart");
    assert!(back <= AGENTS_BACK, "{fault}: snode1's agent took {back:?} after its restart (goal: {AGENTS_BACK:?})");
    let served_by_itself = s.final_served.iter().any(|(n, by)| n == "snode1" && *by == setup.raft_ids["snode1"]);
    assert!(served_by_itself, "{fault}: the final read through snode1 came from its own replica: {:?}", s.final_served);
    s.assert_goals(&lab.c);
}

/// The helpers that need no root: distinct registers, log lines read without their colours.
#[test]
fn faults_helpers_registers_are_distinct_and_log_colours_are_stripped() {
    let set: BTreeSet<&str> = KEYS.iter().copied().collect();
    assert_eq!(set.len(), KEYS.len());
    assert!(strip_ansi("\u{1b}[3mpeer\u{1b}[0m\u{1b}[2m=\u{1b}[0m192.168.33.20:4000").contains("peer=192.168.33.20:4000"));
}
