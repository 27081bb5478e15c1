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
}
