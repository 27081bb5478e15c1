//! The fast path replays an encapsulating decision (`ipip`, `gue`) byte for
//! byte: for the same frame and the same flow entry, the XDP program (run
//! through BPF_PROG_TEST_RUN with the entry the worker would install) and
//! the worker's own encapsulation emit identical frames, over both
//! families, tagged or not, padded or not, with any TOS. A packet too big
//! for the egress once wrapped goes to the workers untouched, so they can
//! answer it.
//!
//! Needs root (loading BPF); the program is loaded, never attached.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use switchyard_dataplane::fast_path::{action, action6, cache_key, cache_key6, Egress};
use switchyard_dataplane::flow::{Cached, Direction, FlowEntry};
use switchyard_dataplane::neighbor::{PackedVlan, VlanTag};
use switchyard_dataplane::packet::encap::{self, gue_source_port, ipip_source};
use switchyard_dataplane::packet::{self, Rewrite, Tunnel};
use switchyard_xdp::{SteerCounter, Steering, XdpAction};

const LOOPBACK: u32 = 1;
const GENERATION: u64 = 7;
const L2_EPOCH: u64 = 3;
const STATS_SLOT: u16 = 1;
const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x2b];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xbe];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x21);

fn steering() -> Steering {
    let steering = Steering::load().expect("loading the XDP program (needs root)");
    let fast = steering.fast_path();
    fast.publish_epochs(&[u32::from(STATS_SLOT)], &[GENERATION as u32])
        .unwrap();
    fast.publish_l2_epoch(L2_EPOCH).unwrap();
    fast.set_enabled(true).unwrap();
    steering
}

/// The entry a worker makes for a flow from `client` to `vip` wrapped as
/// `tunnel` toward `backend`.
fn entry(
    tunnel: Tunnel,
    vip: IpAddr,
    backend: IpAddr,
    vlan: Option<VlanTag>,
    mtu: u16,
) -> FlowEntry {
    let (src, src_port, dst_port) = match tunnel {
        Tunnel::Gue => (vip, gue_source_port(0xbeef), 6080),
        _ => (ipip_source(vip.is_ipv6(), 0x1234_5678), 0, 0),
    };
    FlowEntry {
        rewrite: Rewrite {
            eth_src: LB_MAC,
            eth_dst: BACKEND_MAC,
            ip_src: src,
            ip_dst: backend,
            src_port,
            dst_port,
        },
        egress_port: 0,
        egress_vlan: PackedVlan::from(vlan),
        egress_mtu: mtu,
        direction: Direction::ToBackend,
        tunnel,
        listener: 0,
        backend: 0,
        generation: GENERATION,
        l2_version: 1,
        created_ns: 0,
        last_seen_ns: 0,
        packets: 2,
        bytes: 0,
        closing: false,
        syn_only: false,
        cached: Cached::Current,
        cached_at: 0,
        proxy: None,
    }
}

/// Installs `entry` for `frame`'s flow and runs the program on it.
fn run(steering: &Steering, frame: &[u8], entry: &FlowEntry) -> (XdpAction, Vec<u8>) {
    let key = packet::parse(frame).expect("test frames parse").key;
    let egress = Egress {
        slot: 0,
        ifindex: LOOPBACK,
    };
    let fast = steering.fast_path();
    let (written, error) = if key.is_ipv6() {
        let installed =
            action6(&key, entry, egress, L2_EPOCH, STATS_SLOT, GENERATION).expect("IPv6 entry");
        fast.install6(&[cache_key6(&key).unwrap()], &[installed])
    } else {
        let installed =
            action(&key, entry, egress, L2_EPOCH, STATS_SLOT, GENERATION).expect("IPv4 entry");
        fast.install(&[cache_key(&key).unwrap()], &[installed])
    };
    assert_eq!((written, error.map(|e| e.to_string())), (1, None));
    steering.test_run_output(frame, None).expect("test run")
}

/// What a worker sends for `frame` on `entry`: the MACs rewritten in
/// place (a partial checksum completed), then the head replaced.
fn worker_output(frame: &[u8], entry: &FlowEntry) -> Vec<u8> {
    let mut out = frame.to_vec();
    let parsed = packet::parse(&out).unwrap();
    let key = parsed.key;
    let unchanged = Rewrite {
        ip_src: key.src,
        ip_dst: key.dst,
        src_port: key.src_port,
        dst_port: key.dst_port,
        ..entry.rewrite
    };
    let _ = packet::apply(&mut out, &parsed, &unchanged);
    let head = encap::head(
        &out,
        parsed.l3_offset,
        parsed.ip_total_len,
        entry.tunnel,
        &entry.rewrite,
        entry.egress_vlan.get(),
    )
    .expect("a head for a parsed frame");
    let len = out.len();
    out.resize(len + head.growth(), 0);
    let len = packet::replace_head(&mut out, len, &head).expect("room");
    out.truncate(len);
    out
}

fn frame(
    src: IpAddr,
    dst: IpAddr,
    tcp: bool,
    tag: Option<u16>,
    tos: u8,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, [2, 0, 0, 0, 0, 0x1b]);
    let mut out = Vec::new();
    macro_rules! finish {
        ($ip:expr) => {{
            if tcp {
                $ip.tcp(40000, 80, 1000, 65535)
                    .ack(1)
                    .write(&mut out, payload)
                    .unwrap()
            } else {
                $ip.udp(40000, 80).write(&mut out, payload).unwrap()
            }
        }};
    }
    match (src, dst, tag) {
        (IpAddr::V4(s), IpAddr::V4(d), None) => finish!(eth.ipv4(s.octets(), d.octets(), 64)),
        (IpAddr::V4(s), IpAddr::V4(d), Some(t)) => finish!(eth
            .single_vlan(t.try_into().unwrap())
            .ipv4(s.octets(), d.octets(), 64)),
        (IpAddr::V6(s), IpAddr::V6(d), None) => finish!(eth.ipv6(s.octets(), d.octets(), 64)),
        (IpAddr::V6(s), IpAddr::V6(d), Some(t)) => finish!(eth
            .single_vlan(t.try_into().unwrap())
            .ipv6(s.octets(), d.octets(), 64)),
        _ => unreachable!("one family"),
    }
    if tos != 0 {
        let l3 = if tag.is_some() { 18 } else { 14 };
        if dst.is_ipv4() {
            // TOS, and the header checksum that covers it.
            let old = u16::from_be_bytes([out[l3], out[l3 + 1]]);
            out[l3 + 1] = tos;
            let new = u16::from_be_bytes([out[l3], out[l3 + 1]]);
            let check = u16::from_be_bytes([out[l3 + 10], out[l3 + 11]]);
            let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
            let sum = (sum & 0xffff) + (sum >> 16);
            let sum = (sum & 0xffff) + (sum >> 16);
            out[l3 + 10..l3 + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        } else {
            out[l3] = 0x60 | (tos >> 4);
            out[l3 + 1] = (tos << 4) | (out[l3 + 1] & 0x0f);
        }
    }
    out
}

#[test]
fn both_paths_wrap_a_table_of_frames_alike() {
    let steering = steering();
    let q20 = VlanTag {
        tpid: 0x8100,
        id: 20,
    };
    let mut cases = Vec::new();
    for tunnel in [Tunnel::Ipip, Tunnel::Gue] {
        for (client, vip, backend) in [
            (
                IpAddr::from(CLIENT),
                IpAddr::from(VIP),
                IpAddr::from(BACKEND),
            ),
            (CLIENT6.into(), VIP6.into(), BACKEND6.into()),
        ] {
            let plain = entry(tunnel, vip, backend, None, 1500);
            let tagged = entry(tunnel, vip, backend, Some(q20), 1500);
            cases.push((
                "TCP data",
                frame(client, vip, true, None, 0, b"GET /"),
                plain,
            ));
            cases.push(("UDP", frame(client, vip, false, None, 0, b"query"), plain));
            cases.push((
                "TOS 0xb8",
                frame(client, vip, false, None, 0xb8, b"ef"),
                plain,
            ));
            cases.push((
                "tagged",
                frame(client, vip, false, Some(20), 0, b"q"),
                tagged,
            ));
            let mut padded = frame(client, vip, false, None, 0, b"");
            padded.resize(padded.len().max(60) + 4, 0);
            cases.push(("Ethernet padding", padded, plain));
            let unknown_mtu = entry(tunnel, vip, backend, None, 0);
            cases.push((
                "MTU unknown",
                frame(client, vip, true, None, 0, b"x"),
                unknown_mtu,
            ));
        }
    }
    for (description, input, entry) in &cases {
        let what = format!(
            "{description}, {:?}, {}",
            entry.tunnel, entry.rewrite.ip_dst
        );
        let (verdict, out) = run(&steering, input, entry);
        assert_eq!(verdict, XdpAction::Tx, "{what}");
        assert_eq!(out, worker_output(input, entry), "{what}");
    }
    let counters = steering.counters().unwrap();
    assert_eq!(counters.get(SteerCounter::FastTx), cases.len() as u64);
}

#[test]
fn a_packet_too_big_once_wrapped_goes_to_the_workers_untouched() {
    let steering = steering();
    for tunnel in [Tunnel::Ipip, Tunnel::Gue] {
        for (client, vip, backend) in [
            (
                IpAddr::from(CLIENT),
                IpAddr::from(VIP),
                IpAddr::from(BACKEND),
            ),
            (CLIENT6.into(), VIP6.into(), BACKEND6.into()),
        ] {
            let flow = entry(tunnel, vip, backend, None, 1500);
            let fits = usize::from(encap::inner_mtu(1500, tunnel, vip.is_ipv6()));
            let headers = if vip.is_ipv6() { 40 + 8 } else { 20 + 8 };
            let largest = frame(client, vip, false, None, 0, &vec![1; fits - headers]);
            let (verdict, out) = run(&steering, &largest, &flow);
            assert_eq!(verdict, XdpAction::Tx);
            assert_eq!(out.len(), 14 + 1500, "wrapped to the link's MTU");
            let too_big = frame(client, vip, false, None, 0, &vec![1; fits - headers + 1]);
            let (verdict, out) = run(&steering, &too_big, &flow);
            assert_ne!(verdict, XdpAction::Tx, "{tunnel:?} {vip}");
            assert_eq!(out, too_big, "untouched, for a worker to answer");
        }
    }
}

#[test]
fn an_encapsulated_flow_counts_the_bytes_its_client_sent() {
    let steering = steering();
    let input = frame(CLIENT.into(), VIP.into(), false, None, 0, b"count me");
    let flow = entry(Tunnel::Gue, VIP.into(), BACKEND.into(), None, 1500);
    run(&steering, &input, &flow);
    steering.test_run_output(&input, None).unwrap();
    let key = cache_key(&packet::parse(&input).unwrap().key).unwrap();
    let cached = steering
        .fast_path()
        .lookup(&key)
        .unwrap()
        .expect("installed");
    assert_eq!(
        (cached.packets(), cached.bytes()),
        (2, 2 * input.len() as u64)
    );
    assert_eq!(
        cached.encap().map(|e| e.tunnel),
        Some(switchyard_xdp::TUNNEL_GUE)
    );
}
