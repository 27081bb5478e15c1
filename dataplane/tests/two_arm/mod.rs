//! The two-arm LB the worker tests run against: its addresses, MACs and
//! the kernel tables (links, routes, neighbours) a worker would read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
pub const BE1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
pub const BE2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 22);

/// The same lab's IPv6 side: the client's link 2001:db8:1::/64 on the
/// client arm, the backends' 2001:db8:2::/64 on the backend arm.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const BE1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x21);
pub const BE2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x22);

pub const LB_CLIENT_SIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const LB_BACKEND_SIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 10];
pub const BE1_MAC: [u8; 6] = [2, 0, 0, 0, 2, 21];
pub const BE2_MAC: [u8; 6] = [2, 0, 0, 0, 2, 22];

/// Two-arm LB: ifindex 10 faces clients (port 0), 20 faces backends (port 1).
pub fn l2_table() -> L2Table {
    let route = |dst: IpAddr, ifindex| RouteEntry {
        dst,
        prefix_len: if dst.is_ipv4() { 24 } else { 64 },
        metric: 0,
        action: RouteAction::Forward {
            ifindex,
            gateway: None,
        },
    };
    let neighbour = |ip: IpAddr, ifindex, mac| NeighbourEntry {
        ifindex,
        ip,
        mac: Some(mac),
        state: NeighbourState::Reachable,
    };
    L2Table::new(
        &[10, 20],
        &[
            LinkEntry::ethernet(10, LB_CLIENT_SIDE_MAC),
            LinkEntry::ethernet(20, LB_BACKEND_SIDE_MAC),
        ],
        &[
            route(Ipv4Addr::new(198, 18, 1, 0).into(), 10),
            route(Ipv4Addr::new(198, 18, 2, 0).into(), 20),
            route(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0).into(), 10),
            route(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 20),
        ],
        &[
            neighbour(CLIENT.into(), 10, CLIENT_MAC),
            neighbour(BE1.into(), 20, BE1_MAC),
            neighbour(BE2.into(), 20, BE2_MAC),
            neighbour(CLIENT6.into(), 10, CLIENT_MAC),
            neighbour(BE1_6.into(), 20, BE1_MAC),
            neighbour(BE2_6.into(), 20, BE2_MAC),
        ],
    )
}
