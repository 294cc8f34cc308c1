//! End-to-end: encrypted overlay networks through the product, on a 3-node cluster of real
//! `shoal daemon`s. `network create --opt encrypted`; the managers issue every node its
//! WireGuard identity over the dispatcher session; a global service on the encrypted network and
//! one on a plain network side by side. What a user (and an attacker on the underlay) sees:
//! tasks talk across nodes; a marker sent between tasks never crosses the underlay in plaintext;
//! plaintext VXLAN for the encrypted VNI injected on the underlay reaches no task; the exact
//! MTU; the networks stay apart; the pair keys rotate under `ping` without a lost packet; a
//! node without TUN starts none of the network's tasks and `service ps` says why. Run as root by
//! tests/run.sh: userspace WireGuard here; kernel WireGuard and IPsec in the kernel lab (this
//! host's kernel has neither).

mod support;

use shoal_dataplane::crypt::offload::vnet::{fold, sum};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::cluster::*;
use support::*;

/// The backend a suite runs, and how each node gets it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// `--opt encrypted`: userspace WireGuard (no kernel WireGuard here); snode2 also has no
    /// TUN, so it cannot encrypt and says so.
    Userspace,
    /// `--opt encrypted` on kernels with WireGuard: every node runs it.
    Kernel,
    /// `--opt encrypted=ipsec`: ESP on every node.
    Ipsec,
}

impl Variant {
    fn option(self) -> &'static str {
        match self {
            Variant::Userspace | Variant::Kernel => "encrypted",
            Variant::Ipsec => "encrypted=ipsec",
        }
    }

    /// What `network inspect` shows.
    fn backend(self) -> &'static str {
        match self {
            Variant::Userspace | Variant::Kernel => "wireguard",
            Variant::Ipsec => "ipsec",
        }
    }

    /// The encrypted network's MTU on a 1500-byte underlay.
    fn mtu(self) -> u32 {
        match self {
            // 1500 - WireGuard 60 - VXLAN 50.
            Variant::Userspace | Variant::Kernel => 1390,
            // 1500 - VXLAN 50 - ESP 34, rounded down to 4.
            Variant::Ipsec => 1416,
        }
    }
}

/// snode2's daemon again, in a mount namespace where /dev/net/tun is /dev/null (no TUN), and
/// no kernel WireGuard on this VM: it cannot encrypt.
fn restart_without_tun(c: &mut Cluster) {
    c.kill_daemon(2);
    let (node, _) = NODES[2];
    let log = std::fs::OpenOptions::new().create(true).append(true).open(c.dir.join(format!("{node}.log"))).unwrap();
    let file = c.dir.join(format!("{node}.json"));
    let script = format!(
        "mount --make-rprivate /dev && mount --bind /dev/null /dev/net/tun && exec {SHOAL} --netns {} --log-level info daemon --config-file {}",
        c.lab.node_ns(node),
        file.display()
    );
    // Propagation unchanged: task namespaces it makes (bind mounts under /run/netns) are seen
    // outside; /dev is made private first so the TUN mask stays inside.
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "unchanged", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn snode2 without TUN");
    c.daemons[2] = Some(child);
    wait_for("snode2's socket", Duration::from_secs(10), || {
        std::process::Command::new(SHOAL)
            .args(["node", "ls", "--host", &c.host(node)])
            .output()
            .is_ok_and(|o| o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not"))
    });
}

/// The task namespaces of this cluster on `node`, with their eth0 address.
fn tasks_on(c: &Cluster, node: &str) -> Vec<(String, String)> {
    std::fs::read_dir(c.dir.join(node).join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|id| format!("shoal-t-{id}"))
        .filter(|ns| std::path::Path::new("/run/netns").join(ns).exists())
        .filter_map(|ns| task_ip(&ns).map(|ip| (ns, ip)))
        .collect()
}

/// [`wait_for`], but a timeout first prints what the managers hold of both services' tasks
/// (their states and messages say why a task is not where the test looks for it).
fn dump_unless(c: &Cluster, what: &str, limit: Duration, ok: impl FnMut() -> bool) {
    let mut ok = ok;
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for svc in ["sec", "pln"] {
        eprintln!("service ps {svc}:\n{}", c.cli("smgr", &["service", "ps", "--no-trunc", svc]));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

fn task_of(c: &Cluster, node: &str, prefix: &str) -> Option<(String, String)> {
    tasks_on(c, node).into_iter().find(|(_, ip)| ip.starts_with(prefix))
}

/// Records every frame seen in namespace `ns` until `stop`.
fn capture(ns: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u8>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = on_thread_in(ns, move || {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: a plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh socket this closure owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        // SAFETY: setsockopt with a timeval of the right size on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        ready_tx.send(()).unwrap();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            // SAFETY: recv into a buffer we own, of the length we pass.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n > 0 {
                seen.extend_from_slice(&buf[..n as usize]);
            }
        }
        seen
    });
    ready_rx.recv().unwrap();
    h
}

/// Sends `payload` over TCP from `from_ns` to `to_ip:port` in `to_ns`; returns what arrived.
fn transfer(from_ns: &str, to_ns: &str, to_ip: &str, port: u16, payload: Vec<u8>) -> Vec<u8> {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = on_thread_in(to_ns, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    rx.recv().unwrap();
    let addr: std::net::SocketAddr = format!("{to_ip}:{port}").parse().unwrap();
    on_thread_in(from_ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
        s.write_all(&payload).expect("send");
    })
    .join()
    .unwrap();
    server.join().unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = !fold(sum(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4, and VXLAN's norm)
    ip.extend_from_slice(payload);
    ip
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = in_ns(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
    let v: Vec<u8> = String::from_utf8_lossy(&out.stdout).trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn octets(ip: &str) -> [u8; 4] {
    ip.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// From the underlay, a plaintext VXLAN frame "from snode1" (its underlay address) to smgr
/// carrying a UDP datagram for smgr's task (`to`) from snode1's (`from_ip`) on VNI `vni`;
/// returns whether the task received it.
fn inject_reaches_task(c: &Cluster, vni: u32, to: &(String, String), from_ip: &str, port: u16, vxlan_port: u16) -> bool {
    let node_mac = mac_of(&c.lab.node_ns("smgr"), "eth0");
    let mut inner = Vec::new();
    inner.extend_from_slice(&mac_of(&to.0, "eth0"));
    inner.extend_from_slice(&[0x02, 0x42, 0, 0, 0, 0x99]);
    inner.extend_from_slice(&[0x08, 0x00]);
    inner.extend_from_slice(&ipv4_udp(octets(from_ip), octets(&to.1), 40000, port, b"INJECTED-PLAINTEXT"));
    let mut vxlan = vec![0x08, 0, 0, 0];
    vxlan.extend_from_slice(&vni.to_be_bytes()[1..]);
    vxlan.push(0);
    vxlan.extend_from_slice(&inner);
    let mut frame = Vec::new();
    frame.extend_from_slice(&node_mac);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x20]);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ipv4_udp([192, 168, 33, 20], [192, 168, 33, 10], 40001, vxlan_port, &vxlan));

    let (tx, rx) = std::sync::mpsc::channel();
    let listener = on_thread_in(&to.0, move || {
        let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 256];
        matches!(s.recv(&mut buf), Ok(n) if &buf[..n] == b"INJECTED-PLAINTEXT")
    });
    rx.recv().unwrap();
    on_thread_in(&format!("shoal-{}-underlay", c.lab.name), move || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
        assert!(fd >= 0);
        // SAFETY: fd is a fresh socket this closure owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new("u-smgr").unwrap();
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no underlay port");
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&node_mac);
        for _ in 0..3 {
            // SAFETY: sendto with our buffer and a sockaddr_ll of the size we pass.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n as usize, frame.len(), "inject: {}", std::io::Error::last_os_error());
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .unwrap();
    listener.join().unwrap()
}

fn vni_of(c: &Cluster, network: &str) -> u32 {
    let v: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["network", "inspect", network])).unwrap();
    v[0]["vni"].as_u64().unwrap() as u32
}

/// The ESP SAs' SPIs in namespace `ns` (`ip xfrm state`).
fn esp_spis(ns: &str) -> Vec<String> {
    let out = in_ns(ns, &["ip", "xfrm", "state"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\nsrc ")
        .filter(|sa| sa.contains("proto esp"))
        .filter_map(|sa| sa.split_whitespace().skip_while(|w| *w != "spi").nth(1).map(str::to_string))
        .collect()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn encrypted_cluster_tasks_talk_nothing_in_plaintext_and_a_node_without_tun_refuses_with_the_reason() {
    require_root();
    if !std::path::Path::new("/dev/net/tun").exists() {
        skip("encrypted_cluster_tasks_talk_nothing_in_plaintext_and_a_node_without_tun_refuses_with_the_reason", "no TUN device");
        return;
    }
    suite(Variant::Userspace);
}

#[test]
#[ignore = "needs root and kernel WireGuard: run by the kernel lab"]
fn encrypted_cluster_kernel_wireguard_tasks_talk_nothing_in_plaintext_and_rotation_loses_nothing() {
    require_root();
    if let Err(e) = shoal_dataplane::crypt::kernel::probe() {
        skip(
            "encrypted_cluster_kernel_wireguard_tasks_talk_nothing_in_plaintext_and_rotation_loses_nothing",
            &format!("kernel WireGuard: {e}"),
        );
        return;
    }
    suite(Variant::Kernel);
}

#[test]
#[ignore = "needs root and ESP: run by the kernel lab"]
fn encrypted_cluster_ipsec_tasks_talk_nothing_in_plaintext_and_rotation_loses_nothing() {
    const TEST: &str = "encrypted_cluster_ipsec_tasks_talk_nothing_in_plaintext_and_rotation_loses_nothing";
    require_root();
    let ns = format!("shoal-espprobe{}", std::process::id());
    let probed = shoal_dataplane::netns::create(&ns).map_err(|e| e.to_string()).and_then(|()| {
        let found = shoal_dataplane::netns::run_in(&ns, shoal_dataplane::crypt::ipsec::kernel::probe);
        let _ = shoal_dataplane::netns::delete(&ns);
        found.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    });
    if let Err(e) = probed {
        skip(TEST, &format!("no ESP (esp4/xfrm): {e}"));
        return;
    }
    suite(Variant::Ipsec);
}

fn suite(v: Variant) {
    // The kernel lab emulates its CPUs (six daemons on two of them): everything takes longer.
    let patience = if v == Variant::Userspace { 1 } else { 4 };
    let mut c = Cluster::up();
    if v == Variant::Userspace {
        restart_without_tun(&mut c);
    }
    join_all(&c);

    // A backend shoal cannot run is refused by name, and nothing is made.
    let out = shoal(&["network", "create", "--host", &c.host("smgr"), "--opt", "encrypted=aes", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--opt encrypted=aes") && err.contains("is not an encryption backend"), "{err}");
    assert!(!c.cli("smgr", &["network", "ls"]).contains("nope"));

    // Each node reported what its kernel offers when it joined: `--opt encrypted` alone picks
    // from it (kernel WireGuard everywhere in the kernel lab; userspace WireGuard here).
    let kernel_wg = shoal_dataplane::crypt::kernel::probe().is_ok();
    for node in ["smgr", "snode1"] {
        let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["node", "inspect", node])).unwrap();
        let support = &inspect[0]["encryption"];
        assert_eq!(support["kernel_wireguard"], kernel_wg, "{node} reports kernel WireGuard as probed: {support}");
        assert_eq!(support["tun"], true, "{node} reports its TUN device: {support}");
    }
    c.cli("smgr", &["network", "create", "--opt", v.option(), "--subnet", "10.0.11.0/24", "secure"]);
    c.cli("smgr", &["network", "create", "--subnet", "10.0.9.0/24", "plain"]);
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["network", "inspect", "secure"])).unwrap();
    assert_eq!(inspect[0]["encryption"], v.backend(), "network inspect shows the backend: {inspect}");
    let state = c.cli("smgr", &["network", "inspect", "secure"]);
    assert!(!state.contains("private_key"), "{state}");
    for (name, net) in [("sec", "secure"), ("pln", "plain")] {
        c.cli("smgr", &["service", "create", "--detach", "--name", name, "--mode", "global", "--network", net, "host", "sleep", "100000"]);
    }
    let on_both = || ["smgr", "snode1"].iter().all(|n| task_of(&c, n, "10.0.11.").is_some() && task_of(&c, n, "10.0.9.").is_some());
    dump_unless(&c, "tasks on both networks on smgr and snode1", Duration::from_secs(40) * patience, on_both);
    if v == Variant::Userspace {
        // snode2 cannot encrypt: its task of `sec` is rejected, with the reason, never started;
        // its plain task runs.
        wait_for("snode2's refusal in service ps", Duration::from_secs(30), || {
            let ps = c.cli("smgr", &["service", "ps", "sec"]);
            ps.lines().any(|l| l.contains("snode2") && l.contains("Rejected") && l.contains("cannot run on this node") && l.contains("TUN"))
        });
        dump_unless(&c, "snode2's plain task", Duration::from_secs(30), || task_of(&c, "snode2", "10.0.9.").is_some());
        assert!(task_of(&c, "snode2", "10.0.11.").is_none(), "snode2 started a task of the encrypted network");
    } else {
        // Every node runs this backend: snode2's tasks run on both networks, and talk.
        let mut pair = None;
        wait_for("snode2's tasks on both networks", Duration::from_secs(40) * patience, || {
            pair = task_of(&c, "smgr", "10.0.11.").zip(task_of(&c, "snode2", "10.0.11."));
            pair.is_some() && task_of(&c, "snode2", "10.0.9.").is_some()
        });
        let (sm, s2) = pair.expect("waited for");
        wait_for("ping smgr -> snode2 over the encrypted network", Duration::from_secs(20) * patience, || ping(&sm.0, &s2.1));
        let want = if v == Variant::Kernel { "kernel WireGuard" } else { "IPsec (XFRM ESP, AES-GCM)" };
        let log = std::fs::read_to_string(c.dir.join("snode2.log")).unwrap();
        assert!(log.contains(&format!("encrypted networks run over {want}")), "snode2 does not run {want}:\n{log}");
    }

    let (sm_sec, sn_sec) = (task_of(&c, "smgr", "10.0.11.").unwrap(), task_of(&c, "snode1", "10.0.11.").unwrap());
    let (sm_pln, sn_pln) = (task_of(&c, "smgr", "10.0.9.").unwrap(), task_of(&c, "snode1", "10.0.9.").unwrap());
    wait_for("ping over the encrypted network", Duration::from_secs(20) * patience, || ping(&sm_sec.0, &sn_sec.1));
    assert!(ping(&sn_sec.0, &sm_sec.1), "snode1 -> smgr on the encrypted network\n{}", c.logs());
    assert!(tcp_round_trip(&sm_sec.0, &sn_sec.0, &sn_sec.1, 7001), "TCP over the encrypted network");
    // The plain network's first packet: its peers' entries may still be coming (only the
    // encrypted network was waited for above).
    wait_for("ping over the plain network beside it", Duration::from_secs(20) * patience, || ping(&sm_pln.0, &sn_pln.1));
    // Apart: neither reaches the other's tasks.
    assert!(!ping(&sm_pln.0, &sn_sec.1), "plain reached secure");
    assert!(!ping(&sm_sec.0, &sn_pln.1), "secure reached plain");

    // On the wire: the encrypted network's marker never shows; the plain one's does (so the
    // capture sees what crosses the bridge).
    let underlay = format!("shoal-{}-underlay", c.lab.name);
    for (from, to, marker, port, visible) in
        [(&sm_sec, &sn_sec, &b"SHOAL-SECRET-MARKER-93f1"[..], 7201, false), (&sm_pln, &sn_pln, &b"SHOAL-PLAIN-MARKER-5c2e"[..], 7202, true)]
    {
        let stop = Arc::new(AtomicBool::new(false));
        let cap = capture(&underlay, stop.clone());
        let payload: Vec<u8> = marker.iter().copied().cycle().take(marker.len() * 2000).collect();
        let got = transfer(&from.0, &to.0, &to.1, port, payload.clone());
        assert_eq!(got.len(), payload.len(), "transfer incomplete");
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        let seen = cap.join().unwrap();
        assert!(seen.len() > payload.len(), "the capture saw only {} bytes", seen.len());
        assert_eq!(contains(&seen, marker), visible, "marker {}", if visible { "missing" } else { "seen in plaintext on the underlay" });
    }

    // Plaintext VXLAN for the encrypted VNI, injected on the underlay, reaches no task; the
    // same injection on the plain VNI does (the injection is sound).
    assert!(inject_reaches_task(&c, vni_of(&c, "plain"), &sm_pln, &sn_pln.1, 9101, 4789), "the control injection did not arrive");
    assert!(!inject_reaches_task(&c, vni_of(&c, "secure"), &sm_sec, &sn_sec.1, 9102, 4789), "plaintext VXLAN reached an encrypted task");
    if v == Variant::Ipsec {
        // IPsec networks' VXLAN has its own port (4799): plaintext is refused there too.
        assert!(!inject_reaches_task(&c, vni_of(&c, "secure"), &sm_sec, &sn_sec.1, 9103, 4799), "plaintext VXLAN on 4799 reached a task");
    }

    // Key rotation under `ping -i 0.05`: every pair's key changes, no packet is lost.
    let rotations = |c: &Cluster| c.logs().matches("rotated the node pairs' WireGuard preshared keys").count();
    let before = rotations(&c);
    assert!(before >= 1, "the first pair keys were never issued\n{}", c.logs());
    // IPsec's rotation takes its three steps 10 s apart (the agents run a pass when each falls
    // due): the ping covers all of it.
    let pings = if v == Variant::Ipsec { 1000 } else { 120 };
    let spis_before: Vec<Vec<String>> = NODES.iter().map(|(n, _)| esp_spis(&c.lab.node_ns(n))).collect();
    let mut pinger = Command::new("ip")
        .args(["netns", "exec", &sm_sec.0, "ping", "-i", "0.05", "-c", &pings.to_string(), &sn_sec.1])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_secs(1));
    c.cli("smgr", &["network", "update", "--rotate-keys", "secure"]);
    wait_for("the rotation", Duration::from_secs(5) * patience, || rotations(&c) > before);
    if v == Variant::Ipsec {
        // Done when every node holds the new generation alone: one SA each way per peer, none
        // of the old SPIs.
        let start = std::time::Instant::now();
        wait_for("the IPsec rotation's three steps on every node", Duration::from_secs(48), || {
            NODES.iter().zip(&spis_before).all(|((n, _), old)| {
                let now = esp_spis(&c.lab.node_ns(n));
                now.len() == 4 && now.iter().all(|s| !old.contains(s))
            })
        });
        eprintln!("IPsec rotation through the daemons took {:.1} s after the new keys were issued", start.elapsed().as_secs_f64());
        assert!(pinger.try_wait().unwrap().is_none(), "ping ended before the rotation did");
    }
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{pings} packets transmitted, {pings} received")), "packets lost during the key rotation:\n{text}");
    std::thread::sleep(Duration::from_secs(1));
    let smgr_log = std::fs::read_to_string(c.dir.join("smgr.log")).unwrap();
    if v == Variant::Ipsec {
        // The steps, in order, on smgr: new inbound SAs, new outbound SAs, the old ones deleted.
        let at = |what: &str| smgr_log.rfind(what).unwrap_or_else(|| panic!("smgr never logged '{what}':\n{smgr_log}"));
        assert!(
            at("add inbound ESP SA") < at("add outbound ESP SA") && at("add outbound ESP SA") < at("delete ESP SA"),
            "the rotation's steps out of order on smgr:\n{smgr_log}"
        );
    } else {
        // The tunnels hold the pair keys (read back equal: not set again on every pass). smgr
        // has 2 peers and saw 2 key generations, plus peers learnt before their first key.
        let sets = smgr_log.matches("preshared-key (secret)").count();
        assert!((2..=8).contains(&sets), "{sets} preshared-key changes on smgr: not held by the tunnel, or never set\n{smgr_log}");
    }
    // After the rotation, new connections still pass (both sides took the new key).
    assert!(tcp_round_trip(&sm_sec.0, &sn_sec.0, &sn_sec.1, 7002), "TCP after the key rotation");
    let out = shoal(&["network", "update", "--host", &c.host("smgr"), "--rotate-keys", "plain"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("network plain is not encrypted"), "{out:?}");

    // Exact MTU: a DF packet of the MTU passes, one byte more does not.
    let mtu = in_ns(&sm_sec.0, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), v.mtu().to_string());
    let fits = (v.mtu() - 28).to_string();
    let over = (v.mtu() - 27).to_string();
    let ok = in_ns(&sm_sec.0, &["ping", "-M", "do", "-c", "1", "-W", "2", "-s", &fits, &sn_sec.1]);
    assert!(ok.status.success(), "a DF packet of exactly the encrypted MTU did not pass: {}", String::from_utf8_lossy(&ok.stdout));
    let big = in_ns(&sm_sec.0, &["ping", "-M", "do", "-c", "1", "-W", "2", "-s", &over, &sn_sec.1]);
    assert!(!big.status.success(), "a DF packet one byte over the encrypted MTU passed");
}
