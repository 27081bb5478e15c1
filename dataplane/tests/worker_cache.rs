//! The worker with the XDP flow cache: which flows it installs, and how a
//! flow gets back into the cache after the cache lost it or never took it
//! (a closing 5-tuple reused by a new connection, an entry the kernel's LRU
//! evicted, a batch update the kernel wrote only part of).
//!
//! Needs root (loading BPF); the program is loaded, never attached, so the
//! test touches no interface and no frame goes through the program: every
//! frame here reaches the worker, as one does whose cache entry is gone.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::PacketBuilder;
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol, Slot,
    Snapshot,
};
use switchyard_dataplane::fast_path::{cache_key, cache_key6, CacheWriter, Egress, FastPath};
use switchyard_dataplane::flow::{Cached, FlowEntry, FlowTimeouts};
use switchyard_dataplane::flow_scan::{ActiveEntry, FlowScan};
use switchyard_dataplane::io::MemoryIo;
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, Neighbors, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
};
use switchyard_dataplane::packet::FlowKey;
use switchyard_dataplane::worker::{Worker, WorkerRequest, WorkerSettings, WorkerStats};
use switchyard_xdp::{FastPathMaps, Steering};

mod two_arm;
use two_arm::*;

const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 53;

/// `demo/edge/<name>` on the VIP with `backends` (two, or one), each
/// owning one slot.
fn listener(name: &str, protocol: Protocol, port: u16, backends: &[(Ipv4Addr, u16)]) -> Listener {
    let endpoints: Vec<Endpoint> = backends
        .iter()
        .map(|&(a, p)| Endpoint {
            address: IpAddr::V4(a),
            port: p,
        })
        .collect();
    Listener::new(ListenerParts {
        name: ListenerName {
            namespace: "demo".into(),
            gateway: "edge".into(),
            listener: name.into(),
        },
        route: format!("demo/{name}"),
        address: IpAddr::V4(VIP),
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
        // A table's length is prime: one backend owns both slots of two.
        slots: match endpoints.len() {
            1 => vec![Slot::Backend(0); 2],
            n => (0..n as u32).map(Slot::Backend).collect(),
        },
        affinity: None,
        forwarding: Default::default(),
        policy: Default::default(),
    })
    .expect("valid listener")
}

fn snapshot() -> Snapshot {
    // The same UDP listener on the Gateway's IPv6 address, with the
    // backends' IPv6 endpoints.
    let mut udp6 =
        listener("udp", Protocol::Udp, UDP_PORT, &[(BE1, 5353), (BE2, 5353)]).into_parts();
    udp6.address = VIP6.into();
    let endpoints6 = [BE1_6, BE2_6].map(|a| Endpoint {
        address: a.into(),
        port: 5353,
    });
    udp6.groups[0].endpoints = endpoints6.to_vec();
    for (backend, endpoint) in udp6.backends.iter_mut().zip(endpoints6) {
        backend.endpoint = endpoint;
    }
    Snapshot::new(
        1,
        vec![
            listener("tcp", Protocol::Tcp, TCP_PORT, &[(BE1, 8080), (BE2, 8080)]),
            listener("udp", Protocol::Udp, UDP_PORT, &[(BE1, 5353), (BE2, 5353)]),
            Listener::new(udp6).expect("valid listener"),
        ],
    )
    .expect("one listener per VIP")
}

struct Harness {
    /// Keeps the program (and so its maps) loaded.
    _steering: Steering,
    maps: FastPathMaps,
    fast: Arc<FastPath>,
    /// The worker's clock starts here.
    epoch: Instant,
    config: Arc<ArcSwap<Snapshot>>,
    worker: Worker,
    io: MemoryIo,
    requests: channel::Sender<WorkerRequest>,
}

fn harness() -> Harness {
    harness_with(WorkerSettings::default())
}

fn harness_with(settings: WorkerSettings) -> Harness {
    let steering = Steering::load().expect("loading the XDP program (needs root)");
    let maps = steering.fast_path().clone();
    harness_over(steering, maps, settings, l2_table())
}

/// The two egress slots the tests' caches send through: ifindex 10 and 20.
fn egress_slots() -> [Egress; 2] {
    [
        Egress {
            slot: 0,
            ifindex: 10,
        },
        Egress {
            slot: 1,
            ifindex: 20,
        },
    ]
}
/// A worker whose cache writer writes into `maps`.
fn harness_over(
    steering: Steering,
    maps: FastPathMaps,
    settings: WorkerSettings,
    l2: L2Table,
) -> Harness {
    let epoch = Instant::now();
    let snapshot = Arc::new(snapshot());
    let neighbors = Neighbors::fixed(l2);
    let fast = Arc::new(FastPath::new(maps.clone(), epoch));
    fast.prepare(&snapshot);
    fast.published(&snapshot);
    fast.l2_published(&neighbors.table());
    maps.set_enabled(true).unwrap();
    let (requests, control) = channel::bounded(4);
    let config = Arc::new(ArcSwap::new(snapshot));
    let worker = Worker::new(
        0,
        vec![10, 20],
        config.clone(),
        neighbors,
        control,
        Arc::new(AtomicBool::new(false)),
        epoch,
        settings,
    )
    .with_fast_path(CacheWriter::new(fast.clone(), egress_slots().to_vec()));
    Harness {
        _steering: steering,
        maps,
        fast,
        epoch,
        config,
        worker,
        io: MemoryIo::new(64),
        requests,
    }
}

impl Harness {
    /// Feeds `frames` as one batch; returns what the worker sent.
    fn batch(&mut self, frames: Vec<(usize, Vec<u8>)>) -> Vec<(usize, Vec<u8>)> {
        self.io.rx.extend(frames);
        self.worker.run_once(&mut self.io);
        std::mem::take(&mut self.io.tx)
    }

    /// Feeds one frame on `port`; returns (egress port, frame) if sent.
    fn send(&mut self, port: usize, frame: Vec<u8>) -> Option<(usize, Vec<u8>)> {
        self.batch(vec![(port, frame)]).pop()
    }

    fn entry(&mut self, key: FlowKey) -> Option<FlowEntry> {
        let (reply, answer) = channel::bounded(1);
        self.requests
            .send(WorkerRequest::Lookup(key, reply))
            .unwrap();
        self.worker.serve_control();
        answer.recv().unwrap().map(|record| record.entry)
    }

    fn active(&mut self) -> Vec<ActiveEntry> {
        let (reply, answer) = channel::bounded(1);
        self.requests
            .send(WorkerRequest::ActiveFlows(reply))
            .unwrap();
        while answer.is_empty() {
            self.worker.serve_control();
        }
        answer.recv().unwrap()
    }

    fn stats(&mut self) -> WorkerStats {
        let (reply, answer) = channel::bounded(1);
        self.requests.send(WorkerRequest::Stats(reply)).unwrap();
        self.worker.serve_control();
        answer.recv().unwrap()
    }

    /// Flows the worker holds, without touching them.
    fn stats_flows(&mut self) -> usize {
        let (reply, answer) = channel::bounded(1);
        self.requests
            .send(WorkerRequest::Flows(FlowScan::default(), reply))
            .unwrap();
        while answer.is_empty() {
            self.worker.serve_control();
        }
        answer.recv().unwrap().len()
    }

    fn new_flows(&mut self, listener: usize) -> u64 {
        self.stats().listeners[listener].flows
    }

    /// Publishes `next` as the daemon does: slots and epochs, the swap,
    /// then the epochs in the program's map.
    fn reload(&self, next: Snapshot) {
        let next = Arc::new(next);
        self.fast.prepare(&next);
        self.config.store(next.clone());
        self.fast.published(&next);
    }

    /// The worker's clock now.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether the flow cache holds an entry for `key`.
    fn in_cache(&self, key: &FlowKey) -> bool {
        self.maps
            .lookup(&cache_key(key).unwrap())
            .unwrap()
            .is_some()
    }
}

fn tcp(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: &str,
) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 65535);
    for flag in flags.chars() {
        builder = match flag {
            'S' => builder.syn(),
            'A' => builder.ack(1),
            'F' => builder.fin(),
            'R' => builder.rst(),
            'P' => builder.psh(),
            other => panic!("flag {other}"),
        };
    }
    let mut frame = Vec::new();
    builder.write(&mut frame, b"x").unwrap();
    frame
}

fn udp(src: (Ipv4Addr, u16), n: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1)
        .ipv4(src.0.octets(), VIP.octets(), 64)
        .udp(src.1, UDP_PORT)
        .write(&mut frame, format!("datagram {n}").as_bytes())
        .unwrap();
    frame
}

fn udp_key(src: (Ipv4Addr, u16)) -> FlowKey {
    FlowKey {
        src: src.0.into(),
        dst: VIP.into(),
        src_port: src.1,
        dst_port: UDP_PORT,
        protocol: 17,
    }
}

/// The backend a frame was sent to, from its destination.
fn destination(frame: &[u8]) -> (Ipv4Addr, u16) {
    let ip = &frame[14..34];
    let l4 = &frame[34..38];
    (
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

#[test]
fn a_new_syn_on_a_closing_five_tuple_starts_a_new_flow_in_both_directions() {
    let mut h = harness();
    let client = (CLIENT, 40000);
    let vip = (VIP, TCP_PORT);
    let forward = FlowKey {
        src: CLIENT.into(),
        dst: VIP.into(),
        src_port: 40000,
        dst_port: TCP_PORT,
        protocol: 6,
    };
    let (_, out) = h.send(0, tcp(FROM_CLIENT, client, vip, "S")).unwrap();
    let backend = destination(&out);
    let from_backend = (
        if backend.0 == BE1 { BE1_MAC } else { BE2_MAC },
        LB_BACKEND_SIDE_MAC,
    );
    let reply = FlowKey {
        src: backend.0.into(),
        dst: CLIENT.into(),
        src_port: backend.1,
        dst_port: 40000,
        protocol: 6,
    };
    // Handshake, data both ways, then FIN both ways.
    for (port, frame) in [
        (1, tcp(from_backend, backend, client, "SA")),
        (0, tcp(FROM_CLIENT, client, vip, "A")),
        (1, tcp(from_backend, backend, client, "PA")),
        (0, tcp(FROM_CLIENT, client, vip, "FA")),
        (1, tcp(from_backend, backend, client, "FA")),
        (0, tcp(FROM_CLIENT, client, vip, "A")),
    ] {
        h.send(port, frame).expect("forwarded");
    }
    for key in [forward, reply] {
        assert!(h.entry(key).unwrap().closing, "{key:?}");
    }
    assert_eq!(h.new_flows(0), 1);

    // The client reuses the 5-tuple for a new connection.
    let (_, out) = h.send(0, tcp(FROM_CLIENT, client, vip, "S")).unwrap();
    assert_eq!(
        destination(&out),
        backend,
        "same table, same slot: same backend"
    );
    let entry = h.entry(forward).unwrap();
    assert!(!entry.closing, "a new SYN starts a new flow: {entry:?}");
    assert_eq!(entry.packets, 1, "counted from its SYN");
    assert_eq!(h.new_flows(0), 2, "decided again, counted as a new flow");
    assert!(
        h.active().iter().any(|a| a.key == forward && !a.closing),
        "counted as active"
    );
    h.send(1, tcp(from_backend, backend, client, "SA")).unwrap();
    let entry = h.entry(reply).unwrap();
    assert!(!entry.closing, "the reply direction starts anew too");
    assert_eq!(entry.packets, 1);

    // Settled again: both directions go back into the cache.
    h.send(0, tcp(FROM_CLIENT, client, vip, "A")).unwrap();
    h.send(1, tcp(from_backend, backend, client, "PA")).unwrap();
    for key in [forward, reply] {
        assert_eq!(h.entry(key).unwrap().cached, Cached::Current, "{key:?}");
        assert!(h.in_cache(&key), "{key:?}");
    }

    // In the established class again: past the closing timeout (10 s) but
    // well within the established one, the flow stays.
    let last = h.entry(forward).unwrap().last_seen_ns;
    h.worker
        .expire(last + Duration::from_secs(11).as_nanos() as u64);
    assert!(h.entry(forward).is_some(), "expired as a closing flow");
    assert!(h.entry(reply).is_some(), "expired as a closing flow");
}

#[test]
fn a_flow_whose_cache_entry_the_kernel_dropped_is_installed_again_at_its_next_packet() {
    let mut h = harness();
    let client = (CLIENT, 41000);
    let key = udp_key(client);
    h.send(0, udp(client, 1)).unwrap();
    h.send(0, udp(client, 2)).unwrap();
    assert_eq!(h.entry(key).unwrap().cached, Cached::Current);
    assert!(h.in_cache(&key));

    // The cache's LRU evicts the entry behind the worker's back.
    assert_eq!(h.maps.remove(&[cache_key(&key).unwrap()]).unwrap(), 1);
    // Past the time packets already on their way to the worker when the
    // entry was written can take to arrive.
    std::thread::sleep(Duration::from_millis(300));
    h.send(0, udp(client, 3)).unwrap();
    assert!(h.in_cache(&key), "installed again");
    assert_eq!(h.entry(key).unwrap().cached, Cached::Current);
    let counted = h.stats().cache;
    assert_eq!((counted.installed, counted.lost), (2, 1), "{counted:?}");
}

#[test]
fn a_batch_update_the_kernel_wrote_only_part_of_marks_only_the_written_flows_cached() {
    let steering = Steering::load().expect("loading the XDP program (needs root)");
    // A cache with room for two: the kernel stops the batch at the third.
    let bounded = steering.fast_path().with_bounded_cache(2).unwrap();
    let mut h = harness_over(steering, bounded, WorkerSettings::default(), l2_table());
    let clients: Vec<(Ipv4Addr, u16)> = (0..4).map(|i| (CLIENT, 42000 + i)).collect();
    // One batch: the first packet of each flow, then the second, which
    // queues all four installs for one batch update.
    let mut frames: Vec<(usize, Vec<u8>)> = clients.iter().map(|&c| (0, udp(c, 1))).collect();
    frames.extend(clients.iter().map(|&c| (0, udp(c, 2))));
    assert_eq!(h.batch(frames).len(), 8);

    let cached: Vec<bool> = clients
        .iter()
        .map(|&c| h.entry(udp_key(c)).unwrap().cached == Cached::Current)
        .collect();
    assert_eq!(cached, [true, true, false, false], "written in queue order");
    for (&c, &cached) in clients.iter().zip(&cached) {
        assert_eq!(h.in_cache(&udp_key(c)), cached, "{c:?}");
    }
    let counted = h.stats().cache;
    assert_eq!(
        (counted.installed, counted.unwritten),
        (2, 2),
        "{counted:?}"
    );

    // Room again: the flows left out are written at their next packet.
    let written: Vec<_> = clients[..2]
        .iter()
        .map(|&c| cache_key(&udp_key(c)).unwrap())
        .collect();
    assert_eq!(h.maps.remove(&written).unwrap(), 2);
    h.batch(clients[2..].iter().map(|&c| (0, udp(c, 3))).collect());
    for &c in &clients[2..] {
        assert_eq!(h.entry(udp_key(c)).unwrap().cached, Cached::Current);
        assert!(h.in_cache(&udp_key(c)), "{c:?}");
    }
}

/// The worker-thread cost of an expiry pass that has to ask about every
/// flow it holds: `n` cached UDP flows, idle to the worker past their
/// timeout, all but one seen by the fast path since. Prints the pass's
/// time (`--nocapture`); asserts only what the pass decides.
#[test]
fn an_expiry_pass_keeps_cached_flows_the_fast_path_still_carries() {
    let n = 4096u16;
    let udp_timeout = Duration::from_secs(2);
    let mut h = harness_with(WorkerSettings {
        timeouts: FlowTimeouts {
            udp: udp_timeout,
            ..FlowTimeouts::default()
        },
        ..WorkerSettings::default()
    });
    let clients: Vec<(Ipv4Addr, u16)> = (0..n).map(|i| (CLIENT, 10000 + i)).collect();
    for round in 1..=2 {
        h.io.rx.extend(clients.iter().map(|&c| (0, udp(c, round))));
        while !h.io.rx.is_empty() {
            h.worker.run_once(&mut h.io);
        }
        h.io.tx.clear();
    }
    let installed = h.now();
    std::thread::sleep(Duration::from_millis(1500));
    // The fast path carries every flow but the first, whose entry is gone
    // (evicted): only the cache could have kept it.
    for &c in &clients[1..] {
        h._steering.test_run_output(&udp(c, 3), None).unwrap();
    }
    let evicted = udp_key(clients[0]);
    assert_eq!(h.maps.remove(&[cache_key(&evicted).unwrap()]).unwrap(), 1);
    // Idle to the worker for longer than the UDP timeout, seen by the fast
    // path well within it.
    while h.now() < installed + udp_timeout.as_nanos() as u64 + 200_000_000 {
        std::thread::sleep(Duration::from_millis(50));
    }

    // Nothing is known without a view of the cache: every flow is kept
    // (the pass below finds them all).
    let started = Instant::now();
    h.worker.expire(h.now());
    let without_view = started.elapsed();

    // The reader's pass, on a thread of its own in the daemon.
    let started = Instant::now();
    h.fast.refresh_activity();
    let read = started.elapsed();
    let started = Instant::now();
    h.worker.expire(h.now());
    let pass = started.elapsed();
    println!(
        "expiry pass over {n} cached flows, on the worker thread: {} us \
         (without a view: {} us); the reader's pass over the cache: {} us",
        pass.as_micros(),
        without_view.as_micros(),
        read.as_micros()
    );
    assert_eq!(h.stats_flows(), n as usize - 1, "the others are kept");
    assert!(h.entry(evicted).is_none(), "gone from the cache: expired");
}

#[test]
fn a_reload_that_changes_one_listener_leaves_the_cached_flows_of_the_others_applying() {
    let mut h = harness();
    let client = (CLIENT, 43000);
    let vip = (VIP, TCP_PORT);
    // A cached flow on each listener.
    h.send(0, tcp(FROM_CLIENT, client, vip, "S")).unwrap();
    h.send(0, tcp(FROM_CLIENT, client, vip, "A")).unwrap();
    h.send(0, udp(client, 1)).unwrap();
    h.send(0, udp(client, 2)).unwrap();
    let tcp_key = FlowKey {
        src: CLIENT.into(),
        dst: VIP.into(),
        src_port: client.1,
        dst_port: TCP_PORT,
        protocol: 6,
    };
    for key in [tcp_key, udp_key(client)] {
        assert_eq!(h.entry(key).unwrap().cached, Cached::Current, "{key:?}");
    }
    // What the program does with a packet of each.
    let fast_path_takes = |h: &Harness, frame: &[u8]| {
        let stale = h._steering.counters().unwrap().fast_stale;
        h._steering.test_run_output(frame, None).unwrap();
        h._steering.counters().unwrap().fast_stale == stale
    };
    let tcp_data = tcp(FROM_CLIENT, client, vip, "PA");
    let udp_data = udp(client, 3);
    assert!(fast_path_takes(&h, &tcp_data) && fast_path_takes(&h, &udp_data));

    // The TCP listener loses a backend; the UDP listener is untouched.
    let changed = Snapshot::new(
        2,
        vec![
            listener("tcp", Protocol::Tcp, TCP_PORT, &[(BE1, 8080)]),
            listener("udp", Protocol::Udp, UDP_PORT, &[(BE1, 5353), (BE2, 5353)]),
        ],
    )
    .unwrap();
    h.reload(changed);
    assert!(
        !fast_path_takes(&h, &tcp_data),
        "the changed listener's entries stop applying"
    );
    assert!(
        fast_path_takes(&h, &udp_data),
        "the other listener's entries still apply"
    );
}

#[test]
fn a_settled_ipv6_flow_is_installed_in_the_programs_ipv6_cache() {
    let mut h = harness();
    let datagram = |n: usize| {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1)
            .ipv6(CLIENT6.octets(), VIP6.octets(), 64)
            .udp(40000, UDP_PORT)
            .write(&mut frame, format!("datagram {n}").as_bytes())
            .unwrap();
        frame
    };
    let key = FlowKey {
        src: CLIENT6.into(),
        dst: VIP6.into(),
        src_port: 40000,
        dst_port: UDP_PORT,
        protocol: 17,
    };
    let cached = |h: &Harness| {
        h.maps
            .lookup6(&cache_key6(&key).unwrap())
            .unwrap()
            .map(|action| action.spec())
    };
    h.send(0, datagram(1)).expect("forwarded");
    assert_eq!(cached(&h), None, "a flow's first packet is not cached");
    let (_, out) = h.send(0, datagram(2)).expect("forwarded");
    let spec = cached(&h).expect("the second packet installs the flow");
    let entry = h.entry(key).unwrap();
    assert_eq!(entry.cached, Cached::Current);
    assert_eq!(
        (std::net::IpAddr::V6(spec.ip_dst), spec.dst_port),
        (entry.rewrite.ip_dst, 5353)
    );
    assert!([BE1_6, BE2_6].contains(&spec.ip_dst));
    assert_eq!(spec.ip_src, CLIENT6);
    assert_eq!(&out[0..6], &spec.eth_dst[..]);
    assert!(
        h.fast.view().unwrap().get(&key).is_some(),
        "listed with the flows"
    );
}

#[test]
fn a_flow_whose_frames_change_vlan_tags_stays_with_the_workers() {
    // The program sends a frame with the tag it came with; this client's
    // frames arrive tagged and leave by the untagged backend arm.
    let mut h = harness();
    let client = (CLIENT, 41010);
    let key = udp_key(client);
    let tagged = |n: usize| {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1)
            .single_vlan(etherparse::VlanId::try_new(100).unwrap())
            .ipv4(client.0.octets(), VIP.octets(), 64)
            .udp(client.1, UDP_PORT)
            .write(&mut frame, format!("datagram {n}").as_bytes())
            .unwrap();
        frame
    };
    for n in 0..3 {
        let frame = tagged(n);
        let (_, out) = h.send(0, frame.clone()).expect("forwarded");
        assert_eq!(out.len(), frame.len() - 4, "the tag popped");
    }
    assert_eq!(h.entry(key).unwrap().cached, Cached::No);
    assert!(!h.in_cache(&key));
    assert_eq!(h.stats().vlan_popped, 3);
}

#[test]
fn a_flow_toward_a_link_of_smaller_mtu_than_its_ingress_stays_with_the_workers() {
    // The program checks no MTU: a later, larger packet of a cached flow
    // would leave too big. The backend arm's MTU is below the client's.
    let table = |backend_mtu| {
        let route = |dst: Ipv4Addr, ifindex| RouteEntry {
            dst: dst.into(),
            prefix_len: 24,
            metric: 0,
            action: RouteAction::Forward {
                ifindex,
                gateway: None,
            },
        };
        let neighbour = |ip: Ipv4Addr, ifindex, mac| NeighbourEntry {
            ifindex,
            ip: ip.into(),
            mac: Some(mac),
            state: NeighbourState::Reachable,
        };
        let link = |ifindex, mac, mtu| LinkEntry {
            mtu,
            ..LinkEntry::ethernet(ifindex, mac)
        };
        L2Table::new(
            &[10, 20],
            &[
                link(10, LB_CLIENT_SIDE_MAC, 1500),
                link(20, LB_BACKEND_SIDE_MAC, backend_mtu),
            ],
            &[
                route(Ipv4Addr::new(198, 18, 1, 0), 10),
                route(Ipv4Addr::new(198, 18, 2, 0), 20),
            ],
            &[
                neighbour(CLIENT, 10, CLIENT_MAC),
                neighbour(BE1, 20, BE1_MAC),
                neighbour(BE2, 20, BE2_MAC),
            ],
        )
    };
    for (backend_mtu, cached) in [(1400, false), (1500, true)] {
        let steering = Steering::load().expect("loading the XDP program (needs root)");
        let maps = steering.fast_path().clone();
        let mut h = harness_over(
            steering,
            maps,
            WorkerSettings::default(),
            table(backend_mtu),
        );
        let client = (CLIENT, 41020);
        for n in 0..3 {
            h.send(0, udp(client, n)).expect("forwarded");
        }
        assert_eq!(h.in_cache(&udp_key(client)), cached, "MTU {backend_mtu}");
    }
}

/// `snapshot()` as generation `generation`, the TCP listener's Maglev table
/// turned around, so every new flow goes to the other backend.
fn snapshot_turned_around(generation: u64) -> Snapshot {
    let mut tcp =
        listener("tcp", Protocol::Tcp, TCP_PORT, &[(BE1, 8080), (BE2, 8080)]).into_parts();
    tcp.slots.reverse();
    Snapshot::new(
        generation,
        vec![Listener::new(tcp).expect("valid listener")],
    )
    .expect("one listener per VIP")
}

#[test]
fn a_worker_seeded_from_the_cache_keeps_each_flow_on_its_backend_under_a_changed_table() {
    let mut first = harness();
    let client = (CLIENT, 42000);
    let vip = (VIP, TCP_PORT);
    first.send(0, tcp(FROM_CLIENT, client, vip, "A")).unwrap();
    let (_, out) = first.send(0, tcp(FROM_CLIENT, client, vip, "A")).unwrap();
    let backend = destination(&out);
    assert_eq!(first.maps.entries().unwrap().len(), 1, "the flow is cached");

    // The next daemon: the same maps, a table that sends new flows to the
    // other backend, and its workers' flow tables read back from the cache.
    let turned = Arc::new(snapshot_turned_around(2));
    let egress = egress_slots();
    let seeds = switchyard_dataplane::rebuild::read(&first.maps, &turned, &egress, 0)
        .expect("reading the cache");
    assert_eq!((seeds.flows.len(), seeds.full_nat), (1, 0));
    let build = |seeded: bool| {
        let (_requests, control) = channel::bounded(4);
        let worker = Worker::new(
            0,
            vec![10, 20],
            Arc::new(ArcSwap::new(turned.clone())),
            Neighbors::fixed(l2_table()),
            control,
            Arc::new(AtomicBool::new(false)),
            Instant::now(),
            WorkerSettings::default(),
        );
        if seeded {
            worker.with_seeded_flows(&seeds.flows)
        } else {
            worker
        }
    };
    let forward = |mut worker: Worker| {
        let mut io = MemoryIo::new(64);
        io.rx.push_back((0, tcp(FROM_CLIENT, client, vip, "A")));
        worker.run_once(&mut io);
        let (_, out) = io.tx.pop().expect("forwarded");
        destination(&out)
    };
    assert_eq!(forward(build(true)), backend);
    // Without the seeds the turned table would have moved it.
    assert_ne!(forward(build(false)), backend);
}

#[test]
fn a_held_fast_path_writes_its_epochs_only_when_released() {
    let steering = Steering::load().expect("loading the XDP program (needs root)");
    let maps = steering.fast_path().clone();
    let fast = FastPath::new(maps.clone(), Instant::now());
    let snapshot = Arc::new(snapshot());
    fast.hold();
    fast.prepare(&snapshot);
    fast.published(&snapshot);
    let slot = fast.slots().slot(0, 0);
    assert_ne!(slot, 0, "the first backend has a stats slot");
    // The previous daemon's entries keep applying meanwhile.
    assert_eq!(maps.epoch(slot).unwrap(), 0);
    assert_eq!(maps.published().unwrap().0, 0);

    fast.release().unwrap();
    assert_eq!(maps.epoch(slot).unwrap(), 1);
    assert_eq!(maps.published().unwrap().0, snapshot.generation());
}
