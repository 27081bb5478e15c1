//! Test oracle: builds frames from a description with every checksum
//! computed from scratch, independently of `checksum.rs`, and proptest
//! strategies over such descriptions. The builder itself is checked against
//! etherparse's checksum functions below, so tests that compare `apply`'s
//! output with a rebuilt frame rest on two independent computations.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::{FlowKey, Parsed, Rewrite};

/// RFC 1071 checksum of the concatenation of `parts`, summed the slow way.
/// Each part must have even length except the last.
pub(super) fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).copied().map_or(0, u64::from);
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 pseudo-header of RFC 9293 §3.1 / RFC 768.
/// The pseudo-header bytes of RFC 9293 §3.1 (IPv4) or RFC 8200 §8.1 (IPv6).
fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, l4_len: usize) -> Vec<u8> {
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, protocol]);
            pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
        }
        _ => {
            for address in [src, dst] {
                if let IpAddr::V6(a) = address {
                    pseudo.extend_from_slice(&a.octets());
                }
            }
            pseudo.extend_from_slice(&(l4_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        }
    }
    pseudo
}

/// Asserts that the IPv4 header checksum and the TCP/UDP checksum of the
/// frame `parsed` describes verify from scratch (a UDP checksum of 0 means
/// none was sent and is accepted as such).
pub(super) fn assert_checksums_verify(frame: &[u8], parsed: &Parsed) {
    if !parsed.key.is_ipv6() {
        let ip_header = &frame[parsed.l3_offset..parsed.l4_offset];
        assert_eq!(internet_checksum(&[ip_header]), 0, "IPv4 header checksum");
    }
    let segment = &frame[parsed.l4_offset..parsed.l3_offset + parsed.ip_total_len];
    let key = &parsed.key;
    if key.protocol == 17 && segment[6..8] == [0, 0] {
        return;
    }
    let pseudo = pseudo_header(key.src, key.dst, key.protocol, segment.len());
    assert_eq!(internet_checksum(&[&pseudo, segment]), 0, "L4 checksum");
}

/// `frame` as a sender with tx checksum offload hands it over (Linux
/// `CHECKSUM_PARTIAL`): the TCP/UDP checksum field holds the pseudo-header
/// sum, folded and not inverted, summed here the slow way. A UDP datagram
/// without a checksum is returned as it is.
pub(super) fn with_partial_checksum(frame: &[u8], parsed: &Parsed) -> Vec<u8> {
    let mut frame = frame.to_vec();
    let key = &parsed.key;
    let (at, len) = if key.protocol == 6 {
        (
            16,
            parsed.ip_total_len - (parsed.l4_offset - parsed.l3_offset),
        )
    } else {
        let l4 = &frame[parsed.l4_offset..];
        if l4[6..8] == [0, 0] {
            return frame;
        }
        (6, usize::from(u16::from_be_bytes([l4[4], l4[5]])))
    };
    let pseudo = pseudo_header(key.src, key.dst, key.protocol, len);
    let partial = !internet_checksum(&[&pseudo]);
    let field = parsed.l4_offset + at;
    frame[field..field + 2].copy_from_slice(&partial.to_be_bytes());
    frame
}

#[derive(Debug, Clone)]
pub(super) enum L4Spec {
    Tcp {
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: Vec<u8>,
    },
    Udp {
        checksum: bool,
    },
}

/// A frame by its fields.
#[derive(Debug, Clone)]
pub(super) struct FrameSpec {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// (TPID, TCI) of one VLAN tag.
    pub vlan: Option<(u16, u16)>,
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    /// Length a multiple of 4, at most 40.
    pub ip_options: Vec<u8>,
    pub src_port: u16,
    pub dst_port: u16,
    pub l4: L4Spec,
    pub payload: Vec<u8>,
    /// Zero bytes after the IPv4 packet.
    pub padding: usize,
}

impl FrameSpec {
    pub(super) fn protocol(&self) -> u8 {
        match self.l4 {
            L4Spec::Tcp { .. } => 6,
            L4Spec::Udp { .. } => 17,
        }
    }

    pub(super) fn key(&self) -> FlowKey {
        FlowKey {
            src: self.ip_src.into(),
            dst: self.ip_dst.into(),
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: self.protocol(),
        }
    }

    fn l4_segment(&self) -> Vec<u8> {
        let mut segment = Vec::new();
        segment.extend_from_slice(&self.src_port.to_be_bytes());
        segment.extend_from_slice(&self.dst_port.to_be_bytes());
        let checksum_at = match &self.l4 {
            L4Spec::Tcp {
                seq,
                ack,
                flags,
                window,
                options,
            } => {
                segment.extend_from_slice(&seq.to_be_bytes());
                segment.extend_from_slice(&ack.to_be_bytes());
                let data_offset = (20 + options.len()) / 4;
                segment.extend_from_slice(&[(data_offset as u8) << 4, *flags]);
                segment.extend_from_slice(&window.to_be_bytes());
                segment.extend_from_slice(&[0, 0, 0, 0]);
                segment.extend_from_slice(options);
                Some(16)
            }
            L4Spec::Udp { checksum } => {
                let length = 8 + self.payload.len();
                segment.extend_from_slice(&(length as u16).to_be_bytes());
                segment.extend_from_slice(&[0, 0]);
                checksum.then_some(6)
            }
        };
        segment.extend_from_slice(&self.payload);
        if let Some(at) = checksum_at {
            let pseudo = pseudo_header(
                self.ip_src.into(),
                self.ip_dst.into(),
                self.protocol(),
                segment.len(),
            );
            let mut checksum = internet_checksum(&[&pseudo, &segment]);
            if self.protocol() == 17 && checksum == 0 {
                // RFC 768: a computed 0 is sent as all ones.
                checksum = 0xffff;
            }
            segment[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
        }
        segment
    }

    pub(super) fn ip_total_len(&self) -> usize {
        20 + self.ip_options.len() + self.l4_segment().len()
    }

    pub(super) fn build(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        if let Some((tpid, tci)) = self.vlan {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        frame.extend_from_slice(&[0x08, 0x00]);

        let segment = self.l4_segment();
        let header_len = 20 + self.ip_options.len();
        let mut ip = Vec::with_capacity(header_len);
        ip.push(0x40 | (header_len / 4) as u8);
        ip.push(0);
        ip.extend_from_slice(&((header_len + segment.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&self.ident.to_be_bytes());
        ip.extend_from_slice(&[if self.dont_fragment { 0x40 } else { 0 }, 0]);
        ip.extend_from_slice(&[self.ttl, self.protocol(), 0, 0]);
        ip.extend_from_slice(&self.ip_src.octets());
        ip.extend_from_slice(&self.ip_dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let checksum = internet_checksum(&[&ip]);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());

        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&segment);
        frame.resize(frame.len() + self.padding, 0);
        frame
    }

    /// The frame as it should look after `apply(rewrite)`.
    pub(super) fn rewritten(&self, rewrite: &Rewrite) -> FrameSpec {
        FrameSpec {
            eth_dst: rewrite.eth_dst,
            eth_src: rewrite.eth_src,
            ip_src: v4(rewrite.ip_src),
            ip_dst: v4(rewrite.ip_dst),
            src_port: rewrite.src_port,
            dst_port: rewrite.dst_port,
            ..self.clone()
        }
    }
}

fn arb_l4() -> impl Strategy<Value = L4Spec> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            (0usize..=10).prop_flat_map(|words| prop::collection::vec(any::<u8>(), words * 4)),
        )
            .prop_map(|(seq, ack, flags, window, options)| L4Spec::Tcp {
                seq,
                ack,
                flags,
                window,
                options
            }),
        any::<bool>().prop_map(|checksum| L4Spec::Udp { checksum }),
    ]
}

/// Valid Ethernet/IPv4 TCP or UDP frames, with or without a VLAN tag, IP
/// options, TCP options, payload and padding.
pub(super) fn arb_frame_spec() -> impl Strategy<Value = FrameSpec> {
    let link = (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        prop::option::of((prop::sample::select(vec![0x8100u16, 0x88a8]), any::<u16>())),
    );
    let ip = (
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u16>(),
        any::<bool>(),
        (0usize..=10).prop_flat_map(|words| prop::collection::vec(any::<u8>(), words * 4)),
    );
    let l4 = (
        any::<u16>(),
        any::<u16>(),
        arb_l4(),
        prop::collection::vec(any::<u8>(), 0..64),
        0usize..20,
    );
    (link, ip, l4).prop_map(
        |(
            (eth_dst, eth_src, vlan),
            (ip_src, ip_dst, ttl, ident, dont_fragment, ip_options),
            (src_port, dst_port, l4, payload, padding),
        )| FrameSpec {
            eth_dst,
            eth_src,
            vlan,
            ip_src: Ipv4Addr::from(ip_src),
            ip_dst: Ipv4Addr::from(ip_dst),
            ttl,
            ident,
            dont_fragment,
            ip_options,
            src_port,
            dst_port,
            l4,
            payload,
            padding,
        },
    )
}

pub(super) fn arb_rewrite() -> impl Strategy<Value = Rewrite> {
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(
            |(eth_src, eth_dst, ip_src, ip_dst, src_port, dst_port)| Rewrite {
                eth_src,
                eth_dst,
                ip_src: Ipv4Addr::from(ip_src).into(),
                ip_dst: Ipv4Addr::from(ip_dst).into(),
                src_port,
                dst_port,
            },
        )
}

/// Valid frames with a few bytes among the first 64 (the headers)
/// overwritten, and sometimes cut short: inputs near the edge of validity.
pub(super) fn mutated(specs: impl Strategy<Value = FrameSpec>) -> impl Strategy<Value = Vec<u8>> {
    (
        specs,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(spec, edits, cut)| {
            let mut frame = spec.build();
            let span = frame.len().min(64);
            for (at, byte) in edits {
                frame[at.index(span)] = byte;
            }
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            frame
        })
}

/// The IPv4 address a `FrameSpec` (IPv4 only) takes.
fn v4(address: IpAddr) -> Ipv4Addr {
    match address {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => panic!("FrameSpec builds IPv4 frames, not {a}"),
    }
}

/// An IPv6 extension header to put between the fixed header and L4: its
/// Next Header value and its bytes (the first, its own Next Header, is
/// filled in by [`ipv6_frame`]).
pub(super) struct Ext {
    pub kind: u8,
    pub bytes: Vec<u8>,
}

impl Ext {
    /// A Hop-by-Hop or Destination Options header of `units` 8-byte
    /// units, filled with one PadN option.
    pub fn options(kind: u8, units: u8) -> Ext {
        let len = usize::from(units) * 8;
        let mut bytes = vec![0; len];
        bytes[1] = units - 1;
        bytes[2] = 1; // PadN
        bytes[3] = (len - 4) as u8;
        Ext { kind, bytes }
    }
}

/// An Ethernet frame carrying IPv6 TCP (`protocol` 6, SYN) or UDP from
/// `src` to `dst`, built by etherparse, with `exts` spliced in after the
/// fixed header. Extension headers are outside the pseudo-header, so the
/// L4 checksum etherparse computed stays right.
pub(super) fn ipv6_frame(
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    protocol: u8,
    ports: (u16, u16),
    payload: &[u8],
    exts: &[Ext],
) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(
        [2, 0, 0, 0, 0, 0x0c],
        [2, 0, 0, 0, 0, 0x1b],
    )
    .ipv6(src.octets(), dst.octets(), 64);
    let mut frame = Vec::new();
    if protocol == 6 {
        let builder = builder.tcp(ports.0, ports.1, 1, 65535).syn();
        builder.write(&mut frame, payload).unwrap();
    } else {
        let builder = builder.udp(ports.0, ports.1);
        builder.write(&mut frame, payload).unwrap();
    }
    if exts.is_empty() {
        return frame;
    }
    let mut spliced = frame[..54].to_vec();
    let mut next = protocol;
    let mut chain = Vec::new();
    for ext in exts.iter().rev() {
        let mut bytes = ext.bytes.clone();
        bytes[0] = next;
        next = ext.kind;
        chain.splice(0..0, bytes);
    }
    spliced[14 + 6] = next;
    let payload_len = u16::from_be_bytes([spliced[18], spliced[19]]) as usize + chain.len();
    spliced[18..20].copy_from_slice(&(payload_len as u16).to_be_bytes());
    spliced.extend_from_slice(&chain);
    spliced.extend_from_slice(&frame[54..]);
    spliced
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    proptest! {
        /// The oracle agrees with an independent implementation.
        #[test]
        fn builder_checksums_match_etherparse(spec in arb_frame_spec()) {
            let frame = spec.build();
            let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &sliced.net else { panic!("not IPv4") };
            let header = ip.header();
            prop_assert_eq!(header.to_header().calc_header_checksum(), header.header_checksum());
            let (src, dst) = (header.source(), header.destination());
            match sliced.transport.as_ref().unwrap() {
                TransportSlice::Tcp(tcp) => {
                    prop_assert_eq!(tcp.calc_checksum_ipv4(src, dst).unwrap(), tcp.checksum());
                }
                TransportSlice::Udp(udp) if udp.checksum() != 0 => {
                    let expected = udp
                        .to_header()
                        .calc_checksum_ipv4_raw(src, dst, udp.payload())
                        .unwrap();
                    prop_assert_eq!(expected, udp.checksum());
                }
                TransportSlice::Udp(_) => {
                    let sent_without_checksum = matches!(spec.l4, L4Spec::Udp { checksum: false });
                    prop_assert!(sent_without_checksum);
                }
                other => panic!("unexpected transport {other:?}"),
            }
        }
    }
}
