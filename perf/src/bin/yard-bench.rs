//! `yard-bench`: the worker's per-packet cost on in-memory frames, as ratios
//! against baselines measured in the same run (absolute numbers drift with
//! the machine; ratios taken side by side do not).
//!
//! Baselines: `parse` (the least any path does to a frame) and `copy` (a
//! frame-sized memcpy). Measured: established flows (flow-table hit, rewrite)
//! and new flows (hash, slot lookup, next hop, insert), for IPv4 and for
//! IPv6 side by side.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::PacketBuilder;
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Forwarding, FullNat, Listener, ListenerName, ListenerParts,
    Protocol, Slot, Snapshot,
};
use switchyard_dataplane::io::{BatchOutcome, Handler, PacketIo, Verdict};
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, Neighbors, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
};
use switchyard_dataplane::packet;
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::snat::{SnatPorts, SnatTable};
use switchyard_dataplane::worker::{SnatSetup, Worker, WorkerSettings};
use switchyard_perf::summary::Summary;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);

/// Backend `i` of either family.
fn backend(i: u8, v6: bool) -> IpAddr {
    if v6 {
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(i)).into()
    } else {
        Ipv4Addr::new(198, 18, 2, i).into()
    }
}
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

/// `flows` distinct UDP flows to the VIP of one family, 18-byte payloads.
fn frames(flows: u32, v6: bool) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let port = 10000 + (i % 1000) as u16;
            let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 0, 1]);
            let ip = if v6 {
                let client = Ipv6Addr::from(
                    u128::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0))
                        + u128::from(i / 1000),
                );
                eth.ipv6(client.octets(), VIP6.octets(), 64)
            } else {
                let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i / 1000);
                eth.ipv4(client.octets(), VIP.octets(), 64)
            };
            let mut frame = Vec::new();
            ip.udp(port, 53)
                .write(&mut frame, &[0u8; 18])
                .expect("frame builds");
            frame
        })
        .collect()
}

/// One UDP listener per family, the same 16 backends of its family each.
fn snapshot(forwarding: &Forwarding) -> Snapshot {
    Snapshot::new(
        1,
        vec![listener(false, forwarding), listener(true, forwarding)],
    )
    .expect("one listener per VIP")
}

fn listener(v6: bool, forwarding: &Forwarding) -> Listener {
    // `dsr` cannot translate ports: its backends listen on the VIP's.
    let port = if *forwarding == Forwarding::Dsr {
        53
    } else {
        5353
    };
    let endpoints: Vec<Endpoint> = (1..=BACKENDS)
        .map(|i| Endpoint {
            address: backend(i, v6),
            port,
        })
        .collect();
    Listener::new(ListenerParts {
        name: ListenerName {
            namespace: "bench".into(),
            gateway: "edge".into(),
            listener: "udp".into(),
        },
        route: "bench/udp".into(),
        address: if v6 {
            IpAddr::V6(VIP6)
        } else {
            IpAddr::V4(VIP)
        },
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
        forwarding: forwarding.clone(),
        policy: Default::default(),
    })
    .expect("a valid listener")
}

fn l2_table() -> L2Table {
    let neighbours: Vec<NeighbourEntry> = (1..=BACKENDS)
        .flat_map(|i| [false, true].map(|v6| (i, v6)))
        .map(|(i, v6)| NeighbourEntry {
            ifindex: 1,
            ip: backend(i, v6),
            mac: Some([2, 0, 0, 0, 2, i]),
            state: NeighbourState::Reachable,
        })
        .collect();
    let route = |dst: IpAddr, prefix_len| RouteEntry {
        dst,
        prefix_len,
        metric: 0,
        action: RouteAction::Forward {
            ifindex: 1,
            gateway: None,
        },
    };
    L2Table::new(
        &[1],
        &[LinkEntry::ethernet(1, [2, 0, 0, 0, 0, 1])],
        &[
            route(Ipv4Addr::new(198, 18, 2, 0).into(), 24),
            route(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 64),
        ],
        &neighbours,
    )
}

/// The SNAT port range of the `fullnat` rows (one worker: all of it).
const SNAT_PORTS: SnatPorts = SnatPorts {
    first: 10000,
    last: 60999,
};

fn worker(flow_capacity: usize, forwarding: &Forwarding) -> Worker {
    let (_requests, control) = channel::bounded(1);
    let worker = Worker::new(
        0,
        vec![1],
        Arc::new(ArcSwap::from_pointee(snapshot(forwarding))),
        Neighbors::fixed(l2_table()),
        control,
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
        WorkerSettings {
            flow_capacity,
            ..WorkerSettings::default()
        },
    );
    if !matches!(forwarding, Forwarding::FullNat(_)) {
        return worker;
    }
    worker.with_snat(SnatSetup {
        table: Arc::new(SnatTable::new(SNAT_PORTS)),
        forwards: Arc::new(ReplyTable::new(flow_capacity)),
        slice: SNAT_PORTS.first..=SNAT_PORTS.last,
        interface_addresses: vec![
            (1, Ipv4Addr::new(198, 18, 2, 254).into(), 24),
            (
                1,
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0xfe).into(),
                64,
            ),
        ],
    })
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

/// Per-packet cost of established flows (64, flow-table hits) and of new
/// flows (more than the table holds: every packet a miss) of one family.
fn worker_costs(packets: usize, v6: bool, forwarding: &Forwarding) -> (f64, f64) {
    let established = {
        let mut w = worker(65536, forwarding);
        let mut io = ReplayIo {
            frames: frames(64, v6),
            scratch: Vec::with_capacity(128),
            next: 0,
        };
        w.run_once(&mut io); // warm the flow table
        time_per_packet(packets, || w.run_once(&mut io))
    };
    let new_flows = {
        let mut w = worker(1024, forwarding);
        let mut io = ReplayIo {
            frames: frames(200_000, v6),
            scratch: Vec::with_capacity(128),
            next: 0,
        };
        time_per_packet(packets / 4, || w.run_once(&mut io))
    };
    (established, new_flows)
}

fn main() {
    let packets = 4_000_000;
    let established_frames = frames(64, false);

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
    let (established, new_flows) = worker_costs(packets, false, &Forwarding::Nat);
    let (established6, new_flows6) = worker_costs(packets, true, &Forwarding::Nat);
    let full_nat = Forwarding::FullNat(FullNat::default());
    let (fullnat_established, fullnat_new_flows) = worker_costs(packets, false, &full_nat);
    let (dsr_established, dsr_new_flows) = worker_costs(packets, false, &Forwarding::Dsr);

    println!("yard-bench: worker on in-memory frames, 64-byte-payload UDP (IPv6: 84), one core");
    println!(
        "{:<40} {:>10} {:>12} {:>10}",
        "path", "ns/pkt", "Mpps", "x parse"
    );
    for (name, ns) in [
        ("baseline: frame copy", copy),
        ("baseline: parse only", parse),
        ("established flows (64, table hit)", established),
        ("new flows (table miss + decide)", new_flows),
        ("IPv6 established flows (64, table hit)", established6),
        ("IPv6 new flows (table miss + decide)", new_flows6),
        ("fullnat established flows (64)", fullnat_established),
        ("fullnat new flows (+ SNAT port)", fullnat_new_flows),
        ("dsr established flows (64)", dsr_established),
        ("dsr new flows", dsr_new_flows),
    ] {
        println!(
            "{:<40} {:>10.1} {:>12.2} {:>10.2}",
            name,
            ns,
            1e3 / ns,
            ns / parse
        );
    }
    println!(
        "IPv6 / IPv4: established {:.2}x, new flows {:.2}x",
        established6 / established,
        new_flows6 / new_flows
    );
    let mut summary = Summary::default();
    summary.record("worker_copy_ns", copy);
    summary.record("worker_parse_ns", parse);
    summary.record("worker_established_ns", established);
    summary.record("worker_new_flow_ns", new_flows);
    summary.record("worker_new_flow_decisions_per_sec", 1e9 / new_flows);
    summary.record("worker_established_v6_ns", established6);
    summary.record("worker_new_flow_v6_ns", new_flows6);
    summary.record("worker_v6_established_ratio", established6 / established);
    summary.record("worker_v6_new_flow_ratio", new_flows6 / new_flows);
    summary.record("worker_fullnat_established_ns", fullnat_established);
    summary.record("worker_fullnat_new_flow_ns", fullnat_new_flows);
    summary.record("worker_dsr_established_ns", dsr_established);
    summary.record("worker_dsr_new_flow_ns", dsr_new_flows);
    summary.record(
        "worker_fullnat_established_ratio",
        fullnat_established / established,
    );
    summary.record(
        "worker_fullnat_new_flow_ratio",
        fullnat_new_flows / new_flows,
    );
    summary.record(
        "worker_dsr_established_ratio",
        dsr_established / established,
    );
    summary.record("worker_dsr_new_flow_ratio", dsr_new_flows / new_flows);
    println!(
        "per mode / nat (IPv4): fullnat established {:.2}x, new flows {:.2}x; dsr established {:.2}x, new flows {:.2}x",
        fullnat_established / established,
        fullnat_new_flows / new_flows,
        dsr_established / established,
        dsr_new_flows / new_flows
    );
    if let Err(err) = summary.write_if_asked() {
        eprintln!("writing --json: {err}");
    }
}
