//! Docker-looking output: tables padded like Docker's tabwriter (min width 20, padding 3).

use shoal_control::manager::ClusterView;
use shoal_control::model::{Role, ServiceMode, Task, TaskState};
use std::fmt::Write;

pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cols {
                s.push_str(c);
            } else {
                let w = (widths[i] + 3).max(20);
                let _ = write!(s, "{c:<w$}");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A time in milliseconds since the epoch as RFC 3339 in UTC (Docker's CreatedAt).
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// "Running 5 seconds ago" style ages.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0 => "Less than a second ago".into(),
        1 => "1 second ago".into(),
        2..=59 => format!("{s} seconds ago"),
        60..=119 => "About a minute ago".into(),
        120..=3599 => format!("{} minutes ago", s / 60),
        3600..=7199 => "About an hour ago".into(),
        _ => format!("{} hours ago", s / 3600),
    }
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn node_table(v: &ClusterView, self_id: Option<&str>) -> String {
    let mut rows = vec![];
    let mut nodes: Vec<_> = v.state.nodes.values().collect();
    nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    for n in nodes {
        let id = if Some(n.id.as_str()) == self_id { format!("{} *", n.id) } else { n.id.to_string() };
        let mgr = if n.role == Role::Manager {
            if v.leader == Some(n.raft_id) {
                "Leader"
            } else if v.voters.contains(&n.raft_id) && n.state != shoal_control::model::NodeState::Down {
                "Reachable"
            } else {
                "Unreachable"
            }
        } else {
            ""
        };
        rows.push(vec![
            id,
            n.hostname.clone(),
            title(n.state.as_str()),
            title(n.availability.as_str()),
            mgr.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
            // Gossip's verdict, as the manager that answered sees it.
            v.membership.get(n.id.as_str()).map_or("unknown", String::as_str).to_string(),
        ]);
    }
    table(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION", "MEMBERSHIP"], &rows)
}

pub fn ports_text(ports: &[shoal_control::model::PortConfig]) -> String {
    ports
        .iter()
        .map(|p| format!("*:{}->{}/{}", p.published.map(|x| x.to_string()).unwrap_or_default(), p.target, p.protocol.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn service_table(v: &ClusterView) -> String {
    service_table_where(v, |_| true)
}

/// The services `keep` selects (a stack's, for `stack services`).
pub fn service_table_where(v: &ClusterView, keep: impl Fn(&shoal_control::model::Service) -> bool) -> String {
    let mut services: Vec<_> = v.state.services.values().filter(|s| keep(s)).collect();
    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let rows = services
        .iter()
        .map(|s| {
            let running = v
                .state
                .tasks
                .values()
                .filter(|t| t.service_id == s.id && t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
                .count();
            let (mode, desired) = match s.spec.mode {
                ServiceMode::Replicated { replicas } => ("replicated", replicas.max(0) as usize),
                ServiceMode::Global => {
                    ("global", v.state.tasks.values().filter(|t| t.service_id == s.id && t.desired_state == TaskState::Running).count())
                }
            };
            vec![
                short(&s.id),
                s.spec.name.clone(),
                mode.to_string(),
                format!("{running}/{desired}"),
                s.spec.image.clone(),
                ports_text(&s.ports),
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &rows)
}

/// `service ps`: newest task of each slot first, its history below as `\_ name`.
pub fn service_ps_table(v: &ClusterView, service_ids: &[shoal_control::model::ServiceId], now_ms: u64) -> String {
    service_ps_table_with(v, service_ids, now_ms, &PsOptions::default())
}

/// `service ps --no-trunc --filter KEY=VALUE...` (and `node ps`).
#[derive(Clone, Debug, Default)]
pub struct PsOptions {
    pub no_trunc: bool,
    /// Docker's filters: values of one key are alternatives, keys must all match.
    pub filters: Vec<(String, String)>,
}

/// A `--filter` of `service ps` / `node ps` that cannot be used, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid --filter {filter:?}: use KEY=VALUE (desired-state, node, name, id)")]
    NotKeyValue { filter: String },
    #[error("invalid --filter {filter:?}: unknown key {key:?} (desired-state, node, name, id)")]
    UnknownKey { filter: String, key: String },
    #[error("invalid --filter {filter:?}: desired-state is running, shutdown, accepted, ready or complete")]
    DesiredState { filter: String },
}

impl PsOptions {
    /// Reads `--filter` values, naming the bad one.
    pub fn parse(no_trunc: bool, filters: &[String]) -> Result<PsOptions, FilterError> {
        let mut out = PsOptions { no_trunc, filters: vec![] };
        for f in filters {
            let (k, v) = f.split_once('=').ok_or_else(|| FilterError::NotKeyValue { filter: f.clone() })?;
            let k = k.trim().to_ascii_lowercase();
            if !matches!(k.as_str(), "desired-state" | "node" | "name" | "id") {
                return Err(FilterError::UnknownKey { filter: f.clone(), key: k });
            }
            if k == "desired-state" && !matches!(v, "running" | "shutdown" | "accepted" | "ready" | "complete") {
                return Err(FilterError::DesiredState { filter: f.clone() });
            }
            out.filters.push((k, v.to_string()));
        }
        Ok(out)
    }

    fn keeps(&self, v: &ClusterView, t: &Task, name: &str) -> bool {
        let keys: std::collections::BTreeSet<&str> = self.filters.iter().map(|(k, _)| k.as_str()).collect();
        keys.into_iter().all(|key| {
            self.filters.iter().filter(|(k, _)| k == key).any(|(_, want)| match key {
                "desired-state" => t.desired_state.as_str().eq_ignore_ascii_case(want),
                "node" => t
                    .node_id
                    .as_deref()
                    .is_some_and(|n| n.starts_with(want.as_str()) || v.state.nodes.get(n).is_some_and(|node| &node.hostname == want)),
                "name" => name.starts_with(want.as_str()),
                "id" => t.id.starts_with(want.as_str()),
                _ => true,
            })
        })
    }
}

/// [`service_ps_table`] with Docker's options.
pub fn service_ps_table_with(v: &ClusterView, service_ids: &[shoal_control::model::ServiceId], now_ms: u64, opts: &PsOptions) -> String {
    let mut rows = vec![];
    for sid in service_ids {
        let Some(svc) = v.state.services.get(sid) else { continue };
        let mut tasks: Vec<&Task> = v.state.tasks.values().filter(|t| &t.service_id == sid).collect();
        // A replicated slot's tasks may have run on different nodes: group by slot alone (global
        // tasks by node), newest first.
        let group = |t: &Task| (t.slot, if t.slot == 0 { t.node_id.clone() } else { None });
        tasks.sort_by(|a, b| group(a).cmp(&group(b)).then(b.seq.cmp(&a.seq)));
        let mut prev: Option<(u64, Option<shoal_control::model::NodeId>)> = None;
        for t in tasks {
            let key = (t.slot, if t.slot == 0 { t.node_id.clone() } else { None });
            let base = if t.slot > 0 {
                format!("{}.{}", svc.spec.name, t.slot)
            } else {
                format!("{}.{}", svc.spec.name, t.node_id.clone().unwrap_or_default())
            };
            if !opts.keeps(v, t, &base) {
                continue;
            }
            let name = if prev.as_ref() == Some(&key) { format!(" \\_ {base}") } else { base };
            prev = Some(key);
            let node = t.node_id.as_ref().and_then(|n| v.state.nodes.get(n)).map(|n| n.hostname.clone()).unwrap_or_default();
            // Health as `docker ps` shows it: "Running (healthy) 5 seconds ago".
            let health = match t.status.health {
                Some(shoal_control::model::Health::Starting) => " (health: starting)",
                Some(shoal_control::model::Health::Healthy) => " (healthy)",
                Some(shoal_control::model::Health::Unhealthy) => " (unhealthy)",
                None => "",
            };
            let current = format!("{}{health} {}", title(t.status.state.as_str()), ago(t.status.timestamp_ms, now_ms));
            let error = t.status.err.clone().unwrap_or_else(|| {
                if t.status.state == TaskState::Pending
                    || t.status.state.is_terminal() && t.status.state != TaskState::Shutdown && t.status.state != TaskState::Complete
                {
                    t.status.message.clone()
                } else {
                    String::new()
                }
            });
            let error = if error.is_empty() { String::new() } else { format!("\"{error}\"") };
            rows.push(vec![
                if opts.no_trunc { t.id.to_string() } else { short(&t.id) },
                name,
                // The image this task runs: history rows of a rolling update show the old one.
                svc.spec_for(t.service_version).image.clone(),
                node,
                title(t.desired_state.as_str()),
                current,
                error,
                String::new(),
            ]);
        }
    }
    table(&["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"], &rows)
}

/// Docker's duration text: `5s`, `1m30s`, `250ms`.
fn duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, rest) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || rest > 0 {
        if rest > 0 {
            let _ = write!(out, "{}s", format!("{s}.{rest:03}").trim_end_matches('0'));
        } else {
            let _ = write!(out, "{s}s");
        }
    }
    out
}

fn update_config(out: &mut String, c: &shoal_control::model::UpdateConfig, order_label: &str) {
    let action = match c.failure_action {
        shoal_control::model::FailureAction::Pause => "pause",
        shoal_control::model::FailureAction::Continue => "continue",
        shoal_control::model::FailureAction::Rollback => "rollback",
    };
    let order = match c.order {
        shoal_control::model::UpdateOrder::StopFirst => "stop-first",
        shoal_control::model::UpdateOrder::StartFirst => "start-first",
    };
    let _ = writeln!(out, " Parallelism:\t{}", c.parallelism);
    if c.delay_ms > 0 {
        let _ = writeln!(out, " Delay:\t\t{}", duration(c.delay_ms));
    }
    let _ = writeln!(out, " On failure:\t{action}");
    let _ = writeln!(out, " Monitoring Period: {}", duration(c.monitor_ms));
    let _ = writeln!(out, " Max failure ratio: {}", c.max_failure_ratio.0);
    let _ = writeln!(out, " {order_label}:\t{order}");
}

/// `service inspect --pretty`: Docker's human-readable form, update status included.
pub fn service_pretty(s: &shoal_control::model::Service, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ID:\t\t{}", s.id);
    let _ = writeln!(out, "Name:\t\t{}", s.spec.name);
    if !s.spec.labels.is_empty() {
        let _ = writeln!(out, "Labels:");
        for (k, v) in &s.spec.labels {
            let _ = writeln!(out, " {k}={v}");
        }
    }
    match s.spec.mode {
        ServiceMode::Replicated { replicas } => {
            let _ = writeln!(out, "Service Mode:\tReplicated\n Replicas:\t{replicas}");
        }
        ServiceMode::Global => {
            let _ = writeln!(out, "Service Mode:\tGlobal");
        }
    }
    if let Some(st) = &s.update_status {
        let state = serde_json::to_value(st.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let _ = writeln!(out, "UpdateStatus:\n State:\t\t{state}\n Started:\t{}", ago(st.started_ms, now_ms));
        if let Some(done) = st.completed_ms {
            let _ = writeln!(out, " Completed:\t{}", ago(done, now_ms));
        }
        let _ = writeln!(out, " Message:\t{}", st.message);
    }
    let _ = writeln!(out, "Placement:");
    if !s.spec.placement.constraints.is_empty() {
        let _ = writeln!(out, " Constraints:\t{:?}", s.spec.placement.constraints);
    }
    if !s.spec.placement.preferences.is_empty() {
        let prefs: Vec<String> = s.spec.placement.preferences.iter().map(|p| format!("Spread={}", p.spread)).collect();
        let _ = writeln!(out, " Preferences:\t{prefs:?}");
    }
    let _ = writeln!(out, "UpdateConfig:");
    update_config(&mut out, &s.spec.update, "Update order");
    let _ = writeln!(out, "RollbackConfig:");
    update_config(&mut out, &s.spec.rollback, "Rollback order");
    let _ = writeln!(out, "ContainerSpec:\n Image:\t\t{}", s.spec.image);
    if !s.spec.args.is_empty() {
        let _ = writeln!(out, " Args:\t\t{}", s.spec.args.join(" "));
    }
    if !s.spec.env.is_empty() {
        let _ = writeln!(out, " Env:\t\t{}", s.spec.env.join(" "));
    }
    let k = &s.spec.container;
    for (label, v) in [("Hostname", &k.hostname), ("User", &k.user), ("Dir", &k.workdir)] {
        if let Some(v) = v {
            let _ = writeln!(out, " {label}:\t\t{v}");
        }
    }
    if let Some(e) = &k.entrypoint {
        let _ = writeln!(out, " Entrypoint:\t{}", e.join(" "));
    }
    if let Some(g) = k.stop_grace_ms {
        let _ = writeln!(out, " StopGracePeriod: {}", duration(g));
    }
    if k.read_only {
        let _ = writeln!(out, " Read Only:\ttrue");
    }
    if k.init {
        let _ = writeln!(out, " Init:\t\ttrue");
    }
    if !k.cap_add.is_empty() || !k.cap_drop.is_empty() {
        let _ = writeln!(out, " Capabilities:\n  Add: {}\n  Drop: {}", k.cap_add.join(", "), k.cap_drop.join(", "));
    }
    if !s.spec.mounts.is_empty() {
        let _ = writeln!(out, "Mounts:");
        for m in &s.spec.mounts {
            let _ = writeln!(
                out,
                " Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
                m.target,
                m.source,
                m.readonly,
                m.kind.as_str()
            );
        }
    }
    if !s.spec.configs.is_empty() {
        let _ = writeln!(out, " Configs:");
        for r in &s.spec.configs {
            let _ = writeln!(out, "  Target:\t{}\n   Source:\t{}", r.config_path(), r.source);
        }
    }
    if !s.spec.secrets.is_empty() {
        let _ = writeln!(out, " Secrets:");
        for r in &s.spec.secrets {
            let _ =
                writeln!(out, "  Target:\t{}\n   Source:\t{}\n   UID:\t{} GID: {} Mode: {:04o}", r.target, r.source, r.uid, r.gid, r.mode);
        }
    }
    let mode = match s.spec.endpoint.mode {
        shoal_control::model::EndpointMode::Vip => "vip",
        shoal_control::model::EndpointMode::Dnsrr => "dnsrr",
    };
    let _ = writeln!(out, "Endpoint Mode:\t{mode}");
    if !s.ports.is_empty() {
        let _ = writeln!(out, "Ports:");
        for p in &s.ports {
            let publish = match p.mode {
                shoal_control::model::PublishMode::Ingress => "ingress",
                shoal_control::model::PublishMode::Host => "host",
            };
            let _ = writeln!(
                out,
                " PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {publish}",
                p.published.map(|x| x.to_string()).unwrap_or_default(),
                p.protocol.as_str(),
                p.target
            );
        }
    }
    out
}

pub fn network_table(v: &ClusterView) -> String {
    let mut nets: Vec<_> = v.state.networks.values().collect();
    nets.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let scope = |n: &shoal_control::model::Network| if n.spec.node_local { "local" } else { "swarm" }.to_string();
    let rows = nets.iter().map(|n| vec![short(&n.id), n.spec.name.clone(), n.spec.driver.clone(), scope(n)]).collect::<Vec<_>>();
    table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_like_docker() {
        let t = table(&["ID", "NAME"], &[vec!["abc".into(), "web".into()]]);
        assert_eq!(t, format!("{:<20}NAME\n{:<20}web\n", "ID", "abc"));
    }

    #[test]
    fn a_rescheduled_slot_shows_its_newest_task_first_wherever_it_runs() {
        use shoal_control::model::TaskState;
        let mut w = shoal_control::testkit::World::new(1);
        let sid = w.create(shoal_control::model::ServiceSpec::new("web", "shoal/whoami"));
        w.report_all(TaskState::Running);
        // The task runs on n1 (lowest id); n1 is drained, so its replacement runs on n2, in the
        // same slot. Sorting by node first would put the old task on top.
        let old = w.live(&sid)[0].clone();
        assert_eq!(old.node_id.as_deref(), Some("n1"));
        w.ok(shoal_control::state::Command::UpdateNode {
            node: "n1".into(),
            availability: Some(shoal_control::model::Availability::Drain),
            role: None,
            label_add: Default::default(),
            label_rm: vec![],
        });
        w.report(&old.id, TaskState::Shutdown);
        let new = w.state.tasks.values().find(|t| t.id != old.id).expect("a replacement");
        assert_eq!(new.node_id.as_deref(), Some("n2"));
        let view = ClusterView {
            state: w.state.clone(),
            leader: None,
            voters: Default::default(),
            this_manager: 0,
            applied: 0,
            membership: Default::default(),
        };
        let text = service_ps_table(&view, std::slice::from_ref(&sid), w.now);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[0].contains("web.1") && !rows[0].contains("\\_"), "the new task heads its slot:\n{text}");
        assert!(rows[0].contains("host-n2"), "{text}");
        assert!(rows[1].contains("\\_ web.1") && rows[1].contains("host-n1"), "the drained one is history:\n{text}");
    }

    #[test]
    fn ages() {
        assert_eq!(ago(0, 500), "Less than a second ago");
        assert_eq!(ago(0, 5000), "5 seconds ago");
        assert_eq!(ago(0, 90_000), "About a minute ago");
        assert_eq!(ago(0, 600_000), "10 minutes ago");
    }

    #[test]
    fn pretty_inspect_shows_the_update_status_and_settings() {
        let mut w = shoal_control::testkit::World::new(1);
        let mut spec = shoal_control::model::ServiceSpec::new("web", "whoami:1");
        spec.update.delay_ms = 10_000;
        w.create(spec.clone());
        w.report_all(TaskState::Running);
        spec.image = "whoami:2".into();
        w.ok(shoal_control::state::Command::UpdateService { service: "web".into(), spec });
        let s = w.state.services.values().next().unwrap();
        let text = service_pretty(s, w.now + 3_000);
        assert!(text.contains("UpdateStatus:\n State:\t\tupdating\n Started:\t3 seconds ago\n Message:\tupdate in progress\n"), "{text}");
        assert!(text.contains(" Delay:\t\t10s\n On failure:\tpause\n Monitoring Period: 5s\n"), "{text}");
        assert!(text.contains(" Update order:\tstop-first") && text.contains(" Rollback order:\tstop-first"), "{text}");
        assert!(text.contains(" Image:\t\twhoami:2"), "{text}");
        assert_eq!(duration(90_500), "1m30.5s");
        assert_eq!(duration(250), "250ms");
    }
}

#[cfg(test)]
mod ps_options_tests {
    use super::PsOptions;

    #[test]
    fn ps_filters_read_like_docker_and_bad_ones_name_the_filter() {
        let o = PsOptions::parse(true, &["desired-state=running".into(), "node=snode1".into()]).unwrap();
        assert!(o.no_trunc);
        assert_eq!(o.filters, vec![("desired-state".to_string(), "running".to_string()), ("node".to_string(), "snode1".to_string())]);
        for (bad, says) in [("color=red", "unknown key"), ("desired-state=dancing", "desired-state is"), ("node", "KEY=VALUE")] {
            let e = PsOptions::parse(false, &[bad.to_string()]).unwrap_err().to_string();
            assert!(e.contains("--filter") && e.contains(says), "{bad}: {e}");
        }
    }
}
