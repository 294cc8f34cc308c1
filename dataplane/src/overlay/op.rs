//! One kernel operation. The planner emits these; the applier runs them.

use std::fmt;
use std::net::Ipv4Addr;

use crate::netlink::Mac;

/// A route as the planner sees it: devices by name, since a device may not exist yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteSpec {
    pub table: u32,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// None: an `unreachable` route.
    pub dev: Option<String>,
    pub src: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    EnableForwarding,
    /// Bridged frames skip the IP netfilter hooks (`net.bridge.bridge-nf-call-*` = 0): shoal's
    /// rules act on routed traffic only, and the hooks cost every frame between two tasks.
    DisableBridgeNetfilter,
    CreateBridge {
        name: String,
        mtu: u32,
        mac: Option<Mac>,
        alias: String,
    },
    CreateVxlan {
        name: String,
        vni: u32,
        local: Ipv4Addr,
        underlay: String,
        mtu: u32,
        alias: String,
        /// The VXLAN UDP port (4789, or IPsec networks' own).
        port: u16,
    },
    DeleteLink {
        name: String,
    },
    SetMtu {
        link: String,
        mtu: u32,
    },
    SetMac {
        link: String,
        mac: Mac,
    },
    SetMaster {
        link: String,
        master: String,
    },
    SetUp {
        link: String,
    },
    AddAddr {
        link: String,
        ip: Ipv4Addr,
        prefix: u8,
    },
    DelAddr {
        link: String,
        ip: Ipv4Addr,
        prefix: u8,
    },
    AddFdb {
        link: String,
        mac: Mac,
        dst: Ipv4Addr,
    },
    DelFdb {
        link: String,
        mac: Mac,
        dst: Ipv4Addr,
    },
    AddNeigh {
        link: String,
        ip: Ipv4Addr,
        mac: Mac,
    },
    DelNeigh {
        link: String,
        ip: Ipv4Addr,
        mac: Mac,
    },
    AddRoute(RouteSpec),
    DelRoute(RouteSpec),
    AddRule {
        priority: u32,
        iif: String,
        table: u32,
    },
    DelRule {
        priority: u32,
        iif: String,
        table: u32,
    },
    CreateNetns {
        name: String,
    },
    DeleteNetns {
        name: String,
    },
    CreateVeth {
        host: String,
        netns: String,
        ifname: String,
        mtu: u32,
        mac: Mac,
        alias: String,
    },
    /// Inside the task namespace: the interface's MAC, MTU, its one address, up, and (for the
    /// first network, eth0) the default route via the network's gateway.
    ConfigureTask {
        netns: String,
        ifname: String,
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        mtu: u32,
        mac: Mac,
    },
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dev {
            Some(dev) => write!(f, "{}/{} dev {dev}", self.dst, self.prefix)?,
            None => write!(f, "unreachable {}/{}", self.dst, self.prefix)?,
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        write!(f, " table {}", self.table)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::EnableForwarding => write!(f, "sysctl net.ipv4.ip_forward=1"),
            Op::DisableBridgeNetfilter => write!(f, "sysctl net.bridge.bridge-nf-call-{{iptables,ip6tables,arptables}}=0"),
            Op::CreateBridge { name, mtu, .. } => write!(f, "create bridge {name} mtu {mtu}"),
            Op::CreateVxlan { name, vni, local, underlay, mtu, port, .. } => {
                write!(f, "create vxlan {name} id {vni} local {local} dev {underlay} mtu {mtu}")?;
                if *port != crate::state::VXLAN_PORT {
                    write!(f, " dstport {port}")?;
                }
                Ok(())
            }
            Op::DeleteLink { name } => write!(f, "delete link {name}"),
            Op::SetMtu { link, mtu } => write!(f, "set {link} mtu {mtu}"),
            Op::SetMac { link, mac } => write!(f, "set {link} address {mac}"),
            Op::SetMaster { link, master } => write!(f, "set {link} master {master}"),
            Op::SetUp { link } => write!(f, "set {link} up"),
            Op::AddAddr { link, ip, prefix } => write!(f, "add address {ip}/{prefix} dev {link}"),
            Op::DelAddr { link, ip, prefix } => write!(f, "delete address {ip}/{prefix} dev {link}"),
            Op::AddFdb { link, mac, dst } => write!(f, "add fdb {mac} dev {link} dst {dst}"),
            Op::DelFdb { link, mac, dst } => write!(f, "delete fdb {mac} dev {link} dst {dst}"),
            Op::AddNeigh { link, ip, mac } => write!(f, "add neighbour {ip} lladdr {mac} dev {link}"),
            Op::DelNeigh { link, ip, .. } => write!(f, "delete neighbour {ip} dev {link}"),
            Op::AddRoute(r) => write!(f, "add route {r}"),
            Op::DelRoute(r) => write!(f, "delete route {r}"),
            Op::AddRule { priority, iif, table } => write!(f, "add rule {priority} iif {iif} lookup {table}"),
            Op::DelRule { priority, iif, table } => write!(f, "delete rule {priority} iif {iif} lookup {table}"),
            Op::CreateNetns { name } => write!(f, "create netns {name}"),
            Op::DeleteNetns { name } => write!(f, "delete netns {name}"),
            Op::CreateVeth { host, netns, ifname, mtu, .. } => {
                write!(f, "create veth {host} <-> {netns}:{ifname} mtu {mtu}")
            }
            Op::ConfigureTask { netns, ifname, ip, prefix, gateway: Some(gw), mtu, .. } => {
                write!(f, "configure {netns}:{ifname} {ip}/{prefix} via {gw} mtu {mtu}")
            }
            Op::ConfigureTask { netns, ifname, ip, prefix, gateway: None, mtu, .. } => {
                write!(f, "configure {netns}:{ifname} {ip}/{prefix} mtu {mtu}")
            }
        }
    }
}
