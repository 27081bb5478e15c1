//! IPv6 fixed header (RFC 8200 §3), the layout every extension header
//! starts with (RFC 8200 §4.2 for options headers, RFC 6564 for the uniform
//! format), and the Fragment header (RFC 8200 §4.5).
//!
//! Unlike IPv4, the fixed header has no checksum and no options: what
//! follows it is a chain of extension headers, each naming the next, ended
//! by the upper-layer header. A parser walks the chain with [`ext`] until
//! `NEXT_HEADER` is no extension; the upper layer's checksum covers the
//! pseudo-header of RFC 8200 §8.1 (`checksum::pseudo_header_v6`).

pub const HEADER_LEN: usize = 40;
/// Version (4 bits), Traffic Class (8), Flow Label (20).
pub const VERSION_CLASS_FLOW: usize = 0;
/// Length of everything after the fixed header, extension headers
/// included, in bytes.
pub const PAYLOAD_LEN: usize = 4;
pub const NEXT_HEADER: usize = 6;
pub const HOP_LIMIT: usize = 7;
pub const SRC: usize = 8;
pub const DST: usize = 24;
pub const ADDR_LEN: usize = 16;

pub const VERSION: u8 = 6;

/// Next Header values of the extension headers a packet may carry before
/// its upper layer (RFC 8200 §4.1 gives their order), and of ICMPv6; TCP
/// and UDP are the IANA numbers of `ipv4::PROTOCOL_TCP`/`PROTOCOL_UDP`.
pub const NEXT_HEADER_HOP_BY_HOP: u8 = 0;
pub const NEXT_HEADER_ROUTING: u8 = 43;
pub const NEXT_HEADER_FRAGMENT: u8 = 44;
/// Encapsulating Security Payload (RFC 4303): what follows is encrypted.
pub const NEXT_HEADER_ESP: u8 = 50;
/// Authentication Header (RFC 4302); its length counts 4-byte units, not 8.
pub const NEXT_HEADER_AUTH: u8 = 51;
pub const NEXT_HEADER_ICMPV6: u8 = 58;
pub const NEXT_HEADER_NONE: u8 = 59;
pub const NEXT_HEADER_DESTINATION_OPTIONS: u8 = 60;

/// Extension headers a parser walks before the upper layer, at most: RFC
/// 8200 §4.1's recommended order holds at most Hop-by-Hop Options,
/// Destination Options, Routing, Fragment, Authentication and Destination
/// Options again before the upper-layer header, six. A longer chain is no
/// service's traffic, and a bound keeps the XDP program's walk within what
/// the verifier accepts (its twin is `MAX_IPV6_EXT_HEADERS` in
/// xdp/src/bpf/consts.h).
pub const MAX_EXT_HEADERS: usize = 6;

/// The version field of a fixed header: the high nibble of its first byte.
#[inline(always)]
pub const fn version(hdr: &[u8; HEADER_LEN]) -> u8 {
    hdr[VERSION_CLASS_FLOW] >> 4
}

/// The first 2 bytes every extension header but ESP starts with (RFC 8200
/// §4.2, RFC 6564 §4): the Next Header after it and its own length.
pub mod ext {
    /// Next Header and Hdr Ext Len, then at least 6 bytes of content.
    pub const MIN_LEN: usize = 8;
    pub const NEXT_HEADER: usize = 0;
    /// Length in 8-byte units, not counting the first 8 bytes.
    pub const HDR_EXT_LEN: usize = 1;
    pub const UNIT_LEN: usize = 8;

    /// The whole length in bytes of an extension header whose Hdr Ext Len
    /// field is `hdr_ext_len`: from 8 to 2048, so no value overflows.
    #[inline(always)]
    pub const fn header_len(hdr_ext_len: u8) -> usize {
        (hdr_ext_len as usize + 1) * UNIT_LEN
    }
}

/// The Routing header (RFC 8200 §4.4): after the common two bytes, the
/// routing type and how many listed nodes are still to be visited.
pub mod routing {
    pub const ROUTING_TYPE: usize = 2;
    /// Non-zero means the destination in the fixed header is an
    /// intermediate node, not the packet's final destination.
    pub const SEGMENTS_LEFT: usize = 3;
}

/// The Fragment header (RFC 8200 §4.5): 8 bytes, no Hdr Ext Len (its
/// second byte is reserved), the offset of this fragment's data in 8-byte
/// units in the high 13 bits of bytes 2-3, the M flag in the lowest bit.
pub mod fragment {
    use crate::read_u16;

    pub const HEADER_LEN: usize = 8;
    pub const NEXT_HEADER: usize = 0;
    /// Fragment Offset (13 bits), 2 reserved bits, M flag.
    pub const OFFSET_FLAGS: usize = 2;
    pub const IDENTIFICATION: usize = 4;

    pub const OFFSET_MASK: u16 = 0xfff8;
    pub const MORE_FRAGMENTS: u16 = 0x0001;

    /// Where this fragment's data starts in the original packet's
    /// fragmentable part, in bytes.
    #[inline(always)]
    pub const fn offset_bytes(hdr: &[u8; HEADER_LEN]) -> usize {
        // The 13-bit count of 8-byte units sits 3 bits up: masking leaves
        // exactly units * 8.
        (read_u16::<OFFSET_FLAGS, HEADER_LEN>(hdr) & OFFSET_MASK) as usize
    }

    /// Whether more fragments follow this one.
    #[inline(always)]
    pub const fn more_fragments(hdr: &[u8; HEADER_LEN]) -> bool {
        read_u16::<OFFSET_FLAGS, HEADER_LEN>(hdr) & MORE_FRAGMENTS != 0
    }

    /// An atomic fragment (offset 0, M clear) is a whole packet that only
    /// carries the header; RFC 8200 §4.5 has it processed as such, without
    /// reassembly state (RFC 6946).
    #[inline(always)]
    pub const fn is_atomic(hdr: &[u8; HEADER_LEN]) -> bool {
        read_u16::<OFFSET_FLAGS, HEADER_LEN>(hdr) & (OFFSET_MASK | MORE_FRAGMENTS) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ethernet, ipv4, read_bytes, read_u16};

    /// The IPv6 header of `fixtures::IPV6_UDP`.
    fn fixture_header() -> [u8; HEADER_LEN] {
        let frame = &crate::fixtures::IPV6_UDP;
        let eth: &[u8; ethernet::HEADER_LEN] = frame.first_chunk().unwrap();
        assert_eq!(
            read_u16::<{ ethernet::ETHERTYPE }, _>(eth),
            ethernet::TYPE_IPV6
        );
        *frame[ethernet::HEADER_LEN..].first_chunk().unwrap()
    }

    #[test]
    fn fixed_header_fields_sit_where_rfc8200_section3_puts_them() {
        let hdr = fixture_header();
        assert_eq!(version(&hdr), VERSION);
        assert_eq!(read_u16::<PAYLOAD_LEN, HEADER_LEN>(&hdr), 10);
        assert_eq!(hdr[NEXT_HEADER], ipv4::PROTOCOL_UDP);
        assert_eq!(hdr[HOP_LIMIT], 64);
        let src: [u8; ADDR_LEN] = read_bytes::<SRC, ADDR_LEN, HEADER_LEN>(&hdr);
        let dst: [u8; ADDR_LEN] = read_bytes::<DST, ADDR_LEN, HEADER_LEN>(&hdr);
        assert_eq!(
            src,
            "2001:db8::a"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(
            dst,
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(DST + ADDR_LEN, HEADER_LEN, "the addresses end the header");
    }

    #[test]
    fn extension_header_length_counts_8_byte_units_after_the_first_8() {
        assert_eq!(ext::header_len(0), ext::MIN_LEN);
        assert_eq!(ext::header_len(1), 16);
        assert_eq!(ext::header_len(u8::MAX), 2048);
        // A Destination Options header with one PadN option filling it.
        let dest_opts = [ipv4::PROTOCOL_TCP, 0, 1, 4, 0, 0, 0, 0];
        assert_eq!(dest_opts[ext::NEXT_HEADER], ipv4::PROTOCOL_TCP);
        assert_eq!(
            ext::header_len(dest_opts[ext::HDR_EXT_LEN]),
            dest_opts.len()
        );
    }

    #[test]
    fn fragment_offset_is_in_8_byte_units_and_m_is_the_lowest_bit() {
        // Second fragment of a UDP datagram: offset 1448 bytes (181 units),
        // more follow, identification 0xdeadbeef.
        let second = [ipv4::PROTOCOL_UDP, 0, 0x05, 0xa9, 0xde, 0xad, 0xbe, 0xef];
        assert_eq!(second[fragment::NEXT_HEADER], ipv4::PROTOCOL_UDP);
        assert_eq!(fragment::offset_bytes(&second), 181 * 8);
        assert!(fragment::more_fragments(&second));
        assert!(!fragment::is_atomic(&second));
        assert_eq!(
            crate::read_u32::<{ fragment::IDENTIFICATION }, _>(&second),
            0xdead_beef
        );

        let last = [ipv4::PROTOCOL_UDP, 0, 0x05, 0xa8, 0, 0, 0, 1];
        assert_eq!(fragment::offset_bytes(&last), 181 * 8);
        assert!(!fragment::more_fragments(&last));

        let atomic = [ipv4::PROTOCOL_UDP, 0, 0, 0, 0, 0, 0, 1];
        assert!(fragment::is_atomic(&atomic));
        // The reserved bits say nothing about fragmentation.
        let reserved_set = [ipv4::PROTOCOL_UDP, 0, 0, 0x06, 0, 0, 0, 1];
        assert!(fragment::is_atomic(&reserved_set));
    }
}
