//! The sequence lock on each entry of the tables every worker shares
//! (`replies`, `snat`): a reader copies an entry's words and keeps the copy
//! only if no writer held the entry meanwhile; a writer claims the entry as
//! it last read it, so two writers never interleave and a writer never
//! waits. A reader that keeps colliding with writers gives up and calls it
//! a miss instead of spinning, so the packet path never blocks on another
//! worker. The orderings are those of crossbeam's `AtomicCell` seqlock.

use std::sync::atomic::{fence, AtomicU32, Ordering};

/// Reads an entry this many times while writers keep changing it.
const READ_ATTEMPTS: usize = 4;

/// An entry's sequence: even while the entry is stable, odd while a writer
/// holds it.
#[derive(Default)]
pub(crate) struct Sequence(AtomicU32);

impl Sequence {
    /// What `load` copied of the entry while it was stable, with the
    /// sequence it was stable at (for `claim`); `None` while writers keep
    /// changing it. `load` must read the entry's words with `Relaxed`
    /// loads only.
    #[inline(always)]
    pub(crate) fn read<T>(&self, load: impl Fn() -> T) -> Option<(u32, T)> {
        for _ in 0..READ_ATTEMPTS {
            // Acquire: the words read below are at least as new as the
            // write that published this sequence.
            let seq = self.0.load(Ordering::Acquire);
            if seq & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let words = load();
            // Acquire fence: the word loads above happen before the second
            // sequence load, so an unchanged sequence proves no write
            // overlapped them.
            fence(Ordering::Acquire);
            if self.0.load(Ordering::Relaxed) == seq {
                return Some((seq, words));
            }
        }
        None
    }

    /// Holds the entry for writing if it is still as `seen` (from `read`)
    /// left it; the caller then stores its words and calls `release`.
    #[inline(always)]
    pub(crate) fn claim(&self, seen: u32) -> bool {
        // Acquire on success: this writer's stores come after any reader's
        // view of the previous contents is complete.
        let claimed = self
            .0
            .compare_exchange(
                seen,
                seen.wrapping_add(1),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok();
        if claimed {
            // Release fence: a reader that sees any word stored after this
            // also sees the odd sequence, and retries.
            fence(Ordering::Release);
        }
        claimed
    }

    /// Ends a `claim`: the words stored since are published.
    #[inline(always)]
    pub(crate) fn release(&self, seen: u32) {
        // Release: the words stored before are visible with the new
        // sequence.
        self.0.store(seen.wrapping_add(2), Ordering::Release);
    }
}
