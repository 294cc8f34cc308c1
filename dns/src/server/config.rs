//! Server configuration.

use std::{net::SocketAddr, time::Duration};

use crate::{error::DnsError, forward::MAX_UPSTREAMS, query::AnswerConfig};

/// How the DNS server answers and forwards.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Upstream resolvers for names the cluster does not own (at most 3 are used), usually
    /// [`crate::upstreams_from_resolv_conf`] of the node's `/etc/resolv.conf`. Empty: SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// How long to wait for each upstream before trying the next.
    pub upstream_timeout: Duration,
    /// TTL of stable names: service VIPs, task names, PTR, SRV of VIP services.
    pub ttl: u32,
    /// TTL of names that follow backends: `tasks.<svc>`, dnsrr services, task aliases.
    pub tasks_ttl: u32,
    /// Forwarded queries one task may have in flight; beyond that it gets REFUSED at once, so a
    /// flooding task cannot starve the others.
    pub max_inflight_per_task: usize,
    /// TCP connections one task may hold open at once.
    pub max_tcp_connections_per_task: usize,
    /// A TCP connection idle for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Domain of the host-side listener (`<svc>.service.<domain>`, `<node>.node.<domain>`).
    pub host_domain: String,
    /// Whether the host-side listener forwards other names upstream (else REFUSED).
    pub host_forward: bool,
    /// Threads answering queries (the server's own runtime). One is plenty for a node (it
    /// answers over 200k queries/s) and avoids cross-thread wake-ups on the query path.
    pub worker_threads: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_millis(1500),
            ttl: 5,
            tasks_ttl: 2,
            max_inflight_per_task: 64,
            max_tcp_connections_per_task: 16,
            tcp_idle_timeout: Duration::from_secs(10),
            host_domain: "shoal".into(),
            host_forward: false,
            worker_threads: 1,
        }
    }
}

impl DnsConfig {
    /// Checks the values and derives the answering parameters.
    pub(crate) fn validate(&self) -> Result<AnswerConfig, DnsError> {
        let bad = |field, reason: &str| DnsError::Config { field, reason: reason.to_string() };
        if self.upstreams.len() > MAX_UPSTREAMS {
            tracing::warn!(count = self.upstreams.len(), "more than {MAX_UPSTREAMS} upstreams configured; using the first {MAX_UPSTREAMS}");
        }
        if self.upstream_timeout.is_zero() {
            return Err(bad("upstream_timeout", "must be more than zero, e.g. 1500ms"));
        }
        if self.max_inflight_per_task == 0 {
            return Err(bad("max_inflight_per_task", "must be at least 1, e.g. 64"));
        }
        if self.max_tcp_connections_per_task == 0 {
            return Err(bad("max_tcp_connections_per_task", "must be at least 1, e.g. 16"));
        }
        if self.worker_threads == 0 || self.worker_threads > 64 {
            return Err(bad("worker_threads", "must be between 1 and 64, e.g. 1"));
        }
        if self.tcp_idle_timeout.is_zero() {
            return Err(bad("tcp_idle_timeout", "must be more than zero, e.g. 10s"));
        }
        let domain = crate::table::name::normalize("host domain", &self.host_domain, "").map_err(|e| bad("host_domain", &e.to_string()))?;
        Ok(AnswerConfig { ttl: self.ttl, tasks_ttl: self.tasks_ttl, host_domain: domain, host_forward: self.host_forward })
    }
}
