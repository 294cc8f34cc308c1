//! The IPVS balancer against a kernel that has IPVS (the kernel lab runs these): what it
//! programs reads back (GET_SERVICE/GET_DEST dumps, `nft -j`) as the planner's model, so a
//! re-apply and a new process change nothing; the agent's incremental path costs one IPVS
//! operation per backend change; teardown leaves no service or table of ours and never touches
//! another program's IPVS services. In a namespace of their own; traffic is the mesh test's job.
//! Need root; skip (SHOAL-SKIP) where the kernel has no IPVS.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::plan::{IpvsOp, SYSCTLS};
use super::{kernel, IpvsLb};
use crate::lb::plan::{diff, Frontend, Kind, LbTable, ServiceKey, Target, ANY_PORT};
use crate::lb::LoadBalancer;
use crate::netns;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

fn skip(test: &str, reason: &str) {
    let line = format!("SHOAL-SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("SHOAL_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            // One write: parallel tests append to the same file (O_APPEND keeps a write whole).
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Runs `f` in a new namespace; None (after a SHOAL-SKIP line) when the kernel has no IPVS.
fn in_namespace<T: Send + 'static>(test: &str, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let ns = Ns(format!("shoal-ipvs{}x{n}", std::process::id()));
    netns::create(&ns.0).unwrap();
    match netns::run_in(&ns.0, super::probe).unwrap() {
        Err(reason) => {
            skip(test, &format!("IPVS: {reason}"));
            None
        }
        Ok(()) => Some(netns::run_in(&ns.0, f).unwrap()),
    }
}

fn frontend(backends: &[(u8, u16)], port: u16) -> Frontend {
    let backends = backends
        .iter()
        .map(|(b, weight)| Target {
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, *b), port),
            snat: Ipv4Addr::new(10, 0, 9, 250),
            local: *b == 2,
            weight: *weight,
        })
        .collect();
    Frontend { keep_client_ip: false, backends }
}

fn table() -> LbTable {
    let mut t = LbTable { underlay: Some(Ipv4Addr::new(192, 168, 33, 10)), ..LbTable::default() };
    t.vips.insert(ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT), frontend(&[(2, 1), (3, 1), (4, 1)], ANY_PORT));
    t.vips.insert(ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT), frontend(&[(2, 1), (3, 1)], ANY_PORT));
    t.published.insert(ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5000), frontend(&[(2, 1), (3, 1), (4, 1)], 80));
    let mut keep = frontend(&[(2, 1), (3, 1)], 81);
    keep.keep_client_ip = true;
    t.published.insert(ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5001), keep);
    t.bridges.insert("shb-4097".into(), Ipv4Addr::new(10, 0, 9, 250));
    t
}

type Shown = BTreeMap<(Kind, ServiceKey), Vec<String>>;

fn shown(lb: &mut IpvsLb) -> Shown {
    lb.programmed().unwrap().into_iter().map(|(k, key, bes)| ((k, key), bes)).collect()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn ipvs_programs_what_reads_back_and_a_restart_changes_nothing() {
    let Some((first, again, after_restart, shown, sysctls)) =
        in_namespace("ipvs_programs_what_reads_back_and_a_restart_changes_nothing", || {
            let t = table();
            let mut lb = IpvsLb::open().unwrap();
            let first = lb.reconcile(&t, false).unwrap();
            let again = lb.reconcile(&t, false).unwrap();
            let mut restarted = IpvsLb::open().unwrap();
            let after_restart = restarted.reconcile(&t, false).unwrap();
            let shown = shown(&mut restarted);
            restarted.teardown().unwrap();
            (first, again, after_restart, shown, kernel::read_sysctls())
        })
    else {
        return;
    };
    assert!(first.iter().any(|l| l.starts_with("ipvs add service")), "{first:#?}");
    assert_eq!(again, Vec::<String>::new(), "a re-apply changed the kernel");
    assert_eq!(after_restart, Vec::<String>::new(), "a new process changed the kernel");
    // port 0: IPVS sends a VIP's flows to the port the client asked for
    let vip = &shown[&(Kind::Vip, ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT))];
    assert_eq!(vip, &["10.0.9.2:0", "10.0.9.3:0", "10.0.9.4:0"]);
    assert_eq!(shown[&(Kind::Vip, ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT))], ["10.0.9.2:0", "10.0.9.3:0"]);
    // keep_client_ip with a local task: that task alone
    assert_eq!(shown[&(Kind::Published, ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5001))], ["10.0.9.2:81"]);
    for (name, value) in SYSCTLS {
        assert_eq!(sysctls[name].as_deref(), Some(value), "net.ipv4.vs.{name}");
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn ipvs_incremental_changes_cost_one_operation_and_teardown_spares_other_services() {
    let Some((removed, weighted, reread, shown, left, foreign_left)) =
        in_namespace("ipvs_incremental_changes_cost_one_operation_and_teardown_spares_other_services", || {
            let t = table();
            let mut lb = IpvsLb::open().unwrap();
            lb.reconcile(&t, false).unwrap();
            // another program's fwmark service in the same namespace
            let mut genl = kernel::Genl::open().unwrap();
            let other = (Kind::Vip, ServiceKey::tcp(Ipv4Addr::new(10, 9, 9, 9), 1));
            genl.exec(&IpvsOp::NewService { mark: 0x100, fe: other }).unwrap();
            // web.3 leaves the TCP VIP (no connection on it: deleted at once)
            let key = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
            let mut next = t.clone();
            next.vips.get_mut(&key).unwrap().backends.retain(|b| b.addr.ip() != &Ipv4Addr::new(10, 0, 9, 4));
            let removed = lb.apply_ops(&next, &diff(&t, &next)).unwrap();
            let mut heavier = next.clone();
            heavier.vips.get_mut(&key).unwrap().backends[1].weight = 3;
            let weighted = lb.apply_ops(&heavier, &diff(&next, &heavier)).unwrap();
            let reread = IpvsLb::open().unwrap().reconcile(&heavier, false).unwrap();
            let shown = shown(&mut lb);
            lb.teardown().unwrap();
            let left = IpvsLb::open().unwrap().observe().unwrap();
            let foreign_left = genl.dests(0x100).is_ok();
            let _ = genl.exec(&IpvsOp::DelService { mark: 0x100, fe: None });
            (removed, weighted, reread, shown, left, foreign_left)
        })
    else {
        return;
    };
    assert_eq!(removed.len(), 1, "{removed:#?}");
    assert!(removed[0].starts_with("ipvs remove dest 10.0.9.4:0 from fwmark"), "{removed:#?}");
    assert_eq!(weighted.len(), 1, "{weighted:#?}");
    assert!(weighted[0].starts_with("ipvs set dest 10.0.9.3:0 masq weight 3"), "{weighted:#?}");
    assert_eq!(reread, Vec::<String>::new(), "the incremental path left the kernel off its model");
    assert_eq!(shown[&(Kind::Vip, ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT))], ["10.0.9.2:0", "10.0.9.3:0 weight 3"]);
    assert!(left.services.is_empty() && !left.table.present, "teardown left {left:?}");
    assert!(foreign_left, "teardown removed another program's IPVS service");
}
