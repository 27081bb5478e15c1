//! The Internet checksum (RFC 1071): summed from scratch over bytes
//! ([`sum_words`]), for headers Switchyard writes whole, and updated
//! incrementally when a field changes (RFC 1624), so a rewrite costs a few
//! additions whatever the packet's length. The incremental part is `const
//! fn` over integers: no slices, nothing that can panic.
//!
//! A change is expressed as a *difference* `~old + new` in one's complement
//! arithmetic ([`diff_u16`], [`diff_u32`]). Differences add up, so a rewrite
//! of several fields sums their differences once and applies the total to
//! each checksum that covers those fields ([`adjust`]): the IPv4 addresses
//! are covered by both the IPv4 header checksum and the TCP/UDP pseudo-header.
//!
//! [`adjust`] is RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, not RFC 1141's
//! `HC' = HC + m - m'`, which turns a correct `0x0000` into `0xffff`
//! (RFC 1624 §3). With eqn. 3 the result is bit-for-bit the checksum a full
//! recomputation would give, provided the old checksum was itself computed
//! from scratch over data that is not all zeros (so it is never `0xffff`).
//!
//! TCP, UDP and ICMPv6 checksums also cover a pseudo-header made of the IP
//! addresses, the protocol and the upper-layer length ([`pseudo_header_v4`],
//! [`pseudo_header_v6`]): its sum plus `sum_words` of the upper-layer packet,
//! folded and inverted, is the checksum field; a packet verifies when that
//! fold comes to `0xffff`.
//!
//! A sender that offloads the TCP/UDP checksum (Linux `CHECKSUM_PARTIAL`,
//! what a veth carries from a host with tx checksum offload on) hands over
//! the field holding only its pseudo-header sum, folded and not inverted,
//! for the device to finish ([`is_partial`]). No incremental update can
//! finish it: the sum over the segment is missing.

/// Folds a 32-bit sum of 16-bit words into 16 bits with end-around carry
/// (RFC 1071 §4.1). Two rounds suffice for any `u32`: the first leaves at
/// most `0x1fffe`, the second at most `0xffff`.
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    // Lossless: the second round leaves at most 0xffff.
    sum as u16
}

/// The one's complement difference of a 16-bit field changing from `old` to
/// `new`; sums of up to 65,535 such differences fit in a `u32`.
#[inline(always)]
pub const fn diff_u16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// The one's complement difference of a 32-bit field (an IPv4 address) that
/// sits on a 16-bit boundary, as every field this module rewrites does.
#[inline(always)]
pub const fn diff_u32(old: u32, new: u32) -> u32 {
    diff_u16((old >> 16) as u16, (new >> 16) as u16) + diff_u16(old as u16, new as u16)
}

/// The sum of a 32-bit value's two 16-bit words: what writing it into a
/// field that held zeros adds to the checksum, to be applied with
/// [`adjust`] like a difference (a frame template with zeroed fields,
/// filled in per frame). Unlike `diff_u32(0, value)` it carries no
/// negative zeros, so the sum of all-zero fields stays 0.
#[inline(always)]
pub const fn sum_u32(value: u32) -> u32 {
    (value >> 16) + (value & 0xffff)
}

/// Applies a summed difference to a checksum field (RFC 1624 eqn. 3).
#[inline(always)]
pub const fn adjust(checksum: u16, diff: u32) -> u16 {
    !fold((!checksum) as u32 + fold(diff) as u32)
}

/// The checksum after one 16-bit field changed from `old` to `new`.
#[inline(always)]
pub const fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    adjust(checksum, diff_u16(old, new))
}

/// The checksum after one 32-bit field changed from `old` to `new`.
#[inline(always)]
pub const fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    adjust(checksum, diff_u32(old, new))
}

/// One's complement sum of `bytes` as big-endian 16-bit words, a final odd
/// byte padded with zero (RFC 1071 §4.1), folded as it goes so any length
/// fits; `!fold(sum)` is the checksum field.
#[inline]
pub fn sum_words(bytes: &[u8]) -> u32 {
    let (words, odd) = bytes.as_chunks::<2>();
    let mut sum = words.iter().fold(0u32, |sum, &word| {
        let sum = sum + u32::from(u16::from_be_bytes(word));
        (sum & 0xffff) + (sum >> 16)
    });
    if let [last] = odd {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Sum of the IPv4 pseudo-header of TCP (RFC 9293 §3.1) and UDP (RFC 768):
/// source and destination address, a zero byte, the protocol and the
/// TCP/UDP length, to be added to `sum_words` of the segment. At most five
/// words of `0xffff` plus one byte, so any `sum_words` result can be added
/// without overflow.
#[inline(always)]
pub const fn pseudo_header_v4(src: u32, dst: u32, protocol: u8, l4_len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + protocol as u32 + l4_len as u32
}

/// Whether a TCP/UDP checksum field holds what a sender that offloads the
/// checksum leaves in it: `pseudo_header`'s sum folded and not inverted
/// (Linux `tcp_v4_send_check` and `udp4_hwcsum` write
/// `~csum_tcpudp_magic(..)`, which is exactly that). `pseudo_header` is
/// never 0 for TCP or UDP (the protocol word is not), so neither is the
/// fold, and a UDP field of 0 ("no checksum") never matches.
///
/// A complete checksum matches by chance about once in 65,535 packets; the
/// test cannot tell those apart, so whoever acts on a match must still be
/// right for a complete checksum (recomputing from scratch is).
#[inline(always)]
pub const fn is_partial(field: u16, pseudo_header: u32) -> bool {
    field == fold(pseudo_header)
}

/// Sum of the IPv6 pseudo-header of RFC 8200 §8.1: source and final
/// destination address, the upper-layer packet length as 32 bits, three
/// zero bytes and the upper-layer protocol's Next Header value (not that of
/// an extension header before it), to be added to `sum_words` of the
/// upper-layer packet. At most 18 words of `0xffff` plus one byte, so any
/// `sum_words` result can be added without overflow.
#[inline(always)]
pub const fn pseudo_header_v6(
    src: &[u8; 16],
    dst: &[u8; 16],
    next_header: u8,
    upper_layer_len: u32,
) -> u32 {
    let mut sum = (upper_layer_len >> 16) + (upper_layer_len & 0xffff) + next_header as u32;
    let mut i = 0;
    while i < 16 {
        sum += u16::from_be_bytes([src[i], src[i + 1]]) as u32;
        sum += u16::from_be_bytes([dst[i], dst[i + 1]]) as u32;
        i += 2;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fold_adds_carries_back_end_around() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0x0001_fffe), 0xffff);
        assert_eq!(fold(0x0002_fffe), 0x0001);
        assert_eq!(fold(u32::MAX), 0xffff);
    }

    /// The worked example of RFC 1624 §4: eqn. 3 must give 0x0000 where
    /// RFC 1141's formula gives the wrong 0xffff.
    #[test]
    fn rfc1624_example_updates_to_zero_not_ffff() {
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn unchanged_field_leaves_checksum_unchanged() {
        assert_eq!(update_u16(0x1234, 0xabcd, 0xabcd), 0x1234);
        assert_eq!(update_u32(0x1234, 0xc000_020a, 0xc000_020a), 0x1234);
    }

    /// RFC 1071 checksum summed the slow way, independently of the code
    /// under test.
    fn internet_checksum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut sum: u64 = 0;
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u64::from);
            sum += hi | lo;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example_sums_to_its_worked_total() {
        // RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&bytes)), 0xddf2);
    }

    fn words_to_bytes(words: &[u16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    /// Ten words like an IPv4 header; the first is non-zero as a real
    /// header's version/IHL word is, which rules out the all-zero corner
    /// case where only `0xffff` is a valid from-scratch checksum.
    fn header_words() -> impl Strategy<Value = Vec<u16>> {
        (1..=u16::MAX, prop::collection::vec(any::<u16>(), 9)).prop_map(|(first, rest)| {
            let mut words = vec![first];
            words.extend(rest);
            words
        })
    }

    proptest! {
        #[test]
        fn sum_words_equals_the_slow_checksum(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(!fold(sum_words(&bytes)), internet_checksum(&[&bytes]));
        }

        #[test]
        fn update_u16_equals_recomputation(words in header_words(), at in 0usize..10, new in any::<u16>()) {
            let before = internet_checksum(&[&words_to_bytes(&words)]);
            let old = words[at];
            let mut changed = words.clone();
            changed[at] = new;
            prop_assume!(changed[0] != 0);
            let after = internet_checksum(&[&words_to_bytes(&changed)]);
            prop_assert_eq!(update_u16(before, old, new), after);
        }

        #[test]
        fn update_u32_equals_recomputation(words in header_words(), at in 1usize..9, new in any::<u32>()) {
            let before = internet_checksum(&[&words_to_bytes(&words)]);
            let old = (u32::from(words[at]) << 16) | u32::from(words[at + 1]);
            let mut changed = words.clone();
            changed[at] = (new >> 16) as u16;
            changed[at + 1] = new as u16;
            let after = internet_checksum(&[&words_to_bytes(&changed)]);
            prop_assert_eq!(update_u32(before, old, new), after);
        }

        /// A template's checksum, computed with a 32-bit field at zero,
        /// becomes the filled-in frame's by adding the field's `sum_u32`.
        #[test]
        fn sum_u32_fills_a_zeroed_field_into_the_checksum(words in header_words(), at in 1usize..9, value in any::<u32>()) {
            let mut template = words.clone();
            template[at] = 0;
            template[at + 1] = 0;
            let before = internet_checksum(&[&words_to_bytes(&template)]);
            let mut filled = template.clone();
            filled[at] = (value >> 16) as u16;
            filled[at + 1] = value as u16;
            let after = internet_checksum(&[&words_to_bytes(&filled)]);
            prop_assert_eq!(adjust(before, sum_u32(value)), after);
        }

        #[test]
        // `check` excludes 0xffff, which no from-scratch checksum of
        // non-zero data can be (see the module doc).
        fn summed_differences_equal_successive_updates(
            check in 0..u16::MAX,
            a in any::<(u32, u32)>(),
            b in any::<(u16, u16)>(),
        ) {
            let summed = adjust(check, diff_u32(a.0, a.1) + diff_u16(b.0, b.1));
            let successive = update_u16(update_u32(check, a.0, a.1), b.0, b.1);
            prop_assert_eq!(summed, successive);
        }
    }

    /// What Linux leaves for the device (`~csum_tcpudp_magic`, RFC 1071
    /// arithmetic spelled out here) is recognised; the complete checksum of
    /// the same segment is not.
    #[test]
    fn the_folded_pseudo_header_sum_is_partial_and_the_full_checksum_is_not() {
        let (src, dst) = (0xc612_010a_u32, 0xc612_640a_u32);
        let segment = [
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xfa, 0xf0,
        ];
        let pseudo = pseudo_header_v4(src, dst, 6, segment.len() as u16);
        let mut linux = 0u64;
        for word in [src >> 16, src & 0xffff, dst >> 16, dst & 0xffff, 6, 16] {
            linux += u64::from(word);
        }
        while linux > 0xffff {
            linux = (linux & 0xffff) + (linux >> 16);
        }
        assert!(is_partial(linux as u16, pseudo));
        let full = !fold(pseudo + sum_words(&segment));
        assert!(!is_partial(full, pseudo));
        assert!(!is_partial(0, pseudo_header_v4(0, 0, 17, 8)));
    }

    #[test]
    fn pseudo_headers_never_overflow_a_sum_of_words() {
        let ones = [0xff; 16];
        let v6 = pseudo_header_v6(&ones, &ones, u8::MAX, u32::MAX);
        assert_eq!(v6, 18 * 0xffff + 0xff);
        assert!(v6.checked_add(sum_words(&[0xff; 9000])).is_some());
        let v4 = pseudo_header_v4(u32::MAX, u32::MAX, u8::MAX, u16::MAX);
        assert_eq!(v4, 5 * 0xffff + 0xff);
    }

    /// `internet_checksum` over the pseudo-header spelled out byte by byte
    /// (RFC 8200 §8.1's figure) and the upper-layer packet.
    fn slow_checksum_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, upper: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(src);
        pseudo.extend_from_slice(dst);
        pseudo.extend_from_slice(&(upper.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next_header]);
        internet_checksum(&[&pseudo, upper])
    }

    proptest! {
        #[test]
        fn pseudo_header_v6_equals_the_slow_checksum_of_its_bytes(
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            next_header in any::<u8>(),
            upper in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let pseudo = pseudo_header_v6(&src, &dst, next_header, upper.len() as u32);
            prop_assert_eq!(
                !fold(pseudo + sum_words(&upper)),
                slow_checksum_v6(&src, &dst, next_header, &upper)
            );
        }

        /// etherparse, independent of this crate, fills in the same UDP
        /// checksum over IPv6 (RFC 768 with RFC 8200 §8.1's pseudo-header).
        #[test]
        fn pseudo_header_v6_gives_etherparse_s_udp_checksum(
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
            payload in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let header = etherparse::UdpHeader::without_ipv4_checksum(ports.0, ports.1, payload.len())
                .unwrap();
            let expected = header.calc_checksum_ipv6_raw(src, dst, &payload).unwrap();
            let mut datagram = header.to_bytes().to_vec();
            datagram.extend_from_slice(&payload);
            let pseudo = pseudo_header_v6(&src, &dst, 17, datagram.len() as u32);
            let computed = !fold(pseudo + sum_words(&datagram));
            // RFC 8200 §8.1: a computed 0 is sent as 0xffff over IPv6 too.
            let sent = if computed == 0 { 0xffff } else { computed };
            prop_assert_eq!(sent, expected);
        }

        #[test]
        fn pseudo_header_v4_gives_etherparse_s_tcp_checksum(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            ports in any::<(u16, u16)>(),
            payload in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let header = etherparse::TcpHeader::new(ports.0, ports.1, 1, 64240);
            let expected = header.calc_checksum_ipv4_raw(src, dst, &payload).unwrap();
            let mut segment = header.to_bytes().to_vec();
            segment.extend_from_slice(&payload);
            let pseudo = pseudo_header_v4(
                u32::from_be_bytes(src),
                u32::from_be_bytes(dst),
                6,
                segment.len() as u16,
            );
            prop_assert_eq!(!fold(pseudo + sum_words(&segment)), expected);
        }
    }
}
