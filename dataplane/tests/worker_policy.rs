//! Traffic policy on the worker: source ranges, a listener's new-flow rate
//! and flow limits (TCP refused with a reset, UDP dropped, each counted per
//! listener and by drop reason), a policy change reaching flows already
//! open, and a flood of new flows leaving established flows in the table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use ipnet::IpNet;
use switchyard_config::snapshot::{
    ListenerParts, ListenerPolicy, Protocol, Snapshot, SourceRanges,
};
use switchyard_dataplane::io::MemoryIo;
use switchyard_dataplane::neighbor::Neighbors;
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::worker::{Worker, WorkerSettings};

// Shared with the other worker suites, which use what this one does not.
#[allow(dead_code)]
mod harness;
#[allow(dead_code)]
mod two_arm;
use harness::{build, harness_with, listener_at, Harness};
use two_arm::*;

fn listener(name: &str, protocol: Protocol, port: u16, policy: ListenerPolicy) -> ListenerParts {
    listener_on(
        VIP.into(),
        &[BE1.into(), BE2.into()],
        name,
        protocol,
        port,
        policy,
    )
}

fn listener_on(
    vip: IpAddr,
    backends: &[IpAddr],
    name: &str,
    protocol: Protocol,
    port: u16,
    policy: ListenerPolicy,
) -> ListenerParts {
    let endpoints: Vec<(IpAddr, u16)> = backends.iter().map(|&a| (a, port + 8000)).collect();
    ListenerParts {
        policy,
        ..listener_at(name, protocol, vip, port, &endpoints)
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn ranged(allow: Option<&[&str]>, deny: &[&str]) -> ListenerPolicy {
    ListenerPolicy {
        source_ranges: SourceRanges {
            allow: allow.map(nets),
            deny: nets(deny),
        },
        ..ListenerPolicy::default()
    }
}

fn limited(rate: Option<u32>, max: Option<u32>) -> ListenerPolicy {
    ListenerPolicy {
        new_flows_per_second: rate.and_then(NonZeroU32::new),
        max_flows: max.and_then(NonZeroU32::new),
        ..ListenerPolicy::default()
    }
}

/// A TCP segment from `client` to the VIP: a SYN, or with `flags` "A" an
/// ACK, "F" a FIN.
fn tcp(client: (Ipv4Addr, u16), port: u16, flags: &str) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_CLIENT_SIDE_MAC)
        .ipv4(client.0.octets(), VIP.octets(), 64)
        .tcp(client.1, port, 1000, 65535);
    let builder = match flags {
        "A" => builder.ack(1),
        "F" => builder.ack(1).fin(),
        _ => builder.syn(),
    };
    let mut frame = Vec::new();
    builder.write(&mut frame, b"").unwrap();
    frame
}

fn udp(client: (Ipv4Addr, u16), port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_CLIENT_SIDE_MAC)
        .ipv4(client.0.octets(), VIP.octets(), 64)
        .udp(client.1, port);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"q").unwrap();
    frame
}

/// Whether a frame sent back to the client is a TCP reset.
fn is_reset(frame: &[u8]) -> bool {
    matches!(
        SlicedPacket::from_ethernet(frame).unwrap().transport,
        Some(TransportSlice::Tcp(tcp)) if tcp.rst()
    )
}

/// Sends `frame` and returns where it went: `Some(1)` to a backend,
/// `Some(0)` back to the client, `None` dropped.
fn port_of(h: &mut Harness, frame: Vec<u8>) -> Option<usize> {
    h.send(0, frame).map(|(port, _)| port)
}

const ALLOWED: Ipv4Addr = CLIENT;
const DENIED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 66);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 5);

#[test]
fn source_ranges_admit_the_allowed_and_drop_the_denied_and_the_unlisted() {
    let policy = ranged(Some(&["198.18.1.0/24"]), &["198.18.1.66/32"]);
    let mut h = harness_with(build(
        1,
        vec![
            listener("tcp", Protocol::Tcp, 80, policy.clone()),
            listener("udp", Protocol::Udp, 53, policy),
        ],
    ));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "S")), Some(1));
    assert_eq!(port_of(&mut h, udp((ALLOWED, 4000), 53)), Some(1));
    assert_eq!(
        port_of(&mut h, tcp((DENIED, 4000), 80, "S")),
        None,
        "denied"
    );
    assert_eq!(port_of(&mut h, udp((DENIED, 4000), 53)), None, "denied");
    assert_eq!(
        port_of(&mut h, tcp((OUTSIDE, 4000), 80, "S")),
        None,
        "not allowed"
    );
    assert_eq!(h.drops("source_denied"), 3);
    let stats = h.stats();
    assert_eq!(stats.listeners[0].source_denied, 2);
    assert_eq!(stats.listeners[1].source_denied, 1);
    assert_eq!((stats.listeners[0].flows, stats.listeners[1].flows), (1, 1));
}

#[test]
fn an_empty_allow_list_serves_nobody() {
    let mut h = harness_with(build(
        1,
        vec![listener("tcp", Protocol::Tcp, 80, ranged(Some(&[]), &[]))],
    ));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "S")), None);
    assert_eq!(h.stats().listeners[0].source_denied, 1);
}

#[test]
fn a_new_deny_range_stops_a_flow_already_open_at_the_reload() {
    let mut h = harness_with(build(
        1,
        vec![listener(
            "tcp",
            Protocol::Tcp,
            80,
            ListenerPolicy::default(),
        )],
    ));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "S")), Some(1));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "A")), Some(1));
    h.config.store(Arc::new(build(
        2,
        vec![listener(
            "tcp",
            Protocol::Tcp,
            80,
            ranged(None, &["198.18.1.0/28"]),
        )],
    )));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "A")), None);
    assert_eq!(h.stats().listeners[0].source_denied, 1);
}

#[test]
fn tcp_over_the_rate_gets_a_reset_and_udp_is_dropped_both_counted() {
    let mut h = harness_with(build(
        1,
        vec![
            listener("tcp", Protocol::Tcp, 80, limited(Some(3), None)),
            listener("udp", Protocol::Udp, 53, limited(Some(2), None)),
        ],
    ));
    // A full bucket holds one second's worth; the test takes well under a
    // second, so no token comes back in between.
    for port in 4000..4003 {
        assert_eq!(port_of(&mut h, tcp((ALLOWED, port), 80, "S")), Some(1));
    }
    let refused = h.send(0, tcp((ALLOWED, 4003), 80, "S")).expect("answered");
    assert_eq!(refused.0, 0, "back to the client");
    assert!(is_reset(&refused.1));
    // A flow already admitted goes on.
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "A")), Some(1));
    for port in 5000..5002 {
        assert_eq!(port_of(&mut h, udp((ALLOWED, port), 53)), Some(1));
    }
    assert_eq!(port_of(&mut h, udp((ALLOWED, 5002), 53)), None);
    assert_eq!(h.drops("new_flow_rate_limited"), 2);
    let stats = h.stats();
    assert_eq!(
        (stats.listeners[0].rate_limited, stats.listeners[0].flows),
        (1, 3)
    );
    assert_eq!(
        (stats.listeners[1].rate_limited, stats.listeners[1].flows),
        (1, 2)
    );
}

#[test]
fn the_flow_limit_refuses_until_a_flow_closes_or_expires() {
    let mut h = harness_with(build(
        1,
        vec![
            listener("tcp", Protocol::Tcp, 80, limited(None, Some(2))),
            listener("udp", Protocol::Udp, 53, limited(None, Some(1))),
        ],
    ));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "S")), Some(1));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4001), 80, "S")), Some(1));
    let refused = h.send(0, tcp((ALLOWED, 4002), 80, "S")).expect("answered");
    assert!(refused.0 == 0 && is_reset(&refused.1));
    // A FIN closes one: the next flow takes its place.
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4000), 80, "F")), Some(1));
    assert_eq!(port_of(&mut h, tcp((ALLOWED, 4002), 80, "S")), Some(1));
    assert_eq!(port_of(&mut h, udp((ALLOWED, 5000), 53)), Some(1));
    assert_eq!(port_of(&mut h, udp((ALLOWED, 5001), 53)), None);
    // Once the UDP flow has expired, another is taken.
    let later = h.epoch.elapsed().as_nanos() as u64 + 31_000_000_000;
    h.worker.expire(later);
    assert_eq!(port_of(&mut h, udp((ALLOWED, 5001), 53)), Some(1));
    assert_eq!(h.drops("max_flows_reached"), 2);
    let stats = h.stats();
    assert_eq!(stats.listeners[0].max_flows_reached, 1);
    assert_eq!(stats.listeners[1].max_flows_reached, 1);
}

#[test]
fn workers_take_shares_of_a_limit_that_add_up_to_it() {
    let snapshot = Arc::new(ArcSwap::from_pointee(build(
        1,
        vec![listener("udp", Protocol::Udp, 53, limited(None, Some(3)))],
    )));
    let admitted: Vec<usize> = (0..2u32)
        .map(|queue| {
            let mut h = worker(
                queue,
                snapshot.clone(),
                WorkerSettings {
                    workers: 2,
                    ..WorkerSettings::default()
                },
            );
            (6000..6010)
                .filter(|&port| port_of(&mut h, udp((ALLOWED, port), 53)) == Some(1))
                .count()
        })
        .collect();
    assert_eq!(admitted, [2, 1]);
}

fn worker(queue: u32, config: Arc<ArcSwap<Snapshot>>, settings: WorkerSettings) -> Harness {
    let (requests, control) = channel::bounded(4);
    let neighbors = Neighbors::fixed(l2_table());
    let replies = Arc::new(ReplyTable::new(1 << 16));
    let epoch = Instant::now();
    let worker = Worker::new(
        queue,
        vec![10, 20],
        config.clone(),
        neighbors.clone(),
        control,
        Arc::new(AtomicBool::new(false)),
        epoch,
        settings,
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

/// The client addresses of a flood: many sources, many ports.
fn flooder(n: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + 100 + n % 100),
        1024 + (n / 100) as u16,
    )
}

#[test]
fn a_syn_flood_evicts_no_established_flow() {
    let config = Arc::new(ArcSwap::from_pointee(build(
        1,
        vec![listener(
            "tcp",
            Protocol::Tcp,
            80,
            ListenerPolicy::default(),
        )],
    )));
    let mut h = worker(
        0,
        config,
        WorkerSettings {
            flow_capacity: 8,
            embryonic_capacity: Some(64),
            ..WorkerSettings::default()
        },
    );
    let established: Vec<(Ipv4Addr, u16)> = (0..8).map(|i| (ALLOWED, 3000 + i)).collect();
    for &client in &established {
        assert_eq!(port_of(&mut h, tcp(client, 80, "S")), Some(1));
        assert_eq!(port_of(&mut h, tcp(client, 80, "A")), Some(1));
    }
    for n in 0..10_000 {
        assert_eq!(port_of(&mut h, tcp(flooder(n), 80, "S")), Some(1));
    }
    let before = h.stats().listeners[0].flows;
    assert_eq!(before, 8 + 10_000, "every flood SYN is a flow, counted");
    for &client in &established {
        assert_eq!(port_of(&mut h, tcp(client, 80, "A")), Some(1));
    }
    assert_eq!(
        h.stats().listeners[0].flows,
        before,
        "an established flow was decided again: it had been evicted"
    );
}

#[test]
fn a_backend_answering_a_flood_with_syn_acks_evicts_no_established_flow() {
    let config = Arc::new(ArcSwap::from_pointee(build(
        1,
        vec![listener(
            "tcp",
            Protocol::Tcp,
            80,
            ListenerPolicy::default(),
        )],
    )));
    let mut h = worker(
        0,
        config,
        WorkerSettings {
            flow_capacity: 8,
            embryonic_capacity: Some(64),
            ..WorkerSettings::default()
        },
    );
    // Established flows, their replies seen (a SYN-ACK, then data).
    let established: Vec<(Ipv4Addr, u16)> = (0..4).map(|i| (ALLOWED, 3000 + i)).collect();
    let mut backend_of = Vec::new();
    for &client in &established {
        let (_, out) = h.send(0, tcp(client, 80, "S")).unwrap();
        let backend = match SlicedPacket::from_ethernet(&out).unwrap().net {
            Some(etherparse::NetSlice::Ipv4(ip)) => ip.header().destination_addr(),
            _ => unreachable!(),
        };
        backend_of.push(backend);
        assert_eq!(port_of(&mut h, tcp(client, 80, "A")), Some(1));
        assert_eq!(
            h.send(1, reply(backend, client, "SA")).map(|s| s.0),
            Some(0)
        );
        assert_eq!(h.send(1, reply(backend, client, "A")).map(|s| s.0), Some(0));
    }
    for n in 0..2_000 {
        let client = flooder(n);
        let (_, out) = h.send(0, tcp(client, 80, "S")).unwrap();
        let backend = match SlicedPacket::from_ethernet(&out).unwrap().net {
            Some(etherparse::NetSlice::Ipv4(ip)) => ip.header().destination_addr(),
            _ => unreachable!(),
        };
        assert_eq!(
            h.send(1, reply(backend, client, "SA")).map(|s| s.0),
            Some(0)
        );
    }
    let before = h.stats().listeners[0].flows;
    for &client in &established {
        assert_eq!(port_of(&mut h, tcp(client, 80, "A")), Some(1));
    }
    assert_eq!(
        h.stats().listeners[0].flows,
        before,
        "an established flow was evicted"
    );
}

/// A backend's segment to `client` from port 8080: "SA" a SYN-ACK, "A" an
/// ACK.
fn reply(backend: impl Into<IpAddr>, client: (Ipv4Addr, u16), flags: &str) -> Vec<u8> {
    let IpAddr::V4(backend) = backend.into() else {
        unreachable!()
    };
    let builder = PacketBuilder::ethernet2(BE1_MAC, LB_BACKEND_SIDE_MAC)
        .ipv4(backend.octets(), client.0.octets(), 64)
        .tcp(8080, client.1, 5000, 65535);
    let builder = match flags {
        "SA" => builder.syn().ack(1001),
        _ => builder.ack(1001),
    };
    let mut frame = Vec::new();
    builder.write(&mut frame, b"").unwrap();
    frame
}

#[test]
fn a_syn_flood_displaces_no_established_flow_from_the_shared_reply_table() {
    let mut h = harness_with(build(
        1,
        vec![listener(
            "tcp",
            Protocol::Tcp,
            80,
            ListenerPolicy::default(),
        )],
    ));
    let client = (ALLOWED, 3000);
    let (_, out) = h.send(0, tcp(client, 80, "S")).unwrap();
    let backend = match SlicedPacket::from_ethernet(&out).unwrap().net {
        Some(etherparse::NetSlice::Ipv4(ip)) => ip.header().destination_addr(),
        _ => unreachable!(),
    };
    assert_eq!(port_of(&mut h, tcp(client, 80, "A")), Some(1));
    // Far more flood SYNs than the shared table (1024 entries) holds.
    for n in 0..10_000 {
        assert_eq!(port_of(&mut h, tcp(flooder(n), 80, "S")), Some(1));
    }
    // The backend's answer reaches another queue, whose worker has never
    // seen the flow: only the shared table says which VIP it answers for.
    let mut other = h.another_worker();
    assert_eq!(
        other
            .send(1, reply(backend, client, "A"))
            .map(|(port, _)| port),
        Some(0),
        "the established flow's reply entry was displaced by the flood"
    );
}

fn tcp6(client: Ipv6Addr, port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_CLIENT_SIDE_MAC)
        .ipv6(client.octets(), VIP6.octets(), 64)
        .tcp(4000, port, 1000, 65535)
        .syn();
    let mut frame = Vec::new();
    builder.write(&mut frame, b"").unwrap();
    frame
}

#[test]
fn ipv6_source_ranges_admit_the_allowed_and_drop_the_denied() {
    let mut h = harness_with(build(
        1,
        vec![listener_on(
            VIP6.into(),
            &[BE1_6.into(), BE2_6.into()],
            "tcp6",
            Protocol::Tcp,
            80,
            ranged(Some(&["2001:db8:1::/64"]), &["2001:db8:1::66/128"]),
        )],
    ));
    let denied = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x66);
    let outside = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 5);
    assert_eq!(port_of(&mut h, tcp6(CLIENT6, 80)), Some(1));
    assert_eq!(port_of(&mut h, tcp6(denied, 80)), None);
    assert_eq!(port_of(&mut h, tcp6(outside, 80)), None);
    let stats = h.stats();
    assert_eq!(
        (stats.listeners[0].flows, stats.listeners[0].source_denied),
        (1, 2)
    );
}
