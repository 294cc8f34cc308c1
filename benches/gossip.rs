//! Gossip membership at scale (issue 20, item 6), on the in-memory network (`gossip::sim`:
//! the real membership cores, sealed datagrams, virtual time): 1,000 nodes at 5% loss.
//! - failure detection: nodes killed one after another; for each, the time until every live
//!   node saw it DOWN, p50 and p99 over all (observer, dead node) pairs;
//! - false positives: DOWN events for live nodes over an hour of virtual time;
//! - bytes per second per node on the wire (sealed datagrams, lost ones included).
//!
//! shoal's LAN settings against memberlist's DefaultLANConfig in the same terms, the same
//! network and seed, as the baseline (Swarm runs memberlist).
//!
//! `cargo bench --bench gossip`. SHOAL_BENCH_NODES (1000), SHOAL_BENCH_LOSS (0.05),
//! SHOAL_BENCH_KILLS (10), SHOAL_BENCH_FP_SECS (3600), SHOAL_BENCH_SEED (7) tune it;
//! SHOAL_BENCH_BASELINE=0 skips memberlist's row. To compare timings in one build, these
//! override shoal's (in milliseconds, or a count): SHOAL_BENCH_PROBE_MS, SHOAL_BENCH_RTT_MS, SHOAL_BENCH_GOSSIP_MS,
//! SHOAL_BENCH_SUSPICION_MIN_MS, SHOAL_BENCH_SUSPICION_MAX_MS, SHOAL_BENCH_CONFIRMATIONS,
//! SHOAL_BENCH_LAST_CHECKS.

use shoal_control::gossip::config::GossipConfig;
use shoal_control::gossip::core::{MemberEvent, Status};
use shoal_control::gossip::seal::{GossipKey, Keyring};
use shoal_control::gossip::sim::{NetConfig, Sim};
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// As each node's controller does (`node/gossip.rs`): every 5 s it announces itself to the
/// nodes of the cluster's list that its gossip does not know, so groups that formed apart
/// (a lost announcement at the start) merge.
const REJOIN_EVERY: Duration = Duration::from_secs(5);

fn join_unknown(sim: &mut Sim) {
    let names: Vec<String> = (0..sim.len()).map(|i| sim.name(i).to_string()).collect();
    for i in 0..sim.len() {
        let Some(core) = sim.core(i) else { continue };
        let known: std::collections::HashSet<String> = core.members().into_iter().map(|m| m.node).collect();
        let unknown: Vec<usize> = (0..names.len()).filter(|&j| j != i && !known.contains(&names[j])).collect();
        if !unknown.is_empty() {
            sim.join(i, &unknown);
        }
    }
}

/// `GossipConfig::lan` with the bench's overrides, if any.
fn overridden(expected: u32) -> GossipConfig {
    let mut c = GossipConfig::lan(expected);
    let ms = |name: &str, d: Duration| Duration::from_millis(env(name, d.as_millis() as u64));
    c.probe_period = ms("SHOAL_BENCH_PROBE_MS", c.probe_period);
    c.probe_rtt = ms("SHOAL_BENCH_RTT_MS", c.probe_rtt);
    c.gossip_period = ms("SHOAL_BENCH_GOSSIP_MS", c.gossip_period);
    c.suspicion_min = ms("SHOAL_BENCH_SUSPICION_MIN_MS", c.suspicion_min);
    c.suspicion_max = ms("SHOAL_BENCH_SUSPICION_MAX_MS", c.suspicion_max);
    c.suspicion_confirmations = env("SHOAL_BENCH_CONFIRMATIONS", c.suspicion_confirmations);
    c.last_checks = env("SHOAL_BENCH_LAST_CHECKS", c.last_checks);
    c
}

struct Figures {
    converge: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    undetected: usize,
    false_positives: usize,
    fp_secs: u64,
    bytes_per_node_sec: f64,
    wall: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(config: impl Fn(u32) -> GossipConfig, n: usize, net: NetConfig, seed: u64, kills: usize, fp_secs: u64) -> Figures {
    let wall = Instant::now();
    let mut sim = Sim::new(net, seed);
    let key = GossipKey::from_bytes(1, &[7u8; 32]);
    for _ in 0..n {
        sim.add_node(config(n as u32), Keyring::new(key.clone()));
    }
    // Each joins through one of the nodes before it, as agents join through a manager.
    for i in 1..n {
        sim.join(i, &[(i - 1) % 3]);
    }
    // Known: alive or suspected (at 5% loss someone always suspects someone for a moment).
    let known = |s: &Sim, i: usize| s.core(i).map_or(0, |c| c.members().iter().filter(|m| m.status != Status::Down).count());
    let mut converged = false;
    while !converged && sim.elapsed() < Duration::from_secs(600) {
        sim.run_for(REJOIN_EVERY);
        join_unknown(&mut sim);
        converged = (0..n).all(|i| known(&sim, i) == n);
    }
    if !converged {
        let counts: Vec<usize> = (0..n).map(|i| known(&sim, i)).collect();
        panic!("{n} nodes did not converge in 600 s of virtual time: members known per node {counts:?}");
    }
    let converge = sim.elapsed();

    // False positives: nobody dies; every DOWN is a live node declared dead.
    let from = sim.events().len();
    let bytes_from = sim.sent_bytes;
    let t0 = sim.elapsed();
    // (No joins here: every node lists every other once converged, and a member gossip
    // declared down is announced to by gossip itself.)
    sim.run_for(Duration::from_secs(fp_secs));
    let false_positives = sim.events()[from..].iter().filter(|e| matches!(e.event, MemberEvent::Down(_))).count();
    let bytes_per_node_sec = (sim.sent_bytes - bytes_from) as f64 / n as f64 / (sim.elapsed() - t0).as_secs_f64().max(1e-9);

    // Detection: kill one node at a time; every node still alive must see it down.
    let mut times = Vec::new();
    let mut undetected = 0;
    let mut dead = Vec::new();
    for k in 0..kills {
        let victim = 3 + k * (n - 3) / kills.max(1);
        let victim_name = sim.name(victim).to_string();
        sim.stop(victim);
        dead.push(victim);
        let observers = n - dead.len();
        let t0 = sim.elapsed();
        let mut seen = sim.events().len();
        let mut at = Vec::new();
        sim.run_until_true(Duration::from_secs(60), |s| {
            for e in &s.events()[seen..] {
                if let MemberEvent::Down(m) = &e.event {
                    if m.node == victim_name {
                        at.push(e.at - t0);
                    }
                }
            }
            seen = s.events().len();
            at.len() >= observers
        });
        undetected += observers.saturating_sub(at.len());
        times.extend(at);
        // Let the cluster settle before the next one.
        sim.run_for(Duration::from_secs(5));
    }
    times.sort();
    Figures {
        converge,
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        max: times.last().copied().unwrap_or_default(),
        undetected,
        false_positives,
        fp_secs,
        bytes_per_node_sec,
        wall: wall.elapsed(),
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<28} detection p50 {:>6.2} s  p99 {:>6.2} s  max {:>6.2} s  undetected {}  false positives {} in {} s  {:>7.0} B/s per node  (converged in {:.1} s; {:.0} s of wall time)",
        f.p50.as_secs_f64(),
        f.p99.as_secs_f64(),
        f.max.as_secs_f64(),
        f.undetected,
        f.false_positives,
        f.fp_secs,
        f.bytes_per_node_sec,
        f.converge.as_secs_f64(),
        f.wall.as_secs_f64(),
    );
}

fn main() {
    let n: usize = env("SHOAL_BENCH_NODES", 1000usize).max(8);
    let loss: f64 = env("SHOAL_BENCH_LOSS", 0.05);
    let kills: usize = env("SHOAL_BENCH_KILLS", 10usize).clamp(1, n / 2);
    let fp_secs: u64 = env("SHOAL_BENCH_FP_SECS", 3600u64);
    let seed: u64 = env("SHOAL_BENCH_SEED", 7u64);
    let baseline = env("SHOAL_BENCH_BASELINE", 1u8) != 0;
    let net = NetConfig { loss, latency: Duration::from_millis(1), jitter: Duration::from_millis(1) };
    println!(
        "gossip bench: {n} nodes, {:.0}% loss, {kills} killed one by one, false positives over {fp_secs} s (virtual time)",
        loss * 100.0
    );
    let ours = run(overridden, n, net, seed, kills, fp_secs);
    let c = overridden(n as u32);
    println!(
        "shoal's timings: probe {:?} (rtt {:?}), gossip {:?}, suspicion {:?}..{:?}, {} confirmations, {} rounds of last checks",
        c.probe_period, c.probe_rtt, c.gossip_period, c.suspicion_min, c.suspicion_max, c.suspicion_confirmations, c.last_checks
    );
    print("shoal (GossipConfig::lan)", &ours);
    if baseline {
        let theirs = run(GossipConfig::memberlist_lan, n, net, seed, kills, fp_secs);
        print("memberlist DefaultLANConfig", &theirs);
        println!(
            "memberlist / shoal: detection p99 {:.1}x, bytes per node {:.2}x",
            theirs.p99.as_secs_f64() / ours.p99.as_secs_f64().max(1e-9),
            theirs.bytes_per_node_sec / ours.bytes_per_node_sec.max(1e-9)
        );
    }
    println!("goals: p99 < 3 s, 0 false positives");
}
