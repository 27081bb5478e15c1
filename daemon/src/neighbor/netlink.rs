//! rtnetlink plumbing for the resolver thread: the two sockets, dumps,
//! the `NTF_USE` command, and parsers from kernel messages to table entries.
//!
//! Parsers decode only the attributes the table needs, one at a time, with
//! the `netlink-packet-route` types; an attribute that fails to decode is
//! skipped, a message whose header fails is dropped. Nothing here panics on
//! kernel input.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkHeader, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage,
    NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteLwEnCapType, RouteMessage,
    RouteNextHopFlags, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::NeighborError;
use crate::netlink::{self, attributes, errno_of, errno_to_io, messages};
use switchyard_dataplane::neighbor::{
    LinkEntry, NeighbourEntry, RouteAction, RouteEntry, VlanLink, VlanTag,
};

/// `IFLA_ADDRESS`, `IFLA_MTU`, `IFLA_LINK`, `IFLA_LINKINFO`
/// (include/uapi/linux/if_link.h); libc does not export them.
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
/// ETH_P_8021Q: the protocol of a VLAN link that does not name one.
const ETH_P_8021Q: u16 = 0x8100;

/// Large enough for any single rtnetlink datagram: dumps are capped at 32 KiB
/// per datagram by `netlink_dump`, notifications are one message each.
const RECV_BUF: usize = 64 * 1024;

/// How long the kernel may take to answer a dump or a command. It answers
/// synchronously in practice; this only bounds a wedged socket.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A dump that the kernel flags as interrupted (`NLM_F_DUMP_INTR`, the table
/// changed under it) is retried this many times before giving up for now.
const DUMP_ATTEMPTS: usize = 3;

/// An address family the resolver dumps routes and neighbours of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn netlink(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    pub(super) fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// One of the kernel tables the L2 table is built from. Routes and
/// neighbours are dumped per family: an `AF_UNSPEC` route dump would also
/// walk MPLS and multicast routing tables the resolver has no use for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dump {
    Links,
    Routes(Family),
    Neighbours(Family),
}

impl Dump {
    pub(super) fn name(self) -> &'static str {
        match self {
            Dump::Links => "links",
            Dump::Routes(Family::V4) => "IPv4 routes",
            Dump::Routes(Family::V6) => "IPv6 routes",
            Dump::Neighbours(Family::V4) => "IPv4 neighbours (ARP)",
            Dump::Neighbours(Family::V6) => "IPv6 neighbours (NDP)",
        }
    }

    fn request(self) -> RouteNetlinkMessage {
        match self {
            Dump::Links => RouteNetlinkMessage::GetLink(LinkMessage::default()),
            Dump::Routes(family) => {
                let mut msg = RouteMessage::default();
                msg.header.address_family = family.netlink();
                RouteNetlinkMessage::GetRoute(msg)
            }
            Dump::Neighbours(family) => {
                let mut msg = NeighbourMessage::default();
                msg.header.family = family.netlink();
                RouteNetlinkMessage::GetNeighbour(msg)
            }
        }
    }
}

/// Which tables a burst of notifications invalidated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dirty {
    pub links: bool,
    pub routes: bool,
    pub neighbours: bool,
}

impl Dirty {
    pub const ALL: Dirty = Dirty {
        links: true,
        routes: true,
        neighbours: true,
    };

    pub fn any(self) -> bool {
        self.links || self.routes || self.neighbours
    }

    pub fn merge(&mut self, other: Dirty) {
        self.links |= other.links;
        self.routes |= other.routes;
        self.neighbours |= other.neighbours;
    }

    /// What a notification of type `kind` (either family) invalidates. Link
    /// events also invalidate routes and neighbours: IPv4 flushes a downed
    /// link's routes without sending `RTM_DELROUTE` for each
    /// (fib_disable_ip), so only a re-dump sees that they are gone.
    pub(crate) fn of(kind: u16) -> Dirty {
        match kind {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => Dirty::ALL,
            libc::RTM_NEWADDR | libc::RTM_DELADDR | libc::RTM_NEWROUTE | libc::RTM_DELROUTE => {
                Dirty {
                    routes: true,
                    ..Dirty::default()
                }
            }
            libc::RTM_NEWNEIGH | libc::RTM_DELNEIGH => Dirty {
                neighbours: true,
                ..Dirty::default()
            },
            _ => Dirty::default(),
        }
    }
}

/// An rtnetlink socket in the network namespace of the thread that opened it.
pub(super) struct RtSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl RtSocket {
    fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.set_non_blocking(true)?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// A socket for dumps and commands; no multicast, so replies are never
    /// interleaved with notifications.
    pub(super) fn request() -> Result<Self, NeighborError> {
        Self::open().map_err(NeighborError::Socket)
    }

    /// A socket that only receives notifications of `groups` (RTNLGRP_*).
    pub(super) fn monitor(groups: &[u32]) -> Result<Self, NeighborError> {
        let sock = Self::open().map_err(NeighborError::Socket)?;
        for &group in groups {
            sock.sock
                .add_membership(group)
                .map_err(|source| NeighborError::Subscribe { group, source })?;
        }
        // Room for a burst (capped by net.core.rmem_max); an overrun is
        // still handled: ENOBUFS -> re-dump everything.
        let _ = sock.sock.set_rx_buf_sz(1 << 20);
        Ok(sock)
    }

    pub(super) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn send(&mut self, inner: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        self.sock.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
        Ok(self.seq)
    }

    /// Receives one datagram into `self.buf`, waiting at most until
    /// `deadline`; returns its length.
    fn recv_until(&mut self, deadline: Instant) -> io::Result<usize> {
        netlink::recv_until(&self.sock, &mut self.buf, deadline)
    }

    /// Runs one dump and hands each (message type, payload) to `each`.
    fn dump_once(&mut self, what: Dump, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let seq = self.send(what.request(), NLM_F_REQUEST | NLM_F_DUMP)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut interrupted = false;
        loop {
            let n = self.recv_until(deadline)?;
            for msg in messages(&self.buf[..n]) {
                // Leftovers of an earlier request that timed out.
                if msg.seq != seq {
                    continue;
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.kind {
                    NLMSG_DONE => {
                        let code = errno_of(msg.payload);
                        return if code < 0 {
                            Err(errno_to_io(code))
                        } else if interrupted {
                            Err(io::Error::new(
                                io::ErrorKind::Interrupted,
                                "dump interrupted by a concurrent change",
                            ))
                        } else {
                            Ok(())
                        };
                    }
                    NLMSG_ERROR => return Err(errno_to_io(errno_of(msg.payload))),
                    kind => each(kind, msg.payload),
                }
            }
        }
    }

    /// Dumps `what` and parses every entry with `parse`, retrying a dump the
    /// kernel reports as inconsistent.
    pub(super) fn dump<T>(
        &mut self,
        what: Dump,
        parse: impl Fn(u16, &[u8], &mut Vec<T>),
    ) -> io::Result<Vec<T>> {
        let mut attempt = 0;
        loop {
            let mut out = Vec::new();
            match self.dump_once(what, |kind, payload| parse(kind, payload, &mut out)) {
                Ok(()) => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted && attempt + 1 < DUMP_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks the kernel to resolve `addr` on `ifindex` now: `RTM_NEWNEIGH`
    /// with `NTF_USE` and `NLM_F_CREATE`. `neigh_add` creates the entry if
    /// missing and, for `NTF_USE`, calls `neigh_event_send`, which moves a
    /// NONE/FAILED entry to INCOMPLETE and has the kernel send the ARP
    /// request or, for IPv6, the Neighbor Solicitation (a STALE one goes to
    /// DELAY, then a unicast probe), exactly as if the stack had a packet for
    /// it; we send no packet ourselves. A link-local `addr` is the one on
    /// `ifindex`, which is how the neighbour table keys it anyway. Verified
    /// on kernel 6.18 by `netns_tests::ntf_use_alone_makes_the_kernel_send_arp`
    /// and `ntf_use_alone_makes_the_kernel_send_a_neighbor_solicitation` (the
    /// peer learns our MAC from that request). The kernel solicits from the
    /// interface's link-local address and sends nothing while that address
    /// is still tentative (DAD, about a second after link up); its
    /// retransmissions (one a second) go out once DAD ends, and an entry
    /// that went FAILED meanwhile is asked for again on the next miss.
    /// Managed neighbours (`NTF_EXT_MANAGED`, >= 5.16) also work here but
    /// are not used: the kernel would keep probing them after the backend
    /// that needed them is gone, until someone deletes them.
    ///
    /// `NTF_USE` drops `NUD_PERMANENT` from an existing entry (`__neigh_update`
    /// clears it before the event), which would turn an administrator's
    /// static entry into a dynamic one. The entry is therefore read first and
    /// static (PERMANENT, NOARP) entries are left alone.
    pub(super) fn request_resolution(&mut self, ifindex: u32, addr: IpAddr) -> io::Result<()> {
        if let Some(entry) = self.neighbour(ifindex, addr)? {
            if u16::from(entry.state) & (libc::NUD_PERMANENT | libc::NUD_NOARP) != 0 {
                return Ok(());
            }
        }
        let seq = self.send(
            RouteNetlinkMessage::NewNeighbour(neighbour_message(
                ifindex,
                addr,
                NeighbourFlags::Use,
            )),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        )?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let n = self.recv_until(deadline)?;
            for msg in messages(&self.buf[..n]) {
                if msg.seq == seq && msg.kind == NLMSG_ERROR {
                    return match errno_of(msg.payload) {
                        0 => Ok(()),
                        code => Err(errno_to_io(code)),
                    };
                }
            }
        }
    }

    /// The kernel's entry for `addr` on `ifindex`, if any (`RTM_GETNEIGH`
    /// for one entry, `neigh_get`, kernel >= 5.0).
    pub(super) fn neighbour(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> io::Result<Option<NeighbourEntry>> {
        let seq = self.send(
            RouteNetlinkMessage::GetNeighbour(neighbour_message(
                ifindex,
                addr,
                NeighbourFlags::empty(),
            )),
            NLM_F_REQUEST,
        )?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let n = self.recv_until(deadline)?;
            for msg in messages(&self.buf[..n]) {
                if msg.seq != seq {
                    continue;
                }
                return match msg.kind {
                    libc::RTM_NEWNEIGH => Ok(parse_neighbour(msg.payload)),
                    NLMSG_ERROR => match errno_of(msg.payload) {
                        0 => Ok(None),
                        code if code == -libc::ENOENT => Ok(None),
                        code => Err(errno_to_io(code)),
                    },
                    _ => continue,
                };
            }
        }
    }

    /// Reads every queued notification without blocking and reports which
    /// tables they invalidate. A lost notification (ENOBUFS, truncation)
    /// invalidates everything: the next re-dump repairs it.
    pub(super) fn drain(&mut self) -> Dirty {
        let mut dirty = Dirty::default();
        loop {
            match self
                .sock
                .recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(0) => break,
                Ok(n) if n > self.buf.len() => dirty = Dirty::ALL,
                Ok(n) => messages(&self.buf[..n]).for_each(|m| dirty.merge(Dirty::of(m.kind))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    log::debug!("rtnetlink notifications overran; re-dumping everything");
                    dirty = Dirty::ALL;
                }
                Err(e) => {
                    log::warn!("reading rtnetlink notifications: {e}");
                    dirty = Dirty::ALL;
                    break;
                }
            }
        }
        dirty
    }
}

/// An `ndmsg` naming one neighbour of `addr`'s family, state left unset
/// (the kernel's get request rejects any state or type).
fn neighbour_message(ifindex: u32, addr: IpAddr, flags: NeighbourFlags) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header = NeighbourHeader {
        family: Family::of(addr).netlink(),
        ifindex,
        state: NeighbourState::None,
        flags,
        kind: RouteType::Unspec,
    };
    let destination = match addr {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    };
    msg.attributes
        .push(NeighbourAttribute::Destination(destination));
    msg
}

/// `RTM_NEWLINK` -> the link's Ethernet address, if it has one, its MTU,
/// and for
/// a VLAN link (`IFLA_INFO_KIND` "vlan") its parent (`IFLA_LINK`), VLAN id
/// and protocol (802.1Q unless it says 802.1ad). A VLAN link whose parent
/// or id is missing, or whose id is outside 1 to 4094, is kept as a plain
/// link, which routes never leave by unless it is named itself.
pub(crate) fn parse_link(payload: &[u8]) -> Option<LinkEntry> {
    let header = LinkHeader::parse(payload).ok()?;
    let (mut mac, mut parent, mut is_vlan, mut id, mut tpid) = (None, None, false, None, None);
    let mut mtu = 0;
    let wanted = [IFLA_ADDRESS, IFLA_MTU, IFLA_LINK, IFLA_LINKINFO];
    for attr in attributes(payload, header.buffer_len(), &wanted)
        .filter_map(|nla| LinkAttribute::parse_with_param(&nla, header.interface_family).ok())
    {
        match attr {
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = m,
            LinkAttribute::Link(index) => parent = Some(index).filter(|&i| i != 0),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Vlan) => is_vlan = true,
                        LinkInfo::Data(InfoData::Vlan(data)) => {
                            for item in data {
                                match item {
                                    InfoVlan::Id(v) => id = Some(v),
                                    InfoVlan::Protocol(p) => tpid = Some(u16::from(p)),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let vlan = match (is_vlan, parent, id) {
        (true, Some(parent), Some(id)) if (1..4095).contains(&id) => Some(VlanLink {
            parent,
            tag: VlanTag {
                tpid: tpid.unwrap_or(ETH_P_8021Q),
                id,
            },
        }),
        _ => None,
    };
    Some(LinkEntry {
        ifindex: header.index,
        mac: mac?,
        vlan,
        mtu,
    })
}

/// `RTM_NEWNEIGH` -> an ARP (IPv4) or NDP (IPv6) neighbour entry. Proxy
/// entries (proxy ARP, proxy NDP) are not neighbours and are dropped, and so
/// is a message whose address is not of its header's family.
pub(crate) fn parse_neighbour(payload: &[u8]) -> Option<NeighbourEntry> {
    let header = NeighbourHeader::parse(payload).ok()?;
    if !matches!(header.family, AddressFamily::Inet | AddressFamily::Inet6)
        || header.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for nla in attributes(
        payload,
        header.buffer_len(),
        &[libc::NDA_DST, libc::NDA_LLADDR],
    ) {
        match NeighbourAttribute::parse_with_param(&nla, header.family) {
            Ok(NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)))
                if header.family == AddressFamily::Inet =>
            {
                ip = Some(IpAddr::V4(addr));
            }
            Ok(NeighbourAttribute::Destination(NeighbourAddress::Inet6(addr)))
                if header.family == AddressFamily::Inet6 =>
            {
                ip = Some(IpAddr::V6(addr));
            }
            Ok(NeighbourAttribute::LinkLayerAddress(bytes)) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
            }
            _ => {}
        }
    }
    Some(NeighbourEntry {
        ifindex: header.ifindex,
        ip: ip?,
        mac,
        state: header.state,
    })
}

/// `RTM_NEWROUTE` of the main IPv4 or IPv6 table -> one entry per usable
/// nexthop (several for a multipath route, in the kernel's order: IPv6
/// dumps an ECMP route as one message with `RTA_MULTIPATH` too, and a
/// notification that carries one sibling only triggers a re-dump). Skipped:
/// other tables (the local table's addresses, multicast and anycast routes
/// among them), multicast, local, broadcast and anycast route types,
/// TOS-specific routes (the dataplane does not select by TOS), cloned
/// routes (IPv6 PMTU and redirect exceptions), dead nexthops, IPv6 nexthops
/// of IPv4 routes (RTA_VIA), gateways of the other family, and
/// nexthop-object routes that carry no interface (the kernel includes it
/// while net.ipv4.nexthop_compat_mode is 1, the default; the same knob
/// serves IPv6).
pub(crate) fn parse_route(payload: &[u8], out: &mut Vec<RouteEntry>) {
    let Ok(header) = RouteHeader::parse(payload) else {
        return;
    };
    let max_len = match header.address_family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return,
    };
    if header.tos != 0
        || header.destination_prefix_length > max_len
        || header.flags.contains(RouteFlags::Cloned)
    {
        return;
    }
    let reject = match header.kind {
        RouteType::Unicast => false,
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit | RouteType::Throw => {
            true
        }
        _ => return,
    };
    const WANTED: &[u16] = &[
        libc::RTA_DST,
        libc::RTA_OIF,
        libc::RTA_GATEWAY,
        libc::RTA_PRIORITY,
        libc::RTA_TABLE,
        libc::RTA_MULTIPATH,
    ];
    let param = (header.address_family, header.kind, RouteLwEnCapType::None);
    let mut table = u32::from(header.table);
    let mut dst = match header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let mut oif = None;
    let mut gateway = None;
    let mut metric = 0;
    let mut multipath = None;
    for nla in attributes(payload, header.buffer_len(), WANTED) {
        match RouteAttribute::parse_with_param(&nla, param) {
            Ok(RouteAttribute::Destination(a)) => dst = address_of(a, dst).unwrap_or(dst),
            Ok(RouteAttribute::Oif(i)) => oif = Some(i),
            Ok(RouteAttribute::Gateway(a)) => gateway = address_of(a, dst),
            Ok(RouteAttribute::Priority(m)) => metric = m,
            // RTA_TABLE carries ids above 255 that rtm_table cannot.
            Ok(RouteAttribute::Table(t)) => table = t,
            Ok(RouteAttribute::MultiPath(hops)) => multipath = Some(hops),
            _ => {}
        }
    }
    if table != u32::from(libc::RT_TABLE_MAIN) {
        return;
    }
    let entry = |action| RouteEntry {
        dst,
        prefix_len: header.destination_prefix_length,
        metric,
        action,
    };
    if reject {
        out.push(entry(RouteAction::Reject));
        return;
    }
    match multipath {
        Some(hops) => {
            for hop in hops {
                if hop.flags.contains(RouteNextHopFlags::Dead) {
                    continue;
                }
                let gateway = hop.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => address_of(g.clone(), dst),
                    _ => None,
                });
                out.push(entry(RouteAction::Forward {
                    ifindex: hop.interface_index,
                    gateway,
                }));
            }
        }
        None => {
            if let (Some(ifindex), false) = (oif, header.flags.contains(RouteFlags::Dead)) {
                out.push(entry(RouteAction::Forward { ifindex, gateway }));
            }
        }
    }
}

/// `addr` as an address of `like`'s family, or `None` if it is of another.
fn address_of(addr: RouteAddress, like: IpAddr) -> Option<IpAddr> {
    match (addr, like) {
        (RouteAddress::Inet(a), IpAddr::V4(_)) => Some(IpAddr::V4(a)),
        (RouteAddress::Inet6(a), IpAddr::V6(_)) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::DefaultNla;
    use netlink_packet_route::route::{RouteNextHop, RouteScope};
    use proptest::prelude::*;

    use super::*;

    fn emit(msg: &impl Emitable) -> Vec<u8> {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn route(dst: &str, len: u8, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = RouteScope::Universe;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(ip(dst))));
        msg.attributes.extend(attrs);
        msg
    }

    fn parse_routes(bytes: &[u8]) -> Vec<RouteEntry> {
        let mut out = Vec::new();
        parse_route(bytes, &mut out);
        out
    }

    #[test]
    fn gateway_route_message_parses() {
        let msg = route(
            "10.1.0.0",
            16,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet(ip("10.0.0.1"))),
                RouteAttribute::Oif(4),
                RouteAttribute::Priority(100),
            ],
        );
        assert_eq!(
            parse_routes(&emit(&msg)),
            [RouteEntry {
                dst: ip("10.1.0.0").into(),
                prefix_len: 16,
                metric: 100,
                action: RouteAction::Forward {
                    ifindex: 4,
                    gateway: Some(ip("10.0.0.1").into())
                },
            }]
        );
    }

    #[test]
    fn multipath_route_yields_one_entry_per_live_nexthop() {
        let hop = |ifindex, gw: &str, flags| {
            let mut nh = RouteNextHop::default();
            nh.interface_index = ifindex;
            nh.flags = flags;
            nh.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(ip(gw))));
            nh
        };
        let msg = route(
            "0.0.0.0",
            0,
            vec![RouteAttribute::MultiPath(vec![
                hop(4, "10.0.0.1", RouteNextHopFlags::empty()),
                hop(5, "10.0.1.1", RouteNextHopFlags::Dead),
                hop(6, "10.0.2.1", RouteNextHopFlags::empty()),
            ])],
        );
        let hops: Vec<_> = parse_routes(&emit(&msg)).iter().map(|r| r.action).collect();
        assert_eq!(
            hops,
            [
                RouteAction::Forward {
                    ifindex: 4,
                    gateway: Some(ip("10.0.0.1").into())
                },
                RouteAction::Forward {
                    ifindex: 6,
                    gateway: Some(ip("10.0.2.1").into())
                },
            ]
        );
    }

    #[test]
    fn routes_outside_the_main_table_are_ignored() {
        let mut msg = route("10.0.0.0", 8, vec![RouteAttribute::Oif(4)]);
        msg.header.table = 255; // local
        assert!(parse_routes(&emit(&msg)).is_empty());
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        msg.attributes.push(RouteAttribute::Table(1000));
        assert!(parse_routes(&emit(&msg)).is_empty());
    }

    #[test]
    fn local_and_broadcast_routes_are_ignored_but_blackhole_rejects() {
        let mut msg = route("10.0.0.0", 8, vec![RouteAttribute::Oif(4)]);
        msg.header.kind = RouteType::Local;
        assert!(parse_routes(&emit(&msg)).is_empty());
        msg.header.kind = RouteType::BlackHole;
        assert_eq!(parse_routes(&emit(&msg))[0].action, RouteAction::Reject);
    }

    #[test]
    fn malformed_attribute_is_skipped() {
        // An RTA_PRIORITY of 2 bytes cannot decode; the rest of the route can.
        let mut msg = route("10.0.0.0", 8, vec![RouteAttribute::Oif(4)]);
        msg.attributes.push(RouteAttribute::Other(DefaultNla::new(
            libc::RTA_PRIORITY,
            vec![1, 2],
        )));
        let routes = parse_routes(&emit(&msg));
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].metric, 0);

        let mut neigh = NeighbourMessage::default();
        neigh.header.family = AddressFamily::Inet;
        neigh.header.ifindex = 4;
        neigh.header.state = NeighbourState::Reachable;
        neigh.attributes.extend([
            NeighbourAttribute::Other(DefaultNla::new(libc::NDA_DST, vec![10, 0])),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip("10.0.0.9"))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]),
        ]);
        let entry = parse_neighbour(&emit(&neigh)).unwrap();
        assert_eq!(entry.ip, ip("10.0.0.9"));
        assert_eq!(entry.mac, Some([2, 0, 0, 0, 0, 9]));
    }

    #[test]
    fn neighbour_message_parses_and_proxy_entries_are_dropped() {
        let mut neigh = NeighbourMessage::default();
        neigh.header.family = AddressFamily::Inet;
        neigh.header.ifindex = 4;
        neigh.header.state = NeighbourState::Stale;
        neigh.attributes.extend([
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip("10.0.0.9"))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]),
        ]);
        assert_eq!(
            parse_neighbour(&emit(&neigh)),
            Some(NeighbourEntry {
                ifindex: 4,
                ip: ip("10.0.0.9").into(),
                mac: Some([2, 0, 0, 0, 0, 9]),
                state: NeighbourState::Stale,
            })
        );
        neigh.header.flags = NeighbourFlags::Proxy;
        assert_eq!(parse_neighbour(&emit(&neigh)), None);
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn route6(dst: &str, len: u8, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        msg.header.destination_prefix_length = len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = RouteScope::Universe;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet6(ip6(dst))));
        msg.attributes.extend(attrs);
        msg
    }

    fn neighbour6(addr: &str, state: NeighbourState) -> NeighbourMessage {
        let mut neigh = NeighbourMessage::default();
        neigh.header.family = AddressFamily::Inet6;
        neigh.header.ifindex = 4;
        neigh.header.state = state;
        neigh.attributes.extend([
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip6(addr))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]),
        ]);
        neigh
    }

    #[test]
    fn ipv6_connected_and_gateway_routes_parse() {
        // As the kernel dumps them: a connected prefix (no gateway) and a
        // default route via a link-local router.
        let connected = route6(
            "2001:db8:1::",
            64,
            vec![RouteAttribute::Oif(4), RouteAttribute::Priority(256)],
        );
        let default = route6(
            "::",
            0,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet6(ip6("fe80::1"))),
                RouteAttribute::Oif(4),
                RouteAttribute::Priority(1024),
            ],
        );
        assert_eq!(
            parse_routes(&emit(&connected)),
            [RouteEntry {
                dst: ip6("2001:db8:1::").into(),
                prefix_len: 64,
                metric: 256,
                action: RouteAction::Forward {
                    ifindex: 4,
                    gateway: None
                },
            }]
        );
        assert_eq!(
            parse_routes(&emit(&default)),
            [RouteEntry {
                dst: Ipv6Addr::UNSPECIFIED.into(),
                prefix_len: 0,
                metric: 1024,
                action: RouteAction::Forward {
                    ifindex: 4,
                    gateway: Some(ip6("fe80::1").into())
                },
            }]
        );
    }

    #[test]
    fn ipv6_default_route_without_destination_is_the_unspecified_prefix() {
        // The kernel leaves RTA_DST out of a /0 route.
        let mut msg = route6("::", 0, vec![RouteAttribute::Oif(4)]);
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Destination(_)));
        let routes = parse_routes(&emit(&msg));
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].dst, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    #[test]
    fn ipv6_multipath_route_yields_one_entry_per_live_nexthop() {
        let hop = |ifindex, gw: &str, flags| {
            let mut nh = RouteNextHop::default();
            nh.interface_index = ifindex;
            nh.flags = flags;
            nh.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet6(ip6(gw))));
            nh
        };
        let msg = route6(
            "2001:db8:99::",
            48,
            vec![RouteAttribute::MultiPath(vec![
                hop(4, "fe80::1", RouteNextHopFlags::empty()),
                hop(5, "fe80::2", RouteNextHopFlags::Dead),
                hop(6, "2001:db8::1", RouteNextHopFlags::empty()),
            ])],
        );
        let hops: Vec<_> = parse_routes(&emit(&msg)).iter().map(|r| r.action).collect();
        assert_eq!(
            hops,
            [
                RouteAction::Forward {
                    ifindex: 4,
                    gateway: Some(ip6("fe80::1").into())
                },
                RouteAction::Forward {
                    ifindex: 6,
                    gateway: Some(ip6("2001:db8::1").into())
                },
            ]
        );
    }

    #[test]
    fn ipv6_routes_that_cannot_be_forwarded_are_skipped_or_reject() {
        let base = route6("2001:db8::", 32, vec![RouteAttribute::Oif(4)]);
        for kind in [
            RouteType::Local,
            RouteType::Multicast,
            RouteType::Anycast,
            RouteType::Broadcast,
        ] {
            let mut msg = base.clone();
            msg.header.kind = kind;
            assert!(parse_routes(&emit(&msg)).is_empty(), "{kind:?}");
        }
        for kind in [
            RouteType::Unreachable,
            RouteType::BlackHole,
            RouteType::Prohibit,
        ] {
            let mut msg = base.clone();
            msg.header.kind = kind;
            assert_eq!(
                parse_routes(&emit(&msg))[0].action,
                RouteAction::Reject,
                "{kind:?}"
            );
        }
        // The local table holds the node's own addresses.
        let mut local = base.clone();
        local.header.table = 255;
        assert!(parse_routes(&emit(&local)).is_empty());
        // A cached PMTU exception is not a route of the table.
        let mut cloned = base.clone();
        cloned.header.flags = RouteFlags::Cloned;
        assert!(parse_routes(&emit(&cloned)).is_empty());
        let mut long = base;
        long.header.destination_prefix_length = 129;
        assert!(parse_routes(&emit(&long)).is_empty());
    }

    #[test]
    fn ndp_neighbour_message_parses_and_proxy_entries_are_dropped() {
        let mut neigh = neighbour6("fe80::9", NeighbourState::Reachable);
        assert_eq!(
            parse_neighbour(&emit(&neigh)),
            Some(NeighbourEntry {
                ifindex: 4,
                ip: ip6("fe80::9").into(),
                mac: Some([2, 0, 0, 0, 0, 9]),
                state: NeighbourState::Reachable,
            })
        );
        neigh.header.flags = NeighbourFlags::Proxy;
        assert_eq!(parse_neighbour(&emit(&neigh)), None);
    }

    #[test]
    fn neighbour_request_names_the_address_in_its_family() {
        let v6 = neighbour_message(4, ip6("fe80::1").into(), NeighbourFlags::Use);
        assert_eq!(v6.header.family, AddressFamily::Inet6);
        assert_eq!(
            v6.attributes,
            [NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                ip6("fe80::1")
            ))]
        );
        let v4 = neighbour_message(4, ip("10.0.0.1").into(), NeighbourFlags::Use);
        assert_eq!(v4.header.family, AddressFamily::Inet);
    }

    #[test]
    fn link_message_yields_its_ethernet_address() {
        let mut link = LinkMessage::default();
        link.header.index = 7;
        link.attributes.extend([
            LinkAttribute::IfName("eth9".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7]),
        ]);
        assert_eq!(
            parse_link(&emit(&link)),
            Some(LinkEntry::ethernet(7, [2, 0, 0, 0, 0, 7]))
        );
        // A tunnel's 4-byte "address" is not Ethernet.
        link.attributes = vec![LinkAttribute::Address(vec![10, 0, 0, 1])];
        assert_eq!(parse_link(&emit(&link)), None);
    }

    fn vlan_link_message(index: u32, parent: u32, data: Vec<InfoVlan>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.extend([
            LinkAttribute::IfName("eth0.100".into()),
            LinkAttribute::Link(parent),
            LinkAttribute::Address(vec![2, 0, 0, 0, 1, 0]),
            LinkAttribute::Mtu(1400),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(data)),
            ]),
        ]);
        link
    }

    #[test]
    fn vlan_link_message_yields_its_parent_id_and_protocol() {
        use netlink_packet_route::link::VlanProtocol;
        let link = vlan_link_message(
            12,
            2,
            vec![
                InfoVlan::Id(100),
                InfoVlan::Protocol(VlanProtocol::Ieee8021Q),
            ],
        );
        assert_eq!(
            parse_link(&emit(&link)),
            Some(LinkEntry {
                ifindex: 12,
                mac: [2, 0, 0, 0, 1, 0],
                vlan: Some(VlanLink {
                    parent: 2,
                    tag: VlanTag {
                        tpid: 0x8100,
                        id: 100
                    }
                }),
                mtu: 1400,
            })
        );
        let qinq = vlan_link_message(
            13,
            2,
            vec![
                InfoVlan::Protocol(VlanProtocol::Ieee8021Ad),
                InfoVlan::Id(4094),
            ],
        );
        assert_eq!(
            parse_link(&emit(&qinq)).and_then(|l| l.vlan),
            Some(VlanLink {
                parent: 2,
                tag: VlanTag {
                    tpid: 0x88a8,
                    id: 4094
                }
            })
        );
        let unnamed = vlan_link_message(14, 2, vec![InfoVlan::Id(7)]);
        assert_eq!(
            parse_link(&emit(&unnamed)).and_then(|l| l.vlan.map(|v| v.tag.tpid)),
            Some(0x8100),
            "the kernel's default protocol"
        );
    }

    #[test]
    fn a_vlan_link_without_parent_or_valid_id_or_of_another_kind_is_plain() {
        for link in [
            vlan_link_message(12, 0, vec![InfoVlan::Id(100)]),
            vlan_link_message(12, 2, vec![]),
            vlan_link_message(12, 2, vec![InfoVlan::Id(0)]),
            vlan_link_message(12, 2, vec![InfoVlan::Id(4095)]),
        ] {
            let parsed = parse_link(&emit(&link)).unwrap();
            assert_eq!((parsed.ifindex, parsed.vlan), (12, None));
        }
        // A veth names its peer in IFLA_LINK; that is no VLAN parent.
        let mut veth = LinkMessage::default();
        veth.header.index = 5;
        veth.attributes.extend([
            LinkAttribute::Link(6),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 5]),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ]);
        assert_eq!(
            parse_link(&emit(&veth)),
            Some(LinkEntry::ethernet(5, [2, 0, 0, 0, 0, 5]))
        );
    }

    #[test]
    fn datagram_iteration_stops_at_a_bad_length() {
        let mut header = NetlinkHeader::default();
        header.message_type = libc::RTM_NEWNEIGH;
        header.length = 16;
        let mut one = vec![0u8; 16];
        header.emit(&mut one);
        let mut buf = one.clone();
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&[0xff; 20]); // claims 4 GiB
        assert_eq!(messages(&buf).count(), 2);
        assert_eq!(
            Dirty::of(libc::RTM_NEWNEIGH),
            Dirty {
                neighbours: true,
                ..Dirty::default()
            }
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut out = Vec::new();
            parse_route(&bytes, &mut out);
            let _ = parse_neighbour(&bytes);
            let _ = parse_link(&bytes);
            let _ = messages(&bytes).count();
            let _ = errno_of(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_attributes(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Valid headers, so the fuzz reaches the attribute decoders.
            let mut r = emit(&route("10.0.0.0", 8, vec![]));
            r.truncate(12);
            r.extend_from_slice(&tail);
            let mut out = Vec::new();
            parse_route(&r, &mut out);
            let mut r6 = emit(&route6("2001:db8::", 32, vec![]));
            r6.truncate(12);
            r6.extend_from_slice(&tail);
            parse_route(&r6, &mut out);
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                let mut n = NeighbourMessage::default();
                n.header.family = family;
                let mut n = emit(&n);
                n.extend_from_slice(&tail);
                let _ = parse_neighbour(&n);
            }
            let mut l = emit(&LinkMessage::default());
            l.extend_from_slice(&tail);
            let _ = parse_link(&l);
        }
    }
}
