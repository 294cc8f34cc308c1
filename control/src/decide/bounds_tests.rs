//! Numbers and sizes from users are bounded before they become state: a command with an
//! extreme value fails validation naming the field, and apply never panics or runs away.

use crate::model::{HealthCheck, ServiceMode, ServiceSpec};
use crate::state::{Command, StateError};
use crate::testkit::World;

/// Apply `cmd` and check it is refused naming `field`, with the state unchanged.
fn refused(w: &mut World, cmd: Command, field: &str) {
    let before = w.state.clone();
    match w.apply(cmd) {
        Err(StateError::InvalidSpec { field: f, message }) => assert!(f.contains(field), "error names {f:?} ({message}), not {field:?}"),
        other => panic!("expected a refusal naming {field}, got {other:?}"),
    }
    assert_eq!(w.state, before, "a refused command changed the state");
}

#[test]
fn scale_is_bounded_like_create() {
    let mut w = World::new(0);
    w.create(ServiceSpec::new("web", "nginx"));
    // i64::MAX made every manager loop in the orchestrator until it ran out of memory.
    refused(&mut w, Command::ScaleService { service: "web".into(), replicas: i64::MAX }, "replicas");
    refused(&mut w, Command::ScaleService { service: "web".into(), replicas: crate::state::limits::MAX_REPLICAS + 1 }, "replicas");
}

#[test]
fn update_and_rollback_settings_are_bounded() {
    let mut w = World::new(0);
    w.create(ServiceSpec::new("web", "nginx"));
    let base = ServiceSpec::new("web", "nginx:2");
    let update = |s: ServiceSpec| Command::UpdateService { service: "web".into(), spec: s };
    for (r, field) in [(1.5, "update-max-failure-ratio"), (f64::NAN, "update-max-failure-ratio"), (-0.0, "update-max-failure-ratio")] {
        let mut s = base.clone();
        s.update.max_failure_ratio = crate::model::Ratio(r);
        refused(&mut w, update(s), field);
    }
    let mut s = base.clone();
    s.update.delay_ms = u64::MAX;
    refused(&mut w, update(s), "update-delay");
    let mut s = base.clone();
    s.rollback.monitor_ms = u64::MAX;
    refused(&mut w, update(s), "rollback-monitor");
    let mut s = base.clone();
    s.rollback.parallelism = u64::MAX;
    refused(&mut w, update(s), "rollback-parallelism");
    let mut s = base.clone();
    s.mode = ServiceMode::Global;
    refused(&mut w, update(s), "mode");
}

#[test]
fn extreme_spec_numbers_name_the_field() {
    let mut w = World::new(0);
    let base = ServiceSpec::new("web", "nginx");
    let create = |s: ServiceSpec| Command::CreateService { spec: s };
    let mut s = base.clone();
    s.placement.max_replicas_per_node = u64::MAX;
    refused(&mut w, create(s), "max-replicas");
    let mut s = base.clone();
    s.reservations.nano_cpus = u64::MAX;
    refused(&mut w, create(s), "reserve-cpu");
    let mut s = base.clone();
    s.reservations.memory_bytes = u64::MAX;
    refused(&mut w, create(s), "reserve-memory");
    let mut s = base.clone();
    s.limits.memory_bytes = u64::MAX;
    refused(&mut w, create(s), "limit-memory");
    let mut s = base.clone();
    s.limits.nano_cpus = u64::MAX;
    refused(&mut w, create(s), "limit-cpu");
    let mut s = base.clone();
    s.limits.pids = u64::MAX;
    refused(&mut w, create(s), "limit-pids");
    let mut s = base.clone();
    s.restart.delay_ms = u64::MAX;
    refused(&mut w, create(s), "restart-delay");
    let mut s = base.clone();
    s.restart.max_attempts = u64::MAX;
    refused(&mut w, create(s), "restart-max-attempts");
    let mut s = base.clone();
    s.restart.window_ms = u64::MAX;
    refused(&mut w, create(s), "restart-window");
    let mut s = base.clone();
    s.healthcheck = Some(HealthCheck { retries: u32::MAX, ..HealthCheck::new("true") });
    refused(&mut w, create(s), "health-retries");
    let mut s = base.clone();
    s.env = (0..100_000).map(|i| format!("K{i}=v")).collect();
    refused(&mut w, create(s), "env");
    let mut s = base.clone();
    s.env = vec![format!("K={}", "x".repeat(1 << 20))];
    refused(&mut w, create(s), "env[0]");
    let mut s = base.clone();
    s.args = vec!["x".repeat(2 << 20)];
    refused(&mut w, create(s), "args");
    let mut s = base.clone();
    s.labels = (0..100_000).map(|i| (format!("k{i}"), "v".into())).collect();
    refused(&mut w, create(s), "labels");
    let mut s = base.clone();
    s.placement.constraints = (0..10_000).map(|_| "node.role==manager".into()).collect();
    refused(&mut w, create(s), "constraints");
    let mut s = base.clone();
    s.image = "x".repeat(1 << 20);
    refused(&mut w, create(s), "image");
    let mut s = base;
    s.mode = ServiceMode::Replicated { replicas: i64::MIN };
    refused(&mut w, create(s), "replicas");
}

#[test]
fn secrets_and_node_labels_are_bounded() {
    let mut w = World::new(0);
    let spec = crate::model::SecretSpec { name: "s".into(), labels: Default::default(), data: vec![0; 500 * 1024 + 1] };
    refused(&mut w, Command::CreateSecret { spec }, "data");
    let label_add = (0..100_000).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let cmd = Command::UpdateNode { node: "n1".into(), availability: None, role: None, label_add, label_rm: vec![] };
    refused(&mut w, cmd, "label-add");
}

mod property {
    use crate::model::{HealthCheck, NetworkSpec, SecretSpec, ServiceMode, ServiceSpec, TaskState, TaskStatus};
    use crate::state::limits::*;
    use crate::state::{Command, StateError};
    use crate::testkit::World;
    use proptest::prelude::*;

    fn big_u64() -> BoxedStrategy<u64> {
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u64::MAX - 1), Just(1 << 63), any::<u64>(), 0..10_000u64].boxed()
    }

    /// Small counts that apply quickly, and the extremes on both sides.
    fn replicas() -> BoxedStrategy<i64> {
        prop_oneof![0..4i64, Just(-1), Just(i64::MIN), Just(i64::MAX), Just(MAX_REPLICAS + 1), any::<i64>()].boxed()
    }

    /// A size that is small, at a limit, or just past it.
    fn size(limit: usize) -> BoxedStrategy<usize> {
        prop_oneof![0..3usize, Just(limit), Just(limit + 1)].boxed()
    }

    fn spec() -> BoxedStrategy<ServiceSpec> {
        (
            (replicas(), big_u64(), big_u64(), big_u64(), big_u64()),
            (big_u64(), big_u64(), big_u64(), big_u64(), big_u64()),
            (big_u64(), big_u64(), any::<u32>(), big_u64()),
            (size(MAX_ENTRIES), size(MAX_STRING_BYTES), size(MAX_ENTRIES), size(MAX_ENTRIES)),
        )
            .prop_map(|(a, b, c, d)| {
                let mut s = ServiceSpec::new("svc", "nginx");
                s.mode = ServiceMode::Replicated { replicas: a.0 };
                s.placement.max_replicas_per_node = a.1;
                s.limits.nano_cpus = a.2;
                s.limits.memory_bytes = a.3;
                s.limits.pids = a.4;
                s.reservations.nano_cpus = b.0;
                s.reservations.memory_bytes = b.1;
                s.restart.delay_ms = b.2;
                s.restart.max_attempts = b.3;
                s.restart.window_ms = b.4;
                if c.3 % 2 == 0 {
                    s.healthcheck =
                        Some(HealthCheck { cmd: "true".into(), interval_ms: c.0, timeout_ms: c.1, retries: c.2, start_period_ms: c.3 });
                }
                s.env = (0..d.0).map(|i| format!("K{i}=v")).collect();
                s.args = vec!["x".repeat(d.1)];
                s.labels = (0..d.2).map(|i| (format!("k{i}"), String::new())).collect();
                s.placement.constraints = (0..d.3).map(|_| "node.role==manager".into()).collect();
                s
            })
            .boxed()
    }

    fn command() -> BoxedStrategy<Command> {
        prop_oneof![
            spec().prop_map(|spec| Command::CreateService { spec }),
            spec().prop_map(|spec| Command::UpdateService { service: "base".into(), spec: ServiceSpec { name: "base".into(), ..spec } }),
            replicas().prop_map(|replicas| Command::ScaleService { service: "base".into(), replicas }),
            (spec(), any::<u64>(), any::<u64>(), any::<u64>(), proptest::num::f64::ANY).prop_map(|(spec, p, d, m, r)| {
                let mut s = ServiceSpec { name: "base".into(), ..spec };
                s.update.parallelism = p;
                s.update.delay_ms = d;
                s.update.monitor_ms = m;
                s.update.max_failure_ratio = crate::model::Ratio(r);
                s.rollback = s.update;
                Command::UpdateServiceAt { service: "base".into(), version: 1 + p % 3, spec: s }
            }),
            Just(Command::RollbackService { service: "base".into(), version: None }),
            Just(Command::Tick),
            size(MAX_SECRET_BYTES).prop_map(|n| Command::CreateSecret {
                spec: SecretSpec { name: "s".into(), labels: Default::default(), data: vec![7; n] }
            }),
            (size(MAX_ENTRIES), size(MAX_STRING_BYTES)).prop_map(|(n, len)| Command::UpdateNode {
                node: "n1".into(),
                availability: None,
                role: None,
                label_add: (0..n).map(|i| (format!("k{i}"), "v".repeat(len.min(64)))).chain([("big".into(), "v".repeat(len))]).collect(),
                label_rm: vec![],
            }),
            (size(MAX_REPORT_UPDATES), size(MAX_MESSAGE_BYTES)).prop_map(|(n, len)| Command::TaskStatus {
                node: "n1".into(),
                updates: (0..n).map(|i| (format!("t{i}").into(), TaskStatus::new(TaskState::Running, "m".repeat(len), 0))).collect(),
            }),
            prop_oneof![Just("255.255.255.255/32"), Just("0.0.0.0/0"), Just("10.9.0.0/31"), Just("10.9.0.0/24")].prop_map(|net| {
                Command::CreateNetwork { spec: NetworkSpec { name: "n".into(), subnet: Some(net.parse().unwrap()), ..Default::default() } }
            }),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Whatever numbers and sizes arrive, apply does not panic, a refusal changes nothing
        /// (and, when the spec was at fault, names the field), and what applied is in bounds.
        #[test]
        fn extreme_commands_never_panic_and_stay_in_bounds(cmds in proptest::collection::vec(command(), 1..4)) {
            let mut w = World::new(1);
            w.create(ServiceSpec::new("base", "nginx"));
            for cmd in cmds {
                let before = w.state.clone();
                match w.apply(cmd) {
                    Ok(_) => {}
                    Err(StateError::InvalidSpec { field, .. }) => {
                        prop_assert!(!field.is_empty());
                        prop_assert_eq!(&w.state, &before);
                    }
                    Err(_) => prop_assert_eq!(&w.state, &before),
                }
                for s in w.state.services.values() {
                    if let ServiceMode::Replicated { replicas } = s.spec.mode {
                        prop_assert!((0..=MAX_REPLICAS).contains(&replicas));
                    }
                    prop_assert!(serde_json::to_vec(&s.spec).unwrap().len() <= MAX_SPEC_BYTES);
                }
                for n in w.state.nodes.values() {
                    prop_assert!(n.labels.len() <= MAX_ENTRIES);
                }
                prop_assert!(w.state.tasks.len() <= 2 * 8 * w.state.task_history_limit());
            }
        }
    }
}
