//! The worker on one interface carrying VLANs: clients on `eth0.10`,
//! backends on `eth0.20`, both kernel VLAN links of `eth0`, the one port
//! Switchyard runs on. A frame leaves tagged with its next hop's VLAN
//! whatever it arrived with.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice, VlanId};
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol, Slot,
    Snapshot,
};
use switchyard_dataplane::drop_reason::DropReason;
use switchyard_dataplane::io::MemoryIo;
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, Neighbors, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
    VlanLink, VlanTag,
};
use switchyard_dataplane::worker::{Worker, WorkerRequest, WorkerSettings, WorkerStats};

const ETH0: u32 = 2;
const ETH0_10: u32 = 10;
const ETH0_20: u32 = 20;
/// A third VLAN on eth0 whose frames the LB sends untagged: the parent
/// itself carries 198.18.30.0/24.
const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const LB_MAC_10: [u8; 6] = [2, 0, 0, 0, 0, 10];
const LB_MAC_20: [u8; 6] = [2, 0, 0, 0, 0, 20];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const BE_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const UNTAGGED_CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 3, 1];

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 5);
const UNTAGGED_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 5);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 5);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);

/// The backends' VLAN has a smaller MTU than the clients'.
const BACKEND_VLAN_MTU: u32 = 1400;

fn vlan(ifindex: u32, id: u16, mac: [u8; 6], mtu: u32) -> LinkEntry {
    LinkEntry {
        ifindex,
        mac,
        vlan: Some(VlanLink {
            parent: ETH0,
            tag: VlanTag { tpid: 0x8100, id },
        }),
        mtu,
    }
}

fn l2_table() -> L2Table {
    let route = |a: Ipv4Addr, ifindex| RouteEntry {
        dst: IpAddr::V4(a),
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
    L2Table::new(
        &[ETH0],
        &[
            LinkEntry::ethernet(ETH0, LB_MAC),
            vlan(ETH0_10, 10, LB_MAC_10, 1500),
            vlan(ETH0_20, 20, LB_MAC_20, BACKEND_VLAN_MTU),
        ],
        &[
            route(Ipv4Addr::new(198, 18, 10, 0), ETH0_10),
            route(Ipv4Addr::new(198, 18, 20, 0), ETH0_20),
            route(Ipv4Addr::new(198, 18, 30, 0), ETH0),
        ],
        &[
            neighbour(CLIENT, ETH0_10, CLIENT_MAC),
            neighbour(BACKEND, ETH0_20, BE_MAC),
            neighbour(UNTAGGED_CLIENT, ETH0, UNTAGGED_CLIENT_MAC),
        ],
    )
}

fn listener(protocol: Protocol, port: u16) -> Listener {
    let endpoint = Endpoint {
        address: BACKEND.into(),
        port: 8080,
    };
    Listener::new(ListenerParts {
        name: ListenerName {
            namespace: "demo".into(),
            gateway: "edge".into(),
            listener: format!("{protocol:?}").to_lowercase(),
        },
        route: "demo/echo".into(),
        address: VIP.into(),
        port,
        listener_port: port,
        protocol,
        groups: vec![BackendGroup {
            terminating: false,
            draining: Vec::new(),
            health_check: None,
            service: "demo/echo".into(),
            weight: 1,
            endpoints: vec![endpoint],
        }],
        backends: vec![Backend {
            endpoint,
            group: 0,
            effective_weight: 1.0,
        }],
        slots: vec![Slot::Backend(0); 2],
        affinity: None,
        forwarding: Default::default(),
        policy: Default::default(),
    })
    .expect("valid listener")
}

struct Harness {
    worker: Worker,
    io: MemoryIo,
    requests: channel::Sender<WorkerRequest>,
}

fn harness() -> Harness {
    let snapshot = Snapshot::new(
        1,
        vec![listener(Protocol::Tcp, 80), listener(Protocol::Udp, 53)],
    )
    .expect("snapshot");
    let (requests, control) = channel::bounded(4);
    let worker = Worker::new(
        0,
        vec![ETH0],
        Arc::new(ArcSwap::from_pointee(snapshot)),
        Neighbors::fixed(l2_table()),
        control,
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
        WorkerSettings::default(),
    );
    Harness {
        worker,
        io: MemoryIo::new(64),
        requests,
    }
}

impl Harness {
    fn send(&mut self, frame: Vec<u8>) -> Option<(usize, Vec<u8>)> {
        self.io.rx.push_back((0, frame));
        self.worker.run_once(&mut self.io);
        self.io.tx.pop()
    }

    fn stats(&mut self) -> WorkerStats {
        let (reply, answer) = channel::bounded(1);
        self.requests.send(WorkerRequest::Stats(reply)).unwrap();
        self.worker.serve_control();
        answer.recv().unwrap()
    }
}

/// A TCP or UDP frame, tagged with `vid` if given.
fn frame(
    macs: ([u8; 6], [u8; 6]),
    vid: Option<u16>,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    udp: bool,
) -> Vec<u8> {
    frame_of(macs, vid, src, dst, udp, b"switchyard")
}

fn frame_of(
    macs: ([u8; 6], [u8; 6]),
    vid: Option<u16>,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    udp: bool,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(macs.0, macs.1);
    let mut out = Vec::new();
    macro_rules! finish {
        ($ip:expr) => {
            if udp {
                $ip.udp(src.1, dst.1).write(&mut out, payload).unwrap()
            } else {
                $ip.tcp(src.1, dst.1, 1, 65535)
                    .ack(1)
                    .write(&mut out, payload)
                    .unwrap()
            }
        };
    }
    match vid {
        Some(vid) => finish!(eth.single_vlan(VlanId::try_new(vid).unwrap()).ipv4(
            src.0.octets(),
            dst.0.octets(),
            64
        )),
        None => finish!(eth.ipv4(src.0.octets(), dst.0.octets(), 64)),
    }
    out
}

/// (source MAC, destination MAC, VLAN id, source, destination), checksums
/// verified from scratch.
type Seen = (
    [u8; 6],
    [u8; 6],
    Option<u16>,
    (Ipv4Addr, u16),
    (Ipv4Addr, u16),
);

fn inspect(frame: &[u8]) -> Seen {
    let packet = SlicedPacket::from_ethernet(frame).expect("output parses");
    let vid = packet.vlan().map(|v| match v {
        etherparse::VlanSlice::SingleVlan(s) => s.vlan_identifier().value(),
        etherparse::VlanSlice::DoubleVlan(_) => panic!("two tags"),
    });
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = packet.link else {
        panic!("not ethernet")
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = packet.net else {
        panic!("not ipv4")
    };
    let header = ip.header().to_header();
    assert_eq!(header.header_checksum, header.calc_header_checksum());
    let (sp, dp) = match packet.transport.expect("transport") {
        TransportSlice::Tcp(tcp) => {
            let sum = tcp.to_header().calc_checksum_ipv4(&header, tcp.payload());
            assert_eq!(tcp.checksum(), sum.unwrap(), "TCP checksum");
            assert_eq!(tcp.payload(), b"switchyard");
            (tcp.source_port(), tcp.destination_port())
        }
        TransportSlice::Udp(udp) => {
            let sum = udp.to_header().calc_checksum_ipv4(&header, udp.payload());
            assert_eq!(udp.checksum(), sum.unwrap(), "UDP checksum");
            assert_eq!(udp.payload(), b"switchyard");
            (udp.source_port(), udp.destination_port())
        }
        other => panic!("unexpected transport {other:?}"),
    };
    (
        eth.source(),
        eth.destination(),
        vid,
        (header.source.into(), sp),
        (header.destination.into(), dp),
    )
}

#[test]
fn a_client_on_one_vlan_reaches_a_backend_on_another_and_the_reply_comes_back_tagged() {
    for udp in [false, true] {
        let mut h = harness();
        let port = if udp { 53 } else { 80 };
        let request = frame(
            (CLIENT_MAC, LB_MAC_10),
            Some(10),
            (CLIENT, 40000),
            (VIP, port),
            udp,
        );
        let (egress, out) = h.send(request.clone()).expect("forwarded");
        assert_eq!(egress, 0, "the one port");
        assert_eq!(out.len(), request.len(), "retagged in place");
        assert_eq!(
            inspect(&out),
            (
                LB_MAC_20,
                BE_MAC,
                Some(20),
                (CLIENT, 40000),
                (BACKEND, 8080)
            )
        );
        let reply = frame(
            (BE_MAC, LB_MAC_20),
            Some(20),
            (BACKEND, 8080),
            (CLIENT, 40000),
            udp,
        );
        let (_, back) = h.send(reply).expect("reply forwarded");
        assert_eq!(
            inspect(&back),
            (
                LB_MAC_10,
                CLIENT_MAC,
                Some(10),
                (VIP, port),
                (CLIENT, 40000)
            )
        );
        // A later packet of the flow follows the same plan.
        let (_, again) = h.send(request).expect("forwarded again");
        assert_eq!(inspect(&again).2, Some(20));
        let stats = h.stats();
        assert_eq!(
            (stats.vlan_retagged, stats.vlan_pushed, stats.vlan_popped),
            (3, 0, 0)
        );
    }
}

#[test]
fn an_untagged_client_reaches_a_vlan_backend_with_a_tag_pushed_and_popped_back() {
    let mut h = harness();
    let request = frame(
        (UNTAGGED_CLIENT_MAC, LB_MAC),
        None,
        (UNTAGGED_CLIENT, 40000),
        (VIP, 80),
        false,
    );
    let (_, out) = h.send(request.clone()).expect("forwarded");
    assert_eq!(out.len(), request.len() + 4, "a tag pushed");
    assert_eq!(
        inspect(&out),
        (
            LB_MAC_20,
            BE_MAC,
            Some(20),
            (UNTAGGED_CLIENT, 40000),
            (BACKEND, 8080)
        )
    );
    let reply = frame(
        (BE_MAC, LB_MAC_20),
        Some(20),
        (BACKEND, 8080),
        (UNTAGGED_CLIENT, 40000),
        false,
    );
    let (_, back) = h.send(reply.clone()).expect("reply forwarded");
    assert_eq!(back.len(), reply.len() - 4, "the tag popped");
    assert_eq!(
        inspect(&back),
        (
            LB_MAC,
            UNTAGGED_CLIENT_MAC,
            None,
            (VIP, 80),
            (UNTAGGED_CLIENT, 40000)
        )
    );
    let stats = h.stats();
    assert_eq!(
        (stats.vlan_retagged, stats.vlan_pushed, stats.vlan_popped),
        (0, 1, 1)
    );
    assert_eq!(stats.drops[DropReason::FrameTooBig as usize], 0);
}

#[test]
fn a_route_out_of_a_vlan_link_is_no_longer_an_egress_not_owned() {
    // Before VLAN links were mirrored, eth0.20 was an interface Switchyard
    // did not own: every such flow was dropped.
    let mut h = harness();
    let request = frame(
        (CLIENT_MAC, LB_MAC_10),
        Some(10),
        (CLIENT, 40001),
        (VIP, 53),
        true,
    );
    assert!(h.send(request).is_some());
    let stats = h.stats();
    assert_eq!(stats.drops[DropReason::EgressNotOwned as usize], 0);
    assert_eq!(stats.drops[DropReason::NoRoute as usize], 0);
}

#[test]
fn a_df_packet_larger_than_its_egress_vlans_mtu_is_dropped_and_answered_with_frag_needed() {
    let mut h = harness();
    // IPv4 20 + UDP 8 + payload: exactly the backend VLAN's MTU, then one
    // byte more. The builder sets DF, as a sender doing path MTU
    // discovery does.
    let fits = vec![b'x'; BACKEND_VLAN_MTU as usize - 28];
    let client = (CLIENT, 40002);
    let macs = (CLIENT_MAC, LB_MAC_10);
    let sent = h.send(frame_of(macs, Some(10), client, (VIP, 53), true, &fits));
    let tag = sent.map(|(_, f)| f[12..16].to_vec());
    assert_eq!(tag, Some(vec![0x81, 0, 0, 20]), "sent on VLAN 20");
    let too_big = frame_of(macs, Some(10), client, (VIP, 53), true, &[b'x'; 1373]);
    let (port, answer) = h.send(too_big.clone()).expect("an ICMP error");
    assert_eq!(port, 0, "back where it came from");
    let packet = SlicedPacket::from_ethernet(&answer).unwrap();
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("ethernet")
    };
    assert_eq!((eth.source(), eth.destination()), (LB_MAC_10, CLIENT_MAC));
    let Some(etherparse::VlanSlice::SingleVlan(tag)) = packet.vlan() else {
        panic!("the client's tag kept")
    };
    assert_eq!(tag.vlan_identifier().value(), 10);
    let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("ipv4")
    };
    assert_eq!(
        (ip.header().source_addr(), ip.header().destination_addr()),
        (VIP, CLIENT),
        "from the VIP the client sent to"
    );
    let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
        panic!("icmp")
    };
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: BACKEND_VLAN_MTU as u16
            }
        )
    );
    assert_eq!(icmp.payload(), &too_big[18..18 + 28], "the packet as sent");
    let stats = h.stats();
    assert_eq!(stats.drops[DropReason::FrameTooBig as usize], 1);
    assert_eq!(stats.too_big_answered, 1);
}

/// A router on the clients' VLAN reports that a reply (VIP:80 to the
/// client) did not fit: the error goes to the flow's backend on the
/// backends' VLAN, tagged for it, as the flow's own packets go.
#[test]
fn an_icmp_error_about_a_flow_reaches_its_backend_tagged_for_the_backends_vlan() {
    let mut h = harness();
    let request = frame(
        (CLIENT_MAC, LB_MAC_10),
        Some(10),
        (CLIENT, 40000),
        (VIP, 80),
        false,
    );
    h.send(request).expect("forwarded");
    let mut quote = Vec::new();
    PacketBuilder::ipv4(VIP.octets(), CLIENT.octets(), 63)
        .tcp(80, 40000, 7, 1024)
        .ack(9)
        .write(&mut quote, &[0x5a; 40])
        .unwrap();
    let router = Ipv4Addr::new(198, 18, 10, 254);
    let mut error = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 1, 254], LB_MAC_10)
        .single_vlan(VlanId::try_new(10).unwrap())
        .ipv4(router.octets(), VIP.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1280 },
        ))
        .write(&mut error, &quote)
        .unwrap();
    let (_, out) = h.send(error.clone()).expect("sent on to the backend");
    assert_eq!(out.len(), error.len(), "retagged in place");
    let packet = SlicedPacket::from_ethernet(&out).expect("output parses");
    let vid = packet.vlan().map(|v| match v {
        etherparse::VlanSlice::SingleVlan(s) => s.vlan_identifier().value(),
        etherparse::VlanSlice::DoubleVlan(_) => panic!("two tags"),
    });
    assert_eq!(vid, Some(20), "the backends' VLAN");
    assert_eq!((&out[0..6], &out[6..12]), (&BE_MAC[..], &LB_MAC_20[..]));
    let Some(etherparse::NetSlice::Ipv4(ip)) = packet.net else {
        panic!("not IPv4")
    };
    assert_eq!(
        (ip.header().source_addr(), ip.header().destination_addr()),
        (router, BACKEND)
    );
    assert_eq!(h.stats().icmp_to_backend, 1);
}
