use std::net::SocketAddr;

use super::batch::*;
use super::vnet::{fold, sum, HDR_LEN as VNET_HDR_LEN};

/// An IPv4 UDP datagram (no options) with `payload` bytes of `fill`.
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize, fill: u8) -> Vec<u8> {
    let total = 20 + 8 + payload;
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend(std::iter::repeat_n(fill, payload));
    let c = !fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

const A: [u8; 4] = [10, 250, 0, 1];
const B: [u8; 4] = [10, 250, 0, 2];

fn vx(payload: usize, fill: u8) -> Vec<u8> {
    udp4(A, B, 40000, 4789, payload, fill)
}

fn runs_of(packets: &[Vec<u8>]) -> Vec<std::ops::Range<usize>> {
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    write_runs(&refs, true).into_iter().map(|r| r.packets).collect()
}

#[test]
fn one_flow_of_equal_datagrams_is_one_run() {
    let packets: Vec<Vec<u8>> = (0..10).map(|i| vx(1400, i)).collect();
    assert_eq!(runs_of(&packets), vec![0..10]);
}

#[test]
fn a_shorter_datagram_ends_its_run_and_a_longer_one_starts_the_next() {
    let packets = vec![vx(1400, 1), vx(1400, 2), vx(600, 3), vx(1400, 4), vx(1500, 5), vx(1500, 6)];
    assert_eq!(runs_of(&packets), vec![0..3, 3..4, 4..6]);
}

#[test]
fn another_flow_or_a_non_udp_packet_is_not_joined() {
    let icmp = {
        let mut p = vx(100, 0);
        p[9] = 1;
        p
    };
    let other_port = udp4(A, B, 40001, 4789, 1400, 0);
    let other_dst = udp4(A, [10, 250, 0, 3], 40000, 4789, 1400, 0);
    let packets = vec![vx(1400, 0), other_port, vx(1400, 0), icmp, other_dst, vx(1400, 0)];
    assert_eq!(runs_of(&packets), vec![0..1, 1..2, 2..3, 3..4, 4..5, 5..6]);
}

#[test]
fn fragments_options_and_bad_lengths_are_written_alone() {
    let mut fragment = vx(1400, 0);
    fragment[6] |= 0x20; // more fragments
    let mut options = vx(1400, 0);
    options[0] = 0x46;
    let mut truncated = vx(1400, 0);
    truncated.truncate(1000);
    let empty = vx(0, 0);
    for odd in [fragment, options, truncated, empty] {
        assert_eq!(runs_of(&[odd.clone(), vx(1400, 1)]), vec![0..1, 1..2], "{:?}", &odd[..28]);
    }
}

#[test]
fn a_run_stops_at_64_segments_and_at_64_kib() {
    let small: Vec<Vec<u8>> = (0..130).map(|_| vx(100, 0)).collect();
    assert_eq!(runs_of(&small), vec![0..64, 64..128, 128..130]);
    // 1,400-byte payloads: 46 fit under 65,507 bytes.
    let big: Vec<Vec<u8>> = (0..50).map(|_| vx(1400, 0)).collect();
    assert_eq!(runs_of(&big), vec![0..46, 46..50]);
}

/// What the kernel does with the super-packet: one datagram per `gso_size` of payload, each
/// with the first header, its own lengths and checksums.
fn segment(frame: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(frame[0], 1, "NEEDS_CSUM");
    assert_eq!(frame[1], 5, "GSO_UDP_L4");
    let field = |i: usize| u16::from_ne_bytes([frame[i], frame[i + 1]]) as usize;
    let (hdr_len, gso_size, csum_start, csum_offset) = (field(2), field(4), field(6), field(8));
    assert_eq!((hdr_len, csum_start, csum_offset), (28, 20, 6));
    let packet = &frame[VNET_HDR_LEN..];
    assert_eq!(u16::from_be_bytes([packet[2], packet[3]]) as usize, packet.len(), "IP total length");
    assert_eq!(fold(sum(&packet[..20], 0)), 0xffff, "IP header checksum");
    let udp_len = packet.len() - 20;
    assert_eq!(u16::from_be_bytes([packet[24], packet[25]]) as usize, udp_len, "UDP length");
    let pseudo = fold(sum(&packet[12..20], 17 + udp_len as u32));
    assert_eq!(u16::from_be_bytes([packet[26], packet[27]]), pseudo, "UDP checksum field: the pseudo-header sum");
    packet[28..]
        .chunks(gso_size)
        .map(|chunk| {
            let mut p = packet[..28].to_vec();
            p.extend_from_slice(chunk);
            p
        })
        .collect()
}

#[test]
fn a_super_packet_cuts_back_into_the_datagrams_it_joined() {
    let packets = vec![vx(1400, 1), vx(1400, 2), vx(1400, 3), vx(333, 4)];
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    assert_eq!(write_runs(&refs, true), vec![Run { packets: 0..4, join: Some(Join::Udp) }]);
    assert_eq!(write_runs(&refs, false).len(), 4, "a kernel without USO gets them one by one");
    let mut frame = Vec::new();
    write_joined(VNET_HDR_LEN, Join::Udp, &refs, &mut frame);
    assert_eq!(frame.len(), VNET_HDR_LEN + 28 + 3 * 1400 + 333);
    let segments = segment(&frame);
    assert_eq!(segments.len(), 4);
    for (seg, orig) in segments.iter().zip(&packets) {
        assert_eq!(seg[28..], orig[28..], "payload");
        assert_eq!(seg[12..24], orig[12..24], "addresses and ports");
    }
}

#[test]
fn a_single_packet_goes_with_an_empty_header() {
    let p = vx(10, 7);
    let mut out = Vec::new();
    write_single(VNET_HDR_LEN, &p, &mut out);
    assert_eq!(out[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
    assert_eq!(out[VNET_HDR_LEN..], p[..]);
}

fn to(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 168, 33, 20], port))
}

#[test]
fn sealed_datagrams_go_in_runs_of_one_destination_and_size() {
    let d = |len, port| (len, to(port));
    let batch = [d(1480, 1), d(1480, 1), d(1480, 1), d(200, 1), d(1480, 1), d(1480, 2), d(1480, 2), d(32, 2), d(32, 2)];
    assert_eq!(gso_runs(&batch), vec![0..4, 4..5, 5..8, 8..9]);
    let many: Vec<(usize, SocketAddr)> = (0..100).map(|_| d(1000, 1)).collect();
    assert_eq!(gso_runs(&many), vec![0..64, 64..100]);
    let big: Vec<(usize, SocketAddr)> = (0..50).map(|_| d(1480, 1)).collect();
    assert_eq!(gso_runs(&big), vec![0..44, 44..50]);
    assert_eq!(gso_runs(&[]), Vec::<std::ops::Range<usize>>::new());
    assert_eq!(gso_runs(&[d(0, 1), d(0, 1)]), vec![0..1, 1..2]);
}

/// An IPv4 TCP segment with ACK and `flags`, timestamps option, `payload` bytes of `fill`.
fn tcp4(seq: u32, payload: usize, flags: u8, fill: u8) -> Vec<u8> {
    let total = 20 + 32 + payload;
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&A);
    p.extend_from_slice(&B);
    p.extend_from_slice(&5201u16.to_be_bytes());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&777u32.to_be_bytes()); // ack
    p.extend_from_slice(&[0x80, 0x10 | flags, 0x01, 0xf5, 0, 0, 0, 0]); // 32-byte header, window, csum, urg
    p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
    p.extend(std::iter::repeat_n(fill, payload));
    let c = !fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn joins(packets: &[Vec<u8>]) -> Vec<(std::ops::Range<usize>, Option<Join>)> {
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    write_runs(&refs, true).into_iter().map(|r| (r.packets, r.join)).collect()
}

#[test]
fn tcp_segments_in_sequence_join_and_a_gap_or_a_push_ends_the_run() {
    let tcp = Some(Join::Tcp);
    let in_order: Vec<Vec<u8>> = (0..5).map(|i| tcp4(1000 + i * 1388, 1388, 0, i as u8)).collect();
    assert_eq!(joins(&in_order), vec![(0..5, tcp)]);
    let gap = vec![tcp4(1000, 1388, 0, 0), tcp4(2388, 1388, 0, 0), tcp4(9999, 1388, 0, 0), tcp4(11387, 1388, 0, 0)];
    assert_eq!(joins(&gap), vec![(0..2, tcp), (2..4, tcp)]);
    let push = vec![tcp4(1000, 1388, 0, 0), tcp4(2388, 1388, 0x08, 0), tcp4(3776, 1388, 0, 0)];
    assert_eq!(joins(&push), vec![(0..2, tcp), (2..3, None)]);
    let wrap = vec![tcp4(u32::MAX - 99, 1388, 0, 0), tcp4(1288, 1388, 0, 0)];
    assert_eq!(joins(&wrap), vec![(0..2, tcp)], "sequence numbers wrap");
}

#[test]
fn tcp_control_segments_and_other_options_go_alone() {
    for flags in [0x01, 0x02, 0x04, 0x20, 0x40, 0x80] {
        let p = vec![tcp4(1000, 100, 0, 0), tcp4(1100, 100, flags, 0), tcp4(1200, 100, 0, 0)];
        assert_eq!(joins(&p).len(), 3, "flags {flags:#x}");
    }
    let mut other_ts = tcp4(2388, 1388, 0, 0);
    other_ts[51] = 9;
    assert_eq!(joins(&[tcp4(1000, 1388, 0, 0), other_ts]).len(), 2, "timestamps differ");
    let mut other_ack = tcp4(2388, 1388, 0, 0);
    other_ack[31] = 1;
    assert_eq!(joins(&[tcp4(1000, 1388, 0, 0), other_ack]).len(), 2, "acks differ");
    let pure_ack = tcp4(1000, 0, 0, 0);
    assert_eq!(joins(&[pure_ack.clone(), pure_ack]).len(), 2, "no payload");
}

#[test]
fn a_joined_tcp_run_is_one_segment_with_the_first_headers_and_every_payload() {
    let run = [tcp4(1000, 1388, 0, 1), tcp4(2388, 1388, 0, 2), tcp4(3776, 500, 0x08, 3)];
    let refs: Vec<&[u8]> = run.iter().map(Vec::as_slice).collect();
    let mut frame = Vec::new();
    write_joined(VNET_HDR_LEN, Join::Tcp, &refs, &mut frame);
    let field = |i: usize| u16::from_ne_bytes([frame[i], frame[i + 1]]) as usize;
    assert_eq!((frame[0], frame[1]), (1, 1), "NEEDS_CSUM, GSO_TCPV4");
    assert_eq!((field(2), field(4), field(6), field(8)), (52, 1388, 20, 16));
    let p = &frame[VNET_HDR_LEN..];
    assert_eq!(p.len(), 52 + 1388 * 2 + 500);
    assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
    assert_eq!(fold(sum(&p[..20], 0)), 0xffff, "IP header checksum");
    assert_eq!(p[24..28], 1000u32.to_be_bytes(), "the first sequence number");
    assert_eq!(p[33], 0x18, "ACK, and PSH from the last segment");
    let pseudo = fold(sum(&p[12..20], 6 + (p.len() - 20) as u32));
    assert_eq!(u16::from_be_bytes([p[36], p[37]]), pseudo);
    let payload: Vec<u8> = run.iter().flat_map(|s| s[52..].to_vec()).collect();
    assert_eq!(p[52..], payload[..]);
}

#[test]
fn a_tunnel_header_is_24_bytes_with_the_same_fields_first() {
    let packets = [vx(1400, 1), vx(1400, 2)];
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let (mut short, mut long) = (Vec::new(), Vec::new());
    write_joined(VNET_HDR_LEN, Join::Udp, &refs, &mut short);
    write_joined(24, Join::Udp, &refs, &mut long);
    assert_eq!(long.len(), short.len() + 14);
    assert_eq!(long[..VNET_HDR_LEN], short[..VNET_HDR_LEN]);
    assert_eq!(long[VNET_HDR_LEN..24], [0; 14]);
    assert_eq!(long[24..], short[VNET_HDR_LEN..]);
}
