//! BGP announcements and ECMP across LB nodes, end to end: a router
//! running BIRD with deploy/bird/router.conf (multipath, an L4 hash), two
//! LB nodes each running `switchyard run` and BIRD with
//! deploy/bird/lb-node.conf, two `dsr` backends answering the client
//! through the router, and a client behind the router holding many TCP
//! connections. The connections spread over both nodes; each node would
//! send every flow to the backend that serves it; a drained node's routes
//! go and its connections carry on through the other node, to the same
//! backend; a node whose switchyard is killed -9 is withdrawn by its BIRD,
//! and the failover is measured; a node upgraded in place (`--takeover`)
//! keeps its route on the router throughout; a node stopped with SIGTERM
//! withdraws. Needs root, bird2 and the release binaries.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_proto::{ExplainReport, NodeReport};
use switchyard_vm_tests::bird::{self, Bird, SAMPLE_ROUTE_DIR};
use switchyard_vm_tests::bpffs::Bpffs;
use switchyard_vm_tests::client::tcp_exchange_keep_open;
use switchyard_vm_tests::config::TCP_PORT;
use switchyard_vm_tests::fullnat::with_forwarding;
use switchyard_vm_tests::link::{set_gro, set_tx_checksum, wait_links_up};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{BACKENDS, VIP};
use switchyard_vm_tests::{
    tcp_exchange, Daemon, DaemonOptions, EchoPair, GatewaySpec, Netns, TempDir,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
const LB_NODES: [(&str, Ipv4Addr, Ipv6Addr); 2] = [
    (
        "lb1",
        Ipv4Addr::new(198, 18, 2, 11),
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11),
    ),
    (
        "lb2",
        Ipv4Addr::new(198, 18, 2, 12),
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x12),
    ),
];
const CONNECTIONS: usize = 64;
/// Generous: BIRD's sessions start after its default start delay (5 s).
const SESSION_DEADLINE: Duration = Duration::from_secs(25);
const WITHDRAW_DEADLINE: Duration = Duration::from_secs(10);
const ECHO_DEADLINE: Duration = Duration::from_secs(10);

/// One LB node: its namespace, BIRD, switchyard and route folder.
struct LbNode {
    name: &'static str,
    address: Ipv4Addr,
    daemon: Daemon,
    /// What the daemon was started with, for a successor to take over.
    opts: DaemonOptions,
    bird: Bird,
    _routes: TempDir,
    ns: Netns,
}

/// A client connection and the backend that answered it.
struct Connection {
    stream: TcpStream,
    port: u16,
    backend: String,
}

fn address(ns: &Netns, cidr: &str, dev: &str) -> Result<()> {
    let family = if cidr.contains(':') { "-6" } else { "-4" };
    let mut args = vec![family, "addr", "add", cidr, "dev", dev];
    if family == "-6" {
        args.push("nodad");
    }
    ns.ip(&args)?;
    ns.ip(&["link", "set", "dev", dev, "up"])?;
    Ok(())
}

/// The router's next hops for the VIP, as the kernel holds them.
fn vip_next_hops(router: &Netns) -> Result<Vec<Ipv4Addr>> {
    let text = router.ip(&["-4", "route", "show", "exact", &format!("{VIP}/32")])?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut hops: Vec<Ipv4Addr> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    hops.sort();
    Ok(hops)
}

fn wait_next_hops(router: &Netns, want: &[Ipv4Addr], deadline: Duration) -> Result<Duration> {
    let start = Instant::now();
    let what = format!("the router's route to {VIP} to go via {want:?}");
    poll_until(deadline, &what, || {
        Ok((vip_next_hops(router)? == want).then_some(()))
    })?;
    Ok(start.elapsed())
}

/// The GatewayClass of `spec` announcing its VIPs over BGP.
fn announced_over_bgp(yaml: &str, class: &str) -> Result<String> {
    let plain = "spec:\n  controllerName: switchyard.io/gateway-controller\n";
    ensure!(
        yaml.contains(plain),
        "the GatewayClass is not where expected"
    );
    Ok(yaml.replacen(
        plain,
        &format!(
            "{plain}  parametersRef:\n    group: switchyard.io\n    kind: GatewayClassConfig\n    name: {class}\n"
        ),
        1,
    ) + &format!(
        "---\napiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\n\
         metadata: {{name: {class}}}\nspec: {{announce: BGP}}\n"
    ))
}

/// Sends `tag` on every connection, then reads every answer: each must be
/// the echo of the backend that answered it first. Returns when the last
/// one arrived.
fn echo_on_all(connections: &mut [Connection], tag: &str, deadline: Duration) -> Result<Duration> {
    let start = Instant::now();
    for c in connections.iter_mut() {
        c.stream
            .write_all(format!("{tag} {}", c.port).as_bytes())
            .with_context(|| format!("{tag}: writing on connection {}", c.port))?;
    }
    for c in connections.iter_mut() {
        let want = format!("{} {tag} {}", c.backend, c.port);
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(want.as_bytes()) {
            let Some(left) = deadline.checked_sub(start.elapsed()) else {
                bail!(
                    "{tag}: connection {} echoed {:?} within {deadline:?}, not {want:?}",
                    c.port,
                    String::from_utf8_lossy(&got)
                );
            };
            c.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match c.stream.read(&mut buf) {
                Ok(0) => bail!("{tag}: connection {} closed", c.port),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context(format!("{tag}: connection {}", c.port)),
            }
        }
    }
    Ok(start.elapsed())
}

/// The client ports of the flows `node` holds to the VIP.
fn flow_ports(node: &LbNode) -> Result<Vec<u16>> {
    let flows = node.daemon.flows()?;
    Ok(flows
        .flows
        .iter()
        .filter(|f| f.vip.starts_with(&format!("{VIP}:")))
        .filter_map(|f| f.client.parse::<SocketAddr>().ok())
        .filter(|client| client.ip() == IpAddr::V4(CLIENT))
        .map(|client| client.port())
        .collect())
}

/// The backend `node` would send a new flow from `port` to.
fn new_flow_backend(node: &LbNode, port: u16) -> Result<String> {
    let report: ExplainReport = node.daemon.yardctl_as(&[
        "explain",
        "tcp",
        &format!("{CLIENT}:{port}"),
        &format!("{VIP}:{TCP_PORT}"),
    ])?;
    report
        .new_flow
        .backend
        .with_context(|| format!("{}: no backend for a flow from port {port}", node.name))
}

#[test]
fn vips_spread_over_lb_nodes_by_bgp_ecmp_and_flows_keep_their_backend_when_moved() -> Result<()> {
    if let Some(reason) = bird::unavailable() {
        println!("skipped: {reason}");
        return Ok(());
    }
    // First, so that it is unmounted last, taking lb1's pins with it.
    let bpffs = Bpffs::mount()?;
    let setup = Instant::now();
    let client = Netns::new("client")?;
    let router = Netns::new("router")?;
    let switch = Netns::new("switch")?;
    switch.ip(&["link", "add", "br0", "type", "bridge"])?;
    switch.ip(&["link", "set", "br0", "up"])?;
    let mut ports = vec!["rt"];

    client.veth("eth0", &router, "c0")?;
    address(&client, &format!("{CLIENT}/24"), "eth0")?;
    client.ip(&[
        "route",
        "add",
        "default",
        "via",
        &ROUTER_CLIENT_SIDE.to_string(),
    ])?;
    // Full checksums, as onto a wire: the LB's workers see the client's
    // segments as sent (partial checksums would survive the forwarding).
    set_tx_checksum(&client, "eth0", false)?;
    address(&router, &format!("{ROUTER_CLIENT_SIDE}/24"), "c0")?;
    router.veth("eth0", &switch, "rt")?;
    address(&router, &format!("{ROUTER}/24"), "eth0")?;
    address(&router, &format!("{ROUTER6}/64"), "eth0")?;
    router.sysctl("net/ipv4/ip_forward", "1")?;
    router.sysctl("net/ipv4/fib_multipath_hash_policy", "1")?;

    let mut backends = Vec::new();
    let mut servers = Vec::new();
    for (name, addr) in BACKENDS {
        let ns = Netns::new(name)?;
        ns.veth("eth0", &switch, name)?;
        ports.push(name);
        address(&ns, &format!("{addr}/24"), "eth0")?;
        ns.ip(&["route", "add", "default", "via", &ROUTER.to_string()])?;
        for key in ["all", "eth0"] {
            ns.sysctl(&format!("net/ipv4/conf/{key}/arp_ignore"), "1")?;
            ns.sysctl(&format!("net/ipv4/conf/{key}/arp_announce"), "2")?;
        }
        ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        servers.push(EchoPair::start_on(
            &ns,
            name,
            IpAddr::V4(VIP),
            TCP_PORT,
            53,
        )?);
        backends.push(ns);
    }

    let mut router_conf = bird::sample("router.conf")?;
    for (key, value) in [
        ("ROUTER_ADDRESS", ROUTER.to_string()),
        ("ROUTER_ADDRESS6", ROUTER6.to_string()),
    ] {
        router_conf = bird::define(&router_conf, key, &value)?;
    }
    for (i, (_, addr, addr6)) in LB_NODES.iter().enumerate() {
        router_conf = bird::define(
            &router_conf,
            &format!("LB{}_ADDRESS", i + 1),
            &addr.to_string(),
        )?;
        router_conf = bird::define(
            &router_conf,
            &format!("LB{}_ADDRESS6", i + 1),
            &addr6.to_string(),
        )?;
    }

    // The same config on every node: each picks the same backend per flow.
    let mut spec = GatewaySpec::demo();
    spec.listeners.retain(|l| l.port == TCP_PORT);
    spec.listeners[0].target_port = TCP_PORT;
    let config_dir = TempDir::new("config")?;
    let yaml = announced_over_bgp(&with_forwarding(&spec, "{mode: dsr}"), &spec.class)?;
    let config = config_dir.write("gateway.yaml", &yaml)?;

    let mut node_namespaces = Vec::new();
    for (name, addr, addr6) in LB_NODES {
        let ns = Netns::new(name)?;
        ns.veth("eth0", &switch, name)?;
        ports.push(name);
        address(&ns, &format!("{addr}/24"), "eth0")?;
        address(&ns, &format!("{addr6}/64"), "eth0")?;
        node_namespaces.push((name, addr, addr6, ns));
    }
    for port in &ports {
        switch.ip(&["link", "set", port, "master", "br0", "up"])?;
    }
    // The LB nodes send with XDP: their switch ports must run NAPI.
    for (name, ..) in LB_NODES {
        set_gro(&switch, name, true)?;
    }
    wait_links_up(&router, &["eth0", "c0"], Duration::from_secs(10))?;
    let router_bird = Bird::start(&router, "router", &router_conf)?;

    let mut nodes = Vec::new();
    for (name, addr, addr6, ns) in node_namespaces {
        wait_links_up(&ns, &["eth0"], Duration::from_secs(10))?;
        let routes = TempDir::new(&format!("routes-{name}"))?;
        let mut conf = bird::sample("lb-node.conf")?;
        for (key, value) in [
            ("NODE_ADDRESS", addr.to_string()),
            ("NODE_ADDRESS6", addr6.to_string()),
            ("ROUTER_ADDRESS", ROUTER.to_string()),
            ("ROUTER_ADDRESS6", ROUTER6.to_string()),
        ] {
            conf = bird::define(&conf, key, &value)?;
        }
        let conf = conf.replace(SAMPLE_ROUTE_DIR, &routes.path().display().to_string());
        let node_bird = Bird::start(&ns, name, &conf)?;
        let opts = DaemonOptions::new(&["eth0"])
            .queues(1)
            .beside_others()
            .arg("--node-name")
            .arg(name)
            .arg("--bird-socket")
            .arg(node_bird.socket().display().to_string())
            .arg("--bird-routes")
            .arg(routes.path().display().to_string());
        // lb1 pins its program, so that a successor can take it over.
        let opts = if name == "lb1" {
            opts.pin_dir(bpffs.path())
        } else {
            opts
        };
        let daemon = Daemon::start(&ns, &config, &opts)?;
        nodes.push(LbNode {
            name,
            address: addr,
            daemon,
            opts,
            bird: node_bird,
            _routes: routes,
            ns,
        });
    }
    let both: Vec<Ipv4Addr> = LB_NODES.iter().map(|n| n.1).collect();
    let announced = wait_next_hops(&router, &both, SESSION_DEADLINE).with_context(|| {
        format!(
            "router BIRD:\n{}\n{}",
            router_bird
                .birdc(&["show", "protocols"])
                .unwrap_or_default(),
            router_bird.output()
        )
    })?;
    println!(
        "both LB nodes announced {VIP} {} ms after the daemons started ({} ms of setup)",
        announced.as_millis(),
        setup.elapsed().as_millis()
    );
    for node in &nodes {
        let report: NodeReport = node.daemon.yardctl_as(&["node"])?;
        let states: Vec<&str> = report
            .announcements
            .iter()
            .map(|a| a.state.as_str())
            .collect();
        ensure!(
            states == ["announced"],
            "{}: `yardctl node` says {:?}",
            node.name,
            report.announcements
        );
        let what = format!(
            "{}: `yardctl node` to show the session to the router",
            node.name
        );
        poll_until(WITHDRAW_DEADLINE, &what, || {
            let report: NodeReport = node.daemon.yardctl_as(&["node"])?;
            Ok(report
                .peers
                .iter()
                .any(|p| {
                    p.name == "router4" && p.address == ROUTER.to_string() && p.state == "alive"
                })
                .then_some(()))
        })?;
    }

    // Many flows from one client: the router spreads them by their ports.
    let vip = SocketAddr::new(IpAddr::V4(VIP), TCP_PORT);
    let mut connections = Vec::new();
    for i in 0..CONNECTIONS {
        let (stream, reply) = tcp_exchange_keep_open(&client, vip, &format!("hello {i}"))?;
        connections.push(Connection {
            port: reply.local.port(),
            backend: reply.server().to_owned(),
            stream,
        });
    }
    let mut carried: BTreeMap<&str, usize> = BTreeMap::new();
    let mut carrier: BTreeMap<u16, &str> = BTreeMap::new();
    for node in &nodes {
        for port in flow_ports(node)? {
            if connections.iter().any(|c| c.port == port) {
                *carried.entry(node.name).or_default() += 1;
                carrier.insert(port, node.name);
            }
        }
    }
    println!("flows per LB node: {carried:?}");
    ensure!(
        carried.len() == 2,
        "the router sent all {CONNECTIONS} flows to one node: {carried:?}"
    );
    ensure!(
        carrier.len() == CONNECTIONS,
        "only {} of {CONNECTIONS} connections are a flow on some node",
        carrier.len()
    );
    let mut per_backend: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &connections {
        *per_backend.entry(c.backend.as_str()).or_default() += 1;
        let (_, addr) = BACKENDS
            .iter()
            .find(|(name, _)| *name == c.backend)
            .with_context(|| format!("answered by {:?}", c.backend))?;
        let want = format!("{addr}:{TCP_PORT}");
        for node in &nodes {
            let picked = new_flow_backend(node, c.port)?;
            ensure!(
                picked == want,
                "the flow from port {} went to {want} through {}, but {} would send it to {picked}",
                c.port,
                carrier[&c.port],
                node.name
            );
        }
    }
    println!("connections per backend: {per_backend:?}");

    // Drain lb1: its BIRD withdraws, and its connections go on through lb2.
    let drain = Instant::now();
    let out = nodes[0].daemon.yardctl_raw(&["node", "drain"])?;
    ensure!(out.status.success(), "yardctl node drain: {}", out.stderr);
    wait_next_hops(&router, &[nodes[1].address], WITHDRAW_DEADLINE)?;
    println!(
        "BGP drain: {} ms (yardctl node drain -> route gone on the router)",
        drain.elapsed().as_millis()
    );
    let echoed = echo_on_all(&mut connections, "drained", ECHO_DEADLINE)?;
    println!(
        "after the drain, all {CONNECTIONS} connections echoed from their backends in {} ms",
        echoed.as_millis()
    );
    let on_lb2 = flow_ports(&nodes[1])?;
    let moved = carrier
        .iter()
        .filter(|(port, node)| **node == "lb1" && on_lb2.contains(port))
        .count();
    ensure!(
        moved == carried["lb1"],
        "{moved} of lb1's {} flows reached lb2",
        carried["lb1"]
    );

    let out = nodes[0].daemon.yardctl_raw(&["node", "undrain"])?;
    ensure!(out.status.success(), "yardctl node undrain: {}", out.stderr);
    wait_next_hops(&router, &both, WITHDRAW_DEADLINE)?;
    echo_on_all(&mut connections, "undrained", ECHO_DEADLINE)?;

    // Upgrade lb1 in place (`--takeover`): the router keeps its route via
    // lb1 throughout, since the successor's routes are in BIRD before the
    // predecessor, and the device its routes go through, are gone.
    let lb1 = nodes[0].address;
    let took_over = Instant::now();
    let done = AtomicBool::new(false);
    let (samples, missing) = std::thread::scope(|scope| -> Result<(u32, u32)> {
        let sampler = scope.spawn(|| -> Result<(u32, u32)> {
            let (mut samples, mut missing) = (0, 0);
            // Sampled on past the successor's start for as long again:
            // BIRD would withdraw the predecessor's routes only then.
            let mut until = None;
            while until.is_none_or(|t| Instant::now() < t) {
                if until.is_none() && done.load(Ordering::Relaxed) {
                    until = Some(Instant::now() + took_over.elapsed());
                }
                samples += 1;
                if !vip_next_hops(&router)?.contains(&lb1) {
                    missing += 1;
                }
            }
            Ok((samples, missing))
        });
        let node = &mut nodes[0];
        let upgraded = (|| -> Result<()> {
            let mut successor = node.daemon.take_over(&node.ns, &config, &node.opts)?;
            node.daemon.wait_exit(WITHDRAW_DEADLINE)?;
            successor.wait_until_ready(WITHDRAW_DEADLINE)?;
            node.daemon = successor;
            Ok(())
        })();
        done.store(true, Ordering::Relaxed);
        let sampled = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the route sampler panicked"))?;
        upgraded?;
        sampled
    })?;
    println!(
        "BGP takeover: lb1 upgraded in place in {} ms; the router's route via lb1 was \
         missing in {missing} of {samples} samples",
        took_over.elapsed().as_millis()
    );
    ensure!(
        missing == 0,
        "the router lost its route via lb1 during the takeover ({missing} of {samples} samples)"
    );
    echo_on_all(&mut connections, "taken over", ECHO_DEADLINE)?;

    // kill -9 lb2's switchyard: its device goes, its BIRD withdraws.
    // The connections send at once, while the router may still route to
    // the dead node: what they measure includes TCP's retransmission.
    let probe = Instant::now();
    vip_next_hops(&router)?;
    let probe = probe.elapsed();
    let killed = Instant::now();
    nodes[1].daemon.kill()?;
    let reaped = killed.elapsed();
    let survivor = nodes[0].address;
    let (withdrawn, echoed) = std::thread::scope(|scope| {
        let watch = scope.spawn(|| {
            wait_next_hops(&router, &[survivor], WITHDRAW_DEADLINE).map(|_| killed.elapsed())
        });
        let echoed =
            echo_on_all(&mut connections, "failover", ECHO_DEADLINE).map(|_| killed.elapsed());
        let withdrawn = watch
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (withdrawn, echoed)
    });
    let withdrawn = withdrawn.with_context(|| nodes[1].bird.output())?;
    let all_echoed = echoed?;
    poll_until(ECHO_DEADLINE, "a new connection to succeed", || {
        Ok(tcp_exchange(&client, vip, "new").ok())
    })?;
    let new_connection = killed.elapsed();
    println!(
        "BGP failover: {} ms (kill -9 -> route gone on the router); all {CONNECTIONS} \
         established connections echo again after {} ms; a new connection succeeds after {} ms \
         (resolution: the process was reaped after {} ms, one look at the router's route takes {} ms)",
        withdrawn.as_millis(),
        all_echoed.as_millis(),
        new_connection.as_millis(),
        reaped.as_millis(),
        probe.as_millis()
    );

    // SIGTERM on the last node: it withdraws before it stops forwarding.
    let stopping = Instant::now();
    let status = nodes[0].daemon.stop()?;
    ensure!(status.success(), "lb1 exited with {status}");
    wait_next_hops(&router, &[], WITHDRAW_DEADLINE)?;
    println!(
        "BGP shutdown: {} ms (SIGTERM -> no route left on the router)",
        stopping.elapsed().as_millis()
    );
    drop(connections);
    drop(nodes);
    drop(router_bird);
    let _ = (servers, backends);
    Ok(())
}
