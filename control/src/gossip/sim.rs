//! An in-memory network of membership cores with a virtual clock: loss, latency and jitter you
//! set, links you can cut, nodes you can crash and restart. Pure (no sockets, no real time), so
//! tests are deterministic for a seed and an hour of gossip among 1,000 nodes runs in minutes;
//! the scale bench (`benches/gossip.rs`) drives it too.

use super::config::GossipConfig;
use super::core::{MemberEvent, Membership};
use super::identity::GossipId;
use super::seal::Keyring;
use rand10::rngs::StdRng;
use rand10::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetConfig {
    /// Probability that a datagram is lost, 0.0..=1.0.
    pub loss: f64,
    /// One-way delay, plus up to `jitter` more (uniform).
    pub latency: Duration,
    pub jitter: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { loss: 0.0, latency: Duration::from_millis(1), jitter: Duration::from_millis(1) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEvent {
    /// Virtual time since the simulation began.
    pub at: Duration,
    /// The node that saw it.
    pub observer: usize,
    pub event: MemberEvent,
}

struct SimNode {
    name: String,
    addr: SocketAddr,
    generation: u64,
    config: GossipConfig,
    keyring: Keyring,
    core: Option<Membership>,
    /// The wake-up registered in the scheduler (others for this node are stale).
    wake: Option<Instant>,
}

struct Packet {
    to: usize,
    from: SocketAddr,
    data: Vec<u8>,
}

pub struct Sim {
    start: Instant,
    now: Instant,
    net: NetConfig,
    rng: StdRng,
    seed: u64,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    wakes: BinaryHeap<Reverse<(Instant, usize)>>,
    packets: BinaryHeap<Reverse<(Instant, u64)>>,
    packet_items: HashMap<u64, Packet>,
    packet_seq: u64,
    cut: HashSet<(usize, usize)>,
    events: Vec<SimEvent>,
    /// Datagrams delivered and lost, over the whole run.
    pub delivered: u64,
    pub lost: u64,
    /// Bytes of every datagram sent (sealed, as on the wire; lost ones too).
    pub sent_bytes: u64,
}

/// The gossip address of simulated node `i`.
pub fn addr_of(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::new(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8).into(), 7946)
}

impl Sim {
    pub fn new(net: NetConfig, seed: u64) -> Sim {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            net,
            rng: StdRng::seed_from_u64(seed),
            seed,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            wakes: BinaryHeap::new(),
            packets: BinaryHeap::new(),
            packet_items: HashMap::new(),
            packet_seq: 0,
            cut: HashSet::new(),
            events: Vec::new(),
            delivered: 0,
            lost: 0,
            sent_bytes: 0,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// Add a node (not yet joined); returns its index. Its name is `node<index>`.
    pub fn add_node(&mut self, config: GossipConfig, keyring: Keyring) -> usize {
        let i = self.nodes.len();
        let addr = addr_of(i);
        self.nodes.push(SimNode { name: format!("node{i}"), addr, generation: 1, config, keyring, core: None, wake: None });
        self.by_addr.insert(addr, i);
        self.boot(i);
        i
    }

    fn boot(&mut self, i: usize) {
        let n = &self.nodes[i];
        let id = GossipId::new(n.name.clone(), n.addr, n.generation);
        let seed = self.seed.wrapping_mul(1_000_003).wrapping_add((i as u64) << 20).wrapping_add(n.generation);
        let core = Membership::new(id, n.config.clone(), n.keyring.clone(), Some(seed)).expect("simulated node config is valid");
        self.nodes[i].core = Some(core);
        self.nodes[i].wake = None;
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn core(&self, i: usize) -> Option<&Membership> {
        self.nodes[i].core.as_ref()
    }

    pub fn core_mut(&mut self, i: usize) -> Option<&mut Membership> {
        self.nodes[i].core.as_mut()
    }

    /// Node `i` announces itself to `seeds`.
    pub fn join(&mut self, i: usize, seeds: &[usize]) {
        let seeds: Vec<SocketAddr> = seeds.iter().map(|&s| self.nodes[s].addr).collect();
        let now = self.now;
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.join(now, &seeds);
        }
        self.after(i);
    }

    /// Crash node `i`: it sends and answers nothing from now on.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].core = None;
        self.nodes[i].wake = None;
    }

    /// Start node `i` again as a new process (next generation, same address) and join `seeds`.
    pub fn restart(&mut self, i: usize, seeds: &[usize]) {
        self.nodes[i].generation += 1;
        self.boot(i);
        self.join(i, seeds);
    }

    /// Drop everything between `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    pub fn heal(&mut self, a: usize, b: usize) {
        self.cut.remove(&(a.min(b), a.max(b)));
    }

    /// Run node `i`'s core by hand (rotate keys, leave), then let the network carry its output.
    pub fn with_core<R>(&mut self, i: usize, f: impl FnOnce(&mut Membership, Instant) -> R) -> Option<R> {
        let now = self.now;
        let r = self.nodes[i].core.as_mut().map(|c| f(c, now));
        self.after(i);
        r
    }

    /// Put a raw datagram on the wire to node `to`, as if from `from`.
    pub fn inject(&mut self, to: usize, from: SocketAddr, data: Vec<u8>) {
        let at = self.now + self.net.latency;
        self.enqueue(at, Packet { to, from, data });
    }

    pub fn events(&self) -> &[SimEvent] {
        &self.events
    }

    /// Run the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end, |_| false);
    }

    /// Run until `done` holds (checked after each step) or `limit` passes; true if it held.
    pub fn run_until_true(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        self.run_until(end, |s| done(s))
    }

    fn run_until(&mut self, end: Instant, mut done: impl FnMut(&Sim) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let next_wake = self.wakes.peek().map(|Reverse((t, _))| *t);
            let next_packet = self.packets.peek().map(|Reverse((t, _))| *t);
            let next = match (next_wake, next_packet) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => end,
            };
            if next > end {
                self.now = end;
                return done(self);
            }
            self.now = self.now.max(next);
            if next_packet == Some(next) {
                let Some(Reverse((_, seq))) = self.packets.pop() else { continue };
                let Some(p) = self.packet_items.remove(&seq) else { continue };
                let now = self.now;
                if let Some(core) = self.nodes[p.to].core.as_mut() {
                    self.delivered += 1;
                    // Refusals are counted in the core's stats; nothing to do here.
                    let _ = core.handle_datagram(now, p.from, &p.data);
                    self.after(p.to);
                }
            } else {
                let Some(Reverse((t, i))) = self.wakes.pop() else { continue };
                if self.nodes[i].wake != Some(t) {
                    continue;
                }
                self.nodes[i].wake = None;
                let now = self.now;
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_timeout(now);
                    self.after(i);
                }
            }
        }
    }

    /// Carry node `i`'s output: datagrams onto the wire, events into the log, its next wake-up.
    fn after(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_mut() else { return };
        let mut out = Vec::new();
        while let Some(t) = core.poll_transmit() {
            out.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = core.poll_event() {
            events.push(e);
        }
        let wake = core.next_timeout();
        let at = self.elapsed();
        self.events.extend(events.into_iter().map(|event| SimEvent { at, observer: i, event }));
        if wake != self.nodes[i].wake {
            self.nodes[i].wake = wake;
            if let Some(w) = wake {
                self.wakes.push(Reverse((w, i)));
            }
        }
        let from = self.nodes[i].addr;
        for t in out {
            let Some(&to) = self.by_addr.get(&t.to) else { continue };
            self.sent_bytes += t.data.len() as u64;
            if self.cut.contains(&(i.min(to), i.max(to))) || (self.net.loss > 0.0 && self.rng.random_bool(self.net.loss.clamp(0.0, 1.0))) {
                self.lost += 1;
                continue;
            }
            let jitter = if self.net.jitter.is_zero() { Duration::ZERO } else { self.net.jitter.mul_f64(self.rng.random::<f64>()) };
            let at = self.now + self.net.latency + jitter;
            self.enqueue(at, Packet { to, from, data: t.data });
        }
    }

    fn enqueue(&mut self, at: Instant, p: Packet) {
        self.packet_seq += 1;
        self.packets.push(Reverse((at, self.packet_seq)));
        self.packet_items.insert(self.packet_seq, p);
    }
}
