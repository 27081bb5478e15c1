//! The immutable L2 table the workers read: routes, neighbours and link MACs
//! of the interfaces Switchyard owns, for IPv4 and IPv6, arranged so that
//! `resolve` is a handful of binary searches and never allocates.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_route::neighbour::NeighbourState;

/// Where to send a packet: the egress interface and the L2 header to write.
/// A route out of a VLAN link of an owned interface leaves by that
/// interface (`ifindex` is the parent's), from the VLAN link's MAC, with
/// the VLAN's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<VlanTag>,
    /// The MTU of the route's link (the VLAN link's for a VLAN); 0 when
    /// the kernel did not say.
    pub mtu: u32,
}

/// The 802.1Q or 802.1ad tag (IEEE 802.1Q §9.6) a frame carries on a VLAN
/// link: its TPID and VLAN identifier. Priority bits are the frame's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad), as the link's protocol says.
    pub tpid: u16,
    /// 1 to 4094.
    pub id: u16,
}

/// A [`VlanTag`] or none in two bytes, as a flow keeps it (a flow entry's
/// size is a budget): bit 15 set when there is a tag, bit 14 for 802.1ad
/// (TPID 0x88a8; else 802.1Q), the VLAN id in the low 12 bits. Those two
/// TPIDs are all a kernel VLAN link can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackedVlan(u16);

const PACKED_TAGGED: u16 = 0x8000;
const PACKED_QINQ: u16 = 0x4000;
const TPID_8021AD: u16 = 0x88a8;
const TPID_8021Q: u16 = 0x8100;

impl PackedVlan {
    pub const NONE: Self = Self(0);

    pub fn get(self) -> Option<VlanTag> {
        (self.0 & PACKED_TAGGED != 0).then_some(VlanTag {
            tpid: if self.0 & PACKED_QINQ != 0 {
                TPID_8021AD
            } else {
                TPID_8021Q
            },
            id: self.0 & 0x0fff,
        })
    }
}

impl From<Option<VlanTag>> for PackedVlan {
    fn from(tag: Option<VlanTag>) -> Self {
        match tag {
            None => Self::NONE,
            Some(tag) => {
                let qinq = if tag.tpid == TPID_8021AD {
                    PACKED_QINQ
                } else {
                    0
                };
                Self(PACKED_TAGGED | qinq | (tag.id & 0x0fff))
            }
        }
    }
}

/// A kernel VLAN link (`ip link add link eth0 name eth0.100 type vlan id
/// 100`): the interface it sits on and the tag it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanLink {
    pub parent: u32,
    pub tag: VlanTag,
}

/// Why `L2Table::resolve` found no next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// No route out of a Switchyard interface covers the destination, or the
    /// best one rejects it (blackhole, unreachable, prohibit, throw), or the
    /// destination is IPv6 link-local (see [`L2Table::resolve`]).
    NoRoute,
    /// A route exists but the kernel has no usable neighbour entry for the
    /// next hop yet; `Neighbors::request(next_hop)` asks for one. A
    /// link-local `next_hop` means that address on `ifindex`.
    NoNeighbour { next_hop: IpAddr, ifindex: u32 },
}

/// A link as the kernel reports it: its Ethernet address, and for a VLAN
/// link the interface and tag it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEntry {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub vlan: Option<VlanLink>,
    /// `IFLA_MTU`; 0 when unknown, which limits nothing.
    pub mtu: u32,
}

impl LinkEntry {
    /// A link that is no VLAN, of unknown MTU.
    pub fn ethernet(ifindex: u32, mac: [u8; 6]) -> Self {
        Self {
            ifindex,
            mac,
            vlan: None,
            mtu: 0,
        }
    }
}

/// How a link in the table sends: out of which owned interface, from
/// which MAC, with which tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Egress {
    ifindex: u32,
    mac: [u8; 6],
    vlan: Option<VlanTag>,
    mtu: u32,
}

/// What a main-table route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAction {
    /// Send out of `ifindex`, to `gateway` if set, else to the destination
    /// itself (an on-link route). The gateway is looked up on `ifindex`,
    /// which is what gives a link-local gateway (`via fe80::1 dev eth0`)
    /// its meaning.
    Forward {
        ifindex: u32,
        gateway: Option<IpAddr>,
    },
    /// The kernel would drop it (blackhole, unreachable, prohibit, throw).
    Reject,
}

/// One route of the main table, IPv4 or IPv6 by `dst`. A multipath route is
/// several entries with the same prefix and metric, in the kernel's nexthop
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// `RTA_PRIORITY`; lower wins between routes of the same prefix.
    pub metric: u32,
    pub action: RouteAction,
}

/// One neighbour entry: ARP for IPv4, NDP for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
}

/// Internal form of a route once filtered: what `resolve` needs and no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Forward {
        ifindex: u32,
        gateway: Option<IpAddr>,
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

/// An address family's integer form, in which prefixes are masks.
trait Bits: Copy + Ord + std::fmt::Debug {
    const WIDTH: u8;
    fn mask(self, prefix_len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn mask(self, prefix_len: u8) -> Self {
        match prefix_len {
            0 => 0,
            n => self & (u32::MAX << (32 - u32::from(n.min(32)))),
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn mask(self, prefix_len: u8) -> Self {
        match prefix_len {
            0 => 0,
            n => self & (u128::MAX << (128 - u32::from(n.min(128)))),
        }
    }
}

/// One family's routes: per prefix length present, longest first, the
/// masked prefixes sorted, one per prefix (the winner of metric ties). A
/// lookup is one binary search per length present, so it is bounded by the
/// family's width (33 or 129 searches) and in practice by the handful of
/// lengths a node's table uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fib<K> {
    levels: Vec<(u8, Vec<(K, Hop)>)>,
}

impl<K> Default for Fib<K> {
    fn default() -> Self {
        Self { levels: Vec::new() }
    }
}

impl<K: Bits> Fib<K> {
    /// `routes` as (prefix, length, metric, hop) in the kernel's order; a
    /// stable sort keeps that order for exact ties, so the first nexthop of
    /// a multipath route wins. Lengths beyond the family's width are skipped.
    fn new(mut routes: Vec<(K, u8, u32, Hop)>) -> Self {
        routes.retain(|&(_, len, _, _)| len <= K::WIDTH);
        for route in &mut routes {
            route.0 = route.0.mask(route.1);
        }
        routes.sort_by_key(|&(prefix, len, metric, _)| (std::cmp::Reverse(len), prefix, metric));
        routes.dedup_by_key(|&mut (prefix, len, _, _)| (len, prefix));
        let mut levels: Vec<(u8, Vec<(K, Hop)>)> = Vec::new();
        for (prefix, len, _, hop) in routes {
            match levels.last_mut() {
                Some((l, bucket)) if *l == len => bucket.push((prefix, hop)),
                _ => levels.push((len, vec![(prefix, hop)])),
            }
        }
        Self { levels }
    }

    fn lookup(&self, addr: K) -> Option<Hop> {
        self.levels.iter().find_map(|(len, bucket)| {
            let key = addr.mask(*len);
            bucket
                .binary_search_by_key(&key, |&(prefix, _)| prefix)
                .ok()
                .map(|i| bucket[i].1)
        })
    }

    fn len(&self) -> usize {
        self.levels.iter().map(|(_, bucket)| bucket.len()).sum()
    }
}

/// Usable neighbours of one family, sorted by (ifindex, address): a
/// link-local address is only meaningful with its interface, and keying
/// every entry so costs nothing.
type Neighbours<K> = Vec<((u32, K), [u8; 6])>;

/// Whether every entry of `earlier` is in `here` with the same MAC; both
/// sorted by key: one merge walk.
fn neighbours_extend<K: Ord>(here: &Neighbours<K>, earlier: &Neighbours<K>) -> bool {
    let mut here = here.iter().peekable();
    earlier.iter().all(|(key, mac)| {
        while here.next_if(|(k, _)| k < key).is_some() {}
        here.next_if(|(k, m)| k == key && m == mac).is_some()
    })
}

fn find_neighbour<K: Ord>(neighbours: &Neighbours<K>, key: (u32, K)) -> Option<[u8; 6]> {
    neighbours
        .binary_search_by(|(k, _)| k.cmp(&key))
        .ok()
        .map(|i| neighbours[i].1)
}

/// Immutable view of the kernel's main routing table (IPv4 and IPv6),
/// neighbours and link MACs at one moment, restricted to the interfaces
/// Switchyard owns.
#[derive(Debug, Clone, Default)]
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
    routes4: Fib<u32>,
    routes6: Fib<u128>,
    neighbours4: Neighbours<u32>,
    neighbours6: Neighbours<u128>,
    /// Sorted by ifindex; owned Ethernet links and the VLAN links on them.
    links: Vec<(u32, Egress)>,
}

impl PartialEq for L2Table {
    fn eq(&self, other: &Self) -> bool {
        self.routes4 == other.routes4
            && self.routes6 == other.routes6
            && self.neighbours4 == other.neighbours4
            && self.neighbours6 == other.neighbours6
            && self.links == other.links
    }
}

impl Eq for L2Table {}

/// Whether `addr` is in fe80::/10, the prefix RFC 4291 §2.5.6 reserves for
/// link-local unicast.
fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.is_unicast_link_local()
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
        self.routes4 == earlier.routes4
            && self.routes6 == earlier.routes6
            && self.links == earlier.links
            && neighbours_extend(&self.neighbours4, &earlier.neighbours4)
            && neighbours_extend(&self.neighbours6, &earlier.neighbours6)
    }

    /// Builds the table from kernel facts. Only `interfaces` with a known
    /// Ethernet address count, and the VLAN links directly on them (whose
    /// routes leave by the parent, tagged by the worker): routes out of any
    /// other interface are ignored (a management interface's default route
    /// must never capture backend traffic), and so are their neighbours. A
    /// VLAN link on such a VLAN link is not owned: the workers write one
    /// tag. Reject routes have no
    /// interface and always count: they shadow shorter prefixes exactly as
    /// in the kernel. Malformed entries (prefix longer than the family's
    /// width) are skipped, and so are IPv6 link-local prefixes, which no
    /// destination `resolve` accepts can match.
    pub fn new(
        interfaces: &[u32],
        links: &[LinkEntry],
        routes: &[RouteEntry],
        neighbours: &[NeighbourEntry],
    ) -> Self {
        let mut owned: Vec<(u32, Egress)> = links
            .iter()
            .filter_map(|l| {
                let egress = |ifindex, vlan| Egress {
                    ifindex,
                    mac: l.mac,
                    vlan,
                    mtu: l.mtu,
                };
                match l.vlan {
                    // Named itself (`--interface eth0.100`): the kernel tags.
                    _ if interfaces.contains(&l.ifindex) => {
                        Some((l.ifindex, egress(l.ifindex, None)))
                    }
                    Some(vlan) if interfaces.contains(&vlan.parent) => {
                        Some((l.ifindex, egress(vlan.parent, Some(vlan.tag))))
                    }
                    _ => None,
                }
            })
            .collect();
        owned.sort_unstable_by_key(|&(ifindex, _)| ifindex);
        owned.dedup_by_key(|&mut (ifindex, _)| ifindex);
        let is_owned = |ifindex: u32| owned.binary_search_by_key(&ifindex, |&(i, _)| i).is_ok();

        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for route in routes {
            let hop = match route.action {
                RouteAction::Forward { ifindex, gateway } if is_owned(ifindex) => Hop::Forward {
                    ifindex,
                    gateway: gateway.filter(|g| !g.is_unspecified()),
                },
                RouteAction::Forward { .. } => continue,
                RouteAction::Reject => Hop::Reject,
            };
            match route.dst {
                IpAddr::V4(dst) => v4.push((u32::from(dst), route.prefix_len, route.metric, hop)),
                IpAddr::V6(dst) if route.prefix_len >= 10 && is_link_local(dst) => {}
                IpAddr::V6(dst) => v6.push((u128::from(dst), route.prefix_len, route.metric, hop)),
            }
        }

        let mut neighbours4 = Vec::new();
        let mut neighbours6 = Vec::new();
        for n in neighbours {
            let Some(mac) = n
                .mac
                .filter(|_| state_is_usable(n.state) && is_owned(n.ifindex))
            else {
                continue;
            };
            match n.ip {
                IpAddr::V4(ip) => neighbours4.push(((n.ifindex, u32::from(ip)), mac)),
                IpAddr::V6(ip) => neighbours6.push(((n.ifindex, u128::from(ip)), mac)),
            }
        }
        neighbours4.sort_unstable_by_key(|&(key, _)| key);
        neighbours4.dedup_by_key(|&mut (key, _)| key);
        neighbours6.sort_unstable_by_key(|&(key, _)| key);
        neighbours6.dedup_by_key(|&mut (key, _)| key);

        Self {
            version: 0,
            epoch: 0,
            routes4: Fib::new(v4),
            routes6: Fib::new(v6),
            neighbours4,
            neighbours6,
            links: owned,
        }
    }

    /// Longest-prefix match over the owned routes of `dst`'s family (lowest
    /// metric on equal prefixes), then the neighbour entry of the next hop
    /// on the egress interface. Allocation-free.
    ///
    /// An IPv6 link-local destination is [`Unresolved::NoRoute`]: it names
    /// an address on some link, and a bare address does not say which (the
    /// kernel too needs an interface to route to one). Link-local
    /// *gateways* resolve, on the interface their route names.
    pub fn resolve(&self, dst: impl Into<IpAddr>) -> Result<NextHop, Unresolved> {
        let dst = dst.into();
        let hop = match dst {
            IpAddr::V4(addr) => self.routes4.lookup(u32::from(addr)),
            IpAddr::V6(addr) if is_link_local(addr) => None,
            IpAddr::V6(addr) => self.routes6.lookup(u128::from(addr)),
        };
        let (ifindex, gateway) = match hop {
            Some(Hop::Forward { ifindex, gateway }) => (ifindex, gateway),
            Some(Hop::Reject) | None => return Err(Unresolved::NoRoute),
        };
        let next_hop = gateway.unwrap_or(dst);
        // Present by construction: `new` keeps only routes out of owned links.
        let Ok(link) = self.links.binary_search_by_key(&ifindex, |&(i, _)| i) else {
            return Err(Unresolved::NoRoute);
        };
        let egress = self.links[link].1;
        let dst_mac = match next_hop {
            IpAddr::V4(ip) => find_neighbour(&self.neighbours4, (ifindex, u32::from(ip))),
            IpAddr::V6(ip) => find_neighbour(&self.neighbours6, (ifindex, u128::from(ip))),
        };
        match dst_mac {
            Some(dst_mac) => Ok(NextHop {
                ifindex: egress.ifindex,
                src_mac: egress.mac,
                dst_mac,
                vlan: egress.vlan,
                mtu: egress.mtu,
            }),
            None => Err(Unresolved::NoNeighbour { next_hop, ifindex }),
        }
    }

    /// Whether `dst` is reached on-link (its route names no gateway): the
    /// only backends L2 direct server return can reach, since nothing but
    /// the destination MAC changes on the way.
    pub fn is_on_link(&self, dst: IpAddr) -> bool {
        let hop = match dst {
            IpAddr::V4(addr) => self.routes4.lookup(u32::from(addr)),
            IpAddr::V6(addr) if is_link_local(addr) => None,
            IpAddr::V6(addr) => self.routes6.lookup(u128::from(addr)),
        };
        matches!(hop, Some(Hop::Forward { gateway: None, .. }))
    }

    /// The MTU of owned link `ifindex` (an interface Switchyard runs on, or
    /// a VLAN link on one); 0 when unknown or not owned.
    pub fn link_mtu(&self, ifindex: u32) -> u32 {
        self.links
            .binary_search_by_key(&ifindex, |&(i, _)| i)
            .map_or(0, |i| self.links[i].1.mtu)
    }

    /// Number of usable neighbour entries on owned interfaces, both
    /// families (for stats).
    pub fn neighbour_count(&self) -> usize {
        self.neighbours4.len() + self.neighbours6.len()
    }

    /// Number of distinct routed prefixes out of owned interfaces, both
    /// families (for stats).
    pub fn route_count(&self) -> usize {
        self.routes4.len() + self.routes6.len()
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> [u8; 6] {
        [0x0a, 0, 0, 0, 0, last]
    }

    fn links() -> Vec<LinkEntry> {
        vec![
            LinkEntry::ethernet(ETH0, MAC0),
            LinkEntry::ethernet(ETH1, MAC1),
            LinkEntry::ethernet(MGMT, MAC_MGMT),
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
                dst_mac: mac(7),
                vlan: None,
                mtu: 0,
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

    #[test]
    fn ipv6_longest_prefix_wins_and_families_do_not_mix() {
        let t = table(
            &[
                via("::", 0, "2001:db8::1", ETH0, 1024),
                onlink("2001:db8:1::", 48, ETH1),
                onlink("2001:db8:1:2::", 64, ETH0),
                // An IPv4 default route covers no IPv6 destination, and the
                // IPv6 one none of IPv4.
                via("0.0.0.0", 0, "10.0.0.1", ETH1, 0),
            ],
            &[
                neigh(ETH0, "2001:db8:1:2::3", 1, NeighbourState::Reachable),
                neigh(ETH1, "2001:db8:1:3::3", 2, NeighbourState::Reachable),
                neigh(ETH0, "2001:db8::1", 3, NeighbourState::Reachable),
                neigh(ETH1, "10.0.0.1", 4, NeighbourState::Reachable),
            ],
        );
        let hop = t.resolve(ip("2001:db8:1:2::3")).unwrap();
        assert_eq!(
            (hop.ifindex, hop.src_mac, hop.dst_mac),
            (ETH0, MAC0, mac(1))
        );
        let hop = t.resolve(ip("2001:db8:1:3::3")).unwrap();
        assert_eq!(
            (hop.ifindex, hop.src_mac, hop.dst_mac),
            (ETH1, MAC1, mac(2))
        );
        assert_eq!(t.resolve(ip("2001:db8:ffff::9")).unwrap().dst_mac, mac(3));
        assert_eq!(t.resolve(ip("192.0.2.1")).unwrap().dst_mac, mac(4));
        assert_eq!(t.route_count(), 4);
        assert_eq!(t.neighbour_count(), 4);

        let v4_only = table(&[via("0.0.0.0", 0, "10.0.0.1", ETH1, 0)], &[]);
        assert_eq!(v4_only.resolve(ip("2001:db8::9")), Err(Unresolved::NoRoute));
        let v6_only = table(&[via("::", 0, "2001:db8::1", ETH0, 0)], &[]);
        assert_eq!(v6_only.resolve(ip("192.0.2.1")), Err(Unresolved::NoRoute));
    }

    #[test]
    fn ipv6_prefix_masks_past_the_first_64_bits() {
        let t = table(
            &[
                onlink("2001:db8::", 64, ETH0),
                onlink("2001:db8::8000:0:0:0", 65, ETH1),
                onlink("2001:db8::dead:beef", 128, ETH0),
            ],
            &[],
        );
        let via_if = |addr| match t.resolve(ip(addr)) {
            Err(Unresolved::NoNeighbour { ifindex, .. }) => ifindex,
            other => panic!("{addr}: {other:?}"),
        };
        assert_eq!(via_if("2001:db8::1"), ETH0);
        assert_eq!(via_if("2001:db8::8000:0:0:1"), ETH1);
        assert_eq!(via_if("2001:db8::dead:beef"), ETH0);
        assert_eq!(via_if("2001:db8::dead:bee0"), ETH0);
    }

    #[test]
    fn link_local_gateway_resolves_on_the_routes_interface() {
        // The same fe80::1 on both links, as routers commonly configure it:
        // only the entry on the route's interface is the next hop.
        let routes = [via("2001:db8:99::", 48, "fe80::1", ETH1, 1024)];
        let t = table(
            &routes,
            &[
                neigh(ETH0, "fe80::1", 1, NeighbourState::Reachable),
                neigh(ETH1, "fe80::1", 2, NeighbourState::Stale),
            ],
        );
        assert_eq!(
            t.resolve(ip("2001:db8:99::7")),
            Ok(NextHop {
                ifindex: ETH1,
                src_mac: MAC1,
                dst_mac: mac(2),
                vlan: None,
                mtu: 0,
            })
        );

        let elsewhere = table(
            &routes,
            &[neigh(ETH0, "fe80::1", 1, NeighbourState::Reachable)],
        );
        assert_eq!(
            elsewhere.resolve(ip("2001:db8:99::7")),
            Err(Unresolved::NoNeighbour {
                next_hop: ip("fe80::1"),
                ifindex: ETH1
            })
        );
    }

    #[test]
    fn link_local_destination_has_no_route() {
        // The kernel's fe80::/64 routes name an interface each; a bare
        // link-local address names none, so no table entry may pick one.
        let t = table(
            &[
                onlink("fe80::", 64, ETH0),
                onlink("fe80::", 64, ETH1),
                via("::", 0, "fe80::1", ETH0, 1024),
            ],
            &[neigh(ETH0, "fe80::5", 5, NeighbourState::Reachable)],
        );
        assert_eq!(t.resolve(ip("fe80::5")), Err(Unresolved::NoRoute));
        assert_eq!(t.route_count(), 1, "only the default route is kept");
    }

    #[test]
    fn ipv6_reject_route_shadows_and_unusable_ndp_states_miss() {
        let t = table(
            &[
                onlink("2001:db8::", 32, ETH0),
                RouteEntry {
                    dst: ip("2001:db8:66::"),
                    prefix_len: 48,
                    metric: 0,
                    action: RouteAction::Reject,
                },
            ],
            &[
                neigh(ETH0, "2001:db8:66::1", 1, NeighbourState::Reachable),
                neigh(ETH0, "2001:db8:1::1", 1, NeighbourState::Incomplete),
            ],
        );
        assert_eq!(t.resolve(ip("2001:db8:66::1")), Err(Unresolved::NoRoute));
        assert_eq!(
            t.resolve(ip("2001:db8:1::1")),
            Err(Unresolved::NoNeighbour {
                next_hop: ip("2001:db8:1::1"),
                ifindex: ETH0
            })
        );
    }

    #[test]
    fn ipv6_neighbours_count_in_extends() {
        let routes = [onlink("2001:db8::", 64, ETH0)];
        let before = table(
            &routes,
            &[neigh(ETH0, "2001:db8::5", 5, NeighbourState::Reachable)],
        );
        let added = table(
            &routes,
            &[
                neigh(ETH0, "2001:db8::5", 5, NeighbourState::Reachable),
                neigh(ETH0, "2001:db8::6", 6, NeighbourState::Reachable),
            ],
        );
        assert!(added.extends(&before));
        assert!(!before.extends(&added));
        let moved = table(
            &routes,
            &[neigh(ETH0, "2001:db8::5", 7, NeighbourState::Reachable)],
        );
        assert!(!moved.extends(&before));
        assert_ne!(moved, before);
    }

    #[test]
    fn prefix_longer_than_128_is_skipped() {
        let t = table(&[onlink("2001:db8::", 129, ETH0)], &[]);
        assert_eq!(t.route_count(), 0);
    }

    const ETH0_100: u32 = 20;
    const ETH0_200: u32 = 21;
    const MGMT_300: u32 = 22;
    const MAC_100: [u8; 6] = [0x02, 0, 0, 0, 1, 0];
    const Q: u16 = 0x8100;
    const AD: u16 = 0x88a8;

    fn vlan_link(ifindex: u32, parent: u32, tpid: u16, id: u16, mac: [u8; 6]) -> LinkEntry {
        LinkEntry {
            ifindex,
            mac,
            vlan: Some(VlanLink {
                parent,
                tag: VlanTag { tpid, id },
            }),
            mtu: 1496,
        }
    }

    fn vlan_table(routes: &[RouteEntry], neighbours: &[NeighbourEntry]) -> L2Table {
        let mut links = links();
        links.extend([
            vlan_link(ETH0_100, ETH0, Q, 100, MAC_100),
            vlan_link(ETH0_200, ETH0, AD, 200, MAC0),
            vlan_link(MGMT_300, MGMT, Q, 300, MAC_MGMT),
        ]);
        L2Table::new(&[ETH0, ETH1], &links, routes, neighbours)
    }

    #[test]
    fn a_route_out_of_a_vlan_link_leaves_by_its_parent_with_its_tag_and_mac() {
        let t = vlan_table(
            &[
                onlink("10.100.0.0", 24, ETH0_100),
                via("0.0.0.0", 0, "10.100.0.1", ETH0_100, 0),
                onlink("2001:db8:200::", 64, ETH0_200),
            ],
            &[
                neigh(ETH0_100, "10.100.0.5", 5, NeighbourState::Reachable),
                neigh(ETH0_100, "10.100.0.1", 1, NeighbourState::Reachable),
                neigh(ETH0_200, "2001:db8:200::7", 7, NeighbourState::Stale),
            ],
        );
        assert_eq!(
            t.resolve(ip("10.100.0.5")),
            Ok(NextHop {
                ifindex: ETH0,
                src_mac: MAC_100,
                dst_mac: mac(5),
                vlan: Some(VlanTag { tpid: Q, id: 100 }),
                mtu: 1496,
            })
        );
        assert_eq!(t.resolve(ip("192.0.2.1")).map(|h| h.dst_mac), Ok(mac(1)));
        assert_eq!(
            t.resolve(ip("2001:db8:200::7"))
                .map(|h| (h.ifindex, h.vlan)),
            Ok((ETH0, Some(VlanTag { tpid: AD, id: 200 })))
        );
    }

    #[test]
    fn a_vlan_links_neighbours_are_its_own_and_misses_name_it() {
        // The kernel keeps a VLAN's neighbours on the VLAN link: the same
        // address on the parent is another host, and a miss is resolved
        // on the VLAN link, where the kernel sends its ARP request.
        let t = vlan_table(
            &[onlink("10.100.0.0", 24, ETH0_100)],
            &[neigh(ETH0, "10.100.0.5", 5, NeighbourState::Reachable)],
        );
        assert_eq!(
            t.resolve(ip("10.100.0.5")),
            Err(Unresolved::NoNeighbour {
                next_hop: ip("10.100.0.5"),
                ifindex: ETH0_100
            })
        );
    }

    #[test]
    fn vlan_links_of_foreign_interfaces_and_stacked_vlans_are_not_owned() {
        let mut links = links();
        links.extend([
            vlan_link(MGMT_300, MGMT, Q, 300, MAC_MGMT),
            // A VLAN on eth0.100 would need two tags.
            vlan_link(ETH0_100, ETH0, Q, 100, MAC_100),
            vlan_link(30, ETH0_100, Q, 7, MAC_100),
        ]);
        let t = L2Table::new(
            &[ETH0],
            &links,
            &[
                onlink("10.30.0.0", 16, MGMT_300),
                onlink("10.7.0.0", 16, 30),
            ],
            &[
                neigh(MGMT_300, "10.30.0.5", 5, NeighbourState::Reachable),
                neigh(30, "10.7.0.5", 5, NeighbourState::Reachable),
            ],
        );
        assert_eq!(t.resolve(ip("10.30.0.5")), Err(Unresolved::NoRoute));
        assert_eq!(t.resolve(ip("10.7.0.5")), Err(Unresolved::NoRoute));
        assert_eq!(t.route_count(), 0);
    }

    #[test]
    fn a_vlan_id_change_does_not_extend() {
        let routes = [onlink("10.100.0.0", 24, ETH0_100)];
        let table_with = |id| {
            let mut links = links();
            links.push(vlan_link(ETH0_100, ETH0, Q, id, MAC_100));
            L2Table::new(&[ETH0], &links, &routes, &[])
        };
        assert!(table_with(100).extends(&table_with(100)));
        assert!(!table_with(101).extends(&table_with(100)));
    }

    #[test]
    fn a_packed_vlan_gives_back_its_tag() {
        for tag in [
            None,
            Some(VlanTag { tpid: Q, id: 1 }),
            Some(VlanTag { tpid: Q, id: 4094 }),
            Some(VlanTag { tpid: AD, id: 200 }),
        ] {
            assert_eq!(PackedVlan::from(tag).get(), tag);
        }
        assert_eq!(std::mem::size_of::<PackedVlan>(), 2);
    }
}
