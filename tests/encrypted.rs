//! End-to-end tests of encrypted overlay networks (`"encrypted": "wireguard"` and `"ipsec"`) on a
//! 3-node lab: an encrypted and a plain network side by side, one task per node on each. What a
//! user (and an attacker on the underlay) would see: tasks talk across nodes; a capture on the
//! underlay bridge finds the plain network's marker but never the encrypted one's; plaintext
//! VXLAN for the encrypted VNI, injected from the underlay, reaches no task; the MTU is exact;
//! pair keys rotate under `ping` without a lost packet; a node without TUN attaches none of the
//! network and says why. Run as root by tests/run.sh; the kernel WireGuard and IPsec variants
//! run in the kernel lab (this host's kernel has neither).

mod support;

use shoal_dataplane::crypt::offload::vnet::{fold, sum};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const NODES: [&str; 3] = ["smgr", "snode1", "snode2"];
/// (network, vni, third octet)
const SECURE: (&str, u32, u8) = ("secure", 4099, 11);
const PLAIN: (&str, u32, u8) = ("plain", 4097, 9);
/// The encryption a suite runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Enc {
    /// WireGuard, with `--wireguard` set to this (kernel, userspace).
    Wireguard(&'static str),
    /// IPsec (ESP in XFRM): per-pair SAs derived from the pair keys, which it always needs.
    Ipsec,
}

impl Enc {
    /// The network's `encrypted` value.
    fn name(self) -> &'static str {
        match self {
            Enc::Wireguard(_) => "wireguard",
            Enc::Ipsec => "ipsec",
        }
    }

    /// `dataplane apply --wireguard`.
    fn wg(self) -> &'static str {
        match self {
            Enc::Wireguard(wg) => wg,
            Enc::Ipsec => "auto",
        }
    }

    /// The encrypted network's MTU on a 1500-byte underlay.
    fn mtu(self) -> u32 {
        match self {
            // 1500 - WireGuard 60 - VXLAN 50.
            Enc::Wireguard(_) => 1390,
            // 1500 - VXLAN 50 - ESP 34 (header 8, IV 8, trailer 2, ICV 16), rounded down to 4.
            Enc::Ipsec => 1416,
        }
    }
}

/// The UDP port of IPsec networks' VXLAN (plain and WireGuard networks use 4789).
const IPSEC_VXLAN_PORT: u16 = 4799;

struct Keys(Vec<(String, String)>);

impl Keys {
    fn new() -> Keys {
        Keys(
            NODES
                .iter()
                .map(|_| {
                    let out = shoal(&["dataplane", "wg-key"]);
                    assert!(out.status.success(), "wg-key: {}", String::from_utf8_lossy(&out.stderr));
                    let v: Value = serde_json::from_slice(&out.stdout).expect("wg-key prints JSON");
                    (v["private_key"].as_str().unwrap().to_string(), v["public_key"].as_str().unwrap().to_string())
                })
                .collect(),
        )
    }
}

/// One preshared key per node pair, `[a][b] == [b][a]` (the managers' scheme in miniature).
fn pair_keys() -> Vec<Vec<String>> {
    let k = Keys::new();
    let pick = |i: usize, j: usize| k.0[i + j - 1].0.clone();
    (0..NODES.len()).map(|i| (0..NODES.len()).map(|j| if i == j { String::new() } else { pick(i.min(j), i.max(j)) }).collect()).collect()
}

fn state(lab: &Lab, keys: &Keys, node: &str, enc: Enc, psks: Option<&[Vec<String>]>) -> Value {
    let mut endpoints = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        for (net, _, third) in [SECURE, PLAIN] {
            endpoints.push(json!({
                "id": format!("{net}.{}", i + 1), "network": net, "node": n,
                "ip": format!("10.0.{third}.{}", i + 2), "netns": lab.task_ns(&format!("{n}-{net}")),
            }));
        }
    }
    let me = NODES.iter().position(|n| *n == node).unwrap();
    let nodes: Vec<Value> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut wg = json!({"public_key": keys.0[i].1, "address": format!("10.254.0.{}", i + 1)});
            if let Some(p) = psks.filter(|_| i != me) {
                wg["preshared_key"] = json!(p[me][i]);
            }
            json!({"name": n, "address": format!("192.168.33.{}", 10 * (i + 1)), "wireguard": wg})
        })
        .collect();
    json!({
        "node": node,
        "nodes": nodes,
        "wireguard_private_key": keys.0[me].0,
        "networks": [
            {"name": SECURE.0, "vni": SECURE.1, "subnet": "10.0.11.0/24", "encrypted": enc.name()},
            {"name": PLAIN.0, "vni": PLAIN.1, "subnet": "10.0.9.0/24"},
        ],
        "endpoints": endpoints,
    })
}

/// `dataplane apply --wireguard WG`, optionally wrapped (e.g. in a mount namespace).
fn apply(lab: &Lab, node: &str, state: &Value, wg: &str, wrap: &[&str]) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("{}-{node}-enc.json", lab.name));
    std::fs::write(&path, serde_json::to_vec_pretty(state).unwrap()).unwrap();
    let ns = lab.node_ns(node);
    let args = ["--netns", &ns, "dataplane", "apply", "--wireguard", wg, "--state", path.to_str().unwrap()];
    let out = if wrap.is_empty() {
        shoal(&args)
    } else {
        let script = format!("{} && exec {SHOAL} \"$@\"", wrap[1..].join(" "));
        // Propagation unchanged: task namespaces it makes (bind mounts under the shared /run/netns)
        // must be seen outside; the wrapper keeps its own mounts to itself (e.g. making /dev
        // private first).
        Command::new(wrap[0]).args(["--mount", "--propagation", "unchanged", "sh", "-c", &script, "sh"]).args(args).output().unwrap()
    };
    let _ = std::fs::remove_file(&path);
    out
}

fn apply_all(lab: &Lab, keys: &Keys, enc: Enc, psks: Option<&[Vec<String>]>) {
    for n in NODES {
        let out = apply(lab, n, &state(lab, keys, n, enc, psks), enc.wg(), &[]);
        assert!(
            out.status.success(),
            "apply on {n} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn task(lab: &Lab, node: &str, net: (&str, u32, u8)) -> String {
    lab.task_ns(&format!("{node}-{}", net.0))
}

fn ip_of(node_index: usize, net: (&str, u32, u8)) -> String {
    format!("10.0.{}.{}", net.2, node_index + 2)
}

/// Records every frame seen in namespace `ns` (all its interfaces) until `stop`.
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
    let ulen = (8 + payload.len()) as u16;
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&ulen.to_be_bytes());
    ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4, and VXLAN's norm)
    ip.extend_from_slice(payload);
    ip
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// From the underlay namespace, a plaintext VXLAN frame "from snode1" to smgr (UDP port
/// `vxlan_port`) carrying a UDP datagram for the smgr task of `net`; returns whether that task
/// received it.
fn inject_reaches_task(lab: &Lab, net: (&str, u32, u8), port: u16, vxlan_port: u16) -> bool {
    let node_mac = in_ns(&lab.node_ns("smgr"), &["cat", "/sys/class/net/eth0/address"]);
    let node_mac = mac(&String::from_utf8_lossy(&node_mac.stdout));
    let dst_task = [10, 0, net.2, 2];
    let src_task = [10, 0, net.2, 3];
    let inner_dst_mac = [0x02, 0x42, 10, 0, net.2, 2];
    let inner_src_mac = [0x02, 0x42, 10, 0, net.2, 3];
    let mut inner = Vec::new();
    inner.extend_from_slice(&inner_dst_mac);
    inner.extend_from_slice(&inner_src_mac);
    inner.extend_from_slice(&[0x08, 0x00]);
    inner.extend_from_slice(&ipv4_udp(src_task, dst_task, 40000, port, b"INJECTED-PLAINTEXT"));
    let mut vxlan = vec![0x08, 0, 0, 0];
    vxlan.extend_from_slice(&net.1.to_be_bytes()[1..]);
    vxlan.push(0);
    vxlan.extend_from_slice(&inner);
    let mut frame = Vec::new();
    frame.extend_from_slice(&node_mac);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x20]);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ipv4_udp([192, 168, 33, 20], [192, 168, 33, 10], 40001, vxlan_port, &vxlan));

    let (tx, rx) = std::sync::mpsc::channel();
    let listener = on_thread_in(&task(lab, "smgr", net), move || {
        let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 256];
        matches!(s.recv(&mut buf), Ok(n) if &buf[..n] == b"INJECTED-PLAINTEXT")
    });
    rx.recv().unwrap();
    let port_name = "u-smgr".to_string();
    on_thread_in(&format!("shoal-{}-underlay", lab.name), move || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
        assert!(fd >= 0);
        // SAFETY: fd is a fresh socket this closure owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(port_name).unwrap();
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

/// The SPIs of the ESP SAs in namespace `ns` (`ip xfrm state`), and whether each is AES-GCM.
fn esp_sas(ns: &str) -> Vec<(String, bool)> {
    let out = Command::new("ip").args(["-n", ns, "xfrm", "state"]).output().expect("ip xfrm state");
    let text = String::from_utf8_lossy(&out.stdout);
    // One SA: a "src A dst B" line, then indented lines (proto esp spi 0x..., aead ...).
    text.split("\nsrc ")
        .filter(|sa| sa.contains("proto esp"))
        .map(|sa| {
            let spi = sa.split_whitespace().skip_while(|w| *w != "spi").nth(1).unwrap_or_default().to_string();
            (spi, sa.contains("rfc4106(gcm(aes))"))
        })
        .collect()
}

/// IPsec pair keys rotated under `ping -i 0.05`: every node takes the new keys (the new inbound
/// SAs at once), then runs a pass each second, as the agent runs one when a step falls due, until
/// only the new generation is left. Returns what smgr's passes did, in order.
fn rotate_ipsec_under_ping(test: &str, lab: &Lab, keys: &Keys) -> Vec<String> {
    const PINGS: u32 = 1000; // 50 s: longer than the rotation (two steps 10 s apart, then a pass)
    let before: Vec<(String, bool)> = esp_sas(&lab.node_ns("smgr"));
    let mut pinger = Command::new("ip")
        .args(["netns", "exec", &task(lab, "smgr", SECURE), "ping", "-i", "0.05", "-c", &PINGS.to_string(), &ip_of(1, SECURE)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let psks = pair_keys();
    let mut smgr = Vec::new();
    let mut round = 0;
    loop {
        let mut changed = 0;
        for n in NODES {
            let out = apply(lab, n, &state(lab, keys, n, Enc::Ipsec, Some(&psks)), "auto", &[]);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{test}: rotation pass {round} on {n}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            if round == 0 {
                assert!(stdout.contains("xfrm: add inbound ESP SA"), "{test}: {n} did not take the new pair keys:\n{stdout}");
            }
            changed += changes(&stdout);
            if n == "smgr" {
                smgr.extend(
                    stdout.lines().filter(|l| l.starts_with("xfrm: ")).map(|l| format!("{:>4.1} s {l}", start.elapsed().as_secs_f64())),
                );
            }
        }
        let left: Vec<usize> = NODES.iter().map(|n| esp_sas(&lab.node_ns(n)).len()).collect();
        if changed == 0 && left.iter().all(|l| *l == 4) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "{test}: the rotation did not finish in 45 s (SAs per node {left:?}); smgr did:\n{}",
            smgr.join("\n")
        );
        round += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    let took = start.elapsed();
    assert!(pinger.try_wait().unwrap().is_none(), "{test}: ping ended before the rotation did ({took:?})");
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{PINGS} packets transmitted, {PINGS} received")),
        "{test}: packets lost while the IPsec pair keys rotated ({took:?}); smgr did:\n{}\n{text}",
        smgr.join("\n")
    );
    let after = esp_sas(&lab.node_ns("smgr"));
    assert!(after.iter().all(|(spi, _)| !before.iter().any(|(b, _)| b == spi)), "{test}: an old SA is left: {before:?} -> {after:?}");
    eprintln!("{test}: IPsec rotation under ping -i 0.05 took {:.1} s, {PINGS} of {PINGS} replies", took.as_secs_f64());
    smgr
}

fn suite(test: &str, enc: Enc) {
    let lab = Lab::up(3);
    let keys = Keys::new();
    // IPsec derives its SAs from the pair keys: it needs them from the start.
    let psks = (enc == Enc::Ipsec).then(pair_keys);
    let psks = psks.as_deref();
    apply_all(&lab, &keys, enc, psks);
    // Re-applying changes nothing.
    for n in NODES {
        let out = apply(&lab, n, &state(&lab, &keys, n, enc, psks), enc.wg(), &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert_eq!(changes(&stdout), 0, "{test}: re-apply on {n} changed something:\n{stdout}");
    }
    if enc == Enc::Ipsec {
        // Two ESP SAs (one each way) per peer, AES-GCM.
        for n in NODES {
            let sas = esp_sas(&lab.node_ns(n));
            assert!(sas.len() == 4 && sas.iter().all(|(_, gcm)| *gcm), "{test}: {n}'s ESP SAs: {sas:?}");
        }
    }
    // Every pair talks, on both networks.
    for net in [SECURE, PLAIN] {
        for (i, from) in NODES.iter().enumerate() {
            for (j, to) in NODES.iter().enumerate().filter(|(j, _)| *j != i) {
                let dst = ip_of(j, net);
                assert!(ping(&task(&lab, from, net), &dst), "{test}: {}: ping {from} -> {to} ({dst}) failed", net.0);
                assert!(
                    tcp_round_trip(&task(&lab, from, net), &task(&lab, to, net), &dst, 7000 + j as u16),
                    "{test}: {}: TCP {from} -> {to}",
                    net.0
                );
            }
        }
    }
    // The networks stay apart: the plain task cannot reach the encrypted one.
    assert!(!ping(&task(&lab, "smgr", PLAIN), &ip_of(1, SECURE)), "{test}: plain reached secure");
    assert!(!ping(&task(&lab, "smgr", SECURE), &ip_of(1, PLAIN)), "{test}: secure reached plain");

    // On the wire: the encrypted network's marker never shows; the plain one's does (so the
    // capture sees what crosses the bridge).
    let underlay = format!("shoal-{}-underlay", lab.name);
    for (net, marker, port, visible) in
        [(SECURE, &b"SHOAL-SECRET-MARKER-93f1"[..], 7201, false), (PLAIN, &b"SHOAL-PLAIN-MARKER-5c2e"[..], 7202, true)]
    {
        let stop = Arc::new(AtomicBool::new(false));
        let cap = capture(&underlay, stop.clone());
        let payload: Vec<u8> = marker.iter().copied().cycle().take(marker.len() * 2000).collect();
        let got = transfer(&task(&lab, "smgr", net), &task(&lab, "snode1", net), &ip_of(1, net), port, payload.clone());
        assert!(got == payload, "{test}: {}: transfer incomplete or changed: {} of {} bytes", net.0, got.len(), payload.len());
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        let seen = cap.join().unwrap();
        assert!(seen.len() > payload.len(), "{test}: {}: the capture saw only {} bytes", net.0, seen.len());
        assert_eq!(
            contains(&seen, marker),
            visible,
            "{test}: {}: marker {} on the underlay",
            net.0,
            if visible { "missing" } else { "seen in plaintext" }
        );
    }

    // TCP straight through the WireGuard tunnel, node to node: with userspace WireGuard its
    // segments are read from the TUN device as TSO super-packets, cut, sealed, and written on
    // the other side joined again; 4 MiB of varied bytes arrive unchanged.
    if let Enc::Wireguard(_) = enc {
        let payload: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let got = transfer(&lab.node_ns("smgr"), &lab.node_ns("snode1"), "10.254.0.2", 7203, payload.clone());
        assert!(got == payload, "{test}: node to node through the tunnel: {} of {} bytes, or changed", got.len(), payload.len());
    }

    // Plaintext VXLAN for the encrypted VNI, injected on the underlay, reaches no task; the same
    // injection on the plain VNI does (the injection is sound). IPsec networks' VXLAN has its own
    // port: plaintext is refused there too.
    assert!(inject_reaches_task(&lab, PLAIN, 9101, 4789), "{test}: the control injection on the plain network did not arrive");
    assert!(!inject_reaches_task(&lab, SECURE, 9102, 4789), "{test}: plaintext VXLAN for the encrypted VNI reached its task");
    if enc == Enc::Ipsec {
        assert!(
            !inject_reaches_task(&lab, SECURE, 9103, IPSEC_VXLAN_PORT),
            "{test}: plaintext VXLAN on the IPsec port ({IPSEC_VXLAN_PORT}) reached the encrypted network's task"
        );
    }

    if enc == Enc::Ipsec {
        let steps = rotate_ipsec_under_ping(test, &lab, &keys);
        // The three steps, in order: new inbound SAs, then new outbound SAs, then the old ones go.
        let first = |what: &str| {
            steps.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("{test}: no '{what}':\n{}", steps.join("\n")))
        };
        let (inb, outb, del) = (first("add inbound"), first("add outbound"), first("delete ESP SA"));
        assert!(inb < outb && outb < del, "{test}: rotation steps out of order:\n{}", steps.join("\n"));
    } else {
        // Pair keys rotated three times under `ping -i 0.02`, node by node as agents take them:
        // the running sessions carry on (the new key is for the next handshake), nothing is lost,
        // and a re-apply with the new keys changes nothing (the tunnel holds them).
        let pinger = Command::new("ip")
            .args(["netns", "exec", &task(&lab, "smgr", SECURE), "ping", "-i", "0.02", "-c", "150", &ip_of(1, SECURE)])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ping");
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(500));
            let psks = pair_keys();
            for n in NODES {
                let out = apply(&lab, n, &state(&lab, &keys, n, enc, Some(&psks)), enc.wg(), &[]);
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success() && stdout.contains("preshared-key (secret)"), "{test}: key rotation on {n}:\n{stdout}");
            }
            for n in NODES {
                let out = apply(&lab, n, &state(&lab, &keys, n, enc, Some(&psks)), enc.wg(), &[]);
                assert_eq!(changes(&String::from_utf8_lossy(&out.stdout)), 0, "{test}: the tunnel on {n} does not hold the new pair keys");
            }
        }
        let out = pinger.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("150 packets transmitted, 150 received"), "{test}: packets lost while pair keys rotated:\n{text}");
    }
    assert!(
        tcp_round_trip(&task(&lab, "smgr", SECURE), &task(&lab, "snode1", SECURE), &ip_of(1, SECURE), 7301),
        "{test}: TCP after the key rotations"
    );

    // Exact MTU: a DF packet of the MTU passes, one byte more does not.
    let src = task(&lab, "smgr", SECURE);
    let dst = ip_of(2, SECURE);
    let fits = (enc.mtu() - 28).to_string();
    let over = (enc.mtu() - 27).to_string();
    let ok = in_ns(&src, &["ping", "-M", "do", "-c", "1", "-W", "2", "-s", &fits, &dst]);
    assert!(ok.status.success(), "{test}: a DF packet of exactly the encrypted MTU did not pass: {}", String::from_utf8_lossy(&ok.stdout));
    let big = in_ns(&src, &["ping", "-M", "do", "-c", "1", "-W", "2", "-s", &over, &dst]);
    assert!(!big.status.success(), "{test}: a DF packet one byte over the encrypted MTU passed");
    let mtu = in_ns(&src, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), enc.mtu().to_string());
}

/// Whether this kernel runs ESP with AES-GCM, tried in a throwaway namespace.
fn esp_probe() -> Result<(), String> {
    let ns = format!("shoal-espprobe{}", std::process::id());
    shoal_dataplane::netns::create(&ns).map_err(|e| e.to_string())?;
    let found = shoal_dataplane::netns::run_in(&ns, shoal_dataplane::crypt::ipsec::kernel::probe);
    let _ = shoal_dataplane::netns::delete(&ns);
    found.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn encrypted_userspace_tasks_talk_nothing_in_plaintext_and_exact_mtu() {
    require_root();
    if !std::path::Path::new("/dev/net/tun").exists() {
        skip("encrypted_userspace_tasks_talk_nothing_in_plaintext_and_exact_mtu", "no TUN device (/dev/net/tun)");
        return;
    }
    suite("userspace", Enc::Wireguard("userspace"));
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn encrypted_kernel_tasks_talk_nothing_in_plaintext_and_exact_mtu() {
    require_root();
    if let Err(e) = shoal_dataplane::crypt::kernel::probe() {
        skip("encrypted_kernel_tasks_talk_nothing_in_plaintext_and_exact_mtu", &format!("kernel WireGuard: {e}"));
        return;
    }
    suite("kernel", Enc::Wireguard("kernel"));
}

#[test]
#[ignore = "needs root: run by tests/run.sh and the kernel lab"]
fn encrypted_ipsec_tasks_talk_nothing_in_plaintext_exact_mtu_and_rotation_loses_nothing() {
    const TEST: &str = "encrypted_ipsec_tasks_talk_nothing_in_plaintext_exact_mtu_and_rotation_loses_nothing";
    require_root();
    if let Err(e) = esp_probe() {
        skip(TEST, &format!("no ESP (esp4/xfrm): {e}"));
        return;
    }
    suite("ipsec", Enc::Ipsec);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn encrypted_a_node_without_tun_attaches_none_of_the_network_and_says_why() {
    let lab = Lab::up(3);
    let keys = Keys::new();
    for n in ["snode1", "snode2"] {
        let out = apply(&lab, n, &state(&lab, &keys, n, Enc::Wireguard("userspace"), None), "userspace", &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // smgr sees /dev/null where /dev/net/tun should be (its own mount namespace).
    let out = apply(
        &lab,
        "smgr",
        &state(&lab, &keys, "smgr", Enc::Wireguard("userspace"), None),
        "userspace",
        &["unshare", "mount", "--make-rprivate", "/dev", "&&", "mount", "--bind", "/dev/null", "/dev/net/tun"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "apply without TUN succeeded:\n{stderr}");
    assert!(
        stderr.contains("encrypted network 'secure' not attached on node 'smgr'") && stderr.contains("TUN"),
        "the refusal does not say why:\n{stderr}"
    );
    assert!(
        !std::path::Path::new(&format!("/run/netns/{}", task(&lab, "smgr", SECURE))).exists(),
        "the encrypted network's task namespace was made"
    );
    let links = in_ns(&lab.node_ns("smgr"), &["ip", "-o", "link", "show"]);
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("shv-4099") && !links.contains("shb-4099"), "the encrypted network's devices exist:\n{links}");
    // The plain network works on that node all the same.
    assert!(ping(&task(&lab, "smgr", PLAIN), &ip_of(1, PLAIN)), "the plain network is down too");
}
