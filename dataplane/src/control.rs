//! The control socket: answers `yardctl` by asking each worker for a copy of
//! its counters or flows between batches, then merging the copies. It never
//! touches worker state directly, so forwarding never pauses for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{self, Sender};
use switchyard_config::snapshot::Snapshot;
use yardctl::proto::{
    BackendStats, Counters, FlowInfo, FlowsReport, InterfaceStatus, ListenerStats, Request,
    Response, StatsReport, StatusReport, WorkerStatus,
};

use crate::drop_reason::DropReason;
use crate::flow::Direction;
use crate::worker::{self, FlowRecord, WorkerRequest, WorkerStats};

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
    #[error("another process is already serving the control socket {path}")]
    InUse { path: PathBuf },
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
    pub afxdp_modes: Vec<String>,
    pub requests: Sender<WorkerRequest>,
}

pub struct ControlState {
    pub config_path: String,
    pub config: Arc<ArcSwap<Snapshot>>,
    pub interfaces: Vec<InterfaceStatus>,
    pub workers: Vec<WorkerHandle>,
    /// The clock the workers stamp flows with.
    pub epoch: Instant,
}

pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (mode 0600) and serves it on a background thread.
    pub fn start(path: &Path, state: ControlState) -> Result<Self, ControlError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| ControlError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        }
        if path.exists() {
            // A socket file nobody answers on is left over from a crash.
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_owned(),
                });
            }
            let _ = fs::remove_file(path);
        }
        let bind_err = |source| ControlError::Bind {
            path: path.to_owned(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        let state = Arc::new(state);
        thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(err) = serve(&state, stream) {
                                log::debug!("control connection: {err}");
                            }
                        }
                        Err(err) => log::warn!("control socket accept: {err}"),
                    }
                }
            })
            .map_err(bind_err)?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn serve(state: &ControlState, stream: UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => answer(state, &request),
        Err(err) => Response::Error {
            message: format!("malformed request: {err}"),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    (&stream).write_all(&out)
}

fn answer(state: &ControlState, request: &Request) -> Response {
    let result = match request {
        Request::Status => Ok(Response::Status(status(state))),
        Request::Stats => ask_workers(state, WorkerRequest::Stats)
            .map(|stats| Response::Stats(stats_report(&state.config.load(), &stats))),
        Request::Flows => ask_workers(state, WorkerRequest::Flows).map(|flows| {
            Response::Flows(flows_report(
                &state.config.load(),
                flows.into_iter().flatten(),
                state.epoch.elapsed().as_nanos() as u64,
            ))
        }),
    };
    result.unwrap_or_else(|message| Response::Error { message })
}

fn status(state: &ControlState) -> StatusReport {
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: state.epoch.elapsed().as_secs(),
        config_path: state.config_path.clone(),
        config_generation: state.config.load().generation,
        interfaces: state.interfaces.clone(),
        workers: state
            .workers
            .iter()
            .map(|w| WorkerStatus {
                queue: w.queue,
                core: w.core,
                afxdp_modes: w.afxdp_modes.clone(),
            })
            .collect(),
    }
}

fn ask_workers<T>(
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
}

pub fn stats_report(snapshot: &Snapshot, workers: &[WorkerStats]) -> StatsReport {
    let current: Vec<&WorkerStats> = workers
        .iter()
        .filter(|w| w.generation == snapshot.generation)
        .collect();
    let mut report = StatsReport::default();
    for (index, listener) in snapshot.listeners.iter().enumerate() {
        let mut total = worker::Counters::default();
        for w in &current {
            if let Some(c) = w.listeners.get(index) {
                add(&mut total, c);
            }
        }
        let name = listener.name.to_string();
        report.listeners.push(ListenerStats {
            listener: name.clone(),
            protocol: listener.protocol.to_string(),
            vip: listener.vip().to_string(),
            counters: to_proto(&total),
        });
        for (b, backend) in listener.backends.iter().enumerate() {
            let mut total = worker::Counters::default();
            for w in &current {
                if let Some(c) = w.backends.get(index).and_then(|l| l.get(b)) {
                    add(&mut total, c);
                }
            }
            let service = listener
                .groups
                .get(backend.group as usize)
                .map(|g| g.service.clone())
                .unwrap_or_default();
            report.backends.push(BackendStats {
                listener: name.clone(),
                backend: backend.endpoint.to_string(),
                service,
                counters: to_proto(&total),
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
        report.workers.push(yardctl::proto::WorkerStats {
            queue: w.queue,
            rx_packets: w.rx_packets,
            rx_bytes: w.rx_bytes,
            tx_packets: w.tx_packets,
            tx_bytes: w.tx_bytes,
            drops,
        });
    }
    report
}

fn endpoint(address: std::net::Ipv4Addr, port: u16) -> String {
    format!("{address}:{port}")
}

/// Merges the two directions of each connection (possibly seen by different
/// workers) into one row.
pub fn flows_report(
    snapshot: &Snapshot,
    records: impl Iterator<Item = FlowRecord>,
    now_ns: u64,
) -> FlowsReport {
    #[derive(Default)]
    struct Merged {
        listener: String,
        packets: u64,
        bytes: u64,
        created_ns: u64,
        last_seen_ns: u64,
        workers: BTreeSet<u32>,
    }
    let mut merged: HashMap<(u8, String, String, String), Merged> = HashMap::new();
    for record in records {
        let (k, r) = (&record.key, &record.entry.rewrite);
        let (client, vip, backend) = match record.entry.direction {
            Direction::ToBackend => (
                endpoint(k.src, k.src_port),
                endpoint(k.dst, k.dst_port),
                endpoint(r.ip_dst, r.dst_port),
            ),
            Direction::ToClient => (
                endpoint(k.dst, k.dst_port),
                endpoint(r.ip_src, r.src_port),
                endpoint(k.src, k.src_port),
            ),
        };
        let row = merged
            .entry((k.protocol, client, vip, backend))
            .or_insert_with(|| Merged {
                created_ns: u64::MAX,
                ..Merged::default()
            });
        if row.listener.is_empty() && record.entry.generation == snapshot.generation {
            if let Some(l) = snapshot.listeners.get(record.entry.listener as usize) {
                row.listener = l.name.to_string();
            }
        }
        row.packets += record.entry.packets;
        row.bytes += record.entry.bytes;
        row.created_ns = row.created_ns.min(record.entry.created_ns);
        row.last_seen_ns = row.last_seen_ns.max(record.entry.last_seen_ns);
        row.workers.insert(record.queue);
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
            age_secs: seconds(now_ns.saturating_sub(m.created_ns)),
            idle_secs: seconds(now_ns.saturating_sub(m.last_seen_ns)),
            workers: m.workers.into_iter().collect(),
        })
        .collect();
    flows.sort_by(|a, b| {
        a.age_secs
            .total_cmp(&b.age_secs)
            .then_with(|| a.client.cmp(&b.client))
    });
    FlowsReport { flows }
}
