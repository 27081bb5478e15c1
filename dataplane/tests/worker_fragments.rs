//! Fragmented datagrams through the worker: a first fragment is decided as
//! its flow and rewritten like a whole packet, the fragments after it
//! follow its decision, and what arrives without its first is dropped. The
//! real check is the receiver's: the output fragments, reassembled, carry
//! a datagram whose checksum verifies from scratch against the rewritten
//! pseudo-header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use etherparse::{Ipv4Header, Ipv4HeaderSlice, PacketBuilder, UdpHeader};
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol, Slot,
    Snapshot,
};
use switchyard_dataplane::drop_reason::DropReason;
use switchyard_dataplane::fragments::FragmentKey;
use switchyard_dataplane::io::MemoryIo;
use switchyard_dataplane::neighbor::Neighbors;
use switchyard_dataplane::packet::{
    apply, parse_first_fragment, parse_l3, rewrite_later_fragment, L4Checksum, Rewrite,
};
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::worker::{Worker, WorkerRequest, WorkerSettings, WorkerStats};

mod two_arm;
use two_arm::*;

/// A 4000-byte datagram over a 1500-byte MTU: first, middle and last.
const DATAGRAM_PAYLOAD: usize = 4000;
const MTU: usize = 1500;
const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, LB_CLIENT_SIDE_MAC);
const FROM_BE1: ([u8; 6], [u8; 6]) = (BE1_MAC, LB_BACKEND_SIDE_MAC);

/// UDP VIP:53 to BE1:5353 alone, so the backend does not depend on hashing;
/// and VIP6:53 to BE1_6:5353.
fn snapshot() -> Snapshot {
    let endpoint = Endpoint {
        address: IpAddr::V4(BE1),
        port: 5353,
    };
    let parts = ListenerParts {
        name: ListenerName {
            namespace: "demo".into(),
            gateway: "edge".into(),
            listener: "udp".into(),
        },
        route: "demo/udp".into(),
        address: IpAddr::V4(VIP),
        port: 53,
        listener_port: 53,
        protocol: Protocol::Udp,
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
    };
    // The same on the Gateway's IPv6 address, to BE1's IPv6 address.
    let endpoint6 = Endpoint {
        address: IpAddr::V6(BE1_6),
        port: 5353,
    };
    let mut parts6 = parts.clone();
    parts6.address = IpAddr::V6(VIP6);
    parts6.groups[0].endpoints = vec![endpoint6];
    parts6.backends[0].endpoint = endpoint6;
    Snapshot::new(
        1,
        vec![
            Listener::new(parts).expect("valid listener"),
            Listener::new(parts6).expect("valid listener"),
        ],
    )
    .expect("one listener per VIP")
}

struct Harness {
    worker: Worker,
    io: MemoryIo,
    requests: channel::Sender<WorkerRequest>,
}

fn harness() -> Harness {
    harness_with(|worker| worker)
}

fn harness_with(configure: impl FnOnce(Worker) -> Worker) -> Harness {
    let (requests, control) = channel::bounded(4);
    let worker = Worker::new(
        0,
        vec![10, 20],
        Arc::new(ArcSwap::from_pointee(snapshot())),
        Neighbors::fixed(l2_table()),
        control,
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
        WorkerSettings::default(),
    )
    .with_reply_table(Arc::new(ReplyTable::new(1024)));
    Harness {
        worker: configure(worker),
        io: MemoryIo::new(64),
        requests,
    }
}

impl Harness {
    /// Feeds frames on `port` in one batch; returns every (port, frame) sent.
    fn send_all(&mut self, port: usize, frames: &[Vec<u8>]) -> Vec<(usize, Vec<u8>)> {
        self.io
            .rx
            .extend(frames.iter().map(|frame| (port, frame.clone())));
        self.worker.run_once(&mut self.io);
        std::mem::take(&mut self.io.tx)
    }

    fn stats(&mut self) -> WorkerStats {
        let (reply, answer) = channel::bounded(1);
        self.requests.send(WorkerRequest::Stats(reply)).unwrap();
        self.worker.serve_control();
        answer.recv().unwrap()
    }

    fn drops(&mut self, reason: DropReason) -> u64 {
        self.stats().drops[reason as usize]
    }
}

/// Ethernet II frames carrying the fragments of one UDP datagram of
/// `DATAGRAM_PAYLOAD` bytes, each IP packet at most `MTU` bytes, in order.
fn udp4_train(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    id: u16,
) -> Vec<Vec<u8>> {
    let whole = {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(macs.0, macs.1)
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .udp(src.1, dst.1)
            .write(&mut frame, &payload())
            .unwrap();
        frame
    };
    let datagram = &whole[14 + 20..];
    let per_fragment = (MTU - 20) & !7;
    let chunks: Vec<&[u8]> = datagram.chunks(per_fragment).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut header = Ipv4Header::new(
                chunk.len() as u16,
                64,
                etherparse::IpNumber::UDP,
                src.0.octets(),
                dst.0.octets(),
            )
            .unwrap();
            header.identification = id;
            header.dont_fragment = false;
            header.more_fragments = i + 1 < chunks.len();
            header.fragment_offset =
                etherparse::IpFragOffset::try_new((i * per_fragment / 8) as u16).unwrap();
            header.header_checksum = header.calc_header_checksum();
            [&whole[..14], &header.to_bytes(), chunk].concat()
        })
        .collect()
}

/// The same for IPv6, each fragment with a Fragment header (RFC 8200 §4.5).
fn udp6_train(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), id: u32) -> Vec<Vec<u8>> {
    let whole = {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x0c], [2, 0, 0, 0, 0, 0x1b])
            .ipv6(src.0.octets(), dst.0.octets(), 64)
            .udp(src.1, dst.1)
            .write(&mut frame, &payload())
            .unwrap();
        frame
    };
    let datagram = &whole[14 + 40..];
    let per_fragment = (MTU - 40 - 8) & !7;
    let chunks: Vec<&[u8]> = datagram.chunks(per_fragment).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut ip = whole[14..14 + 40].to_vec();
            ip[4..6].copy_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            ip[6] = 44;
            let more = u16::from(i + 1 < chunks.len());
            let offset_flags = ((i * per_fragment) as u16) | more;
            let mut fragment = vec![17, 0];
            fragment.extend_from_slice(&offset_flags.to_be_bytes());
            fragment.extend_from_slice(&id.to_be_bytes());
            [&whole[..14], &ip, &fragment, chunk].concat()
        })
        .collect()
}

fn payload() -> Vec<u8> {
    (0..DATAGRAM_PAYLOAD).map(|i| (i * 7 % 251) as u8).collect()
}

/// What a receiving host makes of output fragments: every IPv4 header
/// checksum verified, the fragments put back in order, and the datagram's
/// addresses, ports, payload and UDP checksum (from scratch, over the
/// reassembled datagram and the pseudo-header of the fragments' addresses).
#[derive(Debug, PartialEq)]
struct Reassembled {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    payload: Vec<u8>,
}

fn reassemble(frames: &[&[u8]]) -> Reassembled {
    let mut pieces = Vec::new();
    let mut addresses = None;
    for frame in frames {
        let l3 = parse_l3(frame).expect("an output fragment parses");
        if !l3.src.is_ipv6() {
            let header = Ipv4HeaderSlice::from_slice(&frame[l3.l3_offset..])
                .unwrap()
                .to_header();
            assert_eq!(
                header.header_checksum,
                header.calc_header_checksum(),
                "IPv4 header checksum"
            );
        }
        let fragment = l3.fragment.expect("still a fragment");
        assert!(
            addresses.is_none_or(|a| a == (l3.src, l3.dst)),
            "one datagram"
        );
        addresses = Some((l3.src, l3.dst));
        let data = &frame[l3.l4_offset..l3.l3_offset + l3.ip_total_len];
        pieces.push((fragment.offset, fragment.more, data.to_vec()));
    }
    pieces.sort_by_key(|p| p.0);
    let mut datagram = Vec::new();
    for (offset, _, data) in &pieces {
        assert_eq!(*offset, datagram.len(), "no gap, no overlap");
        datagram.extend_from_slice(data);
    }
    assert!(!pieces.last().unwrap().1, "the last fragment ends it");
    let (src, dst) = addresses.unwrap();
    let (udp, _) = UdpHeader::from_slice(&datagram).unwrap();
    assert_eq!(usize::from(udp.length), datagram.len());
    let expected = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => udp
            .calc_checksum_ipv4_raw(s.octets(), d.octets(), &datagram[8..])
            .unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => udp
            .calc_checksum_ipv6_raw(s.octets(), d.octets(), &datagram[8..])
            .unwrap(),
        _ => unreachable!("parse_l3 gives one family"),
    };
    assert_eq!(udp.checksum, expected, "UDP checksum of the datagram");
    Reassembled {
        src: (src, udp.source_port),
        dst: (dst, udp.destination_port),
        payload: datagram[8..].to_vec(),
    }
}

fn frames_of(sent: &[(usize, Vec<u8>)]) -> Vec<&[u8]> {
    sent.iter().map(|(_, frame)| frame.as_slice()).collect()
}

#[test]
fn a_fragmented_datagram_reaches_the_backend_whole_with_a_valid_checksum() {
    let mut h = harness();
    let train = udp4_train(FROM_CLIENT, (CLIENT, 53000), (VIP, 53), 0x4242);
    assert_eq!(train.len(), 3, "first, middle, last");
    let sent = h.send_all(0, &train);
    assert_eq!(sent.len(), 3, "every fragment forwarded");
    for (port, frame) in &sent {
        assert_eq!(*port, 1, "out of the backend arm");
        assert_eq!(frame[0..6], BE1_MAC);
        assert_eq!(frame[6..12], LB_BACKEND_SIDE_MAC);
        assert_eq!(frame[14 + 8], 64, "TTL kept");
    }
    assert_eq!(
        reassemble(&frames_of(&sent)),
        Reassembled {
            src: (CLIENT.into(), 53000),
            dst: (BE1.into(), 5353),
            payload: payload(),
        }
    );
    let stats = h.stats();
    assert_eq!((stats.first_fragments, stats.later_fragments), (1, 2));
    assert_eq!(stats.listeners[0].packets, 3, "counted on the listener");
    assert_eq!(stats.drops.iter().sum::<u64>(), 0);
}

#[test]
fn a_backends_fragmented_reply_comes_back_from_the_vip() {
    let mut h = harness();
    let request = udp4_train(FROM_CLIENT, (CLIENT, 53001), (VIP, 53), 1);
    assert_eq!(h.send_all(0, &request).len(), 3);
    let reply = udp4_train(FROM_BE1, (BE1, 5353), (CLIENT, 53001), 7);
    let sent = h.send_all(1, &reply);
    assert_eq!(sent.len(), 3, "every fragment of the reply forwarded");
    for (port, frame) in &sent {
        assert_eq!(*port, 0, "out of the client arm");
        assert_eq!(frame[0..6], CLIENT_MAC);
        assert_eq!(frame[6..12], LB_CLIENT_SIDE_MAC);
    }
    assert_eq!(
        reassemble(&frames_of(&sent)),
        Reassembled {
            src: (VIP.into(), 53),
            dst: (CLIENT.into(), 53001),
            payload: payload(),
        }
    );
}

#[test]
fn a_fragmented_datagram_of_an_established_flow_follows_the_flow() {
    let mut h = harness();
    let mut whole = Vec::new();
    PacketBuilder::ethernet2(FROM_CLIENT.0, FROM_CLIENT.1)
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .udp(53002, 53)
        .write(&mut whole, b"small")
        .unwrap();
    assert_eq!(h.send_all(0, &[whole]).len(), 1);
    let sent = h.send_all(0, &udp4_train(FROM_CLIENT, (CLIENT, 53002), (VIP, 53), 2));
    assert_eq!(reassemble(&frames_of(&sent)).dst, (BE1.into(), 5353));
}

#[test]
fn fragments_arriving_before_their_first_are_dropped_the_rest_forwarded() {
    let mut h = harness();
    let train = udp4_train(FROM_CLIENT, (CLIENT, 53003), (VIP, 53), 3);
    // The last, then the first, then the middle.
    assert!(h.send_all(0, &train[2..]).is_empty());
    assert_eq!(h.drops(DropReason::FragmentWithoutFirst), 1);
    assert_eq!(h.send_all(0, &train[..1]).len(), 1);
    assert_eq!(h.send_all(0, &train[1..2]).len(), 1);
    // The entry outlives the last fragment: a duplicate of it still goes.
    assert_eq!(h.send_all(0, &train[2..]).len(), 1);
    assert_eq!(h.drops(DropReason::FragmentWithoutFirst), 1);
}

#[test]
fn a_lone_later_fragment_is_dropped_as_without_first() {
    let mut h = harness();
    let train = udp4_train(FROM_CLIENT, (CLIENT, 53004), (VIP, 53), 4);
    assert!(h.send_all(0, &train[1..2]).is_empty());
    assert_eq!(h.drops(DropReason::FragmentWithoutFirst), 1);
    assert_eq!(h.drops(DropReason::Fragment), 0);
}

#[test]
fn when_the_first_fragment_is_refused_the_rest_is_dropped() {
    let mut h = harness();
    // No listener on port 54.
    let train = udp4_train(FROM_CLIENT, (CLIENT, 53005), (VIP, 54), 5);
    assert!(h.send_all(0, &train).is_empty());
    assert_eq!(h.drops(DropReason::NotAService), 1);
    assert_eq!(h.drops(DropReason::FragmentWithoutFirst), 2);
}

#[test]
fn a_first_fragment_too_short_for_its_udp_header_is_bad_l4_header() {
    let mut h = harness();
    let mut first = udp4_train(FROM_CLIENT, (CLIENT, 53006), (VIP, 53), 6).remove(0);
    // IPv4 total length 20 + 7, header checksum fixed up.
    first.truncate(14 + 27);
    first[16..18].copy_from_slice(&27u16.to_be_bytes());
    first[24..26].copy_from_slice(&[0, 0]);
    let header = Ipv4HeaderSlice::from_slice(&first[14..])
        .unwrap()
        .to_header();
    first[24..26].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
    assert!(h.send_all(0, &[first]).is_empty());
    assert_eq!(h.drops(DropReason::BadL4Header), 1);
}

#[test]
fn a_full_fragment_table_gives_up_its_oldest_datagram() {
    // Four slots: one bucket, so every datagram competes for it.
    let mut h = harness_with(|worker| worker.with_fragment_capacity(4));
    let trains: Vec<Vec<Vec<u8>>> = (0..5)
        .map(|id| udp4_train(FROM_CLIENT, (CLIENT, 53100 + id), (VIP, 53), id))
        .collect();
    for train in &trains {
        assert_eq!(h.send_all(0, &train[..1]).len(), 1);
    }
    assert_eq!(h.stats().fragment_evictions, 1);
    assert!(h.send_all(0, &trains[0][1..]).is_empty(), "the oldest went");
    assert_eq!(h.drops(DropReason::FragmentWithoutFirst), 2);
    for train in &trains[1..] {
        assert_eq!(h.send_all(0, &train[1..]).len(), 2);
    }
}

#[test]
fn the_expiry_pass_forgets_a_datagram_whose_time_is_up() {
    let mut h = harness();
    let train = udp4_train(FROM_CLIENT, (CLIENT, 53007), (VIP, 53), 8);
    assert_eq!(h.send_all(0, &train[..1]).len(), 1);
    // Far past the worker's clock: every entry made so far has expired.
    h.worker.expire(u64::MAX / 2);
    assert!(h.send_all(0, &train[1..]).is_empty());
    assert_eq!(h.drops(DropReason::FragmentWithoutFirst), 2);
}

#[test]
fn an_ipv6_fragmented_datagram_reaches_the_backend_whole_through_a_worker() {
    let mut h = harness();
    let train = udp6_train((CLIENT6, 53000), (VIP6, 53), 0x0bad_cafe);
    assert_eq!(train.len(), 3, "first, middle, last");
    let sent = h.send_all(0, &train);
    assert_eq!(sent.len(), 3, "every fragment forwarded");
    for (port, frame) in &sent {
        assert_eq!(*port, 1, "out of the backend arm");
        assert_eq!(frame[0..6], BE1_MAC);
    }
    assert_eq!(
        reassemble(&frames_of(&sent)),
        Reassembled {
            src: (CLIENT6.into(), 53000),
            dst: (BE1_6.into(), 5353),
            payload: payload(),
        }
    );
    let stats = h.stats();
    assert_eq!((stats.first_fragments, stats.later_fragments), (1, 2));
    assert_eq!(
        stats.listeners[1].packets, 3,
        "counted on the IPv6 listener"
    );
}

/// IPv6 through the packet functions the worker uses alone: the train is
/// rewritten here as the worker would with its flow's rewrite.
#[test]
fn an_ipv6_fragmented_datagram_rewritten_reassembles_with_a_valid_checksum() {
    let client: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    let vip: Ipv6Addr = "2001:db8:100::10".parse().unwrap();
    let backend: Ipv6Addr = "2001:db8:2::21".parse().unwrap();
    let train = udp6_train((client, 53000), (vip, 53), 0xdead_beef);
    assert_eq!(train.len(), 3, "first, middle, last");
    let rewrite = Rewrite {
        eth_src: LB_BACKEND_SIDE_MAC,
        eth_dst: BE1_MAC,
        ip_src: client.into(),
        ip_dst: backend.into(),
        src_port: 53000,
        dst_port: 5353,
    };
    let mut keys = Vec::new();
    let out: Vec<Vec<u8>> = train
        .into_iter()
        .map(|mut frame| {
            let l3 = parse_l3(&frame).unwrap();
            let fragment = l3.fragment.unwrap();
            keys.push(FragmentKey::of(&l3, &fragment));
            if fragment.is_first() {
                let parsed = parse_first_fragment(&frame, &l3).unwrap();
                assert_eq!(parsed.key.dst_port, 53);
                assert_eq!(
                    apply(&mut frame, &parsed, &rewrite),
                    L4Checksum::Incremental
                );
            } else {
                assert!(rewrite_later_fragment(&mut frame, &l3, &rewrite));
            }
            frame
        })
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one datagram's key: {keys:?}"
    );
    let frames: Vec<&[u8]> = out.iter().map(Vec::as_slice).collect();
    assert_eq!(
        reassemble(&frames),
        Reassembled {
            src: (client.into(), 53000),
            dst: (backend.into(), 5353),
            payload: payload(),
        }
    );
}
