//! The kernel features shoal's data paths use, and what a probe found about one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// VXLAN devices: the overlay's tunnel.
    Vxlan,
    /// Linux bridges: one per overlay network on every node.
    Bridge,
    /// veth pairs: how tasks attach to a network.
    Veth,
    /// TUN devices: userspace WireGuard (boringtun).
    Tun,
    /// nftables with NAT chains: the nftables load balancer.
    Nftables,
    /// cgroup sock_addr eBPF programs (connect4/sendmsg4...): the eBPF VIP balancer.
    EbpfSockAddr,
    /// tc cls_bpf programs: the eBPF NAT for published ports.
    EbpfTc,
    /// IPVS (generic netlink family "IPVS"): the IPVS load balancer.
    Ipvs,
    /// ESP in XFRM with AES-GCM: IPsec encryption.
    Esp,
    /// Kernel WireGuard links.
    WireGuard,
}

impl Feature {
    /// In report order.
    pub const ALL: [Feature; 10] = [
        Feature::Vxlan,
        Feature::Bridge,
        Feature::Veth,
        Feature::Tun,
        Feature::Nftables,
        Feature::EbpfSockAddr,
        Feature::EbpfTc,
        Feature::Ipvs,
        Feature::Esp,
        Feature::WireGuard,
    ];

    /// What shoal uses it for.
    pub fn purpose(self) -> &'static str {
        match self {
            Feature::Vxlan => "overlay tunnel",
            Feature::Bridge => "overlay network per node",
            Feature::Veth => "task attachment",
            Feature::Tun => "userspace WireGuard (boringtun)",
            Feature::Nftables => "nftables load balancer",
            Feature::EbpfSockAddr => "eBPF load balancer: VIPs (cgroup sock_addr)",
            Feature::EbpfTc => "eBPF load balancer: published ports (tc cls_bpf)",
            Feature::Ipvs => "IPVS load balancer",
            Feature::Esp => "IPsec encryption (XFRM ESP, AES-GCM)",
            Feature::WireGuard => "kernel WireGuard encryption",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::Vxlan => "vxlan",
            Feature::Bridge => "bridge",
            Feature::Veth => "veth",
            Feature::Tun => "tun",
            Feature::Nftables => "nftables",
            Feature::EbpfSockAddr => "ebpf-sockaddr",
            Feature::EbpfTc => "ebpf-tc",
            Feature::Ipvs => "ipvs",
            Feature::Esp => "esp",
            Feature::WireGuard => "wireguard",
        })
    }
}

/// Why one probe failed: the kernel's or the tool's reason. Details are text where the
/// underlying error is not Clone (findings are kept and compared).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The kernel refused the netlink request (its message, with the extended ack if any).
    #[error("{0}")]
    Netlink(String),
    #[error("open this namespace: {0}")]
    Namespace(String),
    #[error("cannot run {tool}: {detail}")]
    CannotRun { tool: String, detail: String },
    #[error("write to {tool}: {detail}")]
    Write { tool: String, detail: String },
    #[error("wait for {tool}: {detail}")]
    Wait { tool: String, detail: String },
    /// The tool ran and refused: its first line of complaint.
    #[error("{tool} {command}: {complaint}")]
    Refused { tool: String, command: String, complaint: String },
    #[error(transparent)]
    Ebpf(#[from] shoal_ebpf::PartUnavailable),
    #[error(transparent)]
    Ipvs(#[from] shoal_dataplane::lb::ipvs::FamilyError),
    #[error("not probed")]
    NotProbed,
}

/// One probe's answer: `Err` holds the kernel's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub feature: Feature,
    pub result: Result<(), ProbeError>,
}

impl Finding {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// Whether `feature` was found working (a feature nobody probed counts as missing).
pub fn has(findings: &[Finding], feature: Feature) -> bool {
    findings.iter().any(|f| f.feature == feature && f.ok())
}

/// Why `feature` is missing, if it is.
pub fn why_not(findings: &[Finding], feature: Feature) -> Option<ProbeError> {
    match findings.iter().find(|f| f.feature == feature) {
        None => Some(ProbeError::NotProbed),
        Some(Finding { result: Ok(()), .. }) => None,
        Some(Finding { result: Err(e), .. }) => Some(e.clone()),
    }
}
