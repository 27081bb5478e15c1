//! End-to-end: the release `switchyard` daemon NATs real client sockets to
//! real backend sockets across network namespaces.
//!
//! Every test builds its own topology, runs the demo Gateway (demo/edge at
//! 198.18.100.10: TCP 80 -> backends :8080, UDP 53 -> backends :5353) and
//! tears everything down through guards. Needs root and the release
//! binaries; `make test` provides both.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard_proto::{FlowInfo, ListenerStats, StatsReport};
use switchyard_vm_tests::client::pin_current_thread;
use switchyard_vm_tests::config::{
    TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_LISTENER, UDP_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{CLIENT_ADDR, LB_CLIENT_SIDE_ADDR, VIP};
use switchyard_vm_tests::{
    tcp_exchange, tcp_exchange_keep_open, udp_exchange, xdp_attached, Daemon, DaemonOptions,
    EchoPair, GatewaySpec, Netns, Reply, TcpEchoServer, TempDir, Topology,
};

/// A topology with echo servers on both backends and the daemon running the
/// demo Gateway. Fields drop in order: the daemon stops before the servers,
/// and the namespaces go last.
struct Lab {
    daemon: Daemon,
    servers: Vec<EchoPair>,
    spec: GatewaySpec,
    _dir: TempDir,
    topo: Topology,
}

impl Lab {
    fn start(topo: Topology) -> Result<Lab> {
        Self::start_with(topo, "")
    }

    /// Like `start`, with `extra` YAML documents appended to the demo config.
    fn start_with(topo: Topology, extra: &str) -> Result<Lab> {
        let spec = GatewaySpec::demo();
        let dir = TempDir::new("config")?;
        let mut yaml = spec.to_yaml();
        if !extra.is_empty() {
            yaml.push_str("\n---\n");
            yaml.push_str(extra);
        }
        let config = dir.write("gateway.yaml", &yaml)?;
        let servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
        let daemon = topo.start_daemon(&config)?;
        Ok(Lab {
            daemon,
            servers,
            spec,
            _dir: dir,
            topo,
        })
    }

    fn client(&self) -> &Netns {
        &self.topo.client
    }

    /// The echo servers of the backend named `name`.
    fn servers_of(&self, name: &str) -> &EchoPair {
        self.servers
            .iter()
            .find(|p| p.tcp.name() == name)
            .unwrap_or_else(|| panic!("no servers for {name}"))
    }

    /// Address of the backend named `name`.
    fn backend_addr(&self, name: &str) -> IpAddr {
        IpAddr::V4(self.topo.backend(name).addr)
    }
}

fn vip_tcp() -> SocketAddr {
    SocketAddr::from((VIP, TCP_PORT))
}

fn vip_udp() -> SocketAddr {
    SocketAddr::from((VIP, UDP_PORT))
}

/// Asserts `reply` is one of the backends echoing `payload`, and returns
/// that backend's name.
fn answered_by(reply: &Reply, payload: &str) -> String {
    let server = reply.server().to_owned();
    assert!(
        server == "be1" || server == "be2",
        "reply {:?} to {payload:?} is not from a backend",
        reply.text
    );
    assert_eq!(
        reply.text,
        format!("{server} {payload}"),
        "reply from {server}"
    );
    server
}

/// Runs `count` TCP exchanges with the VIP from `threads` client threads at
/// once, thread t pinned to CPU t (so, in a multi-queue topology, loading
/// every LB queue); fails listing every exchange that failed.
fn many_tcp_exchanges(
    client: &Netns,
    count: usize,
    threads: usize,
) -> Result<Vec<(String, Reply)>> {
    let results: Vec<Result<(String, Reply)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    if let Err(e) = pin_current_thread(t as u32) {
                        return vec![Err(e)];
                    }
                    (t..count)
                        .step_by(threads)
                        .map(|i| {
                            let payload = format!("connection {i}");
                            tcp_exchange(client, vip_tcp(), &payload).map(|r| (payload, r))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread panicked"))
            .collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    if !failures.is_empty() {
        bail!(
            "{} of {count} TCP connections through {} failed:\n  {}",
            failures.len(),
            vip_tcp(),
            failures.join("\n  ")
        );
    }
    Ok(results.into_iter().map(Result::unwrap).collect())
}

fn per_backend(replies: &[(String, Reply)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (payload, reply) in replies {
        *counts.entry(answered_by(reply, payload)).or_insert(0) += 1;
    }
    counts
}

#[test]
fn tcp_through_vip_reaches_backend_on_translated_port() -> Result<()> {
    let lab = Lab::start(Topology::single_arm(1)?)?;
    let reply = tcp_exchange(lab.client(), vip_tcp(), "hello")?;
    let backend = answered_by(&reply, "hello");
    assert_eq!(reply.local.ip(), CLIENT_ADDR);

    // The backend listens on 8080 only, so answering at all shows the port
    // was translated; its accepted peer shows the client was not.
    let peers = lab.servers_of(&backend).tcp.peers();
    assert_eq!(
        peers,
        vec![reply.local],
        "{backend} should have seen exactly the client's socket"
    );
    Ok(())
}

#[test]
fn udp_request_response_through_vip() -> Result<()> {
    let lab = Lab::start(Topology::single_arm(1)?)?;
    let reply = udp_exchange(lab.client(), vip_udp(), "query")?;
    assert_eq!(
        reply.from,
        vip_udp(),
        "the reply must come from the VIP, not the backend"
    );
    let backend = answered_by(&reply, "query");
    let peers = lab.servers_of(&backend).udp.peers();
    assert_eq!(
        peers,
        vec![reply.local],
        "{backend} should have seen exactly the client's socket"
    );
    Ok(())
}

#[test]
fn fifty_tcp_connections_reach_both_backends() -> Result<()> {
    let lab = Lab::start(Topology::single_arm(1)?)?;
    let replies = many_tcp_exchanges(lab.client(), 50, 5)?;
    let counts = per_backend(&replies);
    assert_eq!(replies.len(), 50);
    assert!(
        counts.get("be1").copied().unwrap_or(0) > 0 && counts.get("be2").copied().unwrap_or(0) > 0,
        "50 client ports should spread over both backends, got {counts:?}"
    );
    for (name, n) in &counts {
        assert_eq!(
            lab.servers_of(name).tcp.peers().len(),
            *n,
            "{name} accepted count"
        );
    }
    Ok(())
}

#[test]
fn lb_node_own_address_still_works_while_attached() -> Result<()> {
    let lab = Lab::start(Topology::single_arm(1)?)?;
    let own = SocketAddr::from((LB_CLIENT_SIDE_ADDR, 2222));
    let _node_server = TcpEchoServer::start_on(&lab.topo.lb, "lb", own)?;
    assert!(
        xdp_attached(&lab.topo.lb, "eth0")?,
        "switchyard should have attached XDP to eth0"
    );

    let reply = tcp_exchange(lab.client(), vip_tcp(), "to the vip")?;
    answered_by(&reply, "to the vip");
    let reply = tcp_exchange(lab.client(), own, "to the node")?;
    assert_eq!(reply.text, "lb to the node");
    Ok(())
}

#[test]
fn after_daemon_stops_node_traffic_works_and_no_xdp_left() -> Result<()> {
    let mut lab = Lab::start(Topology::single_arm(1)?)?;
    let own = SocketAddr::from((LB_CLIENT_SIDE_ADDR, 2222));
    let _node_server = TcpEchoServer::start_on(&lab.topo.lb, "lb", own)?;
    answered_by(&tcp_exchange(lab.client(), vip_tcp(), "before")?, "before");
    assert_eq!(
        lab.topo.lb_interfaces_with_xdp()?,
        ["eth0"],
        "attached while running"
    );

    let status = lab.daemon.stop()?;
    assert!(
        status.success(),
        "switchyard should exit 0 on SIGTERM, got {status}\n{}",
        lab.daemon.log()
    );
    let left = lab.topo.lb_interfaces_with_xdp()?;
    assert!(left.is_empty(), "XDP still attached after exit on {left:?}");

    let reply = tcp_exchange(lab.client(), own, "after")?;
    assert_eq!(reply.text, "lb after");
    Ok(())
}

#[test]
fn after_daemon_is_killed_node_traffic_works_and_no_xdp_left() -> Result<()> {
    let mut lab = Lab::start(Topology::single_arm(1)?)?;
    let own = SocketAddr::from((LB_CLIENT_SIDE_ADDR, 2222));
    let _node_server = TcpEchoServer::start_on(&lab.topo.lb, "lb", own)?;
    answered_by(&tcp_exchange(lab.client(), vip_tcp(), "before")?, "before");

    let status = lab.daemon.kill()?;
    assert!(!status.success(), "SIGKILL cannot be a clean exit");
    // The program hangs off a bpf_link whose only fd died with the process,
    // so the kernel detaches it without any help from Switchyard.
    poll_until(Duration::from_secs(5), "XDP to be detached", || {
        Ok(lab.topo.lb_interfaces_with_xdp()?.is_empty().then_some(()))
    })?;
    let reply = tcp_exchange(lab.client(), own, "after a crash")?;
    assert_eq!(reply.text, "lb after a crash");
    Ok(())
}

#[test]
fn two_arm_topology_forwards_tcp_and_udp() -> Result<()> {
    let mut lab = Lab::start(Topology::two_arm(1)?)?;
    let reply = tcp_exchange(lab.client(), vip_tcp(), "over two arms")?;
    let backend = answered_by(&reply, "over two arms");
    assert_eq!(lab.servers_of(&backend).tcp.peers(), vec![reply.local]);

    let reply = udp_exchange(lab.client(), vip_udp(), "datagram")?;
    assert_eq!(reply.from, vip_udp(), "the reply must come from the VIP");
    let backend = answered_by(&reply, "datagram");
    assert_eq!(lab.servers_of(&backend).udp.peers(), vec![reply.local]);

    assert_eq!(
        lab.topo.lb_interfaces_with_xdp()?,
        ["eth0", "eth1"],
        "attached while running"
    );
    let status = lab.daemon.stop()?;
    assert!(
        status.success(),
        "switchyard should exit 0 on SIGTERM, got {status}"
    );
    let left = lab.topo.lb_interfaces_with_xdp()?;
    assert!(left.is_empty(), "XDP still attached after exit on {left:?}");
    Ok(())
}

fn listener<'a>(stats: &'a StatsReport, id: &str) -> &'a ListenerStats {
    stats
        .listeners
        .iter()
        .find(|l| l.listener == id)
        .unwrap_or_else(|| panic!("no listener {id} in stats {stats:#?}"))
}

fn flow_for(flows: &[FlowInfo], client: SocketAddr) -> Option<&FlowInfo> {
    flows.iter().find(|f| f.client == client.to_string())
}

#[test]
fn stats_and_flows_count_what_was_sent() -> Result<()> {
    const CLOSED_TCP: usize = 20;
    const OPEN_TCP: usize = 3;
    const UDP: usize = 10;
    let lab = Lab::start(Topology::single_arm(1)?)?;
    let tcp_id = lab.spec.listener_id(TCP_LISTENER);
    let udp_id = lab.spec.listener_id(UDP_LISTENER);

    let closed = many_tcp_exchanges(lab.client(), CLOSED_TCP, 4)?;
    let mut open = Vec::new();
    for i in 0..OPEN_TCP {
        let payload = format!("open {i}");
        let (stream, reply) = tcp_exchange_keep_open(lab.client(), vip_tcp(), &payload)?;
        let backend = answered_by(&reply, &payload);
        open.push((stream, reply, backend));
    }
    let mut udp = Vec::new();
    let mut udp_payload_bytes = 0u64;
    for i in 0..UDP {
        let payload = format!("datagram {i}");
        let reply = udp_exchange(lab.client(), vip_udp(), &payload)?;
        assert_eq!(reply.from, vip_udp());
        let backend = answered_by(&reply, &payload);
        udp_payload_bytes += (payload.len() + reply.text.len()) as u64;
        udp.push((reply, backend));
    }

    // Counters may be gathered from the workers asynchronously: wait until
    // the UDP listener has seen every datagram, then check everything.
    let tcp_flows_min = (CLOSED_TCP + OPEN_TCP) as u64;
    let mut last = None;
    let settled = poll_until(
        std::time::Duration::from_secs(5),
        "stats to count all traffic",
        || {
            let stats = lab.daemon.stats()?;
            let udp_l = listener(&stats, &udp_id);
            let tcp_l = listener(&stats, &tcp_id);
            let done =
                udp_l.counters.packets >= 2 * UDP as u64 && tcp_l.counters.flows >= tcp_flows_min;
            last = Some(stats.clone());
            Ok(done.then_some(stats))
        },
    );
    let stats = match settled {
        Ok(stats) => stats,
        Err(e) => last.with_context(|| format!("{e:#}"))?,
    };
    let shown = serde_json::to_string_pretty(&stats)?;

    let tcp_l = listener(&stats, &tcp_id);
    assert_eq!(tcp_l.protocol.to_uppercase(), "TCP", "{shown}");
    assert_eq!(tcp_l.vip, vip_tcp().to_string(), "{shown}");
    assert!(
        tcp_l.counters.flows >= tcp_flows_min,
        "TCP flows < {tcp_flows_min}:\n{shown}"
    );
    // Each connection has at least a SYN, a SYN-ACK, a request and a reply.
    assert!(
        tcp_l.counters.packets >= 4 * tcp_flows_min,
        "TCP packets too few:\n{shown}"
    );

    let udp_l = listener(&stats, &udp_id);
    assert_eq!(udp_l.protocol.to_uppercase(), "UDP", "{shown}");
    assert_eq!(udp_l.vip, vip_udp().to_string(), "{shown}");
    // One datagram per fresh source port: one flow and two packets each.
    assert_eq!(udp_l.counters.flows, UDP as u64, "UDP flows:\n{shown}");
    assert_eq!(
        udp_l.counters.packets,
        2 * UDP as u64,
        "UDP packets (both directions):\n{shown}"
    );
    assert!(
        udp_l.counters.bytes >= udp_payload_bytes,
        "UDP bytes < payload bytes:\n{shown}"
    );

    for (id, target, listener_stats) in [
        (&tcp_id, TCP_TARGET_PORT, tcp_l),
        (&udp_id, UDP_TARGET_PORT, udp_l),
    ] {
        let backends: Vec<_> = stats
            .backends
            .iter()
            .filter(|b| &b.listener == id)
            .collect();
        let flows: u64 = backends.iter().map(|b| b.counters.flows).sum();
        assert_eq!(
            flows, listener_stats.counters.flows,
            "{id}: backend flows sum:\n{shown}"
        );
        for b in &backends {
            let addr: SocketAddr = b
                .backend
                .parse()
                .with_context(|| format!("backend {:?}", b.backend))?;
            assert_eq!(addr.port(), target, "{id}: backend {}", b.backend);
            assert!(
                lab.topo
                    .backends
                    .iter()
                    .any(|be| IpAddr::V4(be.addr) == addr.ip()),
                "{}",
                b.backend
            );
        }
    }
    // Each datagram is its own flow, so per backend the daemon's flow count
    // is exactly what that backend's server received.
    for be in &lab.topo.backends {
        let want = format!("{}:{UDP_TARGET_PORT}", be.addr);
        let counted = stats
            .backends
            .iter()
            .find(|b| b.listener == udp_id && b.backend == want)
            .map_or(0, |b| b.counters.flows);
        let received = lab.servers_of(&be.name).udp.peers().len() as u64;
        assert_eq!(
            counted, received,
            "UDP flows to {want} vs datagrams it received:\n{shown}"
        );
    }

    let flows = lab.daemon.flows()?.flows;
    let shown = serde_json::to_string_pretty(&flows)?;
    for (_, reply, backend) in &open {
        let flow = flow_for(&flows, reply.local).unwrap_or_else(|| {
            panic!(
                "open connection {} not listed in flows:\n{shown}",
                reply.local
            )
        });
        assert_eq!(flow.protocol.to_uppercase(), "TCP", "{shown}");
        assert_eq!(flow.vip, vip_tcp().to_string(), "{shown}");
        assert_eq!(
            flow.backend,
            format!("{}:{TCP_TARGET_PORT}", lab.backend_addr(backend)),
            "{shown}"
        );
        assert_eq!(flow.listener, tcp_id, "{shown}");
        assert!(flow.packets >= 4, "flow {} packets:\n{shown}", reply.local);
    }
    for (reply, backend) in &udp {
        let flow = flow_for(&flows, reply.local)
            .unwrap_or_else(|| panic!("UDP flow {} not listed in flows:\n{shown}", reply.local));
        assert_eq!(flow.protocol.to_uppercase(), "UDP", "{shown}");
        assert_eq!(flow.vip, vip_udp().to_string(), "{shown}");
        assert_eq!(
            flow.backend,
            format!("{}:{UDP_TARGET_PORT}", lab.backend_addr(backend)),
            "{shown}"
        );
        assert_eq!(flow.packets, 2, "flow {} packets:\n{shown}", reply.local);
    }
    for flow in flows.iter().filter(|f| f.vip == vip_tcp().to_string()) {
        let client: SocketAddr = flow
            .client
            .parse()
            .with_context(|| format!("client {:?}", flow.client))?;
        assert_eq!(client.ip(), CLIENT_ADDR, "{shown}");
        let backend: SocketAddr = flow.backend.parse()?;
        assert_eq!(backend.port(), TCP_TARGET_PORT, "{shown}");
        assert!(
            lab.topo
                .backends
                .iter()
                .any(|be| IpAddr::V4(be.addr) == backend.ip()),
            "{shown}"
        );
    }
    drop(closed);
    drop(open);
    Ok(())
}

#[test]
fn multi_queue() -> Result<()> {
    let lab = Lab::start(Topology::single_arm(2)?)?;
    let status = lab.daemon.status()?;
    assert_eq!(status.workers.len(), 2, "one worker per queue: {status:#?}");

    let replies = many_tcp_exchanges(lab.client(), 50, 10)?;
    let counts = per_backend(&replies);
    assert_eq!(replies.len(), 50);

    // Client threads ran on every CPU and the topology maps CPU to queue, so
    // both workers must have had a share; otherwise this test would pass on
    // one queue alone.
    let stats = lab.daemon.stats()?;
    let rx: Vec<(u32, u64)> = stats
        .workers
        .iter()
        .map(|w| (w.queue, w.rx_packets))
        .collect();
    let flows = lab.daemon.flows()?.flows;
    let both = flows.iter().filter(|f| f.workers.len() > 1).count();
    eprintln!(
        "replies per backend {counts:?}; rx packets per worker queue {rx:?}; \
         {both} of {} listed flows seen by both workers",
        flows.len()
    );
    assert_eq!(rx.len(), 2, "{stats:#?}");
    assert!(
        rx.iter().all(|(_, n)| *n > 0),
        "a queue saw no traffic: {rx:?}"
    );

    // Active flows across two workers: the 50 closed connections are not
    // active, and a connection whose entries sit on both workers counts
    // once. Connections are kept open from both CPUs, so both queues hold
    // some.
    const OPEN: usize = 6;
    let open: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..OPEN)
            .map(|i| {
                let client = lab.client();
                scope.spawn(move || -> Result<std::net::TcpStream> {
                    pin_current_thread(i as u32)?;
                    Ok(tcp_exchange_keep_open(client, vip_tcp(), &format!("open {i}|"))?.0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    let tcp_id = lab.spec.listener_id(TCP_LISTENER);
    let listeners = lab.daemon.yardctl_json("listeners")?;
    let active = listeners["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["listener"] == tcp_id.as_str()))
        .and_then(|l| l["active_flows"].as_u64());
    assert_eq!(active, Some(OPEN as u64), "{listeners:#}");
    let backends = lab.daemon.yardctl_json("backends")?;
    let on_backends: u64 = backends["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["listener"] == tcp_id.as_str())
        .filter_map(|b| b["active_flows"].as_u64())
        .sum();
    assert_eq!(on_backends, OPEN as u64, "{backends:#}");

    // A limited, sorted `flows` counts both directions of each row in full,
    // wherever the halves sit: the rows equal those of the whole table.
    let all = lab.daemon.flows()?.flows;
    let out = lab
        .daemon
        .yardctl_raw(&["flows", "--sort", "packets", "--limit", "4", "-o", "json"])?;
    assert!(out.status.success(), "{}", out.stderr);
    let top: switchyard_proto::FlowsReport = serde_json::from_str(&out.stdout)?;
    assert_eq!(top.flows.len(), 4, "{top:#?}");
    let mut most: Vec<u64> = all.iter().map(|f| f.packets).collect();
    most.sort_unstable_by(|a, b| b.cmp(a));
    for (row, packets) in top.flows.iter().zip(&most) {
        let whole = all
            .iter()
            .find(|f| f.client == row.client && f.protocol == row.protocol)
            .unwrap_or_else(|| panic!("{row:?} not in the whole table"));
        assert_eq!(
            (row.packets, row.bytes),
            (whole.packets, whole.bytes),
            "{row:?}"
        );
        assert!(
            row.packets <= *packets,
            "{row:?} beyond the largest {packets}"
        );
    }
    drop(open);
    Ok(())
}

#[test]
fn fewer_queues_than_the_interface_has_is_refused_at_start() -> Result<()> {
    // Queue 1 would meet no socket: its VIP traffic would reach the kernel
    // untranslated, so the daemon must not start.
    let topo = Topology::single_arm(2)?;
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let opts = DaemonOptions::new(topo.lb_interfaces()).queues(1);
    let Err(error) = Daemon::start(&topo.lb, &path, &opts) else {
        bail!("switchyard started with --queues 1 on an interface with 2 receive queues");
    };
    let text = format!("{error:#}");
    assert!(
        text.contains("--queues 1: eth0 has 2 receive queue(s)")
            && text.contains("ethtool -L eth0 combined 1"),
        "{text}"
    );
    assert!(!xdp_attached(&topo.lb, "eth0")?, "refused before attaching");
    Ok(())
}

#[test]
fn generated_demo_config_compiles_like_the_bundled_one() -> Result<()> {
    // The tests run a generated copy of config/examples/demo.yaml; this keeps
    // the two saying the same thing.
    let switchyard = switchyard_vm_tests::process::switchyard_bin()?;
    let dir = TempDir::new("config")?;
    let generated = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    // The bundled file ends with its health checks, which the tests add
    // only where they test them.
    let bundled_text = std::fs::read_to_string(
        switchyard_vm_tests::process::workspace_root().join("config/examples/demo.yaml"),
    )?;
    let without_checks = bundled_text
        .split("---\n# Active health checks")
        .next()
        .unwrap_or(&bundled_text);
    let bundled = dir.write("bundled.yaml", without_checks)?;
    let check = |config: &std::path::Path| -> Result<String> {
        let out = std::process::Command::new(&switchyard)
            .args(["check", "-o", "json", "--config"])
            .arg(config)
            .output()?;
        if !out.status.success() {
            bail!(
                "switchyard check {}: {}",
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    assert_eq!(check(&generated)?, check(&bundled)?);
    Ok(())
}

#[test]
fn explain_names_the_backend_the_flow_really_got() -> Result<()> {
    let lab = Lab::start(Topology::single_arm(1)?)?;
    let payload = "explain me";
    let (stream, reply) = tcp_exchange_keep_open(lab.client(), vip_tcp(), payload)?;
    let backend = answered_by(&reply, payload);
    let expected = SocketAddr::new(lab.backend_addr(&backend), TCP_TARGET_PORT).to_string();
    let client = stream.local_addr()?.to_string();
    let vip = vip_tcp().to_string();
    assert_eq!(vip, "198.18.100.10:80");

    let out = lab
        .daemon
        .yardctl_raw(&["explain", "tcp", &client, &vip, "-o", "json"])?;
    if !out.status.success() {
        bail!("yardctl explain failed ({}): {}", out.status, out.stderr);
    }
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("yardctl explain printed no JSON: {:?}", out.stdout))?;
    assert_eq!(
        report["listener"].as_str(),
        Some(lab.spec.listener_id(TCP_LISTENER).as_str()),
        "{report:#}"
    );
    assert_eq!(
        report["existing"]["backend"].as_str(),
        Some(expected.as_str()),
        "the tracked flow: {report:#}"
    );
    assert!(
        report["existing"]["packets"].as_u64().unwrap_or(0) >= 2,
        "{report:#}"
    );
    assert_eq!(
        report["new_flow"]["backend"].as_str(),
        Some(expected.as_str()),
        "the decision a new flow would get: {report:#}"
    );
    assert_eq!(report["new_flow"]["table_size"].as_u64(), Some(65_537));

    // The table form is readable too, and bad syntax never reaches the daemon.
    let table = lab.daemon.yardctl_raw(&["explain", "tcp", &client, &vip])?;
    assert!(table.status.success(), "{}", table.stderr);
    eprintln!("{}", table.stdout);
    assert!(table.stdout.contains(&expected), "{}", table.stdout);
    let bad = lab
        .daemon
        .yardctl_raw(&["explain", "tcp", "198.18.1.10", &vip])?;
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("invalid client address"),
        "{}",
        bad.stderr
    );
    drop(stream);
    Ok(())
}

/// Which backend answered each UDP flow from fixed client ports.
fn backends_chosen_for_fixed_flows(lab: &Lab, ports: std::ops::Range<u16>) -> Result<Vec<String>> {
    ports
        .map(|port| {
            let source = SocketAddr::from((CLIENT_ADDR, port));
            let socket = switchyard_vm_tests::netns::in_netns(lab.client(), move || {
                std::net::UdpSocket::bind(source)
            })??;
            let payload = format!("flow from {port}");
            Ok(answered_by(
                &switchyard_vm_tests::client::udp_exchange_on(&socket, vip_udp(), &payload)?,
                &payload,
            ))
        })
        .collect()
}

#[test]
fn two_lb_nodes_with_the_same_config_pick_the_same_backend_per_flow() -> Result<()> {
    // Different nodes, different wiring (one arm vs two), same config: a flow
    // that moves between nodes behind ECMP must keep its backend.
    let ports = 41000..41024;
    let first = {
        let lab = Lab::start(Topology::single_arm(1)?)?;
        backends_chosen_for_fixed_flows(&lab, ports.clone())?
    };
    let second = {
        let lab = Lab::start(Topology::two_arm(1)?)?;
        backends_chosen_for_fixed_flows(&lab, ports)?
    };
    assert_eq!(first, second);
    assert!(
        first.iter().any(|b| b == "be1") && first.iter().any(|b| b == "be2"),
        "24 flows should use both backends: {first:?}"
    );
    Ok(())
}

#[test]
fn client_ip_affinity_sends_every_flow_of_a_client_to_one_backend() -> Result<()> {
    const STICKY: &str = "\
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {name: sticky, namespace: demo}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: UDPRoute, name: echo-udp}
  sessionAffinity:
    type: ClientIP
    clientIP: {timeoutSeconds: 600}
";
    let lab = Lab::start_with(Topology::single_arm(1)?, STICKY)?;
    let mut backends = BTreeMap::new();
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..20 {
        let payload = format!("sticky-{i}");
        let reply = udp_exchange(lab.client(), vip_udp(), &payload)?;
        assert_eq!(reply.from, vip_udp());
        ports.insert(reply.local.port());
        *backends.entry(answered_by(&reply, &payload)).or_insert(0) += 1;
    }
    assert_eq!(ports.len(), 20, "each datagram from its own source port");
    assert_eq!(
        backends.len(),
        1,
        "one backend for the client: {backends:?}"
    );
    Ok(())
}

#[test]
fn dual_stack_service_serves_every_flow_of_the_ipv4_vip_from_its_ipv4_endpoints() -> Result<()> {
    // The Service as a cluster makes it dual-stack: beside the IPv4 slice
    // an IPv6 one (whose addresses need not exist: no IPv4 flow may reach
    // them). Kube-proxy serves each family's ClusterIP from the slices of
    // that addressType only; so must the IPv4 VIP.
    let ipv6_slice = format!(
        "apiVersion: discovery.k8s.io/v1\n\
         kind: EndpointSlice\n\
         metadata:\n  name: echo-ipv6\n  namespace: demo\n  labels:\n    kubernetes.io/service-name: echo\n\
         addressType: IPv6\n\
         endpoints:\n\
         - addresses: [\"2001:db8:2::21\"]\n\
         - addresses: [\"2001:db8:2::22\"]\n\
         ports:\n\
         - {{name: {TCP_LISTENER}, protocol: TCP, port: {TCP_TARGET_PORT}}}\n\
         - {{name: {UDP_LISTENER}, protocol: UDP, port: {UDP_TARGET_PORT}}}\n"
    );
    let lab = Lab::start_with(Topology::single_arm(1)?, &ipv6_slice)?;
    let replies = many_tcp_exchanges(lab.client(), 100, 4)?;
    let counts = per_backend(&replies);
    assert_eq!(counts.values().sum::<usize>(), 100, "{counts:?}");
    assert_eq!(counts.len(), 2, "both IPv4 backends answer: {counts:?}");

    let stats = lab.daemon.stats()?;
    let shown = serde_json::to_string_pretty(&stats)?;
    assert_eq!(
        stats.drops.get("unsupported_address_family"),
        None,
        "no flow hashed to an IPv6 endpoint:\n{shown}"
    );
    assert!(
        stats.backends.iter().all(|b| !b.backend.starts_with('[')),
        "no IPv6 backend behind the IPv4 VIP:\n{shown}"
    );
    Ok(())
}

#[test]
fn pool_allocated_gateway_answers_dns_and_serves_its_vip() -> Result<()> {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{RData, RecordType};
    use switchyard_vm_tests::dns::dns_query;
    use switchyard_vm_tests::DaemonOptions;

    // The demo Gateway without its static VIP: an IPAddress without value
    // asks its class's pool, whose lowest usable address is .33 (.32 is
    // the /28's network address).
    const POOL: &str = "\
apiVersion: switchyard.io/v1alpha1
kind: AddressPool
metadata: {name: vips}
spec: {cidrs: [198.18.100.32/28]}
---
apiVersion: switchyard.io/v1alpha1
kind: GatewayClassConfig
metadata: {name: pooled}
spec: {type: ClusterIP, addressPool: vips}
";
    let spec = GatewaySpec::demo();
    let static_vip = format!("  - type: IPAddress\n    value: {VIP}\n");
    let class = "  controllerName: switchyard.io/gateway-controller\n";
    let mut yaml = spec.to_yaml();
    assert!(yaml.contains(&static_vip) && yaml.contains(class));
    yaml = yaml.replace(&static_vip, "  - type: IPAddress\n").replace(
        class,
        &format!("{class}  parametersRef: {{group: switchyard.io, kind: GatewayClassConfig, name: pooled}}\n"),
    );
    yaml.push_str("\n---\n");
    yaml.push_str(POOL);
    let allocated: IpAddr = "198.18.100.33".parse()?;

    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &yaml)?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let dns = SocketAddr::from((LB_CLIENT_SIDE_ADDR, 53));
    let opts = DaemonOptions::new(topo.lb_interfaces())
        .queues(topo.queues)
        .arg("--dns-listen")
        .arg(dns.to_string());
    let _daemon = Daemon::start(&topo.lb, &config, &opts)?;

    let answer = dns_query(
        &topo.client,
        dns,
        "edge.demo.gw.cluster.local.",
        RecordType::A,
    )?;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    let addresses: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    assert_eq!(addresses, [allocated]);

    let missing = dns_query(
        &topo.client,
        dns,
        "nope.demo.gw.cluster.local.",
        RecordType::A,
    )?;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);

    // The name's address carries traffic to the backends.
    for i in 0..8 {
        let payload = format!("via-dns-{i}");
        let reply = tcp_exchange(
            &topo.client,
            SocketAddr::new(addresses[0], TCP_PORT),
            &payload,
        )?;
        answered_by(&reply, &payload);
    }
    Ok(())
}

#[test]
fn node_port_gateway_serves_its_listeners_on_the_node_address() -> Result<()> {
    use switchyard_vm_tests::DaemonOptions;

    // The demo Gateway in a NodePort class without a pool: no VIP, each
    // listener on the LB's own client-side address at a node port, TCP
    // and UDP numbered separately from the start of the range.
    let spec = GatewaySpec::demo();
    let static_vip = format!("  addresses:\n  - type: IPAddress\n    value: {VIP}\n");
    let class = "  controllerName: switchyard.io/gateway-controller\n";
    let mut yaml = spec.to_yaml();
    assert!(yaml.contains(&static_vip) && yaml.contains(class));
    yaml = yaml.replace(&static_vip, "").replace(
        class,
        &format!(
            "{class}  parametersRef: {{group: switchyard.io, kind: GatewayClassConfig, name: nodes}}\n"
        ),
    );
    yaml.push_str(&format!(
        "\n---\napiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\n\
         metadata: {{name: nodes}}\n\
         spec: {{type: NodePort, nodeAddresses: [{LB_CLIENT_SIDE_ADDR}], nodePortRange: 30080-30099}}\n"
    ));

    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &yaml)?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let opts = DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues);
    let _daemon = Daemon::start(&topo.lb, &config, &opts)?;

    let node_port = SocketAddr::from((LB_CLIENT_SIDE_ADDR, 30080));
    for i in 0..4 {
        let payload = format!("node-port-{i}");
        let reply = tcp_exchange(&topo.client, node_port, &payload)?;
        answered_by(&reply, &payload);
        let reply = udp_exchange(&topo.client, node_port, &payload)?;
        assert_eq!(reply.from, node_port, "UDP replies come from the node port");
        answered_by(&reply, &payload);
    }
    Ok(())
}
