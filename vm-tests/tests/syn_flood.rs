//! End-to-end: a SYN flood against a listener of the VIP, from a hundred
//! spoofed sources and as many ports as it takes, each SYN a new flow, as
//! fast as a raw socket in the client's namespace sends, while long-lived
//! TCP connections to another listener of the same VIP exchange data. The
//! workers' flow tables are kept small so the flood outnumbers them many
//! times over. The connections lose nothing and are never decided again
//! (their listener's flow count stays at their number: an evicted flow's
//! next packet would count as a new flow), and the flood's flows are
//! counted on its own listener.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_proto::StatsReport;
use switchyard_vm_tests::client::{echo, tcp_connect};
use switchyard_vm_tests::config::{
    DEMO_SERVICE, TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::policy::SynFlood;
use switchyard_vm_tests::topology::{BACKENDS, VIP};
use switchyard_vm_tests::{
    Daemon, DaemonOptions, GatewaySpec, ListenerSpec, Protocol, TempDir, Topology, IO_TIMEOUT,
};

const FLOOD_LISTENER: &str = "flood";
const FLOOD_PORT: u16 = 81;
const CONNECTIONS: usize = 8;
const FLOOD_SYNS: u32 = 200_000;
const TALK_PACE: Duration = Duration::from_millis(2);

fn flows(stats: &StatsReport, spec: &GatewaySpec, listener: &str) -> Result<u64> {
    let id = spec.listener_id(listener);
    stats
        .listeners
        .iter()
        .find(|l| l.listener == id)
        .map(|l| l.counters.flows)
        .with_context(|| format!("no listener {id} in the stats"))
}

#[test]
fn a_syn_flood_evicts_no_established_connection_and_its_flows_are_counted() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let mut spec = GatewaySpec::demo();
    spec.listeners.push(ListenerSpec {
        name: FLOOD_LISTENER.into(),
        route: "echo-flood".into(),
        protocol: Protocol::Tcp,
        port: FLOOD_PORT,
        target_port: TCP_TARGET_PORT,
        service: DEMO_SERVICE.into(),
        backends: BACKENDS.iter().map(|(_, a)| *a).collect(),
    });
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    // Room for the connections (both directions) and little else: the
    // flood is a thousand times the table.
    let opts = DaemonOptions::new(topo.lb_interfaces())
        .queues(topo.queues)
        .arg("--flow-capacity")
        .arg("64")
        .arg("--embryonic-capacity")
        .arg("128");
    let daemon = Daemon::start(&topo.lb, &config, &opts)?;

    let vip = SocketAddr::from((VIP, TCP_PORT));
    let mut streams = Vec::new();
    for i in 0..CONNECTIONS {
        let mut stream = tcp_connect(&topo.client, vip, IO_TIMEOUT)?;
        echo(&mut stream, &format!("hello{i}|"), IO_TIMEOUT)
            .with_context(|| format!("connection {i} before the flood"))?;
        streams.push(stream);
    }
    let before = daemon.stats()?;
    ensure!(flows(&before, &spec, TCP_LISTENER)? == CONNECTIONS as u64);

    // Each connection exchanges numbered messages until told to stop; an
    // echo that does not come back whole within the I/O timeout fails it.
    let stop = Arc::new(AtomicBool::new(false));
    let exchanged = Arc::new(AtomicU64::new(0));
    let talkers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            let (stop, exchanged) = (stop.clone(), exchanged.clone());
            std::thread::spawn(move || -> Result<u64> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n == 0 {
                    echo(&mut stream, &format!("c{i}m{n}|"), IO_TIMEOUT)
                        .with_context(|| format!("connection {i}, message {n}"))?;
                    n += 1;
                    exchanged.fetch_add(1, Ordering::Relaxed);
                    // Paced, so the connections share the two cores with
                    // the flood rather than starve its generator.
                    std::thread::sleep(TALK_PACE);
                }
                Ok(n)
            })
        })
        .collect();

    let flood = SynFlood {
        first_source: Ipv4Addr::new(198, 18, 1, 100),
        sources: 100,
        vip: VIP,
        port: FLOOD_PORT,
        count: FLOOD_SYNS,
    };
    let during_before = exchanged.load(Ordering::Relaxed);
    let flooded = flood.send(&topo.client)?;
    let during = exchanged.load(Ordering::Relaxed) - during_before;
    // The connections keep going after the flood too.
    let after_flood = exchanged.load(Ordering::Relaxed);
    switchyard_vm_tests::poll::poll_until(
        Duration::from_secs(10),
        "exchanges after the flood",
        || {
            Ok(
                (exchanged.load(Ordering::Relaxed) >= after_flood + CONNECTIONS as u64)
                    .then_some(()),
            )
        },
    )?;
    stop.store(true, Ordering::Relaxed);
    let mut messages = 0;
    for talker in talkers {
        messages += talker.join().expect("talker thread")?;
    }

    let stats = daemon.stats()?;
    let flood_flows = flows(&stats, &spec, FLOOD_LISTENER)?;
    println!(
        "flood: {} SYNs in {:.2?} ({:.0}/s); {flood_flows} counted as flows; \
         {messages} messages on {CONNECTIONS} connections, {during} while the flood was sent",
        flooded.sent,
        flooded.elapsed,
        flooded.rate()
    );
    ensure!(
        flows(&stats, &spec, TCP_LISTENER)? == CONNECTIONS as u64,
        "an established connection was decided again (evicted from a flow table): {:?}",
        stats.listeners
    );
    ensure!(
        flood_flows > 0 && flood_flows <= u64::from(flooded.sent),
        "{flood_flows} flows counted for {} SYNs sent",
        flooded.sent
    );
    Ok(())
}
