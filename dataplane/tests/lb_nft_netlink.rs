//! The nftables balancer's in-process nfnetlink path against the kernel: a change committed
//! from this process reads back (through `nft`) exactly as the same change made by `nft -f`,
//! so the next reconcile finds nothing to do. Needs root: run by tests/run.sh.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use shoal_dataplane::lb::nft::{plan, NftLb, NftOp};
use shoal_dataplane::lb::plan::ServiceKey;
use shoal_dataplane::lb::{Frontend, LbTable, Target};
use shoal_dataplane::netns;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

fn table(backends: &[u8]) -> LbTable {
    let mut t = LbTable::default();
    let bes = backends
        .iter()
        .map(|b| Target { addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, *b), 80), snat: Ipv4Addr::new(10, 0, 9, 250), local: false, weight: 1 })
        .collect();
    t.vips.insert(ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), 80), Frontend { keep_client_ip: false, backends: bes });
    t.published.insert(ServiceKey::udp(Ipv4Addr::new(192, 168, 33, 10), 53), Frontend { keep_client_ip: false, backends: vec![] });
    t.bridges.insert("shb-4097".into(), Ipv4Addr::new(10, 0, 9, 250));
    t
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_change_over_nfnetlink_reads_back_as_nft_wrote_it() {
    assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
    let ns = Ns(format!("shoal-lbnl{}", std::process::id()));
    netns::create(&ns.0).unwrap();
    let out = netns::run_in(&ns.0, || {
        let mut lb = NftLb::new();
        let obs = lb.observe().unwrap();
        lb.commit(&plan(&table(&[2, 3, 4]), &obs)).unwrap();
        // one backend leaves, one VIP port appears: flush + rules, new chain + rules + element
        let mut next = table(&[2, 4]);
        next.vips.insert(ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), 53), table(&[5]).vips.into_values().next().unwrap());
        let obs = lb.observe().unwrap();
        let ops = plan(&next, &obs);
        assert!(ops.iter().any(|o| matches!(o, NftOp::FlushChain(_))), "{ops:#?}");
        let used = lb.commit_netlink(&ops).unwrap_or_else(|e| panic!("{e}"));
        assert!(used, "every op of a backend change must be encodable: {ops:#?}");
        let after = lb.observe().unwrap();
        let again = plan(&next, &after);
        let listing = Command::new("nft").args(["list", "table", "ip", "shoal"]).output().unwrap();
        (again, String::from_utf8_lossy(&listing.stdout).to_string())
    })
    .unwrap();
    let (again, listing) = out;
    assert!(again.is_empty(), "the kernel does not hold what was committed: {again:#?}\n{listing}");
    assert!(listing.contains("meta l4proto tcp numgen random mod 2 < 1 meta mark set meta mark | 0x00005300 dnat to 10.0.9.2:80"), "{listing}");
    assert!(listing.contains("10.0.9.100 . udp . 53 : goto v_10_0_9_100_53_udp"), "{listing}");
}
