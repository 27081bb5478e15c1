//! End-to-end: restarts and upgrades lose no flow. A long-lived TCP
//! connection (an echo every 2 ms) and a UDP stream (a numbered datagram
//! every millisecond, echoed) settle in the XDP flow cache; then
//! `switchyard` is restarted with SIGTERM and a fresh start, and taken over
//! by a second process (`--takeover`) while the first runs. The program and
//! its maps stay pinned in a bpffs the test mounts, so the kernel carries
//! the cached flows while no worker is bound, and each new daemon rebuilds
//! its flow table from the cache. Between the SIGTERM and the start, the
//! config changes: the TCP flow's backend starts terminating (no new flow,
//! established ones kept), so only the rebuilt flow table keeps the
//! connection on it.
//!
//! Reported (printed): the TCP connection's retransmissions (TCP_INFO),
//! the longest wait for one TCP echo, UDP datagrams lost, the time from
//! SIGTERM to the next daemon answering, and the takeover's gap with no
//! worker bound (the successor's own measurement). Asserted: the TCP
//! connection carries on without a retransmission, no datagram of the
//! cached UDP flow is lost, each flow is answered by one backend
//! throughout, and each new daemon lists both flows from the cache.
//!
//! Taking the node down for good is tested too: `switchyard detach` after a
//! stop, and `--detach-on-exit`, each leave no program and no pin.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_proto::FlowsReport;
use switchyard_vm_tests::bpffs::Bpffs;
use switchyard_vm_tests::client::{echo, tcp_connect, udp_socket_towards};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::process::switchyard_bin;
use switchyard_vm_tests::tcp_info::total_retransmissions;
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{xdp_attached, Daemon, DaemonOptions, GatewaySpec, TempDir, Topology};

/// Between two TCP echoes.
const TCP_EVERY: Duration = Duration::from_millis(2);
/// Between two UDP datagrams.
const UDP_EVERY: Duration = Duration::from_millis(1);
/// How long a datagram's echo may take before it counts as lost.
const UDP_LATE: Duration = Duration::from_millis(500);
/// A generous bound for anything that should take milliseconds.
const SETTLE: Duration = Duration::from_secs(10);

/// A one-arm lab on the demo's config whose daemons pin in a bpffs of the
/// test's own. Tests bind the bpffs first, so it is dropped last and its
/// unmount takes whatever the test left pinned with it.
struct PinnedLab {
    topo: Topology,
    dir: TempDir,
    config: PathBuf,
    opts: DaemonOptions,
    bpffs: Bpffs,
}

impl PinnedLab {
    fn new() -> Result<PinnedLab> {
        let bpffs = Bpffs::mount()?;
        let topo = Topology::single_arm(1)?;
        let dir = TempDir::new("config")?;
        let config = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
        let opts = DaemonOptions::new(topo.lb_interfaces())
            .queues(topo.queues)
            .pin_dir(bpffs.path());
        Ok(PinnedLab {
            topo,
            dir,
            config,
            opts,
            bpffs,
        })
    }
}

/// What the TCP connection went through.
struct TcpOutcome {
    /// The backends that answered.
    servers: BTreeSet<String>,
    echoes: u64,
    longest: Duration,
    retransmissions: u32,
}

/// What the UDP stream went through.
struct UdpOutcome {
    sent: u64,
    lost: Vec<u64>,
}

/// The two streams, running until `stop`.
struct Streams {
    stop: Arc<AtomicBool>,
    tcp: JoinHandle<Result<TcpOutcome>>,
    udp_sender: JoinHandle<Result<u64>>,
    udp_receiver: JoinHandle<(BTreeSet<u64>, BTreeSet<String>)>,
    tcp_client: String,
    udp_client: String,
}

impl Streams {
    fn start(topo: &Topology) -> Result<Streams> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut stream: TcpStream =
            tcp_connect(&topo.client, SocketAddr::from((VIP, TCP_PORT)), SETTLE)?;
        let tcp_client = stream.local_addr()?.to_string();
        let tcp = {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<TcpOutcome> {
                let mut echoes = 0u64;
                let mut longest = Duration::ZERO;
                let mut servers = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let text = echo(&mut stream, &format!("t{echoes}|"), SETTLE)
                        .with_context(|| format!("TCP echo {echoes}"))?;
                    if let Some(server) = text.split(' ').next() {
                        servers.insert(server.to_owned());
                    }
                    longest = longest.max(began.elapsed());
                    echoes += 1;
                    std::thread::sleep(TCP_EVERY);
                }
                Ok(TcpOutcome {
                    servers,
                    echoes,
                    longest,
                    retransmissions: total_retransmissions(&stream)?,
                })
            })
        };
        let vip = SocketAddr::from((VIP, UDP_PORT));
        let socket: UdpSocket = udp_socket_towards(&topo.client, vip)?;
        let udp_client = socket.local_addr()?.to_string();
        let receiving = socket.try_clone()?;
        receiving.set_read_timeout(Some(UDP_LATE))?;
        let udp_sender = {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<u64> {
                let mut sent = 0u64;
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    socket.send_to(format!("u{sent}|").as_bytes(), vip)?;
                    sent += 1;
                    // Paced on the clock, not on sleeps: a late wake-up
                    // sends the datagrams it owes at once.
                    let due = started + UDP_EVERY * u32::try_from(sent).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                Ok(sent)
            })
        };
        let udp_receiver = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut received = BTreeSet::new();
                let mut servers = BTreeSet::new();
                let mut buf = [0u8; 2048];
                let mut quiet_since_stop = false;
                loop {
                    match receiving.recv_from(&mut buf) {
                        Ok((n, _)) => {
                            let text = String::from_utf8_lossy(&buf[..n]);
                            if let Some(server) = text.split(' ').next() {
                                servers.insert(server.to_owned());
                            }
                            if let Some(n) = text
                                .split_once(" u")
                                .and_then(|(_, rest)| rest.strip_suffix('|'))
                                .and_then(|n| n.parse().ok())
                            {
                                received.insert(n);
                            }
                        }
                        // Quiet for UDP_LATE after the stop: every echo
                        // that will come has come.
                        Err(_) if quiet_since_stop => return (received, servers),
                        Err(_) => {}
                    }
                    quiet_since_stop = stop.load(Ordering::Relaxed);
                }
            })
        };
        Ok(Streams {
            stop,
            tcp,
            udp_sender,
            udp_receiver,
            tcp_client,
            udp_client,
        })
    }

    fn finish(self) -> Result<(TcpOutcome, UdpOutcome, BTreeSet<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let tcp = self.tcp.join().expect("the TCP thread does not panic")?;
        let sent = self
            .udp_sender
            .join()
            .expect("the UDP sender does not panic")?;
        let (received, udp_servers) = self
            .udp_receiver
            .join()
            .expect("the UDP receiver does not panic");
        let lost = (0..sent).filter(|n| !received.contains(n)).collect();
        Ok((tcp, UdpOutcome { sent, lost }, udp_servers))
    }
}

/// Whether `daemon` lists both streams' flows, and whether the fast path
/// carries both.
fn listed(daemon: &Daemon, streams: &Streams) -> Result<(bool, bool)> {
    let flows: FlowsReport = daemon.flows()?;
    let of = |client: &str| flows.flows.iter().find(|f| f.client == client);
    let (tcp, udp) = (of(&streams.tcp_client), of(&streams.udp_client));
    Ok((
        tcp.is_some() && udp.is_some(),
        tcp.is_some_and(|f| f.fast_path) && udp.is_some_and(|f| f.fast_path),
    ))
}

fn wait_cached(daemon: &Daemon, streams: &Streams, what: &str) -> Result<()> {
    poll_until(SETTLE, what, || {
        let entries = daemon.status()?.fast_path.map_or(0, |f| f.entries);
        Ok((listed(daemon, streams)?.1 && entries >= 4).then_some(()))
    })
}

/// The successor's own measurement: `takeover: no worker bound for X ms`.
fn takeover_gap_ms(log: &str) -> Option<f64> {
    log.lines()
        .find_map(|line| line.split("no worker bound for ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
}

#[test]
fn cached_flows_survive_a_restart_and_a_takeover_without_loss() -> Result<()> {
    // Bound in this order so the bpffs is dropped last.
    let PinnedLab {
        bpffs: _bpffs,
        dir,
        topo,
        config,
        opts,
    } = PinnedLab::new()?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let mut daemon = Daemon::start(&topo.lb, &config, &opts)?;
    let streams = Streams::start(&topo)?;
    wait_cached(&daemon, &streams, "both streams cached, both ways")?;

    // 1. SIGTERM, then a fresh start: nothing runs in between. Meanwhile
    // the TCP flow's backend starts terminating: it keeps its established
    // connections but takes no new one, so only a flow table rebuilt from
    // the cache keeps the connection there (a fresh decision would send
    // its next segment to the other backend, which would reset it).
    let flows: FlowsReport = daemon.flows()?;
    let tcp_backend: SocketAddr = flows
        .flows
        .iter()
        .find(|f| f.client == streams.tcp_client)
        .context("the TCP flow is listed")?
        .backend
        .parse()?;
    let std::net::IpAddr::V4(tcp_backend) = tcp_backend.ip() else {
        bail!("an IPv4 backend: {tcp_backend}");
    };
    let stopped_at = Instant::now();
    daemon.stop()?;
    let no_daemon = stopped_at.elapsed();
    drop(daemon);
    let changed = GatewaySpec {
        terminating: vec![tcp_backend],
        ..GatewaySpec::demo()
    };
    dir.write("gateway.yaml", &changed.to_yaml())?;
    let mut daemon = Daemon::start(&topo.lb, &config, &opts)?;
    let restart = stopped_at.elapsed();
    let (rebuilt, _) = listed(&daemon, &streams)?;
    ensure!(
        rebuilt,
        "the restarted daemon should list both flows from the cache: {:?}\n{}",
        daemon.flows()?.flows,
        daemon.log()
    );
    ensure!(
        daemon
            .log()
            .contains("rebuilt 4 flows from the fast path's cache"),
        "the restarted daemon should rebuild both directions of both flows:\n{}",
        daemon.log()
    );
    wait_cached(
        &daemon,
        &streams,
        "both streams cached again after the restart",
    )?;

    // 2. A second process takes over from the running one.
    let took_over_at = Instant::now();
    let mut successor = daemon.take_over(&topo.lb, &config, &opts)?;
    daemon.wait_exit(SETTLE)?;
    drop(daemon);
    successor.wait_until_ready(SETTLE)?;
    let takeover = took_over_at.elapsed();
    let successor_log = successor.log();
    let gap_ms = takeover_gap_ms(&successor_log)
        .with_context(|| format!("no takeover gap in the successor's log:\n{successor_log}"))?;
    ensure!(
        listed(&successor, &streams)?.0,
        "the successor should list both flows from the cache: {:?}",
        successor.flows()?.flows
    );
    wait_cached(
        &successor,
        &streams,
        "both streams cached after the takeover",
    )?;

    let (tcp, udp, udp_servers) = streams.finish()?;
    println!(
        "restart (SIGTERM + start): {:.0} ms to exit, {:.0} ms until the new daemon answered",
        no_daemon.as_secs_f64() * 1e3,
        restart.as_secs_f64() * 1e3
    );
    println!(
        "takeover: {:.0} ms until the successor answered; no worker bound for {gap_ms:.3} ms",
        takeover.as_secs_f64() * 1e3
    );
    println!(
        "TCP: {} echoes, longest {:.1} ms, {} retransmissions; UDP: {} sent, {} lost {:?}",
        tcp.echoes,
        tcp.longest.as_secs_f64() * 1e3,
        tcp.retransmissions,
        udp.sent,
        udp.lost.len(),
        udp.lost.iter().take(20).collect::<Vec<_>>()
    );
    ensure!(
        tcp.servers.len() == 1 && udp_servers.len() == 1,
        "each flow keeps its backend: TCP answered by {:?}, UDP by {udp_servers:?}",
        tcp.servers
    );
    ensure!(
        tcp.retransmissions == 0,
        "the TCP connection retransmitted {} times",
        tcp.retransmissions
    );
    if !udp.lost.is_empty() {
        bail!(
            "{} of {} datagrams of the cached UDP flow were lost: {:?}",
            udp.lost.len(),
            udp.sent,
            udp.lost
        );
    }
    successor.stop()?;
    Ok(())
}

#[test]
fn a_changed_map_layout_starts_on_fresh_maps_and_keeps_connections_on_their_backends() -> Result<()>
{
    // Bound in this order so the bpffs is dropped last.
    let PinnedLab {
        bpffs: _bpffs,
        dir: _dir,
        topo,
        config,
        opts,
    } = PinnedLab::new()?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let mut daemon = Daemon::start(&topo.lb, &config, &opts)?;
    let streams = Streams::start(&topo)?;
    wait_cached(&daemon, &streams, "both streams cached, both ways")?;

    // Flow caches of another size live in maps of another name: to the
    // next daemon, the same as a build with another map layout.
    let stopped_at = Instant::now();
    daemon.stop()?;
    drop(daemon);
    let resized = opts.clone().arg("--fast-path-capacity").arg("4096");
    let daemon = Daemon::start(&topo.lb, &config, &resized)?;
    let restart = stopped_at.elapsed();
    let log = daemon.log();
    ensure!(
        !log.contains("taking over the pinned maps") && log.contains("no longer in use"),
        "fresh maps, the old ones removed:\n{log}"
    );
    wait_cached(&daemon, &streams, "both streams cached in the fresh maps")?;

    let (tcp, udp, udp_servers) = streams.finish()?;
    println!(
        "changed layout: {:.0} ms from SIGTERM until the new daemon answered; \
         TCP: {} echoes, longest {:.1} ms, {} retransmissions; UDP: {} sent, {} lost",
        restart.as_secs_f64() * 1e3,
        tcp.echoes,
        tcp.longest.as_secs_f64() * 1e3,
        tcp.retransmissions,
        udp.sent,
        udp.lost.len()
    );
    // Nothing is rebuilt: the unchanged config's Maglev tables pick the
    // same backends again.
    ensure!(
        tcp.servers.len() == 1 && udp_servers.len() == 1,
        "each flow keeps its backend: TCP answered by {:?}, UDP by {udp_servers:?}",
        tcp.servers
    );
    // The old program forwards from its own cache until the new one, with
    // its sockets in, replaces it on the link.
    ensure!(
        tcp.retransmissions == 0 && udp.lost.is_empty(),
        "{} TCP retransmissions, {} datagrams lost: {:?}",
        tcp.retransmissions,
        udp.lost.len(),
        udp.lost
    );
    Ok(())
}

/// The entries of `bpffs` that hold some network namespace's pins.
fn pinned_namespaces(bpffs: &Bpffs) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(bpffs.path())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("netns-") {
            out.push(name);
        }
    }
    Ok(out)
}

#[test]
fn detach_takes_the_pinned_program_down_and_detach_on_exit_leaves_nothing() -> Result<()> {
    // Bound in this order so the bpffs is dropped last.
    let PinnedLab {
        bpffs,
        dir: _dir,
        topo,
        config,
        opts,
    } = PinnedLab::new()?;
    let dev = topo.lb_interfaces()[0].clone();

    // A plain stop leaves the program forwarding; `switchyard detach`
    // takes it down.
    let mut daemon = Daemon::start(&topo.lb, &config, &opts)?;
    daemon.stop()?;
    drop(daemon);
    ensure!(
        xdp_attached(&topo.lb, &dev)?,
        "a stopped daemon leaves its program on {dev}"
    );
    ensure!(!pinned_namespaces(&bpffs)?.is_empty(), "and its pins");
    let detach = topo
        .lb
        .command(switchyard_bin()?)
        .arg("detach")
        .arg("--pin-dir")
        .arg(bpffs.path())
        .output()
        .context("running switchyard detach")?;
    ensure!(
        detach.status.success(),
        "switchyard detach: {}\n{}",
        detach.status,
        String::from_utf8_lossy(&detach.stderr)
    );
    poll_until(SETTLE, "the program to leave the interface", || {
        Ok((!xdp_attached(&topo.lb, &dev)?).then_some(()))
    })?;
    ensure!(
        pinned_namespaces(&bpffs)?.is_empty(),
        "switchyard detach leaves pins: {:?}",
        pinned_namespaces(&bpffs)?
    );
    // Nothing pinned: nothing to do, and no error.
    let again = topo
        .lb
        .command(switchyard_bin()?)
        .args(["detach", "--pin-dir"])
        .arg(bpffs.path())
        .status()?;
    ensure!(again.success(), "a second detach: {again}");

    // --detach-on-exit: a stop takes everything down.
    let mut daemon = Daemon::start(&topo.lb, &config, &opts.clone().arg("--detach-on-exit"))?;
    ensure!(
        xdp_attached(&topo.lb, &dev)?,
        "the daemon attached to {dev}"
    );
    daemon.stop()?;
    drop(daemon);
    ensure!(
        !xdp_attached(&topo.lb, &dev)?,
        "--detach-on-exit left the program on {dev}"
    );
    ensure!(
        pinned_namespaces(&bpffs)?.is_empty(),
        "--detach-on-exit left pins: {:?}",
        pinned_namespaces(&bpffs)?
    );
    Ok(())
}
