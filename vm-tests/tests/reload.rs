//! End-to-end: config reloads (file rewrite, rename-over and SIGHUP) under
//! continuous traffic. Flows of listeners the reloads do not touch lose no
//! packet and keep their backend; an invalid file is refused and the
//! running config stays. Bad writes cannot hurt the running daemon: a
//! truncated file is refused with its listeners left in place, a file
//! deleted and written again slowly is applied once, whole, and a FIFO
//! renamed over the config neither hangs the daemon nor its SIGTERM.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_vm_tests::client::{self, tcp_connect, udp_exchange_on, udp_socket_towards};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::tcp_info::total_retransmissions;
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{Daemon, GatewaySpec, Netns, TempDir, Topology};

const RELOADS: u64 = 20;
/// A reload is a file read, a compile and a map sync: well under this.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
/// Under a second, so a lost SYN (retransmitted after one second) fails the
/// connect instead of being hidden by the retry.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(900);
/// Per exchange. Generous: the machine is shared; a loss shows up as a
/// retransmission (TCP) or a missing reply (UDP), not as slowness.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// A second Gateway the reloads add and remove: the demo listeners are
/// never touched by them.
const SPARE_VIP: &str = "198.18.100.20";
const SPARE_PORT: u16 = 9053;

fn config(with_spare: bool, serial: u64) -> String {
    let mut yaml = format!("# revision {serial}\n");
    yaml.push_str(&GatewaySpec::demo().to_yaml());
    if with_spare {
        yaml.push_str(&format!(
            "---\n\
             apiVersion: gateway.networking.k8s.io/v1\n\
             kind: Gateway\n\
             metadata:\n  name: spare\n  namespace: demo\n\
             spec:\n  gatewayClassName: switchyard\n  addresses:\n  - type: IPAddress\n    value: {SPARE_VIP}\n  \
             listeners:\n  - name: udp\n    protocol: UDP\n    port: {SPARE_PORT}\n\
             ---\n\
             apiVersion: gateway.networking.k8s.io/v1\n\
             kind: UDPRoute\n\
             metadata:\n  name: spare\n  namespace: demo\n\
             spec:\n  parentRefs:\n  - name: spare\n  rules:\n  - backendRefs:\n    - name: echo\n      port: {UDP_PORT}\n"
        ));
    }
    yaml
}

/// Replaces the file the way config tools do: write aside, rename over.
fn replace(path: &Path, contents: &str) -> Result<()> {
    let aside = path.with_extension("yaml.new");
    std::fs::write(&aside, contents)?;
    std::fs::rename(&aside, path)?;
    Ok(())
}

/// What one traffic thread saw.
#[derive(Debug, Default)]
struct Tally {
    exchanges: u64,
    failures: Vec<String>,
    retransmissions: u64,
    servers: BTreeSet<String>,
}

/// One UDP socket (one flow), a datagram every millisecond, each answered
/// before the next: a loss is a missing reply.
fn udp_stream(socket: UdpSocket, to: SocketAddr, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("seq {}", tally.exchanges);
        match udp_exchange_on(&socket, to, &payload) {
            Ok(reply) if reply.from == to && reply.echoed() == payload => {
                tally.servers.insert(reply.server().to_owned());
            }
            Ok(reply) => tally
                .failures
                .push(format!("{payload}: unexpected reply {reply:?}")),
            Err(err) => tally.failures.push(format!("{payload}: {err:#}")),
        }
        tally.exchanges += 1;
        thread::sleep(Duration::from_millis(1));
    }
    tally
}

/// One long-lived connection exchanging a message every millisecond.
fn tcp_long_lived(mut stream: TcpStream, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("msg {}|", tally.exchanges);
        let result = stream
            .write_all(payload.as_bytes())
            .map_err(anyhow::Error::from)
            .and_then(|()| client::read_echo(&mut stream, &payload, REPLY_TIMEOUT));
        tally.exchanges += 1;
        match result {
            Ok(text) => {
                tally
                    .servers
                    .insert(text.split(' ').next().unwrap_or("").to_owned());
            }
            Err(err) => {
                tally.failures.push(format!("{payload}: {err:#}"));
                break;
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    match total_retransmissions(&stream) {
        Ok(n) => tally.retransmissions = u64::from(n),
        Err(err) => tally.failures.push(format!("{err:#}")),
    }
    tally
}

/// A new connection every few milliseconds: connect, one exchange, close.
fn tcp_new_connections(ns: &Netns, to: SocketAddr, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("conn {}|", tally.exchanges);
        tally.exchanges += 1;
        let result = tcp_connect(ns, to, CONNECT_TIMEOUT).and_then(|mut stream| {
            stream.set_nodelay(true)?;
            stream.write_all(payload.as_bytes())?;
            let text = client::read_echo(&mut stream, &payload, REPLY_TIMEOUT)?;
            Ok((text, total_retransmissions(&stream)?))
        });
        match result {
            Ok((_, retransmissions)) => tally.retransmissions += u64::from(retransmissions),
            Err(err) => tally.failures.push(format!("{payload}: {err:#}")),
        }
        thread::sleep(Duration::from_millis(5));
    }
    tally
}

/// Waits for the running config to reach `generation`, failing early if a
/// reload beyond the `refused` expected ones was refused.
fn wait_generation(daemon: &Daemon, generation: u64, refused: u64) -> Result<()> {
    poll_until(
        RELOAD_DEADLINE,
        &format!("config generation {generation}"),
        || {
            let status = daemon.config_status()?;
            if status.failed_reloads > refused {
                bail!("reload refused: {:?}", status.last_error);
            }
            ensure!(
                status.generation <= generation,
                "generation {} overshot {generation}: a reload happened twice",
                status.generation
            );
            Ok((status.generation == generation).then_some(()))
        },
    )
}

#[test]
fn twenty_reloads_under_traffic_lose_nothing_on_unchanged_listeners() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &config(false, 0))?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&path)?;
    assert_eq!(daemon.config_status()?.generation, 1);

    let udp_vip = SocketAddr::from((VIP, UDP_PORT));
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));
    let socket = udp_socket_towards(&topo.client, udp_vip)?;
    let stream = tcp_connect(&topo.client, tcp_vip, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    let stop = AtomicBool::new(false);
    let (result, udp, long, fresh) = thread::scope(|scope| {
        let udp = scope.spawn(|| udp_stream(socket, udp_vip, &stop));
        let long = scope.spawn(|| tcp_long_lived(stream, &stop));
        let fresh = scope.spawn(|| tcp_new_connections(&topo.client, tcp_vip, &stop));
        let result = reload_twenty_times(&topo, &daemon, &path);
        stop.store(true, Ordering::Relaxed);
        (result, udp.join(), long.join(), fresh.join())
    });
    result?;
    let panicked = |_| anyhow!("a traffic thread panicked");
    let (udp, long, fresh) = (
        udp.map_err(panicked)?,
        long.map_err(panicked)?,
        fresh.map_err(panicked)?,
    );

    eprintln!("udp stream: {udp:?}\ntcp long-lived: {long:?}\ntcp new connections: {fresh:?}");
    for (what, tally) in [
        ("UDP stream", &udp),
        ("long-lived TCP", &long),
        ("new TCP connections", &fresh),
    ] {
        ensure!(
            tally.exchanges >= 20,
            "{what}: too little traffic: {tally:?}"
        );
        ensure!(
            tally.failures.is_empty(),
            "{what}: {} of {} exchanges failed: {:?}",
            tally.failures.len(),
            tally.exchanges,
            tally.failures
        );
        ensure!(
            tally.retransmissions == 0,
            "{what}: {} TCP retransmissions",
            tally.retransmissions
        );
    }
    ensure!(
        udp.servers.len() == 1 && long.servers.len() == 1,
        "a flow changed backends across reloads: udp {:?}, tcp {:?}",
        udp.servers,
        long.servers
    );
    Ok(())
}

/// Reloads 1 to 20: rewrites (adding or removing the spare Gateway) and,
/// every fourth, a SIGHUP with the same contents; a broken file half-way.
fn reload_twenty_times(topo: &Topology, daemon: &Daemon, path: &Path) -> Result<()> {
    let mut refused = 0;
    for reload in 1..=RELOADS {
        if reload == RELOADS / 2 {
            // Half-way, a broken file: refused, the running config stays.
            std::fs::write(path, "apiVersion: v1\nkind: Service\nmetadata: [\n")?;
            refused += 1;
            poll_until(RELOAD_DEADLINE, "the broken file to be refused", || {
                let status = daemon.config_status()?;
                Ok((status.failed_reloads == refused).then_some(status))
            })
            .and_then(|status| {
                ensure!(status.generation == reload, "generation moved: {status:?}");
                let message = status.last_error.map(|e| e.message).unwrap_or_default();
                ensure!(
                    message.contains("gateway.yaml:"),
                    "the refusal should say file:line, got {message:?}"
                );
                Ok(())
            })?;
        }
        if reload % 4 == 0 {
            // Same contents, forced by the operator.
            daemon.signal(Signal::SIGHUP)?;
        } else {
            replace(path, &config(reload % 2 == 1, reload))?;
        }
        wait_generation(daemon, reload + 1, refused).with_context(|| format!("reload {reload}"))?;
    }
    let status = daemon.config_status()?;
    ensure!(status.reloads == RELOADS, "{status:?}");
    ensure!(status.failed_reloads == 1, "{status:?}");
    // The last rewrite (reload 19) added the spare Gateway, and SIGHUP
    // kept it: it serves.
    let spare = SocketAddr::from((SPARE_VIP.parse::<std::net::Ipv4Addr>()?, SPARE_PORT));
    let socket = udp_socket_towards(&topo.client, spare)?;
    let reply = udp_exchange_on(&socket, spare, "spare").with_context(|| {
        let stats = daemon.yardctl_raw(&["stats"]).map(|o| o.stdout);
        format!("the spare Gateway added by reload 19; yardctl stats: {stats:?}")
    })?;
    ensure!(reply.from == spare, "{reply:?}");
    Ok(())
}

#[test]
fn removing_a_backend_resets_its_tcp_connections_and_rehashes_its_udp_flows() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let spec = GatewaySpec::demo();
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&path)?;
    let udp_vip = SocketAddr::from((VIP, UDP_PORT));
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));

    // A connection and a UDP flow on each backend.
    let mut connections = std::collections::BTreeMap::new();
    let mut udp_flows = std::collections::BTreeMap::new();
    for i in 0..64 {
        if connections.len() == 2 && udp_flows.len() == 2 {
            break;
        }
        let (stream, reply) =
            switchyard_vm_tests::tcp_exchange_keep_open(&topo.client, tcp_vip, &format!("c{i}|"))?;
        connections
            .entry(reply.server().to_owned())
            .or_insert(stream);
        let socket = udp_socket_towards(&topo.client, udp_vip)?;
        let reply = udp_exchange_on(&socket, udp_vip, &format!("u{i}"))?;
        udp_flows.entry(reply.server().to_owned()).or_insert(socket);
    }
    ensure!(
        connections.len() == 2 && udp_flows.len() == 2,
        "64 flows did not reach both backends"
    );

    // be1 leaves the Service.
    let mut without_be1 = spec.clone();
    let be2 = topo.backend("be2").addr;
    for listener in &mut without_be1.listeners {
        listener.backends = vec![be2];
    }
    replace(&path, &without_be1.to_yaml())?;
    wait_generation(&daemon, 2, 0)?;

    let mut on_be1 = connections.remove("be1").expect("be1 connection");
    let started = Instant::now();
    let outcome = on_be1
        .write_all(b"after|")
        .map_err(anyhow::Error::from)
        .and_then(|()| client::read_echo(&mut on_be1, "after|", REPLY_TIMEOUT));
    match outcome {
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == ErrorKind::ConnectionReset) => {}
        other => bail!("the be1 connection should be reset, got {other:?}"),
    }
    // From the LB itself, at once: not after retransmissions into the void.
    ensure!(
        started.elapsed() < Duration::from_millis(900),
        "reset took {:?}",
        started.elapsed()
    );
    let stats = daemon.stats()?;
    ensure!(
        stats.drops.get("backend_removed").copied().unwrap_or(0) >= 1,
        "{:?}",
        stats.drops
    );

    let mut on_be2 = connections.remove("be2").expect("be2 connection");
    on_be2.write_all(b"still|")?;
    let text = client::read_echo(&mut on_be2, "still|", REPLY_TIMEOUT)?;
    ensure!(text.starts_with("be2 "), "{text:?}");

    let rehashed = udp_flows.remove("be1").expect("be1 flow");
    let reply = udp_exchange_on(&rehashed, udp_vip, "again")?;
    ensure!(reply.server() == "be2", "{reply:?}");
    Ok(())
}

/// How long the slow writer pauses between its two halves: long enough
/// that a daemon reloading on a create or a partial write would have done
/// so (it reacts within milliseconds). It stands for the writer, and waits
/// for nothing.
const SLOW_WRITER_PAUSE: Duration = Duration::from_millis(600);

/// The demo topology with its daemon, on a config file of the test's own.
fn demo_daemon() -> Result<(Topology, TempDir, std::path::PathBuf, Daemon)> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &config(false, 0))?;
    let daemon = topo.start_daemon(&path)?;
    Ok((topo, dir, path, daemon))
}

#[test]
fn truncating_the_config_is_refused_and_the_listeners_stay() -> Result<()> {
    let (topo, _dir, path, daemon) = demo_daemon()?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let before = daemon.config_status()?;
    ensure!(
        before.listeners > 0,
        "the demo serves listeners: {before:?}"
    );

    // `: > gateway.yaml`
    std::fs::File::create(&path)?;
    let status = poll_until(RELOAD_DEADLINE, "the empty file to be refused", || {
        let status = daemon.config_status()?;
        Ok((status.failed_reloads == 1).then_some(status))
    })?;
    ensure!(
        status.generation == before.generation
            && status.listeners == before.listeners
            && status.reloads == 0
            && status.sha256 == before.sha256,
        "the running config should stay: before {before:?}, after {status:?}"
    );
    let message = status
        .last_error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("no Gateway API or Switchyard objects")
            && message.contains("--allow-no-listeners"),
        "the refusal should say why and how to allow it, got {message:?}"
    );
    let summary = daemon.status()?.reload;
    ensure!(
        summary.last_result == "refused" && summary.failed_reloads == 1,
        "`yardctl status` should show the refusal: {summary:?}"
    );
    ensure!(
        daemon.log().contains("config reload refused"),
        "the refusal should be logged:\n{}",
        daemon.log()
    );
    let reply = switchyard_vm_tests::tcp_exchange(
        &topo.client,
        SocketAddr::from((VIP, TCP_PORT)),
        "still served",
    )?;
    ensure!(reply.echoed() == "still served", "{reply:?}");
    Ok(())
}

#[test]
fn a_config_deleted_and_written_again_slowly_is_applied_once_whole() -> Result<()> {
    let (_topo, _dir, path, daemon) = demo_daemon()?;
    let before = daemon.config_status()?;
    let next = config(true, 1);
    let (first, second) = next.split_at(next.len() / 2);

    std::fs::remove_file(&path)?;
    let mut file = std::fs::File::create(&path)?;
    file.write_all(first.as_bytes())?;
    file.flush()?;
    thread::sleep(SLOW_WRITER_PAUSE);
    file.write_all(second.as_bytes())?;
    drop(file);

    let status = poll_until(RELOAD_DEADLINE, "the whole file to be applied", || {
        let status = daemon.config_status()?;
        Ok((status.reloads + status.failed_reloads > 0).then_some(status))
    })?;
    ensure!(
        status.reloads == 1 && status.failed_reloads == 0,
        "one reload, of the whole file, expected: {status:?}"
    );
    ensure!(
        status.generation == before.generation + 1 && status.listeners == before.listeners + 1,
        "the whole file (with the spare listener) as the next generation: before {before:?}, after {status:?}"
    );
    Ok(())
}

#[test]
fn a_fifo_renamed_over_the_config_neither_hangs_the_daemon_nor_its_shutdown() -> Result<()> {
    let (_topo, dir, path, mut daemon) = demo_daemon()?;
    let fifo = dir.path().join("fifo.yaml");
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )?;
    std::fs::rename(&fifo, &path)?;

    let status = poll_until(RELOAD_DEADLINE, "the FIFO to be refused", || {
        let status = daemon.config_status()?;
        Ok((status.failed_reloads == 1).then_some(status))
    })?;
    let message = status.last_error.map(|e| e.message).unwrap_or_default();
    ensure!(
        message.contains("a FIFO (named pipe), not a regular file"),
        "the refusal should name what is there, got {message:?}"
    );
    daemon.status().context("`yardctl status` after the FIFO")?;
    // `stop` sends SIGTERM and polls for the exit within its deadline.
    let exit = daemon.stop()?;
    ensure!(exit.success(), "switchyard exited with {exit}");
    Ok(())
}
