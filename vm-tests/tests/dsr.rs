//! `dsr` end to end: the backends hold the VIP on their loopback (and do
//! not answer ARP or Neighbor Discovery for it), the LB only changes the
//! destination MAC, and the backends answer the client directly, TCP and
//! UDP, IPv4 and IPv6; no answer passes through the LB. Real namespaces,
//! the real XDP program and workers, real sockets.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_vm_tests::config::{TCP_PORT, UDP_PORT};
use switchyard_vm_tests::fullnat::{backends_hold_the_vip, with_forwarding};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{CLIENT_ADDR, CLIENT_ADDR6, VIP, VIP6};
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, Daemon, DaemonOptions, EchoPair, GatewaySpec, TempDir, Topology,
};

const EXCHANGES: u64 = 16;
const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn dsr_backends_answer_the_client_themselves_from_the_vip() -> Result<()> {
    let topo = Topology::single_arm(1)?.with_ipv6()?;
    backends_hold_the_vip(&topo, &[IpAddr::V4(VIP), IpAddr::V6(VIP6)])?;
    // The backend's port is the VIP's: nothing at L3/L4 is rewritten.
    let mut spec = GatewaySpec::demo_dual_stack();
    for listener in &mut spec.listeners {
        listener.target_port = listener.port;
    }
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &with_forwarding(&spec, "{mode: dsr}"))?;
    // Bound to the VIP itself, so a UDP answer leaves from it too (a
    // wildcard socket would answer from the backend's own address).
    let mut servers = Vec::new();
    for backend in &topo.backends {
        for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
            servers.push(EchoPair::start_on(
                &backend.ns,
                &backend.name,
                vip,
                TCP_PORT,
                UDP_PORT,
            )?);
        }
    }
    let daemon = Daemon::start(
        &topo.lb,
        &config,
        &DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues),
    )?;

    let mut answered = BTreeSet::new();
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        for udp in [false, true] {
            let to = SocketAddr::new(vip, if udp { UDP_PORT } else { TCP_PORT });
            for i in 0..EXCHANGES {
                let payload = format!("exchange {i}");
                let reply = if udp {
                    udp_exchange(&topo.client, to, &payload)
                } else {
                    tcp_exchange(&topo.client, to, &payload)
                }
                .with_context(|| {
                    let stats = daemon.stats().map(|s| (s.drops, s.xdp_steering));
                    format!("exchange {i} with {to}; LB counters {stats:?}")
                })?;
                let server = reply.server().to_owned();
                ensure!(
                    reply.from == to && reply.text == format!("{server} {payload}"),
                    "{reply:?} is not a backend's echo from {to}"
                );
                answered.insert(server);
            }
        }
    }
    ensure!(answered.len() == 2, "both backends answer: {answered:?}");

    // The backends saw the client itself.
    for pair in &servers {
        for peer in pair.tcp.peers().into_iter().chain(pair.udp.peers()) {
            ensure!(
                peer.ip() == IpAddr::V4(CLIENT_ADDR) || peer.ip() == IpAddr::V6(CLIENT_ADDR6),
                "a backend saw {peer}, not the client"
            );
        }
    }

    // One flow per exchange; a UDP listener's packets are the requests
    // alone: no answer came back through the LB.
    let stats = poll_until(DEADLINE, "every flow counted", || {
        let stats = daemon.stats()?;
        let done = stats
            .listeners
            .iter()
            .all(|l| l.counters.flows >= EXCHANGES);
        Ok(done.then_some(stats))
    })?;
    for listener in &stats.listeners {
        ensure!(listener.counters.flows == EXCHANGES, "{listener:?}");
    }
    for listener in &stats.listeners {
        if listener.protocol.eq_ignore_ascii_case("udp") {
            ensure!(
                listener.counters.packets + listener.fast_path_packets == EXCHANGES,
                "{listener:?}"
            );
        }
    }
    ensure!(
        stats.xdp_steering.get("steer_reply").copied().unwrap_or(0) == 0,
        "answers reached the LB: {:?}",
        stats.xdp_steering
    );
    Ok(())
}
