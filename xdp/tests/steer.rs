//! The steering program's rules that the packet fixtures (run in
//! `tests/fixtures.rs`) do not show, because they concern the program's own
//! configuration rather than a frame: its local addresses, its sockets per
//! queue, replacing its services, and frames cut at every length. Runs in
//! the fixtures' scenario through BPF_PROG_TEST_RUN. Needs root; runs in
//! throwaway network namespaces.

mod common;

use std::net::Ipv4Addr;

use common::{frames, run_frame, with_scenario_steering, EMPTY_QUEUE, SOCKET_QUEUE};
use switchyard_wire::{
    ethernet,
    fixtures::{
        scenario::{
            BACKEND, BACKEND_MAC, BACKEND_TCP_PORT, BACKEND_UDP_PORT, CLIENT, LB_BACKEND_ARM,
            LB_BACKEND_ARM_MAC, LB_CLIENT_ARM, TCP_PORT, UDP_PORT, VIP,
        },
        TCP_SYN, TCP_SYN_DOT1Q,
    },
    ipv4, tcp, vlan,
};
use switchyard_xdp::{
    ActionSpec, FlowAction, FlowCacheKey, RxQueue, ServiceMatch, SteerCounter, Steering, XdpAction,
};

/// A client's source port.
const CLIENT_PORT: u16 = 40000;

struct Case {
    description: &'static str,
    frame: Vec<u8>,
    queue: u32,
    verdict: XdpAction,
    counter: SteerCounter,
}

fn pass(description: &'static str, frame: Vec<u8>, counter: SteerCounter) -> Case {
    Case {
        description,
        frame,
        queue: SOCKET_QUEUE,
        verdict: XdpAction::Pass,
        counter,
    }
}

fn cases() -> Vec<Case> {
    use SteerCounter::*;

    vec![
        pass(
            "UDP to the VIP's TCP port: the protocol is part of the listener",
            frames::udp_frame(CLIENT, CLIENT_PORT, VIP, TCP_PORT),
            PassNotService,
        ),
        pass(
            "reply from a backend endpoint to the LB's client-arm address",
            frames::tcp_frame(BACKEND, BACKEND_TCP_PORT, LB_CLIENT_ARM, CLIENT_PORT),
            PassLocal,
        ),
        pass(
            "reply from a backend endpoint to the LB's backend-arm address (a health probe)",
            frames::tcp_frame(BACKEND, BACKEND_TCP_PORT, LB_BACKEND_ARM, CLIENT_PORT),
            PassLocal,
        ),
        pass(
            "traffic from the backend's address but another port",
            frames::tcp_frame(BACKEND, 22, CLIENT, CLIENT_PORT),
            PassNotService,
        ),
        Case {
            description: "TCP to a VIP on a queue without a socket",
            frame: TCP_SYN.to_vec(),
            queue: EMPTY_QUEUE,
            verdict: XdpAction::Pass,
            counter: NoSocket,
        },
    ]
}

#[test]
fn verdicts_and_counters_follow_the_table() {
    with_scenario_steering(|steering, rx| {
        for case in cases() {
            let rx = RxQueue {
                queue: case.queue,
                ..rx
            };
            let ran = run_frame(steering, &case.frame, Some(rx));
            assert_eq!(ran.verdict, case.verdict, "{}: verdict", case.description);
            assert_eq!(
                ran.bumped,
                vec![(case.counter, 1)],
                "{}: counters bumped",
                case.description
            );
        }
    });
}

/// A frame cut anywhere before the end of its TCP fixed header passes as a
/// parse error; once the ports and flags are all there it is steered (the
/// worker checks the rest, see the fixtures).
#[test]
fn frames_cut_before_the_end_of_the_tcp_header_pass_as_parse_errors() {
    with_scenario_steering(|steering, rx| {
        let rx = Some(rx);
        let l4_offset = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;
        for (full, tcp_end) in [
            (&TCP_SYN[..], l4_offset + tcp::MIN_HEADER_LEN),
            (
                &TCP_SYN_DOT1Q,
                vlan::TAG_LEN + l4_offset + tcp::MIN_HEADER_LEN,
            ),
        ] {
            for len in 0..=full.len() {
                let prefix = &full[..len];
                if len < ethernet::HEADER_LEN {
                    // The kernel refuses frames shorter than an Ethernet
                    // header before the program runs (bpf_test_init).
                    let err = steering.test_run(prefix, rx).unwrap_err();
                    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "len {len}: {err}");
                    continue;
                }
                let ran = run_frame(steering, prefix, rx);
                let expected = if len < tcp_end {
                    (XdpAction::Pass, SteerCounter::ParseError)
                } else {
                    (XdpAction::Redirect, SteerCounter::SteerVip)
                };
                assert_eq!(
                    (ran.verdict, ran.bumped),
                    (expected.0, vec![(expected.1, 1)]),
                    "len {len}"
                );
            }
        }
    });
}

#[test]
fn frame_on_an_interface_without_a_slot_passes_as_no_socket() {
    with_scenario_steering(|steering, _| {
        // Without a receive context the kernel uses loopback, queue 0: the
        // program is not attached there.
        let ran = run_frame(steering, &TCP_SYN, None);
        assert_eq!(ran.verdict, XdpAction::Pass);
        assert_eq!(ran.bumped, vec![(SteerCounter::NoSocket, 1)]);
    });
}

#[test]
fn set_services_replaces_the_previous_set() {
    with_scenario_steering(|steering, rx| {
        let rx = Some(rx);
        let new_vip = Ipv4Addr::new(198, 51, 100, 11);
        let new = frames::tcp_frame(CLIENT, CLIENT_PORT, new_vip, 443);
        steering
            .set_services(&[ServiceMatch::tcp(new_vip.into(), 443, 7)], &[])
            .unwrap();
        assert_eq!(steering.test_run(&new, rx).unwrap(), XdpAction::Redirect);
        assert_eq!(steering.test_run(&TCP_SYN, rx).unwrap(), XdpAction::Pass);
        let reply = frames::tcp_frame(BACKEND, BACKEND_TCP_PORT, CLIENT, CLIENT_PORT);
        assert_eq!(steering.test_run(&reply, rx).unwrap(), XdpAction::Pass);
    });
}

#[test]
fn unregistered_socket_makes_its_queue_pass() {
    with_scenario_steering(|steering, rx| {
        steering.unregister_socket(rx.ifindex, rx.queue).unwrap();
        let ran = run_frame(steering, &TCP_SYN, Some(rx));
        assert_eq!(ran.verdict, XdpAction::Pass);
        assert_eq!(ran.bumped, vec![(SteerCounter::NoSocket, 1)]);
    });
}

#[test]
fn while_handing_over_a_vip_frame_without_a_socket_is_dropped_and_counted() {
    with_scenario_steering(|steering, rx| {
        steering.unregister_socket(rx.ifindex, rx.queue).unwrap();
        steering.fast_path().set_handing_over(true).unwrap();
        let ran = run_frame(steering, &TCP_SYN, Some(rx));
        assert_eq!(ran.verdict, XdpAction::Drop);
        assert_eq!(ran.bumped, vec![(SteerCounter::NoSocket, 1)]);

        steering.fast_path().set_handing_over(false).unwrap();
        assert_eq!(
            steering.test_run(&TCP_SYN, Some(rx)).unwrap(),
            XdpAction::Pass
        );
    });
}

/// Publishes fast-path state and installs, for `frame`'s flow (client to
/// the VIP's `port`), an entry that sends it to the backend out of the
/// interface it came in on (slot 0, XDP_TX).
fn cache_flow(steering: &Steering, rx: RxQueue, protocol: u8, port: u16, backend_port: u16) {
    let fast = steering.fast_path();
    fast.publish_generation(1).unwrap();
    // The entry's generation is checked against its listener's epoch.
    fast.publish_epochs(&[0], &[1]).unwrap();
    fast.publish_l2_epoch(1).unwrap();
    fast.set_enabled(true).unwrap();
    let key = FlowCacheKey::new(CLIENT, VIP, CLIENT_PORT, port, protocol);
    let action = FlowAction::from(ActionSpec {
        generation: 1,
        l2_epoch: 1,
        eth_dst: BACKEND_MAC,
        eth_src: LB_BACKEND_ARM_MAC,
        ip_src: CLIENT,
        ip_dst: BACKEND,
        src_port: CLIENT_PORT,
        dst_port: backend_port,
        ip_csum_diff: 0,
        l4_csum_diff: 0,
        egress_slot: 0,
        egress_ifindex: rx.ifindex,
        stats_slot: 0,
    });
    let (written, error) = fast.install(&[key], &[action]);
    assert_eq!((written, error.map(|e| e.to_string())), (1, None));
}

/// A flow the fast path holds, whose sender hands over partial TCP/UDP
/// checksums (tx checksum offload through a veth): the program cannot
/// finish such a checksum, so the frame goes to the worker's socket
/// untouched and is counted; the same flow's frame with a full checksum is
/// rewritten and sent by the program itself.
#[test]
fn a_cached_flows_frame_with_a_partial_checksum_is_steered_not_rewritten() {
    with_scenario_steering(|steering, rx| {
        let flows = [
            (
                frames::tcp_data_frame(CLIENT, CLIENT_PORT, VIP, TCP_PORT, b"GET /"),
                ipv4::PROTOCOL_TCP,
                (TCP_PORT, BACKEND_TCP_PORT),
            ),
            (
                frames::udp_frame(CLIENT, CLIENT_PORT, VIP, UDP_PORT),
                ipv4::PROTOCOL_UDP,
                (UDP_PORT, BACKEND_UDP_PORT),
            ),
        ];
        for (full, protocol, (port, backend_port)) in flows {
            cache_flow(steering, rx, protocol, port, backend_port);

            let partial = frames::with_partial_checksum(&full);
            assert_ne!(partial, full);
            let ran = run_frame(steering, &partial, Some(rx));
            assert_eq!(
                (ran.verdict, ran.bumped, ran.frame == partial),
                (
                    XdpAction::Redirect,
                    vec![
                        (SteerCounter::SteerVip, 1),
                        (SteerCounter::FastPartialChecksum, 1)
                    ],
                    true
                ),
                "protocol {protocol}: steered to the socket, untouched"
            );

            let ran = run_frame(steering, &full, Some(rx));
            assert_eq!(
                (ran.verdict, ran.bumped),
                (XdpAction::Tx, vec![(SteerCounter::FastTx, 1)]),
                "protocol {protocol}: a full checksum rides the fast path"
            );
        }
    });
}

/// An interface the kernel would drop XDP frames on (a veth whose peer runs
/// no NAPI) is closed to the fast path: a flow cached before it closed is
/// steered to the worker's socket untouched, and rides the fast path again
/// once it opens.
#[test]
fn a_cached_flow_whose_egress_is_closed_is_steered_not_sent() {
    with_scenario_steering(|steering, rx| {
        cache_flow(steering, rx, ipv4::PROTOCOL_UDP, UDP_PORT, BACKEND_UDP_PORT);
        let frame = frames::udp_frame(CLIENT, CLIENT_PORT, VIP, UDP_PORT);
        let fast = steering.fast_path();

        fast.set_egress_closed(1 << 0).unwrap();
        assert_eq!(fast.egress_closed().unwrap(), 1);
        let ran = run_frame(steering, &frame, Some(rx));
        assert_eq!(
            (ran.verdict, ran.bumped, ran.frame == frame),
            (
                XdpAction::Redirect,
                vec![
                    (SteerCounter::SteerVip, 1),
                    (SteerCounter::FastEgressClosed, 1)
                ],
                true
            ),
            "closed: steered to the socket, untouched"
        );

        // Another slot closed leaves this one open.
        fast.set_egress_closed(1 << 1).unwrap();
        let ran = run_frame(steering, &frame, Some(rx));
        assert_eq!(
            (ran.verdict, ran.bumped),
            (XdpAction::Tx, vec![(SteerCounter::FastTx, 1)])
        );
    });
}

/// A backend's answer to one of the node's own addresses goes to the
/// kernel, unless its destination port is in the SNAT range: then it
/// answers a full-NAT binding and goes to the workers.
#[test]
fn answers_to_the_snat_port_range_are_steered_and_the_rest_stays_local() {
    with_scenario_steering(|steering, rx| {
        let answer = |port| frames::tcp_frame(BACKEND, BACKEND_TCP_PORT, LB_BACKEND_ARM, port);
        let before = run_frame(steering, &answer(20000), Some(rx));
        assert_eq!(
            (before.verdict, before.bumped),
            (XdpAction::Pass, vec![(SteerCounter::PassLocal, 1)]),
            "no SNAT range yet"
        );
        steering
            .fast_path()
            .set_snat_ports(Some((20000, 20999)))
            .unwrap();
        for (port, verdict, counter) in [
            (20000, XdpAction::Redirect, SteerCounter::SteerReply),
            (20999, XdpAction::Redirect, SteerCounter::SteerReply),
            (19999, XdpAction::Pass, SteerCounter::PassLocal),
            (21000, XdpAction::Pass, SteerCounter::PassLocal),
        ] {
            let ran = run_frame(steering, &answer(port), Some(rx));
            assert_eq!(
                (ran.verdict, ran.bumped),
                (verdict, vec![(counter, 1)]),
                "port {port}"
            );
        }
        steering.fast_path().set_snat_ports(None).unwrap();
        let after = run_frame(steering, &answer(20000), Some(rx));
        assert_eq!(after.verdict, XdpAction::Pass, "range withdrawn");
    });
}
