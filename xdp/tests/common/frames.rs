//! Frames built byte by byte, so a test shows exactly what the program sees.

use std::net::Ipv4Addr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// IPv4 flags/fragment-offset field values.
pub const MORE_FRAGMENTS: u16 = 0x2000;
pub const DONT_FRAGMENT: u16 = 0x4000;

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Ethernet header with `tags` (TPID, TCI) VLAN tags, then `payload`.
pub fn ethernet(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    for (tpid, tci) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet. `options` must be a multiple of 4 bytes.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub frag: u16,
    pub options: Vec<u8>,
    pub version: u8,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Self {
            src,
            dst,
            protocol,
            frag: DONT_FRAGMENT,
            options: Vec::new(),
            version: 4,
        }
    }

    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0);
        let header_len = 20 + self.options.len();
        let ihl = (header_len / 4) as u8;
        let total_len = (header_len + payload.len()) as u16;
        let mut packet = vec![(self.version << 4) | ihl, 0];
        packet.extend_from_slice(&total_len.to_be_bytes());
        packet.extend_from_slice(&[0x12, 0x34]); // identification
        packet.extend_from_slice(&self.frag.to_be_bytes());
        packet.extend_from_slice(&[64, self.protocol, 0, 0]); // ttl, proto, csum
        packet.extend_from_slice(&self.src.octets());
        packet.extend_from_slice(&self.dst.octets());
        packet.extend_from_slice(&self.options);
        let checksum = internet_checksum(&packet);
        packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }
}

/// A 20-byte TCP header with SYN set.
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&sport.to_be_bytes());
    header.extend_from_slice(&dport.to_be_bytes());
    header.extend_from_slice(&1u32.to_be_bytes()); // seq
    header.extend_from_slice(&0u32.to_be_bytes()); // ack
    header.extend_from_slice(&[5 << 4, 0x02]); // data offset, SYN
    header.extend_from_slice(&64240u16.to_be_bytes()); // window
    header.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    header
}

/// A UDP header and `payload` (checksum 0: not computed).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&sport.to_be_bytes());
    datagram.extend_from_slice(&dport.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    datagram
}

/// Ethernet + IPv4 + TCP SYN, 54 bytes.
pub fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let ip = Ipv4::new(src, dst, IPPROTO_TCP).emit(&tcp(sport, dport));
    ethernet(&[], ETH_P_IP, &ip)
}

/// Ethernet + IPv4 + UDP with a 4-byte payload.
pub fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let ip = Ipv4::new(src, dst, IPPROTO_UDP).emit(&udp(sport, dport, b"ping"));
    ethernet(&[], ETH_P_IP, &ip)
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1]; // Ethernet/IPv4, request
    arp.extend_from_slice(&SRC_MAC);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    ethernet(&[], ETH_P_ARP, &arp)
}

/// An IPv6 TCP SYN (documentation addresses).
pub fn ipv6_tcp_frame(sport: u16, dport: u16) -> Vec<u8> {
    let segment = tcp(sport, dport);
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[IPPROTO_TCP, 64]);
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&dst);
    packet.extend_from_slice(&segment);
    ethernet(&[], ETH_P_IPV6, &packet)
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
