//! The workers' view of next hops: an immutable [`L2Table`] (IPv4 and IPv6
//! routes, neighbours and link MACs of the interfaces Switchyard forwards on),
//! published whole by the daemon's resolver through an atomic pointer, and
//! a bounded queue through which workers ask for the next hops they miss.
//! Workers load one table per batch and never lock, allocate or enter the
//! kernel here; filling the table from rtnetlink is the daemon's job
//! (`switchyard_daemon::neighbor`), and this module must never do I/O.

mod table;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use crossbeam::queue::ArrayQueue;

pub use netlink_packet_route::neighbour::NeighbourState;

pub use self::table::{
    L2Table, LinkEntry, NeighbourEntry, NextHop, PackedVlan, RouteAction, RouteEntry, Unresolved,
    VlanLink, VlanTag,
};

/// Capacity of the worker request queue; requests beyond it are dropped.
pub const REQUEST_QUEUE: usize = 1024;

/// State the workers touch: read-mostly, never locked.
struct Shared {
    table: ArcSwap<L2Table>,
    requests: ArrayQueue<IpAddr>,
    dropped: AtomicU64,
}

impl Shared {
    fn new(table: L2Table) -> Arc<Self> {
        Arc::new(Self {
            table: ArcSwap::from_pointee(table),
            requests: ArrayQueue::new(REQUEST_QUEUE),
            dropped: AtomicU64::new(0),
        })
    }
}

/// The workers' handle: cheap to clone, lock-free, syscall-free.
#[derive(Clone)]
pub struct Neighbors {
    shared: Arc<Shared>,
}

impl Neighbors {
    /// A handle on a table that never changes and a resolver that never
    /// answers: for tests and benchmarks of the packet path.
    pub fn fixed(table: L2Table) -> Self {
        Self {
            shared: Shared::new(table),
        }
    }

    /// Requests waiting for the resolver (what a fixed handle accumulates).
    pub fn pending_requests(&self) -> usize {
        self.shared.requests.len()
    }

    /// The current table. Load once per batch: the guard is lock-free and
    /// keeps that snapshot alive while held.
    pub fn table(&self) -> Guard<Arc<L2Table>> {
        self.shared.table.load()
    }

    /// Asks for `addr` (a next hop from [`Unresolved::NoNeighbour`], or a
    /// destination) to be resolved. Never blocks: a full queue drops the
    /// request and counts it, and the next miss asks again.
    pub fn request(&self, addr: impl Into<IpAddr>) {
        if self.shared.requests.push(addr.into()).is_err() {
            // Relaxed: a statistic, ordered with nothing.
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests dropped because the queue was full.
    pub fn requests_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// The resolver's end of the workers' handles: it publishes tables and
/// takes the workers' requests. One per [`Neighbors`] family.
pub struct NeighborFeed {
    shared: Arc<Shared>,
}

impl NeighborFeed {
    /// A feed publishing `table` first, and the workers' handle on it.
    pub fn new(table: L2Table) -> (Self, Neighbors) {
        let shared = Shared::new(table);
        let neighbors = Neighbors {
            shared: Arc::clone(&shared),
        };
        (Self { shared }, neighbors)
    }

    /// The table the workers see now.
    pub fn current(&self) -> Arc<L2Table> {
        self.shared.table.load_full()
    }

    /// Makes `table` the one the workers load from their next batch on.
    pub fn publish(&self, table: Arc<L2Table>) {
        self.shared.table.store(table);
    }

    /// The oldest request a worker queued, if any.
    pub fn next_request(&self) -> Option<IpAddr> {
        self.shared.requests.pop()
    }
}
