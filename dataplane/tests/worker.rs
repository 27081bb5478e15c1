//! The worker over in-memory frames: the decisions, rewrites and counters of
//! the packet path, without sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use switchyard_config::snapshot::{Affinity, Endpoint, ListenerParts, Protocol, Slot, Snapshot};
use switchyard_dataplane::io::MemoryIo;
use switchyard_dataplane::neighbor::Neighbors;
use switchyard_dataplane::packet::FlowKey;
use switchyard_dataplane::worker::{choose, Worker, WorkerRequest, WorkerSettings};

mod harness;
mod two_arm;
use harness::{build, harness_with, listener_at, Harness};
use two_arm::*;

const UNRESOLVED_BE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 99);

/// Parts of `demo/edge/<name>`: one backendRef over `backends`, each
/// owning one slot of the smallest table (a table's length is prime: with
/// one backend it owns both slots of two, with none both are unavailable).
fn listener(
    name: &str,
    protocol: Protocol,
    port: u16,
    backends: &[(Ipv4Addr, u16)],
) -> ListenerParts {
    let backends: Vec<(IpAddr, u16)> = backends.iter().map(|&(a, p)| (a.into(), p)).collect();
    listener_at(name, protocol, VIP.into(), port, &backends)
}

/// The parts of `snapshot`'s listeners, to change some and build anew.
fn parts_of(snapshot: &Snapshot) -> Vec<ListenerParts> {
    snapshot
        .listeners()
        .iter()
        .map(|l| l.clone().into_parts())
        .collect()
}

fn snapshot() -> Snapshot {
    let mut unavailable = listener("dead", Protocol::Tcp, 81, &[]);
    unavailable.slots = vec![Slot::Unavailable; 2];
    build(
        1,
        vec![
            listener("tcp", Protocol::Tcp, 80, &[(BE1, 8080), (BE2, 8080)]),
            listener("udp", Protocol::Udp, 53, &[(BE1, 5353), (BE2, 5353)]),
            unavailable,
            listener("unresolved", Protocol::Tcp, 82, &[(UNRESOLVED_BE, 8080)]),
        ],
    )
}

fn harness() -> Harness {
    harness_with(snapshot())
}

fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 65535)
        .syn();
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn udp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

/// What a receiving host would check: addresses, ports, and checksums
/// recomputed from scratch.
struct Seen {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: Vec<u8>,
}

fn inspect(frame: &[u8]) -> Seen {
    let packet = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = packet.link else {
        panic!("not ethernet")
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = packet.net else {
        panic!("not ipv4")
    };
    let header = ip.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (src_port, dst_port, payload) = match packet.transport.expect("transport") {
        TransportSlice::Tcp(tcp) => {
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expected, "TCP checksum");
            (
                tcp.source_port(),
                tcp.destination_port(),
                tcp.payload().to_vec(),
            )
        }
        TransportSlice::Udp(udp) => {
            let expected = udp
                .to_header()
                .calc_checksum_ipv4(&header, udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), expected, "UDP checksum");
            (
                udp.source_port(),
                udp.destination_port(),
                udp.payload().to_vec(),
            )
        }
        other => panic!("unexpected transport {other:?}"),
    };
    Seen {
        eth_src: eth.source(),
        eth_dst: eth.destination(),
        src: (header.source.into(), src_port),
        dst: (header.destination.into(), dst_port),
        payload,
    }
}

const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);

#[test]
fn syn_to_vip_goes_to_a_backend_on_its_target_port_with_client_address_kept() {
    let mut h = harness();
    let (port, out) = h
        .send(
            0,
            tcp_frame(FROM_CLIENT, (CLIENT, 40000), (VIP, 80), b"hello"),
        )
        .expect("forwarded");
    let seen = inspect(&out);
    assert_eq!(port, 1, "backends are behind the second interface");
    assert_eq!(seen.src, (CLIENT, 40000));
    assert!(
        seen.dst == (BE1, 8080) || seen.dst == (BE2, 8080),
        "{:?}",
        seen.dst
    );
    let backend_mac = if seen.dst.0 == BE1 { BE1_MAC } else { BE2_MAC };
    assert_eq!(seen.eth_dst, backend_mac);
    assert_eq!(seen.eth_src, LB_BACKEND_SIDE_MAC);
    assert_eq!(seen.payload, b"hello");
}

#[test]
fn backend_reply_comes_back_from_the_vip() {
    let mut h = harness();
    let (_, out) = h
        .send(0, tcp_frame(FROM_CLIENT, (CLIENT, 40001), (VIP, 80), b""))
        .unwrap();
    let backend = inspect(&out).dst;
    let backend_mac = if backend.0 == BE1 { BE1_MAC } else { BE2_MAC };
    let reply = tcp_frame(
        (backend_mac, LB_BACKEND_SIDE_MAC),
        backend,
        (CLIENT, 40001),
        b"world",
    );
    let (port, out) = h.send(1, reply).expect("reply forwarded");
    let seen = inspect(&out);
    assert_eq!(port, 0);
    assert_eq!(seen.src, (VIP, 80));
    assert_eq!(seen.dst, (CLIENT, 40001));
    assert_eq!(seen.eth_dst, CLIENT_MAC);
    assert_eq!(seen.eth_src, LB_CLIENT_SIDE_MAC);
}

#[test]
fn reply_seen_first_by_another_worker_is_still_reversed() {
    // RSS is not symmetric: the worker that sees the reply may never have
    // seen the request.
    let mut h = harness();
    let mut other = h.another_worker();
    let request = udp_frame(FROM_CLIENT, (CLIENT, 50000), (VIP, 53), b"question");
    let backend = inspect(&h.send(0, request).expect("forwarded").1).dst;
    let backend_mac = if backend.0 == BE1 { BE1_MAC } else { BE2_MAC };
    let reply = udp_frame(
        (backend_mac, LB_BACKEND_SIDE_MAC),
        backend,
        (CLIENT, 50000),
        b"answer",
    );
    let (_, out) = other.send(1, reply).expect("reply forwarded");
    let seen = inspect(&out);
    assert_eq!(seen.src, (VIP, 53));
    assert_eq!(seen.dst, (CLIENT, 50000));
}

#[test]
fn a_backend_packet_that_answers_no_client_flow_is_dropped_not_translated() {
    // Forged, or from a backend that was never asked: leaving as the VIP it
    // would reach any address with the VIP's authority.
    let mut h = harness();
    let forged_udp = udp_frame(
        (BE1_MAC, LB_BACKEND_SIDE_MAC),
        (BE1, 5353),
        (CLIENT, 50000),
        b"unasked",
    );
    assert!(h.send(1, forged_udp).is_none());
    let forged_tcp = tcp_frame(
        (BE1_MAC, LB_BACKEND_SIDE_MAC),
        (BE1, 8080),
        (CLIENT, 40000),
        b"unasked",
    );
    assert!(h.send(1, forged_tcp).is_none());
    assert_eq!(h.drops("reply_without_flow"), 2);

    // A real flow does not open the door to its neighbours: another client
    // port of the same client is still no flow.
    let request = udp_frame(FROM_CLIENT, (CLIENT, 50001), (VIP, 53), b"q");
    let backend = inspect(&h.send(0, request).expect("forwarded").1).dst;
    let backend_mac = if backend.0 == BE1 { BE1_MAC } else { BE2_MAC };
    let stray = udp_frame(
        (backend_mac, LB_BACKEND_SIDE_MAC),
        backend,
        (CLIENT, 50002),
        b"a",
    );
    assert!(h.send(1, stray).is_none());
    assert_eq!(h.drops("reply_without_flow"), 3);
}

#[test]
fn every_packet_of_a_flow_reaches_the_same_backend_on_any_worker() {
    let mut first = harness();
    let mut second = harness();
    for client_port in 30000..30200u16 {
        let frame = udp_frame(FROM_CLIENT, (CLIENT, client_port), (VIP, 53), b"q");
        let a = inspect(&first.send(0, frame.clone()).unwrap().1).dst;
        let again = inspect(&first.send(0, frame.clone()).unwrap().1).dst;
        let b = inspect(&second.send(0, frame).unwrap().1).dst;
        assert_eq!(a, again, "same worker, same flow");
        assert_eq!(a, b, "another worker, same flow");
    }
}

#[test]
fn flows_spread_over_both_backends() {
    let mut h = harness();
    let mut to_be1 = 0;
    for client_port in 20000..20400u16 {
        let frame = tcp_frame(FROM_CLIENT, (CLIENT, client_port), (VIP, 80), b"");
        if inspect(&h.send(0, frame).unwrap().1).dst.0 == BE1 {
            to_be1 += 1;
        }
    }
    assert!((120..=280).contains(&to_be1), "{to_be1} of 400 to be1");
}

#[test]
fn truncated_frame_is_dropped_and_counted() {
    let mut h = harness();
    let mut frame = tcp_frame(FROM_CLIENT, (CLIENT, 40000), (VIP, 80), b"data");
    frame.truncate(30);
    assert!(h.send(0, frame).is_none());
    assert_eq!(h.drops("truncated"), 1);
}

#[test]
fn share_of_a_backend_without_endpoints_is_refused() {
    let mut h = harness();
    let frame = tcp_frame(FROM_CLIENT, (CLIENT, 40000), (VIP, 81), b"");
    let (port, reset) = h.send(0, frame).expect("a reset back to the client");
    assert_eq!(port, 0);
    assert_eq!(tcp_flags(&reset), (true, true), "RST+ACK answering a SYN");
    let seen = inspect(&reset);
    assert_eq!((seen.src, seen.dst), ((VIP, 81), (CLIENT, 40000)));
    assert_eq!(
        (seen.eth_src, seen.eth_dst),
        (LB_CLIENT_SIDE_MAC, CLIENT_MAC)
    );
    assert_eq!(h.drops("backend_unavailable"), 1);
}

#[test]
fn udp_datagrams_to_the_share_of_a_backend_without_endpoints_are_dropped() {
    let mut h = harness();
    let mut listeners = parts_of(&snapshot());
    let mut unavailable = listener("dead-udp", Protocol::Udp, 54, &[]);
    unavailable.slots = vec![Slot::Unavailable; 2];
    listeners.push(unavailable);
    h.config.store(Arc::new(build(2, listeners)));
    for client_port in [40000, 40001, 40000] {
        let frame = udp_frame(FROM_CLIENT, (CLIENT, client_port), (VIP, 54), b"query");
        assert!(h.send(0, frame).is_none(), "nothing is sent back or on");
    }
    assert!(h.io.tx.is_empty(), "{} frames transmitted", h.io.tx.len());
    assert_eq!(h.drops("backend_unavailable"), 3);
}

/// (RST, ACK) flags of a TCP frame.
fn tcp_flags(frame: &[u8]) -> (bool, bool) {
    match SlicedPacket::from_ethernet(frame).unwrap().transport {
        Some(TransportSlice::Tcp(tcp)) => (tcp.rst(), tcp.ack()),
        other => panic!("not TCP: {other:?}"),
    }
}

/// A mid-connection segment (ACK, no SYN).
fn tcp_ack_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_CLIENT_SIDE_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 65535)
        .ack(7777);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

/// `frame` as a host with tx checksum offload on hands it to a veth (Linux
/// `CHECKSUM_PARTIAL`): the TCP/UDP checksum field holds the pseudo-header
/// sum, folded and not inverted.
fn with_partial_checksum(frame: &[u8]) -> Vec<u8> {
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("not ipv4")
    };
    let header = ip.header();
    let (protocol, at) = match packet.transport {
        Some(TransportSlice::Tcp(_)) => (6u16, 16),
        Some(TransportSlice::Udp(_)) => (17, 6),
        other => panic!("not TCP or UDP: {other:?}"),
    };
    let l4_offset = 14 + usize::from(header.ihl()) * 4;
    let l4_len = usize::from(header.total_len()) - usize::from(header.ihl()) * 4;
    let mut sum: u32 = 0;
    for addr in [header.source(), header.destination()] {
        sum += u32::from(u16::from_be_bytes([addr[0], addr[1]]));
        sum += u32::from(u16::from_be_bytes([addr[2], addr[3]]));
    }
    sum += u32::from(protocol) + l4_len as u32;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut frame = frame.to_vec();
    frame[l4_offset + at..l4_offset + at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    frame
}

/// A client and backends on the LB's host with default veth offloads send
/// partial checksums. Every frame the worker sends on carries the full
/// checksum a receiving stack verifies from scratch (`inspect`), on a new
/// flow and on a flow the table holds, both ways, and each is counted.
#[test]
fn partial_checksums_leave_complete_and_are_counted() {
    let mut h = harness();
    let syn = with_partial_checksum(&tcp_frame(FROM_CLIENT, (CLIENT, 40000), (VIP, 80), b""));
    let (_, out) = h.send(0, syn).expect("SYN forwarded");
    let backend = inspect(&out).dst;

    let data = with_partial_checksum(&tcp_ack_frame((CLIENT, 40000), (VIP, 80), b"GET /"));
    let (_, out) = h.send(0, data).expect("data forwarded");
    let seen = inspect(&out);
    assert_eq!(
        (seen.dst, seen.payload.as_slice()),
        (backend, &b"GET /"[..])
    );

    let mut reply = tcp_ack_frame(backend, (CLIENT, 40000), b"200 OK");
    reply[..12].copy_from_slice(&[LB_BACKEND_SIDE_MAC, BE1_MAC].concat());
    let (port, out) = h
        .send(1, with_partial_checksum(&reply))
        .expect("reply forwarded");
    let seen = inspect(&out);
    assert_eq!((port, seen.src, seen.dst), (0, (VIP, 80), (CLIENT, 40000)));

    let query = with_partial_checksum(&udp_frame(FROM_CLIENT, (CLIENT, 53000), (VIP, 53), b"q"));
    let (_, out) = h.send(0, query).expect("UDP forwarded");
    assert_eq!(inspect(&out).payload, b"q");

    // A frame with a complete checksum is not counted.
    let (_, out) = h
        .send(0, tcp_ack_frame((CLIENT, 40000), (VIP, 80), b"more"))
        .expect("forwarded");
    inspect(&out);
    assert_eq!(h.stats().partial_checksums, 4);
}

#[test]
fn backend_without_neighbour_is_dropped_and_resolution_requested() {
    let mut h = harness();
    let frame = tcp_frame(FROM_CLIENT, (CLIENT, 40000), (VIP, 82), b"");
    assert!(h.send(0, frame).is_none());
    assert_eq!(h.drops("neighbour_unresolved"), 1);
    assert_eq!(h.neighbors.pending_requests(), 1);
}

#[test]
fn steered_packet_matching_nothing_is_not_a_service() {
    let mut h = harness();
    let frame = tcp_frame(FROM_CLIENT, (CLIENT, 40000), (VIP, 9999), b"");
    assert!(h.send(0, frame).is_none());
    assert_eq!(h.drops("not_a_service"), 1);
}

#[test]
fn counters_follow_listener_backend_and_flow() {
    let mut h = harness();
    let frame = tcp_frame(FROM_CLIENT, (CLIENT, 41000), (VIP, 80), b"abc");
    let len = frame.len() as u64;
    for _ in 0..3 {
        h.send(0, frame.clone()).unwrap();
    }
    let stats = h.stats();
    assert_eq!(stats.rx_packets, 3);
    assert_eq!(stats.tx_packets, 3);
    let tcp = &stats.listeners[0];
    assert_eq!((tcp.flows, tcp.packets, tcp.bytes), (1, 3, 3 * len));
    let per_backend: u64 = stats.backends[0].iter().map(|b| b.packets).sum();
    assert_eq!(per_backend, 3);
}

/// A client the kernel's table has no neighbour entry for yet.
const NEW_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const NEW_CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 11];

#[test]
fn first_reply_to_a_client_not_yet_in_the_neighbour_table_uses_its_frame_macs() {
    let mut h = harness();
    let request = udp_frame(
        (NEW_CLIENT_MAC, LB_CLIENT_SIDE_MAC),
        (NEW_CLIENT, 50000),
        (VIP, 53),
        b"q",
    );
    let backend = inspect(&h.send(0, request).expect("forwarded").1).dst;
    let backend_mac = if backend.0 == BE1 { BE1_MAC } else { BE2_MAC };
    let reply = udp_frame(
        (backend_mac, LB_BACKEND_SIDE_MAC),
        backend,
        (NEW_CLIENT, 50000),
        b"a",
    );
    let (port, out) = h.send(1, reply).expect("the first reply is not lost");
    let seen = inspect(&out);
    assert_eq!(port, 0, "back out of the interface the request came in on");
    assert_eq!(
        (seen.eth_src, seen.eth_dst),
        (LB_CLIENT_SIDE_MAC, NEW_CLIENT_MAC)
    );
    assert_eq!(seen.src, (VIP, 53));
    assert!(
        h.neighbors.pending_requests() >= 1,
        "the kernel is asked to resolve it"
    );
}

#[test]
fn reply_to_an_unresolved_client_without_a_request_seen_here_waits_for_the_table() {
    let mut h = harness();
    let mut other = h.another_worker();
    let request = udp_frame(
        (NEW_CLIENT_MAC, LB_CLIENT_SIDE_MAC),
        (NEW_CLIENT, 50001),
        (VIP, 53),
        b"q",
    );
    let backend = inspect(&h.send(0, request).expect("forwarded").1).dst;
    let backend_mac = if backend.0 == BE1 { BE1_MAC } else { BE2_MAC };
    let reply = udp_frame(
        (backend_mac, LB_BACKEND_SIDE_MAC),
        backend,
        (NEW_CLIENT, 50001),
        b"a",
    );
    assert!(other.send(1, reply).is_none());
    assert_eq!(other.drops("neighbour_unresolved"), 1);
}

#[test]
fn choose_names_the_backend_the_worker_forwards_to() {
    // A multi-slot table with a non-zero seed, so the check is not trivial.
    let seed = 0x5eed_1234;
    let mut tcp = listener("tcp", Protocol::Tcp, 80, &[(BE1, 8080), (BE2, 8080)]);
    tcp.slots = (0..97u32).map(|i| Slot::Backend(i % 3 % 2)).collect();
    let snapshot = build(1, vec![tcp]);
    let neighbors = Neighbors::fixed(l2_table());
    let (_requests, control) = channel::bounded(1);
    let mut worker = Worker::new(
        0,
        vec![10, 20],
        Arc::new(ArcSwap::from_pointee(snapshot.clone())),
        neighbors,
        control,
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
        WorkerSettings {
            hash_seed: seed,
            ..WorkerSettings::default()
        },
    );
    let mut io = MemoryIo::new(64);
    let mut slots_seen = std::collections::BTreeSet::new();
    for client_port in 10000..10200u16 {
        io.rx.push_back((
            0,
            tcp_frame(FROM_CLIENT, (CLIENT, client_port), (VIP, 80), b""),
        ));
        worker.run_once(&mut io);
        let forwarded = inspect(&io.tx.pop().expect("forwarded").1).dst;
        let key = FlowKey {
            src: CLIENT.into(),
            dst: VIP.into(),
            src_port: client_port,
            dst_port: 80,
            protocol: 6,
        };
        let choice = choose(&snapshot, &key, seed).expect("listener matches");
        assert_eq!(choice.slots, 97);
        assert_eq!(choice.slot, choice.hash as usize % 97);
        slots_seen.insert(choice.slot);
        let chosen = snapshot.listeners()[0].backends()[choice.backend.unwrap() as usize].endpoint;
        assert_eq!(
            chosen,
            Endpoint {
                address: IpAddr::V4(forwarded.0),
                port: forwarded.1
            },
            "client port {client_port}"
        );
    }
    assert!(slots_seen.len() > 50, "only {} slots hit", slots_seen.len());
}

#[test]
fn lookup_finds_a_tracked_flow_by_its_client_to_vip_key() {
    let mut h = harness();
    let frame = tcp_frame(FROM_CLIENT, (CLIENT, 42000), (VIP, 80), b"abc");
    let len = frame.len() as u64;
    let backend = inspect(&h.send(0, frame.clone()).unwrap().1).dst;
    h.send(0, frame).unwrap();
    let key = FlowKey {
        src: CLIENT.into(),
        dst: VIP.into(),
        src_port: 42000,
        dst_port: 80,
        protocol: 6,
    };
    let mut lookup = |key: FlowKey| {
        let (reply, answer) = channel::bounded(1);
        h.requests.send(WorkerRequest::Lookup(key, reply)).unwrap();
        h.worker.serve_control();
        answer.recv().unwrap()
    };
    let record = lookup(key).expect("the flow is tracked");
    assert_eq!(record.queue, 0);
    assert_eq!(record.key, key);
    assert_eq!(
        (record.entry.rewrite.ip_dst, record.entry.rewrite.dst_port),
        (backend.0.into(), backend.1)
    );
    assert_eq!((record.entry.packets, record.entry.bytes), (2, 2 * len));
    assert!(lookup(FlowKey {
        src_port: 42001,
        ..key
    })
    .is_none());
    assert!(
        lookup(FlowKey {
            protocol: 17,
            ..key
        })
        .is_none(),
        "another protocol is another flow"
    );
}

fn affinity_snapshot(affinity: Option<Affinity>) -> Snapshot {
    let mut udp = listener("udp", Protocol::Udp, 53, &[(BE1, 5353), (BE2, 5353)]);
    udp.slots = (0..251u32).map(|i| Slot::Backend(i % 2)).collect();
    udp.affinity = affinity;
    build(1, vec![udp])
}

fn backend_of(snapshot: &Snapshot, client: Ipv4Addr, client_port: u16) -> u32 {
    let key = FlowKey {
        src: client.into(),
        dst: VIP.into(),
        src_port: client_port,
        dst_port: 53,
        protocol: 17,
    };
    choose(snapshot, &key, 7)
        .expect("listener matches")
        .backend
        .expect("every slot has a backend")
}

#[test]
fn with_client_ip_affinity_every_flow_of_a_client_reaches_one_backend() {
    let snapshot = affinity_snapshot(Some(Affinity {
        timeout_secs: 10_800,
    }));
    for client in 1..=20u8 {
        let client = Ipv4Addr::new(198, 18, 1, client);
        let first = backend_of(&snapshot, client, 40_000);
        for client_port in 40_000..40_050u16 {
            assert_eq!(
                backend_of(&snapshot, client, client_port),
                first,
                "{client}:{client_port}"
            );
        }
    }
}

#[test]
fn with_client_ip_affinity_different_clients_spread_over_both_backends() {
    let snapshot = affinity_snapshot(Some(Affinity {
        timeout_secs: 10_800,
    }));
    let to_be1 = (0..=255u8)
        .filter(|&c| backend_of(&snapshot, Ipv4Addr::new(198, 18, 1, c), 40_000) == 0)
        .count();
    assert!(
        (64..=192).contains(&to_be1),
        "{to_be1} of 256 clients to be1"
    );
}

#[test]
fn without_affinity_flows_of_one_client_spread_over_both_backends() {
    let snapshot = affinity_snapshot(None);
    let to_be1 = (40_000..40_050u16)
        .filter(|&port| backend_of(&snapshot, CLIENT, port) == 0)
        .count();
    assert!((10..=40).contains(&to_be1), "{to_be1} of 50 flows to be1");
}

// ------------------------------------------------------------- reloads

/// The backend (address) each of `ports` reaches through the TCP listener.
fn tcp_backends(h: &mut Harness, ports: std::ops::Range<u16>) -> Vec<Ipv4Addr> {
    ports
        .map(|port| {
            let frame = tcp_frame(FROM_CLIENT, (CLIENT, port), (VIP, 80), b"x");
            let (_, out) = h.send(0, frame).expect("forwarded");
            inspect(&out).dst.0
        })
        .collect()
}

/// The test snapshot with the TCP listener's backends replaced and its
/// slot table reversed, so a fresh decision would move most flows.
fn reloaded(generation: u64, tcp_backends: &[(Ipv4Addr, u16)]) -> Snapshot {
    let mut listeners = parts_of(&snapshot());
    let mut tcp = listener("tcp", Protocol::Tcp, 80, tcp_backends);
    tcp.slots.reverse();
    listeners[0] = tcp;
    build(generation, listeners)
}

#[test]
fn established_flows_keep_their_backend_across_a_reload_that_reshuffles_the_table() {
    let mut h = harness();
    let before = tcp_backends(&mut h, 40000..40040);
    assert!(before.contains(&BE1) && before.contains(&BE2));
    h.config
        .store(Arc::new(reloaded(2, &[(BE1, 8080), (BE2, 8080)])));
    assert_eq!(tcp_backends(&mut h, 40000..40040), before);
    // New flows follow the new table.
    let fresh = tcp_backends(&mut h, 41000..41040);
    let expected: Vec<Ipv4Addr> = (41000..41040u16)
        .map(|port| {
            let key = FlowKey {
                src: CLIENT.into(),
                dst: VIP.into(),
                src_port: port,
                dst_port: 80,
                protocol: 6,
            };
            let snapshot = h.config.load();
            let choice = choose(&snapshot, &key, WorkerSettings::default().hash_seed).unwrap();
            let backend = choice.backend.unwrap() as usize;
            match h.config.load().listeners()[0].backends()[backend]
                .endpoint
                .address
            {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => unreachable!(),
            }
        })
        .collect();
    assert_eq!(fresh, expected);
}

#[test]
fn a_flow_whose_backend_is_removed_is_decided_afresh() {
    let mut h = harness();
    let before = tcp_backends(&mut h, 40000..40040);
    h.config.store(Arc::new(reloaded(2, &[(BE2, 8080)])));
    let after = tcp_backends(&mut h, 40000..40040);
    assert!(after.iter().all(|&b| b == BE2), "{after:?}");
    assert!(before.contains(&BE1));
}

#[test]
fn replies_of_an_endpoint_behind_two_listeners_are_reversed_on_every_worker() {
    const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 20);
    let mut h = harness();
    let mut other = h.another_worker();
    let mut listeners = parts_of(&snapshot());
    let mut second = listener("udp2", Protocol::Udp, 9053, &[(BE1, 5353), (BE2, 5353)]);
    second.address = IpAddr::V4(VIP2);
    listeners.push(second);
    h.config.store(Arc::new(build(2, listeners)));
    for (vip, port) in [(VIP, 53), (VIP2, 9053)] {
        let request = udp_frame(FROM_CLIENT, (CLIENT, 40000), (vip, port), b"q");
        let (_, out) = h.send(0, request).expect("forwarded");
        let backend = inspect(&out).dst;
        let reply_macs = if backend.0 == BE1 {
            (BE1_MAC, LB_BACKEND_SIDE_MAC)
        } else {
            (BE2_MAC, LB_BACKEND_SIDE_MAC)
        };
        let reply = udp_frame(reply_macs, backend, (CLIENT, 40000), b"a");
        for worker in [&mut h, &mut other] {
            let (egress, out) = worker.send(1, reply.clone()).expect("reply reversed");
            assert_eq!(egress, 0);
            let seen = inspect(&out);
            assert_eq!(seen.src, (vip, port));
            assert_eq!(seen.dst, (CLIENT, 40000));
        }
    }
    assert_eq!(h.drops("reply_without_flow"), 0);
    assert_eq!(other.drops("reply_without_flow"), 0);
}

#[test]
fn a_connection_whose_backend_is_removed_gets_a_reset_and_a_new_syn_is_decided_afresh() {
    let mut h = harness();
    let before = tcp_backends(&mut h, 40000..40040);
    let port = 40000 + before.iter().position(|&b| b == BE1).unwrap() as u16;
    h.config.store(Arc::new(reloaded(2, &[(BE2, 8080)])));

    let segment = tcp_ack_frame((CLIENT, port), (VIP, 80), b"more");
    let (egress, reset) = h.send(0, segment).expect("a reset");
    assert_eq!(egress, 0);
    assert_eq!(tcp_flags(&reset), (true, false), "RST at the segment's ACK");
    let seen = inspect(&reset);
    assert_eq!((seen.src, seen.dst), ((VIP, 80), (CLIENT, port)));
    assert!(seen.payload.is_empty());
    assert_eq!(h.drops("backend_removed"), 1);

    // Later segments of the dead connection get resets too ...
    let again = tcp_ack_frame((CLIENT, port), (VIP, 80), b"x");
    assert_eq!(tcp_flags(&h.send(0, again).unwrap().1), (true, false));
    // ... and a client's reset is not answered.
    let mut rst = tcp_ack_frame((CLIENT, port), (VIP, 80), b"");
    rst[14 + 20 + 13] |= 0x04;
    assert!(h.send(0, rst).is_none());

    // A SYN reusing the 5-tuple is a new connection.
    let syn = tcp_frame(FROM_CLIENT, (CLIENT, port), (VIP, 80), b"");
    let (_, out) = h.send(0, syn).expect("forwarded");
    assert_eq!(inspect(&out).dst, (BE2, 8080));
}

#[test]
fn a_udp_flow_whose_backend_is_removed_is_rehashed() {
    let mut h = harness();
    let mut listeners = parts_of(&snapshot());
    let send = |h: &mut Harness, port: u16| {
        let frame = udp_frame(FROM_CLIENT, (CLIENT, port), (VIP, 53), b"q");
        inspect(&h.send(0, frame).expect("forwarded").1).dst.0
    };
    let before: Vec<Ipv4Addr> = (40000..40020).map(|p| send(&mut h, p)).collect();
    assert!(before.contains(&BE1));
    listeners[1] = listener("udp", Protocol::Udp, 53, &[(BE2, 5353)]);
    h.config.store(Arc::new(build(2, listeners)));
    let after: Vec<Ipv4Addr> = (40000..40020).map(|p| send(&mut h, p)).collect();
    assert!(after.iter().all(|&b| b == BE2), "{after:?}");
    assert_eq!(h.drops("backend_removed"), 0);
}

/// The backend address the UDP affinity listener gives `client:port`.
fn udp_backend(h: &mut Harness, client: Ipv4Addr, port: u16) -> Ipv4Addr {
    let macs = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);
    let frame = udp_frame(macs, (client, port), (VIP, 53), b"q");
    inspect(&h.send(0, frame).expect("forwarded").1).dst.0
}

/// The affinity listener with its slot table inverted (every client's slot
/// now names the other backend) and the given weights.
fn affinity_reloaded(generation: u64, weights: [f64; 2]) -> Snapshot {
    let mut listeners = parts_of(&affinity_snapshot(Some(Affinity { timeout_secs: 600 })));
    let udp = &mut listeners[0];
    for slot in &mut udp.slots {
        if let Slot::Backend(b) = slot {
            *b = 1 - *b;
        }
    }
    udp.backends[0].effective_weight = weights[0];
    udp.backends[1].effective_weight = weights[1];
    build(generation, listeners)
}

#[test]
fn with_client_ip_affinity_a_client_keeps_its_backend_across_a_reload_that_moves_its_slot() {
    let mut h = harness();
    h.config.store(Arc::new(affinity_snapshot(Some(Affinity {
        timeout_secs: 600,
    }))));
    let clients: Vec<Ipv4Addr> = (10..30).map(|i| Ipv4Addr::new(198, 18, 1, i)).collect();
    let before: Vec<Ipv4Addr> = clients
        .iter()
        .map(|&c| udp_backend(&mut h, c, 40000))
        .collect();
    assert!(before.contains(&BE1) && before.contains(&BE2));

    h.config.store(Arc::new(affinity_reloaded(2, [0.5, 0.5])));
    // New flows (new source ports) of known clients: their entries decide.
    let after: Vec<Ipv4Addr> = clients
        .iter()
        .map(|&c| udp_backend(&mut h, c, 41000))
        .collect();
    assert_eq!(after, before);
    // A client never seen follows the (inverted) table.
    let newcomer = Ipv4Addr::new(198, 18, 1, 200);
    let got = udp_backend(&mut h, newcomer, 41000);
    let key = FlowKey {
        src: newcomer.into(),
        dst: VIP.into(),
        src_port: 41000,
        dst_port: 53,
        protocol: 17,
    };
    let slot_choice = choose(&h.config.load(), &key, WorkerSettings::default().hash_seed)
        .unwrap()
        .backend
        .unwrap();
    assert_eq!(got, [BE1, BE2][slot_choice as usize]);
}

#[test]
fn with_client_ip_affinity_a_client_whose_backend_is_drained_or_removed_is_hashed_afresh() {
    let mut h = harness();
    h.config.store(Arc::new(affinity_snapshot(Some(Affinity {
        timeout_secs: 600,
    }))));
    let clients: Vec<Ipv4Addr> = (10..30).map(|i| Ipv4Addr::new(198, 18, 1, i)).collect();
    let before: Vec<Ipv4Addr> = clients
        .iter()
        .map(|&c| udp_backend(&mut h, c, 40001))
        .collect();
    assert!(before.contains(&BE1));
    // BE1 drained: weight 0 and no slots. Clients whose entry names BE1
    // must not keep it.
    let mut drained = parts_of(&affinity_reloaded(2, [0.0, 1.0]));
    drained[0].slots = vec![Slot::Backend(1); 251];
    h.config.store(Arc::new(build(2, drained)));
    for &c in &clients {
        assert_eq!(udp_backend(&mut h, c, 41000), BE2);
    }
    // BE1 removed: every new flow reaches BE2.
    let mut listeners = parts_of(&affinity_snapshot(Some(Affinity { timeout_secs: 600 })));
    listeners[0] = {
        let mut udp = listener("udp", Protocol::Udp, 53, &[(BE2, 5353)]);
        udp.affinity = Some(Affinity { timeout_secs: 600 });
        udp
    };
    h.config.store(Arc::new(build(3, listeners)));
    for &c in &clients {
        assert_eq!(udp_backend(&mut h, c, 42000), BE2);
    }
}

// ------------------------------------------------------------- counters

#[test]
fn listener_and_backend_counters_survive_a_reload_that_reorders_them() {
    let mut h = harness();
    let before = tcp_backends(&mut h, 40000..40010);
    let stats = h.stats();
    assert_eq!(stats.listeners[0].flows, 10);
    let on_be1 = before.iter().filter(|&&b| b == BE1).count() as u64;
    assert_eq!(stats.backends[0][0].flows, on_be1);

    // The TCP listener moves to the end and its backends swap places; the
    // UDP listener goes away.
    let mut listeners = parts_of(&snapshot());
    let tcp = listeners.remove(0);
    listeners.remove(0);
    let mut swapped = listener("tcp", Protocol::Tcp, 80, &[(BE2, 8080), (BE1, 8080)]);
    swapped.slots = tcp.slots.clone();
    listeners.push(swapped);
    h.config.store(Arc::new(build(2, listeners)));

    let after = h.stats();
    assert_eq!(after.generation, 2);
    assert_eq!(after.listeners.len(), 3);
    let tcp_index = 2;
    assert_eq!(after.listeners[tcp_index], stats.listeners[0]);
    assert_eq!(after.backends[tcp_index][1], stats.backends[0][0], "be1");
    assert_eq!(after.backends[tcp_index][0], stats.backends[0][1], "be2");
    assert_eq!(after.listeners[0].packets, 0, "dead listener, still idle");

    // Established flows count on top of the carried totals.
    tcp_backends(&mut h, 40000..40010);
    let again = h.stats();
    assert_eq!(
        again.listeners[tcp_index].packets,
        stats.listeners[0].packets + 10
    );
    assert_eq!(again.listeners[tcp_index].flows, 10);
}

#[test]
fn counters_of_a_listener_renamed_at_the_same_vip_start_afresh() {
    let mut h = harness();
    tcp_backends(&mut h, 40000..40005);
    let mut listeners = parts_of(&snapshot());
    listeners[0].name.listener = "renamed".into();
    h.config.store(Arc::new(build(2, listeners)));
    let after = h.stats();
    assert_eq!(after.listeners[0], Default::default());
    assert!(after.backends[0].iter().all(|c| c.packets == 0));
}

#[test]
fn a_flow_read_walks_at_most_4096_slots_per_gap_and_its_time_is_recorded() {
    use switchyard_dataplane::flow_scan::FlowSort;
    use switchyard_dataplane::flow_scan::{FlowScan, SCAN_BUDGET};

    let mut h = harness();
    let flows = SCAN_BUDGET as u16 + 904;
    for port in 0..flows {
        let frame = udp_frame(FROM_CLIENT, (CLIENT, 10_000 + port), (VIP, 53), b"q");
        h.send(0, frame).expect("forwarded");
    }
    let (reply, answer) = channel::bounded(1);
    h.requests
        .send(WorkerRequest::Flows(FlowScan::default(), reply))
        .unwrap();
    h.worker.serve_control();
    assert!(answer.try_recv().is_err(), "5000 flows do not fit one gap");
    assert!(h.worker.control_pending());
    h.worker.serve_control();
    let all = answer.try_recv().expect("the second gap ends the walk");
    assert_eq!(all.len(), usize::from(flows));
    assert!(!h.worker.control_pending());

    // With a limit only the best come back, still in bounded gaps.
    let (reply, answer) = channel::bounded(1);
    let best = FlowScan {
        sort: Some(FlowSort::Packets),
        limit: Some(3),
        ..FlowScan::default()
    };
    h.requests.send(WorkerRequest::Flows(best, reply)).unwrap();
    h.worker.serve_control();
    assert!(answer.try_recv().is_err());
    h.worker.serve_control();
    assert_eq!(answer.try_recv().unwrap().len(), 3);

    let (reply, answer) = channel::bounded(1);
    h.requests.send(WorkerRequest::Latency(reply)).unwrap();
    h.worker.serve_control();
    let latency = answer.recv().unwrap().summary();
    assert!(
        latency.control_ns.count >= 4,
        "every gap that served a request is recorded: {latency:?}"
    );
    assert!(latency.control_ns.max > 0);
}

#[test]
fn a_refused_connection_is_counted_on_its_listener_too() {
    let mut h = harness();
    for port in [41000, 41001] {
        let frame = tcp_frame(FROM_CLIENT, (CLIENT, port), (VIP, 81), b"");
        h.send(0, frame).expect("answered with a reset");
    }
    let stats = h.stats();
    let dead = &stats.listeners[2];
    assert_eq!(dead.backend_unavailable, 2);
    assert_eq!((dead.packets, dead.flows, dead.backend_removed), (0, 0, 0));
    assert_eq!(stats.listeners[0].backend_unavailable, 0, "only its own");
    assert_eq!(h.drops("backend_unavailable"), 2, "and on the worker");
}

// IPv6, and a dual-stack Gateway: one listener per address, each with its
// own family's endpoints (as config resolution builds them).

fn dual_stack() -> Snapshot {
    let v4: Vec<(IpAddr, u16)> = vec![(BE1.into(), 8080), (BE2.into(), 8080)];
    let v6: Vec<(IpAddr, u16)> = vec![(BE1_6.into(), 8080), (BE2_6.into(), 8080)];
    let udp6: Vec<(IpAddr, u16)> = vec![(BE1_6.into(), 5353), (BE2_6.into(), 5353)];
    build(
        1,
        vec![
            listener_at("tcp", Protocol::Tcp, VIP.into(), 80, &v4),
            listener_at("tcp", Protocol::Tcp, VIP6.into(), 80, &v6),
            listener_at("udp", Protocol::Udp, VIP6.into(), 53, &udp6),
        ],
    )
}

const FROM_CLIENT6: ([u8; 6], [u8; 6]) = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);

fn frame6(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    tcp: bool,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1).ipv6(src.0.octets(), dst.0.octets(), 64);
    let mut frame = Vec::new();
    if tcp {
        builder
            .tcp(src.1, dst.1, 1000, 65535)
            .syn()
            .write(&mut frame, payload)
            .unwrap();
    } else {
        builder
            .udp(src.1, dst.1)
            .write(&mut frame, payload)
            .unwrap();
    }
    frame
}

/// `inspect` for IPv6: addresses, ports, and the L4 checksum recomputed
/// from scratch over the IPv6 pseudo-header.
fn inspect6(frame: &[u8]) -> ((Ipv6Addr, u16), (Ipv6Addr, u16), Vec<u8>) {
    let packet = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(etherparse::NetSlice::Ipv6(ip)) = packet.net else {
        panic!("not ipv6")
    };
    let header = ip.header().to_header();
    let (src_port, dst_port, payload) = match packet.transport.expect("transport") {
        TransportSlice::Tcp(tcp) => {
            let expected = tcp
                .to_header()
                .calc_checksum_ipv6(&header, tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expected, "TCP checksum");
            (
                tcp.source_port(),
                tcp.destination_port(),
                tcp.payload().to_vec(),
            )
        }
        TransportSlice::Udp(udp) => {
            let expected = udp
                .to_header()
                .calc_checksum_ipv6(&header, udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), expected, "UDP checksum");
            (
                udp.source_port(),
                udp.destination_port(),
                udp.payload().to_vec(),
            )
        }
        other => panic!("unexpected transport {other:?}"),
    };
    (
        (header.source.into(), src_port),
        (header.destination.into(), dst_port),
        payload,
    )
}

#[test]
fn ipv6_syn_to_an_ipv6_vip_reaches_an_ipv6_backend_with_the_client_kept() {
    let mut h = harness_with(dual_stack());
    let (port, out) = h
        .send(
            0,
            frame6(FROM_CLIENT6, (CLIENT6, 40000), (VIP6, 80), true, b"hello"),
        )
        .expect("forwarded");
    assert_eq!(port, 1);
    let (src, dst, payload) = inspect6(&out);
    assert_eq!(src, (CLIENT6, 40000));
    assert!(dst == (BE1_6, 8080) || dst == (BE2_6, 8080), "{dst:?}");
    assert_eq!(payload, b"hello");
    let mac = if dst.0 == BE1_6 { BE1_MAC } else { BE2_MAC };
    assert_eq!(
        (&out[0..6], &out[6..12]),
        (&mac[..], &LB_BACKEND_SIDE_MAC[..])
    );
}

#[test]
fn ipv6_flows_spread_over_both_backends_and_replies_come_from_the_vip_on_any_worker() {
    let mut h = harness_with(dual_stack());
    let mut other = h.another_worker();
    let mut used = std::collections::HashSet::new();
    for client_port in 40000..40032 {
        let (_, out) = h
            .send(
                0,
                frame6(
                    FROM_CLIENT6,
                    (CLIENT6, client_port),
                    (VIP6, 53),
                    false,
                    b"q",
                ),
            )
            .expect("forwarded");
        let (_, backend, _) = inspect6(&out);
        used.insert(backend.0);
        // The answer reaches the other worker: the shared reply table
        // knows its VIP.
        let mac = if backend.0 == BE1_6 { BE1_MAC } else { BE2_MAC };
        let (port, reply) = other
            .send(
                1,
                frame6(
                    (mac, LB_BACKEND_SIDE_MAC),
                    backend,
                    (CLIENT6, client_port),
                    false,
                    b"a",
                ),
            )
            .expect("reply forwarded");
        assert_eq!(port, 0);
        let (src, dst, _) = inspect6(&reply);
        assert_eq!((src, dst), ((VIP6, 53), (CLIENT6, client_port)));
        assert_eq!(&reply[0..6], &CLIENT_MAC[..]);
    }
    assert_eq!(used.len(), 2, "both backends take flows");
}

#[test]
fn a_dual_stack_gateway_serves_each_family_from_its_own_endpoints() {
    let mut h = harness_with(dual_stack());
    for client_port in 40000..40016 {
        let (_, out4) = h
            .send(
                0,
                tcp_frame(FROM_CLIENT, (CLIENT, client_port), (VIP, 80), b"v4"),
            )
            .expect("IPv4 forwarded");
        let seen = inspect(&out4);
        assert!([BE1, BE2].contains(&seen.dst.0));
        let (_, out6) = h
            .send(
                0,
                frame6(
                    FROM_CLIENT6,
                    (CLIENT6, client_port),
                    (VIP6, 80),
                    true,
                    b"v6",
                ),
            )
            .expect("IPv6 forwarded");
        let (_, dst, _) = inspect6(&out6);
        assert!([BE1_6, BE2_6].contains(&dst.0));
    }
}

#[test]
fn an_ipv6_packet_from_a_backend_answering_no_flow_is_dropped() {
    let mut h = harness_with(dual_stack());
    let forged = frame6(
        (BE1_MAC, LB_BACKEND_SIDE_MAC),
        (BE1_6, 8080),
        (CLIENT6, 40000),
        true,
        b"",
    );
    assert!(h.send(1, forged).is_none());
    assert_eq!(h.drops("reply_without_flow"), 1);
}

#[test]
fn ipv6_extension_headers_travel_on_and_a_chain_past_the_bound_is_dropped() {
    let mut h = harness_with(dual_stack());
    // Destination Options headers of 8 bytes (one PadN) spliced in after
    // the fixed header: they sit outside the pseudo-header.
    let with_options = |count: usize| {
        let frame = frame6(FROM_CLIENT6, (CLIENT6, 40000), (VIP6, 80), true, b"x");
        let mut out = frame[..54].to_vec();
        out[20] = 60;
        let extra = 8 * count as u16;
        let payload_len = u16::from_be_bytes([out[18], out[19]]) + extra;
        out[18..20].copy_from_slice(&payload_len.to_be_bytes());
        for i in 0..count {
            let next = if i + 1 == count { 6 } else { 60 };
            out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        out.extend_from_slice(&frame[54..]);
        out
    };
    let (_, out) = h.send(0, with_options(2)).expect("forwarded");
    assert_eq!(out.len(), with_options(2).len());
    assert_eq!(out[54..70], with_options(2)[54..70], "options kept");
    let (src, dst, payload) = inspect6(&out);
    assert_eq!((src, payload.as_slice()), ((CLIENT6, 40000), &b"x"[..]));
    assert_eq!(dst.1, 8080);

    assert!(h.send(0, with_options(7)).is_none());
    assert_eq!(h.drops("ext_header_chain_too_long"), 1);
}
