//! The flow hash: MurmurHash3 (x86, 32-bit) of the 5-tuple. It must give the
//! same value for the same flow in every process and on every node (ECMP may
//! move a flow between LB nodes, and Maglev only keeps its backend if both
//! nodes hash alike), so there is no per-process randomness, unlike std's
//! `RandomState`. Murmur3 is a published function: a C twin in the XDP
//! program, or any other language, can reproduce it from this description.
//!
//! Input layout, four 32-bit words fed as murmur3 blocks in this order:
//! `src` and `dst` as the numbers `u32::from(Ipv4Addr)` (192.0.2.10 is
//! `0xc000020a`), `src_port << 16 | dst_port`, and `protocol`. That is
//! `MurmurHash3_x86_32` over the 16 bytes of those words in little-endian
//! order, with total length 16.

use super::parse::FlowKey;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Hashes a flow's 5-tuple with `seed`; deterministic and well mixed (every
/// input bit affects every output bit through murmur3's final avalanche).
/// Every node must use the same seed to agree on backends.
#[inline]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let words = [
        u32::from(key.src),
        u32::from(key.dst),
        (u32::from(key.src_port) << 16) | u32::from(key.dst_port),
        u32::from(key.protocol),
    ];
    let mut h = seed;
    for word in words {
        h ^= mix_block(word);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    fmix32(h ^ 16)
}

/// Hashes only a client's address with `seed`, for listeners with
/// `ClientIP` session affinity: every flow of the client (any source port,
/// on any worker or node) gets the same slot. It is [`flow_hash`] of a key
/// whose other fields are zero.
#[inline]
pub fn client_hash(src: std::net::Ipv4Addr, seed: u32) -> u32 {
    flow_hash(
        &FlowKey {
            src,
            dst: std::net::Ipv4Addr::UNSPECIFIED,
            src_port: 0,
            dst_port: 0,
            protocol: 0,
        },
        seed,
    )
}

#[inline(always)]
const fn mix_block(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

/// Murmur3's finalizer: a bijection in which each input bit flips each
/// output bit with probability close to 1/2.
#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// MurmurHash3_x86_32 over any bytes, written from the reference
    /// (smhasher's MurmurHash3.cpp), tail included.
    fn murmur3_reference(data: &[u8], seed: u32) -> u32 {
        let mut h = seed;
        let mut blocks = data.chunks_exact(4);
        for block in &mut blocks {
            h ^= mix_block(u32::from_le_bytes(block.try_into().unwrap()));
            h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        }
        let tail = blocks.remainder();
        if !tail.is_empty() {
            let mut k = 0u32;
            for (i, byte) in tail.iter().enumerate() {
                k |= u32::from(*byte) << (8 * i);
            }
            h ^= mix_block(k);
        }
        fmix32(h ^ data.len() as u32)
    }

    fn layout(key: &FlowKey) -> Vec<u8> {
        [
            u32::from(key.src),
            u32::from(key.dst),
            (u32::from(key.src_port) << 16) | u32::from(key.dst_port),
            u32::from(key.protocol),
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
    }

    const KEY: FlowKey = FlowKey {
        src: Ipv4Addr::new(192, 0, 2, 10),
        dst: Ipv4Addr::new(198, 51, 100, 1),
        src_port: 40000,
        dst_port: 80,
        protocol: 6,
    };

    #[test]
    fn reference_matches_published_murmur3_vectors() {
        let vectors: [(&[u8], u32, u32); 7] = [
            (b"", 0, 0),
            (b"", 1, 0x514e_28b7),
            (b"", 0xffff_ffff, 0x81f1_6f39),
            (&[0, 0, 0, 0], 0, 0x2362_f9de),
            (b"aaaa", 0x9747_b28c, 0x5a97_808a),
            (b"Hello, world!", 0x9747_b28c, 0x2488_4cba),
            (
                b"The quick brown fox jumps over the lazy dog",
                0x9747_b28c,
                0x2fa8_26cd,
            ),
        ];
        for (data, seed, expected) in vectors {
            assert_eq!(murmur3_reference(data, seed), expected, "{data:?}");
        }
    }

    /// Pinned so a change to the function, which would move every flow to
    /// another backend during an upgrade, cannot go unnoticed.
    #[test]
    fn flow_hash_of_a_known_key_is_pinned() {
        assert_eq!(flow_hash(&KEY, 0), 0xdd71_8a91);
        assert_eq!(flow_hash(&KEY, 0x5eed), 0xf640_7677);
    }

    #[test]
    fn sequential_source_ports_spread_evenly_over_low_and_high_bits() {
        let mut low = [0u32; 16];
        let mut high = [0u32; 16];
        for src_port in 0..=u16::MAX {
            let h = flow_hash(&FlowKey { src_port, ..KEY }, 0);
            low[(h & 15) as usize] += 1;
            high[(h >> 28) as usize] += 1;
        }
        // 4096 expected per bucket; allow 8%.
        for count in low.into_iter().chain(high) {
            assert!((3768..=4424).contains(&count), "{low:?} {high:?}");
        }
    }

    fn arb_key() -> impl Strategy<Value = FlowKey> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
        )
            .prop_map(|(src, dst, src_port, dst_port, protocol)| FlowKey {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                src_port,
                dst_port,
                protocol,
            })
    }

    proptest! {
        #[test]
        fn flow_hash_is_murmur3_of_the_documented_layout(key in arb_key(), seed in any::<u32>()) {
            prop_assert_eq!(flow_hash(&key, seed), murmur3_reference(&layout(&key), seed));
        }

        #[test]
        fn flow_hash_is_deterministic(key in arb_key(), seed in any::<u32>()) {
            let same = FlowKey { ..key };
            prop_assert_eq!(flow_hash(&key, seed), flow_hash(&same, seed));
        }

        /// With the other inputs fixed, each murmur3 step is a bijection of
        /// the changed word, so any change to one field changes the hash.
        #[test]
        fn flow_hash_changes_with_each_field_and_the_seed(
            key in arb_key(),
            other in arb_key(),
            seed in any::<u32>(),
            other_seed in any::<u32>(),
        ) {
            let h = flow_hash(&key, seed);
            if other.src != key.src {
                prop_assert_ne!(flow_hash(&FlowKey { src: other.src, ..key }, seed), h);
            }
            if other.dst != key.dst {
                prop_assert_ne!(flow_hash(&FlowKey { dst: other.dst, ..key }, seed), h);
            }
            if other.src_port != key.src_port {
                prop_assert_ne!(flow_hash(&FlowKey { src_port: other.src_port, ..key }, seed), h);
            }
            if other.dst_port != key.dst_port {
                prop_assert_ne!(flow_hash(&FlowKey { dst_port: other.dst_port, ..key }, seed), h);
            }
            if other.protocol != key.protocol {
                prop_assert_ne!(flow_hash(&FlowKey { protocol: other.protocol, ..key }, seed), h);
            }
            if other_seed != seed {
                prop_assert_ne!(flow_hash(&key, other_seed), h);
            }
        }
    }
}
