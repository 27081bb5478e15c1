//! The dataplane's side of the XDP fast path (DESIGN.md, "Two tiers"): after
//! a worker has decided a flow and seen it settle (its second packet, not a
//! TCP SYN, FIN or RST), it may install the decision in the XDP program's
//! flow cache, which then rewrites and sends that flow's packets itself.
//!
//! This module owns what the cache is allowed to hold and when it stops
//! applying: an entry is the worker's [`Rewrite`] encoded as data, plus the
//! config generation and L2 epoch it was decided under. The program applies
//! an entry only while both match the ones published here, so a reload, a
//! drain, a removed backend or a changed MAC sends the flow back to the
//! workers at its next packet; they carry it over (or reset, or re-hash) as
//! they would without the cache, and install it again. The cache decides
//! nothing and every entry can be forgotten at any time: the slow path
//! gives the same answer.
//!
//! It also keeps the fast path's per-(listener, backend) counters: stats
//! slots in a per-CPU BPF array, assigned by identity (listener name, VIP,
//! protocol and backend endpoint), so a counter follows its backend across
//! reloads exactly as the workers' own counters do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};
use switchyard_config::snapshot::{Endpoint, Protocol, Snapshot};
use switchyard_xdp::consts::{MAX_STATS_SLOTS, STATS_SLOT_NONE};
use switchyard_xdp::{ActionSpec, FastCounters, FastPathMaps, FlowAction, FlowCacheKey, XdpError};

use crate::flow::{CacheActivity, FlowEntry};
use crate::neighbor::L2Table;
use crate::packet::{checksum_deltas, FlowKey};

/// The cache key of packets with 5-tuple `key`.
pub fn cache_key(key: &FlowKey) -> FlowCacheKey {
    FlowCacheKey::new(key.src, key.dst, key.src_port, key.dst_port, key.protocol)
}

/// Where a cached flow leaves: the interface slot (the program's `tx_ports`
/// index) and its ifindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub slot: u16,
    /// The port's ifindex, or 0 to redirect even frames that leave by the
    /// port they came in on instead of sending them with XDP_TX.
    pub ifindex: u32,
}

/// How the fast path sends a frame back out of the port it came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum HairpinTx {
    /// XDP_TX, except on veth: a veth delivers XDP_TX frames to its peer
    /// only when the peer runs an XDP program, so redirect there (which
    /// the peer receives with GRO on too).
    Auto,
    /// Always XDP_TX (the fastest where the driver delivers it).
    XdpTx,
    /// Always a devmap redirect.
    Redirect,
}

impl HairpinTx {
    /// The egress of port `slot`/`ifindex` whose driver is `driver`.
    pub fn egress(self, slot: u16, ifindex: u32, driver: Option<&str>) -> Egress {
        let xdp_tx = match self {
            HairpinTx::Auto => driver != Some("veth"),
            HairpinTx::XdpTx => true,
            HairpinTx::Redirect => false,
        };
        Egress {
            slot,
            ifindex: if xdp_tx { ifindex } else { 0 },
        }
    }
}

/// The cache entry that replays `entry`'s decision for packets with
/// 5-tuple `key`: the same rewrite [`crate::packet::apply`] does.
pub fn action(
    key: &FlowKey,
    entry: &FlowEntry,
    egress: Egress,
    l2_epoch: u64,
    stats_slot: u16,
) -> FlowAction {
    let rewrite = &entry.rewrite;
    let deltas = checksum_deltas(key, rewrite);
    FlowAction::from(ActionSpec {
        generation: entry.generation,
        l2_epoch,
        eth_dst: rewrite.eth_dst,
        eth_src: rewrite.eth_src,
        ip_src: rewrite.ip_src,
        ip_dst: rewrite.ip_dst,
        src_port: rewrite.src_port,
        dst_port: rewrite.dst_port,
        ip_csum_diff: deltas.ip,
        l4_csum_diff: deltas.l4,
        egress_slot: egress.slot,
        egress_ifindex: egress.ifindex,
        stats_slot,
    })
}

/// Stats slots of one snapshot's (listener, backend) pairs.
#[derive(Debug, Default)]
pub struct StatsSlots {
    /// The snapshot they were assigned for.
    pub generation: u64,
    /// Start of each listener's backends in `slots`.
    offsets: Vec<u32>,
    slots: Vec<u16>,
}

impl StatsSlots {
    /// The slot of backend `backend` of listener `listener`, or
    /// `STATS_SLOT_NONE` when it has none (more pairs than slots).
    #[inline]
    pub fn slot(&self, listener: u32, backend: u32) -> u16 {
        self.offsets
            .get(listener as usize)
            .and_then(|&start| self.slots.get(start as usize + backend as usize))
            .copied()
            .unwrap_or(SLOT_NONE)
    }
}

/// `STATS_SLOT_NONE`, as a cache entry stores slots.
const SLOT_NONE: u16 = STATS_SLOT_NONE as u16;

/// (listener name, VIP, protocol, backend endpoint).
type Identity = (String, Endpoint, Protocol, Endpoint);

#[derive(Default)]
struct Allocator {
    owners: HashMap<Identity, u16>,
    free: Vec<u16>,
    /// Next never-used slot; slot 0 is `STATS_SLOT_NONE`.
    next: u32,
}

/// The fast path's shared state: its maps, the published stats slots, and
/// the clock conversion for the program's timestamps.
pub struct FastPath {
    maps: FastPathMaps,
    slots: ArcSwap<StatsSlots>,
    allocator: Mutex<Allocator>,
    /// CLOCK_MONOTONIC at the workers' epoch, in ns.
    monotonic_at_epoch: u64,
    /// Interface slots the fast path must not send out of (bit s: slot s),
    /// as the program's `FAST_STATE_EGRESS_CLOSED` says; workers read it
    /// to install no entry there.
    egress_closed: AtomicU64,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("maps", &self.maps)
            .finish_non_exhaustive()
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns` and
/// `bpf_ktime_get_coarse_ns`.
pub fn monotonic_ns() -> u64 {
    // Instant is CLOCK_MONOTONIC on Linux, the clock bpf_ktime_get_coarse_ns
    // reads; nix gives the raw value.
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

impl FastPath {
    /// `epoch` is the clock the workers stamp flows with.
    pub fn new(maps: FastPathMaps, epoch: Instant) -> Self {
        let since_epoch = epoch.elapsed().as_nanos() as u64;
        Self {
            maps,
            slots: ArcSwap::from_pointee(StatsSlots::default()),
            allocator: Mutex::new(Allocator {
                next: STATS_SLOT_NONE + 1,
                ..Allocator::default()
            }),
            monotonic_at_epoch: monotonic_ns().saturating_sub(since_epoch),
            egress_closed: AtomicU64::new(0),
        }
    }

    /// Closes the interface slots set in `mask` to the fast path (and opens
    /// the others): the kernel would drop frames the program sent out of
    /// them, as on a veth whose peer runs no NAPI. The program stops at
    /// once, also for flows already cached; workers stop installing flows
    /// that leave there, which then stay with them.
    pub fn set_egress_closed(&self, mask: u64) -> Result<(), XdpError> {
        // The program first: it is what keeps frames from being lost.
        self.maps.set_egress_closed(mask)?;
        // Relaxed: a worker that installs one more entry meanwhile is
        // harmless, the program already refuses to apply it.
        self.egress_closed.store(mask, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the fast path may send frames out of interface slot `slot`.
    #[inline]
    pub fn egress_open(&self, slot: u16) -> bool {
        // Relaxed: see `set_egress_closed`.
        let closed = self.egress_closed.load(Ordering::Relaxed);
        slot < 64 && closed & (1 << slot) == 0
    }

    pub fn maps(&self) -> &FastPathMaps {
        &self.maps
    }

    /// The stats slots of the latest snapshot; load once per batch.
    pub fn slots(&self) -> Guard<Arc<StatsSlots>> {
        self.slots.load()
    }

    /// A program timestamp on the workers' clock.
    pub fn to_worker_clock(&self, monotonic_ns: u64) -> u64 {
        monotonic_ns.saturating_sub(self.monotonic_at_epoch)
    }

    /// Gives every (listener, backend) pair of `next` its stats slot, and
    /// publishes them. Call before `next` is swapped in, so a worker that
    /// sees `next` finds its slots.
    pub fn prepare(&self, next: &Snapshot) {
        let mut allocator = self
            .allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut owners = HashMap::with_capacity(allocator.owners.len());
        let mut offsets = Vec::with_capacity(next.listeners().len());
        let mut slots = Vec::new();
        for listener in next.listeners() {
            offsets.push(slots.len() as u32);
            for backend in listener.backends() {
                let identity = (
                    listener.name().to_string(),
                    listener.vip(),
                    listener.protocol(),
                    backend.endpoint,
                );
                let slot = match allocator.owners.remove(&identity) {
                    Some(slot) => slot,
                    None => allocator.take(&self.maps),
                };
                slots.push(slot);
                if slot != SLOT_NONE {
                    owners.insert(identity, slot);
                }
            }
        }
        // Pairs that are gone free their slots; their counters go with them,
        // as the workers' do (zeroed when the slot is reused).
        let gone: Vec<u16> = allocator.owners.values().copied().collect();
        allocator.free.extend(gone);
        allocator.owners = owners;
        self.slots.store(Arc::new(StatsSlots {
            generation: next.generation(),
            offsets,
            slots,
        }));
    }

    /// Makes entries of older generations stop applying. Call right after
    /// `next` is swapped in.
    pub fn published(&self, next: &Snapshot) {
        if let Err(err) = self.maps.publish_generation(next.generation()) {
            log::error!(
                "fast path: publishing generation {}: {err}",
                next.generation()
            );
        }
    }

    /// Makes entries with MACs of older L2 epochs stop applying.
    pub fn l2_published(&self, table: &L2Table) {
        if let Err(err) = self.maps.publish_l2_epoch(table.epoch()) {
            log::error!("fast path: publishing L2 epoch {}: {err}", table.epoch());
        }
    }

    /// Fast-path packets and bytes of each backend of each listener of
    /// `snapshot`, indexed like `snapshot.listeners[l].backends[b]`. Slots
    /// of another generation's assignment count as zero.
    pub fn backend_counters(&self, snapshot: &Snapshot) -> Vec<Vec<FastCounters>> {
        let slots = self.slots.load();
        snapshot
            .listeners()
            .iter()
            .enumerate()
            .map(|(l, listener)| {
                (0..listener.backends().len())
                    .map(|b| {
                        let slot = slots.slot(l as u32, b as u32);
                        if slots.generation != snapshot.generation() || slot == SLOT_NONE {
                            return FastCounters::default();
                        }
                        self.maps.stats(slot).unwrap_or_default()
                    })
                    .collect()
            })
            .collect()
    }

    /// A copy of every cache entry, for merging into flow listings.
    pub fn view(&self) -> Result<CacheView, XdpError> {
        Ok(CacheView {
            entries: self.maps.entries()?.into_iter().collect(),
            monotonic_at_epoch: self.monotonic_at_epoch,
            read_at: monotonic_ns(),
        })
    }
}

/// The cache's entries at one moment, keyed by 5-tuple.
#[derive(Debug, Default)]
pub struct CacheView {
    entries: HashMap<FlowCacheKey, FlowAction>,
    monotonic_at_epoch: u64,
    /// CLOCK_MONOTONIC when the entries were read.
    read_at: u64,
}

/// What the cache knows of one direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedFlow {
    pub packets: u64,
    pub bytes: u64,
    /// Last fast-path packet on the workers' clock; `None` before the first.
    pub last_seen_ns: Option<u64>,
    /// The low 32 bits of the config generation the entry was decided
    /// under.
    pub generation: u32,
}

impl CacheView {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<CachedFlow> {
        let action = self.entries.get(&cache_key(key))?;
        Some(CachedFlow {
            packets: action.packets(),
            bytes: action.bytes(),
            last_seen_ns: action
                .last_seen_ns(self.read_at)
                .map(|seen| seen.saturating_sub(self.monotonic_at_epoch)),
            generation: action.spec().generation as u32,
        })
    }
}

impl Allocator {
    fn take(&mut self, maps: &FastPathMaps) -> u16 {
        if let Some(slot) = self.free.pop() {
            if let Err(err) = maps.clear_stats(slot) {
                log::warn!("fast path: clearing stats slot {slot}: {err}");
            }
            return slot;
        }
        match u16::try_from(self.next) {
            Ok(slot) if self.next < MAX_STATS_SLOTS => {
                self.next += 1;
                slot
            }
            _ => SLOT_NONE,
        }
    }
}

/// Decisions a worker queues for the cache while it runs a batch, written
/// with one syscall after the batch; keys of flows it forgot, deleted the
/// same way. Buffers are allocated once.
pub struct CacheWriter {
    shared: Arc<FastPath>,
    /// Per worker port: its egress.
    ports: Vec<Egress>,
    keys: Vec<FlowCacheKey>,
    actions: Vec<FlowAction>,
    removals: Vec<FlowKey>,
    removal_keys: Vec<FlowCacheKey>,
    /// Lookups the current expiry pass may still make.
    lookup_budget: usize,
}

/// Installs queued per batch at most; beyond it a flow waits for its next
/// packet.
const INSTALL_QUEUE: usize = 256;
/// Cache lookups per expiry pass (about one a second): the cost of telling
/// an idle flow from one only the fast path sees.
const LOOKUPS_PER_EXPIRY: usize = 4096;

impl CacheWriter {
    /// `ports` in the worker's port order.
    pub fn new(shared: Arc<FastPath>, ports: Vec<Egress>) -> Self {
        Self {
            shared,
            ports,
            keys: Vec::with_capacity(INSTALL_QUEUE),
            actions: Vec::with_capacity(INSTALL_QUEUE),
            removals: Vec::with_capacity(INSTALL_QUEUE),
            removal_keys: Vec::with_capacity(INSTALL_QUEUE),
            lookup_budget: LOOKUPS_PER_EXPIRY,
        }
    }

    pub fn shared(&self) -> &Arc<FastPath> {
        &self.shared
    }

    /// Queues `entry` for packets with 5-tuple `key`; false when it cannot
    /// be cached now (queue full, no slots for its generation yet, an
    /// unknown port, a port the fast path may not send out of), in which
    /// case the flow simply stays on the slow path until a later packet.
    #[inline]
    pub fn queue(
        &mut self,
        key: &FlowKey,
        entry: &FlowEntry,
        slots: &StatsSlots,
        l2: &L2Table,
    ) -> bool {
        if self.keys.len() == INSTALL_QUEUE || slots.generation != entry.generation {
            return false;
        }
        let Some(&egress) = self.ports.get(entry.egress_port) else {
            return false;
        };
        if !self.shared.egress_open(egress.slot) {
            return false;
        }
        let slot = slots.slot(entry.listener, entry.backend);
        self.keys.push(cache_key(key));
        self.actions
            .push(action(key, entry, egress, l2.epoch(), slot));
        true
    }

    /// Keys whose flows the worker forgot; taken by `flush`.
    pub fn removals(&mut self) -> &mut Vec<FlowKey> {
        &mut self.removals
    }

    /// Writes the queued entries and deletes the forgotten ones.
    pub fn flush(&mut self) {
        if !self.keys.is_empty() {
            // A flow whose entry was not written stays on the slow path,
            // which gives the same answer.
            let (_, error) = self.shared.maps.install(&self.keys, &self.actions);
            if let Some(err) = error {
                log::debug!("fast path: {err}");
            }
            self.keys.clear();
            self.actions.clear();
        }
        if !self.removals.is_empty() {
            self.removal_keys.clear();
            self.removal_keys
                .extend(self.removals.iter().map(cache_key));
            self.removals.clear();
            if let Err(err) = self.shared.maps.remove(&self.removal_keys) {
                log::debug!("fast path: {err}");
            }
        }
    }

    /// Starts an expiry pass: resets the lookup budget.
    pub fn begin_expiry(&mut self) {
        self.lookup_budget = LOOKUPS_PER_EXPIRY;
    }

    /// Whether the fast path has sent a packet of `key` lately, and when
    /// (on the workers' clock). `Unknown` once this pass's lookup budget
    /// is spent.
    pub fn activity(&mut self, key: &FlowKey) -> CacheActivity {
        if self.lookup_budget == 0 {
            return CacheActivity::Unknown;
        }
        self.lookup_budget -= 1;
        match self.shared.maps.lookup(&cache_key(key)) {
            Ok(Some(action)) => match action.last_seen_ns(monotonic_ns()) {
                Some(seen) => CacheActivity::SeenAt(self.shared.to_worker_clock(seen)),
                None => CacheActivity::Idle,
            },
            _ => CacheActivity::Idle,
        }
    }
}
