//! `switchyard run --metrics-listen ADDR`: the counters and histograms
//! `yardctl` shows, as Prometheus text exposition (format 0.0.4) on
//! `GET /metrics`.
//!
//! A scrape reads through the control socket's own functions (`stats`,
//! `status`, active flows, latency), so the numbers are the ones `yardctl`
//! prints, and the workers answer it between batches like any control
//! request. The HTTP server is a small blocking one (tiny_http) on its own
//! thread; nothing here is on the packet path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use switchyard_proto::{BackendsReport, ListenersReport, StatsReport, StatusReport};

use crate::control::{self, inventory, ControlState, LISTENER_DROPS};
use switchyard_dataplane::drop_reason::DropReason;
use switchyard_dataplane::latency::{LatencySnapshot, Recorded};

use crate::health::monitor::ProbeStats;

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the duration histograms, in nanoseconds: 1 µs to 1 s.
/// Health probe latency bounds: a probe on a LAN answers in well under a
/// millisecond, one that times out takes its timeout (up to an hour).
const PROBE_BOUNDS_NS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];
const DURATION_BOUNDS_NS: [u64; 16] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    1_000_000_000,
];
/// Upper bounds of the packets-per-batch histogram.
const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("listening for metrics scrapes on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("starting the metrics thread")]
    Thread(#[source] std::io::Error),
}

/// Everything one scrape shows, read from the daemon at once.
#[derive(Debug, Clone)]
pub struct MetricsSample {
    pub status: StatusReport,
    pub stats: StatsReport,
    pub listeners: ListenersReport,
    pub backends: BackendsReport,
    pub latency: Vec<LatencySnapshot>,
    /// The health monitor's probes per kind; empty when no check runs.
    pub probes: Vec<ProbeStats>,
}

/// Reads a sample through the control socket's functions; one walk of
/// the flow tables serves both the listeners' and the backends' counts.
pub fn sample(state: &ControlState) -> Result<MetricsSample, String> {
    let active = inventory::active_flows(state)?;
    let snapshot = state.config.load_full();
    Ok(MetricsSample {
        stats: control::stats(state)?,
        listeners: inventory::listeners_report(&snapshot, &active),
        backends: inventory::backends_report(
            &snapshot,
            &state.drains.drains(),
            &inventory::observations(state),
            &active,
            None,
        )?,
        latency: control::latency(state)?,
        status: control::status(state),
        probes: state
            .drains
            .health()
            .map(|monitor| monitor.probe_stats())
            .unwrap_or_default(),
    })
}

/// The sample as Prometheus text exposition.
pub fn encode(sample: MetricsSample) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(sample)));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

type Labels = Vec<(&'static str, String)>;

/// `switchyard_backend_health`'s states, as `Health::name` spells them.
const HEALTH_STATES: [&str; 4] = ["unknown", "healthy", "unhealthy", "flapping"];

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, i64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One histogram per worker from its recorded distribution; recorded
/// units divided by `per_unit` are the metric's (1e9 nanoseconds a
/// second). Dividing keeps bounds like 1 µs exact (`1e-06`).
fn histograms<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    bounds: &[u64],
    per_unit: f64,
    rows: impl IntoIterator<Item = (Labels, &'a Recorded)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, recorded) in rows {
        let buckets: Vec<(f64, u64)> = recorded
            .buckets(bounds)
            .into_iter()
            .map(|(bound, count)| (bound as f64 / per_unit, count))
            .collect();
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                recorded.total as f64 / per_unit,
                recorded.histogram.len(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[derive(Debug)]
struct Scrape(MetricsSample);

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let e = &mut e;
        gauges(
            e,
            "switchyard_build_info",
            "Always 1; the running version as a label.",
            [(vec![("version", s.status.version.clone())], 1)],
        )?;
        gauges(
            e,
            "switchyard_uptime_seconds",
            "Seconds since the daemon started.",
            [(Labels::new(), gauge_value(s.status.uptime_secs))],
        )?;
        gauges(
            e,
            "switchyard_config_generation",
            "Generation of the running config snapshot (reloads and drains bump it).",
            [(Labels::new(), gauge_value(s.status.config_generation))],
        )?;
        gauges(
            e,
            "switchyard_config_source",
            "Always 1; where the config comes from as a label: file (--config) or cluster (--cluster).",
            [(
                vec![(
                    "source",
                    match s.status.config_source {
                        switchyard_proto::ConfigSource::File => "file",
                        switchyard_proto::ConfigSource::Cluster => "cluster",
                    }
                    .to_owned(),
                )],
                1,
            )],
        )?;
        gauges(
            e,
            "switchyard_config_stale",
            "1 when the last config update (a reload or a cluster's) was refused: the daemon serves an older config than its source holds.",
            [(
                Labels::new(),
                i64::from(s.status.reload.last_result == switchyard_proto::RELOAD_REFUSED),
            )],
        )?;
        counters(
            e,
            "switchyard_config_reloads",
            "Config reloads by result: applied, or refused (invalid or not programmable).",
            [
                (
                    vec![("result", "applied".to_owned())],
                    s.status.reload.reloads,
                ),
                (
                    vec![("result", "refused".to_owned())],
                    s.status.reload.failed_reloads,
                ),
            ],
        )?;
        gauges(
            e,
            "switchyard_worker_pinned",
            "1 when the worker runs pinned to its core.",
            s.status.workers.iter().map(|w| {
                (
                    vec![
                        ("queue", w.queue.to_string()),
                        ("core", w.core.map_or_else(String::new, |c| c.to_string())),
                    ],
                    i64::from(w.pinned),
                )
            }),
        )?;
        gauges(
            e,
            "switchyard_interface_fast_path_egress",
            "1 when the XDP fast path sends frames out of the interface, 0 when the kernel would drop them there (a veth whose peer runs no NAPI) and its flows stay with the workers.",
            s.status.interfaces.iter().filter_map(|i| {
                let egress = i.fast_path_egress.as_ref()?;
                Some((
                    vec![("interface", i.name.clone())],
                    i64::from(egress.open),
                ))
            }),
        )?;

        let listener_labels = |listener: &str, protocol: &str, vip: &str| -> Labels {
            vec![
                ("listener", listener.to_owned()),
                ("protocol", protocol.to_owned()),
                ("vip", vip.to_owned()),
            ]
        };
        let listeners = &s.stats.listeners;
        for (name, help, value) in [
            (
                "switchyard_listener_packets",
                "Packets of a listener's flows, both directions.",
                (|c: &switchyard_proto::Counters| c.packets) as fn(&_) -> u64,
            ),
            (
                "switchyard_listener_bytes",
                "Bytes (Ethernet frames) of a listener's flows, both directions.",
                |c| c.bytes,
            ),
            (
                "switchyard_listener_flows",
                "New client flows a listener took.",
                |c| c.flows,
            ),
        ] {
            counters(
                e,
                name,
                help,
                listeners.iter().map(|l| {
                    (
                        listener_labels(&l.listener, &l.protocol, &l.vip),
                        value(&l.counters),
                    )
                }),
            )?;
        }
        counters(
            e,
            "switchyard_listener_drops",
            "Packets dropped or refused for a reason that belongs to the listener (source_denied: by the XDP program and the workers together).",
            listeners.iter().flat_map(|l| {
                LISTENER_DROPS
                    .into_iter()
                    .map(move |reason| {
                        let mut labels = listener_labels(&l.listener, &l.protocol, &l.vip);
                        labels.push(("reason", reason.name().to_owned()));
                        (labels, l.drops.get(reason.name()).copied().unwrap_or(0))
                    })
            }),
        )?;
        gauges(
            e,
            "switchyard_listener_active_flows",
            "Established client connections the workers track for the listener.",
            s.listeners.listeners.iter().map(|l| {
                (
                    listener_labels(&l.listener, &l.protocol, &l.vip),
                    gauge_value(l.active_flows),
                )
            }),
        )?;

        let backend_labels = |listener: &str, backend: &str, service: &str| -> Labels {
            vec![
                ("listener", listener.to_owned()),
                ("backend", backend.to_owned()),
                ("service", service.to_owned()),
            ]
        };
        let backends = &s.stats.backends;
        for (name, help, value) in [
            (
                "switchyard_backend_packets",
                "Packets of a backend's flows, both directions.",
                (|c: &switchyard_proto::Counters| c.packets) as fn(&_) -> u64,
            ),
            (
                "switchyard_backend_bytes",
                "Bytes (Ethernet frames) of a backend's flows, both directions.",
                |c| c.bytes,
            ),
            (
                "switchyard_backend_flows",
                "New client flows sent to a backend.",
                |c| c.flows,
            ),
        ] {
            counters(
                e,
                name,
                help,
                backends.iter().map(|b| {
                    (
                        backend_labels(&b.listener, &b.backend, &b.service),
                        value(&b.counters),
                    )
                }),
            )?;
        }
        gauges(
            e,
            "switchyard_backend_active_flows",
            "Established client connections the workers track on the backend.",
            s.backends.backends.iter().map(|b| {
                (
                    backend_labels(&b.listener, &b.backend, &b.service),
                    gauge_value(b.active_flows),
                )
            }),
        )?;
        // One row per health state, 1 for the current one (as
        // kube-state-metrics shows phases), so an alert can say
        // `switchyard_backend_health{state="unhealthy"} == 1`.
        gauges(
            e,
            "switchyard_backend_health",
            "1 for a health-checked backend's current health (state: unknown, healthy, \
             unhealthy, flapping), 0 for the others; backends without a check have no rows.",
            s.backends.backends.iter().flat_map(|b| {
                let states: &[&str] = if b.health.is_some() {
                    &HEALTH_STATES
                } else {
                    &[]
                };
                states.iter().map(move |state| {
                    let mut labels = backend_labels(&b.listener, &b.backend, &b.service);
                    labels.push(("state", (*state).to_owned()));
                    (labels, i64::from(b.health.as_deref() == Some(*state)))
                })
            }),
        )?;

        let queue = |q: u32| vec![("queue", q.to_string())];
        let workers = &s.stats.workers;
        for (name, help, value) in [
            (
                "switchyard_worker_rx_packets",
                "Frames a worker received from its AF_XDP sockets.",
                (|w: &switchyard_proto::WorkerStats| w.rx_packets) as fn(&_) -> u64,
            ),
            (
                "switchyard_worker_rx_bytes",
                "Bytes a worker received.",
                |w| w.rx_bytes,
            ),
            (
                "switchyard_worker_tx_packets",
                "Frames a worker transmitted.",
                |w| w.tx_packets,
            ),
            (
                "switchyard_worker_tx_bytes",
                "Bytes a worker transmitted.",
                |w| w.tx_bytes,
            ),
            (
                "switchyard_worker_fast_path_installed",
                "XDP flow cache entries the kernel wrote for a worker.",
                |w| w.fast_path.installed,
            ),
            (
                "switchyard_worker_fast_path_unwritten",
                "XDP flow cache entries a worker queued that the kernel did not write.",
                |w| w.fast_path.unwritten,
            ),
            (
                "switchyard_worker_fast_path_lost",
                "Flows a worker installed again because the XDP flow cache had lost their entry.",
                |w| w.fast_path.lost,
            ),
            (
                "switchyard_worker_partial_checksums",
                "Frames whose TCP/UDP checksum the sender left partial (tx checksum offload through a veth), completed by the worker.",
                |w| w.partial_checksums,
            ),
            (
                "switchyard_worker_first_fragments",
                "First fragments a worker forwarded, their datagram's decision remembered.",
                |w| w.fragments.first,
            ),
            (
                "switchyard_worker_later_fragments",
                "Later fragments a worker forwarded on their first fragment's decision.",
                |w| w.fragments.later,
            ),
            (
                "switchyard_worker_fragment_evictions",
                "Fragmented datagrams whose decision a worker's full fragment table gave up before it expired.",
                |w| w.fragments.evicted,
            ),
            (
                "switchyard_worker_echo_replies",
                "Echo requests to a VIP address answered by the worker.",
                |w| w.echo_replies,
            ),
            (
                "switchyard_worker_icmp_to_backend",
                "ICMP errors about a client's flow, arriving for a VIP, sent on to the flow's backend.",
                |w| w.icmp_to_backend,
            ),
            (
                "switchyard_worker_icmp_to_client",
                "ICMP errors a backend sent about a client's packet, sent on to the client from the VIP.",
                |w| w.icmp_to_client,
            ),
            (
                "switchyard_worker_vlan_pushed",
                "Frames that came untagged and left by a VLAN link, a tag pushed by a worker.",
                |w| w.vlan.pushed,
            ),
            (
                "switchyard_worker_vlan_popped",
                "Frames that came tagged and left untagged, the tag popped by a worker.",
                |w| w.vlan.popped,
            ),
            (
                "switchyard_worker_vlan_retagged",
                "Frames whose VLAN tag a worker rewrote to their egress link's.",
                |w| w.vlan.retagged,
            ),
            (
                "switchyard_worker_too_big_answered",
                "Packets too big for their egress link a worker answered with ICMP fragmentation-needed or packet-too-big.",
                |w| w.too_big_answered,
            ),
            (
                "switchyard_worker_encapsulated",
                "Packets a worker sent encapsulated toward their backend (ipip, gue).",
                |w| w.encapsulated,
            ),
            (
                "switchyard_worker_proxy_headers",
                "PROXY protocol headers a worker spliced into client segments toward their backend (fullnat with proxyProtocol).",
                |w| w.proxy_headers,
            ),
        ] {
            counters(
                e,
                name,
                help,
                workers.iter().map(|w| (queue(w.queue), value(w))),
            )?;
        }
        counters(
            e,
            "switchyard_drops",
            "Packets a worker dropped, by named reason.",
            workers.iter().flat_map(|w| {
                DropReason::ALL.into_iter().map(|reason| {
                    let mut labels = queue(w.queue);
                    labels.push(("reason", reason.name().to_owned()));
                    (labels, w.drops.get(reason.name()).copied().unwrap_or(0))
                })
            }),
        )?;
        counters(
            e,
            "switchyard_snat_exhausted",
            "New fullnat flows a worker refused for want of a free SNAT port, by SNAT address.",
            workers.iter().flat_map(|w| {
                w.snat_exhausted.iter().map(|(address, &count)| {
                    let mut labels = queue(w.queue);
                    labels.push(("snat_address", address.clone()));
                    (labels, count)
                })
            }),
        )?;
        counters(
            e,
            "switchyard_xdp_steer",
            "Frames the XDP steering program steered to a worker (steer_*) or passed to the kernel, by reason.",
            s.stats
                .xdp_steering
                .iter()
                .map(|(reason, &count)| (vec![("reason", reason.clone())], count))
                .collect::<BTreeMap<_, _>>(),
        )?;

        counters(
            e,
            "switchyard_health_probes",
            "Health probes by type (TCP, UDP, HTTP) and result: pass, fail, timeout, or \
             skipped (held past its slot by --health-max-concurrent).",
            s.probes.iter().flat_map(|p| {
                [
                    ("pass", p.passed),
                    ("fail", p.failed),
                    ("timeout", p.timed_out),
                    ("skipped", p.skipped),
                ]
                .map(|(result, count)| {
                    (
                        vec![("type", p.kind.to_owned()), ("result", result.to_owned())],
                        count,
                    )
                })
            }),
        )?;
        histograms(
            e,
            "switchyard_health_probe_duration_seconds",
            "Time from a health probe's start to its verdict.",
            &PROBE_BOUNDS_NS,
            1e9,
            s.probes
                .iter()
                .map(|p| (vec![("type", p.kind.to_owned())], &p.latency_ns)),
        )?;
        histograms(
            e,
            "switchyard_worker_batch_duration_seconds",
            "Time a worker took for a batch that received packets.",
            &DURATION_BOUNDS_NS,
            1e9,
            s.latency
                .iter()
                .map(|l| (queue(l.queue), &l.recorded.batch_ns)),
        )?;
        histograms(
            e,
            "switchyard_worker_batch_packets",
            "Packets in a batch that received any.",
            &BATCH_BOUNDS,
            1.0,
            s.latency
                .iter()
                .map(|l| (queue(l.queue), &l.recorded.packets_per_batch)),
        )?;
        histograms(
            e,
            "switchyard_worker_control_duration_seconds",
            "Time a worker spent answering control requests in one gap between batches.",
            &DURATION_BOUNDS_NS,
            1e9,
            s.latency
                .iter()
                .map(|l| (queue(l.queue), &l.recorded.control_ns)),
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` on its own thread until dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, state: Arc<ControlState>) -> Result<Self, MetricsError> {
        let server = Arc::new(
            tiny_http::Server::http(addr).map_err(|source| MetricsError::Bind { addr, source })?,
        );
        let serving = server.clone();
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = respond(&state, request.method(), request.url());
                    if let Err(err) = request.respond(response) {
                        log::debug!("metrics scrape: {err}");
                    }
                }
            })
            .map_err(MetricsError::Thread)?;
        Ok(Self {
            server,
            thread: Some(thread),
        })
    }
}

fn text_response(status: u16, content_type: &str, body: String) -> tiny_http::ResponseBox {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type)
        .expect("a constant header is valid");
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
        .boxed()
}

fn respond(state: &ControlState, method: &tiny_http::Method, url: &str) -> tiny_http::ResponseBox {
    let plain = "text/plain; charset=utf-8";
    if url.split('?').next() != Some("/metrics") {
        return text_response(404, plain, "not found: metrics are at /metrics\n".into());
    }
    if *method != tiny_http::Method::Get && *method != tiny_http::Method::Head {
        return text_response(405, plain, "only GET /metrics\n".into());
    }
    match sample(state) {
        Ok(sample) => match encode(sample) {
            Ok(text) => text_response(200, CONTENT_TYPE, text),
            Err(_) => text_response(500, plain, "encoding the metrics failed\n".into()),
        },
        Err(message) => text_response(503, plain, format!("{message}\n")),
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchyard_proto::{
        BackendInfo, BackendStats, Counters, FastPathEgress, InterfaceStatus, ListenerInfo,
        ListenerStats, WorkerStats, WorkerStatus,
    };

    use super::*;
    use switchyard_dataplane::latency::LatencyRecorder;

    fn sample() -> MetricsSample {
        let mut recorder = LatencyRecorder::new();
        recorder.record_batch(3_000, 4);
        recorder.record_batch(40_000, 60);
        recorder.record_control(1_500);
        MetricsSample {
            status: StatusReport {
                version: "0.1.0".into(),
                config_generation: 3,
                workers: vec![WorkerStatus {
                    queue: 0,
                    core: Some(1),
                    pinned: true,
                    afxdp_modes: vec!["copy".into()],
                }],
                interfaces: vec![InterfaceStatus {
                    name: "eth0".into(),
                    fast_path_egress: Some(FastPathEgress::default()),
                    ..InterfaceStatus::default()
                }],
                ..StatusReport::default()
            },
            stats: StatsReport {
                listeners: vec![ListenerStats {
                    listener: "demo/edge/tcp".into(),
                    protocol: "TCP".into(),
                    vip: "198.18.100.10:80".into(),
                    counters: Counters {
                        packets: 10,
                        bytes: 1000,
                        flows: 2,
                    },
                    drops: BTreeMap::from([("backend_unavailable".into(), 7)]),
                    ..ListenerStats::default()
                }],
                backends: vec![BackendStats {
                    listener: "demo/edge/tcp".into(),
                    backend: "198.18.2.21:8080".into(),
                    service: "demo/echo".into(),
                    counters: Counters {
                        packets: 10,
                        bytes: 1000,
                        flows: 2,
                    },
                    ..BackendStats::default()
                }],
                workers: vec![WorkerStats {
                    queue: 0,
                    rx_packets: 64,
                    drops: BTreeMap::from([("no_route".into(), 5)]),
                    partial_checksums: 9,
                    fragments: switchyard_proto::WorkerFragmentStats {
                        first: 2,
                        later: 4,
                        evicted: 1,
                    },
                    icmp_to_backend: 2,
                    vlan: switchyard_proto::WorkerVlanStats {
                        pushed: 3,
                        popped: 0,
                        retagged: 6,
                    },
                    too_big_answered: 2,
                    snat_exhausted: BTreeMap::from([("198.18.2.1".into(), 3)]),
                    ..WorkerStats::default()
                }],
                drops: BTreeMap::new(),
                xdp_steering: BTreeMap::from([("steer_vip".into(), 40), ("pass_local".into(), 0)]),
            },
            listeners: ListenersReport {
                generation: 3,
                listeners: vec![ListenerInfo {
                    listener: "demo/edge/tcp".into(),
                    protocol: "TCP".into(),
                    vip: "198.18.100.10:80".into(),
                    active_flows: 1,
                    ..ListenerInfo::default()
                }],
            },
            backends: BackendsReport {
                generation: 3,
                backends: vec![
                    BackendInfo {
                        listener: "demo/edge/tcp".into(),
                        backend: "198.18.2.21:8080".into(),
                        service: "demo/echo".into(),
                        active_flows: 1,
                        ..BackendInfo::default()
                    },
                    BackendInfo {
                        listener: "demo/edge/tcp".into(),
                        backend: "198.18.2.22:8080".into(),
                        service: "demo/echo".into(),
                        health: Some("unhealthy".into()),
                        ..BackendInfo::default()
                    },
                ],
            },
            probes: vec![ProbeStats {
                kind: "TCP",
                passed: 5,
                failed: 2,
                timed_out: 1,
                skipped: 0,
                latency_ns: recorder.snapshot(0).recorded.batch_ns,
            }],
            latency: vec![recorder.snapshot(0)],
        }
    }

    #[test]
    fn counters_gauges_and_histograms_have_conventional_names_and_labels() {
        let text = encode(sample()).unwrap();
        for line in [
            "# TYPE switchyard_listener_packets_total counter",
            r#"switchyard_listener_packets_total{listener="demo/edge/tcp",protocol="TCP",vip="198.18.100.10:80"} 10"#,
            r#"switchyard_listener_drops_total{listener="demo/edge/tcp",protocol="TCP",vip="198.18.100.10:80",reason="backend_unavailable"} 7"#,
            r#"switchyard_listener_drops_total{listener="demo/edge/tcp",protocol="TCP",vip="198.18.100.10:80",reason="backend_removed"} 0"#,
            r#"switchyard_backend_flows_total{listener="demo/edge/tcp",backend="198.18.2.21:8080",service="demo/echo"} 2"#,
            r#"switchyard_backend_active_flows{listener="demo/edge/tcp",backend="198.18.2.21:8080",service="demo/echo"} 1"#,
            r#"switchyard_backend_health{listener="demo/edge/tcp",backend="198.18.2.22:8080",service="demo/echo",state="unhealthy"} 1"#,
            r#"switchyard_backend_health{listener="demo/edge/tcp",backend="198.18.2.22:8080",service="demo/echo",state="healthy"} 0"#,
            r#"switchyard_worker_rx_packets_total{queue="0"} 64"#,
            r#"switchyard_worker_partial_checksums_total{queue="0"} 9"#,
            r#"switchyard_worker_first_fragments_total{queue="0"} 2"#,
            r#"switchyard_worker_later_fragments_total{queue="0"} 4"#,
            r#"switchyard_worker_fragment_evictions_total{queue="0"} 1"#,
            r#"switchyard_worker_icmp_to_backend_total{queue="0"} 2"#,
            r#"switchyard_worker_echo_replies_total{queue="0"} 0"#,
            r#"switchyard_worker_vlan_pushed_total{queue="0"} 3"#,
            r#"switchyard_worker_vlan_popped_total{queue="0"} 0"#,
            r#"switchyard_worker_vlan_retagged_total{queue="0"} 6"#,
            r#"switchyard_worker_too_big_answered_total{queue="0"} 2"#,
            r#"switchyard_snat_exhausted_total{queue="0",snat_address="198.18.2.1"} 3"#,
            r#"switchyard_drops_total{queue="0",reason="no_route"} 5"#,
            r#"switchyard_drops_total{queue="0",reason="tx_ring_full"} 0"#,
            r#"switchyard_xdp_steer_total{reason="steer_vip"} 40"#,
            "switchyard_config_generation 3",
            r#"switchyard_config_source{source="file"} 1"#,
            "switchyard_config_stale 0",
            r#"switchyard_config_reloads_total{result="refused"} 0"#,
            r#"switchyard_build_info{version="0.1.0"} 1"#,
            r#"switchyard_worker_pinned{queue="0",core="1"} 1"#,
            r#"switchyard_interface_fast_path_egress{interface="eth0"} 0"#,
            "# TYPE switchyard_worker_batch_duration_seconds histogram",
            r#"switchyard_worker_batch_packets_bucket{queue="0",le="4"} 1"#,
            r#"switchyard_worker_batch_packets_bucket{queue="0",le="64"} 2"#,
            r#"switchyard_worker_batch_packets_bucket{queue="0",le="+Inf"} 2"#,
            r#"switchyard_worker_batch_packets_sum{queue="0"} 64.0"#,
            r#"switchyard_worker_batch_packets_count{queue="0"} 2"#,
            r#"switchyard_worker_control_duration_seconds_count{queue="0"} 1"#,
            r#"switchyard_health_probes_total{type="TCP",result="fail"} 2"#,
            r#"switchyard_health_probes_total{type="TCP",result="timeout"} 1"#,
            "# TYPE switchyard_health_probe_duration_seconds histogram",
            r#"switchyard_health_probe_duration_seconds_bucket{type="TCP",le="0.0001"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_cluster_daemon_whose_last_update_was_refused_says_so() {
        let mut refused = sample();
        refused.status.config_source = switchyard_proto::ConfigSource::Cluster;
        refused.status.reload.last_result = switchyard_proto::RELOAD_REFUSED.to_owned();
        let text = encode(refused).unwrap();
        for line in [
            r#"switchyard_config_source{source="cluster"} 1"#,
            "switchyard_config_stale 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn duration_buckets_are_in_seconds() {
        let text = encode(sample()).unwrap();
        let bucket = |le: &str| {
            let prefix = format!(
                r#"switchyard_worker_batch_duration_seconds_bucket{{queue="0",le="{le}"}} "#
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
                .to_owned()
        };
        assert_eq!(bucket("1e-06"), "0");
        assert_eq!(bucket("5e-06"), "1", "3 µs");
        assert_eq!(bucket("5e-05"), "2", "and 40 µs");
        assert_eq!(bucket("1"), "2");
    }
}
