//! What one applied entry costs the leader's dispatcher at scale (issue 20, item 3): the old
//! way (every session builds the endpoint table and its node's view and diffs it against the
//! copy it sent) against the view cache (one build per version, and per session only its
//! node's part of the step). Both serve the same state and the same stream of entries (one
//! task report each, the common case), in the same run; printed as a ratio.
//!
//! `cargo bench --bench dispatch`. SHOAL_BENCH_AGENTS (default 1000), SHOAL_BENCH_TASKS
//! (default 3000) and SHOAL_BENCH_ENTRIES (default 5) tune it.

use shoal_control::dispatcher::view_cache::{self, Built, Sent, Step};
use shoal_control::dispatcher::{AgentView, EndpointTable};
use shoal_control::model::{Role, ServiceMode, ServiceSpec, TaskState, TaskStatus};
use shoal_control::state::Command;
use shoal_control::testkit::World;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let agents = env("SHOAL_BENCH_AGENTS", 1000).max(2);
    let tasks = env("SHOAL_BENCH_TASKS", 3000);
    let entries = env("SHOAL_BENCH_ENTRIES", 5).max(1);
    let mut w = World::new(agents - 1);
    let services = tasks.div_ceil(100).max(1);
    for i in 0..services {
        let mut s = ServiceSpec::new(format!("svc{i}"), "nginx");
        s.mode = ServiceMode::Replicated { replicas: (tasks / services) as i64 };
        w.create(s);
    }
    w.report_all(TaskState::Running);
    let nodes: Vec<_> = w.state.nodes.keys().cloned().collect();
    println!("dispatch bench: {} agents, {} tasks, {} entries (one task report each)", nodes.len(), w.state.tasks.len(), entries);

    // The old way's state per session: the last view it sent.
    let table = EndpointTable::from_state(&w.state);
    let mut sent_views: Vec<AgentView> = nodes.iter().map(|n| AgentView::for_node(&w.state, n, &table)).collect();
    // The cache's: the last build, and per session what it sent.
    let mut built = Arc::new(Built::from_state(1, &w.state));
    let mut sent: Vec<Sent> = nodes.iter().map(|n| view_cache::update(n, Some(Role::Worker), &built, None, None).1).collect();

    let (mut old, mut new) = (Duration::ZERO, Duration::ZERO);
    let (mut old_bytes, mut new_bytes) = (0usize, 0usize);
    let ids: Vec<_> = w.state.tasks.keys().cloned().collect();
    for e in 0..entries {
        // One task's health changes: one endpoint moves.
        let id = &ids[e * 7 % ids.len()];
        let t = &w.state.tasks[id];
        let mut status = TaskStatus::new(TaskState::Running, "", w.now);
        status.health =
            if e % 2 == 0 { Some(shoal_control::model::Health::Unhealthy) } else { Some(shoal_control::model::Health::Healthy) };
        let node = t.node_id.clone().expect("assigned");
        w.ok(Command::TaskStatus { node, updates: vec![(id.clone(), status)] });
        let version = built.version + 1;

        let start = Instant::now();
        for (i, n) in nodes.iter().enumerate() {
            let view = AgentView::for_node(&w.state, n, &EndpointTable::from_state(&w.state));
            let u = view.diff(&sent_views[i], version);
            old_bytes += serde_json::to_vec(&u).map(|v| v.len()).unwrap_or(0);
            sent_views[i] = view;
        }
        old += start.elapsed();

        let start = Instant::now();
        let next = Arc::new(Built::from_state(version, &w.state));
        let step = [Arc::new(Step::between(&built, &next))];
        built = next;
        for (i, n) in nodes.iter().enumerate() {
            let (u, now) = view_cache::update(n, Some(Role::Worker), &built, Some(&sent[i]), Some(&step));
            new_bytes += serde_json::to_vec(&u).map(|v| v.len()).unwrap_or(0);
            sent[i] = now;
        }
        new += start.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / entries as f64;
    println!("per applied entry, all sessions (old: table + view + diff per session): {:>9.2} ms", per(old));
    println!("per applied entry, all sessions (view cache: one build + steps):        {:>9.2} ms", per(new));
    println!("old / cache:                                                            {:>9.1}x", per(old) / per(new));
    println!("bytes sent per entry, all sessions: old {} / cache {} (the same deltas)", old_bytes / entries, new_bytes / entries);
}
