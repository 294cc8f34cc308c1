//! What a read from the TUN device stands for (pure): a packet whose checksum the kernel left
//! to the device, or a TCP super-packet (TSO, and on Linux 6.17 and later one inside VXLAN:
//! UDP tunnel GSO) to cut into the segments a NIC would have sent. The tunnel seals each
//! segment, so this does what the NIC would: per segment the lengths, IP ids, TCP sequence
//! numbers and flags, and every checksum.

use std::ops::Range;

use super::vnet::{
    fold, pseudo, sum, VnetHeader, F_NEEDS_CSUM, F_UDP_TUNNEL_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_TUNNEL_IPV4,
    GSO_UDP_TUNNEL_IPV6,
};

/// Why a read cannot be sealed as it is (it is dropped, like a corrupt frame on a NIC).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("a GSO type this device did not ask for ({0:#x})")]
    Gso(u8),
    #[error("the checksum the kernel left to do lies outside the packet (start {start}, offset {offset}, length {len})")]
    ChecksumOutside { start: usize, offset: usize, len: usize },
    #[error("a GSO packet whose headers do not add up: {0}")]
    Headers(&'static str),
}

/// A read, checked: either one packet (its checksum completed in place) or a super-packet to
/// cut into [`Read::count`] segments with [`Read::segment`].
#[derive(Debug)]
pub enum Read {
    Single,
    Tcp(TcpGso),
}

/// Where a TCP super-packet's headers are and how to cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpGso {
    /// The outer IP and UDP headers' offsets when the segments travel in a UDP tunnel.
    tunnel: Option<(usize, usize)>,
    /// The (inner) IP header, the TCP header, and where the payload starts.
    ip: usize,
    tcp: usize,
    payload: usize,
    mss: usize,
    outer_csum: bool,
    segments: usize,
}

fn u16_at(p: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([p[i], p[i + 1]])
}

fn put16(p: &mut [u8], i: usize, v: u16) {
    p[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// The length of the IP header at `ip` (IPv4 with options, or IPv6 without extension
/// headers) and its protocol, if it is one.
fn ip_header(p: &[u8], ip: usize) -> Option<(usize, u8)> {
    match p.get(ip)? >> 4 {
        4 if p[ip] & 0x0f >= 5 => Some((((p[ip] & 0x0f) as usize) * 4, *p.get(ip + 9)?)),
        6 => Some((40, *p.get(ip + 6)?)),
        _ => None,
    }
}

impl Read {
    /// Checks a read (`packet` after its header `h`). A plain packet whose checksum the kernel
    /// left to do gets it here.
    pub fn parse(h: &VnetHeader, packet: &mut [u8]) -> Result<Read, ReadError> {
        if h.gso_type == GSO_NONE {
            if h.flags & F_NEEDS_CSUM != 0 {
                let (start, offset) = (h.csum_start as usize, h.csum_offset as usize);
                if start + offset + 2 > packet.len() {
                    return Err(ReadError::ChecksumOutside { start, offset, len: packet.len() });
                }
                // The field holds the pseudo-header sum; the checksum covers it and the rest.
                let csum = !fold(sum(&packet[start..], 0));
                put16(packet, start + offset, csum);
            }
            return Ok(Read::Single);
        }
        let tunnel_bits = h.gso_type & (GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6);
        let inner = h.gso_type & !tunnel_bits;
        if inner != GSO_TCPV4 && inner != GSO_TCPV6 || tunnel_bits == GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6 {
            return Err(ReadError::Gso(h.gso_type));
        }
        let tunnel = if tunnel_bits != 0 {
            let (outer_len, proto) = ip_header(packet, 0).ok_or(ReadError::Headers("no outer IP header"))?;
            let udp = h.outer_th_offset as usize;
            if proto != 17 || udp != outer_len {
                return Err(ReadError::Headers("the outer transport is not UDP right after the outer IP header"));
            }
            Some((0, udp))
        } else {
            None
        };
        let ip = if tunnel.is_some() { h.inner_nh_offset as usize } else { 0 };
        let (ip_len, proto) = ip_header(packet, ip).ok_or(ReadError::Headers("no IP header where the TCP segments' starts"))?;
        let tcp = ip + ip_len;
        if proto != 6 || tcp != h.csum_start as usize || tcp + 20 > packet.len() {
            return Err(ReadError::Headers("the TCP header is not where the checksum starts"));
        }
        let payload = tcp + ((packet[tcp + 12] >> 4) as usize) * 4;
        let mss = h.gso_size as usize;
        if payload > packet.len() || mss == 0 {
            return Err(ReadError::Headers("no payload or no segment size"));
        }
        let segments = (packet.len() - payload).div_ceil(mss).max(1);
        let outer_csum = h.flags & F_UDP_TUNNEL_CSUM != 0;
        Ok(Read::Tcp(TcpGso { tunnel, ip, tcp, payload, mss, outer_csum, segments }))
    }
}

impl TcpGso {
    pub fn count(&self) -> usize {
        self.segments
    }

    /// The longest segment's length (headers and a full segment of payload).
    pub fn max_len(&self) -> usize {
        self.payload + self.mss
    }

    /// The payload bytes of segment `i`.
    fn chunk(&self, len: usize, i: usize) -> Range<usize> {
        let start = self.payload + i * self.mss;
        start..(start + self.mss).min(len)
    }

    /// Writes segment `i` of `packet` into `out` (which must hold it); returns its length, or
    /// `None` when `out` is too short.
    pub fn segment(&self, packet: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        let chunk = self.chunk(packet.len(), i);
        let len = self.payload + chunk.len();
        let out = out.get_mut(..len)?;
        out[..self.payload].copy_from_slice(&packet[..self.payload]);
        out[self.payload..].copy_from_slice(&packet[chunk]);
        if let Some((outer_ip, udp)) = self.tunnel {
            fix_ip(out, outer_ip, len - outer_ip, i);
            put16(out, udp + 4, (len - udp) as u16);
        }
        fix_ip(out, self.ip, len - self.ip, i);
        let tcp = self.tcp;
        let seq = u32::from_be_bytes([packet[tcp + 4], packet[tcp + 5], packet[tcp + 6], packet[tcp + 7]]);
        out[tcp + 4..tcp + 8].copy_from_slice(&seq.wrapping_add((i * self.mss) as u32).to_be_bytes());
        if i > 0 {
            out[tcp + 13] &= !0x80; // CWR only on the first
        }
        if i + 1 < self.segments {
            out[tcp + 13] &= !0x09; // FIN and PSH only on the last
        }
        put16(out, tcp + 16, 0);
        let c = !fold(sum(&out[tcp..], pseudo(&out[self.ip..], 6, len - tcp)));
        put16(out, tcp + 16, c);
        // The outer UDP checksum covers the inner segment: last.
        if let (Some((outer_ip, udp)), true) = (self.tunnel, self.outer_csum) {
            put16(out, udp + 6, 0);
            let c = !fold(sum(&out[udp..], pseudo(&out[outer_ip..], 17, len - udp)));
            put16(out, udp + 6, if c == 0 { 0xffff } else { c });
        }
        Some(len)
    }
}

/// Sets the length of the IP header at `ip` to a packet of `len` bytes from there; an IPv4
/// header also gets the `i`th next id and a fresh checksum.
fn fix_ip(p: &mut [u8], ip: usize, len: usize, i: usize) {
    if p[ip] >> 4 == 4 {
        put16(p, ip + 2, len as u16);
        put16(p, ip + 4, u16_at(p, ip + 4).wrapping_add(i as u16));
        put16(p, ip + 10, 0);
        let hl = ((p[ip] & 0x0f) as usize) * 4;
        let c = !fold(sum(&p[ip..ip + hl], 0));
        put16(p, ip + 10, c);
    } else {
        put16(p, ip + 4, (len - 40) as u16);
    }
}
