//! The worker's byte handling: parse a frame, then replay a rewrite plan on
//! it (and, for TCP, turn it into the reset answering it). Beyond "no
//! panic", the rewrite must touch only the fields it owns, keep the frame
//! parseable as the rewritten flow, and keep every checksum that verified
//! verifying; a partial checksum it says it completed must verify. A
//! fragment goes through the fragment path's functions instead: a first
//! one is rewritten like a whole packet but never completed, a later one
//! changes only in its MACs and addresses (and IPv4 header checksum).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_dataplane::packet::{
    self, apply, has_partial_checksum, tcp_reset, FlowKey, L4Checksum, ParseError, Parsed, Rewrite,
};
use switchyard_wire::checksum::{fold, pseudo_header_v4, pseudo_header_v6, sum_words};
use switchyard_wire::{ethernet, ipv4, ipv6, tcp, udp};

/// Bytes of the rewrite plan in front of the frame: destination and source
/// MAC, source and destination address (16 bytes each: an IPv4 frame's
/// plan uses the first 4), source and destination port.
pub const PLAN_LEN: usize = 6 + 6 + 16 + 16 + 2 + 2;

/// Input: a [`PLAN_LEN`]-byte rewrite plan, then the frame.
pub fn packet(data: &[u8]) {
    let Some((plan, frame)) = data.split_first_chunk::<PLAN_LEN>() else {
        return;
    };
    let parsed = match packet::parse(frame) {
        Ok(parsed) => parsed,
        Err(ParseError::Fragment) => return check_fragment(plan, frame),
        Err(ParseError::UnsupportedProtocol) => return check_icmp(plan, frame),
        Err(_) => return,
    };
    let rewrite = plan_of(plan, parsed.key.is_ipv6());
    let _ = packet::flow_hash(&parsed.key, u32::from_be_bytes([plan[0], plan[1], 0, 0]));
    let _ = packet::client_hash(parsed.key.src, 0);
    check_rewrite(frame, &parsed, &rewrite);
    if parsed.key.protocol == ipv4::PROTOCOL_TCP {
        check_reset(frame, &parsed);
    }
}

/// Encodes a rewrite as [`packet`] reads it, for seeds.
pub fn plan_bytes(rewrite: &Rewrite) -> [u8; PLAN_LEN] {
    let mut plan = [0; PLAN_LEN];
    plan[0..6].copy_from_slice(&rewrite.eth_dst);
    plan[6..12].copy_from_slice(&rewrite.eth_src);
    for (at, address) in [(12, rewrite.ip_src), (28, rewrite.ip_dst)] {
        match address {
            IpAddr::V4(a) => plan[at..at + 4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => plan[at..at + 16].copy_from_slice(&a.octets()),
        }
    }
    plan[44..46].copy_from_slice(&rewrite.src_port.to_be_bytes());
    plan[46..48].copy_from_slice(&rewrite.dst_port.to_be_bytes());
    plan
}

/// The plan's rewrite, with addresses of the frame's family.
fn plan_of(plan: &[u8; PLAN_LEN], ipv6: bool) -> Rewrite {
    let mac = |at: usize| <[u8; 6]>::try_from(&plan[at..at + 6]).unwrap_or_default();
    let addr = |at: usize| -> IpAddr {
        if ipv6 {
            let octets = <[u8; 16]>::try_from(&plan[at..at + 16]).unwrap_or_default();
            Ipv6Addr::from(octets).into()
        } else {
            Ipv4Addr::new(plan[at], plan[at + 1], plan[at + 2], plan[at + 3]).into()
        }
    };
    let port = |at: usize| u16::from_be_bytes([plan[at], plan[at + 1]]);
    Rewrite {
        eth_dst: mac(0),
        eth_src: mac(6),
        ip_src: addr(12),
        ip_dst: addr(28),
        src_port: port(44),
        dst_port: port(46),
    }
}

fn check_rewrite(frame: &[u8], parsed: &Parsed, rewrite: &Rewrite) {
    let (l3, l4) = (parsed.l3_offset, parsed.l4_offset);
    let ip_end = l3 + parsed.ip_total_len;
    assert!(
        l3 < l4 && l4 <= ip_end && ip_end <= frame.len(),
        "{parsed:?}"
    );
    let protocol = parsed.key.protocol;
    let v6 = parsed.key.is_ipv6();
    // IPv6 has no header checksum.
    let ip_verified = !v6 && verifies(&frame[l3..l4], 0);
    let l4_verified = l4_checksum_verifies(frame, parsed, parsed.key.src, parsed.key.dst);
    let partial = has_partial_checksum(frame, parsed);

    let mut out = frame.to_vec();
    let how = apply(&mut out, parsed, rewrite);
    assert_eq!(
        how == L4Checksum::Completed,
        partial,
        "apply and has_partial_checksum disagree on {parsed:?}"
    );

    let again = packet::parse(&out).expect("a rewritten frame parses");
    let expected = FlowKey {
        src: rewrite.ip_src,
        dst: rewrite.ip_dst,
        src_port: rewrite.src_port,
        dst_port: rewrite.dst_port,
        protocol,
    };
    assert_eq!(again.key, expected);
    assert_eq!(
        (again.l3_offset, again.l4_offset, again.ip_total_len),
        (l3, l4, parsed.ip_total_len)
    );

    // Only the fields a rewrite owns may change.
    let l4_checksum = match protocol {
        ipv4::PROTOCOL_TCP => tcp::CHECKSUM,
        _ => udp::CHECKSUM,
    };
    let owned = |at: usize| {
        let ip_owned = if v6 {
            (l3 + ipv6::SRC..l3 + ipv6::DST + 16).contains(&at)
        } else {
            (l3 + ipv4::CHECKSUM..l3 + ipv4::CHECKSUM + 2).contains(&at)
                || (l3 + ipv4::SRC..l3 + ipv4::DST + 4).contains(&at)
        };
        at < ethernet::SRC + 6
            || ip_owned
            || (l4..l4 + 4).contains(&at)
            || (l4 + l4_checksum..l4 + l4_checksum + 2).contains(&at)
    };
    for (at, (before, after)) in frame.iter().zip(&out).enumerate() {
        assert!(
            before == after || owned(at),
            "byte {at} changed from {before:#04x} to {after:#04x}"
        );
    }

    if ip_verified {
        assert!(verifies(&out[l3..l4], 0), "the IPv4 header checksum broke");
    }
    let l4_after = l4_checksum_verifies(&out, parsed, rewrite.ip_src, rewrite.ip_dst);
    if l4_verified == Some(true) || how == L4Checksum::Completed {
        assert!(
            l4_after.unwrap_or(true),
            "the {} checksum does not verify after the rewrite",
            if protocol == ipv4::PROTOCOL_TCP {
                "TCP"
            } else {
                "UDP"
            }
        );
    }
    if protocol == ipv4::PROTOCOL_UDP {
        let field = u16::from_be_bytes([out[l4 + udp::CHECKSUM], out[l4 + udp::CHECKSUM + 1]]);
        let was = u16::from_be_bytes([frame[l4 + udp::CHECKSUM], frame[l4 + udp::CHECKSUM + 1]]);
        assert_eq!(field == 0, was == 0, "a UDP checksum appeared or vanished");
    }
}

/// A frame `parse` refused as a fragment: `parse_l3` reads it as one, a
/// first fragment is rewritten incrementally (its checksum covers bytes it
/// does not hold), and a later one keeps every byte but its MACs,
/// addresses and IPv4 header checksum, which keeps verifying if it did.
fn check_fragment(plan: &[u8; PLAN_LEN], frame: &[u8]) {
    let l3 = packet::parse_l3(frame).expect("a fragment has an IP layer");
    let fragment = l3.fragment.expect("parse_l3 sees the fragment parse saw");
    let v6 = l3.src.is_ipv6();
    let rewrite = plan_of(plan, v6);
    let mut out = frame.to_vec();
    if fragment.is_first() {
        if let Ok(parsed) = packet::parse_first_fragment(frame, &l3) {
            assert_eq!(apply(&mut out, &parsed, &rewrite), L4Checksum::Incremental);
        }
        return;
    }
    assert!(packet::rewrite_later_fragment(&mut out, &l3, &rewrite));
    let at = l3.l3_offset;
    let owned = |i: usize| {
        i < ethernet::SRC + 6
            || if v6 {
                (at + ipv6::SRC..at + ipv6::DST + 16).contains(&i)
            } else {
                (at + ipv4::CHECKSUM..at + ipv4::CHECKSUM + 2).contains(&i)
                    || (at + ipv4::SRC..at + ipv4::DST + 4).contains(&i)
            }
    };
    for (i, (before, after)) in frame.iter().zip(&out).enumerate() {
        assert!(
            before == after || owned(i),
            "byte {i} of a later fragment changed"
        );
    }
    if !v6 && verifies(&frame[at..l3.l4_offset], 0) {
        assert!(
            verifies(&out[at..l3.l4_offset], 0),
            "the IPv4 header checksum broke"
        );
    }
}

/// Whether the TCP/UDP checksum of `frame` verifies with the pseudo-header
/// of `src` and `dst`: `Some(true|false)`, or `None` for a UDP datagram
/// without one.
fn l4_checksum_verifies(frame: &[u8], parsed: &Parsed, src: IpAddr, dst: IpAddr) -> Option<bool> {
    let l4 = parsed.l4_offset;
    let segment = match parsed.key.protocol {
        ipv4::PROTOCOL_TCP => &frame[l4..parsed.l3_offset + parsed.ip_total_len],
        _ => {
            let len = usize::from(u16::from_be_bytes([
                frame[l4 + udp::LENGTH],
                frame[l4 + udp::LENGTH + 1],
            ]));
            if frame[l4 + udp::CHECKSUM..l4 + udp::CHECKSUM + 2] == [0, 0] {
                return None;
            }
            &frame[l4..l4 + len]
        }
    };
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_header_v4(
            s.into(),
            d.into(),
            parsed.key.protocol,
            segment.len() as u16,
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_header_v6(
            &s.octets(),
            &d.octets(),
            parsed.key.protocol,
            segment.len() as u32,
        ),
        _ => return Some(false),
    };
    Some(verifies(segment, pseudo))
}

/// Whether `bytes` (with their checksum field) plus `pseudo` sum to all
/// ones (RFC 1071 §1).
fn verifies(bytes: &[u8], pseudo: u32) -> bool {
    fold(pseudo + sum_words(bytes)) == 0xffff
}

fn check_reset(frame: &[u8], parsed: &Parsed) {
    let mut out = frame.to_vec();
    let Some(len) = tcp_reset(&mut out, parsed) else {
        assert_eq!(out, frame, "a refused reset changed the frame");
        return;
    };
    assert!(len <= frame.len(), "the reset is longer than the frame");
    let reset = packet::parse(&out[..len]).expect("a reset parses");
    assert_eq!(
        reset.key,
        FlowKey {
            src: parsed.key.dst,
            dst: parsed.key.src,
            src_port: parsed.key.dst_port,
            dst_port: parsed.key.src_port,
            protocol: ipv4::PROTOCOL_TCP,
        }
    );
    assert!(reset.tcp_flags & tcp::FLAG_RST != 0, "the reset has no RST");
    if !reset.key.is_ipv6() {
        assert!(verifies(&out[reset.l3_offset..reset.l4_offset], 0));
    }
    assert_eq!(
        l4_checksum_verifies(&out[..len], &reset, reset.key.src, reset.key.dst),
        Some(true),
        "the reset's TCP checksum does not verify"
    );
}

/// A frame `parse` left aside for not being TCP or UDP: when it is ICMP or
/// ICMPv6, classified as the worker does, and answered or translated in
/// place as the worker would. Neither may write outside the IP packet, and
/// an echo reply or a translated error still parses as ICMP of its family.
fn check_icmp(plan: &[u8; PLAN_LEN], frame: &[u8]) {
    use switchyard_dataplane::packet::icmp::{self, Icmp, Side, Translation};
    let Ok(l3) = packet::parse_l3(frame) else {
        return;
    };
    if l3.fragment.is_some() || !matches!(l3.protocol, 1 | 58) {
        return;
    }
    let end = l3.l3_offset + l3.ip_total_len;
    let unchanged_outside = |out: &[u8]| {
        assert_eq!(out[end..], frame[end..], "bytes after the packet changed");
        assert_eq!(out.len(), frame.len());
    };
    match icmp::classify(frame, &l3) {
        Ok(Icmp::EchoRequest) => {
            let mut out = frame.to_vec();
            if icmp::echo_reply(&mut out, &l3) {
                unchanged_outside(&out);
                let again = packet::parse_l3(&out).expect("an echo reply parses");
                assert_eq!((again.src, again.dst), (l3.dst, l3.src));
            }
        }
        Ok(Icmp::Error(quote)) => {
            let rewrite = plan_of(plan, l3.src.is_ipv6());
            let translation = Translation {
                eth_src: rewrite.eth_src,
                eth_dst: rewrite.eth_dst,
                outer: if plan[0] & 1 == 0 {
                    Side::Dst
                } else {
                    Side::Src
                },
                outer_address: rewrite.ip_dst,
                quoted: if plan[1] & 1 == 0 {
                    Side::Src
                } else {
                    Side::Dst
                },
                quoted_endpoint: (rewrite.ip_src, rewrite.src_port),
            };
            let mut out = frame.to_vec();
            if icmp::translate(&mut out, &l3, &quote, &translation) {
                unchanged_outside(&out);
                let again = packet::parse_l3(&out).expect("a translated error parses");
                assert_eq!(again.protocol, l3.protocol);
            }
        }
        Err(_) => {}
    }
}
