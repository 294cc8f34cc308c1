//! Which packets of a burst the kernel can take as one: the pure half of the userspace
//! tunnel's offloads (no I/O, tested on its own).
//!
//! Two batchings, one per direction:
//! - sealed WireGuard datagrams to a peer go out as UDP GSO sends ([`gso_runs`]): one
//!   `sendmsg` with `UDP_SEGMENT` carries up to 64 datagrams of one size to one address, and
//!   the kernel moves them as one buffer until the wire (or, between namespaces, all the way
//!   to the peer's socket, which reads them with UDP GRO);
//! - opened packets for the TUN device ([`write_runs`], [`write_joined`]): consecutive IPv4
//!   UDP datagrams of one flow and one size (the encrypted overlay's VXLAN) are written as one
//!   super-packet with a virtio-net header asking for UDP segmentation, so one `write` and one
//!   trip into the stack carry up to 64 of them (the VXLAN device then hands the inner TCP
//!   segments to GRO); consecutive TCP segments of one stream (TCP sent straight through the
//!   tunnel) are joined as GRO would have joined them, and the stack takes them as one.

use std::net::SocketAddr;
use std::ops::Range;

use super::vnet::{fold, sum, VnetHeader, F_NEEDS_CSUM, GSO_TCPV4, GSO_UDP_L4};

/// The kernel's limit on segments in one UDP GSO buffer (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// The most payload one UDP datagram (and so one GSO buffer) can carry over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_535 - 20 - 8;

const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// Runs of consecutive datagrams (`(length, destination)`) that can go as one UDP GSO send:
/// one destination, every datagram as long as the first but the last, which may be shorter,
/// at most [`MAX_SEGMENTS`] and [`MAX_UDP_PAYLOAD`] bytes. A run of one is an ordinary send.
pub fn gso_runs(datagrams: &[(usize, SocketAddr)]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < datagrams.len() {
        let (size, dest) = datagrams[start];
        let mut end = start + 1;
        let mut bytes = size;
        while end < datagrams.len() && end - start < MAX_SEGMENTS && size > 0 {
            let (len, to) = datagrams[end];
            if to != dest || len > size || bytes + len > MAX_UDP_PAYLOAD {
                break;
            }
            bytes += len;
            end += 1;
            if len < size {
                break; // a shorter datagram ends its run
            }
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// How a run of opened packets goes into the TUN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// UDP datagrams, cut back into datagrams by the kernel (USO, Linux 6.2 and later): the
    /// encrypted overlay's VXLAN.
    Udp,
    /// TCP segments of one stream in sequence, taken by the stack as one received segment
    /// (as GRO would have made it): TCP sent straight through the tunnel.
    Tcp,
}

/// A run of consecutive packets and how it is written: joined, or (`None`) one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub packets: Range<usize>,
    pub join: Option<Join>,
}

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// An IPv4 packet that can be part of a joined run: no IP options, not a fragment, lengths
/// that agree with the buffer, UDP or TCP with a payload. Its transport header length and
/// payload length.
#[derive(Clone, Copy)]
struct Segment<'a> {
    packet: &'a [u8],
    join: Join,
    header: usize,
    payload: usize,
}

impl<'a> Segment<'a> {
    fn parse(packet: &'a [u8]) -> Option<Segment<'a>> {
        if packet.len() < IPV4_HEADER + UDP_HEADER || packet[0] != 0x45 {
            return None;
        }
        let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
        let frag = u16::from_be_bytes([packet[6], packet[7]]);
        // MF set or a fragment offset: a fragment, whose transport header is not this buffer's.
        if total != packet.len() || frag & 0x3fff != 0 {
            return None;
        }
        let (join, header) = match packet[9] {
            17 => {
                let udp_len = u16::from_be_bytes([packet[24], packet[25]]) as usize;
                (udp_len == total - IPV4_HEADER).then_some((Join::Udp, UDP_HEADER))?
            }
            6 if packet.len() >= IPV4_HEADER + 20 => {
                let header = (packet[32] >> 4) as usize * 4;
                // Only ACK, or ACK and PSH: SYN, FIN, RST, URG and ECN signals go alone.
                let flags = packet[33];
                (header >= 20 && flags & !TCP_PSH == TCP_ACK && IPV4_HEADER + header <= total).then_some((Join::Tcp, header))?
            }
            _ => return None,
        };
        let payload = total - IPV4_HEADER - header;
        (payload > 0).then_some(Segment { packet, join, header, payload })
    }

    fn seq(&self) -> u32 {
        let p = self.packet;
        u32::from_be_bytes([p[24], p[25], p[26], p[27]])
    }

    /// Whether `next` can follow `self` (the run's last) in the run begun by `first`: the
    /// kernel copies the first packet's headers to every segment, so everything in them must
    /// agree but the lengths, the IP id and checksum, the TCP sequence number, checksum and
    /// PSH; and TCP must be in sequence, and not after a PSH.
    fn continues(first: &Segment, last: &Segment, next: &Segment) -> bool {
        let (a, b) = (first.packet, next.packet);
        let same_ip = a[1] == b[1] && a[6] & 0x40 == b[6] & 0x40 && a[8] == b[8] && a[9] == b[9] && a[12..20] == b[12..20];
        if !same_ip || next.join != first.join || next.header != first.header || next.payload > first.payload {
            return false;
        }
        match first.join {
            Join::Udp => a[20..24] == b[20..24],
            Join::Tcp => {
                let h = IPV4_HEADER + first.header;
                // ports, ack, flags but PSH, window, urgent pointer, options
                a[20..24] == b[20..24]
                    && a[28..33] == b[28..33]
                    && a[34..36] == b[34..36]
                    && a[38..h] == b[38..h]
                    && last.packet[33] & TCP_PSH == 0
                    && last.seq().wrapping_add(last.payload as u32) == next.seq()
            }
        }
    }
}

/// Runs of consecutive packets for [`write_joined`]: IPv4 UDP datagrams of one flow (only
/// when `udp`: the kernel can segment UDP), or IPv4 TCP segments of one stream in sequence;
/// every payload as long as the first but the last, which may be shorter; at most
/// [`MAX_SEGMENTS`] packets and 64 KiB. Anything else is written on its own.
pub fn write_runs(packets: &[&[u8]], udp: bool) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < packets.len() {
        let mut end = start + 1;
        let first = Segment::parse(packets[start]).filter(|s| udp || s.join == Join::Tcp);
        if let Some(first) = &first {
            let limit = 65_535 - IPV4_HEADER - first.header;
            let mut bytes = first.payload;
            let mut last = *first;
            while end < packets.len() && end - start < MAX_SEGMENTS {
                let Some(next) = Segment::parse(packets[end]) else { break };
                if !Segment::continues(first, &last, &next) || bytes + next.payload > limit {
                    break;
                }
                bytes += next.payload;
                end += 1;
                if next.payload < first.payload {
                    break; // a shorter segment ends its run
                }
                last = next;
            }
        }
        let join = if end - start > 1 { first.map(|f| f.join) } else { None };
        runs.push(Run { packets: start..end, join });
        start = end;
    }
    runs
}

/// Writes one packet as the kernel reads it from a TUN device with `IFF_VNET_HDR`: a header
/// of `hdr` bytes that asks for nothing, then the packet.
pub fn write_single(hdr: usize, packet: &[u8], out: &mut Vec<u8>) {
    out.clear();
    VnetHeader::default().write(hdr, out);
    out.extend_from_slice(packet);
}

/// Joins a run from [`write_runs`] (two or more packets) into one super-packet: the first
/// packet's headers with the lengths of the whole and a fresh IP checksum, the transport
/// checksum field holding the pseudo-header sum (left for the kernel to complete), TCP's PSH
/// from the last segment, then every payload in order; and a header saying how to take it
/// (UDP: cut back into the datagrams; TCP: one received segment).
pub fn write_joined(hdr: usize, join: Join, run: &[&[u8]], out: &mut Vec<u8>) {
    let first = run[0];
    let (proto, gso_type, header, csum_offset) = match join {
        Join::Udp => (17u8, GSO_UDP_L4, UDP_HEADER, 6),
        Join::Tcp => (6, GSO_TCPV4, ((first[32] >> 4) as usize) * 4, 16),
    };
    let headers = IPV4_HEADER + header;
    let seg = first.len() - headers;
    let payload: usize = run.iter().map(|p| p.len() - headers).sum();
    let l4_len = header + payload;
    let total = IPV4_HEADER + l4_len;
    out.clear();
    out.reserve(hdr + total);
    let vnet = VnetHeader {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: headers as u16,
        gso_size: seg as u16,
        csum_start: IPV4_HEADER as u16,
        csum_offset: csum_offset as u16,
        ..VnetHeader::default()
    };
    vnet.write(hdr, out);
    let h = out.len();
    out.extend_from_slice(&first[..headers]);
    out[h + 2..h + 4].copy_from_slice(&(total as u16).to_be_bytes());
    out[h + 10..h + 12].copy_from_slice(&[0, 0]);
    let ip_sum = !fold(sum(&out[h..h + IPV4_HEADER], 0));
    out[h + 10..h + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = h + IPV4_HEADER;
    match join {
        Join::Udp => out[t + 4..t + 6].copy_from_slice(&(l4_len as u16).to_be_bytes()),
        Join::Tcp => out[t + 13] |= run[run.len() - 1][33] & TCP_PSH,
    }
    let pseudo = sum(&first[12..20], proto as u32 + l4_len as u32);
    out[t + csum_offset..t + csum_offset + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    for p in run {
        out.extend_from_slice(&p[headers..]);
    }
}
