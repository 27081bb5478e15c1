//! A listener's slot table: the lookup table a worker indexes with a new
//! flow's hash, filled off the hot path by Maglev (`crate::maglev`) so that
//! a backend coming or going moves few flows of the others. It owns the
//! table's invariant, a prime number of slots (Maglev's permutations need
//! one, and a prime is never 0, so `hash % len` cannot divide by zero), and
//! the one lookup the hot path makes. It never knows listeners or
//! snapshots: which backend a slot names is checked by `Listener`.

use std::ops::Deref;

use super::backend::{Backend, BackendGroup};
use crate::maglev::{self, MaglevEntry};

/// Entries in every listener's slot table unless a TrafficPolicy sets
/// another size. Prime, as the Maglev table that will fill it needs, and
/// far above any backend count a listener has, so each backend's share is
/// close to its weight.
pub const SLOT_TABLE_SIZE: usize = 65_537;

/// Owner of one slot of a listener's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Slot {
    /// Index into `Listener::backends` (flattened endpoints).
    Backend(u32),
    /// The share of a backendRef that has no usable endpoint.
    Unavailable,
}

/// Why a number of slots cannot make a slot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotTableError {
    #[error("a slot table needs at least one slot")]
    Empty,
    #[error("a slot table of {len} slots: Maglev needs a prime number of slots")]
    NotPrime { len: usize },
}

/// A number of slots a table may have: prime, hence at least 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SlotTableSize(usize);

impl SlotTableSize {
    /// `SLOT_TABLE_SIZE`, prime (a test says so).
    pub const DEFAULT: Self = Self(SLOT_TABLE_SIZE);

    pub fn new(len: usize) -> Result<Self, SlotTableError> {
        match len {
            0 => Err(SlotTableError::Empty),
            _ if !maglev::is_prime(len as u64) => Err(SlotTableError::NotPrime { len }),
            _ => Ok(Self(len)),
        }
    }

    pub fn get(self) -> usize {
        self.0
    }
}

/// A listener's hash-indexed slot owners; never empty, of prime length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct SlotTable(Box<[Slot]>);

impl SlotTable {
    /// A table as given, e.g. by a test or a benchmark that wants a known
    /// layout; `maglev` builds the ones resolution serves.
    pub fn new(slots: Vec<Slot>) -> Result<Self, SlotTableError> {
        SlotTableSize::new(slots.len())?;
        Ok(Self(slots.into_boxed_slice()))
    }

    /// Fills a table of `size` slots with Maglev. Owners are the backends
    /// with positive effective weight and, for each group with positive
    /// weight but no endpoint, an `Unavailable` share: hashing there
    /// refuses the flow instead of moving it to other groups. With no owner
    /// at all (no groups, or all weights 0) every slot is `Unavailable`, so
    /// the listener still refuses traffic rather than letting it pass.
    /// `seed` (`Options::maglev_seed`) must be the same on every LB node:
    /// the same config and seed build the same table everywhere, so a flow
    /// lands on the same backend whichever node receives it.
    pub fn maglev(
        groups: &[BackendGroup],
        backends: &[Backend],
        size: SlotTableSize,
        seed: u32,
    ) -> Self {
        // Keys are identities, not positions: a backend keeps its permutation
        // (and so most of its slots) when others are added or removed.
        let mut owners: Vec<Slot> = Vec::with_capacity(backends.len() + groups.len());
        let mut entries: Vec<MaglevEntry> = Vec::with_capacity(owners.capacity());
        for (i, b) in backends.iter().enumerate() {
            owners.push(Slot::Backend(i as u32));
            entries.push(MaglevEntry::new(b.endpoint.to_string(), b.effective_weight));
        }
        for (i, g) in groups.iter().enumerate() {
            if g.endpoints.is_empty() && g.weight > 0 {
                owners.push(Slot::Unavailable);
                entries.push(MaglevEntry::new(
                    format!("unavailable:{i}:{}", g.service),
                    f64::from(g.weight),
                ));
            }
        }
        // `maglev::build` returns exactly `size` owners, each an index into
        // `entries`, so the table keeps the size's invariant.
        Self(
            maglev::build(&entries, size.get(), seed)
                .into_iter()
                .map(|owner| {
                    owner
                        .and_then(|i| owners.get(i as usize).copied())
                        .unwrap_or(Slot::Unavailable)
                })
                .collect(),
        )
    }

    /// The slot a flow hashed to `hash` lands in, and its owner: the only
    /// lookup of the packet path. The length is never 0, so the remainder
    /// cannot fault, and it is below the length, so the index is in bounds.
    #[inline]
    pub fn slot_of(&self, hash: u32) -> (usize, Slot) {
        let index = hash as usize % self.0.len();
        (index, self.0[index])
    }

    pub fn size(&self) -> SlotTableSize {
        SlotTableSize(self.0.len())
    }

    pub fn as_slice(&self) -> &[Slot] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Slot> {
        self.0.into_vec()
    }
}

impl Deref for SlotTable {
    type Target = [Slot];

    fn deref(&self) -> &[Slot] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a SlotTable {
    type Item = &'a Slot;
    type IntoIter = std::slice::Iter<'a, Slot>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::backend::flatten;
    use crate::snapshot::Endpoint;

    fn build_slots(
        groups: &[BackendGroup],
        backends: &[Backend],
        size: usize,
        seed: u32,
    ) -> SlotTable {
        SlotTable::maglev(groups, backends, SlotTableSize::new(size).unwrap(), seed)
    }

    fn group(weight: u32, endpoints: &[&str]) -> BackendGroup {
        BackendGroup {
            terminating: false,
            service: "ns/s".into(),
            weight,
            endpoints: endpoints
                .iter()
                .map(|a| Endpoint {
                    address: a.parse().unwrap(),
                    port: 80,
                })
                .collect(),
        }
    }

    fn count(slots: &[Slot], owner: Slot) -> usize {
        slots.iter().filter(|&&s| s == owner).count()
    }

    #[test]
    fn default_size_is_prime() {
        assert_eq!(
            SlotTableSize::new(SLOT_TABLE_SIZE),
            Ok(SlotTableSize::DEFAULT)
        );
    }

    #[test]
    fn a_table_is_never_empty_and_has_a_prime_length() {
        assert_eq!(SlotTable::new(Vec::new()), Err(SlotTableError::Empty));
        assert_eq!(
            SlotTable::new(vec![Slot::Unavailable; 4]),
            Err(SlotTableError::NotPrime { len: 4 })
        );
        assert_eq!(
            SlotTable::new(vec![Slot::Unavailable; 1]),
            Err(SlotTableError::NotPrime { len: 1 })
        );
        let table = SlotTable::new(vec![Slot::Backend(0), Slot::Unavailable]).unwrap();
        assert_eq!(table.size().get(), 2);
        assert_eq!(table.slot_of(u32::MAX), (1, Slot::Unavailable));
        assert_eq!(table.slot_of(4), (0, Slot::Backend(0)));
    }

    #[test]
    fn no_groups_means_every_slot_refuses() {
        let slots = build_slots(&[], &[], SLOT_TABLE_SIZE, 0);
        assert_eq!(slots.len(), SLOT_TABLE_SIZE);
        assert!(slots.iter().all(|&s| s == Slot::Unavailable));
    }

    #[test]
    fn all_zero_weights_mean_every_slot_refuses() {
        let groups = [group(0, &["10.0.0.1"])];
        let backends = flatten(&groups);
        let slots = build_slots(&groups, &backends, SLOT_TABLE_SIZE, 0);
        assert!(slots.iter().all(|&s| s == Slot::Unavailable));
    }

    #[test]
    fn endpointless_group_owns_its_share_as_unavailable() {
        let groups = [group(3, &["10.0.0.1"]), group(1, &[])];
        let backends = flatten(&groups);
        let slots = build_slots(&groups, &backends, SLOT_TABLE_SIZE, 0);
        let expected = SLOT_TABLE_SIZE as f64 / 4.0;
        assert!((count(&slots, Slot::Unavailable) as f64 - expected).abs() <= 2.0);
        assert!((count(&slots, Slot::Backend(0)) as f64 - 3.0 * expected).abs() <= 2.0);
    }

    #[test]
    fn removing_a_backend_keeps_the_others_flows() {
        let before = [group(1, &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])];
        let after = [group(1, &["10.0.0.1", "10.0.0.2", "10.0.0.4"])];
        let (bb, ab) = (flatten(&before), flatten(&after));
        let (bs, as_) = (
            build_slots(&before, &bb, SLOT_TABLE_SIZE, 0),
            build_slots(&after, &ab, SLOT_TABLE_SIZE, 0),
        );
        let endpoint = |backends: &[Backend], s: Slot| match s {
            Slot::Backend(i) => Some(backends[i as usize].endpoint),
            Slot::Unavailable => None,
        };
        let removed = bb[2].endpoint;
        let moved = bs
            .iter()
            .zip(&as_)
            .filter(|(b, a)| {
                let b = endpoint(&bb, **b);
                b != Some(removed) && b != endpoint(&ab, **a)
            })
            .count();
        assert!(moved * 100 <= SLOT_TABLE_SIZE, "{moved} moved");
    }

    #[test]
    fn table_has_exactly_the_requested_size() {
        let groups = [group(1, &["10.0.0.1", "10.0.0.2"])];
        let backends = flatten(&groups);
        for size in [251, 4093, 1_048_573] {
            let slots = build_slots(&groups, &backends, size, 0);
            assert_eq!(slots.len(), size);
            assert!(slots.iter().all(|&s| s != Slot::Unavailable));
        }
        assert_eq!(build_slots(&[], &[], 251, 0).len(), 251);
    }
}
