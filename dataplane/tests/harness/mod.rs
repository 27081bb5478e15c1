//! One worker of a daemon over in-memory frames in the two-arm lab
//! (`two_arm`): what the worker suites drive. A second worker of the same
//! daemon shares the config, the neighbour table, the clock and the reply
//! table, and has its own queue and flow table.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use std::net::IpAddr;

use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol, Slot,
    Snapshot,
};
use switchyard_dataplane::drop_reason::DropReason;
use switchyard_dataplane::io::MemoryIo;
use switchyard_dataplane::neighbor::Neighbors;
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::worker::{Worker, WorkerRequest, WorkerSettings, WorkerStats};

use super::two_arm::l2_table;

pub struct Harness {
    pub worker: Worker,
    pub config: Arc<ArcSwap<Snapshot>>,
    pub io: MemoryIo,
    pub requests: channel::Sender<WorkerRequest>,
    pub neighbors: Neighbors,
    pub replies: Arc<ReplyTable>,
    pub epoch: Instant,
}

/// Queue 0's worker under `snapshot`, with the lab's kernel tables.
pub fn harness_with(snapshot: Snapshot) -> Harness {
    worker_of(
        0,
        Arc::new(ArcSwap::from_pointee(snapshot)),
        Neighbors::fixed(l2_table()),
        Arc::new(ReplyTable::new(1024)),
        Instant::now(),
    )
}

pub fn worker_of(
    queue: u32,
    config: Arc<ArcSwap<Snapshot>>,
    neighbors: Neighbors,
    replies: Arc<ReplyTable>,
    epoch: Instant,
) -> Harness {
    let (requests, control) = channel::bounded(4);
    let worker = Worker::new(
        queue,
        vec![10, 20],
        config.clone(),
        neighbors.clone(),
        control,
        Arc::new(AtomicBool::new(false)),
        epoch,
        WorkerSettings::default(),
    )
    .with_reply_table(replies.clone());
    Harness {
        worker,
        config,
        io: MemoryIo::new(64),
        requests,
        neighbors,
        replies,
        epoch,
    }
}

impl Harness {
    /// A second worker of the same daemon: same config, neighbours, clock
    /// and shared reply table; its own queue and flow table.
    pub fn another_worker(&self) -> Harness {
        worker_of(
            1,
            self.config.clone(),
            self.neighbors.clone(),
            self.replies.clone(),
            self.epoch,
        )
    }

    /// Feeds one frame on `port`; returns (egress port, frame) if sent.
    pub fn send(&mut self, port: usize, frame: Vec<u8>) -> Option<(usize, Vec<u8>)> {
        self.io.rx.push_back((port, frame));
        self.worker.run_once(&mut self.io);
        self.io.tx.pop()
    }

    pub fn stats(&mut self) -> WorkerStats {
        let (reply, answer) = channel::bounded(1);
        self.requests.send(WorkerRequest::Stats(reply)).unwrap();
        self.worker.serve_control();
        answer.recv().unwrap()
    }

    /// Packets dropped for the reason named `reason`.
    pub fn drops(&mut self, reason: &str) -> u64 {
        let stats = self.stats();
        DropReason::ALL
            .iter()
            .find(|r| r.name() == reason)
            .map(|r| stats.drops[*r as usize])
            .unwrap_or_else(|| panic!("no drop reason is named {reason}"))
    }
}

/// A `nat` listener `demo/edge/NAME` on `vip:port` with an open policy,
/// spreading flows evenly over `backends` (one backendRef). A slot table's
/// length is prime: one backend owns both of two, none leaves both
/// unavailable.
pub fn listener_at(
    name: &str,
    protocol: Protocol,
    vip: IpAddr,
    port: u16,
    backends: &[(IpAddr, u16)],
) -> ListenerParts {
    let endpoints: Vec<Endpoint> = backends
        .iter()
        .map(|&(address, port)| Endpoint { address, port })
        .collect();
    ListenerParts {
        name: ListenerName {
            namespace: "demo".into(),
            gateway: "edge".into(),
            listener: name.into(),
        },
        route: format!("demo/{name}"),
        address: vip,
        port,
        listener_port: port,
        protocol,
        groups: vec![BackendGroup {
            terminating: false,
            draining: Vec::new(),
            health_check: None,
            service: "demo/echo".into(),
            weight: 1,
            endpoints: endpoints.clone(),
        }],
        backends: endpoints
            .iter()
            .map(|&endpoint| Backend {
                endpoint,
                group: 0,
                effective_weight: 1.0 / endpoints.len() as f64,
            })
            .collect(),
        slots: match endpoints.len() {
            0 => vec![Slot::Unavailable; 2],
            1 => vec![Slot::Backend(0); 2],
            n => (0..n as u32).map(Slot::Backend).collect(),
        },
        affinity: None,
        forwarding: Default::default(),
        policy: Default::default(),
    }
}

/// A snapshot of generation `generation` of listeners built from `parts`.
pub fn build(generation: u64, parts: Vec<ListenerParts>) -> Snapshot {
    let listeners = parts
        .into_iter()
        .map(|parts| Listener::new(parts).expect("valid listener"))
        .collect();
    Snapshot::new(generation, listeners).expect("one listener per VIP")
}
