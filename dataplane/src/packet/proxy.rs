//! The PROXY protocol v2 header of a `fullnat` TCP flow (haproxy's PROXY
//! protocol specification, §2.2): the backend sees the LB's SNAT address,
//! so the LB tells it the client's address and the VIP the client reached
//! in a binary header ahead of the client's first byte.
//!
//! The header is spliced into the stream, not sent beside it: the backend's
//! byte stream is the header followed by the client's, so every client
//! sequence number past the start moves `L` bytes on (28 for IPv4, 52 for
//! IPv6) and every acknowledgment of client bytes, SACK edges included,
//! moves back. The header rides on the client segment that starts the
//! stream (its first sequence number after the SYN): the handshake's ACK,
//! which becomes a segment carrying the header alone, so a backend that
//! speaks first (SMTP, MySQL) hears it without waiting for client data; or
//! the client's first data, ahead of it. Whatever of it is lost, the client
//! resends from that sequence number, and the header goes again; once the
//! backend has acknowledged it, a segment at the start is only moved on.
//! The backend's SYN-ACK announces an MSS `L` smaller, so the client's
//! first segment still fits the backend's MSS with the header before it.
//!
//! Everything here edits a segment the rewrite has already translated, in
//! place with incremental checksum updates; the bytes of the header are
//! inserted by the packet I/O ([`splice`]), which owns the frame's length.

use std::net::IpAddr;

use switchyard_wire::checksum::{adjust, diff_u16, diff_u32, sum_words, update_u16};
use switchyard_wire::{ipv4, ipv6, read_u16, read_u32, tcp, write_u16, write_u32};

use super::parse::Parsed;
use super::vlan::{pop, push, TagEdit};

/// The 12 bytes every PROXY protocol v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const VERSION_PROXY: u8 = 0x21;
/// Address family and transport: TCP over IPv4, TCP over IPv6.
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;
/// Signature, version and command, family, length.
const FIXED_LEN: usize = 16;
const MAX_LEN: usize = FIXED_LEN + 36;
/// TCP option kinds an edit reads.
const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_MSS: u8 = 2;
const OPTION_SACK: u8 = 5;

/// Bytes of the header a flow of this family carries: what its client's
/// sequence numbers move by.
#[inline(always)]
pub const fn header_len(ipv6: bool) -> u32 {
    if ipv6 {
        MAX_LEN as u32
    } else {
        (FIXED_LEN + 12) as u32
    }
}

/// Where a flow's header sits in the client's stream: at `first_seq`, the
/// sequence number after the client's SYN. `delivered` once the backend
/// acknowledged it (from then on no segment carries it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStream {
    pub first_seq: u32,
    pub delivered: bool,
}

impl ProxyStream {
    pub fn starting_after(syn_seq: u32) -> Self {
        Self {
            first_seq: syn_seq.wrapping_add(1),
            delivered: false,
        }
    }
}

/// One flow's header: the client's address and port as source, the VIP's
/// as destination, no TLVs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl ProxyHeader {
    /// The header for a client reaching `vip`; `None` when the two are not
    /// of one family (`parse` never builds such a flow).
    pub fn new(client: (IpAddr, u16), vip: (IpAddr, u16)) -> Option<Self> {
        let mut bytes = [0u8; MAX_LEN];
        bytes[..12].copy_from_slice(&SIGNATURE);
        bytes[12] = VERSION_PROXY;
        let addresses = match (client.0, vip.0) {
            (IpAddr::V4(c), IpAddr::V4(v)) => {
                bytes[13] = TCP_OVER_IPV4;
                bytes[16..20].copy_from_slice(&c.octets());
                bytes[20..24].copy_from_slice(&v.octets());
                8
            }
            (IpAddr::V6(c), IpAddr::V6(v)) => {
                bytes[13] = TCP_OVER_IPV6;
                bytes[16..32].copy_from_slice(&c.octets());
                bytes[32..48].copy_from_slice(&v.octets());
                32
            }
            _ => return None,
        };
        let ports = FIXED_LEN + addresses;
        bytes[ports..ports + 2].copy_from_slice(&client.1.to_be_bytes());
        bytes[ports + 2..ports + 4].copy_from_slice(&vip.1.to_be_bytes());
        let rest = (addresses + 4) as u16;
        bytes[14..16].copy_from_slice(&rest.to_be_bytes());
        Some(Self {
            bytes,
            len: (FIXED_LEN + usize::from(rest)) as u8,
        })
    }

    /// No bytes: a splice that only cuts the frame short.
    pub const fn none() -> Self {
        Self {
            bytes: [0; MAX_LEN],
            len: 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The header bytes a frame gets, where, and the tag edit its egress link
/// wants after that: what the packet I/O does to a frame
/// ([`crate::io::Verdict::TransmitSpliced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    /// Offset of the TCP payload, where the header goes.
    pub at: u16,
    /// End of the IP packet: Ethernet padding beyond it is dropped.
    pub end: u16,
    pub header: ProxyHeader,
    pub tag: TagEdit,
}

/// Applies `splice` to the `len`-byte frame at the start of `buf`: the
/// header inserted at `at` (what follows, up to `end`, moved on), then the
/// tag edit. Returns the new length, or `None` (the frame then is not to
/// be sent) when `buf` has no room or the offsets do not fit the frame.
pub fn splice(buf: &mut [u8], len: usize, splice: &Splice) -> Option<usize> {
    let (at, end) = (usize::from(splice.at), usize::from(splice.end));
    let header = splice.header.bytes();
    let grown = end.checked_add(header.len())?;
    if at > end || end > len || grown > buf.len() {
        return None;
    }
    buf.copy_within(at..end, at + header.len());
    buf[at..at + header.len()].copy_from_slice(header);
    match splice.tag {
        TagEdit::Kept | TagEdit::Retagged => Some(grown),
        TagEdit::Push(tag) => push(buf, grown, tag),
        TagEdit::Pop => pop(buf, grown),
    }
}

/// The TCP header of the frame `parsed` describes: its offset and length
/// (options included), when it fits the frame and the IP packet.
fn tcp_header(frame: &[u8], parsed: &Parsed) -> Option<(usize, usize)> {
    if parsed.key.protocol != ipv4::PROTOCOL_TCP {
        return None;
    }
    let l4 = parsed.l4_offset;
    let fixed = frame.get(l4..)?.first_chunk::<{ tcp::MIN_HEADER_LEN }>()?;
    let len = usize::from(fixed[tcp::DATA_OFFSET] >> 4) * 4;
    let ip_end = parsed.l3_offset.checked_add(parsed.ip_total_len)?;
    if len < tcp::MIN_HEADER_LEN || l4 + len > ip_end || ip_end > frame.len() {
        return None;
    }
    Some((l4, len))
}

/// The sequence number of a TCP segment.
pub fn tcp_seq(frame: &[u8], parsed: &Parsed) -> Option<u32> {
    let (l4, _) = tcp_header(frame, parsed)?;
    let fixed = frame.get(l4..)?.first_chunk::<{ tcp::MIN_HEADER_LEN }>()?;
    Some(read_u32::<{ tcp::SEQ }, _>(fixed))
}

/// Whether the client's segment `parsed` (of a flow whose stream is
/// `stream`) is to carry the header: it starts the stream, the backend has
/// not acknowledged the header yet, and it is no SYN or RST.
pub fn carries_header(frame: &[u8], parsed: &Parsed, stream: &ProxyStream) -> bool {
    !stream.delivered
        && parsed.tcp_flags & (tcp::FLAG_SYN | tcp::FLAG_RST) == 0
        && tcp_seq(frame, parsed) == Some(stream.first_seq)
}

/// Edits a client's segment, already translated, for its backend's stream
/// of `header_len` more bytes: a segment that `carries_header` gets its
/// IP length and checksums made ready for the header at the returned
/// offset (the packet I/O inserts it); any other but a SYN has its
/// sequence number moved on. `None`: nothing is to be inserted.
pub fn to_backend(
    frame: &mut [u8],
    parsed: &Parsed,
    stream: &ProxyStream,
    header: &ProxyHeader,
) -> Option<usize> {
    let (l4, len) = tcp_header(frame, parsed)?;
    if parsed.tcp_flags & tcp::FLAG_SYN != 0 {
        return None;
    }
    if carries_header(frame, parsed, stream) {
        change_ip_length(frame, parsed, header.len() as isize)?;
        let segment = frame.get_mut(l4..)?;
        let fixed = segment.first_chunk_mut::<{ tcp::MIN_HEADER_LEN }>()?;
        // The payload starts on an even offset of the segment and the
        // header's length is even, so the bytes after it keep their
        // place in the 16-bit sum: the checksum only gains the header's
        // words and, in the pseudo-header, the longer length.
        let gained = sum_words(header.bytes()) + header.len() as u32;
        let checksum = read_u16::<{ tcp::CHECKSUM }, _>(fixed);
        write_u16::<{ tcp::CHECKSUM }, _>(fixed, adjust(checksum, gained));
        return Some(l4 + len);
    }
    let fixed = frame
        .get_mut(l4..)?
        .first_chunk_mut::<{ tcp::MIN_HEADER_LEN }>()?;
    let seq = read_u32::<{ tcp::SEQ }, _>(fixed);
    let moved = seq.wrapping_add(header.len() as u32);
    write_u32::<{ tcp::SEQ }, _>(fixed, moved);
    let checksum = read_u16::<{ tcp::CHECKSUM }, _>(fixed);
    write_u16::<{ tcp::CHECKSUM }, _>(fixed, adjust(checksum, diff_u32(seq, moved)));
    None
}

/// A client's SYN carrying data (TCP Fast Open), already translated to
/// leave from `src` to `dst`: its data would reach the backend ahead of the
/// header, so the SYN goes without it (IP length and checksum made ready
/// for the frame to end at the returned offset). The backend's SYN-ACK then
/// acknowledges the SYN alone, and the client sends its data again, after
/// the handshake, where the header goes. `None` for any other segment.
pub fn drop_syn_data(frame: &mut [u8], parsed: &Parsed, src: IpAddr, dst: IpAddr) -> Option<usize> {
    if parsed.tcp_flags & tcp::FLAG_SYN == 0 {
        return None;
    }
    let (l4, len) = tcp_header(frame, parsed)?;
    let ip_end = parsed.l3_offset + parsed.ip_total_len;
    let data = ip_end - (l4 + len);
    if data == 0 {
        return None;
    }
    change_ip_length(frame, parsed, -(data as isize))?;
    super::partial::complete(frame.get_mut(l4..)?, ipv4::PROTOCOL_TCP, len, src, dst);
    Some(l4 + len)
}

/// Edits a backend's segment, already translated, for its client's stream
/// (`header_len` bytes shorter): the acknowledgment and every SACK edge
/// move back (an acknowledgment inside the header becomes the stream's
/// start: none of the client's bytes is acknowledged yet); a SYN-ACK keeps
/// its acknowledgment (of the SYN alone) and announces an MSS `header_len`
/// smaller. Returns whether the backend has acknowledged the whole header.
pub fn to_client(frame: &mut [u8], parsed: &Parsed, stream: &ProxyStream, header_len: u32) -> bool {
    let Some((l4, len)) = tcp_header(frame, parsed) else {
        return false;
    };
    let Some(segment) = frame.get_mut(l4..l4 + len) else {
        return false;
    };
    let flags = parsed.tcp_flags;
    let mut diff = 0u32;
    let mut acked = false;
    if flags & tcp::FLAG_SYN != 0 {
        if let Some((at, mss)) = find_option(segment, OPTION_MSS, 4) {
            let clamped = mss.saturating_sub(header_len as u16).max(MIN_MSS);
            diff += diff_u16(mss, clamped);
            segment[at + 2..at + 4].copy_from_slice(&clamped.to_be_bytes());
        }
    } else if flags & tcp::FLAG_ACK != 0 {
        let ack = read_at(segment, tcp::ACK);
        acked = ack.wrapping_sub(stream.first_seq) >= header_len;
        let moved = client_seq(ack, stream.first_seq, header_len);
        diff += diff_u32(ack, moved);
        segment[tcp::ACK..tcp::ACK + 4].copy_from_slice(&moved.to_be_bytes());
        diff += shift_sack(segment, stream.first_seq, header_len);
    }
    if diff != 0 {
        let checksum = read_at16(segment, tcp::CHECKSUM);
        segment[tcp::CHECKSUM..tcp::CHECKSUM + 2]
            .copy_from_slice(&adjust(checksum, diff).to_be_bytes());
    }
    acked
}

/// An MSS announced to the client never drops below IPv4's default (RFC
/// 9293 §3.7.1): a backend announcing less is left to fragmentation.
const MIN_MSS: u16 = 536;

/// A backend-stream sequence number as the client's stream has it.
#[inline(always)]
fn client_seq(seq: u32, first_seq: u32, header_len: u32) -> u32 {
    if seq.wrapping_sub(first_seq) < header_len {
        first_seq
    } else {
        seq.wrapping_sub(header_len)
    }
}

/// Moves the edges of a SACK option's blocks back; the checksum change.
fn shift_sack(segment: &mut [u8], first_seq: u32, header_len: u32) -> u32 {
    let Some((at, _)) = find_option(segment, OPTION_SACK, 10) else {
        return 0;
    };
    let option_len = usize::from(segment[at + 1]);
    let mut diff = 0;
    let mut edge = at + 2;
    while edge + 4 <= at + option_len {
        let seq = read_at(segment, edge);
        let moved = client_seq(seq, first_seq, header_len);
        diff += diff_u32(seq, moved);
        segment[edge..edge + 4].copy_from_slice(&moved.to_be_bytes());
        edge += 4;
    }
    diff
}

/// The offset of option `kind` among the segment's options, at least
/// `min_len` long and within the header, with its first 16-bit value.
fn find_option(segment: &[u8], kind: u8, min_len: usize) -> Option<(usize, u16)> {
    let mut at = tcp::MIN_HEADER_LEN;
    while at < segment.len() {
        match segment[at] {
            OPTION_END => return None,
            OPTION_NOP => at += 1,
            found => {
                let len = usize::from(*segment.get(at + 1)?);
                if len < 2 || at + len > segment.len() {
                    return None;
                }
                if found == kind && len >= min_len {
                    return Some((at, read_at16(segment, at + 2)));
                }
                at += len;
            }
        }
    }
    None
}

fn read_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn read_at16(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_be_bytes)
}

/// Changes the IP packet's length field by `by` bytes (and the IPv4
/// header checksum with it).
fn change_ip_length(frame: &mut [u8], parsed: &Parsed, by: isize) -> Option<()> {
    let ip = frame.get_mut(parsed.l3_offset..)?;
    let changed = |old: u16| u16::try_from(i64::from(old) + by as i64).ok();
    if parsed.key.is_ipv6() {
        let hdr = ip.first_chunk_mut::<{ ipv6::HEADER_LEN }>()?;
        let old = read_u16::<{ ipv6::PAYLOAD_LEN }, _>(hdr);
        write_u16::<{ ipv6::PAYLOAD_LEN }, _>(hdr, changed(old)?);
    } else {
        let hdr = ip.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>()?;
        let old = read_u16::<{ ipv4::TOTAL_LEN }, _>(hdr);
        let new = changed(old)?;
        write_u16::<{ ipv4::TOTAL_LEN }, _>(hdr, new);
        let checksum = read_u16::<{ ipv4::CHECKSUM }, _>(hdr);
        write_u16::<{ ipv4::CHECKSUM }, _>(hdr, update_u16(checksum, old, new));
    }
    Some(())
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
