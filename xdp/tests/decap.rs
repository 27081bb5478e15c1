//! The backends' decapsulation program (src/bpf/decap.c) through
//! BPF_PROG_TEST_RUN: each tunnel a Switchyard node sends (IP-in-IP of
//! either family, GUE to the configured port) to one of the host's
//! addresses leaves as the inner packet behind the frame's own L2 header;
//! anything else passes untouched, and a broken tunnel packet is dropped.
//! Every frame bumps exactly its counter. Needs root (loads a program).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_xdp::decap::{Decap, DecapCounter, DecapCounters};
use switchyard_xdp::XdpAction;

const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x21);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 22);
const LB: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 2);
const LB6: Ipv6Addr = Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 7);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const GUE_PORT: u16 = 6080;
const MACS: [u8; 12] = [2, 0, 0, 0, 2, 21, 2, 0, 0, 0, 0, 2];

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend(((20 + payload.len()) as u16).to_be_bytes());
    ip.extend([0, 0]);
    ip.extend(flags.to_be_bytes());
    ip.extend([64, protocol, 0, 0]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend(payload);
    ip
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend((payload.len() as u16).to_be_bytes());
    ip.extend([next, 64]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    ip.extend(payload);
    ip
}

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = src_port.to_be_bytes().to_vec();
    u.extend(dst_port.to_be_bytes());
    u.extend(((8 + payload.len()) as u16).to_be_bytes());
    u.extend([0, 0]);
    u.extend(payload);
    u
}

fn frame(ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let mut f = MACS.to_vec();
    f.extend(ethertype.to_be_bytes());
    f.extend(packet);
    f
}

fn tagged(ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let mut f = MACS.to_vec();
    f.extend([0x81, 0x00, 0x20, 0x14]);
    f.extend(ethertype.to_be_bytes());
    f.extend(packet);
    f
}

/// The client's packets as they reach the VIP.
fn inner4() -> Vec<u8> {
    ipv4(CLIENT, VIP, 17, 0x4000, &udp(40000, 53, b"query"))
}

fn inner6() -> Vec<u8> {
    ipv6(CLIENT6, VIP6, 17, &udp(40000, 53, b"query"))
}

fn decap() -> Decap {
    let mut decap = Decap::load(Some(GUE_PORT)).expect("decap program loads (root?)");
    decap
        .set_addresses(&[IpAddr::from(HOST), IpAddr::from(HOST6)])
        .unwrap();
    decap
}

/// Runs `input` and checks the verdict, the frame that leaves, and that
/// exactly `counter` moved, by one.
fn check(decap: &Decap, input: &[u8], verdict: XdpAction, output: &[u8], counter: DecapCounter) {
    let before = decap.counters().unwrap();
    let (action, out) = decap.test_run(input).unwrap();
    assert_eq!(action, verdict, "verdict");
    if verdict == XdpAction::Pass {
        assert_eq!(out, output, "frame passed to the kernel");
    }
    let mut expected = before;
    expected.0[counter as usize] += 1;
    assert_eq!(decap.counters().unwrap(), expected, "counters");
}

#[test]
fn ip_in_ip_to_the_host_leaves_as_the_inner_packet() {
    let d = decap();
    let ipip = frame(0x0800, &ipv4(LB, HOST, 4, 0x4000, &inner4()));
    check(
        &d,
        &ipip,
        XdpAction::Pass,
        &frame(0x0800, &inner4()),
        DecapCounter::Ipip,
    );
    let ip6ip6 = frame(0x86dd, &ipv6(LB6, HOST6, 41, &inner6()));
    check(
        &d,
        &ip6ip6,
        XdpAction::Pass,
        &frame(0x86dd, &inner6()),
        DecapCounter::Ip6Ip6,
    );
    let six_in_four = frame(0x0800, &ipv4(LB, HOST, 41, 0x4000, &inner6()));
    let out = frame(0x86dd, &inner6());
    check(
        &d,
        &six_in_four,
        XdpAction::Pass,
        &out,
        DecapCounter::IpMixed,
    );
    let four_in_six = frame(0x86dd, &ipv6(LB6, HOST6, 4, &inner4()));
    let out = frame(0x0800, &inner4());
    check(
        &d,
        &four_in_six,
        XdpAction::Pass,
        &out,
        DecapCounter::IpMixed,
    );
}

#[test]
fn gue_to_the_port_leaves_as_the_inner_packet_of_either_family() {
    let d = decap();
    let gue4 = frame(
        0x0800,
        &ipv4(VIP, HOST, 17, 0x4000, &udp(50000, GUE_PORT, &inner4())),
    );
    check(
        &d,
        &gue4,
        XdpAction::Pass,
        &frame(0x0800, &inner4()),
        DecapCounter::Gue,
    );
    let gue6 = frame(
        0x86dd,
        &ipv6(VIP6, HOST6, 17, &udp(50000, GUE_PORT, &inner6())),
    );
    check(
        &d,
        &gue6,
        XdpAction::Pass,
        &frame(0x86dd, &inner6()),
        DecapCounter::Gue,
    );
}

#[test]
fn a_tagged_frame_keeps_its_tag() {
    let d = decap();
    let ipip = tagged(0x0800, &ipv4(LB, HOST, 4, 0x4000, &inner4()));
    check(
        &d,
        &ipip,
        XdpAction::Pass,
        &tagged(0x0800, &inner4()),
        DecapCounter::Ipip,
    );
}

#[test]
fn everything_else_passes_untouched() {
    let d = decap();
    for input in [
        // A tunnel to another host.
        frame(0x0800, &ipv4(LB, OTHER, 4, 0x4000, &inner4())),
        // UDP to the host on another port, and plain traffic.
        frame(
            0x0800,
            &ipv4(CLIENT, HOST, 17, 0x4000, &udp(40000, 53, b"q")),
        ),
        frame(0x0800, &inner4()),
        frame(0x86dd, &inner6()),
        // ARP.
        frame(0x0806, &[0; 28]),
    ] {
        check(&d, &input, XdpAction::Pass, &input, DecapCounter::Passed);
    }
}

#[test]
fn gue_is_taken_only_on_its_port() {
    let mut d = Decap::load(None).unwrap();
    d.set_addresses(&[HOST.into()]).unwrap();
    let gue = frame(
        0x0800,
        &ipv4(VIP, HOST, 17, 0x4000, &udp(50000, GUE_PORT, &inner4())),
    );
    check(&d, &gue, XdpAction::Pass, &gue, DecapCounter::Passed);
}

#[test]
fn a_broken_tunnel_packet_is_dropped_and_counted() {
    let d = decap();
    let mut truncated = ipv4(LB, HOST, 4, 0x4000, &inner4()[..12]);
    truncated.truncate(32);
    let wrong_family = ipv4(LB, HOST, 4, 0x4000, &inner6());
    let fragment = ipv4(LB, HOST, 4, 0x2000, &inner4());
    // GUE variant 0: a GUE header before the inner packet.
    let mut variant0 = vec![0x00, 4, 0, 0];
    variant0.extend(inner4());
    let gue_variant0 = ipv4(VIP, HOST, 17, 0x4000, &udp(50000, GUE_PORT, &variant0));
    for packet in [truncated, wrong_family, fragment, gue_variant0] {
        let input = frame(0x0800, &packet);
        check(&d, &input, XdpAction::Drop, &[], DecapCounter::Malformed);
    }
}

#[test]
fn the_host_s_addresses_can_change() {
    let mut d = decap();
    let ipip = frame(0x0800, &ipv4(LB, OTHER, 4, 0x4000, &inner4()));
    check(&d, &ipip, XdpAction::Pass, &ipip, DecapCounter::Passed);
    d.set_addresses(&[OTHER.into()]).unwrap();
    check(
        &d,
        &ipip,
        XdpAction::Pass,
        &frame(0x0800, &inner4()),
        DecapCounter::Ipip,
    );
    let total: DecapCounters = d.counters().unwrap();
    assert_eq!(total.decapsulated(), 1);
}
