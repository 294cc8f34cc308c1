//! End-to-end tests of the VXLAN overlay on a 3-node lab: real namespaces, real links, real
//! packets. Run as root by tests/run.sh.

mod support;

use serde_json::{json, Value};
use support::*;

const NODES: [&str; 3] = ["smgr", "snode1", "snode2"];

/// Two networks, one task per node on each.
fn two_networks(lab: &Lab, node: &str) -> Value {
    let mut endpoints = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        for (net, third) in [("backend", 9), ("frontend", 10)] {
            endpoints.push(json!({
                "id": format!("{net}.{}", i + 1),
                "network": net,
                "node": n,
                "ip": format!("10.0.{third}.{}", i + 2),
                "netns": lab.task_ns(&format!("{n}-{net}")),
            }));
        }
    }
    json!({
        "node": node,
        "nodes": [
            {"name": "smgr", "address": "192.168.33.10"},
            {"name": "snode1", "address": "192.168.33.20"},
            {"name": "snode2", "address": "192.168.33.30"},
        ],
        "networks": [
            {"name": "backend", "vni": 4097, "subnet": "10.0.9.0/24",
             "lb_addresses": {"smgr": "10.0.9.250", "snode1": "10.0.9.249", "snode2": "10.0.9.248"}},
            {"name": "frontend", "vni": 4098, "subnet": "10.0.10.0/24"},
        ],
        "endpoints": endpoints,
    })
}

fn apply_all(lab: &Lab) {
    for n in NODES {
        let changes = lab.apply_ok(n, &two_networks(lab, n));
        assert!(changes > 0, "first apply on {n} made no change");
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn every_node_pair_talks_on_two_networks_and_networks_are_isolated() {
    let lab = Lab::up(3);
    apply_all(&lab);
    for (net, third) in [("backend", 9), ("frontend", 10)] {
        for (i, from) in NODES.iter().enumerate() {
            for (j, to) in NODES.iter().enumerate() {
                if i == j {
                    continue;
                }
                let src = lab.task_ns(&format!("{from}-{net}"));
                let dst_ns = lab.task_ns(&format!("{to}-{net}"));
                let dst = format!("10.0.{third}.{}", j + 2);
                assert!(ping(&src, &dst), "{net}: ping {from} -> {to} ({dst}) failed");
                assert!(tcp_round_trip(&src, &dst_ns, &dst, 7000 + j as u16), "{net}: TCP {from} -> {to} failed");
            }
        }
    }
    // The node forwards (the routing mesh needs it), so isolation must come from shoal's rules.
    let fwd = in_ns(&lab.node_ns("smgr"), &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    // backend on smgr cannot reach frontend tasks, on the same node or another one
    // (Each refused try waits out its timeout: all six run at once.)
    let src = lab.task_ns("smgr-backend");
    let tries: Vec<_> = NODES
        .iter()
        .enumerate()
        .flat_map(|(j, to)| {
            let dst = format!("10.0.10.{}", j + 2);
            let dst_ns = lab.task_ns(&format!("{to}-frontend"));
            let (src_ping, dst_ping) = (src.clone(), dst.clone());
            let (src_tcp, dst_tcp) = (src.clone(), dst.clone());
            [
                (format!("backend task reached frontend task {dst} on {to}"), std::thread::spawn(move || ping(&src_ping, &dst_ping))),
                (
                    format!("backend TCP reached frontend {dst} on {to}"),
                    std::thread::spawn(move || tcp_round_trip(&src_tcp, &dst_ns, &dst_tcp, 7100 + j as u16)),
                ),
            ]
        })
        .collect();
    for (what, reached) in tries {
        assert!(!reached.join().unwrap(), "{what}");
    }
    // ... while it still reaches its own gateway and this node's frontend gateway stays local
    assert!(ping(&src, "10.0.9.1"), "task cannot reach its gateway");
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn path_mtu_is_exact() {
    let lab = Lab::up(3);
    apply_all(&lab);
    let src = lab.task_ns("smgr-backend");
    // underlay 1500 - 50 = 1450; ICMP payload = MTU - 20 (IP) - 8 (ICMP)
    let fits = in_ns(&src, &["ping", "-M", "do", "-c", "1", "-W", "2", "-s", "1422", "10.0.9.4"]);
    assert!(fits.status.success(), "a DF packet of exactly the overlay MTU did not pass: {}", String::from_utf8_lossy(&fits.stdout));
    let too_big = in_ns(&src, &["ping", "-M", "do", "-c", "1", "-W", "2", "-s", "1423", "10.0.9.4"]);
    assert!(!too_big.status.success(), "a DF packet one byte over the overlay MTU passed");
    let mtu = in_ns(&src, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1450");
}

fn ifindex(ns: &str, link: &str) -> String {
    let out = in_ns(ns, &["ip", "-o", "link", "show", link]);
    assert!(out.status.success(), "{link} missing in {ns}");
    String::from_utf8_lossy(&out.stdout).split(':').next().unwrap().to_string()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn reapply_changes_nothing_and_a_restart_repairs_only_the_difference() {
    let lab = Lab::up(3);
    apply_all(&lab);
    for n in NODES {
        assert_eq!(lab.apply_ok(n, &two_networks(&lab, n)), 0, "re-apply on {n} changed the kernel");
    }
    let node = lab.node_ns("smgr");
    let vx_before = ifindex(&node, "shv-4097");
    let show_before = lab.show("smgr");
    // Damage while "the agent is away": a forwarding entry, a bridge taken down, a task address.
    assert!(in_ns(&node, &["bridge", "fdb", "del", "02:42:0a:00:09:04", "dev", "shv-4097", "dst", "192.168.33.30", "self"])
        .status
        .success());
    assert!(in_ns(&node, &["ip", "link", "set", "shb-4098", "down"]).status.success());
    let task = lab.task_ns("smgr-backend");
    assert!(in_ns(&task, &["ip", "addr", "flush", "dev", "eth0"]).status.success());
    assert!(!ping(&task, "10.0.9.4"));
    let out = lab.apply("smgr", &two_networks(&lab, "smgr"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Exactly the damage, plus the two routes the kernel itself flushed when the bridge went down.
    let mut repairs: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("applied")).collect();
    repairs.sort();
    let task_ns = lab.task_ns("smgr-backend");
    let configure = format!("configure {task_ns}:eth0 10.0.9.2/24 via 10.0.9.1 mtu 1450");
    let mut expected = vec![
        "add fdb 02:42:0a:00:09:04 dev shv-4097 dst 192.168.33.30",
        "add route 10.0.10.0/24 dev shb-4098 src 10.0.10.1 table 1000004098",
        "add route 10.0.10.0/24 dev shb-4098 src 10.0.10.1 table 254",
        configure.as_str(),
        "set shb-4098 up",
    ];
    expected.sort();
    assert_eq!(repairs, expected, "repairs other than the damage:\n{stdout}");
    assert_eq!(ifindex(&node, "shv-4097"), vx_before, "the VXLAN device was recreated instead of adopted");
    assert_eq!(lab.show("smgr"), show_before);
    assert!(ping(&task, "10.0.9.4"), "connectivity not restored");
    // Taking a remote endpoint away is O(1): one FDB and one neighbour entry.
    let mut state = two_networks(&lab, "smgr");
    state["endpoints"].as_array_mut().unwrap().retain(|e| e["id"] != "backend.3");
    let out = lab.apply("smgr", &state);
    assert_eq!(changes(&String::from_utf8_lossy(&out.stdout)), 2);
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn lab_down_leaves_no_namespace_or_link() {
    let lab = Lab::up(3);
    apply_all(&lab);
    let prefix = format!("shoal-{}-", lab.name);
    let before: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(before.len(), 5 + 6, "3 nodes, client, underlay, 6 tasks: {before:?}");
    let name = lab.name.clone();
    drop(lab);
    let after: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(after.is_empty(), "left behind: {after:?}");
    assert!(!std::path::Path::new(&format!("/run/shoal/lab/{name}.json")).exists());
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn bad_input_names_the_field_and_changes_nothing() {
    let lab = Lab::up(3);
    apply_all(&lab);
    let node = lab.node_ns("smgr");
    // a device of somebody else's that holds VNI 4099
    assert!(in_ns(&node, &["ip", "link", "add", "vx-foreign", "type", "vxlan", "id", "4099", "dstport", "4789", "local", "192.168.33.10"])
        .status
        .success());
    let before = lab.show("smgr");
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        ("networks[1].subnet", "overlaps 10.0.9.0/24", Box::new(|s| s["networks"][1]["subnet"] = json!("10.0.9.128/25"))),
        ("networks[0].vni", "outside 1..16777215", Box::new(|s| s["networks"][0]["vni"] = json!(0))),
        ("networks[0].vni", "outside 1..16777215", Box::new(|s| s["networks"][0]["vni"] = json!(16777216))),
        ("networks[1].vni", "already used by network 'backend'", Box::new(|s| s["networks"][1]["vni"] = json!(4097))),
        ("networks[1].vni", "vxlan id 4099 is already used by vx-foreign", Box::new(|s| s["networks"][1]["vni"] = json!(4099))),
        ("networks[0].mtu", "below 1280", Box::new(|s| s["networks"][0]["mtu"] = json!(1279))),
        ("networks[0].mtu", "needs an underlay MTU of 1550", Box::new(|s| s["networks"][0]["mtu"] = json!(1500))),
        ("endpoints[2].node", "node 'snode9' is unknown", Box::new(|s| s["endpoints"][2]["node"] = json!("snode9"))),
    ];
    for (field, problem, edit) in cases {
        let mut state = two_networks(&lab, "smgr");
        edit(&mut state);
        let out = lab.apply("smgr", &state);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field}: bad input was accepted");
        assert!(stderr.contains(field) && stderr.contains(problem), "{field}: error does not name it:\n{stderr}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        assert_eq!(lab.show("smgr"), before, "{field}: state changed");
    }
    assert!(in_ns(&node, &["ip", "link", "del", "vx-foreign"]).status.success());
}
