//! The control socket: answers `yardctl` by asking each worker for a copy of
//! its counters, or for the flows a request selects, between batches, then
//! merging the copies. It never touches worker state directly, and flow
//! tables are read in bounded chunks (`flow_scan`), so forwarding never
//! pauses for long. The metrics endpoint reads through the same functions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{self, Sender};
use switchyard_config::snapshot::{Endpoint, Listener, Protocol, ServiceKey, Snapshot};
use switchyard_proto::{
    AffinityEntryInfo, BackendStats, ClusterConfig, ConfigStatusReport, Counters, ExistingFlow,
    ExplainReport, FastPathStatus, FlowInfo, FlowQuery, FlowsReport, ForwardingStatus,
    InterfaceStatus, LatencyReport, ListenerStats, NewFlowDecision, Request, Response, StatsReport,
    StatusReport, WorkerStatus,
};
use switchyard_xdp::SteerCounters;

use crate::drain;
use switchyard_dataplane::affinity::AffinityTable;
use switchyard_dataplane::drop_reason::DropReason;
use switchyard_dataplane::fast_path::{CacheView, FastPath};
use switchyard_dataplane::flow::{Cached, Direction, FlowEntry};
use switchyard_dataplane::flow_scan::FlowRecord;
use switchyard_dataplane::latency::{Distribution, LatencySnapshot};
use switchyard_dataplane::packet::{FlowKey, ProxyStream};
use switchyard_dataplane::worker::{self, WorkerRequest, WorkerStats};
use switchyard_xdp::FastCounters;

mod config_check;
pub mod inventory;
mod server;

pub use server::{
    claim as claim_path, ControlServer, ANSWER_DEADLINE, MAX_CONNECTIONS, REQUEST_DEADLINE,
};

/// How long a worker may take to answer; it answers between batches, so only
/// a wedged worker comes near this.
const WORKER_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("creating the control socket directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another process is already serving the control socket {path} (is another switchyard running?); give this one another --control-socket")]
    InUse { path: PathBuf },
    #[error("--control-socket {path} is {what}, not a socket; refusing to replace it")]
    NotASocket { path: PathBuf, what: &'static str },
    #[error("looking at what is at the control socket path {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot tell whether the control socket {path} is still served; leaving it alone")]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing the stale control socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binding the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub struct WorkerHandle {
    pub queue: u32,
    pub core: Option<usize>,
    /// Set by the worker thread once it is pinned to `core`.
    pub pinned: Arc<AtomicBool>,
    pub afxdp_modes: Vec<String>,
    pub requests: Sender<WorkerRequest>,
}

/// Reads the XDP steering program's counters (the loaded program lives on
/// the main thread, which also reprograms its maps on reloads).
pub type SteerCounterSource = Box<dyn Fn() -> Result<SteerCounters, String> + Send + Sync>;

/// Reads the steering program's per-listener source-range drops:
/// (VIP, port, IANA protocol, frames).
pub type SourceDeniedSource =
    Box<dyn Fn() -> Result<Vec<(std::net::IpAddr, u16, u8, u64)>, String> + Send + Sync>;

/// See [`ControlState::hand_over`]: returns once the sockets are closed.
pub type HandOverHook =
    Box<dyn Fn() -> Result<switchyard_proto::HandOverReport, String> + Send + Sync>;

pub struct ControlState {
    pub config_path: String,
    pub config: Arc<ArcSwap<Snapshot>>,
    /// Written by the reloader, read here; neither is on the packet path.
    pub config_status: Arc<Mutex<ConfigStatusReport>>,
    /// `--snat-ports`, if given.
    pub snat_ports: Option<switchyard_dataplane::snat::SnatPorts>,
    pub interfaces: Vec<InterfaceStatus>,
    /// Each interface's veth peer and fast-path egress, as the egress
    /// watch last read them; none in tests without interfaces.
    pub egress: Option<Arc<crate::egress::EgressReport>>,
    pub workers: Vec<WorkerHandle>,
    /// The clock the workers stamp flows with.
    pub epoch: Instant,
    /// The workers' `WorkerSettings::hash_seed`, so explanations hash alike.
    pub hash_seed: u32,
    /// The workers' shared ClientIP affinity table.
    pub affinity: Arc<AffinityTable>,
    /// Publishes drains (and the reloader's configs) into `config`.
    pub drains: Arc<drain::Publisher>,
    /// Resolution inputs from the command line, so a config check compiles
    /// a file as a reload would.
    pub resolve_options: switchyard_config::Options,
    /// The XDP flow cache, when the fast path is on.
    pub fast_path: Option<Arc<switchyard_dataplane::fast_path::FastPath>>,
    /// The steering program's counters; none in tests without XDP.
    pub steer_counters: Option<SteerCounterSource>,
    /// The steering program's per-listener source-range drops; none in
    /// tests without XDP.
    pub source_denied: Option<SourceDeniedSource>,
    /// Where `ApplyCluster` requests go: none unless the daemon was started
    /// with `--cluster`.
    pub cluster: Option<crate::cluster::ClusterInbox>,
    /// The node's announcements; none in tests without a daemon.
    pub node: Option<Arc<crate::announce::Announcer>>,
    /// Releases the workers' sockets for a daemon taking over, and makes
    /// this one exit; none: `HandOver` is refused.
    pub hand_over: Option<HandOverHook>,
}

/// The answer to one request line as read from the socket; a line that is
/// no request is answered with why.
pub fn respond(state: &ControlState, line: &[u8]) -> Response {
    match serde_json::from_slice::<Request>(line) {
        Ok(Request::ApplyCluster(config)) => apply_cluster(state, config),
        Ok(request) => answer(state, &request),
        Err(err) => Response::Error {
            message: format!("malformed request: {err}"),
        },
    }
}

/// `Node`, `NodeDrain` (`drain` true) and `NodeUndrain`.
fn node(state: &ControlState, drain: Option<bool>) -> Result<Response, String> {
    let announcer = state
        .node
        .as_ref()
        .ok_or("this daemon announces nothing (no node state)")?;
    Ok(Response::Node(match drain {
        Some(drained) => announcer.set_drained(drained),
        None => announcer.status(),
    }))
}

fn answer(state: &ControlState, request: &Request) -> Response {
    let result = match request {
        Request::Status => Ok(Response::Status(status(state))),
        Request::ConfigStatus => Ok(Response::ConfigStatus(config_status(state))),
        Request::ConfigCheck(candidate) => {
            config_check::check(state, candidate).map(Response::ConfigCheck)
        }
        Request::ConfigDiff(candidate) => {
            config_check::diff(state, candidate).map(Response::ConfigDiff)
        }
        Request::Stats => stats(state).map(Response::Stats),
        Request::ApplyCluster(config) => return apply_cluster(state, config.clone()),
        Request::Flows => inventory::query_flows(state, &FlowQuery::default()).map(Response::Flows),
        Request::Latency => latency(state).map(|snapshots| {
            Response::Latency(LatencyReport {
                workers: snapshots.iter().map(latency_report).collect(),
            })
        }),
        Request::Listeners => inventory::listeners(state).map(Response::Listeners),
        Request::Backends { listener } => {
            inventory::backends(state, listener.as_deref()).map(Response::Backends)
        }
        Request::QueryFlows(query) => inventory::query_flows(state, query).map(Response::Flows),
        Request::Node => node(state, None),
        Request::NodeDrain => node(state, Some(true)),
        Request::NodeUndrain => node(state, Some(false)),
        Request::HandOver => match &state.hand_over {
            Some(hand_over) => hand_over().map(Response::HandOver),
            None => Err("this daemon cannot hand over".to_owned()),
        },
        Request::Drain { backend, listener } => {
            inventory::set_drain(state, backend, listener.as_deref(), true).map(Response::Drain)
        }
        Request::Undrain { backend, listener } => {
            inventory::set_drain(state, backend, listener.as_deref(), false).map(Response::Drain)
        }
        Request::Explain {
            protocol,
            client,
            vip,
        } => explain_key(protocol, client, vip).and_then(|key| {
            // Read the config before asking the workers: a flow they decided
            // under a newer one is then reported stale rather than wrongly
            // current.
            let snapshot = state.config.load_full();
            ask_workers(state, |reply| WorkerRequest::Lookup(key, reply)).map(|found| {
                let mut report = explain_report(
                    &snapshot,
                    state.hash_seed,
                    &state.affinity,
                    &key,
                    found.into_iter().flatten(),
                    state.epoch.elapsed().as_nanos() as u64,
                );
                crate::health::explain::annotate(
                    &mut report,
                    &state.drains.compiled(),
                    &snapshot,
                    &inventory::observations(state),
                    &key,
                    state.hash_seed,
                );
                Response::Explain(Box::new(report))
            })
        }),
    };
    result.unwrap_or_else(|message| Response::Error { message })
}

/// An `ApplyCluster` answered once the loader and the main thread have
/// applied (or refused) it; a daemon that reads a file takes none.
fn apply_cluster(state: &ControlState, config: ClusterConfig) -> Response {
    let Some(inbox) = &state.cluster else {
        return Response::Error {
            message: format!(
                "this daemon reads its config from the file {}: only a daemon started with \
                 --cluster (instead of --config) takes a cluster's objects from switchyard-kube",
                state.config_path
            ),
        };
    };
    inbox.apply(config, Instant::now()).map_or_else(
        |message| Response::Error { message },
        Response::ApplyCluster,
    )
}

/// `yardctl stats`: the workers' counters merged over the running config,
/// with the steering program's.
pub fn stats(state: &ControlState) -> Result<StatsReport, String> {
    let workers = ask_workers(state, WorkerRequest::Stats)?;
    let snapshot = state.config.load();
    let fast = state
        .fast_path
        .as_ref()
        .map(|fast| fast.backend_counters(&snapshot));
    let mut report = stats_report(&snapshot, &workers, fast.as_deref());
    if let Some(read) = &state.steer_counters {
        let counters = read().map_err(|err| format!("reading the XDP counters: {err}"))?;
        report.xdp_steering = counters
            .iter()
            .map(|(counter, total)| (counter.name().to_owned(), total))
            .collect();
    }
    if let Some(read) = &state.source_denied {
        let denied = read().map_err(|err| format!("reading the XDP source drops: {err}"))?;
        add_xdp_source_denied(&snapshot, &mut report, &denied);
    }
    Ok(report)
}

/// Adds the frames the steering program dropped for their source to each
/// listener's `source_denied` (the workers count only those that reached
/// them), so the listener shows one total whichever stage dropped them.
fn add_xdp_source_denied(
    snapshot: &Snapshot,
    report: &mut StatsReport,
    denied: &[(std::net::IpAddr, u16, u8, u64)],
) {
    for (listener, stats) in snapshot.listeners().iter().zip(&mut report.listeners) {
        let key = (
            listener.address(),
            listener.port(),
            listener.protocol() as u8,
        );
        let frames: u64 = denied
            .iter()
            .filter(|(a, p, proto, _)| (*a, *p, *proto) == key)
            .map(|(.., n)| n)
            .sum();
        if frames > 0 {
            *stats
                .drops
                .entry(DropReason::SourceDenied.name().to_owned())
                .or_default() += frames;
        }
    }
}

/// Every worker's latency histograms.
pub fn latency(state: &ControlState) -> Result<Vec<LatencySnapshot>, String> {
    ask_workers(state, WorkerRequest::Latency)
}

/// One worker's histograms as `yardctl latency` shows them.
pub fn latency_report(snapshot: &LatencySnapshot) -> switchyard_proto::WorkerLatency {
    let summary = snapshot.summary();
    switchyard_proto::WorkerLatency {
        queue: summary.queue,
        batch_ns: distribution(summary.batch_ns),
        packets_per_batch: distribution(summary.packets_per_batch),
        control_ns: distribution(summary.control_ns),
    }
}

fn distribution(d: Distribution) -> switchyard_proto::Distribution {
    switchyard_proto::Distribution {
        count: d.count,
        total: d.total,
        min: d.min,
        p50: d.p50,
        p90: d.p90,
        p99: d.p99,
        p999: d.p999,
        max: d.max,
    }
}

/// The reloader's record with the generation running now (drains publish
/// generations the reloader does not see), the one `status` shows too.
fn config_status(state: &ControlState) -> ConfigStatusReport {
    let mut report = state
        .config_status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    report.generation = state.config.load().generation();
    report.last_result = report.last_result().to_owned();
    report
}

pub fn status(state: &ControlState) -> StatusReport {
    let config = config_status(state);
    StatusReport {
        reload: config.summary(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: state.epoch.elapsed().as_secs(),
        config_path: config.source_name().to_owned(),
        config_source: config.source_kind,
        config_generation: config.generation,
        fast_path: state.fast_path.as_deref().map(fast_path_status),
        forwarding: forwarding_status(state),
        interfaces: {
            let mut interfaces = state.interfaces.clone();
            if let Some(egress) = &state.egress {
                egress.fill(&mut interfaces);
            }
            interfaces
        },
        workers: state
            .workers
            .iter()
            .map(|w| WorkerStatus {
                queue: w.queue,
                core: w.core,
                pinned: w.pinned.load(Ordering::Relaxed),
                afxdp_modes: w.afxdp_modes.clone(),
            })
            .collect(),
    }
}

/// The running listeners per mode, and each worker's SNAT ports.
fn forwarding_status(state: &ControlState) -> ForwardingStatus {
    let mut listeners = BTreeMap::new();
    for listener in state.config.load().listeners() {
        *listeners
            .entry(listener.forwarding().name().to_owned())
            .or_insert(0) += 1;
    }
    let workers = state.workers.len() as u32;
    ForwardingStatus {
        listeners,
        snat_ports: state.snat_ports.map(|ports| ports.to_string()),
        snat_slices: state
            .snat_ports
            .map(|ports| {
                (0..workers)
                    .filter_map(|w| ports.slice(w, workers).ok())
                    .map(|slice| format!("{}-{}", slice.start(), slice.end()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The flow cache's entries, when the fast path is on; a cache that cannot
/// be read is logged and listed as empty.
fn cache_view(state: &ControlState) -> Option<CacheView> {
    let fast = state.fast_path.as_ref()?;
    match fast.view() {
        Ok(view) => Some(view),
        Err(err) => {
            log::warn!("reading the XDP flow cache: {err}");
            None
        }
    }
}

fn fast_path_status(fast: &FastPath) -> FastPathStatus {
    let maps = fast.maps();
    let (generation, l2_epoch) = maps.published().unwrap_or_default();
    FastPathStatus {
        capacity: maps.capacity(),
        entries: maps.entries().map_or(0, |entries| entries.len() as u64),
        generation,
        l2_epoch,
    }
}

pub(crate) fn ask_workers<T>(
    state: &ControlState,
    make: impl Fn(Sender<T>) -> WorkerRequest,
) -> Result<Vec<T>, String> {
    let mut answers = Vec::with_capacity(state.workers.len());
    for worker in &state.workers {
        let (reply, answer) = channel::bounded(1);
        worker
            .requests
            .send(make(reply))
            .map_err(|_| format!("worker for queue {} has stopped", worker.queue))?;
        answers.push((worker.queue, answer));
    }
    answers
        .into_iter()
        .map(|(queue, answer)| {
            answer
                .recv_timeout(WORKER_ANSWER_TIMEOUT)
                .map_err(|_| format!("worker for queue {queue} did not answer"))
        })
        .collect()
}

fn to_proto(c: &worker::Counters) -> Counters {
    Counters {
        packets: c.packets,
        bytes: c.bytes,
        flows: c.flows,
    }
}

fn add(total: &mut worker::Counters, c: &worker::Counters) {
    total.packets += c.packets;
    total.bytes += c.bytes;
    total.flows += c.flows;
    total.backend_unavailable += c.backend_unavailable;
    total.backend_removed += c.backend_removed;
    total.source_denied += c.source_denied;
    total.rate_limited += c.rate_limited;
    total.max_flows_reached += c.max_flows_reached;
}

/// The drop reasons that belong to a listener, as `yardctl stats` and the
/// metrics show them.
pub const LISTENER_DROPS: [DropReason; 5] = [
    DropReason::BackendUnavailable,
    DropReason::BackendRemoved,
    DropReason::SourceDenied,
    DropReason::NewFlowRateLimited,
    DropReason::MaxFlowsReached,
];

/// A listener's own drops by reason name, zero counts left out.
fn listener_drops(c: &worker::Counters) -> BTreeMap<String, u64> {
    [
        (DropReason::BackendUnavailable, c.backend_unavailable),
        (DropReason::BackendRemoved, c.backend_removed),
        (DropReason::SourceDenied, c.source_denied),
        (DropReason::NewFlowRateLimited, c.rate_limited),
        (DropReason::MaxFlowsReached, c.max_flows_reached),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .map(|(reason, count)| (reason.name().to_owned(), count))
    .collect()
}

/// Merges the workers' counters (and, with `fast`, the fast path's per
/// listener backend, indexed like `snapshot`) into one report.
pub fn stats_report(
    snapshot: &Snapshot,
    workers: &[WorkerStats],
    fast: Option<&[Vec<FastCounters>]>,
) -> StatsReport {
    let current: Vec<&WorkerStats> = workers
        .iter()
        .filter(|w| w.generation == snapshot.generation())
        .collect();
    let mut report = StatsReport::default();
    for (index, listener) in snapshot.listeners().iter().enumerate() {
        let mut total = worker::Counters::default();
        for w in &current {
            if let Some(c) = w.listeners.get(index) {
                add(&mut total, c);
            }
        }
        let name = listener.name().to_string();
        let fast_backends = fast
            .and_then(|f| f.get(index))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let fast_total = fast_backends
            .iter()
            .fold(FastCounters::default(), |sum, c| FastCounters {
                packets: sum.packets + c.packets,
                bytes: sum.bytes + c.bytes,
            });
        total.packets += fast_total.packets;
        total.bytes += fast_total.bytes;
        report.listeners.push(ListenerStats {
            listener: name.clone(),
            protocol: listener.protocol().to_string(),
            vip: listener.vip().to_string(),
            counters: to_proto(&total),
            fast_path_packets: fast_total.packets,
            fast_path_bytes: fast_total.bytes,
            drops: listener_drops(&total),
        });
        for (b, backend) in listener.backends().iter().enumerate() {
            let mut total = worker::Counters::default();
            for w in &current {
                if let Some(c) = w.backends.get(index).and_then(|l| l.get(b)) {
                    add(&mut total, c);
                }
            }
            let fast = fast_backends.get(b).copied().unwrap_or_default();
            total.packets += fast.packets;
            total.bytes += fast.bytes;
            let service = listener
                .groups()
                .get(backend.group as usize)
                .map(|g| g.service.clone())
                .unwrap_or_default();
            report.backends.push(BackendStats {
                listener: name.clone(),
                backend: backend.endpoint.to_string(),
                service,
                counters: to_proto(&total),
                fast_path_packets: fast.packets,
                fast_path_bytes: fast.bytes,
            });
        }
    }
    for w in workers {
        let drops: BTreeMap<String, u64> = DropReason::ALL
            .iter()
            .filter(|r| w.drops[**r as usize] > 0)
            .map(|r| (r.name().to_owned(), w.drops[*r as usize]))
            .collect();
        for (reason, count) in &drops {
            *report.drops.entry(reason.clone()).or_default() += count;
        }
        report.workers.push(switchyard_proto::WorkerStats {
            queue: w.queue,
            rx_packets: w.rx_packets,
            rx_bytes: w.rx_bytes,
            tx_packets: w.tx_packets,
            tx_bytes: w.tx_bytes,
            flows: w.listeners.iter().map(|c| c.flows).sum(),
            drops,
            fast_path: switchyard_proto::WorkerCacheStats {
                installed: w.cache.installed,
                unwritten: w.cache.unwritten,
                lost: w.cache.lost,
            },
            partial_checksums: w.partial_checksums,
            fragments: switchyard_proto::WorkerFragmentStats {
                first: w.first_fragments,
                later: w.later_fragments,
                evicted: w.fragment_evictions,
            },
            echo_replies: w.echo_replies,
            icmp_to_backend: w.icmp_to_backend,
            icmp_to_client: w.icmp_to_client,
            vlan: switchyard_proto::WorkerVlanStats {
                pushed: w.vlan_pushed,
                popped: w.vlan_popped,
                retagged: w.vlan_retagged,
            },
            too_big_answered: w.too_big_answered,
            encapsulated: w.encapsulated,
            proxy_headers: w.proxy_headers,
            snat_exhausted: w
                .snat_exhausted
                .iter()
                .map(|(address, n)| (address.to_string(), *n))
                .collect(),
        });
    }
    report
}

/// `address:port`, an IPv6 address in brackets.
fn endpoint(address: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(address, port).to_string()
}

/// Merges the two directions of each connection (possibly seen by different
/// workers), and what the flow cache sent of each (with `cache`), into one
/// row.
pub fn flows_report(
    snapshot: &Snapshot,
    records: impl Iterator<Item = FlowRecord>,
    now_ns: u64,
    cache: Option<&CacheView>,
) -> FlowsReport {
    #[derive(Default)]
    struct Merged {
        listener: String,
        packets: u64,
        bytes: u64,
        fast_packets: u64,
        fast_bytes: u64,
        fast_path: bool,
        created_ns: u64,
        last_seen_ns: u64,
        workers: BTreeSet<u32>,
        outer: Option<String>,
        mode: String,
        snat: Option<String>,
        proxy: Option<ProxyStream>,
    }
    let mut merged: HashMap<(u8, String, String, String), Merged> = HashMap::new();
    for record in records {
        let (k, r) = (&record.key, &record.entry.rewrite);
        // The client is where the flow's answers go (for `fullnat` not the
        // reply's destination, the SNAT binding); a `dsr` flow's backend is
        // not in its rewrite (only MACs change) but in the snapshot, and an
        // encapsulated flow's rewrite is its outer header.
        let tunnelled = record.entry.outer_header().is_some();
        let (client, vip, backend, snat) = match record.entry.direction {
            Direction::ToBackend => (
                endpoint(k.src, k.src_port),
                endpoint(k.dst, k.dst_port),
                backend_of(snapshot, k, &record.entry),
                !tunnelled && (r.ip_src, r.src_port) != (k.src, k.src_port),
            ),
            Direction::ToClient => (
                endpoint(r.ip_dst, r.dst_port),
                endpoint(r.ip_src, r.src_port),
                endpoint(k.src, k.src_port),
                (r.ip_dst, r.dst_port) != (k.dst, k.dst_port),
            ),
        };
        let snat = snat.then(|| match record.entry.direction {
            Direction::ToBackend => endpoint(r.ip_src, r.src_port),
            Direction::ToClient => endpoint(k.dst, k.dst_port),
        });
        let row = merged
            .entry((k.protocol, client, vip, backend))
            .or_insert_with(|| Merged {
                created_ns: u64::MAX,
                ..Merged::default()
            });
        if row.listener.is_empty() {
            // By VIP rather than the entry's index, which is only refreshed
            // at the flow's next packet after a reload or drain.
            let vip = match record.entry.direction {
                Direction::ToBackend => (k.dst, k.dst_port),
                Direction::ToClient => (r.ip_src, r.src_port),
            };
            let listener = Protocol::from_ip_proto(k.protocol).and_then(|protocol| {
                snapshot.listener_for_vip(&ServiceKey {
                    endpoint: Endpoint {
                        address: vip.0,
                        port: vip.1,
                    },
                    protocol,
                })
            });
            if let Some(l) = listener {
                row.listener = l.name().to_string();
                row.mode = l.forwarding().name().to_owned();
            }
        }
        if snat.is_some() {
            row.snat = snat;
        }
        row.packets += record.entry.packets;
        row.bytes += record.entry.bytes;
        row.created_ns = row.created_ns.min(record.entry.created_ns);
        row.last_seen_ns = row.last_seen_ns.max(record.entry.last_seen_ns);
        row.workers.insert(record.queue);
        if row.outer.is_none() {
            row.outer = record.entry.outer_header();
        }
        // Either direction may have seen the backend acknowledge it.
        if let Some(stream) = record.entry.proxy {
            row.proxy = Some(match row.proxy {
                Some(seen) if seen.delivered => seen,
                _ => stream,
            });
        }
        // Two workers can hold one 5-tuple (a reply pre-installed on one);
        // the cache entry is counted with the worker that installed it.
        if record.entry.cached != Cached::No {
            if let Some(cached) = cache.and_then(|c| c.get(&record.key)) {
                row.packets += cached.packets;
                row.bytes += cached.bytes;
                row.fast_packets += cached.packets;
                row.fast_bytes += cached.bytes;
                row.fast_path |= record.entry.cached == Cached::Current && cached.applies;
                if let Some(seen) = cached.last_seen_ns {
                    row.last_seen_ns = row.last_seen_ns.max(seen);
                }
            }
        }
    }
    let seconds = |ns: u64| ns as f64 / 1e9;
    let mut flows: Vec<FlowInfo> = merged
        .into_iter()
        .map(|((protocol, client, vip, backend), m)| FlowInfo {
            protocol: match protocol {
                6 => "TCP".to_owned(),
                17 => "UDP".to_owned(),
                other => other.to_string(),
            },
            client,
            vip,
            backend,
            listener: m.listener,
            packets: m.packets,
            bytes: m.bytes,
            fast_path_packets: m.fast_packets,
            fast_path_bytes: m.fast_bytes,
            fast_path: m.fast_path,
            age_secs: seconds(now_ns.saturating_sub(m.created_ns)),
            idle_secs: seconds(now_ns.saturating_sub(m.last_seen_ns)),
            workers: m.workers.into_iter().collect(),
            outer: m.outer,
            mode: m.mode,
            snat: m.snat,
            proxy: m.proxy.map(proxy_state),
        })
        .collect();
    flows.sort_by(|a, b| {
        a.age_secs
            .total_cmp(&b.age_secs)
            .then_with(|| a.client.cmp(&b.client))
    });
    FlowsReport { flows }
}

/// How `yardctl` names where a flow's PROXY header is.
fn proxy_state(stream: ProxyStream) -> String {
    if stream.delivered {
        "v2 acknowledged".to_owned()
    } else {
        "v2 sent".to_owned()
    }
}

/// The listener serving client flow `key`'s VIP.
fn listener_of<'s>(snapshot: &'s Snapshot, key: &FlowKey) -> Option<&'s Listener> {
    let protocol = Protocol::from_ip_proto(key.protocol)?;
    snapshot
        .listener_for_vip(&ServiceKey {
            endpoint: Endpoint {
                address: key.dst,
                port: key.dst_port,
            },
            protocol,
        })
        .map(|l| l.get())
}

/// `address:port` of the backend client flow `key` (decided as `entry`)
/// goes to: its rewrite's destination (an encapsulated flow's outer
/// destination, at the VIP's port), or for `dsr`, whose rewrite keeps
/// the VIP, its backend in the snapshot it was decided under (`?` once
/// that is gone).
fn backend_of(snapshot: &Snapshot, key: &FlowKey, entry: &FlowEntry) -> String {
    if entry.outer_header().is_some() {
        let (address, port) = entry.backend_of(key);
        return endpoint(address, port);
    }
    let r = &entry.rewrite;
    if (r.ip_dst, r.dst_port) != (key.dst, key.dst_port) {
        return endpoint(r.ip_dst, r.dst_port);
    }
    snapshot
        .listener(entry.listener)
        .filter(|_| entry.generation == snapshot.generation())
        .and_then(|l| l.get().backends().get(entry.backend as usize))
        .map_or_else(|| "?".to_owned(), |b| b.endpoint.to_string())
}

/// The 5-tuple of a client's packets to a VIP, from `yardctl explain`'s
/// arguments.
pub fn explain_key(protocol: &str, client: &str, vip: &str) -> Result<FlowKey, String> {
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        other => return Err(format!("unknown protocol {other:?}: expected tcp or udp")),
    };
    let parse = |what: &str, text: &str| {
        text.parse::<std::net::SocketAddr>().map_err(|_| {
            format!(
                "invalid {what} address {text:?}: expected address:port (IPv6 as [address]:port)"
            )
        })
    };
    let (client, vip) = (parse("client", client)?, parse("VIP", vip)?);
    if client.is_ipv6() != vip.is_ipv6() {
        return Err(format!(
            "client {client} and VIP {vip} are of different address families: no packet carries both"
        ));
    }
    Ok(FlowKey {
        src: client.ip(),
        dst: vip.ip(),
        src_port: client.port(),
        dst_port: vip.port(),
        protocol,
    })
}

/// What the dataplane does with `key` (client to VIP): the flow a worker
/// holds for it (`found`, the workers' lookups; the most recently used wins
/// should several hold it) and what a new flow would get from `snapshot`,
/// through the same `worker::choose` the packet path takes.
pub fn explain_report(
    snapshot: &Snapshot,
    hash_seed: u32,
    affinity: &AffinityTable,
    key: &FlowKey,
    found: impl Iterator<Item = FlowRecord>,
    now_ns: u64,
) -> ExplainReport {
    let seconds = |ns: u64| ns as f64 / 1e9;
    let protocol = match key.protocol {
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        other => other.to_string(),
    };
    let existing = found
        .filter(|r| r.entry.direction == Direction::ToBackend)
        .max_by_key(|r| r.entry.last_seen_ns)
        .map(|r| ExistingFlow {
            queue: r.queue,
            outer: r.entry.outer_header(),
            mode: listener_of(snapshot, key)
                .map_or_else(String::new, |l| l.forwarding().name().to_owned()),
            snat: (r.entry.outer_header().is_none()
                && (r.entry.rewrite.ip_src != key.src || r.entry.rewrite.src_port != key.src_port))
                .then(|| endpoint(r.entry.rewrite.ip_src, r.entry.rewrite.src_port)),
            backend: backend_of(snapshot, key, &r.entry),
            age_secs: seconds(now_ns.saturating_sub(r.entry.created_ns)),
            idle_secs: seconds(now_ns.saturating_sub(r.entry.last_seen_ns)),
            packets: r.entry.packets,
            bytes: r.entry.bytes,
            stale: r.entry.generation != snapshot.generation(),
            proxy: r.entry.proxy.map(proxy_state),
        });
    let vip = endpoint(key.dst, key.dst_port);
    let mut report = ExplainReport {
        protocol: protocol.clone(),
        client: endpoint(key.src, key.src_port),
        vip: vip.clone(),
        listener: None,
        config_generation: snapshot.generation(),
        existing,
        new_flow: NewFlowDecision::default(),
    };
    let choice = match worker::choose(snapshot, key, hash_seed) {
        Ok(choice) => choice,
        Err(reason) => {
            report.new_flow.reason = match reason {
                DropReason::NotAService => format!(
                    "no listener matches {protocol} {vip}: a new flow would be dropped \
                     ({})",
                    reason.name()
                ),
                other => format!("a new flow would be dropped ({})", other.name()),
            };
            return report;
        }
    };
    let listener = choice.listener.get();
    report.listener = Some(listener.name().to_string());
    let new = &mut report.new_flow;
    new.hash = Some(choice.hash);
    new.slot = Some(choice.slot);
    new.table_size = Some(choice.slots);
    new.affinity = listener.affinity().map(|a| {
        format!(
            "ClientIP, {}s timeout: the slot is chosen by the client address",
            a.timeout_secs
        )
    });
    let hashed = if listener.affinity().is_some() {
        "the client address (ClientIP session affinity)"
    } else {
        "the 5-tuple"
    };
    let slot_text = format!(
        "hash {:#010x} of {hashed} (seed {hash_seed}) selects Maglev slot {} of {}",
        choice.hash, choice.slot, choice.slots
    );
    let now_secs = (now_ns / 1_000_000_000) as u32;
    if let Some((index, entry)) = worker::affine_backend(affinity, listener, key, now_secs) {
        let backend = &listener.backends()[index as usize];
        let group = listener.groups().get(backend.group as usize);
        let idle = now_secs.wrapping_sub(entry.last_used_secs);
        let timeout = listener.affinity().map_or(0, |a| a.timeout_secs);
        new.backend = Some(backend.endpoint.to_string());
        new.backend_weight = Some(backend.effective_weight);
        new.service = group.map(|g| g.service.clone());
        new.group_weight = group.map(|g| g.weight);
        new.affinity_entry = Some(AffinityEntryInfo {
            backend: backend.endpoint.to_string(),
            idle_secs: idle,
            expires_in_secs: timeout.saturating_sub(idle),
        });
        new.reason = format!(
            "ClientIP affinity entry: client {} was given {} at its last new flow {idle}s              ago; it keeps it for {}s more of inactivity while the backend stays in the              listener ({slot_text} would otherwise decide)",
            key.src,
            backend.endpoint,
            timeout.saturating_sub(idle),
        );
        return report;
    }
    match choice
        .backend
        .and_then(|b| listener.backends().get(b as usize))
    {
        Some(backend) => {
            let group = listener.groups().get(backend.group as usize);
            new.backend = Some(backend.endpoint.to_string());
            new.backend_weight = Some(backend.effective_weight);
            new.service = group.map(|g| g.service.clone());
            new.group_weight = group.map(|g| g.weight);
            new.reason = format!(
                "{slot_text}, owned by backend {} of backendRef {} (group weight {}, \
                 effective weight {:.3})",
                backend.endpoint,
                group.map_or("?", |g| g.service.as_str()),
                group.map_or(0, |g| g.weight),
                backend.effective_weight,
            );
        }
        None if listener.groups().is_empty() => {
            new.reason = format!(
                "{slot_text}; the listener has no route attached, so every slot is \
                 unavailable and the flow would be refused ({})",
                DropReason::BackendUnavailable.name()
            );
        }
        None => {
            // The slot table does not record which backendRef an unavailable
            // slot belongs to; only those without endpoints can own one.
            let empty: Vec<_> = listener
                .groups()
                .iter()
                .filter(|g| g.endpoints.is_empty())
                .collect();
            if let [group] = empty.as_slice() {
                new.group_weight = Some(group.weight);
            }
            let services = empty
                .iter()
                .map(|g| g.service.as_str())
                .collect::<Vec<_>>()
                .join(" or ");
            new.service = (!services.is_empty()).then(|| services.clone());
            new.reason = format!(
                "{slot_text}: unavailable share of backendRef {}, which has no ready \
                 endpoints; the flow would be refused ({})",
                if services.is_empty() { "?" } else { &services },
                DropReason::BackendUnavailable.name()
            );
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use switchyard_config::snapshot::{
        Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol, Slot,
    };

    use super::*;
    use switchyard_dataplane::flow::FlowEntry;
    use switchyard_dataplane::packet::Rewrite;

    const BE1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
    const BE2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 22);

    fn endpoint_of(address: Ipv4Addr, port: u16) -> Endpoint {
        Endpoint {
            address: IpAddr::V4(address),
            port,
        }
    }

    /// demo/edge/web at 198.18.100.10:80: backendRef demo/echo (weight 3,
    /// be1 and be2) and demo/empty (weight 1, no endpoints). Slots 0..=2 go
    /// to be1, be2, be1; slots 3 and 4 are the unavailable share (a table
    /// has a prime number of slots).
    fn snapshot(generation: u64) -> Snapshot {
        let echo = vec![endpoint_of(BE1, 8080), endpoint_of(BE2, 8080)];
        let web = Listener::new(ListenerParts {
            name: ListenerName {
                namespace: "demo".into(),
                gateway: "edge".into(),
                listener: "web".into(),
            },
            route: "demo/web".into(),
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10)),
            port: 80,
            listener_port: 80,
            protocol: Protocol::Tcp,
            groups: vec![
                BackendGroup {
                    terminating: false,
                    draining: Vec::new(),
                    health_check: None,
                    service: "demo/echo".into(),
                    weight: 3,
                    endpoints: echo.clone(),
                },
                BackendGroup {
                    terminating: false,
                    draining: Vec::new(),
                    health_check: None,
                    service: "demo/empty".into(),
                    weight: 1,
                    endpoints: vec![],
                },
            ],
            backends: echo
                .iter()
                .map(|&endpoint| Backend {
                    endpoint,
                    group: 0,
                    effective_weight: 1.5,
                })
                .collect(),
            slots: vec![
                Slot::Backend(0),
                Slot::Backend(1),
                Slot::Backend(0),
                Slot::Unavailable,
                Slot::Unavailable,
            ],
            affinity: None,
            forwarding: Default::default(),
            policy: Default::default(),
        })
        .unwrap();
        Snapshot::new(generation, vec![web]).unwrap()
    }

    /// A TCP key from 198.18.1.10 to the VIP whose hash lands in `slot`.
    fn key_in_slot(snapshot: &Snapshot, slot: usize) -> FlowKey {
        (1024..u16::MAX)
            .map(|port| explain_key("tcp", &format!("198.18.1.10:{port}"), "198.18.100.10:80"))
            .map(Result::unwrap)
            .find(|key| worker::choose(snapshot, key, 7).unwrap().slot == slot)
            .expect("some port hashes to every slot")
    }

    fn record(key: FlowKey, backend: Ipv4Addr, generation: u64) -> FlowRecord {
        FlowRecord {
            queue: 3,
            key,
            entry: FlowEntry {
                rewrite: Rewrite {
                    eth_src: [0; 6],
                    eth_dst: [0; 6],
                    ip_src: key.src,
                    ip_dst: backend.into(),
                    src_port: key.src_port,
                    dst_port: 8080,
                },
                egress_port: 1,
                egress_vlan: switchyard_dataplane::neighbor::PackedVlan::NONE,
                egress_mtu: 0,
                direction: Direction::ToBackend,
                tunnel: switchyard_dataplane::packet::Tunnel::None,
                listener: 0,
                backend: 0,
                generation,
                l2_version: 0,
                created_ns: 1_000_000_000,
                last_seen_ns: 3_000_000_000,
                packets: 7,
                bytes: 700,
                syn_only: false,
                closing: false,
                cached: Default::default(),
                cached_at: 0,
                proxy: None,
            },
        }
    }

    #[test]
    fn new_flow_names_slot_backend_and_its_group() {
        let snapshot = snapshot(1);
        let key = key_in_slot(&snapshot, 1);
        let r = explain_report(
            &snapshot,
            7,
            &AffinityTable::new(64),
            &key,
            std::iter::empty(),
            0,
        );
        assert_eq!(r.listener.as_deref(), Some("demo/edge/web"));
        assert_eq!(r.protocol, "TCP");
        assert_eq!(r.vip, "198.18.100.10:80");
        assert!(r.existing.is_none());
        let n = &r.new_flow;
        assert_eq!(n.backend.as_deref(), Some("198.18.2.22:8080"));
        assert_eq!((n.slot, n.table_size), (Some(1), Some(5)));
        assert_eq!(n.service.as_deref(), Some("demo/echo"));
        assert_eq!((n.group_weight, n.backend_weight), (Some(3), Some(1.5)));
        assert!(n.reason.contains("slot 1 of 5"), "{}", n.reason);
        assert!(n.reason.contains("198.18.2.22:8080"), "{}", n.reason);
        assert!(n.reason.contains("of the 5-tuple"), "{}", n.reason);
        assert_eq!(n.affinity, None);
    }

    #[test]
    fn new_flow_under_client_ip_affinity_says_the_client_address_chose_the_slot() {
        let mut web = snapshot(1).listeners()[0].clone().into_parts();
        web.affinity = Some(switchyard_config::snapshot::Affinity { timeout_secs: 600 });
        let snapshot = Snapshot::new(1, vec![Listener::new(web).unwrap()]).unwrap();
        let key = explain_key("tcp", "198.18.1.10:40000", "198.18.100.10:80").unwrap();
        let r = explain_report(
            &snapshot,
            7,
            &AffinityTable::new(64),
            &key,
            std::iter::empty(),
            0,
        );
        let n = &r.new_flow;
        assert_eq!(
            n.affinity.as_deref(),
            Some("ClientIP, 600s timeout: the slot is chosen by the client address")
        );
        assert!(n.reason.contains("of the client address"), "{}", n.reason);
        // Another source port of the same client: the same slot.
        let other = explain_key("tcp", "198.18.1.10:40001", "198.18.100.10:80").unwrap();
        let again = explain_report(
            &snapshot,
            7,
            &AffinityTable::new(64),
            &other,
            std::iter::empty(),
            0,
        );
        assert_eq!(again.new_flow.slot, n.slot);
    }

    #[test]
    fn existing_flow_is_reported_beside_the_new_decision() {
        let snapshot = snapshot(2);
        let key = key_in_slot(&snapshot, 0);
        // Tracked to be2 although a new flow would now go to be1: both shown.
        let found = vec![record(key, BE2, 2)];
        let r = explain_report(
            &snapshot,
            7,
            &AffinityTable::new(64),
            &key,
            found.into_iter(),
            4_000_000_000,
        );
        let e = r.existing.expect("existing flow");
        assert_eq!(e.queue, 3);
        assert_eq!(e.backend, "198.18.2.22:8080");
        assert_eq!((e.packets, e.bytes), (7, 700));
        assert!((e.age_secs - 3.0).abs() < 1e-9);
        assert!((e.idle_secs - 1.0).abs() < 1e-9);
        assert!(!e.stale);
        assert_eq!(r.new_flow.backend.as_deref(), Some("198.18.2.21:8080"));

        let older = vec![record(key, BE2, 1)];
        let r = explain_report(
            &snapshot,
            7,
            &AffinityTable::new(64),
            &key,
            older.into_iter(),
            4_000_000_000,
        );
        assert!(r.existing.unwrap().stale, "decided under generation 1");
    }

    #[test]
    fn unavailable_share_names_the_backend_ref_without_endpoints() {
        let snapshot = snapshot(1);
        let key = key_in_slot(&snapshot, 3);
        let r = explain_report(
            &snapshot,
            7,
            &AffinityTable::new(64),
            &key,
            std::iter::empty(),
            0,
        );
        let n = &r.new_flow;
        assert_eq!(r.listener.as_deref(), Some("demo/edge/web"));
        assert_eq!(n.backend, None);
        assert_eq!(n.slot, Some(3));
        assert_eq!(n.service.as_deref(), Some("demo/empty"));
        assert_eq!(n.group_weight, Some(1));
        assert_eq!(n.backend_weight, None);
        assert!(
            n.reason
                .contains("unavailable share of backendRef demo/empty"),
            "{}",
            n.reason
        );
    }

    #[test]
    fn unknown_vip_says_no_listener_matches() {
        let snapshot = snapshot(1);
        for (protocol, vip) in [("tcp", "198.18.100.10:81"), ("udp", "198.18.100.10:80")] {
            let key = explain_key(protocol, "198.18.1.10:40000", vip).unwrap();
            let r = explain_report(
                &snapshot,
                7,
                &AffinityTable::new(64),
                &key,
                std::iter::empty(),
                0,
            );
            assert_eq!(r.listener, None);
            assert_eq!(r.new_flow.backend, None);
            assert_eq!(r.new_flow.slot, None);
            assert!(
                r.new_flow.reason.contains("no listener matches"),
                "{}",
                r.new_flow.reason
            );
        }
    }

    #[test]
    fn explain_key_rejects_bad_arguments() {
        assert!(explain_key("sctp", "1.2.3.4:1", "1.2.3.4:2").is_err());
        assert!(explain_key("tcp", "1.2.3.4", "1.2.3.4:2").is_err());
        assert!(explain_key("tcp", "1.2.3.4:1", "[::1]:2")
            .unwrap_err()
            .contains("different address families"));
        let v6 = explain_key("tcp", "[2001:db8::a]:40000", "[2001:db8::1]:80").unwrap();
        assert_eq!(
            (v6.src, v6.dst),
            (
                "2001:db8::a".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse::<IpAddr>().unwrap()
            )
        );
        let key = explain_key("UDP", "1.2.3.4:1", "5.6.7.8:2").unwrap();
        assert_eq!(
            (key.src, key.src_port, key.dst, key.dst_port, key.protocol),
            (
                IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
                1,
                IpAddr::V4(Ipv4Addr::new(5, 6, 7, 8)),
                2,
                17
            )
        );
    }
}
