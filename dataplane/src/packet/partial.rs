//! TCP/UDP checksums a sender's kernel left unfinished. A host with tx
//! checksum offload on (the default on veth) hands its device a
//! `CHECKSUM_PARTIAL` packet whose checksum field holds only the folded
//! pseudo-header sum; a veth passes the packet on as it is, and XDP and
//! AF_XDP see just the bytes. Once rewritten and sent from AF_XDP (or by
//! the XDP fast path) the frame leaves with no offload metadata, so the
//! receiver checks that field as a complete checksum and drops the packet.
//!
//! This module recognises such a frame before the rewrite (a few additions)
//! and computes its checksum from scratch after it (one pass over the
//! segment). A complete checksum that happens to look partial (about one
//! packet in 65,535) is recomputed to the same value, so a false match
//! costs only that pass. What cannot be told apart is a corrupted segment
//! whose checksum happens to equal the pseudo-header sum: it leaves with a
//! valid checksum, where an incremental update would have kept the error.

use std::net::IpAddr;

use switchyard_wire::checksum::{self, fold, pseudo_header_v4, pseudo_header_v6, sum_words};
use switchyard_wire::{ipv4, read_u16, tcp, udp};

use super::parse::Parsed;

/// Whether the TCP/UDP checksum of the frame `parsed` describes arrived
/// partial, so [`apply`](super::apply) would compute it from scratch (and
/// the XDP fast path hands the frame to a worker).
pub fn has_partial_checksum(frame: &[u8], parsed: &Parsed) -> bool {
    let Some(l4) = frame.get(parsed.l4_offset..) else {
        return false;
    };
    let (src, dst) = (parsed.key.src, parsed.key.dst);
    let (checksum, len) = match parsed.key.protocol {
        ipv4::PROTOCOL_TCP => {
            let Some(hdr) = l4.first_chunk::<{ tcp::MIN_HEADER_LEN }>() else {
                return false;
            };
            let ip_header_len = parsed.l4_offset.saturating_sub(parsed.l3_offset);
            let len = parsed.ip_total_len.saturating_sub(ip_header_len);
            (read_u16::<{ tcp::CHECKSUM }, _>(hdr), len)
        }
        ipv4::PROTOCOL_UDP => {
            let Some(hdr) = l4.first_chunk::<{ udp::HEADER_LEN }>() else {
                return false;
            };
            let len = usize::from(read_u16::<{ udp::LENGTH }, _>(hdr));
            (read_u16::<{ udp::CHECKSUM }, _>(hdr), len)
        }
        _ => return false,
    };
    is_partial(parsed.key.protocol, checksum, src, dst, len)
}

/// Whether `checksum`, of a TCP segment or UDP datagram of `len` bytes
/// from `src` to `dst`, is partial: the folded sum of that pseudo-header. A
/// few additions, on values the rewrite reads anyway.
#[inline(always)]
pub(super) fn is_partial(
    protocol: u8,
    checksum: u16,
    src: IpAddr,
    dst: IpAddr,
    len: usize,
) -> bool {
    checksum::is_partial(checksum, pseudo_header(src, dst, protocol, len))
}

/// The pseudo-header sum of either family (RFC 9293 §3.1, RFC 8200 §8.1).
/// `len` fits 16 bits for any IPv4 packet (the total length does) and the
/// IPv6 pseudo-header's 32 bits for any packet without a jumbo payload.
/// Addresses of two families (never built by `parse`) sum to 0, which no
/// checksum matches.
#[inline(always)]
fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo_header_v4(s.into(), d.into(), protocol, len as u16)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo_header_v6(&s.octets(), &d.octets(), protocol, len as u32)
        }
        _ => 0,
    }
}

/// Writes the full checksum of the `len`-byte TCP segment or UDP datagram
/// at the start of `l4`, sent from `src` to `dst`. Leaves `l4` alone when
/// it is shorter than `len` (offsets that do not fit: a caller bug). Out of
/// line: frames from a wire never need it.
#[cold]
#[inline(never)]
pub(super) fn complete(l4: &mut [u8], protocol: u8, len: usize, src: IpAddr, dst: IpAddr) {
    let at = match protocol {
        ipv4::PROTOCOL_TCP => tcp::CHECKSUM,
        ipv4::PROTOCOL_UDP => udp::CHECKSUM,
        _ => return,
    };
    let (Some(segment), Ok(len)) = (l4.get_mut(..len), u16::try_from(len)) else {
        return;
    };
    let Some(field) = segment.get_mut(at..at + 2) else {
        return;
    };
    field.fill(0);
    let checksum = !fold(pseudo_header(src, dst, protocol, usize::from(len)) + sum_words(segment));
    // A computed 0 is sent as all ones over UDP, where 0 means none (RFC 768).
    let checksum = if checksum == 0 && protocol == ipv4::PROTOCOL_UDP {
        0xffff
    } else {
        checksum
    };
    if let Some(field) = segment.get_mut(at..at + 2) {
        field.copy_from_slice(&checksum.to_be_bytes());
    }
}
