//! The dataplane's side of the XDP fast path (DESIGN.md, "Two tiers"): after
//! a worker has decided a flow and seen it settle (its second packet, not a
//! TCP SYN, FIN or RST), it may install the decision in the XDP program's
//! flow cache, which then rewrites and sends that flow's packets itself.
//!
//! This module owns what the cache is allowed to hold and when it stops
//! applying: an entry is the worker's [`Rewrite`] encoded as data, plus its
//! (listener, backend) stats slot, its listener's epoch and the L2 epoch it
//! was decided under. A listener's epoch is the config generation in which
//! it last changed; the program applies an entry only while it carries the
//! epoch published for its slot and the running L2 epoch. So a reload or a
//! drain sends back to the workers, at their next packet, the cached flows
//! of the listeners it changed (their backends, weights, table), a removed
//! backend or listener retires its slots, and a changed MAC sends back all;
//! the workers carry each flow over (or reset, or re-hash it) as they would
//! without the cache, and install it again. Listeners a reload left alone
//! keep their cached flows. The cache decides nothing and every entry can
//! be forgotten at any time: the slow path gives the same answer.
//!
//! It also keeps the fast path's per-(listener, backend) counters: stats
//! slots in a per-CPU BPF array, assigned by identity (listener name, VIP,
//! protocol and backend endpoint), so a counter follows its backend across
//! reloads exactly as the workers' own counters do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use switchyard_config::snapshot::{Endpoint, Protocol, Snapshot};
use switchyard_xdp::consts::{MAX_STATS_SLOTS, STATS_SLOT_NONE};
use switchyard_xdp::{
    ActionSpec, ActionSpec6, EncapSpec, FastCounters, FastPathMaps, FlowAction, FlowAction6,
    FlowCacheKey, FlowCacheKey6, XdpError, TUNNEL_GUE, TUNNEL_IPIP,
};

use crate::flow::{cache_stamp, CacheActivity, Cached, FlowEntry, FlowTable};
use crate::neighbor::L2Table;
use crate::packet::{checksum_deltas, encap, FlowKey, Tunnel};

mod activity;

pub use self::activity::{ActivityReader, ActivityView};

/// A key of either of the program's flow caches (one per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnyCacheKey {
    V4(FlowCacheKey),
    V6(FlowCacheKey6),
}

impl AnyCacheKey {
    pub fn of(key: &FlowKey) -> Option<Self> {
        cache_key(key)
            .map(AnyCacheKey::V4)
            .or_else(|| cache_key6(key).map(AnyCacheKey::V6))
    }
}

/// The IPv6 cache key of packets with 5-tuple `key`; `None` for IPv4.
pub fn cache_key6(key: &FlowKey) -> Option<FlowCacheKey6> {
    match (key.src, key.dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => Some(FlowCacheKey6::new(
            src,
            dst,
            key.src_port,
            key.dst_port,
            key.protocol,
        )),
        _ => None,
    }
}

/// The IPv6 twin of [`action`]; `None` for an IPv4 rewrite.
pub fn action6(
    key: &FlowKey,
    entry: &FlowEntry,
    egress: Egress,
    l2_epoch: u64,
    stats_slot: u16,
    epoch: u64,
) -> Option<FlowAction6> {
    let rewrite = &entry.rewrite;
    let (IpAddr::V6(ip_src), IpAddr::V6(ip_dst)) = (rewrite.ip_src, rewrite.ip_dst) else {
        return None;
    };
    let spec = ActionSpec6 {
        generation: epoch,
        l2_epoch,
        eth_dst: rewrite.eth_dst,
        eth_src: rewrite.eth_src,
        ip_src,
        ip_dst,
        src_port: rewrite.src_port,
        dst_port: rewrite.dst_port,
        l4_csum_diff: checksum_deltas(key, rewrite).l4,
        egress_slot: egress.slot,
        egress_ifindex: egress.ifindex,
        stats_slot,
    };
    Some(match encap_spec(key, entry) {
        Some(encap) => FlowAction6::encapsulating(spec, encap),
        None => FlowAction6::from(spec),
    })
}

/// What the entry of an encapsulated flow adds: its tunnel, the outer
/// IPv4 header's constant sum, and the largest packet that still fits
/// once wrapped (an unknown MTU limits nothing).
fn encap_spec(key: &FlowKey, entry: &FlowEntry) -> Option<EncapSpec> {
    let tunnel = match entry.tunnel {
        Tunnel::None => return None,
        Tunnel::Ipip => TUNNEL_IPIP,
        Tunnel::Gue => TUNNEL_GUE,
    };
    let rewrite = &entry.rewrite;
    let inner_mtu = match encap::inner_mtu(entry.egress_mtu, entry.tunnel, key.is_ipv6()) {
        0 => u16::MAX,
        mtu => mtu,
    };
    Some(EncapSpec {
        tunnel,
        outer_csum_base: encap::outer_checksum_base(entry.tunnel, rewrite.ip_src, rewrite.ip_dst),
        inner_mtu,
    })
}

/// The IPv4 cache key of packets with 5-tuple `key`; `None` for IPv6
/// (see [`cache_key6`]).
pub fn cache_key(key: &FlowKey) -> Option<FlowCacheKey> {
    match (key.src, key.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Some(FlowCacheKey::new(
            src,
            dst,
            key.src_port,
            key.dst_port,
            key.protocol,
        )),
        _ => None,
    }
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
/// 5-tuple `key`: the same rewrite [`crate::packet::apply`] does, applying
/// while `fast_epochs[stats_slot]` is `epoch` and the L2 epoch `l2_epoch`.
pub fn action(
    key: &FlowKey,
    entry: &FlowEntry,
    egress: Egress,
    l2_epoch: u64,
    stats_slot: u16,
    epoch: u64,
) -> Option<FlowAction> {
    let rewrite = &entry.rewrite;
    let (IpAddr::V4(ip_src), IpAddr::V4(ip_dst)) = (rewrite.ip_src, rewrite.ip_dst) else {
        return None;
    };
    let deltas = checksum_deltas(key, rewrite);
    let spec = ActionSpec {
        generation: epoch,
        l2_epoch,
        eth_dst: rewrite.eth_dst,
        eth_src: rewrite.eth_src,
        ip_src,
        ip_dst,
        src_port: rewrite.src_port,
        dst_port: rewrite.dst_port,
        ip_csum_diff: deltas.ip,
        l4_csum_diff: deltas.l4,
        egress_slot: egress.slot,
        egress_ifindex: egress.ifindex,
        stats_slot,
    };
    Some(match encap_spec(key, entry) {
        Some(encap) => FlowAction::encapsulating(spec, encap),
        None => FlowAction::from(spec),
    })
}

/// Stats slots of one snapshot's (listener, backend) pairs, and each
/// listener's epoch.
#[derive(Debug, Default)]
pub struct StatsSlots {
    /// The snapshot they were assigned for.
    pub generation: u64,
    /// Start of each listener's backends in `slots`.
    offsets: Vec<u32>,
    slots: Vec<u16>,
    /// Per listener: the generation in which it last changed, as
    /// `epoch32` keeps it.
    epochs: Vec<u32>,
}

impl StatsSlots {
    /// The epoch of listener `listener`: entries of its flows carry it.
    #[inline]
    pub fn epoch(&self, listener: u32) -> u64 {
        u64::from(self.epochs.get(listener as usize).copied().unwrap_or(0))
    }

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

/// (listener name, VIP, protocol): a listener is the same across snapshots
/// if these are.
type ListenerIdentity = (String, Endpoint, Protocol);

/// What the allocator remembers of one listener of the last snapshot.
struct ListenerSlots {
    epoch: u64,
    /// Its backends' stats slots, by endpoint.
    backends: HashMap<Endpoint, u16>,
}

#[derive(Default)]
struct Allocator {
    listeners: HashMap<ListenerIdentity, ListenerSlots>,
    free: Vec<u16>,
    /// Next never-used slot; slot 0 is `STATS_SLOT_NONE`.
    next: u32,
    /// The snapshot the slots were last assigned for, to tell which
    /// listeners the next one changes.
    previous: Option<Arc<Snapshot>>,
    /// (slot, epoch) writes `published` makes for the last `prepare`.
    pending: Vec<(u32, u32)>,
    /// The epoch published for each slot, as the program reads it.
    epochs: Vec<u32>,
}

/// A generation's low 32 bits, as entries and `fast_epochs` hold it; never
/// 0, which retires a slot.
fn epoch32(generation: u64) -> u32 {
    (generation as u32).max(1)
}

/// The fast path's shared state: its maps, the published stats slots, what
/// the cache saw lately, and the clock conversion for the program's
/// timestamps.
pub struct FastPath {
    maps: FastPathMaps,
    slots: ArcSwap<StatsSlots>,
    allocator: Mutex<Allocator>,
    /// The latest read of the cache's last-seen times (`ActivityReader`).
    activity: ArcSwapOption<ActivityView>,
    /// The epoch published for each stats slot and the L2 epoch, as the
    /// program checks them: to tell which cache entries still apply.
    published_epochs: ArcSwap<Vec<u32>>,
    l2_epoch: AtomicU64,
    /// CLOCK_MONOTONIC at the workers' epoch, in ns.
    monotonic_at_epoch: u64,
    /// Interface slots the fast path must not send out of (bit s: slot s),
    /// as the program's `FAST_STATE_EGRESS_CLOSED` says; workers read it
    /// to install no entry there.
    egress_closed: AtomicU64,
    /// Set while taking over a running program: what would invalidate
    /// the previous daemon's cache entries waits until this daemon's
    /// workers are bound (see [`FastPath::hold`]).
    held: Mutex<Option<Held>>,
}

/// Publications deferred by [`FastPath::hold`].
#[derive(Default)]
struct Held {
    epochs: Vec<(u32, u32)>,
    generation: Option<u64>,
    l2_epoch: Option<u64>,
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
            activity: ArcSwapOption::empty(),
            published_epochs: ArcSwap::from_pointee(Vec::new()),
            l2_epoch: AtomicU64::new(0),
            monotonic_at_epoch: monotonic_ns().saturating_sub(since_epoch),
            egress_closed: AtomicU64::new(0),
            held: Mutex::new(None),
        }
    }

    /// Defers writing listener epochs, the generation and the L2 epoch to
    /// the program until [`FastPath::release`]. A daemon taking over a
    /// running program calls it first: those writes would stop the cached
    /// flows of the previous daemon from applying, sending them to workers
    /// that are not bound yet. Everything else (slots, listings) proceeds.
    pub fn hold(&self) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Held::default());
    }

    /// Writes what [`FastPath::hold`] deferred, in order, and stops
    /// deferring. From here cached flows whose epoch changed go to the
    /// workers once, which install them again.
    pub fn release(&self) -> Result<(), XdpError> {
        let Some(held) = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let (slots, epochs): (Vec<u32>, Vec<u32>) = held.epochs.into_iter().unzip();
        self.maps.publish_epochs(&slots, &epochs)?;
        if let Some(generation) = held.generation {
            self.maps.publish_generation(generation)?;
        }
        if let Some(epoch) = held.l2_epoch {
            self.maps.publish_l2_epoch(epoch)?;
        }
        Ok(())
    }

    /// Whether writes are deferred by [`FastPath::hold`]; if so, `defer`
    /// records this one.
    fn deferred(&self, defer: impl FnOnce(&mut Held)) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.as_mut() {
            Some(held) => {
                defer(held);
                true
            }
            None => false,
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

    /// Gives every (listener, backend) pair of `next` its stats slot and
    /// every listener its epoch, and publishes them. Call before `next` is
    /// swapped in, so a worker that sees `next` finds its slots. Linear in
    /// pairs: slots are found by identity, backends by endpoint.
    pub fn prepare(&self, next: &Arc<Snapshot>) {
        let mut allocator = self
            .allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let allocator = &mut *allocator;
        let previous = allocator.previous.take();
        let mut kept = HashMap::with_capacity(next.listeners().len());
        let mut offsets = Vec::with_capacity(next.listeners().len());
        let mut slots = Vec::new();
        let mut epochs = Vec::with_capacity(next.listeners().len());
        let mut pending = Vec::new();
        // Freed after the walk, so no slot is retired and reused at once.
        let mut freed = Vec::new();
        for listener in next.listeners() {
            let identity = (
                listener.name().to_string(),
                listener.vip(),
                listener.protocol(),
            );
            let old = allocator.listeners.remove(&identity);
            // Unchanged in every part (backends, weights, table, affinity):
            // its cached flows still replay what a worker would decide.
            let unchanged = old.is_some()
                && previous
                    .as_ref()
                    .and_then(|p| p.listener_for_vip(&listener.key()))
                    .is_some_and(|p| p.get() == listener);
            let (epoch, mut old_backends) = match old {
                Some(old) if unchanged => (old.epoch, old.backends),
                Some(old) => (next.generation(), old.backends),
                None => (next.generation(), HashMap::new()),
            };
            offsets.push(slots.len() as u32);
            epochs.push(epoch32(epoch));
            let mut backends = HashMap::with_capacity(listener.backends().len());
            for backend in listener.backends() {
                let (slot, fresh) = match old_backends.remove(&backend.endpoint) {
                    Some(slot) => (slot, false),
                    None => (allocator.take(&self.maps), true),
                };
                slots.push(slot);
                if slot != SLOT_NONE {
                    backends.insert(backend.endpoint, slot);
                    if fresh || !unchanged {
                        pending.push((u32::from(slot), epoch32(epoch)));
                    }
                }
            }
            // Backends that are gone free their slots.
            freed.extend(old_backends.into_values());
            kept.insert(identity, ListenerSlots { epoch, backends });
        }
        // So do listeners that are gone. Their counters go with them, as
        // the workers' do (zeroed when the slot is reused), and so do their
        // cache entries: no entry carries epoch 0.
        freed.extend(
            allocator
                .listeners
                .drain()
                .flat_map(|(_, l)| l.backends.into_values()),
        );
        pending.extend(freed.iter().map(|&slot| (u32::from(slot), 0)));
        allocator.free.extend(freed);
        allocator.listeners = kept;
        allocator.previous = Some(Arc::clone(next));
        allocator.pending = pending;
        self.slots.store(Arc::new(StatsSlots {
            generation: next.generation(),
            offsets,
            slots,
            epochs,
        }));
    }

    /// Makes the cache entries of listeners `next` changed, or removed,
    /// stop applying, and those of its new epochs apply. Call right after
    /// `next` is swapped in, once per `prepare`.
    pub fn published(&self, next: &Snapshot) {
        let mut allocator = self
            .allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pending = std::mem::take(&mut allocator.pending);
        let (slots, epochs): (Vec<u32>, Vec<u32>) = pending.iter().copied().unzip();
        let held = self.deferred(|held| {
            held.epochs.extend(pending.iter().copied());
            held.generation = Some(next.generation());
        });
        if held {
            // Recorded as published below: listings and slots move on.
        } else if let Err(err) = self.maps.publish_epochs(&slots, &epochs) {
            log::error!(
                "fast path: publishing listener epochs of generation {}: {err}",
                next.generation()
            );
        }
        for (slot, epoch) in pending {
            let slot = slot as usize;
            if slot >= allocator.epochs.len() {
                allocator.epochs.resize(slot + 1, 0);
            }
            allocator.epochs[slot] = epoch;
        }
        self.published_epochs
            .store(Arc::new(allocator.epochs.clone()));
        if held {
            return;
        }
        if let Err(err) = self.maps.publish_generation(next.generation()) {
            log::error!(
                "fast path: publishing generation {}: {err}",
                next.generation()
            );
        }
    }

    /// Makes entries with MACs of older L2 epochs stop applying.
    pub fn l2_published(&self, table: &L2Table) {
        if self.deferred(|held| held.l2_epoch = Some(table.epoch())) {
            // Deferred.
        } else if let Err(err) = self.maps.publish_l2_epoch(table.epoch()) {
            log::error!("fast path: publishing L2 epoch {}: {err}", table.epoch());
        }
        // Relaxed: read only to label cache entries in listings.
        self.l2_epoch.store(table.epoch(), Ordering::Relaxed);
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

    /// Reads the cache's last-seen times and publishes them for the
    /// workers' expiry passes; what [`ActivityReader`] does every second.
    /// A cache that cannot be read is logged and the last view kept (it
    /// goes stale, and workers then keep their cached flows).
    pub fn refresh_activity(&self) {
        match ActivityView::read(self) {
            Ok(view) => self.activity.store(Some(Arc::new(view))),
            Err(err) => log::warn!("fast path: reading cache activity: {err}"),
        }
    }

    /// The latest read of the cache's last-seen times, if any.
    pub fn activity(&self) -> Option<Arc<ActivityView>> {
        self.activity.load_full()
    }

    /// A copy of every cache entry, for merging into flow listings.
    pub fn view(&self) -> Result<CacheView, XdpError> {
        Ok(CacheView {
            entries: self.maps.entries()?.into_iter().collect(),
            entries6: self.maps.entries6()?.into_iter().collect(),
            epochs: self.published_epochs.load_full(),
            l2_epoch: self.l2_epoch.load(Ordering::Relaxed) as u32,
            monotonic_at_epoch: self.monotonic_at_epoch,
            read_at: monotonic_ns(),
        })
    }
}

/// The cache's entries at one moment, keyed by 5-tuple.
#[derive(Debug, Default)]
pub struct CacheView {
    entries: HashMap<FlowCacheKey, FlowAction>,
    entries6: HashMap<FlowCacheKey6, FlowAction6>,
    /// Published epoch per stats slot, and the L2 epoch.
    epochs: Arc<Vec<u32>>,
    l2_epoch: u32,
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
    /// Whether the program applies the entry: it carries its listener's
    /// published epoch and the running L2 epoch.
    pub applies: bool,
}

/// What a listing reads of a cache entry of either family: packets,
/// bytes, last seen (CLOCK_MONOTONIC, if ever), stats slot, epoch and L2
/// epoch.
trait Listed {
    fn listed(&self, read_at: u64) -> (u64, u64, Option<u64>, u16, u64, u64);
}

/// The two families' entries carry the same fields under the same names.
macro_rules! listed {
    ($($action:ty),*) => {$(
        impl Listed for $action {
            fn listed(&self, read_at: u64) -> (u64, u64, Option<u64>, u16, u64, u64) {
                let spec = self.spec();
                let seen = self.last_seen_ns(read_at);
                (self.packets(), self.bytes(), seen, spec.stats_slot, spec.generation, spec.l2_epoch)
            }
        }
    )*};
}

listed!(FlowAction, FlowAction6);

impl CacheView {
    pub fn len(&self) -> usize {
        self.entries.len() + self.entries6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.entries6.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<CachedFlow> {
        let (packets, bytes, last_seen, stats_slot, generation, l2_epoch) =
            match AnyCacheKey::of(key)? {
                AnyCacheKey::V4(key) => self.entries.get(&key)?.listed(self.read_at),
                AnyCacheKey::V6(key) => self.entries6.get(&key)?.listed(self.read_at),
            };
        let epoch = self.epochs.get(usize::from(stats_slot)).copied();
        Some(CachedFlow {
            packets,
            bytes,
            last_seen_ns: last_seen.map(|seen| seen.saturating_sub(self.monotonic_at_epoch)),
            applies: stats_slot != SLOT_NONE
                && epoch == Some(generation as u32)
                && l2_epoch as u32 == self.l2_epoch,
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
/// same way. Only the entries the kernel wrote are marked cached. Buffers
/// are allocated once.
pub struct CacheWriter {
    shared: Arc<FastPath>,
    /// Per worker port: its egress.
    ports: Vec<Egress>,
    keys: Vec<FlowCacheKey>,
    actions: Vec<FlowAction>,
    /// The flows of `keys`, in order, to mark those written.
    queued: Vec<FlowKey>,
    /// The same for IPv6 flows, written to the program's IPv6 cache.
    keys6: Vec<FlowCacheKey6>,
    actions6: Vec<FlowAction6>,
    queued6: Vec<FlowKey>,
    removals: Vec<FlowKey>,
    removal_keys: Vec<FlowCacheKey>,
    removal_keys6: Vec<FlowCacheKey6>,
    counters: CacheCounters,
    /// The cache's last-seen times during an expiry pass.
    view: Option<Arc<ActivityView>>,
    /// When the current expiry pass runs.
    expiry_now: u64,
    /// Questions the current expiry pass may still ask the view.
    lookup_budget: usize,
}

/// What one worker's cache writer did, for `yardctl stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Entries the kernel wrote.
    pub installed: u64,
    /// Entries queued that the kernel did not write (it stopped a batch
    /// update part way); their flows are offered again at their next
    /// packet.
    pub unwritten: u64,
    /// Flows queued again because one of their packets reached the worker
    /// while marked cached, past `IN_FLIGHT_NS`: the cache had lost their
    /// entry (its LRU evicted it).
    pub lost: u64,
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Installs queued per batch at most; beyond it a flow waits for its next
/// packet.
const INSTALL_QUEUE: usize = 256;
/// How long after a flow's entry was written one of its packets may still
/// reach the worker without meaning anything: it was already on its way
/// (in an rx ring, or in the batch that queued the entry). A packet later
/// than this means the cache no longer holds the entry. Generous, as a
/// needless re-install costs the entry its fast-path counters.
pub const IN_FLIGHT_NS: u64 = 100_000_000;

/// Whether a packet of `entry`'s flow that reached the worker at `now`
/// should have its decision (re)installed in the cache: when it has no
/// current entry there, or had one the cache has lost since. Queued flows
/// wait for the batch's write.
#[inline(always)]
pub fn wants_install(entry: &FlowEntry, now: u64) -> bool {
    match entry.cached {
        Cached::No | Cached::Stale => true,
        Cached::Queued => false,
        Cached::Current => entry.cached_for_ns(now) > IN_FLIGHT_NS,
    }
}
/// Questions to the activity view per expiry pass (about one a second),
/// each a hash lookup in memory: bounds the pass's time when many cached
/// flows look idle at once. The rest wait for the next pass.
const LOOKUPS_PER_EXPIRY: usize = 16384;

impl CacheWriter {
    /// `ports` in the worker's port order.
    pub fn new(shared: Arc<FastPath>, ports: Vec<Egress>) -> Self {
        Self {
            shared,
            ports,
            keys: Vec::with_capacity(INSTALL_QUEUE),
            actions: Vec::with_capacity(INSTALL_QUEUE),
            queued: Vec::with_capacity(INSTALL_QUEUE),
            keys6: Vec::with_capacity(INSTALL_QUEUE),
            actions6: Vec::with_capacity(INSTALL_QUEUE),
            queued6: Vec::with_capacity(INSTALL_QUEUE),
            removals: Vec::with_capacity(INSTALL_QUEUE),
            removal_keys: Vec::with_capacity(INSTALL_QUEUE),
            removal_keys6: Vec::with_capacity(INSTALL_QUEUE),
            counters: CacheCounters::default(),
            view: None,
            expiry_now: 0,
            lookup_budget: LOOKUPS_PER_EXPIRY,
        }
    }

    pub fn shared(&self) -> &Arc<FastPath> {
        &self.shared
    }

    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Queues `entry` for packets with 5-tuple `key`; false when it cannot
    /// be cached now (queue full, no slots for its generation yet, an
    /// unknown port, a port the fast path may not send out of) or ever (its
    /// pair has no stats slot: more pairs than slots), in which case the
    /// flow simply stays on the slow path until a later packet. The caller
    /// marks the flow `Cached::Queued`.
    #[inline]
    pub fn queue(
        &mut self,
        key: &FlowKey,
        entry: &FlowEntry,
        slots: &StatsSlots,
        l2: &L2Table,
    ) -> bool {
        if self.keys.len() + self.keys6.len() == INSTALL_QUEUE
            || slots.generation != entry.generation
        {
            return false;
        }
        let Some(&egress) = self.ports.get(entry.egress_port) else {
            return false;
        };
        if !self.shared.egress_open(egress.slot) {
            return false;
        }
        let slot = slots.slot(entry.listener, entry.backend);
        // Without a slot there is no epoch to check, so it would never apply.
        if slot == SLOT_NONE {
            return false;
        }
        let epoch = slots.epoch(entry.listener);
        if key.is_ipv6() {
            let (Some(cache_key), Some(action)) = (
                cache_key6(key),
                action6(key, entry, egress, l2.epoch(), slot, epoch),
            ) else {
                return false;
            };
            self.keys6.push(cache_key);
            self.actions6.push(action);
            self.queued6.push(*key);
        } else {
            let (Some(cache_key), Some(action)) = (
                cache_key(key),
                action(key, entry, egress, l2.epoch(), slot, epoch),
            ) else {
                return false;
            };
            self.keys.push(cache_key);
            self.actions.push(action);
            self.queued.push(*key);
        }
        if entry.cached == Cached::Current {
            self.counters.lost += 1;
        }
        true
    }

    /// Keys whose flows the worker forgot; taken by `flush`.
    pub fn removals(&mut self) -> &mut Vec<FlowKey> {
        &mut self.removals
    }

    /// Writes the queued entries, marks in `flows` the ones the kernel
    /// wrote (at `now`) as cached, and deletes the entries of forgotten
    /// flows.
    pub fn flush(&mut self, flows: &mut FlowTable, now: u64) {
        if !self.keys.is_empty() {
            let (written, error) = self.shared.maps.install(&self.keys, &self.actions);
            self.mark_written(flows, now, written, error, Family::V4);
            self.keys.clear();
            self.actions.clear();
        }
        if !self.keys6.is_empty() {
            let (written, error) = self.shared.maps.install6(&self.keys6, &self.actions6);
            self.mark_written(flows, now, written, error, Family::V6);
            self.keys6.clear();
            self.actions6.clear();
        }
        if !self.removals.is_empty() {
            self.removal_keys.clear();
            self.removal_keys6.clear();
            for key in &self.removals {
                match AnyCacheKey::of(key) {
                    Some(AnyCacheKey::V4(k)) => self.removal_keys.push(k),
                    Some(AnyCacheKey::V6(k)) => self.removal_keys6.push(k),
                    None => {}
                }
            }
            self.removals.clear();
            if !self.removal_keys.is_empty() {
                if let Err(err) = self.shared.maps.remove(&self.removal_keys) {
                    log::debug!("fast path: {err}");
                }
            }
            if !self.removal_keys6.is_empty() {
                if let Err(err) = self.shared.maps.remove6(&self.removal_keys6) {
                    log::debug!("fast path: {err}");
                }
            }
        }
    }

    /// Marks in `flows` the queued flows of one family the kernel wrote,
    /// and counts the rest.
    ///
    /// BPF_MAP_UPDATE_BATCH writes in order and stops at the first element
    /// it cannot write, reporting how many it wrote
    /// (kernel/bpf/syscall.c, generic_map_update_batch). A flow whose entry
    /// was not written stays on the slow path, which gives the same
    /// answer, and is offered again.
    fn mark_written(
        &mut self,
        flows: &mut FlowTable,
        now: u64,
        written: usize,
        error: Option<XdpError>,
        family: Family,
    ) {
        if let Some(err) = error {
            log::debug!("fast path: {err}");
        }
        let queued = match family {
            Family::V4 => &mut self.queued,
            Family::V6 => &mut self.queued6,
        };
        let written = written.min(queued.len());
        self.counters.installed += written as u64;
        self.counters.unwritten += (queued.len() - written) as u64;
        let at = cache_stamp(now);
        for (i, key) in queued.iter().enumerate() {
            let wrote = i < written;
            if !flows.cache_written(key, wrote.then_some(at)) && wrote {
                // Decided afresh or forgotten since it was queued: the
                // entry just written replays an outdated decision.
                self.removals.push(*key);
            }
        }
        queued.clear();
    }

    /// Starts an expiry pass at `now`: takes the latest activity view
    /// (an atomic load, no syscall) and resets the lookup budget.
    pub fn begin_expiry(&mut self, now: u64) {
        self.view = self.shared.activity();
        self.expiry_now = now;
        self.lookup_budget = LOOKUPS_PER_EXPIRY;
    }

    /// Ends an expiry pass, letting go of its view.
    pub fn end_expiry(&mut self) {
        self.view = None;
    }

    /// Whether the fast path has sent a packet of `entry`'s flow (5-tuple
    /// `key`) lately, and when (on the workers' clock), as the activity
    /// view says. `Unknown` without a view, or once this pass's budget is
    /// spent.
    pub fn activity(&mut self, key: &FlowKey, entry: &FlowEntry) -> CacheActivity {
        let Some(view) = &self.view else {
            return CacheActivity::Unknown;
        };
        if self.lookup_budget == 0 {
            return CacheActivity::Unknown;
        }
        let Some(cache_key) = AnyCacheKey::of(key) else {
            return CacheActivity::Unknown;
        };
        self.lookup_budget -= 1;
        view.activity(&cache_key, entry, self.expiry_now)
    }
}
