//! The configuration `yard-health` runs the daemon on: one Gateway with a
//! TCP listener on the VIP, a TCPRoute to one Service, the Service's
//! endpoints in EndpointSlices, and, for the probing runs, a
//! TrafficPolicy whose `healthCheck.active` probes every endpoint. Only
//! text is written here; whether it is valid is the daemon's call.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// The Gateway's address. Nothing is sent to it: the daemon stays idle
/// but for its probes.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
pub const VIP_PORT: u16 = 80;
pub const NAMESPACE: &str = "bench";
pub const SERVICE: &str = "web";
/// The Service port's name, which every EndpointSlice port repeats: the
/// slices differ in port number, as Pods with different container ports
/// behind one named targetPort do.
pub const PORT_NAME: &str = "tcp";
/// The EndpointSlice API's limit on endpoints in one slice
/// (`endpoints` maxItems in discovery.k8s.io/v1).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;
/// Addresses the endpoints are spread over; each listens on
/// `n / ADDRESSES` ports.
pub const ADDRESSES: u32 = 100;
/// The first endpoint address; the rest follow it.
pub const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
pub const FIRST_PORT: u16 = 20_000;
/// Maglev slots per endpoint the daemon asks for (fewer degrade the
/// listener with `TableTooSmall`: a backend change would move more of the
/// others' flows).
pub const SLOTS_PER_ENDPOINT: u64 = 100;
/// The daemon's default table size and the largest it accepts.
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;
pub const MAX_TABLE_SIZE: u64 = 1_048_573;
/// The probing node's own address on the backends' link.
pub const LB_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);

/// The probe of the probing runs: `healthCheck.active` with `type: TCP`,
/// a connect and nothing sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveCheck {
    /// Gateway API Duration, e.g. `1s`.
    pub interval: String,
    pub timeout: String,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for ActiveCheck {
    fn default() -> Self {
        Self {
            interval: "1s".into(),
            timeout: "500ms".into(),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
        }
    }
}

/// `n` endpoints: [`ADDRESSES`] addresses from [`FIRST_ADDRESS`], each on
/// ports from [`FIRST_PORT`], address first (so any prefix of the list
/// spreads over every address), `n` rounded up to a whole port per
/// address. Fewer than [`ADDRESSES`] endpoints take one port on the
/// first `n` addresses.
pub fn endpoints(n: usize) -> Vec<SocketAddrV4> {
    let addresses = (ADDRESSES as usize).min(n.max(1));
    let ports = n.div_ceil(addresses);
    let first = u32::from(FIRST_ADDRESS);
    (0..ports)
        .flat_map(|p| {
            (0..addresses).map(move |a| {
                SocketAddrV4::new(Ipv4Addr::from(first + a as u32), FIRST_PORT + p as u16)
            })
        })
        .collect()
}

/// The YAML file: the Gateway, its route and Service, EndpointSlices
/// holding `endpoints` (one port each, at most
/// [`MAX_ENDPOINTS_PER_SLICE`] endpoints each), and with `check` a
/// TrafficPolicy targeting the Service.
pub fn config_yaml(endpoints: &[SocketAddrV4], check: Option<&ActiveCheck>) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: bench}}\n\
         spec: {{controllerName: switchyard.io/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: {NAMESPACE}}}\n\
         spec:\n  gatewayClassName: bench\n  addresses: [{{type: IPAddress, value: {VIP}}}]\n  \
         listeners: [{{name: tcp, protocol: TCP, port: {VIP_PORT}}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\n\
         metadata: {{name: web, namespace: {NAMESPACE}}}\n\
         spec:\n  parentRefs: [{{name: edge, sectionName: tcp}}]\n  \
         rules:\n  - backendRefs: [{{name: {SERVICE}, port: {VIP_PORT}}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}\n\
         spec:\n  ports: [{{name: {PORT_NAME}, protocol: TCP, port: {VIP_PORT}, targetPort: {PORT_NAME}}}]\n"
    );
    if let Some(size) = table_size(endpoints.len()) {
        let _ = write!(
            y,
            "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
             metadata: {{name: edge-table, namespace: {NAMESPACE}}}\n\
             spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}]\n  \
             maglev: {{tableSize: {size}}}\n"
        );
    }
    for (i, slice) in slices(endpoints).iter().enumerate() {
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {SERVICE}-{i}\n  namespace: {NAMESPACE}\n  \
             labels: {{kubernetes.io/service-name: {SERVICE}}}\n\
             addressType: IPv4\nports: [{{name: {PORT_NAME}, protocol: TCP, port: {}}}]\nendpoints:\n",
            slice.port
        );
        for address in &slice.addresses {
            let _ = writeln!(
                y,
                "- {{addresses: [\"{address}\"], conditions: {{ready: true}}}}"
            );
        }
    }
    if let Some(check) = check {
        let _ = write!(
            y,
            "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
             metadata: {{name: {SERVICE}-health, namespace: {NAMESPACE}}}\n\
             spec:\n  targetRefs: [{{group: \"\", kind: Service, name: {SERVICE}}}]\n  \
             healthCheck:\n    active:\n      type: TCP\n      interval: {}\n      timeout: {}\n      \
             healthyThreshold: {}\n      unhealthyThreshold: {}\n",
            check.interval, check.timeout, check.healthy_threshold, check.unhealthy_threshold
        );
    }
    y
}

/// The Maglev table size an operator would set for `endpoints`: the
/// smallest prime with [`SLOTS_PER_ENDPOINT`] slots each, capped at the
/// largest the daemon accepts; `None` when the default is enough.
pub fn table_size(endpoints: usize) -> Option<u64> {
    let wanted = endpoints as u64 * SLOTS_PER_ENDPOINT;
    if wanted <= DEFAULT_TABLE_SIZE {
        return None;
    }
    let is_prime = |n: u64| {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    };
    let size = (wanted..MAX_TABLE_SIZE).find(|n| is_prime(*n));
    Some(size.unwrap_or(MAX_TABLE_SIZE))
}

/// One EndpointSlice's worth: addresses that all listen on `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub port: u16,
    pub addresses: Vec<Ipv4Addr>,
}

/// `endpoints` grouped by port (a slice has one port list for all its
/// endpoints), in order of first appearance, each group cut into slices of
/// at most [`MAX_ENDPOINTS_PER_SLICE`].
pub fn slices(endpoints: &[SocketAddrV4]) -> Vec<Slice> {
    let mut ports: Vec<u16> = Vec::new();
    for e in endpoints {
        if !ports.contains(&e.port()) {
            ports.push(e.port());
        }
    }
    ports
        .into_iter()
        .flat_map(|port| {
            let addresses: Vec<Ipv4Addr> = endpoints
                .iter()
                .filter(|e| e.port() == port)
                .map(|e| *e.ip())
                .collect();
            addresses
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(|chunk| Slice {
                    port,
                    addresses: chunk.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
