//! Encapsulation toward a backend (`ipip` and `gue` forwarding): the
//! client's IP packet, unchanged, behind a new outer IP header (IPv4 in
//! IPv4, protocol 4, RFC 2003; IPv6 in IPv6, next header 41, RFC 2473) or
//! an outer IP + UDP header to the backend's GUE port (GUE variant 1,
//! draft-ietf-intarea-gue §4: the UDP payload *is* the inner IP packet,
//! its version nibble telling the family, as Katran sends it). The flow's
//! outer addresses and ports are decided once, as its `Rewrite`; per
//! packet only the lengths, the inner TOS / traffic class and the outer
//! IPv4 checksum are filled in, the same way the XDP fast path does.
//!
//! The frame grows at its head, which the worker cannot do in the slice it
//! is handed: it builds the new head (Ethernet, any VLAN tag, outer
//! headers) as an [`EncapHead`] and the packet I/O puts it in place of the
//! old L2 header ([`replace_head`]), dropping any Ethernet padding. Pure,
//! allocation-free, never panics on packet bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_wire::checksum::{fold, sum_words};
use switchyard_wire::{ethernet, ipv4, ipv6, udp, vlan};

use super::rewrite::Rewrite;
use crate::neighbor::VlanTag;

/// IANA protocol numbers of the inner packet as the outer header names it.
pub const PROTOCOL_IPIP: u8 = 4;
pub const PROTOCOL_IPV6_IN_IP: u8 = 41;
const PROTOCOL_UDP: u8 = ipv4::PROTOCOL_UDP;

/// Outer hop limit: a fresh header, as any router originating it.
const OUTER_TTL: u8 = 64;

/// Katran's prefixes for the outer source of IP-in-IP (`IPIP_V4_PREFIX`,
/// `IPIP_V6_PREFIX*` in katran/lib/bpf/balancer_consts.h): the low bits
/// vary per flow, so a backend NIC hashing the outer header (RSS sees only
/// the outer addresses of protocol 4/41) spreads flows over its queues.
/// Nothing answers the outer header: the backend decapsulates and replies
/// from the VIP. 100::/64 is IPv6's discard-only prefix (RFC 6666).
pub const IPIP_SOURCE_PREFIX_V4: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 0);
pub const IPIP_SOURCE_PREFIX_V6: Ipv6Addr = Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0);

/// The largest inner IP packet a link of `egress_mtu` carries once
/// wrapped as `tunnel`; 0 (no limit) when the link's MTU is unknown.
#[inline(always)]
pub fn inner_mtu(egress_mtu: u16, tunnel: Tunnel, ipv6: bool) -> u16 {
    match egress_mtu {
        0 => 0,
        mtu => mtu.saturating_sub(tunnel.overhead(ipv6) as u16).max(1),
    }
}

/// The folded sum of an outer IPv4 header's words from `src` to `dst`
/// with its TOS byte, total length and checksum zero: what stays the same
/// for every packet of a flow (the XDP cache adds the other two per
/// packet). 0 for IPv6, whose header has no checksum.
pub fn outer_checksum_base(tunnel: Tunnel, src: IpAddr, dst: IpAddr) -> u16 {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else {
        return 0;
    };
    let protocol = if tunnel == Tunnel::Gue {
        PROTOCOL_UDP
    } else {
        PROTOCOL_IPIP
    };
    let words = [
        u32::from((ipv4::VERSION << 4) | (ipv4::MIN_HEADER_LEN / 4) as u8) << 8,
        u32::from(ipv4::DONT_FRAGMENT),
        u32::from(OUTER_TTL) << 8 | u32::from(protocol),
    ];
    let addresses = [src.octets(), dst.octets()]
        .iter()
        .flat_map(|o| {
            [
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([o[2], o[3]]),
            ]
        })
        .map(u32::from)
        .sum::<u32>();
    fold(words.iter().sum::<u32>() + addresses)
}

/// The lowest UDP source port of GUE's flow entropy: RFC 8086 §3.3 and
/// draft-ietf-intarea-gue §5.6.1 ask for the ephemeral range 49152-65535.
const GUE_SOURCE_PORT_BASE: u16 = 49152;

/// How a flow's packets are wrapped; `None` for the modes that rewrite in
/// place. One byte in a flow entry: the outer addresses and ports are the
/// entry's `Rewrite`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tunnel {
    #[default]
    None,
    /// IPv4 in IPv4 or IPv6 in IPv6, as the flow's family.
    Ipip,
    /// Outer IP + UDP to the rewrite's `dst_port`, from its `src_port`.
    Gue,
}

impl Tunnel {
    pub fn is_some(self) -> bool {
        self != Tunnel::None
    }

    /// Bytes the outer headers add to an IP packet of family `ipv6`.
    #[inline(always)]
    pub fn overhead(self, ipv6: bool) -> usize {
        let ip = if ipv6 {
            ipv6::HEADER_LEN
        } else {
            ipv4::MIN_HEADER_LEN
        };
        match self {
            Tunnel::None => 0,
            Tunnel::Ipip => ip,
            Tunnel::Gue => ip + udp::HEADER_LEN,
        }
    }

    /// The name `yardctl` shows.
    pub fn name(self) -> &'static str {
        match self {
            Tunnel::None => "none",
            Tunnel::Ipip => "ipip",
            Tunnel::Gue => "gue",
        }
    }
}

/// The outer source of an IP-in-IP flow whose 5-tuple hashes to `hash`:
/// Katran's `create_encap_ipv4_src` / `create_encap_ipv6_src` vary the
/// low bits of a fixed prefix with the client's port and address; the flow
/// hash does the same for every field of the 5-tuple.
pub fn ipip_source(ipv6: bool, hash: u32) -> IpAddr {
    if ipv6 {
        let prefix = u128::from(IPIP_SOURCE_PREFIX_V6);
        IpAddr::V6(Ipv6Addr::from(prefix | u128::from(hash)))
    } else {
        let prefix = u32::from(IPIP_SOURCE_PREFIX_V4);
        IpAddr::V4(Ipv4Addr::from(prefix | (hash & 0xffff)))
    }
}

/// The UDP source port of a GUE flow whose 5-tuple hashes to `hash`.
pub fn gue_source_port(hash: u32) -> u16 {
    GUE_SOURCE_PORT_BASE | (hash as u16 & !GUE_SOURCE_PORT_BASE)
}

/// The largest head an encapsulated frame can get: Ethernet, a VLAN tag,
/// IPv6 and UDP.
pub const MAX_HEAD_LEN: usize =
    ethernet::HEADER_LEN + vlan::TAG_LEN + ipv6::HEADER_LEN + udp::HEADER_LEN;

/// What the packet I/O puts in front of an encapsulated packet: `bytes`
/// replace the frame's first `strip` bytes (its L2 header), and the
/// `inner_len` bytes of the IP packet after them follow; anything beyond
/// (Ethernet padding) is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapHead {
    bytes: [u8; MAX_HEAD_LEN],
    len: u8,
    strip: u8,
    inner_len: u16,
}

impl EncapHead {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// How much longer the frame gets (at most; padding is cut too).
    pub fn growth(&self) -> usize {
        usize::from(self.len).saturating_sub(usize::from(self.strip))
    }
}

/// The head for the IP packet of `ip_len` bytes at `l3_offset` of `frame`,
/// wrapped as `tunnel` with the outer addresses, ports and MACs of
/// `rewrite`, leaving with `vlan` (the frame's own priority bits kept when
/// it has a tag). `None` when the frame is shorter than it says, or the
/// rewrite's addresses are not of the packet's family.
#[inline]
pub fn head(
    frame: &[u8],
    l3_offset: usize,
    ip_len: usize,
    tunnel: Tunnel,
    rewrite: &Rewrite,
    vlan: Option<VlanTag>,
) -> Option<EncapHead> {
    let inner = frame.get(l3_offset..l3_offset.checked_add(ip_len)?)?;
    let first = *inner.first()?;
    let mut head = EncapHead {
        bytes: [0; MAX_HEAD_LEN],
        len: 0,
        strip: u8::try_from(l3_offset).ok()?,
        inner_len: u16::try_from(ip_len).ok()?,
    };
    let b = &mut head.bytes;
    b[ethernet::DST..ethernet::DST + 6].copy_from_slice(&rewrite.eth_dst);
    b[ethernet::SRC..ethernet::SRC + 6].copy_from_slice(&rewrite.eth_src);
    let mut at = ethernet::ETHERTYPE;
    if let Some(tag) = vlan {
        let arrived_tci = (l3_offset == ethernet::HEADER_LEN + vlan::TAG_LEN)
            .then(|| frame.get(14..16).map(|t| u16::from_be_bytes([t[0], t[1]])))
            .flatten()
            .unwrap_or(0);
        let tci = (arrived_tci & !0x0fff) | (tag.id & 0x0fff);
        b[at..at + 2].copy_from_slice(&tag.tpid.to_be_bytes());
        b[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
        at += vlan::TAG_LEN;
    }
    let udp_len = match tunnel {
        Tunnel::None => return None,
        Tunnel::Ipip => 0,
        Tunnel::Gue => udp::HEADER_LEN,
    };
    let next = match (tunnel, rewrite.ip_dst) {
        (Tunnel::Gue, _) => PROTOCOL_UDP,
        (_, IpAddr::V4(_)) => PROTOCOL_IPIP,
        (_, IpAddr::V6(_)) => PROTOCOL_IPV6_IN_IP,
    };
    let ip_start = at + 2;
    match (first >> 4, rewrite.ip_src, rewrite.ip_dst) {
        (ipv4::VERSION, IpAddr::V4(src), IpAddr::V4(dst)) => {
            b[at..at + 2].copy_from_slice(&ethernet::TYPE_IPV4.to_be_bytes());
            let total = u16::try_from(ipv4::MIN_HEADER_LEN + udp_len + ip_len).ok()?;
            let ip = &mut b[ip_start..ip_start + ipv4::MIN_HEADER_LEN];
            ip[ipv4::VERSION_IHL] = (ipv4::VERSION << 4) | (ipv4::MIN_HEADER_LEN / 4) as u8;
            // RFC 2003 §3.1: the outer TOS is the inner one.
            ip[1] = *inner.get(1)?;
            ip[ipv4::TOTAL_LEN..ipv4::TOTAL_LEN + 2].copy_from_slice(&total.to_be_bytes());
            // DF always: a fragmented outer packet would reach a backend
            // whose decapsulation sees each fragment alone. What does not
            // fit was refused before (`Tunnel::overhead`).
            ip[ipv4::FLAGS_FRAGMENT_OFFSET..ipv4::FLAGS_FRAGMENT_OFFSET + 2]
                .copy_from_slice(&ipv4::DONT_FRAGMENT.to_be_bytes());
            ip[ipv4::TTL] = OUTER_TTL;
            ip[ipv4::PROTOCOL] = next;
            ip[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&src.octets());
            ip[ipv4::DST..ipv4::DST + 4].copy_from_slice(&dst.octets());
            let checksum = !fold(sum_words(ip));
            ip[ipv4::CHECKSUM..ipv4::CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
            at = ip_start + ipv4::MIN_HEADER_LEN;
        }
        (ipv6::VERSION, IpAddr::V6(src), IpAddr::V6(dst)) => {
            b[at..at + 2].copy_from_slice(&ethernet::TYPE_IPV6.to_be_bytes());
            let payload = u16::try_from(udp_len + ip_len).ok()?;
            let ip = &mut b[ip_start..ip_start + ipv6::HEADER_LEN];
            // Version 6 and the inner traffic class (RFC 2473 §6.5); flow
            // label 0: the varied source already spreads flows.
            let class = (first << 4) | (*inner.get(1)? >> 4);
            ip[0] = (ipv6::VERSION << 4) | (class >> 4);
            ip[1] = class << 4;
            ip[ipv6::PAYLOAD_LEN..ipv6::PAYLOAD_LEN + 2].copy_from_slice(&payload.to_be_bytes());
            ip[ipv6::NEXT_HEADER] = next;
            ip[ipv6::HOP_LIMIT] = OUTER_TTL;
            ip[ipv6::SRC..ipv6::SRC + 16].copy_from_slice(&src.octets());
            ip[ipv6::DST..ipv6::DST + 16].copy_from_slice(&dst.octets());
            at = ip_start + ipv6::HEADER_LEN;
        }
        _ => return None,
    }
    if tunnel == Tunnel::Gue {
        let len = u16::try_from(udp::HEADER_LEN + ip_len).ok()?;
        let u = &mut b[at..at + udp::HEADER_LEN];
        u[udp::SRC_PORT..udp::SRC_PORT + 2].copy_from_slice(&rewrite.src_port.to_be_bytes());
        u[udp::DST_PORT..udp::DST_PORT + 2].copy_from_slice(&rewrite.dst_port.to_be_bytes());
        u[udp::LENGTH..udp::LENGTH + 2].copy_from_slice(&len.to_be_bytes());
        // Checksum 0: allowed over IPv4 (RFC 768) and, for tunnels, over
        // IPv6 (RFC 6935, RFC 6936); the inner packet carries its own, and
        // Katran sends GUE the same way.
        at += udp::HEADER_LEN;
    }
    head.len = at as u8;
    Some(head)
}

/// Puts `head` in place of the L2 header of the `len`-byte frame at the
/// start of `buf`, moving the inner packet behind it; returns the new
/// length, or `None` (nothing moved) when `buf` has no room or the frame
/// is shorter than the head says.
pub fn replace_head(buf: &mut [u8], len: usize, head: &EncapHead) -> Option<usize> {
    let (strip, inner) = (usize::from(head.strip), usize::from(head.inner_len));
    let head_len = usize::from(head.len);
    let new_len = head_len.checked_add(inner)?;
    if strip.checked_add(inner)? > len.min(buf.len()) || new_len > buf.len() {
        return None;
    }
    buf.copy_within(strip..strip + inner, head_len);
    buf[..head_len].copy_from_slice(head.bytes());
    Some(new_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn udp_frame(src: IpAddr, dst: IpAddr, payload: &[u8], pad_to: usize) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2(MAC_B, MAC_A);
        let builder = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!(),
        };
        let builder = builder.udp(40000, 80);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame.resize(frame.len().max(pad_to), 0);
        frame
    }

    fn outer(tunnel: Tunnel, src: IpAddr, dst: IpAddr) -> Rewrite {
        Rewrite {
            eth_src: MAC_A,
            eth_dst: MAC_B,
            ip_src: src,
            ip_dst: dst,
            src_port: gue_source_port(0x1234_5678),
            dst_port: if tunnel == Tunnel::Gue { 6080 } else { 0 },
        }
    }

    fn wrap(frame: &[u8], tunnel: Tunnel, rewrite: &Rewrite) -> Vec<u8> {
        let ipv6 = rewrite.ip_dst.is_ipv6();
        let ip_len = if ipv6 {
            40 + usize::from(u16::from_be_bytes([frame[18], frame[19]]))
        } else {
            usize::from(u16::from_be_bytes([frame[16], frame[17]]))
        };
        let head = head(frame, 14, ip_len, tunnel, rewrite, None).unwrap();
        let mut buf = frame.to_vec();
        buf.resize(frame.len() + 64, 0);
        let len = replace_head(&mut buf, frame.len(), &head).unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    fn ipip_wraps_the_packet_unchanged_behind_a_checksummed_outer_header() {
        let inner = udp_frame(
            "198.18.1.10".parse().unwrap(),
            "198.18.100.10".parse().unwrap(),
            b"hello",
            60,
        );
        let rewrite = outer(
            Tunnel::Ipip,
            ipip_source(false, 0xabcd_1234),
            "198.18.2.21".parse().unwrap(),
        );
        let out = wrap(&inner, Tunnel::Ipip, &rewrite);
        // The padding of the 60-byte minimum frame is cut.
        assert_eq!(out.len(), 14 + 20 + 20 + 8 + 5);
        let sliced = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("no outer IPv4 header")
        };
        let header = ip.header();
        assert_eq!(header.protocol().0, PROTOCOL_IPIP);
        assert_eq!(header.source_addr(), Ipv4Addr::new(172, 16, 0x12, 0x34));
        assert_eq!(header.destination_addr(), Ipv4Addr::new(198, 18, 2, 21));
        assert!(header.dont_fragment());
        assert_eq!(header.total_len(), 20 + 33);
        assert_eq!(
            header.to_header().calc_header_checksum(),
            header.header_checksum()
        );
        assert_eq!(&out[34..], &inner[14..14 + 33]);
    }

    #[test]
    fn gue_over_ipv6_puts_udp_to_the_gue_port_before_the_inner_packet() {
        let inner = udp_frame(
            "2001:db8:1::10".parse().unwrap(),
            "2001:db8:100::10".parse().unwrap(),
            b"hi",
            0,
        );
        let vip: IpAddr = "2001:db8:100::10".parse().unwrap();
        let rewrite = outer(Tunnel::Gue, vip, "2001:db8:2::21".parse().unwrap());
        let out = wrap(&inner, Tunnel::Gue, &rewrite);
        let sliced = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
            panic!("no outer IPv6 header")
        };
        assert_eq!(ip.header().next_header().0, PROTOCOL_UDP);
        assert_eq!(usize::from(ip.header().payload_length()), 8 + 40 + 8 + 2);
        let Some(TransportSlice::Udp(u)) = sliced.transport else {
            panic!("no UDP")
        };
        assert_eq!(u.destination_port(), 6080);
        assert!(u.source_port() >= 49152);
        assert_eq!(usize::from(u.length()), 8 + 40 + 8 + 2);
        assert_eq!(&out[14 + 40 + 8..], &inner[14..]);
    }

    #[test]
    fn a_frame_shorter_than_its_ip_length_gets_no_head() {
        let inner = udp_frame(
            "198.18.1.10".parse().unwrap(),
            "198.18.100.10".parse().unwrap(),
            b"hello",
            0,
        );
        let rewrite = outer(
            Tunnel::Ipip,
            ipip_source(false, 1),
            "198.18.2.21".parse().unwrap(),
        );
        assert!(head(&inner, 14, inner.len(), Tunnel::Ipip, &rewrite, None).is_none());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mixed = outer(Tunnel::Ipip, v6, v6);
        assert!(head(&inner, 14, 33, Tunnel::Ipip, &mixed, None).is_none());
    }

    #[test]
    fn a_buffer_without_room_is_left_alone() {
        let inner = udp_frame(
            "198.18.1.10".parse().unwrap(),
            "198.18.100.10".parse().unwrap(),
            b"hello",
            0,
        );
        let rewrite = outer(
            Tunnel::Ipip,
            ipip_source(false, 1),
            "198.18.2.21".parse().unwrap(),
        );
        let head = head(&inner, 14, 33, Tunnel::Ipip, &rewrite, None).unwrap();
        let mut buf = inner.clone();
        assert_eq!(replace_head(&mut buf, inner.len(), &head), None);
        assert_eq!(buf, inner);
    }

    #[test]
    fn the_checksum_base_plus_tos_and_length_is_the_header_s_checksum() {
        let inner = udp_frame(
            "198.18.1.10".parse().unwrap(),
            "198.18.100.10".parse().unwrap(),
            b"hello",
            0,
        );
        let mut tos_inner = inner.clone();
        tos_inner[15] = 0xb8;
        for tunnel in [Tunnel::Ipip, Tunnel::Gue] {
            let rewrite = outer(
                tunnel,
                ipip_source(false, 0xfedc),
                "198.18.2.21".parse().unwrap(),
            );
            let base = outer_checksum_base(tunnel, rewrite.ip_src, rewrite.ip_dst);
            let out = wrap(&tos_inner, tunnel, &rewrite);
            let total = u16::from_be_bytes([out[16], out[17]]);
            let checksum = !fold(u32::from(base) + u32::from(out[15]) + u32::from(total));
            assert_eq!(checksum.to_be_bytes(), [out[24], out[25]]);
        }
    }

    #[test]
    fn gue_source_ports_stay_in_the_ephemeral_range() {
        for hash in [0, 1, 0xffff, 0xc000, 0x3fff, u32::MAX] {
            assert!(gue_source_port(hash) >= 49152);
        }
        assert_ne!(gue_source_port(1), gue_source_port(2));
    }
}
