//! What the fast path has seen lately, for the workers' expiry passes. A
//! flow the cache carries looks idle to its worker, so before a worker
//! forgets one it must know when the program last sent one of its packets.
//! Asking the kernel key by key would put a syscall per flow on the worker
//! thread; instead one thread ([`ActivityReader`]) reads the whole cache
//! with batched lookups about once a second and publishes each entry's
//! last-seen time as an [`ActivityView`], which the workers read without a
//! lock or a syscall. This module must never be called per packet: a
//! worker loads the view once per expiry pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, RecvTimeoutError, Sender};
use switchyard_xdp::XdpError;

use super::{monotonic_ns, AnyCacheKey, FastPath, IN_FLIGHT_NS};
use crate::flow::{CacheActivity, FlowEntry};

/// Every entry of the flow cache at one pass, with when the program last
/// sent a packet of it.
#[derive(Debug, Default)]
pub struct ActivityView {
    /// When the pass started, on the workers' clock: an entry written
    /// before this is in the view if the cache still held it.
    read_from: u64,
    /// Last fast-path packet on the workers' clock; 0: none since the
    /// entry was written.
    seen: HashMap<AnyCacheKey, u64>,
}

/// A view older than this is not trusted to say a flow is idle: the reader
/// has stopped, and a flow the fast path still carries could be forgotten.
const STALE_AFTER_NS: u64 = 5_000_000_000;

impl ActivityView {
    /// Reads every entry of `fast`'s cache, in batches.
    pub fn read(fast: &FastPath) -> Result<Self, XdpError> {
        let read_from = fast.to_worker_clock(monotonic_ns());
        let mut seen = HashMap::new();
        // Stamps read before now are not in the future.
        let at = |last_seen: Option<u64>| last_seen.map_or(0, |ns| fast.to_worker_clock(ns).max(1));
        fast.maps().read_entries(|keys, actions| {
            let now = monotonic_ns();
            seen.extend(
                keys.iter()
                    .zip(actions)
                    .map(|(key, action)| (AnyCacheKey::V4(*key), at(action.last_seen_ns(now)))),
            );
        })?;
        fast.maps().read_entries6(|keys, actions| {
            let now = monotonic_ns();
            seen.extend(
                keys.iter()
                    .zip(actions)
                    .map(|(key, action)| (AnyCacheKey::V6(*key), at(action.last_seen_ns(now)))),
            );
        })?;
        Ok(Self { read_from, seen })
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// What this view says of `entry`'s flow (`key` its cache key) at `now`,
    /// all on the workers' clock.
    #[inline]
    pub fn activity(&self, key: &AnyCacheKey, entry: &FlowEntry, now: u64) -> CacheActivity {
        if now.saturating_sub(self.read_from) > STALE_AFTER_NS {
            return CacheActivity::Unknown;
        }
        match self.seen.get(key) {
            Some(&0) => CacheActivity::Idle,
            Some(&seen) => CacheActivity::SeenAt(seen),
            // Gone: the cache held it when the pass began, or it would be
            // here (the entry was written at the worker's last packet).
            None if self.read_from > entry.last_seen_ns.saturating_add(IN_FLIGHT_NS) => {
                CacheActivity::Idle
            }
            // Written too close to the pass: ask the next one.
            None => CacheActivity::Unknown,
        }
    }
}

/// The thread that reads the cache and publishes what it saw; stopped and
/// joined when dropped.
pub struct ActivityReader {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ActivityReader {
    /// Reads `fast`'s cache every `every`, from a thread of its own.
    pub fn start(fast: Arc<FastPath>, every: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("fast-path-activity".into())
            .spawn(move || loop {
                fast.refresh_activity();
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ActivityReader {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("fast path activity reader panicked");
            }
        }
    }
}
