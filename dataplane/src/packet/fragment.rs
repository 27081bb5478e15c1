//! Fragments of an IPv4 or IPv6 datagram, in place. The first fragment
//! carries the L4 header, so it reads as a [`Parsed`] of its flow and is
//! rewritten by [`apply`](super::apply) like a whole packet: its L4
//! checksum covers the whole datagram, but only addresses and ports change,
//! so the incremental update (RFC 1624) is still exact, and it is never
//! completed from scratch (this frame holds only part of what it covers).
//! A later fragment has no L4 header: it gets the MACs and addresses of its
//! datagram's rewrite, with the IPv4 header checksum updated; an IPv6
//! Fragment header (RFC 8200 §4.5) stays as it is. Pure, allocation-free,
//! and a frame that does not fit is left untouched.

use std::net::IpAddr;

use switchyard_wire::checksum::adjust;
use switchyard_wire::{ethernet, ipv4, ipv6, read_u16, udp, write_bytes, write_u16, write_u32};

use super::parse::{parse_tcp, FlowKey, ParseError, Parsed, L3};
use super::rewrite::{address_diff, Rewrite};

/// The flow of a first fragment, from its IP layer (`l3`, which
/// [`parse_l3`](super::parse_l3) gave for this frame) and the L4 header at
/// its start. A TCP header must fit in the fragment whole (RFC 1858 §3
/// refuses tiny first fragments for the same reason: the ports and flags
/// are what decisions are made on); a UDP header's 8 bytes must be there,
/// its length being the datagram's, not this fragment's.
pub fn parse_first_fragment(frame: &[u8], l3: &L3) -> Result<Parsed, ParseError> {
    if !l3.fragment.is_some_and(|f| f.is_first()) {
        return Err(ParseError::Fragment);
    }
    let l4 = frame
        .get(l3.l4_offset..l3.l3_offset + l3.ip_total_len)
        .unwrap_or_default();
    let (src_port, dst_port, tcp_flags) = match l3.protocol {
        ipv4::PROTOCOL_TCP => parse_tcp(l4)?,
        ipv4::PROTOCOL_UDP => {
            let hdr: &[u8; udp::HEADER_LEN] = l4.first_chunk().ok_or(ParseError::BadL4Header)?;
            (
                read_u16::<{ udp::SRC_PORT }, _>(hdr),
                read_u16::<{ udp::DST_PORT }, _>(hdr),
                0,
            )
        }
        _ => return Err(ParseError::UnsupportedProtocol),
    };
    Ok(Parsed {
        key: FlowKey {
            src: l3.src,
            dst: l3.dst,
            src_port,
            dst_port,
            protocol: l3.protocol,
        },
        l3_offset: l3.l3_offset,
        l4_offset: l3.l4_offset,
        tcp_flags,
        ip_total_len: l3.ip_total_len,
        has_ext_headers: l3.has_ext_headers,
        first_fragment: true,
    })
}

/// Gives a later fragment (`l3` from [`parse_l3`](super::parse_l3) of this
/// frame) its datagram's MACs and addresses; the ports of `rewrite` belong
/// to the first fragment. Returns false, the frame untouched, when the
/// headers do not fit it or the rewrite is of the other family.
pub fn rewrite_later_fragment(frame: &mut [u8], l3: &L3, rewrite: &Rewrite) -> bool {
    let Some((l2, ip)) = frame.split_at_mut_checked(l3.l3_offset) else {
        return false;
    };
    let Some(eth) = l2.first_chunk_mut::<{ ethernet::HEADER_LEN }>() else {
        return false;
    };
    match (l3.src, l3.dst, rewrite.ip_src, rewrite.ip_dst) {
        (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(src), IpAddr::V4(dst)) => {
            let Some(ip) = ip.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>() else {
                return false;
            };
            let diff = address_diff(l3.src, rewrite.ip_src) + address_diff(l3.dst, rewrite.ip_dst);
            let checksum = read_u16::<{ ipv4::CHECKSUM }, _>(ip);
            write_u16::<{ ipv4::CHECKSUM }, _>(ip, adjust(checksum, diff));
            write_u32::<{ ipv4::SRC }, _>(ip, src.into());
            write_u32::<{ ipv4::DST }, _>(ip, dst.into());
        }
        (IpAddr::V6(_), IpAddr::V6(_), IpAddr::V6(src), IpAddr::V6(dst)) => {
            let Some(ip) = ip.first_chunk_mut::<{ ipv6::HEADER_LEN }>() else {
                return false;
            };
            write_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, _>(ip, src.octets());
            write_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, _>(ip, dst.octets());
        }
        _ => return false,
    }
    write_bytes::<{ ethernet::DST }, 6, _>(eth, rewrite.eth_dst);
    write_bytes::<{ ethernet::SRC }, 6, _>(eth, rewrite.eth_src);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{apply, parse_l3, L4Checksum};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use switchyard_wire::fixtures::*;

    fn rewrite() -> Rewrite {
        Rewrite {
            eth_src: [2, 0, 0, 0, 0, 0x2b],
            eth_dst: [2, 0, 0, 0, 0, 0xbe],
            ip_src: Ipv4Addr::new(192, 0, 2, 10).into(),
            ip_dst: Ipv4Addr::new(10, 1, 0, 5).into(),
            src_port: 40000,
            dst_port: 8080,
        }
    }

    #[test]
    fn a_first_fragment_reads_as_its_flow() {
        let l3 = parse_l3(&TCP_FIRST_FRAGMENT).unwrap();
        let parsed = parse_first_fragment(&TCP_FIRST_FRAGMENT, &l3).unwrap();
        assert_eq!(
            (
                parsed.key.src_port,
                parsed.key.dst_port,
                parsed.key.protocol
            ),
            (40000, 80, 6)
        );
        assert!(parsed.first_fragment);
        assert_eq!(parsed.tcp_flags, 0x02, "SYN");
    }

    #[test]
    fn a_later_fragment_is_no_first_fragment() {
        let l3 = parse_l3(&UDP_LATER_FRAGMENT).unwrap();
        assert_eq!(
            parse_first_fragment(&UDP_LATER_FRAGMENT, &l3).unwrap_err(),
            ParseError::Fragment
        );
    }

    #[test]
    fn a_first_fragment_too_short_for_its_l4_header_is_bad_l4_header() {
        // Total length cut to 20 + 19: one byte short of a TCP header.
        let mut frame = TCP_FIRST_FRAGMENT[..14 + 39].to_vec();
        frame[16..18].copy_from_slice(&39u16.to_be_bytes());
        let l3 = parse_l3(&frame).unwrap();
        assert_eq!(
            parse_first_fragment(&frame, &l3).unwrap_err(),
            ParseError::BadL4Header
        );
    }

    #[test]
    fn a_first_fragment_is_rewritten_incrementally_even_when_it_looks_partial() {
        let frame = TCP_FIRST_FRAGMENT;
        let l3 = parse_l3(&frame).unwrap();
        let parsed = parse_first_fragment(&frame, &l3).unwrap();
        // The checksum field set to the folded pseudo-header sum, as a
        // sender with offload leaves it: a whole packet would be completed.
        let mut looks_partial = frame.to_vec();
        let pseudo = switchyard_wire::checksum::pseudo_header_v4(
            u32::from(Ipv4Addr::new(192, 0, 2, 10)),
            u32::from(Ipv4Addr::new(198, 51, 100, 1)),
            6,
            24,
        );
        let field = switchyard_wire::checksum::fold(pseudo);
        looks_partial[34 + 16..34 + 18].copy_from_slice(&field.to_be_bytes());
        let mut out = looks_partial.clone();
        assert_eq!(
            apply(&mut out, &parsed, &rewrite()),
            L4Checksum::Incremental
        );
        let expected = adjust(
            field,
            address_diff(parsed.key.dst, rewrite().ip_dst)
                + switchyard_wire::checksum::diff_u16(80, 8080),
        );
        assert_eq!(out[34 + 16..34 + 18], expected.to_be_bytes());
    }

    #[test]
    fn a_later_fragment_gets_macs_and_addresses_and_a_valid_header_checksum() {
        let mut frame = UDP_LATER_FRAGMENT.to_vec();
        let l3 = parse_l3(&frame).unwrap();
        assert!(rewrite_later_fragment(&mut frame, &l3, &rewrite()));
        assert_eq!(frame[0..6], rewrite().eth_dst);
        assert_eq!(frame[6..12], rewrite().eth_src);
        assert_eq!(frame[26..30], [192, 0, 2, 10]);
        assert_eq!(frame[30..34], [10, 1, 0, 5]);
        assert_eq!(
            switchyard_wire::checksum::fold(switchyard_wire::checksum::sum_words(&frame[14..34])),
            0xffff,
            "header checksum verifies"
        );
        assert_eq!(frame[34..], UDP_LATER_FRAGMENT[34..], "data untouched");
        assert_eq!(
            frame[14..24],
            UDP_LATER_FRAGMENT[14..24],
            "TTL, id, offset kept"
        );
    }

    #[test]
    fn a_later_fragment_of_the_other_family_is_left_untouched() {
        let mut frame = UDP_LATER_FRAGMENT.to_vec();
        let l3 = parse_l3(&frame).unwrap();
        let v6 = Rewrite {
            ip_src: "2001:db8::1".parse().unwrap(),
            ip_dst: "2001:db8::2".parse().unwrap(),
            ..rewrite()
        };
        assert!(!rewrite_later_fragment(&mut frame, &l3, &v6));
        assert_eq!(frame, UDP_LATER_FRAGMENT);
    }

    proptest! {
        #[test]
        fn rewriting_a_later_fragment_never_panics(
            mut frame in prop::collection::vec(any::<u8>(), 0..80),
            l3_offset in 0usize..90,
            v6 in any::<bool>(),
        ) {
            let l3 = L3 {
                src: if v6 { "2001:db8::1".parse().unwrap() } else { Ipv4Addr::UNSPECIFIED.into() },
                dst: if v6 { "2001:db8::2".parse().unwrap() } else { Ipv4Addr::UNSPECIFIED.into() },
                protocol: 17,
                l3_offset,
                l4_offset: l3_offset,
                ip_total_len: 0,
                has_ext_headers: false,
                fragment: None,
            };
            let rewrite = if v6 {
                Rewrite {
                    ip_src: "2001:db8::3".parse().unwrap(),
                    ip_dst: "2001:db8::4".parse().unwrap(),
                    ..rewrite()
                }
            } else {
                rewrite()
            };
            let _ = rewrite_later_fragment(&mut frame, &l3, &rewrite);
        }
    }
}
