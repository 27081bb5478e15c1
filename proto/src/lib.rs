//! The control-socket protocol of Switchyard: the requests `yardctl` (and
//! any other client, such as the kube watcher) sends to `switchyard run`,
//! the responses and reports it answers with, their framing and size
//! limits, and a blocking client. Both sides build on these types, so they
//! cannot drift apart. This crate must never depend on the daemon, the CLI
//! or the packet path: it is plain data and serde.
//!
//! One request per connection: the client writes one JSON object and a
//! newline, the daemon answers with one JSON object and a newline, then
//! closes. The JSON printed by `yardctl -o json` is exactly the response
//! payload, so scripts and tests read the same shapes the daemon sends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod client;
mod inventory;
pub use inventory::*;

/// Where both sides look for the socket unless told otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/switchyard/control.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stats,
    Flows,
    /// Which listener and backend a 5-tuple gets, without sending a packet.
    Explain {
        /// `tcp` or `udp`.
        protocol: String,
        /// `address:port` of the client.
        client: String,
        /// `address:port` the client connects to.
        vip: String,
    },
    /// Which config is running and how the last reload went.
    ConfigStatus,
    Listeners,
    Backends {
        /// Only this listener's (`namespace/gateway/listener`).
        #[serde(default)]
        listener: Option<String>,
    },
    /// `Flows` filtered, sorted and limited by the daemon.
    QueryFlows(FlowQuery),
    /// No new flows to `backend` (`address:port`); established ones continue.
    Drain {
        backend: String,
        /// Only on this listener; on every listener that has it when null.
        #[serde(default)]
        listener: Option<String>,
    },
    Undrain {
        backend: String,
        #[serde(default)]
        listener: Option<String>,
    },
    /// What the daemon would make of a config file, without applying it.
    ConfigCheck(CandidateConfig),
    /// What applying a config file would change, per listener.
    ConfigDiff(CandidateConfig),
    /// Per-worker batch latency, packets per batch and control-serving
    /// time distributions.
    Latency,
    /// A cluster's objects, from `switchyard-kube`: resolved and applied as
    /// a config file's would be, answered with the statuses to write back.
    ApplyCluster(ClusterConfig),
    /// This LB node: its name, whether it is drained, what it announces and
    /// the peers it knows.
    Node,
    /// Withdraw every announcement of this node, so the network sends its
    /// traffic to the other LB nodes; flows that still arrive are served.
    NodeDrain,
    /// Announce again what the config asks for.
    NodeUndrain,
    /// From a `switchyard run --takeover` starting on the same node: stop
    /// the workers and close their AF_XDP sockets (so the new daemon can
    /// bind the same queues), leave announcements, the pinned XDP program
    /// and its maps as they are, and exit. Answered once the sockets are
    /// closed.
    HandOver,
}

/// Largest config file `config check` and `config diff` send. The contents
/// travel in the request (the daemon may not be able to read the operator's
/// path); far above any real config, small enough to compile at once.
/// Equal to `switchyard_config::MAX_FILE_BYTES` (asserted by the daemon).
pub const MAX_CANDIDATE_CONFIG_BYTES: usize = 4 << 20;

/// Longest request line the daemon reads; a longer one is answered with an
/// error naming this limit. Room for the largest cluster config (the largest
/// contents any request carries) after JSON escaping: a quote, a backslash
/// or a newline escapes to two bytes, and objects sent as JSON documents are
/// full of quotes, so twice the contents plus the envelope.
pub const MAX_REQUEST_BYTES: usize = 2 * MAX_CLUSTER_CONFIG_BYTES + (64 << 10);

/// Largest resource set `ApplyCluster` carries: a cluster's objects of the
/// kinds Switchyard reads (EndpointSlices and Pods of a large cluster take
/// most of it). Larger contents are refused with an error naming this
/// limit.
pub const MAX_CLUSTER_CONFIG_BYTES: usize = 16 << 20;

/// How long the daemon may take to answer `ApplyCluster`: the contents are
/// compiled, the XDP maps programmed and new backends' MACs resolved before
/// it answers. Past it the daemon answers an error (the update may still be
/// applied: `yardctl config status` says, and the next update is compared
/// with whatever runs). Compiling the largest contents takes a fraction of
/// this (measured in `switchyard`'s tests).
pub const CLUSTER_APPLY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A cluster's objects as `switchyard-kube` sees them, complete (every
/// watch has listed since it last started): the text a config file would
/// hold for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Where the objects come from, for `yardctl config status` and in
    /// errors: e.g. `cluster https://10.96.0.1:443`.
    pub source: String,
    /// The objects as one multi-document YAML text (a JSON object is a
    /// YAML document), each with `apiVersion`, `kind`, `metadata` (name,
    /// namespace, labels, generation) and `spec` (and what else a config
    /// file's object of that kind reads, e.g. an EndpointSlice's
    /// `endpoints`).
    pub contents: String,
}

impl ClusterConfig {
    /// How the config is named in `yardctl config status` and in errors:
    /// `cluster <source>` (a source that already says `cluster` is taken
    /// as it is).
    pub fn name(&self) -> String {
        cluster_name(&self.source)
    }

    /// Why the daemon refuses these contents before reading them: larger
    /// than `MAX_CLUSTER_CONFIG_BYTES`.
    pub fn too_large(&self) -> Option<String> {
        (self.contents.len() > MAX_CLUSTER_CONFIG_BYTES).then(|| {
            format!(
                "{}: {} bytes of objects, more than the {MAX_CLUSTER_CONFIG_BYTES} bytes \
                 (MAX_CLUSTER_CONFIG_BYTES) one update may carry",
                self.name(),
                self.contents.len()
            )
        })
    }
}

/// `cluster <source>`, one line, whatever the sender put in `source`.
pub fn cluster_name(source: &str) -> String {
    let source: String = source
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if source.is_empty() {
        "cluster".to_owned()
    } else if source == "cluster" || source.starts_with("cluster ") {
        source
    } else {
        format!("cluster {source}")
    }
}

/// What became of an `ApplyCluster` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterApplyOutcome {
    /// Resolved, programmed and running as `generation`.
    Applied,
    /// The same objects as running: nothing changed.
    Unchanged,
    /// Invalid, or could not be programmed: the running config stays
    /// (`error` says why).
    Refused,
}

/// The daemon's answer to `ApplyCluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterApplyReport {
    pub outcome: ClusterApplyOutcome,
    /// Generation of the config running after the request.
    pub generation: u64,
    /// Why the update was refused.
    #[serde(default)]
    pub error: Option<String>,
    /// What resolution had to say about the running config (one line each).
    #[serde(default)]
    pub diagnostics: Vec<String>,
    /// The status of every object Switchyard is responsible for under the
    /// running config, one `{apiVersion, kind, metadata: {namespace, name},
    /// status}` each, as `switchyard_config::status::ResourceStatus`
    /// serializes (conditions carry `observedGeneration`, never
    /// `lastTransitionTime`: the writer stamps it when a condition
    /// changes).
    #[serde(default)]
    pub statuses: Vec<serde_json::Value>,
}

/// A config file as the operator named it, with its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateConfig {
    /// The path as given, for `file:line` in errors.
    pub file: String,
    pub contents: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Stats(StatsReport),
    Flows(FlowsReport),
    /// Boxed: much larger than the other answers; the JSON is the same.
    Explain(Box<ExplainReport>),
    ConfigStatus(ConfigStatusReport),
    Listeners(ListenersReport),
    Backends(BackendsReport),
    Drain(DrainReport),
    ConfigCheck(ConfigCheckReport),
    ConfigDiff(ConfigDiffReport),
    Latency(LatencyReport),
    ApplyCluster(ClusterApplyReport),
    Node(NodeReport),
    HandOver(HandOverReport),
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub uptime_secs: u64,
    /// The config file, or `cluster <source>` (see `ConfigStatusReport`).
    pub config_path: String,
    /// `file` or `cluster`; daemons that do not say read files.
    #[serde(default)]
    pub config_source: ConfigSource,
    pub config_generation: u64,
    pub interfaces: Vec<InterfaceStatus>,
    pub workers: Vec<WorkerStatus>,
    /// Outcome of the config reloads so far.
    #[serde(default)]
    pub reload: ReloadSummary,
    /// The XDP flow cache; absent when it is off.
    #[serde(default)]
    pub fast_path: Option<FastPathStatus>,
    /// How the running config's listeners forward, and the node's SNAT
    /// ports.
    #[serde(default)]
    pub forwarding: ForwardingStatus,
}

/// The forwarding modes in use, as `yardctl status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardingStatus {
    /// Listeners of the running config per mode (`nat`, `fullnat`, ...).
    pub listeners: BTreeMap<String, u64>,
    /// `switchyard run --snat-ports`, as `FIRST-LAST`; absent without one
    /// (new `fullnat` flows are then refused).
    #[serde(default)]
    pub snat_ports: Option<String>,
    /// Each worker's slice of it, by queue, as `FIRST-LAST`.
    #[serde(default)]
    pub snat_slices: Vec<String>,
}

/// The XDP flow cache (fast path) as `yardctl status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FastPathStatus {
    /// Flows it can hold, over all workers.
    pub capacity: u32,
    /// Flows it holds now (including entries of older generations that no
    /// longer apply and wait for their flow's next packet or for eviction).
    pub entries: u64,
    /// The running config generation; an entry applies while it carries
    /// its listener's epoch (the generation that listener last changed
    /// in) and this L2 epoch.
    pub generation: u64,
    pub l2_epoch: u64,
}

/// The part of `ConfigStatusReport` `yardctl status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadSummary {
    /// Generation the config file was last applied as (drains publish
    /// later generations of the same config).
    #[serde(alias = "generation")]
    pub file_generation: u64,
    pub reloads: u64,
    pub failed_reloads: u64,
    /// The last refused reload, if it came after the last applied one.
    pub last_error: Option<ConfigError>,
    /// How the last reload attempt ended: `none` (no reload yet),
    /// `applied` or `refused`.
    #[serde(default)]
    pub last_result: String,
    /// What the last update (a reload, or a cluster's `ApplyCluster`) did;
    /// absent before the first, and from daemons that do not say.
    #[serde(default)]
    pub last_update: Option<ConfigUpdate>,
}

/// `ReloadSummary::last_result` values.
pub const RELOAD_NONE: &str = "none";
pub const RELOAD_APPLIED: &str = "applied";
pub const RELOAD_REFUSED: &str = "refused";
/// A cluster update with the objects already running: nothing to do.
pub const RELOAD_UNCHANGED: &str = "unchanged";

/// Where the running config comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// `switchyard run --config FILE`, reloaded when it changes.
    #[default]
    File,
    /// `switchyard run --cluster`: objects sent by `switchyard-kube`.
    Cluster,
}

/// One update of the config and what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUpdate {
    /// `applied`, `unchanged` or `refused`.
    pub outcome: String,
    /// Unix time it was decided.
    pub at_unix: u64,
    /// Generation running after it.
    pub generation: u64,
    /// Why it was refused.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    /// `native` or `generic`.
    pub xdp_mode: String,
    /// Receive queues served, one AF_XDP socket and worker each.
    #[serde(default)]
    pub queues: u32,
    /// Receive queues the device has.
    #[serde(default)]
    pub rx_queues: u32,
    /// The kernel driver (`veth`, `virtio_net`, `mlx5_core`, ...), as
    /// `ethtool -i` names it; empty when the device does not say.
    #[serde(default)]
    pub driver: String,
    /// For a veth: the other end, where the frames it sends arrive.
    #[serde(default)]
    pub veth_peer: Option<VethPeer>,
    /// Whether the XDP fast path sends frames out of this interface, and
    /// why (not); absent when the fast path is off.
    #[serde(default)]
    pub fast_path_egress: Option<FastPathEgress>,
}

/// The other end of a veth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethPeer {
    pub name: String,
    /// Its ifindex, in its own network namespace.
    pub ifindex: u32,
    /// Its network namespace: a name under /run/netns, `nsid N` (this
    /// namespace's id for it) when it has none there, empty when it is
    /// this one.
    pub netns: String,
    /// Whether it receives in NAPI (an XDP program attached, or GRO on):
    /// frames sent into the veth by XDP (XDP_TX, redirects) reach it only
    /// then. Absent when the kernel does not say (before Linux 6.3).
    pub napi: Option<bool>,
    /// Whether an XDP program is attached to it.
    pub xdp: bool,
}

/// Whether the XDP fast path sends frames out of an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathEgress {
    /// The fast path sends the frames of cached flows out of it; false:
    /// the kernel would drop them there, so flows leaving by it stay with
    /// the workers (slower, not lost).
    pub open: bool,
    /// How the fast path sends a frame back out of the interface it came
    /// in on: `xdp_tx` or `redirect` (`--fast-path-tx`).
    pub hairpin: String,
    /// What the decision rests on and, when closed, what to change.
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub queue: u32,
    /// The core the worker was to be pinned to.
    pub core: Option<usize>,
    /// Whether pinning to `core` succeeded; false without a core.
    #[serde(default)]
    pub pinned: bool,
    /// `zero-copy` or `copy`, per interface socket, in interface order.
    pub afxdp_modes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    /// Flows created (forward direction, client to VIP).
    pub flows: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListenerStats {
    /// `namespace/gateway/listener`.
    pub listener: String,
    pub protocol: String,
    /// `address:port`.
    pub vip: String,
    /// Both paths: the workers' and the fast path's.
    #[serde(flatten)]
    pub counters: Counters,
    /// Of those, what the XDP fast path sent.
    #[serde(default)]
    pub fast_path_packets: u64,
    #[serde(default)]
    pub fast_path_bytes: u64,
    /// Drops that belong to this listener (`backend_unavailable`,
    /// `backend_removed`, `source_denied`, `new_flow_rate_limited`,
    /// `max_flows_reached`), by reason; zero counts omitted. They are also
    /// in the workers' drops, except the part of `source_denied` the XDP
    /// program dropped (in `xdp_steering` as `drop_source_denied`).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackendStats {
    pub listener: String,
    /// `address:port`.
    pub backend: String,
    pub service: String,
    /// Both paths: the workers' and the fast path's.
    #[serde(flatten)]
    pub counters: Counters,
    /// Of those, what the XDP fast path sent.
    #[serde(default)]
    pub fast_path_packets: u64,
    #[serde(default)]
    pub fast_path_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    pub queue: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Flows this worker created (client to VIP), over the listeners the
    /// running config still has.
    #[serde(default)]
    pub flows: u64,
    /// Drops by named reason; reasons with a zero count are omitted.
    pub drops: BTreeMap<String, u64>,
    /// Frames forwarded whose TCP/UDP checksum the sender had left partial
    /// (tx checksum offload, through a veth) and the worker computed in
    /// full; their flows stay off the XDP fast path.
    #[serde(default)]
    pub partial_checksums: u64,
    /// Echo requests to a VIP address the worker answered itself.
    #[serde(default)]
    pub echo_replies: u64,
    /// ICMP errors about a client's flow, arriving for a VIP, sent on to
    /// the flow's backend (path MTU discovery, unreachables).
    #[serde(default)]
    pub icmp_to_backend: u64,
    /// ICMP errors a backend sent about a client's packet, sent on to the
    /// client as from the VIP.
    #[serde(default)]
    pub icmp_to_client: u64,
    /// What the worker wrote into the XDP flow cache (zero with the fast
    /// path off).
    #[serde(default)]
    pub fast_path: WorkerCacheStats,
    /// What the worker did with fragmented datagrams.
    #[serde(default)]
    pub fragments: WorkerFragmentStats,
    /// VLAN tags the worker changed for frames' egress links.
    #[serde(default)]
    pub vlan: WorkerVlanStats,
    /// Packets too big for their egress link answered with ICMP
    /// fragmentation-needed or packet-too-big (each also a `frame_too_big`
    /// drop).
    #[serde(default)]
    pub too_big_answered: u64,
    /// Packets sent encapsulated toward their backend (`ipip`, `gue`).
    #[serde(default)]
    pub encapsulated: u64,
    /// PROXY protocol headers spliced into client segments (`fullnat`
    /// listeners with `proxyProtocol`).
    #[serde(default)]
    pub proxy_headers: u64,
    /// New `fullnat` flows refused because this worker's share of the SNAT
    /// port range had no free port, by SNAT address (each also a
    /// `snat_ports_exhausted` drop); addresses with none are omitted.
    #[serde(default)]
    pub snat_exhausted: BTreeMap<String, u64>,
}

/// A worker's VLAN tag changes: a frame leaves with its next hop's tag
/// (a route out of a VLAN link of the interface) whatever it came with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerVlanStats {
    /// Frames that came untagged and left tagged.
    pub pushed: u64,
    /// Frames that came tagged and left untagged.
    pub popped: u64,
    /// Frames whose tag was rewritten to another VLAN's.
    pub retagged: u64,
}

/// A worker's fragments: the first of each datagram is decided as its
/// flow, the rest follow it (their drops are counted with the others, as
/// `fragment_without_first`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFragmentStats {
    /// First fragments forwarded, their datagram's decision remembered.
    pub first: u64,
    /// Later fragments forwarded on their first fragment's decision.
    pub later: u64,
    /// Datagrams whose decision a full fragment table gave up for a newer
    /// one before it expired.
    pub evicted: u64,
}

/// A worker's writes into the XDP flow cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCacheStats {
    /// Entries the kernel wrote.
    pub installed: u64,
    /// Entries queued that the kernel did not write (a batch update it
    /// stopped part way); their flows are offered again.
    pub unwritten: u64,
    /// Flows installed again because the cache had lost their entry (its
    /// LRU evicted it) while the worker still held the flow.
    pub lost: u64,
}

/// Packets and bytes count both directions of a flow: client to backend and
/// the backend's replies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub listeners: Vec<ListenerStats>,
    pub backends: Vec<BackendStats>,
    pub workers: Vec<WorkerStats>,
    /// Sum of the workers' drops.
    pub drops: BTreeMap<String, u64>,
    /// The XDP steering program's counters over all CPUs, by name
    /// (`steer_vip`, `steer_reply`, `pass_not_service`, ...), zeros
    /// included: what reached the workers and what the kernel kept.
    #[serde(default)]
    pub xdp_steering: BTreeMap<String, u64>,
}

/// `yardctl latency`: per worker, distributions since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    pub workers: Vec<WorkerLatency>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerLatency {
    pub queue: u32,
    /// Nanoseconds per batch, over batches that received at least one
    /// packet: receive, decide, rewrite and hand back for transmit.
    pub batch_ns: Distribution,
    /// Packets per batch over the same batches; `total` equals the
    /// worker's received packets.
    pub packets_per_batch: Distribution,
    /// Nanoseconds spent answering control requests (yardctl, metrics
    /// scrapes) in one gap between batches, over gaps that had any.
    pub control_ns: Distribution,
}

/// A recorded distribution: quantiles within 1% of the value (exact for
/// small batch sizes), `total` exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    /// Sum of the recorded values.
    pub total: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowInfo {
    pub protocol: String,
    /// `address:port` of the client as the backend sees it (preserved).
    pub client: String,
    pub vip: String,
    pub backend: String,
    pub listener: String,
    /// Both directions, both paths.
    pub packets: u64,
    pub bytes: u64,
    /// Of those, what the XDP fast path sent (since its entries were last
    /// written).
    #[serde(default)]
    pub fast_path_packets: u64,
    #[serde(default)]
    pub fast_path_bytes: u64,
    /// Whether the fast path holds the flow's current decision (either
    /// direction).
    #[serde(default)]
    pub fast_path: bool,
    pub age_secs: f64,
    pub idle_secs: f64,
    /// Queues of the workers that saw the flow, in either direction.
    pub workers: Vec<u32>,
    /// The outer header of an encapsulated flow (`ipip SRC -> DST`, `gue
    /// SRC:PORT -> DST:PORT`); absent for the modes that rewrite in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer: Option<String>,
    /// The listener's forwarding mode: `nat`, `fullnat`, `dsr`, ...
    #[serde(default)]
    pub mode: String,
    /// `fullnat`: the `address:port` the backend sees the flow come from.
    #[serde(default)]
    pub snat: Option<String>,
    /// A `fullnat` TCP flow whose backend reads a PROXY protocol header:
    /// whether the backend has acknowledged it (`v2 acknowledged`) or not
    /// yet (`v2 sent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowsReport {
    pub flows: Vec<FlowInfo>,
}

/// `yardctl explain`: what the dataplane does with one 5-tuple, client to
/// VIP, computed by the same function the packet path uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExplainReport {
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub client: String,
    pub vip: String,
    /// `namespace/gateway/listener` matching the VIP, or null when none does.
    pub listener: Option<String>,
    /// Generation of the config the new-flow decision was computed under.
    pub config_generation: u64,
    /// The flow a worker tracks for this 5-tuple, if any.
    pub existing: Option<ExistingFlow>,
    /// What a new flow with this 5-tuple would get now (always computed: an
    /// existing flow may predate a config change).
    pub new_flow: NewFlowDecision,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExistingFlow {
    /// Queue of the worker whose flow table holds it.
    pub queue: u32,
    /// The listener's forwarding mode: `nat`, `fullnat`, `dsr`, ...
    #[serde(default)]
    pub mode: String,
    /// `fullnat`: the `address:port` the backend sees the flow come from.
    #[serde(default)]
    pub snat: Option<String>,
    /// `address:port` the flow is translated to.
    pub backend: String,
    pub age_secs: f64,
    pub idle_secs: f64,
    /// This direction (client to backend) only.
    pub packets: u64,
    pub bytes: u64,
    /// Decided under an older config generation. Its next packet keeps
    /// this backend if the current config still has it behind the VIP;
    /// otherwise the flow is decided afresh, as `new_flow` says.
    pub stale: bool,
    /// The outer header of an encapsulated flow, as in `FlowInfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer: Option<String>,
    /// The PROXY protocol header, as in `FlowInfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewFlowDecision {
    /// `address:port`, or null when the flow would be refused.
    pub backend: Option<String>,
    /// `flow_hash(5-tuple, seed)`, or `client_hash(source, seed)` under
    /// session affinity.
    pub hash: Option<u32>,
    /// Maglev slot `hash % table_size`.
    pub slot: Option<usize>,
    pub table_size: Option<usize>,
    /// The backend's share of its group's weight.
    pub backend_weight: Option<f64>,
    /// `namespace/name` of the backendRef owning the slot; for an
    /// unavailable share, the backendRef(s) without endpoints.
    pub service: Option<String>,
    pub group_weight: Option<u32>,
    /// The listener's session affinity, e.g. "ClientIP, 10800s timeout:
    /// the slot is chosen by the client address"; null without one.
    #[serde(default)]
    pub affinity: Option<String>,
    /// The client's live entry in the affinity table, which decides
    /// instead of the slot while its backend stays in the listener.
    #[serde(default)]
    pub affinity_entry: Option<AffinityEntryInfo>,
    /// One human sentence saying why.
    pub reason: String,
    /// The backend that owns the slot in the config but fails its health
    /// check, so the flow went elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkippedBackend>,
}

/// A backend a new flow would have had, were it healthy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkippedBackend {
    /// `address:port`.
    pub backend: String,
    /// `unhealthy` or `flapping`.
    pub health: String,
    /// Why, e.g. `3 probes failed in a row: connect: Connection refused`.
    pub reason: String,
}

/// `yardctl config status`: the config the workers run, and the outcome of
/// the last attempt to replace it. A failed reload leaves the running config
/// in place, so both are reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatusReport {
    /// The config file; for a cluster, its name as `source` says it.
    pub path: String,
    /// `file` or `cluster`; daemons that do not say read files.
    #[serde(default)]
    pub source_kind: ConfigSource,
    /// What the running config came from, as shown: the file path, or
    /// `cluster <source>` (`cluster (none yet)` before a cluster sent any);
    /// empty from daemons that do not say (`path` names the file then).
    #[serde(default)]
    pub source: String,
    /// Generation of the running snapshot, as `yardctl status` shows it:
    /// every applied reload and every drain publishes one.
    pub generation: u64,
    /// Generation the config file was last applied as; drains publish
    /// later generations of the same file.
    #[serde(default)]
    pub file_generation: u64,
    /// Unix time the running config file was applied.
    pub applied_at_unix: u64,
    /// SHA-256 of the file contents the running config came from, hex.
    pub sha256: String,
    pub listeners: usize,
    /// What resolution had to say about the running config (one line each).
    pub diagnostics: Vec<String>,
    /// Reloads applied since start (the initial load is not one).
    pub reloads: u64,
    /// Reload attempts refused because the file was invalid or could not
    /// be programmed.
    pub failed_reloads: u64,
    /// The last refused reload, if it came after the last applied one.
    pub last_error: Option<ConfigError>,
    /// How the last reload attempt ended, as in `ReloadSummary`.
    #[serde(default)]
    pub last_result: String,
    /// Cluster updates that carried the objects already running.
    #[serde(default)]
    pub unchanged_updates: u64,
    /// What the last update did, as in `ReloadSummary`.
    #[serde(default)]
    pub last_update: Option<ConfigUpdate>,
}

impl ConfigStatusReport {
    /// How the last update ended: `none`, `applied`, `unchanged` (a
    /// cluster's) or `refused`.
    pub fn last_result(&self) -> &'static str {
        match self.last_update.as_ref().map(|u| u.outcome.as_str()) {
            Some(RELOAD_UNCHANGED) => return RELOAD_UNCHANGED,
            Some(RELOAD_APPLIED) => return RELOAD_APPLIED,
            Some(RELOAD_REFUSED) => return RELOAD_REFUSED,
            _ => {}
        }
        if self.last_error.is_some() {
            RELOAD_REFUSED
        } else if self.reloads > 0 {
            RELOAD_APPLIED
        } else {
            RELOAD_NONE
        }
    }

    /// The part `yardctl status` shows; both commands read it from here,
    /// so they cannot disagree.
    pub fn summary(&self) -> ReloadSummary {
        ReloadSummary {
            file_generation: self.file_generation,
            reloads: self.reloads,
            failed_reloads: self.failed_reloads,
            last_error: self.last_error.clone(),
            last_result: self.last_result().to_owned(),
            last_update: self.last_update.clone(),
        }
    }

    /// What the running config came from: `source`, or `path` from a
    /// daemon that does not say.
    pub fn source_name(&self) -> &str {
        if self.source.is_empty() {
            &self.path
        } else {
            &self.source
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigError {
    pub at_unix: u64,
    /// `file:line: what and why`, as `switchyard check` prints it.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AffinityEntryInfo {
    /// `address:port` the client's new flows go to.
    pub backend: String,
    /// Seconds since the client's last new flow.
    pub idle_secs: u32,
    /// Seconds of further inactivity before the entry expires.
    pub expires_in_secs: u32,
}

/// `yardctl config check`: the file compiled the way the running daemon
/// compiles its own (same cluster domain and Maglev seed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigCheckReport {
    pub file: String,
    /// Whether a reload with this file would be accepted.
    pub valid: bool,
    /// `file:line: what and why` when it would be refused.
    pub error: Option<String>,
    /// Listeners the file would serve (VIP and port pairs).
    pub listeners: usize,
    /// What resolution had to say (one line each); not reasons to refuse.
    pub diagnostics: Vec<String>,
    /// The file is byte for byte the running config: applying it changes
    /// nothing.
    pub same_as_running: bool,
}

/// `yardctl config diff`: the running config against a candidate file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigDiffReport {
    pub file: String,
    pub running_generation: u64,
    /// Every listener of either config, running order then added ones.
    pub listeners: Vec<ListenerDiff>,
    /// What resolution had to say about the candidate.
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerChange {
    Added,
    Removed,
    Changed,
    Unchanged,
}

impl ListenerChange {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One listener, identified by `namespace/gateway/listener` (and its VIP,
/// for a Gateway with several addresses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerDiff {
    pub listener: String,
    pub change: ListenerChange,
    pub protocol: String,
    /// `address:port`: the candidate's, or the running one's if removed.
    pub vip: String,
    /// Settings that differ: address, port, listener_port, protocol, route,
    /// backend_refs, table_size, affinity.
    pub fields: Vec<FieldChange>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<RemovedBackend>,
    pub backends_reweighted: Vec<Reweight>,
    /// Backends in both configs whose state (`ready`, `terminating`,
    /// `draining`, as `yardctl backends` says) changes.
    #[serde(default)]
    pub backends_state_changed: Vec<StateChange>,
    /// Share of new flows whose backend would change (hash space compared
    /// by backend endpoint); 1.0 for an added or removed listener.
    pub moved_slots_fraction: f64,
    /// Established client flows the workers hold on the running listener
    /// (none for an added one).
    pub active_flows: u64,
    /// Of those, the flows on backends that would go away (all of them if
    /// the listener is removed): TCP ones are reset, UDP ones rehashed.
    pub flows_on_removed_backends: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedBackend {
    /// `address:port`.
    pub backend: String,
    /// Established client flows the workers hold on it for this listener.
    pub active_flows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// `address:port`.
    pub backend: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reweight {
    pub backend: String,
    /// The backend's effective weight (its backendRef's weight spread over
    /// the backendRef's endpoints).
    pub from: f64,
    pub to: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_named_once_whatever_the_sender_put_in_source() {
        assert_eq!(
            cluster_name("https://10.96.0.1:443"),
            "cluster https://10.96.0.1:443"
        );
        assert_eq!(
            cluster_name("cluster https://10.96.0.1:443"),
            "cluster https://10.96.0.1:443"
        );
        assert_eq!(cluster_name(""), "cluster");
        assert_eq!(cluster_name("a\nb"), "cluster a b");
    }

    #[test]
    fn contents_over_the_limit_are_named_with_the_limit() {
        let mut config = ClusterConfig {
            source: "https://10.96.0.1:443".into(),
            contents: "#".repeat(MAX_CLUSTER_CONFIG_BYTES),
        };
        assert_eq!(config.too_large(), None);
        config.contents.push('#');
        let why = config.too_large().expect("refused");
        assert!(why.contains(&MAX_CLUSTER_CONFIG_BYTES.to_string()), "{why}");
        assert!(why.starts_with("cluster https://10.96.0.1:443: "), "{why}");
    }

    #[test]
    fn the_largest_cluster_config_fits_a_request_line_even_all_quotes() {
        let request = Request::ApplyCluster(ClusterConfig {
            source: "https://10.96.0.1:443".into(),
            contents: "\"".repeat(MAX_CLUSTER_CONFIG_BYTES),
        });
        let line = serde_json::to_vec(&request).unwrap();
        assert!(line.len() <= MAX_REQUEST_BYTES, "{}", line.len());
    }

    #[test]
    fn reports_from_daemons_that_do_not_name_their_source_still_parse() {
        let old = r#"{"path":"gw.yaml","generation":2,"applied_at_unix":1,"sha256":"ab",
            "listeners":1,"diagnostics":[],"reloads":1,"failed_reloads":0,"last_error":null}"#;
        let report: ConfigStatusReport = serde_json::from_str(old).unwrap();
        assert_eq!(report.source_kind, ConfigSource::File);
        assert_eq!(report.source_name(), "gw.yaml");
        assert_eq!(report.last_update, None);
        assert_eq!(report.last_result(), RELOAD_APPLIED);
    }
}

/// `Node`, `NodeDrain` and `NodeUndrain`: this LB node as the network sees
/// it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// `--node-name`: what other LB nodes and the election know it by.
    pub name: String,
    /// `yardctl node drain` in force: nothing is announced.
    pub drained: bool,
    /// One per VIP and mode the config asks to announce.
    pub announcements: Vec<AnnouncementStatus>,
    /// Other LB nodes of the L2 segment, as heard from.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

/// Announced: this node tells the network the VIP is here.
pub const ANNOUNCE_ANNOUNCED: &str = "announced";
/// Another LB node announces the VIP (L2: the elected owner).
pub const ANNOUNCE_STANDBY: &str = "standby";
/// Not announced: the node is drained, or the speaker failed (see detail).
pub const ANNOUNCE_WITHDRAWN: &str = "withdrawn";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnnouncementStatus {
    pub address: String,
    /// `L2` or `BGP`.
    pub mode: String,
    /// `namespace/name` of the Gateway that asked for it.
    pub gateway: String,
    /// `ANNOUNCE_*`.
    pub state: String,
    /// Why, in words: the owner's name for a standby, the error for a
    /// speaker that failed, the BIRD protocol for BGP.
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    /// Where its heartbeats come from.
    pub address: String,
    /// `alive`, `draining` or `dead`.
    pub state: String,
    /// Milliseconds since its last heartbeat.
    pub last_heard_ms: u64,
}

/// `HandOver`: the daemon that released its sockets for a successor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOverReport {
    /// Its process id; it exits once it has answered.
    pub pid: u32,
    /// When its last AF_XDP socket was closed, on CLOCK_MONOTONIC in ns:
    /// from then on no worker is bound until the successor's are.
    pub released_monotonic_ns: u64,
    /// Flows its workers held, for the log.
    pub flows: u64,
}
