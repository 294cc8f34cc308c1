//! The sans-IO membership core: foca plus our envelope, timers and Lifeguard refinements.
//! Inputs are datagrams, timeouts and commands, each with the current instant; outputs are
//! sealed datagrams (`poll_transmit`), member events (`poll_event`) and the next instant the
//! core wants to be woken (`next_timeout`). It never reads a clock or touches a socket, so the
//! in-memory network (`sim.rs`) and the UDP driver (`udp.rs`) run the same code.

use super::accuse::{Accusation, AccusationHandler};
use super::config::GossipConfig;
use super::error::GossipError;
use super::health::LocalHealth;
use super::identity::GossipId;
use super::seal::{GossipKey, Keyring, Rejected};
use super::suspicion::Suspicions;
use foca::{Foca, Incarnation, Notification, OwnedNotification, PostcardCodec, Runtime, State, Timer};
use rand10::rngs::StdRng;
use rand10::SeedableRng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Alive,
    Suspect,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    pub node: String,
    pub addr: SocketAddr,
    pub generation: u64,
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// First seen alive.
    Joined(MemberInfo),
    /// The cluster confirmed it dead (suspected, not refuted in time).
    Down(MemberInfo),
    /// Alive again after it was down.
    Rejoined(MemberInfo),
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Down => "down",
        }
    }
}

/// Each node's current member: a restarted node has a newer generation, and the down entry of
/// its former self stays in the list for a while (`remove_down_after`); the newest one speaks
/// for the node.
pub fn newest_per_node(members: &[MemberInfo]) -> BTreeMap<&str, &MemberInfo> {
    let mut out: BTreeMap<&str, &MemberInfo> = BTreeMap::new();
    for m in members.iter().filter(|m| !m.node.is_empty()) {
        match out.get(m.node.as_str()) {
            Some(have) if have.generation >= m.generation => {}
            _ => {
                out.insert(&m.node, m);
            }
        }
    }
    out
}

impl MemberEvent {
    pub fn member(&self) -> &MemberInfo {
        match self {
            MemberEvent::Joined(m) | MemberEvent::Down(m) | MemberEvent::Rejoined(m) => m,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Counters for the bench and for logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub sent_datagrams: u64,
    pub sent_bytes: u64,
    pub received_datagrams: u64,
    pub received_bytes: u64,
    pub dropped_unknown_key: u64,
    pub dropped_forged: u64,
    pub dropped_malformed: u64,
    /// Datagrams that opened but foca refused (stale, from ourselves, undecodable).
    pub refused: u64,
    /// Last checks sent to a suspect before its suspicion became final (`check_suspect`).
    pub suspect_checks: u64,
}

/// foca's `Runtime`, collecting what one call asked for; the core acts on it right after.
#[derive(Default)]
struct Collector {
    send: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<GossipId>)>,
    notes: Vec<OwnedNotification<GossipId>>,
}

impl Runtime<GossipId> for Collector {
    fn notify(&mut self, notification: Notification<'_, GossipId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: GossipId, data: &[u8]) {
        self.send.push((to.addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<GossipId>, after: Duration) {
        self.timers.push((after, event));
    }
}

enum Wake {
    Foca(Timer<GossipId>),
    Suspicion(GossipId, Incarnation),
    /// While foca has no active member, announce again (a lost announce, a lone survivor).
    Rejoin,
}

/// How often a node with nobody to talk to announces itself again.
const REJOIN_EVERY: Duration = Duration::from_secs(1);
/// How many remembered addresses it tries besides its seeds.
const REJOIN_FANOUT: usize = 5;

type Swim = Foca<GossipId, PostcardCodec, StdRng, AccusationHandler>;

pub struct Membership {
    foca: Swim,
    rt: Collector,
    config: GossipConfig,
    keyring: Keyring,
    rng: StdRng,
    wakes: BinaryHeap<Reverse<(Instant, u64)>>,
    wake_items: HashMap<u64, Wake>,
    seq: u64,
    suspicions: Suspicions,
    health: LocalHealth,
    accusations: Arc<Mutex<Vec<Accusation>>>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<MemberEvent>,
    ever_down: HashSet<String>,
    /// Where to announce when alone: the seeds given to `join`, and members once known.
    seeds: Vec<SocketAddr>,
    known: Vec<SocketAddr>,
    rejoin_scheduled: bool,
    /// Set by an isolation reset inside notification handling; acted on once that is done.
    pending_rejoin: bool,
    /// The newest timer token foca used (to arm suspicion timers it did not ask for).
    token: u8,
    stats: Stats,
}

impl Membership {
    /// A core for `identity`, sealing under `keyring`. `seed` seeds foca's choices and the
    /// nonces: give `None` in production (the OS's generator), a number in simulations.
    pub fn new(identity: GossipId, config: GossipConfig, keyring: Keyring, seed: Option<u64>) -> Result<Membership, GossipError> {
        if identity.node.is_empty() {
            return Err(GossipError::Config { field: "node", problem: "is empty; give the node's id".into() });
        }
        config.validate()?;
        let mut rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand10::make_rng(),
        };
        let accusations = Arc::new(Mutex::new(Vec::new()));
        let foca = new_foca(identity, &config, &mut rng, accusations.clone())?;
        Ok(Membership {
            foca,
            rt: Collector::default(),
            suspicions: Suspicions::new(config.suspicion_min, config.suspicion_max, config.suspicion_confirmations, config.last_checks),
            health: LocalHealth::new(config.max_health),
            config,
            keyring,
            rng,
            wakes: BinaryHeap::new(),
            wake_items: HashMap::new(),
            seq: 0,
            accusations,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            ever_down: HashSet::new(),
            seeds: Vec::new(),
            known: Vec::new(),
            rejoin_scheduled: false,
            pending_rejoin: false,
            token: 0,
            stats: Stats::default(),
        })
    }

    pub fn identity(&self) -> &GossipId {
        self.foca.identity()
    }

    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn health_score(&self) -> u32 {
        self.health.score()
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Announce ourselves to seeds known by address (any member will do).
    pub fn join(&mut self, now: Instant, seeds: &[SocketAddr]) {
        let me = self.identity().addr;
        for &seed in seeds.iter().filter(|&&s| s != me) {
            if !self.seeds.contains(&seed) {
                self.seeds.push(seed);
            }
        }
        self.announce(now, &self.seeds.clone());
        if !self.rejoin_scheduled {
            self.rejoin_scheduled = true;
            self.schedule(now + REJOIN_EVERY, Wake::Rejoin);
        }
    }

    fn announce(&mut self, now: Instant, to: &[SocketAddr]) {
        for &addr in to {
            let r = self.foca.announce(GossipId::seed(addr), &mut self.rt);
            self.after_foca(now, r);
        }
    }

    /// Tell the cluster we leave (members mark us down at once instead of suspecting us).
    pub fn leave(&mut self, now: Instant) {
        let r = self.foca.leave_cluster(&mut self.rt);
        self.after_foca(now, r);
    }

    pub fn install_key(&mut self, key: GossipKey) -> Result<(), GossipError> {
        self.keyring.install(key)
    }

    pub fn use_key(&mut self, id: u32) -> Result<(), GossipError> {
        self.keyring.use_key(id)
    }

    pub fn retire_key(&mut self, id: u32) -> Result<(), GossipError> {
        self.keyring.retire(id)
    }

    /// A datagram arrived from `from`. Nothing a peer sends can make this panic; what is
    /// refused is counted and returned as an error for the driver to log.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Result<(), GossipError> {
        self.stats.received_datagrams += 1;
        self.stats.received_bytes += data.len() as u64;
        let plain = match self.keyring.open(data) {
            Ok(p) => p,
            Err(why) => {
                match why {
                    Rejected::UnknownKey(_) => self.stats.dropped_unknown_key += 1,
                    Rejected::Forged(_) => self.stats.dropped_forged += 1,
                    Rejected::Malformed => self.stats.dropped_malformed += 1,
                }
                return Err(GossipError::Datagram { from, problem: why.to_string() });
            }
        };
        let r = self.foca.handle_data(&plain, &mut self.rt);
        let refused = r.as_ref().err().map(ToString::to_string);
        self.after_foca(now, r);
        self.take_accusations(now);
        if let Some(problem) = refused {
            self.stats.refused += 1;
            return Err(GossipError::Datagram { from, problem });
        }
        Ok(())
    }

    /// When the core next needs `handle_timeout`.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.wakes.peek().map(|Reverse((at, _))| *at)
    }

    /// Run every timer due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, seq))) = self.wakes.peek() {
            if at > now {
                break;
            }
            self.wakes.pop();
            let Some(wake) = self.wake_items.remove(&seq) else { continue };
            match wake {
                Wake::Foca(timer) => {
                    let probing = matches!(timer, Timer::ProbeRandomMember(_));
                    let r = self.foca.handle_timer(timer, &mut self.rt);
                    if probing {
                        // foca judges the previous probe when the next one starts: a failure
                        // shows as a ChangeSuspectToDown timer asked for in this same call.
                        if self.rt.timers.iter().any(|(_, t)| matches!(t, Timer::ChangeSuspectToDown { .. })) {
                            self.health.probe_failed();
                        } else {
                            self.health.probe_succeeded();
                        }
                    }
                    self.after_foca(now, r);
                    if probing {
                        self.arm_learned_suspicions(now);
                    }
                }
                Wake::Suspicion(target, incarnation) => {
                    let members = self.foca.num_members();
                    // foca 2.0 sends TurnUndead when this timer fires even if the member refuted
                    // meanwhile (its condition check fails but the courtesy message goes out),
                    // which makes a live member renew its identity for nothing: deliver the
                    // timer only while the suspicion still stands.
                    let stands = self.holds_suspect(&target, incarnation);
                    if stands && self.suspicions.begin_check(now, &target, incarnation, members) {
                        self.check_suspect(now, &target);
                        let again = now + self.health.scale(self.config.probe_rtt);
                        self.schedule(again, Wake::Suspicion(target, incarnation));
                        continue;
                    }
                    let Some(timer) = self.suspicions.take_due(now, &target, incarnation, members) else { continue };
                    if stands {
                        let r = self.foca.handle_timer(timer, &mut self.rt);
                        self.after_foca(now, r);
                    }
                }
                Wake::Rejoin => {
                    if self.foca.num_members() == 0 {
                        let mut to = self.seeds.clone();
                        to.extend(self.known.iter().take(REJOIN_FANOUT));
                        self.announce(now, &to);
                    }
                    self.schedule(now + REJOIN_EVERY, Wake::Rejoin);
                }
            }
        }
        self.suspicions.prune(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// Every node this core knows, itself included, one entry per node id (its newest identity).
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut by_node: BTreeMap<&str, MemberInfo> = BTreeMap::new();
        let me = self.identity();
        let mine = MemberInfo { node: me.node.clone(), addr: me.addr, generation: me.generation, status: Status::Alive };
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let status = match m.state() {
                State::Alive => Status::Alive,
                State::Suspect => Status::Suspect,
                State::Down => Status::Down,
            };
            let info = MemberInfo { node: id.node.clone(), addr: id.addr, generation: id.generation, status };
            let newer = by_node
                .get(id.node.as_str())
                .is_none_or(|old| (info.status != Status::Down, info.generation) > (old.status != Status::Down, old.generation));
            if newer && id.node != me.node {
                by_node.insert(&id.node, info);
            }
        }
        let mut out: Vec<MemberInfo> = by_node.into_values().collect();
        out.push(mine);
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Members foca counts as active (alive or suspect), not counting this node.
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    fn after_foca(&mut self, now: Instant, result: Result<(), foca::Error>) {
        if let Err(e) = result {
            tracing::debug!(node = %self.identity().node, error = %e, "gossip: foca refused");
        }
        for (to, plain) in std::mem::take(&mut self.rt.send) {
            let data = self.keyring.seal(&plain, &mut self.rng);
            self.stats.sent_datagrams += 1;
            self.stats.sent_bytes += data.len() as u64;
            self.outbox.push_back(Transmit { to, data });
        }
        for (after, timer) in std::mem::take(&mut self.rt.timers) {
            if let Timer::ProbeRandomMember(token) = timer {
                self.token = token;
            }
            match timer {
                Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. } => {
                    let after = self.health.scale(after);
                    self.schedule(now + after, Wake::Foca(timer));
                }
                Timer::ChangeSuspectToDown { ref member_id, incarnation, .. } => {
                    let target = member_id.clone();
                    let members = self.foca.num_members();
                    let at = self.suspicions.start(now, target.clone(), incarnation, timer, members);
                    self.schedule(at, Wake::Suspicion(target.clone(), incarnation));
                    let acc = Accusation { target, incarnation, accuser: self.identity().node.clone() };
                    if let Err(e) = self.foca.add_broadcast(&acc.encode()) {
                        tracing::debug!(error = %e, "gossip: accusation not broadcast");
                    }
                }
                other => self.schedule(now + after, Wake::Foca(other)),
            }
        }
        for note in std::mem::take(&mut self.rt.notes) {
            self.note(note);
        }
        if std::mem::take(&mut self.pending_rejoin) {
            self.rt = Collector::default();
            let to: Vec<SocketAddr> = self.seeds.iter().chain(self.known.iter().take(REJOIN_FANOUT)).copied().collect();
            self.announce(now, &to);
            self.rejoin_scheduled = true;
            self.schedule(now + REJOIN_EVERY, Wake::Rejoin);
        }
    }

    /// The last check before an unconfirmed suspicion of `target` becomes final: announce to it
    /// directly (twice, against loss). The announce carries our pending updates, its suspicion
    /// among them, so a suspect that had not heard refutes; and its reply (a feed) carries its
    /// current incarnation in the header, which foca applies as Alive and so lifts the
    /// suspicion here.
    fn check_suspect(&mut self, now: Instant, target: &GossipId) {
        for _ in 0..2 {
            let r = self.foca.announce(target.clone(), &mut self.rt);
            self.after_foca(now, r);
        }
        self.stats.suspect_checks += 1;
    }

    /// foca arms the down timer only on the node whose probe failed; a suspicion learned by
    /// gossip is held until refuted. If the accuser's timer never runs (it restarted, or it
    /// dropped its suspicion as stale) and the refutation never reaches us, we would hold the
    /// member suspect forever. Lifeguard (as memberlist) has every node that learns a suspicion
    /// run its own timer; do the same, once per probe period.
    fn arm_learned_suspicions(&mut self, now: Instant) {
        let members = self.foca.num_members();
        let learned: Vec<(GossipId, Incarnation)> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect && !self.suspicions.has_timer(m.id(), m.incarnation()))
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        for (target, incarnation) in learned {
            let timer = Timer::ChangeSuspectToDown { member_id: target.clone(), incarnation, token: self.token };
            let at = self.suspicions.start(now, target.clone(), incarnation, timer, members);
            self.schedule(at, Wake::Suspicion(target, incarnation));
        }
    }

    /// Every member went down at once: far more likely this node was cut off than that the
    /// cluster died. foca would keep them all down (Down is final for an identity) and talk to
    /// nobody; so start over as a fresh instance under a new generation, remember where the
    /// members were, and announce to them and the seeds until someone answers. The members come
    /// back as `Rejoined`.
    fn reset_after_isolation(&mut self) {
        let me = self.identity().clone();
        self.known = self.foca.iter_membership_state().map(|m| m.id().addr).filter(|a| *a != me.addr).collect();
        let renewed = GossipId { generation: me.generation.wrapping_add(1), ..me };
        match new_foca(renewed, &self.config, &mut self.rng, self.accusations.clone()) {
            Ok(foca) => self.foca = foca,
            Err(e) => {
                tracing::warn!(error = %e, "gossip: could not start over after isolation");
                return;
            }
        }
        tracing::warn!(node = %self.identity().node, generation = self.identity().generation, "gossip: every member is down; starting over and announcing to seeds and former members");
        // The old instance's timers carry tokens the new one could reuse: drop them all.
        self.wakes.clear();
        self.wake_items.clear();
        self.suspicions = Suspicions::new(
            self.config.suspicion_min,
            self.config.suspicion_max,
            self.config.suspicion_confirmations,
            self.config.last_checks,
        );
        self.rejoin_scheduled = false;
        self.pending_rejoin = true;
        self.token = 0;
    }

    fn take_accusations(&mut self, now: Instant) {
        let taken = match self.accusations.lock() {
            Ok(mut inbox) => std::mem::take(&mut *inbox),
            Err(_) => return,
        };
        let me = self.identity().clone();
        for acc in taken {
            if acc.accuser == me.node {
                continue;
            }
            if acc.target.node == me.node {
                // We are alive and accused: foca refutes; we take it as a sign of our own health.
                self.health.accused();
                continue;
            }
            let members = self.foca.num_members();
            if let Some(at) = self.suspicions.confirm(now, acc.target.clone(), acc.incarnation, acc.accuser, members) {
                self.schedule(at, Wake::Suspicion(acc.target, acc.incarnation));
            } else if !self.suspicions.has_timer(&acc.target, acc.incarnation) && self.holds_suspect(&acc.target, acc.incarnation) {
                // A suspicion learned by gossip, with its accusation: run our own timer from
                // now rather than from our next probe (up to a probe period later), which is
                // when `arm_learned_suspicions` would find it.
                let timer = Timer::ChangeSuspectToDown { member_id: acc.target.clone(), incarnation: acc.incarnation, token: self.token };
                let at = self.suspicions.start(now, acc.target.clone(), acc.incarnation, timer, members);
                self.schedule(at, Wake::Suspicion(acc.target, acc.incarnation));
            }
        }
    }

    fn holds_suspect(&self, target: &GossipId, incarnation: Incarnation) -> bool {
        self.foca.iter_membership_state().any(|m| m.id() == target && m.state() == State::Suspect && m.incarnation() == incarnation)
    }

    fn schedule(&mut self, at: Instant, wake: Wake) {
        self.seq += 1;
        self.wakes.push(Reverse((at, self.seq)));
        self.wake_items.insert(self.seq, wake);
    }

    fn note(&mut self, note: OwnedNotification<GossipId>) {
        let info = |id: &GossipId, status| MemberInfo { node: id.node.clone(), addr: id.addr, generation: id.generation, status };
        match note {
            OwnedNotification::MemberUp(id) => {
                let event = if self.ever_down.remove(&id.node) {
                    MemberEvent::Rejoined(info(&id, Status::Alive))
                } else {
                    MemberEvent::Joined(info(&id, Status::Alive))
                };
                tracing::info!(node = %self.identity().node, member = %id.node, addr = %id.addr, ?event, "gossip: member up");
                self.events.push_back(event);
            }
            OwnedNotification::MemberDown(id) => {
                // A node that moved to another address lives on under its new identity.
                let lives_on = self.foca.iter_members().any(|m| m.id().node == id.node && m.id().addr != id.addr);
                if !lives_on && self.ever_down.insert(id.node.clone()) {
                    tracing::info!(node = %self.identity().node, member = %id.node, addr = %id.addr, "gossip: member confirmed down");
                    self.events.push_back(MemberEvent::Down(info(&id, Status::Down)));
                }
            }
            OwnedNotification::Rejoin(id) => {
                tracing::warn!(node = %id.node, generation = id.generation, "gossip: the cluster declared this node down; rejoined as a new generation");
            }
            OwnedNotification::Defunct => {
                tracing::warn!(node = %self.identity().node, "gossip: this node is declared down and cannot rejoin");
            }
            OwnedNotification::Idle => self.reset_after_isolation(),
            OwnedNotification::Rename(..) | OwnedNotification::Active => {}
        }
    }
}

fn new_foca(
    identity: GossipId,
    config: &GossipConfig,
    rng: &mut StdRng,
    accusations: Arc<Mutex<Vec<Accusation>>>,
) -> Result<Swim, GossipError> {
    let foca_rng = StdRng::seed_from_u64(rand10::Rng::next_u64(rng));
    Ok(Foca::with_custom_broadcast(identity, config.to_foca()?, foca_rng, PostcardCodec, AccusationHandler::new(accusations)))
}
