//! Frames for the few cases the packet fixtures (`switchyard_wire::fixtures`)
//! do not hold, built from the wire layouts with every checksum filled in by
//! `switchyard_wire::checksum`, so a test shows a frame the program could
//! really see. Ethernet addresses are the fixtures' client -> LB.

use std::net::{Ipv4Addr, Ipv6Addr};

use switchyard_wire::{
    checksum::{fold, pseudo_header_v4, pseudo_header_v6, sum_words},
    ethernet,
    fixtures::scenario::{CLIENT_MAC, LB_CLIENT_ARM_MAC},
    ipv4, ipv6, tcp, udp, write_u16, write_u32,
};

/// Ethernet + IPv4 (no options, DF) + `segment`, whose checksum field at
/// `checksum_at` is computed here over the pseudo-header.
fn ipv4_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    mut segment: Vec<u8>,
    checksum_at: usize,
) -> Vec<u8> {
    let pseudo = pseudo_header_v4(src.into(), dst.into(), protocol, segment.len() as u16);
    let checksum = match !fold(pseudo + sum_words(&segment)) {
        // RFC 768: a computed 0 is sent as all ones, 0 meaning "none".
        0 if protocol == ipv4::PROTOCOL_UDP => 0xffff,
        checksum => checksum,
    };
    segment[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());

    let mut ip = [0u8; ipv4::MIN_HEADER_LEN];
    ip[ipv4::VERSION_IHL] = (ipv4::VERSION << 4) | (ipv4::MIN_HEADER_LEN / 4) as u8;
    write_u16::<{ ipv4::TOTAL_LEN }, _>(&mut ip, (ipv4::MIN_HEADER_LEN + segment.len()) as u16);
    write_u16::<{ ipv4::FLAGS_FRAGMENT_OFFSET }, _>(&mut ip, ipv4::DONT_FRAGMENT);
    ip[ipv4::TTL] = 64;
    ip[ipv4::PROTOCOL] = protocol;
    write_u32::<{ ipv4::SRC }, _>(&mut ip, src.into());
    write_u32::<{ ipv4::DST }, _>(&mut ip, dst.into());
    let checksum = !fold(sum_words(&ip));
    write_u16::<{ ipv4::CHECKSUM }, _>(&mut ip, checksum);

    let mut frame = Vec::with_capacity(ethernet::HEADER_LEN + ip.len() + segment.len());
    frame.extend_from_slice(&LB_CLIENT_ARM_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&ethernet::TYPE_IPV4.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&segment);
    frame
}

/// Ethernet + IPv4 + a 20-byte TCP SYN, 54 bytes.
pub fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut segment = vec![0u8; tcp::MIN_HEADER_LEN];
    segment[tcp::SRC_PORT..][..2].copy_from_slice(&sport.to_be_bytes());
    segment[tcp::DST_PORT..][..2].copy_from_slice(&dport.to_be_bytes());
    segment[tcp::DATA_OFFSET] = ((tcp::MIN_HEADER_LEN / 4) as u8) << 4;
    segment[tcp::FLAGS] = tcp::FLAG_SYN;
    ipv4_frame(src, dst, ipv4::PROTOCOL_TCP, segment, tcp::CHECKSUM)
}

/// Ethernet + IPv4 + a TCP segment of an established connection (ACK,
/// PSH) carrying `payload`.
pub fn tcp_data_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut segment = vec![0u8; tcp::MIN_HEADER_LEN];
    segment[tcp::SRC_PORT..][..2].copy_from_slice(&sport.to_be_bytes());
    segment[tcp::DST_PORT..][..2].copy_from_slice(&dport.to_be_bytes());
    segment[tcp::SEQ..][..4].copy_from_slice(&1000u32.to_be_bytes());
    segment[tcp::ACK..][..4].copy_from_slice(&2000u32.to_be_bytes());
    segment[tcp::DATA_OFFSET] = ((tcp::MIN_HEADER_LEN / 4) as u8) << 4;
    segment[tcp::FLAGS] = tcp::FLAG_ACK | 0x08;
    segment.extend_from_slice(payload);
    ipv4_frame(src, dst, ipv4::PROTOCOL_TCP, segment, tcp::CHECKSUM)
}

/// `frame` (IPv4 without options, TCP or UDP) as a host with tx checksum
/// offload hands it to a veth (Linux `CHECKSUM_PARTIAL`): the L4 checksum
/// field holds the pseudo-header sum, folded and not inverted.
pub fn with_partial_checksum(frame: &[u8]) -> Vec<u8> {
    let l3 = ethernet::HEADER_LEN;
    let l4 = l3 + ipv4::MIN_HEADER_LEN;
    let word = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let read_u32 = |at: usize| (u32::from(word(at)) << 16) | u32::from(word(at + 2));
    let protocol = frame[l3 + ipv4::PROTOCOL];
    let (len, at) = match protocol {
        ipv4::PROTOCOL_TCP => (frame.len() - l4, tcp::CHECKSUM),
        _ => (usize::from(word(l4 + udp::LENGTH)), udp::CHECKSUM),
    };
    let pseudo = pseudo_header_v4(
        read_u32(l3 + ipv4::SRC),
        read_u32(l3 + ipv4::DST),
        protocol,
        len as u16,
    );
    let mut frame = frame.to_vec();
    frame[l4 + at..l4 + at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    frame
}

/// Ethernet + IPv4 + UDP with a 4-byte payload.
pub fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let payload = b"ping";
    let mut datagram = vec![0u8; udp::HEADER_LEN];
    datagram[udp::SRC_PORT..][..2].copy_from_slice(&sport.to_be_bytes());
    datagram[udp::DST_PORT..][..2].copy_from_slice(&dport.to_be_bytes());
    datagram[udp::LENGTH..][..2]
        .copy_from_slice(&((udp::HEADER_LEN + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(payload);
    ipv4_frame(src, dst, ipv4::PROTOCOL_UDP, datagram, udp::CHECKSUM)
}

/// Ethernet + IPv6 + the extension headers `ext` (each naming the next,
/// the last naming `protocol`) + `segment`, whose checksum field at
/// `checksum_at` is computed here over the pseudo-header (RFC 8200 §8.1).
/// `first_ext` is the Next Header of the fixed header when `ext` is not
/// empty.
fn ipv6_frame(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    (first_ext, ext): (u8, &[u8]),
    protocol: u8,
    mut segment: Vec<u8>,
    checksum_at: usize,
) -> Vec<u8> {
    let pseudo = pseudo_header_v6(&src.octets(), &dst.octets(), protocol, segment.len() as u32);
    let checksum = match !fold(pseudo + sum_words(&segment)) {
        0 if protocol == ipv4::PROTOCOL_UDP => 0xffff,
        checksum => checksum,
    };
    segment[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());

    let mut ip = [0u8; ipv6::HEADER_LEN];
    ip[ipv6::VERSION_CLASS_FLOW] = ipv6::VERSION << 4;
    write_u16::<{ ipv6::PAYLOAD_LEN }, _>(&mut ip, (ext.len() + segment.len()) as u16);
    ip[ipv6::NEXT_HEADER] = if ext.is_empty() { protocol } else { first_ext };
    ip[ipv6::HOP_LIMIT] = 64;
    ip[ipv6::SRC..ipv6::SRC + ipv6::ADDR_LEN].copy_from_slice(&src.octets());
    ip[ipv6::DST..ipv6::DST + ipv6::ADDR_LEN].copy_from_slice(&dst.octets());

    let mut frame = Vec::new();
    frame.extend_from_slice(&LB_CLIENT_ARM_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&ethernet::TYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(ext);
    frame.extend_from_slice(&segment);
    frame
}

/// An established connection's TCP segment (ACK, PSH) carrying `payload`.
fn tcp_data_segment(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut segment = vec![0u8; tcp::MIN_HEADER_LEN];
    segment[tcp::SRC_PORT..][..2].copy_from_slice(&sport.to_be_bytes());
    segment[tcp::DST_PORT..][..2].copy_from_slice(&dport.to_be_bytes());
    segment[tcp::SEQ..][..4].copy_from_slice(&1000u32.to_be_bytes());
    segment[tcp::ACK..][..4].copy_from_slice(&2000u32.to_be_bytes());
    segment[tcp::DATA_OFFSET] = ((tcp::MIN_HEADER_LEN / 4) as u8) << 4;
    segment[tcp::FLAGS] = tcp::FLAG_ACK | 0x08;
    segment.extend_from_slice(payload);
    segment
}

/// Ethernet + IPv6 + a TCP segment of an established connection (ACK,
/// PSH) carrying `payload`.
pub fn tcp6_data_frame(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let segment = tcp_data_segment(sport, dport, payload);
    ipv6_frame(
        src,
        dst,
        (0, &[]),
        ipv4::PROTOCOL_TCP,
        segment,
        tcp::CHECKSUM,
    )
}

/// `tcp6_data_frame` behind one Destination Options header (8 bytes, a
/// PadN option): a packet the workers do not take on the fast path.
pub fn tcp6_data_frame_with_dest_opts(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let segment = tcp_data_segment(sport, dport, payload);
    let dest_opts = [ipv4::PROTOCOL_TCP, 0, 1, 4, 0, 0, 0, 0];
    ipv6_frame(
        src,
        dst,
        (ipv6::NEXT_HEADER_DESTINATION_OPTIONS, &dest_opts),
        ipv4::PROTOCOL_TCP,
        segment,
        tcp::CHECKSUM,
    )
}

/// Ethernet + IPv6 + a 20-byte TCP SYN.
pub fn tcp6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut segment = tcp_data_segment(sport, dport, &[]);
    segment[tcp::FLAGS] = tcp::FLAG_SYN;
    ipv6_frame(
        src,
        dst,
        (0, &[]),
        ipv4::PROTOCOL_TCP,
        segment,
        tcp::CHECKSUM,
    )
}

/// Ethernet + IPv6 + UDP with a 4-byte payload.
pub fn udp6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let payload = b"ping";
    let mut datagram = vec![0u8; udp::HEADER_LEN];
    datagram[udp::SRC_PORT..][..2].copy_from_slice(&sport.to_be_bytes());
    datagram[udp::DST_PORT..][..2].copy_from_slice(&dport.to_be_bytes());
    datagram[udp::LENGTH..][..2]
        .copy_from_slice(&((udp::HEADER_LEN + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(payload);
    ipv6_frame(
        src,
        dst,
        (0, &[]),
        ipv4::PROTOCOL_UDP,
        datagram,
        udp::CHECKSUM,
    )
}

/// `frame` (IPv6 without extension headers, TCP or UDP) with the partial
/// L4 checksum a host with tx checksum offload leaves (see
/// `with_partial_checksum`).
pub fn with_partial_checksum6(frame: &[u8]) -> Vec<u8> {
    let l3 = ethernet::HEADER_LEN;
    let l4 = l3 + ipv6::HEADER_LEN;
    let protocol = frame[l3 + ipv6::NEXT_HEADER];
    let at = match protocol {
        ipv4::PROTOCOL_TCP => tcp::CHECKSUM,
        _ => udp::CHECKSUM,
    };
    let addr = |at: usize| -> [u8; 16] { frame[at..at + 16].try_into().unwrap() };
    let pseudo = pseudo_header_v6(
        &addr(l3 + ipv6::SRC),
        &addr(l3 + ipv6::DST),
        protocol,
        (frame.len() - l4) as u32,
    );
    let mut frame = frame.to_vec();
    frame[l4 + at..l4 + at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    frame
}
