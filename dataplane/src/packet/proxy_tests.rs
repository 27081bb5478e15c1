use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::packet::parse;
use crate::packet::testutil::{
    arb_frame_spec, assert_checksums_verify, mutated, FrameSpec, L4Spec,
};

const CLIENT: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000);
const VIP: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 80);
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const SYN_ACK: u8 = 0x12;

fn header() -> ProxyHeader {
    ProxyHeader::new(CLIENT, VIP).expect("one family")
}

fn tcp(seq: u32, ack: u32, flags: u8, options: Vec<u8>, payload: &[u8]) -> FrameSpec {
    FrameSpec {
        eth_dst: [2, 0, 0, 0, 0, 1],
        eth_src: [2, 0, 0, 0, 0, 2],
        vlan: None,
        ip_src: Ipv4Addr::new(10, 0, 0, 1),
        ip_dst: Ipv4Addr::new(10, 0, 1, 2),
        ttl: 64,
        ident: 7,
        dont_fragment: true,
        ip_options: vec![],
        src_port: 20000,
        dst_port: 8080,
        l4: L4Spec::Tcp {
            seq,
            ack,
            flags,
            window: 512,
            options,
        },
        payload: payload.to_vec(),
        padding: 0,
    }
}

fn stream(first_seq: u32) -> ProxyStream {
    ProxyStream {
        first_seq,
        delivered: false,
    }
}

/// The frame after `to_backend` and, when it asked for one, the splice.
fn sent_to_backend(mut frame: Vec<u8>, stream: &ProxyStream) -> Vec<u8> {
    let parsed = parse(&frame).expect("parses");
    let header = header();
    if let Some(at) = to_backend(&mut frame, &parsed, stream, &header) {
        let end = parsed.l3_offset + parsed.ip_total_len;
        let len = frame.len();
        frame.resize(len + header.len(), 0);
        let plan = Splice {
            at: at as u16,
            end: end as u16,
            header,
            tag: TagEdit::Kept,
        };
        let new_len = splice(&mut frame, len, &plan).expect("room");
        frame.truncate(new_len);
    }
    frame
}

#[test]
fn the_ipv4_header_is_the_specification_s_layout() {
    let mut expected = SIGNATURE.to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    expected.extend_from_slice(&[198, 51, 100, 7, 192, 0, 2, 10]);
    expected.extend_from_slice(&40000u16.to_be_bytes());
    expected.extend_from_slice(&80u16.to_be_bytes());
    assert_eq!(header().bytes(), expected.as_slice());
    assert_eq!(header().len() as u32, header_len(false));
}

#[test]
fn the_ipv6_header_carries_both_addresses_whole() {
    let client: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let vip: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    let header = ProxyHeader::new((client.into(), 40000), (vip.into(), 443)).unwrap();
    let bytes = header.bytes();
    assert_eq!(bytes.len() as u32, header_len(true));
    assert_eq!(&bytes[12..16], &[0x21, 0x21, 0x00, 0x24]);
    assert_eq!(&bytes[16..32], &client.octets());
    assert_eq!(&bytes[32..48], &vip.octets());
    assert_eq!(&bytes[48..52], &[0x9c, 0x40, 0x01, 0xbb]);
    assert_eq!(ProxyHeader::new((client.into(), 1), VIP), None);
}

#[test]
fn the_handshake_ack_becomes_a_segment_carrying_the_header_alone() {
    let sent = sent_to_backend(tcp(1001, 5001, ACK, vec![], &[]).build(), &stream(1001));
    let expected = tcp(1001, 5001, ACK, vec![], header().bytes()).build();
    assert_eq!(sent, expected);
    assert_checksums_verify(&sent, &parse(&sent).unwrap());
}

#[test]
fn padding_after_a_short_segment_is_dropped_with_the_splice() {
    let mut padded = tcp(1001, 5001, ACK, vec![], &[]);
    padded.padding = 6;
    let sent = sent_to_backend(padded.build(), &stream(1001));
    assert_eq!(sent, tcp(1001, 5001, ACK, vec![], header().bytes()).build());
}

#[test]
fn once_the_backend_has_the_header_a_segment_at_the_start_only_moves_on() {
    let delivered = ProxyStream {
        first_seq: 1001,
        delivered: true,
    };
    let sent = sent_to_backend(tcp(1001, 5001, PSH_ACK, vec![], b"hi").build(), &delivered);
    assert_eq!(sent, tcp(1029, 5001, PSH_ACK, vec![], b"hi").build());
}

#[test]
fn syns_and_resets_carry_no_header() {
    let syn = tcp(1000, 0, 0x02, vec![2, 4, 5, 0xb4], &[]).build();
    assert_eq!(sent_to_backend(syn.clone(), &stream(1001)), syn);
    // A reset at the start lands where the backend's stream now is.
    let rst = sent_to_backend(tcp(1001, 5001, 0x14, vec![], &[]).build(), &stream(1001));
    assert_eq!(rst, tcp(1029, 5001, 0x14, vec![], &[]).build());
}

#[test]
fn a_syn_s_data_stays_behind_for_the_stream_after_the_header() {
    let mss = vec![2, 4, 5, 0xb4];
    let mut frame = tcp(1000, 0, 0x02, mss.clone(), b"early data").build();
    let parsed = parse(&frame).unwrap();
    let (src, dst) = (parsed.key.src, parsed.key.dst);
    let at = drop_syn_data(&mut frame, &parsed, src, dst).expect("a SYN with data");
    let len = frame.len();
    let cut = Splice {
        at: at as u16,
        end: at as u16,
        header: ProxyHeader::none(),
        tag: TagEdit::Kept,
    };
    let new_len = splice(&mut frame, len, &cut).unwrap();
    frame.truncate(new_len);
    assert_eq!(frame, tcp(1000, 0, 0x02, mss.clone(), &[]).build());
    let mut plain = tcp(1000, 0, 0x02, mss, &[]).build();
    let parsed = parse(&plain).unwrap();
    assert_eq!(drop_syn_data(&mut plain, &parsed, src, dst), None);
}

#[test]
fn a_syn_ack_announces_an_mss_the_header_fits_beside() {
    // NOP NOP, MSS 1460, window scale 7, NOP.
    let options = vec![1, 1, 2, 4, 0x05, 0xb4, 3, 3, 7, 1, 1, 1];
    let mut frame = tcp(5000, 1001, SYN_ACK, options.clone(), &[]).build();
    let parsed = parse(&frame).unwrap();
    assert!(!to_client(&mut frame, &parsed, &stream(1001), 28));
    let mut clamped = options;
    clamped[4..6].copy_from_slice(&(1460u16 - 28).to_be_bytes());
    assert_eq!(frame, tcp(5000, 1001, SYN_ACK, clamped, &[]).build());
}

#[test]
fn acknowledgments_and_sack_edges_move_back_by_the_header() {
    // NOP NOP SACK with two blocks.
    let sack = |edges: [u32; 4]| {
        let mut options = vec![1, 1, 5, 18];
        for edge in edges {
            options.extend_from_slice(&edge.to_be_bytes());
        }
        options
    };
    let mut frame = tcp(5001, 2029, ACK, sack([3029, 4029, 5029, 6029]), &[]).build();
    let parsed = parse(&frame).unwrap();
    assert!(to_client(&mut frame, &parsed, &stream(1001), 28));
    assert_eq!(
        frame,
        tcp(5001, 2001, ACK, sack([3001, 4001, 5001, 6001]), &[]).build()
    );
}

#[test]
fn an_acknowledgment_inside_the_header_acknowledges_no_client_byte() {
    for ack in [1001, 1015, 1028] {
        let mut frame = tcp(5001, ack, ACK, vec![], &[]).build();
        let parsed = parse(&frame).unwrap();
        assert!(!to_client(&mut frame, &parsed, &stream(1001), 28), "{ack}");
        assert_eq!(frame, tcp(5001, 1001, ACK, vec![], &[]).build(), "{ack}");
    }
    // The whole header, no client byte: the client's stream start.
    let mut frame = tcp(5001, 1029, ACK, vec![], &[]).build();
    let parsed = parse(&frame).unwrap();
    assert!(to_client(&mut frame, &parsed, &stream(1001), 28));
    assert_eq!(frame, tcp(5001, 1001, ACK, vec![], &[]).build());
}

#[test]
fn sequence_numbers_wrap_around() {
    let first = u32::MAX - 9;
    let sent = sent_to_backend(tcp(first + 5, 1, ACK, vec![], b"x").build(), &stream(first));
    assert_eq!(
        sent,
        tcp(first.wrapping_add(33), 1, ACK, vec![], b"x").build()
    );
    let mut frame = tcp(1, 18, ACK, vec![], &[]).build();
    let parsed = parse(&frame).unwrap();
    assert!(to_client(&mut frame, &parsed, &stream(first), 28));
    assert_eq!(frame, tcp(1, u32::MAX - 9, ACK, vec![], &[]).build());
}

#[test]
fn a_splice_pushes_or_pops_the_tag_after_inserting() {
    let mut tagged = tcp(1001, 5001, ACK, vec![], &[]);
    tagged.vlan = Some((0x8100, 100));
    let frame = tagged.build();
    let parsed = parse(&frame).unwrap();
    let mut frame = frame.clone();
    let at = to_backend(&mut frame, &parsed, &stream(1001), &header()).unwrap();
    let len = frame.len();
    frame.resize(len + 28, 0);
    let plan = Splice {
        at: at as u16,
        end: len as u16,
        header: header(),
        tag: TagEdit::Pop,
    };
    let new_len = splice(&mut frame, len, &plan).unwrap();
    frame.truncate(new_len);
    assert_eq!(
        frame,
        tcp(1001, 5001, ACK, vec![], header().bytes()).build()
    );
    // No room: nothing is sent.
    let mut short = tcp(1001, 5001, ACK, vec![], &[]).build();
    let len = short.len();
    assert_eq!(splice(&mut short, len, &plan), None);
}

fn tcp_specs() -> impl Strategy<Value = FrameSpec> {
    arb_frame_spec().prop_filter("TCP", |s| matches!(s.l4, L4Spec::Tcp { .. }))
}

proptest! {
    /// Whatever the segment (options, IP options, tag, payload), the one
    /// that starts the stream leaves as header followed by its payload,
    /// with checksums that verify from scratch.
    #[test]
    fn the_header_is_spliced_before_any_payload(mut spec in tcp_specs()) {
        let L4Spec::Tcp { seq, ref mut flags, .. } = spec.l4 else { unreachable!() };
        *flags &= !(0x02 | 0x04);
        prop_assume!(spec.build().len() + 28 <= u16::MAX as usize);
        let sent = sent_to_backend(spec.build(), &stream(seq));
        let mut expected = spec.clone();
        expected.payload = [header().bytes(), &spec.payload].concat();
        expected.padding = 0;
        prop_assert_eq!(&sent, &expected.build());
        assert_checksums_verify(&sent, &parse(&sent).unwrap());
    }

    /// Any other segment but a SYN moves on by the header's length.
    #[test]
    fn later_segments_move_on(mut spec in tcp_specs(), offset in 1u32..u32::MAX) {
        let L4Spec::Tcp { seq, ref mut flags, .. } = spec.l4 else { unreachable!() };
        *flags &= !0x02;
        let first = seq.wrapping_sub(offset);
        let sent = sent_to_backend(spec.build(), &stream(first));
        let mut expected = spec.clone();
        if let L4Spec::Tcp { ref mut seq, .. } = expected.l4 {
            *seq = seq.wrapping_add(28);
        }
        prop_assert_eq!(sent, expected.build());
    }

    /// No bytes make the edits panic or write outside the frame.
    #[test]
    fn edits_never_panic(frame in mutated(tcp_specs()), first in any::<u32>(), delivered in any::<bool>()) {
        let Ok(parsed) = parse(&frame) else { return Ok(()) };
        let stream = ProxyStream { first_seq: first, delivered };
        let mut copy = frame.clone();
        let at = to_backend(&mut copy, &parsed, &stream, &header());
        let mut back = frame.clone();
        to_client(&mut back, &parsed, &stream, 52);
        if let Some(at) = at {
            let len = copy.len();
            copy.resize(len + 28, 0);
            let plan = Splice {
                at: at as u16,
                end: (parsed.l3_offset + parsed.ip_total_len) as u16,
                header: header(),
                tag: TagEdit::Push([0x81, 0, 0, 5]),
            };
            let _ = splice(&mut copy, len, &plan);
        }
    }
}
