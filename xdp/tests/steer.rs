//! The steering program's verdicts, as tables run through BPF_PROG_TEST_RUN:
//! each case is (description, frame, rx queue, expected verdict, the one
//! counter it must bump). Needs root; runs in throwaway network namespaces.

mod common;

use std::{net::Ipv4Addr, os::fd::AsRawFd};

use common::{
    frames::{self, Ipv4},
    NetNs,
};
use switchyard_xdp::{
    AttachMode, RxQueue, ServiceMatch, SteerCounter, SteerCounters, Steering, XdpAction,
};

/// VIP listeners: TCP 80 and UDP 53 on one address.
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// A client somewhere.
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// A backend endpoint behind the VIP: TCP 8080.
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// One of the node's own addresses.
const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

const LB_IF: &str = "lb0";
/// The queue with a registered socket; queue 1 has none.
const SOCKET_QUEUE: u32 = 0;
const EMPTY_QUEUE: u32 = 1;

struct Case {
    description: &'static str,
    frame: Vec<u8>,
    queue: u32,
    verdict: XdpAction,
    counter: SteerCounter,
}

fn case(
    description: &'static str,
    frame: Vec<u8>,
    verdict: XdpAction,
    counter: SteerCounter,
) -> Case {
    Case {
        description,
        frame,
        queue: SOCKET_QUEUE,
        verdict,
        counter,
    }
}

fn steer(description: &'static str, frame: Vec<u8>, counter: SteerCounter) -> Case {
    case(description, frame, XdpAction::Redirect, counter)
}

fn pass(description: &'static str, frame: Vec<u8>, counter: SteerCounter) -> Case {
    case(description, frame, XdpAction::Pass, counter)
}

fn cases() -> Vec<Case> {
    use SteerCounter::*;

    let vip_tcp = frames::tcp_frame(CLIENT, 40000, VIP, 80);
    let ipv4_tcp =
        |ip: Ipv4| frames::ethernet(&[], frames::ETH_P_IP, &ip.emit(&frames::tcp(40000, 80)));
    let vip_ip = |protocol| Ipv4::new(CLIENT, VIP, protocol);

    vec![
        steer("TCP to a VIP listener", vip_tcp.clone(), SteerVip),
        steer(
            "UDP to a VIP listener",
            frames::udp_frame(CLIENT, 40000, VIP, 53),
            SteerVip,
        ),
        pass(
            "TCP to the VIP on a port it does not listen on",
            frames::tcp_frame(CLIENT, 40000, VIP, 443),
            PassNotService,
        ),
        pass(
            "UDP to the VIP's TCP port",
            frames::udp_frame(CLIENT, 40000, VIP, 80),
            PassNotService,
        ),
        pass(
            "ICMP to the VIP",
            frames::ethernet(
                &[],
                frames::ETH_P_IP,
                &vip_ip(frames::IPPROTO_ICMP).emit(&[8, 0, 0, 0, 0, 1, 0, 1]),
            ),
            PassNotService,
        ),
        pass(
            "ARP for the VIP",
            frames::arp_request(CLIENT, VIP),
            PassNotIpv4,
        ),
        pass("IPv6 TCP", frames::ipv6_tcp_frame(40000, 80), PassNotIpv4),
        steer(
            "reply from a backend endpoint to a client",
            frames::tcp_frame(BACKEND, 8080, CLIENT, 40000),
            SteerReply,
        ),
        pass(
            "reply from a backend endpoint to the node itself",
            frames::tcp_frame(BACKEND, 8080, NODE, 40000),
            PassLocal,
        ),
        pass(
            "traffic from the backend's address but another port",
            frames::tcp_frame(BACKEND, 22, CLIENT, 40000),
            PassNotService,
        ),
        steer(
            "802.1Q-tagged TCP to a VIP",
            frames::ethernet(
                &[(frames::ETH_P_8021Q, 100)],
                frames::ETH_P_IP,
                &vip_ip(frames::IPPROTO_TCP).emit(&frames::tcp(40000, 80)),
            ),
            SteerVip,
        ),
        steer(
            "802.1ad-tagged UDP to a VIP",
            frames::ethernet(
                &[(frames::ETH_P_8021AD, 7)],
                frames::ETH_P_IP,
                &vip_ip(frames::IPPROTO_UDP).emit(&frames::udp(40000, 53, b"q")),
            ),
            SteerVip,
        ),
        pass(
            "double-tagged (QinQ) TCP to a VIP: only one tag is parsed",
            frames::ethernet(
                &[(frames::ETH_P_8021AD, 7), (frames::ETH_P_8021Q, 100)],
                frames::ETH_P_IP,
                &vip_ip(frames::IPPROTO_TCP).emit(&frames::tcp(40000, 80)),
            ),
            PassNotIpv4,
        ),
        steer(
            "IPv4 header with options: ports found after IHL",
            ipv4_tcp(Ipv4 {
                options: vec![1, 1, 1, 0, 0x94, 4, 0, 0],
                ..vip_ip(frames::IPPROTO_TCP)
            }),
            SteerVip,
        ),
        pass(
            "non-first fragment to a VIP",
            frames::ethernet(
                &[],
                frames::ETH_P_IP,
                &Ipv4 {
                    frag: 185,
                    ..vip_ip(frames::IPPROTO_UDP)
                }
                .emit(&[0; 16]),
            ),
            PassFragment,
        ),
        pass(
            "last fragment (offset set, MF clear) to a VIP",
            frames::ethernet(
                &[],
                frames::ETH_P_IP,
                &Ipv4 {
                    frag: 370,
                    ..vip_ip(frames::IPPROTO_UDP)
                }
                .emit(&[0; 16]),
            ),
            PassFragment,
        ),
        steer(
            "first fragment carries the ports: steered",
            frames::ethernet(
                &[],
                frames::ETH_P_IP,
                &Ipv4 {
                    frag: frames::MORE_FRAGMENTS,
                    ..vip_ip(frames::IPPROTO_UDP)
                }
                .emit(&frames::udp(40000, 53, &[0; 32])),
            ),
            SteerVip,
        ),
        pass(
            "IP version 6 under EtherType IPv4",
            ipv4_tcp(Ipv4 {
                version: 6,
                ..vip_ip(frames::IPPROTO_TCP)
            }),
            ParseError,
        ),
        pass(
            "IHL below 5",
            {
                let mut frame = vip_tcp.clone();
                frame[14] = 0x44;
                frame
            },
            ParseError,
        ),
        Case {
            description: "TCP to a VIP on a queue without a socket",
            frame: vip_tcp,
            queue: EMPTY_QUEUE,
            verdict: XdpAction::Pass,
            counter: NoSocket,
        },
    ]
}

/// A namespace with `lb0` (two rx queues) attached natively, the services
/// above configured and a socket registered on queue 0; `f` runs inside it.
fn with_configured_steering<T: Send>(f: impl FnOnce(&mut Steering, u32) -> T + Send) -> T {
    let ns = NetNs::new();
    ns.add_veth(LB_IF, "peer0", 2);
    ns.run(|| {
        let mut steering = Steering::load().expect("loading the steering program");
        steering
            .attach(LB_IF, AttachMode::Native)
            .expect("attaching to lb0");
        let ifindex = steering.attached().next().unwrap().ifindex;
        steering
            .set_services(
                &[ServiceMatch::tcp(VIP, 80, 1), ServiceMatch::udp(VIP, 53, 2)],
                &[ServiceMatch::tcp(BACKEND, 8080, 1)],
            )
            .expect("setting services");
        steering
            .set_local_addrs(&[NODE, Ipv4Addr::new(198, 51, 100, 2)])
            .expect("setting local addresses");
        let socket = common::xdp_socket();
        steering
            .register_socket(ifindex, SOCKET_QUEUE, socket.as_raw_fd())
            .expect("registering an AF_XDP socket");
        f(&mut steering, ifindex)
    })
}

/// Runs `frame` and returns the verdict and the counters' change.
fn run_frame(
    steering: &Steering,
    frame: &[u8],
    rx: Option<RxQueue>,
) -> (XdpAction, Vec<(SteerCounter, u64)>) {
    let before = steering.counters().expect("reading counters");
    let verdict = steering.test_run(frame, rx).expect("BPF_PROG_TEST_RUN");
    let after = steering.counters().expect("reading counters");
    (verdict, bumped(&before, &after))
}

fn bumped(before: &SteerCounters, after: &SteerCounters) -> Vec<(SteerCounter, u64)> {
    after
        .iter()
        .zip(before.iter())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((counter, a), (_, b))| (counter, a - b))
        .collect()
}

#[test]
fn verdicts_and_counters_follow_the_table() {
    with_configured_steering(|steering, ifindex| {
        for case in cases() {
            let rx = RxQueue {
                ifindex,
                queue: case.queue,
            };
            let (verdict, bumped) = run_frame(steering, &case.frame, Some(rx));
            assert_eq!(verdict, case.verdict, "{}: verdict", case.description);
            assert_eq!(
                bumped,
                vec![(case.counter, 1)],
                "{}: counters bumped",
                case.description
            );
        }
    });
}

#[test]
fn truncated_frames_of_every_length_pass() {
    with_configured_steering(|steering, ifindex| {
        let plain = frames::tcp_frame(CLIENT, 40000, VIP, 80);
        let tagged = frames::ethernet(
            &[(frames::ETH_P_8021Q, 100)],
            frames::ETH_P_IP,
            &Ipv4::new(CLIENT, VIP, frames::IPPROTO_TCP).emit(&frames::tcp(40000, 80)),
        );
        let rx = Some(RxQueue {
            ifindex,
            queue: SOCKET_QUEUE,
        });
        for full in [plain, tagged] {
            // The whole frame steers; every proper prefix must not.
            assert_eq!(steering.test_run(&full, rx).unwrap(), XdpAction::Redirect);
            for len in 0..full.len() {
                let prefix = &full[..len];
                if len < 14 {
                    // The kernel refuses frames shorter than an Ethernet
                    // header before the program runs (bpf_test_init).
                    let err = steering.test_run(prefix, rx).unwrap_err();
                    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "len {len}: {err}");
                    continue;
                }
                let (verdict, bumped) = run_frame(steering, prefix, rx);
                assert_eq!(verdict, XdpAction::Pass, "len {len}");
                assert_eq!(bumped, vec![(SteerCounter::ParseError, 1)], "len {len}");
            }
        }
    });
}

#[test]
fn frame_on_an_interface_without_a_slot_passes_as_no_socket() {
    with_configured_steering(|steering, _| {
        // Without a receive context the kernel uses loopback, queue 0: the
        // program is not attached there.
        let frame = frames::tcp_frame(CLIENT, 40000, VIP, 80);
        let (verdict, bumped) = run_frame(steering, &frame, None);
        assert_eq!(verdict, XdpAction::Pass);
        assert_eq!(bumped, vec![(SteerCounter::NoSocket, 1)]);
    });
}

#[test]
fn set_services_replaces_the_previous_set() {
    with_configured_steering(|steering, ifindex| {
        let rx = Some(RxQueue {
            ifindex,
            queue: SOCKET_QUEUE,
        });
        let old = frames::tcp_frame(CLIENT, 40000, VIP, 80);
        let new_vip = Ipv4Addr::new(192, 0, 2, 11);
        let new = frames::tcp_frame(CLIENT, 40000, new_vip, 443);
        steering
            .set_services(&[ServiceMatch::tcp(new_vip, 443, 7)], &[])
            .unwrap();
        assert_eq!(steering.test_run(&new, rx).unwrap(), XdpAction::Redirect);
        assert_eq!(steering.test_run(&old, rx).unwrap(), XdpAction::Pass);
        let reply = frames::tcp_frame(BACKEND, 8080, CLIENT, 40000);
        assert_eq!(steering.test_run(&reply, rx).unwrap(), XdpAction::Pass);
    });
}

#[test]
fn unregistered_socket_makes_its_queue_pass() {
    with_configured_steering(|steering, ifindex| {
        let rx = Some(RxQueue {
            ifindex,
            queue: SOCKET_QUEUE,
        });
        let frame = frames::tcp_frame(CLIENT, 40000, VIP, 80);
        steering.unregister_socket(ifindex, SOCKET_QUEUE).unwrap();
        let (verdict, bumped) = run_frame(steering, &frame, rx);
        assert_eq!(verdict, XdpAction::Pass);
        assert_eq!(bumped, vec![(SteerCounter::NoSocket, 1)]);
    });
}
