//! The XFRM codec against a kernel with ESP (the kernel lab runs these): two namespaces over a
//! veth, each with the SAs and policies the planner wants for the other as its peer. A UDP
//! packet to the IPsec VXLAN port passes, carried by ESP (both SAs count it, `ip -s xfrm state`
//! shows it); re-planning is empty; without the outbound SA nothing is sent, and plaintext the
//! receiver's policy did not see in ESP is dropped. Need root; skip (SHOAL-SKIP) where the
//! kernel has no ESP.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use super::derive::{sa_key, spi};
use super::kernel::Xfrm;
use super::plan::{plan, Dir, PeerSas, PolicySeen, Sa, Want, VXLAN_PORT};
use crate::crypt::key::PrivateKey;
use crate::netns;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, the other end, and its XFRM tables.
        let _ = netns::delete(&self.0);
    }
}

fn skip(test: &str, reason: &str) {
    let line = format!("SHOAL-SKIP {test}: {reason}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("SHOAL_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn want(me: Ipv4Addr, peer: Ipv4Addr, key: &PrivateKey) -> Want {
    let sa = |src, dst| Sa { src, dst, spi: spi(key, src, dst), key: sa_key(key, src, dst) };
    Want { me, peers: vec![PeerSas { node: format!("node-{peer}"), inbound: sa(peer, me), outbound: sa(me, peer) }] }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn received(sock: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
#[ignore = "needs root and ESP: run by the kernel lab"]
fn esp_between_two_namespaces_passes_counts_and_fails_closed() {
    const TEST: &str = "crypt::ipsec::kernel_tests::esp_between_two_namespaces_passes_counts_and_fails_closed";
    assert!(nix::unistd::geteuid().is_root(), "needs root: run by tests/run.sh");
    let id = std::process::id() % 100_000;
    let (a, b) = (Ns(format!("shoal-ipseca{id}")), Ns(format!("shoal-ipsecb{id}")));
    netns::create(&a.0).unwrap();
    netns::create(&b.0).unwrap();
    let (va, vb) = (format!("sipa{id}"), format!("sipb{id}"));
    ip(&["link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns", &b.0]);
    ip(&["-n", &a.0, "addr", "add", "192.0.2.1/24", "dev", &va]);
    ip(&["-n", &b.0, "addr", "add", "192.0.2.2/24", "dev", &vb]);
    ip(&["-n", &a.0, "link", "set", &va, "up"]);
    ip(&["-n", &b.0, "link", "set", &vb, "up"]);

    let key = PrivateKey::from_bytes([42; 32]);
    let (wa, wb) = (want(A, B, &key), want(B, A, &key));
    let setup = |want: Want| {
        move || {
            let mut x = Xfrm::open().unwrap();
            let p = plan(Some(&want), &x.observe().unwrap(), now());
            assert_eq!(p.ops.len(), 4, "two SAs and two policies: {:?}", p.ops);
            x.apply(&p.ops)?;
            Ok::<_, super::kernel::XfrmError>(x.observe().unwrap())
        }
    };
    match netns::run_in(&a.0, setup(wa.clone())).unwrap() {
        Err(e) if e.is_unavailable() => return skip(TEST, &format!("no ESP (esp4/xfrm): {e}")),
        Err(e) => panic!("{e}"),
        Ok(seen) => assert_eq!((seen.sas.len(), seen.policies.len()), (2, 2), "{seen:?}"),
    }
    netns::run_in(&b.0, setup(wb.clone())).unwrap().unwrap();

    let rx = netns::run_in(&b.0, || UdpSocket::bind((B, VXLAN_PORT))).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tx = netns::run_in(&a.0, || UdpSocket::bind((A, 0))).unwrap().unwrap();
    tx.send_to(b"through esp", (B, VXLAN_PORT)).unwrap();
    assert_eq!(received(&rx).as_deref(), Some(&b"through esp"[..]), "the packet passes with both SAs in place");

    let counted = |ns: &str, src: Ipv4Addr| {
        netns::run_in(ns, move || Xfrm::open().unwrap().sas().unwrap().into_iter().find(|s| s.sa.src == src).unwrap().packets).unwrap()
    };
    assert_eq!(counted(&a.0, A), 1, "A's outbound SA carried it");
    assert_eq!(counted(&b.0, A), 1, "B's inbound SA decrypted it");
    let shown = ip(&["-n", &b.0, "-s", "xfrm", "state"]);
    assert!(shown.contains(&format!("spi 0x{:08x}", wa.peers[0].outbound.spi)), "{shown}");
    assert!(shown.contains("rfc4106(gcm(aes))") && shown.contains("128"), "AES-GCM with a 128-bit ICV: {shown}");
    assert!(shown.contains("1(packets)"), "the counters: {shown}");
    let replan = |want: Want| move || plan(Some(&want), &Xfrm::open().unwrap().observe().unwrap(), now()).ops;
    assert!(netns::run_in(&a.0, replan(wa.clone())).unwrap().is_empty(), "re-plan on A is empty");
    assert!(netns::run_in(&b.0, replan(wb.clone())).unwrap().is_empty(), "re-plan on B is empty");

    // No outbound SA: the policy (level required) keeps the packet in.
    let out = wa.peers[0].outbound.clone();
    netns::run_in(&a.0, move || {
        Xfrm::open().unwrap().apply(&[super::plan::XfrmOp::DelSa { src: out.src, dst: out.dst, spi: out.spi }]).unwrap()
    })
    .unwrap();
    let _ = tx.send_to(b"no sa", (B, VXLAN_PORT));
    rx.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    assert_eq!(received(&rx), None, "nothing leaves A without its SA");
    // No policy on A either: A sends in the clear, and B's policy drops it.
    netns::run_in(&a.0, || {
        Xfrm::open().unwrap().apply(&[super::plan::XfrmOp::DelPolicy(PolicySeen { dir: Dir::Out, src: A, dst: B })]).unwrap()
    })
    .unwrap();
    tx.send_to(b"plaintext", (B, VXLAN_PORT)).unwrap();
    assert_eq!(received(&rx), None, "B drops VXLAN-port plaintext from A");
    assert_eq!(counted(&b.0, A), 1, "and it never reached B's SA");

    // Teardown: no IPsec wanted removes everything of ours.
    for ns in [&a.0, &b.0] {
        let left = netns::run_in(ns, || {
            let mut x = Xfrm::open().unwrap();
            let p = plan(None, &x.observe().unwrap(), now());
            x.apply(&p.ops).unwrap();
            x.observe().unwrap()
        })
        .unwrap();
        assert_eq!(left, super::plan::Observed::default());
    }
}
