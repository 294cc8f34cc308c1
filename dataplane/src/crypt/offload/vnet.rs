//! The virtio-net header (`struct virtio_net_hdr`, and the UDP tunnel variant of Linux 6.17,
//! `virtio_net_hdr_v1_hash_tunnel`) that prefixes every read and write on a TUN device opened
//! with `IFF_VNET_HDR`, and the Internet checksum arithmetic both directions need.

/// The classic header: flags, GSO type, header length, GSO size, checksum start and offset.
pub const HDR_LEN: usize = 10;
/// The header with UDP tunnel offsets (`TUNSETVNETHDRSZ` 24): the classic fields, two bytes
/// of buffer count, eight of hash report, the outer transport and inner network offsets. A
/// device with UDP tunnel GSO on refuses reads and writes with a shorter header.
pub const TUNNEL_HDR_LEN: usize = 24;

pub const F_NEEDS_CSUM: u8 = 1;
/// The outer UDP header of a tunnel GSO packet needs its checksum too.
pub const F_UDP_TUNNEL_CSUM: u8 = 8;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation (Linux 6.2 and later).
pub const GSO_UDP_L4: u8 = 5;
/// The packet is a UDP tunnel's (VXLAN): outer IPv4 or IPv6 (Linux 6.17 and later).
pub const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
pub const GSO_UDP_TUNNEL_IPV6: u8 = 0x40;

/// A virtio-net header's fields (native byte order, as the kernel uses them for a TUN device
/// on a little-endian host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// Tunnel header only: where the outer transport and inner network headers start.
    pub outer_th_offset: u16,
    pub inner_nh_offset: u16,
}

impl VnetHeader {
    /// Reads a header of `bytes.len()` ([`HDR_LEN`] or [`TUNNEL_HDR_LEN`]) bytes.
    pub fn parse(bytes: &[u8]) -> VnetHeader {
        let u16_at = |i: usize| bytes.get(i..i + 2).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
        VnetHeader {
            flags: bytes.first().copied().unwrap_or(0),
            gso_type: bytes.get(1).copied().unwrap_or(0),
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            outer_th_offset: u16_at(20),
            inner_nh_offset: u16_at(22),
        }
    }

    /// Appends the header as `len` bytes ([`HDR_LEN`] or [`TUNNEL_HDR_LEN`]).
    pub fn write(&self, len: usize, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.flags);
        out.push(self.gso_type);
        for field in [self.hdr_len, self.gso_size, self.csum_start, self.csum_offset] {
            out.extend_from_slice(&field.to_ne_bytes());
        }
        out.resize(start + len, 0);
        if len >= TUNNEL_HDR_LEN {
            out[start + 20..start + 22].copy_from_slice(&self.outer_th_offset.to_ne_bytes());
            out[start + 22..start + 24].copy_from_slice(&self.inner_nh_offset.to_ne_bytes());
        }
    }
}

/// The ones'-complement sum of `bytes` as big-endian 16-bit words, added to `initial`.
///
/// Eight bytes at a time: a big-endian 64-bit word is four 16-bit words, and 2^16 is 1 in
/// ones'-complement arithmetic, so its two 32-bit halves can be added whole and folded later.
pub fn sum(bytes: &[u8], initial: u32) -> u32 {
    let mut acc = initial as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = rest.remainder() {
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

/// The pseudo-header sum of a transport header over IPv4 or IPv6: the addresses (from the
/// network header `ip`), the protocol and the transport length.
pub fn pseudo(ip: &[u8], proto: u8, len: usize) -> u32 {
    let addrs = if ip[0] >> 4 == 4 { &ip[12..20] } else { &ip[8..40] };
    sum(addrs, proto as u32 + len as u32)
}

#[cfg(test)]
mod tests {
    use super::{fold, sum};

    /// The sum one 16-bit word at a time, as RFC 1071 writes it.
    fn slow(bytes: &[u8], initial: u32) -> u16 {
        let mut acc = initial as u64;
        for c in bytes.chunks(2) {
            acc += (u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])) as u64;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn the_wide_sum_folds_to_the_word_by_word_sum() {
        let data: Vec<u8> = (0..3001u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 1499, 1500, 3001] {
            for initial in [0, 1, 0xffff, 0x1_2345, 0xffff_ffff] {
                assert_eq!(fold(sum(&data[..len], initial)), slow(&data[..len], initial), "len {len}, initial {initial:#x}");
            }
        }
        let ones = vec![0xff; 65_536];
        assert_eq!(fold(sum(&ones, 0)), slow(&ones, 0));
    }
}
