//! End-to-end: the XDP flow cache carries a settled flow's packets itself,
//! and every packet is still counted once. A UDP flow of N request/response
//! exchanges (one 5-tuple, 2N packets through the LB) shows up in
//! `yardctl flows` with 2N packets, most of them sent by the fast path, and
//! in the steering counters as fast-path sends; with `--fast-path off` the
//! workers carry all 2N. A long-lived TCP connection rides the fast path
//! too, and a drain (a new config generation) sends it back to the workers,
//! which keep its backend and cache it again. Invalidation is per listener:
//! a drain on one listener leaves another listener's cached flows on the
//! fast path.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_proto::{FlowInfo, FlowsReport, StatsReport};
use switchyard_vm_tests::client::{udp_exchange_on, udp_socket_towards};
use switchyard_vm_tests::config::{
    TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::daemon::fast_path_sent;
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{
    tcp_exchange_keep_open, Daemon, DaemonOptions, GatewaySpec, TempDir, Topology,
};

const EXCHANGES: u64 = 100;

fn start(topo: &Topology, config: &std::path::Path, extra: &[&str]) -> Result<Daemon> {
    let mut opts = DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues);
    for arg in extra {
        opts = opts.arg(*arg);
    }
    Daemon::start(&topo.lb, config, &opts)
}

fn flow_of<'a>(flows: &'a FlowsReport, client: &str) -> Result<&'a FlowInfo> {
    flows
        .flows
        .iter()
        .find(|f| f.client == client)
        .with_context(|| format!("no flow of {client} in {:?}", flows.flows))
}

/// N exchanges on one UDP socket: one flow, 2N packets through the LB.
fn udp_flow(topo: &Topology) -> Result<String> {
    let vip = SocketAddr::from((VIP, UDP_PORT));
    let socket = udp_socket_towards(&topo.client, vip)?;
    udp_exchanges(&socket, 0)?;
    Ok(socket.local_addr()?.to_string())
}

/// N exchanges on `socket`, numbered from `first`; all with one backend.
fn udp_exchanges(socket: &std::net::UdpSocket, first: u64) -> Result<()> {
    udp_exchanges_n(socket, first, EXCHANGES)
}

/// `count` exchanges on `socket`, numbered from `first`; all with one
/// backend.
fn udp_exchanges_n(socket: &std::net::UdpSocket, first: u64, count: u64) -> Result<()> {
    let vip = SocketAddr::from((VIP, UDP_PORT));
    let mut servers = std::collections::BTreeSet::new();
    for i in first..first + count {
        let reply = udp_exchange_on(socket, vip, &format!("q{i}|"))?;
        servers.insert(reply.server().to_owned());
    }
    ensure!(servers.len() == 1, "one flow, one backend: {servers:?}");
    Ok(())
}

/// A steering counter by name.
fn steering(stats: &StatsReport, counter: &str) -> u64 {
    stats.xdp_steering.get(counter).copied().unwrap_or(0)
}

/// One message on a kept-open TCP connection, and its echo.
fn tcp_message(stream: &mut std::net::TcpStream, i: usize) -> Result<String> {
    stream.write_all(format!("m{i}|").as_bytes())?;
    let mut buf = vec![0u8; 256];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn a_settled_udp_flow_rides_the_fast_path_and_every_packet_is_counted_once() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = start(&topo, &config, &[])?;

    // The reply direction is cached only once the LB's kernel has resolved
    // the client's MAC, which takes as long as it takes (an ARP exchange,
    // then the resolver's coalescing of notifications): exchanges go on
    // until both directions are cached, so what follows measures the
    // settled flow alone, however slow the machine.
    let vip = SocketAddr::from((VIP, UDP_PORT));
    let socket = udp_socket_towards(&topo.client, vip)?;
    let client = socket.local_addr()?.to_string();
    let mut sent = 0u64;
    poll_until(Duration::from_secs(10), "both directions cached", || {
        udp_exchanges_n(&socket, sent, 1)?;
        sent += 1;
        let entries = daemon.status()?.fast_path.map_or(0, |f| f.entries);
        Ok((entries >= 2).then_some(()))
    })?;
    let settled = flow_of(&daemon.flows()?, &client)?.clone();
    udp_exchanges(&socket, sent)?;
    sent += EXCHANGES;

    let flows = daemon.flows()?;
    let flow = flow_of(&flows, &client)?;
    ensure!(
        flow.packets == 2 * sent,
        "{} packets through the LB, counted {}: {flow:?}",
        2 * sent,
        flow.packets
    );
    // Packets already in flight as the entries were written may still
    // reach a worker; every other one is the program's.
    let carried = flow.fast_path_packets - settled.fast_path_packets;
    ensure!(
        flow.fast_path && carried >= 2 * EXCHANGES - 4,
        "the fast path should have carried nearly all {} packets of the settled flow, \
         carried {carried}: {flow:?}",
        2 * EXCHANGES
    );
    let stats: StatsReport = daemon.stats()?;
    let sent_fast = fast_path_sent(&stats);
    ensure!(
        sent_fast == flow.fast_path_packets,
        "steering counted {sent_fast} fast-path sends, the flow {}",
        flow.fast_path_packets
    );
    let listener = stats
        .listeners
        .iter()
        .find(|l| l.vip.ends_with(&format!(":{UDP_PORT}")))
        .context("the UDP listener")?;
    ensure!(
        listener.counters.packets == 2 * sent
            && listener.fast_path_packets == flow.fast_path_packets,
        "the listener counts both paths once: {listener:?}"
    );
    let status = daemon.status()?;
    ensure!(
        status.fast_path.as_ref().is_some_and(|f| f.entries >= 2),
        "both directions cached: {:?}",
        status.fast_path
    );
    Ok(())
}

#[test]
fn with_the_fast_path_off_the_workers_carry_every_packet() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = start(&topo, &config, &["--fast-path", "off"])?;

    let client = udp_flow(&topo)?;
    let flows = daemon.flows()?;
    let flow = flow_of(&flows, &client)?;
    ensure!(
        flow.packets == 2 * EXCHANGES && flow.fast_path_packets == 0 && !flow.fast_path,
        "{flow:?}"
    );
    let stats = daemon.stats()?;
    let worker_rx: u64 = stats.workers.iter().map(|w| w.rx_packets).sum();
    ensure!(worker_rx >= 2 * EXCHANGES, "workers saw {worker_rx}");
    ensure!(daemon.status()?.fast_path.is_none());
    Ok(())
}

#[test]
fn a_cached_tcp_connection_keeps_its_backend_across_a_new_generation() -> Result<()> {
    let topo = Topology::two_arm(1)?;
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = start(&topo, &config, &[])?;

    let vip = SocketAddr::from((VIP, TCP_PORT));
    let (mut stream, first) = tcp_exchange_keep_open(&topo.client, vip, "hello|")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let client = stream.local_addr()?.to_string();
    let exchange = |stream: &mut std::net::TcpStream, i: usize| -> Result<String> {
        let payload = format!("m{i}|");
        stream.write_all(payload.as_bytes())?;
        let mut buf = vec![0u8; 256];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    for i in 0..20 {
        let reply = exchange(&mut stream, i)?;
        ensure!(reply.starts_with(first.server()), "moved: {reply:?}");
    }
    let before = daemon.flows()?;
    let flow = flow_of(&before, &client)?;
    ensure!(
        flow.fast_path && flow.fast_path_packets > 10,
        "the connection should ride the fast path: {flow:?}"
    );

    // Draining another backend publishes a new generation: every cache
    // entry stops applying until its flow's next packet re-installs it.
    let other = topo
        .backends
        .iter()
        .find(|b| b.name != first.server())
        .context("a second backend")?;
    let drained = format!("{}:{TCP_TARGET_PORT}", other.addr);
    let out = daemon.yardctl_raw(&["drain", &drained])?;
    ensure!(out.status.success(), "drain: {}", out.stderr);
    for i in 20..40 {
        let reply = exchange(&mut stream, i)?;
        ensure!(
            reply.starts_with(first.server()),
            "moved after the drain: {reply:?}"
        );
    }
    let after = daemon.flows()?;
    let flow = flow_of(&after, &client)?;
    ensure!(
        flow.fast_path,
        "cached again under the new generation: {flow:?}"
    );
    let stats = daemon.stats()?;
    ensure!(
        stats.xdp_steering.get("fast_stale").copied().unwrap_or(0) >= 1,
        "the stale entry sent a packet to the workers: {:?}",
        stats.xdp_steering
    );
    Ok(())
}

#[test]
fn a_drain_on_one_listener_leaves_the_cached_flows_of_another_on_the_fast_path() -> Result<()> {
    let topo = Topology::two_arm(1)?;
    let dir = TempDir::new("config")?;
    let spec = GatewaySpec::demo();
    let config = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = start(&topo, &config, &[])?;

    // A cached connection on the TCP listener, a cached flow on the UDP one.
    let (mut stream, first) =
        tcp_exchange_keep_open(&topo.client, SocketAddr::from((VIP, TCP_PORT)), "hello|")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let tcp_client = stream.local_addr()?.to_string();
    for i in 0..20 {
        let reply = tcp_message(&mut stream, i)?;
        ensure!(reply.starts_with(first.server()), "moved: {reply:?}");
    }
    let udp = udp_socket_towards(&topo.client, SocketAddr::from((VIP, UDP_PORT)))?;
    udp_exchanges(&udp, 0)?;
    let udp_client = udp.local_addr()?.to_string();
    let flows = daemon.flows()?;
    for client in [&tcp_client, &udp_client] {
        let flow = flow_of(&flows, client)?;
        ensure!(flow.fast_path, "cached before the drain: {flow:?}");
    }
    // The listing says the client's direction is cached; the reply's entry
    // may follow later on a loaded machine. Both must be in the cache
    // before the drain, or a reply the program has no entry for yet would
    // pass for one the drain sent back: an exchange no worker sees.
    poll_until(
        Duration::from_secs(10),
        "the UDP flow cached both ways",
        || {
            let before = daemon.stats()?;
            udp_exchanges_n(&udp, EXCHANGES, 1)?;
            let after = daemon.stats()?;
            let to_workers =
                |stats: &StatsReport| steering(stats, "steer_vip") + steering(stats, "steer_reply");
            Ok((to_workers(&after) == to_workers(&before)).then_some(()))
        },
    )?;

    // Drain the TCP listener's other backend, on that listener only.
    let other = topo
        .backends
        .iter()
        .find(|b| b.name != first.server())
        .context("a second backend")?;
    let drained = format!("{}:{TCP_TARGET_PORT}", other.addr);
    let tcp_listener = spec.listener_id(TCP_LISTENER);
    let out = daemon.yardctl_raw(&["drain", &drained, "--listener", &tcp_listener])?;
    ensure!(out.status.success(), "drain: {}", out.stderr);

    // The UDP flow stays on the fast path: no stale entry, no packet to a
    // worker, every packet of both directions sent by the program.
    let before = daemon.stats()?;
    udp_exchanges(&udp, EXCHANGES)?;
    let after = daemon.stats()?;
    let delta = |counter| steering(&after, counter) - steering(&before, counter);
    ensure!(
        delta("fast_stale") == 0
            && delta("steer_vip") == 0
            && delta("steer_reply") == 0
            && fast_path_sent(&after) - fast_path_sent(&before) == 2 * EXCHANGES,
        "the UDP listener's flow left the fast path on a drain of the TCP listener: \
         before {:?}, after {:?}",
        before.xdp_steering,
        after.xdp_steering
    );
    let flows = daemon.flows()?;
    let flow = flow_of(&flows, &udp_client)?;
    ensure!(flow.fast_path, "still cached: {flow:?}");

    // The drained listener's connection went back to a worker once, kept
    // its backend, and is cached again.
    for i in 20..40 {
        let reply = tcp_message(&mut stream, i)?;
        ensure!(
            reply.starts_with(first.server()),
            "moved after the drain: {reply:?}"
        );
    }
    let last = daemon.stats()?;
    ensure!(
        steering(&last, "fast_stale") > steering(&after, "fast_stale"),
        "the TCP listener's entries stopped applying: {:?}",
        last.xdp_steering
    );
    let flows = daemon.flows()?;
    let flow = flow_of(&flows, &tcp_client)?;
    ensure!(flow.fast_path, "cached again: {flow:?}");
    Ok(())
}
