use std::net::SocketAddr;

use super::batch::*;

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
    uso_runs(&refs)
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
    let tcp = {
        let mut p = vx(100, 0);
        p[9] = 6;
        p
    };
    let other_port = udp4(A, B, 40001, 4789, 1400, 0);
    let other_dst = udp4(A, [10, 250, 0, 3], 40000, 4789, 1400, 0);
    let packets = vec![vx(1400, 0), other_port, vx(1400, 0), tcp, other_dst, vx(1400, 0)];
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
    assert_eq!(uso_runs(&refs), vec![0..4]);
    let mut frame = Vec::new();
    write_uso(&refs, &mut frame);
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
    write_single(&p, &mut out);
    assert_eq!(out[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
    assert_eq!(out[VNET_HDR_LEN..], p[..]);
}

fn header(flags: u8, gso: u8, start: u16, offset: u16) -> [u8; VNET_HDR_LEN] {
    let mut h = [flags, gso, 0, 0, 0, 0, 0, 0, 0, 0];
    h[6..8].copy_from_slice(&start.to_ne_bytes());
    h[8..10].copy_from_slice(&offset.to_ne_bytes());
    h
}

#[test]
fn a_read_with_a_checksum_left_to_do_is_completed() {
    let mut p = vx(101, 9); // odd length: the last byte is padded
    let udp_len = p.len() - 20;
    let pseudo = fold(sum(&p[12..20], 17 + udp_len as u32));
    p[26..28].copy_from_slice(&pseudo.to_be_bytes());
    complete_read(&header(1, 0, 20, 6), &mut p).expect("complete");
    // A correct UDP checksum sums, with the pseudo-header, to 0xffff.
    let check = fold(sum(&p[20..], sum(&p[12..20], 17 + udp_len as u32)));
    assert_eq!(check, 0xffff);
}

#[test]
fn reads_that_cannot_be_sealed_as_they_are_are_refused() {
    let p = vx(10, 0);
    assert_eq!(complete_read(&header(0, 5, 0, 0), &mut p.clone()), Err(ReadError::Gso(5)));
    assert!(matches!(complete_read(&header(1, 0, 100, 6), &mut p.clone()), Err(ReadError::ChecksumOutside { .. })));
    let mut plain = p.clone();
    assert_eq!(complete_read(&[0; VNET_HDR_LEN], &mut plain), Ok(()));
    assert_eq!(plain, p, "a packet with nothing left to do is not touched");
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
