//! The daemon's readers of kernel input, as the fuzz targets of the
//! `switchyard-fuzz` crate drive them: a netlink datagram through every
//! parser the neighbour resolver and the egress watch apply to what the
//! kernel sends, and on into the next-hop table the workers would read. The
//! parsers stay private to their modules; this is their one door for
//! bytes that no kernel socket sent. Nothing in `switchyard run` calls it,
//! and it must never open a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_dataplane::neighbor::{L2Table, RouteAction};

use crate::egress::netlink as egress;
use crate::neighbor::netlink as neighbor;
use crate::netlink::{errno_of, messages};

/// What one datagram came to, so a caller can tell the parsers did work.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetlinkSummary {
    pub messages: usize,
    pub links: usize,
    pub routes: usize,
    pub neighbours: usize,
    /// Next hops the table built from the datagram resolved.
    pub resolved: usize,
    pub egress_links: usize,
}

/// Reads `buf` as a datagram from each socket the daemon opens: the
/// resolver's dumps and notifications (the table built from them then
/// resolves every address the datagram named, on every interface it
/// named), and the egress watch's answers (link, netdev family, XDP
/// features, namespace id).
pub fn netlink_datagram(buf: &[u8]) -> NetlinkSummary {
    let mut summary = NetlinkSummary::default();
    let (mut links, mut routes, mut neighbours) = (Vec::new(), Vec::new(), Vec::new());
    let mut dirty = neighbor::Dirty::default();
    for msg in messages(buf) {
        summary.messages += 1;
        dirty.merge(neighbor::Dirty::of(msg.kind));
        let _ = errno_of(msg.payload);
        match msg.kind {
            libc::RTM_NEWLINK => {
                links.extend(neighbor::parse_link(msg.payload));
                summary.egress_links += usize::from(egress::parse_link(msg.payload).is_some());
            }
            libc::RTM_NEWROUTE => neighbor::parse_route(msg.payload, &mut routes),
            libc::RTM_NEWNEIGH => neighbours.extend(neighbor::parse_neighbour(msg.payload)),
            libc::RTM_NEWNSID => {
                let _ = egress::nsid_of_answer(msg.payload);
            }
            _ => {}
        }
        // Generic netlink family ids are assigned at run time and may equal
        // any rtnetlink type (the controller's, 16, is RTM_NEWLINK).
        let _ = egress::family_of(msg.payload);
        let _ = egress::xdp_features_of(msg.payload);
    }
    let _ = dirty.any();
    let interfaces: Vec<u32> = links.iter().map(|l| l.ifindex).collect();
    let table = L2Table::new(&interfaces, &links, &routes, &neighbours);
    let addresses = routes
        .iter()
        .flat_map(|r| {
            let gateway = match r.action {
                RouteAction::Forward { gateway, .. } => gateway,
                RouteAction::Reject => None,
            };
            [Some(r.dst), gateway]
        })
        .flatten()
        .chain(neighbours.iter().map(|n| n.ip))
        .chain([
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]);
    summary.resolved = addresses.filter(|&a| table.resolve(a).is_ok()).count();
    summary.links = links.len();
    summary.routes = routes.len();
    summary.neighbours = neighbours.len();
    summary
}
