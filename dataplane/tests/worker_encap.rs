//! The worker's encapsulating modes (`ipip`, `gue`) over in-memory frames:
//! the client's packet leaves unchanged behind an outer header to its
//! backend, from a source varied per flow, and one that would no longer
//! fit the egress link once wrapped is answered with the MTU that fits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Forwarding, Gue, Listener, ListenerName, ListenerParts,
    Protocol, Slot, Snapshot,
};
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, Neighbors, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
};
use switchyard_dataplane::replies::ReplyTable;

// Shared with the other worker suites, which use what this one does not.
#[allow(dead_code)]
mod harness;
mod two_arm;
use harness::{harness_with, worker_of, Harness};
use two_arm::*;

const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);
const GUE_PORT: u16 = 7777;

fn listener(name: &str, vip: IpAddr, protocol: Protocol, port: u16, mode: Forwarding) -> Listener {
    let backends: Vec<Endpoint> = match vip {
        IpAddr::V4(_) => [BE1, BE2].map(IpAddr::from).to_vec(),
        IpAddr::V6(_) => [BE1_6, BE2_6].map(IpAddr::from).to_vec(),
    }
    .into_iter()
    .map(|address| Endpoint { address, port })
    .collect();
    Listener::new(ListenerParts {
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
            endpoints: backends.clone(),
        }],
        backends: backends
            .iter()
            .map(|&endpoint| Backend {
                endpoint,
                group: 0,
                effective_weight: 0.5,
            })
            .collect(),
        slots: vec![Slot::Backend(0), Slot::Backend(1)],
        affinity: None,
        forwarding: mode,
        policy: Default::default(),
    })
    .expect("valid listener")
}

fn gue() -> Forwarding {
    Forwarding::Gue(Gue { port: GUE_PORT })
}

/// TCP and UDP listeners of `mode` on both VIPs.
fn snapshot(generation: u64, mode: Forwarding) -> Snapshot {
    Snapshot::new(
        generation,
        vec![
            listener("tcp", VIP.into(), Protocol::Tcp, 80, mode.clone()),
            listener("udp", VIP.into(), Protocol::Udp, 53, mode.clone()),
            listener("tcp6", VIP6.into(), Protocol::Tcp, 80, mode.clone()),
            listener("udp6", VIP6.into(), Protocol::Udp, 53, mode),
        ],
    )
    .expect("one listener per VIP")
}

fn tcp(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1);
    let builder = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family"),
    };
    let mut frame = Vec::new();
    builder
        .tcp(src.1, dst.1, 1000, 65535)
        .ack(1)
        .write(&mut frame, payload)
        .unwrap();
    frame
}

fn udp(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1);
    let builder = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family"),
    };
    let mut frame = Vec::new();
    builder
        .udp(src.1, dst.1)
        .write(&mut frame, payload)
        .unwrap();
    frame
}

/// The outer header of an encapsulated frame, as a backend's NIC and
/// decapsulation read it.
#[derive(Debug, PartialEq)]
struct Outer {
    eth_dst: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    /// IP protocol / next header.
    protocol: u8,
    /// GUE's UDP ports.
    ports: Option<(u16, u16)>,
    /// The bytes after the outer headers.
    inner: Vec<u8>,
}

fn outer(frame: &[u8]) -> Outer {
    let eth_dst: [u8; 6] = frame[..6].try_into().unwrap();
    let ipv6 = frame[12..14] == [0x86, 0xdd];
    let (src, dst, protocol, ip_end) = if ipv6 {
        let ip = &frame[14..54];
        let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        assert_eq!(frame.len(), 54 + payload, "outer payload length");
        let src: [u8; 16] = ip[8..24].try_into().unwrap();
        let dst: [u8; 16] = ip[24..40].try_into().unwrap();
        (IpAddr::from(src), IpAddr::from(dst), ip[6], 54)
    } else {
        let sliced = SlicedPacket::from_ethernet(frame).expect("outer IPv4 parses");
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("no outer IPv4")
        };
        let header = ip.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert!(header.dont_fragment, "outer DF");
        assert_eq!(usize::from(header.total_len), frame.len() - 14);
        (
            IpAddr::from(header.source),
            IpAddr::from(header.destination),
            header.protocol.0,
            34,
        )
    };
    let (ports, inner_at) = if protocol == 17 {
        let u = &frame[ip_end..ip_end + 8];
        assert_eq!(
            usize::from(u16::from_be_bytes([u[4], u[5]])),
            frame.len() - ip_end,
            "UDP length"
        );
        assert_eq!(&u[6..8], &[0, 0], "GUE's UDP checksum is left 0");
        (
            Some((
                u16::from_be_bytes([u[0], u[1]]),
                u16::from_be_bytes([u[2], u[3]]),
            )),
            ip_end + 8,
        )
    } else {
        (None, ip_end)
    };
    Outer {
        eth_dst,
        src,
        dst,
        protocol,
        ports,
        inner: frame[inner_at..].to_vec(),
    }
}

fn backend_mac(address: IpAddr) -> [u8; 6] {
    if address == IpAddr::from(BE1) || address == IpAddr::from(BE1_6) {
        BE1_MAC
    } else {
        BE2_MAC
    }
}

fn families() -> [(IpAddr, IpAddr); 2] {
    [(CLIENT.into(), VIP.into()), (CLIENT6.into(), VIP6.into())]
}

#[test]
fn ipip_wraps_the_client_s_packet_unchanged_to_its_backend_from_a_per_flow_source() {
    let mut h = harness_with(snapshot(1, Forwarding::Ipip));
    for (client, vip) in families() {
        let frame = tcp((client, 40000), (vip, 80), b"GET /");
        let (port, out) = h.send(0, frame.clone()).expect("forwarded");
        let seen = outer(&out);
        assert_eq!(port, 1, "out of the backends' side");
        assert_eq!(seen.protocol, if vip.is_ipv6() { 41 } else { 4 });
        assert!([BE1.into(), BE2.into(), BE1_6.into(), BE2_6.into()].contains(&seen.dst));
        assert_eq!(seen.eth_dst, backend_mac(seen.dst));
        assert_eq!(seen.inner, frame[14..], "the client's packet, as sent");
        match seen.src {
            IpAddr::V4(src) => assert_eq!(src.octets()[..2], [172, 16]),
            IpAddr::V6(src) => assert_eq!(src.segments()[..4], [0x100, 0, 0, 0]),
        }
        // The flow's later packets take the same header.
        let (_, again) = h.send(0, tcp((client, 40000), (vip, 80), b"more")).unwrap();
        let again = outer(&again);
        assert_eq!((again.src, again.dst), (seen.src, seen.dst));
    }
    assert_eq!(h.stats().encapsulated, 4);
}

#[test]
fn ipip_sources_vary_between_flows_of_one_client() {
    let mut h = harness_with(snapshot(1, Forwarding::Ipip));
    for (client, vip) in families() {
        let sources: std::collections::HashSet<IpAddr> = (0..16)
            .map(|n| {
                let (_, out) = h
                    .send(0, udp((client, 50000 + n), (vip, 53), b"q"))
                    .unwrap();
                outer(&out).src
            })
            .collect();
        assert!(sources.len() > 8, "{} sources for 16 flows", sources.len());
    }
}

#[test]
fn gue_sends_udp_from_the_vip_and_a_per_flow_port_to_the_gue_port() {
    let mut h = harness_with(snapshot(1, gue()));
    for (client, vip) in families() {
        let mut source_ports = std::collections::HashSet::new();
        for n in 0..16 {
            let frame = udp((client, 50000 + n), (vip, 53), b"query");
            let (port, out) = h.send(0, frame.clone()).expect("forwarded");
            let seen = outer(&out);
            assert_eq!((port, seen.protocol, seen.src), (1, 17, vip));
            let (source_port, dst_port) = seen.ports.unwrap();
            assert_eq!(dst_port, GUE_PORT);
            assert!(source_port >= 49152);
            source_ports.insert(source_port);
            assert_eq!(seen.inner, frame[14..]);
            assert_eq!(seen.eth_dst, backend_mac(seen.dst));
        }
        assert!(source_ports.len() > 8);
    }
}

#[test]
fn flows_spread_over_both_backends_and_are_counted_per_backend() {
    for mode in [Forwarding::Ipip, gue()] {
        let mut h = harness_with(snapshot(1, mode));
        let mut seen = std::collections::HashSet::new();
        for n in 0..32 {
            let (_, out) = h
                .send(0, tcp((CLIENT.into(), 40000 + n), (VIP.into(), 80), b"x"))
                .unwrap();
            seen.insert(outer(&out).dst);
        }
        assert_eq!(seen.len(), 2, "both backends used");
        let stats = h.stats();
        let per_backend: Vec<u64> = stats.backends[0].iter().map(|c| c.packets).collect();
        assert_eq!(per_backend.iter().sum::<u64>(), 32);
        assert!(per_backend.iter().all(|&p| p > 0));
    }
}

#[test]
fn no_reply_is_expected_through_the_load_balancer() {
    let mut h = harness_with(snapshot(1, Forwarding::Ipip));
    let (_, out) = h
        .send(0, tcp((CLIENT.into(), 40000), (VIP.into(), 80), b"x"))
        .unwrap();
    let backend = outer(&out).dst;
    // The backend answers the client from the VIP itself; a packet from its
    // own address to the client is no reply of this flow.
    let mut reply = tcp((backend, 80), (CLIENT.into(), 40000), b"y");
    reply[..12].copy_from_slice(&[LB_BACKEND_SIDE_MAC, backend_mac(backend)].concat());
    assert_eq!(h.send(1, reply), None);
    assert_eq!(h.drops("reply_without_flow"), 1);
}

#[test]
fn a_partial_checksum_is_completed_before_the_packet_is_wrapped() {
    let mut h = harness_with(snapshot(1, Forwarding::Ipip));
    let frame = udp((CLIENT.into(), 40000), (VIP.into(), 53), b"query");
    let mut partial = frame.clone();
    // The pseudo-header sum, folded, not inverted: what a sender with tx
    // checksum offload leaves (see worker.rs `with_partial_checksum`).
    let mut sum: u32 = 17 + 8 + 5;
    for word in frame[26..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    partial[40..42].copy_from_slice(&(sum as u16).to_be_bytes());
    let (_, out) = h.send(0, partial).unwrap();
    assert_eq!(outer(&out).inner, frame[14..], "the complete checksum");
    assert_eq!(h.stats().partial_checksums, 1);
}

/// The two-arm lab with known link MTUs: 1500 on both sides.
fn l2_with_mtu() -> L2Table {
    let route = |dst: IpAddr, ifindex| RouteEntry {
        dst,
        prefix_len: if dst.is_ipv4() { 24 } else { 64 },
        metric: 0,
        action: RouteAction::Forward {
            ifindex,
            gateway: None,
        },
    };
    let neighbour = |ip: IpAddr, ifindex, mac| NeighbourEntry {
        ifindex,
        ip,
        mac: Some(mac),
        state: NeighbourState::Reachable,
    };
    let link = |ifindex, mac| LinkEntry {
        mtu: 1500,
        ..LinkEntry::ethernet(ifindex, mac)
    };
    L2Table::new(
        &[10, 20],
        &[link(10, LB_CLIENT_SIDE_MAC), link(20, LB_BACKEND_SIDE_MAC)],
        &[
            route(Ipv4Addr::new(198, 18, 1, 0).into(), 10),
            route(Ipv4Addr::new(198, 18, 2, 0).into(), 20),
            route(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0).into(), 10),
            route(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 20),
        ],
        &[
            neighbour(CLIENT.into(), 10, CLIENT_MAC),
            neighbour(BE1.into(), 20, BE1_MAC),
            neighbour(BE2.into(), 20, BE2_MAC),
            neighbour(CLIENT6.into(), 10, CLIENT_MAC),
            neighbour(BE1_6.into(), 20, BE1_MAC),
            neighbour(BE2_6.into(), 20, BE2_MAC),
        ],
    )
}

fn harness_with_mtu(mode: Forwarding) -> Harness {
    worker_of(
        0,
        Arc::new(ArcSwap::from_pointee(snapshot(1, mode))),
        Neighbors::fixed(l2_with_mtu()),
        Arc::new(ReplyTable::new(1024)),
        Instant::now(),
    )
}

/// A TCP segment whose IP packet is `ip_len` bytes, DF set when IPv4.
fn segment_of(client: IpAddr, vip: IpAddr, ip_len: usize) -> Vec<u8> {
    let headers = if vip.is_ipv6() { 40 + 20 } else { 20 + 20 };
    tcp((client, 40000), (vip, 80), &vec![7; ip_len - headers])
}

/// The MTU an ICMP error back out of port 0 announces: fragmentation
/// needed (IPv4) or packet too big (IPv6).
fn announced_mtu(port: usize, frame: &[u8]) -> u32 {
    assert_eq!(port, 0, "back to the client");
    let sliced = SlicedPacket::from_ethernet(frame).expect("ICMP error parses");
    match sliced.transport {
        Some(TransportSlice::Icmpv4(icmp)) => match icmp.icmp_type() {
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
            ) => u32::from(next_hop_mtu),
            other => panic!("not fragmentation needed: {other:?}"),
        },
        Some(TransportSlice::Icmpv6(icmp)) => match icmp.icmp_type() {
            etherparse::Icmpv6Type::PacketTooBig { mtu } => mtu,
            other => panic!("not packet too big: {other:?}"),
        },
        other => panic!("not ICMP: {other:?}"),
    }
}

#[test]
fn a_packet_that_no_longer_fits_once_wrapped_is_answered_with_the_mtu_that_fits() {
    for (mode, overhead4, overhead6) in [(Forwarding::Ipip, 20, 40), (gue(), 28, 48)] {
        let mut h = harness_with_mtu(mode);
        for ((client, vip), overhead) in families().into_iter().zip([overhead4, overhead6]) {
            let fits = 1500 - overhead;
            let (port, out) = h.send(0, segment_of(client, vip, fits)).expect("sent");
            assert_eq!(
                (port, out.len()),
                (1, 14 + 1500),
                "wrapped to the link's MTU"
            );
            let (port, answer) = h
                .send(0, segment_of(client, vip, fits + 1))
                .expect("answered");
            assert_eq!(announced_mtu(port, &answer), fits as u32);
        }
        assert_eq!(h.drops("frame_too_big"), 2);
        assert_eq!(h.stats().too_big_answered, 2);
    }
}

#[test]
fn an_ipv4_packet_without_df_that_no_longer_fits_is_dropped_and_counted() {
    let mut h = harness_with_mtu(Forwarding::Ipip);
    let mut frame = segment_of(CLIENT.into(), VIP.into(), 1481);
    // Clear DF and fix the header checksum.
    frame[20] &= !0x40;
    frame[24..26].copy_from_slice(&[0, 0]);
    let mut sum: u32 = frame[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    assert_eq!(h.send(0, frame), None);
    assert_eq!(h.drops("frame_too_big"), 1);
    assert_eq!(h.stats().too_big_answered, 0);
}

#[test]
fn a_reload_that_changes_the_mode_keeps_established_flows_as_they_were() {
    let mut h = harness_with(snapshot(1, Forwarding::Ipip));
    let flow = |port| tcp((CLIENT.into(), port), (VIP.into(), 80), b"x");
    let (_, out) = h.send(0, flow(40000)).unwrap();
    let first = outer(&out);
    assert_eq!(first.protocol, 4);
    h.config.store(Arc::new(snapshot(2, gue())));
    let (_, out) = h.send(0, flow(40000)).unwrap();
    let again = outer(&out);
    assert_eq!(
        (again.protocol, again.dst),
        (4, first.dst),
        "still IP-in-IP"
    );
    let (_, out) = h.send(0, flow(40001)).unwrap();
    assert_eq!(outer(&out).ports.map(|p| p.1), Some(GUE_PORT), "a new flow");
    h.config.store(Arc::new(snapshot(3, Forwarding::Nat)));
    let (_, out) = h.send(0, flow(40002)).unwrap();
    assert_eq!(out.len(), flow(40002).len(), "NAT'd in place, not wrapped");
}

/// The outer header is a function of the flow and the config: a flow
/// whose packets reach two workers (RSS is not symmetric, queues move)
/// leaves both with the same header, so the backend's NIC keeps it on one
/// queue.
#[test]
fn every_worker_wraps_a_flow_alike() {
    for mode in [Forwarding::Ipip, gue()] {
        let mut first = harness_with(snapshot(1, mode));
        let mut second = first.another_worker();
        for (client, vip) in families() {
            let frame = udp((client, 50000), (vip, 53), b"q");
            let (_, one) = first.send(0, frame.clone()).unwrap();
            let (_, other) = second.send(0, frame).unwrap();
            assert_eq!(one, other);
        }
    }
}

/// An ICMP error from a router on the client's side about `sent` (an IP
/// packet), to `to`: fragmentation needed (IPv4, quoting the header and 8
/// bytes) or packet too big (IPv6, quoting it whole).
fn error_about(sent: &[u8], to: IpAddr) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], LB_CLIENT_SIDE_MAC);
    let mut frame = Vec::new();
    match to {
        IpAddr::V4(to) => eth
            .ipv4([198, 18, 1, 1], to.octets(), 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400,
                },
            ))
            .write(&mut frame, &sent[..28]),
        IpAddr::V6(to) => eth
            .ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1).octets(),
                to.octets(),
                64,
            )
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 })
            .write(&mut frame, sent),
    }
    .unwrap();
    frame
}

/// A router on the client's side refuses an answer the backend sent the
/// client itself (from the VIP), and tells the VIP: the load balancer
/// sends that error to the flow's backend as it is, wrapped as the flow's
/// packets are, so the backend's kernel, which sent the answer, learns the
/// path MTU.
#[test]
fn a_router_s_error_about_a_backend_s_answer_reaches_that_backend_as_the_flow_does() {
    for mode in [Forwarding::Ipip, gue()] {
        let mut h = harness_with(snapshot(1, mode));
        for (client, vip) in families() {
            let (_, out) = h.send(0, tcp((client, 40000), (vip, 80), b"x")).unwrap();
            let flow = outer(&out);
            let answer = tcp((vip, 80), (client, 40000), b"a long answer");
            let error = error_about(&answer[14..], vip);
            let (port, wrapped) = h.send(0, error.clone()).expect("sent on");
            let seen = outer(&wrapped);
            assert_eq!(
                (port, seen.src, seen.dst, seen.ports),
                (1, flow.src, flow.dst, flow.ports),
                "{vip}"
            );
            assert_eq!(seen.inner, error[14..], "the error as the router sent it");
        }
        assert_eq!(h.stats().icmp_to_backend, 2);
    }
}
