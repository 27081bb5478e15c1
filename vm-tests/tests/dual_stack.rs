//! End to end over IPv6 and dual stack: the release daemon forwards real
//! client sockets to real backend sockets through an IPv6 VIP, a
//! dual-stack Gateway (one IPv4 and one IPv6 address) serves each family
//! from its own family's endpoints, and datagrams larger than the MTU
//! cross it in fragments, both families.
//!
//! Every test builds its own topology with both families' addresses
//! (documentation prefixes, only inside its namespaces) and tears
//! everything down through guards. Needs root and the release binaries.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use switchyard_vm_tests::client::{
    pin_current_thread, tcp_exchange_keep_open, udp_exchange_on, udp_socket_towards,
};
use switchyard_vm_tests::config::{
    TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::topology::{BACKENDS6, CLIENT_ADDR6, VIP, VIP6};
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, Daemon, DaemonOptions, EchoPair, GatewaySpec, Netns, Reply,
    TempDir, Topology,
};

/// A dual-stack lab: echo servers on both backends' IPv4 and IPv6
/// addresses, the daemon running the demo Gateway with an IPv6 address
/// beside its IPv4 one. Fields drop in order: daemon, servers, namespaces.
struct Lab {
    daemon: Daemon,
    _servers: Vec<EchoPair>,
    spec: GatewaySpec,
    _dir: TempDir,
    topo: Topology,
}

impl Lab {
    fn start(queues: u32, daemon_args: &[&str]) -> Result<Lab> {
        Lab::start_on(Topology::single_arm(queues)?, daemon_args)
    }

    /// `start` on `topo` (its IPv6 side added here).
    fn start_on(topo: Topology, daemon_args: &[&str]) -> Result<Lab> {
        let queues = topo.queues;
        let topo = topo.with_ipv6()?;
        let spec = GatewaySpec::demo_dual_stack();
        let dir = TempDir::new("config")?;
        let config = dir.write("gateway.yaml", &spec.to_yaml())?;
        let servers = topo.start_backends_dual_stack(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
        let mut opts = DaemonOptions::new(topo.lb_interfaces()).queues(queues);
        for arg in daemon_args {
            opts = opts.arg(*arg);
        }
        let daemon = Daemon::start(&topo.lb, &config, &opts)?;
        Ok(Lab {
            daemon,
            _servers: servers,
            spec,
            _dir: dir,
            topo,
        })
    }

    fn client(&self) -> &Netns {
        &self.topo.client
    }
}

fn vip6(port: u16) -> SocketAddr {
    SocketAddr::from((VIP6, port))
}

/// The backend that answered, having checked it echoed `payload` from the
/// VIP the client sent to.
fn answered_by(reply: &Reply, to: SocketAddr, payload: &str) -> Result<String> {
    let server = reply.server().to_owned();
    if !(server == "be1" || server == "be2") || reply.text != format!("{server} {payload}") {
        bail!(
            "reply {:?} to {payload:?} is not a backend's echo",
            reply.text
        );
    }
    if reply.from != to {
        bail!("the reply came from {}, not the VIP {to}", reply.from);
    }
    Ok(server)
}

/// `count` TCP exchanges with `to` from `threads` client threads, each on
/// its own CPU (so, with several queues, on several queues); the backends
/// that answered, counted.
fn exchanges(
    client: &Netns,
    to: SocketAddr,
    count: usize,
    threads: usize,
    udp: bool,
) -> Result<BTreeMap<String, usize>> {
    let results: Vec<Result<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    if let Err(e) = pin_current_thread(t as u32) {
                        return vec![Err(e)];
                    }
                    (t..count)
                        .step_by(threads)
                        .map(|i| {
                            let payload = format!("exchange {i}");
                            let reply = if udp {
                                udp_exchange(client, to, &payload)
                            } else {
                                tcp_exchange(client, to, &payload)
                            };
                            reply.and_then(|r| answered_by(&r, to, &payload))
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
    let mut counts = BTreeMap::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(server) => *counts.entry(server).or_insert(0) += 1,
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {count} exchanges with {to} failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(counts)
}

/// The backends' peers as their servers saw them: the client's address
/// must arrive unchanged (two-arm NAT keeps it).
fn assert_client_address_kept(daemon: &Daemon) -> Result<()> {
    let flows = daemon.flows()?.flows;
    let clients: Vec<&str> = flows.iter().map(|f| f.client.as_str()).collect();
    let expected = format!("[{CLIENT_ADDR6}]:");
    if !flows.iter().any(|f| f.client.starts_with(&expected)) {
        bail!("no flow from {CLIENT_ADDR6} listed: {clients:?}");
    }
    Ok(())
}

fn ipv6_tcp_and_udp_reach_both_backends(fast_path: &str) -> Result<()> {
    let lab = Lab::start(1, &["--fast-path", fast_path])?;
    let tcp = exchanges(lab.client(), vip6(TCP_PORT), 40, 4, false)?;
    assert_eq!(tcp.len(), 2, "both backends answer TCP: {tcp:?}");
    let udp = exchanges(lab.client(), vip6(UDP_PORT), 40, 4, true)?;
    assert_eq!(udp.len(), 2, "both backends answer UDP: {udp:?}");
    assert_client_address_kept(&lab.daemon)?;

    let stats = lab.daemon.stats()?;
    let shown = serde_json::to_string_pretty(&stats)?;
    let v6_backends: Vec<&str> = stats
        .backends
        .iter()
        .filter(|b| b.backend.starts_with("[2001:db8:2::"))
        .map(|b| b.backend.as_str())
        .collect();
    assert!(
        v6_backends
            .iter()
            .all(|b| b.ends_with(&format!(":{TCP_TARGET_PORT}"))
                || b.ends_with(&format!(":{UDP_TARGET_PORT}"))),
        "ports translated: {v6_backends:?}"
    );
    assert!(v6_backends.len() >= 4, "IPv6 backends counted:\n{shown}");

    // One UDP flow of many datagrams: settled, it rides the IPv6 fast path
    // when that is on, and never when it is off.
    let socket = udp_socket_towards(lab.client(), vip6(UDP_PORT))?;
    const DATAGRAMS: u64 = 40;
    for i in 0..DATAGRAMS {
        let payload = format!("datagram {i}");
        let reply = udp_exchange_on(&socket, vip6(UDP_PORT), &payload)?;
        answered_by(&reply, vip6(UDP_PORT), &payload)?;
    }
    let local = socket.local_addr()?.to_string();
    let flows = lab.daemon.flows()?.flows;
    let flow = flows
        .iter()
        .find(|f| f.client == local)
        .with_context(|| format!("no flow from {local}: {flows:?}"))?;
    assert_eq!(flow.packets, 2 * DATAGRAMS, "{flow:?}");
    if fast_path == "on" {
        assert!(
            flow.fast_path && flow.fast_path_packets > 0,
            "the IPv6 fast path carried none: {flow:?}"
        );
    } else {
        assert_eq!(flow.fast_path_packets, 0, "{flow:?}");
    }
    Ok(())
}

#[test]
fn ipv6_tcp_and_udp_through_an_ipv6_vip_reach_both_backends_with_the_fast_path() -> Result<()> {
    ipv6_tcp_and_udp_reach_both_backends("on")
}

#[test]
fn ipv6_tcp_and_udp_through_an_ipv6_vip_reach_both_backends_without_the_fast_path() -> Result<()> {
    ipv6_tcp_and_udp_reach_both_backends("off")
}

#[test]
fn a_dual_stack_gateway_serves_each_family_from_its_own_endpoints() -> Result<()> {
    let lab = Lab::start(1, &[])?;
    let v4 = exchanges(
        lab.client(),
        SocketAddr::from((VIP, TCP_PORT)),
        20,
        2,
        false,
    )?;
    let v6 = exchanges(lab.client(), vip6(TCP_PORT), 20, 2, false)?;
    assert_eq!((v4.len(), v6.len()), (2, 2), "{v4:?} {v6:?}");
    let flows = lab.daemon.flows()?.flows;
    for flow in &flows {
        let v6_client = flow.client.starts_with('[');
        assert_eq!(
            flow.backend.starts_with('['),
            v6_client,
            "a flow crossed families: {flow:?}"
        );
        assert_eq!(flow.vip.starts_with('['), v6_client, "{flow:?}");
    }
    let listeners = lab.daemon.yardctl_json("listeners")?;
    let tcp_id = lab.spec.listener_id(TCP_LISTENER);
    let vips: Vec<&str> = listeners["listeners"]
        .as_array()
        .context("listeners")?
        .iter()
        .filter(|l| l["listener"] == tcp_id.as_str())
        .filter_map(|l| l["vip"].as_str())
        .collect();
    assert_eq!(vips.len(), 2, "one listener per address: {listeners:#}");
    Ok(())
}

#[test]
fn ipv6_replies_reach_the_client_from_the_vip_whichever_queue_they_arrive_on() -> Result<()> {
    // Two queues, clients on every CPU: requests and their replies land on
    // queues chosen by the sending CPU, so replies often reach another
    // worker than their request did; the shared reply table reverses them.
    let lab = Lab::start(2, &["--fast-path", "off"])?;
    let counts = exchanges(lab.client(), vip6(TCP_PORT), 60, 6, false)?;
    assert_eq!(counts.values().sum::<usize>(), 60);
    let stats = lab.daemon.stats()?;
    let rx: Vec<u64> = stats.workers.iter().map(|w| w.rx_packets).collect();
    assert!(rx.iter().all(|n| *n > 0), "a queue saw no traffic: {rx:?}");
    let flows = lab.daemon.flows()?.flows;
    let split = flows.iter().filter(|f| f.workers.len() > 1).count();
    eprintln!(
        "{split} of {} IPv6 flows seen by both workers; rx per queue {rx:?}",
        flows.len()
    );
    Ok(())
}

/// A 4000-byte datagram over the lab's 1500-byte MTU leaves the client in
/// three fragments; the backend gets it whole (its kernel reassembles) and
/// its 4004-byte answer, fragmented by the backend's kernel, reaches the
/// client whole from the VIP.
fn fragmented_datagrams_cross_the_vip(vip: SocketAddr) -> Result<()> {
    let lab = Lab::start(1, &[])?;
    let socket = udp_socket_towards(lab.client(), vip)?;
    let payload: String = (0..4000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut backends = BTreeMap::new();
    for _ in 0..5 {
        let reply = udp_exchange_on(&socket, vip, &payload)?;
        *backends
            .entry(answered_by(&reply, vip, &payload)?)
            .or_insert(0) += 1;
    }
    assert_eq!(backends.len(), 1, "one flow, one backend: {backends:?}");
    let stats = lab.daemon.stats()?;
    let shown = serde_json::to_string_pretty(&stats)?;
    let steered = stats
        .xdp_steering
        .get("steer_fragment")
        .copied()
        .unwrap_or(0);
    // Five datagrams of three fragments each way.
    assert!(steered >= 30, "fragments steered: {steered}\n{shown}");
    assert_eq!(
        stats.drops.get("fragment_without_first"),
        None,
        "no fragment outran its first:\n{shown}"
    );
    Ok(())
}

#[test]
fn fragmented_ipv4_datagrams_reach_one_backend_whole_and_come_back() -> Result<()> {
    fragmented_datagrams_cross_the_vip(SocketAddr::from((VIP, UDP_PORT)))
}

#[test]
fn fragmented_ipv6_datagrams_reach_one_backend_whole_and_come_back() -> Result<()> {
    fragmented_datagrams_cross_the_vip(vip6(UDP_PORT))
}

#[test]
fn explain_names_the_ipv6_backend_an_ipv6_flow_really_got() -> Result<()> {
    let lab = Lab::start(1, &[])?;
    let payload = "explain me";
    let (stream, reply) = tcp_exchange_keep_open(lab.client(), vip6(TCP_PORT), payload)?;
    let server = answered_by(&reply, vip6(TCP_PORT), payload)?;
    let (_, address) = BACKENDS6
        .iter()
        .find(|(name, _)| *name == server)
        .context("a known backend")?;
    let expected = SocketAddr::from((*address, TCP_TARGET_PORT)).to_string();
    let client = stream.local_addr()?.to_string();
    let vip = vip6(TCP_PORT).to_string();
    let out = lab
        .daemon
        .yardctl_raw(&["explain", "tcp", &client, &vip, "-o", "json"])?;
    if !out.status.success() {
        bail!("yardctl explain failed ({}): {}", out.status, out.stderr);
    }
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("yardctl explain printed no JSON: {:?}", out.stdout))?;
    assert_eq!(
        report["existing"]["backend"].as_str(),
        Some(expected.as_str()),
        "the tracked flow: {report:#}"
    );
    assert_eq!(
        report["new_flow"]["backend"].as_str(),
        Some(expected.as_str()),
        "{report:#}"
    );
    let flows = lab
        .daemon
        .yardctl_raw(&["flows", "--client", "2001:db8:1::/64", "-o", "json"])?;
    assert!(
        flows.stdout.contains(&expected),
        "flows filtered by an IPv6 client prefix: {}",
        flows.stdout
    );
    Ok(())
}

#[test]
fn ping_and_ping6_to_the_vips_are_answered_by_switchyard() -> Result<()> {
    let lab = Lab::start(1, &[])?;
    for (family, vip) in [("-4", VIP.to_string()), ("-6", VIP6.to_string())] {
        let out = lab
            .client()
            .command("ping")
            .args([family, "-n", "-c", "3", "-i", "0.2", "-W", "2", &vip])
            .output()
            .context("running ping (iputils-ping)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("3 received") {
            bail!(
                "ping {family} {vip}: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Switchyard answered them (the VIPs are on no interface of the node).
    let stats = lab.daemon.yardctl_json("stats")?;
    let answered: u64 = stats["workers"]
        .as_array()
        .context("workers")?
        .iter()
        .filter_map(|w| w["echo_replies"].as_u64())
        .sum();
    assert_eq!(answered, 6, "{stats:#}");
    Ok(())
}

/// The lab a new user builds: veths as the kernel creates them (hosts send
/// partial checksums, no NAPI on the LB's peers). IPv6 through the VIP
/// still reaches both backends, the workers completing the checksums.
#[test]
fn ipv6_through_a_lab_with_default_veth_settings() -> Result<()> {
    use switchyard_vm_tests::topology::Offloads;
    let lab = Lab::start_on(Topology::single_arm_with(1, Offloads::KernelDefaults)?, &[])?;
    let tcp = exchanges(lab.client(), vip6(TCP_PORT), 20, 2, false)?;
    let udp = exchanges(lab.client(), vip6(UDP_PORT), 20, 2, true)?;
    assert_eq!((tcp.len(), udp.len()), (2, 2), "{tcp:?} {udp:?}");
    Ok(())
}
