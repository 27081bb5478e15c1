//! `fullnat` and `dsr` in the worker, IPv4 and IPv6, TCP and UDP: what
//! leaves for the backend, what comes back to the client, and what is
//! refused and counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use switchyard_config::snapshot::{
    Forwarding, FullNat, Listener, ListenerParts, Protocol, Snapshot,
};
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, NeighborFeed, Neighbors, NeighbourEntry, NeighbourState, RouteAction,
    RouteEntry,
};
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::snat::{SnatPorts, SnatTable};
use switchyard_dataplane::worker::SnatSetup;

mod harness;
mod two_arm;
use harness::{harness_with, listener_at, Harness};
use two_arm::*;

const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
const RANGE: SnatPorts = SnatPorts {
    first: 20000,
    last: 20007,
};
const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);

fn listener(
    protocol: Protocol,
    vip: IpAddr,
    port: u16,
    backends: &[(IpAddr, u16)],
    forwarding: Forwarding,
) -> ListenerParts {
    let name = format!(
        "{}-{}",
        format!("{protocol:?}").to_lowercase(),
        if vip.is_ipv6() { 6 } else { 4 }
    );
    ListenerParts {
        forwarding,
        ..listener_at(&name, protocol, vip, port, backends)
    }
}

fn build(parts: Vec<ListenerParts>) -> Snapshot {
    harness::build(1, parts)
}

fn full_nat(addresses: &[IpAddr]) -> Forwarding {
    Forwarding::FullNat(FullNat {
        addresses: addresses.to_vec(),
        proxy_protocol: None,
    })
}

/// Every listener of the lab in `forwarding`: TCP 80 and UDP 53 on both
/// VIPs, backends on port 8080/5353 (`nat`, `fullnat`) or the VIP's port
/// (`dsr`).
fn snapshot(forwarding: Forwarding) -> Snapshot {
    let same_port = forwarding == Forwarding::Dsr;
    let (tcp_port, udp_port) = if same_port { (80, 53) } else { (8080, 5353) };
    let pair = |a: IpAddr, b: IpAddr, port| vec![(a, port), (b, port)];
    build(vec![
        listener(
            Protocol::Tcp,
            VIP.into(),
            80,
            &pair(BE1.into(), BE2.into(), tcp_port),
            forwarding.clone(),
        ),
        listener(
            Protocol::Udp,
            VIP.into(),
            53,
            &pair(BE1.into(), BE2.into(), udp_port),
            forwarding.clone(),
        ),
        listener(
            Protocol::Tcp,
            VIP6.into(),
            80,
            &pair(BE1_6.into(), BE2_6.into(), tcp_port),
            forwarding.clone(),
        ),
        listener(
            Protocol::Udp,
            VIP6.into(),
            53,
            &pair(BE1_6.into(), BE2_6.into(), udp_port),
            forwarding,
        ),
    ])
}

/// Worker `queue` of two, with its half of `RANGE`, sharing `table` (and
/// the forward table that goes with it).
fn with_snat(h: Harness, table: &Arc<SnatTable>, queue: u32) -> Harness {
    let setup = SnatSetup {
        table: table.clone(),
        forwards: forwards_of(table),
        slice: RANGE.slice(queue, 2).unwrap(),
        interface_addresses: vec![
            (20, Ipv4Addr::new(198, 18, 9, 1).into(), 24),
            (20, SNAT.into(), 24),
            (20, SNAT6.into(), 64),
        ],
    };
    Harness {
        worker: h.worker.with_snat(setup),
        ..h
    }
}

/// One forward table per SNAT table, as a daemon has.
fn forwards_of(table: &Arc<SnatTable>) -> Arc<ReplyTable> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static TABLES: Mutex<Option<HashMap<usize, Arc<ReplyTable>>>> = Mutex::new(None);
    let mut tables = TABLES.lock().unwrap();
    tables
        .get_or_insert_with(HashMap::new)
        .entry(Arc::as_ptr(table) as usize)
        .or_insert_with(|| Arc::new(ReplyTable::new(1024)))
        .clone()
}

fn frame(
    macs: ([u8; 6], [u8; 6]),
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    tcp: bool,
    payload: &[u8],
) -> Vec<u8> {
    let ethernet = PacketBuilder::ethernet2(macs.0, macs.1);
    let ip = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    if tcp {
        ip.tcp(src.1, dst.1, 1000, 65535)
            .ack(1)
            .write(&mut out, payload)
            .unwrap();
    } else {
        ip.udp(src.1, dst.1).write(&mut out, payload).unwrap();
    }
    out
}

/// What a receiving host sees: MACs, addresses, ports, payload; with the
/// IPv4 header and the TCP/UDP checksums recomputed from scratch.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    payload: Vec<u8>,
}

fn inspect(frame: &[u8]) -> Seen {
    let packet = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("not ethernet")
    };
    let (src, dst): (IpAddr, IpAddr) = match &packet.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let header = ip.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            (header.source.into(), header.destination.into())
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            let header = ip.header().to_header();
            (header.source.into(), header.destination.into())
        }
        _ => panic!("not IP"),
    };
    let (ports, protocol, payload) = match packet.transport.as_ref().expect("transport") {
        TransportSlice::Tcp(tcp) => (
            (tcp.source_port(), tcp.destination_port()),
            6u8,
            tcp.payload().to_vec(),
        ),
        TransportSlice::Udp(udp) => (
            (udp.source_port(), udp.destination_port()),
            17u8,
            udp.payload().to_vec(),
        ),
        _ => panic!("not TCP or UDP"),
    };
    let segment = match &packet.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => ip.payload().payload,
        Some(etherparse::NetSlice::Ipv6(ip)) => ip.payload().payload,
        _ => unreachable!(),
    };
    assert!(
        l4_checksum_verifies(src, dst, protocol, segment),
        "L4 checksum of protocol {protocol}"
    );
    Seen {
        eth_dst: eth.destination(),
        eth_src: eth.source(),
        src: (src, ports.0),
        dst: (dst, ports.1),
        payload,
    }
}

/// Whether a TCP segment or UDP datagram from `src` to `dst` sums, with
/// its pseudo-header, to all ones (RFC 1071), summed here the slow way.
fn l4_checksum_verifies(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> bool {
    let mut bytes = Vec::new();
    for address in [src, dst] {
        match address {
            IpAddr::V4(a) => bytes.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => bytes.extend_from_slice(&a.octets()),
        }
    }
    bytes.extend_from_slice(&[0, protocol]);
    bytes.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    bytes.extend_from_slice(segment);
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|pair| u64::from(pair[0]) << 8 | pair.get(1).copied().map_or(0, u64::from))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

struct Family {
    client: IpAddr,
    vip: IpAddr,
    backends: [(IpAddr, [u8; 6]); 2],
    snat: IpAddr,
}

const V4: Family = Family {
    client: IpAddr::V4(CLIENT),
    vip: IpAddr::V4(VIP),
    backends: [(IpAddr::V4(BE1), BE1_MAC), (IpAddr::V4(BE2), BE2_MAC)],
    snat: IpAddr::V4(SNAT),
};

const V6: Family = Family {
    client: IpAddr::V6(CLIENT6),
    vip: IpAddr::V6(VIP6),
    backends: [(IpAddr::V6(BE1_6), BE1_MAC), (IpAddr::V6(BE2_6), BE2_MAC)],
    snat: IpAddr::V6(SNAT6),
};

fn backend_mac(family: &Family, address: IpAddr) -> [u8; 6] {
    family
        .backends
        .iter()
        .find(|(a, _)| *a == address)
        .map(|(_, mac)| *mac)
        .expect("one of the lab's backends")
}

/// A client flow through a `fullnat` worker and the backend's answer back:
/// the backend sees the SNAT address and a port of the worker's slice, the
/// client sees the VIP, every checksum holds.
fn full_nat_round_trip(family: &Family, tcp: bool) {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut h = with_snat(harness_with(snapshot(full_nat(&[]))), &table, 0);
    let (vip_port, backend_port) = if tcp { (80, 8080) } else { (53, 5353) };
    let request = frame(
        FROM_CLIENT,
        (family.client, 40000),
        (family.vip, vip_port),
        tcp,
        b"ping",
    );
    let (port, out) = h.send(0, request).expect("forwarded");
    let seen = inspect(&out);
    assert_eq!(port, 1, "out of the backend side");
    assert_eq!(
        seen.src.0, family.snat,
        "source rewritten to the SNAT address"
    );
    assert!(RANGE.slice(0, 2).unwrap().contains(&seen.src.1), "{seen:?}");
    assert_eq!(seen.dst.1, backend_port);
    assert_eq!(seen.eth_dst, backend_mac(family, seen.dst.0));
    assert_eq!(seen.eth_src, LB_BACKEND_SIDE_MAC);
    assert_eq!(seen.payload, b"ping");

    let answer = frame(
        (backend_mac(family, seen.dst.0), LB_BACKEND_SIDE_MAC),
        seen.dst,
        seen.src,
        tcp,
        b"pong",
    );
    let (port, back) = h.send(1, answer).expect("answer forwarded");
    let back = inspect(&back);
    assert_eq!(port, 0, "out of the client side");
    assert_eq!(
        (back.src, back.dst),
        ((family.vip, vip_port), (family.client, 40000))
    );
    assert_eq!(
        (back.eth_dst, back.eth_src),
        (CLIENT_MAC, LB_CLIENT_SIDE_MAC)
    );
    assert_eq!(back.payload, b"pong");
    let stats = h.stats();
    let listener = usize::from(!tcp) + if family.vip.is_ipv6() { 2 } else { 0 };
    assert_eq!(stats.listeners[listener].flows, 1);
    assert_eq!(stats.listeners[listener].packets, 2);
}

#[test]
fn full_nat_tcp_ipv4_leaves_from_the_snat_address_and_returns_from_the_vip() {
    full_nat_round_trip(&V4, true);
}

#[test]
fn full_nat_udp_ipv4_leaves_from_the_snat_address_and_returns_from_the_vip() {
    full_nat_round_trip(&V4, false);
}

#[test]
fn full_nat_tcp_ipv6_leaves_from_the_snat_address_and_returns_from_the_vip() {
    full_nat_round_trip(&V6, true);
}

#[test]
fn full_nat_udp_ipv6_leaves_from_the_snat_address_and_returns_from_the_vip() {
    full_nat_round_trip(&V6, false);
}

#[test]
fn a_configured_snat_address_of_the_backends_family_is_used() {
    let table = Arc::new(SnatTable::new(RANGE));
    let chosen: IpAddr = Ipv4Addr::new(198, 18, 2, 200).into();
    let other_family: IpAddr = SNAT6.into();
    let snapshot = snapshot(full_nat(&[other_family, chosen]));
    let mut h = with_snat(harness_with(snapshot), &table, 0);
    let request = frame(
        FROM_CLIENT,
        (CLIENT.into(), 40000),
        (VIP.into(), 80),
        true,
        b"",
    );
    let (_, out) = h.send(0, request).expect("forwarded");
    assert_eq!(inspect(&out).src.0, chosen);
}

#[test]
fn an_answer_reaching_another_worker_is_reversed_from_the_shared_binding() {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut owner = with_snat(harness_with(snapshot(full_nat(&[]))), &table, 0);
    let mut other = with_snat(owner.another_worker(), &table, 1);
    let request = frame(
        FROM_CLIENT,
        (CLIENT.into(), 40000),
        (VIP.into(), 53),
        false,
        b"q",
    );
    let seen = inspect(&owner.send(0, request).expect("forwarded").1);
    for _ in 0..3 {
        let answer = frame(
            (backend_mac(&V4, seen.dst.0), LB_BACKEND_SIDE_MAC),
            seen.dst,
            seen.src,
            false,
            b"a",
        );
        let back = inspect(&other.send(1, answer).expect("reversed").1);
        assert_eq!(
            (back.src, back.dst),
            ((VIP.into(), 53), (CLIENT.into(), 40000))
        );
    }
    // The other worker keeps no entry of its own: the owner alone decides
    // when the port is free.
    assert_eq!(other.stats().listeners[1].packets, 3);
}

#[test]
fn an_answer_from_another_backend_or_to_an_unbound_port_is_dropped() {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut h = with_snat(harness_with(snapshot(full_nat(&[]))), &table, 0);
    let request = frame(
        FROM_CLIENT,
        (CLIENT.into(), 40000),
        (VIP.into(), 53),
        false,
        b"q",
    );
    let seen = inspect(&h.send(0, request).expect("forwarded").1);
    let other_backend = if seen.dst.0 == IpAddr::from(BE1) {
        BE2
    } else {
        BE1
    };
    let forged = frame(
        (BE1_MAC, LB_BACKEND_SIDE_MAC),
        (other_backend.into(), 5353),
        seen.src,
        false,
        b"x",
    );
    assert_eq!(h.send(1, forged), None);
    let unbound = frame(
        (BE1_MAC, LB_BACKEND_SIDE_MAC),
        seen.dst,
        (SNAT.into(), seen.src.1 + 1),
        false,
        b"x",
    );
    assert_eq!(h.send(1, unbound), None);
    assert_eq!(h.drops("reply_without_flow"), 2);
}

#[test]
fn one_client_gets_a_distinct_port_per_flow_until_the_slice_runs_out() {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut h = with_snat(harness_with(snapshot(full_nat(&[]))), &table, 0);
    let slice = RANGE.slice(0, 2).unwrap();
    let mut ports = Vec::new();
    for client_port in 0..slice.len() as u16 {
        let request = frame(
            FROM_CLIENT,
            (CLIENT.into(), 40000 + client_port),
            (VIP.into(), 80),
            true,
            b"",
        );
        ports.push(inspect(&h.send(0, request).expect("forwarded").1).src.1);
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports, slice.clone().collect::<Vec<_>>(), "every port once");
    let one_more = frame(
        FROM_CLIENT,
        (CLIENT.into(), 50000),
        (VIP.into(), 80),
        true,
        b"",
    );
    assert_eq!(h.send(0, one_more), None);
    let stats = h.stats();
    assert_eq!(stats.snat_exhausted, vec![(IpAddr::from(SNAT), 1)]);
    assert_eq!(h.drops("snat_ports_exhausted"), 1);
}

#[test]
fn a_port_is_given_again_once_its_flow_has_expired() {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut h = with_snat(harness_with(snapshot(full_nat(&[]))), &table, 0);
    let slice_len = RANGE.slice(0, 2).unwrap().len() as u16;
    for client_port in 0..slice_len {
        let request = frame(
            FROM_CLIENT,
            (CLIENT.into(), 40000 + client_port),
            (VIP.into(), 53),
            false,
            b"",
        );
        h.send(0, request).expect("forwarded");
    }
    // Both directions of every flow leave the table.
    h.worker.expire(3600 * 1_000_000_000);
    let request = frame(
        FROM_CLIENT,
        (CLIENT.into(), 50000),
        (VIP.into(), 53),
        false,
        b"",
    );
    assert!(h.send(0, request).is_some(), "a freed port is taken again");
}

#[test]
fn full_nat_without_snat_ports_is_refused_and_counted() {
    let mut h = harness_with(snapshot(full_nat(&[])));
    let request = frame(
        FROM_CLIENT,
        (CLIENT.into(), 40000),
        (VIP.into(), 80),
        true,
        b"",
    );
    assert_eq!(h.send(0, request), None);
    assert_eq!(h.drops("snat_ports_exhausted"), 1);
}

/// A `dsr` flow leaves with its IP packet as the client sent it, byte for
/// byte; only the MACs change, toward the chosen backend.
fn direct_server_return(family: &Family, tcp: bool) {
    let mut h = harness_with(snapshot(Forwarding::Dsr));
    let vip_port = if tcp { 80 } else { 53 };
    let mut used = Vec::new();
    for client_port in 40000..40016 {
        let request = frame(
            FROM_CLIENT,
            (family.client, client_port),
            (family.vip, vip_port),
            tcp,
            b"hello",
        );
        let (port, out) = h.send(0, request.clone()).expect("forwarded");
        assert_eq!(port, 1);
        assert_eq!(out[12..], request[12..], "IP and L4 bytes untouched");
        assert_eq!(out[6..12], LB_BACKEND_SIDE_MAC);
        let mac: [u8; 6] = out[0..6].try_into().unwrap();
        assert!(family.backends.iter().any(|(_, m)| *m == mac), "{mac:?}");
        used.push(mac);
        // The flow's next packet follows the same backend.
        let again = h.send(0, request).expect("forwarded").1;
        assert_eq!(again[0..6], mac);
    }
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 2, "both backends used");
}

#[test]
fn dsr_tcp_ipv4_changes_only_the_macs() {
    direct_server_return(&V4, true);
}

#[test]
fn dsr_udp_ipv4_changes_only_the_macs() {
    direct_server_return(&V4, false);
}

#[test]
fn dsr_tcp_ipv6_changes_only_the_macs() {
    direct_server_return(&V6, true);
}

#[test]
fn dsr_udp_ipv6_changes_only_the_macs() {
    direct_server_return(&V6, false);
}

#[test]
fn dsr_to_a_backend_behind_a_router_is_refused_and_counted() {
    let far: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 5);
    let router: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
    let snapshot = build(vec![listener(
        Protocol::Tcp,
        VIP.into(),
        80,
        &[(far.into(), 80)],
        Forwarding::Dsr,
    )]);
    let l2 = L2Table::new(
        &[10, 20],
        &[
            LinkEntry::ethernet(10, LB_CLIENT_SIDE_MAC),
            LinkEntry::ethernet(20, LB_BACKEND_SIDE_MAC),
        ],
        &[
            RouteEntry {
                dst: Ipv4Addr::new(198, 18, 2, 0).into(),
                prefix_len: 24,
                metric: 0,
                action: RouteAction::Forward {
                    ifindex: 20,
                    gateway: None,
                },
            },
            RouteEntry {
                dst: Ipv4Addr::new(198, 18, 3, 0).into(),
                prefix_len: 24,
                metric: 0,
                action: RouteAction::Forward {
                    ifindex: 20,
                    gateway: Some(router.into()),
                },
            },
        ],
        &[NeighbourEntry {
            ifindex: 20,
            ip: router.into(),
            mac: Some([2, 0, 0, 0, 2, 254]),
            state: NeighbourState::Reachable,
        }],
    );
    let h = harness_with(snapshot.clone());
    let mut h = Harness {
        neighbors: Neighbors::fixed(l2.clone()),
        ..harness::worker_of(
            0,
            h.config.clone(),
            Neighbors::fixed(l2),
            h.replies.clone(),
            h.epoch,
        )
    };
    let request = frame(
        FROM_CLIENT,
        (CLIENT.into(), 40000),
        (VIP.into(), 80),
        true,
        b"",
    );
    assert_eq!(h.send(0, request), None);
    assert_eq!(h.drops("dsr_backend_not_on_link"), 1);
}

/// Snapshot `generation` of `forwarding`, the same listeners and backends.
fn snapshot_at(generation: u64, forwarding: Forwarding) -> Snapshot {
    let parts = snapshot(forwarding)
        .listeners()
        .iter()
        .map(|l| l.clone().into_parts())
        .collect::<Vec<_>>();
    let listeners = parts
        .into_iter()
        .map(|p| Listener::new(p).expect("valid listener"))
        .collect();
    Snapshot::new(generation, listeners).expect("one listener per VIP")
}

#[test]
fn a_dsr_connection_keeps_its_backend_across_a_reload_and_a_new_neighbour_table() {
    let (feed, neighbors) = NeighborFeed::new(l2_table());
    let h = harness_with(snapshot(Forwarding::Dsr));
    let mut h = harness::worker_of(0, h.config.clone(), neighbors, h.replies.clone(), h.epoch);
    let segment = || {
        frame(
            FROM_CLIENT,
            (CLIENT.into(), 40000),
            (VIP.into(), 80),
            true,
            b"x",
        )
    };
    let first = h.send(0, segment()).expect("forwarded").1;
    let backend_mac = &first[0..6];
    // A reload that keeps the listener and its backends.
    h.config.store(Arc::new(snapshot_at(2, Forwarding::Dsr)));
    let after_reload = h.send(0, segment()).expect("still forwarded, not reset").1;
    assert_eq!(&after_reload[0..6], backend_mac);
    assert_eq!(after_reload[12..], segment()[12..], "not a reset");
    // The kernel's table changes: the next hop is learnt again, toward
    // the backend (not the VIP the packet is addressed to).
    feed.publish(Arc::new(l2_table().with_version(7)));
    let after_l2 = h.send(0, segment()).expect("still forwarded").1;
    assert_eq!(&after_l2[0..6], backend_mac);
    let stats = h.stats();
    assert_eq!(stats.listeners[0].flows, 1, "one connection, one flow");
    assert_eq!(stats.listeners[0].packets, 3);
}

#[test]
fn a_client_packet_reaching_another_worker_keeps_its_flows_port() {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut owner = with_snat(harness_with(snapshot(full_nat(&[]))), &table, 0);
    let mut other = with_snat(owner.another_worker(), &table, 1);
    let packet = || {
        frame(
            FROM_CLIENT,
            (CLIENT.into(), 40000),
            (VIP.into(), 80),
            true,
            b"x",
        )
    };
    let first = inspect(&owner.send(0, packet()).expect("forwarded").1);
    for _ in 0..3 {
        let again = inspect(&other.send(0, packet()).expect("forwarded").1);
        assert_eq!(
            (again.src, again.dst),
            (first.src, first.dst),
            "same binding"
        );
    }
    assert_eq!(other.stats().listeners[0].flows, 0, "no new flow");
    assert_eq!(other.stats().listeners[0].packets, 3);
}

// PROXY protocol v2 on `fullnat` TCP listeners: the header spliced into the
// client's stream, sequence numbers and acknowledgments moved, across the
// two workers a flow's directions may reach.

use etherparse::TcpOptionElement;

fn proxied(addresses: &[IpAddr]) -> Forwarding {
    Forwarding::FullNat(FullNat {
        addresses: addresses.to_vec(),
        proxy_protocol: Some(switchyard_config::snapshot::ProxyProtocol::V2),
    })
}

/// A TCP segment with the given sequence numbers, flags (`S`, `A`, `P`,
/// `R`, `F`) and options.
#[allow(clippy::too_many_arguments)]
fn segment(
    macs: ([u8; 6], [u8; 6]),
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: Option<u32>,
    flags: &str,
    options: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let ethernet = PacketBuilder::ethernet2(macs.0, macs.1);
    let ip = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut tcp = ip.tcp(src.1, dst.1, seq, 65535);
    for flag in flags.chars() {
        tcp = match flag {
            'S' => tcp.syn(),
            'P' => tcp.psh(),
            'R' => tcp.rst(),
            'F' => tcp.fin(),
            other => panic!("flag {other}"),
        };
    }
    if let Some(ack) = ack {
        tcp = tcp.ack(ack);
    }
    let tcp = tcp.options(options).expect("options fit");
    let mut out = Vec::new();
    tcp.write(&mut out, payload).unwrap();
    out
}

/// A segment as its receiver reads it (checksums verified by `inspect`).
#[derive(Debug, PartialEq, Eq)]
struct Tcp {
    seen: Seen,
    seq: u32,
    ack: u32,
    rst: bool,
    mss: Option<u16>,
    sack: Vec<(u32, u32)>,
}

/// Sends `frame` in on `port` and reads the segment that leaves.
fn passes(h: &mut Harness, port: usize, frame: Vec<u8>) -> Tcp {
    read_tcp(&h.send(port, frame).expect("forwarded").1)
}

fn read_tcp(frame: &[u8]) -> Tcp {
    let seen = inspect(frame);
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
        panic!("not TCP")
    };
    let (mut mss, mut sack) = (None, vec![]);
    for option in tcp.options_iterator() {
        match option.expect("options parse") {
            TcpOptionElement::MaximumSegmentSize(m) => mss = Some(m),
            TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                sack.push(first);
                sack.extend(rest.iter().flatten());
            }
            _ => {}
        }
    }
    Tcp {
        seen,
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        rst: tcp.rst(),
        mss,
        sack,
    }
}

/// The header the specification (§2.2) lays out for a TCP client at
/// `client` reaching `vip`, byte by byte.
fn expected_header(client: (IpAddr, u16), vip: (IpAddr, u16)) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21);
    let addresses = match (client.0, vip.0) {
        (IpAddr::V4(c), IpAddr::V4(v)) => {
            header.extend_from_slice(&[0x11, 0, 12]);
            [c.octets().to_vec(), v.octets().to_vec()].concat()
        }
        (IpAddr::V6(c), IpAddr::V6(v)) => {
            header.extend_from_slice(&[0x21, 0, 36]);
            [c.octets().to_vec(), v.octets().to_vec()].concat()
        }
        _ => panic!("mixed families"),
    };
    header.extend_from_slice(&addresses);
    header.extend_from_slice(&client.1.to_be_bytes());
    header.extend_from_slice(&vip.1.to_be_bytes());
    header
}

/// One connection through a PROXY listener, its two directions on two
/// workers as RSS may put them: the handshake, the header on the ACK, the
/// client's first data again behind it until the backend acknowledges it,
/// then only moved sequence numbers; acknowledgments and SACK edges moved
/// back, and the SYN-ACK's MSS lowered by the header.
fn proxied_connection(family: &Family) {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut owner = with_snat(harness_with(snapshot(proxied(&[]))), &table, 0);
    let mut other = with_snat(owner.another_worker(), &table, 1);
    let client = (family.client, 40000);
    let vip = (family.vip, 80);
    let header = expected_header(client, vip);
    let len = header.len() as u32;
    let from_client = |seq, ack, flags, payload: &[u8]| {
        segment(FROM_CLIENT, client, vip, seq, ack, flags, &[], payload)
    };

    // Data on the SYN (TCP Fast Open) would go ahead of the header: the
    // SYN goes without it, and the client sends it again after.
    let syn = passes(&mut owner, 0, from_client(1000, None, "S", b"tfo"));
    assert_eq!(
        (syn.seq, syn.seen.payload.len()),
        (1000, 0),
        "a SYN without its data"
    );
    let (snat, backend) = (syn.seen.src, syn.seen.dst);
    let from_backend = |seq, ack, flags, options: &[TcpOptionElement]| {
        let macs = (backend_mac(family, backend.0), LB_BACKEND_SIDE_MAC);
        segment(macs, backend, snat, seq, Some(ack), flags, options, &[])
    };

    let mss = [TcpOptionElement::MaximumSegmentSize(1460)];
    let syn_ack = passes(&mut other, 1, from_backend(5000, 1001, "S", &mss));
    assert_eq!((syn_ack.seen.src, syn_ack.seen.dst), (vip, client));
    assert_eq!(syn_ack.ack, 1001, "the SYN-ACK acknowledges the SYN alone");
    assert_eq!(syn_ack.mss, Some(1460 - len as u16));

    let hello = passes(&mut owner, 0, from_client(1001, Some(5001), "", &[]));
    assert_eq!(hello.seq, 1001);
    assert_eq!(
        hello.seen.payload, header,
        "the handshake's ACK carries the header"
    );

    // Not yet acknowledged: the client's first data carries it again.
    let data = passes(&mut owner, 0, from_client(1001, Some(5001), "P", b"GET"));
    assert_eq!(data.seq, 1001);
    assert_eq!(data.seen.payload, [header.as_slice(), b"GET"].concat());

    // The backend acknowledges the header and the data; the client hears
    // of its own three bytes. The other worker says so for the owner.
    let acked = passes(&mut other, 1, from_backend(5001, 1001 + len + 3, "", &[]));
    assert_eq!(acked.ack, 1004);
    let again = passes(&mut owner, 0, from_client(1001, Some(5001), "P", b"GET"));
    assert_eq!(
        (again.seq, again.seen.payload.as_slice()),
        (1001 + len, b"GET".as_slice()),
        "delivered: a resent first segment only moves on"
    );
    let more = passes(&mut owner, 0, from_client(1004, Some(5001), "P", b"more"));
    assert_eq!(more.seq, 1004 + len);

    let sack = [TcpOptionElement::SelectiveAcknowledgement(
        (1010 + len, 1020 + len),
        [Some((1030 + len, 1040 + len)), None, None],
    )];
    let sacked = passes(&mut owner, 1, from_backend(5001, 1004 + len, "", &sack));
    assert_eq!(sacked.ack, 1004);
    assert_eq!(sacked.sack, vec![(1010, 1020), (1030, 1040)]);

    assert_eq!(owner.stats().proxy_headers, 2);
    assert_eq!(other.stats().proxy_headers, 0);
}

#[test]
fn proxy_protocol_ipv4_splices_the_header_and_moves_the_stream() {
    proxied_connection(&V4);
}

#[test]
fn proxy_protocol_ipv6_splices_the_header_and_moves_the_stream() {
    proxied_connection(&V6);
}

#[test]
fn a_proxy_listener_resets_a_connection_it_never_saw_open() {
    let table = Arc::new(SnatTable::new(RANGE));
    let mut h = with_snat(harness_with(snapshot(proxied(&[]))), &table, 0);
    let client = (IpAddr::V4(CLIENT), 40001);
    let vip = (IpAddr::V4(VIP), 80);
    let stray = segment(FROM_CLIENT, client, vip, 7000, Some(9), "P", &[], b"late");
    let (port, reset) = h.send(0, stray).expect("answered");
    let reset = read_tcp(&reset);
    assert_eq!(port, 0, "back to the client");
    assert!(reset.rst && reset.seq == 9, "{reset:?}");
    assert_eq!((reset.seen.src, reset.seen.dst), (vip, client));
    assert_eq!(h.drops("proxy_start_unseen"), 1);
    // UDP listeners of the same mode send no header.
    let request = frame(FROM_CLIENT, client, (VIP.into(), 53), false, b"q");
    let (_, out) = h.send(0, request).expect("forwarded");
    assert_eq!(inspect(&out).payload, b"q");
}
