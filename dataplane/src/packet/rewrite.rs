//! Two-arm NAT in place: new MACs, IP addresses and L4 ports, with the
//! IPv4 header checksum (IPv6 has none) and the TCP/UDP checksum updated
//! incrementally (RFC 1624) rather than recomputed, so the cost does not
//! grow with the payload. The frame's length and every other byte stay as
//! they were, IPv4 options and IPv6 extension headers included. The one
//! exception is a frame whose TCP/UDP checksum the sender left partial
//! (see `partial`): its checksum is computed from scratch.

use std::net::IpAddr;

use super::parse::{FlowKey, Parsed};
use super::partial;
use switchyard_wire::checksum::{adjust, diff_u16, diff_u32, fold};
use switchyard_wire::{
    ethernet, ipv4, ipv6, read_bytes, read_u16, read_u32, tcp, udp, write_bytes, write_u16,
    write_u32,
};

/// A rewrite computed once per flow and replayed on each of its packets;
/// plain data so the XDP flow cache can later replay the same action.
///
/// Every field is written, changed or not: a forward DNAT carries the
/// client's address and port through as `ip_src`/`src_port`, a reply SNAT
/// carries the client's through as `ip_dst`/`dst_port`. Both addresses are
/// of the packet's family; a rewrite of the other family leaves the frame
/// untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub ip_src: IpAddr,
    pub ip_dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Applies `rewrite` to the frame `parsed` described: MACs, IP addresses
/// and L4 ports, with incremental updates of the IPv4 header checksum and of
/// the TCP/UDP checksum, whose pseudo-header covers the addresses.
///
/// A frame whose TCP/UDP checksum arrived partial (the sender offloaded it,
/// see [`L4Checksum::Completed`]) gets it computed from scratch instead,
/// since no incremental update can finish it; the caller counts those.
/// Not so a first fragment (`parsed.first_fragment`): its checksum covers
/// bytes other frames carry, so it is always updated incrementally.
///
/// `parsed` must come from [`parse`](super::parse()) of this same frame. If
/// its offsets do not fit the frame, its protocol is neither TCP nor UDP,
/// or the rewrite's addresses are not of the frame's family, the frame is
/// left untouched rather than half-rewritten.
///
/// TTL and hop limit are left as received. To the client the appliance
/// *is* the VIP, an endpoint rather than a router hop (Katran's
/// encapsulation leaves the client's TTL alone too), and a hop that
/// decrements owes an ICMP Time Exceeded when it reaches zero (RFC 1812
/// §5.3.1), which the dataplane does not send. The loop TTL guards against
/// cannot form here as long as config rejects a backend that is itself a
/// VIP. Keeping TTL also keeps the action a pure function of the flow,
/// which the XDP cache replays byte for byte.
pub fn apply(frame: &mut [u8], parsed: &Parsed, rewrite: &Rewrite) -> L4Checksum {
    let Some(headers) = Headers::split(frame, parsed, rewrite) else {
        return L4Checksum::Incremental;
    };
    let Some(len) = headers.rewrite(rewrite) else {
        return L4Checksum::Incremental;
    };
    // Completing it would sum only this fragment's share of the datagram.
    if parsed.first_fragment {
        return L4Checksum::Incremental;
    }
    if let Some(l4) = frame.get_mut(parsed.l4_offset..) {
        partial::complete(l4, parsed.key.protocol, len, rewrite.ip_src, rewrite.ip_dst);
    }
    L4Checksum::Completed
}

/// How [`apply`] brought the TCP/UDP checksum up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a completed partial checksum is counted"]
pub enum L4Checksum {
    /// Updated incrementally (RFC 1624); also a UDP datagram without a
    /// checksum, and a frame `apply` left untouched.
    Incremental,
    /// The field held only the folded pseudo-header sum a sender with tx
    /// checksum offload leaves for its device (Linux `CHECKSUM_PARTIAL`,
    /// carried as is by a veth); it was computed from scratch over the
    /// segment. A complete checksum that looked partial by chance (about
    /// one in 65,535) comes out the same.
    Completed,
}

/// The checksum changes of a rewrite, for the XDP flow cache: a flow's
/// packets all carry the same addresses and ports, and the rewrite writes
/// the same new ones, so the one's complement differences are the same for
/// every packet and are computed once per flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumDeltas {
    /// Folded difference for the IPv4 header checksum (addresses); 0 for
    /// IPv6, whose header has no checksum.
    pub ip: u16,
    /// Folded difference for the TCP/UDP checksum (addresses and ports).
    pub l4: u16,
}

/// What [`apply`] adds to the checksums of a packet with 5-tuple `key`:
/// the same sums it computes from the packet, folded as `adjust` folds
/// them, so `!fold(!checksum + delta)` is exactly what `apply` writes.
pub fn checksum_deltas(key: &FlowKey, rewrite: &Rewrite) -> ChecksumDeltas {
    let addr = address_diff(key.src, rewrite.ip_src) + address_diff(key.dst, rewrite.ip_dst);
    let l4 = addr + port_diff(key.src_port, key.dst_port, rewrite);
    ChecksumDeltas {
        ip: if key.is_ipv6() { 0 } else { fold(addr) },
        l4: fold(l4),
    }
}

/// The one's complement difference of an address field changing from `old`
/// to `new`, both of one family. The addresses are covered by the IPv4
/// header checksum and, through the pseudo-header, the TCP/UDP one (RFC
/// 9293 §3.1, RFC 768, RFC 8200 §8.1). Eight 32-bit differences of at most
/// `0x1fffe` each, plus the ports', fit a `u32`.
#[inline(always)]
pub(super) fn address_diff(old: IpAddr, new: IpAddr) -> u32 {
    match (old, new) {
        (IpAddr::V4(old), IpAddr::V4(new)) => diff_u32(u32::from(old), u32::from(new)),
        (IpAddr::V6(old), IpAddr::V6(new)) => {
            let (old, new) = (u128::from(old), u128::from(new));
            [96, 64, 32, 0]
                .iter()
                .map(|&shift| diff_u32((old >> shift) as u32, (new >> shift) as u32))
                .sum()
        }
        // `Headers::split` refuses a rewrite of the other family.
        _ => 0,
    }
}

#[inline(always)]
fn port_diff(src_port: u16, dst_port: u16, rewrite: &Rewrite) -> u32 {
    diff_u16(src_port, rewrite.src_port) + diff_u16(dst_port, rewrite.dst_port)
}

/// Mutable views of the headers a rewrite touches, each checked once.
struct Headers<'a> {
    eth: &'a mut [u8; ethernet::HEADER_LEN],
    ip: Ip<'a>,
    l4: L4<'a>,
    /// Bytes after the IP header (and IPv6 extension headers): a TCP
    /// segment's length.
    ip_payload_len: usize,
}

enum Ip<'a> {
    V4(&'a mut [u8; ipv4::MIN_HEADER_LEN]),
    V6(&'a mut [u8; ipv6::HEADER_LEN]),
}

enum L4<'a> {
    Tcp(&'a mut [u8; tcp::MIN_HEADER_LEN]),
    Udp(&'a mut [u8; udp::HEADER_LEN]),
}

impl<'a> Headers<'a> {
    /// Borrows every header before anything is written, so a `parsed` that
    /// does not fit the frame (a caller bug) changes nothing.
    fn split(frame: &'a mut [u8], parsed: &Parsed, rewrite: &Rewrite) -> Option<Self> {
        let ip_header_len = parsed.l4_offset.checked_sub(parsed.l3_offset)?;
        let (l2, rest) = frame.split_at_mut_checked(parsed.l3_offset)?;
        let (l3, l4) = rest.split_at_mut_checked(ip_header_len)?;
        let l4 = match parsed.key.protocol {
            ipv4::PROTOCOL_TCP => L4::Tcp(l4.first_chunk_mut()?),
            ipv4::PROTOCOL_UDP => L4::Udp(l4.first_chunk_mut()?),
            _ => return None,
        };
        let ip = match (parsed.key.src, rewrite.ip_src, rewrite.ip_dst) {
            (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)) => Ip::V4(l3.first_chunk_mut()?),
            (IpAddr::V6(_), IpAddr::V6(_), IpAddr::V6(_)) => Ip::V6(l3.first_chunk_mut()?),
            _ => return None,
        };
        Some(Headers {
            eth: l2.first_chunk_mut()?,
            ip,
            l4,
            ip_payload_len: parsed.ip_total_len.checked_sub(ip_header_len)?,
        })
    }

    /// Rewrites the headers; returns the length the TCP/UDP checksum
    /// covers if it arrived partial (tested on the values the incremental
    /// update reads anyway), in which case the checksum written is to be
    /// replaced by a full one.
    fn rewrite(self, rewrite: &Rewrite) -> Option<usize> {
        let Headers {
            eth,
            ip,
            l4,
            ip_payload_len,
        } = self;
        write_bytes::<{ ethernet::DST }, 6, _>(eth, rewrite.eth_dst);
        write_bytes::<{ ethernet::SRC }, 6, _>(eth, rewrite.eth_src);

        // The addresses are covered by the IPv4 header checksum and,
        // through the pseudo-header, by the TCP/UDP one.
        let (src, dst, addr_diff) = match ip {
            Ip::V4(ip) => {
                let (IpAddr::V4(new_src), IpAddr::V4(new_dst)) = (rewrite.ip_src, rewrite.ip_dst)
                else {
                    return None;
                };
                let (src, dst) = (
                    read_u32::<{ ipv4::SRC }, _>(ip),
                    read_u32::<{ ipv4::DST }, _>(ip),
                );
                let addr_diff = diff_u32(src, new_src.into()) + diff_u32(dst, new_dst.into());
                let ip_checksum = read_u16::<{ ipv4::CHECKSUM }, _>(ip);
                write_u16::<{ ipv4::CHECKSUM }, _>(ip, adjust(ip_checksum, addr_diff));
                write_u32::<{ ipv4::SRC }, _>(ip, new_src.into());
                write_u32::<{ ipv4::DST }, _>(ip, new_dst.into());
                (IpAddr::V4(src.into()), IpAddr::V4(dst.into()), addr_diff)
            }
            Ip::V6(ip) => {
                let (IpAddr::V6(new_src), IpAddr::V6(new_dst)) = (rewrite.ip_src, rewrite.ip_dst)
                else {
                    return None;
                };
                let src = IpAddr::V6(read_bytes::<{ ipv6::SRC }, 16, _>(ip).into());
                let dst = IpAddr::V6(read_bytes::<{ ipv6::DST }, 16, _>(ip).into());
                let addr_diff =
                    address_diff(src, rewrite.ip_src) + address_diff(dst, rewrite.ip_dst);
                write_bytes::<{ ipv6::SRC }, 16, _>(ip, new_src.octets());
                write_bytes::<{ ipv6::DST }, 16, _>(ip, new_dst.octets());
                (src, dst, addr_diff)
            }
        };

        match l4 {
            L4::Tcp(hdr) => {
                let diff = addr_diff
                    + port_diff(
                        read_u16::<{ tcp::SRC_PORT }, _>(hdr),
                        read_u16::<{ tcp::DST_PORT }, _>(hdr),
                        rewrite,
                    );
                let checksum = read_u16::<{ tcp::CHECKSUM }, _>(hdr);
                write_u16::<{ tcp::CHECKSUM }, _>(hdr, adjust(checksum, diff));
                write_u16::<{ tcp::SRC_PORT }, _>(hdr, rewrite.src_port);
                write_u16::<{ tcp::DST_PORT }, _>(hdr, rewrite.dst_port);
                let len = ip_payload_len;
                partial::is_partial(ipv4::PROTOCOL_TCP, checksum, src, dst, len).then_some(len)
            }
            L4::Udp(hdr) => {
                let checksum = read_u16::<{ udp::CHECKSUM }, _>(hdr);
                // 0 means the sender computed no checksum (RFC 768); filling
                // one in would need the whole payload, so "none" stays none.
                // Over IPv6 a 0 is invalid (RFC 8200 §8.1) and the receiver
                // drops the datagram, as it would without us.
                let mut partial = None;
                if checksum != 0 {
                    let diff = addr_diff
                        + port_diff(
                            read_u16::<{ udp::SRC_PORT }, _>(hdr),
                            read_u16::<{ udp::DST_PORT }, _>(hdr),
                            rewrite,
                        );
                    let updated = adjust(checksum, diff);
                    // A computed 0 is sent as all ones, or it would read as none.
                    let updated = if updated == 0 { 0xffff } else { updated };
                    write_u16::<{ udp::CHECKSUM }, _>(hdr, updated);
                    let len = usize::from(read_u16::<{ udp::LENGTH }, _>(hdr));
                    partial = partial::is_partial(ipv4::PROTOCOL_UDP, checksum, src, dst, len)
                        .then_some(len);
                }
                write_u16::<{ udp::SRC_PORT }, _>(hdr, rewrite.src_port);
                write_u16::<{ udp::DST_PORT }, _>(hdr, rewrite.dst_port);
                partial
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse::{parse, FlowKey};
    use crate::packet::testutil::{
        arb_frame_spec, arb_rewrite, assert_checksums_verify, ipv6_frame, mutated,
        with_partial_checksum, Ext, FrameSpec, L4Spec,
    };
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use switchyard_wire::fixtures::*;
    use switchyard_wire::ipv6::{NEXT_HEADER_DESTINATION_OPTIONS, NEXT_HEADER_HOP_BY_HOP};

    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const LB_CLIENT_ARM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];
    const LB_BACKEND_ARM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2b];
    const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbe];
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const BACKEND: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5));

    fn parse_and_apply(frame: &mut [u8], rewrite: &Rewrite) -> L4Checksum {
        let parsed = parse(frame).unwrap();
        apply(frame, &parsed, rewrite)
    }

    /// The rewrite that puts `frame` back as it was.
    fn inverse_of(frame: &[u8]) -> Rewrite {
        let key = parse(frame).unwrap().key;
        Rewrite {
            eth_dst: frame[0..6].try_into().unwrap(),
            eth_src: frame[6..12].try_into().unwrap(),
            ip_src: key.src,
            ip_dst: key.dst,
            src_port: key.src_port,
            dst_port: key.dst_port,
        }
    }

    /// One row of the fixture table: `rewrite` turns `input` into exactly
    /// `expected`, whose checksums verify from scratch, and its inverse
    /// turns it back into exactly `input`.
    fn assert_rewrites(input: &[u8], rewrite: Rewrite, expected: &[u8]) {
        let mut frame = input.to_vec();
        let checksum = apply(&mut frame, &parse(input).unwrap(), &rewrite);
        assert_eq!(checksum, L4Checksum::Incremental);
        assert_eq!(frame, expected);
        let parsed = parse(&frame).unwrap();
        assert_eq!(
            parsed.key,
            FlowKey {
                src: rewrite.ip_src,
                dst: rewrite.ip_dst,
                src_port: rewrite.src_port,
                dst_port: rewrite.dst_port,
                protocol: parsed.key.protocol,
            }
        );
        assert_checksums_verify(&frame, &parsed);

        let _ = apply(&mut frame, &parsed, &inverse_of(input));
        assert_eq!(frame, input);
    }

    #[test]
    fn forward_dnat_sends_vip_port_80_to_backend_port_8080() {
        let to_backend = Rewrite {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: CLIENT,
            ip_dst: BACKEND,
            src_port: 40000,
            dst_port: 8080,
        };
        assert_rewrites(&TCP_SYN, to_backend, &TCP_SYN_DNAT);
    }

    #[test]
    fn reply_snat_sends_backend_port_8080_back_as_vip_port_80() {
        let to_client = Rewrite {
            eth_src: LB_CLIENT_ARM_MAC,
            eth_dst: CLIENT_MAC,
            ip_src: VIP,
            ip_dst: CLIENT,
            src_port: 80,
            dst_port: 40000,
        };
        assert_rewrites(&TCP_SYN_ACK, to_client, &TCP_SYN_ACK_SNAT);
    }

    #[test]
    fn udp_dnat_updates_the_udp_checksum() {
        let to_backend = Rewrite {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: CLIENT,
            ip_dst: BACKEND,
            src_port: 53000,
            dst_port: 5353,
        };
        assert_rewrites(&UDP_DNS, to_backend, &UDP_DNS_DNAT);
    }

    #[test]
    fn udp_checksum_zero_stays_zero() {
        let to_backend = Rewrite {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: CLIENT,
            ip_dst: BACKEND,
            src_port: 53000,
            dst_port: 5353,
        };
        assert_rewrites(&UDP_NO_CHECKSUM, to_backend, &UDP_NO_CHECKSUM_DNAT);
        assert_eq!(UDP_NO_CHECKSUM_DNAT[40..42], [0, 0]);
    }

    #[test]
    fn udp_checksum_that_updates_to_zero_is_sent_as_ffff() {
        let spec = FrameSpec {
            eth_dst: LB_CLIENT_ARM_MAC,
            eth_src: CLIENT_MAC,
            vlan: None,
            ip_src: Ipv4Addr::new(192, 0, 2, 10),
            ip_dst: Ipv4Addr::new(198, 51, 100, 1),
            ttl: 64,
            ident: 1,
            dont_fragment: false,
            ip_options: vec![],
            src_port: 53000,
            dst_port: 53,
            l4: L4Spec::Udp { checksum: true },
            payload: b"switchyard".to_vec(),
            padding: 0,
        };
        // The one destination port whose datagram sums to all ones, so
        // the computed checksum is 0 (the builder writes it as 0xffff).
        let zero_port = (0..=u16::MAX)
            .find(|&port| {
                let frame = FrameSpec {
                    dst_port: port,
                    ..spec.clone()
                }
                .build();
                frame[40..42] == [0xff, 0xff]
            })
            .unwrap();
        assert_ne!(
            zero_port, spec.dst_port,
            "the rewrite must change the checksum"
        );
        let rewrite = Rewrite {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: CLIENT,
            ip_dst: VIP,
            src_port: 53000,
            dst_port: zero_port,
        };
        let mut frame = spec.build();
        let _ = parse_and_apply(&mut frame, &rewrite);
        assert_eq!(frame[40..42], [0xff, 0xff]);
        assert_eq!(frame, spec.rewritten(&rewrite).build());
    }

    #[test]
    fn only_macs_addresses_ports_and_checksums_change_and_ttl_is_kept() {
        // Behind a VLAN tag and IPv4 options, so offsets come from `parsed`.
        let input = {
            let mut frame = TCP_SYN_DOT1Q[..18].to_vec();
            frame.extend_from_slice(&TCP_SYN_IP_OPTIONS[14..]);
            frame
        };
        let parsed = parse(&input).unwrap();
        assert_eq!((parsed.l3_offset, parsed.l4_offset), (18, 42));
        let rewrite = Rewrite {
            eth_src: [0xaa; 6],
            eth_dst: [0xbb; 6],
            ip_src: Ipv4Addr::new(1, 2, 3, 4).into(),
            ip_dst: Ipv4Addr::new(5, 6, 7, 8).into(),
            src_port: 1111,
            dst_port: 2222,
        };
        let mut frame = input.clone();
        let _ = apply(&mut frame, &parsed, &rewrite);

        let (l3, l4) = (parsed.l3_offset, parsed.l4_offset);
        let may_change = |at: usize| {
            at < 12
                || (l3 + 10..l3 + 20).contains(&at)
                || (l4..l4 + 4).contains(&at)
                || (l4 + 16..l4 + 18).contains(&at)
        };
        for (at, (before, after)) in input.iter().zip(&frame).enumerate() {
            if !may_change(at) {
                assert_eq!(before, after, "byte {at} changed");
            }
        }
        assert_eq!(frame[l3 + 8], 64, "TTL");
        assert_checksums_verify(&frame, &parse(&frame).unwrap());
    }

    #[test]
    fn identity_rewrite_leaves_the_frame_unchanged() {
        for input in [
            &TCP_SYN[..],
            &TCP_SYN_ACK,
            &UDP_DNS,
            &UDP_NO_CHECKSUM,
            &UDP_SHORT_PADDED,
        ] {
            let mut frame = input.to_vec();
            let _ = apply(&mut frame, &parse(input).unwrap(), &inverse_of(input));
            assert_eq!(frame, input);
        }
    }

    #[test]
    fn parsed_that_does_not_fit_the_frame_leaves_it_untouched() {
        let parsed = parse(&TCP_SYN).unwrap();
        let rewrite = inverse_of(&TCP_SYN_DNAT);
        let misfits = [
            Parsed {
                l4_offset: TCP_SYN.len() - 19,
                ..parsed
            },
            Parsed {
                l3_offset: parsed.l4_offset + 1,
                ..parsed
            },
            Parsed {
                l3_offset: usize::MAX,
                l4_offset: usize::MAX,
                ..parsed
            },
            Parsed {
                key: FlowKey {
                    protocol: 1,
                    ..parsed.key
                },
                ..parsed
            },
        ];
        for misfit in misfits {
            let mut frame = TCP_SYN.to_vec();
            let checksum = apply(&mut frame, &misfit, &rewrite);
            assert_eq!(checksum, L4Checksum::Incremental, "{misfit:?}");
            assert_eq!(frame, TCP_SYN, "{misfit:?}");
        }
        let mut short = TCP_SYN[..30].to_vec();
        let _ = apply(&mut short, &parsed, &rewrite);
        assert_eq!(short, TCP_SYN[..30]);
    }

    /// A client on the LB's own host, or behind a veth, with tx checksum
    /// offload on: the frame's checksum field holds only the pseudo-header
    /// sum. An incremental update would send that on wrong; apply computes
    /// the whole checksum, so the backend's stack accepts the segment.
    #[test]
    fn a_partial_checksum_is_completed_so_the_output_verifies_from_scratch() {
        let to_backend = |ports: (u16, u16)| Rewrite {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: CLIENT,
            ip_dst: BACKEND,
            src_port: ports.0,
            dst_port: ports.1,
        };
        for (input, to_backend, expected) in [
            (&TCP_SYN[..], to_backend((40000, 8080)), &TCP_SYN_DNAT[..]),
            (&UDP_DNS, to_backend((53000, 5353)), &UDP_DNS_DNAT),
        ] {
            let parsed = parse(input).unwrap();
            let partial = with_partial_checksum(input, &parsed);
            assert_ne!(partial, input, "the fixture's checksum was complete");
            let mut frame = partial.clone();
            assert_eq!(
                apply(&mut frame, &parsed, &to_backend),
                L4Checksum::Completed
            );
            assert_checksums_verify(&frame, &parse(&frame).unwrap());
            // The bytes a full-checksum sender would have got through.
            assert_eq!(&frame[..expected.len()], &expected[..expected.len()]);

            // What the incremental update alone would have sent.
            let mut incremental = partial.clone();
            let _ = Headers::split(&mut incremental, &parsed, &to_backend)
                .unwrap()
                .rewrite(&to_backend);
            assert_ne!(incremental, frame, "the incremental update was enough");
        }
    }

    #[test]
    fn udp_without_a_checksum_is_never_partial() {
        let mut frame = UDP_NO_CHECKSUM.to_vec();
        let parsed = parse(&frame).unwrap();
        let rewrite = inverse_of(&UDP_NO_CHECKSUM_DNAT);
        assert_eq!(
            apply(&mut frame, &parsed, &rewrite),
            L4Checksum::Incremental
        );
        assert_eq!(frame[40..42], [0, 0]);
    }

    /// A complete checksum equal to the folded pseudo-header sum (one in
    /// 65,535) cannot be told from a partial one. Recomputing it from
    /// scratch gives what the incremental update gives: a false match costs
    /// a pass over the segment, never a wrong checksum.
    #[test]
    fn a_complete_checksum_that_looks_partial_comes_out_the_same() {
        let spec = |src_port: u16| FrameSpec {
            eth_dst: LB_CLIENT_ARM_MAC,
            eth_src: CLIENT_MAC,
            vlan: None,
            ip_src: Ipv4Addr::new(192, 0, 2, 10),
            ip_dst: Ipv4Addr::new(198, 51, 100, 1),
            ttl: 64,
            ident: 7,
            dont_fragment: true,
            ip_options: vec![],
            src_port,
            dst_port: 80,
            l4: L4Spec::Tcp {
                seq: 1,
                ack: 2,
                flags: 0x18,
                window: 512,
                options: vec![],
            },
            payload: b"GET /".to_vec(),
            padding: 0,
        };
        let (spec, frame) = (0..=u16::MAX)
            .map(|port| (spec(port), spec(port).build()))
            .find(|(_, frame)| {
                let parsed = parse(frame).unwrap();
                frame == &with_partial_checksum(frame, &parsed)
            })
            .expect("some source port makes the full checksum look partial");
        let rewrite = Rewrite {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: CLIENT,
            ip_dst: BACKEND,
            src_port: spec.src_port,
            dst_port: 8080,
        };
        let mut out = frame.clone();
        assert_eq!(
            apply(&mut out, &parse(&frame).unwrap(), &rewrite),
            L4Checksum::Completed
        );
        assert_eq!(out, spec.rewritten(&rewrite).build());
    }

    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
    const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 5);

    fn to_backend6(dst_port: u16) -> Rewrite {
        Rewrite {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: CLIENT6.into(),
            ip_dst: BACKEND6.into(),
            src_port: 40000,
            dst_port,
        }
    }

    #[test]
    fn ipv6_dnat_rewrites_addresses_and_ports_and_the_l4_checksum_verifies() {
        let exts = [
            Ext::options(NEXT_HEADER_HOP_BY_HOP, 1),
            Ext::options(NEXT_HEADER_DESTINATION_OPTIONS, 2),
        ];
        for (protocol, chain) in [
            (6, &exts[..0]),
            (17, &exts[..0]),
            (6, &exts[..]),
            (17, &exts[..]),
        ] {
            let input = ipv6_frame(CLIENT6, VIP6, protocol, (40000, 80), b"switchyard", chain);
            let mut frame = input.clone();
            let parsed = parse(&input).unwrap();
            let checksum = apply(&mut frame, &parsed, &to_backend6(8080));
            assert_eq!(checksum, L4Checksum::Incremental);
            let out = parse(&frame).unwrap();
            assert_eq!(
                (out.key.src, out.key.dst, out.key.src_port, out.key.dst_port),
                (CLIENT6.into(), BACKEND6.into(), 40000, 8080)
            );
            assert_eq!(
                (out.l4_offset, out.ip_total_len),
                (parsed.l4_offset, parsed.ip_total_len)
            );
            assert_checksums_verify(&frame, &out);
            assert_eq!(frame[14 + 7], 64, "hop limit kept");
            assert_eq!(
                frame[54..parsed.l4_offset],
                input[54..parsed.l4_offset],
                "extension headers kept"
            );
            // The worker's deltas are what the fast path adds.
            let deltas = checksum_deltas(&parsed.key, &to_backend6(8080));
            assert_eq!(deltas.ip, 0, "IPv6 has no header checksum");
            let at = parsed.l4_offset + if protocol == 6 { 16 } else { 6 };
            let before = u16::from_be_bytes([input[at], input[at + 1]]);
            let after = u16::from_be_bytes([frame[at], frame[at + 1]]);
            assert_eq!(!fold(u32::from(!before) + u32::from(deltas.l4)), after);
            let _ = apply(&mut frame, &out, &inverse_of(&input));
            assert_eq!(frame, input);
        }
    }

    #[test]
    fn a_partial_ipv6_checksum_is_completed() {
        let input = ipv6_frame(CLIENT6, VIP6, 6, (40000, 80), b"switchyard", &[]);
        let partial = with_partial_checksum(&input, &parse(&input).unwrap());
        let mut frame = partial.clone();
        let checksum = apply(&mut frame, &parse(&partial).unwrap(), &to_backend6(8080));
        assert_eq!(checksum, L4Checksum::Completed);
        assert_checksums_verify(&frame, &parse(&frame).unwrap());
    }

    #[test]
    fn a_rewrite_of_the_other_family_leaves_the_frame_untouched() {
        let input = ipv6_frame(CLIENT6, VIP6, 17, (40000, 53), b"x", &[]);
        let mut frame = input.clone();
        let v4 = inverse_of(&TCP_SYN);
        let _ = apply(&mut frame, &parse(&input).unwrap(), &v4);
        assert_eq!(frame, input);
        let mut frame = TCP_SYN.to_vec();
        let _ = apply(&mut frame, &parse(&TCP_SYN).unwrap(), &to_backend6(80));
        assert_eq!(frame, TCP_SYN);
    }

    proptest! {
        #[test]
        fn any_ipv6_rewrite_keeps_checksums_verifying(
            src in any::<u128>(),
            dst in any::<u128>(),
            new_src in any::<u128>(),
            new_dst in any::<u128>(),
            tcp in any::<bool>(),
            ports in any::<(u16, u16, u16, u16)>(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let input = ipv6_frame(src.into(), dst.into(), if tcp { 6 } else { 17 }, (ports.0, ports.1), &payload, &[]);
            let Ok(parsed) = parse(&input) else {
                return Ok(()); // an IPv4-mapped address
            };
            let rewrite = Rewrite {
                eth_src: [1; 6],
                eth_dst: [2; 6],
                ip_src: Ipv6Addr::from(new_src).into(),
                ip_dst: Ipv6Addr::from(new_dst).into(),
                src_port: ports.2,
                dst_port: ports.3,
            };
            let mut frame = input.clone();
            let _ = apply(&mut frame, &parsed, &rewrite);
            let out = parse(&frame);
            if let Ok(out) = out {
                assert_checksums_verify(&frame, &out);
            }
        }

        /// Whatever the frame and the rewrite, a partial checksum comes out
        /// as the full checksum of the rewritten frame.
        #[test]
        fn apply_completes_any_partial_checksum(
            spec in arb_frame_spec(),
            rewrite in arb_rewrite(),
        ) {
            let whole = spec.build();
            let parsed = parse(&whole).unwrap();
            let mut frame = with_partial_checksum(&whole, &parsed);
            let checksum = apply(&mut frame, &parsed, &rewrite);
            prop_assert_eq!(&frame, &spec.rewritten(&rewrite).build());
            let udp_without = matches!(spec.l4, L4Spec::Udp { checksum: false });
            prop_assert_eq!(checksum == L4Checksum::Completed, !udp_without);
        }

        #[test]
        fn apply_equals_a_from_scratch_build_of_the_rewritten_frame(
            spec in arb_frame_spec(),
            rewrite in arb_rewrite(),
        ) {
            let mut frame = spec.build();
            let _ = parse_and_apply(&mut frame, &rewrite);
            prop_assert_eq!(&frame, &spec.rewritten(&rewrite).build());
            assert_checksums_verify(&frame, &parse(&frame).unwrap());
        }

        #[test]
        fn apply_then_inverse_restores_the_original_frame(
            spec in arb_frame_spec(),
            rewrite in arb_rewrite(),
        ) {
            let original = spec.build();
            let mut frame = original.clone();
            let _ = parse_and_apply(&mut frame, &rewrite);
            let _ = parse_and_apply(&mut frame, &inverse_of(&original));
            prop_assert_eq!(frame, original);
        }

        /// Whatever parse accepts, apply rewrites without panicking, and the
        /// result parses to the rewritten key.
        #[test]
        fn apply_on_any_accepted_frame_yields_the_rewritten_key(
            frame in mutated(arb_frame_spec()),
            rewrite in arb_rewrite(),
        ) {
            let Ok(parsed) = parse(&frame) else { return Ok(()) };
            let mut frame = frame;
            let _ = apply(&mut frame, &parsed, &rewrite);
            let reparsed = parse(&frame).unwrap();
            prop_assert_eq!(
                (reparsed.key.src, reparsed.key.dst, reparsed.key.src_port, reparsed.key.dst_port),
                (rewrite.ip_src, rewrite.ip_dst, rewrite.src_port, rewrite.dst_port)
            );
        }

        #[test]
        fn apply_never_panics_on_arbitrary_offsets(
            mut frame in prop::collection::vec(any::<u8>(), 0..80),
            l3_offset in 0usize..90,
            l4_offset in 0usize..90,
            protocol in prop::sample::select(vec![6u8, 17, 1]),
            ip_total_len in 0usize..100,
            rewrite in arb_rewrite(),
        ) {
            let parsed = Parsed {
                key: FlowKey {
                    src: Ipv4Addr::UNSPECIFIED.into(),
                    dst: Ipv4Addr::UNSPECIFIED.into(),
                    src_port: 0,
                    dst_port: 0,
                    protocol,
                },
                l3_offset,
                l4_offset,
                tcp_flags: 0,
                ip_total_len,
                has_ext_headers: false,
                first_fragment: false,
            };
            let _ = apply(&mut frame, &parsed, &rewrite);
        }
    }
}
