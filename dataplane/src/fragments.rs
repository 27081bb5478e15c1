//! A worker's own table of fragmented datagrams: which rewrite and egress
//! the first fragment of a datagram got, so the fragments after it (no L4
//! header, so no ports to decide on) follow it. Owned by one worker, never
//! shared, never locked: the fragments of one datagram share the address
//! pair RSS hashes them on (and on a veth the sender's CPU), so they reach
//! one queue.
//!
//! A datagram is named by its source, destination, protocol and
//! identification (RFC 791 §3.2); for IPv6 by source, destination and
//! identification alone (RFC 8200 §4.5: the Fragment header's Next Header
//! names the first header of the fragmentable part, which need not be the
//! upper-layer protocol a first fragment is parsed down to).
//!
//! Layout: `capacity` slots (rounded up to a power of two of
//! [`WAYS`]-slot buckets), allocated in [`FragmentTable::new`] and never
//! again. A key hashes to one bucket, searched whole: O(1) per lookup.
//! An entry lives [`FRAGMENT_TTL`] from its first fragment; expired ones
//! are missed by lookups, reused by inserts and cleared by the worker's
//! periodic [`FragmentTable::expire`]. A bucket full of live entries gives
//! up the one that expires first (the oldest): a datagram still arriving
//! then loses its remaining fragments, counted as fragments without a
//! first, rather than a new datagram losing its own.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use crate::packet::{flow_hash, FlowKey, Fragment, Rewrite, L3};

/// Datagrams a worker built without another capacity can have in flight.
pub const DEFAULT_FRAGMENT_CAPACITY: usize = 4096;

/// How long a first fragment's decision waits for the rest. The entry only
/// has to span the gap between fragments a sender emits back to back
/// (microseconds to milliseconds, plus reordering in the path); 5 s covers
/// any such gap many times over while keeping a flood of first fragments
/// from holding slots for long. Reassembly timeouts are longer (Linux
/// `ipfrag_time` 30 s, RFC 8200 §4.5 60 s) because a host must also wait
/// for retransmissions of lost fragments; a lost fragment here is just
/// not forwarded, and the receiving host's reassembly times out as usual.
pub const FRAGMENT_TTL: Duration = Duration::from_secs(5);

/// Slots per bucket: a few cache lines, searched whole.
pub const WAYS: usize = 4;

/// Which datagram a fragment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv4 protocol; 0 for IPv6 (see the module docs).
    pub protocol: u8,
    pub id: u32,
}

impl FragmentKey {
    /// The datagram of the fragment `l3` describes.
    pub fn of(l3: &L3, fragment: &Fragment) -> Self {
        Self {
            src: l3.src,
            dst: l3.dst,
            protocol: if l3.src.is_ipv6() { 0 } else { l3.protocol },
            id: fragment.id,
        }
    }
}

/// What the later fragments of a datagram get: its first fragment's
/// rewrite (they use its MACs and addresses) and egress, and the flow's
/// listener and backend under the snapshot of `generation`, to count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentDecision {
    pub rewrite: Rewrite,
    /// As the flow's entry: for an encapsulated flow `rewrite` is the
    /// outer header's, and fragments go wrapped, unchanged.
    pub tunnel: crate::packet::Tunnel,
    pub egress_port: usize,
    pub egress_vlan: Option<crate::neighbor::VlanTag>,
    pub egress_mtu: u16,
    pub listener: u32,
    pub backend: u32,
    pub generation: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    key: FragmentKey,
    decision: FragmentDecision,
    expires_ns: u64,
}

/// What [`FragmentTable::remember`] did to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// Into a free or expired slot, or over the same datagram's entry.
    Stored,
    /// Over the live entry of another datagram, which expired first.
    Evicted,
}

pub struct FragmentTable {
    slots: Box<[Option<Slot>]>,
    bucket_mask: usize,
    seed: u32,
    ttl_ns: u64,
    evictions: u64,
}

impl FragmentTable {
    pub fn new(capacity: usize) -> Self {
        Self::with_ttl(capacity, FRAGMENT_TTL)
    }

    /// A table whose entries live `ttl`.
    pub fn with_ttl(capacity: usize, ttl: Duration) -> Self {
        let seed = RandomState::new().build_hasher().finish() as u32;
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            slots: vec![None; buckets * WAYS].into_boxed_slice(),
            bucket_mask: buckets - 1,
            seed,
            ttl_ns: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
            evictions: 0,
        }
    }

    /// Slots, `capacity` rounded up.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Live entries given up to make room for other datagrams since the
    /// table was built.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Slots held, expired ones the expiry pass has not cleared included;
    /// a pass over every slot, for tests and control requests only.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The decision of the datagram `key`, unless its entry expired.
    #[inline]
    pub fn get(&self, key: &FragmentKey, now_ns: u64) -> Option<&FragmentDecision> {
        self.bucket(key)
            .iter()
            .flatten()
            .find(|s| s.key == *key && s.expires_ns > now_ns)
            .map(|s| &s.decision)
    }

    /// Remembers the decision of a datagram's first fragment for
    /// [`FRAGMENT_TTL`] from `now_ns`; a second first fragment of the same
    /// datagram (a duplicate) replaces it.
    pub fn remember(
        &mut self,
        key: FragmentKey,
        decision: FragmentDecision,
        now_ns: u64,
    ) -> Remembered {
        let slot = Slot {
            key,
            decision,
            expires_ns: now_ns.saturating_add(self.ttl_ns),
        };
        let start = self.bucket_start(&key);
        let bucket = &mut self.slots[start..start + WAYS];
        let same_or_free = bucket
            .iter()
            .position(|s| s.is_some_and(|s| s.key == key))
            .or_else(|| {
                bucket
                    .iter()
                    .position(|s| s.is_none_or(|s| s.expires_ns <= now_ns))
            });
        if let Some(way) = same_or_free {
            bucket[way] = Some(slot);
            return Remembered::Stored;
        }
        // Every way holds a live entry (`same_or_free` found none free).
        let way = (0..WAYS)
            .min_by_key(|&way| bucket[way].map_or(0, |s| s.expires_ns))
            .unwrap_or(0);
        bucket[way] = Some(slot);
        self.evictions += 1;
        Remembered::Evicted
    }

    /// Clears every expired entry; called off the per-packet path, about
    /// once a second. A pass over all slots: a few thousand, in one array.
    pub fn expire(&mut self, now_ns: u64) {
        for slot in self.slots.iter_mut() {
            if slot.is_some_and(|s| s.expires_ns <= now_ns) {
                *slot = None;
            }
        }
    }

    fn bucket(&self, key: &FragmentKey) -> &[Option<Slot>] {
        let start = self.bucket_start(key);
        &self.slots[start..start + WAYS]
    }

    /// The identification stands in for the ports of a 5-tuple, so the
    /// flow hash (with this table's own random seed) spreads datagrams.
    #[inline]
    fn bucket_start(&self, key: &FragmentKey) -> usize {
        let as_flow = FlowKey {
            src: key.src,
            dst: key.dst,
            src_port: (key.id >> 16) as u16,
            dst_port: key.id as u16,
            protocol: key.protocol,
        };
        (flow_hash(&as_flow, self.seed) as usize & self.bucket_mask) * WAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    const SEC: u64 = 1_000_000_000;

    fn key(id: u32) -> FragmentKey {
        FragmentKey {
            src: Ipv4Addr::new(192, 0, 2, 10).into(),
            dst: Ipv4Addr::new(198, 51, 100, 1).into(),
            protocol: 17,
            id,
        }
    }

    fn decision(port: usize) -> FragmentDecision {
        FragmentDecision {
            rewrite: Rewrite {
                eth_src: [2, 0, 0, 0, 0, 1],
                eth_dst: [2, 0, 0, 0, 0, 2],
                ip_src: Ipv4Addr::new(192, 0, 2, 10).into(),
                ip_dst: Ipv4Addr::new(10, 1, 0, 5).into(),
                src_port: 53000,
                dst_port: 5353,
            },
            tunnel: Default::default(),
            egress_port: port,
            egress_vlan: None,
            egress_mtu: 0,
            listener: 0,
            backend: 0,
            generation: 1,
        }
    }

    #[test]
    fn a_remembered_datagram_is_found_until_it_expires() {
        let mut table = FragmentTable::new(16);
        assert_eq!(table.remember(key(7), decision(1), 0), Remembered::Stored);
        assert_eq!(table.get(&key(7), 0), Some(&decision(1)));
        assert_eq!(table.get(&key(7), 5 * SEC - 1), Some(&decision(1)));
        assert_eq!(table.get(&key(7), 5 * SEC), None, "lazily missed");
        assert_eq!(table.get(&key(8), 0), None, "another id");
        let other_protocol = FragmentKey {
            protocol: 6,
            ..key(7)
        };
        assert_eq!(table.get(&other_protocol, 0), None);
    }

    #[test]
    fn the_expiry_pass_clears_expired_entries_only() {
        let mut table = FragmentTable::new(16);
        let _ = table.remember(key(1), decision(1), 0);
        let _ = table.remember(key(2), decision(1), 3 * SEC);
        table.expire(5 * SEC);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&key(2), 5 * SEC), Some(&decision(1)));
    }

    #[test]
    fn an_expired_slot_is_reused_without_counting_an_eviction() {
        let mut table = FragmentTable::new(WAYS);
        for id in 0..WAYS as u32 {
            let _ = table.remember(key(id), decision(0), 0);
        }
        for id in 100..100 + WAYS as u32 {
            assert_eq!(
                table.remember(key(id), decision(1), 6 * SEC),
                Remembered::Stored
            );
        }
        assert_eq!(table.evictions(), 0);
    }

    #[test]
    fn a_full_bucket_gives_up_the_entry_that_expires_first() {
        // One bucket: every key shares it.
        let mut table = FragmentTable::new(WAYS);
        assert_eq!(table.capacity(), WAYS);
        for id in 0..WAYS as u32 {
            let _ = table.remember(key(id), decision(0), u64::from(id) * SEC);
        }
        assert_eq!(
            table.remember(key(99), decision(1), 4 * SEC),
            Remembered::Evicted
        );
        assert_eq!(table.get(&key(0), 4 * SEC), None, "the oldest went");
        for id in 1..WAYS as u32 {
            assert!(table.get(&key(id), 4 * SEC).is_some(), "{id}");
        }
        assert_eq!(table.get(&key(99), 4 * SEC), Some(&decision(1)));
        assert_eq!(table.evictions(), 1);
    }

    #[test]
    fn a_duplicate_first_fragment_replaces_its_datagrams_entry() {
        let mut table = FragmentTable::new(WAYS);
        let _ = table.remember(key(1), decision(0), 0);
        let _ = table.remember(key(1), decision(1), SEC);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&key(1), 5 * SEC), Some(&decision(1)));
    }

    #[test]
    fn capacity_is_rounded_up_to_whole_buckets() {
        assert_eq!(FragmentTable::new(0).capacity(), WAYS);
        assert_eq!(FragmentTable::new(4096).capacity(), 4096);
        assert_eq!(FragmentTable::new(4097).capacity(), 8192);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Remember(u32, usize),
        Get(u32),
        Expire,
        Tick(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..24, 0usize..3).prop_map(|(id, port)| Op::Remember(id, port)),
            (0u32..24).prop_map(Op::Get),
            Just(Op::Expire),
            (0u64..3 * SEC).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Against a map that forgets nothing but expiry: the table never
        /// answers with another datagram's decision, an older decision of
        /// the same one, or an expired one; and while it has evicted
        /// nothing it answers exactly as the map does.
        #[test]
        fn the_table_agrees_with_a_model(ops in prop::collection::vec(op(), 0..200)) {
            let mut table = FragmentTable::new(8);
            let mut model: HashMap<u32, (FragmentDecision, u64)> = HashMap::new();
            let ttl = FRAGMENT_TTL.as_nanos() as u64;
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Remember(id, port) => {
                        let _ = table.remember(key(id), decision(port), now);
                        model.insert(id, (decision(port), now + ttl));
                    }
                    Op::Get(id) => {
                        let expected = model
                            .get(&id)
                            .filter(|(_, expires)| *expires > now)
                            .map(|(d, _)| d);
                        let got = table.get(&key(id), now);
                        if table.evictions() == 0 {
                            prop_assert_eq!(got, expected);
                        } else if got.is_some() {
                            prop_assert_eq!(got, expected);
                        }
                    }
                    Op::Expire => table.expire(now),
                    Op::Tick(ns) => now += ns,
                }
            }
        }
    }
}
