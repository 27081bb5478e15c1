//! End to end, Path MTU discovery through the VIP: a client behind a
//! router whose link to it is narrower (1280 bytes) than the backends'
//! answers (1500). The router refuses those with ICMP fragmentation-needed
//! (IPv4) or packet-too-big (IPv6) addressed to the VIP, their source; the
//! load balancer sends each to the flow's backend with the quoted packet
//! as the backend sent it, so the backend's kernel lowers its path MTU and
//! the transfer completes. Without that, the answers would be lost for
//! good: a PMTU black hole.

use std::net::SocketAddr;

use anyhow::{bail, ensure, Result};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::topology::{BACKENDS6, VIP, VIP6};
use switchyard_vm_tests::{
    tcp_exchange, Daemon, DaemonOptions, EchoPair, GatewaySpec, TempDir, Topology,
};

struct Lab {
    daemon: Daemon,
    _servers: Vec<EchoPair>,
    _dir: TempDir,
    topo: Topology,
}

fn lab(fast_path: &str) -> Result<Lab> {
    let topo = Topology::two_arm(1)?.with_ipv6()?.behind_router()?;
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &GatewaySpec::demo_dual_stack().to_yaml())?;
    let mut servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    for (backend, (_, addr6)) in topo.backends.iter().zip(BACKENDS6) {
        servers.push(EchoPair::start_on(
            &backend.ns,
            &backend.name,
            addr6.into(),
            TCP_TARGET_PORT,
            UDP_TARGET_PORT,
        )?);
    }
    let opts = DaemonOptions::new(topo.lb_interfaces())
        .queues(1)
        .arg("--fast-path")
        .arg(fast_path);
    let daemon = Daemon::start(&topo.lb, &config, &opts)?;
    Ok(Lab {
        daemon,
        _servers: servers,
        _dir: dir,
        topo,
    })
}

/// An 8000-byte message and its echo: the echo leaves the backend in
/// full-size segments that only fit the narrow link once the backend has
/// learned its path MTU.
fn large_exchange_completes(lab: &Lab, vip: SocketAddr) -> Result<()> {
    let far = lab.topo.far_client.as_ref().expect("a far client");
    let payload: String = (0..8000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let reply = tcp_exchange(far, vip, &payload)?;
    let server = reply.server().to_owned();
    // The echo server answers each read with its name and what the read
    // returned, and the message may reach it in more than one read.
    let prefix = format!("{server} ");
    let echoed = reply.text.replace(&prefix, "");
    if !reply.text.starts_with(&prefix) || echoed != payload {
        let expected = payload;
        let got = echoed;
        let at = got
            .bytes()
            .zip(expected.bytes())
            .position(|(got, want)| got != want)
            .unwrap_or(got.len().min(expected.len()));
        let around = |text: &str| {
            let from = at.saturating_sub(16);
            text.get(from..(at + 32).min(text.len()))
                .unwrap_or_default()
                .to_owned()
        };
        bail!(
            "the echo of {server} came back cut or changed: {} bytes echoed, {} expected, first \
             difference at byte {at}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            around(&got),
            around(&expected)
        );
    }
    Ok(())
}

/// The worker counter that says errors about flows reached their backend.
fn icmp_to_backend(daemon: &Daemon) -> Result<u64> {
    let stats = daemon.yardctl_json("stats")?;
    Ok(stats["workers"]
        .as_array()
        .map(|workers| {
            workers
                .iter()
                .filter_map(|w| w["icmp_to_backend"].as_u64())
                .sum()
        })
        .unwrap_or(0))
}

fn pmtu(vip: SocketAddr, fast_path: &str) -> Result<()> {
    let lab = lab(fast_path)?;
    large_exchange_completes(&lab, vip)?;
    let translated = icmp_to_backend(&lab.daemon)?;
    ensure!(
        translated > 0,
        "no ICMP error was sent to a backend: {:#}",
        lab.daemon.yardctl_json("stats")?
    );
    // A second transfer finds the lowered path MTU already in place.
    large_exchange_completes(&lab, vip)?;
    Ok(())
}

#[test]
fn ipv4_path_mtu_discovery_works_through_the_vip() -> Result<()> {
    pmtu(SocketAddr::from((VIP, TCP_PORT)), "off")
}

#[test]
fn ipv6_path_mtu_discovery_works_through_the_vip() -> Result<()> {
    pmtu(SocketAddr::from((VIP6, TCP_PORT)), "off")
}

#[test]
fn path_mtu_discovery_works_while_the_fast_path_carries_the_flow() -> Result<()> {
    pmtu(SocketAddr::from((VIP, TCP_PORT)), "on")?;
    pmtu(SocketAddr::from((VIP6, TCP_PORT)), "on")
}
