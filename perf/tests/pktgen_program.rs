//! The generator's frames, as the XDP program (pktgen in
//! xdp/src/bpf/tools.c) and its userspace twin (`pktgen::write_frame`)
//! write them: every frame's checksums verify, flows cycle as configured,
//! and the stamp carries the flow and a send time. The program's test needs
//! root (loading BPF); nothing is attached.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use switchyard_perf::pktgen::{template, write_frame, FlowSpec, Proto};
use switchyard_xdp::tools::Tools;
use switchyard_xdp::tools::STAMP_LEN;

const XDP_TX: u32 = 3;

fn spec(proto: Proto, dst: &str, src: &str) -> FlowSpec {
    FlowSpec {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: src.parse().unwrap(),
        src_count: 3,
        sport_base: 10_000,
        sport_count: 7,
        flows: 15,
        new_every: 0,
        dst: dst.parse().unwrap(),
        proto,
        syn_every: 4,
        frame_len: 60,
    }
}

fn checksums_verify(frame: &[u8]) -> bool {
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    match (&packet.net, &packet.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) => {
            let header = ip.header().to_header();
            header.calc_header_checksum() == ip.header().header_checksum()
                && udp
                    .to_header()
                    .calc_checksum_ipv4(&header, udp.payload())
                    .unwrap()
                    == udp.checksum()
        }
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) => {
            let header = ip.header().to_header();
            header.calc_header_checksum() == ip.header().header_checksum()
                && tcp
                    .to_header()
                    .calc_checksum_ipv4(&header, tcp.payload())
                    .unwrap()
                    == tcp.checksum()
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(udp))) => {
            udp.to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
                .unwrap()
                == udp.checksum()
        }
        _ => false,
    }
}

#[test]
fn every_generated_frame_has_valid_checksums_and_the_flows_cycle() {
    for (proto, dst, src) in [
        (Proto::Udp, "198.18.100.10:53", "198.18.1.200"),
        (Proto::Tcp, "198.18.100.10:80", "198.18.1.1"),
        (Proto::Udp, "[fd00::10]:53", "fd00::1:0"),
    ] {
        let mut tools = Tools::load().expect("loading tools.o (needs root)");
        let t = template(&spec(proto, dst, src)).unwrap();
        tools.configure_pktgen(&t.config).unwrap();
        let mut sources = std::collections::BTreeSet::new();
        let mut syns = 0;
        for n in 0..30 {
            let (verdict, frame) = tools.generate_one(&t.frame).unwrap();
            assert_eq!(verdict, XDP_TX, "{proto:?} {dst}");
            assert_eq!(frame.len(), t.frame.len());
            assert!(
                checksums_verify(&frame),
                "{proto:?} {dst} frame {n}: {frame:02x?}"
            );
            let packet = SlicedPacket::from_ethernet(&frame).unwrap();
            let port = match &packet.transport {
                Some(TransportSlice::Udp(udp)) => udp.source_port(),
                Some(TransportSlice::Tcp(tcp)) => {
                    syns += usize::from(tcp.syn());
                    tcp.source_port()
                }
                _ => unreachable!(),
            };
            let address = match &packet.net {
                Some(NetSlice::Ipv4(ip)) => ip.header().source_addr().to_string(),
                Some(NetSlice::Ipv6(ip)) => ip.header().source_addr().to_string(),
                _ => unreachable!(),
            };
            sources.insert((address, port));
            let stamp = usize::from(t.config.stamp_off);
            assert_eq!(
                u32::from_be_bytes(frame[stamp + 4..stamp + 8].try_into().unwrap()),
                (n % 15) as u32,
                "the stamp names the flow"
            );
            assert_ne!(&frame[stamp + 8..stamp + 16], &[0u8; 8], "a send time");
        }
        assert_eq!(sources.len(), 15, "{proto:?}: 15 flows in 30 frames");
        if proto == Proto::Tcp {
            assert_eq!(syns, 8, "every 4th of 30 frames (0, 4, ..., 28) is a SYN");
        }
    }
}

#[test]
fn frames_written_in_userspace_carry_valid_checksums() {
    for (proto, dst, src) in [
        (Proto::Udp, "198.18.100.10:53", "198.18.1.200"),
        (Proto::Tcp, "198.18.100.10:80", "198.18.1.1"),
        (Proto::Udp, "[fd00::10]:53", "fd00::1:0"),
    ] {
        let t = template(&spec(proto, dst, src)).unwrap();
        let headers = match (proto, src.contains(':')) {
            (Proto::Udp, false) => 14 + 20 + 8,
            (Proto::Tcp, false) => 14 + 20 + 20,
            (_, true) => 14 + 40 + 8,
        };
        assert_eq!(t.frame.len(), (headers + STAMP_LEN).max(60));
        for n in 0..40u64 {
            let mut frame = t.frame.clone();
            write_frame(&mut frame, &t, n, 0x0123_4567_89ab_cdef ^ n);
            assert!(checksums_verify(&frame), "{proto:?} {dst} frame {n}");
        }
    }
}

#[test]
fn userspace_flows_cycle_address_major_port_minor() {
    let t = template(&spec(Proto::Udp, "198.18.100.10:53", "198.18.1.200")).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..30u64 {
        let mut frame = t.frame.clone();
        write_frame(&mut frame, &t, n, 1);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("not IPv4")
        };
        let Some(TransportSlice::Udp(udp)) = &packet.transport else {
            panic!("not UDP")
        };
        seen.insert((ip.header().source_addr(), udp.source_port()));
    }
    assert_eq!(seen.len(), 15, "15 flows cycled");
    assert!(seen
        .iter()
        .all(|(a, p)| a.octets()[3] >= 200 && (10_000..10_007).contains(p)));
}

#[test]
fn every_nth_frame_opens_a_new_flow_in_both_writers() {
    let mut s = spec(Proto::Udp, "198.18.100.10:53", "198.18.1.0");
    s.src_count = 64;
    s.new_every = 5;
    let t = template(&s).unwrap();
    let mut tools = Tools::load().expect("loading tools.o (needs root)");
    tools.configure_pktgen(&t.config).unwrap();
    let flow_of = |frame: &[u8]| {
        let stamp = usize::from(t.config.stamp_off);
        u32::from_be_bytes(frame[stamp + 4..stamp + 8].try_into().unwrap())
    };
    for n in 0..40u64 {
        let (_, from_program) = tools.generate_one(&t.frame).unwrap();
        let mut from_userspace = t.frame.clone();
        write_frame(&mut from_userspace, &t, n, 7);
        let expected = if n % 5 == 0 { 15 + n / 5 } else { n % 15 } as u32;
        assert_eq!(flow_of(&from_program), expected, "frame {n}");
        assert_eq!(flow_of(&from_userspace), expected, "frame {n}");
        assert!(checksums_verify(&from_program));
    }
}
