//! A listener's slot table: the lookup table a worker indexes with a new
//! flow's hash, filled off the hot path by Maglev (`crate::maglev`) so that
//! a backend coming or going moves few flows of the others. It owns the
//! table's invariant, a prime number of slots (Maglev's permutations need
//! one, and a prime is never 0, so `hash % len` cannot divide by zero), its
//! compact form (two bytes a slot while a listener has fewer than 65,535
//! backends, four beyond), and the one lookup the hot path makes. A table
//! is immutable and shared: cloning one, as every snapshot built from
//! another does, copies a pointer, and Maglev tables are interned by what
//! fills them (`tables`), so listeners whose backends hash alike share one.
//! It never knows listeners or snapshots: which backend a slot names is
//! checked by `Listener`.

use std::fmt;
use std::sync::Arc;

use super::backend::{Backend, BackendGroup};
use super::tables::{self, Repr, TableKey};
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
    /// `u32::MAX` is the compact form's mark of an unavailable slot.
    #[error(
        "slot {slot} names backend {backend}: a slot table indexes fewer than 4294967295 backends"
    )]
    BackendOutOfRange { slot: usize, backend: u32 },
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
/// Each slot holds its backend's index, `MAX` for `Slot::Unavailable`;
/// the narrow form serves every listener with fewer than 65,535 backends.
/// The forms are private so that no table is built without the checks of
/// `new` or the sizes of `maglev`.
#[derive(Clone)]
pub struct SlotTable(Repr);

impl SlotTable {
    /// A table as given, e.g. by a test or a benchmark that wants a known
    /// layout; `maglev` builds the ones resolution serves.
    pub fn new(slots: Vec<Slot>) -> Result<Self, SlotTableError> {
        SlotTableSize::new(slots.len())?;
        if let Some((slot, backend)) = slots.iter().enumerate().find_map(|(i, s)| match *s {
            Slot::Backend(b) if b == u32::MAX => Some((i, b)),
            _ => None,
        }) {
            return Err(SlotTableError::BackendOutOfRange { slot, backend });
        }
        Ok(Self::compact(slots.iter().copied()))
    }

    /// `slots` in the narrowest form that holds every index; no index is
    /// `u32::MAX` (the callers make sure).
    fn compact(slots: impl ExactSizeIterator<Item = Slot> + Clone) -> Self {
        let narrow = slots.clone().all(|s| match s {
            Slot::Backend(b) => b < u32::from(u16::MAX),
            Slot::Unavailable => true,
        });
        if narrow {
            Self(Repr::Narrow(
                slots
                    .map(|s| match s {
                        Slot::Backend(b) => b as u16,
                        Slot::Unavailable => u16::MAX,
                    })
                    .collect(),
            ))
        } else {
            Self(Repr::Wide(slots.map(raw).collect()))
        }
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
    ///
    /// The table is a function of these inputs alone, so one that is
    /// still alive for the same inputs (another listener's, the running
    /// snapshot's) is handed out instead of a copy; `SlotTable::ptr_eq`
    /// tells the two apart.
    pub fn maglev(
        groups: &[BackendGroup],
        backends: &[Backend],
        size: SlotTableSize,
        seed: u32,
    ) -> Self {
        Self::maglev_refusing(groups, backends, size, seed, &[])
    }

    /// `maglev`, where each group `i` with `refused[i]` also keeps an
    /// `Unavailable` share although it has endpoints: how a backendRef
    /// whose endpoints all fail their health checks refuses its share
    /// (`WhenAllUnhealthy::Refuse`) instead of giving it to the others.
    pub fn maglev_refusing(
        groups: &[BackendGroup],
        backends: &[Backend],
        size: SlotTableSize,
        seed: u32,
        refused: &[bool],
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
            let unavailable = g.endpoints.is_empty() || refused.get(i).copied().unwrap_or(false);
            if unavailable && g.weight > 0 {
                owners.push(Slot::Unavailable);
                entries.push(MaglevEntry::new(
                    format!("unavailable:{i}:{}", g.service),
                    f64::from(g.weight),
                ));
            }
        }
        let raw: Vec<u32> = owners.iter().map(|&owner| raw(owner)).collect();
        let key = TableKey::new(&entries, &raw, size.get(), seed);
        Self(tables::intern(key, || {
            // `maglev::build` returns exactly `size` owners, each an index
            // into `entries`, so the table keeps the size's invariant; a
            // listener has fewer than `u32::MAX` backends (each is at least
            // an endpoint in memory), so no index is the unavailable mark.
            let built = maglev::build(&entries, size.get(), seed);
            Self::compact(built.iter().map(|owner| {
                owner
                    .and_then(|i| owners.get(i as usize).copied())
                    .unwrap_or(Slot::Unavailable)
            }))
            .0
        }))
    }

    /// The slot a flow hashed to `hash` lands in, and its owner: the only
    /// lookup of the packet path. The length is never 0, so the remainder
    /// cannot fault, and it is below the length, so the index is in bounds.
    #[inline]
    pub fn slot_of(&self, hash: u32) -> (usize, Slot) {
        match &self.0 {
            Repr::Narrow(slots) => {
                let index = hash as usize % slots.len();
                (index, narrow(slots[index]))
            }
            Repr::Wide(slots) => {
                let index = hash as usize % slots.len();
                (index, wide(slots[index]))
            }
        }
    }

    pub fn size(&self) -> SlotTableSize {
        SlotTableSize(self.len())
    }

    /// Never 0.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Narrow(slots) => slots.len(),
            Repr::Wide(slots) => slots.len(),
        }
    }

    /// Never true; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The owner of slot `index`, if the table has one.
    pub fn get(&self, index: usize) -> Option<Slot> {
        match &self.0 {
            Repr::Narrow(slots) => slots.get(index).copied().map(narrow),
            Repr::Wide(slots) => slots.get(index).copied().map(wide),
        }
    }

    /// Every slot's owner, in slot order.
    pub fn iter(&self) -> SlotIter<'_> {
        SlotIter {
            table: self,
            next: 0,
        }
    }

    pub fn contains(&self, owner: Slot) -> bool {
        self.iter().any(|s| s == owner)
    }

    pub fn to_vec(&self) -> Vec<Slot> {
        self.iter().collect()
    }

    /// Whether `a` and `b` are one table in memory, not two equal ones.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        match (&a.0, &b.0) {
            (Repr::Narrow(a), Repr::Narrow(b)) => Arc::ptr_eq(a, b),
            (Repr::Wide(a), Repr::Wide(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Bytes of the slots themselves (the form's width times the size),
    /// counted once however many listeners share the table.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Narrow(slots) => std::mem::size_of_val(&**slots),
            Repr::Wide(slots) => std::mem::size_of_val(&**slots),
        }
    }
}

/// `slot` as the wide form stores it.
fn raw(slot: Slot) -> u32 {
    match slot {
        Slot::Backend(b) => b,
        Slot::Unavailable => u32::MAX,
    }
}

#[inline]
fn narrow(raw: u16) -> Slot {
    if raw == u16::MAX {
        Slot::Unavailable
    } else {
        Slot::Backend(u32::from(raw))
    }
}

#[inline]
fn wide(raw: u32) -> Slot {
    if raw == u32::MAX {
        Slot::Unavailable
    } else {
        Slot::Backend(raw)
    }
}

impl PartialEq for SlotTable {
    fn eq(&self, other: &Self) -> bool {
        Self::ptr_eq(self, other) || (self.len() == other.len() && self.iter().eq(other.iter()))
    }
}

impl Eq for SlotTable {}

impl fmt::Debug for SlotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl serde::Serialize for SlotTable {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The owners of a table's slots, in order (`SlotTable::iter`).
#[derive(Debug, Clone)]
pub struct SlotIter<'t> {
    table: &'t SlotTable,
    next: usize,
}

impl Iterator for SlotIter<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        let slot = self.table.get(self.next)?;
        self.next += 1;
        Some(slot)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.table.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for SlotIter<'_> {}

impl<'a> IntoIterator for &'a SlotTable {
    type Item = Slot;
    type IntoIter = SlotIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
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
            draining: Vec::new(),
            health_check: None,
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

    fn count(slots: &SlotTable, owner: Slot) -> usize {
        slots.iter().filter(|&s| s == owner).count()
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
    fn a_table_takes_two_bytes_a_slot_below_65535_backends_and_four_above() {
        let narrow = SlotTable::new(vec![
            Slot::Backend(65_534),
            Slot::Unavailable,
            Slot::Backend(0),
        ])
        .unwrap();
        assert_eq!(narrow.heap_bytes(), 3 * 2);
        assert_eq!(
            narrow.to_vec(),
            [Slot::Backend(65_534), Slot::Unavailable, Slot::Backend(0)]
        );
        let wide = SlotTable::new(vec![
            Slot::Backend(65_535),
            Slot::Unavailable,
            Slot::Backend(7),
        ])
        .unwrap();
        assert_eq!(wide.heap_bytes(), 3 * 4);
        assert_eq!(wide.slot_of(1), (1, Slot::Unavailable));
        assert_eq!(wide.slot_of(3), (0, Slot::Backend(65_535)));
        assert_eq!(
            SlotTable::new(vec![Slot::Backend(u32::MAX), Slot::Unavailable]),
            Err(SlotTableError::BackendOutOfRange {
                slot: 0,
                backend: u32::MAX
            })
        );
    }

    #[test]
    fn equal_inputs_share_one_table_and_others_do_not() {
        // A seed no other test uses, so the first build here is a build.
        let seed = 0x5eed_0001;
        let groups = [group(1, &["10.9.0.1", "10.9.0.2"])];
        let backends = flatten(&groups);
        let a = build_slots(&groups, &backends, 251, seed);
        let b = build_slots(&groups, &backends, 251, seed);
        assert!(SlotTable::ptr_eq(&a, &b));
        let other_size = build_slots(&groups, &backends, 257, seed);
        let other_seed = build_slots(&groups, &backends, 251, seed + 1);
        let fewer = [group(1, &["10.9.0.1"])];
        let other_backends = build_slots(&fewer, &flatten(&fewer), 251, seed);
        for other in [&other_size, &other_seed, &other_backends] {
            assert!(!SlotTable::ptr_eq(&a, other));
        }
        // A clone is the same table, not a copy.
        assert!(SlotTable::ptr_eq(&a, &a.clone()));
    }

    #[test]
    fn a_table_nobody_holds_is_built_again_equal() {
        let seed = 0x5eed_0002;
        let groups = [group(3, &["10.9.1.1", "10.9.1.2", "10.9.1.3"])];
        let backends = flatten(&groups);
        let first = build_slots(&groups, &backends, 1009, seed).to_vec();
        let again = build_slots(&groups, &backends, 1009, seed);
        assert_eq!(again.to_vec(), first);
    }

    #[test]
    fn no_groups_means_every_slot_refuses() {
        let slots = build_slots(&[], &[], SLOT_TABLE_SIZE, 0);
        assert_eq!(slots.len(), SLOT_TABLE_SIZE);
        assert!(slots.iter().all(|s| s == Slot::Unavailable));
    }

    #[test]
    fn all_zero_weights_mean_every_slot_refuses() {
        let groups = [group(0, &["10.0.0.1"])];
        let backends = flatten(&groups);
        let slots = build_slots(&groups, &backends, SLOT_TABLE_SIZE, 0);
        assert!(slots.iter().all(|s| s == Slot::Unavailable));
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
                let b = endpoint(&bb, *b);
                b != Some(removed) && b != endpoint(&ab, *a)
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
            assert!(slots.iter().all(|s| s != Slot::Unavailable));
        }
        assert_eq!(build_slots(&[], &[], 251, 0).len(), 251);
    }
}
