//! End to end: client ns -> node ns (underlay veth with the NAT on ingress,
//! overlay bridge with the reply NAT) -> backend namespaces.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    time::Duration,
};

use common::netns::{veth, BpfMount, Netns, Servers};
use shoal_ebpf::{Backend, LoadOptions, ServiceKey, ServiceOptions, TcAttach, TcHook, TcNat, TC_PRIORITY};

const NODE: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const NODE_LB: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);

struct Lab {
    _backends: Vec<(Netns, Servers)>,
    client: Netns,
    node: Netns,
    addrs: Vec<Ipv4Addr>,
}

fn lab() -> Lab {
    let client = Netns::new("senc");
    let node = Netns::new("senn");
    veth("eth0", &client, "u0", &node);
    client.ip(&["addr", "add", "10.88.0.2/24", "dev", "eth0"]);
    node.ip(&["addr", "add", &format!("{NODE}/24"), "dev", "u0"]);
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["addr", "add", &format!("{NODE_LB}/24"), "dev", "br0"]);
    node.ip(&["link", "set", "br0", "up"]);
    node.sysctl("net.ipv4.ip_forward", "1");
    let mut backends = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=3u8 {
        let ns = Netns::new("senb");
        let port = format!("vb{i}");
        veth("eth0", &ns, &port, &node);
        node.ip(&["link", "set", &port, "master", "br0"]);
        let addr = Ipv4Addr::new(10, 0, 9, 10 + i);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        let servers = Servers::start(&ns, &format!("b{i}"), 80, 5353);
        backends.push((ns, servers));
        addrs.push(addr);
    }
    Lab { _backends: backends, client, node, addrs }
}

fn nat_backends(addrs: &[Ipv4Addr], port: u16) -> Vec<Backend> {
    addrs.iter().map(|a| Backend::nat(SocketAddrV4::new(*a, port), NODE_LB, false)).collect()
}

/// `n` TCP requests from the client namespace to the published port; the
/// answering backend ids, or the first error.
fn tcp_requests(client: &Netns, n: usize) -> Result<BTreeMap<String, usize>, String> {
    client.run(move || {
        let mut hits = BTreeMap::new();
        for _ in 0..n {
            let mut s = TcpStream::connect_timeout(&SocketAddrV4::new(NODE, 8080).into(), Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"hi\n").map_err(|e| format!("write: {e}"))?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).map_err(|e| format!("read: {e}"))?;
            *hits.entry(line.trim().to_owned()).or_default() += 1;
        }
        Ok(hits)
    })
}

fn udp_requests(client: &Netns, n: usize) -> Result<BTreeMap<String, usize>, String> {
    client.run(move || {
        let mut hits = BTreeMap::new();
        for _ in 0..n {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(b"hi\n", SocketAddrV4::new(NODE, 5353)).map_err(|e| format!("send: {e}"))?;
            let mut buf = [0u8; 64];
            let (len, from) = s.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
            assert_eq!(from, SocketAddrV4::new(NODE, 5353).into(), "reply must come from the published port");
            *hits.entry(String::from_utf8_lossy(&buf[..len]).trim().to_owned()).or_default() += 1;
        }
        Ok(hits)
    })
}

fn publish(nat: &mut TcNat, addrs: &[Ipv4Addr]) {
    let tcp = ServiceKey::tcp(NODE, 8080);
    let udp = ServiceKey::udp(Ipv4Addr::UNSPECIFIED, 5353);
    for key in [tcp, udp] {
        nat.upsert_service(key, ServiceOptions::default()).unwrap();
    }
    nat.set_backends(&tcp, &nat_backends(addrs, 80)).unwrap();
    nat.set_backends(&udp, &nat_backends(addrs, 5353)).unwrap();
}

fn attach(node: &Netns, opts: LoadOptions) -> TcNat {
    node.run(move || {
        TcNat::load(&opts).expect("load").attach_ingress("u0").expect("attach ingress").attach_reply("br0").expect("attach reply")
    })
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn published_port_reaches_every_backend() {
    common::require_root("published_port_reaches_every_backend");
    let lab = lab();
    let mut nat = attach(&lab.node, LoadOptions::default());
    publish(&mut nat, &lab.addrs);

    let tcp = tcp_requests(&lab.client, 60).expect("TCP through the NAT");
    assert_eq!(tcp.keys().collect::<Vec<_>>(), ["b1", "b2", "b3"], "TCP spread: {tcp:?}");
    let udp = udp_requests(&lab.client, 60).expect("UDP through the NAT");
    assert_eq!(udp.keys().collect::<Vec<_>>(), ["b1", "b2", "b3"], "UDP spread: {udp:?}");

    nat.remove_backend(&ServiceKey::tcp(NODE, 8080), SocketAddrV4::new(lab.addrs[1], 80)).unwrap();
    let tcp = tcp_requests(&lab.client, 30).expect("TCP after removing a backend");
    assert_eq!(tcp.keys().collect::<Vec<_>>(), ["b1", "b3"], "after removal: {tcp:?}");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn pinned_nat_survives_the_loader_and_is_adopted() {
    common::require_root("pinned_nat_survives_the_loader_and_is_adopted");
    let lab = lab();
    let bpffs = BpfMount::new();
    let opts = LoadOptions { pin_dir: Some(bpffs.path.join("node1")), ..LoadOptions::default() };
    let mut nat = attach(&lab.node, opts.clone());
    publish(&mut nat, &lab.addrs);
    let (tcp_key, udp_key) = (ServiceKey::tcp(NODE, 8080), ServiceKey::udp(Ipv4Addr::UNSPECIFIED, 5353));
    let keep = ServiceOptions { keep_client_ip: true, ..ServiceOptions::default() };
    nat.upsert_service(udp_key, keep).unwrap();
    let heavy = nat_backends(&lab.addrs, 80)[2].with_weight(2);
    nat.add_backend(&tcp_key, heavy).unwrap();
    drop(nat); // the agent exits; the pinned NAT keeps serving

    let tcp = tcp_requests(&lab.client, 45).expect("TCP after the loader exited");
    assert_eq!(tcp.len(), 3, "{tcp:?}");

    let mut nat = attach(&lab.node, opts);
    assert_eq!(nat.table().len(), 2, "published ports adopted from pinned maps");
    assert_eq!(nat.table().options(&udp_key), Some(keep), "options read back from the maps");
    assert_eq!(nat.table().options(&tcp_key), Some(ServiceOptions::default()));
    assert!(nat.table().backends(&tcp_key).unwrap().contains(&heavy), "weights read back from the maps");
    nat.remove_backend(&ServiceKey::tcp(NODE, 8080), SocketAddrV4::new(lab.addrs[0], 80)).unwrap();
    let tcp = tcp_requests(&lab.client, 30).expect("TCP after adoption");
    assert_eq!(tcp.keys().collect::<Vec<_>>(), ["b2", "b3"], "{tcp:?}");

    let errors = nat.teardown();
    assert!(errors.is_empty(), "teardown: {errors:?}");
    assert!(tcp_requests(&lab.client, 1).is_err(), "published port still answered after teardown");
}

/// A TCP connection from the client namespace, kept open across changes.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(client: &Netns) -> Self {
        let s = client.run(|| TcpStream::connect_timeout(&SocketAddrV4::new(NODE, 8080).into(), Duration::from_secs(5)).expect("connect"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self { writer: s.try_clone().unwrap(), reader: BufReader::new(s) }
    }

    fn ask(&mut self) -> String {
        self.writer.write_all(b"hi\n").expect("write on the open connection");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read on the open connection");
        line.trim().to_owned()
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn open_flows_survive_backend_removal_and_agent_restart() {
    common::require_root("open_flows_survive_backend_removal_and_agent_restart");
    let lab = lab();
    let bpffs = BpfMount::new();
    let opts = LoadOptions { pin_dir: Some(bpffs.path.join("node1")), ..LoadOptions::default() };
    let mut nat = attach(&lab.node, opts.clone());
    publish(&mut nat, &lab.addrs);
    let key = ServiceKey::tcp(NODE, 8080);

    let mut conn = Conn::open(&lab.client);
    let id = conn.ask();
    let idx: usize = id[1..].parse::<usize>().unwrap() - 1;

    // Graceful drain: the backend leaves, its open connection keeps working.
    nat.remove_backend(&key, SocketAddrV4::new(lab.addrs[idx], 80)).unwrap();
    assert_eq!(conn.ask(), id, "open flow moved or broke after its backend was removed");
    let fresh = tcp_requests(&lab.client, 20).expect("new flows");
    assert!(!fresh.contains_key(&id), "removed backend {id} got new flows: {fresh:?}");

    // Crash-only: the agent goes away and comes back; the flow never stops.
    drop(nat);
    assert_eq!(conn.ask(), id, "open flow broke while the agent was down");
    let nat = attach(&lab.node, opts);
    assert_eq!(conn.ask(), id, "open flow broke when the agent adopted the NAT");
    assert!(nat.teardown().is_empty());
}

/// Our filters on `ifname`'s ingress in `node` (priority, handle, program name).
fn our_filters(node: &Netns, ifname: &'static str) -> Vec<(u16, u32, Option<String>)> {
    node.run(move || {
        let idx = nix::net::if_::if_nametoindex(ifname).expect("ifindex");
        shoal_ebpf::sys::list_ingress(idx).expect("list filters").into_iter().map(|f| (f.priority, f.handle, f.name)).collect()
    })
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn legacy_filters_survive_restarts_without_stacking_and_teardown_removes_only_ours() {
    common::require_root("legacy_filters_survive_restarts_without_stacking_and_teardown_removes_only_ours");
    let lab = lab();
    let bpffs = BpfMount::new();
    let opts = LoadOptions { pin_dir: Some(bpffs.path.join("node1")), tc_attach: TcAttach::Netlink, ..LoadOptions::default() };
    let mut nat = attach(&lab.node, opts.clone());
    assert_eq!(nat.attach_mode(), TcAttach::Netlink);
    publish(&mut nat, &lab.addrs);
    // Someone else's filter (classic BPF, never matches) at another priority: teardown spares it.
    let ns = lab.node.name.clone();
    common::netns::sh(&[
        "tc",
        "-n",
        &ns,
        "filter",
        "add",
        "dev",
        "u0",
        "ingress",
        "prio",
        "100",
        "handle",
        "1",
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
    ]);

    let mut conn = Conn::open(&lab.client);
    let id = conn.ask();
    drop(nat); // the agent exits: filters stay in the kernel
    assert_eq!(conn.ask(), id, "open flow broke while the agent was down");
    for _ in 0..3 {
        let nat = attach(&lab.node, opts.clone());
        assert_eq!(conn.ask(), id, "open flow broke when a new agent took over the filters");
        drop(nat);
    }
    let ours = |ifname| our_filters(&lab.node, ifname).into_iter().filter(|f| f.0 == TC_PRIORITY).collect::<Vec<_>>();
    assert_eq!(ours("u0"), [(TC_PRIORITY, 1, Some("nat_ingress".to_owned()))], "one filter after four opens");
    assert_eq!(ours("br0"), [(TC_PRIORITY, 2, Some("nat_reply".to_owned()))], "one filter after four opens");
    let tcp = tcp_requests(&lab.client, 30).expect("TCP through the adopted filters");
    assert_eq!(tcp.len(), 3, "{tcp:?}");

    let nat = attach(&lab.node, opts);
    let (attached, errors) = lab.node.run(move || (nat.attachments().expect("attachments"), nat.teardown()));
    let attached: Vec<_> = attached.into_iter().collect();
    assert_eq!(attached, [((TcHook::Ingress, "u0".to_owned()), true), ((TcHook::Reply, "br0".to_owned()), true)]);
    assert!(errors.is_empty(), "teardown: {errors:?}");
    assert!(ours("u0").is_empty() && ours("br0").is_empty(), "our filters left after teardown");
    assert_eq!(our_filters(&lab.node, "u0"), [(100, 1, None)], "someone else's filter must stay");
    assert!(tcp_requests(&lab.client, 1).is_err(), "published port still answered after teardown");
}

/// A bridge `name` with address `lb` in the node and one backend namespace on it.
fn second_network(lab: &Lab, name: &str, lb: Ipv4Addr, backend: Ipv4Addr) -> (Netns, Servers) {
    lab.node.ip(&["link", "add", name, "type", "bridge"]);
    lab.node.ip(&["addr", "add", &format!("{lb}/24"), "dev", name]);
    lab.node.ip(&["link", "set", name, "up"]);
    let ns = Netns::new("senb");
    let port = common::unique("vn");
    veth("eth0", &ns, &port, &lab.node);
    lab.node.ip(&["link", "set", &port, "master", name]);
    ns.ip(&["addr", "add", &format!("{backend}/24"), "dev", "eth0"]);
    let servers = Servers::start(&ns, "n1", 80, 5353);
    (ns, servers)
}

fn a_new_bridge_is_served_by_the_loaded_programs(mode: TcAttach, test: &str) {
    common::require_root(test);
    let lab = lab();
    let bpffs = BpfMount::new();
    let opts = LoadOptions { pin_dir: Some(bpffs.path.join("node1")), tc_attach: mode, ..LoadOptions::default() };
    let mut nat = attach(&lab.node, opts);
    publish(&mut nat, &lab.addrs);
    let lb2 = Ipv4Addr::new(10, 0, 10, 1);
    let b2 = Ipv4Addr::new(10, 0, 10, 11);
    let _net2 = second_network(&lab, "br1", lb2, b2);

    // The service moves to the new network only: its reply path needs the new attachment.
    let (nat, took) = lab.node.run(move || {
        let start = std::time::Instant::now();
        nat.attach_hook(TcHook::Reply, "br1").expect("attach to the new bridge");
        nat.detach_hook(TcHook::Reply, "br0").expect("detach from the old bridge");
        (nat, start.elapsed())
    });
    eprintln!("{test}: attach to a new bridge + detach from the old one with the loaded programs: {took:?}");
    let mut nat = nat;
    let key = ServiceKey::tcp(NODE, 8080);
    nat.set_backends(&key, &[Backend::nat(SocketAddrV4::new(b2, 80), lb2, false)]).unwrap();
    let tcp = tcp_requests(&lab.client, 10).expect("TCP to the backend on the new network");
    assert_eq!(tcp.keys().collect::<Vec<_>>(), ["n1"], "{tcp:?}");
    let (attached, errors) = lab.node.run(move || (nat.attachments().expect("attachments"), nat.teardown()));
    let attached: Vec<_> = attached.into_iter().collect();
    assert_eq!(attached, [((TcHook::Ingress, "u0".to_owned()), true), ((TcHook::Reply, "br1".to_owned()), true)]);
    assert!(errors.is_empty(), "teardown: {errors:?}");
    lab.node.ip(&["link", "del", "br1"]);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_new_bridge_is_served_by_the_loaded_programs_tcx() {
    if TcAttach::Auto.resolve() != TcAttach::Tcx {
        common::skip("a_new_bridge_is_served_by_the_loaded_programs_tcx", "kernel < 6.6 has no tcx links");
        return;
    }
    a_new_bridge_is_served_by_the_loaded_programs(TcAttach::Tcx, "a_new_bridge_is_served_by_the_loaded_programs_tcx");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_new_bridge_is_served_by_the_loaded_programs_legacy_tc() {
    a_new_bridge_is_served_by_the_loaded_programs(TcAttach::Netlink, "a_new_bridge_is_served_by_the_loaded_programs_legacy_tc");
}
