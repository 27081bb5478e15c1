//! The Internet checksum of `switchyard-wire`: the sum over bytes against
//! a plain reference, and every incremental update (RFC 1624 eqn. 3)
//! against a recomputation from scratch, which it must equal bit for bit
//! whenever the old checksum was itself computed from scratch.

use switchyard_wire::checksum::{
    adjust, diff_u16, diff_u32, fold, is_partial, pseudo_header_v4, sum_words, update_u16,
    update_u32,
};

/// Bytes in front of the covered data: the word to change, its new 16-
/// and 32-bit values.
const HEAD: usize = 1 + 2 + 4;

/// Input: which word to change, a new `u16`, a new `u32`, then the bytes
/// the checksum covers (its field is their first two).
pub fn checksum(data: &[u8]) {
    assert_eq!(fold(sum_words(data)), reference(data));
    let Some((head, body)) = data.split_first_chunk::<HEAD>() else {
        return;
    };
    let new16 = u16::from_be_bytes([head[1], head[2]]);
    let new32 = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);

    // A header of an even length of at least 8 bytes, checksum at 0.
    let len = body.len() & !1;
    if len < 8 {
        return;
    }
    let mut covered = body[..len].to_vec();
    covered[..2].fill(0);
    let old = full(&covered);
    covered[..2].copy_from_slice(&old.to_be_bytes());
    let data_is_zero = |bytes: &[u8]| bytes[2..].iter().all(|&b| b == 0);
    if data_is_zero(&covered) {
        // All-zero data: its checksum is 0xffff, which no update starts from.
        return;
    }

    let words = (len - 2) / 2;
    let at = 2 + 2 * (usize::from(head[0]) % words);
    let mut changed = covered.clone();
    let was16 = u16::from_be_bytes([changed[at], changed[at + 1]]);
    changed[at..at + 2].copy_from_slice(&new16.to_be_bytes());
    if !data_is_zero(&changed) {
        assert_eq!(update_u16(old, was16, new16), recomputed(&changed));
        assert_eq!(adjust(old, diff_u16(was16, new16)), recomputed(&changed));
    }

    if words >= 2 {
        let at = 2 + 2 * (usize::from(head[0]) % (words - 1));
        let mut changed = covered.clone();
        let was32 = u32::from_be_bytes([
            changed[at],
            changed[at + 1],
            changed[at + 2],
            changed[at + 3],
        ]);
        changed[at..at + 4].copy_from_slice(&new32.to_be_bytes());
        if !data_is_zero(&changed) {
            assert_eq!(update_u32(old, was32, new32), recomputed(&changed));
            assert_eq!(adjust(old, diff_u32(was32, new32)), recomputed(&changed));
        }
    }

    // A sender's partial checksum is recognised whatever the addresses.
    let pseudo = pseudo_header_v4(new32, u32::from(new16), 6, len as u16);
    assert!(is_partial(fold(pseudo), pseudo));
    assert_ne!(fold(pseudo), 0, "a TCP pseudo-header never folds to 0");
}

/// The checksum field of `bytes`, whose own field (the first two) is zero.
fn full(bytes: &[u8]) -> u16 {
    !fold(sum_words(bytes))
}

/// The checksum of `bytes` computed from scratch, its field ignored.
fn recomputed(bytes: &[u8]) -> u16 {
    let mut zeroed = bytes.to_vec();
    zeroed[..2].fill(0);
    full(&zeroed)
}

/// RFC 1071 §4.1 as written: a wide sum of big-endian words, an odd byte
/// padded with zero, folded at the end.
fn reference(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}
