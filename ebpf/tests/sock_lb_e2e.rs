//! End to end: a process in a netns and a cgroup v2 child connects to a VIP
//! and reaches backends in other namespaces, through the cgroup hooks.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use common::netns::{veth, BpfMount, Cgroup, Netns, Servers};
use shoal_ebpf::{cgroup2_mount, Backend, LoadOptions, ServiceKey, ServiceOptions, SockLb};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A client process: reads "tcp N" / "udp N" (new socket each time) /
/// "udpkeep N" (one socket kept), optionally followed by "ADDR PORT" (default
/// the VIP, port 80 for TCP and 53 for UDP), and prints
/// "<answer>@<peer ip>:<port>" per request.
const CLIENT: &str = r#"
import socket, sys
keep = None
for line in sys.stdin:
    words = line.split()
    cmd, n = words[0], words[1]
    vip = words[2] if len(words) > 2 else sys.argv[1]
    port = int(words[3]) if len(words) > 3 else (80 if cmd == "tcp" else 53)
    out = []
    try:
        for _ in range(int(n)):
            if cmd == "tcp":
                s = socket.create_connection((vip, port), timeout=5)
                s.sendall(b"hi\n")
                data, peer = s.recv(64), s.getpeername()
                s.close()
            else:
                if cmd == "udp" or keep is None:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.settimeout(5)
                    if cmd == "udpkeep":
                        keep = s
                else:
                    s = keep
                s.sendto(b"hi\n", (vip, port))
                data, peer = s.recvfrom(64)
                if cmd == "udp":
                    s.close()
            out.append("%s@%s:%d" % (data.decode().strip(), peer[0], peer[1]))
    except Exception as e:
        out = ["ERR:%s" % str(e).replace(" ", "_")]
    print(" ".join(out), flush=True)
"#;

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    /// Start the client inside `cgroup` (it writes its own pid to
    /// cgroup.procs before entering the namespace).
    fn start(ns: &Netns, cgroup: &Path) -> Self {
        Self::start_in(ns, Some(cgroup))
    }

    /// Start the client in `ns`, in `cgroup` or else where the test runs.
    fn start_in(ns: &Netns, cgroup: Option<&Path>) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"if [ -n "$1" ]; then echo $$ > "$1/cgroup.procs" || exit 1; fi; exec nsenter --net="$2" /usr/bin/python3 -c "$3" "$4""#)
            .arg("sh")
            .arg(cgroup.map(Path::as_os_str).unwrap_or_default())
            .arg(ns.path())
            .arg(CLIENT)
            .arg(VIP.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, stdout }
    }

    /// Answers (backend id, peer address as the application saw it), or
    /// the client's error.
    fn ask(&mut self, cmd: &str, n: usize) -> Result<Vec<(String, SocketAddrV4)>, String> {
        self.send(&format!("{cmd} {n}"))
    }

    /// Like [`Client::ask`], to `to` instead of the VIP.
    fn ask_at(&mut self, cmd: &str, n: usize, to: SocketAddrV4) -> Result<Vec<(String, SocketAddrV4)>, String> {
        self.send(&format!("{cmd} {n} {} {}", to.ip(), to.port()))
    }

    fn send(&mut self, line: &str) -> Result<Vec<(String, SocketAddrV4)>, String> {
        let cmd = line.split_whitespace().next().unwrap_or_default().to_owned();
        let n = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        writeln!(self.stdin, "{line}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        if let Some(err) = line.trim().strip_prefix("ERR:") {
            return Err(err.to_owned());
        }
        Ok(line
            .split_whitespace()
            .map(|t| {
                let (id, peer) = t.split_once('@').unwrap_or_else(|| panic!("{cmd} {n}: {t}"));
                (id.to_owned(), peer.parse().unwrap_or_else(|_| panic!("peer {peer}")))
            })
            .collect())
    }

    fn ids(&mut self, cmd: &str, n: usize, port: u16) -> BTreeMap<String, usize> {
        self.ids_at(cmd, n, SocketAddrV4::new(VIP, port))
    }

    /// Answers per backend id of `n` requests to `to`; the application must
    /// see `to` as its peer, whatever backend answered.
    fn ids_at(&mut self, cmd: &str, n: usize, to: SocketAddrV4) -> BTreeMap<String, usize> {
        let mut hits = BTreeMap::new();
        let answers = self.ask_at(cmd, n, to).unwrap_or_else(|e| panic!("{cmd} {n} to {to}: {e}"));
        for (id, peer) in answers {
            assert_eq!(peer, to, "{cmd}: the application must see the address it used");
            *hits.entry(id).or_default() += 1;
        }
        hits
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Lab {
    _backends: Vec<(Netns, Servers)>,
    client: Netns,
    _hub: Netns,
    addrs: Vec<Ipv4Addr>,
}

/// hub (bridge) <- client 10.77.0.10, backends b1..b3 10.77.0.11-13.
fn lab() -> Lab {
    let hub = Netns::new("sebh");
    hub.ip(&["link", "add", "br0", "type", "bridge"]);
    hub.ip(&["link", "set", "br0", "up"]);
    let client = Netns::new("sebc");
    veth("eth0", &client, "vc", &hub);
    hub.ip(&["link", "set", "vc", "master", "br0"]);
    client.ip(&["addr", "add", "10.77.0.10/24", "dev", "eth0"]);
    let mut backends = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=3u8 {
        let ns = Netns::new("sebb");
        let port = format!("vb{i}");
        veth("eth0", &ns, &port, &hub);
        hub.ip(&["link", "set", &port, "master", "br0"]);
        let addr = Ipv4Addr::new(10, 77, 0, 10 + i);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        let servers = Servers::start(&ns, &format!("b{i}"), 8080, 5353);
        backends.push((ns, servers));
        addrs.push(addr);
    }
    Lab { _backends: backends, client, _hub: hub, addrs }
}

fn backends(addrs: &[Ipv4Addr], port: u16) -> Vec<Backend> {
    addrs.iter().map(|a| Backend::new(SocketAddrV4::new(*a, port))).collect()
}

fn cgroup_root(test: &str) -> Option<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup/unified");
    if root.join("cgroup.procs").exists() {
        return Some(root.to_owned());
    }
    let found = cgroup2_mount();
    if found.is_none() {
        common::skip(test, "no cgroup v2 hierarchy mounted");
    }
    found
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn vip_connections_reach_every_backend_and_see_the_vip() {
    const TEST: &str = "vip_connections_reach_every_backend_and_see_the_vip";
    common::require_root(TEST);
    let Some(root) = cgroup_root(TEST) else { return };
    let lab = lab();
    let cgroup = Cgroup::new(&root);
    let mut lb = SockLb::load(&LoadOptions::default()).expect("load").attach(&cgroup.path).expect("attach");
    let tcp = ServiceKey::tcp(VIP, 80);
    let udp = ServiceKey::udp(VIP, 53);
    lb.upsert_service(tcp, ServiceOptions::default()).unwrap();
    lb.upsert_service(udp, ServiceOptions::default()).unwrap();
    lb.set_backends(&tcp, &backends(&lab.addrs, 8080)).unwrap();
    lb.set_backends(&udp, &backends(&lab.addrs, 5353)).unwrap();

    let mut client = Client::start(&lab.client, &cgroup.path);
    let tcp_hits = client.ids("tcp", 60, 80);
    assert_eq!(tcp_hits.keys().collect::<Vec<_>>(), ["b1", "b2", "b3"], "TCP spread: {tcp_hits:?}");
    let udp_hits = client.ids("udp", 60, 53);
    assert_eq!(udp_hits.keys().collect::<Vec<_>>(), ["b1", "b2", "b3"], "UDP spread: {udp_hits:?}");

    // One UDP socket sticks to its backend...
    let kept = client.ids("udpkeep", 20, 53);
    assert_eq!(kept.len(), 1, "UDP socket affinity: {kept:?}");
    let (id, _) = kept.into_iter().next().unwrap();
    // ...and moves when that backend leaves, instead of being black-holed.
    let idx: usize = id[1..].parse::<usize>().unwrap() - 1;
    lb.remove_backend(&udp, SocketAddrV4::new(lab.addrs[idx], 5353)).unwrap();
    let moved = client.ids("udpkeep", 10, 53);
    assert_eq!(moved.len(), 1, "UDP socket after removal: {moved:?}");
    assert!(!moved.contains_key(&id), "UDP socket still sent to removed {id}");

    // A removed TCP backend gets no new connections.
    lb.remove_backend(&tcp, SocketAddrV4::new(lab.addrs[0], 8080)).unwrap();
    let after = client.ids("tcp", 30, 80);
    assert!(!after.contains_key("b1"), "removed backend got connections: {after:?}");
    assert_eq!(after.len(), 2);
    drop(client);
    drop(lb);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn pinned_socket_lb_survives_the_loader_and_is_adopted() {
    const TEST: &str = "pinned_socket_lb_survives_the_loader_and_is_adopted";
    common::require_root(TEST);
    let Some(root) = cgroup_root(TEST) else { return };
    let lab = lab();
    let cgroup = Cgroup::new(&root);
    let bpffs = BpfMount::new();
    let opts = LoadOptions { pin_dir: Some(bpffs.path.join("node1")), ..LoadOptions::default() };
    let tcp = ServiceKey::tcp(VIP, 80);
    {
        let mut lb = SockLb::load(&opts).expect("load").attach(&cgroup.path).expect("attach");
        lb.upsert_service(tcp, ServiceOptions::default()).unwrap();
        lb.set_backends(&tcp, &backends(&lab.addrs, 8080)).unwrap();
    } // the "agent" exits: programs, links and maps stay pinned

    let mut client = Client::start(&lab.client, &cgroup.path);
    let hits = client.ids("tcp", 45, 80);
    assert_eq!(hits.len(), 3, "after the loader exited: {hits:?}");

    // A new "agent" adopts the pinned state and keeps changing it.
    let mut lb = SockLb::load(&opts).expect("reload").attach(&cgroup.path).expect("re-attach");
    assert_eq!(lb.table().backends(&tcp).map(<[_]>::len), Some(3), "services adopted from pinned maps");
    lb.remove_backend(&tcp, SocketAddrV4::new(lab.addrs[2], 8080)).unwrap();
    let hits = client.ids("tcp", 30, 80);
    assert_eq!(hits.keys().collect::<Vec<_>>(), ["b1", "b2"], "after adoption: {hits:?}");

    // Teardown removes everything: the VIP is no longer translated.
    let errors = lb.teardown();
    assert!(errors.is_empty(), "teardown: {errors:?}");
    let answers = client.ask("tcp", 1);
    assert!(answers.is_err(), "VIP still answered after teardown: {answers:?}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn vip_connections_follow_the_weights() {
    const TEST: &str = "vip_connections_follow_the_weights";
    common::require_root(TEST);
    let Some(root) = cgroup_root(TEST) else { return };
    let lab = lab();
    let cgroup = Cgroup::new(&root);
    let mut lb = SockLb::load(&LoadOptions::default()).expect("load").attach(&cgroup.path).expect("attach");
    let tcp = ServiceKey::tcp(VIP, 80);
    lb.upsert_service(tcp, ServiceOptions::default()).unwrap();
    let mut bes = backends(&lab.addrs, 8080);
    bes[0].weight = 3;
    bes[2].weight = 0;
    lb.set_backends(&tcp, &bes).unwrap();

    let mut client = Client::start(&lab.client, &cgroup.path);
    // 200 connections: 3/4 expected on b1 (standard deviation ~3%), none on the drained b3.
    let hits = client.ids("tcp", 200, 80);
    assert!(!hits.contains_key("b3"), "drained backend got connections: {hits:?}");
    let share = hits.get("b1").copied().unwrap_or(0) as f64 / 200.0;
    assert!((0.6..0.9).contains(&share), "weight 3 of 4 got {share:.2} of the connections: {hits:?}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_vip_carries_every_port_keeps_the_port_the_app_used_and_an_exact_port_wins() {
    const TEST: &str = "a_vip_carries_every_port_keeps_the_port_the_app_used_and_an_exact_port_wins";
    common::require_root(TEST);
    let Some(root) = cgroup_root(TEST) else { return };
    let lab = lab();
    // Every backend also serves TCP 9090 and UDP 9053 (besides 8080 and 5353).
    let _more: Vec<Servers> =
        lab._backends.iter().enumerate().map(|(i, (ns, _))| Servers::start(ns, &format!("b{}", i + 1), 9090, 9053)).collect();
    let cgroup = Cgroup::new(&root);
    let mut lb = SockLb::load(&LoadOptions::default()).expect("load").attach(&cgroup.path).expect("attach");
    let (tcp, udp) = (ServiceKey::tcp(VIP, shoal_ebpf::ANY_PORT), ServiceKey::udp(VIP, shoal_ebpf::ANY_PORT));
    for key in [tcp, udp] {
        lb.upsert_service(key, ServiceOptions::default()).unwrap();
        lb.set_backends(&key, &backends(&lab.addrs, shoal_ebpf::ANY_PORT)).unwrap();
    }
    let all = ["b1", "b2", "b3"];
    let mut client = Client::start(&lab.client, &cgroup.path);
    // ids_at also checks that the application sees the VIP and the port it used as its peer.
    for port in [8080, 9090] {
        assert_eq!(names(&client.ids_at("tcp", 45, SocketAddrV4::new(VIP, port))), all, "TCP VIP:{port}");
    }
    for port in [5353, 9053] {
        assert_eq!(names(&client.ids_at("udp", 45, SocketAddrV4::new(VIP, port))), all, "UDP VIP:{port}");
    }
    // One UDP socket keeps its backend on every port of the VIP...
    let kept = client.ids_at("udpkeep", 10, SocketAddrV4::new(VIP, 5353));
    assert_eq!(kept.len(), 1, "UDP socket affinity: {kept:?}");
    let id = kept.keys().next().unwrap().clone();
    let other_port = client.ids_at("udpkeep", 10, SocketAddrV4::new(VIP, 9053));
    assert_eq!(names(&other_port), [id.as_str()], "the kept socket changed backend with the port");
    // ...and moves when that backend leaves.
    let idx: usize = id[1..].parse::<usize>().unwrap() - 1;
    lb.remove_backend(&udp, SocketAddrV4::new(lab.addrs[idx], shoal_ebpf::ANY_PORT)).unwrap();
    let moved = client.ids_at("udpkeep", 10, SocketAddrV4::new(VIP, 5353));
    assert_eq!(moved.len(), 1, "UDP socket after removal: {moved:?}");
    assert!(!moved.contains_key(&id), "UDP socket still sent to removed {id}");

    // An exact (VIP, port) wins over the VIP's every-port entry: VIP:8080 -> b1:9090 only.
    let exact = ServiceKey::tcp(VIP, 8080);
    lb.upsert_service(exact, ServiceOptions::default()).unwrap();
    lb.set_backends(&exact, &[Backend::new(SocketAddrV4::new(lab.addrs[0], 9090))]).unwrap();
    assert_eq!(names(&client.ids_at("tcp", 20, SocketAddrV4::new(VIP, 8080))), ["b1"], "the exact port did not win");
    assert_eq!(names(&client.ids_at("tcp", 30, SocketAddrV4::new(VIP, 9090))), all, "other ports must keep the any-port entry");
    // Weights and drain hold on the any-port entry: a drained backend gets no new connection.
    lb.add_backend(&tcp, Backend::new(SocketAddrV4::new(lab.addrs[1], shoal_ebpf::ANY_PORT)).with_weight(0)).unwrap();
    let hits = client.ids_at("tcp", 30, SocketAddrV4::new(VIP, 9090));
    assert_eq!(names(&hits), ["b1", "b3"], "drained b2 got new connections: {hits:?}");
}

/// The "node" of `lab()`: its client namespace's address.
const NODE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

fn names(hits: &BTreeMap<String, usize>) -> Vec<&str> {
    hits.keys().map(String::as_str).collect()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn node_processes_are_balanced_from_the_root_cgroup_and_other_namespaces_are_untouched() {
    const TEST: &str = "node_processes_are_balanced_from_the_root_cgroup_and_other_namespaces_are_untouched";
    common::require_root(TEST);
    let Some(root) = cgroup_root(TEST) else { return };
    let lab = lab();
    let bpffs = BpfMount::new();
    // A listener of the host's own namespace (this process) whose port the node also publishes.
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on the host's loopback");
    let host_port = host_listener.local_addr().unwrap().port();

    let opts = LoadOptions { pin_dir: Some(bpffs.path.join("node")), ..LoadOptions::default() };
    let attach = |opts: LoadOptions, root: std::path::PathBuf| {
        lab.client.run(move || {
            let mut lb = SockLb::load(&opts).expect("load");
            lb.attach_host(&root, Some(NODE)).expect("attach to the root cgroup");
            lb
        })
    };
    let mut lb = attach(opts.clone(), root.clone());
    let published = ServiceOptions { published: true, ..ServiceOptions::default() };
    lb.upsert_service(ServiceKey::tcp(VIP, 80), ServiceOptions::default()).unwrap();
    lb.set_backends(&ServiceKey::tcp(VIP, 80), &backends(&lab.addrs, 8080)).unwrap();
    for (key, port) in [(ServiceKey::tcp(NODE, 5000), 8080), (ServiceKey::udp(NODE, 5000), 5353), (ServiceKey::tcp(NODE, host_port), 8080)]
    {
        lb.upsert_service(key, published).unwrap();
        lb.set_backends(&key, &backends(&lab.addrs, port)).unwrap();
    }
    drop(lb); // the agent exits; the pinned root-cgroup links stay

    // Another node on the same machine: its own instance on the root cgroup, its own services.
    let other = Netns::new("sebo");
    let _other_server = Servers::start(&other, "other", 5000, 5000);
    let mut other_lb = other.run({
        let root = root.clone();
        move || {
            let mut lb = SockLb::load(&LoadOptions::default()).expect("load");
            lb.attach_host(&root, Some(Ipv4Addr::new(10, 1, 1, 1))).expect("attach to the root cgroup");
            lb
        }
    });
    let other_key = ServiceKey::tcp(Ipv4Addr::new(10, 1, 1, 1), 7000);
    other_lb.upsert_service(other_key, published).unwrap();
    other_lb.set_backends(&other_key, &[Backend::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000))]).unwrap();

    // The node's own processes (in no shoal cgroup): VIP, loopback and node address reach every backend.
    let all = ["b1", "b2", "b3"];
    let mut node = Client::start_in(&lab.client, None);
    let loopback = |port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    assert_eq!(names(&node.ids_at("tcp", 45, SocketAddrV4::new(VIP, 80))), all, "VIP from the node");
    assert_eq!(names(&node.ids_at("tcp", 45, loopback(5000))), all, "127.0.0.1:5000 from the node");
    assert_eq!(names(&node.ids_at("tcp", 45, SocketAddrV4::new(NODE, 5000))), all, "node address:5000 from the node");
    assert_eq!(names(&node.ids_at("udp", 45, loopback(5000))), all, "UDP 127.0.0.1:5000 from the node");
    assert_eq!(names(&node.ids_at("tcp", 30, loopback(host_port))), all, "127.0.0.1:{host_port} from the node");

    // Other namespaces are untouched: their own loopback answers, the node's VIP means nothing there.
    let mut elsewhere = Client::start_in(&other, None);
    assert_eq!(names(&elsewhere.ids_at("tcp", 10, loopback(5000))), ["other"], "another namespace's 127.0.0.1:5000");
    assert_eq!(names(&elsewhere.ids_at("udp", 10, loopback(5000))), ["other"], "another namespace's UDP 127.0.0.1:5000");
    assert!(elsewhere.ask("tcp", 1).is_err(), "the node's VIP was translated in another namespace");
    assert_eq!(names(&elsewhere.ids_at("tcp", 10, loopback(7000))), ["other"], "the other node's own service");
    // ...and so is the host's: this process reaches its own listener on the published port.
    let conn = std::net::TcpStream::connect(("127.0.0.1", host_port)).expect("connect on the host's loopback");
    let (accepted, peer) = host_listener.accept().expect("the host's own listener gets the connection");
    assert_eq!(peer, conn.local_addr().unwrap(), "the host's connection went elsewhere");
    drop((conn, accepted));

    // A restarted agent adopts the pinned links; its teardown detaches exactly its own.
    let lb = attach(opts, root.clone());
    assert_eq!(names(&node.ids_at("tcp", 30, loopback(5000))), all, "after adoption");
    let errors = lb.teardown();
    assert!(errors.is_empty(), "teardown: {errors:?}");
    assert!(node.ask_at("tcp", 1, loopback(5000)).is_err(), "127.0.0.1:5000 still balanced after teardown");
    assert_eq!(names(&elsewhere.ids_at("tcp", 10, loopback(7000))), ["other"], "teardown detached another node's hooks");
    drop(other_lb);
    // The kernel releases a dropped link's cgroup hook after the last file closes, possibly a
    // moment later (deferred work under load): give it up to 2 s, then it must be gone.
    let t0 = std::time::Instant::now();
    while elsewhere.ask_at("tcp", 1, loopback(7000)).is_ok() && t0.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(elsewhere.ask_at("tcp", 1, loopback(7000)).is_err(), "dropping the loader left its hooks attached");
}
