//! The data plane worker: one thread that owns the open load balancer (programs loaded, maps
//! pinned) and applies desired states in order. Opening the eBPF balancer costs more than a
//! second (probe, verify, load), so it happens once, not on every reconcile.

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use shoal_dataplane::crypt;
use shoal_dataplane::egress;
use shoal_dataplane::guard::{self, ControlPorts};
use shoal_dataplane::lb::{self, Choice, Instance, LbTable, LoadBalancer};
use shoal_dataplane::overlay;
use shoal_dataplane::state::NodeState;
use tokio::sync::oneshot;

/// What one pass changed: overlay operations and load-balancer changes.
pub type Applied = Result<(usize, usize), String>;

pub struct Worker {
    tx: mpsc::Sender<(NodeState, oneshot::Sender<Applied>)>,
    /// Why this node cannot encrypt (set by the last pass), if it cannot.
    crypt_refused: Arc<Mutex<Option<String>>>,
}

impl Worker {
    /// The thread is started from the caller's thread, so it lives in the same network namespace.
    pub fn spawn(choice: Choice, control: ControlPorts) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel::<(NodeState, oneshot::Sender<Applied>)>();
        let crypt_refused: Arc<Mutex<Option<String>>> = Arc::default();
        let refused = crypt_refused.clone();
        thread::Builder::new().name("dataplane".into()).spawn(move || {
            let mut held = Held {
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
                refused,
            };
            for (desired, reply) in rx {
                let _ = reply.send(held.apply(&desired, choice));
            }
        })?;
        Ok(Worker { tx, crypt_refused })
    }

    /// Why this node cannot run encrypted networks (no WireGuard: no kernel module and no TUN
    /// device), as the last pass found; `None` when it can or none is wanted.
    pub fn encryption_refused(&self) -> Option<String> {
        self.crypt_refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn apply(&self, desired: NodeState) -> Applied {
        let (reply, answer) = oneshot::channel();
        self.tx.send((desired, reply)).map_err(|_| "the data plane worker stopped".to_string())?;
        answer.await.map_err(|_| "the data plane worker stopped".to_string())?
    }
}

struct Held {
    lb: Option<Box<dyn LoadBalancer>>,
    /// The interfaces the open balancer is attached to (underlay, bridges with their SNAT
    /// address): when networks come or go it is reopened to attach to the new set.
    attached: Option<(Option<std::net::Ipv4Addr>, std::collections::BTreeMap<String, std::net::Ipv4Addr>)>,
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
    /// Shared with [`Worker::encryption_refused`].
    refused: Arc<Mutex<Option<String>>>,
}

impl Held {
    /// Opens the chosen balancer (see [`lb::open_choice`]: under `auto`, one that cannot open
    /// here is skipped for the next, and not tried again by this process).
    fn open(&mut self, choice: Choice, desired: &NodeState, want: &LbTable) -> Result<Box<dyn LoadBalancer>, lb::LbError> {
        let inst = Instance::here(&desired.node);
        lb::open_choice(choice, &inst, want, &mut self.broken).map(|(handle, _, _)| handle)
    }

    fn apply(&mut self, desired: &NodeState, choice: Choice) -> Applied {
        let t0 = std::time::Instant::now();
        // Encryption first, and its fail-closed table before any overlay: a node that cannot
        // encrypt attaches nothing of an encrypted network (never plaintext).
        let stripped = self.encryption(desired);
        let desired = stripped.as_ref().unwrap_or(desired);
        let want = lb::desired(desired);
        self.guard(desired, self.last.as_ref() == Some(&want))?;
        let overlay = overlay::reconcile(desired).map_err(|e| e.to_string())?;
        let t1 = t0.elapsed();
        self.egress(desired, self.last.as_ref() == Some(&want));
        // The balancer opens on the first pass, services or not, and stays open (its tables
        // emptied when the last service goes): a new service is then programmed in milliseconds
        // instead of loading and verifying programs first.
        let wiring = (want.underlay, want.bridges.clone());
        if self.attached.as_ref().is_some_and(|w| *w != wiring) {
            // Networks came or went: attach to the new set in place when the balancer can
            // (no reload), else reopen it.
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
        if self.lb.is_none() {
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
                Err(e) => return Err(e.to_string()),
            }
        }
        let handle = self.lb.as_mut().expect("opened above");
        let applied = match &self.last {
            Some(prev) if *prev != want => handle.apply_ops(&want, &lb::diff(prev, &want)),
            _ => handle.reconcile(&want, false),
        };
        let changes = match applied {
            Ok(c) => c.len(),
            Err(e) => {
                // Reopen on the next pass: the kernel may have lost what the handle held.
                self.lb = None;
                self.last = None;
                return Err(e.to_string());
            }
        };
        self.last = Some(want);
        tracing::debug!(overlay_ms = t1.as_millis() as u64, lb_ms = (t0.elapsed() - t1).as_millis() as u64, "reconcile timing");
        Ok((overlay.ops.len(), changes))
    }

    /// Brings the WireGuard tunnel to `desired`. `Some(state)`: this node cannot encrypt, and
    /// that state (without the encrypted networks) is what the pass applies instead.
    fn encryption(&mut self, desired: &NodeState) -> Option<NodeState> {
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
        let mut shared = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.is_some() && *shared != refused {
            tracing::warn!(node = %desired.node, "{}: its encrypted networks are not attached", refused.as_deref().unwrap_or_default());
        }
        *shared = refused.clone();
        drop(shared);
        // Encryption runs (or is not wanted): the state applies as it is.
        refused?;
        let names: HashSet<&str> = desired.networks.iter().filter(|n| n.encrypted.is_some()).map(|n| n.name.as_str()).collect();
        Some(desired.without_networks(&names))
    }

    /// The guard (VXLAN only from peers, for their VNIs; tasks off control ports) comes before
    /// any overlay is built or changed, and a pass fails without it: isolation fails closed.
    fn guard(&mut self, desired: &NodeState, repair: bool) -> Result<(), String> {
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
            Err(e) => Err(format!("{e}: no overlay is built without it")),
        }
    }

    /// Egress (masquerade of task traffic leaving the overlay). A failure here does not hold
    /// tasks back: they still reach the cluster's networks, and internal networks have no route
    /// out whatever happens here. It is logged once and tried again on every pass.
    fn egress(&mut self, desired: &NodeState, repair: bool) {
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
