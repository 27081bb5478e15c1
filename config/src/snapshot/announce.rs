//! Which VIPs the node tells the network about, and how.
//!
//! An address is announced when a Gateway whose class asks for it
//! (`GatewayClassConfig.spec.announce`) has at least one listener served
//! there: a Gateway that is not programmed, or a listener refused, takes
//! nothing to the network that nothing here would forward.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// How the network learns that a VIP lives on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnnounceMode {
    /// ARP replies and IPv6 neighbour advertisements on the served
    /// interfaces, from one LB node of the segment at a time.
    #[serde(rename = "L2")]
    L2,
    /// A route in the local BGP speaker (BIRD), for ECMP across LB nodes.
    #[serde(rename = "BGP")]
    Bgp,
}

impl std::fmt::Display for AnnounceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnnounceMode::L2 => "L2",
            AnnounceMode::Bgp => "BGP",
        })
    }
}

/// One VIP to announce: the address, the mode, and the Gateway
/// (`namespace/name`) that asked for it, first by name when several share
/// the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Announcement {
    pub address: IpAddr,
    pub mode: AnnounceMode,
    pub gateway: String,
}

/// `announcements` sorted, one per (address, mode).
pub(crate) fn normalized(mut announcements: Vec<Announcement>) -> Vec<Announcement> {
    announcements.sort();
    announcements
        .dedup_by(|later, first| later.address == first.address && later.mode == first.mode);
    announcements
}
