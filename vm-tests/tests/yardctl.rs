//! End-to-end: `yardctl listeners`, `backends`, `flows` (each filter),
//! `stats` (totals, rates, and totals across a reload), `status` and
//! `drain`/`undrain`, checked against the traffic the test sends.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_proto::{
    BackendInfo, BackendsReport, DrainReport, FlowsReport, ListenersReport, StatsReport,
    StatusReport,
};
use switchyard_vm_tests::client;
use switchyard_vm_tests::config::{
    TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_LISTENER, UDP_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{CLIENT_ADDR, VIP};
use switchyard_vm_tests::{
    tcp_exchange, tcp_exchange_keep_open, udp_exchange, Daemon, GatewaySpec, TempDir, Topology,
};

/// Connections the test keeps open at least, and UDP flows (one datagram
/// and its reply each). Source ports are the kernel's, so the backends a
/// handful of connections hash to are not known in advance: the test opens
/// more, up to `MAX_TCP_CONNECTIONS`, until both backends hold one (six
/// alone all land on one backend once in 32 runs).
const TCP_CONNECTIONS: usize = 6;
const MAX_TCP_CONNECTIONS: usize = 32;
const UDP_FLOWS: usize = 5;
const DEADLINE: Duration = Duration::from_secs(10);
/// Maglev table size of a listener without a table-size policy.
const TABLE_SIZE: usize = 65_537;

/// `yardctl ARGS`, expected to be refused by the daemon (exit status 1);
/// returns its error output.
fn yardctl_error(daemon: &Daemon, args: &[&str]) -> Result<String> {
    let out = daemon.yardctl_raw(args)?;
    ensure!(
        out.status.code() == Some(1),
        "`yardctl {}` should be refused (status 1), got {:?}, printed {:?} {:?}",
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out.stderr)
}

fn listener<'a>(
    report: &'a StatsReport,
    name: &str,
) -> Result<&'a switchyard_proto::ListenerStats> {
    report
        .listeners
        .iter()
        .find(|l| l.listener == name)
        .ok_or_else(|| anyhow!("no listener {name} in {report:?}"))
}

fn backend<'a>(report: &'a BackendsReport, listener: &str, addr: &str) -> Result<&'a BackendInfo> {
    report
        .backends
        .iter()
        .find(|b| b.listener == listener && b.backend == addr)
        .ok_or_else(|| anyhow!("no backend {addr} of {listener} in {report:?}"))
}

#[test]
fn yardctl_reports_match_the_traffic_sent_and_drain_steers_new_flows_only() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let spec = GatewaySpec::demo();
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&path)?;
    let tcp_id = spec.listener_id(TCP_LISTENER);
    let udp_id = spec.listener_id(UDP_LISTENER);
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));
    let udp_vip = SocketAddr::from((VIP, UDP_PORT));
    let be = |name: &str, port: u16| format!("{}:{port}", topo.backend(name).addr);

    // Known traffic: connections kept open, one datagram per UDP flow.
    let mut connections: Vec<(TcpStream, String)> = Vec::new();
    let reached = |connections: &[(TcpStream, String)], name: &str| {
        connections.iter().any(|(_, server)| server == name)
    };
    while connections.len() < TCP_CONNECTIONS
        || !(reached(&connections, "be1") && reached(&connections, "be2"))
    {
        let i = connections.len();
        ensure!(
            i < MAX_TCP_CONNECTIONS,
            "{i} connections never reached both backends"
        );
        let (stream, reply) = tcp_exchange_keep_open(&topo.client, tcp_vip, &format!("c{i}|"))?;
        connections.push((stream, reply.server().to_owned()));
    }
    let mut udp_bytes = 0u64;
    let mut udp_on: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..UDP_FLOWS {
        let payload = format!("datagram {i}");
        let reply = udp_exchange(&topo.client, udp_vip, &payload)?;
        // Ethernet, IPv4 and UDP headers around each payload.
        udp_bytes += 42 * 2 + (payload.len() + reply.text.len()) as u64;
        *udp_on.entry(reply.server().to_owned()).or_default() += 1;
    }
    let mut tcp_on: BTreeMap<String, u64> = BTreeMap::new();
    for (_, server) in &connections {
        *tcp_on.entry(server.clone()).or_default() += 1;
    }

    // stats: flows exactly, packets within what a handshake, one exchange
    // and its ACKs can take.
    let stats: StatsReport = daemon.yardctl_as(&["stats"])?;
    let tcp = listener(&stats, &tcp_id)?;
    let n = connections.len() as u64;
    ensure!(tcp.counters.flows == n, "{tcp:?}");
    ensure!((5 * n..=10 * n).contains(&tcp.counters.packets), "{tcp:?}");
    let udp = listener(&stats, &udp_id)?;
    let m = UDP_FLOWS as u64;
    ensure!(
        udp.counters.flows == m && udp.counters.packets == 2 * m,
        "{udp:?}"
    );
    // Frames below the Ethernet minimum may arrive padded.
    ensure!(
        (udp_bytes..=udp_bytes + 2 * m * 18).contains(&udp.counters.bytes),
        "{udp:?}, sent {udp_bytes} bytes of frames"
    );
    let backend_flows: u64 = stats
        .backends
        .iter()
        .filter(|b| b.listener == tcp_id)
        .map(|b| b.counters.flows)
        .sum();
    ensure!(backend_flows == n, "{:?}", stats.backends);
    ensure!(stats.workers.len() == 1 && stats.workers[0].flows == n + m);

    // listeners: origin, table, active flows.
    let listeners: ListenersReport = daemon.yardctl_as(&["listeners"])?;
    ensure!(listeners.listeners.len() == 2, "{listeners:?}");
    for l in &listeners.listeners {
        let (active, route, port) = if l.listener == tcp_id {
            (n, "demo/echo-tcp", TCP_PORT)
        } else {
            (m, "demo/echo-udp", UDP_PORT)
        };
        ensure!(
            l.active_flows == active
                && l.route == route
                && l.listener_port == port
                && l.backends == 2
                && l.table_size == TABLE_SIZE,
            "{l:?}"
        );
    }

    // backends: weights, slots, state, active flows per backend as the
    // echo servers saw them.
    let backends: BackendsReport = daemon.yardctl_as(&["backends"])?;
    ensure!(backends.backends.len() == 4, "{backends:?}");
    for (id, on, port) in [
        (&tcp_id, &tcp_on, TCP_TARGET_PORT),
        (&udp_id, &udp_on, UDP_TARGET_PORT),
    ] {
        let mut slots = 0;
        for name in ["be1", "be2"] {
            let b = backend(&backends, id, &be(name, port))?;
            ensure!(
                b.state == "ready"
                    && b.service == "demo/echo"
                    && b.group_weight == 1
                    && (b.effective_weight - 0.5).abs() < 1e-9
                    && b.active_flows == on.get(name).copied().unwrap_or(0),
                "{b:?}, servers saw {on:?}"
            );
            slots += b.slots;
        }
        ensure!(slots == TABLE_SIZE, "{backends:?}");
    }
    let only: BackendsReport = daemon.yardctl_as(&["backends", "--listener", &udp_id])?;
    ensure!(
        only.backends.len() == 2 && only.backends.iter().all(|b| b.listener == udp_id),
        "{only:?}"
    );

    // flows: each filter.
    let flows = |args: &[&str]| -> Result<FlowsReport> {
        let mut all = vec!["flows"];
        all.extend(args);
        daemon.yardctl_as(&all)
    };
    let total = (n + m) as usize;
    ensure!(flows(&[])?.flows.len() == total);
    let tcp_flows = flows(&["--listener", &tcp_id])?;
    ensure!(
        tcp_flows.flows.len() == connections.len()
            && tcp_flows.flows.iter().all(|f| f.protocol == "TCP"),
        "{tcp_flows:?}"
    );
    let client_cidr = format!("{CLIENT_ADDR}/32");
    ensure!(flows(&["--client", &client_cidr])?.flows.len() == total);
    ensure!(flows(&["--client", "198.18.9.0/24"])?.flows.is_empty());
    let be1_tcp = be("be1", TCP_TARGET_PORT);
    let on_be1 = flows(&["--backend", &be1_tcp])?;
    ensure!(
        on_be1.flows.len() as u64 == tcp_on.get("be1").copied().unwrap_or(0)
            && on_be1.flows.iter().all(|f| f.backend == be1_tcp),
        "{on_be1:?}"
    );
    let top = flows(&["--sort", "bytes", "--limit", "2"])?;
    ensure!(
        top.flows.len() == 2 && top.flows[0].bytes >= top.flows[1].bytes,
        "{top:?}"
    );
    let all_flows = flows(&[])?;
    let largest = all_flows.flows.iter().map(|f| f.bytes).max().unwrap_or(0);
    ensure!(top.flows[0].bytes == largest, "{top:?}");
    let error = yardctl_error(&daemon, &["flows", "--client", "nope"])?;
    ensure!(error.contains("--client"), "{error}");

    // stats with rates: the JSON is the stats plus the rates.
    let sampled: serde_json::Value = daemon.yardctl_as(&["stats", "--interval", "0.3"])?;
    ensure!(
        sampled["listeners"].as_array().map(Vec::len) == Some(2)
            && sampled["rates"]["listeners"].as_array().map(Vec::len) == Some(2)
            && sampled["interval_secs"].as_f64().is_some_and(|s| s >= 0.3),
        "{sampled}"
    );

    // --watch: one JSON object per interval until stopped.
    let mut watch = std::process::Command::new(switchyard_vm_tests::process::yardctl_bin()?)
        .arg("--control-socket")
        .arg(daemon.control_socket())
        .args(["stats", "--watch", "--interval", "0.2", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let lines: Result<Vec<serde_json::Value>> = {
        let mut reader = std::io::BufReader::new(watch.stdout.take().context("stdout")?);
        (0..2)
            .map(|_| {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut reader, &mut line)?;
                serde_json::from_str(&line).with_context(|| format!("watch printed {line:?}"))
            })
            .collect()
    };
    watch.kill()?;
    watch.wait()?;
    for line in lines? {
        ensure!(
            line["rates"]["workers"].as_array().map(Vec::len) == Some(1),
            "{line}"
        );
    }

    // Counters survive a reload.
    daemon.signal(Signal::SIGHUP)?;
    poll_until(DEADLINE, "the SIGHUP reload", || {
        Ok((daemon.config_status()?.reloads == 1).then_some(()))
    })?;
    let reloaded: StatsReport = daemon.yardctl_as(&["stats"])?;
    let after = listener(&reloaded, &tcp_id)?;
    ensure!(
        after.counters.flows == n && after.counters.packets >= tcp.counters.packets,
        "before the reload {tcp:?}, after {after:?}"
    );
    ensure!(listener(&reloaded, &udp_id)?.counters.flows == m);
    let status: StatusReport = daemon.yardctl_as(&["status"])?;
    ensure!(
        status.reload.reloads == 1 && status.reload.last_error.is_none(),
        "{status:?}"
    );

    // Drain be1 on the TCP listener: new connections avoid it, an open one
    // to it keeps working.
    let error = yardctl_error(&daemon, &["drain", "198.18.2.99:8080"])?;
    ensure!(error.contains("no listener has backend"), "{error}");
    let (open_on_be1, _) = connections
        .iter_mut()
        .find(|(_, server)| server == "be1")
        .context("no kept connection reached be1")?;
    let drained: DrainReport = daemon.yardctl_as(&["drain", &be1_tcp, "--listener", &tcp_id])?;
    ensure!(drained.drained && drained.changed && drained.listeners == [tcp_id.clone()]);
    // Again: nothing changes, no generation is published.
    let again: DrainReport = daemon.yardctl_as(&["drain", &be1_tcp, "--listener", &tcp_id])?;
    ensure!(
        !again.changed && again.generation == drained.generation,
        "first {drained:?}, again {again:?}"
    );
    let status: StatusReport = daemon.yardctl_as(&["status"])?;
    let config = daemon.config_status()?;
    ensure!(
        status.config_generation == drained.generation
            && config.generation == drained.generation
            && status.reload.file_generation == config.file_generation,
        "status and config status disagree: {status:?} {config:?}"
    );
    let backends: BackendsReport = daemon.yardctl_as(&["backends"])?;
    let b = backend(&backends, &tcp_id, &be1_tcp)?;
    ensure!(
        b.state == "draining" && b.slots == 0 && b.effective_weight == 0.0,
        "{b:?}"
    );
    let other = backend(&backends, &tcp_id, &be("be2", TCP_TARGET_PORT))?;
    ensure!(other.slots == TABLE_SIZE, "{other:?}");
    ensure!(
        backend(&backends, &udp_id, &be("be1", UDP_TARGET_PORT))?.state == "ready",
        "only the TCP listener is drained"
    );
    for i in 0..10 {
        let reply = tcp_exchange(&topo.client, tcp_vip, &format!("new {i}"))?;
        ensure!(reply.server() == "be2", "a new flow reached {reply:?}");
    }
    let text = client::echo(open_on_be1, "still there|", DEADLINE)?;
    ensure!(text.starts_with("be1 "), "{text:?}");

    // Drains survive a reload.
    daemon.signal(Signal::SIGHUP)?;
    poll_until(DEADLINE, "the second SIGHUP reload", || {
        Ok((daemon.config_status()?.reloads == 2).then_some(()))
    })?;
    let backends: BackendsReport = daemon.yardctl_as(&["backends", "--listener", &tcp_id])?;
    ensure!(
        backend(&backends, &tcp_id, &be1_tcp)?.state == "draining",
        "{backends:?}"
    );

    // Undrain: be1 takes new flows again.
    let undrained: DrainReport = daemon.yardctl_as(&["undrain", &be1_tcp])?;
    ensure!(!undrained.drained);
    let backends: BackendsReport = daemon.yardctl_as(&["backends", "--listener", &tcp_id])?;
    ensure!(
        backends
            .backends
            .iter()
            .all(|b| b.state == "ready" && b.slots > 0),
        "{backends:?}"
    );
    let mut reached_be1 = false;
    for i in 0..40 {
        if tcp_exchange(&topo.client, tcp_vip, &format!("again {i}"))?.server() == "be1" {
            reached_be1 = true;
            break;
        }
    }
    ensure!(
        reached_be1,
        "40 new connections after undrain all went to be2"
    );
    let error = yardctl_error(&daemon, &["undrain", &be1_tcp])?;
    ensure!(error.contains("not drained"), "{error}");
    Ok(())
}

#[test]
fn yardctl_without_a_daemon_names_the_socket_and_what_to_do() -> Result<()> {
    let dir = TempDir::new("no-daemon")?;
    let socket = dir.path().join("control.sock");
    let out = switchyard_vm_tests::process::run_with_timeout(
        std::process::Command::new(switchyard_vm_tests::process::yardctl_bin()?)
            .arg("--control-socket")
            .arg(&socket)
            .arg("listeners"),
        DEADLINE,
    )?;
    ensure!(!out.status.success());
    ensure!(
        out.stderr.contains(&socket.display().to_string())
            && out.stderr.contains("switchyard run")
            && out.stderr.contains("--control-socket"),
        "{}",
        out.stderr
    );
    Ok(())
}
