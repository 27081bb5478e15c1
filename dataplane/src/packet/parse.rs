//! One pass over a frame's headers: Ethernet II, at most one VLAN tag, IPv4
//! or IPv6 (its extension headers walked with a fixed bound), then TCP or
//! UDP. Each header is length-checked once and then read through fixed-size
//! views (see `wire`); the result is the flow's 5-tuple plus the offsets
//! [`apply`](super::apply) needs, so no packet is parsed twice.
//!
//! What is deliberately not checked: the IPv4 header checksum and the L4
//! checksum. Verifying them costs a pass over the bytes per packet, and the
//! incremental update in `apply` preserves an error (RFC 1624 §2), so the
//! receiving host still drops a corrupted packet, as it would without us.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_wire::{ethernet, ipv4, ipv6, read_bytes, read_u16, read_u32, tcp, udp, vlan};

/// Why a frame cannot be handled; each maps to a named drop counter.
///
/// The split between [`Truncated`](Self::Truncated) and the header errors:
/// `Truncated` means bytes are missing from the frame (it ends before the
/// Ethernet, VLAN or IP header, or before the end of the IP packet that
/// IPv4's total length or IPv6's payload length announces). Once the whole
/// packet is present, an extension header or L4 header that does not fit
/// in it is a header error: the sender built an inconsistent packet,
/// nothing was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Shorter than its headers say.
    Truncated,
    /// EtherType is neither IPv4 nor IPv6 (ARP, LLDP, ...), also behind one
    /// VLAN tag; a second tag (QinQ) counts here too, as only one is
    /// supported.
    NotIp,
    /// IPv4 version, IHL and total length are inconsistent; an IPv6
    /// version or payload length that is not (a jumbogram's 0 included),
    /// an extension header that overruns the packet, or an IPv4-mapped
    /// address, which never belongs on the wire (RFC 4291 §2.5.5.2).
    BadIpHeader,
    /// A fragment: only the first carries L4 ports, and matching the rest
    /// would need reassembly state (RFC 791 §2.3, RFC 8200 §4.5). An
    /// IPv6 atomic fragment (offset 0, no more) is a whole packet and is
    /// not one (RFC 6946).
    Fragment,
    /// Neither TCP nor UDP, after any IPv6 extension headers; also ESP
    /// (encrypted: no ports to read) and a Routing header with segments
    /// left, whose final destination is not the one in the IPv6 header.
    UnsupportedProtocol,
    /// TCP data offset or UDP length inconsistent with the IP payload.
    BadL4Header,
    /// More than `ipv6::MAX_EXT_HEADERS` IPv6 extension headers before
    /// the upper layer: the walk is bounded, as the XDP program's must be.
    ExtHeaderChainTooLong,
}

impl ParseError {
    /// Every reason, in declaration order: `ALL[e as usize] == e`, so a
    /// `[u64; 7]` of counters can be indexed by `e as usize`.
    pub const ALL: [ParseError; 7] = [
        ParseError::Truncated,
        ParseError::NotIp,
        ParseError::BadIpHeader,
        ParseError::Fragment,
        ParseError::UnsupportedProtocol,
        ParseError::BadL4Header,
        ParseError::ExtHeaderChainTooLong,
    ];

    /// The drop counter's name, snake_case, stable across releases.
    pub const fn name(self) -> &'static str {
        match self {
            ParseError::Truncated => "truncated",
            ParseError::NotIp => "not_ip",
            ParseError::BadIpHeader => "bad_ip_header",
            ParseError::Fragment => "fragment",
            ParseError::UnsupportedProtocol => "unsupported_protocol",
            ParseError::BadL4Header => "bad_l4_header",
            ParseError::ExtHeaderChainTooLong => "ext_header_chain_too_long",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 5-tuple of a packet, as it appears on the wire. Both addresses are
/// of the same family when built by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number: 6 (TCP) or 17 (UDP) when built by [`parse`].
    pub protocol: u8,
}

impl FlowKey {
    /// The 5-tuple of the other direction of this flow.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }

    pub const fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// Offsets found by one parse, so rewrite never re-parses.
#[derive(Debug, Clone, Copy)]
pub struct Parsed {
    pub key: FlowKey,
    /// Start of the IP header: 14, or 18 behind a VLAN tag.
    pub l3_offset: usize,
    /// Start of the TCP/UDP header, after any IPv4 options or IPv6
    /// extension headers.
    pub l4_offset: usize,
    /// TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN); 0 for UDP.
    pub tcp_flags: u8,
    /// The IP packet's length: IPv4 total length, or IPv6's 40 bytes plus
    /// payload length. The frame may carry Ethernet padding beyond
    /// `l3_offset + ip_total_len`, which belongs to no header.
    pub ip_total_len: usize,
    /// IPv6 extension headers sit between the fixed header and L4; the
    /// XDP cache replays only packets without (its parser stops at the
    /// fixed header), so such flows are never cached.
    pub has_ext_headers: bool,
    /// The first fragment of a datagram (built by
    /// [`parse_first_fragment`](super::parse_first_fragment), never by
    /// [`parse`]): its L4 checksum covers the whole datagram, of which
    /// this frame holds only the start.
    pub first_fragment: bool,
}

/// Parses an Ethernet II frame, optionally with one 802.1Q or 802.1ad tag,
/// carrying an unfragmented IPv4 or IPv6 TCP or UDP packet.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let l3 = parse_l3(frame)?;
    if l3.fragment.is_some() {
        return Err(ParseError::Fragment);
    }
    let l4 = frame
        .get(l3.l4_offset..l3.l3_offset + l3.ip_total_len)
        .unwrap_or_default();
    let (src_port, dst_port, tcp_flags) = match l3.protocol {
        ipv4::PROTOCOL_TCP => parse_tcp(l4)?,
        ipv4::PROTOCOL_UDP => parse_udp(l4)?,
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
        first_fragment: false,
    })
}

/// A frame's IP layer, whatever it carries: what [`parse`] builds on, and
/// what the ICMP and fragment paths start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L3 {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol (IPv4 protocol, or the IPv6 Next Header
    /// after the extension headers; for a fragment, the fragmented
    /// packet's).
    pub protocol: u8,
    /// Start of the IP header: 14, or 18 behind a VLAN tag.
    pub l3_offset: usize,
    /// Start of the upper layer: after IPv4 options or IPv6 extension
    /// headers. For a fragment other than the first, where its data starts
    /// (no L4 header there).
    pub l4_offset: usize,
    /// IPv4 total length, or 40 plus IPv6 payload length.
    pub ip_total_len: usize,
    pub has_ext_headers: bool,
    /// Set when the packet is a fragment (an IPv6 atomic fragment is not).
    pub fragment: Option<Fragment>,
}

/// Where a fragment belongs: RFC 791 §3.2, RFC 8200 §4.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// IPv4's 16-bit Identification, or IPv6's 32-bit one.
    pub id: u32,
    /// Offset of its data in the original packet, in bytes.
    pub offset: usize,
    /// More fragments follow.
    pub more: bool,
}

impl Fragment {
    /// The first fragment carries the L4 header, and so the ports.
    pub const fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// Parses the Ethernet, VLAN and IP layers of a frame: a sane IPv4 header,
/// or an IPv6 one with its extension headers walked (at most
/// `ipv6::MAX_EXT_HEADERS`) to the upper layer, which may be anything. The
/// walk stops at a Fragment header whose fragment is not the first: what
/// follows is data.
#[inline(always)]
pub fn parse_l3(frame: &[u8]) -> Result<L3, ParseError> {
    let (l3_offset, ethertype) = ip_offset(frame)?;
    let l3 = tail(frame, l3_offset);
    let mut parsed = match ethertype {
        ethernet::TYPE_IPV4 => parse_ipv4(l3)?,
        _ => parse_ipv6(l3)?,
    };
    parsed.l3_offset = l3_offset;
    parsed.l4_offset += l3_offset;
    Ok(parsed)
}

/// Where the IP header starts (after the Ethernet header and at most one
/// VLAN tag), and whether it is IPv4 or IPv6 (the EtherType).
#[inline(always)]
fn ip_offset(frame: &[u8]) -> Result<(usize, u16), ParseError> {
    let eth: &[u8; ethernet::HEADER_LEN] = frame.first_chunk().ok_or(ParseError::Truncated)?;
    let mut ethertype = read_u16::<{ ethernet::ETHERTYPE }, _>(eth);
    let mut l3_offset = ethernet::HEADER_LEN;
    if ethertype == ethernet::TYPE_DOT1Q || ethertype == ethernet::TYPE_DOT1AD {
        let tag: &[u8; vlan::TAG_LEN] = tail(frame, l3_offset)
            .first_chunk()
            .ok_or(ParseError::Truncated)?;
        ethertype = read_u16::<{ vlan::INNER_ETHERTYPE }, _>(tag);
        l3_offset += vlan::TAG_LEN;
    }
    if ethertype != ethernet::TYPE_IPV4 && ethertype != ethernet::TYPE_IPV6 {
        return Err(ParseError::NotIp);
    }
    Ok((l3_offset, ethertype))
}

/// The IPv4 packet at the start of `l3`: a sane header. Offsets are from
/// the start of `l3`.
#[inline(always)]
fn parse_ipv4(l3: &[u8]) -> Result<L3, ParseError> {
    let header: &[u8; ipv4::MIN_HEADER_LEN] = l3.first_chunk().ok_or(ParseError::Truncated)?;
    let version_ihl = header[ipv4::VERSION_IHL];
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(read_u16::<{ ipv4::TOTAL_LEN }, _>(header));
    if version_ihl >> 4 != ipv4::VERSION
        || header_len < ipv4::MIN_HEADER_LEN
        || total_len < header_len
    {
        return Err(ParseError::BadIpHeader);
    }
    // Bounding the packet by total_length, not by the frame, drops the
    // Ethernet padding a short packet is sent with (RFC 894).
    if l3.len() < total_len {
        return Err(ParseError::Truncated);
    }
    let flags_offset = read_u16::<{ ipv4::FLAGS_FRAGMENT_OFFSET }, _>(header);
    let fragment =
        (flags_offset & (ipv4::MORE_FRAGMENTS | ipv4::FRAGMENT_OFFSET_MASK) != 0).then(|| {
            Fragment {
                id: u32::from(read_u16::<{ ipv4::IDENTIFICATION }, _>(header)),
                offset: usize::from(flags_offset & ipv4::FRAGMENT_OFFSET_MASK) * 8,
                more: flags_offset & ipv4::MORE_FRAGMENTS != 0,
            }
        });
    Ok(L3 {
        src: IpAddr::V4(Ipv4Addr::from(read_u32::<{ ipv4::SRC }, _>(header))),
        dst: IpAddr::V4(Ipv4Addr::from(read_u32::<{ ipv4::DST }, _>(header))),
        protocol: header[ipv4::PROTOCOL],
        l3_offset: 0,
        l4_offset: header_len,
        ip_total_len: total_len,
        has_ext_headers: false,
        fragment,
    })
}

/// The IPv6 packet at the start of `l3`: a sane fixed header, then at most
/// `ipv6::MAX_EXT_HEADERS` extension headers, each inside the packet.
/// Offsets are from the start of `l3`. Out of line: the walk is long, and
/// keeping it apart keeps IPv4's parse short where it is inlined.
#[inline(never)]
fn parse_ipv6(l3: &[u8]) -> Result<L3, ParseError> {
    let header: &[u8; ipv6::HEADER_LEN] = l3.first_chunk().ok_or(ParseError::Truncated)?;
    let payload_len = usize::from(read_u16::<{ ipv6::PAYLOAD_LEN }, _>(header));
    // A payload length of 0 announces a jumbogram (RFC 2675), which no
    // Ethernet frame carries.
    if ipv6::version(header) != ipv6::VERSION || payload_len == 0 {
        return Err(ParseError::BadIpHeader);
    }
    let packet = l3
        .get(..ipv6::HEADER_LEN + payload_len)
        .ok_or(ParseError::Truncated)?;
    let src = Ipv6Addr::from(read_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, _>(header));
    let dst = Ipv6Addr::from(read_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, _>(header));
    // IPv4-mapped addresses stand for IPv4 peers inside a host's socket
    // API; on the wire they would also alias the IPv4 flows they map to in
    // every table keyed by address.
    if src.to_ipv4_mapped().is_some() || dst.to_ipv4_mapped().is_some() {
        return Err(ParseError::BadIpHeader);
    }
    let mut next = header[ipv6::NEXT_HEADER];
    let mut offset = ipv6::HEADER_LEN;
    let mut walked = 0;
    let mut fragment = None;
    while let Some(ext) = extension_header(next, packet, offset)? {
        if walked == ipv6::MAX_EXT_HEADERS {
            return Err(ParseError::ExtHeaderChainTooLong);
        }
        walked += 1;
        let len = match next {
            ipv6::NEXT_HEADER_FRAGMENT => {
                if !ipv6::fragment::is_atomic(ext) {
                    fragment = Some(Fragment {
                        id: read_u32::<{ ipv6::fragment::IDENTIFICATION }, _>(ext),
                        offset: ipv6::fragment::offset_bytes(ext),
                        more: ipv6::fragment::more_fragments(ext),
                    });
                }
                ipv6::fragment::HEADER_LEN
            }
            ipv6::NEXT_HEADER_ROUTING if ext[ipv6::routing::SEGMENTS_LEFT] != 0 => {
                return Err(ParseError::UnsupportedProtocol)
            }
            // AH counts 4-byte units, less two (RFC 4302 §2.2).
            ipv6::NEXT_HEADER_AUTH => (usize::from(ext[ipv6::ext::HDR_EXT_LEN]) + 2) * 4,
            _ => ipv6::ext::header_len(ext[ipv6::ext::HDR_EXT_LEN]),
        };
        next = ext[ipv6::ext::NEXT_HEADER];
        offset += len;
        if offset > packet.len() {
            return Err(ParseError::BadIpHeader);
        }
        // After a later fragment's header comes data, not headers.
        if fragment.is_some_and(|f: Fragment| !f.is_first()) {
            break;
        }
    }
    if next == ipv6::NEXT_HEADER_ESP || next == ipv6::NEXT_HEADER_NONE {
        return Err(ParseError::UnsupportedProtocol);
    }
    Ok(L3 {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        protocol: next,
        l3_offset: 0,
        l4_offset: offset,
        ip_total_len: packet.len(),
        has_ext_headers: walked > 0,
        fragment,
    })
}

/// The extension header of type `next` at `offset` of `packet`, or `None`
/// when `next` is the upper layer, whatever it is: the caller decides.
#[inline(always)]
fn extension_header(
    next: u8,
    packet: &[u8],
    offset: usize,
) -> Result<Option<&[u8; ipv6::ext::MIN_LEN]>, ParseError> {
    match next {
        ipv6::NEXT_HEADER_HOP_BY_HOP
        | ipv6::NEXT_HEADER_DESTINATION_OPTIONS
        | ipv6::NEXT_HEADER_ROUTING
        | ipv6::NEXT_HEADER_FRAGMENT
        | ipv6::NEXT_HEADER_AUTH => tail(packet, offset)
            .first_chunk()
            .map(Some)
            .ok_or(ParseError::BadIpHeader),
        _ => Ok(None),
    }
}

/// `bytes[at..]`, or empty when `at` is past the end, so the next
/// `first_chunk` reports the shortfall.
#[inline(always)]
fn tail(bytes: &[u8], at: usize) -> &[u8] {
    bytes.get(at..).unwrap_or_default()
}

/// Ports and flags of a TCP segment that spans all of `l4`.
#[inline(always)]
pub(super) fn parse_tcp(l4: &[u8]) -> Result<(u16, u16, u8), ParseError> {
    let hdr: &[u8; tcp::MIN_HEADER_LEN] = l4.first_chunk().ok_or(ParseError::BadL4Header)?;
    let header_len = usize::from(hdr[tcp::DATA_OFFSET] >> 4) * 4;
    if header_len < tcp::MIN_HEADER_LEN || header_len > l4.len() {
        return Err(ParseError::BadL4Header);
    }
    Ok((
        read_u16::<{ tcp::SRC_PORT }, _>(hdr),
        read_u16::<{ tcp::DST_PORT }, _>(hdr),
        hdr[tcp::FLAGS],
    ))
}

/// Ports of a UDP datagram that spans all of `l4`. The length field must fit
/// the IPv4 payload and cover the header (RFC 768); 0 is not the IPv6
/// jumbogram escape here (RFC 2675 is IPv6 only).
#[inline(always)]
fn parse_udp(l4: &[u8]) -> Result<(u16, u16, u8), ParseError> {
    let hdr: &[u8; udp::HEADER_LEN] = l4.first_chunk().ok_or(ParseError::BadL4Header)?;
    let length = usize::from(read_u16::<{ udp::LENGTH }, _>(hdr));
    if length < udp::HEADER_LEN || length > l4.len() {
        return Err(ParseError::BadL4Header);
    }
    Ok((
        read_u16::<{ udp::SRC_PORT }, _>(hdr),
        read_u16::<{ udp::DST_PORT }, _>(hdr),
        0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::{arb_frame_spec, ipv6_frame, mutated, Ext};
    use proptest::prelude::*;
    use switchyard_wire::fixtures::*;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const SYN: u8 = 0x02;

    fn with_byte(frame: &[u8], at: usize, value: u8) -> Vec<u8> {
        let mut frame = frame.to_vec();
        frame[at] = value;
        frame
    }

    fn with_u16(frame: &[u8], at: usize, value: u16) -> Vec<u8> {
        let mut frame = frame.to_vec();
        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
        frame
    }

    #[test]
    fn tcp_without_ip_options_has_l4_right_after_the_20_byte_header() {
        let parsed = parse(&TCP_SYN).unwrap();
        assert_eq!(
            parsed.key,
            FlowKey {
                src: CLIENT,
                dst: VIP,
                src_port: 40000,
                dst_port: 80,
                protocol: 6
            }
        );
        assert_eq!((parsed.l3_offset, parsed.l4_offset), (14, 34));
        assert_eq!(parsed.ip_total_len, TCP_SYN.len() - 14);
        assert_eq!(parsed.tcp_flags, SYN);
    }

    #[test]
    fn tcp_with_ip_options_has_l4_after_the_options() {
        let parsed = parse(&TCP_SYN_IP_OPTIONS).unwrap();
        assert_eq!(parsed.key, parse(&TCP_SYN).unwrap().key);
        assert_eq!((parsed.l3_offset, parsed.l4_offset), (14, 38));
        assert_eq!(parsed.ip_total_len, TCP_SYN_IP_OPTIONS.len() - 14);
    }

    #[test]
    fn udp_key_comes_from_the_headers_and_has_no_tcp_flags() {
        let parsed = parse(&UDP_DNS).unwrap();
        assert_eq!(
            parsed.key,
            FlowKey {
                src: CLIENT,
                dst: VIP,
                src_port: 53000,
                dst_port: 53,
                protocol: 17
            }
        );
        assert_eq!((parsed.l3_offset, parsed.l4_offset), (14, 34));
        assert_eq!(parsed.tcp_flags, 0);
    }

    #[test]
    fn tcp_flags_are_the_whole_flags_byte() {
        assert_eq!(parse(&TCP_SYN_ACK).unwrap().tcp_flags, 0x12);
        let all_flags = with_byte(&TCP_SYN, 34 + 13, 0xff);
        assert_eq!(parse(&all_flags).unwrap().tcp_flags, 0xff);
    }

    #[test]
    fn dot1q_tag_moves_ipv4_to_offset_18() {
        let parsed = parse(&TCP_SYN_DOT1Q).unwrap();
        assert_eq!(parsed.key, parse(&TCP_SYN).unwrap().key);
        assert_eq!((parsed.l3_offset, parsed.l4_offset), (18, 38));
    }

    #[test]
    fn dot1ad_tag_is_accepted_like_dot1q() {
        let parsed = parse(&TCP_SYN_DOT1AD).unwrap();
        assert_eq!(parsed.key, parse(&TCP_SYN).unwrap().key);
        assert_eq!((parsed.l3_offset, parsed.l4_offset), (18, 38));
    }

    #[test]
    fn second_vlan_tag_is_not_ip() {
        let mut double = TCP_SYN_DOT1AD[..16].to_vec();
        double.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        double.extend_from_slice(&TCP_SYN_DOT1AD[16..]);
        assert_eq!(parse(&double).unwrap_err(), ParseError::NotIp);
    }

    #[test]
    fn arp_is_not_ip() {
        assert_eq!(parse(&ARP_REQUEST).unwrap_err(), ParseError::NotIp);
    }

    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

    fn tcp6(exts: &[Ext]) -> Vec<u8> {
        ipv6_frame(CLIENT6, VIP6, 6, (40000, 80), b"hello", exts)
    }

    #[test]
    fn ipv6_tcp_key_comes_from_the_fixed_header_and_l4_follows_it() {
        let frame = tcp6(&[]);
        let parsed = parse(&frame).unwrap();
        assert_eq!(
            parsed.key,
            FlowKey {
                src: CLIENT6.into(),
                dst: VIP6.into(),
                src_port: 40000,
                dst_port: 80,
                protocol: 6
            }
        );
        assert_eq!((parsed.l3_offset, parsed.l4_offset), (14, 54));
        assert_eq!(parsed.ip_total_len, frame.len() - 14);
        assert_eq!(parsed.tcp_flags, SYN);
        assert!(!parsed.has_ext_headers);
        let udp = parse(&IPV6_UDP).unwrap();
        assert_eq!((udp.key.protocol, udp.key.dst_port), (17, 53));
    }

    #[test]
    fn ipv6_extension_headers_are_walked_to_the_upper_layer() {
        let exts = [
            Ext::options(ipv6::NEXT_HEADER_HOP_BY_HOP, 1),
            Ext::options(ipv6::NEXT_HEADER_DESTINATION_OPTIONS, 2),
            // Routing type 4 (segment routing), no segments left.
            Ext {
                kind: ipv6::NEXT_HEADER_ROUTING,
                bytes: vec![0, 0, 4, 0, 0, 0, 0, 0],
            },
            Ext {
                kind: ipv6::NEXT_HEADER_FRAGMENT,
                bytes: vec![0, 0, 0, 0, 0, 0, 0, 9],
            },
            // AH: length in 4-byte units less two: 3 means 20 bytes.
            Ext {
                kind: ipv6::NEXT_HEADER_AUTH,
                bytes: [vec![0, 3], vec![0; 18]].concat(),
            },
        ];
        let frame = tcp6(&exts);
        let parsed = parse(&frame).unwrap();
        assert_eq!(parsed.key, parse(&tcp6(&[])).unwrap().key);
        assert_eq!(parsed.l4_offset, 54 + 8 + 16 + 8 + 8 + 20);
        assert!(parsed.has_ext_headers);
        assert_eq!(parsed.ip_total_len, frame.len() - 14);
    }

    #[test]
    fn an_extension_header_chain_past_the_bound_is_too_long() {
        let options = |n: usize| -> Vec<Ext> {
            (0..n)
                .map(|_| Ext::options(ipv6::NEXT_HEADER_DESTINATION_OPTIONS, 1))
                .collect()
        };
        assert!(parse(&tcp6(&options(ipv6::MAX_EXT_HEADERS))).is_ok());
        assert_eq!(
            parse(&tcp6(&options(ipv6::MAX_EXT_HEADERS + 1))).unwrap_err(),
            ParseError::ExtHeaderChainTooLong
        );
    }

    #[test]
    fn ipv6_fragments_routing_and_esp_are_refused_by_name() {
        let fragment = |offset_flags: [u8; 2]| Ext {
            kind: ipv6::NEXT_HEADER_FRAGMENT,
            bytes: vec![0, 0, offset_flags[0], offset_flags[1], 0, 0, 0, 1],
        };
        assert_eq!(
            parse(&tcp6(&[fragment([0, 1])])).unwrap_err(),
            ParseError::Fragment,
            "first fragment, more follow"
        );
        assert_eq!(
            parse(&tcp6(&[fragment([0x05, 0xa8])])).unwrap_err(),
            ParseError::Fragment,
            "last fragment"
        );
        let routing = Ext {
            kind: ipv6::NEXT_HEADER_ROUTING,
            bytes: vec![0, 0, 4, 1, 0, 0, 0, 0],
        };
        assert_eq!(
            parse(&tcp6(&[routing])).unwrap_err(),
            ParseError::UnsupportedProtocol,
            "the final destination is elsewhere"
        );
        let mut esp = tcp6(&[]);
        esp[20] = ipv6::NEXT_HEADER_ESP;
        assert_eq!(parse(&esp).unwrap_err(), ParseError::UnsupportedProtocol);
        assert_eq!(
            parse(&ICMPV6_ECHO_REQUEST).unwrap_err(),
            ParseError::UnsupportedProtocol
        );
    }

    #[test]
    fn parse_l3_says_where_a_fragment_belongs() {
        let first = parse_l3(&TCP_FIRST_FRAGMENT).unwrap();
        let fragment = first.fragment.unwrap();
        assert!(fragment.is_first() && fragment.more);
        assert_eq!((first.protocol, first.l4_offset), (6, 34));
        let later = parse_l3(&UDP_LATER_FRAGMENT).unwrap();
        assert!(!later.fragment.unwrap().is_first());
        assert_eq!(later.protocol, 17);

        let v6 = |offset_flags: [u8; 2]| {
            tcp6(&[Ext {
                kind: ipv6::NEXT_HEADER_FRAGMENT,
                bytes: vec![
                    0,
                    0,
                    offset_flags[0],
                    offset_flags[1],
                    0xde,
                    0xad,
                    0xbe,
                    0xef,
                ],
            }])
        };
        let first6 = parse_l3(&v6([0, 1])).unwrap();
        assert_eq!(
            first6.fragment,
            Some(Fragment {
                id: 0xdead_beef,
                offset: 0,
                more: true
            })
        );
        assert_eq!((first6.protocol, first6.l4_offset), (6, 62));
        let later6 = parse_l3(&v6([0x05, 0xa8])).unwrap();
        assert_eq!(
            later6.fragment,
            Some(Fragment {
                id: 0xdead_beef,
                offset: 1448,
                more: false
            })
        );
        assert_eq!(
            (later6.protocol, later6.l4_offset),
            (6, 62),
            "data starts there"
        );
        let echo = parse_l3(&ICMPV6_ECHO_REQUEST).unwrap();
        assert_eq!((echo.protocol, echo.fragment), (58, None));
    }

    #[test]
    fn an_extension_header_overrunning_the_packet_is_a_bad_header() {
        let mut frame = tcp6(&[Ext::options(ipv6::NEXT_HEADER_HOP_BY_HOP, 1)]);
        // Claims 255 units more than the packet has.
        frame[54 + 1] = 0xff;
        assert_eq!(parse(&frame).unwrap_err(), ParseError::BadIpHeader);
    }

    #[test]
    fn ipv6_header_inconsistencies_are_bad_headers_and_cuts_are_truncations() {
        let frame = tcp6(&[Ext::options(ipv6::NEXT_HEADER_HOP_BY_HOP, 1)]);
        assert_eq!(
            parse(&with_byte(&frame, 14, 0x40)).unwrap_err(),
            ParseError::BadIpHeader,
            "version 4 behind the IPv6 EtherType"
        );
        assert_eq!(
            parse(&with_u16(&frame, 18, 0)).unwrap_err(),
            ParseError::BadIpHeader,
            "jumbogram"
        );
        let mut mapped = frame.clone();
        mapped[22..38].copy_from_slice(&Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped().octets());
        assert_eq!(parse(&mapped).unwrap_err(), ParseError::BadIpHeader);
        for len in 0..frame.len() {
            assert_eq!(
                parse(&frame[..len]).unwrap_err(),
                ParseError::Truncated,
                "len {len}"
            );
        }
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&padded).unwrap().ip_total_len, frame.len() - 14);
    }

    #[test]
    fn first_fragment_is_a_fragment_although_it_has_ports() {
        assert_eq!(
            parse(&TCP_FIRST_FRAGMENT).unwrap_err(),
            ParseError::Fragment
        );
    }

    #[test]
    fn later_fragment_is_a_fragment() {
        assert_eq!(
            parse(&UDP_LATER_FRAGMENT).unwrap_err(),
            ParseError::Fragment
        );
    }

    #[test]
    fn dont_fragment_flag_alone_is_not_a_fragment() {
        assert_eq!(TCP_SYN[20], 0x40, "fixture has DF set");
        assert!(parse(&TCP_SYN).is_ok());
        // The reserved bit (RFC 791 §3.1) is not a fragment either.
        assert!(parse(&with_byte(&TCP_SYN, 20, 0x80)).is_ok());
    }

    #[test]
    fn icmp_is_unsupported_protocol() {
        assert_eq!(
            parse(&ICMP_ECHO).unwrap_err(),
            ParseError::UnsupportedProtocol
        );
    }

    #[test]
    fn every_truncation_of_a_valid_frame_is_truncated() {
        for frame in [
            &TCP_SYN[..],
            &TCP_SYN_IP_OPTIONS,
            &TCP_SYN_DOT1Q,
            &TCP_SYN_DOT1AD,
            &UDP_DNS,
            &UDP_NO_CHECKSUM,
        ] {
            assert!(parse(frame).is_ok());
            for len in 0..frame.len() {
                assert_eq!(
                    parse(&frame[..len]).unwrap_err(),
                    ParseError::Truncated,
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn ethernet_padding_after_a_short_ip_packet_is_ignored() {
        let parsed = parse(&UDP_SHORT_PADDED).unwrap();
        assert_eq!(parsed.ip_total_len, 30);
        assert_eq!(parsed.key.dst_port, 53);
        let ip_end = parsed.l3_offset + parsed.ip_total_len;
        assert_eq!(ip_end, UDP_SHORT_PADDED.len() - 16);
        for len in ip_end..UDP_SHORT_PADDED.len() {
            assert_eq!(parse(&UDP_SHORT_PADDED[..len]).unwrap().key, parsed.key);
        }
        for len in 0..ip_end {
            assert_eq!(
                parse(&UDP_SHORT_PADDED[..len]).unwrap_err(),
                ParseError::Truncated
            );
        }
    }

    #[test]
    fn ip_version_other_than_4_is_bad_ip_header() {
        let v6_in_v4_frame = with_byte(&TCP_SYN, 14, 0x65);
        assert_eq!(parse(&v6_in_v4_frame).unwrap_err(), ParseError::BadIpHeader);
    }

    #[test]
    fn ihl_below_5_is_bad_ip_header() {
        for ihl in 0..5 {
            let frame = with_byte(&TCP_SYN, 14, 0x40 | ihl);
            assert_eq!(
                parse(&frame).unwrap_err(),
                ParseError::BadIpHeader,
                "ihl {ihl}"
            );
        }
    }

    #[test]
    fn total_length_shorter_than_the_ip_header_is_bad_ip_header() {
        let frame = with_u16(&TCP_SYN_IP_OPTIONS, 16, 23);
        assert_eq!(parse(&frame).unwrap_err(), ParseError::BadIpHeader);
    }

    #[test]
    fn total_length_beyond_the_frame_is_truncated() {
        let frame = with_u16(&TCP_SYN, 16, (TCP_SYN.len() - 14 + 1) as u16);
        assert_eq!(parse(&frame).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn ip_payload_shorter_than_a_tcp_header_is_bad_l4_header() {
        // 20 bytes of IPv4 header, 19 of TCP: all present, but too few.
        let frame = with_u16(&TCP_SYN, 16, 20 + 19);
        assert_eq!(parse(&frame).unwrap_err(), ParseError::BadL4Header);
    }

    #[test]
    fn tcp_data_offset_below_5_is_bad_l4_header() {
        let frame = with_byte(&TCP_SYN, 34 + 12, 0x40);
        assert_eq!(parse(&frame).unwrap_err(), ParseError::BadL4Header);
    }

    #[test]
    fn tcp_data_offset_beyond_the_ip_payload_is_bad_l4_header() {
        let frame = with_byte(&TCP_SYN, 34 + 12, 0x70);
        assert_eq!(parse(&frame).unwrap_err(), ParseError::BadL4Header);
    }

    #[test]
    fn udp_length_beyond_the_ip_payload_is_bad_l4_header() {
        let frame = with_u16(&UDP_DNS, 34 + 4, (UDP_DNS.len() - 34 + 1) as u16);
        assert_eq!(parse(&frame).unwrap_err(), ParseError::BadL4Header);
    }

    #[test]
    fn udp_length_below_8_is_bad_l4_header() {
        for length in [0, 7] {
            let frame = with_u16(&UDP_DNS, 34 + 4, length);
            assert_eq!(
                parse(&frame).unwrap_err(),
                ParseError::BadL4Header,
                "length {length}"
            );
        }
    }

    #[test]
    fn udp_length_shorter_than_the_ip_payload_is_accepted() {
        // Linux trims to the UDP length (udp_rcv); so do we, by not caring.
        let frame = with_u16(&UDP_DNS, 34 + 4, 8);
        assert!(parse(&frame).is_ok());
    }

    #[test]
    fn parse_error_names_are_distinct_snake_case_and_all_is_in_order() {
        let names: Vec<&str> = ParseError::ALL.iter().map(|e| e.name()).collect();
        for (i, (error, name)) in ParseError::ALL.iter().zip(&names).enumerate() {
            assert_eq!(*error as usize, i);
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(error.to_string(), *name);
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    /// Asserts what must hold of any successful parse, whatever the bytes.
    fn assert_consistent(frame: &[u8], parsed: &Parsed) {
        assert!(parsed.l3_offset == 14 || parsed.l3_offset == 18);
        let ip_header_len = if parsed.key.is_ipv6() { 40 } else { 20 };
        assert_eq!(parsed.key.src.is_ipv6(), parsed.key.dst.is_ipv6());
        assert!(parsed.l4_offset >= parsed.l3_offset + ip_header_len);
        assert!(parsed.l4_offset + 8 <= parsed.l3_offset + parsed.ip_total_len);
        assert!(parsed.l3_offset + parsed.ip_total_len <= frame.len());
        assert!(parsed.key.protocol == 6 || parsed.key.protocol == 17);
    }

    /// The same frame as etherparse sees it: (key, l3 offset, l4 offset).
    fn etherparse_view(frame: &[u8]) -> Option<(FlowKey, usize, usize)> {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let sliced = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            return None;
        };
        let header = ip.header();
        let l3_offset = header.slice().as_ptr() as usize - frame.as_ptr() as usize;
        let l4_offset = l3_offset + header.slice().len();
        let (src_port, dst_port) = match sliced.transport.as_ref()? {
            TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
            TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
            _ => return None,
        };
        let key = FlowKey {
            src: header.source_addr().into(),
            dst: header.destination_addr().into(),
            src_port,
            dst_port,
            protocol: header.protocol().0,
        };
        Some((key, l3_offset, l4_offset))
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(frame in prop::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(parsed) = parse(&frame) {
                assert_consistent(&frame, &parsed);
            }
        }

        #[test]
        fn parse_never_panics_on_mutated_valid_frames(frame in mutated(arb_frame_spec())) {
            if let Ok(parsed) = parse(&frame) {
                assert_consistent(&frame, &parsed);
            }
        }

        #[test]
        fn parse_agrees_with_etherparse_on_valid_frames(spec in arb_frame_spec()) {
            let frame = spec.build();
            let parsed = parse(&frame).unwrap();
            prop_assert_eq!(parsed.key, spec.key());
            prop_assert_eq!(parsed.ip_total_len, spec.ip_total_len());
            prop_assert_eq!(
                etherparse_view(&frame),
                Some((parsed.key, parsed.l3_offset, parsed.l4_offset))
            );
        }

        #[test]
        fn ipv6_parse_agrees_with_etherparse(
            src in any::<u128>(),
            dst in any::<u128>(),
            tcp in any::<bool>(),
            ports in any::<(u16, u16)>(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
            hop_by_hop in 0u8..3,
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            prop_assume!(src.to_ipv4_mapped().is_none() && dst.to_ipv4_mapped().is_none());
            let exts: Vec<Ext> = (0..hop_by_hop)
                .map(|units| Ext::options(ipv6::NEXT_HEADER_DESTINATION_OPTIONS, units + 1))
                .collect();
            let frame = ipv6_frame(src, dst, if tcp { 6 } else { 17 }, ports, &payload, &exts);
            let parsed = parse(&frame).unwrap();
            assert_consistent(&frame, &parsed);
            prop_assert_eq!(
                (parsed.key.src, parsed.key.dst, parsed.key.src_port, parsed.key.dst_port),
                (IpAddr::V6(src), IpAddr::V6(dst), ports.0, ports.1)
            );
            prop_assert_eq!(parsed.l4_offset, frame.len() - payload.len() - if tcp { 20 } else { 8 });
        }

        /// Whatever we accept, etherparse reads the same way.
        #[test]
        fn accepted_mutated_frames_read_the_same_in_etherparse(frame in mutated(arb_frame_spec())) {
            if let Ok(parsed) = parse(&frame) {
                prop_assert_eq!(
                    etherparse_view(&frame),
                    Some((parsed.key, parsed.l3_offset, parsed.l4_offset))
                );
            }
        }
    }
}
