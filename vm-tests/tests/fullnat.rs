//! `fullnat` end to end: backends that have no route back to any client
//! (no default route at all) still answer, because they only ever see the
//! LB's SNAT address; a client on the backends' own subnet (hairpin) too.
//! And 10,000 concurrent connections from one client address, over two
//! queues, each with a source port no other holds. Real namespaces, the
//! real XDP program and workers, real sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_vm_tests::client::{pin_current_thread, tcp_connect, tcp_exchange_keep_open};
use switchyard_vm_tests::config::{
    TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::fullnat::{
    backends_without_route_through_lb, hairpin_client, with_forwarding, SNAT_PORTS,
};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{LB_BACKEND_SIDE_ADDR, LB_BACKEND_SIDE_ADDR6, VIP, VIP6};
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, Daemon, DaemonOptions, GatewaySpec, Netns, TempDir, Topology,
};

const EXCHANGES: usize = 12;
const SNAT_FIRST: u16 = 10000;
const SNAT_LAST: u16 = 32767;
const DEADLINE: Duration = Duration::from_secs(20);

fn daemon_options(topo: &Topology) -> DaemonOptions {
    DaemonOptions::new(topo.lb_interfaces())
        .queues(topo.queues)
        .arg("--snat-ports")
        .arg(SNAT_PORTS)
}

/// `count` exchanges of `client` with `vip`, each from a new socket (a
/// new flow); the names of the backends that answered, each answer checked
/// to come from the VIP.
fn exchanges(client: &Netns, vip: SocketAddr, udp: bool, count: usize) -> Result<Vec<String>> {
    (0..count)
        .map(|i| {
            let payload = format!("exchange {i}");
            let reply = if udp {
                udp_exchange(client, vip, &payload)
            } else {
                tcp_exchange(client, vip, &payload)
            }
            .with_context(|| format!("{} {i} to {vip}", if udp { "UDP" } else { "TCP" }))?;
            let server = reply.server().to_owned();
            ensure!(
                reply.from == vip && reply.text == format!("{server} {payload}"),
                "{reply:?} is not a backend's echo from the VIP {vip}"
            );
            Ok(server)
        })
        .collect()
}

#[test]
fn fullnat_serves_backends_without_a_route_to_any_client_and_a_hairpin_client() -> Result<()> {
    let topo = Topology::single_arm(1)?.with_ipv6()?;
    backends_without_route_through_lb(&topo, true)?;
    let hairpin = hairpin_client(&topo, true)?;
    let spec = GatewaySpec::demo_dual_stack();
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &with_forwarding(&spec, "{mode: fullnat}"))?;
    let servers = topo.start_backends_dual_stack(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = Daemon::start(&topo.lb, &config, &daemon_options(&topo))?;

    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let (mut tcp, mut udp) = (0u64, 0u64);
    for client in [&topo.client, &hairpin] {
        for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
            for name in exchanges(client, (vip, TCP_PORT).into(), false, EXCHANGES)? {
                *answered.entry(name).or_default() += 1;
                tcp += 1;
            }
            for name in exchanges(client, (vip, UDP_PORT).into(), true, EXCHANGES)? {
                *answered.entry(name).or_default() += 1;
                udp += 1;
            }
        }
    }
    ensure!(
        answered.len() == 2,
        "both backends answer, not only {answered:?}"
    );

    // The backends only ever saw the LB's SNAT address, on SNAT ports.
    for pair in &servers {
        for peer in pair.tcp.peers().into_iter().chain(pair.udp.peers()) {
            let snat = match peer.ip() {
                IpAddr::V4(_) => IpAddr::V4(LB_BACKEND_SIDE_ADDR),
                IpAddr::V6(_) => IpAddr::V6(LB_BACKEND_SIDE_ADDR6),
            };
            ensure!(
                peer.ip() == snat && (SNAT_FIRST..=SNAT_LAST).contains(&peer.port()),
                "a backend saw {peer}, not the SNAT address {snat} on an SNAT port"
            );
        }
    }

    // Every exchange was one new flow of its listener; none was refused.
    let stats = poll_until(DEADLINE, "every flow counted", || {
        let stats = daemon.stats()?;
        let flows = |protocol: &str| -> u64 {
            stats
                .listeners
                .iter()
                .filter(|l| l.protocol.eq_ignore_ascii_case(protocol))
                .map(|l| l.counters.flows)
                .sum()
        };
        Ok((flows("tcp") == tcp && flows("udp") == udp).then_some(stats))
    })?;
    for reason in [
        "snat_ports_exhausted",
        "no_snat_address",
        "reply_without_flow",
    ] {
        ensure!(
            stats.drops.get(reason).copied().unwrap_or(0) == 0,
            "{reason}: {:?}",
            stats.drops
        );
    }

    // `yardctl flows` shows a live connection's mode and SNAT binding,
    // and the client itself (not the binding) as its client.
    let (_open, reply) = tcp_exchange_keep_open(&topo.client, (VIP, TCP_PORT).into(), "kept")?;
    let client = reply.local.to_string();
    let flow = poll_until(DEADLINE, "the open connection in yardctl flows", || {
        Ok(daemon
            .flows()?
            .flows
            .into_iter()
            .find(|f| f.client == client))
    })?;
    let snat = flow.snat.clone().unwrap_or_default();
    ensure!(
        flow.mode == "fullnat" && snat.starts_with(&format!("{LB_BACKEND_SIDE_ADDR}:")),
        "{flow:?}"
    );
    // `yardctl status` names the modes in use and the SNAT ports.
    let status = daemon.status()?;
    ensure!(
        status
            .forwarding
            .listeners
            .get("fullnat")
            .copied()
            .unwrap_or(0)
            > 0
            && status.forwarding.snat_ports.as_deref() == Some(SNAT_PORTS)
            && status.forwarding.snat_slices.len() == topo.queues as usize,
        "{:?}",
        status.forwarding
    );
    Ok(())
}

/// Environment of `holding_server_process`: the port and name it serves.
const HOLD_PORT_ENV: &str = "SWITCHYARD_TEST_HOLD_PORT";
const HOLD_NAME_ENV: &str = "SWITCHYARD_TEST_HOLD_NAME";

/// Not a test: the body of `HoldingServer`'s child process, started by the
/// test binary itself inside a backend's namespace (`--ignored --exact`),
/// so the backends' ends of the connections count against the child's
/// open-file limit, not the client's. Accepts connections, greets each
/// with the backend's name, holds them open, and prints each peer.
#[test]
#[ignore = "the child process of the 10,000-connection test"]
fn holding_server_process() -> Result<()> {
    use std::io::Write;
    let (Ok(port), Ok(name)) = (std::env::var(HOLD_PORT_ENV), std::env::var(HOLD_NAME_ENV)) else {
        return Ok(());
    };
    let limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    raise_open_files_to_hard(limit)?;
    let listener = TcpListener::bind(("0.0.0.0", port.parse::<u16>()?))?;
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "listening")?;
    let mut held = Vec::new();
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                if let Err(e) = stream.write_all(format!("{name}\n").as_bytes()) {
                    writeln!(stdout.lock(), "error greeting {peer}: {e}")?;
                }
                writeln!(stdout.lock(), "peer {peer}")?;
                held.push(stream);
            }
            Err(e) => writeln!(stdout.lock(), "error accepting: {e}")?,
        }
    }
}

/// Raises the soft open-file limit to the hard one (only root with
/// CAP_SYS_RESOURCE could go further).
fn raise_open_files_to_hard(mut limit: libc::rlimit) -> Result<u64> {
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "reading the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!(
            "raising the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(limit.rlim_cur)
}

/// A backend's server holding every connection open, in a child process
/// in the backend's namespace; its peers read from the child's output.
struct HoldingServer {
    child: std::process::Child,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl HoldingServer {
    fn start(ns: &Netns, name: &str, port: u16) -> Result<HoldingServer> {
        use std::io::BufRead;
        let mut child = ns
            .command(std::env::current_exe()?)
            .args([
                "holding_server_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(HOLD_PORT_ENV, port.to_string())
            .env(HOLD_NAME_ENV, name)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting a holding server")?;
        let mut lines = std::io::BufReader::new(child.stdout.take().context("its stdout")?).lines();
        // Readiness: the child says so once it listens.
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "listening" => break,
                Some(Ok(_)) => continue,
                _ => bail!("the holding server of {name} ended before listening"),
            }
        }
        let peers = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let peers = peers.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    if let Some(peer) = line.strip_prefix("peer ").and_then(|p| p.parse().ok()) {
                        peers.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                    } else if line.starts_with("error") {
                        eprintln!("holding server: {line}");
                    }
                }
            })
        };
        Ok(HoldingServer {
            child,
            peers,
            reader: Some(reader),
        })
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for HoldingServer {
    fn drop(&mut self) {
        // Only the child this test started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

const CONNECTIONS: usize = 10_000;

#[test]
fn ten_thousand_concurrent_connections_from_one_address_never_share_a_port() -> Result<()> {
    let limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let open_files = raise_open_files_to_hard(limit)?;
    ensure!(
        open_files > CONNECTIONS as u64 + 256,
        "the open-file limit {open_files} cannot hold {CONNECTIONS} client sockets"
    );
    let topo = Topology::single_arm(2)?;
    backends_without_route_through_lb(&topo, false)?;
    let spec = GatewaySpec::demo();
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &with_forwarding(&spec, "{mode: fullnat}"))?;
    let servers: Vec<HoldingServer> = topo
        .backends
        .iter()
        .map(|be| HoldingServer::start(&be.ns, &be.name, TCP_TARGET_PORT))
        .collect::<Result<_>>()?;
    let daemon = Daemon::start(&topo.lb, &config, &daemon_options(&topo))?;

    // Two client threads, one per CPU, so both LB queues take flows.
    let vip: SocketAddr = (VIP, TCP_PORT).into();
    let started = Instant::now();
    let held: Vec<Result<Vec<TcpStream>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2u32)
            .map(|cpu| {
                let client = &topo.client;
                scope.spawn(move || -> Result<Vec<TcpStream>> {
                    pin_current_thread(cpu)?;
                    let mut streams = Vec::with_capacity(CONNECTIONS / 2);
                    for i in 0..CONNECTIONS / 2 {
                        let mut stream = tcp_connect(client, vip, Duration::from_secs(10))
                            .with_context(|| format!("connection {i} of CPU {cpu}"))?;
                        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                        let mut greeting = [0u8; 4];
                        stream
                            .read_exact(&mut greeting)
                            .with_context(|| format!("greeting of connection {i} of CPU {cpu}"))?;
                        ensure!(&greeting[..2] == b"be", "{greeting:?}");
                        streams.push(stream);
                    }
                    Ok(streams)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut streams = Vec::new();
    for h in held {
        streams.extend(h.with_context(|| {
            let stats = daemon.stats().map(|s| (s.drops, s.workers, s.xdp_steering));
            format!("LB counters: {stats:?}")
        })?);
    }
    ensure!(streams.len() == CONNECTIONS);
    eprintln!(
        "{CONNECTIONS} connections open and greeted in {:?}",
        started.elapsed()
    );

    // Every connection is open at once, each reached its backend from a
    // (SNAT address, port) no other holds.
    let peers: Vec<SocketAddr> = poll_until(DEADLINE, "every peer reported", || {
        let peers: Vec<SocketAddr> = servers.iter().flat_map(HoldingServer::peers).collect();
        Ok((peers.len() >= CONNECTIONS).then_some(peers))
    })?;
    ensure!(peers.len() == CONNECTIONS, "{} accepted", peers.len());
    let distinct: BTreeSet<SocketAddr> = peers.iter().copied().collect();
    ensure!(
        distinct.len() == CONNECTIONS,
        "{} connections shared a source port",
        CONNECTIONS - distinct.len()
    );
    ensure!(
        peers
            .iter()
            .all(|p| p.ip() == IpAddr::V4(LB_BACKEND_SIDE_ADDR)
                && (SNAT_FIRST..=SNAT_LAST).contains(&p.port())),
        "a backend saw a source outside the SNAT address's range"
    );
    for server in &servers {
        ensure!(!server.peers().is_empty(), "both backends take connections");
    }

    let stats = daemon.stats()?;
    let flows: u64 = stats
        .listeners
        .iter()
        .filter(|l| l.listener.ends_with(TCP_LISTENER))
        .map(|l| l.counters.flows)
        .sum();
    ensure!(flows == CONNECTIONS as u64, "{flows} flows counted");
    for worker in &stats.workers {
        ensure!(
            worker.rx_packets > 0,
            "queue {} took no packets: {:?}",
            worker.queue,
            stats.workers
        );
    }
    for reason in ["snat_ports_exhausted", "reply_without_flow"] {
        ensure!(
            stats.drops.get(reason).copied().unwrap_or(0) == 0,
            "{reason}: {:?}",
            stats.drops
        );
    }
    drop(streams);
    Ok(())
}

/// A fullnat listener on a node started without `--snat-ports` would drop
/// every flow: the daemon refuses the config at start, naming the flag.
#[test]
fn fullnat_without_snat_ports_is_refused_at_start() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let config = dir.write(
        "gateway.yaml",
        &with_forwarding(&GatewaySpec::demo(), "{mode: fullnat}"),
    )?;
    let opts = DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues);
    let Err(error) = Daemon::start(&topo.lb, &config, &opts) else {
        anyhow::bail!("switchyard started fullnat listeners without --snat-ports");
    };
    let text = format!("{error:#}");
    ensure!(
        text.contains("forwards in mode fullnat") && text.contains("--snat-ports FIRST-LAST"),
        "{text}"
    );
    Ok(())
}
