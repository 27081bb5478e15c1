//! The resolver against the real kernel, in a fresh pair of network
//! namespaces joined by a veth (needs root; skipped otherwise). Waits are
//! driven by table publications with a deadline, never by fixed sleeps.
//! Duplicate address detection is off in both namespaces, and addresses
//! are added `nodad`, so IPv6 addresses (the kernel's link-local ones
//! included, which it solicits from) are usable the moment they exist.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use super::*;
use switchyard_dataplane::neighbor::NextHop;

const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const B_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
/// B's link-local address on every link it has, as routers often do.
const B_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const DEADLINE: Duration = Duration::from_secs(5);

use crate::netns_testing::{ip, is_root};

/// Namespaces `swy-nb-<pid>-<n>-a` and `-b`, a veth `veth0`(a) -- `veth1`(b)
/// with 198.18.0.1/24 and 198.18.0.2/24, 2001:db8:18::1/64 and ::2/64, and
/// fe80::1/64 on `veth1` besides its own link-local address. Removed on
/// drop, panic included.
struct NetnsPair {
    a: String,
    b: String,
}

impl NetnsPair {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = format!(
            "swy-nb-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The guard exists before anything is created, so a failing step
        // below still removes whatever was made.
        let pair = Self {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        for ns in [&pair.a, &pair.b] {
            // Before any link exists: links copy `default` when created.
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.accept_dad=0",
                ])
                .output()
                .expect("running sysctl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        #[rustfmt::skip]
        ip(&["-n", &pair.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &pair.b]);
        ip(&[
            "-n",
            &pair.a,
            "addr",
            "add",
            "198.18.0.1/24",
            "dev",
            "veth0",
        ]);
        ip(&[
            "-n",
            &pair.b,
            "addr",
            "add",
            "198.18.0.2/24",
            "dev",
            "veth1",
        ]);
        #[rustfmt::skip]
        ip(&["-n", &pair.a, "addr", "add", "2001:db8:18::1/64", "dev", "veth0", "nodad"]);
        #[rustfmt::skip]
        ip(&["-n", &pair.b, "addr", "add", "2001:db8:18::2/64", "dev", "veth1", "nodad"]);
        #[rustfmt::skip]
        ip(&["-n", &pair.b, "addr", "add", "fe80::1/64", "dev", "veth1", "nodad"]);
        ip(&["-n", &pair.a, "link", "set", "veth0", "up"]);
        ip(&["-n", &pair.b, "link", "set", "veth1", "up"]);
        pair
    }

    /// A second link `veth2`(a) -- `veth3`(b), B holding fe80::1 on it too.
    fn add_second_link(&self) {
        #[rustfmt::skip]
        ip(&["-n", &self.a, "link", "add", "veth2", "type", "veth", "peer", "name", "veth3", "netns", &self.b]);
        #[rustfmt::skip]
        ip(&["-n", &self.b, "addr", "add", "fe80::1/64", "dev", "veth3", "nodad"]);
        ip(&["-n", &self.a, "link", "set", "veth2", "up"]);
        ip(&["-n", &self.b, "link", "set", "veth3", "up"]);
    }

    /// (ifindex, MAC) of `dev` in namespace `ns`, as `ip -j` reports them.
    fn link(ns: &str, dev: &str) -> (u32, [u8; 6]) {
        let json: serde_json::Value =
            serde_json::from_str(&ip(&["-n", ns, "-j", "link", "show", "dev", dev])).unwrap();
        let ifindex = json[0]["ifindex"].as_u64().unwrap() as u32;
        (ifindex, parse_mac(json[0]["address"].as_str().unwrap()))
    }

    fn a_link(&self) -> (u32, [u8; 6]) {
        Self::link(&self.a, "veth0")
    }

    fn b_mac(&self) -> [u8; 6] {
        Self::link(&self.b, "veth1").1
    }

    /// Starts a resolver from a thread that has entered namespace A.
    fn start_in_a(
        &self,
        interfaces: &[u32],
    ) -> Result<(NeighborResolver, Neighbors), NeighborError> {
        let path = format!("/run/netns/{}", self.a);
        let interfaces = interfaces.to_vec();
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("opening the namespace");
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            NeighborResolver::start(&interfaces)
        })
        .join()
        .expect("resolver start thread")
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0; 6];
    for (byte, part) in mac.iter_mut().zip(s.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// Re-evaluates `probe` after every table publication (at least once a
/// second) until it yields or `deadline` passes.
fn wait_until<T>(
    r: &NeighborResolver,
    deadline: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        let seen = r.published.generation();
        if let Some(v) = probe() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        r.published
            .wait_newer(seen, (now + Duration::from_secs(1)).min(end));
    }
}

#[test]
fn prime_resolves_the_peer_mac_in_a_fresh_netns() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    let (ifindex, a_mac) = pair.a_link();
    let (resolver, neighbors) = pair.start_in_a(&[ifindex]).unwrap();

    assert_eq!(
        neighbors.table().resolve(B_ADDR),
        Err(Unresolved::NoNeighbour {
            next_hop: B_ADDR.into(),
            ifindex
        })
    );
    assert_eq!(
        resolver.prime(&[B_ADDR, B_ADDR], DEADLINE),
        Vec::<Ipv4Addr>::new()
    );
    assert_eq!(
        neighbors.table().resolve(B_ADDR),
        Ok(NextHop {
            ifindex,
            src_mac: a_mac,
            dst_mac: pair.b_mac(),
            vlan: None,
            mtu: 1500,
        })
    );

    // Nobody answers for .99: it comes back unresolved at the deadline.
    let silent = Ipv4Addr::new(198, 18, 0, 99);
    let started = Instant::now();
    assert_eq!(
        resolver.prime(&[silent, B_ADDR], Duration::from_millis(300)),
        [silent]
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let stopping = Instant::now();
    resolver.stop();
    assert!(
        stopping.elapsed() < Duration::from_millis(500),
        "{:?}",
        stopping.elapsed()
    );
}

#[test]
fn request_makes_the_kernel_resolve_an_unprimed_gateway() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    ip(&[
        "-n",
        &pair.a,
        "route",
        "add",
        "198.19.0.0/16",
        "via",
        "198.18.0.2",
    ]);
    let (ifindex, _) = pair.a_link();
    let (resolver, neighbors) = pair.start_in_a(&[ifindex]).unwrap();
    let behind_gateway = Ipv4Addr::new(198, 19, 7, 7);

    assert_eq!(
        neighbors.table().resolve(behind_gateway),
        Err(Unresolved::NoNeighbour {
            next_hop: B_ADDR.into(),
            ifindex
        })
    );
    // As a worker would: ask on every miss.
    let hop = wait_until(&resolver, DEADLINE, || {
        let resolved = neighbors.table().resolve(behind_gateway).ok();
        if resolved.is_none() {
            neighbors.request(behind_gateway);
        }
        resolved
    })
    .expect("request() did not get the gateway resolved");
    assert_eq!(hop.dst_mac, pair.b_mac());
    assert_eq!(neighbors.requests_dropped(), 0);
    // The kernel holds the entry it resolved, not a copy of ours.
    assert!(ip(&["-n", &pair.a, "neigh", "show", "198.18.0.2"]).contains("lladdr"));
}

#[test]
fn table_follows_kernel_changes_between_redumps() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    let (ifindex, _) = pair.a_link();
    let (resolver, neighbors) = pair.start_in_a(&[ifindex]).unwrap();
    // Well under REDUMP: only notifications can make these pass in time.
    let quick = Duration::from_secs(2);
    let static_peer = Ipv4Addr::new(198, 18, 0, 77);
    let far = Ipv4Addr::new(198, 19, 1, 1);
    let resolve = |addr| neighbors.table().resolve(addr);

    #[rustfmt::skip]
    ip(&["-n", &pair.a, "neigh", "replace", "198.18.0.77", "lladdr", "02:00:5e:00:00:77", "dev", "veth0", "nud", "permanent"]);
    let hop = wait_until(&resolver, quick, || resolve(static_peer).ok()).expect("new neighbour");
    assert_eq!(hop.dst_mac, [0x02, 0, 0x5e, 0, 0, 0x77]);

    ip(&[
        "-n",
        &pair.a,
        "route",
        "add",
        "198.19.0.0/16",
        "via",
        "198.18.0.77",
    ]);
    let hop = wait_until(&resolver, quick, || resolve(far).ok()).expect("new route");
    assert_eq!(hop.dst_mac, [0x02, 0, 0x5e, 0, 0, 0x77]);

    ip(&["-n", &pair.a, "route", "del", "198.19.0.0/16"]);
    wait_until(&resolver, quick, || {
        (resolve(far) == Err(Unresolved::NoRoute)).then_some(())
    })
    .expect("route removal");

    // Link down flushes the connected route without a per-route notification.
    ip(&["-n", &pair.a, "link", "set", "veth0", "down"]);
    wait_until(&resolver, quick, || {
        (resolve(static_peer) == Err(Unresolved::NoRoute)).then_some(())
    })
    .expect("link down");
    assert!(resolver.published.generation() >= 4);
}

#[test]
fn start_rejects_an_interface_that_does_not_exist() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    assert!(matches!(
        pair.start_in_a(&[9999]),
        Err(NeighborError::Interface { ifindex: 9999 })
    ));
}

/// The mechanism itself, without the resolver's request path: one
/// `RTM_NEWNEIGH` + `NTF_USE` from a bare socket makes the kernel of A send
/// an ARP request (B learns A's MAC from it) and resolve B.
#[test]
fn ntf_use_alone_makes_the_kernel_send_arp() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    let (ifindex, a_mac) = pair.a_link();
    let (resolver, neighbors) = pair.start_in_a(&[ifindex]).unwrap();
    let neigh_of_b = |addr| ip(&["-n", &pair.b, "neigh", "show", addr]);
    assert_eq!(neigh_of_b("198.18.0.1").trim(), "", "B already knows A");

    let path = format!("/run/netns/{}", pair.a);
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("opening the namespace");
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
        let mut socket = netlink::RtSocket::request().expect("rtnetlink socket");
        socket.request_resolution(ifindex, B_ADDR.into())
    })
    .join()
    .expect("request thread")
    .expect("kernel accepted NTF_USE");

    let hop = wait_until(&resolver, DEADLINE, || {
        neighbors.table().resolve(B_ADDR).ok()
    })
    .expect("kernel resolved B after NTF_USE");
    assert_eq!(hop.dst_mac, pair.b_mac());
    let a_mac = a_mac.map(|b| format!("{b:02x}")).join(":");
    assert!(
        neigh_of_b("198.18.0.1").contains(&a_mac),
        "B saw no ARP from A"
    );
}

/// `NTF_USE` would strip `NUD_PERMANENT`; the resolver must not clobber an
/// administrator's static entry even if its table is behind.
#[test]
fn resolution_request_leaves_static_entries_alone() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    let (ifindex, _) = pair.a_link();
    #[rustfmt::skip]
    ip(&["-n", &pair.a, "neigh", "add", "198.18.0.5", "lladdr", "02:00:5e:00:00:05", "dev", "veth0", "nud", "permanent"]);
    let path = format!("/run/netns/{}", pair.a);
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("opening the namespace");
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
        let mut socket = netlink::RtSocket::request().expect("rtnetlink socket");
        socket.request_resolution(ifindex, Ipv4Addr::new(198, 18, 0, 5).into())
    })
    .join()
    .expect("request thread")
    .expect("request");
    let entry = ip(&["-n", &pair.a, "neigh", "show", "198.18.0.5"]);
    assert!(entry.contains("02:00:5e:00:00:05 PERMANENT"), "{entry}");
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Neighbour entries of `ns` on `dev`, as `ip -6 neigh show` prints them.
fn ndp_entries(ns: &str, dev: &str) -> String {
    ip(&["-n", ns, "-6", "neigh", "show", "dev", dev])
}

#[test]
fn prime_resolves_an_ipv6_peer_by_ndp_in_a_fresh_netns() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    let (ifindex, a_mac) = pair.a_link();
    let (resolver, neighbors) = pair.start_in_a(&[ifindex]).unwrap();

    assert_eq!(
        neighbors.table().resolve(B_ADDR6),
        Err(Unresolved::NoNeighbour {
            next_hop: B_ADDR6.into(),
            ifindex
        })
    );
    // Both families in one call, as a dual-stack backend set asks.
    assert_eq!(
        resolver.prime(&[IpAddr::V6(B_ADDR6), IpAddr::V4(B_ADDR)], DEADLINE),
        Vec::<IpAddr>::new()
    );
    assert_eq!(
        neighbors.table().resolve(B_ADDR6),
        Ok(NextHop {
            ifindex,
            src_mac: a_mac,
            dst_mac: pair.b_mac(),
            vlan: None,
            mtu: 1500,
        })
    );
    // The kernel's NDP did it: B holds A's MAC from the solicitation.
    let a_mac = a_mac.map(|b| format!("{b:02x}")).join(":");
    assert!(
        ndp_entries(&pair.b, "veth1").contains(&a_mac),
        "B saw no Neighbor Solicitation from A"
    );

    let silent = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x99);
    assert_eq!(
        resolver.prime(&[silent, B_ADDR6], Duration::from_millis(300)),
        [silent]
    );
}

/// Routes via a global and via link-local gateways, on two links where B
/// holds the same link-local address: each resolves to the MAC of the
/// gateway on its own route's interface, after the kernel's NDP.
#[test]
fn ipv6_gateways_global_and_link_local_resolve_on_their_interface() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    pair.add_second_link();
    #[rustfmt::skip]
    ip(&["-n", &pair.a, "-6", "route", "add", "2001:db8:97::/48", "via", "2001:db8:18::2"]);
    #[rustfmt::skip]
    ip(&["-n", &pair.a, "-6", "route", "add", "2001:db8:98::/48", "via", "fe80::1", "dev", "veth0"]);
    #[rustfmt::skip]
    ip(&["-n", &pair.a, "-6", "route", "add", "2001:db8:99::/48", "via", "fe80::1", "dev", "veth2"]);
    let (veth0, _) = pair.a_link();
    let (veth2, veth2_mac) = NetnsPair::link(&pair.a, "veth2");
    let veth1_mac = pair.b_mac();
    let veth3_mac = NetnsPair::link(&pair.b, "veth3").1;
    assert_ne!(veth1_mac, veth3_mac);
    let (resolver, neighbors) = pair.start_in_a(&[veth0, veth2]).unwrap();

    let via_global = addr("2001:db8:97::7");
    let via_ll_0 = addr("2001:db8:98::7");
    let via_ll_2 = addr("2001:db8:99::7");
    assert_eq!(
        neighbors.table().resolve(via_ll_2),
        Err(Unresolved::NoNeighbour {
            next_hop: B_LINK_LOCAL.into(),
            ifindex: veth2
        })
    );
    // As a worker would: ask on every miss.
    let hops = wait_until(&resolver, DEADLINE, || {
        let table = neighbors.table();
        let hops: Vec<_> = [via_global, via_ll_0, via_ll_2]
            .into_iter()
            .map(|dst| {
                let hop = table.resolve(dst).ok();
                if hop.is_none() {
                    neighbors.request(dst);
                }
                hop
            })
            .collect();
        hops.into_iter().collect::<Option<Vec<_>>>()
    })
    .expect("the gateways did not resolve");
    assert_eq!(
        (hops[0].ifindex, hops[0].dst_mac),
        (veth0, veth1_mac),
        "global gateway"
    );
    assert_eq!(
        (hops[1].ifindex, hops[1].dst_mac),
        (veth0, veth1_mac),
        "fe80::1 on veth0"
    );
    assert_eq!(
        hops[2],
        NextHop {
            ifindex: veth2,
            src_mac: veth2_mac,
            dst_mac: veth3_mac,
            vlan: None,
            mtu: 1500,
        },
        "fe80::1 on veth2"
    );
    assert_eq!(neighbors.requests_dropped(), 0);
}

#[test]
fn ipv6_table_follows_kernel_changes_between_redumps() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    let (ifindex, _) = pair.a_link();
    let (resolver, neighbors) = pair.start_in_a(&[ifindex]).unwrap();
    // Well under REDUMP: only notifications can make these pass in time.
    let quick = Duration::from_secs(2);
    let static_peer = addr("2001:db8:18::77");
    let far = addr("2001:db8:19::1");
    let resolve = |dst: IpAddr| neighbors.table().resolve(dst);

    #[rustfmt::skip]
    ip(&["-n", &pair.a, "-6", "neigh", "replace", "2001:db8:18::77", "lladdr", "02:00:5e:00:00:77", "dev", "veth0", "nud", "permanent"]);
    let hop = wait_until(&resolver, quick, || resolve(static_peer).ok()).expect("new neighbour");
    assert_eq!(hop.dst_mac, [0x02, 0, 0x5e, 0, 0, 0x77]);

    #[rustfmt::skip]
    ip(&["-n", &pair.a, "-6", "route", "add", "2001:db8:19::/48", "via", "2001:db8:18::77"]);
    let hop = wait_until(&resolver, quick, || resolve(far).ok()).expect("new route");
    assert_eq!(hop.dst_mac, [0x02, 0, 0x5e, 0, 0, 0x77]);

    ip(&["-n", &pair.a, "-6", "route", "del", "2001:db8:19::/48"]);
    wait_until(&resolver, quick, || {
        (resolve(far) == Err(Unresolved::NoRoute)).then_some(())
    })
    .expect("route removal");

    #[rustfmt::skip]
    ip(&["-n", &pair.a, "-6", "neigh", "del", "2001:db8:18::77", "dev", "veth0"]);
    wait_until(&resolver, quick, || {
        matches!(resolve(static_peer), Err(Unresolved::NoNeighbour { .. })).then_some(())
    })
    .expect("neighbour removal");

    // Removing the address takes its connected prefix with it.
    ip(&[
        "-n",
        &pair.a,
        "addr",
        "del",
        "2001:db8:18::1/64",
        "dev",
        "veth0",
    ]);
    wait_until(&resolver, quick, || {
        (resolve(static_peer) == Err(Unresolved::NoRoute)).then_some(())
    })
    .expect("connected prefix removal");
}

/// The IPv6 mechanism alone: one `RTM_NEWNEIGH` + `NTF_USE` for B's
/// link-local address makes the kernel of A send a Neighbor Solicitation
/// (B learns A's MAC from it) and resolve B.
#[test]
fn ntf_use_alone_makes_the_kernel_send_a_neighbor_solicitation() {
    if !is_root() {
        return;
    }
    let pair = NetnsPair::new();
    let (ifindex, a_mac) = pair.a_link();
    let (resolver, _) = pair.start_in_a(&[ifindex]).unwrap();
    let a_mac = a_mac.map(|b| format!("{b:02x}")).join(":");
    assert!(
        !ndp_entries(&pair.b, "veth1").contains(&a_mac),
        "B already knows A"
    );

    let path = format!("/run/netns/{}", pair.a);
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("opening the namespace");
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
        let mut socket = netlink::RtSocket::request().expect("rtnetlink socket");
        socket.request_resolution(ifindex, B_LINK_LOCAL.into())
    })
    .join()
    .expect("request thread")
    .expect("kernel accepted NTF_USE");

    // No route covers a link-local destination, so read the kernel's entry.
    let entry = wait_until(&resolver, DEADLINE, || {
        let shown = ip(&[
            "-n", &pair.a, "-6", "neigh", "show", "fe80::1", "dev", "veth0",
        ]);
        shown.contains("lladdr").then_some(shown)
    })
    .expect("kernel resolved fe80::1 after NTF_USE");
    let b_mac = pair.b_mac().map(|b| format!("{b:02x}")).join(":");
    assert!(entry.contains(&b_mac), "{entry}");
    assert!(
        ndp_entries(&pair.b, "veth1").contains(&a_mac),
        "B saw no Neighbor Solicitation from A"
    );
}
