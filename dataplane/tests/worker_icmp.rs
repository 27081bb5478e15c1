//! The worker's ICMP and ICMPv6 over in-memory frames: echo requests to a
//! VIP answered, errors about a client's flow translated toward the side
//! that sent the quoted packet, and everything else dropped by name. Every
//! frame the worker sends is compared with the one a host would have built
//! (etherparse, checksums from scratch).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, PacketBuilder};
use switchyard_config::snapshot::{
    Affinity, Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol,
    Slot, Snapshot,
};
use switchyard_dataplane::drop_reason::DropReason;
use switchyard_dataplane::neighbor::Neighbors;
use switchyard_dataplane::packet::FlowKey;
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::worker::WorkerRequest;

// Shared with the other worker suites, which use what this one does not.
#[allow(dead_code)]
mod harness;
mod two_arm;
use harness::{harness_with, worker_of, Harness};
use two_arm::*;

const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);
const TO_CLIENT: ([u8; 6], [u8; 6]) = (LB_CLIENT_SIDE_MAC, CLIENT_MAC);
/// A router on the clients' side of the LB.
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const BE6: Ipv6Addr = BE1_6;
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

fn endpoint(address: impl Into<IpAddr>, port: u16) -> Endpoint {
    Endpoint {
        address: address.into(),
        port,
    }
}

/// `demo/edge/<name>` on `vip`:`port` over `backends`, each owning the
/// slots `slots` names (indices into `backends`).
fn listener(
    name: &str,
    vip: IpAddr,
    protocol: Protocol,
    port: u16,
    backends: &[Endpoint],
    slots: &[u32],
) -> Listener {
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
            endpoints: backends.to_vec(),
        }],
        backends: backends
            .iter()
            .map(|&endpoint| Backend {
                endpoint,
                group: 0,
                effective_weight: 1.0 / backends.len() as f64,
            })
            .collect(),
        slots: slots.iter().map(|&b| Slot::Backend(b)).collect(),
        affinity: None,
        forwarding: Default::default(),
        policy: Default::default(),
    })
    .expect("valid listener")
}

/// TCP 80 and UDP 53 on the VIP over both backends, TCP 80 on an IPv6 VIP;
/// `tcp_slots` says which backend owns each of the TCP listener's slots.
fn snapshot(generation: u64, tcp_slots: &[u32]) -> Snapshot {
    let both = |port| [endpoint(BE1, port), endpoint(BE2, port)];
    Snapshot::new(
        generation,
        vec![
            listener("tcp", VIP.into(), Protocol::Tcp, 80, &both(8080), tcp_slots),
            listener("udp", VIP.into(), Protocol::Udp, 53, &both(5353), &[0, 1]),
            listener(
                "tcp6",
                VIP6.into(),
                Protocol::Tcp,
                80,
                &[endpoint(BE6, 8080)],
                &[0, 0],
            ),
        ],
    )
    .expect("one listener per VIP")
}

fn harness() -> Harness {
    harness_with(snapshot(1, &[0, 1]))
}

impl Harness {
    /// Whether this worker holds the client's TCP flow from `port`.
    fn has_flow(&mut self, port: u16) -> bool {
        let key = FlowKey {
            src: CLIENT.into(),
            dst: VIP.into(),
            src_port: port,
            dst_port: 80,
            protocol: 6,
        };
        let (reply, answer) = channel::bounded(1);
        self.requests
            .send(WorkerRequest::Lookup(key, reply))
            .unwrap();
        self.worker.serve_control();
        answer.recv().unwrap().is_some()
    }

    /// Opens a TCP flow from the client's `port` to VIP:80; returns the
    /// backend it reached.
    fn open_tcp(&mut self, port: u16) -> Ipv4Addr {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1)
            .ipv4(CLIENT.octets(), VIP.octets(), 64)
            .tcp(port, 80, 1, 1024)
            .syn()
            .write(&mut frame, &[])
            .unwrap();
        let (_, out) = self.send(0, frame).expect("forwarded");
        Ipv4Addr::new(out[30], out[31], out[32], out[33])
    }

    /// Sends a UDP datagram from the client's `port` to VIP:53; returns
    /// the backend it reached.
    fn open_udp(&mut self, port: u16) -> Ipv4Addr {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1)
            .ipv4(CLIENT.octets(), VIP.octets(), 64)
            .udp(port, 53)
            .write(&mut frame, b"query")
            .unwrap();
        let (_, out) = self.send(0, frame).expect("forwarded");
        Ipv4Addr::new(out[30], out[31], out[32], out[33])
    }
}

fn mac_of(backend: Ipv4Addr) -> [u8; 6] {
    if backend == BE1 {
        BE1_MAC
    } else {
        BE2_MAC
    }
}

#[derive(Clone, Copy)]
enum L4 {
    Tcp,
    Udp,
}

/// An IP packet without Ethernet, as its sender built it, cut to its first
/// `keep` bytes: what an error quotes.
fn packet(src: (IpAddr, u16), dst: (IpAddr, u16), l4: L4, keep: usize) -> Vec<u8> {
    let payload = [0x5a; 200];
    let mut bytes = Vec::new();
    match (src.0, dst.0, l4) {
        (IpAddr::V4(s), IpAddr::V4(d), L4::Udp) => PacketBuilder::ipv4(s.octets(), d.octets(), 60)
            .udp(src.1, dst.1)
            .write(&mut bytes, &payload),
        (IpAddr::V4(s), IpAddr::V4(d), L4::Tcp) => PacketBuilder::ipv4(s.octets(), d.octets(), 60)
            .tcp(src.1, dst.1, 7, 1024)
            .ack(9)
            .write(&mut bytes, &payload),
        (IpAddr::V6(s), IpAddr::V6(d), L4::Tcp) => PacketBuilder::ipv6(s.octets(), d.octets(), 60)
            .tcp(src.1, dst.1, 7, 1024)
            .ack(9)
            .write(&mut bytes, &payload),
        _ => panic!("no such packet in these tests"),
    }
    .unwrap();
    bytes.truncate(keep);
    bytes
}

#[derive(Clone, Copy)]
enum Error {
    FragmentationNeeded,
    PortUnreachable,
    PacketTooBig,
}

/// An Ethernet frame carrying `error` from `src` to `dst`, quoting `quote`.
fn error_frame(
    macs: ([u8; 6], [u8; 6]),
    src: IpAddr,
    dst: IpAddr,
    error: Error,
    quote: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(macs.0, macs.1);
    let mut frame = Vec::new();
    match (src, dst, error) {
        (IpAddr::V4(s), IpAddr::V4(d), Error::FragmentationNeeded) => eth
            .ipv4(s.octets(), d.octets(), 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
            ))
            .write(&mut frame, quote),
        (IpAddr::V4(s), IpAddr::V4(d), Error::PortUnreachable) => eth
            .ipv4(s.octets(), d.octets(), 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut frame, quote),
        (IpAddr::V6(s), IpAddr::V6(d), Error::PacketTooBig) => eth
            .ipv6(s.octets(), d.octets(), 64)
            .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut frame, quote),
        (IpAddr::V6(s), IpAddr::V6(d), Error::PortUnreachable) => eth
            .ipv6(s.octets(), d.octets(), 64)
            .icmpv6(Icmpv6Type::DestinationUnreachable(
                icmpv6::DestUnreachableCode::Port,
            ))
            .write(&mut frame, quote),
        _ => panic!("no such error in these tests"),
    }
    .unwrap();
    frame
}

fn echo_frame(macs: ([u8; 6], [u8; 6]), src: IpAddr, dst: IpAddr, ttl: u8, reply: bool) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(macs.0, macs.1);
    let data = b"ping data";
    let mut frame = Vec::new();
    match (src, dst, reply) {
        (IpAddr::V4(s), IpAddr::V4(d), false) => eth
            .ipv4(s.octets(), d.octets(), ttl)
            .icmpv4_echo_request(0x4242, 3)
            .write(&mut frame, data),
        (IpAddr::V4(s), IpAddr::V4(d), true) => eth
            .ipv4(s.octets(), d.octets(), ttl)
            .icmpv4_echo_reply(0x4242, 3)
            .write(&mut frame, data),
        (IpAddr::V6(s), IpAddr::V6(d), false) => eth
            .ipv6(s.octets(), d.octets(), ttl)
            .icmpv6_echo_request(0x4242, 3)
            .write(&mut frame, data),
        (IpAddr::V6(s), IpAddr::V6(d), true) => eth
            .ipv6(s.octets(), d.octets(), ttl)
            .icmpv6_echo_reply(0x4242, 3)
            .write(&mut frame, data),
        _ => panic!("one family"),
    }
    .unwrap();
    frame
}

/// What a router between the LB and the client sends when a reply the LB
/// sent it (VIP:80 → client:`port`) does not fit its next link.
fn frag_needed_about_reply(port: u16, keep: usize) -> Vec<u8> {
    let sent = packet((VIP.into(), 80), (CLIENT.into(), port), L4::Tcp, keep);
    error_frame(
        (ROUTER_MAC, LB_CLIENT_SIDE_MAC),
        ROUTER.into(),
        VIP.into(),
        Error::FragmentationNeeded,
        &sent,
    )
}

/// The same error as `backend` must see it: about its own packet.
fn frag_needed_as_backend_sees_it(backend: Ipv4Addr, port: u16, keep: usize) -> Vec<u8> {
    let sent = packet((backend.into(), 8080), (CLIENT.into(), port), L4::Tcp, keep);
    error_frame(
        (LB_BACKEND_SIDE_MAC, mac_of(backend)),
        ROUTER.into(),
        backend.into(),
        Error::FragmentationNeeded,
        &sent,
    )
}

#[test]
fn ping_to_a_vip_is_answered_out_of_the_port_it_came_in_on() {
    let mut h = harness();
    for (client, vip) in [
        (IpAddr::from(CLIENT), IpAddr::from(VIP)),
        (CLIENT6.into(), VIP6.into()),
    ] {
        let (port, out) = h
            .send(0, echo_frame(FROM_CLIENT, client, vip, 63, false))
            .expect("answered");
        assert_eq!(port, 0);
        assert_eq!(out, echo_frame(TO_CLIENT, vip, client, 64, true));
    }
    assert_eq!(h.stats().echo_replies, 2);
}

#[test]
fn ping_to_an_address_no_listener_has_is_not_a_service() {
    let mut h = harness();
    let other = Ipv4Addr::new(198, 18, 100, 99);
    let frame = echo_frame(FROM_CLIENT, CLIENT.into(), other.into(), 63, false);
    assert_eq!(h.send(0, frame), None);
    assert_eq!(h.drops(DropReason::NotAService.name()), 1);
    assert_eq!(h.stats().echo_replies, 0);
}

#[test]
fn ping_with_a_bad_checksum_is_not_answered() {
    let mut h = harness();
    let mut frame = echo_frame(FROM_CLIENT, CLIENT.into(), VIP.into(), 63, false);
    let last = frame.len() - 1;
    frame[last] ^= 0x80;
    assert_eq!(h.send(0, frame), None);
    assert_eq!(h.drops(DropReason::BadIcmp.name()), 1);
}

#[test]
fn fragmentation_needed_about_a_reply_reaches_the_flow_s_backend_as_about_its_own_packet() {
    let mut h = harness();
    for port in 40_000..40_008 {
        let backend = h.open_tcp(port);
        for keep in [usize::MAX, 28] {
            let (egress, out) = h
                .send(0, frag_needed_about_reply(port, keep))
                .expect("sent on");
            assert_eq!(egress, 1, "backends are behind the second interface");
            assert_eq!(out, frag_needed_as_backend_sees_it(backend, port, keep));
        }
    }
    assert_eq!(h.stats().icmp_to_backend, 16);
}

/// A worker without the flow sends the error where the flow's packets go:
/// the backend the listener's table gives the 5-tuple.
#[test]
fn fragmentation_needed_reaching_a_worker_without_the_flow_goes_to_the_same_backend() {
    let mut h = harness();
    let mut other = h.another_worker();
    let mut seen = Vec::new();
    for port in 40_000..40_016 {
        let backend = h.open_tcp(port);
        seen.push(backend);
        let (egress, out) = other
            .send(0, frag_needed_about_reply(port, usize::MAX))
            .expect("sent on");
        assert_eq!(egress, 1);
        assert_eq!(
            out,
            frag_needed_as_backend_sees_it(backend, port, usize::MAX)
        );
    }
    assert!(seen.contains(&BE1) && seen.contains(&BE2), "{seen:?}");
    assert_eq!(other.stats().icmp_to_backend, 16);
    assert!(
        !other.has_flow(40_000),
        "no flow entry is made for an error"
    );
}

/// The flow table outranks the slot table: after a reload that gives the
/// flow's slot to the other backend, the worker holding the flow still
/// sends the error to the backend that has the connection.
#[test]
fn the_flow_s_backend_outranks_a_reload_that_moved_its_slot() {
    let mut h = harness();
    let port = 40_000;
    let backend = h.open_tcp(port);
    let moved = if backend == BE1 { [1, 1] } else { [0, 0] };
    h.config.store(Arc::new(snapshot(2, &moved)));
    let (_, out) = h
        .send(0, frag_needed_about_reply(port, usize::MAX))
        .expect("sent on");
    assert_eq!(
        out,
        frag_needed_as_backend_sees_it(backend, port, usize::MAX)
    );
    let mut other = h.another_worker();
    let elsewhere = if backend == BE1 { BE2 } else { BE1 };
    let (_, out) = other
        .send(0, frag_needed_about_reply(port, usize::MAX))
        .expect("sent on");
    assert_eq!(
        out,
        frag_needed_as_backend_sees_it(elsewhere, port, usize::MAX)
    );
}

#[test]
fn a_backend_s_port_unreachable_reaches_the_client_from_the_vip() {
    let mut h = harness();
    let port = 40_000;
    let backend = h.open_udp(port);
    let received = packet((CLIENT.into(), port), (backend.into(), 5353), L4::Udp, 228);
    let frame = error_frame(
        (mac_of(backend), LB_BACKEND_SIDE_MAC),
        backend.into(),
        CLIENT.into(),
        Error::PortUnreachable,
        &received,
    );
    // Any worker: the VIP comes from the shared reply table.
    let mut other = h.another_worker();
    let (egress, out) = other.send(1, frame).expect("sent on");
    assert_eq!(egress, 0, "clients are behind the first interface");
    let as_client_sent = packet((CLIENT.into(), port), (VIP.into(), 53), L4::Udp, 228);
    let expected = error_frame(
        TO_CLIENT,
        VIP.into(),
        CLIENT.into(),
        Error::PortUnreachable,
        &as_client_sent,
    );
    assert_eq!(out, expected);
    assert_eq!(other.stats().icmp_to_client, 1);
}

#[test]
fn a_backend_s_error_about_no_client_flow_is_dropped_not_translated() {
    let mut h = harness();
    let received = packet((CLIENT.into(), 40_000), (BE1.into(), 5353), L4::Udp, 228);
    let frame = error_frame(
        (BE1_MAC, LB_BACKEND_SIDE_MAC),
        BE1.into(),
        CLIENT.into(),
        Error::PortUnreachable,
        &received,
    );
    assert_eq!(h.send(1, frame), None);
    assert_eq!(h.drops(DropReason::ReplyWithoutFlow.name()), 1);
    assert_eq!(h.stats().icmp_to_client, 0);
}

#[test]
fn an_error_whose_quote_is_cut_before_the_ports_is_dropped_as_bad_icmp() {
    let mut h = harness();
    h.open_tcp(40_000);
    assert_eq!(h.send(0, frag_needed_about_reply(40_000, 24)), None);
    assert_eq!(h.drops(DropReason::BadIcmp.name()), 1);
}

#[test]
fn an_error_about_a_port_no_listener_serves_is_icmp_without_flow() {
    let mut h = harness();
    for (vip, client, router, error) in [
        (
            IpAddr::from(VIP),
            IpAddr::from(CLIENT),
            IpAddr::from(ROUTER),
            Error::FragmentationNeeded,
        ),
        (
            VIP6.into(),
            CLIENT6.into(),
            CLIENT6.into(),
            Error::PacketTooBig,
        ),
    ] {
        let sent = packet((vip, 8443), (client, 40_000), L4::Tcp, usize::MAX);
        let frame = error_frame(FROM_CLIENT, router, vip, error, &sent);
        assert_eq!(h.send(0, frame), None);
    }
    assert_eq!(h.drops(DropReason::IcmpWithoutFlow.name()), 2);
}

#[test]
fn an_echo_reply_to_a_vip_is_icmp_without_flow() {
    let mut h = harness();
    let frame = echo_frame(FROM_CLIENT, CLIENT.into(), VIP.into(), 63, true);
    assert_eq!(h.send(0, frame), None);
    assert_eq!(h.drops(DropReason::IcmpWithoutFlow.name()), 1);
}

/// With ClientIP affinity the client's live entry, not the slot, names
/// the backend a worker without the flow sends an error to.
#[test]
fn with_client_ip_affinity_an_error_follows_the_client_s_entry() {
    let mut parts = snapshot(1, &[0, 1]).listeners()[0].clone().into_parts();
    parts.affinity = Some(Affinity { timeout_secs: 3600 });
    let config = Arc::new(ArcSwap::from_pointee(
        Snapshot::new(1, vec![Listener::new(parts).unwrap()]).unwrap(),
    ));
    let affinity = Arc::new(switchyard_dataplane::affinity::AffinityTable::new(64));
    let replies = Arc::new(ReplyTable::new(64));
    let epoch = Instant::now();
    let neighbors = Neighbors::fixed(l2_table());
    let new_worker = |queue| {
        let mut h = worker_of(
            queue,
            config.clone(),
            neighbors.clone(),
            replies.clone(),
            epoch,
        );
        h.worker = h.worker.with_affinity_table(affinity.clone());
        h
    };
    let mut h = new_worker(0);
    let backend = h.open_tcp(40_000);
    // Move every slot to the other backend: only the affinity entry still
    // names the client's.
    let mut parts = config.load().listeners()[0].clone().into_parts();
    let other = if backend == BE1 { 1 } else { 0 };
    parts.slots = vec![Slot::Backend(other); 2];
    config.store(Arc::new(
        Snapshot::new(2, vec![Listener::new(parts).unwrap()]).unwrap(),
    ));
    let mut elsewhere = new_worker(1);
    let (_, out) = elsewhere
        .send(0, frag_needed_about_reply(40_001, usize::MAX))
        .expect("sent on");
    assert_eq!(
        out,
        frag_needed_as_backend_sees_it(backend, 40_001, usize::MAX)
    );
}

/// IPv6: a router's packet-too-big about a reply (VIP6:80 to the client)
/// reaches the flow's backend about its own packet, from a worker that
/// never saw the flow too (the listener's table decides, as for its
/// packets).
#[test]
fn packet_too_big_about_an_ipv6_reply_reaches_the_flow_s_backend() {
    let mut h = harness();
    for port in [40_000, 40_001] {
        let sent = packet(
            (VIP6.into(), 80),
            (CLIENT6.into(), port),
            L4::Tcp,
            usize::MAX,
        );
        let error = error_frame(
            (ROUTER_MAC, LB_CLIENT_SIDE_MAC),
            ROUTER6.into(),
            VIP6.into(),
            Error::PacketTooBig,
            &sent,
        );
        let (egress, out) = h.send(0, error).expect("sent on");
        assert_eq!(egress, 1, "backends are behind the second interface");
        let own = packet(
            (BE6.into(), 8080),
            (CLIENT6.into(), port),
            L4::Tcp,
            usize::MAX,
        );
        let expected = error_frame(
            (LB_BACKEND_SIDE_MAC, BE1_MAC),
            ROUTER6.into(),
            BE6.into(),
            Error::PacketTooBig,
            &own,
        );
        assert_eq!(out, expected);
    }
    assert_eq!(h.stats().icmp_to_backend, 2);
}
