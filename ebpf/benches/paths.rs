//! `cargo bench -p shoal-ebpf --bench paths` (as root): what a VIP on every port costs.
//!
//! - connect(): a UDP socket (no packet is sent) connected over and over from a cgroup with the
//!   socket LB attached, to an exact (VIP, port) service, to a port the VIP carries through its
//!   every-port entry (one more lookup), and to an address that is no service (both lookups
//!   miss); and with no hook attached. Backends and destinations are loopback addresses.
//! - packets: the kernel's time per run of the classifiers (BPF_PROG_TEST_RUN, one packet per
//!   run), a flow's later packet and a new flow, for a published port on the underlay (exact
//!   match) and for a VIP on the bridge (every-port entry); and a packet of no service on the
//!   bridge (what every other packet up the bridge now pays).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    time::Instant,
};

use shoal_ebpf::{Backend, LoadOptions, ServiceKey, ServiceOptions, SockLb, TcHook, TcNat, ANY_PORT};

const VIP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
const ROUNDS: usize = 9;

/// Mean ns per connect() of one UDP socket to `to`, over `n` calls.
fn connect_ns(to: SocketAddrV4, n: u32) -> f64 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..1000 {
        s.connect(to).expect("connect");
    }
    let start = Instant::now();
    for _ in 0..n {
        s.connect(to).expect("connect");
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The cgroup this process is in (v2 line of /proc/self/cgroup), under `root`.
fn own_cgroup(root: &Path) -> PathBuf {
    let text = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let rel = text.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line");
    root.join(rel.trim_start_matches('/'))
}

fn connect_bench() {
    let root = shoal_ebpf::cgroup2_mount().expect("a cgroup v2 hierarchy");
    let home = own_cgroup(&root);
    let cg = root.join(format!("shoal-bench-paths-{}", std::process::id()));
    fs::create_dir(&cg).expect("mkdir cgroup");
    let n = 300_000;
    let exact_to = SocketAddrV4::new(VIP, 80);
    let any_to = SocketAddrV4::new(VIP, 9000);
    let none_to = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), 80);

    fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).expect("enter cgroup");
    let no_hook = connect_ns(none_to, n);
    let mut lb = SockLb::load(&LoadOptions::default()).expect("load").attach(&cg).expect("attach");
    let be = |port| vec![Backend::new(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), port))];
    for (key, port) in [(ServiceKey::udp(VIP, 80), 8080), (ServiceKey::udp(VIP, ANY_PORT), ANY_PORT)] {
        lb.upsert_service(key, ServiceOptions::default()).unwrap();
        lb.set_backends(&key, &be(port)).unwrap();
    }
    // Port 0 is never looked up twice: what a miss cost before the every-port lookup.
    let one_lookup_to = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), 0);
    // Interleaved rounds, so drift hits every case alike; the median round of each is reported.
    let mut rounds: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        for (i, to) in [exact_to, any_to, none_to, one_lookup_to].into_iter().enumerate() {
            rounds[i].push(connect_ns(to, n));
        }
    }
    let best = rounds.map(|mut r| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    });
    drop(lb);
    fs::write(home.join("cgroup.procs"), std::process::id().to_string()).expect("leave cgroup");
    fs::remove_dir(&cg).expect("rmdir cgroup");
    println!("socket LB, UDP connect() (median of {ROUNDS} x {n}):");
    println!("  no hook attached:                      {no_hook:7.1} ns");
    println!("  exact (VIP, port) service:             {:7.1} ns", best[0]);
    println!("  every-port entry (exact misses):       {:7.1} ns  ({:+.1} ns)", best[1], best[1] - best[0]);
    println!("  no service (both lookups miss):        {:7.1} ns", best[2]);
    println!("  no service, port 0 (one lookup miss):  {:7.1} ns  (second lookup {:+.1} ns)", best[3], best[2] - best[3]);
}

fn frame(src: SocketAddrV4, dst: SocketAddrV4, syn: bool, ack: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), 1000, 64240);
    let b = if syn { b.syn() } else { b };
    let b = if ack { b.ack(1) } else { b };
    b.write(&mut out, &[0u8; 64]).unwrap();
    out
}

/// Mean kernel ns per run of `hook` over `packets` (one run each).
fn per_packet(nat: &mut TcNat, hook: TcHook, packets: &[Vec<u8>]) -> f64 {
    let total: u64 = packets.iter().map(|p| u64::from(nat.test_run_repeat(hook, p, 1).expect("test run").2)).sum();
    total as f64 / packets.len() as f64
}

fn packet_bench() {
    let opts = LoadOptions { max_flows: 262_144, ..LoadOptions::default() };
    let mut nat = TcNat::load(&opts).expect("load tc_nat");
    let node = Ipv4Addr::new(192, 168, 50, 2);
    let vip = Ipv4Addr::new(10, 0, 9, 100);
    let snat = Ipv4Addr::new(10, 0, 9, 250);
    let published = ServiceKey::tcp(node, 5000);
    nat.upsert_service(published, ServiceOptions::default()).unwrap();
    let bes: Vec<Backend> = (2..5).map(|i| Backend::nat(SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, i), 80), snat, false)).collect();
    nat.set_backends(&published, &bes).unwrap();
    let any = ServiceKey::tcp(vip, ANY_PORT);
    nat.upsert_service(any, ServiceOptions { vip: true, ..ServiceOptions::default() }).unwrap();
    let bes: Vec<Backend> = bes.iter().map(|b| Backend::nat(SocketAddrV4::new(*b.addr.ip(), ANY_PORT), snat, false)).collect();
    nat.set_backends(&any, &bes).unwrap();

    let n = 50_000u16;
    let clients = |ip: [u8; 4], base: u16| (0..n).map(move |i| SocketAddrV4::new(Ipv4Addr::from(ip), base + i));
    let to_pub = SocketAddrV4::new(node, 5000);
    let to_vip = SocketAddrV4::new(vip, 6379);
    // Not IPv4: the program returns at its first check; the floor of a test run.
    let mut arp = vec![0u8; 60];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let arp = vec![arp; usize::from(n)];
    let mut rows = Vec::new();
    for round in 0..2u16 {
        // New flows (distinct tuples), then a later packet (ACK) of each.
        let base = 10_000 + round * n;
        let pub_syn: Vec<_> = clients([192, 168, 50, 9], base).map(|c| frame(c, to_pub, true, false)).collect();
        let vip_syn: Vec<_> = clients([10, 0, 9, 30], base).map(|c| frame(c, to_vip, true, false)).collect();
        let pub_ack: Vec<_> = clients([192, 168, 50, 9], base).map(|c| frame(c, to_pub, false, true)).collect();
        let vip_ack: Vec<_> = clients([10, 0, 9, 30], base).map(|c| frame(c, to_vip, false, true)).collect();
        let other: Vec<_> =
            clients([10, 0, 9, 31], base).map(|c| frame(c, SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 7), 80), false, true)).collect();
        rows.push([
            per_packet(&mut nat, TcHook::Ingress, &pub_syn),
            per_packet(&mut nat, TcHook::Reply, &vip_syn),
            per_packet(&mut nat, TcHook::Ingress, &pub_ack),
            per_packet(&mut nat, TcHook::Reply, &vip_ack),
            per_packet(&mut nat, TcHook::Reply, &other),
            per_packet(&mut nat, TcHook::Reply, &arp),
        ]);
    }
    let r = rows.last().unwrap();
    println!("NAT classifiers, kernel ns per packet (BPF_PROG_TEST_RUN, {n} packets each, second round):");
    println!("  new flow, published port (exact, underlay):  {:6.1}", r[0]);
    println!("  new flow, VIP every-port entry (bridge):     {:6.1}", r[1]);
    println!("  tracked flow, published port (underlay):     {:6.1}", r[2]);
    println!("  tracked flow, VIP (bridge):                  {:6.1}", r[3]);
    println!("  no service, up the bridge:                   {:6.1}", r[4]);
    println!("  not IPv4 (returns at once: the run's floor): {:6.1}", r[5]);
}

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the paths bench needs root");
        std::process::exit(1);
    }
    connect_bench();
    packet_bench();
}
