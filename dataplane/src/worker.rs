//! One worker per queue: takes a batch from its AF_XDP ports, decides each
//! packet (flow table hit, or a new decision from the snapshot), rewrites it
//! in place and hands it back for transmission. The worker owns its flow
//! table and counters outright; the control thread only ever talks to it
//! through a channel it polls between batches, so nothing on the packet path
//! is locked or shared for writing.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, Sender};
use switchyard_config::snapshot::{
    BackendOwner, Endpoint, Listener, Protocol, ServiceKey, Slot, Snapshot,
};

use crate::affinity::{AffinityEntry, AffinityKey, AffinityTable};

use crate::drop_reason::DropReason;
use crate::fast_path::{CacheWriter, StatsSlots};
use crate::flow::{Cached, Direction, FlowEntry, FlowTable, FlowTimeouts};
use crate::flow_scan::{ActiveEntry, FlowRecord, FlowScan, Job, SCAN_BUDGET};
use crate::io::{PacketIo, Verdict};
use crate::latency::{LatencyRecorder, LatencySnapshot};
use crate::neighbor::{L2Table, Neighbors, Unresolved};
use crate::packet::{self, FlowKey, Parsed, Rewrite};

const TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// How long an idle worker sleeps in poll(): also the worst-case latency of
/// a control request to an idle worker.
const IDLE_POLL_MS: i32 = 50;
/// `l2_version` of a flow whose MACs came from a packet rather than from
/// the kernel's table; no published table has this version.
const PROVISIONAL_L2: u64 = u64::MAX;
const DRAIN_BATCHES: usize = 64;
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Clients a worker built without a shared affinity table can track; the
/// daemon shares one sized by `--affinity-capacity`.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    /// Listener counters only: new flows refused because they hashed onto
    /// the share of a backendRef without endpoints.
    pub backend_unavailable: u64,
    /// Listener counters only: TCP segments answered with a reset because
    /// a config change removed their flow's backend.
    pub backend_removed: u64,
}

impl Counters {
    fn count(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }
}

/// A copy of one worker's counters, taken between batches.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    pub queue: u32,
    /// Generation of the snapshot the listener/backend counters index.
    pub generation: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
    pub listeners: Vec<Counters>,
    /// Per listener, per backend index of that listener.
    pub backends: Vec<Vec<Counters>>,
}

/// What the control thread asks a worker, answered between batches. The
/// flow-table reads are jobs spread over several gaps (`flow_scan`), so no
/// request pauses forwarding for more than `SCAN_BUDGET` slots.
pub enum WorkerRequest {
    Stats(Sender<WorkerStats>),
    /// The connections matching a filter, sorted and cut to a limit by the
    /// worker.
    Flows(FlowScan, Sender<Vec<FlowRecord>>),
    /// Every client-to-backend entry, compactly, for active-flow counts.
    ActiveFlows(Sender<Vec<ActiveEntry>>),
    /// The live entries for these 5-tuples, where this worker has them.
    Peek(Vec<FlowKey>, Sender<Vec<FlowRecord>>),
    /// The live entry for one 5-tuple, keyed as its packets arrive (for a
    /// client's flow: source = client, destination = VIP).
    Lookup(FlowKey, Sender<Option<FlowRecord>>),
    /// A copy of the latency histograms.
    Latency(Sender<LatencySnapshot>),
}

/// Where the slot table sends a new flow to a VIP: the one decision both
/// the packet path and `yardctl explain` take, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into `Snapshot::listeners`.
    pub listener: u32,
    /// `flow_hash(key, seed)`, kept so explanations can show it.
    pub hash: u32,
    /// `hash % slots`.
    pub slot: usize,
    /// Size of the listener's slot table.
    pub slots: usize,
    /// Index into the listener's backends; `None` is the share of a
    /// backendRef without usable endpoints (the flow is refused).
    pub backend: Option<u32>,
}

/// The backend a new flow with `key` gets under `snapshot`: the listener
/// matching the destination, then the owner of slot
/// `flow_hash(key, seed) % slots` (`client_hash(key.src, seed)` when the
/// listener has `ClientIP` affinity). `NotAService` when no listener matches
/// (the packet may still be a backend's reply). Pure and allocation-free.
#[inline]
pub fn choose(snapshot: &Snapshot, key: &FlowKey, seed: u32) -> Result<Choice, DropReason> {
    let protocol = Protocol::from_ip_proto(key.protocol).ok_or(DropReason::UnsupportedProtocol)?;
    let destination = ServiceKey {
        endpoint: Endpoint {
            address: IpAddr::V4(key.dst),
            port: key.dst_port,
        },
        protocol,
    };
    let index = snapshot
        .listener_for_vip(&destination)
        .ok_or(DropReason::NotAService)?;
    let listener = &snapshot.listeners[index as usize];
    // ClientIP affinity starts from the table hashed by client address
    // alone, so every worker and node gives a new client the same backend;
    // the affinity table (`affine_backend`) then keeps it there across
    // config changes until its entry expires.
    let hash = match listener.affinity {
        Some(_) => packet::client_hash(key.src, seed),
        None => packet::flow_hash(key, seed),
    };
    let slots = listener.slots.len();
    let slot = hash as usize % slots;
    let backend = match listener.slots[slot] {
        Slot::Backend(backend) => Some(backend),
        Slot::Unavailable => None,
    };
    Ok(Choice {
        listener: index,
        hash,
        slot,
        slots,
        backend,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    pub flow_capacity: usize,
    pub timeouts: FlowTimeouts,
    /// Mixed into the 5-tuple hash; nodes behind one ECMP group must agree.
    pub hash_seed: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            flow_capacity: 65536,
            timeouts: FlowTimeouts::default(),
            hash_seed: 0,
        }
    }
}

pub struct Worker {
    queue: u32,
    /// Port index (as `PacketIo` numbers them) to interface index.
    port_ifindexes: Vec<u32>,
    config: Arc<ArcSwap<Snapshot>>,
    neighbors: Neighbors,
    control: Receiver<WorkerRequest>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    settings: WorkerSettings,
    flows: FlowTable,
    /// Shared with the other workers (and the control socket).
    affinity: Arc<AffinityTable>,
    stats: WorkerStats,
    /// The snapshot `stats.listeners`/`stats.backends` index, kept so a
    /// reload can move each counter to the same listener and backend in
    /// the next one.
    counted: Option<Arc<Snapshot>>,
    /// The XDP flow cache, when the fast path is on.
    fast: Option<CacheWriter>,
    /// Its stats slots for the batch's snapshot.
    fast_slots: Option<Arc<StatsSlots>>,
    latency: LatencyRecorder,
    /// Control requests that read the flow table, oldest first.
    jobs: VecDeque<Job>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: u32,
        port_ifindexes: Vec<u32>,
        config: Arc<ArcSwap<Snapshot>>,
        neighbors: Neighbors,
        control: Receiver<WorkerRequest>,
        stop: Arc<AtomicBool>,
        epoch: Instant,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            queue,
            port_ifindexes,
            config,
            neighbors,
            control,
            stop,
            epoch,
            flows: FlowTable::new(settings.flow_capacity, settings.timeouts),
            affinity: Arc::new(AffinityTable::new(DEFAULT_AFFINITY_CAPACITY)),
            settings,
            stats: WorkerStats {
                queue,
                ..WorkerStats::default()
            },
            counted: None,
            fast: None,
            fast_slots: None,
            latency: LatencyRecorder::new(),
            jobs: VecDeque::new(),
        }
    }

    /// Makes this worker install the flows it has decided in the XDP flow
    /// cache, so the program forwards their later packets itself.
    pub fn with_fast_path(mut self, writer: CacheWriter) -> Self {
        self.fast = Some(writer);
        self
    }

    /// Makes this worker use `table` for ClientIP affinity: every worker of
    /// a daemon must share one, so a client's flows on any queue agree.
    pub fn with_affinity_table(mut self, table: Arc<AffinityTable>) -> Self {
        self.affinity = table;
        self
    }

    pub fn run(mut self, io: &mut dyn PacketIo) {
        let mut last_expire = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            // One clock read per batch (vDSO, no syscall).
            let started = Instant::now();
            let received = self.run_once(io);
            if received > 0 {
                self.latency
                    .record_batch(elapsed_ns(started), received as u64);
            }
            self.serve_control();
            let now = self.now_ns();
            if now.saturating_sub(last_expire) > EXPIRE_EVERY.as_nanos() as u64 {
                self.expire(now);
                last_expire = now;
            }
            // A pending flow-table job goes on at once rather than after an
            // idle poll, so a scan of an idle worker is not paced by it.
            if received == 0 && self.jobs.is_empty() {
                io.wait(IDLE_POLL_MS);
            }
        }
        // XDP is already detached when stop is set: finish what the rings
        // still hold, bounded so a flood cannot keep shutdown waiting.
        for _ in 0..DRAIN_BATCHES {
            if self.run_once(io) == 0 {
                break;
            }
        }
    }

    /// Forgets idle flows. A flow the fast path carries looks idle here, so
    /// the cache is asked first; a flow that is forgotten leaves the cache
    /// too.
    pub fn expire(&mut self, now: u64) {
        match &mut self.fast {
            Some(fast) => {
                fast.begin_expiry();
                self.flows
                    .expire_with(now, &mut |key, _| fast.activity(key));
                self.flows.take_uncached(fast.removals());
                fast.flush();
            }
            None => self.flows.expire(now),
        }
    }

    /// One batch; returns the number of frames received.
    pub fn run_once(&mut self, io: &mut dyn PacketIo) -> usize {
        let snapshot = self.config.load_full();
        let l2 = self.neighbors.table();
        self.fit_counters(&snapshot);
        if let Some(fast) = &self.fast {
            let slots = fast.shared().slots();
            if self
                .fast_slots
                .as_ref()
                .is_none_or(|s| !Arc::ptr_eq(s, &slots))
            {
                self.fast_slots = Some(Arc::clone(&slots));
            }
        }
        let now = self.now_ns();
        // The next frame is parsed one call early, so its flow-table cell
        // can be fetched while this frame is handled (that load is the
        // lookup's miss); the parse is handed on and not done again.
        let mut ahead: Option<Parsed> = None;
        let outcome = io.run_batch(&mut |ingress, frame, next| {
            let parsed = ahead.take();
            ahead = next.and_then(|next| packet::parse(next).ok());
            if let Some(next) = &ahead {
                self.flows.prefetch(&next.key);
            }
            self.handle(&snapshot, &l2, now, ingress, frame, parsed)
        });
        if let Some(fast) = &mut self.fast {
            self.flows.take_uncached(fast.removals());
            fast.flush();
        }
        self.stats.rx_packets += outcome.received as u64;
        self.stats.rx_bytes += outcome.received_bytes as u64;
        self.stats.tx_packets += outcome.transmitted as u64;
        self.stats.tx_bytes += outcome.transmitted_bytes as u64;
        self.stats.drops[DropReason::TxRingFull as usize] += outcome.tx_ring_full as u64;
        outcome.received
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Listener/backend counters index the snapshot. On a new generation
    /// each counter moves to the same listener (name, VIP, protocol) and
    /// backend (endpoint) in it, so totals survive reloads and drains;
    /// counters of listeners or backends that are gone are dropped.
    /// Allocates only on config change.
    fn fit_counters(&mut self, snapshot: &Arc<Snapshot>) {
        if let Some(counted) = &self.counted {
            if Arc::ptr_eq(counted, snapshot) || counted.generation == snapshot.generation {
                return;
            }
        }
        let (listeners, backends) = match self.counted.take() {
            Some(previous) => carry_counters(
                &previous,
                &self.stats.listeners,
                &self.stats.backends,
                snapshot,
            ),
            None => (
                vec![Counters::default(); snapshot.listeners.len()],
                snapshot
                    .listeners
                    .iter()
                    .map(|l| vec![Counters::default(); l.backends.len()])
                    .collect(),
            ),
        };
        self.stats.generation = snapshot.generation;
        self.stats.listeners = listeners;
        self.stats.backends = backends;
        self.counted = Some(snapshot.clone());
    }

    /// Answers queued control requests and advances the oldest flow-table
    /// job by `SCAN_BUDGET` slots; `run` calls it between batches. The time
    /// it takes goes into the control histogram, so a stall shows in
    /// `yardctl latency`.
    pub fn serve_control(&mut self) {
        if self.control.is_empty() && self.jobs.is_empty() {
            return;
        }
        let started = Instant::now();
        while let Ok(request) = self.control.try_recv() {
            // A requester that gave up has dropped its receiver; nothing to do.
            let _ = match request {
                WorkerRequest::Stats(reply) => {
                    // Counters of the config the control thread reads, even
                    // if no batch has run since it was published.
                    let snapshot = self.config.load_full();
                    self.fit_counters(&snapshot);
                    reply.send(self.stats.clone()).map_err(drop)
                }
                WorkerRequest::Flows(scan, reply) => {
                    self.jobs.push_back(Job::flows(scan, reply));
                    Ok(())
                }
                WorkerRequest::ActiveFlows(reply) => {
                    self.jobs.push_back(Job::active(reply));
                    Ok(())
                }
                WorkerRequest::Peek(keys, reply) => {
                    self.jobs.push_back(Job::peek(keys, reply));
                    Ok(())
                }
                WorkerRequest::Lookup(key, reply) => {
                    let now = self.now_ns();
                    let queue = self.queue;
                    let found = self.flows.get_mut(&key, now).map(|entry| FlowRecord {
                        queue,
                        key,
                        entry: *entry,
                    });
                    reply.send(found).map_err(drop)
                }
                WorkerRequest::Latency(reply) => {
                    reply.send(self.latency.snapshot(self.queue)).map_err(drop)
                }
            };
        }
        let now = self.now_ns();
        if let Some(job) = self.jobs.front_mut() {
            if job.step(&self.flows, self.queue, now, SCAN_BUDGET) {
                self.jobs.pop_front();
            }
        }
        self.latency.record_control(elapsed_ns(started));
    }

    /// Whether flow-table jobs are still in progress (tests drive
    /// `serve_control` by hand until they are done).
    pub fn control_pending(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Counts a drop that belongs to the listener serving the packet's
    /// destination (`backend_unavailable`, `backend_removed`) there too.
    fn drop_for_listener(&mut self, snapshot: &Snapshot, key: &FlowKey, reason: DropReason) {
        self.stats.drops[reason as usize] += 1;
        let Some(protocol) = Protocol::from_ip_proto(key.protocol) else {
            return;
        };
        let vip = ServiceKey {
            endpoint: Endpoint {
                address: IpAddr::V4(key.dst),
                port: key.dst_port,
            },
            protocol,
        };
        let Some(counters) = snapshot
            .listener_for_vip(&vip)
            .and_then(|index| self.stats.listeners.get_mut(index as usize))
        else {
            return;
        };
        match reason {
            DropReason::BackendUnavailable => counters.backend_unavailable += 1,
            DropReason::BackendRemoved => counters.backend_removed += 1,
            _ => {}
        }
    }

    fn drop_packet(&mut self, reason: DropReason) -> Verdict {
        self.stats.drops[reason as usize] += 1;
        Verdict::Drop
    }

    fn handle(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
        parsed: Option<Parsed>,
    ) -> Verdict {
        let parsed = match parsed.map_or_else(|| packet::parse(frame), Ok) {
            Ok(parsed) => parsed,
            Err(error) => return self.drop_packet(error.into()),
        };
        let bytes = frame.len() as u64;
        let key = parsed.key;
        let mut backend_removed = false;
        if let Some(entry) = self.flows.get_mut(&key, now) {
            if entry.generation != snapshot.generation && !carry_over(snapshot, &key, entry) {
                // The backend of a client's TCP connection is gone: another
                // backend would only answer with a reset, after the client
                // retransmits into the void, so answer for it now. A SYN is
                // a new connection reusing the 5-tuple and is decided afresh.
                backend_removed = entry.direction == Direction::ToBackend
                    && key.protocol == TCP
                    && parsed.tcp_flags & TCP_SYN == 0
                    && snapshot.listener_for_vip(&tcp_vip_key(&key)).is_some();
                if backend_removed {
                    entry.closing = true;
                    entry.last_seen_ns = now;
                }
            } else {
                if entry.l2_version != l2.version() {
                    match next_hop(l2, &self.port_ifindexes, entry.rewrite.ip_dst) {
                        Ok((egress, hop)) => {
                            entry.egress_port = egress;
                            entry.rewrite.eth_src = hop.src_mac;
                            entry.rewrite.eth_dst = hop.dst_mac;
                            entry.l2_version = l2.version();
                            if entry.cached == Cached::Current {
                                entry.cached = Cached::Stale;
                            }
                        }
                        // Until the kernel's entry reaches the table, a reply
                        // entry pre-installed with the client frame's L2
                        // header keeps using it.
                        Err(_) if entry.l2_version == PROVISIONAL_L2 => {
                            self.neighbors.request(entry.rewrite.ip_dst);
                        }
                        Err(reason) => {
                            let target = entry.rewrite.ip_dst;
                            self.neighbors.request(target);
                            return self.drop_packet(reason);
                        }
                    }
                }
                entry.last_seen_ns = now;
                entry.packets += 1;
                entry.bytes += bytes;
                entry.closing |= parsed.tcp_flags & (TCP_FIN | TCP_RST) != 0;
                packet::apply(frame, &parsed, &entry.rewrite);
                if let (Some(fast), Some(slots)) = (&mut self.fast, &self.fast_slots) {
                    if entry.cached != Cached::Current
                        && cacheable(&parsed, entry)
                        && fast.queue(&key, entry, slots, l2)
                    {
                        entry.cached = Cached::Current;
                    }
                }
                let (listener, backend, egress) = (
                    entry.listener as usize,
                    entry.backend as usize,
                    entry.egress_port,
                );
                self.count(listener, backend, bytes);
                return Verdict::Transmit(egress);
            }
        }
        if backend_removed {
            self.drop_for_listener(snapshot, &key, DropReason::BackendRemoved);
            return reset(frame, &parsed, ingress);
        }
        // Read before the rewrite overwrites them.
        let frame_macs = ethernet_addresses(frame);
        match self.decide(snapshot, l2, now, &parsed, bytes) {
            Ok(entry) => {
                packet::apply(frame, &parsed, &entry.rewrite);
                let (listener, backend) = (entry.listener as usize, entry.backend as usize);
                if entry.direction == Direction::ToBackend {
                    self.stats.listeners[listener].flows += 1;
                    self.stats.backends[listener][backend].flows += 1;
                }
                self.count(listener, backend, bytes);
                if entry.direction == Direction::ToBackend {
                    self.expect_reply(snapshot, l2, ingress, frame_macs, &parsed.key, &entry);
                }
                // A full table evicts its least recently used flow; an evicted
                // flow's next packet is decided again, the same way while its
                // backend set is unchanged.
                self.flows.insert(key, entry);
                Verdict::Transmit(entry.egress_port)
            }
            Err(DropReason::BackendUnavailable) if key.protocol == TCP => {
                // The Gateway API asks that a connection to an invalid
                // backendRef's share be refused; a reset refuses it at once.
                self.drop_for_listener(snapshot, &key, DropReason::BackendUnavailable);
                reset(frame, &parsed, ingress)
            }
            Err(DropReason::BackendUnavailable) => {
                self.drop_for_listener(snapshot, &key, DropReason::BackendUnavailable);
                Verdict::Drop
            }
            Err(reason) => self.drop_packet(reason),
        }
    }

    /// A new client whose MAC the kernel's table does not have yet: the
    /// kernel learned it from the client's ARP request moments ago, but the
    /// backend's answer can arrive before that entry reaches the workers, and
    /// a lost first UDP reply is never retransmitted. The kernel would queue
    /// the reply while resolving; this worker instead pre-installs the reply
    /// entry with the L2 header of the client's own frame (reversed), used
    /// only while the table has no entry and only when the route to the
    /// client leaves by the interface the frame arrived on. Replies reaching
    /// another queue first still wait for the table.
    // Out of line, like `decide`: new flows must not bloat the hit path.
    #[inline(never)]
    fn expect_reply(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        ingress: usize,
        frame_macs: Option<([u8; 6], [u8; 6])>,
        key: &FlowKey,
        forward: &FlowEntry,
    ) {
        let backend = ServiceKey {
            endpoint: Endpoint {
                address: IpAddr::V4(forward.rewrite.ip_dst),
                port: forward.rewrite.dst_port,
            },
            protocol: match Protocol::from_ip_proto(key.protocol) {
                Some(protocol) => protocol,
                None => return,
            },
        };
        // An endpoint behind several listeners cannot be reversed from the
        // snapshot: the reply needs this entry, resolved or not.
        let shared = snapshot.owner_of_backend(&backend) == Some(BackendOwner::Shared);
        let (eth_src, eth_dst, egress_port, l2_version) = match l2.resolve(key.src) {
            Ok(hop) if shared => {
                let Some(port) = self.port_ifindexes.iter().position(|&i| i == hop.ifindex) else {
                    return;
                };
                (hop.src_mac, hop.dst_mac, port, l2.version())
            }
            Err(Unresolved::NoNeighbour { ifindex, .. }) => {
                let (Some((frame_dst, frame_src)), Some(&ingress_ifindex)) =
                    (frame_macs, self.port_ifindexes.get(ingress))
                else {
                    return;
                };
                if ifindex != ingress_ifindex {
                    return;
                }
                self.neighbors.request(key.src);
                (frame_dst, frame_src, ingress, PROVISIONAL_L2)
            }
            _ => return,
        };
        let reply_key = FlowKey {
            src: forward.rewrite.ip_dst,
            dst: key.src,
            src_port: forward.rewrite.dst_port,
            dst_port: key.src_port,
            protocol: key.protocol,
        };
        let reply = FlowEntry {
            rewrite: Rewrite {
                eth_src,
                eth_dst,
                ip_src: key.dst,
                ip_dst: key.src,
                src_port: key.dst_port,
                dst_port: key.src_port,
            },
            egress_port,
            direction: Direction::ToClient,
            generation: snapshot.generation,
            l2_version,
            packets: 0,
            bytes: 0,
            closing: false,
            cached: Cached::No,
            ..*forward
        };
        self.flows.insert(reply_key, reply);
    }

    fn count(&mut self, listener: usize, backend: usize, bytes: u64) {
        if let Some(c) = self.stats.listeners.get_mut(listener) {
            c.count(bytes);
        }
        if let Some(c) = self
            .stats
            .backends
            .get_mut(listener)
            .and_then(|b| b.get_mut(backend))
        {
            c.count(bytes);
        }
    }

    /// The first packet of a 5-tuple: a client reaching a VIP, or a backend
    /// answering one.
    #[inline(never)]
    fn decide(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        parsed: &Parsed,
        bytes: u64,
    ) -> Result<FlowEntry, DropReason> {
        let key = &parsed.key;
        let choice = match choose(snapshot, key, self.settings.hash_seed) {
            Ok(choice) => Some(choice),
            Err(DropReason::NotAService) => None,
            Err(reason) => return Err(reason),
        };
        let protocol =
            Protocol::from_ip_proto(key.protocol).ok_or(DropReason::UnsupportedProtocol)?;
        let source = ServiceKey {
            endpoint: Endpoint {
                address: IpAddr::V4(key.src),
                port: key.src_port,
            },
            protocol,
        };
        let (direction, listener_index, backend_index, new_src, new_dst) = if let Some(choice) =
            choice
        {
            let index = choice.listener;
            let listener = &snapshot.listeners[index as usize];
            let backend = match listener.affinity {
                Some(_) => {
                    let now_secs = (now / 1_000_000_000) as u32;
                    match affine_backend(&self.affinity, listener, key, now_secs) {
                        Some((backend, entry)) => {
                            self.affinity.put(
                                &affinity_key(key),
                                entry.backend,
                                entry.port,
                                now_secs,
                            );
                            Some(backend)
                        }
                        None => {
                            if let Some(endpoint) = choice
                                .backend
                                .map(|b| listener.backends[b as usize].endpoint)
                            {
                                if let IpAddr::V4(address) = endpoint.address {
                                    self.affinity.put(
                                        &affinity_key(key),
                                        address,
                                        endpoint.port,
                                        now_secs,
                                    );
                                }
                            }
                            choice.backend
                        }
                    }
                }
                None => choice.backend,
            };
            let Some(backend) = backend else {
                return Err(DropReason::BackendUnavailable);
            };
            let endpoint = listener.backends[backend as usize].endpoint;
            let IpAddr::V4(address) = endpoint.address else {
                return Err(DropReason::UnsupportedAddressFamily);
            };
            // Two-arm NAT: only the destination changes, so the backend
            // sees the client's real address.
            (
                Direction::ToBackend,
                index,
                backend,
                (key.src, key.src_port),
                (address, endpoint.port),
            )
        } else {
            // Reverse translation is derived from the snapshot wherever an
            // endpoint belongs to exactly one listener, so it does not
            // matter which worker saw the flow's first packet (RSS is not
            // symmetric). An endpoint behind several VIPs cannot be
            // reversed from the packet alone; such replies need the entry
            // `expect_reply` installed on the worker that saw the client's
            // first packet, so they only pass when both directions share a
            // queue. Cross-queue state for that case is future work.
            match snapshot.owner_of_backend(&source) {
                Some(BackendOwner::Unique(index)) => {
                    let listener = &snapshot.listeners[index as usize];
                    let backend = listener
                        .backends
                        .iter()
                        .position(|b| b.endpoint == source.endpoint)
                        .ok_or(DropReason::NotAService)? as u32;
                    let IpAddr::V4(vip) = listener.address else {
                        return Err(DropReason::UnsupportedAddressFamily);
                    };
                    (
                        Direction::ToClient,
                        index,
                        backend,
                        (vip, listener.port),
                        (key.dst, key.dst_port),
                    )
                }
                Some(BackendOwner::Shared) => return Err(DropReason::ReplyListenerAmbiguous),
                None => return Err(DropReason::NotAService),
            }
        };
        let (egress_port, hop) =
            next_hop(l2, &self.port_ifindexes, new_dst.0).inspect_err(|_| {
                self.neighbors.request(new_dst.0);
            })?;
        Ok(FlowEntry {
            rewrite: Rewrite {
                eth_src: hop.src_mac,
                eth_dst: hop.dst_mac,
                ip_src: new_src.0,
                ip_dst: new_dst.0,
                src_port: new_src.1,
                dst_port: new_dst.1,
            },
            egress_port,
            direction,
            listener: listener_index,
            backend: backend_index,
            generation: snapshot.generation,
            l2_version: l2.version(),
            created_ns: now,
            last_seen_ns: now,
            packets: 1,
            bytes,
            closing: parsed.tcp_flags & (TCP_FIN | TCP_RST) != 0,
            cached: Cached::No,
        })
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `previous`'s per-listener and per-backend counters re-indexed for
/// `next`: a listener is the same if its name, VIP and protocol are, a
/// backend if its endpoint is.
fn carry_counters(
    previous: &Snapshot,
    listeners: &[Counters],
    backends: &[Vec<Counters>],
    next: &Snapshot,
) -> (Vec<Counters>, Vec<Vec<Counters>>) {
    let mut new_listeners = vec![Counters::default(); next.listeners.len()];
    let mut new_backends: Vec<Vec<Counters>> = next
        .listeners
        .iter()
        .map(|l| vec![Counters::default(); l.backends.len()])
        .collect();
    for (old_index, old) in previous.listeners.iter().enumerate() {
        let Some(new_index) = next.listener_for_vip(&ServiceKey {
            endpoint: old.vip(),
            protocol: old.protocol,
        }) else {
            continue;
        };
        let new_index = new_index as usize;
        let new = &next.listeners[new_index];
        if new.name != old.name {
            continue;
        }
        if let Some(&c) = listeners.get(old_index) {
            new_listeners[new_index] = c;
        }
        let Some(old_backends) = backends.get(old_index) else {
            continue;
        };
        for (old_backend, counters) in old.backends.iter().zip(old_backends) {
            if let Some(position) = new
                .backends
                .iter()
                .position(|b| b.endpoint == old_backend.endpoint)
            {
                new_backends[new_index][position] = *counters;
            }
        }
    }
    (new_listeners, new_backends)
}

/// A flow decided under an older snapshot keeps its translation when the
/// new snapshot still serves its VIP with its backend: a reload that leaves
/// a listener alone, or only adds backends to it, or changes weights, moves
/// no established flow (Maglev would move some, the flow table must not).
/// Only the indices into the new snapshot are refreshed. A flow whose
/// listener or backend is gone is decided afresh, like a new one.
#[inline(never)]
fn carry_over(snapshot: &Snapshot, key: &FlowKey, entry: &mut FlowEntry) -> bool {
    let Some(protocol) = Protocol::from_ip_proto(key.protocol) else {
        return false;
    };
    let endpoint = |address: Ipv4Addr, port: u16| Endpoint {
        address: IpAddr::V4(address),
        port,
    };
    let rewrite = &entry.rewrite;
    let (vip, backend) = match entry.direction {
        Direction::ToBackend => (
            endpoint(key.dst, key.dst_port),
            endpoint(rewrite.ip_dst, rewrite.dst_port),
        ),
        Direction::ToClient => (
            endpoint(rewrite.ip_src, rewrite.src_port),
            endpoint(key.src, key.src_port),
        ),
    };
    let Some(listener) = snapshot.listener_for_vip(&ServiceKey {
        endpoint: vip,
        protocol,
    }) else {
        return false;
    };
    let Some(position) = snapshot.listeners[listener as usize]
        .backends
        .iter()
        .position(|b| b.endpoint == backend)
    else {
        return false;
    };
    entry.listener = listener;
    entry.backend = position as u32;
    entry.generation = snapshot.generation;
    // The cache entry names the old generation: the next packet installs
    // the carried-over decision.
    if entry.cached == Cached::Current {
        entry.cached = Cached::Stale;
    }
    true
}

/// Whether the fast path may take over a flow after this packet: it has
/// settled (its second packet in this direction), it is not closing, its
/// MACs come from the kernel's table rather than from a frame, and this is
/// no TCP SYN, FIN or RST (the program sends those to the workers anyway).
#[inline]
fn cacheable(parsed: &Parsed, entry: &FlowEntry) -> bool {
    entry.packets >= 2
        && !entry.closing
        && entry.l2_version != PROVISIONAL_L2
        && (parsed.key.protocol != TCP || parsed.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0)
}

/// Who an affinity entry is for.
pub fn affinity_key(key: &FlowKey) -> AffinityKey {
    AffinityKey {
        client: key.src,
        vip: key.dst,
        vip_port: key.dst_port,
        protocol: key.protocol,
    }
}

/// The backend a client with ClientIP affinity was last given on this
/// listener, if its entry is live and the backend is still one of the
/// listener's with a non-zero weight (a drained backend takes no new flows,
/// affinity or not). Index into `listener.backends`.
pub fn affine_backend(
    table: &AffinityTable,
    listener: &Listener,
    key: &FlowKey,
    now_secs: u32,
) -> Option<(u32, AffinityEntry)> {
    let timeout = listener.affinity?.timeout_secs;
    let entry = table.get(&affinity_key(key), now_secs, timeout)?;
    let endpoint = Endpoint {
        address: IpAddr::V4(entry.backend),
        port: entry.port,
    };
    let position = listener
        .backends
        .iter()
        .position(|b| b.endpoint == endpoint && b.effective_weight > 0.0)?;
    Some((position as u32, entry))
}

/// The listener key a client-to-VIP packet is matched on.
fn tcp_vip_key(key: &FlowKey) -> ServiceKey {
    ServiceKey {
        endpoint: Endpoint {
            address: IpAddr::V4(key.dst),
            port: key.dst_port,
        },
        protocol: Protocol::Tcp,
    }
}

/// Answers a TCP segment with a reset, back out of the port it came in on;
/// a segment that must not be answered (a reset itself) is just dropped.
fn reset(frame: &mut [u8], parsed: &Parsed, ingress: usize) -> Verdict {
    match packet::tcp_reset(frame, parsed) {
        Some(len) => Verdict::TransmitPrefix { port: ingress, len },
        None => Verdict::Drop,
    }
}

/// Destination and source MAC of an Ethernet frame.
fn ethernet_addresses(frame: &[u8]) -> Option<([u8; 6], [u8; 6])> {
    Some((
        frame.get(0..6)?.try_into().ok()?,
        frame.get(6..12)?.try_into().ok()?,
    ))
}

/// Egress port and L2 header for a packet to `destination`.
fn next_hop(
    l2: &L2Table,
    port_ifindexes: &[u32],
    destination: Ipv4Addr,
) -> Result<(usize, crate::neighbor::NextHop), DropReason> {
    let hop = l2
        .resolve(destination)
        .map_err(|unresolved| match unresolved {
            Unresolved::NoRoute => DropReason::NoRoute,
            Unresolved::NoNeighbour { .. } => DropReason::NeighbourUnresolved,
        })?;
    let port = port_ifindexes
        .iter()
        .position(|&ifindex| ifindex == hop.ifindex)
        .ok_or(DropReason::EgressNotOwned)?;
    Ok((port, hop))
}
