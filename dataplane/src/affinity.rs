//! `ClientIP` session affinity across config changes: which backend each
//! client of an affinity listener was last given, shared by every worker
//! without locks.
//!
//! Without it, affinity is the Maglev table hashed by client address: a
//! client keeps its backend only while the table does not move its slot,
//! and a reload that adds a backend moves some clients at once. With it, a
//! client keeps its backend until its entry expires (`timeoutSeconds` after
//! the client's last new flow, as kube-proxy counts it) or the backend
//! leaves the listener, whichever comes first.
//!
//! Shared, not per worker: a client's flows arrive on whichever queue RSS
//! picks, and every queue must give the same answer. Each entry is one
//! atomic word (the backend's [`address_tag`], port and a 16-bit tag of the
//! key) plus an atomic last-use stamp, so a reader never needs a lock: a
//! word torn between two writers cannot happen, a key collision is caught
//! by the tag (and a caught or missed one costs only affinity, never
//! correctness: the caller looks the backend up among the listener's
//! current ones). Lookups and writes happen on a flow's first packet only,
//! never per packet.
//!
//! Buckets of four entries, chosen by a hash keyed per process, so crafted
//! client addresses cannot aim at one bucket. When a bucket is full the
//! entry used longest ago gives way.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const WAYS: usize = 4;

/// Who an entry is for: a client of one listener (by VIP, port and
/// protocol, which survive reloads, unlike listener indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub client: IpAddr,
    pub vip: IpAddr,
    pub vip_port: u16,
    pub protocol: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityEntry {
    /// [`address_tag`] of the backend's address.
    pub backend: u32,
    pub port: u16,
    /// Seconds (on the table's clock) of the client's last new flow.
    pub last_used_secs: u32,
}

/// What an entry keeps of a backend's address: an IPv4 address whole, an
/// IPv6 one as a 32-bit hash (an entry is one atomic word). Two IPv6
/// backends of one listener with the same port and hash would share
/// clients' affinity, costing stickiness, never a wrong listener.
pub fn address_tag(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => crate::packet::client_hash(address, 0),
    }
}

#[derive(Default)]
struct Slot {
    /// `address_tag(backend) << 32 | port << 16 | tag`; 0 is empty.
    word: AtomicU64,
    last_used_secs: AtomicU32,
}

pub struct AffinityTable<S = RandomState> {
    slots: Box<[Slot]>,
    bucket_mask: usize,
    hasher: S,
}

impl AffinityTable {
    /// Room for at least `capacity` clients (rounded up to a power of two,
    /// at least one bucket), hashed with a random key. Allocates once.
    pub fn new(capacity: usize) -> Self {
        Self::with_hasher(capacity, RandomState::new())
    }
}

impl<S: BuildHasher> AffinityTable<S> {
    /// Like `new`, with a chosen hasher (tests use a fixed one, so that
    /// which keys share a bucket or a tag is the same on every run).
    pub fn with_hasher(capacity: usize, hasher: S) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            slots: (0..buckets * WAYS).map(|_| Slot::default()).collect(),
            bucket_mask: buckets - 1,
            hasher,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn place(&self, key: &AffinityKey) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        let bucket = (hash as usize) & self.bucket_mask;
        // The tag comes from bits the bucket index does not use.
        let tag = (hash >> 48) & 0xffff;
        (bucket * WAYS, tag)
    }

    /// The client's backend, if it has an entry used within `timeout_secs`.
    pub fn get(
        &self,
        key: &AffinityKey,
        now_secs: u32,
        timeout_secs: u32,
    ) -> Option<AffinityEntry> {
        let (start, tag) = self.place(key);
        self.slots[start..start + WAYS].iter().find_map(|slot| {
            let word = slot.word.load(Ordering::Acquire);
            if word == 0 || word & 0xffff != tag {
                return None;
            }
            let last_used_secs = slot.last_used_secs.load(Ordering::Relaxed);
            if now_secs.wrapping_sub(last_used_secs) > timeout_secs {
                return None;
            }
            Some(AffinityEntry {
                backend: (word >> 32) as u32,
                port: (word >> 16) as u16,
                last_used_secs,
            })
        })
    }

    /// Gives the client `backend:port` as of `now_secs`: refreshes its
    /// entry, or takes the bucket's empty or least recently used one.
    pub fn put(&self, key: &AffinityKey, backend: IpAddr, port: u16, now_secs: u32) {
        let (start, tag) = self.place(key);
        let word = u64::from(address_tag(backend)) << 32 | u64::from(port) << 16 | tag;
        let bucket = &self.slots[start..start + WAYS];
        let slot = bucket
            .iter()
            .find(|s| {
                let w = s.word.load(Ordering::Relaxed);
                w != 0 && w & 0xffff == tag
            })
            .or_else(|| bucket.iter().find(|s| s.word.load(Ordering::Relaxed) == 0))
            .unwrap_or_else(|| {
                bucket
                    .iter()
                    .max_by_key(|s| now_secs.wrapping_sub(s.last_used_secs.load(Ordering::Relaxed)))
                    .unwrap_or(&bucket[0])
            });
        // Stamp first: a reader that sees the new word never sees it with a
        // stale stamp old enough to look expired.
        slot.last_used_secs.store(now_secs, Ordering::Relaxed);
        slot.word.store(word, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::{BuildHasherDefault, DefaultHasher};
    use std::net::{Ipv4Addr, Ipv6Addr};

    type Fixed = BuildHasherDefault<DefaultHasher>;

    fn table(capacity: usize) -> AffinityTable<Fixed> {
        AffinityTable::with_hasher(capacity, Fixed::default())
    }

    fn key(client: [u8; 4]) -> AffinityKey {
        AffinityKey {
            client: Ipv4Addr::from(client).into(),
            vip: Ipv4Addr::new(198, 18, 100, 10).into(),
            vip_port: 80,
            protocol: 6,
        }
    }

    const BE1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 21));
    const BE2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 22));

    #[test]
    fn an_entry_lasts_until_its_timeout_after_its_last_use() {
        let table = table(1024);
        let client = key([198, 18, 1, 10]);
        assert_eq!(table.get(&client, 0, 10), None);
        table.put(&client, BE1, 8080, 100);
        assert_eq!(
            table.get(&client, 110, 10).map(|e| e.backend),
            Some(address_tag(BE1))
        );
        assert_eq!(table.get(&client, 111, 10), None, "expired");
        table.put(&client, BE2, 8080, 105);
        let entry = table.get(&client, 115, 10).unwrap();
        assert_eq!(
            (entry.backend, entry.port, entry.last_used_secs),
            (address_tag(BE2), 8080, 105)
        );
    }

    #[test]
    fn ipv6_clients_and_backends_have_entries_too() {
        let table = table(1024);
        let client = AffinityKey {
            client: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10).into(),
            vip: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1).into(),
            vip_port: 80,
            protocol: 6,
        };
        let backends: [IpAddr; 2] = [
            Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 5).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 6).into(),
        ];
        assert_ne!(address_tag(backends[0]), address_tag(backends[1]));
        table.put(&client, backends[1], 8080, 100);
        let entry = table.get(&client, 100, 10).unwrap();
        assert_eq!(
            (entry.backend, entry.port),
            (address_tag(backends[1]), 8080)
        );
    }

    #[test]
    fn clients_and_listeners_are_kept_apart() {
        let table = table(1024);
        let a = key([198, 18, 1, 10]);
        let b = key([198, 18, 1, 11]);
        let other_port = AffinityKey { vip_port: 81, ..a };
        table.put(&a, BE1, 1, 0);
        table.put(&b, BE2, 2, 0);
        table.put(&other_port, BE2, 3, 0);
        assert_eq!(table.get(&a, 0, 10).map(|e| e.port), Some(1));
        assert_eq!(table.get(&b, 0, 10).map(|e| e.port), Some(2));
        assert_eq!(table.get(&other_port, 0, 10).map(|e| e.port), Some(3));
    }

    #[test]
    fn a_full_bucket_gives_up_its_least_recently_used_entry() {
        // One bucket: every key lands in it.
        let table = table(WAYS);
        assert_eq!(table.capacity(), WAYS);
        for i in 0..WAYS as u8 {
            table.put(&key([10, 0, 0, i]), BE1, u16::from(i), u32::from(i));
        }
        table.put(&key([10, 0, 0, 99]), BE2, 99, 10);
        assert_eq!(
            table.get(&key([10, 0, 0, 0]), 10, 100),
            None,
            "oldest evicted"
        );
        for i in 1..WAYS as u8 {
            assert!(table.get(&key([10, 0, 0, i]), 10, 100).is_some());
        }
        assert_eq!(
            table.get(&key([10, 0, 0, 99]), 10, 100).map(|e| e.port),
            Some(99)
        );
    }

    proptest! {
        /// What was last put for a key is what get returns, while fewer
        /// keys than one bucket's ways exist (no eviction possible).
        #[test]
        fn last_put_wins(ops in proptest::collection::vec((0u8..4, any::<u16>()), 1..50)) {
            let table = table(WAYS);
            let mut model = std::collections::HashMap::new();
            // The fixed hasher gives these four keys distinct tags.
        let tags: std::collections::HashSet<u64> =
            (0..4).map(|c| table.place(&key([10, 0, 0, c])).1).collect();
        prop_assert_eq!(tags.len(), 4);
        for (client, port) in ops {
                table.put(&key([10, 0, 0, client]), BE1, port, 0);
                model.insert(client, port);
            }
            for (client, port) in model {
                prop_assert_eq!(table.get(&key([10, 0, 0, client]), 0, 1).map(|e| e.port), Some(port));
            }
        }
    }
}
