//! Source ranges in the steering program: a frame to a listener from a
//! source its ranges do not admit is dropped and counted (in the steering
//! counters and per listener); an admitted one is steered as before; a
//! listener without ranges is not looked at; the ranges of one listener do
//! not reach another; deny wins over a longer allowed range. Runs the fixtures' scenario through BPF_PROG_TEST_RUN.
//! Needs root; runs in throwaway network namespaces.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{frames, run_frame, with_scenario_steering};
use switchyard_wire::fixtures::scenario::{CLIENT, CLIENT6, TCP_PORT, UDP_PORT, VIP, VIP6};
use switchyard_xdp::{ListenerRanges, Prefix, SteerCounter, Steering, XdpAction};

const TCP: u8 = 6;
const UDP: u8 = 17;
const DENIED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const DENIED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x66);

fn prefix(addr: impl Into<IpAddr>, len: u8) -> Prefix {
    (addr.into(), len)
}

fn ranges(
    vip: IpAddr,
    port: u16,
    protocol: u8,
    allow: Option<Vec<Prefix>>,
    deny: Vec<Prefix>,
) -> ListenerRanges {
    ListenerRanges {
        vip,
        port,
        protocol,
        allow,
        deny,
    }
}

/// The TCP listeners of both VIPs allow their clients' /24 (/64) but one
/// address of it; the UDP listeners have no ranges.
fn tcp_ranges() -> Vec<ListenerRanges> {
    vec![
        ranges(
            VIP.into(),
            TCP_PORT,
            TCP,
            Some(vec![prefix(Ipv4Addr::new(192, 0, 2, 0), 24)]),
            vec![prefix(DENIED, 32)],
        ),
        ranges(
            VIP6.into(),
            TCP_PORT,
            TCP,
            Some(vec![prefix(
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0),
                64,
            )]),
            vec![prefix(DENIED6, 128)],
        ),
    ]
}

fn denied_for(steering: &Steering, vip: IpAddr, port: u16, protocol: u8) -> u64 {
    steering
        .source_denied()
        .expect("reading source_denied")
        .into_iter()
        .find(|&(a, p, proto, _)| (a, p, proto) == (vip, port, protocol))
        .map_or(0, |(.., n)| n)
}

#[test]
fn each_rule_admits_and_denies_with_matching_counters() {
    with_scenario_steering(|steering, rx| {
        steering
            .set_source_ranges(&tcp_ranges())
            .expect("setting ranges");
        let rx = Some(rx);
        let cases: Vec<(&str, Vec<u8>, XdpAction, SteerCounter)> = vec![
            (
                "allowed client",
                frames::tcp_frame(CLIENT, 40000, VIP, TCP_PORT),
                XdpAction::Redirect,
                SteerCounter::SteerVip,
            ),
            (
                "denied address inside the allowed range",
                frames::tcp_frame(DENIED, 40000, VIP, TCP_PORT),
                XdpAction::Drop,
                SteerCounter::DropSourceDenied,
            ),
            (
                "address outside the allow list",
                frames::tcp_frame(OUTSIDE, 40000, VIP, TCP_PORT),
                XdpAction::Drop,
                SteerCounter::DropSourceDenied,
            ),
            (
                "a listener without ranges",
                frames::udp_frame(OUTSIDE, 40000, VIP, UDP_PORT),
                XdpAction::Redirect,
                SteerCounter::SteerVip,
            ),
            (
                "allowed IPv6 client",
                frames::tcp6_frame(CLIENT6, 40000, VIP6, TCP_PORT),
                XdpAction::Redirect,
                SteerCounter::SteerVip,
            ),
            (
                "denied IPv6 address",
                frames::tcp6_frame(DENIED6, 40000, VIP6, TCP_PORT),
                XdpAction::Drop,
                SteerCounter::DropSourceDenied,
            ),
            (
                "IPv6 listener without ranges",
                frames::udp6_frame(DENIED6, 40000, VIP6, UDP_PORT),
                XdpAction::Redirect,
                SteerCounter::SteerVip,
            ),
        ];
        for (description, frame, verdict, counter) in cases {
            let ran = run_frame(steering, &frame, rx);
            assert_eq!(ran.verdict, verdict, "{description}: verdict");
            assert_eq!(ran.bumped, vec![(counter, 1)], "{description}: counters");
        }
        assert_eq!(denied_for(steering, VIP.into(), TCP_PORT, TCP), 2);
        assert_eq!(denied_for(steering, VIP6.into(), TCP_PORT, TCP), 1);
        assert_eq!(denied_for(steering, VIP.into(), UDP_PORT, UDP), 0);
    });
}

#[test]
fn a_listeners_counter_survives_an_update_and_cleared_ranges_stop_dropping() {
    with_scenario_steering(|steering, rx| {
        let rx = Some(rx);
        steering
            .set_source_ranges(&tcp_ranges())
            .expect("setting ranges");
        let denied = frames::tcp_frame(DENIED, 40000, VIP, TCP_PORT);
        assert_eq!(run_frame(steering, &denied, rx).verdict, XdpAction::Drop);
        // Another update that keeps the listener's ranges keeps its count.
        let mut more = tcp_ranges();
        more[0].deny.push(prefix(OUTSIDE, 32));
        steering.set_source_ranges(&more).expect("updating ranges");
        assert_eq!(denied_for(steering, VIP.into(), TCP_PORT, TCP), 1);
        assert_eq!(run_frame(steering, &denied, rx).verdict, XdpAction::Drop);
        assert_eq!(denied_for(steering, VIP.into(), TCP_PORT, TCP), 2);
        // No ranges at all: nothing is dropped.
        steering.set_source_ranges(&[]).expect("clearing ranges");
        assert_eq!(
            run_frame(steering, &denied, rx).verdict,
            XdpAction::Redirect
        );
        assert!(steering.source_denied().unwrap().is_empty());
    });
}

#[test]
fn deny_wins_over_a_longer_allowed_range() {
    with_scenario_steering(|steering, rx| {
        steering
            .set_source_ranges(&[ranges(
                VIP.into(),
                TCP_PORT,
                TCP,
                Some(vec![prefix(Ipv4Addr::new(192, 0, 2, 0), 28)]),
                vec![prefix(Ipv4Addr::new(192, 0, 2, 0), 24)],
            )])
            .expect("setting ranges");
        let ran = run_frame(
            steering,
            &frames::tcp_frame(CLIENT, 40000, VIP, TCP_PORT),
            Some(rx),
        );
        assert_eq!(ran.verdict, XdpAction::Drop);
    });
}
