//! End-to-end: the upstream conformance manifests for weighted TCPRoute and
//! UDPRoute backends (70/30/0) through the real daemon. 500 TCP connections
//! and 500 UDP flows, each answered by the backend that carries its weight,
//! within 5 points of 70/30 and nothing for weight 0.
//!
//! The manifests are used as upstream wrote them (vendored under
//! config/tests/conformance/upstream/conformance/tests); what a cluster
//! would add is appended here: Switchyard's GatewayClass, the Gateways'
//! addresses, and EndpointSlices putting each Service's pods on the test
//! backends.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use anyhow::{ensure, Context, Result};
use switchyard_vm_tests::client::{tcp_exchange_from, udp_exchange_on};
use switchyard_vm_tests::netns::in_netns;
use switchyard_vm_tests::process::workspace_root;
use switchyard_vm_tests::topology::CLIENT_ADDR;
use switchyard_vm_tests::{TcpEchoServer, TempDir, Topology, UdpEchoServer};

const CLASS: &str = "switchyard";
const FLOWS: u16 = 500;
/// Client ports are fixed, so the 5-tuples, their hashes and so the
/// outcome are the same on every run: the test is exact, not statistical.
const FIRST_CLIENT_PORT: u16 = 20000;
const TOLERANCE_POINTS: f64 = 5.0;

struct Case {
    manifest: &'static str,
    gateway: &'static str,
    protocol: &'static str,
    vip: Ipv4Addr,
    /// The listener's port, from the manifest.
    port: u16,
    /// Service name and the endpoint its pod listens on.
    services: [(&'static str, Ipv4Addr, u16); 3],
}

const BE1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
const BE2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 22);

const TCP: Case = Case {
    manifest: "tcproute-weighted-routing.yaml",
    gateway: "tcp-weighted-gateway",
    protocol: "TCP",
    vip: Ipv4Addr::new(198, 18, 100, 30),
    port: 9300,
    services: [
        ("tcp-backend-v1", BE1, 3000),
        ("tcp-backend-v2", BE2, 3000),
        ("tcp-backend-v3", BE2, 3001),
    ],
};

const UDP: Case = Case {
    manifest: "udproute-weighted-routing.yaml",
    gateway: "udp-weighted-gateway",
    protocol: "UDP",
    vip: Ipv4Addr::new(198, 18, 100, 31),
    port: 5300,
    services: [
        ("udp-backend-v1", BE1, 8080),
        ("udp-backend-v2", BE2, 8080),
        ("udp-backend-v3", BE2, 8081),
    ],
};

/// The upstream manifest with the conformance suite's class placeholder
/// filled in, and what a cluster would supply.
fn config(case: &Case) -> Result<String> {
    let path = workspace_root()
        .join("config/tests/conformance/upstream/conformance/tests")
        .join(case.manifest);
    let upstream =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let gateway_spec = format!(
        "  name: {}\n  namespace: gateway-conformance-infra\nspec:\n",
        case.gateway
    );
    ensure!(
        upstream.contains(&gateway_spec),
        "{}: Gateway not found",
        case.manifest
    );
    // The Gateway's address, as a cluster's address allocation would set it.
    let mut yaml = upstream.replace(
        &gateway_spec,
        &format!(
            "{gateway_spec}  addresses:\n  - type: IPAddress\n    value: {}\n",
            case.vip
        ),
    );
    yaml = yaml.replace("{GATEWAY_CLASS_NAME}", CLASS);
    yaml.push_str(&format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
         metadata:\n  name: {CLASS}\nspec:\n  controllerName: switchyard.io/gateway-controller\n"
    ));
    for (service, address, port) in case.services {
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {service}-1\n  namespace: gateway-conformance-infra\n  \
             labels:\n    kubernetes.io/service-name: {service}\n\
             addressType: IPv4\n\
             endpoints:\n- addresses: [\"{address}\"]\n  conditions:\n    ready: true\n\
             ports:\n- name: {}\n  protocol: {}\n  port: {port}\n",
            case.protocol.to_lowercase(),
            case.protocol,
        ));
    }
    Ok(yaml)
}

/// Which Service answered each of the flows, counted.
fn shares(answers: &BTreeMap<String, u32>) -> BTreeMap<String, f64> {
    let total: u32 = answers.values().sum();
    answers
        .iter()
        .map(|(name, n)| (name.clone(), f64::from(*n) * 100.0 / f64::from(total)))
        .collect()
}

fn check_70_30_0(case: &Case, answers: &BTreeMap<String, u32>) -> Result<()> {
    let total: u32 = answers.values().sum();
    ensure!(
        total == u32::from(FLOWS),
        "{} answered of {FLOWS}: {answers:?}",
        total
    );
    let shares = shares(answers);
    eprintln!("{}: {answers:?} -> {shares:?}", case.protocol);
    let [(v1, ..), (v2, ..), (v3, ..)] = case.services;
    for (service, expected) in [(v1, 70.0), (v2, 30.0)] {
        let share = shares.get(service).copied().unwrap_or(0.0);
        ensure!(
            (share - expected).abs() <= TOLERANCE_POINTS,
            "{service}: {share:.1}% of {FLOWS} {} flows, expected {expected}% ± {TOLERANCE_POINTS}",
            case.protocol
        );
    }
    ensure!(
        !answers.contains_key(v3),
        "{v3} has weight 0 and answered: {answers:?}"
    );
    Ok(())
}

#[test]
fn tcproute_weights_70_30_0_over_500_connections() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let servers: Vec<TcpEchoServer> = TCP
        .services
        .iter()
        .map(|&(service, address, port)| {
            let backend = topo.backend_by_addr(address).expect("test backend");
            TcpEchoServer::start_on(&backend.ns, service, SocketAddr::from((address, port)))
        })
        .collect::<Result<_>>()?;
    let dir = TempDir::new("config")?;
    let path = dir.write("weighted.yaml", &config(&TCP)?)?;
    let _daemon = topo.start_daemon(&path)?;
    let vip = SocketAddr::from((TCP.vip, TCP.port));
    let mut answers: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..FLOWS {
        let from = SocketAddrV4::new(CLIENT_ADDR, FIRST_CLIENT_PORT + i);
        let reply = tcp_exchange_from(&topo.client, from, vip, "hello")?;
        ensure!(reply.echoed() == "hello", "{reply:?}");
        *answers.entry(reply.server().to_owned()).or_default() += 1;
    }
    drop(servers);
    check_70_30_0(&TCP, &answers)
}

#[test]
fn udproute_weights_70_30_0_over_500_flows() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let servers: Vec<UdpEchoServer> = UDP
        .services
        .iter()
        .map(|&(service, address, port)| {
            let backend = topo.backend_by_addr(address).expect("test backend");
            UdpEchoServer::start_on(&backend.ns, service, SocketAddr::from((address, port)))
        })
        .collect::<Result<_>>()?;
    let dir = TempDir::new("config")?;
    let path = dir.write("weighted.yaml", &config(&UDP)?)?;
    let _daemon = topo.start_daemon(&path)?;
    let vip = SocketAddr::from((UDP.vip, UDP.port));
    let mut answers: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..FLOWS {
        let from = SocketAddrV4::new(CLIENT_ADDR, FIRST_CLIENT_PORT + i);
        let socket = in_netns(&topo.client, || UdpSocket::bind(from))?
            .with_context(|| format!("binding {from}"))?;
        let reply = udp_exchange_on(&socket, vip, "hello")?;
        ensure!(reply.from == vip && reply.echoed() == "hello", "{reply:?}");
        *answers.entry(reply.server().to_owned()).or_default() += 1;
    }
    drop(servers);
    check_70_30_0(&UDP, &answers)
}
