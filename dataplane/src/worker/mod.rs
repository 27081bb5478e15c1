//! One worker per queue: takes a batch from its AF_XDP ports, decides each
//! packet (flow table hit, or a new decision from the snapshot), rewrites it
//! in place and hands it back for transmission. The worker owns its flow
//! table and counters outright; the control thread only ever talks to it
//! through a channel it polls between batches, so nothing on the packet path
//! is locked or shared for writing.
//!
//! A packet goes through [`Worker::handle`]'s stages: parse, then either
//! `follow` (a flow of the table: next hop refreshed if the kernel's table
//! changed, rewrite, count, offer to the XDP cache; `forward.rs`) or
//! `new_flow` (choose a backend or reverse a reply, next hop, install;
//! `decide.rs`). Fragments take `fragment.rs`: a first one is decided as
//! its flow, the rest follow it. ICMP and ICMPv6, which `parse` leaves
//! aside, go to `icmp.rs`. Counters and their carry-over across reloads
//! live in `counters.rs`, control requests in `control.rs`.

mod admit;
mod control;
mod counters;
mod decide;
mod encap;
mod forward;
mod fragment;
mod icmp;
mod modes;
mod path;
mod plan;
mod proxy;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, Sender};
use switchyard_config::snapshot::Snapshot;

use crate::affinity::AffinityTable;
use crate::fast_path::CacheWriter;
use crate::flow::{FlowEntry, FlowTable, FlowTimeouts};
use crate::flow_scan::{ActiveEntry, FlowRecord, FlowScan, Job};
use crate::fragments::{FragmentTable, DEFAULT_FRAGMENT_CAPACITY};
use crate::io::{PacketIo, Verdict};
use crate::latency::{LatencyRecorder, LatencySnapshot};
use crate::neighbor::{L2Table, Neighbors};
use crate::packet::{self, FlowKey, ParseError, Parsed};
use crate::policy::Admission;
use crate::replies::ReplyTable;

pub use self::counters::{Counters, WorkerStats};
pub use self::decide::{affine_backend, affinity_key, choose, Choice};
pub use self::forward::carry_over;
use self::forward::Followed;
use self::path::{PathState, SharedTables};
pub use self::plan::{SnatSetup, MAX_COUNTED_SNAT_ADDRESSES};

/// How long an idle worker sleeps in poll(): also the worst-case latency of
/// a control request to an idle worker.
const IDLE_POLL_MS: i32 = 50;
const DRAIN_BATCHES: usize = 64;
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Clients a worker built without a shared affinity table can track; the
/// daemon shares one sized by `--affinity-capacity`.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 4096;
/// Flows whose replies a worker built without a shared reply table can
/// expect; the daemon shares one sized for every worker's flows.
pub const DEFAULT_REPLY_CAPACITY: usize = 65536;

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

#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    pub flow_capacity: usize,
    pub timeouts: FlowTimeouts,
    /// Mixed into the 5-tuple hash; nodes behind one ECMP group must agree.
    pub hash_seed: u32,
    /// Flows that have not completed their opening (a TCP handshake, a
    /// UDP flow's first packet) a worker tracks beside `flow_capacity`
    /// established ones, in a space of their own so a flood of new flows
    /// never evicts an established one; `None`: one shared space.
    pub embryonic_capacity: Option<usize>,
    /// Workers sharing each listener's limits (each takes its share by its
    /// queue number).
    pub workers: u32,
}

/// Embryonic flows a worker tracks by default: a quarter of its default
/// flow capacity, which a SYN flood churns while established flows stay.
pub const DEFAULT_EMBRYONIC_CAPACITY: usize = 16384;

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            flow_capacity: 65536,
            timeouts: FlowTimeouts::default(),
            hash_seed: 0,
            embryonic_capacity: Some(DEFAULT_EMBRYONIC_CAPACITY),
            workers: 1,
        }
    }
}

pub struct Worker {
    queue: u32,
    config: Arc<ArcSwap<Snapshot>>,
    control: Receiver<WorkerRequest>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    flows: FlowTable,
    /// The decisions of fragmented datagrams' first fragments.
    fragments: FragmentTable,
    /// Everything the packet stages touch beside the flow table; a field of
    /// its own so a stage can hold a flow entry and this at once.
    path: PathState,
    /// The snapshot `path.stats.listeners`/`backends` index, kept so a
    /// reload can move each counter to the same listener and backend in
    /// the next one.
    counted: Option<Arc<Snapshot>>,
    latency: LatencyRecorder,
    /// Control requests that read the flow table, oldest first.
    jobs: VecDeque<Job>,
    /// This worker's shares of the listeners' limits.
    admission: Admission,
    /// Workers sharing the limits.
    workers: u32,
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
            config,
            control,
            stop,
            epoch,
            flows: match settings.embryonic_capacity {
                Some(embryonic) => {
                    FlowTable::with_embryonic(settings.flow_capacity, embryonic, settings.timeouts)
                }
                None => FlowTable::new(settings.flow_capacity, settings.timeouts),
            },
            fragments: FragmentTable::new(DEFAULT_FRAGMENT_CAPACITY),
            path: PathState::new(
                queue,
                port_ifindexes,
                neighbors,
                SharedTables {
                    affinity: Arc::new(AffinityTable::new(DEFAULT_AFFINITY_CAPACITY)),
                    replies: Arc::new(ReplyTable::new(DEFAULT_REPLY_CAPACITY)),
                },
                settings.hash_seed,
                settings.timeouts,
            ),
            counted: None,
            latency: LatencyRecorder::new(),
            jobs: VecDeque::new(),
            admission: Admission::default(),
            workers: settings.workers.max(1),
        }
    }

    /// Makes this worker remember up to `capacity` fragmented datagrams
    /// in flight (`DEFAULT_FRAGMENT_CAPACITY` otherwise).
    pub fn with_fragment_capacity(mut self, capacity: usize) -> Self {
        self.fragments = FragmentTable::new(capacity);
        self
    }

    /// Starts this worker's flow table with `flows`, read back from the
    /// fast path's cache when a daemon takes over ([`crate::rebuild`]), so
    /// they keep their backends.
    pub fn with_seeded_flows(mut self, flows: &[(FlowKey, FlowEntry)]) -> Self {
        for (key, entry) in flows {
            self.flows.insert(*key, *entry);
        }
        self
    }

    /// Makes this worker install the flows it has decided in the XDP flow
    /// cache, so the program forwards their later packets itself.
    pub fn with_fast_path(mut self, writer: CacheWriter) -> Self {
        self.path.fast = Some(writer);
        self
    }

    /// Makes this worker use `table` for ClientIP affinity: every worker of
    /// a daemon must share one, so a client's flows on any queue agree.
    pub fn with_affinity_table(mut self, table: Arc<AffinityTable>) -> Self {
        self.path.affinity = table;
        self
    }

    /// Makes this worker share `table` of expected replies: every worker of
    /// a daemon must share one, so a reply reaching any queue finds the
    /// flow a client opened on another.
    pub fn with_reply_table(mut self, table: Arc<ReplyTable>) -> Self {
        self.path.replies = table;
        self
    }

    /// Makes this worker hand out full-NAT source ports from its slice of
    /// the node's SNAT range; without it, `fullnat` flows are refused
    /// (`snat_ports_exhausted`).
    pub fn with_snat(mut self, setup: SnatSetup) -> Self {
        self.path.snat = Some(plan::SnatState::new(setup));
        self.path
            .stats
            .snat_exhausted
            .reserve_exact(MAX_COUNTED_SNAT_ADDRESSES);
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

    /// Forgets idle flows (see `PathState::expire`) and expired
    /// fragmented datagrams.
    pub fn expire(&mut self, now: u64) {
        self.path.expire(&mut self.flows, now);
        self.fragments.expire(now);
    }

    /// One batch; returns the number of frames received.
    pub fn run_once(&mut self, io: &mut dyn PacketIo) -> usize {
        let snapshot = self.config.load_full();
        let l2 = self.path.neighbors.table();
        self.fit_counters(&snapshot);
        self.path.follow_cache_slots();
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
        if let Some(fast) = &mut self.path.fast {
            self.flows.take_uncached(fast.removals());
            fast.flush(&mut self.flows, now);
        }
        self.path.stats.count_batch(&outcome);
        outcome.received
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// One frame, start to verdict. `parsed` is the frame's parse when the
    /// batch loop already did it (to prefetch this frame's flow cell).
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
            Err(ParseError::Fragment) => {
                return self.fragment(snapshot, l2, now, ingress, frame);
            }
            Err(ParseError::UnsupportedProtocol) => {
                return self.not_tcp_or_udp(snapshot, l2, now, ingress, frame)
            }
            Err(error) => return self.path.drop_packet(error.into()),
        };
        self.decide_packet(snapshot, l2, now, ingress, frame, &parsed)
    }

    /// A parsed packet, a whole one or a first fragment: its flow's entry
    /// followed, or a new decision.
    #[inline(always)]
    fn decide_packet(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
        parsed: &Parsed,
    ) -> Verdict {
        match self.follow(snapshot, l2, now, ingress, frame, parsed) {
            Followed::Forwarded(verdict) => verdict,
            Followed::BackendRemoved => self.path.refuse_removed(snapshot, frame, parsed, ingress),
            Followed::Undecided => self.new_flow(snapshot, l2, now, ingress, frame, parsed),
        }
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
