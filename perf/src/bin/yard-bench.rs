//! `yard-bench`: the worker's per-packet cost on in-memory frames, as ratios
//! against baselines measured in the same run (absolute numbers drift with
//! the machine; ratios taken side by side do not).
//!
//! Baselines: `parse` (the least any path does to a frame) and `copy` (a
//! frame-sized memcpy). Measured: established flows (flow-table hit, rewrite)
//! and new flows (hash, slot lookup, next hop, insert), for IPv4 and for
//! IPv6 side by side, in `nat` and beside it in each other mode (`fullnat`
//! with its SNAT port, `dsr`, and `ipip`, `gue`: the outer header built and
//! put in place of the L2 header, as the I/O does), and new flows to a listener with a traffic
//! policy (source ranges, a rate and a flow limit that never refuse).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::PacketBuilder;
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Forwarding, FullNat, Gue, Listener, ListenerName,
    ListenerParts, ListenerPolicy, Protocol, Slot, Snapshot, SourceRanges,
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
            match handle(0, &mut self.scratch, next) {
                Verdict::Transmit(_) => outcome.transmitted += 1,
                Verdict::TransmitEncapsulated { head, .. } => {
                    let len = self.scratch.len();
                    self.scratch.resize(len + head.growth(), 0);
                    if packet::replace_head(&mut self.scratch, len, &head).is_some() {
                        outcome.transmitted += 1;
                    }
                }
                Verdict::TransmitSpliced { splice, .. } => {
                    let len = self.scratch.len();
                    self.scratch.resize(len + splice.header.len() + 4, 0);
                    if packet::proxy::splice(&mut self.scratch, len, &splice).is_some() {
                        outcome.transmitted += 1;
                    }
                }
                _ => {}
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

/// One UDP listener per family forwarding in `mode`, the same 16 backends
/// of its family each.
fn snapshot(mode: &Forwarding) -> Snapshot {
    snapshot_with(mode, ListenerPolicy::default())
}

fn snapshot_with(mode: &Forwarding, policy: ListenerPolicy) -> Snapshot {
    Snapshot::new(
        1,
        vec![
            listener(false, mode, policy.clone()),
            listener(true, mode, policy),
        ],
    )
    .expect("one listener per VIP")
}

/// What a policy costs a new flow when it admits it: a few ranges to
/// search (the client's near the end), a token to take, the live tally to
/// read. Its limits are far beyond what the bench sends.
fn admitting_policy() -> ListenerPolicy {
    let nets = |list: &[&str]| list.iter().map(|n| n.parse().expect("a CIDR")).collect();
    ListenerPolicy {
        source_ranges: SourceRanges {
            allow: Some(nets(&[
                "10.0.0.0/8",
                "192.0.2.0/24",
                "2001:db8:1::/48",
                "198.19.0.0/16",
            ])),
            deny: nets(&["198.19.255.0/24", "192.0.2.66/32", "2001:db8:1:ff::/64"]),
        },
        new_flows_per_second: std::num::NonZeroU32::new(u32::MAX),
        max_flows: std::num::NonZeroU32::new(u32::MAX),
    }
}

fn listener(v6: bool, mode: &Forwarding, policy: ListenerPolicy) -> Listener {
    // Encapsulation keeps the VIP's port: the backends listen on it.
    let port = if mode.translates_ports() { 5353 } else { 53 };
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
            draining: Vec::new(),
            health_check: None,
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
        forwarding: mode.clone(),
        policy,
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

fn worker(flow_capacity: usize, mode: &Forwarding) -> Worker {
    let worker = worker_with(flow_capacity, snapshot(mode));
    if !matches!(mode, Forwarding::FullNat(_)) {
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

fn worker_with(flow_capacity: usize, snapshot: Snapshot) -> Worker {
    let (_requests, control) = channel::bounded(1);
    Worker::new(
        0,
        vec![1],
        Arc::new(ArcSwap::from_pointee(snapshot)),
        Neighbors::fixed(l2_table()),
        control,
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
        WorkerSettings {
            flow_capacity,
            // New flows are embryonic (one packet each): a space as large
            // as the table keeps the miss rows' working set what it was
            // before the spaces were split, so their history compares.
            embryonic_capacity: Some(flow_capacity),
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

/// Per-packet cost of established flows (64, flow-table hits) and of new
/// flows (more than the table holds: every packet a miss) of one family,
/// forwarded in `mode`.
fn worker_costs(packets: usize, v6: bool, mode: &Forwarding) -> (f64, f64) {
    let established = {
        let mut w = worker(65536, mode);
        let mut io = ReplayIo {
            frames: frames(64, v6),
            scratch: Vec::with_capacity(128),
            next: 0,
        };
        w.run_once(&mut io); // warm the flow table
        time_per_packet(packets, || w.run_once(&mut io))
    };
    let new_flows = {
        let mut w = worker(1024, mode);
        let mut io = ReplayIo {
            frames: frames(200_000, v6),
            scratch: Vec::with_capacity(128),
            next: 0,
        };
        time_per_packet(packets / 4, || w.run_once(&mut io))
    };
    (established, new_flows)
}

/// Per-packet cost of new IPv4 flows to a listener whose policy admits
/// them all.
fn policy_new_flow_cost(packets: usize) -> f64 {
    let mut w = worker_with(1024, snapshot_with(&Forwarding::Nat, admitting_policy()));
    let mut io = ReplayIo {
        frames: frames(200_000, false),
        scratch: Vec::with_capacity(128),
        next: 0,
    };
    time_per_packet(packets / 4, || w.run_once(&mut io))
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
    let nat = Forwarding::Nat;
    let (established, new_flows) = worker_costs(packets, false, &nat);
    let (established6, new_flows6) = worker_costs(packets, true, &nat);
    let gue = Forwarding::Gue(Gue::default());
    let modes = [
        ("fullnat", Forwarding::FullNat(FullNat::default())),
        ("dsr", Forwarding::Dsr),
        ("ipip", Forwarding::Ipip),
        ("gue", gue),
    ];
    let other_modes: Vec<(&str, [f64; 4])> = modes
        .iter()
        .map(|(name, mode)| {
            let (e4, n4) = worker_costs(packets, false, mode);
            let (e6, n6) = worker_costs(packets, true, mode);
            (*name, [e4, n4, e6, n6])
        })
        .collect();
    let policy_new_flows = policy_new_flow_cost(packets);

    println!("yard-bench: worker on in-memory frames, 64-byte-payload UDP (IPv6: 84), one core");
    println!(
        "{:<46} {:>10} {:>12} {:>10}",
        "path", "ns/pkt", "Mpps", "x parse"
    );
    for (name, ns) in [
        ("baseline: frame copy", copy),
        ("baseline: parse only", parse),
        ("established flows (64, table hit)", established),
        ("new flows (table miss + decide)", new_flows),
        (
            "new flows, policy admitting (+ranges,limits)",
            policy_new_flows,
        ),
        ("IPv6 established flows (64, table hit)", established6),
        ("IPv6 new flows (table miss + decide)", new_flows6),
    ] {
        println!(
            "{:<46} {:>10.1} {:>12.2} {:>10.2}",
            name,
            ns,
            1e3 / ns,
            ns / parse
        );
    }
    for (mode, [e4, n4, e6, n6]) in &other_modes {
        for (what, ns) in [
            ("established", e4),
            ("new flows", n4),
            ("IPv6 established", e6),
            ("IPv6 new flows", n6),
        ] {
            println!(
                "{:<46} {:>10.1} {:>12.2} {:>10.2}",
                format!("{mode}: {what}"),
                ns,
                1e3 / ns,
                ns / parse
            );
        }
        println!(
            "{mode} / nat: established {:.2}x, new flows {:.2}x (IPv6: {:.2}x, {:.2}x)",
            e4 / established,
            n4 / new_flows,
            e6 / established6,
            n6 / new_flows6
        );
    }
    println!(
        "IPv6 / IPv4: established {:.2}x, new flows {:.2}x",
        established6 / established,
        new_flows6 / new_flows
    );
    println!(
        "policy / no policy, new flows: {:.2}x",
        policy_new_flows / new_flows
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
    for (mode, [e4, n4, e6, n6]) in &other_modes {
        summary.record(format!("worker_{mode}_established_ns"), *e4);
        summary.record(format!("worker_{mode}_new_flow_ns"), *n4);
        summary.record(format!("worker_{mode}_established_v6_ns"), *e6);
        summary.record(format!("worker_{mode}_new_flow_v6_ns"), *n6);
        summary.record(format!("worker_{mode}_established_ratio"), e4 / established);
        summary.record(format!("worker_{mode}_new_flow_ratio"), n4 / new_flows);
    }
    summary.record("worker_new_flow_policy_ns", policy_new_flows);
    summary.record("worker_new_flow_policy_ratio", policy_new_flows / new_flows);
    if let Err(err) = summary.write_if_asked() {
        eprintln!("writing --json: {err}");
    }
}
