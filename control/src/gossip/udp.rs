//! The tokio driver: one UDP socket (port 7946 in the daemon), one task running the core.
//! It publishes the member list on a `watch` and member events on a `broadcast`, and takes
//! key rotation and joins as commands. Shutdown is a parameter: on `true` the node leaves
//! the cluster (members mark it down at once) and the task ends.
//!
//! ```text
//! let key = GossipKey::from_base64(1, &issued_key)?;
//! let opts = GossipOptions::new("node-id", "0.0.0.0:7946".parse()?, key).advertise("192.168.33.10:7946".parse()?).seeds(seeds);
//! let gossip = Gossip::start(opts, shutdown_rx).await?;
//! let mut members = gossip.members();          // watch::Receiver<Arc<Vec<MemberInfo>>>
//! let mut events = gossip.events();            // broadcast::Receiver<MemberEvent>: Down, Rejoined, Joined
//! gossip.install_key(new_key).await?; gossip.use_key(2).await?; gossip.retire_key(1).await?;
//! ```

use super::config::GossipConfig;
use super::core::{MemberEvent, MemberInfo, Membership, Stats};
use super::error::GossipError;
use super::identity::GossipId;
use super::seal::{GossipKey, Keyring};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct GossipOptions {
    pub node: String,
    pub bind: SocketAddr,
    /// The address other nodes reach this one at; needed when `bind` is 0.0.0.0 or [::].
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<SocketAddr>,
    pub key: GossipKey,
    pub config: GossipConfig,
    /// This process's generation; by default the start time in milliseconds, so a restarted
    /// node outranks its former self.
    pub generation: Option<u64>,
}

impl GossipOptions {
    pub fn new(node: impl Into<String>, bind: SocketAddr, key: GossipKey) -> GossipOptions {
        GossipOptions { node: node.into(), bind, advertise: None, seeds: Vec::new(), key, config: GossipConfig::lan(16), generation: None }
    }

    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    pub fn seeds(mut self, seeds: Vec<SocketAddr>) -> Self {
        self.seeds = seeds;
        self
    }

    pub fn config(mut self, config: GossipConfig) -> Self {
        self.config = config;
        self
    }
}

enum Command {
    Join(Vec<SocketAddr>),
    InstallKey(GossipKey, oneshot::Sender<Result<(), GossipError>>),
    UseKey(u32, oneshot::Sender<Result<(), GossipError>>),
    RetireKey(u32, oneshot::Sender<Result<(), GossipError>>),
    Stats(oneshot::Sender<Stats>),
}

/// A running gossip member.
pub struct Gossip {
    local_addr: SocketAddr,
    identity: GossipId,
    members: watch::Receiver<Arc<Vec<MemberInfo>>>,
    events: broadcast::Sender<MemberEvent>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Gossip {
    pub async fn start(opts: GossipOptions, shutdown: watch::Receiver<bool>) -> Result<Gossip, GossipError> {
        opts.config.validate()?;
        if opts.node.is_empty() {
            return Err(GossipError::Config { field: "node", problem: "is empty; give the node's id".into() });
        }
        let socket = UdpSocket::bind(opts.bind).await.map_err(|source| GossipError::Io { addr: opts.bind, what: "binding", source })?;
        let local = socket.local_addr().map_err(|source| GossipError::Io { addr: opts.bind, what: "reading the bound address", source })?;
        let advertise = match opts.advertise {
            Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), local.port()),
            Some(a) => a,
            None if local.ip().is_unspecified() => {
                return Err(GossipError::Config {
                    field: "advertise",
                    problem: format!(
                        "is needed: the gossip socket is bound to {local}, which other nodes cannot reach; give this node's address"
                    ),
                })
            }
            None => local,
        };
        let generation =
            opts.generation.unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64));
        let identity = GossipId::new(opts.node.clone(), advertise, generation);
        let mut core = Membership::new(identity.clone(), opts.config.clone(), Keyring::new(opts.key.clone()), None)?;
        let now = Instant::now().into_std();
        core.join(now, &opts.seeds);
        let (members_tx, members) = watch::channel(Arc::new(core.members()));
        let (events, _) = broadcast::channel(1024);
        let (commands, commands_rx) = mpsc::channel(64);
        let driver = Driver { core, socket: Arc::new(socket), members: members_tx, events: events.clone(), dirty: false };
        tracing::info!(node = %identity.node, addr = %advertise, bind = %local, "gossip: started");
        let task = tokio::spawn(driver.run(commands_rx, shutdown));
        Ok(Gossip { local_addr: local, identity, members, events, commands, task })
    }

    /// The bound socket address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The identity this node started with (it renews its generation if declared down).
    pub fn identity(&self) -> &GossipId {
        &self.identity
    }

    /// Every node gossip knows, this one included (node, address, alive/suspect/down).
    pub fn members(&self) -> watch::Receiver<Arc<Vec<MemberInfo>>> {
        self.members.clone()
    }

    /// Joined / confirmed down / rejoined, as this node learns them.
    pub fn events(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<(), GossipError> {
        self.commands.send(Command::Join(seeds)).await.map_err(|_| GossipError::Stopped)
    }

    /// Rotation step 1: accept datagrams under `key`.
    pub async fn install_key(&self, key: GossipKey) -> Result<(), GossipError> {
        self.ask(|tx| Command::InstallKey(key, tx)).await?
    }

    /// Rotation step 2: send under key `id`.
    pub async fn use_key(&self, id: u32) -> Result<(), GossipError> {
        self.ask(|tx| Command::UseKey(id, tx)).await?
    }

    /// Rotation step 3: stop accepting key `id`.
    pub async fn retire_key(&self, id: u32) -> Result<(), GossipError> {
        self.ask(|tx| Command::RetireKey(id, tx)).await?
    }

    pub async fn stats(&self) -> Result<Stats, GossipError> {
        self.ask(Command::Stats).await
    }

    /// Wait for the driver to end (after the shutdown signal).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// End at once without telling anyone, as a crash would.
    pub fn abort(&self) {
        self.task.abort();
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }
}

struct Driver {
    core: Membership,
    socket: Arc<UdpSocket>,
    members: watch::Sender<Arc<Vec<MemberInfo>>>,
    events: broadcast::Sender<MemberEvent>,
    /// Member states may have changed since the last publication.
    dirty: bool,
}

/// How often the member list is republished when nothing but suspicion states changed.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut shutdown: watch::Receiver<bool>) {
        let mut buf = vec![0u8; 65_536];
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let socket = self.socket.clone();
        loop {
            let wake = self.core.next_timeout().map(Instant::from_std);
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.core.leave(Instant::now().into_std());
                        self.flush().await;
                        break;
                    }
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        if let Err(e) = self.core.handle_datagram(Instant::now().into_std(), from, &buf[..n]) {
                            tracing::debug!(error = %e, "gossip: datagram refused");
                        }
                        self.dirty = true;
                    }
                    // ICMP errors of earlier sends surface here on some systems; nothing to do.
                    Err(e) => tracing::debug!(error = %e, "gossip: receive failed"),
                },
                _ = sleep_until(wake) => {
                    self.core.handle_timeout(Instant::now().into_std());
                    self.dirty = true;
                }
                command = commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => break,
                },
                _ = publish.tick() => self.publish(),
            }
            self.flush().await;
        }
        tracing::info!(node = %self.core.identity().node, "gossip: stopped");
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now().into_std();
        match command {
            Command::Join(seeds) => self.core.join(now, &seeds),
            Command::InstallKey(key, tx) => drop(tx.send(self.core.install_key(key))),
            Command::UseKey(id, tx) => drop(tx.send(self.core.use_key(id))),
            Command::RetireKey(id, tx) => drop(tx.send(self.core.retire_key(id))),
            Command::Stats(tx) => drop(tx.send(self.core.stats().clone())),
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.data, t.to).await {
                // A peer that is gone or unreachable is what gossip is there to find out.
                tracing::debug!(to = %t.to, error = %e, "gossip: send failed");
            }
        }
        let mut any = false;
        while let Some(e) = self.core.poll_event() {
            any = true;
            // No subscriber is fine: the member list carries the same facts.
            let _ = self.events.send(e);
        }
        if any {
            self.publish();
        }
    }

    fn publish(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let members = self.core.members();
        self.members.send_if_modified(|old| {
            if **old == members {
                false
            } else {
                *old = Arc::new(members);
                true
            }
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::core::Status;

    fn fast() -> GossipConfig {
        GossipConfig {
            probe_period: Duration::from_millis(100),
            probe_rtt: Duration::from_millis(40),
            gossip_period: Duration::from_millis(50),
            suspicion_min: Duration::from_millis(200),
            suspicion_max: Duration::from_secs(1),
            announce_down_period: Duration::from_secs(1),
            ..GossipConfig::lan(3)
        }
    }

    fn key() -> GossipKey {
        GossipKey::from_bytes(1, &[5; 32])
    }

    async fn start(name: &str, bind: SocketAddr, seeds: Vec<SocketAddr>) -> (Gossip, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let opts = GossipOptions::new(name, bind, key()).seeds(seeds).config(fast());
        (Gossip::start(opts, rx).await.expect("gossip starts"), tx)
    }

    async fn wait_members(g: &Gossip, what: &str, ok: impl Fn(&[MemberInfo]) -> bool) {
        let mut w = g.members();
        let r = tokio::time::timeout(Duration::from_secs(15), w.wait_for(|m| ok(m))).await;
        assert!(r.is_ok(), "{}: {what}; members: {:?}", g.identity().node, *g.members().borrow());
    }

    async fn wait_event(rx: &mut broadcast::Receiver<MemberEvent>, what: &str, ok: impl Fn(&MemberEvent) -> bool) {
        let r = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match rx.recv().await {
                    Ok(e) if ok(&e) => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("event stream closed waiting for {what}"),
                }
            }
        })
        .await;
        assert!(r.is_ok(), "no event: {what}");
    }

    fn alive(m: &[MemberInfo], n: usize) -> bool {
        m.iter().filter(|m| m.status == Status::Alive).count() == n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_drivers_converge_detect_a_stop_and_see_the_rejoin() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (a, _a_stop) = start("a", lo, vec![]).await;
        let (b, _b_stop) = start("b", lo, vec![a.local_addr()]).await;
        let (c, _c_stop) = start("c", lo, vec![a.local_addr()]).await;
        for g in [&a, &b, &c] {
            wait_members(g, "all three alive", |m| alive(m, 3)).await;
        }
        let mut a_events = a.events();
        let mut b_events = b.events();
        let c_addr = c.local_addr();
        c.abort();
        for (g, rx) in [(&a, &mut a_events), (&b, &mut b_events)] {
            wait_event(rx, "c confirmed down", |e| matches!(e, MemberEvent::Down(m) if m.node == "c")).await;
            wait_members(g, "c down in the list", |m| m.iter().any(|m| m.node == "c" && m.status == Status::Down)).await;
        }
        // Restarted on the same address: a new generation, which the others take back.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (c2, c2_stop) = start("c", c_addr, vec![a.local_addr()]).await;
        assert!(c2.identity().generation > c.identity().generation);
        for (g, rx) in [(&a, &mut a_events), (&b, &mut b_events)] {
            wait_event(rx, "c rejoined", |e| matches!(e, MemberEvent::Rejoined(m) if m.node == "c")).await;
            wait_members(g, "c alive again", |m| alive(m, 3)).await;
        }
        wait_members(&c2, "the restarted node sees everyone", |m| alive(m, 3)).await;
        let stats = a.stats().await.unwrap();
        assert!(stats.sent_datagrams > 0 && stats.dropped_unknown_key == 0, "{stats:?}");
        // A graceful stop leaves: the others mark it down without waiting for suspicion.
        c2_stop.send_replace(true);
        c2.stopped().await;
        wait_event(&mut a_events, "c left", |e| matches!(e, MemberEvent::Down(m) if m.node == "c")).await;
    }

    #[tokio::test]
    async fn an_unspecified_bind_needs_an_advertise_address() {
        let (_tx, rx) = watch::channel(false);
        let opts = GossipOptions::new("a", "0.0.0.0:0".parse().unwrap(), key());
        let err = Gossip::start(opts, rx).await.err().expect("refused").to_string();
        assert!(err.contains("advertise"), "{err}");
    }
}
