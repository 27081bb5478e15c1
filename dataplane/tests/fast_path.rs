//! The fast path replays a worker's rewrite byte for byte: for the same
//! frame and the same decision, the XDP program (run through
//! BPF_PROG_TEST_RUN with the entry the worker would install) and
//! `packet::apply` emit identical bytes. Also: when an entry must not
//! apply (older generation or L2 epoch, TCP SYN/FIN/RST, a frame the
//! workers would refuse, a checksum the sender left partial, the fast path
//! off), the frame goes on untouched.
//!
//! Needs root (loading BPF); the program is loaded, never attached, so the
//! test touches no interface.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use proptest::prelude::*;
use switchyard_dataplane::fast_path::{action, cache_key, monotonic_ns, Egress};
use switchyard_dataplane::flow::{Cached, Direction, FlowEntry};
use switchyard_dataplane::packet::{self, Rewrite};
use switchyard_xdp::{FlowAction, SteerCounter, Steering, XdpAction};

/// BPF_PROG_TEST_RUN without a context runs the frame as received on the
/// loopback device, whose ifindex is 1 in every namespace.
const LOOPBACK: u32 = 1;
const GENERATION: u64 = 7;
const L2_EPOCH: u64 = 3;
/// The stats slot of every entry here; its listener's epoch is
/// `GENERATION`.
const STATS_SLOT: u16 = 1;

fn steering() -> Steering {
    let steering = Steering::load().expect("loading the XDP program (needs root)");
    let fast = steering.fast_path();
    fast.publish_epochs(&[u32::from(STATS_SLOT)], &[GENERATION as u32])
        .unwrap();
    fast.publish_l2_epoch(L2_EPOCH).unwrap();
    fast.set_enabled(true).unwrap();
    steering
}

fn entry(rewrite: Rewrite) -> FlowEntry {
    FlowEntry {
        rewrite,
        egress_port: 0,
        egress_vlan: switchyard_dataplane::neighbor::PackedVlan::NONE,
        egress_mtu: 0,
        direction: Direction::ToBackend,
        tunnel: switchyard_dataplane::packet::Tunnel::None,
        listener: 0,
        backend: 0,
        generation: GENERATION,
        l2_version: 1,
        created_ns: 0,
        last_seen_ns: 0,
        packets: 2,
        bytes: 0,
        syn_only: false,
        closing: false,
        cached: Cached::Current,
        cached_at: 0,
        proxy: None,
    }
}

/// Installs the worker's entry for `frame` and runs the program on it.
fn run(
    steering: &Steering,
    frame: &[u8],
    entry: &FlowEntry,
    egress_ifindex: u32,
) -> (XdpAction, Vec<u8>) {
    let key = packet::parse(frame).expect("test frames parse").key;
    run_keyed(steering, &key, frame, entry, egress_ifindex)
}

/// `run` with the entry installed under `key`, for frames the workers
/// would not parse.
fn run_keyed(
    steering: &Steering,
    key: &packet::FlowKey,
    frame: &[u8],
    entry: &FlowEntry,
    egress_ifindex: u32,
) -> (XdpAction, Vec<u8>) {
    let key = *key;
    let installed: FlowAction = action(
        &key,
        entry,
        Egress {
            slot: 0,
            ifindex: egress_ifindex,
        },
        L2_EPOCH,
        STATS_SLOT,
        entry.generation,
    )
    .expect("an IPv4 flow has a cache entry");
    let (written, error) = steering
        .fast_path()
        .install(&[cache_key(&key).unwrap()], &[installed]);
    assert_eq!((written, error.map(|e| e.to_string())), (1, None));
    steering.test_run_output(frame, None).expect("test run")
}

/// What a worker emits for `frame` under `rewrite`.
fn worker_output(frame: &[u8], rewrite: &Rewrite) -> Vec<u8> {
    let mut out = frame.to_vec();
    let parsed = packet::parse(&out).unwrap();
    let _ = packet::apply(&mut out, &parsed, rewrite);
    out
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);

fn to_backend() -> Rewrite {
    Rewrite {
        eth_src: [0x02, 0, 0, 0, 0, 0x1b],
        eth_dst: [0x02, 0, 0, 0, 0, 0xbe],
        ip_src: CLIENT.into(),
        ip_dst: BACKEND.into(),
        src_port: 40000,
        dst_port: 8080,
    }
}

fn from_backend() -> Rewrite {
    Rewrite {
        eth_src: [0x02, 0, 0, 0, 0, 0x1b],
        eth_dst: [0x02, 0, 0, 0, 0, 0x0c],
        ip_src: VIP.into(),
        ip_dst: CLIENT.into(),
        src_port: 80,
        dst_port: 40000,
    }
}

/// `fullnat`'s SNAT binding of the client's flow in these cases.
const SNAT: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 2, 1), 20000);

/// `fullnat`, client to backend: the source becomes the SNAT binding.
fn full_nat_to_backend() -> Rewrite {
    Rewrite {
        eth_src: [0x02, 0, 0, 0, 0, 0x2b],
        ip_src: SNAT.0.into(),
        src_port: SNAT.1,
        ..to_backend()
    }
}

/// `dsr`: only the MACs change.
fn dsr_to_backend() -> Rewrite {
    Rewrite {
        eth_src: [0x02, 0, 0, 0, 0, 0x2b],
        ip_src: CLIENT.into(),
        ip_dst: VIP.into(),
        src_port: 40000,
        dst_port: 80,
        ..to_backend()
    }
}

fn tcp_frame(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
    ack_only: bool,
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x0c], [2, 0, 0, 0, 0, 0x1b])
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 64240)
        .ack(5000);
    let builder = if ack_only { builder } else { builder.psh() };
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn udp_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x0c], [2, 0, 0, 0, 0, 0x1b])
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut frame, payload)
        .unwrap();
    frame
}

#[test]
fn both_paths_emit_the_same_bytes_for_a_table_of_frames() {
    let steering = steering();
    let mut udp_without_checksum = udp_frame((CLIENT, 40000), (VIP, 80), b"no checksum");
    udp_without_checksum[40..42].copy_from_slice(&[0, 0]);
    let mut vlan = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x0c], [2, 0, 0, 0, 0, 0x1b])
        .single_vlan(100.try_into().unwrap())
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .udp(40000, 80)
        .write(&mut vlan, b"tagged")
        .unwrap();
    let cases: Vec<(&str, Vec<u8>, Rewrite)> = vec![
        (
            "TCP data to the VIP, DNAT to the backend",
            tcp_frame((CLIENT, 40000), (VIP, 80), b"GET /", false),
            to_backend(),
        ),
        (
            "TCP ACK from the backend, SNAT to the VIP",
            tcp_frame((BACKEND, 8080), (CLIENT, 40000), b"", true),
            from_backend(),
        ),
        (
            "UDP to the VIP",
            udp_frame((CLIENT, 40000), (VIP, 80), b"query"),
            to_backend(),
        ),
        (
            "UDP without a checksum stays without",
            udp_without_checksum,
            to_backend(),
        ),
        ("UDP behind an 802.1Q tag", vlan, to_backend()),
        (
            "fullnat: TCP data to the VIP, from the SNAT binding to the backend",
            tcp_frame((CLIENT, 40000), (VIP, 80), b"GET /", false),
            full_nat_to_backend(),
        ),
        (
            "fullnat: the backend's TCP answer to the SNAT binding, from the VIP",
            tcp_frame((BACKEND, 8080), SNAT, b"200 OK", false),
            from_backend(),
        ),
        (
            "fullnat: UDP to the VIP, from the SNAT binding",
            udp_frame((CLIENT, 40000), (VIP, 80), b"query"),
            full_nat_to_backend(),
        ),
        (
            "fullnat: the backend's UDP answer to the SNAT binding",
            udp_frame((BACKEND, 8080), SNAT, b"answer"),
            from_backend(),
        ),
        (
            "dsr: TCP data to the VIP, MACs only",
            tcp_frame((CLIENT, 40000), (VIP, 80), b"GET /", false),
            dsr_to_backend(),
        ),
        (
            "dsr: UDP to the VIP, MACs only",
            udp_frame((CLIENT, 40000), (VIP, 80), b"query"),
            dsr_to_backend(),
        ),
    ];
    let count = cases.len() as u64;
    for (description, frame, rewrite) in cases {
        let (verdict, out) = run(&steering, &frame, &entry(rewrite), LOOPBACK);
        assert_eq!(verdict, XdpAction::Tx, "{description}");
        assert_eq!(out, worker_output(&frame, &rewrite), "{description}");
    }
    let counters = steering.counters().unwrap();
    assert_eq!(counters.get(SteerCounter::FastTx), count);
}

#[test]
fn another_egress_port_is_a_redirect() {
    let steering = steering();
    let frame = udp_frame((CLIENT, 40000), (VIP, 80), b"x");
    let (verdict, out) = run(&steering, &frame, &entry(to_backend()), LOOPBACK + 1000);
    // tx_ports has no interface in slot 0 here: the redirect aborts, which
    // only a test without attached interfaces can see.
    assert!(
        matches!(verdict, XdpAction::Redirect | XdpAction::Aborted),
        "{verdict:?}"
    );
    assert_eq!(out, worker_output(&frame, &to_backend()));
    assert_eq!(
        steering.counters().unwrap().get(SteerCounter::FastRedirect),
        1
    );
}

#[test]
fn stale_entries_control_segments_and_refused_frames_take_the_slow_path() {
    let steering = steering();
    let data = tcp_frame((CLIENT, 40000), (VIP, 80), b"GET /", false);

    // Decided under its listener's previous config.
    let older = FlowEntry {
        generation: GENERATION - 1,
        ..entry(to_backend())
    };
    let (verdict, out) = run(&steering, &data, &older, LOOPBACK);
    assert_eq!(
        (verdict, &out),
        (XdpAction::Pass, &data),
        "older listener epoch"
    );
    assert_eq!(steering.counters().unwrap().get(SteerCounter::FastStale), 1);

    let mut fin = data.clone();
    fin[47] |= 0x01;
    let (verdict, out) = run(&steering, &fin, &entry(to_backend()), LOOPBACK);
    assert_eq!((verdict, &out), (XdpAction::Pass, &fin), "FIN");
    assert_eq!(
        steering
            .counters()
            .unwrap()
            .get(SteerCounter::FastTcpControl),
        1
    );

    // More-fragments set: the workers drop first fragments, so must this.
    let whole = udp_frame((CLIENT, 40000), (VIP, 80), b"frag");
    let key = packet::parse(&whole).unwrap().key;
    let mut fragment = whole.clone();
    fragment[20] |= 0x20;
    let (verdict, out) = run_keyed(&steering, &key, &fragment, &entry(to_backend()), LOOPBACK);
    assert_eq!(
        (verdict, &out),
        (XdpAction::Pass, &fragment),
        "first fragment"
    );

    steering.fast_path().set_enabled(false).unwrap();
    let (verdict, out) = run(&steering, &data, &entry(to_backend()), LOOPBACK);
    assert_eq!((verdict, &out), (XdpAction::Pass, &data), "fast path off");
}

#[test]
fn an_entry_counts_its_packets_and_the_backends_stats_slot() {
    let steering = steering();
    let frame = udp_frame((CLIENT, 40000), (VIP, 80), b"count me");
    run(&steering, &frame, &entry(to_backend()), LOOPBACK);
    for _ in 0..2 {
        steering.test_run_output(&frame, None).unwrap();
    }
    let key = cache_key(&packet::parse(&frame).unwrap().key).unwrap();
    let cached = steering
        .fast_path()
        .lookup(&key)
        .unwrap()
        .expect("installed");
    assert_eq!(
        (cached.packets(), cached.bytes()),
        (3, 3 * frame.len() as u64)
    );
    let now_ns = monotonic_ns();
    let seen = cached.last_seen_ns(now_ns).expect("a packet was seen");
    assert!(
        now_ns - seen < 1_000_000_000,
        "seen {} ns ago",
        now_ns - seen
    );
    let slot = steering.fast_path().stats(STATS_SLOT).unwrap();
    assert_eq!((slot.packets, slot.bytes), (3, 3 * frame.len() as u64));
}

/// One loaded program for the property's many cases (a load takes a while).
fn shared_steering() -> &'static std::sync::Mutex<Steering> {
    static STEERING: std::sync::OnceLock<std::sync::Mutex<Steering>> = std::sync::OnceLock::new();
    STEERING.get_or_init(|| std::sync::Mutex::new(steering()))
}

fn arb_rewrite() -> impl Strategy<Value = Rewrite> {
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(eth_src, eth_dst, src, dst, src_port, dst_port)| Rewrite {
            eth_src,
            eth_dst,
            ip_src: Ipv4Addr::from(src).into(),
            ip_dst: Ipv4Addr::from(dst).into(),
            src_port,
            dst_port,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any TCP/UDP frame, any rewrite: the program's bytes are the worker's.
    #[test]
    fn the_fast_path_rewrite_is_the_workers_for_any_frame(
        tcp in any::<bool>(),
        src in any::<u32>(),
        dst in any::<u32>(),
        ports in any::<(u16, u16)>(),
        ttl in any::<u8>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
        checksum_zero in any::<bool>(),
        rewrite in arb_rewrite(),
    ) {
        let steering = shared_steering().lock().unwrap();
        let src = (Ipv4Addr::from(src), ports.0);
        let dst = (Ipv4Addr::from(dst), ports.1);
        let mut frame = Vec::new();
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src.0.octets(), dst.0.octets(), ttl);
        if tcp {
            builder.tcp(src.1, dst.1, 1, 512).ack(9).write(&mut frame, &payload).unwrap();
        } else {
            builder.udp(src.1, dst.1).write(&mut frame, &payload).unwrap();
            if checksum_zero {
                frame[40..42].copy_from_slice(&[0, 0]);
            }
        }
        let (verdict, out) = run(&steering, &frame, &entry(rewrite), LOOPBACK);
        // One complete checksum in 65,535 looks partial: the program leaves
        // that frame to the workers.
        if packet::has_partial_checksum(&frame, &packet::parse(&frame).unwrap()) {
            prop_assert_eq!((verdict, out), (XdpAction::Pass, frame));
        } else {
            prop_assert_eq!(verdict, XdpAction::Tx);
            prop_assert_eq!(out, worker_output(&frame, &rewrite));
        }
    }
}
