//! Turning a client's TCP segment into the RST that answers it, in place:
//! what the load balancer sends when a connection's backend was removed, so
//! the client learns at once instead of retransmitting into a backend that
//! no longer has its connection (or, re-hashed, into one that never had it).
//!
//! The reset follows RFC 9293 §3.10.7.1: if the segment carries an ACK the
//! reset's sequence number is that acknowledgment; otherwise the reset has
//! sequence 0 and acknowledges everything the segment occupied. It is sent
//! back the way the segment came (MACs and addresses swapped), so it needs
//! no neighbour or route lookup. A rare path: the headers are rebuilt and
//! checksummed from scratch.

use std::net::IpAddr;

use switchyard_wire::checksum::{fold, pseudo_header_v4, pseudo_header_v6, sum_words};
use switchyard_wire::{ethernet, ipv4, ipv6, read_u32, tcp, write_bytes, write_u16, write_u32};

use super::parse::{FlowKey, Parsed};

const IPV4_LEN: usize = ipv4::MIN_HEADER_LEN;
const IPV6_LEN: usize = ipv6::HEADER_LEN;
const TCP_LEN: usize = tcp::MIN_HEADER_LEN;
/// Shortest Ethernet frame without its FCS; shorter ones are padded.
const MIN_FRAME_LEN: usize = 60;
/// Version 4, header length 5 words: the reset carries no options.
const VERSION_IHL: u8 = (ipv4::VERSION << 4) | (IPV4_LEN / 4) as u8;
const DEFAULT_TTL: u8 = 64;

/// Rewrites the TCP segment `parsed` describes into the RST answering it;
/// returns the length of the frame to send. `None` when the segment is not
/// TCP, is itself a reset (never answered, RFC 9293), or its offsets do not
/// fit the frame; the frame is then left untouched.
pub fn tcp_reset(frame: &mut [u8], parsed: &Parsed) -> Option<usize> {
    if parsed.key.protocol != ipv4::PROTOCOL_TCP || parsed.tcp_flags & tcp::FLAG_RST != 0 {
        return None;
    }
    let answer = answer_to(frame, parsed)?;
    let l3 = parsed.l3_offset;
    let ip_len = if parsed.key.is_ipv6() {
        IPV6_LEN
    } else {
        IPV4_LEN
    };
    let end = l3 + ip_len + TCP_LEN;
    let len = end.max(MIN_FRAME_LEN.min(frame.len()));
    if frame.len() < end || l3 < ethernet::HEADER_LEN {
        return None;
    }
    // Ethernet (any VLAN tag stays as it is): back to where it came from.
    let (dst, src) = frame.split_at_mut(ethernet::SRC);
    dst[..6].swap_with_slice(&mut src[..6]);
    let l3_bytes = frame.get_mut(l3..)?;
    let rest = match (parsed.key.src, parsed.key.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let (ip, rest) = l3_bytes.split_first_chunk_mut::<IPV4_LEN>()?;
            write_ipv4_header(ip, &parsed.key);
            rest
        }
        (IpAddr::V6(_), IpAddr::V6(_)) => {
            let (ip, rest) = l3_bytes.split_first_chunk_mut::<IPV6_LEN>()?;
            write_ipv6_header(ip, &parsed.key);
            rest
        }
        _ => return None,
    };
    write_tcp_header(rest.first_chunk_mut::<TCP_LEN>()?, &parsed.key, answer);
    frame.get_mut(end..len)?.fill(0);
    Some(len)
}

/// Sequence, acknowledgment and flags of the reset (RFC 9293 §3.10.7.1).
#[derive(Clone, Copy)]
struct Answer {
    seq: u32,
    ack: u32,
    flags: u8,
}

/// The reset answering the segment, from its sequence numbers and the
/// length it occupies; `None` when its data offset does not fit.
fn answer_to(frame: &[u8], parsed: &Parsed) -> Option<Answer> {
    let segment =
        frame.get(parsed.l4_offset..parsed.l3_offset.checked_add(parsed.ip_total_len)?)?;
    let header = segment.first_chunk::<TCP_LEN>()?;
    let data_offset = usize::from(header[tcp::DATA_OFFSET] >> 4) * 4;
    if data_offset < TCP_LEN || segment.len() < data_offset {
        return None;
    }
    let flags = parsed.tcp_flags;
    // SYN and FIN each occupy one sequence number.
    let occupied = (segment.len() - data_offset) as u32
        + u32::from(flags & tcp::FLAG_SYN != 0)
        + u32::from(flags & tcp::FLAG_FIN != 0);
    Some(if flags & tcp::FLAG_ACK != 0 {
        Answer {
            seq: read_u32::<{ tcp::ACK }, TCP_LEN>(header),
            ack: 0,
            flags: tcp::FLAG_RST,
        }
    } else {
        Answer {
            seq: 0,
            ack: read_u32::<{ tcp::SEQ }, TCP_LEN>(header).wrapping_add(occupied),
            flags: tcp::FLAG_RST | tcp::FLAG_ACK,
        }
    })
}

/// A fresh IPv4 header from the segment's destination back to its source.
fn write_ipv4_header(ip: &mut [u8; IPV4_LEN], key: &FlowKey) {
    ip.fill(0);
    ip[ipv4::VERSION_IHL] = VERSION_IHL;
    write_u16::<{ ipv4::TOTAL_LEN }, IPV4_LEN>(ip, (IPV4_LEN + TCP_LEN) as u16);
    // A 40-byte packet never needs fragmenting.
    write_u16::<{ ipv4::FLAGS_FRAGMENT_OFFSET }, IPV4_LEN>(ip, ipv4::DONT_FRAGMENT);
    ip[ipv4::TTL] = DEFAULT_TTL;
    ip[ipv4::PROTOCOL] = ipv4::PROTOCOL_TCP;
    if let (IpAddr::V4(src), IpAddr::V4(dst)) = (key.src, key.dst) {
        write_bytes::<{ ipv4::SRC }, 4, IPV4_LEN>(ip, dst.octets());
        write_bytes::<{ ipv4::DST }, 4, IPV4_LEN>(ip, src.octets());
    }
    let checksum = !fold(sum_words(ip));
    write_u16::<{ ipv4::CHECKSUM }, IPV4_LEN>(ip, checksum);
}

/// A fresh IPv6 header from the segment's destination back to its source,
/// without the extension headers the segment may have carried.
fn write_ipv6_header(ip: &mut [u8; IPV6_LEN], key: &FlowKey) {
    ip.fill(0);
    ip[ipv6::VERSION_CLASS_FLOW] = ipv6::VERSION << 4;
    write_u16::<{ ipv6::PAYLOAD_LEN }, IPV6_LEN>(ip, TCP_LEN as u16);
    ip[ipv6::NEXT_HEADER] = ipv4::PROTOCOL_TCP;
    ip[ipv6::HOP_LIMIT] = DEFAULT_TTL;
    if let (IpAddr::V6(src), IpAddr::V6(dst)) = (key.src, key.dst) {
        write_bytes::<{ ipv6::SRC }, 16, IPV6_LEN>(ip, dst.octets());
        write_bytes::<{ ipv6::DST }, 16, IPV6_LEN>(ip, src.octets());
    }
}

/// The reset's TCP header, without options, checksummed with the
/// pseudo-header of the addresses the IP header got.
fn write_tcp_header(header: &mut [u8; TCP_LEN], key: &FlowKey, answer: Answer) {
    header.fill(0);
    write_u16::<{ tcp::SRC_PORT }, TCP_LEN>(header, key.dst_port);
    write_u16::<{ tcp::DST_PORT }, TCP_LEN>(header, key.src_port);
    write_u32::<{ tcp::SEQ }, TCP_LEN>(header, answer.seq);
    write_u32::<{ tcp::ACK }, TCP_LEN>(header, answer.ack);
    header[tcp::DATA_OFFSET] = ((TCP_LEN / 4) as u8) << 4;
    header[tcp::FLAGS] = answer.flags;
    let pseudo = match (key.dst, key.src) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            pseudo_header_v4(src.into(), dst.into(), ipv4::PROTOCOL_TCP, TCP_LEN as u16)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => pseudo_header_v6(
            &src.octets(),
            &dst.octets(),
            ipv4::PROTOCOL_TCP,
            TCP_LEN as u32,
        ),
        _ => 0,
    };
    let checksum = !fold(pseudo + sum_words(header));
    write_u16::<{ tcp::CHECKSUM }, TCP_LEN>(header, checksum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 10];
    const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn segment(seq: u32, ack: Option<u32>, syn: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ipv4([198, 18, 1, 10], [198, 18, 100, 10], 64)
            .tcp(40000, 80, seq, 65535);
        if let Some(ack) = ack {
            builder = builder.ack(ack);
        }
        if syn {
            builder = builder.syn();
        }
        if fin {
            builder = builder.fin();
        }
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    /// (seq, ack, rst, ack flag) of the reset, checked the way a receiving
    /// host would check it.
    fn reset_of(mut frame: Vec<u8>) -> (u32, u32, bool, bool) {
        let parsed = parse(&frame).unwrap();
        let len = tcp_reset(&mut frame, &parsed).expect("a reset");
        frame.truncate(len);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
            panic!("ethernet")
        };
        assert_eq!((eth.source(), eth.destination()), (LB_MAC, CLIENT_MAC));
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("ipv4")
        };
        let header = ip.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert_eq!(header.source, [198, 18, 100, 10]);
        assert_eq!(header.destination, [198, 18, 1, 10]);
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
            panic!("tcp")
        };
        assert_eq!((tcp.source_port(), tcp.destination_port()), (80, 40000));
        assert!(tcp.payload().is_empty());
        let expected = tcp
            .to_header()
            .calc_checksum_ipv4(&header, tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), expected, "TCP checksum");
        (
            tcp.sequence_number(),
            tcp.acknowledgment_number(),
            tcp.rst(),
            tcp.ack(),
        )
    }

    #[test]
    fn a_segment_with_ack_is_reset_at_its_acknowledgment() {
        assert_eq!(
            reset_of(segment(1000, Some(5000), false, false, b"hello")),
            (5000, 0, true, false)
        );
    }

    #[test]
    fn a_segment_without_ack_is_reset_with_an_ack_of_everything_it_occupied() {
        // SYN + 3 bytes + FIN = 5 sequence numbers.
        assert_eq!(
            reset_of(segment(1000, None, true, true, b"abc")),
            (0, 1005, true, true)
        );
    }

    #[test]
    fn a_reset_is_never_answered() {
        let mut frame = segment(1, Some(2), false, false, b"");
        frame[14 + 20 + 13] |= tcp::FLAG_RST;
        let parsed = parse(&frame).unwrap();
        assert_eq!(tcp_reset(&mut frame, &parsed), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_inside_the_frame(
            frame in proptest::collection::vec(any::<u8>(), 0..200),
            tweak in any::<(usize, u8)>(),
        ) {
            let mut frame = frame;
            if let Ok(parsed) = parse(&frame) {
                if let Some(len) = tcp_reset(&mut frame, &parsed) {
                    prop_assert!(len <= frame.len());
                }
            }
            let mut valid = segment(7, Some(9), false, false, b"data");
            let at = tweak.0 % valid.len();
            valid[at] = tweak.1;
            if let Ok(parsed) = parse(&valid) {
                if let Some(len) = tcp_reset(&mut valid, &parsed) {
                    prop_assert!(len <= valid.len());
                }
            }
        }
    }
}
