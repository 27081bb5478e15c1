//! The load balancer reverses only replies of flows a client opened: a
//! packet from a backend endpoint that answers no such flow (forged, or from
//! a backend nobody asked) is dropped and counted, never sent on as the VIP.
//! Real namespaces, the real XDP program and workers.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_vm_tests::client::tcp_exchange_from;
use switchyard_vm_tests::config::{Protocol, TCP_PORT, TCP_TARGET_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{CLIENT_ADDR, VIP};
use switchyard_vm_tests::{
    in_netns, tcp_exchange, Daemon, DaemonOptions, GatewaySpec, TempDir, Topology,
};

/// Where the UDP listener's backends serve in this test: a port no echo
/// server holds, so the test can send from it as a forger would.
const FORGED_PORT: u16 = 6353;
const CLIENT_PORT: u16 = 41000;
const FORGED: u64 = 20;
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn a_backend_packet_answering_no_client_flow_never_leaves_as_the_vip() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let mut spec = GatewaySpec::demo();
    for listener in &mut spec.listeners {
        if listener.protocol == Protocol::Udp {
            listener.target_port = FORGED_PORT;
        }
    }
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    // The TCP listener's echo servers, to show real flows still work.
    let _servers = topo.start_backends(TCP_TARGET_PORT, FORGED_PORT + 1)?;
    let daemon = Daemon::start(
        &topo.lb,
        &path,
        &DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues),
    )?;

    // The client waits where the forged datagrams are aimed.
    let client = in_netns(&topo.client, || UdpSocket::bind((CLIENT_ADDR, CLIENT_PORT)))??;
    client.set_nonblocking(true)?;
    let be1 = topo.backend("be1");
    in_netns(&be1.ns, || -> Result<()> {
        let forger = UdpSocket::bind((be1.addr, FORGED_PORT))?;
        for _ in 0..FORGED {
            forger.send_to(b"forged", (CLIENT_ADDR, CLIENT_PORT))?;
        }
        Ok(())
    })??;
    poll_until(DEADLINE, "the forged datagrams to be counted", || {
        let dropped = daemon
            .stats()?
            .drops
            .get("reply_without_flow")
            .copied()
            .unwrap_or(0);
        Ok((dropped >= FORGED).then_some(dropped))
    })?;
    let mut buf = [0u8; 64];
    match client.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((n, from)) => anyhow::bail!(
            "the client got {:?} from {from}: a forged reply left as the VIP",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => return Err(e).context("reading the client's socket"),
    }

    // A flow the client opens is still answered: the TCP listener's echo.
    let reply = tcp_exchange(&topo.client, (VIP, TCP_PORT).into(), "hello")?;
    ensure!(reply.text.ends_with("hello"), "{reply:?}");
    Ok(())
}

/// An address the node gains after the daemon started is the node's own
/// at once (within the daemon's second-long check): the node's connection
/// from it to a backend is answered by the kernel, not taken for a reply
/// to translate (before, such replies were rewritten to come from the VIP;
/// now a worker would drop them as answering no client flow).
#[test]
fn an_address_added_to_the_node_after_start_is_its_own() -> Result<()> {
    const ADDED: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 77);
    let topo = Topology::single_arm(1)?;
    let spec = GatewaySpec::demo();
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let _daemon = Daemon::start(
        &topo.lb,
        &path,
        &DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues),
    )?;
    topo.lb
        .ip(&["addr", "add", &format!("{ADDED}/32"), "dev", "eth0"])?;
    let be1 = topo.backend("be1");
    let backend = SocketAddr::from((be1.addr, TCP_TARGET_PORT));
    let reply = poll_until(
        DEADLINE,
        "the node's connection from its new address",
        || Ok(tcp_exchange_from(&topo.lb, SocketAddrV4::new(ADDED, 0), backend, "own").ok()),
    )?;
    ensure!(
        reply.from == backend && reply.text.ends_with("own"),
        "{reply:?}"
    );
    Ok(())
}
