//! Labs for the encapsulating modes (`ipip`, `gue`): the demo Gateway
//! forwarding by encapsulation, each backend holding the VIPs on its
//! loopback, decapsulating with `switchyard decap` on its interface, and
//! answering the client directly rather than through the load balancer.
//!
//! Built on the single-arm topology (client, LB and backends on one
//! bridge), so a backend can reach the client on the link: its route to
//! the client's subnet is on-link, not via the LB. Everything is a guard:
//! the decap processes are stopped (and their programs detached) on drop.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;

use crate::client::{udp_exchange_on, udp_socket_towards};
use crate::config::{GatewaySpec, DEMO_GATEWAY, DEMO_NAMESPACE};
use crate::link::xdp_attached;
use crate::netns::Netns;
use crate::poll::poll_until;
use crate::process::{kill_and_reap, signal_child, switchyard_bin};
use crate::servers::EchoPair;
use crate::tempdir::TempDir;
use crate::topology::{Topology, VIP, VIP6};
use crate::{tcp_exchange, udp_exchange, Daemon, DaemonOptions};

/// The interface every backend of the topology has.
pub const BACKEND_INTERFACE: &str = "eth0";
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Decap logs its counters once a second; a few lines are enough.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// `switchyard decap`'s and a config's GUE port when none is named.
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// The demo Gateway, dual stack, with every backend listening on the
/// listener's own port: encapsulation leaves the client's packet as it
/// is, so there is no port to translate.
pub fn same_port_gateway() -> GatewaySpec {
    let mut spec = GatewaySpec::demo_dual_stack();
    for listener in &mut spec.listeners {
        listener.target_port = listener.port;
    }
    spec
}

/// A TrafficPolicy document making the demo Gateway forward in `mode`
/// (`guePort` when given).
pub fn forwarding_policy(mode: &str, gue_port: Option<u16>) -> String {
    let port = gue_port.map_or(String::new(), |p| format!("\n    guePort: {p}"));
    format!(
        "---\n\
         apiVersion: switchyard.io/v1alpha1\n\
         kind: TrafficPolicy\n\
         metadata: {{name: modes, namespace: {DEMO_NAMESPACE}}}\n\
         spec:\n  \
         targetRefs:\n  \
         - {{group: gateway.networking.k8s.io, kind: Gateway, name: {DEMO_GATEWAY}}}\n  \
         forwarding:\n    mode: {mode}{port}\n"
    )
}

/// Makes `ns` a direct-return backend: the VIPs on its loopback (without
/// answering ARP for them: `arp_ignore`/`arp_announce` as for any DSR
/// backend), and the client's subnets on-link, so its answers go straight
/// to the client.
pub fn direct_return_backend(ns: &Netns) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
    ns.ip(&["-6", "addr", "add", &format!("{VIP6}/128"), "dev", "lo"])?;
    for scope in ["all", BACKEND_INTERFACE] {
        ns.sysctl(&format!("net/ipv4/conf/{scope}/arp_ignore"), "1")?;
        ns.sysctl(&format!("net/ipv4/conf/{scope}/arp_announce"), "2")?;
    }
    for net in ["198.18.1.0/24", "2001:db8:1::/64"] {
        ns.ip(&["route", "add", net, "dev", BACKEND_INTERFACE])?;
    }
    Ok(())
}

/// `switchyard decap` running in a backend's namespace, stopped with
/// SIGTERM (or killed) on drop.
pub struct DecapProcess {
    child: Option<Child>,
    log_path: PathBuf,
    ns: String,
    _dir: TempDir,
}

impl DecapProcess {
    /// Starts it on `interface` of `ns`, taking GUE on `gue_port`, logging
    /// its counters every second; returns once its program is attached.
    pub fn start(ns: &Netns, interface: &str, gue_port: u16) -> Result<DecapProcess> {
        let dir = TempDir::new("decap")?;
        let log_path = dir.path().join("decap.log");
        let log = File::create(&log_path)?;
        let mut cmd = ns.command(switchyard_bin()?);
        cmd.args(["decap", "--interface", interface, "--stats-interval", "1"])
            .args(["--gue-port", &gue_port.to_string()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("starting switchyard decap")?;
        let mut decap = DecapProcess {
            child: Some(child),
            log_path,
            ns: ns.name().to_owned(),
            _dir: dir,
        };
        let what = format!("switchyard decap to attach to {interface} in {}", ns.name());
        let attached = poll_until(START_TIMEOUT, &what, || {
            if let Some(status) = decap
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("switchyard decap exited ({status}):\n{}", decap.log());
            }
            Ok(xdp_attached(ns, interface)?.then_some(()))
        });
        attached.map(|()| decap)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The counters of the last line it logged (`decap IF: name=n ...`),
    /// if it logged one yet.
    pub fn counters(&self) -> Option<BTreeMap<String, u64>> {
        self.log().lines().rev().find_map(parse_counters)
    }

    /// Sends `signal` and waits for it to exit; returns its exit status
    /// and the counters of its final line.
    pub fn stop_with(&mut self, signal: Signal) -> Result<(ExitStatus, BTreeMap<String, u64>)> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("switchyard decap already stopped"))?;
        signal_child(child, signal)?;
        let what = format!("switchyard decap in {} to exit after {signal}", self.ns);
        let status = poll_until(STOP_TIMEOUT, &what, || Ok(child.try_wait()?));
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                kill_and_reap(child);
                self.child = None;
                return Err(e);
            }
        };
        self.child = None;
        let counters = self
            .counters()
            .with_context(|| format!("no final counters in:\n{}", self.log()))?;
        Ok((status, counters))
    }
}

impl Drop for DecapProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if signal_child(child, Signal::SIGTERM).is_ok() {
                let _ = poll_until(STOP_TIMEOUT, "switchyard decap to exit", || {
                    Ok(child.try_wait()?)
                });
            }
            kill_and_reap(child);
        }
    }
}

/// `... decap eth0: ipip=1 ip6ip6=2 ...` as name -> count.
fn parse_counters(line: &str) -> Option<BTreeMap<String, u64>> {
    let (_, counts) = line.split_once("decap ")?.1.split_once(": ")?;
    counts
        .split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The demo Gateway forwarding in `mode` to direct-return backends that
/// run `switchyard decap`. Fields drop in order: daemon, decap processes,
/// servers, config, namespaces.
pub struct EncapLab {
    pub daemon: Daemon,
    pub decaps: Vec<DecapProcess>,
    _servers: Vec<EchoPair>,
    _dir: TempDir,
    pub topo: Topology,
}

impl EncapLab {
    /// `mode` is `ipip` or `gue` (then to `gue_port`); `daemon_args` go to
    /// `switchyard run`.
    pub fn start(mode: &str, gue_port: Option<u16>, daemon_args: &[&str]) -> Result<EncapLab> {
        let topo = Topology::single_arm(1)?.with_ipv6()?;
        let spec = same_port_gateway();
        let (tcp, udp) = (spec.listeners[0].port, spec.listeners[1].port);
        let dir = TempDir::new("config")?;
        let yaml = spec.to_yaml() + &forwarding_policy(mode, gue_port);
        let config = dir.write("gateway.yaml", &yaml)?;
        let mut servers = Vec::new();
        let mut decaps = Vec::new();
        for backend in &topo.backends {
            direct_return_backend(&backend.ns)?;
            // Bound to the VIPs, so UDP answers leave from them.
            for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
                servers.push(EchoPair::start_on(
                    &backend.ns,
                    &backend.name,
                    vip,
                    tcp,
                    udp,
                )?);
            }
            decaps.push(DecapProcess::start(
                &backend.ns,
                BACKEND_INTERFACE,
                gue_port.unwrap_or(DEFAULT_GUE_PORT),
            )?);
        }
        let mut opts = DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues);
        for arg in daemon_args {
            opts = opts.arg(*arg);
        }
        let daemon = Daemon::start(&topo.lb, &config, &opts)?;
        Ok(EncapLab {
            daemon,
            decaps,
            _servers: servers,
            _dir: dir,
            topo,
        })
    }

    /// Packets every backend's decap counted under `kinds`, summed, from
    /// their latest log lines.
    pub fn decapsulated(&self, kinds: &[&str]) -> u64 {
        self.decaps
            .iter()
            .filter_map(DecapProcess::counters)
            .map(|c| {
                kinds
                    .iter()
                    .map(|k| c.get(*k).copied().unwrap_or(0))
                    .sum::<u64>()
            })
            .sum()
    }
}

/// `count` exchanges with `to`, TCP or UDP, each from a fresh socket (a
/// new flow); every reply must be a backend's echo, from the VIP the
/// client sent to. The backends that answered, counted.
pub fn exchanges(
    client: &Netns,
    to: SocketAddr,
    count: usize,
    udp: bool,
) -> Result<BTreeMap<String, usize>> {
    let mut answered = BTreeMap::new();
    for i in 0..count {
        let payload = format!("exchange {i}");
        let reply = if udp {
            udp_exchange(client, to, &payload)?
        } else {
            tcp_exchange(client, to, &payload)?
        };
        let server = reply.server().to_owned();
        if reply.text != format!("{server} {payload}") || reply.from != to {
            bail!(
                "{to}: reply {:?} from {} is not an echo from the VIP",
                reply.text,
                reply.from
            );
        }
        *answered.entry(server).or_insert(0) += 1;
    }
    Ok(answered)
}

/// TCP and UDP to both VIPs: every exchange answered, by both backends,
/// straight from them (the backends' route to the client is on-link); the
/// datagrams counted once each on their listener; a long UDP flow listed
/// with its outer header (of `mode`) and carried by the fast path exactly
/// when it is on; and, once the counters settle, every packet the load
/// balancer forwarded counted by one backend's decapsulation under
/// `kinds`, none malformed.
pub fn check_direct_return(
    lab: &EncapLab,
    mode: &str,
    kinds: &[&str],
    fast_path: bool,
) -> Result<()> {
    const EXCHANGES: usize = 24;
    let client = &lab.topo.client;
    for backend in &lab.topo.backends {
        for to in ["198.18.1.10", "2001:db8:1::10"] {
            let route = backend.ns.ip(&["route", "get", to])?;
            if route.contains(" via ") {
                bail!(
                    "{}: the route to the client is not on-link: {route}",
                    backend.name
                );
            }
        }
    }
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        for (port, udp) in [(80, false), (53, true)] {
            let to = SocketAddr::new(vip, port);
            let answered = exchanges(client, to, EXCHANGES, udp)?;
            if answered.len() != 2 {
                bail!("{to}: not both backends answered: {answered:?}");
            }
        }
    }
    const DATAGRAMS: u64 = 40;
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        let to = SocketAddr::new(vip, 53);
        let socket = udp_socket_towards(client, to)?;
        for i in 0..DATAGRAMS {
            let payload = format!("datagram {i}");
            let reply = udp_exchange_on(&socket, to, &payload)?;
            if reply.text != format!("{} {payload}", reply.server()) || reply.from != to {
                bail!("{to}: reply {:?} from {}", reply.text, reply.from);
            }
        }
        let local = socket.local_addr()?.to_string();
        let flows = lab.daemon.flows()?.flows;
        let flow = flows
            .iter()
            .find(|f| f.client == local)
            .with_context(|| format!("no flow from {local}: {flows:?}"))?;
        let backend = flow
            .backend
            .rsplit_once(':')
            .map_or("", |(address, _)| address);
        let backend = backend.trim_start_matches('[').trim_end_matches(']');
        let outer = flow.outer.as_deref().unwrap_or_default();
        if !outer.starts_with(mode) || !outer.contains(backend) {
            bail!("{to}: the flow does not show its outer header: {flow:?}");
        }
        // One direction only: the answers never cross the load balancer.
        if flow.packets != DATAGRAMS {
            bail!(
                "{to}: {} packets counted for {DATAGRAMS} datagrams: {flow:?}",
                flow.packets
            );
        }
        if fast_path != (flow.fast_path_packets > 0) {
            bail!(
                "{to}: fast path {fast_path}, yet it carried {} packets: {flow:?}",
                flow.fast_path_packets
            );
        }
    }
    let stats = lab.daemon.stats()?;
    let udp_packets: u64 = stats
        .listeners
        .iter()
        .filter(|l| l.protocol.eq_ignore_ascii_case("udp"))
        .map(|l| l.counters.packets)
        .sum();
    let sent = 2 * (EXCHANGES as u64 + DATAGRAMS);
    if udp_packets != sent {
        bail!("UDP listeners counted {udp_packets} datagrams, not {sent}");
    }
    let mut last = (0, 0);
    poll_until(
        SETTLE_TIMEOUT,
        "the backends' decap counters to match the LB's",
        || {
            let forwarded: u64 = lab
                .daemon
                .stats()?
                .listeners
                .iter()
                .map(|l| l.counters.packets)
                .sum();
            last = (forwarded, lab.decapsulated(kinds));
            Ok((forwarded > 0 && last.0 == last.1).then_some(()))
        },
    )
    .with_context(|| {
        format!(
            "forwarded {} packets, backends decapsulated {}",
            last.0, last.1
        )
    })?;
    let malformed = lab.decapsulated(&["malformed"]);
    if malformed != 0 {
        bail!("the backends dropped {malformed} malformed tunnel packets");
    }
    Ok(())
}
