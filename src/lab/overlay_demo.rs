//! `shoal lab demo --overlay-only`: the lab plus an overlay network with one task per node, and pings across
//! every pair of nodes through VXLAN.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Context;
use shoal_dataplane::netns;
use shoal_dataplane::overlay;
use shoal_dataplane::state::{DesiredNode, Endpoint, Network, NodeInfo};

use super::exec::command_in;
use super::{up, Topology};

pub const DEMO_NETWORK: &str = "demo";
pub const DEMO_VNI: u32 = 4096;

pub struct DemoTask {
    pub node: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// The desired state of every node: one network, one task per node, an LB address per node.
pub fn states(t: &Topology) -> (Vec<DesiredNode>, Vec<DemoTask>) {
    let nodes: Vec<NodeInfo> = t.nodes.iter().map(|n| NodeInfo { name: n.name.clone(), address: n.address, wireguard: None }).collect();
    let lb_addresses: BTreeMap<String, Ipv4Addr> =
        t.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), Ipv4Addr::new(10, 0, 9, 250 - i as u8))).collect();
    let network = Network {
        name: DEMO_NETWORK.into(),
        vni: DEMO_VNI,
        subnet: "10.0.9.0/24".parse().expect("literal"),
        gateway: None,
        mtu: None,
        lb_addresses,
        internal: false,
        local: false,
        encrypted: None,
    };
    let tasks: Vec<DemoTask> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| DemoTask {
            node: n.name.clone(),
            netns: format!("{}-web{}", n.netns, i + 1),
            ip: Ipv4Addr::new(10, 0, 9, 2 + i as u8),
        })
        .collect();
    let endpoints: Vec<Endpoint> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| Endpoint {
            id: format!("web.{}", i + 1),
            network: DEMO_NETWORK.into(),
            node: task.node.clone(),
            ip: task.ip,
            mac: None,
            netns: Some(task.netns.clone()),
            ..Default::default()
        })
        .collect();
    let states = t
        .nodes
        .iter()
        .map(|n| DesiredNode {
            node: n.name.clone(),
            nodes: nodes.clone(),
            networks: vec![network.clone()],
            endpoints: endpoints.clone(),
            services: vec![],
            wireguard_private_key: None,
        })
        .collect();
    (states, tasks)
}

pub fn run(t: &Topology) -> anyhow::Result<()> {
    println!("==> lab '{}': {} nodes on underlay 192.168.33.0/24, client at {}", t.lab, t.nodes.len(), t.client.address);
    up(t)?;
    let (states, tasks) = states(t);
    println!("==> overlay network '{DEMO_NETWORK}' (vni {DEMO_VNI}, 10.0.9.0/24), one task per node");
    for (state, host) in states.iter().zip(&t.nodes) {
        let path = format!("/run/shoal/lab/{}-{}.json", t.lab, host.name);
        std::fs::write(&path, serde_json::to_vec_pretty(state)?)?;
        let s = state.clone();
        let report = netns::run_in(&host.netns, move || overlay::reconcile(&s))?.with_context(|| format!("apply on {}", host.name))?;
        println!("    {:<7} {:>3} kernel changes   (state: {path})", host.name, report.ops.len());
    }
    println!("==> ping across every pair of nodes through VXLAN");
    let mut failed = 0;
    for from in &tasks {
        for to in tasks.iter().filter(|t| t.node != from.node) {
            let out = command_in(&from.netns, "ping")?
                .args(["-c", "1", "-W", "2", &to.ip.to_string()])
                .output()
                .context("run ping (apt-get install iputils-ping)")?;
            let rtt = String::from_utf8_lossy(&out.stdout)
                .split("time=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next().map(String::from))
                .unwrap_or_default();
            let ok = out.status.success();
            failed += usize::from(!ok);
            println!(
                "    {} ({}) -> {} ({})  {}",
                from.node,
                from.ip,
                to.node,
                to.ip,
                if ok { format!("ok  {rtt} ms") } else { "FAILED".to_string() }
            );
        }
    }
    println!("==> explore:");
    println!("    ip netns exec {} ping {}", tasks[0].netns, tasks.last().map(|t| t.ip).unwrap_or(tasks[0].ip));
    println!("    shoal --netns {} dataplane show", t.nodes[0].netns);
    println!("    shoal lab status   |   shoal lab down");
    anyhow::ensure!(failed == 0, "{failed} pings failed");
    Ok(())
}
