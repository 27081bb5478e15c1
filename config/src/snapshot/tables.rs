//! The Maglev slot tables alive in this process, by what fills them: the
//! owners' keys and weights in order, the size and the seed, of which a
//! table is a pure function. `SlotTable::maglev` asks here first, so
//! listeners whose backends hash alike (one Service behind many VIPs,
//! every address of a Gateway) share one table, and a reload or a drain
//! that leaves a listener's backends as they were hands it the table the
//! running snapshot already holds instead of a second one. Entries are
//! weak: a table lives exactly as long as a snapshot (or a diff) holds it,
//! and this index never keeps one alive. It never builds a table itself
//! nor sees listeners.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use crate::maglev::MaglevEntry;

/// A slot table's slots, shared: each a backend index, `MAX` for a slot
/// that refuses flows (`SlotTable` reads them).
#[derive(Clone)]
pub(super) enum Repr {
    Narrow(Arc<[u16]>),
    Wide(Arc<[u32]>),
}

/// Everything a Maglev table is built from. Two equal keys build equal
/// tables, so one may stand for the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TableKey {
    size: usize,
    seed: u32,
    /// Per Maglev entry, in order: its key, its weight's bits, and the
    /// slot value it owns (a backend index, `u32::MAX` for unavailable).
    owners: Vec<(Vec<u8>, u64, u32)>,
}

impl TableKey {
    /// `owners[i]` is the slot value `entries[i]` fills its slots with.
    pub(super) fn new(entries: &[MaglevEntry], owners: &[u32], size: usize, seed: u32) -> Self {
        Self {
            size,
            seed,
            owners: entries
                .iter()
                .zip(owners)
                .map(|(entry, &owner)| (entry.key.clone(), entry.weight.to_bits(), owner))
                .collect(),
        }
    }
}

enum WeakTable {
    Narrow(Weak<[u16]>),
    Wide(Weak<[u32]>),
}

impl WeakTable {
    fn of(table: &Repr) -> Self {
        match table {
            Repr::Narrow(slots) => Self::Narrow(Arc::downgrade(slots)),
            Repr::Wide(slots) => Self::Wide(Arc::downgrade(slots)),
        }
    }

    fn upgrade(&self) -> Option<Repr> {
        match self {
            Self::Narrow(slots) => slots.upgrade().map(Repr::Narrow),
            Self::Wide(slots) => slots.upgrade().map(Repr::Wide),
        }
    }

    fn alive(&self) -> bool {
        match self {
            Self::Narrow(slots) => slots.strong_count() > 0,
            Self::Wide(slots) => slots.strong_count() > 0,
        }
    }
}

#[derive(Default)]
struct Index {
    tables: HashMap<TableKey, WeakTable>,
    /// Entries after the last sweep of dead ones: the next sweep comes
    /// when there are twice as many, so sweeping costs O(1) per insert.
    swept: usize,
}

static TABLES: LazyLock<Mutex<Index>> = LazyLock::new(Mutex::default);

fn index() -> std::sync::MutexGuard<'static, Index> {
    // Every update is one insert or one sweep of whole entries: a panic
    // elsewhere cannot leave the index half-written.
    TABLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The live table built from `key`, or the one `build` makes, kept for
/// the next caller with the same key. `build` runs without the lock: two
/// resolutions at once may both build, and the second keeps the first's.
pub(super) fn intern(key: TableKey, build: impl FnOnce() -> Repr) -> Repr {
    if let Some(table) = index().tables.get(&key).and_then(WeakTable::upgrade) {
        return table;
    }
    let built = build();
    let mut index = index();
    if let Some(table) = index.tables.get(&key).and_then(WeakTable::upgrade) {
        return table;
    }
    index.tables.insert(key, WeakTable::of(&built));
    if index.tables.len() >= (2 * index.swept).max(64) {
        index.tables.retain(|_, table| table.alive());
        index.swept = index.tables.len();
    }
    built
}
