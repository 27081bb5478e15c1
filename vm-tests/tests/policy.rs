//! End-to-end: a `TrafficPolicy`'s rules, each shown to admit and to
//! refuse with real clients and with counters that match the traffic
//! sent. Source ranges drop in the XDP program (counted per listener and
//! as `drop_source_denied`); a listener's new-flow rate and its flows at
//! once are the workers' to enforce (TCP refused with a reset, UDP
//! dropped, each counted on the listener). Denied TCP clients are raw SYNs
//! from chosen sources, so every frame sent is one frame counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_proto::{ListenerStats, StatsReport};
use switchyard_vm_tests::client::{echo, tcp_connect};
use switchyard_vm_tests::config::{
    DEMO_GATEWAY, DEMO_NAMESPACE, TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_LISTENER, UDP_PORT,
    UDP_TARGET_PORT,
};
use switchyard_vm_tests::policy::{is_refused, udp_datagrams, SynFlood, TrafficPolicy};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{CLIENT_ADDR, VIP, VIP6};
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, Daemon, EchoPair, GatewaySpec, TempDir, Topology, IO_TIMEOUT,
};

const DENIED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 66);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 5);
/// A second address of the client, inside the allowed IPv6 range.
const DENIED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x66);

struct Lab {
    topo: Topology,
    spec: GatewaySpec,
    daemon: Daemon,
    _servers: Vec<EchoPair>,
    _dir: TempDir,
}

fn lab(policy: &TrafficPolicy) -> Result<Lab> {
    let topo = Topology::single_arm(1)?;
    let spec = GatewaySpec::demo();
    let dir = TempDir::new("config")?;
    let yaml = format!("{}{}", spec.to_yaml(), policy.to_yaml());
    let config = dir.write("gateway.yaml", &yaml)?;
    let servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&config)?;
    Ok(Lab {
        topo,
        spec,
        daemon,
        _servers: servers,
        _dir: dir,
    })
}

fn policy() -> TrafficPolicy {
    TrafficPolicy::on("limits", DEMO_NAMESPACE, DEMO_GATEWAY)
}

fn listener<'a>(
    stats: &'a StatsReport,
    spec: &GatewaySpec,
    name: &str,
) -> Result<&'a ListenerStats> {
    let id = spec.listener_id(name);
    stats
        .listeners
        .iter()
        .find(|l| l.listener == id)
        .with_context(|| format!("no listener {id} in the stats"))
}

fn drops(l: &ListenerStats, reason: &str) -> u64 {
    l.drops.get(reason).copied().unwrap_or(0)
}

fn syns(from: Ipv4Addr, sources: u32, count: u32) -> SynFlood {
    SynFlood {
        first_source: from,
        sources,
        vip: VIP,
        port: TCP_PORT,
        count,
    }
}

#[test]
fn source_ranges_admit_the_allowed_and_drop_the_denied_in_xdp() -> Result<()> {
    let mut p = policy();
    p.allow = Some(vec!["198.18.1.0/24".into()]);
    p.deny = vec![format!("{DENIED}/32")];
    let lab = lab(&p)?;
    lab.topo
        .client
        .ip(&["addr", "add", &format!("{DENIED}/24"), "dev", "eth0"])?;
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));
    let udp_vip = SocketAddr::from((VIP, UDP_PORT));

    // Allowed: a real client, both protocols.
    tcp_exchange(&lab.topo.client, tcp_vip, "allowed|")?;
    udp_exchange(&lab.topo.client, udp_vip, "allowed|")?;
    // Denied inside the allowed range, and outside it: SYNs and datagrams
    // that must all be dropped, each counted once.
    syns(DENIED, 1, 3).send(&lab.topo.client)?;
    syns(OUTSIDE, 1, 2).send(&lab.topo.client)?;
    udp_datagrams(&lab.topo.client, DENIED, udp_vip, 4)?;

    let stats = poll_until(Duration::from_secs(10), "the drops counted", || {
        let stats = lab.daemon.stats()?;
        let done = stats.xdp_steering.get("drop_source_denied").copied() == Some(9);
        Ok(done.then_some(stats))
    })?;
    let tcp = listener(&stats, &lab.spec, TCP_LISTENER)?;
    let udp = listener(&stats, &lab.spec, UDP_LISTENER)?;
    ensure!(drops(tcp, "source_denied") == 5, "tcp: {tcp:?}");
    ensure!(drops(udp, "source_denied") == 4, "udp: {udp:?}");
    ensure!(
        tcp.counters.flows == 1 && udp.counters.flows == 1,
        "{stats:?}"
    );
    let worker_denied: u64 = stats
        .workers
        .iter()
        .map(|w| w.drops.get("source_denied").copied().unwrap_or(0))
        .sum();
    ensure!(
        worker_denied == 0,
        "dropped in XDP, not by the workers: {worker_denied}"
    );
    // The denied client's own connection attempt goes unanswered.
    let from = std::net::SocketAddrV4::new(DENIED, 40000);
    let attempt =
        switchyard_vm_tests::client::tcp_exchange_from(&lab.topo.client, from, tcp_vip, "no|");
    ensure!(attempt.is_err(), "a denied client was served: {attempt:?}");
    Ok(())
}

#[test]
fn over_the_new_flow_rate_tcp_is_reset_and_udp_dropped_each_counted() -> Result<()> {
    let mut p = policy();
    p.new_flows_per_second = Some(1);
    let lab = lab(&p)?;
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));
    let udp_vip = SocketAddr::from((VIP, UDP_PORT));
    const BURST: u32 = 50;
    syns(Ipv4Addr::new(198, 18, 1, 100), 50, BURST).send(&lab.topo.client)?;
    udp_datagrams(&lab.topo.client, CLIENT_ADDR, udp_vip, BURST)?;
    let settled = |stats: &StatsReport, name: &str| -> Result<(u64, u64)> {
        let l = listener(stats, &lab.spec, name)?;
        Ok((l.counters.flows, drops(l, "new_flow_rate_limited")))
    };
    let stats = poll_until(
        Duration::from_secs(10),
        "every new flow admitted or limited",
        || {
            let stats = lab.daemon.stats()?;
            let (tf, tl) = settled(&stats, TCP_LISTENER)?;
            let (uf, ul) = settled(&stats, UDP_LISTENER)?;
            Ok((tf + tl == u64::from(BURST) && uf + ul == u64::from(BURST)).then_some(stats))
        },
    )?;
    for name in [TCP_LISTENER, UDP_LISTENER] {
        let (flows, limited) = settled(&stats, name)?;
        ensure!(
            flows >= 1 && limited >= 1,
            "{name}: {flows} admitted, {limited} limited"
        );
    }
    // A real client: refused with a reset until a token comes back, then
    // served; every attempt counted.
    let mut refused = 0u64;
    poll_until(
        Duration::from_secs(10),
        "a connection within the rate",
        || match tcp_exchange(&lab.topo.client, tcp_vip, "in time|") {
            Ok(_) => Ok(Some(())),
            Err(e) if is_refused(&e) => {
                refused += 1;
                Ok(None)
            }
            Err(e) => Err(e),
        },
    )?;
    let stats = lab.daemon.stats()?;
    let (flows, limited) = settled(&stats, TCP_LISTENER)?;
    ensure!(
        flows + limited == u64::from(BURST) + refused + 1,
        "{flows} admitted + {limited} limited after {BURST} SYNs and {} attempts",
        refused + 1
    );
    Ok(())
}

#[test]
fn at_the_flow_limit_a_new_connection_is_reset_until_one_closes() -> Result<()> {
    let mut p = policy();
    p.listener = Some(TCP_LISTENER.into());
    p.max_flows = Some(2);
    let lab = lab(&p)?;
    let vip = SocketAddr::from((VIP, TCP_PORT));
    let mut open = Vec::new();
    for i in 0..2 {
        let mut stream = tcp_connect(&lab.topo.client, vip, IO_TIMEOUT)?;
        echo(&mut stream, &format!("held{i}|"), IO_TIMEOUT)?;
        open.push(stream);
    }
    let third = tcp_exchange(&lab.topo.client, vip, "third|");
    ensure!(
        third.as_ref().is_err_and(is_refused),
        "a third connection at maxFlows 2 should be reset: {third:?}"
    );
    let stats = lab.daemon.stats()?;
    let tcp = listener(&stats, &lab.spec, TCP_LISTENER)?;
    ensure!(
        tcp.counters.flows == 2 && drops(tcp, "max_flows_reached") == 1,
        "{tcp:?}"
    );
    // The open connections still work; one closes and its place is free.
    echo(&mut open[0], "still|", IO_TIMEOUT)?;
    drop(open.remove(1));
    let mut refused = 1u64;
    poll_until(
        Duration::from_secs(10),
        "a connection in the freed place",
        || match tcp_exchange(&lab.topo.client, vip, "later|") {
            Ok(_) => Ok(Some(())),
            Err(e) if is_refused(&e) => {
                refused += 1;
                Ok(None)
            }
            Err(e) => Err(e),
        },
    )?;
    let stats = lab.daemon.stats()?;
    let tcp = listener(&stats, &lab.spec, TCP_LISTENER)?;
    ensure!(
        tcp.counters.flows == 3 && drops(tcp, "max_flows_reached") == refused,
        "{tcp:?} after {refused} refusals"
    );
    // The UDP listener has no limit.
    udp_exchange(&lab.topo.client, SocketAddr::from((VIP, UDP_PORT)), "free|")?;
    Ok(())
}

/// The same rules over IPv6, on a dual-stack Gateway: a range admits the
/// client's address and denies another address of the same client, whose
/// datagrams the steering program drops, each counted once on the IPv6
/// listener; IPv4 clients in their own allowed range stay served.
#[test]
fn ipv6_source_ranges_admit_the_allowed_and_drop_the_denied_in_xdp() -> Result<()> {
    let mut p = policy();
    p.allow = Some(vec!["198.18.1.0/24".into(), "2001:db8:1::/64".into()]);
    p.deny = vec![format!("{DENIED6}/128")];
    let topo = Topology::single_arm(1)?.with_ipv6()?;
    let spec = GatewaySpec::demo_dual_stack();
    let dir = TempDir::new("config")?;
    let config = dir.write(
        "gateway.yaml",
        &format!("{}{}", spec.to_yaml(), p.to_yaml()),
    )?;
    let servers = topo.start_backends_dual_stack(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&config)?;
    // Allowed: the client's own addresses, both families and protocols.
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        tcp_exchange(&topo.client, (vip, TCP_PORT).into(), "allowed|")?;
        udp_exchange(&topo.client, (vip, UDP_PORT).into(), "allowed|")?;
    }
    // Denied: its other IPv6 address (added only now: the kernel would
    // pick the newer address as the source of the exchanges above).
    topo.client.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{DENIED6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    let udp6 = SocketAddr::from((VIP6, UDP_PORT));
    udp_datagrams(&topo.client, DENIED6, udp6, 4)?;
    let stats = poll_until(Duration::from_secs(10), "the drops counted", || {
        let stats = daemon.stats()?;
        let done = stats.xdp_steering.get("drop_source_denied").copied() == Some(4);
        Ok(done.then_some(stats))
    })?;
    let udp6_listener = stats
        .listeners
        .iter()
        .find(|l| l.vip == udp6.to_string())
        .with_context(|| format!("no listener on {udp6} in {:?}", stats.listeners))?;
    ensure!(
        drops(udp6_listener, "source_denied") == 4 && udp6_listener.counters.flows == 1,
        "{udp6_listener:?}"
    );
    // Nothing the client sent from its allowed addresses was dropped.
    let served: u64 = stats.listeners.iter().map(|l| l.counters.flows).sum();
    ensure!(served == 4, "four flows served: {:?}", stats.listeners);
    drop(servers);
    Ok(())
}
