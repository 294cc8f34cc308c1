//! The nftables balancer's in-process nfnetlink path against the kernel: a backend change
//! committed from this process (slot-map and set element changes) reads back (through `nft`)
//! exactly as the model the planner keeps, so the next reconcile finds nothing to do; a
//! refused batch changes nothing and names the change. Needs root: run by tests/run.sh.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use shoal_dataplane::lb::nft::{plan, NftLb, NftOp};
use shoal_dataplane::lb::plan::{Kind, ServiceKey, ANY_PORT};
use shoal_dataplane::lb::{Frontend, LbTable, Target};
use shoal_dataplane::netns;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

fn frontend(backends: &[u8], port: u16) -> Frontend {
    let backends = backends
        .iter()
        .map(|b| Target {
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, *b), port),
            snat: Ipv4Addr::new(10, 0, 9, 250),
            local: false,
            weight: 1,
        })
        .collect();
    Frontend { keep_client_ip: false, backends }
}

/// VIP .100 (TCP, every port) with `web` backends, VIP .102 with two (so the 2-slot VIP map
/// exists), VIP .101 with three (so the 3-slot map stays in use), a published port with three,
/// a published UDP port without backends.
fn table(web: &[u8]) -> LbTable {
    let mut t = LbTable::default();
    t.vips.insert(ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT), frontend(web, ANY_PORT));
    t.vips.insert(ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 102), ANY_PORT), frontend(&[2, 3], ANY_PORT));
    t.vips.insert(ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 101), ANY_PORT), frontend(&[2, 3, 4], ANY_PORT));
    t.published.insert(ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5000), frontend(&[2, 3, 4], 80));
    t.published.insert(ServiceKey::udp(Ipv4Addr::new(192, 168, 33, 10), 53), Frontend { keep_client_ip: false, backends: vec![] });
    t.bridges.insert("shb-4097".into(), Ipv4Addr::new(10, 0, 9, 250));
    t
}

fn in_namespace<T: Send + 'static>(prefix: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
    let ns = Ns(format!("{prefix}{}", std::process::id()));
    netns::create(&ns.0).unwrap();
    netns::run_in(&ns.0, f).unwrap()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_change_over_nfnetlink_reads_back_as_nft_wrote_it() {
    let (ops, model, after, again, listing) = in_namespace("shoal-lbnl", || {
        let mut lb = NftLb::new();
        let obs = lb.observe().unwrap();
        lb.commit(&plan(&table(&[2, 3, 4]), &obs)).unwrap();
        // one backend leaves VIP .100 (3 slots -> 2), its UDP VIP appears (2 slots, SNATed), a
        // published port's backend moves to another target port
        let mut next = table(&[2, 4]);
        next.vips.insert(ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT), frontend(&[5, 6], ANY_PORT));
        next.published.get_mut(&ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5000)).unwrap().backends[2].addr.set_port(81);
        let mut model = lb.observe().unwrap();
        let ops = plan(&next, &model);
        let used = lb.commit_netlink(&ops).unwrap_or_else(|e| panic!("{e}"));
        assert!(used, "every op of a backend change must be encodable: {ops:#?}");
        model.apply(&ops);
        let after = lb.observe().unwrap();
        let again = plan(&next, &after);
        let listing = Command::new("nft").args(["list", "table", "ip", "shoal"]).output().unwrap();
        (ops, model, after, again, String::from_utf8_lossy(&listing.stdout).to_string())
    });
    assert!(ops.iter().all(NftOp::is_element), "a backend change is element changes only: {ops:#?}");
    assert_eq!(after, model, "the kernel does not hold what was committed\n{listing}");
    assert!(again.is_empty(), "the next plan is not empty: {again:#?}\n{listing}");
    assert!(listing.contains("10.0.9.100 . tcp . 1 : 10.0.9.4"), "{listing}");
    assert!(listing.contains("10.0.9.100 . udp . 0 : 10.0.9.5"), "{listing}");
    assert!(listing.contains("192.168.33.10 . tcp . 5000 . 2 : 10.0.9.4 . 81"), "{listing}");
    // nft shows the rules as it would have written them
    assert!(listing.contains("dnat to ip daddr . meta l4proto . numgen random mod 2 map @vip_any_2"), "{listing}");
    assert!(listing.contains("dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @pub_3"), "{listing}");
    assert!(listing.contains("ip daddr . meta l4proto @masq_any meta mark set meta mark | 0x00005300"), "{listing}");
    // no `meta l4proto tcp` dependency (nft shows it as `tcp dport`): UDP frontends are balanced too
    assert!(!listing.contains("tcp dport . numgen"), "{listing}");
    let vip_udp = (Kind::Vip, ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT));
    assert_eq!(after.summary()[&vip_udp].len(), 2);
    assert!(after.masq.contains(&vip_udp));
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_refused_nfnetlink_batch_changes_nothing_and_names_the_change() {
    let (err, before, after) = in_namespace("shoal-lbnr", || {
        let mut lb = NftLb::new();
        let obs = lb.observe().unwrap();
        lb.commit(&plan(&table(&[2, 3, 4]), &obs)).unwrap();
        let before = lb.observe().unwrap();
        let key = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
        // a good change, then one that deletes a slot that does not exist
        let ops = vec![
            NftOp::AddMasq((Kind::Vip, ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 103), ANY_PORT))),
            NftOp::DeleteSlots { kind: Kind::Vip, key, size: 3, slots: vec![7] },
        ];
        let err = lb.commit_netlink(&ops).unwrap_err().to_string();
        (err, before, lb.observe().unwrap())
    });
    assert_eq!(after, before, "a refused batch changed the table");
    assert!(err.contains("refused at change 2") && err.contains("vip_any_3") && err.contains("10.0.9.100 . tcp . 7"), "{err}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn the_older_chain_per_service_table_is_replaced_and_then_adopted() {
    use shoal_dataplane::lb::LoadBalancer;
    let (changes, again, listing) = in_namespace("shoal-lbno", || {
        // the layout before slot maps: a verdict map to a chain per frontend
        let old = "add table ip shoal
add map ip shoal vips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add chain ip shoal v_10_0_9_100_80_tcp
add rule ip shoal v_10_0_9_100_80_tcp meta l4proto tcp dnat ip to 10.0.9.2:80 comment \"h1\"
add element ip shoal vips { 10.0.9.100 . tcp . 80 : goto v_10_0_9_100_80_tcp }
add chain ip shoal prerouting { type nat hook prerouting priority dstnat ; policy accept ; }
add rule ip shoal prerouting ip daddr . meta l4proto . th dport vmap @vips comment \"shoal-vips\"
";
        let mut child = Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), old.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "the old layout did not load");
        let changes = NftLb::new().reconcile(&table(&[2, 3, 4]), false).unwrap_or_else(|e| panic!("{e}"));
        // a new process adopts it: nothing to do
        let again = NftLb::new().reconcile(&table(&[2, 3, 4]), false).unwrap();
        let listing = Command::new("nft").args(["list", "table", "ip", "shoal"]).output().unwrap();
        (changes, again, String::from_utf8_lossy(&listing.stdout).to_string())
    });
    assert_eq!(changes[0], "nft: delete table ip shoal", "{changes:#?}");
    assert!(again.is_empty(), "{again:#?}\n{listing}");
    assert!(!listing.contains("vips") && !listing.contains("v_10_0_9_100_80_tcp"), "{listing}");
    assert!(listing.contains("10.0.9.100 . tcp . 2 : 10.0.9.4"), "{listing}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn table_exists_finds_exactly_ip_tables_of_that_name() {
    use shoal_dataplane::lb::nft::table_exists;
    let seen = in_namespace("shoal-lbte", || {
        let before = table_exists("shoal").unwrap();
        // the same name in another family is not ours
        let nft = |cmd: &str| assert!(Command::new("nft").args(cmd.split(' ')).status().unwrap().success(), "nft {cmd}");
        nft("add table inet shoal");
        let other_family = table_exists("shoal").unwrap();
        nft("add table ip shoal");
        (before, other_family, table_exists("shoal").unwrap(), table_exists("shoal_ipvs").unwrap())
    });
    assert_eq!(seen, (false, false, true, false), "(absent, inet only, ip shoal, another name)");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn the_port_keyed_vip_table_is_replaced_and_then_adopted() {
    use shoal_dataplane::lb::LoadBalancer;
    let (changes, again, listing) = in_namespace("shoal-lbnv", || {
        // slot maps before any-port VIPs: `vip_<S>` keyed by port, one masq set
        let old = "add table ip shoal
add set ip shoal masq { type ipv4_addr . inet_proto . inet_service ; }
add map ip shoal vip_3 { typeof ip daddr . meta l4proto . th dport . numgen random mod 3 : ip daddr . tcp dport ; }
add element ip shoal vip_3 { 10.0.9.100 . tcp . 80 . 0 : 10.0.9.2 . 80 }
add element ip shoal masq { 10.0.9.100 . tcp . 80 }
add chain ip shoal prerouting { type nat hook prerouting priority dstnat ; policy accept ; }
add rule ip shoal prerouting ip daddr . meta l4proto . th dport @masq meta mark set meta mark | 0x5300 comment \"shoal-mark\"
";
        let mut child = Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), old.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "the old layout did not load");
        let changes = NftLb::new().reconcile(&table(&[2, 3, 4]), false).unwrap_or_else(|e| panic!("{e}"));
        let again = NftLb::new().reconcile(&table(&[2, 3, 4]), false).unwrap();
        let listing = Command::new("nft").args(["list", "table", "ip", "shoal"]).output().unwrap();
        (changes, again, String::from_utf8_lossy(&listing.stdout).to_string())
    });
    assert_eq!(changes[0], "nft: delete table ip shoal", "{changes:#?}");
    assert!(again.is_empty(), "{again:#?}\n{listing}");
    assert!(!listing.contains("map vip_3 ") && !listing.contains("tcp . 80 . 0"), "{listing}");
    assert!(listing.contains("10.0.9.100 . tcp . 2 : 10.0.9.4"), "{listing}");
}
