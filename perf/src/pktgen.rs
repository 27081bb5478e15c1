//! What `yard-pktgen` sends: a template frame per run (Ethernet, IPv4 or
//! IPv6, UDP or TCP, a stamp, padding) and the per-frame fields written
//! over it (source address and port from the flow index, TCP flags, the
//! stamp's flow and send time), with checksums updated from the
//! template's. The XDP program in xdp/src/bpf/tools.c writes frames in
//! live-frames mode; [`write_frame`] is its twin for the AF_XDP mode, and
//! tests check both produce frames whose checksums verify.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;
use switchyard_wire::checksum::{adjust, sum_u32};
use switchyard_wire::{ethernet, ipv4, ipv6, tcp, udp};
use switchyard_xdp::tools::{PktgenConfig, HEAD_MAX, STAMP_LEN, STAMP_MAGIC};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    Udp,
    Tcp,
}

/// The flows and frames to generate.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// First source address; frames use `src_count` consecutive ones (in
    /// the low 32 bits).
    pub src: IpAddr,
    pub src_count: u32,
    pub sport_base: u16,
    pub sport_count: u16,
    /// Flows cycled through (address-major, port-minor); 0: every frame a
    /// new flow.
    pub flows: u64,
    /// Every n-th frame opens a new flow instead, numbered after the cycled
    /// ones (0: none); src_count × sport_count should leave room for them.
    pub new_every: u32,
    pub dst: SocketAddr,
    pub proto: Proto,
    /// TCP: every n-th frame is a SYN (0: only ACKs).
    pub syn_every: u32,
    /// Frame length without the FCS (60 is a 64-byte frame on the wire).
    pub frame_len: usize,
}

/// The template frame and the program's configuration for it.
#[derive(Debug, Clone)]
pub struct Template {
    pub frame: Vec<u8>,
    pub config: PktgenConfig,
}

fn low32(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => (u128::from(a) & 0xffff_ffff) as u32,
    }
}

/// Builds the template: varying fields are zero, so checksums of real
/// frames are the template's plus the sum of what is written.
pub fn template(spec: &FlowSpec) -> Result<Template> {
    if spec.src_count == 0 || spec.sport_count == 0 {
        bail!("at least one source address and one source port");
    }
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..4].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
    let eth = PacketBuilder::ethernet2(spec.src_mac, spec.dst_mac);
    let (ip, l3_len, ipv6) = match (spec.src, spec.dst.ip()) {
        // pktgen writes all 32 bits of an IPv4 source address.
        (IpAddr::V4(_), IpAddr::V4(dst)) => (
            eth.ipv4([0; 4], dst.octets(), 64),
            ipv4::MIN_HEADER_LEN,
            false,
        ),
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let masked = u128::from(src) & !0xffff_ffffu128;
            (
                eth.ipv6(masked.to_be_bytes(), dst.octets(), 64),
                ipv6::HEADER_LEN,
                true,
            )
        }
        _ => bail!("source and destination must both be IPv4 or both IPv6"),
    };
    let l4_len = match spec.proto {
        Proto::Udp => udp::HEADER_LEN,
        Proto::Tcp => tcp::MIN_HEADER_LEN,
    };
    let headers = ethernet::HEADER_LEN + l3_len + l4_len;
    let payload_len = spec.frame_len.saturating_sub(headers).max(STAMP_LEN);
    let mut payload = vec![0u8; payload_len];
    payload[..STAMP_LEN].copy_from_slice(&stamp);
    let mut frame = Vec::with_capacity(headers + payload_len);
    match spec.proto {
        Proto::Udp => ip.udp(0, spec.dst.port()).write(&mut frame, &payload),
        Proto::Tcp => ip
            .tcp(0, spec.dst.port(), 1, 64240)
            .write(&mut frame, &payload),
    }
    .context("building the template frame")?;
    let l3_off = ethernet::HEADER_LEN as u16;
    let l4_off = l3_off + l3_len as u16;
    let ip_csum_at = usize::from(l3_off) + ipv4::CHECKSUM;
    let ip_csum = if ipv6 {
        0
    } else {
        u16::from_be_bytes([frame[ip_csum_at], frame[ip_csum_at + 1]])
    };
    let l4_csum_at = usize::from(l4_off)
        + match spec.proto {
            Proto::Udp => udp::CHECKSUM,
            Proto::Tcp => tcp::CHECKSUM,
        };
    let l4_csum = u16::from_be_bytes([frame[l4_csum_at], frame[l4_csum_at + 1]]);
    let head_len = frame.len().min(HEAD_MAX);
    let mut head = [0u8; HEAD_MAX];
    head[..head_len].copy_from_slice(&frame[..head_len]);
    Ok(Template {
        config: PktgenConfig {
            flows: spec.flows,
            saddr_base: low32(spec.src),
            saddr_count: spec.src_count,
            sport_base: spec.sport_base,
            sport_count: spec.sport_count,
            l3_off,
            l4_off,
            stamp_off: l4_off + l4_len as u16,
            ip_csum,
            l4_csum,
            proto: match spec.proto {
                Proto::Udp => ipv4::PROTOCOL_UDP,
                Proto::Tcp => ipv4::PROTOCOL_TCP,
            },
            ipv6: u8::from(ipv6),
            syn_every: spec.syn_every,
            head_len: head_len as u32,
            new_every: spec.new_every,
            pad: 0,
            head,
        },
        frame,
    })
}

/// Where the low 32 bits of an IPv6 source address sit in the header: the
/// bits pktgen writes.
const IPV6_SRC_LOW32: usize = ipv6::SRC + ipv6::ADDR_LEN - 4;

/// Writes frame `n` over a copy of the template, as the XDP program does.
/// `frame` must hold the template's bytes.
pub fn write_frame(frame: &mut [u8], template: &Template, n: u64, now_ns: u64) {
    let cfg = &template.config;
    let flow = if cfg.new_every != 0 && n.is_multiple_of(u64::from(cfg.new_every)) {
        cfg.flows + n / u64::from(cfg.new_every)
    } else if cfg.flows == 0 {
        n
    } else {
        n % cfg.flows
    };
    let sport = cfg
        .sport_base
        .wrapping_add((flow % u64::from(cfg.sport_count)) as u16);
    let saddr = cfg
        .saddr_base
        .wrapping_add(((flow / u64::from(cfg.sport_count)) % u64::from(cfg.saddr_count)) as u32);
    let (l3, l4, stamp) = (
        usize::from(cfg.l3_off),
        usize::from(cfg.l4_off),
        usize::from(cfg.stamp_off),
    );
    frame[stamp + 4..stamp + 8].copy_from_slice(&(flow as u32).to_be_bytes());
    frame[stamp + 8..stamp + 16].copy_from_slice(&now_ns.to_be_bytes());
    let mut flags = 0u16;
    if cfg.proto == ipv4::PROTOCOL_TCP {
        flags = if cfg.syn_every != 0 && n.is_multiple_of(u64::from(cfg.syn_every)) {
            tcp::FLAG_SYN
        } else {
            tcp::FLAG_ACK
        }
        .into();
        frame[l4 + tcp::FLAGS] = flags as u8;
    }
    const _: () = assert!(tcp::SRC_PORT == udp::SRC_PORT);
    frame[l4 + tcp::SRC_PORT..][..2].copy_from_slice(&sport.to_be_bytes());
    // The template holds zeros where these go: each adds its words to the
    // checksums. The flags byte is the low byte of its 16-bit word.
    let added = sum_u32(saddr)
        + u32::from(sport)
        + u32::from(flags)
        + sum_u32(flow as u32)
        + sum_u32((now_ns >> 32) as u32)
        + sum_u32(now_ns as u32);
    if cfg.ipv6 != 0 {
        frame[l3 + IPV6_SRC_LOW32..][..4].copy_from_slice(&saddr.to_be_bytes());
    } else {
        frame[l3 + ipv4::SRC..][..4].copy_from_slice(&saddr.to_be_bytes());
        frame[l3 + ipv4::CHECKSUM..][..2]
            .copy_from_slice(&adjust(cfg.ip_csum, sum_u32(saddr)).to_be_bytes());
    }
    if cfg.proto == ipv4::PROTOCOL_TCP {
        frame[l4 + tcp::CHECKSUM..][..2].copy_from_slice(&adjust(cfg.l4_csum, added).to_be_bytes());
    } else {
        let check = adjust(cfg.l4_csum, added);
        // RFC 768: a computed 0 is sent as all ones, 0 meaning "none".
        let check = if check == 0 { 0xffff } else { check };
        frame[l4 + udp::CHECKSUM..][..2].copy_from_slice(&check.to_be_bytes());
    }
}
