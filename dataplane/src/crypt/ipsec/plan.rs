//! The pure half of IPsec: the SAs and policies a node wants (from the desired state), the
//! difference from what the kernel's XFRM tables hold, and key rotation as timed steps. No I/O.
//!
//! Every other node is a peer: per peer two ESP transport-mode SAs (AES-256-GCM, rfc4106, 128-bit
//! ICV), one per direction, and two policies that make VXLAN between the two underlay addresses
//! on [`VXLAN_PORT`] ESP-only (`level required`: no SA, no packet). IPsec networks' VXLAN uses
//! its own port because an XFRM selector sees addresses, protocol and ports but not the VNI:
//! on 4789 the policies would also encrypt the plain networks between the same nodes (and break
//! their MTU), and nothing could tell their plaintext from a forged encrypted VNI's.
//!
//! Rotation loses nothing without a round trip between the two ends: a new pair key (a new
//! generation: new SPIs, new keys) adds the inbound SA at once; the outbound SA of the new
//! generation is added only when that inbound SA has been in the kernel for [`GRACE_SECS`] (the
//! kernel sends with the newest SA of a policy, so adding it is the switch); the old
//! generation's SAs go when the new outbound SA has been there another [`GRACE_SECS`]. Both
//! ends get the new key within a second or so of each other, far inside the grace. The times
//! come from the kernel (an SA's add time), so a restarted agent resumes where it was.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use super::derive::{sa_key, spi, SaKey};
use crate::state::{DesiredNode, Encryption};

/// The UDP port of IPsec networks' VXLAN (plain networks and WireGuard's use 4789). Not
/// assigned by IANA; 4790 would be VXLAN-GPE.
pub const VXLAN_PORT: u16 = 4799;
/// The request id on every SA and policy template shoal makes: it tells ours from others'.
pub const REQID: u32 = 0x5348_4f41; // "SHOA"
/// Seconds between the steps of a rotation (see the module's text).
pub const GRACE_SECS: u64 = 10;
/// The AEAD every SA uses, with its ICV length in bits (the full 16 bytes).
pub const AEAD: &str = "rfc4106(gcm(aes))";
pub const ICV_BITS: u32 = 128;
/// Priority of our policies (lower wins in the kernel): ahead of a catch-all an admin may have.
pub const PRIORITY: u32 = 1000;

/// What ESP in transport mode adds to a VXLAN packet with AES-GCM, before padding: ESP header
/// (SPI 4 + sequence 4) 8, IV 8, pad length and next header 2, ICV 16. The outer IP header is
/// the packet's own. ESP pads its payload plus those 2 bytes to a multiple of 4.
pub const ESP_FIXED_OVERHEAD: u32 = 8 + 8 + 2 + 16;

/// The MTU of an IPsec network on an underlay of `underlay` bytes: the largest inner packet
/// whose VXLAN frame (50 bytes more) fits the underlay once ESP wrapped it. The inner packet
/// and the ESP payload (UDP + VXLAN + Ethernet = 30 bytes, then 2 trailer bytes) differ by 32,
/// so the padding to 4 is that of the inner packet: round down to 4.
pub fn network_mtu(underlay: u32) -> u32 {
    underlay.saturating_sub(crate::state::VXLAN_OVERHEAD + ESP_FIXED_OVERHEAD) & !3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    In,
    Out,
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::In => "in",
            Dir::Out => "out",
        })
    }
}

/// One SA as the plan wants it. Its key never reaches a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub key: SaKey,
}

/// What this node wants with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSas {
    pub node: String,
    pub inbound: Sa,
    pub outbound: Sa,
}

/// Every SA and policy this node wants; `me` is its underlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub me: Ipv4Addr,
    pub peers: Vec<PeerSas>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("nodes[{index}].wireguard.preshared_key: node '{node}' has no pair key with this node, and network '{network}' is encrypted with IPsec: give it the pair key the managers issue (`preshared_key`)")]
    NoPairKey { index: usize, node: String, network: String },
    #[error("node '{0}' is not in `nodes`: add this node with its underlay address")]
    NoSelf(String),
}

/// Whether any network asks for IPsec.
pub fn wanted(state: &DesiredNode) -> bool {
    state.networks.iter().any(|n| n.encrypted == Some(Encryption::Ipsec))
}

/// The SAs and policies `state` asks for: None when no network is encrypted with IPsec. Every
/// other node is a peer (a task may land anywhere); each needs its pair key.
pub fn desired(state: &DesiredNode) -> Result<Option<Want>, PlanError> {
    let Some(network) = state.networks.iter().find(|n| n.encrypted == Some(Encryption::Ipsec)) else {
        return Ok(None);
    };
    let me = state.self_node().ok_or_else(|| PlanError::NoSelf(state.node.clone()))?.address;
    let mut peers = Vec::new();
    for (index, n) in state.nodes.iter().enumerate().filter(|(_, n)| n.name != state.node) {
        let key = n.wireguard.as_ref().and_then(|w| w.preshared_key.as_ref()).ok_or_else(|| PlanError::NoPairKey {
            index,
            node: n.name.clone(),
            network: network.name.clone(),
        })?;
        let sa = |src, dst| Sa { src, dst, spi: spi(key, src, dst), key: sa_key(key, src, dst) };
        peers.push(PeerSas { node: n.name.clone(), inbound: sa(n.address, me), outbound: sa(me, n.address) });
    }
    Ok(Some(Want { me, peers }))
}

/// An SA the kernel holds (ours: [`REQID`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SaSeen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    /// When it was added, seconds since the epoch (the kernel's `curlft.add_time`).
    pub added: u64,
}

/// A policy the kernel holds (ours: a template with [`REQID`]), by its selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicySeen {
    pub dir: Dir,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub sas: Vec<SaSeen>,
    pub policies: BTreeSet<PolicySeen>,
}

/// One change to the XFRM tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XfrmOp {
    AddSa {
        sa: Sa,
        dir: Dir,
        node: String,
    },
    DelSa {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        spi: u32,
    },
    /// Add or replace the policy making VXLAN `src` -> `dst` ESP-only.
    SetPolicy(PolicySeen),
    DelPolicy(PolicySeen),
}

impl fmt::Display for XfrmOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XfrmOp::AddSa { sa, dir, node } => {
                write!(f, "xfrm: add {dir}bound ESP SA {}->{} spi 0x{:08x} ({AEAD}, peer {node})", sa.src, sa.dst, sa.spi)
            }
            XfrmOp::DelSa { src, dst, spi } => write!(f, "xfrm: delete ESP SA {src}->{dst} spi 0x{spi:08x}"),
            XfrmOp::SetPolicy(p) => {
                write!(f, "xfrm: policy {} {}->{} udp dport {VXLAN_PORT}: ESP transport required", p.dir, p.src, p.dst)
            }
            XfrmOp::DelPolicy(p) => write!(f, "xfrm: delete policy {} {}->{} udp dport {VXLAN_PORT}", p.dir, p.src, p.dst),
        }
    }
}

/// The changes to make now, and when the next pass is due (a rotation step waiting out its
/// grace), in seconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<XfrmOp>,
    pub next_step_at: Option<u64>,
}

/// The changes that bring the kernel from `have` to `want` (None: remove all of ours) at `now`
/// (seconds since the epoch). Inbound SAs come before the policies, outbound SAs after them, so
/// no moment sends in the clear or drops what the peer already encrypts.
pub fn plan(want: Option<&Want>, have: &Observed, now: u64) -> Plan {
    let mut ops = Vec::new();
    let mut next: Option<u64> = None;
    let mut due = |at: u64| next = Some(next.map_or(at, |n| n.min(at)));
    let mut kept: BTreeSet<(Ipv4Addr, Ipv4Addr, u32)> = BTreeSet::new();
    let mut policies = BTreeSet::new();
    let seen = |src, dst, spi| have.sas.iter().find(|s| (s.src, s.dst, s.spi) == (src, dst, spi));
    let mut adds_out = Vec::new();
    for p in want.map(|w| w.peers.as_slice()).unwrap_or_default() {
        let (inb, outb) = (&p.inbound, &p.outbound);
        kept.insert((inb.src, inb.dst, inb.spi));
        kept.insert((outb.src, outb.dst, outb.spi));
        let inbound_added = match seen(inb.src, inb.dst, inb.spi) {
            Some(s) => s.added,
            None => {
                ops.push(XfrmOp::AddSa { sa: inb.clone(), dir: Dir::In, node: p.node.clone() });
                now
            }
        };
        policies.insert(PolicySeen { dir: Dir::In, src: inb.src, dst: inb.dst });
        policies.insert(PolicySeen { dir: Dir::Out, src: outb.src, dst: outb.dst });
        let old: Vec<&SaSeen> = have
            .sas
            .iter()
            .filter(|s| {
                ((s.src, s.dst) == (inb.src, inb.dst) && s.spi != inb.spi) || ((s.src, s.dst) == (outb.src, outb.dst) && s.spi != outb.spi)
            })
            .collect();
        let older_outbound = old.iter().any(|s| (s.src, s.dst) == (outb.src, outb.dst));
        match seen(outb.src, outb.dst, outb.spi) {
            // Rotation, step 3: the old generation goes once the peer has had time to switch.
            Some(s) if !old.is_empty() => {
                // (Not kept: the sweep below deletes them.)
                let at = s.added.saturating_add(GRACE_SECS);
                if now < at {
                    due(at);
                    for o in &old {
                        kept.insert((o.src, o.dst, o.spi));
                    }
                }
            }
            Some(_) => {}
            // Step 2: send with the new generation once the peer has had time to receive it.
            None if older_outbound && now < inbound_added.saturating_add(GRACE_SECS) => {
                due(inbound_added.saturating_add(GRACE_SECS));
                for o in &old {
                    kept.insert((o.src, o.dst, o.spi));
                }
            }
            None => {
                adds_out.push(XfrmOp::AddSa { sa: outb.clone(), dir: Dir::Out, node: p.node.clone() });
                if older_outbound {
                    due(now.saturating_add(GRACE_SECS));
                }
                for o in &old {
                    kept.insert((o.src, o.dst, o.spi));
                }
            }
        }
    }
    for s in &have.sas {
        if !kept.contains(&(s.src, s.dst, s.spi)) {
            ops.push(XfrmOp::DelSa { src: s.src, dst: s.dst, spi: s.spi });
        }
    }
    for p in have.policies.difference(&policies) {
        ops.push(XfrmOp::DelPolicy(*p));
    }
    for p in policies.difference(&have.policies) {
        ops.push(XfrmOp::SetPolicy(*p));
    }
    ops.extend(adds_out);
    Plan { ops, next_step_at: next }
}
