//! Turning a packet too big for its egress link into the ICMP error that
//! tells its sender, in place: IPv4 "fragmentation needed and DF set"
//! (type 3 code 4, with the next-hop MTU of RFC 1191 §4) quoting the IP
//! header and the first 8 bytes after it (RFC 792), or ICMPv6 "packet too
//! big" (type 2, RFC 4443 §3.2) quoting as much of the packet as fits a
//! 1280-byte answer. It goes back the way the packet came (MACs swapped,
//! any VLAN tag kept), so it needs no route or neighbour lookup. A rare
//! path: headers are built and checksummed from scratch.

use std::net::IpAddr;

use switchyard_wire::checksum::{fold, pseudo_header_v6, sum_words};
use switchyard_wire::{ethernet, ipv4, ipv6, write_bytes, write_u16, write_u32};

use super::parse::Parsed;

const IPV4_LEN: usize = ipv4::MIN_HEADER_LEN;
const IPV6_LEN: usize = ipv6::HEADER_LEN;
const ICMP_LEN: usize = 8;
/// What an ICMPv6 error may fill (RFC 4443 §2.4 (c)): the IPv6 minimum MTU.
const IPV6_MIN_MTU: usize = 1280;
const PROTOCOL_ICMP: u8 = 1;
const PROTOCOL_ICMPV6: u8 = 58;
const DESTINATION_UNREACHABLE: u8 = 3;
const FRAGMENTATION_NEEDED: u8 = 4;
const PACKET_TOO_BIG: u8 = 2;
const VERSION_IHL: u8 = (ipv4::VERSION << 4) | (IPV4_LEN / 4) as u8;
const DEFAULT_TTL: u8 = 64;
/// The DF bit of the IPv4 flags and fragment offset field.
const DONT_FRAGMENT: u16 = 0x4000;

/// Rewrites the frame `parsed` describes, too big for a link of `mtu`,
/// into the ICMP error for its sender, from `from` (the address the load
/// balancer answers for in this flow); returns the frame's new length.
/// `None`, the frame untouched, when no answer is owed: an IPv4 packet
/// without DF (RFC 1191 has routers fragment those; Switchyard drops them
/// instead), or offsets and addresses that do not fit the frame.
pub fn too_big(frame: &mut [u8], parsed: &Parsed, mtu: u16, from: IpAddr) -> Option<usize> {
    let l3 = parsed.l3_offset;
    if l3 < ethernet::HEADER_LEN {
        return None;
    }
    let len = match (parsed.key.src, from) {
        (IpAddr::V4(sender), IpAddr::V4(from)) => {
            let ip = frame.get(l3..l3 + IPV4_LEN)?;
            let flags = u16::from_be_bytes([
                ip[ipv4::FLAGS_FRAGMENT_OFFSET],
                ip[ipv4::FLAGS_FRAGMENT_OFFSET + 1],
            ]);
            if flags & DONT_FRAGMENT == 0 {
                return None;
            }
            let header_len = usize::from(ip[ipv4::VERSION_IHL] & 0x0f) * 4;
            let quote = header_len + 8;
            let end = l3 + IPV4_LEN + ICMP_LEN + quote;
            if frame.len() < end || frame.len() < l3 + quote {
                return None;
            }
            frame.copy_within(l3..l3 + quote, l3 + IPV4_LEN + ICMP_LEN);
            let (ip, rest) = frame
                .get_mut(l3..end)?
                .split_first_chunk_mut::<IPV4_LEN>()?;
            ip.fill(0);
            ip[ipv4::VERSION_IHL] = VERSION_IHL;
            write_u16::<{ ipv4::TOTAL_LEN }, IPV4_LEN>(ip, (end - l3) as u16);
            ip[ipv4::TTL] = DEFAULT_TTL;
            ip[ipv4::PROTOCOL] = PROTOCOL_ICMP;
            write_bytes::<{ ipv4::SRC }, 4, IPV4_LEN>(ip, from.octets());
            write_bytes::<{ ipv4::DST }, 4, IPV4_LEN>(ip, sender.octets());
            let checksum = !fold(sum_words(ip));
            write_u16::<{ ipv4::CHECKSUM }, IPV4_LEN>(ip, checksum);
            let (icmp, _) = rest.split_first_chunk_mut::<ICMP_LEN>()?;
            *icmp = [
                DESTINATION_UNREACHABLE,
                FRAGMENTATION_NEEDED,
                0,
                0,
                0,
                0,
                0,
                0,
            ];
            write_u16::<6, ICMP_LEN>(icmp, mtu);
            let checksum = !fold(sum_words(rest));
            write_u16::<2, ICMP_LEN>(rest.first_chunk_mut::<ICMP_LEN>()?, checksum);
            end
        }
        (IpAddr::V6(sender), IpAddr::V6(from)) => {
            let room = frame.len().checked_sub(l3 + IPV6_LEN + ICMP_LEN)?;
            let quote = parsed
                .ip_total_len
                .min(IPV6_MIN_MTU - IPV6_LEN - ICMP_LEN)
                .min(room);
            let end = l3 + IPV6_LEN + ICMP_LEN + quote;
            frame.copy_within(l3..l3 + quote, l3 + IPV6_LEN + ICMP_LEN);
            let (ip, rest) = frame
                .get_mut(l3..end)?
                .split_first_chunk_mut::<IPV6_LEN>()?;
            ip.fill(0);
            ip[ipv6::VERSION_CLASS_FLOW] = ipv6::VERSION << 4;
            write_u16::<{ ipv6::PAYLOAD_LEN }, IPV6_LEN>(ip, (ICMP_LEN + quote) as u16);
            ip[ipv6::NEXT_HEADER] = PROTOCOL_ICMPV6;
            ip[ipv6::HOP_LIMIT] = DEFAULT_TTL;
            write_bytes::<{ ipv6::SRC }, 16, IPV6_LEN>(ip, from.octets());
            write_bytes::<{ ipv6::DST }, 16, IPV6_LEN>(ip, sender.octets());
            let (icmp, _) = rest.split_first_chunk_mut::<ICMP_LEN>()?;
            *icmp = [PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0, 0];
            write_u32::<4, ICMP_LEN>(icmp, u32::from(mtu));
            let pseudo = pseudo_header_v6(
                &from.octets(),
                &sender.octets(),
                PROTOCOL_ICMPV6,
                (ICMP_LEN + quote) as u32,
            );
            let checksum = !fold(pseudo + sum_words(rest));
            write_u16::<2, ICMP_LEN>(rest.first_chunk_mut::<ICMP_LEN>()?, checksum);
            end
        }
        _ => return None,
    };
    // Back to where it came from.
    let (dst, src) = frame.split_at_mut(ethernet::SRC);
    dst[..6].swap_with_slice(&mut src[..6]);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;
    use etherparse::{
        Icmpv4Type, Icmpv6Type, IpNumber, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    };
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 10];
    const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);

    fn udp4(dont_fragment: bool, payload: usize) -> Vec<u8> {
        let mut frame = Vec::new();
        let mut ip = etherparse::Ipv4Header::new(
            (8 + payload) as u16,
            64,
            IpNumber::UDP,
            [198, 18, 10, 10],
            VIP.octets(),
        )
        .unwrap();
        ip.dont_fragment = dont_fragment;
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .udp(40000, 53)
            .write(&mut frame, &vec![7u8; payload])
            .unwrap();
        frame
    }

    #[test]
    fn an_ipv4_df_packet_becomes_fragmentation_needed_to_its_sender() {
        let input = udp4(true, 1472);
        let mut frame = input.clone();
        let parsed = parse(&frame).unwrap();
        let len = too_big(&mut frame, &parsed, 1400, VIP.into()).expect("answered");
        frame.truncate(len);
        assert_eq!(len, 14 + 20 + 8 + 20 + 8);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
            panic!("ethernet")
        };
        assert_eq!((eth.destination(), eth.source()), (CLIENT_MAC, LB_MAC));
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("ipv4")
        };
        let header = ip.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert_eq!(
            (header.source, header.destination),
            (VIP.octets(), [198, 18, 10, 10])
        );
        let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
            panic!("icmp")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400
                }
            )
        );
        let sum = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
        assert_eq!(icmp.checksum(), sum.checksum, "ICMP checksum");
        assert_eq!(icmp.payload(), &input[14..14 + 28], "IP header and 8 bytes");
    }

    #[test]
    fn an_ipv4_packet_without_df_is_not_answered() {
        let input = udp4(false, 1472);
        let mut frame = input.clone();
        let parsed = parse(&frame).unwrap();
        assert_eq!(too_big(&mut frame, &parsed, 1400, VIP.into()), None);
        assert_eq!(frame, input);
    }

    #[test]
    fn an_ipv6_packet_becomes_packet_too_big_quoting_up_to_1280_bytes() {
        let client = Ipv6Addr::new(0x2001, 0xdb8, 10, 0, 0, 0, 0, 10);
        let mut input = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ipv6(client.octets(), VIP6.octets(), 64)
            .udp(40000, 53)
            .write(&mut input, &[9u8; 1452])
            .unwrap();
        let mut frame = input.clone();
        let parsed = parse(&frame).unwrap();
        let len = too_big(&mut frame, &parsed, 1400, VIP6.into()).expect("answered");
        frame.truncate(len);
        assert_eq!(len, 14 + 1280);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &packet.net else {
            panic!("ipv6")
        };
        assert_eq!(ip.header().source_addr(), VIP6);
        assert_eq!(ip.header().destination_addr(), client);
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("icmpv6")
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
        let header = etherparse::Icmpv6Header::with_checksum(
            icmp.icmp_type(),
            VIP6.octets(),
            client.octets(),
            icmp.payload(),
        )
        .unwrap();
        assert_eq!(icmp.checksum(), header.checksum, "ICMPv6 checksum");
        assert_eq!(icmp.payload(), &input[14..14 + 1280 - 48]);
    }
}
