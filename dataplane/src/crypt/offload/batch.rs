//! Which packets of a burst the kernel can take as one: the pure half of the userspace
//! tunnel's offloads (no I/O, tested on its own).
//!
//! Two batchings, one per direction:
//! - sealed WireGuard datagrams to a peer go out as UDP GSO sends ([`gso_runs`]): one
//!   `sendmsg` with `UDP_SEGMENT` carries up to 64 datagrams of one size to one address, and
//!   the kernel moves them as one buffer until the wire (or, between namespaces, all the way
//!   to the peer's socket, which reads them with UDP GRO);
//! - opened packets for the TUN device: consecutive IPv4 UDP datagrams of one flow and one size
//!   (the encrypted overlay's VXLAN) are written as one super-packet with a virtio-net header
//!   asking for UDP segmentation ([`uso_runs`], [`write_uso`]), so one `write` and one trip
//!   into the stack carry up to 64 of them; the VXLAN device then hands the inner TCP segments
//!   to GRO.

use std::net::SocketAddr;
use std::ops::Range;

/// The kernel's limit on segments in one UDP GSO buffer (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// The most payload one UDP datagram (and so one GSO buffer) can carry over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_535 - 20 - 8;

/// `struct virtio_net_hdr` (10 bytes), the prefix of every read and write on a TUN device
/// opened with `IFF_VNET_HDR`; native byte order, as the kernel reads it on a little-endian
/// host without `TUNSETVNETBE`.
pub const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP segmentation (Linux 6.2 and later).
const VNET_GSO_UDP_L4: u8 = 5;

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

/// What makes IPv4 UDP datagrams one flow for segmentation: the addresses, ports, TOS, TTL
/// and don't-fragment bit (the kernel copies the first header to every segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UdpFlow {
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u8; 4],
    tos: u8,
    ttl: u8,
    df: bool,
}

/// The flow and UDP payload length of an IPv4 UDP datagram that can be segmented: no IP
/// options, not a fragment, lengths that agree with the buffer.
fn udp4_flow(packet: &[u8]) -> Option<(UdpFlow, usize)> {
    if packet.len() < IPV4_HEADER + UDP_HEADER || packet[0] != 0x45 || packet[9] != 17 {
        return None;
    }
    let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    let udp_len = u16::from_be_bytes([packet[24], packet[25]]) as usize;
    // MF set or a fragment offset: a fragment; its UDP header (if any) is not this buffer's.
    if total != packet.len() || frag & 0x3fff != 0 || udp_len != total - IPV4_HEADER {
        return None;
    }
    let flow = UdpFlow {
        src: packet[12..16].try_into().ok()?,
        dst: packet[16..20].try_into().ok()?,
        ports: packet[20..24].try_into().ok()?,
        tos: packet[1],
        ttl: packet[8],
        df: frag & 0x4000 != 0,
    };
    Some((flow, udp_len - UDP_HEADER))
}

/// Runs of consecutive packets that [`write_uso`] can join: IPv4 UDP datagrams of one flow,
/// every payload as long as the first but the last (which may be shorter and not empty), at
/// most [`MAX_SEGMENTS`] and [`MAX_UDP_PAYLOAD`] bytes. Anything else is a run of one.
pub fn uso_runs(packets: &[&[u8]]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < packets.len() {
        let mut end = start + 1;
        if let Some((flow, size)) = udp4_flow(packets[start]).filter(|(_, size)| *size > 0) {
            let mut bytes = size;
            while end < packets.len() && end - start < MAX_SEGMENTS {
                let Some((next, len)) = udp4_flow(packets[end]) else { break };
                if next != flow || len == 0 || len > size || bytes + len > MAX_UDP_PAYLOAD {
                    break;
                }
                bytes += len;
                end += 1;
                if len < size {
                    break;
                }
            }
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// Writes one packet as the kernel reads it from a TUN device with `IFF_VNET_HDR`: a header
/// that asks for nothing, then the packet.
pub fn write_single(packet: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; VNET_HDR_LEN]);
    out.extend_from_slice(packet);
}

/// Joins a run from [`uso_runs`] (two or more packets) into one super-packet with a header
/// asking the kernel to cut it back into those datagrams: the first packet's IP and UDP
/// headers with the lengths of the whole, a fresh IP checksum, the UDP checksum field holding
/// the pseudo-header sum (the kernel completes it per segment), then every payload in order.
pub fn write_uso(run: &[&[u8]], out: &mut Vec<u8>) {
    let first = run[0];
    let seg = first.len() - IPV4_HEADER - UDP_HEADER;
    let payload: usize = run.iter().map(|p| p.len() - IPV4_HEADER - UDP_HEADER).sum();
    let udp_len = UDP_HEADER + payload;
    let total = IPV4_HEADER + udp_len;
    out.clear();
    out.reserve(VNET_HDR_LEN + total);
    out.push(VNET_F_NEEDS_CSUM);
    out.push(VNET_GSO_UDP_L4);
    for field in [IPV4_HEADER + UDP_HEADER, seg, IPV4_HEADER, 6] {
        // hdr_len, gso_size, csum_start, csum_offset
        out.extend_from_slice(&(field as u16).to_ne_bytes());
    }
    let h = out.len();
    out.extend_from_slice(&first[..IPV4_HEADER + UDP_HEADER]);
    out[h + 2..h + 4].copy_from_slice(&(total as u16).to_be_bytes());
    out[h + 10..h + 12].copy_from_slice(&[0, 0]);
    let ip_sum = !fold(sum(&out[h..h + IPV4_HEADER], 0));
    out[h + 10..h + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let u = h + IPV4_HEADER;
    out[u + 4..u + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let pseudo = sum(&first[12..20], 17 + udp_len as u32);
    out[u + 6..u + 8].copy_from_slice(&fold(pseudo).to_be_bytes());
    for p in run {
        out.extend_from_slice(&p[IPV4_HEADER + UDP_HEADER..]);
    }
}

/// Why a packet read from the TUN device cannot be sealed as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("the kernel handed over a GSO packet (type {0}) although no segmentation offload is enabled")]
    Gso(u8),
    #[error("the checksum the kernel left to do lies outside the packet (start {start}, offset {offset}, length {len})")]
    ChecksumOutside { start: usize, offset: usize, len: usize },
}

/// Completes a packet read with its virtio-net header: a checksum the kernel left for the
/// device to fill in is computed here, since the packet is sealed as it is. With no offloads
/// enabled the kernel hands over whole packets, so a GSO packet is an error.
pub fn complete_read(header: &[u8; VNET_HDR_LEN], packet: &mut [u8]) -> Result<(), ReadError> {
    let (flags, gso) = (header[0], header[1]);
    if gso != VNET_GSO_NONE {
        return Err(ReadError::Gso(gso));
    }
    if flags & VNET_F_NEEDS_CSUM != 0 {
        let start = u16::from_ne_bytes([header[6], header[7]]) as usize;
        let offset = u16::from_ne_bytes([header[8], header[9]]) as usize;
        if start + offset + 2 > packet.len() {
            return Err(ReadError::ChecksumOutside { start, offset, len: packet.len() });
        }
        // The field holds the pseudo-header sum; the checksum covers it and the rest.
        let csum = !fold(sum(&packet[start..], 0));
        packet[start + offset..start + offset + 2].copy_from_slice(&csum.to_be_bytes());
    }
    Ok(())
}

/// The ones'-complement sum of `bytes` as big-endian 16-bit words, added to `initial`.
pub fn sum(bytes: &[u8], initial: u32) -> u32 {
    let mut acc = initial as u64;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit ones'-complement sum to 16 bits.
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}
