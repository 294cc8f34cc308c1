use super::segment::*;
use super::vnet::*;

/// An IPv4 header of `total` bytes for `proto`, id 0x1234, DF.
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, total: usize) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let c = !fold(sum(&p, 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// A TCP header (timestamps option: 32 bytes) with `flags`, seq 1000, the checksum field
/// holding the pseudo-header sum as the kernel leaves it for the device.
fn tcp_header(flags: u8) -> Vec<u8> {
    let mut t = vec![0x14, 0x51, 0x9c, 0x40];
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&777u32.to_be_bytes());
    t.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
    t.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    t
}

const IN_SRC: [u8; 4] = [10, 0, 9, 2];
const IN_DST: [u8; 4] = [10, 0, 9, 3];

/// An inner IPv4 TCP super-packet of `payload` bytes.
fn inner_tcp(payload: usize, flags: u8) -> Vec<u8> {
    let mut p = ipv4(IN_SRC, IN_DST, 6, 20 + 32 + payload);
    let mut t = tcp_header(flags);
    let ps = fold(sum(&p[12..20], 6 + (32 + payload) as u32));
    t[16..18].copy_from_slice(&ps.to_be_bytes());
    p.extend_from_slice(&t);
    p.extend((0..payload).map(|i| (i % 251) as u8));
    p
}

fn tso_header(mss: u16, tunnel: Option<(u16, u16, u16)>) -> VnetHeader {
    let (gso, start, outer, inner) = match tunnel {
        Some((start, outer, inner)) => (GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4, start, outer, inner),
        None => (GSO_TCPV4, 20, 0, 0),
    };
    VnetHeader {
        flags: F_NEEDS_CSUM,
        gso_type: gso,
        hdr_len: start + 32,
        gso_size: mss,
        csum_start: start,
        csum_offset: 16,
        outer_th_offset: outer,
        inner_nh_offset: inner,
    }
}

fn cut(h: &VnetHeader, packet: &mut [u8]) -> Vec<Vec<u8>> {
    let Read::Tcp(gso) = Read::parse(h, packet).expect("parse") else { panic!("not a super-packet") };
    (0..gso.count())
        .map(|i| {
            let mut out = vec![0; 4096];
            let n = gso.segment(packet, i, &mut out).expect("fits");
            out.truncate(n);
            out
        })
        .collect()
}

/// Checks an IPv4 header at `ip` of a packet whose length from there is `len`.
fn check_ipv4(p: &[u8], ip: usize, len: usize, id: u16) {
    assert_eq!(u16::from_be_bytes([p[ip + 2], p[ip + 3]]) as usize, len, "IP total length");
    assert_eq!(u16::from_be_bytes([p[ip + 4], p[ip + 5]]), id, "IP id");
    assert_eq!(fold(sum(&p[ip..ip + 20], 0)), 0xffff, "IP header checksum");
}

/// Checks the TCP segment at `tcp` (IP header at `ip`): a valid checksum; returns seq and flags.
fn check_tcp(p: &[u8], ip: usize, tcp: usize) -> (u32, u8) {
    let len = p.len() - tcp;
    assert_eq!(fold(sum(&p[tcp..], sum(&p[ip + 12..ip + 20], 6 + len as u32))), 0xffff, "TCP checksum");
    (u32::from_be_bytes([p[tcp + 4], p[tcp + 5], p[tcp + 6], p[tcp + 7]]), p[tcp + 13])
}

#[test]
fn a_tso_packet_becomes_segments_a_nic_would_have_sent() {
    let mut p = inner_tcp(2500, 0x10 | 0x08 | 0x01 | 0x80); // ACK PSH FIN CWR
    let original = p.clone();
    let segments = cut(&tso_header(1000, None), &mut p);
    assert_eq!(segments.len(), 3);
    let mut payload = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        check_ipv4(s, 0, s.len(), 0x1234 + i as u16);
        let (seq, flags) = check_tcp(s, 0, 20);
        assert_eq!(seq, 1000 + 1000 * i as u32);
        let want = match i {
            0 => 0x10 | 0x80,
            1 => 0x10,
            _ => 0x10 | 0x08 | 0x01,
        };
        assert_eq!(flags, want, "segment {i}'s flags");
        assert_eq!((&s[20..24], &s[28..32]), (&original[20..24], &original[28..32]), "ports and ack");
        payload.extend_from_slice(&s[52..]);
    }
    assert_eq!(segments[2].len(), 52 + 500);
    assert_eq!(payload, original[52..]);
}

/// VXLAN (outer IPv4, UDP 4789, VXLAN header, inner Ethernet) around an inner TCP super-packet.
fn vxlan(inner: &[u8], udp_check: bool) -> Vec<u8> {
    let udp_len = 8 + 8 + 14 + inner.len();
    let mut p = ipv4([10, 250, 0, 1], [10, 250, 0, 2], 17, 20 + udp_len);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&4789u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    if udp_check {
        let ps = fold(sum(&p[12..20], 17 + udp_len as u32));
        p[26..28].copy_from_slice(&ps.to_be_bytes());
    }
    p.extend_from_slice(&[0x08, 0, 0, 0, 0, 0x10, 0x69, 0]); // VNI 4201
    p.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
    p.extend_from_slice(inner);
    p
}

#[test]
fn a_vxlan_tso_packet_becomes_vxlan_datagrams_each_with_one_segment() {
    for udp_check in [false, true] {
        let inner = inner_tcp(4000, 0x10);
        let mut p = vxlan(&inner, udp_check);
        let mut h = tso_header(1388, Some((20 + 8 + 8 + 14 + 20, 20, 50)));
        if udp_check {
            h.flags |= F_UDP_TUNNEL_CSUM;
        }
        let segments = cut(&h, &mut p);
        assert_eq!(segments.len(), 3);
        let mut payload = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            check_ipv4(s, 0, s.len(), 0x1234 + i as u16);
            assert_eq!(u16::from_be_bytes([s[24], s[25]]) as usize, s.len() - 20, "UDP length");
            let udp_csum = u16::from_be_bytes([s[26], s[27]]);
            if udp_check {
                assert_eq!(fold(sum(&s[20..], sum(&s[12..20], 17 + (s.len() - 20) as u32))), 0xffff, "outer UDP checksum");
            } else {
                assert_eq!(udp_csum, 0, "no outer checksum asked for, none made");
            }
            assert_eq!(s[28..50], p[28..50], "VXLAN and inner Ethernet headers");
            check_ipv4(s, 50, s.len() - 50, 0x1234 + i as u16);
            let (seq, _) = check_tcp(s, 50, 70);
            assert_eq!(seq, 1000 + 1388 * i as u32);
            payload.extend_from_slice(&s[102..]);
        }
        assert_eq!(payload, inner[52..]);
    }
}

#[test]
fn an_ipv6_tso_packet_gets_payload_lengths_and_checksums() {
    let payload = 3000;
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((32 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[6, 64]);
    p.extend_from_slice(&[0xfd; 16]);
    p.extend_from_slice(&[0xfe; 16]);
    p.extend_from_slice(&tcp_header(0x10));
    p.extend((0..payload).map(|i| i as u8));
    let h = VnetHeader { gso_type: GSO_TCPV6, csum_start: 40, ..tso_header(1400, None) };
    let segments = cut(&h, &mut p);
    assert_eq!(segments.len(), 3);
    for s in &segments {
        assert_eq!(u16::from_be_bytes([s[4], s[5]]) as usize, s.len() - 40, "payload length");
        let len = s.len() - 40;
        assert_eq!(fold(sum(&s[40..], sum(&s[8..40], 6 + len as u32))), 0xffff, "TCP checksum");
    }
}

#[test]
fn a_packet_with_a_checksum_left_to_do_gets_it() {
    let mut p = inner_tcp(101, 0x18); // odd length: the last byte is padded
    let h = VnetHeader { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 16, ..VnetHeader::default() };
    assert!(matches!(Read::parse(&h, &mut p), Ok(Read::Single)));
    check_tcp(&p, 0, 20);
    let plain = inner_tcp(10, 0x10);
    let mut same = plain.clone();
    assert!(matches!(Read::parse(&VnetHeader::default(), &mut same), Ok(Read::Single)));
    assert_eq!(same, plain, "nothing asked, nothing touched");
}

#[test]
fn reads_that_do_not_add_up_are_refused() {
    let mut p = inner_tcp(3000, 0x10);
    let uso = VnetHeader { gso_type: GSO_UDP_L4, ..tso_header(1000, None) };
    assert_eq!(Read::parse(&uso, &mut p).unwrap_err(), ReadError::Gso(GSO_UDP_L4));
    let outside = VnetHeader { flags: F_NEEDS_CSUM, csum_start: 5000, csum_offset: 16, ..VnetHeader::default() };
    assert!(matches!(Read::parse(&outside, &mut p), Err(ReadError::ChecksumOutside { .. })));
    let wrong_start = VnetHeader { csum_start: 24, ..tso_header(1000, None) };
    assert!(matches!(Read::parse(&wrong_start, &mut p), Err(ReadError::Headers(_))));
    let no_mss = tso_header(0, None);
    assert!(matches!(Read::parse(&no_mss, &mut p), Err(ReadError::Headers(_))));
    let mut v = vxlan(&inner_tcp(3000, 0x10), false);
    let bad_outer = tso_header(1000, Some((70, 24, 50)));
    assert!(matches!(Read::parse(&bad_outer, &mut v), Err(ReadError::Headers(_))));
    let bad_inner = tso_header(1000, Some((70, 20, 44)));
    assert!(matches!(Read::parse(&bad_inner, &mut v), Err(ReadError::Headers(_))));
}

#[test]
fn a_segment_that_does_not_fit_the_buffer_is_not_written() {
    let mut p = inner_tcp(3000, 0x10);
    let Read::Tcp(gso) = Read::parse(&tso_header(1000, None), &mut p).expect("parse") else { panic!() };
    assert_eq!(gso.segment(&p, 0, &mut [0; 100]), None);
}

#[test]
fn an_ipv4_header_shorter_than_20_bytes_is_refused() {
    let mut p = inner_tcp(3000, 0x10);
    p[0] = 0x44;
    assert!(matches!(Read::parse(&tso_header(1000, None), &mut p), Err(ReadError::Headers(_))));
}
