//! One served interface as the L2 speaker uses it: its MAC, the packet
//! sockets that hear ARP requests and neighbour solicitations and send the
//! answers, and the UDP sockets of the heartbeats (IPv4 broadcast and the
//! IPv6 all-nodes group, so a segment of either family carries them).
//!
//! Heartbeats go to 255.255.255.255 and ff02::1 from the node's own
//! addresses: addresses of no VIP and no backend, which the steering
//! program passes to the kernel (`pass_not_service`), so they reach the
//! peers' sockets and never a worker.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
};

use super::frames::{Mac, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use super::packet_socket::{op, FilterOp, PacketSocket};
use crate::announce::AnnounceError;

/// Only ICMPv6 neighbour solicitations (next header 58 at byte 20 of the
/// frame, type 135 at byte 54) reach the speaker: the rest of the node's
/// IPv6 traffic is never copied to it. Extension headers before ICMPv6
/// are not followed; Neighbor Discovery carries none.
const SOLICITATIONS_ONLY: [FilterOp; 6] = [
    op(0x30, 0, 0, 20),     // ldb [20]
    op(0x15, 0, 3, 58),     // jeq #58, next, drop
    op(0x30, 0, 0, 54),     // ldb [54]
    op(0x15, 0, 1, 135),    // jeq #135, accept, drop
    op(0x06, 0, 0, 0xffff), // accept
    op(0x06, 0, 0, 0),      // drop
];

pub struct Link {
    pub name: String,
    pub ifindex: u32,
    pub mac: Mac,
    pub arp: PacketSocket,
    pub nd: PacketSocket,
    /// The heartbeat sockets of each family; a node without IPv6 (or,
    /// rarer, IPv4) has one only.
    pub beat4: Option<UdpSocket>,
    pub beat6: Option<UdpSocket>,
    /// The solicited-node groups joined on `nd`.
    pub joined: BTreeSet<Mac>,
    /// Whether the last heartbeat failed to go out (logged once).
    pub beat_failing: bool,
}

impl Link {
    pub fn open(name: &str, ifindex: u32, port: u16) -> Result<Link, AnnounceError> {
        let io = |what: &str| {
            let what = format!("{name}: {what}");
            move |source| AnnounceError::Io { what, source }
        };
        let beat4 = heartbeat_socket(name, port, false);
        let beat6 = heartbeat_socket(name, port, true);
        if let (Err(v4), Err(v6)) = (&beat4, &beat6) {
            return Err(AnnounceError::Refused(format!(
                "{name}: no heartbeat socket on UDP port {port}: IPv4: {v4}; IPv6: {v6}"
            )));
        }
        let usable = |family: &str, socket: std::io::Result<UdpSocket>| match socket {
            Ok(socket) => Some(socket),
            Err(err) => {
                log::warn!("L2: {name}: no {family} heartbeats on UDP port {port}: {err}");
                None
            }
        };
        Ok(Link {
            name: name.to_owned(),
            ifindex,
            mac: mac_of(name)?,
            arp: PacketSocket::open(ifindex, ETHERTYPE_ARP, &[])
                .map_err(io("opening a packet socket for ARP"))?,
            nd: PacketSocket::open(ifindex, ETHERTYPE_IPV6, &SOLICITATIONS_ONLY)
                .map_err(io("opening a packet socket for neighbour solicitations"))?,
            beat4: usable("IPv4", beat4),
            beat6: usable("IPv6", beat6),
            joined: BTreeSet::new(),
            beat_failing: false,
        })
    }

    /// Sends a heartbeat to every node of the link. An interface without
    /// an address of one family fails on that family only.
    pub fn send_heartbeat(&mut self, message: &[u8], port: u16) -> io::Result<()> {
        let broadcast = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, port));
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let all_nodes = SocketAddr::V6(SocketAddrV6::new(all_nodes, port, 0, self.ifindex));
        let mut result = Err(io::Error::other("no heartbeat socket"));
        for (socket, to) in [(&self.beat4, broadcast), (&self.beat6, all_nodes)] {
            if let Some(socket) = socket {
                match socket.send_to(message, to) {
                    Ok(_) => result = Ok(()),
                    Err(err) if result.is_err() => result = Err(err),
                    Err(_) => {}
                }
            }
        }
        result
    }

    /// The next heartbeat waiting on either socket, if any.
    pub fn recv_heartbeat(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        [&self.beat4, &self.beat6]
            .into_iter()
            .flatten()
            .find_map(|socket| socket.recv_from(buf).ok())
    }

    /// Every socket to wait on.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.arp.as_fd(), self.nd.as_fd()];
        fds.extend(
            [&self.beat4, &self.beat6]
                .into_iter()
                .flatten()
                .map(|s| s.as_fd()),
        );
        fds
    }
}

/// A UDP socket on `port` of this interface only, shared with a process
/// taking over (SO_REUSEADDR), allowed to broadcast.
fn heartbeat_socket(name: &str, port: u16, ipv6: bool) -> io::Result<UdpSocket> {
    let family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(name))?;
    if ipv6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)),
        )?;
    } else {
        setsockopt(&fd, sockopt::Broadcast, &true)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
        )?;
    }
    Ok(UdpSocket::from(fd))
}

fn mac_of(name: &str) -> Result<Mac, AnnounceError> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(|e| AnnounceError::Io {
        what: "listing the interfaces' addresses".to_owned(),
        source: e.into(),
    })?;
    addresses
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address?.as_link_addr()?.addr())
        .filter(|mac| *mac != [0; 6])
        .ok_or_else(|| AnnounceError::Refused(format!("{name}: no Ethernet address")))
}
