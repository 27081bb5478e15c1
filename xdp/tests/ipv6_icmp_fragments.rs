//! The steering program's rules for IPv6, ICMP and fragments, on the
//! literal frames of `switchyard_wire::fixtures` (which are not rows of its
//! table yet) in the fixtures' scenario, through BPF_PROG_TEST_RUN: IPv6
//! listeners and replies steer as IPv4 ones do; whatever else reaches a VIP
//! address goes to the workers, never to the kernel; fragments and ICMP
//! errors that belong to a backend's reply go to the workers too. Then the
//! IPv6 fast path: an installed entry rewrites a frame exactly as a worker
//! would. Needs root; runs in throwaway network namespaces.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{frames, run_frame, with_scenario_steering, Ran};
use switchyard_wire::{
    checksum::{diff_u16, fold, pseudo_header_v6, sum_words},
    ethernet,
    fixtures::{
        scenario::{
            BACKEND6, BACKEND_MAC, BACKEND_TCP_PORT, BACKEND_UDP_PORT, CLIENT6, LB_BACKEND_ARM,
            LB_BACKEND_ARM6, LB_BACKEND_ARM_MAC, TCP_PORT, UDP_PORT, VIP6,
        },
        GRE_TO_VIP, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_TO_VIP6, ICMPV6_NEIGHBOR_SOLICITATION_TO_VIP6,
        ICMPV6_PACKET_TOO_BIG_TO_VIP6, ICMPV6_PORT_UNREACHABLE_FROM_BACKEND6, ICMP_ECHO,
        ICMP_FRAGMENTATION_NEEDED_TO_VIP, ICMP_PORT_UNREACHABLE_FROM_BACKEND, IPV6_TCP_SYN,
        IPV6_TCP_SYN_7_EXT_HEADERS, IPV6_TCP_SYN_ACK, IPV6_TCP_SYN_EXT_HEADERS, IPV6_UDP,
        IPV6_UDP_DNS, IPV6_UDP_FIRST_FRAGMENT, IPV6_UDP_LATER_FRAGMENT,
        IPV6_UDP_LATER_FRAGMENT_FROM_BACKEND6, UDP_FIRST_FRAGMENT, UDP_LATER_FRAGMENT,
        UDP_LATER_FRAGMENT_FROM_BACKEND,
    },
    ipv4, ipv6, tcp,
};
use switchyard_xdp::{ActionSpec6, FlowAction6, FlowCacheKey6, SteerCounter, XdpAction};

/// A client's source port.
const CLIENT_PORT: u16 = 40000;

/// `frame` (Ethernet + IPv4) with its destination address replaced; the
/// program reads no checksum, so the stale one does not matter.
fn with_ipv4_dst(frame: &[u8], dst: Ipv4Addr) -> Vec<u8> {
    let at = ethernet::HEADER_LEN + ipv4::DST;
    let mut frame = frame.to_vec();
    frame[at..at + 4].copy_from_slice(&dst.octets());
    frame
}

/// `frame` (Ethernet + IPv6) with its destination address replaced.
fn with_ipv6_dst(frame: &[u8], dst: std::net::Ipv6Addr) -> Vec<u8> {
    let at = ethernet::HEADER_LEN + ipv6::DST;
    let mut frame = frame.to_vec();
    frame[at..at + 16].copy_from_slice(&dst.octets());
    frame
}

/// (rule, frame, verdict, the one counter it bumps)
fn cases() -> Vec<(&'static str, Vec<u8>, XdpAction, SteerCounter)> {
    use SteerCounter::*;
    use XdpAction::{Pass, Redirect};

    // Frames cut inside the ports of the packet their ICMP error quotes.
    let icmp_cut = ICMP_PORT_UNREACHABLE_FROM_BACKEND.len() - 6;
    let icmpv6_cut = ICMPV6_PORT_UNREACHABLE_FROM_BACKEND6.len() - 6;
    vec![
        // IPv6 listeners and replies, as IPv4's.
        (
            "IPv6 TCP SYN to VIP6:80",
            IPV6_TCP_SYN.to_vec(),
            Redirect,
            SteerVip,
        ),
        (
            "IPv6 UDP to VIP6:53",
            IPV6_UDP_DNS.to_vec(),
            Redirect,
            SteerVip,
        ),
        (
            "IPv6 SYN-ACK from a backend endpoint to the client",
            IPV6_TCP_SYN_ACK.to_vec(),
            Redirect,
            SteerReply,
        ),
        (
            "IPv6 reply from a backend endpoint to the LB's own address",
            frames::tcp6_frame(BACKEND6, BACKEND_TCP_PORT, LB_BACKEND_ARM6, CLIENT_PORT),
            Pass,
            PassLocal,
        ),
        (
            "IPv6 UDP to the VIP6's TCP port: no listener",
            frames::udp6_frame(CLIENT6, CLIENT_PORT, VIP6, TCP_PORT),
            Pass,
            PassNotService,
        ),
        (
            "IPv6 UDP to an address that is no VIP",
            IPV6_UDP.to_vec(),
            Pass,
            PassNotService,
        ),
        (
            "Hop-by-Hop and Destination Options before TCP: walked, then steered",
            IPV6_TCP_SYN_EXT_HEADERS.to_vec(),
            Redirect,
            SteerVip,
        ),
        (
            "seven extension headers, one past the bound, to the VIP6",
            IPV6_TCP_SYN_7_EXT_HEADERS.to_vec(),
            Redirect,
            SteerVipAddr,
        ),
        (
            "seven extension headers to an address that is no VIP",
            with_ipv6_dst(&IPV6_TCP_SYN_7_EXT_HEADERS, CLIENT6),
            Pass,
            PassNotService,
        ),
        // ICMP to a VIP address.
        (
            "ICMP echo request to the VIP",
            ICMP_ECHO.to_vec(),
            Redirect,
            SteerVipIcmp,
        ),
        (
            "ICMPv6 echo request to the VIP6",
            ICMPV6_ECHO_TO_VIP6.to_vec(),
            Redirect,
            SteerVipIcmp,
        ),
        (
            "fragmentation needed to the VIP, quoting VIP:80 -> client",
            ICMP_FRAGMENTATION_NEEDED_TO_VIP.to_vec(),
            Redirect,
            SteerVipIcmp,
        ),
        (
            "packet too big to the VIP6, quoting VIP6:80 -> client",
            ICMPV6_PACKET_TOO_BIG_TO_VIP6.to_vec(),
            Redirect,
            SteerVipIcmp,
        ),
        (
            "neighbor solicitation for the VIP6: the node's to answer",
            ICMPV6_NEIGHBOR_SOLICITATION_TO_VIP6.to_vec(),
            Pass,
            PassNotService,
        ),
        (
            "ICMPv6 echo request to an address that is no VIP",
            ICMPV6_ECHO_REQUEST.to_vec(),
            Pass,
            PassNotService,
        ),
        // ICMP errors about a client's packet to a backend endpoint.
        (
            "port unreachable from the backend, quoting client -> backend:5353",
            ICMP_PORT_UNREACHABLE_FROM_BACKEND.to_vec(),
            Redirect,
            SteerIcmpReply,
        ),
        (
            "ICMPv6 port unreachable from the backend, quoting client -> backend:5353",
            ICMPV6_PORT_UNREACHABLE_FROM_BACKEND6.to_vec(),
            Redirect,
            SteerIcmpReply,
        ),
        (
            "the same error cut inside the quoted ports",
            ICMP_PORT_UNREACHABLE_FROM_BACKEND[..icmp_cut].to_vec(),
            Pass,
            PassNotService,
        ),
        (
            "the same ICMPv6 error cut inside the quoted ports",
            ICMPV6_PORT_UNREACHABLE_FROM_BACKEND6[..icmpv6_cut].to_vec(),
            Pass,
            PassNotService,
        ),
        (
            "the same error addressed to the LB's own address",
            with_ipv4_dst(&ICMP_PORT_UNREACHABLE_FROM_BACKEND, LB_BACKEND_ARM),
            Pass,
            PassLocal,
        ),
        // Fragments.
        (
            "first fragment of a datagram to VIP:53",
            UDP_FIRST_FRAGMENT.to_vec(),
            Redirect,
            SteerFragment,
        ),
        (
            "later fragment of a datagram to VIP:53",
            UDP_LATER_FRAGMENT.to_vec(),
            Redirect,
            SteerFragment,
        ),
        (
            "first IPv6 fragment of a datagram to VIP6:53",
            IPV6_UDP_FIRST_FRAGMENT.to_vec(),
            Redirect,
            SteerFragment,
        ),
        (
            "later IPv6 fragment of a datagram to VIP6:53",
            IPV6_UDP_LATER_FRAGMENT.to_vec(),
            Redirect,
            SteerFragment,
        ),
        (
            "later fragment of a backend's answer to the client",
            UDP_LATER_FRAGMENT_FROM_BACKEND.to_vec(),
            Redirect,
            SteerFragment,
        ),
        (
            "later IPv6 fragment of a backend's answer to the client",
            IPV6_UDP_LATER_FRAGMENT_FROM_BACKEND6.to_vec(),
            Redirect,
            SteerFragment,
        ),
        (
            "later fragment of a backend's packet to the LB's own address",
            with_ipv4_dst(&UDP_LATER_FRAGMENT_FROM_BACKEND, LB_BACKEND_ARM),
            Pass,
            PassLocal,
        ),
        (
            "fragment neither to a VIP address nor from a backend",
            with_ipv4_dst(&UDP_LATER_FRAGMENT, Ipv4Addr::new(198, 51, 100, 2)),
            Pass,
            PassFragment,
        ),
        // Any other protocol.
        (
            "GRE to the VIP",
            GRE_TO_VIP.to_vec(),
            Redirect,
            SteerVipAddr,
        ),
        (
            "GRE to an address that is no VIP",
            with_ipv4_dst(&GRE_TO_VIP, Ipv4Addr::new(198, 51, 100, 2)),
            Pass,
            PassNotService,
        ),
    ]
}

#[test]
fn ipv6_icmp_and_fragments_are_steered_as_their_rules_say() {
    with_scenario_steering(|steering, rx| {
        let mismatches: Vec<String> = cases()
            .into_iter()
            .filter_map(|(rule, frame, verdict, counter)| {
                let ran = run_frame(steering, &frame, Some(rx));
                let want = Ran {
                    verdict,
                    bumped: vec![(counter, 1)],
                    frame: frame.clone(),
                };
                (ran != want).then(|| {
                    format!(
                        "{rule}: expected {:?} {:?}, got {:?} {:?}{}",
                        want.verdict,
                        want.bumped,
                        ran.verdict,
                        ran.bumped,
                        if ran.frame == frame {
                            ""
                        } else {
                            ", and the frame was changed"
                        }
                    )
                })
            })
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    });
}

/// Removing a VIP's listeners removes its address: its ICMP and fragments
/// go back to the kernel.
#[test]
fn a_vip_address_without_listeners_is_the_kernels_again() {
    with_scenario_steering(|steering, rx| {
        let backend6: IpAddr = BACKEND6.into();
        steering
            .set_services(
                &[],
                &[switchyard_xdp::ServiceMatch::udp(
                    backend6,
                    BACKEND_UDP_PORT,
                    4,
                )],
            )
            .unwrap();
        for (frame, counter) in [
            (&ICMP_ECHO[..], SteerCounter::PassNotService),
            (&ICMPV6_ECHO_TO_VIP6, SteerCounter::PassNotService),
            (&UDP_LATER_FRAGMENT, SteerCounter::PassFragment),
            (&IPV6_UDP_LATER_FRAGMENT, SteerCounter::PassFragment),
        ] {
            let ran = run_frame(steering, frame, Some(rx));
            assert_eq!(
                (ran.verdict, ran.bumped),
                (XdpAction::Pass, vec![(counter, 1)])
            );
        }
        // The IPv6 backend endpoint stays: its fragments still go to the workers.
        let ran = run_frame(steering, &IPV6_UDP_LATER_FRAGMENT_FROM_BACKEND6, Some(rx));
        assert_eq!(ran.bumped, vec![(SteerCounter::SteerFragment, 1)]);
    });
}

/// The folded RFC 1624 difference of a client -> VIP6:`port` segment
/// rewritten to BACKEND6:`backend_port`, as a worker computes it: the
/// destination address's eight pseudo-header words and the port.
fn dnat6_l4_diff(port: u16, backend_port: u16) -> u16 {
    let (old, new) = (VIP6.segments(), BACKEND6.segments());
    let sum: u32 = old
        .iter()
        .zip(new.iter())
        .map(|(old, new)| diff_u16(*old, *new))
        .sum::<u32>()
        + diff_u16(port, backend_port);
    fold(sum)
}

/// Publishes fast-path state and installs, for the client's flow to
/// VIP6:`port`, an entry that sends it to BACKEND6:`backend_port` out of
/// the interface it came in on (slot 0, XDP_TX).
fn cache_flow6(
    steering: &switchyard_xdp::Steering,
    rx: switchyard_xdp::RxQueue,
    protocol: u8,
    port: u16,
    backend_port: u16,
) {
    let fast = steering.fast_path();
    fast.publish_generation(1).unwrap();
    fast.publish_epochs(&[0], &[1]).unwrap();
    fast.publish_l2_epoch(1).unwrap();
    fast.set_enabled(true).unwrap();
    let key = FlowCacheKey6::new(CLIENT6, VIP6, CLIENT_PORT, port, protocol);
    let action = FlowAction6::from(ActionSpec6 {
        generation: 1,
        l2_epoch: 1,
        eth_dst: BACKEND_MAC,
        eth_src: LB_BACKEND_ARM_MAC,
        ip_src: CLIENT6,
        ip_dst: BACKEND6,
        src_port: CLIENT_PORT,
        dst_port: backend_port,
        l4_csum_diff: dnat6_l4_diff(port, backend_port),
        egress_slot: 0,
        egress_ifindex: rx.ifindex,
        stats_slot: 0,
    });
    let (written, error) = fast.install6(&[key], &[action]);
    assert_eq!((written, error.map(|e| e.to_string())), (1, None));
    assert_eq!(
        fast.lookup6(&key).unwrap().map(|a| a.spec().ip_dst),
        Some(BACKEND6)
    );
}

/// `frame` as the worker sends it to the backend: MACs of the backend arm,
/// destination BACKEND6:`backend_port`, TCP checksum computed afresh.
fn dnat6_expected(frame: &[u8], backend_port: u16) -> Vec<u8> {
    let l3 = ethernet::HEADER_LEN;
    let l4 = l3 + ipv6::HEADER_LEN;
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&BACKEND_MAC);
    out[6..12].copy_from_slice(&LB_BACKEND_ARM_MAC);
    out[l3 + ipv6::DST..l3 + ipv6::DST + 16].copy_from_slice(&BACKEND6.octets());
    out[l4 + tcp::DST_PORT..l4 + tcp::DST_PORT + 2].copy_from_slice(&backend_port.to_be_bytes());
    out[l4 + tcp::CHECKSUM..l4 + tcp::CHECKSUM + 2].copy_from_slice(&[0, 0]);
    let pseudo = pseudo_header_v6(
        &CLIENT6.octets(),
        &BACKEND6.octets(),
        ipv4::PROTOCOL_TCP,
        (out.len() - l4) as u32,
    );
    let checksum = !fold(pseudo + sum_words(&out[l4..]));
    out[l4 + tcp::CHECKSUM..l4 + tcp::CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
    out
}

/// A cached IPv6 flow's segment is rewritten by the program itself, byte
/// for byte as the worker's DNAT, with a TCP checksum that verifies; the
/// entry counts it.
#[test]
fn a_cached_ipv6_flow_is_rewritten_and_sent_by_the_program() {
    with_scenario_steering(|steering, rx| {
        cache_flow6(steering, rx, ipv4::PROTOCOL_TCP, TCP_PORT, BACKEND_TCP_PORT);
        let frame = frames::tcp6_data_frame(CLIENT6, CLIENT_PORT, VIP6, TCP_PORT, b"GET /");
        let ran = run_frame(steering, &frame, Some(rx));
        assert_eq!(
            (ran.verdict, ran.bumped),
            (XdpAction::Tx, vec![(SteerCounter::FastTx, 1)])
        );
        let expected = dnat6_expected(&frame, BACKEND_TCP_PORT);
        assert_eq!(ran.frame, expected);
        let l4 = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
        let pseudo = pseudo_header_v6(
            &CLIENT6.octets(),
            &BACKEND6.octets(),
            ipv4::PROTOCOL_TCP,
            (ran.frame.len() - l4) as u32,
        );
        assert_eq!(fold(pseudo + sum_words(&ran.frame[l4..])), 0xffff);

        let key = FlowCacheKey6::new(CLIENT6, VIP6, CLIENT_PORT, TCP_PORT, ipv4::PROTOCOL_TCP);
        let entry = steering.fast_path().lookup6(&key).unwrap().unwrap();
        assert_eq!((entry.packets(), entry.bytes()), (1, frame.len() as u64));
        let entries = steering.fast_path().entries6().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(steering.fast_path().remove6(&[key]).unwrap(), 1);
        assert!(steering.fast_path().entries6().unwrap().is_empty());
    });
}

/// What the workers would not take on the fast path, the program does not
/// either: a SYN, a partial checksum, an extension header. Each goes to the
/// worker's socket untouched.
#[test]
fn a_cached_ipv6_flows_frame_the_workers_must_see_is_steered_untouched() {
    with_scenario_steering(|steering, rx| {
        cache_flow6(steering, rx, ipv4::PROTOCOL_TCP, TCP_PORT, BACKEND_TCP_PORT);
        let data = frames::tcp6_data_frame(CLIENT6, CLIENT_PORT, VIP6, TCP_PORT, b"GET /");
        for (what, frame, also) in [
            (
                "SYN",
                frames::tcp6_frame(CLIENT6, CLIENT_PORT, VIP6, TCP_PORT),
                Some(SteerCounter::FastTcpControl),
            ),
            (
                "partial checksum",
                frames::with_partial_checksum6(&data),
                Some(SteerCounter::FastPartialChecksum),
            ),
            (
                "Destination Options header",
                frames::tcp6_data_frame_with_dest_opts(
                    CLIENT6,
                    CLIENT_PORT,
                    VIP6,
                    TCP_PORT,
                    b"GET /",
                ),
                None,
            ),
        ] {
            let ran = run_frame(steering, &frame, Some(rx));
            let mut bumped = vec![(SteerCounter::SteerVip, 1)];
            bumped.extend(also.map(|counter| (counter, 1)));
            bumped.sort();
            assert_eq!(
                (ran.verdict, ran.bumped, ran.frame == frame),
                (XdpAction::Redirect, bumped, true),
                "{what}"
            );
        }
    });
}

/// The IPv4 cache does not answer for IPv6 flows, nor the other way round:
/// with only an IPv6 entry, an IPv4 frame of the same ports takes the slow
/// path.
#[test]
fn the_ipv6_cache_serves_ipv6_frames_only() {
    with_scenario_steering(|steering, rx| {
        cache_flow6(steering, rx, ipv4::PROTOCOL_UDP, UDP_PORT, BACKEND_UDP_PORT);
        let v4 = frames::udp_frame(
            switchyard_wire::fixtures::scenario::CLIENT,
            CLIENT_PORT,
            switchyard_wire::fixtures::scenario::VIP,
            UDP_PORT,
        );
        let ran = run_frame(steering, &v4, Some(rx));
        assert_eq!(ran.bumped, vec![(SteerCounter::SteerVip, 1)]);
        let v6 = frames::udp6_frame(CLIENT6, CLIENT_PORT, VIP6, UDP_PORT);
        let ran = run_frame(steering, &v6, Some(rx));
        assert_eq!(
            (ran.verdict, ran.bumped),
            (XdpAction::Tx, vec![(SteerCounter::FastTx, 1)])
        );
    });
}

/// IPv6 entries answer to the same listener epochs and L2 epoch as IPv4
/// ones: a reload that changes the listener sends the flow back to the
/// workers.
#[test]
fn a_cached_ipv6_flow_of_an_older_epoch_goes_to_the_workers() {
    with_scenario_steering(|steering, rx| {
        cache_flow6(steering, rx, ipv4::PROTOCOL_UDP, UDP_PORT, BACKEND_UDP_PORT);
        let frame = frames::udp6_frame(CLIENT6, CLIENT_PORT, VIP6, UDP_PORT);
        steering.fast_path().publish_epochs(&[0], &[2]).unwrap();
        let ran = run_frame(steering, &frame, Some(rx));
        assert_eq!(
            (ran.verdict, ran.bumped, ran.frame == frame),
            (
                XdpAction::Redirect,
                vec![(SteerCounter::SteerVip, 1), (SteerCounter::FastStale, 1)],
                true
            )
        );
    });
}

/// The bounded stand-in caches refuse writes past their capacity for IPv6
/// as for IPv4, so the workers' handling of a partial batch can be tested
/// for both.
#[test]
fn a_bounded_ipv6_cache_writes_up_to_its_capacity() {
    with_scenario_steering(|steering, _| {
        let bounded = steering.fast_path().with_bounded_cache(1).unwrap();
        let keys = [TCP_PORT, UDP_PORT]
            .map(|port| FlowCacheKey6::new(CLIENT6, VIP6, CLIENT_PORT, port, ipv4::PROTOCOL_UDP));
        let (written, error) = bounded.install6(&keys, &[FlowAction6::default(); 2]);
        assert_eq!((written, error.is_some()), (1, true));
        assert_eq!(bounded.entries6().unwrap().len(), 1);
        // The program's own IPv6 cache was not written.
        assert!(steering.fast_path().entries6().unwrap().is_empty());
    });
}
