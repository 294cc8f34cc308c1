//! Certificate renewal. Every node renews its own certificate at a random point between half
//! and 80% of its lifetime (swarmkit's window), from any manager, keeping its key; the new
//! certificate is swapped into the live credentials (no listener or session restarts) and saved.
//! Without it a cluster loses every link when the certificates issued at `init` run out.

use super::NodeControl;
use crate::ca;
use crate::manager::now_ms;
use crate::rpc::creds::Credentials;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Wait at most this long before looking again (clock jumps, a certificate replaced by a role
/// change).
const RECHECK: Duration = Duration::from_secs(3600);
/// Retry period after a failed renewal, capped by a tenth of what is left.
const RETRY: Duration = Duration::from_secs(5);

/// How long to wait before renewing `cert_pem`, now `now` (ms); zero when due.
pub fn wait_before_renewal(cert_pem: &str, now: u64, jitter: f64) -> Duration {
    match ca::validity_ms(cert_pem) {
        Some((not_before, not_after)) => Duration::from_millis(ca::renew_at_ms(not_before, not_after, jitter).saturating_sub(now)),
        None => Duration::ZERO,
    }
}

/// Whether the cluster's roots (`cluster`, empty until a session told them) differ from those
/// the node trusts: a CA rotation started or ended, and the node must renew now.
pub fn trust_changed(cluster: &str, ours: &str) -> bool {
    !cluster.is_empty() && ca::bundle_digests(cluster) != ca::bundle_digests(ours)
}

pub async fn run(node: NodeControl, creds: Arc<Credentials>, mut trust: watch::Receiver<String>, mut stop: watch::Receiver<bool>) {
    let jitter: f64 = rand::random();
    loop {
        let id = creds.identity();
        let rotated = trust_changed(&trust.borrow_and_update(), &id.ca_pem);
        let wait = if rotated { Duration::ZERO } else { wait_before_renewal(&id.cert_pem, now_ms(), jitter) };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait.min(RECHECK)) => continue,
                r = trust.changed() => if r.is_err() { return } else { continue },
                _ = stop.changed() => return,
            }
        }
        match node.renew_certificate(&creds).await {
            Ok(Some(not_after)) => {
                tracing::info!(expires_ms = not_after, rotated, "node certificate renewed");
                if rotated {
                    // The reply's roots may be newer than the session's last word on them:
                    // give the session a moment to catch up rather than renewing in a loop.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                let left = ca::validity_ms(&creds.identity().cert_pem).map(|(_, na)| na.saturating_sub(now_ms())).unwrap_or(0);
                tracing::warn!(left_ms = left, "renewing the node certificate: {e}");
                let retry = RETRY.min(Duration::from_millis(left / 10)).max(Duration::from_millis(200));
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => return,
                }
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    #[test]
    fn a_change_of_roots_is_seen_whatever_the_order_or_spacing() {
        let a = ca::RootCa::generate("c1").unwrap().cert_pem;
        let b = ca::RootCa::generate("c1").unwrap().cert_pem;
        assert!(!trust_changed("", &a), "nothing heard yet");
        assert!(!trust_changed(&a, &a));
        assert!(!trust_changed(&format!("{b}\n{a}"), &format!("{a}{b}")), "same set");
        assert!(trust_changed(&format!("{a}{b}"), &a), "rotation started");
        assert!(trust_changed(&b, &format!("{a}{b}")), "rotation ended");
    }

    #[test]
    fn a_certificate_is_renewed_once_due_and_not_before() {
        let root = ca::RootCa::generate("c1").unwrap();
        let (_key, csr) = ca::new_node_key().unwrap();
        let pem = root.issue(&csr, "n1", Role::Worker, "c1", Duration::from_secs(600)).unwrap();
        let (nb, na) = ca::validity_ms(&pem).unwrap();
        let due = ca::renew_at_ms(nb, na, 0.5);
        assert_eq!(wait_before_renewal(&pem, due - 1_000, 0.5), Duration::from_secs(1));
        assert_eq!(wait_before_renewal(&pem, due, 0.5), Duration::ZERO);
        assert_eq!(wait_before_renewal(&pem, na + 1, 0.5), Duration::ZERO, "an expired one is due at once");
        assert_eq!(wait_before_renewal("garbage", 0, 0.5), Duration::ZERO, "an unreadable one is replaced at once");
    }
}
