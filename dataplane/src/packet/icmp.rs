//! ICMP and ICMPv6 as the load balancer meets them: an echo request to a
//! VIP, answered in place ([`echo_reply`]), and an error quoting a packet
//! of a translated flow, translated in place so the host it is sent to sees
//! the packet as that host sent it ([`translate`]). [`classify`] reads the
//! message and, for an error, the quoted packet's IP header (IPv6 extension
//! headers walked with the same bound as `parse`) and ports. Every checksum
//! a rewrite touches is updated incrementally: the outer IPv4 header's, the
//! ICMP message's (ICMPv6's over its pseudo-header too), the quoted IPv4
//! header's and the quoted TCP/UDP one's where its bytes are quoted. Pure,
//! allocation-free and panic-free on any bytes, like the rest of `packet`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_wire::checksum::{adjust, diff_u16, fold, pseudo_header_v6, sum_words};
use switchyard_wire::{
    ethernet, icmp, ipv4, ipv6, read_bytes, read_u16, read_u32, tcp, udp, write_bytes, write_u16,
};

use super::parse::{FlowKey, L3};
use super::rewrite::address_diff;

/// TTL and hop limit of an echo reply: a fresh packet of this host's, so
/// the value a host starts its own packets with (Linux's default).
pub const REPLY_TTL: u8 = 64;

/// Why an ICMP message is not handled; the worker counts each by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpDrop {
    /// Shorter than its header, an echo request whose checksum does not
    /// verify, or an error whose quoted IP header, or the 8 bytes after it
    /// that hold the ports, cannot be read.
    Malformed,
    /// A message Switchyard translates no flow for: an error quoting
    /// something other than the first bytes of a TCP or UDP packet (ICMP,
    /// a later fragment), or a type that is neither an echo request nor
    /// an error (an echo reply, a redirect).
    NoFlow,
}

/// What an ICMP message asks of the load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp {
    /// An echo request whose checksum verifies.
    EchoRequest,
    /// An error about a TCP or UDP packet.
    Error(Quote),
}

/// The packet an error message quotes, with where its headers sit in the
/// frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// The quoted packet's 5-tuple, as its sender sent it.
    pub key: FlowKey,
    /// Start of the ICMP message.
    icmp: usize,
    /// Start of the quoted IP header.
    ip: usize,
    /// Start of the quoted TCP/UDP header.
    l4: usize,
    /// End of the ICMP message (and of the outer IP packet).
    end: usize,
}

/// Which of a packet's two addresses (or endpoints) a translation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// An error's translation: the outer header's `outer` address becomes
/// `outer_address`, the quoted packet's `quoted` endpoint becomes
/// `quoted_endpoint`, and the frame gets new MACs for its next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub outer: Side,
    pub outer_address: IpAddr,
    pub quoted: Side,
    pub quoted_endpoint: (IpAddr, u16),
}

/// Reads the ICMP (`l3.protocol` 1 over IPv4) or ICMPv6 (58 over IPv6)
/// message of the unfragmented packet `l3` describes (`parse_l3` of this
/// frame). An echo request is verified (it is answered, so a corrupted one
/// must not be); an error is not (its translation updates the checksum
/// incrementally, which keeps an error an error, RFC 1624 §2).
pub fn classify(frame: &[u8], l3: &L3) -> Result<Icmp, IcmpDrop> {
    let end = l3.l3_offset + l3.ip_total_len;
    let message = frame.get(l3.l4_offset..end).ok_or(IcmpDrop::Malformed)?;
    let hdr: &[u8; icmp::HEADER_LEN] = message.first_chunk().ok_or(IcmpDrop::Malformed)?;
    let (kind, code) = (hdr[icmp::TYPE], hdr[icmp::CODE]);
    let v6 = l3.src.is_ipv6();
    let (echo, error) = if v6 {
        (icmp::v6::TYPE_ECHO_REQUEST, icmp::v6::is_error(kind))
    } else {
        (icmp::v4::TYPE_ECHO_REQUEST, icmp::v4::is_error(kind))
    };
    if kind == echo && code == 0 {
        return match message_sum(message, l3) {
            0xffff => Ok(Icmp::EchoRequest),
            _ => Err(IcmpDrop::Malformed),
        };
    }
    if !error {
        return Err(IcmpDrop::NoFlow);
    }
    let ip = l3.l4_offset + icmp::ERROR_QUOTE;
    let quote = frame.get(ip..end).ok_or(IcmpDrop::Malformed)?;
    let (key, l4) = if v6 {
        quoted_ipv6(quote)?
    } else {
        quoted_ipv4(quote)?
    };
    // The ports, and with them the UDP checksum, are in the first 8 bytes
    // of either header: what RFC 792 promises and every ICMPv6 error holds.
    if quote.len() < l4 + udp::HEADER_LEN {
        return Err(IcmpDrop::Malformed);
    }
    let ports: &[u8; udp::HEADER_LEN] = quote
        .get(l4..)
        .and_then(|l4| l4.first_chunk())
        .ok_or(IcmpDrop::Malformed)?;
    Ok(Icmp::Error(Quote {
        key: FlowKey {
            src_port: read_u16::<{ udp::SRC_PORT }, _>(ports),
            dst_port: read_u16::<{ udp::DST_PORT }, _>(ports),
            ..key
        },
        icmp: l3.l4_offset,
        ip,
        l4: ip + l4,
        end,
    }))
}

/// The one's complement sum an ICMP message verifies with: 0xffff when its
/// checksum is right (ICMPv6's covers the pseudo-header, RFC 4443 §2.3).
fn message_sum(message: &[u8], l3: &L3) -> u16 {
    let pseudo = match (l3.src, l3.dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => pseudo_header_v6(
            &src.octets(),
            &dst.octets(),
            ipv6::NEXT_HEADER_ICMPV6,
            message.len() as u32,
        ),
        _ => 0,
    };
    fold(pseudo + sum_words(message))
}

/// The quoted IPv4 packet's addresses and protocol (ports zero), and where
/// its L4 header starts in `quote`.
fn quoted_ipv4(quote: &[u8]) -> Result<(FlowKey, usize), IcmpDrop> {
    let hdr: &[u8; ipv4::MIN_HEADER_LEN] = quote.first_chunk().ok_or(IcmpDrop::Malformed)?;
    let header_len = usize::from(hdr[ipv4::VERSION_IHL] & 0x0f) * 4;
    if hdr[ipv4::VERSION_IHL] >> 4 != ipv4::VERSION || header_len < ipv4::MIN_HEADER_LEN {
        return Err(IcmpDrop::Malformed);
    }
    // Only a first fragment (or a whole packet) starts with the ports.
    if read_u16::<{ ipv4::FLAGS_FRAGMENT_OFFSET }, _>(hdr) & ipv4::FRAGMENT_OFFSET_MASK != 0 {
        return Err(IcmpDrop::NoFlow);
    }
    let protocol = tcp_or_udp(hdr[ipv4::PROTOCOL])?;
    let key = FlowKey {
        src: IpAddr::V4(Ipv4Addr::from(read_u32::<{ ipv4::SRC }, _>(hdr))),
        dst: IpAddr::V4(Ipv4Addr::from(read_u32::<{ ipv4::DST }, _>(hdr))),
        src_port: 0,
        dst_port: 0,
        protocol,
    };
    Ok((key, header_len))
}

/// The quoted IPv6 packet's addresses and upper-layer protocol (ports
/// zero), and where its L4 header starts in `quote`: the extension headers
/// are walked, at most `ipv6::MAX_EXT_HEADERS`, inside the quote.
fn quoted_ipv6(quote: &[u8]) -> Result<(FlowKey, usize), IcmpDrop> {
    let hdr: &[u8; ipv6::HEADER_LEN] = quote.first_chunk().ok_or(IcmpDrop::Malformed)?;
    if ipv6::version(hdr) != ipv6::VERSION {
        return Err(IcmpDrop::Malformed);
    }
    let src = Ipv6Addr::from(read_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, _>(hdr));
    let dst = Ipv6Addr::from(read_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, _>(hdr));
    // As `parse` refuses them: they would alias IPv4 flows in every table.
    if src.to_ipv4_mapped().is_some() || dst.to_ipv4_mapped().is_some() {
        return Err(IcmpDrop::Malformed);
    }
    let mut next = hdr[ipv6::NEXT_HEADER];
    let mut offset = ipv6::HEADER_LEN;
    for _ in 0..=ipv6::MAX_EXT_HEADERS {
        if !is_extension_header(next) {
            let key = FlowKey {
                src: IpAddr::V6(src),
                dst: IpAddr::V6(dst),
                src_port: 0,
                dst_port: 0,
                protocol: tcp_or_udp(next)?,
            };
            return Ok((key, offset));
        }
        let ext: &[u8; ipv6::ext::MIN_LEN] = quote
            .get(offset..)
            .and_then(|ext| ext.first_chunk())
            .ok_or(IcmpDrop::Malformed)?;
        let len = match next {
            ipv6::NEXT_HEADER_FRAGMENT if ipv6::fragment::offset_bytes(ext) != 0 => {
                return Err(IcmpDrop::NoFlow)
            }
            ipv6::NEXT_HEADER_FRAGMENT => ipv6::fragment::HEADER_LEN,
            // The destination in the header is not the final one: no flow
            // of Switchyard's is sent so.
            ipv6::NEXT_HEADER_ROUTING if ext[ipv6::routing::SEGMENTS_LEFT] != 0 => {
                return Err(IcmpDrop::NoFlow)
            }
            // AH counts 4-byte units, less two (RFC 4302 §2.2).
            ipv6::NEXT_HEADER_AUTH => (usize::from(ext[ipv6::ext::HDR_EXT_LEN]) + 2) * 4,
            _ => ipv6::ext::header_len(ext[ipv6::ext::HDR_EXT_LEN]),
        };
        next = ext[ipv6::ext::NEXT_HEADER];
        offset += len;
    }
    // One more extension header than `parse` walks.
    Err(IcmpDrop::Malformed)
}

const fn is_extension_header(next: u8) -> bool {
    matches!(
        next,
        ipv6::NEXT_HEADER_HOP_BY_HOP
            | ipv6::NEXT_HEADER_DESTINATION_OPTIONS
            | ipv6::NEXT_HEADER_ROUTING
            | ipv6::NEXT_HEADER_FRAGMENT
            | ipv6::NEXT_HEADER_AUTH
    )
}

fn tcp_or_udp(protocol: u8) -> Result<u8, IcmpDrop> {
    match protocol {
        ipv4::PROTOCOL_TCP | ipv4::PROTOCOL_UDP => Ok(protocol),
        _ => Err(IcmpDrop::NoFlow),
    }
}

/// Turns the echo request `l3` describes (classified [`Icmp::EchoRequest`])
/// into its reply, in place: MACs and addresses swapped, TTL or hop limit
/// [`REPLY_TTL`], type echo reply; identifier, sequence, data, IPv4 options
/// and IPv6 extension headers as they came. Swapping the addresses leaves
/// every sum unchanged (the IPv4 header's and ICMPv6's pseudo-header); the
/// TTL changes the IPv4 header checksum and the type the ICMP one. Returns
/// false, having written nothing, if `l3` does not fit the frame.
pub fn echo_reply(frame: &mut [u8], l3: &L3) -> bool {
    let Some((l2, rest)) = frame.split_at_mut_checked(l3.l3_offset) else {
        return false;
    };
    let Some((ip, message)) = l3
        .l4_offset
        .checked_sub(l3.l3_offset)
        .and_then(|len| rest.split_at_mut_checked(len))
    else {
        return false;
    };
    let (Some(eth), Some(hdr)) = (
        l2.first_chunk_mut::<{ ethernet::HEADER_LEN }>(),
        message.first_chunk_mut::<{ icmp::HEADER_LEN }>(),
    ) else {
        return false;
    };
    let reply = match l3.src {
        IpAddr::V4(_) => {
            let Some(ip) = ip.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>() else {
                return false;
            };
            let old = read_u16::<{ ipv4::TTL }, _>(ip);
            let new = u16::from_be_bytes([REPLY_TTL, ip[ipv4::PROTOCOL]]);
            let checksum = read_u16::<{ ipv4::CHECKSUM }, _>(ip);
            write_u16::<{ ipv4::CHECKSUM }, _>(ip, adjust(checksum, diff_u16(old, new)));
            ip[ipv4::TTL] = REPLY_TTL;
            let (src, dst) = (
                read_bytes::<{ ipv4::SRC }, 4, _>(ip),
                read_bytes::<{ ipv4::DST }, 4, _>(ip),
            );
            write_bytes::<{ ipv4::SRC }, 4, _>(ip, dst);
            write_bytes::<{ ipv4::DST }, 4, _>(ip, src);
            icmp::v4::TYPE_ECHO_REPLY
        }
        IpAddr::V6(_) => {
            let Some(ip) = ip.first_chunk_mut::<{ ipv6::HEADER_LEN }>() else {
                return false;
            };
            ip[ipv6::HOP_LIMIT] = REPLY_TTL;
            let (src, dst) = (
                read_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, _>(ip),
                read_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, _>(ip),
            );
            write_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, _>(ip, dst);
            write_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, _>(ip, src);
            icmp::v6::TYPE_ECHO_REPLY
        }
    };
    let old = read_u16::<{ icmp::TYPE }, _>(hdr);
    let new = u16::from_be_bytes([reply, hdr[icmp::CODE]]);
    let checksum = read_u16::<{ icmp::CHECKSUM }, _>(hdr);
    write_u16::<{ icmp::CHECKSUM }, _>(hdr, adjust(checksum, diff_u16(old, new)));
    hdr[icmp::TYPE] = reply;
    let (src, dst) = (
        read_bytes::<{ ethernet::SRC }, 6, _>(eth),
        read_bytes::<{ ethernet::DST }, 6, _>(eth),
    );
    write_bytes::<{ ethernet::SRC }, 6, _>(eth, dst);
    write_bytes::<{ ethernet::DST }, 6, _>(eth, src);
    true
}

/// Translates the error `l3` and `quote` describe (from [`classify`] of
/// this frame) in place: new MACs, one outer address, one quoted endpoint,
/// and every checksum they are covered by. Returns false, having written
/// nothing, if an address is of the other family or an offset does not fit
/// the frame.
///
/// The quoted TCP/UDP checksum is updated whenever its 2 bytes are quoted,
/// even when the segment is cut short and no one could verify it: a stack
/// that looks at it then sees the value the sender's own packet carried.
pub fn translate(frame: &mut [u8], l3: &L3, quote: &Quote, translation: &Translation) -> bool {
    let (old_outer, old_quoted) = match (translation.outer, translation.quoted) {
        (Side::Src, Side::Src) => (l3.src, quote.key.src),
        (Side::Src, Side::Dst) => (l3.src, quote.key.dst),
        (Side::Dst, Side::Src) => (l3.dst, quote.key.src),
        (Side::Dst, Side::Dst) => (l3.dst, quote.key.dst),
    };
    let (new_quoted, new_port) = translation.quoted_endpoint;
    let v6 = l3.src.is_ipv6();
    if [old_outer, old_quoted, translation.outer_address, new_quoted]
        .iter()
        .any(|a| a.is_ipv6() != v6)
    {
        return false;
    }
    let Some(mut headers) = ErrorHeaders::split(frame, l3, quote) else {
        return false;
    };
    let outer_diff = address_diff(old_outer, translation.outer_address);
    let quoted_diff = address_diff(old_quoted, new_quoted);
    // What the ICMP checksum sees change: the quoted bytes, and for ICMPv6
    // the outer addresses through its pseudo-header.
    let mut icmp_diff = if v6 { outer_diff } else { 0 };

    write_bytes::<{ ethernet::DST }, 6, _>(headers.eth, translation.eth_dst);
    write_bytes::<{ ethernet::SRC }, 6, _>(headers.eth, translation.eth_src);
    if let Ip::V4(ip) = &mut headers.outer {
        let checksum = read_u16::<{ ipv4::CHECKSUM }, _>(ip);
        write_u16::<{ ipv4::CHECKSUM }, _>(ip, adjust(checksum, outer_diff));
    }
    headers
        .outer
        .write(translation.outer, translation.outer_address);
    if let Ip::V4(ip) = &mut headers.quoted {
        let old = read_u16::<{ ipv4::CHECKSUM }, _>(ip);
        let new = adjust(old, quoted_diff);
        write_u16::<{ ipv4::CHECKSUM }, _>(ip, new);
        icmp_diff += diff_u16(old, new);
    }
    headers.quoted.write(translation.quoted, new_quoted);
    icmp_diff += quoted_diff;

    let old_port = match translation.quoted {
        Side::Src => quote.key.src_port,
        Side::Dst => quote.key.dst_port,
    };
    let port_diff = diff_u16(old_port, new_port);
    let at = match translation.quoted {
        Side::Src => udp::SRC_PORT,
        Side::Dst => udp::DST_PORT,
    };
    if let Some(field) = headers.l4.get_mut(at..at + 2) {
        field.copy_from_slice(&new_port.to_be_bytes());
    }
    icmp_diff += port_diff;
    let at = match quote.key.protocol {
        ipv4::PROTOCOL_TCP => tcp::CHECKSUM,
        _ => udp::CHECKSUM,
    };
    if let Some(field) = headers
        .l4
        .get_mut(at..)
        .and_then(|field| field.first_chunk_mut::<2>())
    {
        let old = u16::from_be_bytes(*field);
        // A UDP datagram sent without a checksum (RFC 768's 0) keeps none.
        let none = quote.key.protocol == ipv4::PROTOCOL_UDP && old == 0;
        if !none {
            let mut new = adjust(old, quoted_diff + port_diff);
            if new == 0 && quote.key.protocol == ipv4::PROTOCOL_UDP {
                new = 0xffff;
            }
            *field = new.to_be_bytes();
            icmp_diff += diff_u16(old, new);
        }
    }
    let checksum = read_u16::<{ icmp::CHECKSUM }, _>(headers.icmp);
    write_u16::<{ icmp::CHECKSUM }, _>(headers.icmp, adjust(checksum, icmp_diff));
    true
}

enum Ip<'a> {
    V4(&'a mut [u8; ipv4::MIN_HEADER_LEN]),
    V6(&'a mut [u8; ipv6::HEADER_LEN]),
}

impl Ip<'_> {
    /// Writes `address` on `side`; one of the other family (which
    /// `translate` has refused) is not written.
    fn write(&mut self, side: Side, address: IpAddr) {
        match (self, address, side) {
            (Ip::V4(ip), IpAddr::V4(a), Side::Src) => {
                write_bytes::<{ ipv4::SRC }, 4, _>(ip, a.octets())
            }
            (Ip::V4(ip), IpAddr::V4(a), Side::Dst) => {
                write_bytes::<{ ipv4::DST }, 4, _>(ip, a.octets())
            }
            (Ip::V6(ip), IpAddr::V6(a), Side::Src) => {
                write_bytes::<{ ipv6::SRC }, { ipv6::ADDR_LEN }, _>(ip, a.octets())
            }
            (Ip::V6(ip), IpAddr::V6(a), Side::Dst) => {
                write_bytes::<{ ipv6::DST }, { ipv6::ADDR_LEN }, _>(ip, a.octets())
            }
            _ => {}
        }
    }
}

/// Mutable views of everything a translation writes, each borrowed before
/// anything is written.
struct ErrorHeaders<'a> {
    eth: &'a mut [u8; ethernet::HEADER_LEN],
    outer: Ip<'a>,
    icmp: &'a mut [u8; icmp::HEADER_LEN],
    quoted: Ip<'a>,
    /// The quoted TCP/UDP bytes, at least the 8 that hold the ports.
    l4: &'a mut [u8],
}

impl<'a> ErrorHeaders<'a> {
    fn split(frame: &'a mut [u8], l3: &L3, quote: &Quote) -> Option<Self> {
        let frame = frame.get_mut(..quote.end)?;
        let (l2, rest) = frame.split_at_mut_checked(l3.l3_offset)?;
        let (outer, rest) = rest.split_at_mut_checked(quote.icmp.checked_sub(l3.l3_offset)?)?;
        let (icmp, rest) = rest.split_at_mut_checked(quote.ip.checked_sub(quote.icmp)?)?;
        let (quoted, l4) = rest.split_at_mut_checked(quote.l4.checked_sub(quote.ip)?)?;
        if l4.len() < udp::HEADER_LEN {
            return None;
        }
        let ip = |bytes: &'a mut [u8]| -> Option<Ip<'a>> {
            Some(match l3.src {
                IpAddr::V4(_) => Ip::V4(bytes.first_chunk_mut()?),
                IpAddr::V6(_) => Ip::V6(bytes.first_chunk_mut()?),
            })
        };
        Some(ErrorHeaders {
            eth: l2.first_chunk_mut()?,
            outer: ip(outer)?,
            icmp: icmp.first_chunk_mut()?,
            quoted: ip(quoted)?,
            l4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse::parse_l3;
    use crate::packet::testutil::internet_checksum;
    use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, PacketBuilder};

    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];
    const LB_BACKEND_ARM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2b];
    const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbe];
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const ROUTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const BACKEND: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5));
    const CLIENT6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10));
    const ROUTER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));
    const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1));
    const BACKEND6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5));

    fn v4(a: IpAddr) -> [u8; 4] {
        match a {
            IpAddr::V4(a) => a.octets(),
            IpAddr::V6(_) => panic!("not IPv4"),
        }
    }

    fn v6(a: IpAddr) -> [u8; 16] {
        match a {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(_) => panic!("not IPv6"),
        }
    }

    #[derive(Clone, Copy)]
    enum L4 {
        Tcp,
        Udp,
    }

    /// An IP packet (no Ethernet) from `src` to `dst`, every checksum
    /// computed by etherparse, cut to its first `keep` bytes: what an
    /// error quotes.
    fn packet(src: (IpAddr, u16), dst: (IpAddr, u16), l4: L4, keep: usize) -> Vec<u8> {
        let payload = [0x5a; 200];
        let mut bytes = Vec::new();
        match (src.0, l4) {
            (IpAddr::V4(_), L4::Udp) => PacketBuilder::ipv4(v4(src.0), v4(dst.0), 60)
                .udp(src.1, dst.1)
                .write(&mut bytes, &payload),
            (IpAddr::V4(_), L4::Tcp) => PacketBuilder::ipv4(v4(src.0), v4(dst.0), 60)
                .tcp(src.1, dst.1, 7, 1024)
                .ack(9)
                .write(&mut bytes, &payload),
            (IpAddr::V6(_), L4::Udp) => PacketBuilder::ipv6(v6(src.0), v6(dst.0), 60)
                .udp(src.1, dst.1)
                .write(&mut bytes, &payload),
            (IpAddr::V6(_), L4::Tcp) => PacketBuilder::ipv6(v6(src.0), v6(dst.0), 60)
                .tcp(src.1, dst.1, 7, 1024)
                .ack(9)
                .write(&mut bytes, &payload),
        }
        .unwrap();
        bytes.truncate(keep);
        bytes
    }

    #[derive(Clone, Copy)]
    enum Error {
        /// IPv4 fragmentation needed, IPv6 packet too big.
        TooBig,
        PortUnreachable,
        TimeExceeded,
    }

    /// An Ethernet frame carrying `error` from `src` to `dst`, quoting
    /// `quote`, its checksum computed by etherparse.
    fn error_frame(
        macs: ([u8; 6], [u8; 6]),
        src: IpAddr,
        dst: IpAddr,
        error: Error,
        quote: &[u8],
    ) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(macs.0, macs.1);
        let mut frame = Vec::new();
        match src {
            IpAddr::V4(_) => {
                let kind = match error {
                    Error::TooBig => Icmpv4Type::DestinationUnreachable(
                        icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
                    ),
                    Error::PortUnreachable => {
                        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port)
                    }
                    Error::TimeExceeded => {
                        Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit)
                    }
                };
                eth.ipv4(v4(src), v4(dst), 64)
                    .icmpv4(kind)
                    .write(&mut frame, quote)
            }
            IpAddr::V6(_) => {
                let kind = match error {
                    Error::TooBig => Icmpv6Type::PacketTooBig { mtu: 1280 },
                    Error::PortUnreachable => {
                        Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port)
                    }
                    Error::TimeExceeded => {
                        Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)
                    }
                };
                eth.ipv6(v6(src), v6(dst), 64)
                    .icmpv6(kind)
                    .write(&mut frame, quote)
            }
        }
        .unwrap();
        frame
    }

    fn echo_frame(
        macs: ([u8; 6], [u8; 6]),
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
        reply: bool,
    ) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(macs.0, macs.1);
        let data = b"switchyard echo data, odd length";
        let mut frame = Vec::new();
        match (src, reply) {
            (IpAddr::V4(_), false) => eth
                .ipv4(v4(src), v4(dst), ttl)
                .icmpv4_echo_request(0x1234, 7)
                .write(&mut frame, data),
            (IpAddr::V4(_), true) => eth
                .ipv4(v4(src), v4(dst), ttl)
                .icmpv4_echo_reply(0x1234, 7)
                .write(&mut frame, data),
            (IpAddr::V6(_), false) => eth
                .ipv6(v6(src), v6(dst), ttl)
                .icmpv6_echo_request(0x1234, 7)
                .write(&mut frame, data),
            (IpAddr::V6(_), true) => eth
                .ipv6(v6(src), v6(dst), ttl)
                .icmpv6_echo_reply(0x1234, 7)
                .write(&mut frame, data),
        }
        .unwrap();
        frame
    }

    /// Checks, from scratch and independently of `checksum.rs`, the outer
    /// IPv4 header checksum, the ICMP checksum (over the IPv6
    /// pseudo-header for ICMPv6), and in a quote the IPv4 header checksum
    /// and, when the quote holds the whole segment, the TCP/UDP checksum.
    fn assert_checksums_verify(frame: &[u8]) {
        let l3 = parse_l3(frame).unwrap();
        let end = l3.l3_offset + l3.ip_total_len;
        let message = &frame[l3.l4_offset..end];
        match (l3.src, l3.dst) {
            (IpAddr::V4(_), _) => {
                assert_eq!(
                    internet_checksum(&[&frame[l3.l3_offset..l3.l4_offset]]),
                    0,
                    "IPv4 header"
                );
                assert_eq!(internet_checksum(&[message]), 0, "ICMP");
            }
            (src, dst) => {
                let pseudo = pseudo(src, dst, 58, message.len());
                assert_eq!(internet_checksum(&[&pseudo, message]), 0, "ICMPv6");
            }
        }
        let quote = &message[8..];
        let (src, dst, protocol, header_len, total) = match quote[0] >> 4 {
            4 => {
                let header_len = usize::from(quote[0] & 0x0f) * 4;
                assert_eq!(
                    internet_checksum(&[&quote[..header_len]]),
                    0,
                    "quoted IPv4 header"
                );
                let src = IpAddr::from(<[u8; 4]>::try_from(&quote[12..16]).unwrap());
                let dst = IpAddr::from(<[u8; 4]>::try_from(&quote[16..20]).unwrap());
                let total = usize::from(u16::from_be_bytes([quote[2], quote[3]]));
                (src, dst, quote[9], header_len, total)
            }
            _ => {
                let src = IpAddr::from(<[u8; 16]>::try_from(&quote[8..24]).unwrap());
                let dst = IpAddr::from(<[u8; 16]>::try_from(&quote[24..40]).unwrap());
                let total = 40 + usize::from(u16::from_be_bytes([quote[4], quote[5]]));
                (src, dst, quote[6], 40, total)
            }
        };
        if quote.len() == total {
            let l4 = &quote[header_len..];
            let pseudo = pseudo(src, dst, protocol, l4.len());
            assert_eq!(internet_checksum(&[&pseudo, l4]), 0, "quoted L4");
        }
    }

    fn pseudo(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                bytes.extend_from_slice(&src.octets());
                bytes.extend_from_slice(&dst.octets());
                bytes.extend_from_slice(&[0, protocol]);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                bytes.extend_from_slice(&v6(src));
                bytes.extend_from_slice(&v6(dst));
                bytes.extend_from_slice(&(len as u32).to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, protocol]);
            }
        }
        bytes
    }

    fn classified(frame: &[u8]) -> (L3, Result<Icmp, IcmpDrop>) {
        let l3 = parse_l3(frame).unwrap();
        (l3, classify(frame, &l3))
    }

    #[test]
    fn an_echo_request_becomes_the_reply_a_host_would_build() {
        for (client, vip) in [(CLIENT, VIP), (CLIENT6, VIP6)] {
            let mut frame = echo_frame((CLIENT_MAC, LB_MAC), client, vip, 57, false);
            let (l3, icmp) = classified(&frame);
            assert_eq!(icmp, Ok(Icmp::EchoRequest));
            assert!(echo_reply(&mut frame, &l3));
            assert_eq!(
                frame,
                echo_frame((LB_MAC, CLIENT_MAC), vip, client, REPLY_TTL, true)
            );
            assert_checksums_verify_echo(&frame);
        }
    }

    fn assert_checksums_verify_echo(frame: &[u8]) {
        let l3 = parse_l3(frame).unwrap();
        let message = &frame[l3.l4_offset..l3.l3_offset + l3.ip_total_len];
        if l3.src.is_ipv4() {
            assert_eq!(internet_checksum(&[&frame[l3.l3_offset..l3.l4_offset]]), 0);
            assert_eq!(internet_checksum(&[message]), 0);
        } else {
            let pseudo = pseudo(l3.src, l3.dst, 58, message.len());
            assert_eq!(internet_checksum(&[&pseudo, message]), 0);
        }
    }

    #[test]
    fn an_echo_request_with_a_bad_checksum_is_malformed() {
        for (client, vip) in [(CLIENT, VIP), (CLIENT6, VIP6)] {
            let mut frame = echo_frame((CLIENT_MAC, LB_MAC), client, vip, 57, false);
            let last = frame.len() - 1;
            frame[last] ^= 0x01;
            assert_eq!(classified(&frame).1, Err(IcmpDrop::Malformed));
        }
    }

    #[test]
    fn an_echo_reply_is_no_flow_of_ours() {
        for (client, vip) in [(CLIENT, VIP), (CLIENT6, VIP6)] {
            let frame = echo_frame((CLIENT_MAC, LB_MAC), client, vip, 57, true);
            assert_eq!(classified(&frame).1, Err(IcmpDrop::NoFlow));
        }
    }

    /// A router between the LB and the client reports on a translated
    /// reply (VIP:80 → client:40000); the backend must get the error as if
    /// about its own packet (backend:8080 → client:40000).
    fn to_backend_case(
        vip: IpAddr,
        client: IpAddr,
        router: IpAddr,
        backend: IpAddr,
        l4: L4,
        keep: usize,
        error: Error,
    ) {
        let sent = packet((vip, 80), (client, 40000), l4, keep);
        let mut frame = error_frame((CLIENT_MAC, LB_MAC), router, vip, error, &sent);
        let (l3, icmp) = classified(&frame);
        let Ok(Icmp::Error(quote)) = icmp else {
            panic!("{icmp:?}")
        };
        let protocol = match l4 {
            L4::Tcp => 6,
            L4::Udp => 17,
        };
        assert_eq!(
            quote.key,
            FlowKey {
                src: vip,
                dst: client,
                src_port: 80,
                dst_port: 40000,
                protocol
            }
        );
        let translation = Translation {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            outer: Side::Dst,
            outer_address: backend,
            quoted: Side::Src,
            quoted_endpoint: (backend, 8080),
        };
        assert!(translate(&mut frame, &l3, &quote, &translation));
        let as_backend_sent = packet((backend, 8080), (client, 40000), l4, keep);
        let expected = error_frame(
            (LB_BACKEND_ARM_MAC, BACKEND_MAC),
            router,
            backend,
            error,
            &as_backend_sent,
        );
        assert_eq!(frame, expected);
        assert_checksums_verify(&frame);
    }

    #[test]
    fn an_error_about_a_reply_reaches_the_backend_as_about_its_own_packet() {
        for l4 in [L4::Tcp, L4::Udp] {
            for error in [Error::TooBig, Error::PortUnreachable, Error::TimeExceeded] {
                // Whole, cut inside the payload, cut to the 8 bytes RFC 792 promises.
                for keep in [usize::MAX, 60, 28] {
                    to_backend_case(VIP, CLIENT, ROUTER, BACKEND, l4, keep, error);
                }
                for keep in [usize::MAX, 100, 48] {
                    to_backend_case(VIP6, CLIENT6, ROUTER6, BACKEND6, l4, keep, error);
                }
            }
        }
    }

    /// The backend reports on a client's packet (client:40000 →
    /// backend:8080); the client must see it come from the VIP, about its
    /// packet to VIP:80.
    fn to_client_case(vip: IpAddr, client: IpAddr, backend: IpAddr, l4: L4, keep: usize) {
        let received = packet((client, 40000), (backend, 8080), l4, keep);
        let mut frame = error_frame(
            (BACKEND_MAC, LB_BACKEND_ARM_MAC),
            backend,
            client,
            Error::PortUnreachable,
            &received,
        );
        let (l3, icmp) = classified(&frame);
        let Ok(Icmp::Error(quote)) = icmp else {
            panic!("{icmp:?}")
        };
        let translation = Translation {
            eth_src: LB_MAC,
            eth_dst: CLIENT_MAC,
            outer: Side::Src,
            outer_address: vip,
            quoted: Side::Dst,
            quoted_endpoint: (vip, 80),
        };
        assert!(translate(&mut frame, &l3, &quote, &translation));
        let as_client_sent = packet((client, 40000), (vip, 80), l4, keep);
        let expected = error_frame(
            (LB_MAC, CLIENT_MAC),
            vip,
            client,
            Error::PortUnreachable,
            &as_client_sent,
        );
        assert_eq!(frame, expected);
        assert_checksums_verify(&frame);
    }

    #[test]
    fn a_backend_s_error_about_a_client_packet_reaches_the_client_from_the_vip() {
        for l4 in [L4::Tcp, L4::Udp] {
            for keep in [usize::MAX, 60, 28] {
                to_client_case(VIP, CLIENT, BACKEND, l4, keep);
            }
            for keep in [usize::MAX, 100, 48] {
                to_client_case(VIP6, CLIENT6, BACKEND6, l4, keep);
            }
        }
    }

    #[test]
    fn a_udp_datagram_sent_without_a_checksum_keeps_none() {
        let mut sent = packet((VIP, 80), (CLIENT, 40000), L4::Udp, usize::MAX);
        sent[26..28].copy_from_slice(&[0, 0]);
        let mut frame = error_frame((CLIENT_MAC, LB_MAC), ROUTER, VIP, Error::TooBig, &sent);
        let (l3, icmp) = classified(&frame);
        let Ok(Icmp::Error(quote)) = icmp else {
            panic!("{icmp:?}")
        };
        let translation = Translation {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            outer: Side::Dst,
            outer_address: BACKEND,
            quoted: Side::Src,
            quoted_endpoint: (BACKEND, 8080),
        };
        assert!(translate(&mut frame, &l3, &quote, &translation));
        let quoted_udp = l3.l4_offset + 8 + 20;
        assert_eq!(frame[quoted_udp + 6..quoted_udp + 8], [0, 0]);
        let message = &frame[l3.l4_offset..];
        assert_eq!(internet_checksum(&[message]), 0, "ICMP");
    }

    #[test]
    fn a_quote_too_short_for_the_ports_is_malformed() {
        for (vip, client, router, keep) in [
            (VIP, CLIENT, ROUTER, 27),
            (VIP6, CLIENT6, ROUTER6, 47),
            (VIP, CLIENT, ROUTER, 12),
        ] {
            let sent = packet((vip, 80), (client, 40000), L4::Udp, keep);
            let frame = error_frame((CLIENT_MAC, LB_MAC), router, vip, Error::TooBig, &sent);
            assert_eq!(classified(&frame).1, Err(IcmpDrop::Malformed), "{keep}");
        }
    }

    #[test]
    fn an_error_quoting_an_icmp_message_is_no_flow_of_ours() {
        let echo = echo_frame((CLIENT_MAC, LB_MAC), VIP, CLIENT, 64, true);
        let frame = error_frame(
            (CLIENT_MAC, LB_MAC),
            ROUTER,
            VIP,
            Error::TimeExceeded,
            &echo[14..],
        );
        assert_eq!(classified(&frame).1, Err(IcmpDrop::NoFlow));
    }

    #[test]
    fn an_error_quoting_a_later_fragment_is_no_flow_of_ours() {
        let mut sent = packet((VIP, 80), (CLIENT, 40000), L4::Udp, 60);
        // Offset 185 × 8 bytes, then the header checksum made right again.
        sent[6..8].copy_from_slice(&185u16.to_be_bytes());
        sent[10..12].copy_from_slice(&[0, 0]);
        let checksum = internet_checksum(&[&sent[..20]]);
        sent[10..12].copy_from_slice(&checksum.to_be_bytes());
        let frame = error_frame((CLIENT_MAC, LB_MAC), ROUTER, VIP, Error::TooBig, &sent);
        assert_eq!(classified(&frame).1, Err(IcmpDrop::NoFlow));
    }

    /// The quoted IPv6 packet's extension headers are walked to its ports.
    #[test]
    fn a_quoted_ipv6_packet_s_extension_headers_are_walked() {
        let sent = packet((VIP6, 80), (CLIENT6, 40000), L4::Udp, usize::MAX);
        // Insert an 8-byte Destination Options header (PadN) before UDP.
        let mut with_ext = sent[..40].to_vec();
        with_ext[6] = ipv6::NEXT_HEADER_DESTINATION_OPTIONS;
        let payload_len = u16::from_be_bytes([sent[4], sent[5]]) + 8;
        with_ext[4..6].copy_from_slice(&payload_len.to_be_bytes());
        with_ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        with_ext.extend_from_slice(&sent[40..]);
        let frame = error_frame(
            (CLIENT_MAC, LB_MAC),
            ROUTER6,
            VIP6,
            Error::TooBig,
            &with_ext,
        );
        let (l3, icmp) = classified(&frame);
        let Ok(Icmp::Error(quote)) = icmp else {
            panic!("{icmp:?}")
        };
        assert_eq!(
            (quote.key.src_port, quote.key.dst_port, quote.key.protocol),
            (80, 40000, 17)
        );
        let mut frame = frame;
        let translation = Translation {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            outer: Side::Dst,
            outer_address: BACKEND6,
            quoted: Side::Src,
            quoted_endpoint: (BACKEND6, 8080),
        };
        assert!(translate(&mut frame, &l3, &quote, &translation));
        let l3 = parse_l3(&frame).unwrap();
        let message = &frame[l3.l4_offset..];
        let pseudo = pseudo(l3.src, l3.dst, 58, message.len());
        assert_eq!(internet_checksum(&[&pseudo, message]), 0, "ICMPv6");
        let udp = &message[8 + 48..];
        assert_eq!(&udp[..4], &[0x1f, 0x90, 0x9c, 0x40]);
        let pseudo = pseudo_bytes_v6(BACKEND6, CLIENT6, udp.len());
        assert_eq!(internet_checksum(&[&pseudo, udp]), 0, "quoted UDP");
    }

    fn pseudo_bytes_v6(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
        pseudo(src, dst, 17, len)
    }

    #[test]
    fn a_translation_of_the_other_family_writes_nothing() {
        let sent = packet((VIP, 80), (CLIENT, 40000), L4::Udp, usize::MAX);
        let mut frame = error_frame((CLIENT_MAC, LB_MAC), ROUTER, VIP, Error::TooBig, &sent);
        let before = frame.clone();
        let (l3, icmp) = classified(&frame);
        let Ok(Icmp::Error(quote)) = icmp else {
            panic!("{icmp:?}")
        };
        let translation = Translation {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            outer: Side::Dst,
            outer_address: BACKEND6,
            quoted: Side::Src,
            quoted_endpoint: (BACKEND6, 8080),
        };
        assert!(!translate(&mut frame, &l3, &quote, &translation));
        assert_eq!(frame, before);
    }

    /// A translation toward `frame`'s family: any addresses do.
    fn translation_for(frame_is_v6: bool) -> Translation {
        let (outer, quoted) = if frame_is_v6 {
            (BACKEND6, VIP6)
        } else {
            (BACKEND, VIP)
        };
        Translation {
            eth_src: LB_BACKEND_ARM_MAC,
            eth_dst: BACKEND_MAC,
            outer: Side::Dst,
            outer_address: outer,
            quoted: Side::Dst,
            quoted_endpoint: (quoted, 443),
        }
    }

    fn seeds() -> Vec<Vec<u8>> {
        let error = |src, dst, router, l4, keep, error| {
            let sent = packet(src, dst, l4, keep);
            error_frame((CLIENT_MAC, LB_MAC), router, src.0, error, &sent)
        };
        vec![
            error(
                (VIP, 80),
                (CLIENT, 1),
                ROUTER,
                L4::Tcp,
                usize::MAX,
                Error::TooBig,
            ),
            error(
                (VIP, 80),
                (CLIENT, 1),
                ROUTER,
                L4::Udp,
                28,
                Error::PortUnreachable,
            ),
            error(
                (VIP6, 80),
                (CLIENT6, 1),
                ROUTER6,
                L4::Tcp,
                60,
                Error::TooBig,
            ),
            error(
                (VIP6, 80),
                (CLIENT6, 1),
                ROUTER6,
                L4::Udp,
                usize::MAX,
                Error::TimeExceeded,
            ),
            echo_frame((CLIENT_MAC, LB_MAC), CLIENT, VIP, 9, false),
            echo_frame((CLIENT_MAC, LB_MAC), CLIENT6, VIP6, 9, false),
        ]
    }

    proptest::proptest! {
        /// Whatever the bytes: no panic, nothing written past the IP
        /// packet, and an ICMP checksum that verified still verifies after
        /// an echo reply or a translation.
        #[test]
        fn mangled_icmp_is_refused_or_handled_with_its_checksum_kept(
            seed in 0usize..6,
            edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..6),
            cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
        ) {
            let mut frame = seeds().swap_remove(seed);
            let span = frame.len();
            for (at, byte) in edits {
                frame[at.index(span)] = byte;
            }
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            let Ok(l3) = parse_l3(&frame) else {
                return Ok(());
            };
            let end = l3.l3_offset + l3.ip_total_len;
            let verified = |frame: &[u8], l3: &L3| {
                message_sum(&frame[l3.l4_offset..end], l3) == 0xffff
            };
            let before = frame.clone();
            let was_verified = verified(&frame, &l3);
            match classify(&frame, &l3) {
                Ok(Icmp::EchoRequest) => {
                    proptest::prop_assert!(echo_reply(&mut frame, &l3));
                    let l3 = parse_l3(&frame).unwrap();
                    proptest::prop_assert!(verified(&frame, &l3));
                }
                Ok(Icmp::Error(quote)) => {
                    if translate(&mut frame, &l3, &quote, &translation_for(l3.src.is_ipv6())) {
                        let after = parse_l3(&frame).unwrap();
                        proptest::prop_assert_eq!(verified(&frame, &after), was_verified);
                    } else {
                        proptest::prop_assert_eq!(&frame, &before);
                    }
                }
                Err(_) => proptest::prop_assert_eq!(&frame, &before),
            }
            proptest::prop_assert_eq!(&frame[end..], &before[end..]);
        }
    }
}
