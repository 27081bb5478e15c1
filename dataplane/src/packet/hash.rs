//! The flow hash: MurmurHash3 (x86, 32-bit) of the 5-tuple. It must give the
//! same value for the same flow in every process and on every node (ECMP may
//! move a flow between LB nodes, and Maglev only keeps its backend if both
//! nodes hash alike), so there is no per-process randomness, unlike std's
//! `RandomState`. Murmur3 is a published function: a C twin in the XDP
//! program, or any other language, can reproduce it from this description.
//!
//! Input layout, 32-bit words fed as murmur3 blocks in this order: `src`
//! and `dst`, then `src_port << 16 | dst_port`, then `protocol`. An IPv4
//! address is one word, the number `u32::from(Ipv4Addr)` (192.0.2.10 is
//! `0xc000020a`); an IPv6 address is four, its 128-bit number from the
//! most significant word down. That is `MurmurHash3_x86_32` over those
//! words' bytes in little-endian order, with the total length 16 (IPv4) or
//! 40 (IPv6).

use std::net::IpAddr;

use super::parse::FlowKey;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Murmur3's body, one block at a time, counting the bytes fed.
struct Murmur3 {
    h: u32,
    len: u32,
}

impl Murmur3 {
    #[inline(always)]
    fn word(&mut self, word: u32) {
        self.h ^= mix_block(word);
        self.h = self
            .h
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
        self.len += 4;
    }

    #[inline(always)]
    fn address(&mut self, address: IpAddr) {
        match address {
            IpAddr::V4(a) => self.word(u32::from(a)),
            IpAddr::V6(a) => {
                let n = u128::from(a);
                for shift in [96, 64, 32, 0] {
                    self.word((n >> shift) as u32);
                }
            }
        }
    }

    #[inline(always)]
    fn finish(self) -> u32 {
        fmix32(self.h ^ self.len)
    }
}

/// Hashes a flow's 5-tuple with `seed`; deterministic and well mixed (every
/// input bit affects every output bit through murmur3's final avalanche).
/// Every node must use the same seed to agree on backends.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32) -> u32 {
    let ports = (u32::from(key.src_port) << 16) | u32::from(key.dst_port);
    let protocol = u32::from(key.protocol);
    // IPv4 as four fixed blocks the compiler unrolls inline at every
    // lookup; the longer IPv6 input out of line.
    match (key.src, key.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            murmur3(&[u32::from(src), u32::from(dst), ports, protocol], seed)
        }
        _ => flow_hash_any(key, ports, protocol, seed),
    }
}

#[inline(never)]
fn flow_hash_any(key: &FlowKey, ports: u32, protocol: u32, seed: u32) -> u32 {
    let mut m = Murmur3 { h: seed, len: 0 };
    m.address(key.src);
    m.address(key.dst);
    m.word(ports);
    m.word(protocol);
    m.finish()
}

/// Murmur3 of whole 32-bit blocks.
#[inline(always)]
fn murmur3<const N: usize>(words: &[u32; N], seed: u32) -> u32 {
    let mut h = seed;
    for &word in words {
        h ^= mix_block(word);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    fmix32(h ^ (4 * N) as u32)
}

/// Hashes only a client's address with `seed`, for listeners with
/// `ClientIP` session affinity: every flow of the client (any source port,
/// on any worker or node) gets the same slot. It is [`flow_hash`] of a key
/// whose other fields are zero (the unspecified address of its family).
#[inline]
pub fn client_hash(src: IpAddr, seed: u32) -> u32 {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    flow_hash(
        &FlowKey {
            src,
            dst,
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
    use std::net::{Ipv4Addr, Ipv6Addr};

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

    fn words(address: IpAddr) -> Vec<u32> {
        match address {
            IpAddr::V4(a) => vec![u32::from(a)],
            IpAddr::V6(a) => a
                .octets()
                .chunks(4)
                .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
                .collect(),
        }
    }

    fn layout(key: &FlowKey) -> Vec<u8> {
        let mut all = words(key.src);
        all.extend(words(key.dst));
        all.push((u32::from(key.src_port) << 16) | u32::from(key.dst_port));
        all.push(u32::from(key.protocol));
        all.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    const KEY: FlowKey = FlowKey {
        src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        src_port: 40000,
        dst_port: 80,
        protocol: 6,
    };

    const KEY6: FlowKey = FlowKey {
        src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10)),
        dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1)),
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
        assert_eq!(flow_hash(&KEY6, 0), murmur3_reference(&layout(&KEY6), 0));
        assert_eq!(layout(&KEY6).len(), 40);
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

    /// Keys of either family, both addresses of the same one.
    fn arb_key() -> impl Strategy<Value = FlowKey> {
        let addresses = prop_oneof![
            (any::<u32>(), any::<u32>())
                .prop_map(|(s, d)| (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))),
            (any::<u128>(), any::<u128>())
                .prop_map(|(s, d)| (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))),
        ];
        (addresses, any::<u16>(), any::<u16>(), any::<u8>()).prop_map(
            |((src, dst), src_port, dst_port, protocol)| FlowKey {
                src,
                dst,
                src_port,
                dst_port,
                protocol,
            },
        )
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
            let same_family = other.src.is_ipv4() == key.src.is_ipv4();
            if same_family && other.src != key.src {
                prop_assert_ne!(flow_hash(&FlowKey { src: other.src, ..key }, seed), h);
            }
            if same_family && other.dst != key.dst {
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
