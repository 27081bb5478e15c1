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

use super::parse::Parsed;
use switchyard_wire::checksum::{fold, sum_words};
use switchyard_wire::{ethernet, ipv4};

const IPV4_LEN: usize = ipv4::MIN_HEADER_LEN;
const TCP_LEN: usize = 20;
/// Shortest Ethernet frame without its FCS; shorter ones are padded.
const MIN_FRAME_LEN: usize = 60;

const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const SYN: u8 = 0x02;
const FIN: u8 = 0x01;

/// Rewrites the TCP segment `parsed` describes into the RST answering it;
/// returns the length of the frame to send. `None` when the segment is not
/// TCP, is itself a reset (never answered, RFC 9293), or its offsets do not
/// fit the frame; the frame is then left untouched.
pub fn tcp_reset(frame: &mut [u8], parsed: &Parsed) -> Option<usize> {
    if parsed.key.protocol != ipv4::PROTOCOL_TCP || parsed.tcp_flags & RST != 0 {
        return None;
    }
    let l3 = parsed.l3_offset;
    let l4 = parsed.l4_offset;
    let segment = frame.get(l4..l3.checked_add(parsed.ip_total_len)?)?;
    let data_offset = usize::from(segment.get(12)? >> 4) * 4;
    if data_offset < TCP_LEN || segment.len() < data_offset {
        return None;
    }
    let seq = u32::from_be_bytes(segment.get(4..8)?.try_into().ok()?);
    let ack = u32::from_be_bytes(segment.get(8..12)?.try_into().ok()?);
    let flags = parsed.tcp_flags;
    // SYN and FIN each occupy one sequence number.
    let occupied = (segment.len() - data_offset) as u32
        + u32::from(flags & SYN != 0)
        + u32::from(flags & FIN != 0);
    let (reset_seq, reset_ack, reset_flags) = if flags & ACK != 0 {
        (ack, 0, RST)
    } else {
        (0, seq.wrapping_add(occupied), RST | ACK)
    };

    let end = l3 + IPV4_LEN + TCP_LEN;
    let len = end.max(MIN_FRAME_LEN.min(frame.len()));
    if frame.len() < end || l3 < ethernet::HEADER_LEN {
        return None;
    }
    let key = parsed.key;

    // Ethernet (any VLAN tag stays as it is): back to where it came from.
    let (dst, src) = frame.split_at_mut(ethernet::SRC);
    dst[..6].swap_with_slice(&mut src[..6]);

    let ip = &mut frame[l3..l3 + IPV4_LEN];
    ip.copy_from_slice(&[
        0x45,
        0,
        0,
        (IPV4_LEN + TCP_LEN) as u8,
        0,
        0,
        0x40, // don't fragment
        0,
        64,
        ipv4::PROTOCOL_TCP,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    ip[12..16].copy_from_slice(&key.dst.octets());
    ip[16..20].copy_from_slice(&key.src.octets());
    let ip_checksum = !fold(sum_words(ip));
    ip[10..12].copy_from_slice(&ip_checksum.to_be_bytes());

    let tcp = &mut frame[l3 + IPV4_LEN..end];
    tcp.fill(0);
    tcp[0..2].copy_from_slice(&key.dst_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&key.src_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&reset_seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&reset_ack.to_be_bytes());
    tcp[12] = ((TCP_LEN / 4) as u8) << 4;
    tcp[13] = reset_flags;
    let pseudo = sum_words(&key.dst.octets())
        + sum_words(&key.src.octets())
        + u32::from(ipv4::PROTOCOL_TCP)
        + TCP_LEN as u32;
    let tcp_checksum = !fold(pseudo + sum_words(tcp));
    tcp[16..18].copy_from_slice(&tcp_checksum.to_be_bytes());

    frame[end..len].fill(0);
    Some(len)
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
        frame[14 + 20 + 13] |= RST;
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
