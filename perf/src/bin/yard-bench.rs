//! `yard-bench`: the worker's per-packet cost on in-memory frames, as ratios
//! against baselines measured in the same run (absolute numbers drift with
//! the machine; ratios taken side by side do not).
//!
//! Baselines: `parse` (the least any path does to a frame) and `copy` (a
//! frame-sized memcpy). Measured: established flows (flow-table hit, rewrite)
//! and new flows (hash, slot lookup, next hop, insert).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::PacketBuilder;
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol, Slot,
    Snapshot,
};
use switchyard_dataplane::io::{BatchOutcome, Handler, PacketIo, Verdict};
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, Neighbors, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
};
use switchyard_dataplane::packet;
use switchyard_dataplane::worker::{Worker, WorkerSettings};
use switchyard_perf::summary::Summary;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const BACKENDS: u8 = 16;
const BATCH: usize = 64;

/// Replays a fixed set of frames forever, restoring each one after the
/// worker rewrote it so every pass sees the same input.
struct ReplayIo {
    frames: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    next: usize,
}

impl PacketIo for ReplayIo {
    fn run_batch(&mut self, handle: &mut Handler<'_>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for n in 0..BATCH {
            let frame = &self.frames[self.next];
            self.next = (self.next + 1) % self.frames.len();
            self.scratch.clear();
            self.scratch.extend_from_slice(frame);
            outcome.received += 1;
            let next = (n + 1 < BATCH).then(|| self.frames[self.next].as_slice());
            if let Verdict::Transmit(_) = handle(0, &mut self.scratch, next) {
                outcome.transmitted += 1;
            }
        }
        outcome
    }

    fn wait(&mut self, _timeout_ms: i32) {}
}

fn frames(flows: u32) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i / 1000);
            let port = 10000 + (i % 1000) as u16;
            let mut frame = Vec::new();
            PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 0, 1])
                .ipv4(client.octets(), VIP.octets(), 64)
                .udp(port, 53)
                .write(&mut frame, &[0u8; 18])
                .expect("frame builds");
            frame
        })
        .collect()
}

fn snapshot() -> Snapshot {
    let endpoints: Vec<Endpoint> = (1..=BACKENDS)
        .map(|i| Endpoint {
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 2, i)),
            port: 5353,
        })
        .collect();
    let listener = Listener::new(ListenerParts {
        name: ListenerName {
            namespace: "bench".into(),
            gateway: "edge".into(),
            listener: "udp".into(),
        },
        route: "bench/udp".into(),
        address: IpAddr::V4(VIP),
        port: 53,
        listener_port: 53,
        protocol: Protocol::Udp,
        groups: vec![BackendGroup {
            terminating: false,
            service: "bench/svc".into(),
            weight: 1,
            endpoints: endpoints.clone(),
        }],
        backends: endpoints
            .iter()
            .map(|&endpoint| Backend {
                endpoint,
                group: 0,
                effective_weight: 1.0 / f64::from(BACKENDS),
            })
            .collect(),
        slots: (0..65537u32)
            .map(|i| Slot::Backend(i % u32::from(BACKENDS)))
            .collect(),
        affinity: None,
    })
    .expect("a valid listener");
    Snapshot::new(1, vec![listener]).expect("one listener")
}

fn l2_table() -> L2Table {
    let neighbours: Vec<NeighbourEntry> = (1..=BACKENDS)
        .map(|i| NeighbourEntry {
            ifindex: 1,
            ip: Ipv4Addr::new(198, 18, 2, i).into(),
            mac: Some([2, 0, 0, 0, 2, i]),
            state: NeighbourState::Reachable,
        })
        .collect();
    L2Table::new(
        &[1],
        &[LinkEntry {
            ifindex: 1,
            mac: [2, 0, 0, 0, 0, 1],
        }],
        &[RouteEntry {
            dst: Ipv4Addr::new(198, 18, 2, 0).into(),
            prefix_len: 24,
            metric: 0,
            action: RouteAction::Forward {
                ifindex: 1,
                gateway: None,
            },
        }],
        &neighbours,
    )
}

fn worker(flow_capacity: usize) -> Worker {
    let (_requests, control) = channel::bounded(1);
    Worker::new(
        0,
        vec![1],
        Arc::new(ArcSwap::from_pointee(snapshot())),
        Neighbors::fixed(l2_table()),
        control,
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
        WorkerSettings {
            flow_capacity,
            ..WorkerSettings::default()
        },
    )
}

/// Nanoseconds per packet over `packets` packets.
fn time_per_packet(packets: usize, mut step: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut done = 0;
    while done < packets {
        done += step();
    }
    start.elapsed().as_nanos() as f64 / done as f64
}

fn main() {
    let packets = 4_000_000;
    let established_frames = frames(64);

    let copy = {
        let mut scratch = Vec::with_capacity(128);
        let mut i = 0;
        time_per_packet(packets, || {
            for _ in 0..BATCH {
                scratch.clear();
                scratch.extend_from_slice(&established_frames[i % 64]);
                black_box(&scratch);
                i += 1;
            }
            BATCH
        })
    };
    let parse = {
        let mut i = 0;
        time_per_packet(packets, || {
            for _ in 0..BATCH {
                black_box(packet::parse(black_box(&established_frames[i % 64])).ok());
                i += 1;
            }
            BATCH
        })
    };
    let established = {
        let mut w = worker(65536);
        let mut io = ReplayIo {
            frames: established_frames.clone(),
            scratch: Vec::with_capacity(128),
            next: 0,
        };
        w.run_once(&mut io); // warm the flow table
        time_per_packet(packets, || w.run_once(&mut io))
    };
    let new_flows = {
        // More distinct flows than the table holds: every packet is a miss.
        let mut w = worker(1024);
        let mut io = ReplayIo {
            frames: frames(200_000),
            scratch: Vec::with_capacity(128),
            next: 0,
        };
        time_per_packet(packets / 4, || w.run_once(&mut io))
    };

    println!("yard-bench: worker on in-memory frames, 64-byte-payload UDP, one core");
    println!(
        "{:<34} {:>10} {:>12} {:>10}",
        "path", "ns/pkt", "Mpps", "x parse"
    );
    for (name, ns) in [
        ("baseline: frame copy", copy),
        ("baseline: parse only", parse),
        ("established flows (64, table hit)", established),
        ("new flows (table miss + decide)", new_flows),
    ] {
        println!(
            "{:<34} {:>10.1} {:>12.2} {:>10.2}",
            name,
            ns,
            1e3 / ns,
            ns / parse
        );
    }
    let mut summary = Summary::default();
    summary.record("worker_copy_ns", copy);
    summary.record("worker_parse_ns", parse);
    summary.record("worker_established_ns", established);
    summary.record("worker_new_flow_ns", new_flows);
    summary.record("worker_new_flow_decisions_per_sec", 1e9 / new_flows);
    if let Err(err) = summary.write_if_asked() {
        eprintln!("writing --json: {err}");
    }
}
