//! The immutable L2 table the workers read: routes, neighbours and link MACs
//! of the interfaces Switchyard owns, arranged so that `resolve` is a handful
//! of binary searches and never allocates.

use std::net::Ipv4Addr;

use netlink_packet_route::neighbour::NeighbourState;

/// Where to send an IPv4 packet: the egress interface and the L2 header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// Why `L2Table::resolve` found no next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// No route out of a Switchyard interface covers the destination, or the
    /// best one rejects it (blackhole, unreachable, prohibit, throw).
    NoRoute,
    /// A route exists but the kernel has no usable neighbour entry for the
    /// next hop yet; `Neighbors::request(next_hop)` asks for one.
    NoNeighbour { next_hop: Ipv4Addr, ifindex: u32 },
}

/// A link as the kernel reports it: only its Ethernet address matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEntry {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// What a main-table IPv4 route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAction {
    /// Send out of `ifindex`, to `gateway` if set, else to the destination
    /// itself (an on-link route).
    Forward {
        ifindex: u32,
        gateway: Option<Ipv4Addr>,
    },
    /// The kernel would drop it (blackhole, unreachable, prohibit, throw).
    Reject,
}

/// One IPv4 route of the main table. A multipath route is several entries
/// with the same prefix and metric, in the kernel's nexthop order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    /// `RTA_PRIORITY`; lower wins between routes of the same prefix.
    pub metric: u32,
    pub action: RouteAction,
}

/// One IPv4 neighbour (ARP) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
}

/// Internal form of a route once filtered: what `resolve` needs and no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Forward {
        ifindex: u32,
        gateway: Option<Ipv4Addr>,
    },
    Reject,
}

/// NUD states whose link-layer address may be used to send. STALE, DELAY and
/// PROBE are included on purpose: the kernel itself keeps sending to them
/// while it re-validates (RFC 4861 §7.3.3, same machine for ARP).
const NUD_USABLE: u16 = libc::NUD_REACHABLE
    | libc::NUD_STALE
    | libc::NUD_DELAY
    | libc::NUD_PROBE
    | libc::NUD_PERMANENT
    | libc::NUD_NOARP;

pub(crate) fn state_is_usable(state: NeighbourState) -> bool {
    u16::from(state) & NUD_USABLE != 0
}

/// Immutable view of the kernel's main routing table (IPv4), neighbours and
/// link MACs at one moment, restricted to the interfaces Switchyard owns.
#[derive(Debug, Clone)]
pub struct L2Table {
    /// Bumped on every publish, so a worker can tell that the MACs it cached
    /// in a flow may be stale without comparing tables. Not part of equality.
    version: u64,
    /// Bumped only by a publish that may resolve some address differently
    /// from the table before (see [`L2Table::extends`]); a new neighbour
    /// entry alone keeps it. The XDP flow cache holds MACs from a table and
    /// applies them only while the epoch is unchanged, so the common change
    /// (a new client appeared) costs the cache nothing. Not part of equality.
    epoch: u64,
    /// `by_len[n]`: routes of prefix length `n`, sorted by masked prefix, one
    /// per prefix (the winner of metric ties).
    by_len: [Vec<(u32, Hop)>; 33],
    /// Prefix lengths that have routes, longest first, so a lookup skips the
    /// empty ones.
    lengths: Vec<u8>,
    /// Sorted by (ifindex, address); usable entries only.
    neighbours: Vec<((u32, u32), [u8; 6])>,
    /// Sorted by ifindex; owned Ethernet links only.
    links: Vec<(u32, [u8; 6])>,
}

impl PartialEq for L2Table {
    fn eq(&self, other: &Self) -> bool {
        self.by_len == other.by_len
            && self.lengths == other.lengths
            && self.neighbours == other.neighbours
            && self.links == other.links
    }
}

impl Eq for L2Table {}

impl Default for L2Table {
    fn default() -> Self {
        Self {
            version: 0,
            epoch: 0,
            by_len: std::array::from_fn(|_| Vec::new()),
            lengths: Vec::new(),
            neighbours: Vec::new(),
            links: Vec::new(),
        }
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl L2Table {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same table under a new version, for publishing.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The same table under a new epoch, for publishing.
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// Whether every address `earlier` resolves is resolved alike here:
    /// same routes and links, and every neighbour of `earlier` still
    /// present with the same MAC. Neighbours may have been added.
    pub fn extends(&self, earlier: &L2Table) -> bool {
        if self.by_len != earlier.by_len
            || self.lengths != earlier.lengths
            || self.links != earlier.links
        {
            return false;
        }
        // Both sorted by (ifindex, address): one merge walk.
        let mut here = self.neighbours.iter().peekable();
        earlier.neighbours.iter().all(|(key, mac)| {
            while here.next_if(|(k, _)| k < key).is_some() {}
            here.next_if(|(k, m)| k == key && m == mac).is_some()
        })
    }

    /// Builds the table from kernel facts. Only `interfaces` with a known
    /// Ethernet address count: routes out of any other interface are ignored
    /// (a management interface's default route must never capture backend
    /// traffic), and so are their neighbours. Reject routes have no
    /// interface and always count: they shadow shorter prefixes exactly as
    /// in the kernel. Malformed entries (prefix longer than 32) are skipped.
    pub fn new(
        interfaces: &[u32],
        links: &[LinkEntry],
        routes: &[RouteEntry],
        neighbours: &[NeighbourEntry],
    ) -> Self {
        let mut owned: Vec<(u32, [u8; 6])> = links
            .iter()
            .filter(|l| interfaces.contains(&l.ifindex))
            .map(|l| (l.ifindex, l.mac))
            .collect();
        owned.sort_unstable_by_key(|&(ifindex, _)| ifindex);
        owned.dedup_by_key(|&mut (ifindex, _)| ifindex);
        let is_owned = |ifindex: u32| owned.binary_search_by_key(&ifindex, |&(i, _)| i).is_ok();

        let mut table = Self::default();
        // (prefix, metric, hop); a stable sort keeps the kernel's order for
        // exact ties, so the first nexthop of a multipath route wins.
        let mut buckets: [Vec<(u32, u32, Hop)>; 33] = std::array::from_fn(|_| Vec::new());
        for route in routes {
            if route.prefix_len > 32 {
                continue;
            }
            let hop = match route.action {
                RouteAction::Forward { ifindex, gateway } if is_owned(ifindex) => Hop::Forward {
                    ifindex,
                    gateway: gateway.filter(|g| !g.is_unspecified()),
                },
                RouteAction::Forward { .. } => continue,
                RouteAction::Reject => Hop::Reject,
            };
            let prefix = u32::from(route.dst) & mask(route.prefix_len);
            buckets[usize::from(route.prefix_len)].push((prefix, route.metric, hop));
        }
        for (len, bucket) in buckets.iter_mut().enumerate() {
            bucket.sort_by_key(|&(prefix, metric, _)| (prefix, metric));
            bucket.dedup_by_key(|&mut (prefix, _, _)| prefix);
            table.by_len[len] = bucket.iter().map(|&(p, _, hop)| (p, hop)).collect();
        }
        table.lengths = (0..=32u8)
            .rev()
            .filter(|&len| !table.by_len[usize::from(len)].is_empty())
            .collect();

        table.neighbours = neighbours
            .iter()
            .filter(|n| state_is_usable(n.state) && is_owned(n.ifindex))
            .filter_map(|n| Some(((n.ifindex, u32::from(n.ip)), n.mac?)))
            .collect();
        table.neighbours.sort_unstable_by_key(|&(key, _)| key);
        table.neighbours.dedup_by_key(|&mut (key, _)| key);
        table.links = owned;
        table
    }

    /// Longest-prefix match over the owned routes (lowest metric on equal
    /// prefixes), then the neighbour entry of the next hop on the egress
    /// interface. Allocation-free.
    pub fn resolve(&self, dst: Ipv4Addr) -> Result<NextHop, Unresolved> {
        let (ifindex, gateway) = match self.route(u32::from(dst)) {
            Some(Hop::Forward { ifindex, gateway }) => (ifindex, gateway),
            Some(Hop::Reject) | None => return Err(Unresolved::NoRoute),
        };
        let next_hop = gateway.unwrap_or(dst);
        // Present by construction: `new` keeps only routes out of owned links.
        let Ok(link) = self.links.binary_search_by_key(&ifindex, |&(i, _)| i) else {
            return Err(Unresolved::NoRoute);
        };
        let src_mac = self.links[link].1;
        match self
            .neighbours
            .binary_search_by_key(&(ifindex, u32::from(next_hop)), |&(key, _)| key)
        {
            Ok(i) => Ok(NextHop {
                ifindex,
                src_mac,
                dst_mac: self.neighbours[i].1,
            }),
            Err(_) => Err(Unresolved::NoNeighbour { next_hop, ifindex }),
        }
    }

    fn route(&self, addr: u32) -> Option<Hop> {
        self.lengths.iter().find_map(|&len| {
            let bucket = &self.by_len[usize::from(len)];
            let key = addr & mask(len);
            bucket
                .binary_search_by_key(&key, |&(prefix, _)| prefix)
                .ok()
                .map(|i| bucket[i].1)
        })
    }

    /// Number of usable neighbour entries on owned interfaces (for stats).
    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }

    /// Number of distinct routed prefixes out of owned interfaces (for stats).
    pub fn route_count(&self) -> usize {
        self.lengths
            .iter()
            .map(|&len| self.by_len[usize::from(len)].len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETH0: u32 = 2;
    const ETH1: u32 = 3;
    const MGMT: u32 = 9;
    const MAC0: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const MAC1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const MAC_MGMT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x19];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> [u8; 6] {
        [0x0a, 0, 0, 0, 0, last]
    }

    fn links() -> Vec<LinkEntry> {
        vec![
            LinkEntry {
                ifindex: ETH0,
                mac: MAC0,
            },
            LinkEntry {
                ifindex: ETH1,
                mac: MAC1,
            },
            LinkEntry {
                ifindex: MGMT,
                mac: MAC_MGMT,
            },
        ]
    }

    fn onlink(dst: &str, len: u8, ifindex: u32) -> RouteEntry {
        RouteEntry {
            dst: ip(dst),
            prefix_len: len,
            metric: 0,
            action: RouteAction::Forward {
                ifindex,
                gateway: None,
            },
        }
    }

    fn via(dst: &str, len: u8, gw: &str, ifindex: u32, metric: u32) -> RouteEntry {
        RouteEntry {
            dst: ip(dst),
            prefix_len: len,
            metric,
            action: RouteAction::Forward {
                ifindex,
                gateway: Some(ip(gw)),
            },
        }
    }

    fn neigh(ifindex: u32, addr: &str, last: u8, state: NeighbourState) -> NeighbourEntry {
        NeighbourEntry {
            ifindex,
            ip: ip(addr),
            mac: Some(mac(last)),
            state,
        }
    }

    fn table(routes: &[RouteEntry], neighbours: &[NeighbourEntry]) -> L2Table {
        L2Table::new(&[ETH0, ETH1], &links(), routes, neighbours)
    }

    #[test]
    fn a_table_that_only_adds_neighbours_extends_the_one_before() {
        let routes = [onlink("10.1.0.0", 16, ETH0)];
        let before = table(
            &routes,
            &[neigh(ETH0, "10.1.0.5", 5, NeighbourState::Reachable)],
        );
        let added = table(
            &routes,
            &[
                neigh(ETH0, "10.1.0.4", 4, NeighbourState::Reachable),
                neigh(ETH0, "10.1.0.5", 5, NeighbourState::Stale),
                neigh(ETH0, "10.1.0.6", 6, NeighbourState::Reachable),
            ],
        );
        assert!(added.extends(&before));
        assert!(before.extends(&before));
        assert!(!before.extends(&added), "neighbours 4 and 6 went away");
    }

    #[test]
    fn a_changed_mac_route_or_lost_neighbour_does_not_extend() {
        let routes = [onlink("10.1.0.0", 16, ETH0)];
        let before = table(
            &routes,
            &[neigh(ETH0, "10.1.0.5", 5, NeighbourState::Reachable)],
        );
        let moved = table(
            &routes,
            &[neigh(ETH0, "10.1.0.5", 7, NeighbourState::Reachable)],
        );
        assert!(!moved.extends(&before), "new MAC");
        let failed = table(
            &routes,
            &[neigh(ETH0, "10.1.0.5", 5, NeighbourState::Failed)],
        );
        assert!(!failed.extends(&before), "entry no longer usable");
        let rerouted = table(
            &[onlink("10.1.0.0", 16, ETH1)],
            &[neigh(ETH0, "10.1.0.5", 5, NeighbourState::Reachable)],
        );
        assert!(!rerouted.extends(&before), "route moved");
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(
            &[
                via("0.0.0.0", 0, "10.0.0.1", ETH0, 0),
                onlink("10.1.0.0", 16, ETH1),
                onlink("10.1.2.0", 24, ETH0),
            ],
            &[
                neigh(ETH0, "10.1.2.3", 1, NeighbourState::Reachable),
                neigh(ETH1, "10.1.3.3", 2, NeighbourState::Reachable),
                neigh(ETH0, "10.0.0.1", 3, NeighbourState::Reachable),
            ],
        );
        let hop = t.resolve(ip("10.1.2.3")).unwrap();
        assert_eq!(
            (hop.ifindex, hop.src_mac, hop.dst_mac),
            (ETH0, MAC0, mac(1))
        );
        let hop = t.resolve(ip("10.1.3.3")).unwrap();
        assert_eq!(
            (hop.ifindex, hop.src_mac, hop.dst_mac),
            (ETH1, MAC1, mac(2))
        );
        assert_eq!(t.resolve(ip("192.0.2.1")).unwrap().dst_mac, mac(3));
    }

    #[test]
    fn gateway_route_resolves_the_gateways_neighbour() {
        let t = table(
            &[
                onlink("10.0.0.0", 24, ETH0),
                via("172.16.0.0", 12, "10.0.0.254", ETH0, 0),
            ],
            &[neigh(ETH0, "10.0.0.254", 7, NeighbourState::Stale)],
        );
        assert_eq!(
            t.resolve(ip("172.16.9.9")),
            Ok(NextHop {
                ifindex: ETH0,
                src_mac: MAC0,
                dst_mac: mac(7)
            })
        );
    }

    #[test]
    fn gateway_without_neighbour_asks_for_the_gateway() {
        let t = table(&[via("172.16.0.0", 12, "10.0.0.254", ETH0, 0)], &[]);
        assert_eq!(
            t.resolve(ip("172.16.9.9")),
            Err(Unresolved::NoNeighbour {
                next_hop: ip("10.0.0.254"),
                ifindex: ETH0
            })
        );
    }

    #[test]
    fn lowest_metric_wins_on_equal_prefix() {
        let routes = [
            via("198.51.100.0", 24, "10.0.0.1", ETH0, 200),
            via("198.51.100.0", 24, "10.0.1.1", ETH1, 100),
            via("198.51.100.0", 24, "10.0.0.9", ETH0, 300),
        ];
        let t = table(
            &routes,
            &[
                neigh(ETH0, "10.0.0.1", 1, NeighbourState::Reachable),
                neigh(ETH1, "10.0.1.1", 2, NeighbourState::Reachable),
            ],
        );
        assert_eq!(t.resolve(ip("198.51.100.7")).unwrap().dst_mac, mac(2));
    }

    #[test]
    fn first_route_wins_on_exact_tie() {
        // A multipath route arrives as entries with equal prefix and metric.
        let routes = [
            via("198.51.100.0", 24, "10.0.0.1", ETH0, 0),
            via("198.51.100.0", 24, "10.0.1.1", ETH1, 0),
        ];
        let t = table(&routes, &[]);
        assert_eq!(
            t.resolve(ip("198.51.100.7")),
            Err(Unresolved::NoNeighbour {
                next_hop: ip("10.0.0.1"),
                ifindex: ETH0
            })
        );
    }

    #[test]
    fn unusable_neighbour_states_are_misses() {
        for state in [
            NeighbourState::Incomplete,
            NeighbourState::Failed,
            NeighbourState::None,
        ] {
            let t = table(
                &[onlink("10.0.0.0", 24, ETH0)],
                &[neigh(ETH0, "10.0.0.5", 5, state)],
            );
            assert_eq!(
                t.resolve(ip("10.0.0.5")),
                Err(Unresolved::NoNeighbour {
                    next_hop: ip("10.0.0.5"),
                    ifindex: ETH0
                }),
                "{state}"
            );
        }
    }

    #[test]
    fn usable_neighbour_states_resolve() {
        for state in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
            NeighbourState::Noarp,
        ] {
            let t = table(
                &[onlink("10.0.0.0", 24, ETH0)],
                &[neigh(ETH0, "10.0.0.5", 5, state)],
            );
            assert_eq!(
                t.resolve(ip("10.0.0.5")).map(|h| h.dst_mac),
                Ok(mac(5)),
                "{state}"
            );
        }
    }

    #[test]
    fn neighbour_without_lladdr_is_a_miss() {
        let mut n = neigh(ETH0, "10.0.0.5", 5, NeighbourState::Reachable);
        n.mac = None;
        let t = table(&[onlink("10.0.0.0", 24, ETH0)], &[n]);
        assert!(matches!(
            t.resolve(ip("10.0.0.5")),
            Err(Unresolved::NoNeighbour { .. })
        ));
    }

    #[test]
    fn neighbour_on_another_interface_does_not_match() {
        let t = table(
            &[onlink("10.0.0.0", 24, ETH0)],
            &[neigh(ETH1, "10.0.0.5", 5, NeighbourState::Reachable)],
        );
        assert!(matches!(
            t.resolve(ip("10.0.0.5")),
            Err(Unresolved::NoNeighbour { .. })
        ));
    }

    #[test]
    fn routes_via_foreign_interfaces_are_ignored() {
        // The management routes are more specific but leave through an
        // interface Switchyard does not own: never used, never shadowing.
        let t = table(
            &[
                via("0.0.0.0", 0, "192.168.1.1", MGMT, 0),
                onlink("10.9.0.0", 16, MGMT),
                onlink("10.0.0.0", 8, ETH0),
            ],
            &[
                neigh(MGMT, "192.168.1.1", 1, NeighbourState::Reachable),
                neigh(ETH0, "10.9.0.1", 2, NeighbourState::Reachable),
            ],
        );
        assert_eq!(t.resolve(ip("8.8.8.8")), Err(Unresolved::NoRoute));
        assert_eq!(t.resolve(ip("10.9.0.1")).map(|h| h.ifindex), Ok(ETH0));
    }

    #[test]
    fn owned_interface_without_ethernet_address_is_unusable() {
        let t = L2Table::new(&[ETH0, 42], &links(), &[onlink("10.0.0.0", 8, 42)], &[]);
        assert_eq!(t.resolve(ip("10.0.0.1")), Err(Unresolved::NoRoute));
    }

    #[test]
    fn reject_route_shadows_shorter_prefix() {
        let t = table(
            &[
                onlink("10.0.0.0", 8, ETH0),
                RouteEntry {
                    dst: ip("10.66.0.0"),
                    prefix_len: 16,
                    metric: 0,
                    action: RouteAction::Reject,
                },
            ],
            &[neigh(ETH0, "10.66.0.1", 1, NeighbourState::Reachable)],
        );
        assert_eq!(t.resolve(ip("10.66.0.1")), Err(Unresolved::NoRoute));
        assert!(t
            .resolve(ip("10.67.0.1"))
            .is_err_and(|e| e != Unresolved::NoRoute));
    }

    #[test]
    fn no_route_without_covering_prefix() {
        let t = table(&[onlink("10.0.0.0", 8, ETH0)], &[]);
        assert_eq!(t.resolve(ip("11.0.0.1")), Err(Unresolved::NoRoute));
        assert_eq!(
            L2Table::default().resolve(ip("10.0.0.1")),
            Err(Unresolved::NoRoute)
        );
    }

    #[test]
    fn host_route_and_unmasked_destination() {
        // The kernel sends masked prefixes, but a literal table may not.
        let t = table(
            &[onlink("10.0.0.77", 24, ETH0), onlink("10.0.0.9", 32, ETH1)],
            &[
                neigh(ETH0, "10.0.0.8", 8, NeighbourState::Reachable),
                neigh(ETH1, "10.0.0.9", 9, NeighbourState::Reachable),
            ],
        );
        assert_eq!(t.resolve(ip("10.0.0.8")).map(|h| h.ifindex), Ok(ETH0));
        assert_eq!(t.resolve(ip("10.0.0.9")).map(|h| h.ifindex), Ok(ETH1));
        assert_eq!(t.route_count(), 2);
    }

    #[test]
    fn prefix_longer_than_32_is_skipped() {
        let t = table(&[onlink("10.0.0.0", 40, ETH0)], &[]);
        assert_eq!(t.route_count(), 0);
    }
}
