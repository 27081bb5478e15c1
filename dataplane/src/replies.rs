//! Reverse translations every worker can read: which VIP a backend's reply
//! answers for. The worker that decides a client's flow puts the reply's
//! 5-tuple here; whichever worker the reply reaches looks it up on the
//! reply's first packet there and keeps its own reply entry from then on.
//! A packet from a backend endpoint with no entry here answers no flow the
//! load balancer created, and is dropped: Switchyard never translates what
//! no client asked for, whatever address the packet claims to come from.
//!
//! Shared state rather than steering both directions to one queue: the two
//! directions arrive on whichever queues RSS (or, on veth, the sender's
//! CPU) picks, and an AF_XDP socket only receives frames of the queue it is
//! bound to, so the XDP program cannot move a reply to the worker that saw
//! its request.
//!
//! Lock-free and allocation-free after `new`. Each slot is a sequence lock
//! over atomic words: a writer claims a slot by a compare-and-swap of its
//! sequence (so two workers never interleave a write), and a reader that
//! sees a write in progress or a changed sequence retries, a bounded number
//! of times, then reports a miss. Entries hold their whole key (never a
//! tag: a collision must not translate a stranger's packet) and an expiry
//! that the flow's owner extends while the flow lives. Writes happen on a
//! flow's first packet and at most once a second after; reads on a reply's
//! first packet per worker: never on every packet.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::packet::{flow_hash, FlowKey};
use crate::seqlock::Sequence;

const WAYS: usize = 4;

/// One entry: the reply's 5-tuple, the VIP it answers for, its expiry.
/// Addresses of both families are held as 128-bit numbers, an IPv4 one
/// IPv4-mapped (`::ffff:a.b.c.d`); `parse` refuses IPv4-mapped addresses
/// in IPv6 packets, so the two families cannot alias. 64 bytes, a cache
/// line: a bucket of four is four lines, fetched ahead by `prefetch_for`.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    seq: Sequence,
    /// Seconds on the workers' clock after which the entry is gone; 0 is
    /// an empty slot.
    expires_secs: AtomicU32,
    /// Reply source (the backend), high word first, then reply destination
    /// (the client), then source port << 48 | destination port << 32 |
    /// protocol << 24 | VIP port.
    key: [AtomicU64; KEY_WORDS],
    /// The VIP, high word first.
    vip: [AtomicU64; 2],
}

/// Words of a slot's key; the VIP port shares the last one (below
/// `PORTS_KEY_MASK`).
const KEY_WORDS: usize = 5;
const PORTS_KEY_MASK: u64 = !0xff_ffff;

/// A slot's words, read consistently.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stable {
    seq: u32,
    expires_secs: u32,
    key: [u64; KEY_WORDS],
    vip: [u64; 2],
}

impl Stable {
    fn is_for(&self, words: &[u64; KEY_WORDS]) -> bool {
        self.key[..KEY_WORDS - 1] == words[..KEY_WORDS - 1]
            && self.key[KEY_WORDS - 1] & PORTS_KEY_MASK == words[KEY_WORDS - 1]
    }

    fn vip(&self) -> (IpAddr, u16) {
        let address = Ipv6Addr::from(u128::from(self.vip[0]) << 64 | u128::from(self.vip[1]));
        (address.to_canonical(), self.key[KEY_WORDS - 1] as u16)
    }
}

/// An address as two words, IPv4 mapped into IPv6.
fn address_words(address: IpAddr) -> [u64; 2] {
    let n = u128::from(match address {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    });
    [(n >> 64) as u64, n as u64]
}

fn key_words(key: &FlowKey) -> [u64; KEY_WORDS] {
    let [src_high, src_low] = address_words(key.src);
    let [dst_high, dst_low] = address_words(key.dst);
    [
        src_high,
        src_low,
        dst_high,
        dst_low,
        u64::from(key.src_port) << 48
            | u64::from(key.dst_port) << 32
            | u64::from(key.protocol) << 24,
    ]
}

impl Slot {
    /// The slot's words as one writer left them, or `None` while writers
    /// keep it changing.
    fn read(&self) -> Option<Stable> {
        self.seq
            .read(|| {
                (
                    self.expires_secs.load(Ordering::Relaxed),
                    std::array::from_fn(|i| self.key[i].load(Ordering::Relaxed)),
                    std::array::from_fn(|i| self.vip[i].load(Ordering::Relaxed)),
                )
            })
            .map(|(seq, (expires_secs, key, vip))| Stable {
                seq,
                expires_secs,
                key,
                vip,
            })
    }

    fn holds(stable: &Stable, words: &[u64; KEY_WORDS], now_secs: u32) -> bool {
        stable.expires_secs != 0 && now_secs <= stable.expires_secs && stable.is_for(words)
    }
}

pub struct ReplyTable {
    slots: Box<[Slot]>,
    bucket_mask: usize,
    /// Keys the bucket hash per process, so crafted 5-tuples cannot aim
    /// at one bucket.
    seed: u32,
}

impl ReplyTable {
    /// Room for at least `capacity` flows (rounded up to a power of two, at
    /// least one bucket), hashed with a random seed. Allocates once.
    pub fn new(capacity: usize) -> Self {
        Self::with_seed(capacity, RandomState::new().build_hasher().finish() as u32)
    }

    /// Like `new`, with a chosen seed (tests use a fixed one, so which keys
    /// share a bucket is the same on every run).
    pub fn with_seed(capacity: usize, seed: u32) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            slots: (0..buckets * WAYS).map(|_| Slot::default()).collect(),
            bucket_mask: buckets - 1,
            seed,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The bucket of the reply `key`: chosen by its client end alone (the
    /// reply's destination), which the client's own packets carry as their
    /// source, so a worker can fetch the bucket before it knows the backend
    /// ([`ReplyTable::prefetch_for`]). The whole key is still matched.
    fn bucket(&self, key: &FlowKey) -> &[Slot] {
        self.bucket_of_client(key.dst, key.dst_port, key.protocol)
    }

    #[inline(always)]
    fn bucket_of_client(&self, client: IpAddr, port: u16, protocol: u8) -> &[Slot] {
        let client = FlowKey {
            src: client,
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: port,
            dst_port: 0,
            protocol,
        };
        // The flow hash (murmur3), not SipHash: this runs on every new
        // flow, and the seed is what keeps buckets out of an attacker's aim.
        let start = (flow_hash(&client, self.seed) as usize & self.bucket_mask) * WAYS;
        &self.slots[start..start + WAYS]
    }

    /// Starts fetching the bucket the reply of the client flow `forward`
    /// (source = client) will use, to overlap the miss with deciding it.
    #[inline(always)]
    pub fn prefetch_for(&self, forward: &FlowKey) {
        let bucket = self.bucket_of_client(forward.src, forward.src_port, forward.protocol);
        for slot in bucket {
            crate::hint::prefetch(slot);
        }
    }

    /// The VIP (address, port) the reply `key` (source = backend endpoint,
    /// destination = client) answers for, if a live flow put it here.
    pub fn get(&self, key: &FlowKey, now_secs: u32) -> Option<(IpAddr, u16)> {
        let words = key_words(key);
        self.bucket(key).iter().find_map(|slot| {
            let stable = slot.read()?;
            Slot::holds(&stable, &words, now_secs).then(|| stable.vip())
        })
    }

    /// Remembers that the reply `key` answers for `vip` until `now_secs +
    /// ttl_secs`: the entry already there for `key`, else an empty or
    /// expired slot, else the one that expires first gives way, if it
    /// expires no later than the new one. False when none could (a full
    /// bucket of longer-lived entries) or other writers held every
    /// candidate (the reply then finds no entry on another worker until the
    /// flow's next refresh).
    pub fn put(&self, key: &FlowKey, vip: (IpAddr, u16), now_secs: u32, ttl_secs: u32) -> bool {
        let mut words = key_words(key);
        let vip_words = address_words(vip.0);
        let expires = now_secs.saturating_add(ttl_secs).max(1);
        let bucket = self.bucket(key);
        let mut seen: [Option<Stable>; WAYS] = [None; WAYS];
        for (view, slot) in seen.iter_mut().zip(bucket) {
            *view = slot.read();
        }
        let same = seen
            .iter()
            .position(|s| s.is_some_and(|s| s.is_for(&words) && s.expires_secs != 0));
        let free = || {
            seen.iter()
                .position(|s| s.is_some_and(|s| s.expires_secs == 0 || s.expires_secs < now_secs))
        };
        // A full bucket gives up the entry that expires first, and never
        // one that outlives the new entry: a flood of short-lived entries
        // (TCP flows before their handshake completes) displaces only its
        // own kind, never an established flow's.
        let oldest = || {
            (0..WAYS)
                .filter(|&i| seen[i].is_some_and(|s| s.expires_secs <= expires))
                .min_by_key(|&i| seen[i].map_or(u32::MAX, |s| s.expires_secs))
        };
        let Some(index) = same.or_else(free).or_else(oldest) else {
            return false;
        };
        let (slot, Some(view)) = (&bucket[index], seen[index]) else {
            return false;
        };
        if !slot.seq.claim(view.seq) {
            return false;
        }
        words[KEY_WORDS - 1] |= u64::from(vip.1);
        for (word, value) in slot.key.iter().zip(words) {
            word.store(value, Ordering::Relaxed);
        }
        for (word, value) in slot.vip.iter().zip(vip_words) {
            word.store(value, Ordering::Relaxed);
        }
        slot.expires_secs.store(expires, Ordering::Relaxed);
        slot.seq.release(view.seq);
        true
    }

    /// Extends `key`'s entry to `now_secs + ttl_secs` if it is still there;
    /// false when it is not (expired, or given to another flow).
    pub fn refresh(&self, key: &FlowKey, now_secs: u32, ttl_secs: u32) -> bool {
        let words = key_words(key);
        let expires = now_secs.saturating_add(ttl_secs).max(1);
        self.bucket(key).iter().any(|slot| {
            let Some(stable) = slot.read() else {
                return false;
            };
            if !Slot::holds(&stable, &words, now_secs) || !slot.seq.claim(stable.seq) {
                return false;
            }
            slot.expires_secs.store(expires, Ordering::Relaxed);
            slot.seq.release(stable.seq);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn table(capacity: usize) -> ReplyTable {
        ReplyTable::with_seed(capacity, 0)
    }

    const BACKEND: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 21));
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10));
    const VIP: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10)), 80);

    fn reply(client_port: u16) -> FlowKey {
        FlowKey {
            src: BACKEND,
            dst: CLIENT,
            src_port: 8080,
            dst_port: client_port,
            protocol: 6,
        }
    }

    #[test]
    fn a_reply_finds_its_vip_until_the_entry_expires() {
        let table = table(64);
        assert_eq!(table.get(&reply(40000), 0), None);
        assert!(table.put(&reply(40000), VIP, 100, 30));
        assert_eq!(table.get(&reply(40000), 130), Some(VIP));
        assert_eq!(table.get(&reply(40000), 131), None, "expired");
    }

    #[test]
    fn a_refresh_extends_a_live_entry_only() {
        let table = table(64);
        table.put(&reply(40000), VIP, 100, 30);
        assert!(table.refresh(&reply(40000), 120, 30));
        assert_eq!(table.get(&reply(40000), 150), Some(VIP));
        assert!(!table.refresh(&reply(40000), 181, 30), "expired at 150");
        assert!(!table.refresh(&reply(40001), 100, 30), "never put");
    }

    #[test]
    fn every_field_of_the_key_must_match() {
        let table = table(64);
        table.put(&reply(40000), VIP, 0, 30);
        let others = [
            FlowKey {
                src: Ipv4Addr::new(198, 18, 2, 22).into(),
                ..reply(40000)
            },
            FlowKey {
                dst: Ipv4Addr::new(198, 18, 1, 11).into(),
                ..reply(40000)
            },
            FlowKey {
                src_port: 8081,
                ..reply(40000)
            },
            reply(40001),
            FlowKey {
                protocol: 17,
                ..reply(40000)
            },
        ];
        for key in others {
            assert_eq!(table.get(&key, 0), None, "{key:?}");
        }
    }

    #[test]
    fn ipv6_replies_are_kept_apart_from_the_ipv4_flows_they_map_to() {
        let table = table(64);
        let v6 = |address: IpAddr| match address {
            IpAddr::V4(a) => {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1) | a.to_ipv6_compatible())
            }
            v6 => v6,
        };
        let reply6 = FlowKey {
            src: v6(BACKEND),
            dst: v6(CLIENT),
            ..reply(40000)
        };
        let vip6 = (v6(VIP.0), 443);
        assert!(table.put(&reply6, vip6, 0, 30));
        assert!(table.put(&reply(40000), VIP, 0, 30));
        assert_eq!(table.get(&reply6, 0), Some(vip6));
        assert_eq!(table.get(&reply(40000), 0), Some(VIP));
        let mapped = FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 21)).to_canonical(),
            dst: match CLIENT {
                IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
                v6 => v6,
            },
            ..reply(40000)
        };
        assert_eq!(table.get(&mapped, 0), None, "a family mix is no key");
    }

    #[test]
    fn a_full_bucket_gives_up_the_entry_that_expires_first() {
        let table = table(WAYS);
        for (i, port) in (40000..40000 + WAYS as u16).enumerate() {
            table.put(&reply(port), VIP, 0, 10 + i as u32);
        }
        table.put(&reply(50000), VIP, 0, 100);
        assert_eq!(table.get(&reply(40000), 0), None, "expired first, evicted");
        assert_eq!(table.get(&reply(50000), 0), Some(VIP));
        assert_eq!(table.get(&reply(40001), 0), Some(VIP));
    }

    #[test]
    fn a_full_bucket_keeps_entries_that_outlive_a_new_one() {
        let table = table(WAYS);
        for port in 40000..40000 + WAYS as u16 {
            table.put(&reply(port), VIP, 0, 300);
        }
        assert!(!table.put(&reply(50000), VIP, 0, 30), "no room for it");
        assert_eq!(table.get(&reply(50000), 0), None);
        assert!((40000..40000 + WAYS as u16).all(|p| table.get(&reply(p), 0) == Some(VIP)));
        assert!(table.put(&reply(50000), VIP, 0, 300), "one as long-lived");
    }

    #[test]
    fn concurrent_writers_and_readers_never_see_a_torn_entry() {
        // Each writer puts keys whose VIP port encodes the client port; a
        // reader that ever sees a mismatch read a half-written slot.
        let table = Arc::new(table(8));
        std::thread::scope(|scope| {
            for writer in 0..2u16 {
                let table = Arc::clone(&table);
                scope.spawn(move || {
                    for round in 0..20_000u16 {
                        let port = 1000 + (round % 16) * 2 + writer;
                        table.put(&reply(port), (VIP.0, port), 0, 1000);
                    }
                });
            }
            let table = Arc::clone(&table);
            scope.spawn(move || {
                for round in 0..40_000u16 {
                    let port = 1000 + round % 32;
                    if let Some((_, vip_port)) = table.get(&reply(port), 0) {
                        assert_eq!(vip_port, port, "torn read");
                    }
                }
            });
        });
    }

    proptest! {
        /// While no bucket overflows, the last VIP put for a key is what a
        /// lookup finds.
        #[test]
        fn last_put_wins(ops in prop::collection::vec((0u16..4, 1u16..100), 1..64)) {
            let table = table(1024);
            let mut model = std::collections::HashMap::new();
            for (client, vip_port) in ops {
                prop_assert!(table.put(&reply(40000 + client), (VIP.0, vip_port), 0, 100));
                model.insert(client, vip_port);
            }
            for (client, vip_port) in model {
                prop_assert_eq!(table.get(&reply(40000 + client), 50), Some((VIP.0, vip_port)));
            }
        }
    }
}
