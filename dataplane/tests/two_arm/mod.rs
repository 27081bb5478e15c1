//! The two-arm LB the worker tests run against: its addresses, MACs and
//! the kernel tables (links, routes, neighbours) a worker would read.

use std::net::Ipv4Addr;

use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
pub const BE1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
pub const BE2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 22);

pub const LB_CLIENT_SIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const LB_BACKEND_SIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 10];
pub const BE1_MAC: [u8; 6] = [2, 0, 0, 0, 2, 21];
pub const BE2_MAC: [u8; 6] = [2, 0, 0, 0, 2, 22];

/// Two-arm LB: ifindex 10 faces clients (port 0), 20 faces backends (port 1).
pub fn l2_table() -> L2Table {
    let route = |dst: Ipv4Addr, ifindex| RouteEntry {
        dst: dst.into(),
        prefix_len: 24,
        metric: 0,
        action: RouteAction::Forward {
            ifindex,
            gateway: None,
        },
    };
    let neighbour = |ip: Ipv4Addr, ifindex, mac| NeighbourEntry {
        ifindex,
        ip: ip.into(),
        mac: Some(mac),
        state: NeighbourState::Reachable,
    };
    L2Table::new(
        &[10, 20],
        &[
            LinkEntry {
                ifindex: 10,
                mac: LB_CLIENT_SIDE_MAC,
            },
            LinkEntry {
                ifindex: 20,
                mac: LB_BACKEND_SIDE_MAC,
            },
        ],
        &[
            route(Ipv4Addr::new(198, 18, 1, 0), 10),
            route(Ipv4Addr::new(198, 18, 2, 0), 20),
        ],
        &[
            neighbour(CLIENT, 10, CLIENT_MAC),
            neighbour(BE1, 20, BE1_MAC),
            neighbour(BE2, 20, BE2_MAC),
        ],
    )
}
