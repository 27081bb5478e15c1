//! The worker records every batch's latency on the packet path, so
//! recording must never allocate, in range or not. This binary counts the
//! allocations of the thread under test with its own global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use switchyard_dataplane::latency::{LatencyRecorder, MAX_TRACKED_NS, MAX_TRACKED_PACKETS};

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call unchanged to the system allocator; the
// thread-local counter is const-initialised and never allocates itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn recording_batches_and_control_time_never_allocates() {
    let mut recorder = LatencyRecorder::new();
    let before = allocations();
    for i in 0..100_000u64 {
        // Beyond both ranges now and then: clamped, not grown.
        recorder.record_batch(
            i * 104_729 % (2 * MAX_TRACKED_NS),
            i % (2 * MAX_TRACKED_PACKETS),
        );
        recorder.record_control(i * 7_919);
    }
    assert_eq!(allocations() - before, 0, "recording allocated");
    assert_eq!(recorder.batch_ns.distribution().count, 100_000);
}
