//! What the `fullnat` and `dsr` tests add to a lab: the `TrafficPolicy`
//! that picks a listener's forwarding mode, backends with no way back to
//! the client but the LB's SNAT address (`fullnat`), a client on the
//! backends' own subnet (hairpin), and backends that hold the VIP on their
//! loopback and answer the client themselves (`dsr`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::Result;

use crate::config::GatewaySpec;
use crate::link::{set_gro, set_tx_checksum, wait_links_up};
use crate::netns::Netns;
use crate::topology::{
    Topology, BACKEND_NET, LB_BACKEND_SIDE_ADDR, LB_BACKEND_SIDE_ADDR6, VIP6_NET, VIP_NET,
};

/// The hairpin client: on the backends' own subnet, reaching the VIP
/// through the LB's backend-side address.
pub const HAIRPIN_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 50);
pub const HAIRPIN_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x50);
/// The SNAT port range the tests run the daemon with, outside the
/// kernel's default ephemeral range (32768-60999).
pub const SNAT_PORTS: &str = "10000-32767";

/// The client's subnets (`topology::CLIENT_ADDR`, `CLIENT_ADDR6`).
const CLIENT_NET: &str = "198.18.1.0/24";
const CLIENT_NET6: &str = "2001:db8:1::/64";
/// The backends' IPv6 subnet (`topology::BACKENDS6`).
const BACKEND_NET6: &str = "2001:db8:2::/64";

const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The config of `spec` with every listener of its Gateway forwarded as
/// `forwarding` says (the YAML body of a `TrafficPolicy`'s `forwarding`,
/// e.g. `{mode: fullnat}`).
pub fn with_forwarding(spec: &GatewaySpec, forwarding: &str) -> String {
    format!(
        "{}---\n\
         apiVersion: switchyard.io/v1alpha1\n\
         kind: TrafficPolicy\n\
         metadata: {{name: modes, namespace: {ns}}}\n\
         spec:\n  \
           targetRefs:\n  \
           - {{group: gateway.networking.k8s.io, kind: Gateway, name: {gw}}}\n  \
           forwarding: {forwarding}\n",
        spec.to_yaml(),
        ns = spec.namespace,
        gw = spec.gateway,
    )
}

/// Takes the backends' default routes away: their only routes are their
/// own subnets, so nothing but an address there (the LB's SNAT address)
/// can be answered.
pub fn backends_without_route_through_lb(topo: &Topology, ipv6: bool) -> Result<()> {
    for be in &topo.backends {
        be.ns.ip(&["route", "del", "default"])?;
        if ipv6 {
            be.ns.ip(&["-6", "route", "del", "default"])?;
        }
    }
    Ok(())
}

/// A client namespace on the backends' bridge, with an address on their
/// subnet (and IPv6 with `ipv6`) and the VIP routed via the LB's
/// backend-side address. Wire-like: full checksums, NAPI on its peer.
pub fn hairpin_client(topo: &Topology, ipv6: bool) -> Result<Netns> {
    let ns = Netns::new("hairpin")?;
    ns.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
    ns.sysctl("net/ipv6/conf/all/accept_dad", "0")?;
    let peer = format!("hp{}", std::process::id() % 100_000);
    ns.veth("eth0", &topo.switch, &peer)?;
    topo.switch
        .ip(&["link", "set", "dev", &peer, "master", "br0"])?;
    topo.switch.ip(&["link", "set", "dev", &peer, "up"])?;
    set_gro(&topo.switch, &peer, true)?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{HAIRPIN_CLIENT_ADDR}/24"),
        "dev",
        "eth0",
    ])?;
    if ipv6 {
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{HAIRPIN_CLIENT_ADDR6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
    }
    ns.ip(&["link", "set", "dev", "eth0", "up"])?;
    set_tx_checksum(&ns, "eth0", false)?;
    ns.ip(&[
        "route",
        "add",
        VIP_NET,
        "via",
        &LB_BACKEND_SIDE_ADDR.to_string(),
    ])?;
    if ipv6 {
        ns.ip(&[
            "-6",
            "route",
            "add",
            VIP6_NET,
            "via",
            &LB_BACKEND_SIDE_ADDR6.to_string(),
        ])?;
    }
    wait_links_up(&ns, &["eth0"], LINK_UP_TIMEOUT)?;
    wait_links_up(&topo.switch, &[&peer], LINK_UP_TIMEOUT)?;
    Ok(ns)
}

/// Makes every backend a `dsr` target: the VIP(s) on its loopback, never
/// answered for in ARP (arp_ignore 1: only addresses of the asking
/// interface; arp_announce 2: never the VIP as an ARP source; IPv6
/// Neighbor Discovery only answers for the receiving interface's own
/// addresses), and a direct route back to the client's subnet (the LB
/// node does not forward); the client, on the same bridge, reaches the
/// backends' subnet on-link too, or it would not answer their ARP and
/// Neighbor Solicitations (reverse-path filtering drops a request from an
/// address it has no route to).
pub fn backends_hold_the_vip(topo: &Topology, vips: &[IpAddr]) -> Result<()> {
    if vips.iter().any(IpAddr::is_ipv4) {
        topo.client
            .ip(&["route", "add", BACKEND_NET, "dev", "eth0"])?;
    }
    if vips.iter().any(IpAddr::is_ipv6) {
        topo.client
            .ip(&["-6", "route", "add", BACKEND_NET6, "dev", "eth0"])?;
    }
    for be in &topo.backends {
        let ns = &be.ns;
        for key in ["all", "eth0"] {
            ns.sysctl(&format!("net/ipv4/conf/{key}/arp_ignore"), "1")?;
            ns.sysctl(&format!("net/ipv4/conf/{key}/arp_announce"), "2")?;
        }
        for vip in vips {
            let (family, len) = if vip.is_ipv6() {
                ("-6", 128)
            } else {
                ("-4", 32)
            };
            ns.ip(&[family, "addr", "add", &format!("{vip}/{len}"), "dev", "lo"])?;
        }
        if vips.iter().any(IpAddr::is_ipv4) {
            ns.ip(&["route", "add", CLIENT_NET, "dev", "eth0"])?;
        }
        if vips.iter().any(IpAddr::is_ipv6) {
            ns.ip(&["-6", "route", "add", CLIENT_NET6, "dev", "eth0"])?;
        }
    }
    Ok(())
}
