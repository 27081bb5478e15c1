//! End-to-end: a veth lab as a new user builds it, nothing tuned, carries
//! every connection with `switchyard run`'s default options. Such a lab
//! differs from a wire twice: its hosts have tx checksum offload on, so
//! they send partial TCP/UDP checksums, and its switch ports run no NAPI
//! (GRO off), so frames the XDP fast path sends into them are lost.
//! Switchyard completes the checksums, keeps the fast path off the
//! interfaces the kernel would drop its frames on, and says so in its log
//! and in `yardctl status`; turning GRO on for the peer while it runs opens
//! the fast path there, turning it off closes it again without losing an
//! established flow. The wire-like lab of the other suites stays as it is.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_proto::{InterfaceStatus, StatsReport, StatusReport};
use switchyard_vm_tests::client::{udp_exchange_on, udp_socket_towards};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::daemon::fast_path_sent;
use switchyard_vm_tests::link::{gro, set_gro, set_tx_checksum, tx_checksum};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, Daemon, DaemonOptions, EchoPair, GatewaySpec, Netns, Offloads,
    TempDir, Topology,
};

/// Connections (and requests) a default lab must carry, every one.
const EXCHANGES: usize = 40;

/// How long a change of the peer's GRO may take to reach `yardctl status`.
const EGRESS_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A default lab with echo servers and the daemon started with no option
/// but its config and interfaces. Fields drop in order: daemon, servers,
/// namespaces.
struct Lab {
    daemon: Daemon,
    _servers: Vec<EchoPair>,
    _dir: TempDir,
    topo: Topology,
}

impl Lab {
    fn start(topo: Topology) -> Result<Lab> {
        assert_kernel_defaults(&topo)?;
        let dir = TempDir::new("config")?;
        let config = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
        let servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
        let daemon = Daemon::start(&topo.lb, &config, &DaemonOptions::new(topo.lb_interfaces()))?;
        Ok(Lab {
            daemon,
            _servers: servers,
            _dir: dir,
            topo,
        })
    }

    fn interface(&self, name: &str) -> Result<InterfaceStatus> {
        let status: StatusReport = self.daemon.status()?;
        status
            .interfaces
            .into_iter()
            .find(|i| i.name == name)
            .with_context(|| format!("no interface {name} in yardctl status"))
    }
}

/// The hosts send partial checksums and no switch port runs NAPI: the
/// kernel's defaults, which the lab must really have.
fn assert_kernel_defaults(topo: &Topology) -> Result<()> {
    ensure!(topo.offloads == Offloads::KernelDefaults);
    let mut hosts: Vec<&Netns> = vec![&topo.client];
    hosts.extend(topo.backends.iter().map(|b| &b.ns));
    for host in hosts {
        ensure!(
            tx_checksum(host, "eth0")?,
            "{} eth0: tx checksum offload should be on",
            host.name()
        );
    }
    for (ns, dev) in lb_peers(topo) {
        ensure!(!gro(ns, dev)?, "{dev} in {}: GRO should be off", ns.name());
    }
    Ok(())
}

/// Each LB interface with the namespace and name of its veth peer.
fn lb_peers(topo: &Topology) -> Vec<(&Netns, &'static str)> {
    match topo.lb_interfaces().len() {
        1 => vec![(&topo.switch, "lb")],
        _ => vec![(&topo.client, "eth0"), (&topo.switch, "lb")],
    }
}

/// 40 TCP connections and 40 UDP requests (each from a fresh port, so a
/// fresh flow) through the VIP; fails listing every one that failed.
fn carries_every_exchange(lab: &Lab) -> Result<()> {
    let tcp = SocketAddr::from((VIP, TCP_PORT));
    let udp = SocketAddr::from((VIP, UDP_PORT));
    let mut failures = Vec::new();
    for i in 0..EXCHANGES {
        let payload = format!("connection {i}");
        match tcp_exchange(&lab.topo.client, tcp, &payload) {
            Ok(reply) if reply.echoed() == payload => {}
            Ok(reply) => failures.push(format!("TCP {i}: answered {:?}", reply.text)),
            Err(e) => failures.push(format!("TCP {i}: {e:#}")),
        }
    }
    for i in 0..EXCHANGES {
        let payload = format!("request {i}");
        match udp_exchange(&lab.topo.client, udp, &payload) {
            Ok(reply) if reply.echoed() == payload && reply.from == udp => {}
            Ok(reply) => failures.push(format!("UDP {i}: {:?} from {}", reply.text, reply.from)),
            Err(e) => failures.push(format!("UDP {i}: {e:#}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} exchanges failed in a default lab:\n  {}\n{}",
        failures.len(),
        2 * EXCHANGES,
        failures.join("\n  "),
        lab.daemon.log()
    );
    Ok(())
}

/// Every LB interface is closed to the fast path, with its veth peer named
/// and the command that would open it, in `yardctl status` and the log.
fn explains_the_closed_egress(lab: &Lab) -> Result<()> {
    for (dev, (peer_ns, peer)) in lab.topo.lb_interfaces().iter().zip(lb_peers(&lab.topo)) {
        let interface = lab.interface(dev)?;
        let veth_peer = interface.veth_peer.as_ref().context("a veth peer")?;
        ensure!(
            veth_peer.name == peer
                && veth_peer.netns == peer_ns.name()
                && veth_peer.napi == Some(false)
                && !veth_peer.xdp,
            "{dev}: {veth_peer:?}"
        );
        let egress = interface
            .fast_path_egress
            .as_ref()
            .context("the fast path's egress")?;
        let command = format!(
            "`ip netns exec {} ethtool -K {peer} gro on`",
            peer_ns.name()
        );
        ensure!(
            !egress.open
                && egress.reason.contains("runs no NAPI")
                && egress.reason.contains(&command),
            "{dev}: {egress:?} should be closed and say {command}"
        );
        ensure!(
            lab.daemon.log().contains(&egress.reason),
            "the log should say why {dev} is closed:\n{}",
            lab.daemon.log()
        );
    }
    Ok(())
}

/// The workers completed partial checksums, dropped nothing, and the fast
/// path sent nothing.
fn workers_carried_it_all(stats: &StatsReport) -> Result<()> {
    let partial: u64 = stats.workers.iter().map(|w| w.partial_checksums).sum();
    let fast = fast_path_sent(stats);
    ensure!(
        partial >= 4 * EXCHANGES as u64 && stats.drops.is_empty() && fast == 0,
        "partial checksums {partial}, drops {:?}, fast-path sends {fast}",
        stats.drops
    );
    Ok(())
}

#[test]
fn a_default_single_arm_lab_carries_every_connection() -> Result<()> {
    let lab = Lab::start(Topology::single_arm_with(1, Offloads::KernelDefaults)?)?;
    carries_every_exchange(&lab)?;
    explains_the_closed_egress(&lab)?;
    workers_carried_it_all(&lab.daemon.stats()?)
}

#[test]
fn a_default_two_arm_lab_carries_every_connection() -> Result<()> {
    let lab = Lab::start(Topology::two_arm_with(1, Offloads::KernelDefaults)?)?;
    carries_every_exchange(&lab)?;
    explains_the_closed_egress(&lab)?;
    workers_carried_it_all(&lab.daemon.stats()?)
}

/// `count` exchanges on one UDP socket (one flow); fails on the first
/// unanswered one.
fn udp_flow(socket: &std::net::UdpSocket, tag: &str, count: usize) -> Result<()> {
    let vip = SocketAddr::from((VIP, UDP_PORT));
    for i in 0..count {
        let payload = format!("{tag} {i}");
        let reply = udp_exchange_on(socket, vip, &payload)?;
        ensure!(reply.echoed() == payload, "{payload}: {:?}", reply.text);
    }
    Ok(())
}

fn steered(lab: &Lab, counter: &str) -> Result<u64> {
    Ok(lab
        .daemon
        .stats()?
        .xdp_steering
        .get(counter)
        .copied()
        .unwrap_or(0))
}

fn wait_for_egress(lab: &Lab, open: bool) -> Result<()> {
    poll_until(
        EGRESS_CHANGE_TIMEOUT,
        &format!(
            "eth0's fast-path egress to become {}",
            if open { "open" } else { "closed" }
        ),
        || {
            let interface = lab.interface("eth0")?;
            Ok(interface
                .fast_path_egress
                .is_some_and(|e| e.open == open)
                .then_some(()))
        },
    )
}

#[test]
fn gro_on_the_peer_opens_the_fast_path_while_running_and_off_closes_it_losing_nothing() -> Result<()>
{
    let lab = Lab::start(Topology::single_arm_with(1, Offloads::KernelDefaults)?)?;
    ensure!(
        !lab.interface("eth0")?
            .fast_path_egress
            .context("egress")?
            .open
    );

    set_gro(&lab.topo.switch, "lb", true)?;
    wait_for_egress(&lab, true)?;
    ensure!(
        lab.daemon
            .log()
            .contains("eth0: the fast path now sends out of it"),
        "{}",
        lab.daemon.log()
    );
    let peer = lab.interface("eth0")?.veth_peer.context("a veth peer")?;
    ensure!(peer.napi == Some(true), "{peer:?}");

    // Partial checksums still keep a flow with the workers.
    let vip = SocketAddr::from((VIP, UDP_PORT));
    let partial = udp_socket_towards(&lab.topo.client, vip)?;
    udp_flow(&partial, "partial", 10)?;
    ensure!(
        steered(&lab, "fast_redirect")? == 0,
        "partial checksums on the fast path"
    );

    // Hosts that send full checksums ride it.
    set_tx_checksum(&lab.topo.client, "eth0", false)?;
    for backend in &lab.topo.backends {
        set_tx_checksum(&backend.ns, "eth0", false)?;
    }
    let full = udp_socket_towards(&lab.topo.client, vip)?;
    udp_flow(&full, "full", 20)?;
    let sent = steered(&lab, "fast_redirect")?;
    ensure!(sent > 0, "a full-checksum flow should ride the fast path");

    // GRO off again: the cached flow goes on through the workers, and a
    // new one is not cached at all.
    set_gro(&lab.topo.switch, "lb", false)?;
    wait_for_egress(&lab, false)?;
    udp_flow(&full, "after", 20)?;
    ensure!(
        steered(&lab, "fast_redirect")? == sent && steered(&lab, "fast_egress_closed")? > 0,
        "after GRO went off the program must not send into eth0"
    );
    let cached = |lab: &Lab| -> Result<u64> {
        Ok(lab
            .daemon
            .status()?
            .fast_path
            .context("fast path on")?
            .entries)
    };
    let before = cached(&lab)?;
    udp_flow(&udp_socket_towards(&lab.topo.client, vip)?, "new", 20)?;
    ensure!(
        cached(&lab)? == before,
        "a flow leaving by a closed interface was cached"
    );
    Ok(())
}
