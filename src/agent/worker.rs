//! The data plane worker: one thread that owns the open load balancer (programs loaded, maps
//! pinned) and applies desired states in order. Opening the eBPF balancer costs more than a
//! second (probe, verify, load), so it happens once, not on every reconcile. What a pass does
//! with the balancer (keep, rewire, open; diff or repair) is chosen by `lb_step.rs`.

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use shoal_dataplane::crypt;
use shoal_dataplane::egress;
use shoal_dataplane::guard::{self, ControlPorts};
use shoal_dataplane::lb::{self, Choice, Instance, LbTable, LoadBalancer};
use shoal_dataplane::overlay;
use shoal_dataplane::state::DesiredNode;
use tokio::sync::oneshot;

use super::lb_step::{self, Attach, Program, Wiring};

/// What one pass changed: overlay operations and load-balancer changes.
pub type Applied = Result<(usize, usize), PassError>;

/// Why one data plane pass did not bring the kernel to the desired state (the agent logs it
/// and tries again).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Isolation fails closed: no overlay is built without the guard.
    #[error("{0}: no overlay is built without it")]
    Guard(#[source] guard::GuardError),
    #[error(transparent)]
    Overlay(#[from] overlay::OverlayError),
    #[error(transparent)]
    Lb(#[from] lb::LbError),
    #[error("the load balancer is not open")]
    LbNotOpen,
    #[error("superseded by a newer desired state before its pass")]
    Superseded,
    #[error("the data plane pass panicked ({what}); the next pass repairs everything")]
    Panicked { what: String },
    #[error("the data plane worker stopped")]
    WorkerStopped,
    #[error("the data plane pass did not finish within {after:?}; it is still running")]
    TimedOut { after: Duration },
}

/// How long the agent waits for one pass. Netlink receives are bounded (10 s each), so this
/// is a pass that is stuck somewhere else: the agent says so and goes on (reports, starts,
/// stops) instead of freezing with it, and asks again on its next round.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(60);

/// One data-plane pass over a desired state. [`Held`] is the kernel's; tests bring their own.
/// Made and used on the worker's thread alone, so it need not be `Send`.
pub trait Pass: 'static {
    fn apply(&mut self, desired: &DesiredNode) -> Applied;
    /// Why this node cannot run encrypted networks, as the last pass found.
    fn encryption_refused(&self) -> Option<String> {
        None
    }
    /// When the last pass asked to run again though nothing changed (an IPsec key rotation's
    /// next step: its SAs switch over at set times, and a step taken late stretches the
    /// rotation).
    fn next_pass_at(&self) -> Option<SystemTime> {
        None
    }
}

/// How long the worker waits for a new desired state before it runs the pass the last one
/// asked for (`None`: wait for a new state alone).
fn wait_for_due(due: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    // A little past the due second: the planner compares whole seconds.
    due.map(|at| at.duration_since(now).unwrap_or_default() + Duration::from_millis(50))
}

type Job = (DesiredNode, oneshot::Sender<Applied>);

pub struct Worker {
    tx: mpsc::Sender<Job>,
    /// Why this node cannot encrypt (set after each pass), if it cannot.
    crypt_refused: Arc<Mutex<Option<String>>>,
    timeout: Duration,
}

impl Worker {
    /// The thread is started from the caller's thread, so it lives in the same network namespace.
    pub fn spawn(choice: Choice, control: ControlPorts) -> std::io::Result<Worker> {
        Worker::spawn_with(move || Held::new(choice, control.clone()), PASS_TIMEOUT)
    }

    /// A worker running passes made by `make`: once at the start, and again after a pass
    /// panicked (the panicking pass's caches cannot be trusted, so the next pass starts from
    /// nothing and repairs the whole state).
    pub fn spawn_with<P: Pass>(make: impl Fn() -> P + Send + 'static, timeout: Duration) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let crypt_refused: Arc<Mutex<Option<String>>> = Arc::default();
        let refused = crypt_refused.clone();
        thread::Builder::new().name("dataplane".into()).spawn(move || {
            let mut pass = make();
            // The state of the last pass, run again by itself when that pass asked for it.
            let mut last: Option<DesiredNode> = None;
            loop {
                let waited = match wait_for_due(pass.next_pass_at(), SystemTime::now()) {
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(wait) => rx.recv_timeout(wait),
                };
                let (mut job, scheduled) = match (waited, &last) {
                    (Ok(job), _) => (job, false),
                    (Err(mpsc::RecvTimeoutError::Timeout), Some(desired)) => {
                        // Nobody waits for this pass: its reply goes nowhere (a failure is
                        // logged below).
                        let (reply, _) = oneshot::channel();
                        ((desired.clone(), reply), true)
                    }
                    (Err(mpsc::RecvTimeoutError::Timeout), None) => continue,
                    (Err(mpsc::RecvTimeoutError::Disconnected), _) => return,
                };
                // Only the newest desired state matters: older ones still waiting are answered
                // without a pass of their own.
                while let Ok(newer) = rx.try_recv() {
                    let _ = job.1.send(Err(PassError::Superseded));
                    job = newer;
                }
                let (desired, reply) = job;
                last = Some(desired.clone());
                let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pass.apply(&desired))) {
                    Ok(out) => out,
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "no message".into());
                        tracing::error!(panic = %what, "the data plane pass panicked: starting over with a full repair");
                        pass = make();
                        Err(PassError::Panicked { what })
                    }
                };
                if let (true, Err(e)) = (scheduled, &out) {
                    tracing::warn!(node = %desired.node, error = %e, "the data plane pass asked for by the last one failed");
                }
                *refused.lock().unwrap_or_else(|p| p.into_inner()) = pass.encryption_refused();
                let _ = reply.send(out);
            }
        })?;
        Ok(Worker { tx, crypt_refused, timeout })
    }

    /// Why this node cannot run encrypted networks (no WireGuard: no kernel module and no TUN
    /// device), as the last pass found; `None` when it can or none is wanted.
    pub fn encryption_refused(&self) -> Option<String> {
        self.crypt_refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn apply(&self, desired: DesiredNode) -> Applied {
        let (reply, answer) = oneshot::channel();
        self.tx.send((desired, reply)).map_err(|_| PassError::WorkerStopped)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(answer) => answer.map_err(|_| PassError::WorkerStopped)?,
            Err(_) => Err(PassError::TimedOut { after: self.timeout }),
        }
    }
}

struct Held {
    lb: Option<Box<dyn LoadBalancer>>,
    /// The interfaces the open balancer is attached to (underlay, bridges with their SNAT
    /// address): when networks come or go it is reopened to attach to the new set.
    attached: Option<Wiring>,
    /// The table the open balancer was last brought to: a change is applied as the difference
    /// from it (O(change) kernel work); the same table again is a repair pass (full reconcile).
    last: Option<LbTable>,
    /// Balancers that failed to open here, with why (auto skips them).
    broken: std::collections::BTreeMap<lb::LbKind, String>,
    /// Whether the failure to open a balancer was already reported.
    warned: bool,
    /// The egress the kernel was last brought to: read back again only when it changes or on a
    /// repair pass.
    egress: Option<egress::Egress>,
    /// The last egress failure reported (each new one is logged once).
    egress_error: Option<String>,
    /// The node's control ports, kept from its tasks by the guard.
    control: ControlPorts,
    /// The guard the kernel was last brought to (read back on repair passes and changes).
    guard: Option<guard::Guard>,
    /// The backend the last encryption pass brought up, to log a change once.
    crypt: Option<crypt::Backend>,
    /// No encrypted network is wanted and the tunnel is known to be gone.
    crypt_clean: bool,
    /// Why this node cannot encrypt (read by [`Worker::encryption_refused`] after each pass).
    refused: Option<String>,
    /// When the last encryption pass wants the next (an IPsec rotation step falls due).
    next_pass: Option<SystemTime>,
    choice: Choice,
}

impl Pass for Held {
    fn apply(&mut self, desired: &DesiredNode) -> Applied {
        let choice = self.choice;
        Held::apply(self, desired, choice)
    }

    fn encryption_refused(&self) -> Option<String> {
        self.refused.clone()
    }

    fn next_pass_at(&self) -> Option<SystemTime> {
        self.next_pass
    }
}

impl Held {
    fn new(choice: Choice, control: ControlPorts) -> Held {
        Held {
            lb: None,
            attached: None,
            last: None,
            broken: Default::default(),
            warned: false,
            egress: None,
            egress_error: None,
            control,
            guard: None,
            crypt: None,
            crypt_clean: false,
            refused: None,
            next_pass: None,
            choice,
        }
    }

    /// Opens the chosen balancer (see [`lb::open_choice`]: under `auto`, one that cannot open
    /// here is skipped for the next, and not tried again by this process).
    fn open(&mut self, choice: Choice, desired: &DesiredNode, want: &LbTable) -> Result<Box<dyn LoadBalancer>, lb::LbError> {
        let inst = Instance::here(&desired.node);
        lb::open_choice(choice, &inst, want, &mut self.broken).map(|(handle, _, _)| handle)
    }

    fn apply(&mut self, desired: &DesiredNode, choice: Choice) -> Applied {
        let t0 = std::time::Instant::now();
        // Encryption first, and its fail-closed table before any overlay: a node that cannot
        // encrypt attaches nothing of an encrypted network (never plaintext).
        let stripped = self.encryption(desired);
        let desired = stripped.as_ref().unwrap_or(desired);
        let want = lb::desired(desired);
        self.guard(desired, self.last.as_ref() == Some(&want))?;
        let overlay = overlay::reconcile(desired)?;
        let t1 = t0.elapsed();
        self.egress(desired, self.last.as_ref() == Some(&want));
        // The balancer opens on the first pass, services or not, and stays open (its tables
        // emptied when the last service goes): a new service is then programmed in milliseconds
        // instead of loading and verifying programs first.
        let wiring: Wiring = (want.underlay, want.bridges.clone());
        if lb_step::attach(self.lb.is_some(), self.attached.as_ref(), &wiring) == Attach::Rewire {
            let rewired = self.lb.as_mut().map(|lb| lb.rewire(&want));
            match rewired {
                Some(Ok(true)) => self.attached = Some(wiring.clone()),
                Some(Ok(false)) | None => {
                    self.lb = None;
                    self.last = None;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "load balancer rewire failed: reopening it");
                    self.lb = None;
                    self.last = None;
                }
            }
        }
        // Asked again: a balancer the rewire could not keep is opened anew.
        if lb_step::attach(self.lb.is_some(), self.attached.as_ref(), &wiring) == Attach::Open {
            match self.open(choice, desired, &want) {
                Ok(handle) => {
                    self.lb = Some(handle);
                    self.attached = Some(wiring);
                }
                // Nothing to balance yet: tasks must not wait for a balancer they do not need.
                Err(e) if want.is_empty() => {
                    if !self.warned {
                        tracing::warn!(error = %e, "no load balancer available yet");
                        self.warned = true;
                    }
                    return Ok((overlay.ops.len(), 0));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let Some(handle) = self.lb.as_mut() else { return Err(PassError::LbNotOpen) };
        let applied = match (lb_step::program(self.last.as_ref(), &want), &self.last) {
            (Program::Diff, Some(prev)) => handle.apply_ops(&want, &lb::diff(prev, &want)),
            _ => handle.reconcile(&want, false),
        };
        let changes = match applied {
            Ok(c) => c.len(),
            Err(e) => {
                // Reopen on the next pass: the kernel may have lost what the handle held.
                self.lb = None;
                self.last = None;
                return Err(e.into());
            }
        };
        self.last = Some(want);
        tracing::debug!(overlay_ms = t1.as_millis() as u64, lb_ms = (t0.elapsed() - t1).as_millis() as u64, "reconcile timing");
        Ok((overlay.ops.len(), changes))
    }

    /// Brings the WireGuard tunnel to `desired`. `Some(state)`: this node cannot encrypt, and
    /// that state (without the encrypted networks) is what the pass applies instead.
    fn encryption(&mut self, desired: &DesiredNode) -> Option<DesiredNode> {
        self.next_pass = None;
        // Nothing encrypted, and nothing of ours left from before (checked once per process):
        // no tunnel work on every pass.
        if !desired.wants_encryption() && self.crypt_clean {
            return None;
        }
        if desired.validate().is_err() {
            return None; // the overlay pass reports what is wrong, and builds nothing
        }
        self.crypt_clean = !desired.wants_encryption();
        let (backend, refused) = match crypt::reconcile(desired, crypt::Choice::Auto, false) {
            Ok(report) => {
                for change in &report.changes {
                    tracing::info!(node = %desired.node, "encryption: {change}");
                }
                self.next_pass = report.next_pass_at.map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
                (report.backend, None)
            }
            Err(crypt::CryptError::Unavailable(why)) => (None, Some(format!("this node cannot encrypt: {why}"))),
            Err(e) => (None, Some(format!("encryption failed on this node: {e}"))),
        };
        if backend != self.crypt {
            if let Some(b) = backend {
                tracing::info!(node = %desired.node, backend = %b, "encrypted networks run over {b}");
            }
            self.crypt = backend;
        }
        if refused.is_some() && self.refused != refused {
            tracing::warn!(node = %desired.node, "{}: its encrypted networks are not attached", refused.as_deref().unwrap_or_default());
        }
        self.refused = refused.clone();
        // Encryption runs (or is not wanted): the state applies as it is.
        refused?;
        let names: HashSet<&str> = desired.networks.iter().filter(|n| n.encrypted.is_some()).map(|n| n.name.as_str()).collect();
        Some(desired.without_networks(&names))
    }

    /// The guard (VXLAN only from peers, for their VNIs; tasks off control ports) comes before
    /// any overlay is built or changed, and a pass fails without it: isolation fails closed.
    fn guard(&mut self, desired: &DesiredNode, repair: bool) -> Result<(), PassError> {
        let want = guard::desired(desired, &self.control);
        if !repair && self.guard.as_ref() == Some(&want) {
            return Ok(());
        }
        self.guard = None;
        match guard::reconcile(desired, &self.control) {
            Ok(op) => {
                if let Some(op) = op {
                    tracing::info!("{op}");
                }
                self.guard = Some(want);
                Ok(())
            }
            Err(e) => Err(PassError::Guard(e)),
        }
    }

    /// Egress (masquerade of task traffic leaving the overlay). A failure here does not hold
    /// tasks back: they still reach the cluster's networks, and internal networks have no route
    /// out whatever happens here. It is logged once and tried again on every pass.
    fn egress(&mut self, desired: &DesiredNode, repair: bool) {
        let want = egress::desired(desired);
        if !repair && self.egress.as_ref() == Some(&want) {
            return;
        }
        match egress::reconcile(desired) {
            Ok(op) => {
                if let Some(op) = op {
                    tracing::info!("{op}");
                }
                self.egress = Some(want);
                self.egress_error = None;
            }
            Err(e) => {
                let e = e.to_string();
                if self.egress_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "egress unavailable: tasks reach only the cluster's networks");
                    self.egress_error = Some(e);
                }
                self.egress = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A pass that panics on a node named "boom", sleeps on "slow", and counts its makings.
    struct Fake {
        made: usize,
        started: Option<std::sync::mpsc::Sender<()>>,
    }

    /// A pass that asks for one more pass 200 ms later on a node named "rotating" (an IPsec
    /// rotation step falling due), and records every pass's node.
    struct Stepping {
        seen: Arc<Mutex<Vec<String>>>,
        due: Option<SystemTime>,
    }

    impl Pass for Stepping {
        fn apply(&mut self, desired: &DesiredNode) -> Applied {
            let mut seen = self.seen.lock().unwrap();
            seen.push(desired.node.clone());
            let asked = desired.node == "rotating" && seen.iter().filter(|n| *n == "rotating").count() == 1;
            self.due = asked.then(|| SystemTime::now() + Duration::from_millis(200));
            Ok((0, 0))
        }

        fn next_pass_at(&self) -> Option<SystemTime> {
            self.due
        }
    }

    fn stepping() -> (Worker, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = seen.clone();
        (Worker::spawn_with(move || Stepping { seen: s.clone(), due: None }, Duration::from_secs(5)).unwrap(), seen)
    }

    #[tokio::test]
    async fn a_pass_that_asks_for_another_gets_it_on_time_without_a_new_state() {
        let (w, seen) = stepping();
        w.apply(state("rotating")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*seen.lock().unwrap(), ["rotating"], "not before it is due");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(*seen.lock().unwrap(), ["rotating", "rotating"], "the step due at 200 ms ran, on the same state");
        // That pass asked for nothing more: the worker waits for a new state again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_new_state_before_the_due_time_takes_the_place_of_the_asked_pass() {
        let (w, seen) = stepping();
        w.apply(state("rotating")).await.unwrap();
        w.apply(state("calm")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(*seen.lock().unwrap(), ["rotating", "calm"], "the newer state's pass asked for nothing");
    }

    #[test]
    fn the_wait_ends_just_past_the_due_time_and_at_once_when_overdue() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(wait_for_due(None, now), None);
        assert_eq!(wait_for_due(Some(now + Duration::from_secs(10)), now), Some(Duration::from_millis(10_050)));
        assert_eq!(wait_for_due(Some(now - Duration::from_secs(3)), now), Some(Duration::from_millis(50)));
    }

    impl Pass for Fake {
        fn apply(&mut self, desired: &DesiredNode) -> Applied {
            match desired.node.as_str() {
                "boom" => panic!("index out of bounds"),
                "slow" => {
                    if let Some(s) = &self.started {
                        let _ = s.send(());
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    Ok((0, 0))
                }
                _ => Ok((self.made, 1)),
            }
        }
    }

    fn state(node: &str) -> DesiredNode {
        DesiredNode { node: node.into(), nodes: vec![], networks: vec![], endpoints: vec![], services: vec![], wireguard_private_key: None }
    }

    fn worker(timeout: Duration) -> Worker {
        worker_telling(timeout, None)
    }

    fn worker_telling(timeout: Duration, started: Option<std::sync::mpsc::Sender<()>>) -> Worker {
        let made = Arc::new(AtomicUsize::new(0));
        Worker::spawn_with(move || Fake { made: made.fetch_add(1, Ordering::SeqCst) + 1, started: started.clone() }, timeout).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_pass_is_an_error_and_the_next_pass_starts_fresh() {
        let w = worker(Duration::from_secs(5));
        assert_eq!(w.apply(state("a")).await.unwrap(), (1, 1), "the first pass, first making");
        let err = w.apply(state("boom")).await.unwrap_err().to_string();
        assert!(err.contains("panicked (index out of bounds)") && err.contains("repairs everything"), "{err}");
        // The worker lives on, with a fresh pass (made a second time).
        assert_eq!(w.apply(state("a")).await.unwrap(), (2, 1));
    }

    #[tokio::test]
    async fn a_pass_longer_than_the_timeout_is_reported_and_the_worker_goes_on() {
        let w = worker(Duration::from_millis(50));
        let err = w.apply(state("slow")).await.unwrap_err().to_string();
        assert!(err.contains("did not finish within 50ms"), "{err}");
        // The stuck pass finishes in its own time; the next request is served after it.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(w.apply(state("a")).await.unwrap(), (1, 1));
    }

    #[tokio::test]
    async fn states_waiting_behind_a_pass_are_superseded_by_the_newest() {
        let (tx, started) = std::sync::mpsc::channel();
        let w = Arc::new(worker_telling(Duration::from_secs(5), Some(tx)));
        let first = tokio::spawn({
            let w = w.clone();
            async move { w.apply(state("slow")).await }
        });
        // Once the slow pass runs, three more states queue behind it; only the last gets a pass.
        tokio::task::spawn_blocking(move || started.recv().unwrap()).await.unwrap();
        let (b, c, d) = tokio::join!(w.apply(state("x")), w.apply(state("y")), w.apply(state("z")));
        assert_eq!(first.await.unwrap().unwrap(), (0, 0));
        for r in [&b, &c] {
            assert!(r.as_ref().is_err_and(|e| e.to_string().contains("superseded")), "{r:?}");
        }
        assert_eq!(d.unwrap(), (1, 1));
    }
}
