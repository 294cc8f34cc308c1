//! Differential property test of incremental table updates: a zone built on top of the previous
//! zone's tables answers exactly like the same zone built from scratch, whatever the edits
//! (health flips, moved IPs, added/removed tasks and services, aliases shared between services).

use std::net::IpAddr;

use proptest::prelude::*;
use shoal_dns::{table::Tables, EndpointMode, NetworkZone, PortRecord, Protocol, ServiceRecord, TaskRecord, Zone};

const SERVICES: &[&str] = &["a", "b", "c", "d"];
const ALIASES: &[&str] = &["x", "y", "a", "tasks.b", "c.1.t1"];
const IDS: &[&str] = &["t1", "t2", "t3", "t4", "t5"];

fn ip(i: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, i % 8 + 1])
}

#[derive(Debug, Clone)]
struct SvcSpec {
    dnsrr: bool,
    vip: u8,
    aliases: Vec<usize>,
    port: Option<(bool, u16)>,
}

#[derive(Debug, Clone)]
struct TaskSpec {
    service: usize,
    id: usize,
    slot: Option<u64>,
    ip: u8,
    healthy: bool,
    aliases: Vec<usize>,
}

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (any::<bool>(), 0u8..4, proptest::collection::vec(0..ALIASES.len(), 0..2), proptest::option::of((any::<bool>(), 79u16..82)))
        .prop_map(|(dnsrr, vip, aliases, port)| SvcSpec { dnsrr, vip, aliases, port })
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    (
        0..SERVICES.len(),
        0..IDS.len(),
        proptest::option::of(1u64..3),
        any::<u8>(),
        any::<bool>(),
        proptest::collection::vec(0..ALIASES.len(), 0..2),
    )
        .prop_map(|(service, id, slot, ip, healthy, aliases)| TaskSpec { service, id, slot, ip, healthy, aliases })
}

#[derive(Debug, Clone)]
struct NetSpec {
    services: Vec<Option<SvcSpec>>,
    tasks: Vec<TaskSpec>,
}

fn net_spec() -> impl Strategy<Value = NetSpec> {
    (proptest::collection::vec(proptest::option::of(svc_spec()), SERVICES.len()), proptest::collection::vec(task_spec(), 0..8))
        .prop_map(|(services, tasks)| NetSpec { services, tasks })
}

/// Edits applied to a spec (indices taken modulo the lengths).
#[derive(Debug, Clone)]
enum Edit {
    FlipHealth(usize),
    MoveIp(usize, u8),
    RemoveTask(usize),
    AddTask(TaskSpec),
    ToggleService(usize, SvcSpec),
    SetAliases(usize, Vec<usize>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::FlipHealth),
        (any::<usize>(), any::<u8>()).prop_map(|(i, ip)| Edit::MoveIp(i, ip)),
        any::<usize>().prop_map(Edit::RemoveTask),
        task_spec().prop_map(Edit::AddTask),
        (any::<usize>(), svc_spec()).prop_map(|(i, s)| Edit::ToggleService(i, s)),
        (any::<usize>(), proptest::collection::vec(0..ALIASES.len(), 0..2)).prop_map(|(i, a)| Edit::SetAliases(i, a)),
    ]
}

fn apply(spec: &mut NetSpec, edit: &Edit) {
    let n = spec.tasks.len();
    match edit {
        Edit::FlipHealth(i) if n > 0 => spec.tasks[i % n].healthy ^= true,
        Edit::MoveIp(i, ip) if n > 0 => spec.tasks[i % n].ip = *ip,
        Edit::RemoveTask(i) if n > 0 => {
            spec.tasks.remove(i % n);
        }
        Edit::AddTask(t) => spec.tasks.push(t.clone()),
        Edit::ToggleService(i, s) => {
            let slot = &mut spec.services[i % SERVICES.len()];
            *slot = match slot {
                Some(_) => None,
                None => Some(s.clone()),
            };
        }
        Edit::SetAliases(i, a) if n > 0 => spec.tasks[i % n].aliases = a.clone(),
        _ => {}
    }
}

fn zone(nets: &[NetSpec]) -> Zone {
    let mut zone = Zone::default();
    for (n, spec) in nets.iter().enumerate() {
        let mut net = NetworkZone { name: format!("n{n}"), ..NetworkZone::default() };
        for (i, svc) in spec.services.iter().enumerate() {
            let Some(svc) = svc else { continue };
            net.services.push(ServiceRecord {
                name: SERVICES[i].into(),
                aliases: svc.aliases.iter().map(|a| ALIASES[*a].to_string()).collect(),
                endpoint_mode: if svc.dnsrr { EndpointMode::Dnsrr } else { EndpointMode::Vip },
                vip: (!svc.dnsrr).then(|| IpAddr::from([10, 9, n as u8, svc.vip])),
                ports: svc
                    .port
                    .iter()
                    .map(|(named, port)| PortRecord { name: named.then(|| "http".to_string()), protocol: Protocol::Tcp, port: *port })
                    .collect(),
            });
        }
        for task in &spec.tasks {
            // Only tasks of services present on the network (else the zone is invalid).
            if spec.services[task.service].is_none() {
                continue;
            }
            net.tasks.push(TaskRecord {
                id: IDS[task.id].into(),
                service: SERVICES[task.service].into(),
                slot: task.slot,
                name: None,
                ip: ip(task.ip),
                healthy: task.healthy,
                aliases: task.aliases.iter().map(|a| ALIASES[*a].to_string()).collect(),
            });
        }
        zone.networks.push(net);
    }
    zone
}

/// Everything a table answers, in a canonical order.
fn dump(tables: &Tables) -> Vec<String> {
    let mut out = Vec::new();
    for (net, table) in tables.networks() {
        for (name, entry) in table.names() {
            let mut v4 = entry.v4.clone();
            v4.sort();
            let mut v6 = entry.v6.clone();
            v6.sort();
            let mut srv = entry.srv.clone();
            srv.sort();
            out.push(format!("{net} {name} {v4:?} {v6:?} {srv:?} {:?}", entry.ttl));
        }
        for (ip, targets) in table.ptrs() {
            let mut targets = targets.to_vec();
            targets.sort();
            out.push(format!("{net} ptr {ip} {targets:?}"));
        }
        for svc in SERVICES {
            if let Some(backends) = table.service_backends(svc) {
                let mut b = backends.to_vec();
                b.sort();
                out.push(format!("{net} backends {svc} {b:?}"));
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn incremental_updates_equal_fresh_builds(
        nets in proptest::collection::vec(net_spec(), 1..3),
        edits in proptest::collection::vec(proptest::collection::vec(edit(), 1..4), 1..4),
    ) {
        let mut specs = nets;
        let first = zone(&specs);
        let mut tables = Tables::build(&first, None).unwrap();
        for round in &edits {
            for (i, e) in round.iter().enumerate() {
                let n = specs.len();
                apply(&mut specs[i % n], e);
            }
            let next = zone(&specs);
            let incremental = Tables::build(&next, Some(&tables)).unwrap();
            let fresh = Tables::build(&next, None).unwrap();
            prop_assert_eq!(dump(&incremental), dump(&fresh));
            tables = incremental;
        }
    }
}
