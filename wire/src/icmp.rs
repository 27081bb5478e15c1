//! ICMP for IPv4 (RFC 792) and ICMPv6 (RFC 4443). Both start with the same
//! 4 bytes, type, code and checksum, followed by 4 bytes whose meaning the
//! type sets: identifier and sequence number of an echo, the next-hop MTU
//! of "fragmentation needed" (RFC 1191 §4) or "packet too big", unused in
//! the other errors. An error message then quotes the packet that caused
//! it, from its IP header on ([`ERROR_QUOTE`]), which is what a load
//! balancer must translate back for the client.
//!
//! The checksums differ: ICMPv4's covers the ICMP message alone (RFC 792),
//! ICMPv6's also covers the IPv6 pseudo-header (RFC 4443 §2.3,
//! `checksum::pseudo_header_v6`).

use crate::read_u16;

/// Type, code, checksum and the 4 type-specific bytes.
pub const HEADER_LEN: usize = 8;
pub const TYPE: usize = 0;
pub const CODE: usize = 1;
pub const CHECKSUM: usize = 2;
/// Echo request and reply (RFC 792 "Echo or Echo Reply Message", RFC 4443
/// §4.1-4.2).
pub const ECHO_IDENTIFIER: usize = 4;
pub const ECHO_SEQUENCE: usize = 6;
/// Where an error message quotes the packet that caused it: as much of it
/// as fits, at least its IP header and the first 8 bytes after (RFC 792; RFC
/// 1812 §4.3.2.3 and RFC 4443 §2.4 (c) ask for more), so the quoted ports
/// identify the flow.
pub const ERROR_QUOTE: usize = HEADER_LEN;

/// ICMPv4 (RFC 792) type and code numbers.
pub mod v4 {
    use super::*;

    pub const TYPE_ECHO_REPLY: u8 = 0;
    pub const TYPE_DESTINATION_UNREACHABLE: u8 = 3;
    pub const TYPE_ECHO_REQUEST: u8 = 8;
    pub const TYPE_TIME_EXCEEDED: u8 = 11;
    /// Parameter Problem: quotes the packet like the other errors, with a
    /// pointer to the offending byte in the second word.
    pub const TYPE_PARAMETER_PROBLEM: u8 = 12;

    /// Codes of Destination Unreachable.
    pub const CODE_NET_UNREACHABLE: u8 = 0;
    pub const CODE_HOST_UNREACHABLE: u8 = 1;
    pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    /// "Fragmentation needed and DF set": path MTU discovery's signal.
    pub const CODE_FRAGMENTATION_NEEDED: u8 = 4;

    /// Codes of Time Exceeded.
    pub const CODE_TTL_EXCEEDED_IN_TRANSIT: u8 = 0;
    pub const CODE_FRAGMENT_REASSEMBLY_TIME_EXCEEDED: u8 = 1;

    /// The next-hop MTU of "fragmentation needed": the low 16 bits of the
    /// second word, the high 16 unused (RFC 1191 §4). A router predating
    /// RFC 1191 leaves it zero.
    pub const NEXT_HOP_MTU: usize = 6;

    /// The next-hop MTU a "fragmentation needed" message announces.
    #[inline(always)]
    pub const fn next_hop_mtu(hdr: &[u8; HEADER_LEN]) -> u16 {
        read_u16::<NEXT_HOP_MTU, HEADER_LEN>(hdr)
    }

    /// Whether the message quotes a packet (an error) rather than being a
    /// query or answer of its own.
    #[inline(always)]
    pub const fn is_error(icmp_type: u8) -> bool {
        matches!(
            icmp_type,
            TYPE_DESTINATION_UNREACHABLE | TYPE_TIME_EXCEEDED | TYPE_PARAMETER_PROBLEM
        )
    }
}

/// ICMPv6 (RFC 4443) type and code numbers.
pub mod v6 {
    use super::*;
    use crate::read_u32;

    pub const TYPE_DESTINATION_UNREACHABLE: u8 = 1;
    pub const TYPE_PACKET_TOO_BIG: u8 = 2;
    pub const TYPE_TIME_EXCEEDED: u8 = 3;
    pub const TYPE_PARAMETER_PROBLEM: u8 = 4;
    pub const TYPE_ECHO_REQUEST: u8 = 128;
    pub const TYPE_ECHO_REPLY: u8 = 129;

    /// Codes of Destination Unreachable (RFC 4443 §3.1).
    pub const CODE_NO_ROUTE: u8 = 0;
    pub const CODE_ADMINISTRATIVELY_PROHIBITED: u8 = 1;
    pub const CODE_ADDRESS_UNREACHABLE: u8 = 3;
    pub const CODE_PORT_UNREACHABLE: u8 = 4;

    /// Codes of Time Exceeded (RFC 4443 §3.3).
    pub const CODE_HOP_LIMIT_EXCEEDED_IN_TRANSIT: u8 = 0;
    pub const CODE_FRAGMENT_REASSEMBLY_TIME_EXCEEDED: u8 = 1;

    /// The MTU of the next-hop link in a Packet Too Big message, all 32
    /// bits of the second word (RFC 4443 §3.2).
    pub const MTU: usize = 4;

    /// The MTU a Packet Too Big message announces.
    #[inline(always)]
    pub const fn mtu(hdr: &[u8; HEADER_LEN]) -> u32 {
        read_u32::<MTU, HEADER_LEN>(hdr)
    }

    /// Error messages have types 0-127, informational ones 128-255
    /// (RFC 4443 §2.1).
    #[inline(always)]
    pub const fn is_error(icmp_type: u8) -> bool {
        icmp_type < 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{fold, pseudo_header_v6, sum_words};
    use crate::fixtures::{ICMPV6_ECHO_REQUEST, ICMP_ECHO};
    use crate::{ethernet, ipv4, ipv6, read_bytes};

    /// The ICMP message of an Ethernet + 20-byte IPv4 frame.
    fn icmpv4_of(frame: &[u8]) -> &[u8] {
        &frame[ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN..]
    }

    #[test]
    fn echo_request_fields_sit_where_rfc792_puts_them() {
        let message = icmpv4_of(&ICMP_ECHO);
        let hdr: &[u8; HEADER_LEN] = message.first_chunk().unwrap();
        assert_eq!(hdr[TYPE], v4::TYPE_ECHO_REQUEST);
        assert_eq!(hdr[CODE], 0);
        assert_eq!(read_u16::<ECHO_IDENTIFIER, HEADER_LEN>(hdr), 0x1234);
        assert_eq!(read_u16::<ECHO_SEQUENCE, HEADER_LEN>(hdr), 1);
        assert!(!v4::is_error(hdr[TYPE]));
    }

    #[test]
    fn icmpv4_checksum_covers_the_message_alone() {
        assert_eq!(fold(sum_words(icmpv4_of(&ICMP_ECHO))), 0xffff);
    }

    #[test]
    fn fragmentation_needed_carries_the_next_hop_mtu_in_the_low_16_bits() {
        // RFC 1191 §4: type 3, code 4, checksum, unused (2 bytes), MTU.
        let hdr = [3, 4, 0, 0, 0, 0, 0x05, 0xdc];
        assert_eq!(hdr[TYPE], v4::TYPE_DESTINATION_UNREACHABLE);
        assert_eq!(hdr[CODE], v4::CODE_FRAGMENTATION_NEEDED);
        assert_eq!(v4::next_hop_mtu(&hdr), 1500);
        assert!(v4::is_error(hdr[TYPE]));
        assert!(v4::is_error(v4::TYPE_TIME_EXCEEDED));
        assert!(v4::is_error(v4::TYPE_PARAMETER_PROBLEM));
        assert!(!v4::is_error(v4::TYPE_ECHO_REPLY));
    }

    #[test]
    fn packet_too_big_carries_a_32_bit_mtu() {
        let hdr = [2, 0, 0, 0, 0x00, 0x00, 0x05, 0x00];
        assert_eq!(hdr[TYPE], v6::TYPE_PACKET_TOO_BIG);
        assert_eq!(v6::mtu(&hdr), 1280);
        assert!(v6::is_error(v6::TYPE_PACKET_TOO_BIG));
        assert!(v6::is_error(v6::TYPE_TIME_EXCEEDED));
        assert!(!v6::is_error(v6::TYPE_ECHO_REQUEST));
        assert!(!v6::is_error(v6::TYPE_ECHO_REPLY));
    }

    /// The IPv6 header and ICMPv6 message of `ICMPV6_ECHO_REQUEST`.
    fn icmpv6_echo() -> ([u8; ipv6::HEADER_LEN], &'static [u8]) {
        let l3 = &ICMPV6_ECHO_REQUEST[ethernet::HEADER_LEN..];
        let (ip, message) = l3.split_first_chunk::<{ ipv6::HEADER_LEN }>().unwrap();
        (*ip, message)
    }

    #[test]
    fn icmpv6_echo_request_checksum_covers_the_pseudo_header() {
        let (ip, message) = icmpv6_echo();
        assert_eq!(ip[ipv6::NEXT_HEADER], ipv6::NEXT_HEADER_ICMPV6);
        let hdr: &[u8; HEADER_LEN] = message.first_chunk().unwrap();
        assert_eq!(hdr[TYPE], v6::TYPE_ECHO_REQUEST);
        assert_eq!(read_u16::<ECHO_IDENTIFIER, HEADER_LEN>(hdr), 0x1234);
        assert_eq!(read_u16::<ECHO_SEQUENCE, HEADER_LEN>(hdr), 1);

        let src = read_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, { ipv6::HEADER_LEN }>(&ip);
        let dst = read_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, { ipv6::HEADER_LEN }>(&ip);
        let pseudo = pseudo_header_v6(&src, &dst, ipv6::NEXT_HEADER_ICMPV6, message.len() as u32);
        assert_eq!(fold(pseudo + sum_words(message)), 0xffff);
        // Without the pseudo-header, as ICMPv4 sums, it would not verify.
        assert_ne!(fold(sum_words(message)), 0xffff);
    }

    /// etherparse, an implementation independent of this crate, computes
    /// the same checksum for the same echo request.
    #[test]
    fn icmpv6_echo_request_checksum_agrees_with_etherparse() {
        use etherparse::{IcmpEchoHeader, Icmpv6Header, Icmpv6Type};
        let (ip, message) = icmpv6_echo();
        let src = read_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, { ipv6::HEADER_LEN }>(&ip);
        let dst = read_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, { ipv6::HEADER_LEN }>(&ip);
        let echo = Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 0x1234, seq: 1 });
        let expected = Icmpv6Header::with_checksum(echo, src, dst, &message[HEADER_LEN..]).unwrap();
        let hdr: &[u8; HEADER_LEN] = message.first_chunk().unwrap();
        assert_eq!(read_u16::<CHECKSUM, HEADER_LEN>(hdr), expected.checksum);
        assert_eq!(expected.to_bytes().as_slice(), &message[..HEADER_LEN]);
    }
}
