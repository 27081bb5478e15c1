//! A worker's own flow table: 5-tuple to the decision made for the flow's
//! first packet. Owned by one worker, never shared, never locked.
//!
//! Layout (everything allocated in [`FlowTable::new`], nothing after):
//!
//! - `slots`: one [`Slot`] per tracked flow (key, entry and the two `u32`
//!   links of an intrusive doubly-linked LRU list). Reserved for `capacity`
//!   slots and filled by `push` up to that, so it never reallocates; freed
//!   slots go on a free list threaded through `next`.
//! - `cells`: an open-addressing index (linear probing, backward-shift
//!   deletion, no tombstones) of `2 * capacity.next_power_of_two()` `u32`
//!   cells, so the load factor stays at or under one half. A cell holds a
//!   slot number in its low bits and the high bits of the key's hash as a
//!   tag, so a probe only touches a slot when the tag matches.
//!
//! The hash is [`flow_hash`] with a per-table random seed: tables are
//! per-worker and never compared, so nothing needs to agree on it, and a
//! random seed keeps crafted 5-tuples from building probe chains.
//!
//! Timeouts depend on the flow's state, so the table keeps one LRU list per
//! timeout class ([`Class`]), each with its own sentinel. Within a list
//! every entry has the same timeout, so when the list is in `last_seen_ns`
//! order (the worker stamps `last_seen_ns = now` on every touch, and every
//! touch moves the entry to the front) the list's tail is its oldest entry
//! and [`FlowTable::expire`] can stop at the first unexpired tail: it costs
//! O(expired + classes), not O(flows).
//!
//! Insert into a full table evicts the least recently used flow: the tail,
//! among the class lists' tails, with the oldest `last_seen_ns` (ties go to
//! the shortest-lived class). With the worker stamping `last_seen_ns` on
//! every touch that is exactly the globally least recently used entry.
//!
//! A table built [`FlowTable::with_embryonic`] splits its slots into two
//! spaces, each with its own class lists and its own bound: embryonic flows
//! (a TCP flow whose handshake has not completed as far as its entry can
//! tell, a UDP flow that has seen only its first packet) and settled ones.
//! An insert evicts only within the new flow's space, so a flood of new
//! flows (a SYN flood, spoofed sources) churns the embryonic space and
//! never evicts a settled flow; a flow that completes its handshake is
//! promoted to the settled space, where it competes only with settled
//! flows. The same split is what SYN-cookie-less load balancers do with a
//! separate SYN table (IPVS keeps `SYN_RECV` connections on a short timer
//! and drops them first under `drop_entry`; Katran's LRU has no split and
//! leans on per-CPU maps sized for the worst case).
//!
//! A flow's class can change through the `&mut FlowEntry` that
//! [`FlowTable::get_mut`] hands out (the worker bumps `packets` or sets
//! `closing` after the lookup), so the table remembers that slot and files
//! it under its new class at the start of the next `&mut self` call, before
//! anything else looks at the lists. Nothing can observe the lists in
//! between: the borrow has to end first.
//!
//! Approximations, documented rather than paid for per packet: a `get_mut`
//! hit whose caller does not refresh `last_seen_ns` (the control socket's
//! lookup, or a hit on a stale generation that is then re-inserted) still
//! moves the entry to the front, so that list is briefly out of time order
//! and `expire` may reap that entry later than its timeout. `get_mut`
//! never returns an expired entry regardless, and eviction still reclaims
//! it under pressure.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::neighbor::PackedVlan;
use crate::packet::{flow_hash, FlowKey, ProxyStream, Rewrite, Tunnel};

/// Which way a tracked 5-tuple travels through the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to VIP, rewritten to the backend.
    ToBackend,
    /// Backend to client, rewritten to come from the VIP.
    ToClient,
}

#[derive(Debug, Clone, Copy)]
pub struct FlowEntry {
    pub rewrite: Rewrite,
    pub egress_port: usize,
    /// The tag the egress link wants (a VLAN link of the port's
    /// interface), whatever tag the flow's packets arrive with.
    pub egress_vlan: PackedVlan,
    /// The egress link's MTU (the VLAN link's for a VLAN), at most 65535;
    /// 0 when unknown. A larger packet is dropped as `frame_too_big`.
    pub egress_mtu: u16,
    pub direction: Direction,
    /// Encapsulated toward the backend (`ipip`, `gue`): `rewrite` then
    /// holds the outer header's MACs, addresses and ports, and the inner
    /// packet goes as the client sent it.
    pub tunnel: Tunnel,
    pub listener: u32,
    pub backend: u32,
    /// Snapshot generation the decision was taken under. Under a later
    /// snapshot the flow's next packet carries it over when its listener
    /// still has its backend (`worker::carry_over`), else decides it afresh.
    pub generation: u64,
    /// Identity of the L2 table the MACs came from; a newer table refreshes
    /// them without changing the backend.
    pub l2_version: u64,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// TCP: every segment of this direction so far carried SYN, FIN or
    /// RST: the handshake has not completed as far as this entry can tell.
    /// A SYN flood's flows (and the backends' SYN-ACKs answering them) stay
    /// so, in the embryonic space of the table; the first segment without
    /// those flags (the client's ACK, the backend's first data or ACK)
    /// promotes the flow. Unused for UDP.
    pub syn_only: bool,
    /// TCP FIN or RST seen: the flow only lingers for stray segments,
    /// until a SYN reuses its 5-tuple for a new connection, which the
    /// worker decides afresh (a new entry, in a new timeout class).
    pub closing: bool,
    /// What the XDP flow cache holds for this 5-tuple.
    pub cached: Cached,
    /// When the kernel last wrote the cache entry, as [`cache_stamp`] of
    /// the table's clock: a packet that reaches the worker soon after was
    /// already on its way.
    pub cached_at: u32,
    /// A `fullnat` TCP flow whose backend reads a PROXY protocol header
    /// ahead of the client's bytes: where that header sits in the client's
    /// stream (`packet::proxy`). Such a flow is never cached: its sequence
    /// numbers change on every segment.
    pub proxy: Option<ProxyStream>,
}

/// Units of [`FlowEntry::cached_at`]: 2^20 ns, about a millisecond, so 32
/// bits last 52 days (ages are taken with wrapping arithmetic).
const CACHE_STAMP_SHIFT: u32 = 20;

/// `now_ns` as [`FlowEntry::cached_at`] keeps it.
#[inline]
pub fn cache_stamp(now_ns: u64) -> u32 {
    (now_ns >> CACHE_STAMP_SHIFT) as u32
}

impl FlowEntry {
    /// The backend endpoint of a client's flow (`ToBackend`) whose packets
    /// have 5-tuple `key`: where the rewrite sends them, or for an
    /// encapsulated flow the outer destination, at the VIP's port (which
    /// the mode requires the backend's to be).
    pub fn backend_of(&self, key: &FlowKey) -> (std::net::IpAddr, u16) {
        match self.tunnel {
            Tunnel::None => (self.rewrite.ip_dst, self.rewrite.dst_port),
            _ => (self.rewrite.ip_dst, key.dst_port),
        }
    }

    /// The outer header of an encapsulated flow, for people: `ipip SRC ->
    /// DST`, or `gue SRC:PORT -> DST:PORT`.
    pub fn outer_header(&self) -> Option<String> {
        let r = &self.rewrite;
        let at = |address: std::net::IpAddr, port| std::net::SocketAddr::new(address, port);
        match self.tunnel {
            Tunnel::None => None,
            Tunnel::Ipip => Some(format!("ipip {} -> {}", r.ip_src, r.ip_dst)),
            Tunnel::Gue => Some(format!(
                "gue {} -> {}",
                at(r.ip_src, r.src_port),
                at(r.ip_dst, r.dst_port)
            )),
        }
    }

    /// Time since the cache entry was last written, at `now_ns`.
    #[inline]
    pub fn cached_for_ns(&self, now_ns: u64) -> u64 {
        u64::from(cache_stamp(now_ns).wrapping_sub(self.cached_at)) << CACHE_STAMP_SHIFT
    }
}

/// Whether the XDP flow cache (the fast path) holds a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cached {
    /// No entry.
    #[default]
    No,
    /// Maybe an entry, of an older decision (config generation, MACs), or
    /// one the kernel did not write; the flow's next packet on the slow
    /// path installs its current decision.
    Stale,
    /// Queued in the worker's install batch, not yet written: a flow is
    /// queued once per batch, and marked by what the kernel wrote.
    Queued,
    /// The kernel wrote an entry replaying this flow's current decision.
    /// A packet of the flow that still reaches the worker later on means
    /// the cache has lost it (LRU eviction): it is installed again.
    Current,
}

/// What [`FlowTable::expire_with`] should do with an idle flow the cache
/// holds: the fast path forwards its packets without the worker seeing
/// them, so only the cache knows whether it is really idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheActivity {
    /// Idle there too (or gone): expire it.
    Idle,
    /// Seen by the fast path at this time (the table's clock): keep it.
    SeenAt(u64),
    /// Not asked now (a budget per pass): look again at the next pass.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct FlowTimeouts {
    /// Established TCP.
    pub tcp: Duration,
    /// TCP after a FIN or RST.
    pub tcp_closing: Duration,
    pub udp: Duration,
    /// TCP that has not got past its opening segment. The entry holds no
    /// TCP state machine, so this is a proxy: a client-to-backend entry
    /// that has seen at most its first packet, or a backend-to-client entry
    /// pre-installed for a reply that has seen none, or one that has seen
    /// only SYNs (`FlowEntry::syn_only`), and neither closing.
    pub tcp_syn: Duration,
}

impl FlowTimeouts {
    /// Conntrack-like defaults, shortened for established TCP: an LB keeps
    /// state for many more flows than a host does. The daemon's flags take
    /// their defaults from here.
    pub const DEFAULT: Self = Self {
        tcp: Duration::from_secs(300),
        tcp_closing: Duration::from_secs(10),
        udp: Duration::from_secs(30),
        tcp_syn: Duration::from_secs(30),
    };
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const TCP: u8 = 6;

/// Timeout class of a flow; one LRU list each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Closing = 0,
    Syn = 1,
    /// UDP that has seen only its first packet (or, for a reply entry
    /// pre-installed, none): the udp timeout, but embryonic.
    UdpOpening = 2,
    Udp = 3,
    Established = 4,
}

const CLASSES: usize = 5;
/// Class lists per space: settled (0) and embryonic (1).
const SPACES: usize = 2;
const SETTLED: usize = 0;
const EMBRYONIC: usize = 1;
const LISTS: usize = CLASSES * SPACES;
/// Keys of removed flows the cache may still hold, kept for the worker to
/// delete from the cache; beyond this the oldest leftovers are left to the
/// cache's own LRU and to generation checks.
const UNCACHE_QUEUE: usize = 1024;
/// Eviction tie-break order: shortest-lived classes first.
const BY_PRIORITY: [Class; CLASSES] = [
    Class::Closing,
    Class::Syn,
    Class::UdpOpening,
    Class::Udp,
    Class::Established,
];

impl Class {
    fn of(key: &FlowKey, entry: &FlowEntry) -> Class {
        let opening = match entry.direction {
            Direction::ToBackend => entry.packets <= 1,
            Direction::ToClient => entry.packets == 0,
        };
        if key.protocol != TCP {
            return if opening {
                Class::UdpOpening
            } else {
                Class::Udp
            };
        }
        if entry.closing {
            return Class::Closing;
        }
        if opening || entry.syn_only {
            Class::Syn
        } else {
            Class::Established
        }
    }

    fn from_list(list: usize) -> Class {
        BY_PRIORITY
            .into_iter()
            .find(|c| *c as usize == list % CLASSES)
            .unwrap_or(Class::Established)
    }
}

/// Whether a flow belongs in the embryonic space: not yet past its first
/// packet, or (TCP) its handshake, including one reset or closed before
/// it completed, so a flood of SYN and RST pairs stays there too.
pub fn is_embryonic(key: &FlowKey, entry: &FlowEntry) -> bool {
    matches!(Class::of(key, entry), Class::Syn | Class::UdpOpening)
        || (key.protocol == TCP && entry.syn_only)
}

/// Whether a flow counts toward its listener's `maxFlows`: a client's flow
/// that has not closed.
fn counts_toward_limit(entry: &FlowEntry) -> bool {
    entry.direction == Direction::ToBackend && !entry.closing
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// No slot / end of the free list.
const NIL: u32 = u32::MAX;
/// An unused index cell. Tags are chosen so no used cell equals it.
const EMPTY: u32 = u32::MAX;
/// Link values at and above this name the list sentinels.
const SENTINEL: u32 = u32::MAX - 1 - LISTS as u32;
/// Keeps slot numbers clear of `SENTINEL` and leaves at least one tag bit.
const MAX_CAPACITY: usize = 1 << 30;

struct Slot {
    key: FlowKey,
    entry: FlowEntry,
    prev: u32,
    next: u32,
    /// The list the slot is filed in (space * CLASSES + class).
    list: u8,
    /// The listener whose live-flow tally counts this flow, or NIL.
    tally: u32,
}

#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

pub struct FlowTable {
    slots: Vec<Slot>,
    cells: Box<[u32]>,
    cell_mask: usize,
    /// Low bits of a cell: the slot number.
    slot_mask: u32,
    /// Sentinel of each list (one per class and space): `next` is the most
    /// recently used entry, `prev` the least.
    heads: [Link; LISTS],
    free: u32,
    len: usize,
    capacity: usize,
    /// Whether embryonic flows have a space of their own.
    split: bool,
    /// Flows per space, and each space's bound.
    space_len: [usize; SPACES],
    space_cap: [usize; SPACES],
    /// Live client flows per listener index (of the snapshot the last
    /// `relabel` numbered them by); `counts_toward_limit`.
    live: Vec<u32>,
    seed: u32,
    /// Slot handed out by the last `get_mut`, to refile by class.
    pending: u32,
    evictions: u64,
    timeouts: FlowTimeouts,
    timeout_ns: [u64; CLASSES],
    /// Keys of removed flows with a cache entry (see `Cached`).
    uncached: Vec<FlowKey>,
}

impl FlowTable {
    pub fn new(capacity: usize, timeouts: FlowTimeouts) -> Self {
        let seed = RandomState::new().build_hasher().finish() as u32;
        Self::with_seed(capacity, timeouts, seed)
    }

    /// A table of `settled` slots for established flows and `embryonic`
    /// more for flows that have not completed their opening (see the
    /// module's doc): neither space evicts from the other.
    pub fn with_embryonic(settled: usize, embryonic: usize, timeouts: FlowTimeouts) -> Self {
        let seed = RandomState::new().build_hasher().finish() as u32;
        Self::split_with_seed(settled, embryonic, timeouts, seed)
    }

    fn split_with_seed(
        settled: usize,
        embryonic: usize,
        timeouts: FlowTimeouts,
        seed: u32,
    ) -> Self {
        let mut table = Self::with_seed(settled.saturating_add(embryonic), timeouts, seed);
        table.split = true;
        table.space_cap = [settled, embryonic];
        table
    }

    fn with_seed(capacity: usize, timeouts: FlowTimeouts, seed: u32) -> Self {
        assert!(
            capacity <= MAX_CAPACITY,
            "flow capacity {capacity} over {MAX_CAPACITY}"
        );
        let rounded = capacity.max(1).next_power_of_two();
        let cells = vec![EMPTY; rounded * 2].into_boxed_slice();
        let heads = std::array::from_fn(|c| Link {
            prev: SENTINEL + c as u32,
            next: SENTINEL + c as u32,
        });
        let mut timeout_ns = [0; CLASSES];
        timeout_ns[Class::Closing as usize] = nanos(timeouts.tcp_closing);
        timeout_ns[Class::Syn as usize] = nanos(timeouts.tcp_syn);
        timeout_ns[Class::UdpOpening as usize] = nanos(timeouts.udp);
        timeout_ns[Class::Udp as usize] = nanos(timeouts.udp);
        timeout_ns[Class::Established as usize] = nanos(timeouts.tcp);
        Self {
            slots: Vec::with_capacity(capacity),
            cell_mask: cells.len() - 1,
            cells,
            slot_mask: (rounded - 1) as u32,
            heads,
            free: NIL,
            len: 0,
            capacity,
            split: false,
            space_len: [0; SPACES],
            space_cap: [capacity, 0],
            live: Vec::new(),
            seed,
            pending: NIL,
            evictions: 0,
            timeouts,
            timeout_ns,
            uncached: Vec::with_capacity(UNCACHE_QUEUE),
        }
    }

    pub fn timeouts(&self) -> FlowTimeouts {
        self.timeouts
    }

    /// Flows dropped to make room for new ones since the table was built.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Embryonic flows held (0 for a table without an embryonic space).
    pub fn embryonic_len(&self) -> usize {
        if self.split {
            self.space_len[EMBRYONIC]
        } else {
            0
        }
    }

    /// Live client flows of listener `index` (as the last `relabel`
    /// numbered listeners): those not closed, embryonic or settled.
    #[inline]
    pub fn live_flows(&mut self, index: usize) -> u32 {
        self.refile();
        self.live.get(index).copied().unwrap_or(0)
    }

    /// Numbers listeners afresh for the live-flow tallies, after a config
    /// change: `listener_of` names each client flow's listener in the new
    /// numbering (by its VIP), `None` when it has none. Linear in the
    /// flows; allocates the tallies, so only on a config change.
    pub fn relabel(
        &mut self,
        listeners: usize,
        mut listener_of: impl FnMut(&FlowKey, &FlowEntry) -> Option<usize>,
    ) {
        self.refile();
        self.live = vec![0; listeners];
        for s in &mut self.slots {
            s.tally = NIL;
            if s.prev == NIL || !counts_toward_limit(&s.entry) {
                continue;
            }
            if let Some(index) = listener_of(&s.key, &s.entry).filter(|&i| i < listeners) {
                s.tally = index as u32;
                self.live[index] += 1;
            }
        }
    }

    /// The live entry for `key`; an expired one is removed and missed. A
    /// hit makes the flow the most recently used.
    #[inline]
    pub fn get_mut(&mut self, key: &FlowKey, now_ns: u64) -> Option<&mut FlowEntry> {
        self.refile();
        let hash = self.hash(key);
        let (cell, slot) = self.find(key, hash)?;
        let s = &self.slots[slot as usize];
        if self.is_expired(Class::of(&s.key, &s.entry), &s.entry, now_ns) {
            self.remove(cell, slot);
            return None;
        }
        // Moved to the front of its (possibly new) class list by `refile`.
        self.pending = slot;
        Some(&mut self.slots[slot as usize].entry)
    }

    /// Starts fetching the index cell `key` hashes to, for a lookup soon.
    #[inline]
    pub fn prefetch(&self, key: &FlowKey) {
        let cell = self.hash(key) as usize & self.cell_mask;
        crate::hint::prefetch(&self.cells[cell]);
    }

    /// Tracks a flow, replacing any entry for the same key. When the table
    /// is full the least recently used flow makes room. Returns false only
    /// for a table of capacity zero: the packet is still forwarded (the
    /// decision is a pure function of the snapshot), it just is not
    /// remembered.
    pub fn insert(&mut self, key: FlowKey, entry: FlowEntry) -> bool {
        self.refile();
        if self.capacity == 0 {
            return false;
        }
        let hash = self.hash(&key);
        let list = self.list_of(&key, &entry);
        if let Some((_, slot)) = self.find(&key, hash) {
            let mut entry = entry;
            // A flow decided afresh still owns whatever the cache holds for
            // its key: its next install overwrites it, its removal deletes it.
            if entry.cached == Cached::No && self.slots[slot as usize].entry.cached != Cached::No {
                entry.cached = Cached::Stale;
            }
            self.slots[slot as usize].entry = entry;
            self.unlink(slot);
            self.push_front(list, slot);
            self.set_tally(slot, self.tally_for(&entry));
            self.fit_space(list / CLASSES, slot);
            return true;
        }
        let space = list / CLASSES;
        if self.space_cap[space] == 0 {
            return false;
        }
        if self.space_len[space] >= self.space_cap[space] {
            self.evict_one(space, NIL);
        }
        let slot = if self.free != NIL {
            let slot = self.free;
            self.free = self.slots[slot as usize].next;
            let s = &mut self.slots[slot as usize];
            s.key = key;
            s.entry = entry;
            slot
        } else {
            debug_assert!(self.slots.len() < self.slots.capacity());
            self.slots.push(Slot {
                key,
                entry,
                prev: NIL,
                next: NIL,
                list: 0,
                tally: NIL,
            });
            (self.slots.len() - 1) as u32
        };
        let mut cell = hash as usize & self.cell_mask;
        while self.cells[cell] != EMPTY {
            cell = (cell + 1) & self.cell_mask;
        }
        self.cells[cell] = self.tag(hash) | slot;
        self.push_front(list, slot);
        self.set_tally(slot, self.tally_for(&entry));
        self.len += 1;
        true
    }

    /// Drops idle flows; called off the per-packet path, about once a
    /// second. Walks each class list from its least recently used end and
    /// stops at the first live entry.
    pub fn expire(&mut self, now_ns: u64) {
        self.expire_counted(now_ns, &mut |_, _| CacheActivity::Idle);
    }

    /// `expire`, asking `activity` about each idle flow the XDP cache
    /// holds: one the fast path has seen since is kept, refreshed to then.
    pub fn expire_with(
        &mut self,
        now_ns: u64,
        activity: &mut dyn FnMut(&FlowKey, &FlowEntry) -> CacheActivity,
    ) {
        self.expire_counted(now_ns, activity);
    }

    /// `expire_with`, returning how many entries it looked at.
    fn expire_counted(
        &mut self,
        now_ns: u64,
        activity: &mut dyn FnMut(&FlowKey, &FlowEntry) -> CacheActivity,
    ) -> usize {
        self.refile();
        let mut looked = 0;
        for list in (0..SPACES).flat_map(|space| BY_PRIORITY.map(|c| space * CLASSES + c as usize))
        {
            let class = Class::from_list(list);
            loop {
                let tail = self.heads[list].prev;
                if tail >= SENTINEL {
                    break;
                }
                looked += 1;
                let s = &self.slots[tail as usize];
                if !self.is_expired(class, &s.entry, now_ns) {
                    break;
                }
                if s.entry.cached != Cached::No {
                    match activity(&s.key, &s.entry) {
                        CacheActivity::Idle => {}
                        CacheActivity::Unknown => break,
                        CacheActivity::SeenAt(seen) => {
                            let s = &mut self.slots[tail as usize];
                            s.entry.last_seen_ns = s.entry.last_seen_ns.max(seen);
                            if !self.is_expired(class, &self.slots[tail as usize].entry, now_ns) {
                                // Same class, newest now: the front of its list.
                                self.unlink(tail);
                                self.push_front(list, tail);
                                continue;
                            }
                        }
                    }
                }
                let s = &self.slots[tail as usize];
                let hash = self.hash(&s.key);
                let cell = self.cell_of(tail, hash);
                self.remove(cell, tail);
            }
        }
        looked
    }

    /// Marks what became of `key`'s queued cache install: written at time
    /// `at` ([`cache_stamp`]), or not (the flow is offered again at its
    /// next packet). Returns false when the flow is no longer the one
    /// queued (removed, or decided afresh meanwhile), whose written entry
    /// is then outdated. Moves nothing in the LRU order.
    pub fn cache_written(&mut self, key: &FlowKey, at: Option<u32>) -> bool {
        self.refile();
        let Some((_, slot)) = self.find(key, self.hash(key)) else {
            return false;
        };
        let entry = &mut self.slots[slot as usize].entry;
        if entry.cached != Cached::Queued {
            return false;
        }
        match at {
            Some(at) => {
                entry.cached = Cached::Current;
                entry.cached_at = at;
            }
            None => entry.cached = Cached::Stale,
        }
        true
    }

    /// Moves the keys of removed flows the XDP cache may still hold into
    /// `into`, for deletion from the cache.
    pub fn take_uncached(&mut self, into: &mut Vec<FlowKey>) {
        into.append(&mut self.uncached);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every tracked flow, class by class, most recently used first within
    /// a class. Expired flows not yet reaped are included.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowEntry)> {
        (0..LISTS).flat_map(move |list| {
            let mut at = self.heads[list].next;
            std::iter::from_fn(move || {
                if at >= SENTINEL {
                    return None;
                }
                let s = &self.slots[at as usize];
                at = s.next;
                Some((&s.key, &s.entry))
            })
        })
    }

    /// Calls `f` on the live flows among at most `max` slots from
    /// `cursor`, in slot order, and returns the cursor to continue from, or
    /// `None` once the walk has reached the end. A flow keeps its slot for
    /// its whole life, so a walk spread over many calls (between batches,
    /// while the table changes) sees every flow that lives through it
    /// exactly once; flows added or removed meanwhile may or may not be
    /// seen. Moves nothing: the LRU order is untouched.
    pub fn scan(
        &self,
        cursor: usize,
        max: usize,
        now_ns: u64,
        mut f: impl FnMut(&FlowKey, &FlowEntry),
    ) -> Option<usize> {
        let end = cursor.saturating_add(max).min(self.slots.len());
        for s in self.slots.get(cursor..end).unwrap_or_default() {
            if s.prev != NIL && !self.is_expired(Class::of(&s.key, &s.entry), &s.entry, now_ns) {
                f(&s.key, &s.entry);
            }
        }
        (end < self.slots.len()).then_some(end)
    }

    /// The live entry for `key`, without making it recently used: for
    /// readers beside the packet path (the control socket).
    pub fn peek(&self, key: &FlowKey, now_ns: u64) -> Option<&FlowEntry> {
        let (_, slot) = self.find(key, self.hash(key))?;
        let s = &self.slots[slot as usize];
        (!self.is_expired(Class::of(&s.key, &s.entry), &s.entry, now_ns)).then_some(&s.entry)
    }

    /// The entry for `key` while the table holds it, expired or not: what
    /// a full-NAT port's owner checks before it gives the port to another
    /// flow (an expired entry the cache may still carry is not gone yet).
    pub fn stored(&self, key: &FlowKey) -> Option<&FlowEntry> {
        let (_, slot) = self.find(key, self.hash(key))?;
        Some(&self.slots[slot as usize].entry)
    }

    #[inline]
    fn hash(&self, key: &FlowKey) -> u32 {
        flow_hash(key, self.seed)
    }

    /// The high bits of the hash, never all ones (so no cell is `EMPTY`).
    #[inline]
    fn tag(&self, hash: u32) -> u32 {
        let high = !self.slot_mask;
        let tag = hash & high;
        if tag == high {
            tag & !(1 << 31)
        } else {
            tag
        }
    }

    /// Cell and slot holding `key`.
    #[inline]
    fn find(&self, key: &FlowKey, hash: u32) -> Option<(usize, u32)> {
        let tag = self.tag(hash);
        let mut cell = hash as usize & self.cell_mask;
        loop {
            let c = self.cells[cell];
            if c == EMPTY {
                return None;
            }
            if c & !self.slot_mask == tag {
                let slot = c & self.slot_mask;
                if self.slots[slot as usize].key == *key {
                    return Some((cell, slot));
                }
            }
            cell = (cell + 1) & self.cell_mask;
        }
    }

    /// Cell pointing at `slot`, which must be in the table.
    fn cell_of(&self, slot: u32, hash: u32) -> usize {
        let mut cell = hash as usize & self.cell_mask;
        while self.cells[cell] & self.slot_mask != slot || self.cells[cell] == EMPTY {
            cell = (cell + 1) & self.cell_mask;
        }
        cell
    }

    #[inline]
    fn is_expired(&self, class: Class, entry: &FlowEntry, now_ns: u64) -> bool {
        now_ns.saturating_sub(entry.last_seen_ns) > self.timeout_ns[class as usize]
    }

    /// Files the slot last handed out by `get_mut` at the front of the list
    /// its (possibly changed) state belongs to.
    #[inline]
    fn refile(&mut self) {
        let slot = self.pending;
        if slot == NIL {
            return;
        }
        self.pending = NIL;
        let s = &self.slots[slot as usize];
        let list = self.list_of(&s.key, &s.entry);
        if !counts_toward_limit(&s.entry) {
            self.set_tally(slot, NIL);
        }
        self.unlink(slot);
        self.push_front(list, slot);
        self.fit_space(list / CLASSES, slot);
    }

    /// The list a flow belongs in: its class, in its space.
    #[inline]
    fn list_of(&self, key: &FlowKey, entry: &FlowEntry) -> usize {
        let space = if self.split && is_embryonic(key, entry) {
            EMBRYONIC
        } else {
            SETTLED
        };
        space * CLASSES + Class::of(key, entry) as usize
    }

    /// The tally a flow belongs in, if any.
    #[inline]
    fn tally_for(&self, entry: &FlowEntry) -> u32 {
        if counts_toward_limit(entry) && (entry.listener as usize) < self.live.len() {
            entry.listener
        } else {
            NIL
        }
    }

    #[inline]
    fn set_tally(&mut self, slot: u32, tally: u32) {
        let old = std::mem::replace(&mut self.slots[slot as usize].tally, tally);
        if old == tally {
            return;
        }
        if let Some(n) = self.live.get_mut(old as usize) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.live.get_mut(tally as usize) {
            *n += 1;
        }
    }

    /// A flow moved into `space` (promoted, or decided afresh) may leave
    /// it one over its bound: its least recently used other flow goes.
    #[inline]
    fn fit_space(&mut self, space: usize, moved: u32) {
        if self.space_len[space] > self.space_cap[space] {
            self.evict_one(space, moved);
        }
    }

    /// Evicts the least recently used flow of `space`, other than `spare`.
    fn evict_one(&mut self, space: usize, spare: u32) {
        let mut victim: Option<(u64, u32)> = None;
        for class in BY_PRIORITY {
            let mut tail = self.heads[space * CLASSES + class as usize].prev;
            if tail == spare {
                tail = self.slots[tail as usize].prev;
            }
            if tail >= SENTINEL {
                continue;
            }
            let seen = self.slots[tail as usize].entry.last_seen_ns;
            if victim.is_none_or(|(oldest, _)| seen < oldest) {
                victim = Some((seen, tail));
            }
        }
        let Some((_, slot)) = victim else {
            return;
        };
        let hash = self.hash(&self.slots[slot as usize].key);
        let cell = self.cell_of(slot, hash);
        self.remove(cell, slot);
        self.evictions += 1;
    }

    /// Unindexes and unlinks `slot` (at index `cell`) and frees it.
    fn remove(&mut self, cell: usize, slot: u32) {
        if self.pending == slot {
            self.pending = NIL;
        }
        let s = &self.slots[slot as usize];
        if s.entry.cached != Cached::No && self.uncached.len() < UNCACHE_QUEUE {
            self.uncached.push(s.key);
        }
        self.set_tally(slot, NIL);
        self.unlink(slot);
        self.unindex(cell);
        let s = &mut self.slots[slot as usize];
        s.next = self.free;
        // A listed slot always has a predecessor (a slot or a sentinel), so
        // NIL marks a free one for `scan`.
        s.prev = NIL;
        self.free = slot;
        self.len -= 1;
    }

    /// Backward-shift deletion: pulls later members of the probe run into
    /// the hole when the hole lies between their home cell and where they
    /// sit, so lookups never need tombstones.
    fn unindex(&mut self, cell: usize) {
        let mask = self.cell_mask;
        let mut hole = cell;
        let mut at = cell;
        loop {
            at = (at + 1) & mask;
            let c = self.cells[at];
            if c == EMPTY {
                break;
            }
            let key = &self.slots[(c & self.slot_mask) as usize].key;
            let home = self.hash(key) as usize & mask;
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                self.cells[hole] = c;
                hole = at;
            }
        }
        self.cells[hole] = EMPTY;
    }

    #[inline]
    fn link(&mut self, at: u32) -> (&mut u32, &mut u32) {
        if at >= SENTINEL {
            let l = &mut self.heads[(at - SENTINEL) as usize];
            (&mut l.prev, &mut l.next)
        } else {
            let s = &mut self.slots[at as usize];
            (&mut s.prev, &mut s.next)
        }
    }

    #[inline]
    fn unlink(&mut self, slot: u32) {
        let (prev, next, list) = {
            let s = &self.slots[slot as usize];
            (s.prev, s.next, s.list)
        };
        *self.link(prev).1 = next;
        *self.link(next).0 = prev;
        self.space_len[list as usize / CLASSES] -= 1;
    }

    #[inline]
    fn push_front(&mut self, list: usize, slot: u32) {
        let sentinel = SENTINEL + list as u32;
        let first = self.heads[list].next;
        {
            let s = &mut self.slots[slot as usize];
            s.prev = sentinel;
            s.next = first;
            s.list = list as u8;
        }
        *self.link(first).0 = slot;
        self.heads[list].next = slot;
        self.space_len[list / CLASSES] += 1;
    }

    /// Removes `key` if present; tests only.
    #[cfg(test)]
    fn remove_for_test(&mut self, key: &FlowKey) {
        self.refile();
        if let Some((cell, slot)) = self.find(key, self.hash(key)) {
            self.remove(cell, slot);
        }
    }

    /// Checks every structural invariant; tests only.
    #[cfg(test)]
    fn check(&self) {
        assert!(self.len <= self.capacity);
        assert!(self.slots.len() <= self.capacity);
        assert_eq!(
            self.slots.capacity(),
            self.capacity.max(self.slots.capacity())
        );
        let mut listed = 0;
        let mut in_space = [0; SPACES];
        let mut live = vec![0u32; self.live.len()];
        for list in 0..LISTS {
            let sentinel = SENTINEL + list as u32;
            let mut prev = sentinel;
            let mut at = self.heads[list].next;
            while at != sentinel {
                let s = &self.slots[at as usize];
                assert_eq!(s.prev, prev, "broken back link");
                let hash = self.hash(&s.key);
                let (_, found) = self.find(&s.key, hash).expect("listed but not indexed");
                assert_eq!(found, at);
                if self.pending != at {
                    assert_eq!(self.list_of(&s.key, &s.entry), list, "wrong list");
                }
                assert_eq!(s.list as usize, list);
                if let Some(n) = live.get_mut(s.tally as usize) {
                    *n += 1;
                }
                in_space[list / CLASSES] += 1;
                listed += 1;
                prev = at;
                at = s.next;
            }
            assert_eq!(self.heads[list].prev, prev, "broken tail");
        }
        assert_eq!(listed, self.len);
        assert_eq!(in_space, self.space_len);
        for space in 0..SPACES {
            assert!(
                self.space_len[space] <= self.space_cap[space],
                "space {space} over"
            );
        }
        assert_eq!(live, self.live, "tallies");
        let indexed = self.cells.iter().filter(|&&c| c != EMPTY).count();
        assert_eq!(indexed, self.len);
        let mut free = 0;
        let mut at = self.free;
        while at != NIL {
            free += 1;
            at = self.slots[at as usize].next;
        }
        assert_eq!(free + self.len, self.slots.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    const UDP: u8 = 17;

    fn key(n: u32, protocol: u8) -> FlowKey {
        FlowKey {
            src: Ipv4Addr::from(0x0a00_0000 + n).into(),
            dst: Ipv4Addr::new(192, 0, 2, 1).into(),
            src_port: 1024 + (n % 50_000) as u16,
            dst_port: 80,
            protocol,
        }
    }

    fn entry(now: u64, packets: u64) -> FlowEntry {
        FlowEntry {
            rewrite: Rewrite {
                eth_src: [0; 6],
                eth_dst: [0; 6],
                ip_src: Ipv4Addr::UNSPECIFIED.into(),
                ip_dst: Ipv4Addr::UNSPECIFIED.into(),
                src_port: 0,
                dst_port: 0,
            },
            egress_port: 0,
            egress_vlan: PackedVlan::NONE,
            egress_mtu: 0,
            direction: Direction::ToBackend,
            tunnel: Tunnel::None,
            listener: 0,
            backend: 0,
            generation: 0,
            l2_version: 0,
            created_ns: now,
            last_seen_ns: now,
            packets,
            bytes: 0,
            syn_only: false,
            closing: false,
            cached: Cached::No,
            cached_at: 0,
            proxy: None,
        }
    }

    fn timeouts() -> FlowTimeouts {
        FlowTimeouts {
            tcp: Duration::from_nanos(1000),
            tcp_closing: Duration::from_nanos(10),
            udp: Duration::from_nanos(300),
            tcp_syn: Duration::from_nanos(100),
        }
    }

    /// What the worker does on a hit.
    fn touch(table: &mut FlowTable, k: &FlowKey, now: u64) -> bool {
        match table.get_mut(k, now) {
            Some(e) => {
                e.last_seen_ns = now;
                e.packets += 1;
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_least_recently_used_flow_is_evicted_and_a_hit_refreshes() {
        let mut table = FlowTable::new(3, timeouts());
        for n in 0..3 {
            assert!(table.insert(key(n, TCP), entry(n as u64, 2)));
        }
        // 0 becomes the most recent: 1 is now the oldest.
        assert!(touch(&mut table, &key(0, TCP), 5));
        assert!(table.insert(key(3, TCP), entry(6, 2)));
        assert_eq!(table.evictions(), 1);
        assert!(table.get_mut(&key(1, TCP), 7).is_none());
        assert!(table.insert(key(4, TCP), entry(8, 2)));
        // Then 2, the next oldest.
        assert!(table.get_mut(&key(2, TCP), 9).is_none());
        for n in [0, 3, 4] {
            assert!(table.get_mut(&key(n, TCP), 9).is_some(), "{n} evicted");
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.evictions(), 2);
        table.check();
    }

    /// Keys `scan` reports, walking `step` slots per call.
    fn scanned(table: &FlowTable, step: usize, now: u64) -> (Vec<FlowKey>, usize) {
        let mut seen = Vec::new();
        let mut cursor = Some(0);
        let mut calls = 0;
        while let Some(at) = cursor {
            cursor = table.scan(at, step, now, |k, _| seen.push(*k));
            calls += 1;
        }
        (seen, calls)
    }

    #[test]
    fn a_scan_in_chunks_sees_every_live_flow_once_and_skips_freed_and_expired_slots() {
        let mut table = FlowTable::new(10, timeouts());
        for n in 0..10 {
            table.insert(key(n, TCP), entry(0, 2));
        }
        // Freed slots, one of them reused.
        table.remove_for_test(&key(3, TCP));
        table.remove_for_test(&key(7, TCP));
        table.insert(key(20, TCP), entry(0, 2));
        let (mut seen, calls) = scanned(&table, 4, 0);
        seen.sort_by_key(|k| k.src);
        let expected: Vec<FlowKey> = [0, 1, 2, 4, 5, 6, 8, 9, 20]
            .iter()
            .map(|&n| key(n, TCP))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(calls, 3, "10 slots, 4 a call");
        // Past the established timeout nothing is live.
        assert!(scanned(&table, 4, 5_000).0.is_empty());
        assert_eq!(
            table.scan(0, 0, 0, |_, _| {}),
            Some(0),
            "no budget, no progress"
        );
    }

    #[test]
    fn a_scan_moves_nothing_in_the_lru_order() {
        let mut table = FlowTable::new(2, timeouts());
        table.insert(key(0, TCP), entry(0, 2));
        table.insert(key(1, TCP), entry(1, 2));
        scanned(&table, 1, 1);
        assert!(table.peek(&key(0, TCP), 1).is_some());
        // 0 is still the least recently used: it makes room.
        table.insert(key(2, TCP), entry(2, 2));
        assert!(table.peek(&key(0, TCP), 2).is_none());
        assert!(table.peek(&key(1, TCP), 2).is_some());
        table.check();
    }

    #[test]
    fn eviction_crosses_classes_by_age() {
        let mut table = FlowTable::new(3, FlowTimeouts::default());
        table.insert(key(0, TCP), entry(3, 5)); // established
        table.insert(key(1, UDP), entry(1, 1)); // oldest
        table.insert(key(2, TCP), entry(2, 1)); // syn
        table.insert(key(3, TCP), entry(4, 1));
        assert!(table.get_mut(&key(1, UDP), 4).is_none());
        table.insert(key(4, UDP), entry(5, 1));
        assert!(table.get_mut(&key(2, TCP), 5).is_none());
        assert_eq!(table.evictions(), 2);
        table.check();
    }

    #[test]
    fn capacity_is_never_exceeded() {
        for capacity in [1, 2, 3, 7, 8, 100] {
            let mut table = FlowTable::new(capacity, timeouts());
            for n in 0..1000u32 {
                assert!(table.insert(
                    key(n, if n.is_multiple_of(3) { UDP } else { TCP }),
                    entry(n as u64, 2)
                ));
                assert!(table.len() <= capacity);
                if n.is_multiple_of(7) {
                    touch(&mut table, &key(n / 2, TCP), n as u64);
                }
            }
            assert_eq!(table.len(), capacity);
            assert_eq!(table.slots.capacity(), capacity, "reallocated");
            assert_eq!(table.iter().count(), capacity);
            table.check();
        }
        let mut empty = FlowTable::new(0, timeouts());
        assert!(!empty.insert(key(0, TCP), entry(0, 1)));
        assert!(empty.is_empty());
    }

    #[test]
    fn timeouts_follow_the_flow_state() {
        let t = timeouts();
        let mut table = FlowTable::new(16, t);
        let syn = key(1, TCP);
        let est = key(2, TCP);
        let closing = key(3, TCP);
        let udp = key(4, UDP);
        let reply = key(5, TCP);
        let answered = key(6, TCP);
        table.insert(syn, entry(0, 1));
        table.insert(est, entry(0, 2));
        table.insert(
            closing,
            FlowEntry {
                closing: true,
                ..entry(0, 5)
            },
        );
        table.insert(udp, entry(0, 1));
        table.insert(
            reply,
            FlowEntry {
                direction: Direction::ToClient,
                ..entry(0, 0)
            },
        );
        table.insert(
            answered,
            FlowEntry {
                direction: Direction::ToClient,
                ..entry(0, 1)
            },
        );
        table.check();
        // At exactly the timeout a flow is still live; one past, gone.
        table.expire(10);
        assert_eq!(table.len(), 6);
        table.expire(11);
        assert!(table.get_mut(&closing, 11).is_none());
        table.expire(100);
        assert_eq!(table.len(), 5);
        table.expire(101);
        assert_eq!(table.len(), 3, "syn and unanswered reply go at 100 ns");
        assert!(table.get_mut(&syn, 101).is_none());
        assert!(table.get_mut(&reply, 101).is_none());
        table.expire(301);
        assert!(table.get_mut(&udp, 301).is_none());
        assert_eq!(table.len(), 2);
        assert!(table.get_mut(&est, 1000).is_some());
        assert!(table.get_mut(&answered, 1000).is_some());
        table.expire(1001);
        assert!(table.is_empty());
        table.check();
    }

    #[test]
    fn a_state_change_through_get_mut_moves_the_flow_to_its_new_class() {
        let mut table = FlowTable::new(4, timeouts());
        let k = key(1, TCP);
        table.insert(k, entry(0, 1));
        // Second packet: established, so it outlives the syn timeout.
        assert!(touch(&mut table, &k, 50));
        table.expire(500);
        assert!(table.get_mut(&k, 500).is_some());
        // FIN: now closing.
        let e = table.get_mut(&k, 600).unwrap();
        e.last_seen_ns = 600;
        e.closing = true;
        table.check();
        table.expire(611);
        assert!(table.is_empty());
        table.check();
    }

    #[test]
    fn get_mut_misses_and_removes_an_expired_flow() {
        let mut table = FlowTable::new(4, timeouts());
        table.insert(key(1, UDP), entry(0, 1));
        assert!(table.get_mut(&key(1, UDP), 300).is_some());
        assert!(table.get_mut(&key(1, UDP), 301).is_none());
        assert!(table.is_empty());
        table.check();
    }

    fn cached(now: u64) -> FlowEntry {
        FlowEntry {
            cached: Cached::Current,
            ..entry(now, 2)
        }
    }

    #[test]
    fn an_idle_flow_the_fast_path_still_carries_is_kept_and_refreshed() {
        let mut table = FlowTable::new(8, timeouts());
        table.insert(key(1, UDP), cached(0));
        table.insert(key(2, UDP), cached(0));
        table.insert(key(3, UDP), entry(0, 2));
        let mut asked = Vec::new();
        table.expire_with(400, &mut |k, _| {
            asked.push(*k);
            if *k == key(1, UDP) {
                CacheActivity::SeenAt(350)
            } else {
                CacheActivity::Idle
            }
        });
        assert_eq!(
            asked,
            [key(1, UDP), key(2, UDP)],
            "only cached flows are asked"
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.get_mut(&key(1, UDP), 400).unwrap().last_seen_ns, 350);
        let mut uncached = Vec::new();
        table.take_uncached(&mut uncached);
        assert_eq!(
            uncached,
            [key(2, UDP)],
            "the cache entry of a removed flow goes too"
        );
        table.check();
    }

    #[test]
    fn an_unknown_cache_activity_leaves_the_flow_for_the_next_pass() {
        let mut table = FlowTable::new(8, timeouts());
        table.insert(key(1, UDP), cached(0));
        table.insert(key(2, UDP), cached(1));
        table.expire_with(400, &mut |_, _| CacheActivity::Unknown);
        assert_eq!(table.len(), 2);
        table.expire_with(400, &mut |_, _| CacheActivity::Idle);
        assert!(table.is_empty());
        table.check();
    }

    #[test]
    fn evicting_or_replacing_a_cached_flow_keeps_its_cache_key_owned() {
        let mut table = FlowTable::new(1, timeouts());
        table.insert(key(1, UDP), cached(0));
        // Decided afresh (a new generation): the cache may still hold it.
        table.insert(key(1, UDP), entry(1, 1));
        assert_eq!(
            table.get_mut(&key(1, UDP), 1).unwrap().cached,
            Cached::Stale
        );
        table.insert(key(2, UDP), entry(2, 1));
        let mut uncached = Vec::new();
        table.take_uncached(&mut uncached);
        assert_eq!(uncached, [key(1, UDP)]);
        table.check();
    }

    #[test]
    fn a_queued_install_is_marked_by_what_the_kernel_wrote() {
        let mut table = FlowTable::new(4, timeouts());
        let queued = |n| FlowEntry {
            cached: Cached::Queued,
            ..entry(n, 2)
        };
        table.insert(key(1, UDP), queued(0));
        table.insert(key(2, UDP), queued(0));
        table.insert(key(3, UDP), queued(0));
        assert!(table.cache_written(&key(1, UDP), Some(7)));
        assert!(table.cache_written(&key(2, UDP), None));
        // Decided afresh after it was queued: what was written is outdated.
        table.insert(key(3, UDP), entry(1, 1));
        assert!(!table.cache_written(&key(3, UDP), Some(7)));
        assert!(!table.cache_written(&key(4, UDP), Some(7)), "not held");
        let e = *table.get_mut(&key(1, UDP), 1).unwrap();
        assert_eq!((e.cached, e.cached_at), (Cached::Current, 7));
        assert_eq!(
            table.get_mut(&key(2, UDP), 1).unwrap().cached,
            Cached::Stale
        );
        assert_eq!(
            table.get_mut(&key(3, UDP), 1).unwrap().cached,
            Cached::Stale
        );
        table.check();
    }

    #[test]
    fn expire_stops_at_the_first_live_flow() {
        let mut table = FlowTable::new(1024, timeouts());
        for n in 0..1000u32 {
            table.insert(key(n, TCP), entry(u64::from(n), 2));
        }
        // Flows 0..=99 are idle past 1000 ns at 1100: 100 expired, 1 live
        // looked at in the established list, nothing in the others.
        assert_eq!(
            table.expire_counted(1100, &mut |_, _| CacheActivity::Idle),
            101
        );
        assert_eq!(table.len(), 900);
        assert_eq!(
            table.expire_counted(1100, &mut |_, _| CacheActivity::Idle),
            1
        );
        // A flow filed out of time order (inserted with an old stamp) sits
        // behind live ones: expire does not reach it, get_mut still misses.
        table.insert(key(5000, TCP), entry(0, 2));
        assert_eq!(
            table.expire_counted(1100, &mut |_, _| CacheActivity::Idle),
            1
        );
        assert_eq!(table.len(), 901);
        assert!(table.get_mut(&key(5000, TCP), 1100).is_none());
        assert_eq!(table.len(), 900);
        table.check();
    }

    #[test]
    fn removal_and_reinsertion_keep_the_structure_consistent() {
        // A tiny index forces long probe runs through backward shifts.
        let mut table = FlowTable::with_seed(8, timeouts(), 0);
        let mut now = 0;
        for round in 0..200u32 {
            for n in 0..8 {
                now += 1;
                table.insert(key(n * 31 + round % 5, TCP), entry(now, 1));
                table.check();
            }
            now += 101; // everything past the syn timeout
            for n in (0..8).step_by(2) {
                table.get_mut(&key(n * 31 + round % 5, TCP), now);
                table.check();
            }
            table.expire(now);
            table.check();
            assert!(table.is_empty());
        }
        // Replace in place keeps one entry.
        table.insert(key(1, TCP), entry(now, 1));
        table.insert(key(1, TCP), entry(now, 7));
        assert_eq!(table.len(), 1);
        assert_eq!(table.get_mut(&key(1, TCP), now).unwrap().packets, 7);
        table.check();
    }

    fn syn(now: u64) -> FlowEntry {
        FlowEntry {
            syn_only: true,
            ..entry(now, 1)
        }
    }

    #[test]
    fn a_flood_of_embryonic_flows_never_evicts_a_settled_one() {
        let mut table = FlowTable::split_with_seed(4, 8, FlowTimeouts::default(), 7);
        for n in 0..4 {
            table.insert(key(n, TCP), entry(n as u64, 5));
        }
        for n in 100..10_000u32 {
            table.insert(key(n, if n % 3 == 0 { UDP } else { TCP }), syn(n as u64));
            // SYN retransmits and SYN+RST pairs stay embryonic too.
            if n % 5 == 0 {
                let e = table.get_mut(&key(n, TCP), n as u64);
                if let Some(e) = e {
                    e.packets += 1;
                    e.closing = n % 10 == 0;
                }
            }
        }
        table.check();
        for n in 0..4 {
            assert!(
                table.peek(&key(n, TCP), 10_000).is_some(),
                "settled flow {n} evicted"
            );
        }
        assert_eq!(table.embryonic_len(), 8);
        assert_eq!(table.len(), 12);
    }

    #[test]
    fn a_completed_handshake_promotes_the_flow_into_the_settled_space() {
        let mut table = FlowTable::split_with_seed(2, 2, FlowTimeouts::default(), 7);
        table.insert(key(0, TCP), entry(0, 5));
        table.insert(key(1, TCP), entry(1, 5));
        table.insert(key(2, TCP), syn(2));
        assert_eq!(table.embryonic_len(), 1);
        // The client's ACK: promoted; the settled space makes room by LRU
        // among settled flows only.
        let e = table.get_mut(&key(2, TCP), 3).unwrap();
        e.packets += 1;
        e.last_seen_ns = 3;
        e.syn_only = false;
        // Refiled at the next call that takes the table mutably.
        table.expire(3);
        table.check();
        assert_eq!(table.embryonic_len(), 0);
        assert!(
            table.peek(&key(0, TCP), 3).is_none(),
            "oldest settled flow makes room"
        );
        assert!(table.peek(&key(2, TCP), 3).is_some());
        assert_eq!(table.evictions(), 1);
        table.check();
    }

    #[test]
    fn live_flow_tallies_follow_inserts_closes_and_removals() {
        let mut table = FlowTable::new(8, timeouts());
        table.relabel(2, |_, e| Some(e.listener as usize));
        let on = |listener, now| FlowEntry {
            listener,
            ..entry(now, 2)
        };
        table.insert(key(1, TCP), on(0, 1));
        table.insert(key(2, TCP), on(0, 1));
        table.insert(key(3, UDP), on(1, 1));
        table.insert(
            key(4, TCP),
            FlowEntry {
                direction: Direction::ToClient,
                ..on(1, 1)
            },
        );
        assert_eq!((table.live_flows(0), table.live_flows(1)), (2, 1));
        table.get_mut(&key(1, TCP), 2).unwrap().closing = true;
        table.check();
        assert_eq!(table.live_flows(0), 1, "a closed flow no longer counts");
        table.expire(400);
        assert_eq!(table.live_flows(1), 0, "an expired flow no longer counts");
        // Renumbered by a config change: listener 0 is now 1.
        table.relabel(2, |_, e| Some(1 - e.listener as usize));
        assert_eq!((table.live_flows(0), table.live_flows(1)), (0, 1));
        table.remove_for_test(&key(2, TCP));
        assert_eq!(table.live_flows(1), 0);
        table.check();
    }

    /// Reference: a map plus a recency order (front = least recent).
    struct Model {
        map: HashMap<FlowKey, FlowEntry>,
        order: Vec<FlowKey>,
        capacity: usize,
        evictions: u64,
    }

    impl Model {
        fn timeout(k: &FlowKey, e: &FlowEntry) -> u64 {
            let t = timeouts();
            let d = match Class::of(k, e) {
                Class::Closing => t.tcp_closing,
                Class::Syn => t.tcp_syn,
                Class::Udp | Class::UdpOpening => t.udp,
                Class::Established => t.tcp,
            };
            d.as_nanos() as u64
        }

        fn expired(k: &FlowKey, e: &FlowEntry, now: u64) -> bool {
            now.saturating_sub(e.last_seen_ns) > Self::timeout(k, e)
        }

        fn remove(&mut self, k: &FlowKey) {
            self.map.remove(k);
            self.order.retain(|o| o != k);
        }

        fn bump(&mut self, k: FlowKey) {
            self.order.retain(|o| *o != k);
            self.order.push(k);
        }

        fn get_mut(&mut self, k: &FlowKey, now: u64) -> Option<&mut FlowEntry> {
            let e = self.map.get(k)?;
            if Self::expired(k, e, now) {
                self.remove(k);
                return None;
            }
            self.bump(*k);
            self.map.get_mut(k)
        }

        fn insert(&mut self, k: FlowKey, e: FlowEntry) {
            if !self.map.contains_key(&k) && self.map.len() == self.capacity {
                let victim = self.order[0];
                self.remove(&victim);
                self.evictions += 1;
            }
            self.map.insert(k, e);
            self.bump(k);
        }

        fn expire(&mut self, now: u64) {
            let dead: Vec<FlowKey> = self
                .map
                .iter()
                .filter(|(k, e)| Self::expired(k, e, now))
                .map(|(k, _)| *k)
                .collect();
            for k in dead {
                self.remove(&k);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Hit as the worker does; `fin` sets closing.
        Get {
            key: usize,
            fin: bool,
        },
        Insert {
            key: usize,
            packets: u64,
            reply: bool,
        },
        Expire,
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..16usize, prop::bool::weighted(0.1)).prop_map(|(key, fin)| Op::Get { key, fin }),
            3 => (0..16usize, 0..3u64, any::<bool>())
                .prop_map(|(key, packets, reply)| Op::Insert { key, packets, reply }),
            1 => Just(Op::Expire),
            1 => (1..400u64).prop_map(Op::Wait),
        ]
    }

    fn pool(i: usize) -> FlowKey {
        key(i as u32, if i.is_multiple_of(4) { UDP } else { TCP })
    }

    fn same(a: &FlowEntry, b: &FlowEntry) -> bool {
        (
            a.last_seen_ns,
            a.packets,
            a.closing,
            a.listener,
            a.direction,
        ) == (
            b.last_seen_ns,
            b.packets,
            b.closing,
            b.listener,
            b.direction,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever mix of flows arrives, each space keeps to its bound and
        /// a new embryonic flow never removes a settled one.
        #[test]
        fn an_embryonic_insert_never_removes_a_settled_flow(
            settled in 1..6usize,
            embryonic in 1..6usize,
            seed in any::<u32>(),
            ops in prop::collection::vec((0..24u32, 0..4u8), 1..300),
        ) {
            let mut table = FlowTable::split_with_seed(settled, embryonic, FlowTimeouts::default(), seed);
            for (now, (n, kind)) in ops.into_iter().enumerate() {
                let now = now as u64 + 1;
                let k = key(n, if n % 4 == 0 { UDP } else { TCP });
                match kind {
                    // A hit, promoting the flow when it was embryonic.
                    0 => {
                        if let Some(e) = table.get_mut(&k, now) {
                            e.packets += 1;
                            e.last_seen_ns = now;
                            e.syn_only = false;
                        }
                    }
                    1 => {
                        table.insert(k, entry(now, 3));
                    }
                    _ => {
                        let before: Vec<FlowKey> = table
                            .iter()
                            .filter(|(k, e)| !is_embryonic(k, e))
                            .map(|(k, _)| *k)
                            .collect();
                        let replaced = table.peek(&k, now).is_some_and(|e| !is_embryonic(&k, e));
                        table.insert(k, syn(now));
                        for settled_key in before {
                            prop_assert!(
                                (replaced && settled_key == k) || table.peek(&settled_key, now).is_some(),
                                "{:?} evicted by an embryonic insert", settled_key
                            );
                        }
                    }
                }
                table.expire(now);
                table.check();
                prop_assert!(table.embryonic_len() <= embryonic);
                prop_assert!(table.len() - table.embryonic_len() <= settled);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_a_map_with_a_recency_list(
            capacity in 1..10usize,
            seed in any::<u32>(),
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let mut table = FlowTable::with_seed(capacity, timeouts(), seed);
            let mut model = Model { map: HashMap::new(), order: Vec::new(), capacity, evictions: 0 };
            // Strictly increasing, as the worker's clock is per touch.
            let mut now = 0u64;
            for (i, op) in ops.into_iter().enumerate() {
                now += 1;
                match op {
                    Op::Get { key, fin } => {
                        let k = pool(key);
                        let got = table.get_mut(&k, now).map(|e| {
                            e.last_seen_ns = now;
                            e.packets += 1;
                            e.closing |= fin;
                            *e
                        });
                        let want = model.get_mut(&k, now).map(|e| {
                            e.last_seen_ns = now;
                            e.packets += 1;
                            e.closing |= fin;
                            *e
                        });
                        prop_assert_eq!(got.is_some(), want.is_some(), "op {}", i);
                    }
                    Op::Insert { key, packets, reply } => {
                        let k = pool(key);
                        let e = FlowEntry {
                            listener: i as u32,
                            direction: if reply { Direction::ToClient } else { Direction::ToBackend },
                            ..entry(now, packets)
                        };
                        prop_assert!(table.insert(k, e));
                        model.insert(k, e);
                    }
                    Op::Expire => {
                        table.expire(now);
                        model.expire(now);
                    }
                    Op::Wait(d) => now += d,
                }
                table.check();
                prop_assert_eq!(table.len(), model.map.len(), "op {}", i);
                prop_assert_eq!(table.evictions(), model.evictions);
                for (k, e) in table.iter() {
                    let m = model.map.get(k);
                    prop_assert!(m.is_some_and(|m| same(m, e)), "op {}: {:?}", i, k);
                }
            }
        }
    }
}
