//! The frames of L2 announcements: ARP requests and IPv6 neighbour
//! solicitations read off the segment, and the ARP replies, gratuitous ARP
//! requests and neighbour advertisements sent back.
//!
//! Pure code over byte slices: every read is bounds-checked, anything
//! malformed or unexpected is `None`, and nothing here can panic on input
//! (a property test feeds it arbitrary bytes). Only untagged Ethernet
//! frames are understood: the speaker's sockets are bound to the served
//! interfaces themselves, where the kernel has already taken off a tag it
//! handles.

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const BROADCAST_MAC: Mac = [0xff; 6];
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

const ETH_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_LEN: usize = 40;
/// The smallest Ethernet frame without its FCS; shorter ones are padded,
/// as a NIC would, so every driver sends them alike.
const MIN_FRAME: usize = 60;
const ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// RFC 4861 §7.1.1: Neighbor Discovery messages are only valid with hop
/// limit 255, which proves they were not forwarded by a router.
const ND_HOP_LIMIT: u8 = 255;
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
/// Bound on the options walked in one solicitation.
const MAX_ND_OPTIONS: usize = 16;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An ARP request: who has `target`? tell `sender_ip` at `sender_mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRequest {
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target: Ipv4Addr,
}

impl ArpRequest {
    /// A request whose sender claims the target itself: another node's
    /// gratuitous ARP, an announcement to take note of, not a question.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target
    }
}

/// A neighbour solicitation for `target` from `source` (unspecified while
/// the sender runs duplicate address detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicitation {
    pub source: Ipv6Addr,
    /// Where the answer goes on the link: the source link-layer address
    /// option, or the frame's own source.
    pub source_mac: Mac,
    pub target: Ipv6Addr,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

fn mac_at(bytes: &[u8], at: usize) -> Option<Mac> {
    bytes.get(at..at + 6)?.try_into().ok()
}

fn ipv4_at(bytes: &[u8], at: usize) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

fn ipv6_at(bytes: &[u8], at: usize) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

/// The ARP request for an IPv4 address over Ethernet in `frame`, if it is
/// one (RFC 826).
pub fn parse_arp_request(frame: &[u8]) -> Option<ArpRequest> {
    if be16(frame, 12)? != ETHERTYPE_ARP {
        return None;
    }
    let arp = frame.get(ETH_LEN..ETH_LEN + ARP_LEN)?;
    // Hardware Ethernet (1), protocol IPv4, 6- and 4-byte addresses, request.
    if be16(arp, 0)? != 1 || be16(arp, 2)? != 0x0800 || arp[4] != 6 || arp[5] != 4 {
        return None;
    }
    if be16(arp, 6)? != 1 {
        return None;
    }
    Some(ArpRequest {
        sender_mac: mac_at(arp, 8)?,
        sender_ip: ipv4_at(arp, 14)?,
        target: ipv4_at(arp, 24)?,
    })
}

fn arp_frame(
    dst: Mac,
    src: Mac,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MIN_FRAME);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    frame.extend_from_slice(&op.to_be_bytes());
    frame.extend_from_slice(&sha);
    frame.extend_from_slice(&spa.octets());
    frame.extend_from_slice(&tha);
    frame.extend_from_slice(&tpa.octets());
    frame.resize(MIN_FRAME, 0);
    frame
}

/// The reply to `request`: its target is at `mac`.
pub fn arp_reply(mac: Mac, request: &ArpRequest) -> Vec<u8> {
    arp_frame(
        request.sender_mac,
        mac,
        2,
        mac,
        request.target,
        request.sender_mac,
        request.sender_ip,
    )
}

/// A gratuitous ARP for `vip` at `mac`: a broadcast request whose sender
/// and target are the VIP, which updates every neighbour entry for it on
/// the segment (Linux updates existing entries from it whatever its
/// `arp_accept`, RFC 5227 §3) and teaches switches the port.
pub fn gratuitous_arp(mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    arp_frame(BROADCAST_MAC, mac, 1, mac, vip, [0; 6], vip)
}

/// The neighbour solicitation in `frame`, if it is a valid one
/// (RFC 4861 §7.1.1: hop limit 255, code 0, at least 24 bytes, a correct
/// checksum, options of non-zero length, no source link-layer address
/// option from the unspecified address).
pub fn parse_neighbor_solicitation(frame: &[u8]) -> Option<NeighborSolicitation> {
    if be16(frame, 12)? != ETHERTYPE_IPV6 {
        return None;
    }
    let ip = frame.get(ETH_LEN..ETH_LEN + IPV6_LEN)?;
    if ip[0] >> 4 != 6 || ip[6] != ICMPV6 || ip[7] != ND_HOP_LIMIT {
        return None;
    }
    let payload_len = usize::from(be16(ip, 4)?);
    let icmp = frame.get(ETH_LEN + IPV6_LEN..ETH_LEN + IPV6_LEN + payload_len)?;
    if icmp.len() < 24 || icmp[0] != NEIGHBOR_SOLICITATION || icmp[1] != 0 {
        return None;
    }
    let source = ipv6_at(ip, 8)?;
    let destination = ipv6_at(ip, 24)?;
    if icmpv6_checksum(&source, &destination, icmp) != 0 {
        return None;
    }
    let target = ipv6_at(icmp, 8)?;
    if target.is_multicast() {
        return None;
    }
    let mut source_mac = mac_at(frame, 6)?;
    let mut options = icmp.get(24..)?;
    for _ in 0..MAX_ND_OPTIONS {
        if options.is_empty() {
            break;
        }
        let kind = *options.first()?;
        let len = usize::from(*options.get(1)?) * 8;
        if len == 0 {
            return None;
        }
        let option = options.get(..len)?;
        if kind == OPT_SOURCE_LLADDR {
            if source.is_unspecified() {
                return None;
            }
            source_mac = mac_at(option, 2)?;
        }
        options = options.get(len..)?;
    }
    Some(NeighborSolicitation {
        source,
        source_mac,
        target,
    })
}

/// The answer to `solicitation` for its target at `mac` (RFC 4861
/// §7.2.4): solicited, to the asker, or to all nodes when it asked from
/// the unspecified address.
pub fn solicited_advertisement(mac: Mac, solicitation: &NeighborSolicitation) -> Vec<u8> {
    if solicitation.source.is_unspecified() {
        return neighbor_advertisement(mac, solicitation.target, ALL_NODES, all_nodes_mac(), false);
    }
    neighbor_advertisement(
        mac,
        solicitation.target,
        solicitation.source,
        solicitation.source_mac,
        true,
    )
}

/// An unsolicited advertisement of `vip` at `mac` to all nodes, with the
/// override flag, so existing neighbour entries move to `mac` at once
/// (RFC 4861 §7.2.6).
pub fn unsolicited_advertisement(mac: Mac, vip: Ipv6Addr) -> Vec<u8> {
    neighbor_advertisement(mac, vip, ALL_NODES, all_nodes_mac(), false)
}

fn all_nodes_mac() -> Mac {
    multicast_mac(&ALL_NODES)
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 §7).
pub fn multicast_mac(group: &Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The solicited-node multicast group of `address` (RFC 4291 §2.7.1),
/// where solicitations for it are sent.
pub fn solicited_node_group(address: &Ipv6Addr) -> Ipv6Addr {
    let o = address.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn neighbor_advertisement(
    mac: Mac,
    target: Ipv6Addr,
    destination: Ipv6Addr,
    destination_mac: Mac,
    solicited: bool,
) -> Vec<u8> {
    // Router 0, solicited as asked, override 1: this node speaks for the
    // VIP now, whatever entry a neighbour held.
    let flags = if solicited { 0x60 } else { 0x20 };
    let mut icmp = vec![NEIGHBOR_ADVERTISEMENT, 0, 0, 0, flags, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[OPT_TARGET_LLADDR, 1]);
    icmp.extend_from_slice(&mac);
    let checksum = icmpv6_checksum(&target, &destination, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

    let mut frame = Vec::with_capacity(ETH_LEN + IPV6_LEN + icmp.len());
    frame.extend_from_slice(&destination_mac);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    // The ICMPv6 message is 32 bytes: the length always fits.
    frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[ICMPV6, ND_HOP_LIMIT]);
    frame.extend_from_slice(&target.octets());
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(&icmp);
    frame
}

/// The ICMPv6 checksum over the pseudo-header and `message` (RFC 8200
/// §8.1): zero when `message` carries a correct one.
fn icmpv6_checksum(source: &Ipv6Addr, destination: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = match chunk {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                [hi] => u16::from_be_bytes([*hi, 0]),
                _ => 0,
            };
            sum += u64::from(word);
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests;
